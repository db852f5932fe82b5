//! The push-webhook receiver: registries POST here when an image is pushed.
//!
//! - `POST /webhook/distribution`: CNCF Distribution notification envelopes
//!   (`application/vnd.docker.distribution.events.v1+json`). `push` events of a
//!   manifest under a tag start scans, `delete` events mark results `Deleted` (see
//!   [`super::delete`]); blob pushes, pulls and pushes by digest are ignored.
//! - `POST /webhook/harbor`: Harbor webhooks in its default payload format
//!   (`PUSH_ARTIFACT`, `DELETE_ARTIFACT`) or its CloudEvents format
//!   (`harbor.artifact.pushed`, `harbor.artifact.deleted`); other event types are
//!   accepted and ignored.
//!
//! Both require the shared token, as `Authorization: Bearer <token>` (Distribution's
//! `headers:` setting) or as the bare `Authorization: <token>` Harbor's "auth header"
//! sends. Answers: 202 with the number of pushes taken, 401 for a missing or wrong
//! token, 400 with the reason for a body that is not the expected JSON, 408 for a body
//! that does not arrive within the read timeout, 413 for one over 2 MiB, 503 when the
//! operator is no longer reading events. The server speaks HTTP/1.1, over TLS when given
//! a certificate, and closes connections that stay silent (see [`ServerOptions`]).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};

pub use super::notification::WebhookError;
use super::notification::{
    parse_distribution_deletes, parse_distribution_envelope, parse_harbor_deletes,
    parse_harbor_webhook, DeleteEvent,
};
use super::push::PushEvent;

/// Path of the CNCF Distribution notification endpoint.
pub const DISTRIBUTION_PATH: &str = "/webhook/distribution";
/// Path of the Harbor webhook endpoint.
pub const HARBOR_PATH: &str = "/webhook/harbor";

/// Largest request body read.
const MAX_BODY_BYTES: usize = 2 << 20;

/// How the push endpoint serves connections.
#[derive(Clone)]
pub struct ServerOptions {
    /// A connection that has not sent a complete request head within this time (slow
    /// headers, or an idle keep-alive connection) is closed.
    pub idle_timeout: Duration,
    /// Time a request's body may take to arrive once its head did (and a TLS handshake).
    pub read_timeout: Duration,
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// TLS, when set; plain HTTP otherwise.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Where reported deletions go; unset, they are accepted and dropped.
    pub deletes: Option<mpsc::Sender<DeleteEvent>>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(10),
            max_connections: 256,
            tls: None,
            deletes: None,
        }
    }
}

pub use imagewarden_scanner::tls::{read_pem_files, tls_config};

/// Shared state of the receiver.
struct WebhookState {
    token: String,
    events: mpsc::Sender<PushEvent>,
    deletes: Option<mpsc::Sender<DeleteEvent>>,
    read_timeout: Duration,
}

/// The receiver's routes. Every accepted push goes to `events`. An empty `token` refuses
/// every request, so a missing configuration never opens the endpoint.
pub fn router(token: impl Into<String>, events: mpsc::Sender<PushEvent>) -> Router {
    router_with(token, events, &ServerOptions::default())
}

fn router_with(
    token: impl Into<String>,
    events: mpsc::Sender<PushEvent>,
    options: &ServerOptions,
) -> Router {
    let state = Arc::new(WebhookState {
        token: token.into(),
        events,
        deletes: options.deletes.clone(),
        read_timeout: options.read_timeout,
    });
    Router::new()
        .route(DISTRIBUTION_PATH, post(distribution))
        .route(HARBOR_PATH, post(harbor))
        .with_state(state)
}

/// Serves [`router`] on `listener` with the default [`ServerOptions`] (plain HTTP).
pub async fn serve(
    listener: TcpListener,
    token: impl Into<String>,
    events: mpsc::Sender<PushEvent>,
) -> io::Result<()> {
    serve_with(listener, token, events, ServerOptions::default()).await
}

/// Serves [`router`] on `listener` until the task is dropped: HTTP/1.1, over TLS when
/// `options.tls` is set, each connection bounded in time, and at most
/// `options.max_connections` at once.
pub async fn serve_with(
    listener: TcpListener,
    token: impl Into<String>,
    events: mpsc::Sender<PushEvent>,
    options: ServerOptions,
) -> io::Result<()> {
    let router = router_with(token, events, &options);
    serve_router(listener, router, options).await
}

/// Serves `router` on `listener` until the task is dropped, as [`serve_with`] does
/// (also what the admission webhook is served with).
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    options: ServerOptions,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let acceptor = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "push-webhook accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!("push-webhook connection refused: too many open");
            continue;
        };
        let router = router.clone();
        let acceptor = acceptor.clone();
        let options = options.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| {
                let mut router = router.clone();
                async move { tower_service::Service::call(&mut router, request).await }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(options.idle_timeout);
            let served = match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout(options.read_timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls)) => {
                            http.serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                                .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "push-webhook TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    }
                }
                None => {
                    http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "push-webhook connection ended");
            }
        });
    }
}

/// The body of `request`, read within the read timeout and size bound.
async fn read_body(state: &WebhookState, body: Body) -> Result<Bytes, WebhookError> {
    match tokio::time::timeout(
        state.read_timeout,
        axum::body::to_bytes(body, MAX_BODY_BYTES),
    )
    .await
    {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(WebhookError::BodyUnreadable {
            limit: MAX_BODY_BYTES,
        }),
        Err(_) => Err(WebhookError::TooSlow),
    }
}

async fn distribution(
    State(state): State<Arc<WebhookState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, WebhookError> {
    authorize(&state.token, &headers)?;
    let body = read_body(&state, body).await?;
    let events = parse_distribution_envelope(&body)?;
    let deletes = parse_distribution_deletes(&body)?;
    forward(&state, events, deletes).await
}

async fn harbor(
    State(state): State<Arc<WebhookState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, WebhookError> {
    authorize(&state.token, &headers)?;
    let body = read_body(&state, body).await?;
    let events = parse_harbor_webhook(&body)?;
    let deletes = parse_harbor_deletes(&body)?;
    forward(&state, events, deletes).await
}

async fn forward(
    state: &WebhookState,
    events: Vec<PushEvent>,
    deletes: Vec<DeleteEvent>,
) -> Result<Response, WebhookError> {
    let mut accepted = events.len();
    if let Some(sender) = &state.deletes {
        accepted += deletes.len();
        for delete in deletes {
            tracing::debug!(
                registry = %delete.registry_host,
                repository = %delete.repository,
                digest = ?delete.digest,
                tag = ?delete.tag,
                "delete received"
            );
            sender
                .send(delete)
                .await
                .map_err(|_| WebhookError::Unavailable)?;
        }
    }
    for event in events {
        tracing::debug!(
            registry = %event.registry_host,
            repository = %event.repository,
            tag = %event.tag,
            digest = %event.digest,
            "push received"
        );
        state
            .events
            .send(event)
            .await
            .map_err(|_| WebhookError::Unavailable)?;
    }
    Ok((
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"accepted\":{accepted}}}\n"),
    )
        .into_response())
}

/// Checks the `Authorization` header against `token` in constant time (for equal lengths).
pub fn authorize(token: &str, headers: &HeaderMap) -> Result<(), WebhookError> {
    if token.is_empty() {
        return Err(WebhookError::Unauthorized);
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .ok_or(WebhookError::Unauthorized)?;
    let presented = match presented.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => presented,
    };
    if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
        Ok(())
    } else {
        Err(WebhookError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:8a9e9863dbb6e10edb5adfe917c00da84e1700fa76e7ed02476aa6e6fb8ee0d8";

    #[test]
    fn harbor_documented_sample_parses() {
        // The PUSH_ARTIFACT sample from Harbor's "Configure Webhook Notifications" page.
        let body = format!(
            r#"{{
            "type": "PUSH_ARTIFACT",
            "occur_at": 1586922308,
            "operator": "admin",
            "event_data": {{
                "resources": [{{
                    "digest": "{DIGEST}",
                    "tag": "latest",
                    "resource_url": "hj.harbor.com/library/busybox:latest"
                }}],
                "repository": {{
                    "date_created": 1586922308,
                    "name": "busybox",
                    "namespace": "library",
                    "repo_full_name": "library/busybox",
                    "repo_type": "private"
                }}
            }}
        }}"#
        );
        assert_eq!(
            parse_harbor_webhook(body.as_bytes()).unwrap(),
            vec![PushEvent {
                registry_host: "hj.harbor.com".into(),
                repository: "library/busybox".into(),
                tag: "latest".into(),
                digest: DIGEST.into(),
            }]
        );
    }

    #[test]
    fn harbor_cloudevents_push_parses() {
        let body = format!(
            r#"{{
            "specversion": "1.0",
            "id": "4b2f89a4-8e7e-4a7c-9b4e-0b2f3c7f1d55",
            "source": "/projects/1/webhook/policies/3",
            "type": "harbor.artifact.pushed",
            "datacontenttype": "application/json",
            "time": "2024-04-03T06:37:48Z",
            "operator": "robot$library+ci",
            "data": {{
                "resources": [{{
                    "digest": "{DIGEST}",
                    "tag": "v1.2",
                    "resource_url": "harbor.example:8443/library/busybox:v1.2"
                }}],
                "repository": {{
                    "name": "busybox",
                    "namespace": "library",
                    "repo_full_name": "library/busybox",
                    "repo_type": "public"
                }}
            }}
        }}"#
        );
        assert_eq!(
            parse_harbor_webhook(body.as_bytes()).unwrap(),
            vec![PushEvent {
                registry_host: "harbor.example:8443".into(),
                repository: "library/busybox".into(),
                tag: "v1.2".into(),
                digest: DIGEST.into(),
            }]
        );
        let pulled = r#"{"specversion":"1.0","type":"harbor.artifact.pulled","data":{}}"#;
        assert!(parse_harbor_webhook(pulled.as_bytes()).unwrap().is_empty());
    }

    #[test]
    fn harbor_other_events_and_digest_pushes_are_ignored() {
        let pull = r#"{"type":"PULL_ARTIFACT","event_data":{"resources":[],"repository":{"repo_full_name":"a/b"}}}"#;
        assert!(parse_harbor_webhook(pull.as_bytes()).unwrap().is_empty());
        let by_digest = format!(
            r#"{{"type":"PUSH_ARTIFACT","event_data":{{"resources":[{{"digest":"{DIGEST}","tag":"{DIGEST}","resource_url":"h/a/b@{DIGEST}"}}],"repository":{{"repo_full_name":"a/b"}}}}}}"#
        );
        assert!(parse_harbor_webhook(by_digest.as_bytes())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn malformed_bodies_say_what_was_expected() {
        let err = parse_harbor_webhook(b"{}").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("malformed Harbor webhook body: missing field `type`"),
            "{err}"
        );
        let err = parse_distribution_envelope(b"[]").unwrap_err();
        assert!(err.to_string().contains("expected {\"events\""), "{err}");
    }

    #[test]
    fn distribution_ignores_blobs_pulls_and_untagged_pushes() {
        let body = format!(
            r#"{{"events":[
              {{"action":"push","target":{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{DIGEST}","repository":"a/b","url":"http://r:5000/v2/a/b/blobs/{DIGEST}"}},"request":{{"host":"r:5000"}}}},
              {{"action":"pull","target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{DIGEST}","repository":"a/b","tag":"v1"}},"request":{{"host":"r:5000"}}}},
              {{"action":"push","target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{DIGEST}","repository":"a/b"}},"request":{{"host":"r:5000"}}}},
              {{"action":"push","target":{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{DIGEST}","repository":"a/b","tag":"v2","url":"http://R:5000/v2/a/b/manifests/{DIGEST}"}}}}
            ]}}"#
        );
        assert_eq!(
            parse_distribution_envelope(body.as_bytes()).unwrap(),
            vec![PushEvent {
                registry_host: "r:5000".into(),
                repository: "a/b".into(),
                tag: "v2".into(),
                digest: DIGEST.into(),
            }]
        );
    }

    #[test]
    fn tokens_are_accepted_bare_or_as_bearer() {
        let headers = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            h
        };
        assert!(authorize("s3cret", &headers("Bearer s3cret")).is_ok());
        assert!(authorize("s3cret", &headers("bearer s3cret")).is_ok());
        assert!(authorize("s3cret", &headers("s3cret")).is_ok());
        assert!(authorize("s3cret", &headers("Bearer s3cre")).is_err());
        assert!(authorize("s3cret", &HeaderMap::new()).is_err());
        assert!(authorize("", &headers("Bearer ")).is_err());
    }
}
