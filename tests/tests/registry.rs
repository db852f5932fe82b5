//! The registry fixture in each mode: an image built here is pushed and read back
//! with oci-client, and access is refused without the CA or the credentials.

use anyhow::Result;
use imagewarden_tests::image::{auth_for, client_for, push_image, sha256, LayerBuilder, TestImage};
use imagewarden_tests::{Registry, RegistryMode};
use oci_client::client::ClientConfig;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

fn small_image() -> Result<TestImage> {
    let layer = LayerBuilder::new()
        .dir("etc/")?
        .file(
            "etc/os-release",
            0o644,
            b"ID=imagewarden-test\nVERSION_ID=1\n",
        )?
        .finish()?;
    Ok(TestImage {
        layers: vec![layer],
        ..Default::default()
    })
}

async fn push_and_pull_back(mode: RegistryMode) -> Result<()> {
    let registry = Registry::start(mode).await?;
    let image = small_image()?;
    let digest = push_image(&registry, "team-a/app", "v1", &image).await?;
    assert!(digest.starts_with("sha256:"), "{digest}");

    let client = client_for(&registry);
    let reference: Reference = format!("{}/team-a/app@{digest}", registry.host).parse()?;
    let (manifest, pulled_digest) = client
        .pull_image_manifest(&reference, &auth_for(&registry))
        .await?;
    assert_eq!(pulled_digest, digest);
    assert_eq!(manifest.layers.len(), 1);
    assert_eq!(manifest.layers[0].digest, sha256(&image.layers[0].gzip));

    let mut blob = Vec::new();
    client
        .pull_blob(&reference, &manifest.layers[0], &mut blob)
        .await?;
    assert_eq!(blob, image.layers[0].gzip);
    Ok(())
}

#[tokio::test]
async fn plain_http_push_and_pull() -> Result<()> {
    push_and_pull_back(RegistryMode::Plain).await
}

#[tokio::test]
async fn tls_push_and_pull() -> Result<()> {
    push_and_pull_back(RegistryMode::Tls).await
}

#[tokio::test]
async fn tls_with_basic_auth_push_and_pull() -> Result<()> {
    push_and_pull_back(RegistryMode::TlsAuth).await
}

#[tokio::test]
async fn tls_registry_is_refused_without_its_ca() -> Result<()> {
    let registry = Registry::start(RegistryMode::Tls).await?;
    push_image(&registry, "app", "v1", &small_image()?).await?;
    let reference: Reference = format!("{}/app:v1", registry.host).parse()?;
    let err = Client::new(ClientConfig::default())
        .pull_image_manifest(&reference, &RegistryAuth::Anonymous)
        .await
        .expect_err("a certificate from an unknown CA must not be trusted");
    let text = format!("{err:?}");
    assert!(
        text.to_lowercase().contains("certificate") || text.contains("UnknownIssuer"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn auth_registry_refuses_anonymous_and_wrong_passwords() -> Result<()> {
    let registry = Registry::start(RegistryMode::TlsAuth).await?;
    push_image(&registry, "app", "v1", &small_image()?).await?;
    let reference: Reference = format!("{}/app:v1", registry.host).parse()?;
    let client = client_for(&registry);
    assert!(client
        .pull_image_manifest(&reference, &RegistryAuth::Anonymous)
        .await
        .is_err());
    let (user, _) = registry.credentials().unwrap();
    let client = client_for(&registry);
    assert!(client
        .pull_image_manifest(
            &reference,
            &RegistryAuth::Basic(user.into(), "wrong".into())
        )
        .await
        .is_err());
    assert!(
        registry.log().contains("authentication failure") || registry.log().contains("invalid"),
        "the registry should log the refused login"
    );
    Ok(())
}
