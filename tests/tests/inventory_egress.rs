//! Registry pulls inside an egress policy (as the operator and its scanner Jobs pull):
//! denied addresses are not contacted, a token realm on another host gets no request and
//! no credential, manifests are not redirected to another host, and no remote reply text
//! reaches the error.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use axum::response::IntoResponse;
use imagewarden_scanner::egress::EgressPolicy;
use imagewarden_scanner::pipeline;
use imagewarden_scanner::source::{ImageRef, PullOptions, RegistryCredentials};
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
    let err = pipeline::read_image(&target, &options(loopback_egress()), &Default::default())
        .await
        .expect_err("the realm is refused")
        .to_string();
    assert!(err.contains("another host (127.0.0.1)"), "{err}");
    assert_eq!(service.requests.load(Ordering::SeqCst), before);
    // By its own address the same pull works: the realm is on the registry's host.
    let target = ImageRef::parse(&format!("{}/app:v1", registry.host))?;
    pipeline::read_image(&target, &options(loopback_egress()), &Default::default()).await?;
    assert_eq!(service.requests.load(Ordering::SeqCst), before + 1);
    Ok(())
}

#[tokio::test]
async fn denied_addresses_are_not_contacted() -> Result<()> {
    let (port, seen) = listener(|| axum::http::StatusCode::NOT_FOUND.into_response()).await?;
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let target = ImageRef::parse(&format!("{host}/app:v1"))?;
        let err = pipeline::read_image(
            &target,
            &options(Arc::new(EgressPolicy::default())),
            &Default::default(),
        )
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
    let err = pipeline::read_image(&target, &options(loopback_egress()), &Default::default())
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
    let err = pipeline::read_image(&target, &options(loopback_egress()), &Default::default())
        .await
        .expect_err("HTTP 500")
        .to_string();
    assert!(err.contains("HTTP 500"), "{err}");
    assert!(!err.contains("REMOTE-BODY"), "{err}");
    Ok(())
}

/// A registry whose blobs live on "another host" (object storage, as Docker Hub's CDN):
/// the pull follows the blob redirect there, without the credentials.
#[tokio::test]
async fn blobs_redirected_to_storage_are_fetched_without_credentials() -> Result<()> {
    use imagewarden_tests::image::sha256;

    let layer = LayerBuilder::new()
        .file("etc/os-release", 0o644, b"ID=alpine\nVERSION_ID=3.11.5\n")?
        .file("lib/apk/db/installed", 0o644, b"P:musl\nV:1.1.24-r2\n\n")?
        .finish()?;
    let image = TestImage {
        layers: vec![layer],
        ..Default::default()
    };
    let config = image.config_json();
    let blob = image.layers[0].gzip.clone();
    let config_digest = sha256(&config);
    let layer_digest = sha256(&blob);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": blob.len()}],
    })
    .to_string();

    // Storage: serves the blobs, records who asked with what.
    let storage_seen: Seen = Arc::default();
    let storage_socket = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let storage_port = storage_socket.local_addr()?.port();
    let (c, b, cd) = (config.clone(), blob.clone(), config_digest.clone());
    let record = storage_seen.clone();
    let storage = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let (c, b, cd, record) = (c.clone(), b.clone(), cd.clone(), record.clone());
        async move {
            let path = request.uri().path().to_string();
            let auth = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            record.lock().unwrap().push((path.clone(), auth));
            if path.ends_with(&cd) {
                c.into_response()
            } else {
                b.into_response()
            }
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(storage_socket, storage).await;
    });

    // The registry: Basic auth required; manifests served, blobs redirected to storage.
    let registry_socket = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let registry_port = registry_socket.local_addr()?.port();
    let registry = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let manifest = manifest.clone();
        async move {
            if request.headers().get("authorization").is_none() {
                return (
                    axum::http::StatusCode::UNAUTHORIZED,
                    [("www-authenticate", r#"Basic realm="r""#)],
                )
                    .into_response();
            }
            let path = request.uri().path().to_string();
            if path.contains("/manifests/") {
                (
                    [("content-type", "application/vnd.oci.image.manifest.v1+json")],
                    manifest,
                )
                    .into_response()
            } else {
                let digest = path.rsplit('/').next().unwrap_or_default().to_string();
                (
                    axum::http::StatusCode::TEMPORARY_REDIRECT,
                    [(
                        "location",
                        format!("http://localhost:{storage_port}/storage/{digest}"),
                    )],
                )
                    .into_response()
            }
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(registry_socket, registry).await;
    });

    let target = ImageRef::parse(&format!("127.0.0.1:{registry_port}/team-a/app:v1"))?;
    let scanned =
        pipeline::read_image(&target, &options(loopback_egress()), &Default::default()).await?;
    assert_eq!(scanned.inventory.os.as_ref().unwrap().version, "3.11.5");
    let seen = storage_seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "config and layer from storage: {seen:?}");
    assert!(
        seen.iter().all(|(_, auth)| auth.is_none()),
        "credentials reached storage: {seen:?}"
    );
    Ok(())
}
