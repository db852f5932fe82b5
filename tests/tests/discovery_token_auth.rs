//! Discovery against the real registry in token-auth mode (the Bearer flow Harbor, Docker
//! Hub and GHCR use): the registry challenges with `WWW-Authenticate: Bearer`, a token
//! service started here checks the basic credentials and issues ES256 JWTs the registry
//! verifies, and discovery fetches one token per scope.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use imagewarden_operator::registry::{
    discover, Credentials, DiscoveredImage, DiscoveryLimits, RegistryAccess, RegistryClient,
    RegistryError, Scope, TagFilter,
};
use imagewarden_tests::image::{client_for, LayerBuilder, TestImage};
use imagewarden_tests::registry::{RegistryOptions, TokenAuth};
use imagewarden_tests::{Registry, RegistryMode};
use oci_client::client::{Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use rcgen::{CertificateParams, KeyPair, SigningKey};
use tokio::net::TcpListener;

const USER: &str = "ci-robot";
const PASSWORD: &str = "t0ken-Pa55";
const SERVICE: &str = "imagewarden-test-registry";
const ISSUER: &str = "imagewarden-test-token-service";

/// A token service: basic credentials in, JWTs granting every requested action out.
struct TokenService {
    key: KeyPair,
    cert_der: Vec<u8>,
    requests: AtomicUsize,
}

impl TokenService {
    fn jwt(&self, access: serde_json::Value) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [STANDARD.encode(&self.cert_der)],
        });
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": USER,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": format!("{now}-{}", self.requests.load(Ordering::SeqCst)),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let der = self.key.sign(signing_input.as_bytes()).expect("signing");
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(jws_signature(&der))
        )
    }
}

/// An ASN.1 ECDSA signature (`SEQUENCE { r INTEGER, s INTEGER }`) as JWS wants it:
/// r and s as 32 big-endian bytes each.
fn jws_signature(der: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let mut at = 2; // SEQUENCE tag and short length
    for _ in 0..2 {
        assert_eq!(der[at], 0x02, "INTEGER expected");
        let len = der[at + 1] as usize;
        let value = &der[at + 2..at + 2 + len];
        let value = &value[value.iter().take_while(|b| **b == 0).count()..];
        out.extend(std::iter::repeat_n(0u8, 32 - value.len()));
        out.extend_from_slice(value);
        at += 2 + len;
    }
    out
}

/// `repository:team-a/api:pull,push` → `{"type","name","actions"}`.
fn access_entry(scope: &str) -> Option<serde_json::Value> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    Some(serde_json::json!({
        "type": kind,
        "name": name,
        "actions": actions.split(',').collect::<Vec<_>>(),
    }))
}

async fn token(
    State(service): State<Arc<TokenService>>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    service.requests.fetch_add(1, Ordering::SeqCst);
    let expected = format!("Basic {}", STANDARD.encode(format!("{USER}:{PASSWORD}")));
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(expected.as_str())
    {
        return (StatusCode::UNAUTHORIZED, "invalid username or password").into_response();
    }
    let access: Vec<serde_json::Value> = query
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' '))
        .filter_map(access_entry)
        .collect();
    let token = service.jwt(serde_json::Value::Array(access));
    axum::Json(serde_json::json!({"token": token, "access_token": token, "expires_in": 300}))
        .into_response()
}

/// Starts the token service and a registry that trusts it.
async fn start() -> Result<(Registry, Arc<TokenService>)> {
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["imagewarden-test-token-signer".to_string()])?
        .self_signed(&key)?;
    let service = Arc::new(TokenService {
        cert_der: cert.der().to_vec(),
        key,
        requests: AtomicUsize::new(0),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let realm = format!("http://{}/token", listener.local_addr()?);
    let app = Router::new()
        .route("/token", get(token))
        .with_state(service.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let registry = Registry::start_with(
        RegistryMode::Plain,
        RegistryOptions {
            token_auth: Some(TokenAuth {
                realm,
                service: SERVICE.into(),
                issuer: ISSUER.into(),
                root_cert_pem: cert.pem(),
            }),
            ..Default::default()
        },
    )
    .await?;
    Ok((registry, service))
}

/// Pushes a one-file image with the token-service credentials; returns its digest.
async fn push(registry: &Registry, repository: &str, tag: &str, content: &str) -> Result<String> {
    let layer = LayerBuilder::new()
        .file("app/version", 0o644, content.as_bytes())?
        .finish()?;
    let image = TestImage {
        layers: vec![layer.clone()],
        ..Default::default()
    };
    let reference: Reference = format!("{}/{repository}:{tag}", registry.host).parse()?;
    let client = client_for(registry);
    let auth = RegistryAuth::Basic(USER.into(), PASSWORD.into());
    client
        .push(
            &reference,
            &[ImageLayer::oci_v1_gzip(layer.gzip, None)],
            Config::oci_v1(image.config_json(), None),
            &auth,
            None,
        )
        .await?;
    Ok(client.pull_image_manifest(&reference, &auth).await?.1)
}

fn access(registry: &Registry, password: &str) -> Result<RegistryAccess> {
    Ok(RegistryAccess::new(&registry.host, true)?
        .with_credentials(Credentials::new(USER, password)))
}

#[tokio::test]
async fn bearer_flow_with_the_real_registry_fetches_one_token_per_scope() -> Result<()> {
    let (registry, service) = start().await?;
    let mut pushed = HashMap::new();
    for (repository, tag) in [
        ("team-a/api", "v1"),
        ("team-a/api", "v2"),
        ("team-a/web", "v1"),
        ("team-b/api", "v1"),
    ] {
        let digest = push(&registry, repository, tag, &format!("{repository}:{tag}")).await?;
        pushed.insert((repository, tag), digest);
    }
    service.requests.store(0, Ordering::SeqCst);

    let client = RegistryClient::new(&access(&registry, PASSWORD)?)?;
    let discovery = discover(
        &client,
        &Scope::Namespace("team-a".into()),
        &TagFilter::new(".*")?,
        None,
        &DiscoveryLimits {
            page_size: 1,
            ..Default::default()
        },
    )
    .await?;
    let expected: Vec<DiscoveredImage> = [
        ("team-a/api", "v1"),
        ("team-a/api", "v2"),
        ("team-a/web", "v1"),
    ]
    .iter()
    .map(|(repository, tag)| DiscoveredImage {
        repository: repository.to_string(),
        tag: tag.to_string(),
        digest: pushed[&(*repository, *tag)].clone(),
    })
    .collect();
    assert!(discovery.errors.is_empty(), "{:?}", discovery.errors);
    assert_eq!(discovery.images, expected);
    // The catalog (three pages) and each repository's tags and manifests: one token each.
    assert_eq!(service.requests.load(Ordering::SeqCst), 3);
    Ok(())
}

#[tokio::test]
async fn token_service_refusing_the_password_is_unauthorized() -> Result<()> {
    let (registry, _service) = start().await?;
    push(&registry, "team-a/api", "v1", "api").await?;

    for scope in [
        Scope::Namespace("team-a".into()),
        Scope::Repository("team-a/api".into()),
    ] {
        let client = RegistryClient::new(&access(&registry, "wrong")?)?;
        let err = discover(
            &client,
            &scope,
            &TagFilter::new(".*")?,
            None,
            &DiscoveryLimits::default(),
        )
        .await
        .expect_err("wrong password");
        assert!(
            matches!(err, RegistryError::Unauthorized { status: 401, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(&registry.host), "{err}");
    }

    // Without credentials the token service refuses too.
    let anonymous = RegistryAccess::new(&registry.host, true)?;
    let err = discover(
        &RegistryClient::new(&anonymous)?,
        &Scope::Repository("team-a/api".into()),
        &TagFilter::new(".*")?,
        None,
        &DiscoveryLimits::default(),
    )
    .await
    .expect_err("anonymous");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(
        err.to_string().contains("no credentials are configured"),
        "{err}"
    );
    Ok(())
}
