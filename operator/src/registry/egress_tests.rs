//! The registry client against hostile registries: token realms and redirects that point
//! at another host, reply bodies that must not reach status, and denied addresses. The
//! "other host" is a real second listener that records whatever reaches it.

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use imagewarden_scanner::egress::EgressPolicy;
use tokio::net::TcpListener;

use super::{Credentials, RegistryAccess, RegistryClient, RegistryError};

const USER: &str = "robot";
const PASSWORD: &str = "s3cret-password";
/// Text only the remote side knows; it must never appear in an error.
const REMOTE_TEXT: &str = "REMOTE-BODY-4f1c internal details";

/// What reached a listener: path and `Authorization` header of each request.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

async fn record(State(seen): State<Seen>, request: Request) -> Response {
    let auth = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    seen.lock()
        .unwrap()
        .push((request.uri().path().to_string(), auth));
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"token":"t","detail":"{REMOTE_TEXT}"}}"#),
    )
        .into_response()
}

/// A listener that records every request; its address is `localhost:<port>`, another host
/// than the registry's `127.0.0.1:<port>`.
async fn other_host() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let app = Router::new().fallback(record).with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("localhost:{port}"), seen)
}

/// How the hostile registry answers every request.
#[derive(Clone)]
enum Hostile {
    /// `401` with a Bearer challenge whose realm is this URL.
    Realm(String),
    /// A redirect to this URL.
    Redirect(String),
    /// `500` with a body of remote text.
    Failing,
}

async fn hostile(State((mode, seen)): State<(Hostile, Seen)>, request: Request) -> Response {
    seen.lock()
        .unwrap()
        .push((request.uri().path().to_string(), None));
    match mode {
        Hostile::Realm(realm) => (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                format!(r#"Bearer realm="{realm}",service="r""#),
            )],
            REMOTE_TEXT,
        )
            .into_response(),
        Hostile::Redirect(to) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, to)],
            REMOTE_TEXT,
        )
            .into_response(),
        Hostile::Failing => (StatusCode::INTERNAL_SERVER_ERROR, REMOTE_TEXT).into_response(),
    }
}

async fn registry(mode: Hostile) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let seen: Seen = Arc::default();
    let app = Router::new()
        .fallback(hostile)
        .with_state((mode, seen.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (host, seen)
}

fn policy(allow: &[&str]) -> Arc<EgressPolicy> {
    let allow: Vec<_> = allow.iter().map(|a| a.parse().unwrap()).collect();
    Arc::new(EgressPolicy::new(&[], &allow))
}

fn client(host: &str, egress: Arc<EgressPolicy>) -> RegistryClient {
    let access = RegistryAccess::new(host, true)
        .unwrap()
        .with_egress(egress)
        .with_credentials(Credentials::new(USER, PASSWORD));
    RegistryClient::new(&access).unwrap()
}

#[tokio::test]
async fn a_token_realm_on_another_host_gets_no_credentials() {
    let (other, received) = other_host().await;
    let (host, _) = registry(Hostile::Realm(format!("http://{other}/token"))).await;
    let err = client(&host, policy(&["127.0.0.0/8"]))
        .resolve_digest("team-a/api", "v1")
        .await
        .expect_err("the realm is refused");
    assert!(received.lock().unwrap().is_empty(), "{:?}", received);
    let text = err.to_string();
    assert!(text.contains("another host (localhost)"), "{text}");
    assert!(!text.contains("REMOTE-BODY"), "{text}");
}

#[tokio::test]
async fn a_realm_host_the_administrator_allows_gets_the_credentials() {
    let (other, received) = other_host().await;
    let (host, _) = registry(Hostile::Realm(format!("http://{other}/token"))).await;
    let _ = client(&host, policy(&["127.0.0.0/8", "localhost"]))
        .resolve_digest("team-a/api", "v1")
        .await;
    let seen = received.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, "/token");
    assert!(seen[0]
        .1
        .as_deref()
        .is_some_and(|a| a.starts_with("Basic ")));
}

#[tokio::test]
async fn redirects_to_another_host_are_not_followed() {
    let (other, received) = other_host().await;
    let (host, _) = registry(Hostile::Redirect(format!("http://{other}/steal"))).await;
    let err = client(&host, policy(&["127.0.0.0/8"]))
        .resolve_digest("team-a/api", "v1")
        .await
        .expect_err("the redirect is refused");
    assert!(received.lock().unwrap().is_empty(), "{:?}", received);
    let text = err.to_string();
    assert!(text.contains("redirected"), "{text}");
    assert!(!text.contains("REMOTE-BODY"), "{text}");
}

#[tokio::test]
async fn error_bodies_are_never_quoted() {
    let (host, _) = registry(Hostile::Failing).await;
    let err = client(&host, policy(&["127.0.0.0/8"]))
        .resolve_digest("team-a/api", "v1")
        .await
        .expect_err("HTTP 500");
    let text = err.to_string();
    assert!(text.contains("HTTP 500"), "{text}");
    assert!(!text.contains("REMOTE-BODY"), "{text}");
}

#[tokio::test]
async fn denied_addresses_are_not_contacted_by_literal_or_by_name() {
    let (host, seen) = registry(Hostile::Failing).await;
    let port = host.rsplit(':').next().unwrap();
    for target in [host.clone(), format!("localhost:{port}")] {
        let err = client(&target, Arc::new(EgressPolicy::default()))
            .resolve_digest("team-a/api", "v1")
            .await
            .expect_err("loopback is denied");
        assert!(
            matches!(err, RegistryError::EgressDenied { .. }),
            "{target}: {err}"
        );
        assert_eq!(err.reason(), "EgressDenied");
        assert!(err.to_string().contains("loopback"), "{err}");
    }
    assert!(seen.lock().unwrap().is_empty(), "{:?}", seen);
}

#[tokio::test]
async fn inline_scans_pull_within_the_registry_access_egress_policy() {
    use crate::context::LoadedDb;
    use crate::executor::{scan_target, ScanTarget};
    use imagewarden_scanner::finding::ScannerKind;

    let (host, seen) = registry(Hostile::Failing).await;
    let db = LoadedDb::new(
        imagewarden_scanner::vulndb::DbBuilder::new()
            .into_db("empty")
            .unwrap(),
    );
    let target = ScanTarget {
        registry: host.clone(),
        repository: "team-a/api".into(),
        digest: format!("sha256:{}", "0".repeat(64)),
        tags: vec![],
    };
    let access = RegistryAccess::new(&host, true).unwrap();
    let err = scan_target(
        &target,
        &access,
        &db,
        &Default::default(),
        &ScannerKind::ALL,
        Default::default(),
    )
    .await
    .expect_err("loopback is denied")
    .to_string();
    assert!(err.contains("not contacted"), "{err}");
    assert!(seen.lock().unwrap().is_empty(), "{:?}", seen);
}
