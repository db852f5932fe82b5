//! Inventories pulled from the real registry in token-auth mode (the Bearer flow Docker
//! Hub, Harbor and GHCR use): basic credentials exchanged for a JWT at the token service,
//! and a bearer token given directly.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Result;
use imagewarden_scanner::inventory::Ecosystem;
use imagewarden_scanner::source::{self, ImageRef, PullOptions, RegistryCredentials};
use imagewarden_tests::image::{LayerBuilder, TestImage};
use imagewarden_tests::Registry;

use imagewarden_tests::token_service::{TokenService, PASSWORD, USER};

/// Starts the token service and a registry that trusts it, and pushes an image with an
/// Alpine package database as `app:v1`.
async fn start() -> Result<(Registry, Arc<TokenService>)> {
    let (registry, service) = imagewarden_tests::token_service::start().await?;
    let layer = LayerBuilder::new()
        .file("etc/os-release", 0o644, b"ID=alpine\nVERSION_ID=3.11.5\n")?
        .file(
            "lib/apk/db/installed",
            0o644,
            b"P:musl\nV:1.1.24-r2\no:musl\n\nP:zlib\nV:1.2.11-r3\no:zlib\n\n",
        )?
        .finish()?;
    let image = TestImage {
        layers: vec![layer],
        ..Default::default()
    };
    imagewarden_tests::token_service::push(&registry, "app", "v1", &image).await?;
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

/// A Docker config whose entry for the registry holds `identitytoken`, as `docker login`
/// leaves one for Azure Container Registry.
fn identity_token_config(dir: &std::path::Path, host: &str, token: &str) -> std::path::PathBuf {
    let path = dir.join("config.json");
    let doc = serde_json::json!({"auths": {host: {"identitytoken": token}}});
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    path
}

#[tokio::test]
async fn an_identity_token_is_exchanged_at_the_token_service_with_oauth2() -> Result<()> {
    use imagewarden_tests::token_service::{REFRESH_TOKEN, SERVICE};
    let (registry, service) = start().await?;
    let dir = tempfile::tempdir()?;
    let target = ImageRef::parse(&format!("{}/app:v1", registry.host))?;
    let opts = |token: &str| PullOptions {
        insecure: true,
        credentials: RegistryCredentials {
            docker_config: Some(identity_token_config(dir.path(), &registry.host, token)),
            ..Default::default()
        },
        ..Default::default()
    };
    expect_alpine(&source::inventory(&target, &opts(REFRESH_TOKEN)).await?);
    let forms = service.oauth_forms.lock().unwrap().clone();
    assert!(
        !forms.is_empty(),
        "no OAuth2 request reached the token service"
    );
    let form = &forms[0];
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(field("grant_type").as_deref(), Some("refresh_token"));
    assert_eq!(field("refresh_token").as_deref(), Some(REFRESH_TOKEN));
    assert_eq!(field("service").as_deref(), Some(SERVICE));
    assert_eq!(field("scope").as_deref(), Some("repository:app:pull"));

    // A refresh token the service does not know: refused, the token never quoted.
    let err = source::inventory(&target, &opts("stale-identity-token"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains("stale-identity-token"), "{err}");
    Ok(())
}
