//! A token service for the registry's token-auth mode (the Bearer flow Docker Hub, Harbor
//! and GHCR use): basic credentials in, ES256 JWTs granting the requested actions out.

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
use oci_client::client::{Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use rcgen::{CertificateParams, KeyPair, SigningKey};
use tokio::net::TcpListener;

use crate::image::{client_for, TestImage};
use crate::registry::{RegistryOptions, TokenAuth};
use crate::{Registry, RegistryMode};

pub const USER: &str = "ci-robot";
pub const PASSWORD: &str = "t0ken-Pa55";
pub const SERVICE: &str = "imagewarden-test-registry";
pub const ISSUER: &str = "imagewarden-test-token-service";
/// The identity (refresh) token the OAuth2 endpoint accepts, as `docker login` keeps one.
pub const REFRESH_TOKEN: &str = "0a1b2c3d-identity-token-of-ci-robot";

/// A token service: basic credentials in, JWTs granting every requested action out.
pub struct TokenService {
    key: KeyPair,
    cert_der: Vec<u8>,
    /// Token requests served so far.
    pub requests: AtomicUsize,
    /// OAuth2 requests (`POST`) among them, and the forms they carried.
    pub oauth_forms: std::sync::Mutex<Vec<Vec<(String, String)>>>,
}

impl TokenService {
    /// A signed token granting `access`.
    pub fn jwt(&self, access: serde_json::Value) -> String {
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

/// The OAuth2 flow of the token spec: `POST` a form with `grant_type=refresh_token`, the
/// refresh token, `service`, `scope` and `client_id`; `access_token` in the reply.
async fn oauth_token(
    State(service): State<Arc<TokenService>>,
    axum::Form(form): axum::Form<Vec<(String, String)>>,
) -> Response {
    service.requests.fetch_add(1, Ordering::SeqCst);
    service.oauth_forms.lock().expect("lock").push(form.clone());
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if field("grant_type") != Some("refresh_token")
        || field("refresh_token") != Some(REFRESH_TOKEN)
        || field("client_id").is_none_or(str::is_empty)
        || field("service") != Some(SERVICE)
    {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": "invalid_grant"})),
        )
            .into_response();
    }
    let access: Vec<serde_json::Value> = field("scope")
        .unwrap_or_default()
        .split(' ')
        .filter_map(access_entry)
        .collect();
    let token = service.jwt(serde_json::Value::Array(access));
    axum::Json(
        serde_json::json!({"access_token": token, "expires_in": 300, "scope": field("scope")}),
    )
    .into_response()
}

/// Starts the token service and a plain-HTTP registry that trusts it.
pub async fn start() -> Result<(Registry, Arc<TokenService>)> {
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["imagewarden-test-token-signer".to_string()])?
        .self_signed(&key)?;
    let service = Arc::new(TokenService {
        cert_der: cert.der().to_vec(),
        key,
        requests: AtomicUsize::new(0),
        oauth_forms: Default::default(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let realm = format!("http://{}/token", listener.local_addr()?);
    let app = Router::new()
        .route("/token", get(token).post(oauth_token))
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

/// Pushes `image` as `repository:tag` with the token service's credentials; returns the
/// manifest digest.
pub async fn push(
    registry: &Registry,
    repository: &str,
    tag: &str,
    image: &TestImage,
) -> Result<String> {
    let reference: Reference = format!("{}/{repository}:{tag}", registry.host).parse()?;
    let client = client_for(registry);
    let auth = RegistryAuth::Basic(USER.into(), PASSWORD.into());
    let layers: Vec<ImageLayer> = image
        .layers
        .iter()
        .map(|l| ImageLayer::oci_v1_gzip(l.gzip.clone(), None))
        .collect();
    client
        .push(
            &reference,
            &layers,
            Config::oci_v1(image.config_json(), None),
            &auth,
            None,
        )
        .await?;
    Ok(client.pull_image_manifest(&reference, &auth).await?.1)
}
