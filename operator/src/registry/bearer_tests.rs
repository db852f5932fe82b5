//! The Bearer token flow and tag-list pagination against a small in-process registry
//! that behaves like token-authenticated registries (Harbor, Docker Hub, GHCR): every API
//! call without a token for its scope gets a 401 challenge naming the token service.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use tokio::net::TcpListener;

use super::{
    discover, Credentials, DiscoveredImage, DiscoveryLimits, RegistryAccess, RegistryClient,
    RegistryError, Scope, TagFilter,
};

const USER: &str = "robot$scanner";
const PASSWORD: &str = "tok3n-pa55";
const TAGS: &[&str] = &["v1", "v2", "v3", "dev"];
/// A tag whose manifest comes without a `Docker-Content-Digest` header.
const NO_DIGEST_HEADER: &str = "no-digest-header";
const NO_DIGEST_MANIFEST: &str =
    r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;

struct Fake {
    realm: String,
    /// Refuse the catalog to every token, as Harbor does for non-administrators.
    catalog_admin_only: bool,
    token_requests: AtomicUsize,
    /// Requests for the `flaky` tag so far; the first two get 503.
    flaky_requests: AtomicUsize,
    /// Scopes asked for, in order.
    scopes: Mutex<Vec<String>>,
}

fn digest_of(tag: &str) -> String {
    format!("sha256:{:0>64}", hex_of(tag))
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

impl Fake {
    /// The token this fake issues for `scope`.
    fn token_for(scope: &str) -> String {
        format!("token-for-{}", hex_of(scope))
    }

    fn challenge(&self, headers: &HeaderMap, scope: &str) -> Option<Response> {
        let expected = format!("Bearer {}", Self::token_for(scope));
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if presented == Some(expected.as_str()) {
            return None;
        }
        let challenge = format!(
            r#"Bearer realm="{}",service="fake-registry",scope="{scope}""#,
            self.realm
        );
        Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, challenge)],
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            )
                .into_response(),
        )
    }
}

async fn token(
    State(fake): State<Arc<Fake>>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    fake.token_requests.fetch_add(1, Ordering::SeqCst);
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(basic.as_str())
    {
        return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
    }
    let params: HashMap<_, _> = query.into_iter().collect();
    if params.get("service").map(String::as_str) != Some("fake-registry") {
        return (StatusCode::BAD_REQUEST, "wrong service").into_response();
    }
    let scope = params.get("scope").cloned().unwrap_or_default();
    fake.scopes.lock().unwrap().push(scope.clone());
    let body = serde_json::json!({"token": Fake::token_for(&scope), "expires_in": 300});
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn catalog(State(fake): State<Arc<Fake>>, headers: HeaderMap) -> Response {
    if let Some(challenge) = fake.challenge(&headers, "registry:catalog:*") {
        return challenge;
    }
    if fake.catalog_admin_only {
        return fake
            .challenge(&HeaderMap::new(), "registry:catalog:*")
            .unwrap();
    }
    axum::Json(serde_json::json!({"repositories": ["team-a/api", "team-b/api"]})).into_response()
}

/// `/v2/team-a/api/tags/list`, one tag per page, linked by `last`.
async fn tags(
    State(fake): State<Arc<Fake>>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let repository = format!("{namespace}/{name}");
    if let Some(challenge) = fake.challenge(&headers, &format!("repository:{repository}:pull")) {
        return challenge;
    }
    let start = match query.get("last") {
        Some(last) => TAGS
            .iter()
            .position(|t| t == last)
            .map_or(TAGS.len(), |i| i + 1),
        None => 0,
    };
    let page: Vec<&str> = TAGS.iter().skip(start).take(1).copied().collect();
    let mut response =
        axum::Json(serde_json::json!({"name": repository, "tags": page})).into_response();
    if start + 1 < TAGS.len() {
        let link = format!(
            r#"</v2/{repository}/tags/list?n=1&last={}>; rel="next""#,
            page[0]
        );
        response
            .headers_mut()
            .insert(header::LINK, link.parse().unwrap());
    }
    response
}

async fn manifest(
    State(fake): State<Arc<Fake>>,
    Path((namespace, name, tag)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let repository = format!("{namespace}/{name}");
    if let Some(challenge) = fake.challenge(&headers, &format!("repository:{repository}:pull")) {
        return challenge;
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !accept.contains("application/vnd.oci.image.index.v1+json")
        || !accept.contains("application/vnd.docker.distribution.manifest.v2+json")
    {
        return (StatusCode::NOT_ACCEPTABLE, "missing Accept").into_response();
    }
    let busy = match tag.as_str() {
        "flaky" => fake.flaky_requests.fetch_add(1, Ordering::SeqCst) < 2,
        "down" => true,
        _ => false,
    };
    if busy {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "0")],
            "busy",
        )
            .into_response();
    }
    if tag == NO_DIGEST_HEADER {
        return (
            [(
                header::CONTENT_TYPE,
                "application/vnd.oci.image.manifest.v1+json",
            )],
            NO_DIGEST_MANIFEST,
        )
            .into_response();
    }
    (
        [
            ("docker-content-digest", digest_of(&tag)),
            (
                "content-type",
                "application/vnd.oci.image.manifest.v1+json".to_string(),
            ),
        ],
        "",
    )
        .into_response()
}

/// Harbor's project API: `team-a`'s repositories, two pages, Basic auth.
async fn harbor_repositories(
    Path(project): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(basic.as_str())
    {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"unauthorized"}]}"#,
        )
            .into_response();
    }
    if project != "team-a" {
        return (StatusCode::NOT_FOUND, "no such project").into_response();
    }
    if query.get("page").map(String::as_str) == Some("2") {
        return axum::Json(
            serde_json::json!([{"name": "team-a/tools/ci"}, {"name": "team-a/web"}]),
        )
        .into_response();
    }
    let mut response = axum::Json(serde_json::json!([{"name": "team-a/api"}])).into_response();
    response.headers_mut().insert(
        header::LINK,
        r#"</api/v2.0/projects/team-a/repositories?page=2&page_size=1>; rel="next""#
            .parse()
            .unwrap(),
    );
    response
}

async fn start() -> (String, Arc<Fake>) {
    start_with(false).await
}

async fn start_with(catalog_admin_only: bool) -> (String, Arc<Fake>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let fake = Arc::new(Fake {
        realm: format!("http://{host}/token"),
        catalog_admin_only,
        token_requests: AtomicUsize::new(0),
        flaky_requests: AtomicUsize::new(0),
        scopes: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/token", get(token))
        .route("/v2/_catalog", get(catalog))
        .route(
            "/api/v2.0/projects/{project}/repositories",
            get(harbor_repositories),
        )
        .route("/v2/{namespace}/{name}/tags/list", get(tags))
        .route("/v2/{namespace}/{name}/manifests/{tag}", get(manifest))
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (host, fake)
}

/// The fakes listen on the loopback interface, which the default policy denies.
fn loopback_egress() -> Arc<imagewarden_scanner::egress::EgressPolicy> {
    Arc::new(imagewarden_scanner::egress::EgressPolicy::new(
        &[],
        &["127.0.0.0/8".parse().unwrap()],
    ))
}

fn access(host: &str, password: &str) -> RegistryAccess {
    RegistryAccess::new(host, true)
        .unwrap()
        .with_egress(loopback_egress())
        .with_credentials(Credentials::new(USER, password))
}

#[tokio::test]
async fn bearer_tokens_are_fetched_once_per_scope_and_tag_pages_are_followed() {
    let (host, fake) = start().await;
    let client = RegistryClient::new(&access(&host, PASSWORD)).unwrap();
    let discovery = discover(
        &client,
        &Scope::Namespace("team-a".into()),
        &TagFilter::new("^v").unwrap(),
        None,
        &DiscoveryLimits {
            page_size: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let expected: Vec<DiscoveredImage> = ["v1", "v2", "v3"]
        .iter()
        .map(|tag| DiscoveredImage {
            repository: "team-a/api".into(),
            tag: tag.to_string(),
            digest: digest_of(tag),
        })
        .collect();
    assert_eq!(discovery.images, expected);
    assert!(discovery.errors.is_empty());
    // One token for the catalog, one for the repository: four tag pages and three
    // manifest requests reuse it.
    assert_eq!(
        *fake.scopes.lock().unwrap(),
        vec!["registry:catalog:*", "repository:team-a/api:pull"]
    );
    assert_eq!(fake.token_requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn token_service_refusing_the_credentials_is_unauthorized() {
    let (host, _fake) = start().await;
    let client = RegistryClient::new(&access(&host, "wrong")).unwrap();
    let err = discover(
        &client,
        &Scope::Repository("team-a/api".into()),
        &TagFilter::new(".*").unwrap(),
        None,
        &DiscoveryLimits::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, RegistryError::Unauthorized { status: 401, .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&host) && text.contains("team-a/api"),
        "{text}"
    );
}

#[tokio::test]
async fn tag_page_limit_is_enforced() {
    let (host, _fake) = start().await;
    let client = RegistryClient::new(&access(&host, PASSWORD)).unwrap();
    let err = discover(
        &client,
        &Scope::Repository("team-a/api".into()),
        &TagFilter::new(".*").unwrap(),
        None,
        &DiscoveryLimits {
            page_size: 1,
            max_tags_per_repository: 2,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::LimitExceeded {
                what: "tags",
                limit: 2,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn manifest_without_a_digest_header_is_hashed() {
    use sha2::{Digest as _, Sha256};
    let (host, _fake) = start().await;
    let client = RegistryClient::new(&access(&host, PASSWORD)).unwrap();
    let digest = client
        .resolve_digest("team-a/api", NO_DIGEST_HEADER)
        .await
        .unwrap();
    assert_eq!(
        digest,
        format!("sha256:{}", hex::encode(Sha256::digest(NO_DIGEST_MANIFEST)))
    );
}

#[tokio::test]
async fn harbor_project_api_lists_a_namespace_when_the_catalog_is_refused() {
    let (host, _fake) = start_with(true).await;
    let client = RegistryClient::new(&access(&host, PASSWORD)).unwrap();
    let discovery = discover(
        &client,
        &Scope::Namespace("team-a".into()),
        &TagFilter::new("^v1$").unwrap(),
        None,
        &DiscoveryLimits::default(),
    )
    .await
    .unwrap();
    let repositories: Vec<&str> = discovery
        .images
        .iter()
        .map(|i| i.repository.as_str())
        .collect();
    // team-a/tools/ci belongs to namespace team-a/tools.
    assert_eq!(repositories, vec!["team-a/api", "team-a/web"]);

    // Wrong credentials: the catalog's refusal is what is reported.
    let client = RegistryClient::new(&access(&host, "wrong")).unwrap();
    let err = discover(
        &client,
        &Scope::Namespace("team-a".into()),
        &TagFilter::new(".*").unwrap(),
        None,
        &DiscoveryLimits::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
}

#[tokio::test]
async fn overloaded_registry_is_retried_then_reported() {
    let (host, fake) = start().await;
    let client = RegistryClient::new(&access(&host, PASSWORD)).unwrap();
    // Two 503s, then the answer.
    assert_eq!(
        client.resolve_digest("team-a/api", "flaky").await.unwrap(),
        digest_of("flaky")
    );
    assert_eq!(fake.flaky_requests.load(Ordering::SeqCst), 3);

    // Still busy after the retries: reported, and worth retrying later.
    let err = client
        .resolve_digest("team-a/api", "down")
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Http { status: 503, .. }),
        "{err}"
    );
    assert!(err.is_transient());
    assert!(err.to_string().contains("team-a/api"), "{err}");
}
