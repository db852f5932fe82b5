//! Registry pulls inside an egress policy (as the operator and its scanner Jobs pull):
//! denied addresses are not contacted, a token realm on another host gets no request and
//! no credential, manifests are not redirected to another host, and no remote reply text
//! reaches the error.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use axum::response::IntoResponse;
use imagewarden_scanner::egress::EgressPolicy;
use imagewarden_scanner::source::{self, ImageRef, PullOptions, RegistryCredentials};
use imagewarden_tests::image::{LayerBuilder, TestImage};
use imagewarden_tests::loopback_egress;
use imagewarden_tests::token_service::{PASSWORD, USER};

const REMOTE_TEXT: &str = "REMOTE-BODY-91aa internal details";

fn options(egress: Arc<EgressPolicy>) -> PullOptions {
    PullOptions {
        insecure: true,
        credentials: RegistryCredentials {
            username: Some(USER.into()),
            password: Some(PASSWORD.into()),
            ..Default::default()
        },
        egress: Some(egress),
        ..Default::default()
    }
}

/// Requests that reached a listener: path and `Authorization` header.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A listener on 127.0.0.1 answering every request with `respond`; returns its port.
async fn listener(
    respond: impl Fn() -> axum::response::Response + Clone + Send + Sync + 'static,
) -> Result<(u16, Seen)> {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = socket.local_addr()?.port();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let respond = respond.clone();
        let record = record.clone();
        async move {
            let auth = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            record
                .lock()
                .unwrap()
                .push((request.uri().path().to_string(), auth));
            respond()
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(socket, app).await;
    });
    Ok((port, seen))
}

#[tokio::test]
async fn a_token_realm_on_another_host_gets_no_request() -> Result<()> {
    let (registry, service) = imagewarden_tests::token_service::start().await?;
    let layer = LayerBuilder::new()
        .file("etc/os-release", 0o644, b"ID=alpine\n")?
        .finish()?;
    let image = TestImage {
        layers: vec![layer],
        ..Default::default()
    };
    imagewarden_tests::token_service::push(&registry, "app", "v1", &image).await?;
    let before = service.requests.load(Ordering::SeqCst);
    // Named `localhost`, the registry's realm (on 127.0.0.1) is another host.
    let port = registry.host.rsplit(':').next().unwrap();
    let target = ImageRef::parse(&format!("localhost:{port}/app:v1"))?;
    let err = source::scan(&target, &options(loopback_egress()))
        .await
        .expect_err("the realm is refused")
        .to_string();
    assert!(err.contains("another host (127.0.0.1)"), "{err}");
    assert_eq!(service.requests.load(Ordering::SeqCst), before);
    // By its own address the same pull works: the realm is on the registry's host.
    let target = ImageRef::parse(&format!("{}/app:v1", registry.host))?;
    source::scan(&target, &options(loopback_egress())).await?;
    assert_eq!(service.requests.load(Ordering::SeqCst), before + 1);
    Ok(())
}

#[tokio::test]
async fn denied_addresses_are_not_contacted() -> Result<()> {
    let (port, seen) = listener(|| axum::http::StatusCode::NOT_FOUND.into_response()).await?;
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let target = ImageRef::parse(&format!("{host}/app:v1"))?;
        let err = source::scan(&target, &options(Arc::new(EgressPolicy::default())))
            .await
            .expect_err("loopback is denied")
            .to_string();
        assert!(
            err.contains("not contacted") && err.contains("loopback"),
            "{err}"
        );
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );
    Ok(())
}

#[tokio::test]
async fn manifests_are_not_redirected_to_another_host_and_bodies_are_not_quoted() -> Result<()> {
    let (other_port, other) = listener(|| REMOTE_TEXT.into_response()).await?;
    let (port, _) = listener(move || {
        (
            axum::http::StatusCode::TEMPORARY_REDIRECT,
            [("location", format!("http://localhost:{other_port}/steal"))],
            REMOTE_TEXT,
        )
            .into_response()
    })
    .await?;
    let target = ImageRef::parse(&format!("127.0.0.1:{port}/app:v1"))?;
    let err = source::scan(&target, &options(loopback_egress()))
        .await
        .expect_err("the redirect is refused")
        .to_string();
    assert!(err.contains("redirected"), "{err}");
    assert!(!err.contains("REMOTE-BODY"), "{err}");
    assert!(
        other.lock().unwrap().is_empty(),
        "{:?}",
        other.lock().unwrap()
    );

    let (port, _) =
        listener(|| (axum::http::StatusCode::INTERNAL_SERVER_ERROR, REMOTE_TEXT).into_response())
            .await?;
    let target = ImageRef::parse(&format!("127.0.0.1:{port}/app:v1"))?;
    let err = source::scan(&target, &options(loopback_egress()))
        .await
        .expect_err("HTTP 500")
        .to_string();
    assert!(err.contains("HTTP 500"), "{err}");
    assert!(!err.contains("REMOTE-BODY"), "{err}");
    Ok(())
}
