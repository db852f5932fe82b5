//! Inventories pulled from the real registry in token-auth mode (the Bearer flow Docker
//! Hub, Harbor and GHCR use): basic credentials exchanged for a JWT at the token service,
//! and a bearer token given directly.

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
use imagewarden_scanner::inventory::Ecosystem;
use imagewarden_scanner::source::{self, ImageRef, PullOptions, RegistryCredentials};
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

/// A token service: basic credentials in, ES256 JWTs granting the requested actions out.
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
            "typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(&self.cert_der)],
        });
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": USER, "aud": SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now,
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

/// ASN.1 ECDSA signature → JWS form (r and s as 32 big-endian bytes each).
fn jws_signature(der: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let mut at = 2;
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

/// `repository:app:pull,push` → `{"type","name","actions"}`.
fn access_entry(scope: &str) -> Option<serde_json::Value> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    Some(serde_json::json!({
        "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>(),
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

/// Starts the token service and a registry that trusts it, and pushes an image with an
/// Alpine package database as `app:v1`.
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

    let layer = LayerBuilder::new()
        .file("etc/os-release", 0o644, b"ID=alpine\nVERSION_ID=3.11.5\n")?
        .file(
            "lib/apk/db/installed",
            0o644,
            b"P:musl\nV:1.1.24-r2\no:musl\n\nP:zlib\nV:1.2.11-r3\no:zlib\n\n",
        )?
        .finish()?;
    let image = TestImage {
        layers: vec![layer.clone()],
        ..Default::default()
    };
    let reference: Reference = format!("{}/app:v1", registry.host).parse()?;
    client_for(&registry)
        .push(
            &reference,
            &[ImageLayer::oci_v1_gzip(layer.gzip, None)],
            Config::oci_v1(image.config_json(), None),
            &RegistryAuth::Basic(USER.into(), PASSWORD.into()),
            None,
        )
        .await?;
    Ok((registry, service))
}

fn expect_alpine(inv: &imagewarden_scanner::inventory::Inventory) {
    assert_eq!(inv.os.as_ref().unwrap().version, "3.11.5");
    let pkgs: Vec<String> = inv
        .packages
        .iter()
        .filter(|p| p.ecosystem == Ecosystem::Alpine)
        .map(|p| format!("{}@{}", p.name, p.version))
        .collect();
    assert_eq!(pkgs, ["musl@1.1.24-r2", "zlib@1.2.11-r3"]);
}

#[tokio::test]
async fn basic_credentials_are_exchanged_for_a_token() -> Result<()> {
    let (registry, service) = start().await?;
    let before = service.requests.load(Ordering::SeqCst);
    let target = ImageRef::parse(&format!("{}/app:v1", registry.host))?;
    let opts = PullOptions {
        insecure: true,
        credentials: RegistryCredentials {
            username: Some(USER.into()),
            password: Some(PASSWORD.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    expect_alpine(&source::inventory(&target, &opts).await?);
    assert!(service.requests.load(Ordering::SeqCst) > before);
    Ok(())
}

#[tokio::test]
async fn a_bearer_token_is_sent_as_given() -> Result<()> {
    let (registry, service) = start().await?;
    let token = service.jwt(serde_json::json!([
        {"type": "repository", "name": "app", "actions": ["pull"]}
    ]));
    let before = service.requests.load(Ordering::SeqCst);
    let target = ImageRef::parse(&format!("{}/app:v1", registry.host))?;
    let opts = PullOptions {
        insecure: true,
        credentials: RegistryCredentials {
            bearer_token: Some(token),
            ..Default::default()
        },
        ..Default::default()
    };
    expect_alpine(&source::inventory(&target, &opts).await?);
    // No round trip to the token service.
    assert_eq!(service.requests.load(Ordering::SeqCst), before);
    Ok(())
}

#[tokio::test]
async fn a_wrong_password_is_refused_with_the_image_named() -> Result<()> {
    let (registry, _service) = start().await?;
    let target = ImageRef::parse(&format!("{}/app:v1", registry.host))?;
    let opts = PullOptions {
        insecure: true,
        credentials: RegistryCredentials {
            username: Some(USER.into()),
            password: Some("wrong".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let err = source::inventory(&target, &opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("{}/app:v1", registry.host)), "{err}");
    Ok(())
}
