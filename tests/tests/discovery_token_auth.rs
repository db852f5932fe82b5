//! Discovery against the real registry in token-auth mode (the Bearer flow Harbor, Docker
//! Hub and GHCR use): the registry challenges with `WWW-Authenticate: Bearer`, a token
//! service started here checks the basic credentials and issues ES256 JWTs the registry
//! verifies, and discovery fetches one token per scope.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use anyhow::Result;
use imagewarden_operator::registry::{
    discover, Credentials, DiscoveredImage, DiscoveryLimits, RegistryAccess, RegistryClient,
    RegistryError, Scope, TagFilter,
};
use imagewarden_tests::image::{LayerBuilder, TestImage};
use imagewarden_tests::{loopback_egress, Registry};

use imagewarden_tests::token_service::{start, PASSWORD, USER};

/// Pushes a one-file image with the token-service credentials; returns its digest.
async fn push(registry: &Registry, repository: &str, tag: &str, content: &str) -> Result<String> {
    let layer = LayerBuilder::new()
        .file("app/version", 0o644, content.as_bytes())?
        .finish()?;
    let image = TestImage {
        layers: vec![layer],
        ..Default::default()
    };
    imagewarden_tests::token_service::push(registry, repository, tag, &image).await
}

fn access(registry: &Registry, password: &str) -> Result<RegistryAccess> {
    Ok(RegistryAccess::new(&registry.host, true)?
        .with_egress(loopback_egress())
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
    let anonymous = RegistryAccess::new(&registry.host, true)?.with_egress(loopback_egress());
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
