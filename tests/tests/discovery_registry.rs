//! Discovery against the real registry: a rule's scope and tag filter select exactly the
//! matching images, each with the digest the push produced, across paginated catalogs,
//! over TLS with basic auth, and with errors that say what went wrong.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use imagewarden_operator::crd::ScanRuleSpec;
use imagewarden_operator::registry::{
    discover, discover_for_rule, Credentials, DiscoveredImage, DiscoveryLimits,
    FromSecretData as _, RegistryAccess, RegistryClient, RegistryError, RuleDiscoveryError, Scope,
    TagFilter,
};
use imagewarden_tests::image::{auth_for, client_for, push_image, LayerBuilder, TestImage};
use imagewarden_tests::process::free_port;
use imagewarden_tests::{loopback_egress, Registry, RegistryMode};
use k8s_openapi::ByteString;
use oci_client::client::{Config, ImageLayer};
use oci_client::Reference;

/// A one-file image whose digest depends on `content`.
fn image(content: &str) -> Result<TestImage> {
    let layer = LayerBuilder::new()
        .file("app/version", 0o644, content.as_bytes())?
        .finish()?;
    Ok(TestImage {
        layers: vec![layer],
        ..Default::default()
    })
}

/// Access to `registry` as a rule would configure it.
fn access(registry: &Registry) -> RegistryAccess {
    let mut access = RegistryAccess::new(&registry.host, registry.mode == RegistryMode::Plain)
        .expect("fixture address is valid")
        .with_egress(loopback_egress());
    if let Some(ca) = registry.ca_pem() {
        access = access.with_ca_pem(ca);
    }
    if let Some((user, password)) = registry.credentials() {
        access = access.with_credentials(Credentials::new(user, password));
    }
    access
}

fn found(repository: &str, tag: &str, digest: &str) -> DiscoveredImage {
    DiscoveredImage {
        repository: repository.into(),
        tag: tag.into(),
        digest: digest.into(),
    }
}

/// Pushed digests by `repository:tag`.
type Pushed = BTreeMap<String, String>;

/// team-a holds the rule's images; the rest are traps for the scope and the filter.
async fn populate(registry: &Registry) -> Result<Pushed> {
    let mut pushed = Pushed::new();
    for (repository, tag, content) in [
        ("team-a/api", "v1", "api 1"),
        ("team-a/api", "v2", "api 2"),
        // Same image as v2: two tags on one digest.
        ("team-a/api", "v2.0", "api 2"),
        ("team-a/api", "dev-42", "api dev"),
        ("team-a/web", "v1", "web 1"),
        ("team-a/web", "latest", "web 1"),
        ("team-a/worker", "v3", "worker 3"),
        // A nested namespace, a neighbour with a common prefix, another team.
        ("team-a/tools/ci", "v1", "ci 1"),
        ("team-ab/api", "v1", "ab 1"),
        ("team-b/api", "v1", "b 1"),
    ] {
        let digest = push_image(registry, repository, tag, &image(content)?).await?;
        pushed.insert(format!("{repository}:{tag}"), digest);
    }
    Ok(pushed)
}

fn expected(pushed: &Pushed, images: &[&str]) -> Vec<DiscoveredImage> {
    let mut out: Vec<_> = images
        .iter()
        .map(|reference| {
            let (repository, tag) = reference.split_once(':').unwrap();
            found(repository, tag, &pushed[*reference])
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn namespace_scope_finds_exactly_the_matching_tags_with_their_digests() -> Result<()> {
    let registry = Registry::start(RegistryMode::Plain).await?;
    let pushed = populate(&registry).await?;
    assert_eq!(pushed["team-a/api:v2"], pushed["team-a/api:v2.0"]);

    let client = RegistryClient::new(&access(&registry))?;
    let discovery = discover(
        &client,
        &Scope::Namespace("team-a".into()),
        &TagFilter::new(r"^v\d")?,
        None,
        &DiscoveryLimits::default(),
    )
    .await?;

    assert!(discovery.errors.is_empty(), "{:?}", discovery.errors);
    assert_eq!(
        discovery.images,
        expected(
            &pushed,
            &[
                "team-a/api:v1",
                "team-a/api:v2",
                "team-a/api:v2.0",
                "team-a/web:v1",
                "team-a/worker:v3",
            ]
        )
    );
    Ok(())
}

#[tokio::test]
async fn small_pages_are_followed_through_the_whole_catalog() -> Result<()> {
    let registry = Registry::start(RegistryMode::Plain).await?;
    let pushed = populate(&registry).await?;
    let client = RegistryClient::new(&access(&registry))?;
    let limits = DiscoveryLimits {
        page_size: 2,
        ..Default::default()
    };
    let discovery = discover(
        &client,
        &Scope::Namespace("team-a".into()),
        &TagFilter::new(".*")?,
        None,
        &limits,
    )
    .await?;
    assert_eq!(
        discovery.images,
        expected(
            &pushed,
            &[
                "team-a/api:dev-42",
                "team-a/api:v1",
                "team-a/api:v2",
                "team-a/api:v2.0",
                "team-a/web:latest",
                "team-a/web:v1",
                "team-a/worker:v3",
            ]
        )
    );
    // Six repositories at two per page: three pages, the later ones asked for by `last`.
    let log = registry.log();
    let catalog_requests = log.matches("GET /v2/_catalog?").count();
    assert!(catalog_requests >= 3, "expected 3+ catalog pages:\n{log}");
    assert!(log.contains("/v2/_catalog?last="), "{log}");
    Ok(())
}

#[tokio::test]
async fn too_many_pages_is_an_error_not_a_silent_cut() -> Result<()> {
    let registry = Registry::start(RegistryMode::Plain).await?;
    populate(&registry).await?;
    let client = RegistryClient::new(&access(&registry))?;
    let limits = DiscoveryLimits {
        page_size: 2,
        max_pages: 2,
        ..Default::default()
    };
    let err = discover(
        &client,
        &Scope::Namespace("team-a".into()),
        &TagFilter::new(".*")?,
        None,
        &limits,
    )
    .await
    .expect_err("six repositories do not fit two pages of two");
    assert!(
        matches!(
            err,
            RegistryError::LimitExceeded {
                what: "catalog pages",
                limit: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&registry.host), "{err}");

    let limits = DiscoveryLimits {
        max_images: 3,
        ..Default::default()
    };
    let err = discover(
        &client,
        &Scope::Namespace("team-a".into()),
        &TagFilter::new(".*")?,
        None,
        &limits,
    )
    .await
    .expect_err("seven images exceed three");
    assert!(matches!(err, RegistryError::LimitExceeded { .. }), "{err}");
    Ok(())
}

#[tokio::test]
async fn repository_scope_lists_one_repository_without_the_catalog() -> Result<()> {
    let registry = Registry::start(RegistryMode::Plain).await?;
    let pushed = populate(&registry).await?;
    let client = RegistryClient::new(&access(&registry))?;
    let discovery = discover(
        &client,
        &Scope::Repository("team-a/api".into()),
        &TagFilter::new(r"^v2")?,
        None,
        &DiscoveryLimits::default(),
    )
    .await?;
    assert_eq!(
        discovery.images,
        expected(&pushed, &["team-a/api:v2", "team-a/api:v2.0"])
    );
    assert!(
        !registry.log().contains("_catalog"),
        "no catalog request expected"
    );

    let err = discover(
        &client,
        &Scope::Repository("team-a/missing".into()),
        &TagFilter::new(".*")?,
        None,
        &DiscoveryLimits::default(),
    )
    .await
    .expect_err("a missing repository is an error");
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("team-a/missing"), "{err}");
    Ok(())
}

#[tokio::test]
async fn one_broken_repository_does_not_hide_the_others() -> Result<()> {
    let registry = Registry::start(RegistryMode::Plain).await?;
    let web = push_image(&registry, "team-a/web", "v1", &image("web")?).await?;
    push_image(&registry, "team-a/broken", "v1", &image("broken")?).await?;
    // The repository stays in the catalog but its tag list is gone.
    std::fs::remove_dir_all(
        registry
            .storage_path()
            .join("docker/registry/v2/repositories/team-a/broken/_manifests/tags"),
    )?;

    let client = RegistryClient::new(&access(&registry))?;
    let discovery = discover(
        &client,
        &Scope::Namespace("team-a".into()),
        &TagFilter::new(".*")?,
        None,
        &DiscoveryLimits::default(),
    )
    .await?;
    assert_eq!(discovery.images, vec![found("team-a/web", "v1", &web)]);
    assert_eq!(discovery.errors.len(), 1, "{:?}", discovery.errors);
    assert_eq!(discovery.errors[0].repository, "team-a/broken");
    let text = discovery.errors[0].error.to_string();
    assert!(
        text.contains(&registry.host) && text.contains("team-a/broken"),
        "{text}"
    );
    Ok(())
}

/// Pushes an image whose config says it was created at `created`.
async fn push_created(
    registry: &Registry,
    repository: &str,
    tag: &str,
    created: &str,
) -> Result<String> {
    push_created_for(registry, repository, tag, created, "amd64").await
}

/// Pushes an image for `architecture` whose config says it was created at `created`.
async fn push_created_for(
    registry: &Registry,
    repository: &str,
    tag: &str,
    created: &str,
    architecture: &str,
) -> Result<String> {
    let layer = LayerBuilder::new()
        .file(
            "app/created",
            0o644,
            format!("{created} {architecture}").as_bytes(),
        )?
        .finish()?;
    let config = serde_json::json!({
        "architecture": architecture,
        "os": "linux",
        "created": created,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
    });
    let reference: Reference = format!("{}/{repository}:{tag}", registry.host).parse()?;
    let client = client_for(registry);
    let auth = auth_for(registry);
    client
        .push(
            &reference,
            &[ImageLayer::oci_v1_gzip(layer.gzip, None)],
            Config::oci_v1(serde_json::to_vec(&config)?, None),
            &auth,
            None,
        )
        .await?;
    Ok(client.pull_image_manifest(&reference, &auth).await?.1)
}

#[tokio::test]
async fn max_tags_keeps_the_most_recently_created_images() -> Result<()> {
    let registry = Registry::start(RegistryMode::Plain).await?;
    // Creation order differs from tag order: v1 newest, v2 oldest.
    let v1 = push_created(&registry, "team-a/api", "v1", "2025-03-01T00:00:00Z").await?;
    push_created(&registry, "team-a/api", "v2", "2023-03-01T00:00:00Z").await?;
    let v10 = push_created(&registry, "team-a/api", "v10", "2024-03-01T00:00:00Z").await?;

    let client = RegistryClient::new(&access(&registry))?;
    let discovery = discover(
        &client,
        &Scope::Repository("team-a/api".into()),
        &TagFilter::new(".*")?,
        Some(2),
        &DiscoveryLimits::default(),
    )
    .await?;
    assert_eq!(
        discovery.images,
        vec![
            found("team-a/api", "v1", &v1),
            found("team-a/api", "v10", &v10)
        ]
    );
    Ok(())
}

#[tokio::test]
async fn tls_registry_with_basic_auth_and_the_right_credentials() -> Result<()> {
    let registry = Registry::start(RegistryMode::TlsAuth).await?;
    let digest = push_image(&registry, "team-a/api", "v1", &image("api")?).await?;
    let client = RegistryClient::new(&access(&registry))?;
    let discovery = discover(
        &client,
        &Scope::Namespace("team-a".into()),
        &TagFilter::new(".*")?,
        None,
        &DiscoveryLimits::default(),
    )
    .await?;
    assert_eq!(discovery.images, vec![found("team-a/api", "v1", &digest)]);
    Ok(())
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_unauthorized_and_name_the_registry() -> Result<()> {
    let registry = Registry::start(RegistryMode::TlsAuth).await?;
    push_image(&registry, "team-a/api", "v1", &image("api")?).await?;
    let (user, _) = registry.credentials().unwrap();

    let wrong = access(&registry).with_credentials(Credentials::new(user, "wrong"));
    for (what, access, scope) in [
        (
            "wrong password, catalog",
            wrong.clone(),
            Scope::Namespace("team-a".into()),
        ),
        (
            "wrong password, repository",
            wrong,
            Scope::Repository("team-a/api".into()),
        ),
        (
            "no credentials",
            RegistryAccess {
                credentials: None,
                ..access(&registry)
            },
            Scope::Namespace("team-a".into()),
        ),
    ] {
        let client = RegistryClient::new(&access)?;
        let err = discover(
            &client,
            &scope,
            &TagFilter::new(".*")?,
            None,
            &DiscoveryLimits::default(),
        )
        .await
        .expect_err(what);
        assert!(
            matches!(err, RegistryError::Unauthorized { status: 401, .. }),
            "{what}: {err}"
        );
        assert!(err.to_string().contains(&registry.host), "{what}: {err}");
        assert_eq!(err.reason(), "Unauthorized");
    }
    Ok(())
}

#[tokio::test]
async fn closed_port_is_unreachable() -> Result<()> {
    let host = format!("127.0.0.1:{}", free_port()?);
    let access = RegistryAccess::new(&host, true)?.with_egress(loopback_egress());
    let client = RegistryClient::with_timeout(&access, Duration::from_secs(5))?;
    let err = discover(
        &client,
        &Scope::Namespace("team-a".into()),
        &TagFilter::new(".*")?,
        None,
        &DiscoveryLimits::default(),
    )
    .await
    .expect_err("nothing listens there");
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&host), "{err}");
    assert!(err.is_transient());
    Ok(())
}

#[tokio::test]
async fn tls_registry_without_its_ca_is_refused() -> Result<()> {
    let registry = Registry::start(RegistryMode::Tls).await?;
    let access = RegistryAccess::new(&registry.host, false)?.with_egress(loopback_egress());
    let client = RegistryClient::new(&access)?;
    let err = discover(
        &client,
        &Scope::Repository("team-a/api".into()),
        &TagFilter::new(".*")?,
        None,
        &DiscoveryLimits::default(),
    )
    .await
    .expect_err("an unknown CA must not be trusted");
    assert!(matches!(err, RegistryError::Tls { .. }), "{err}");
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(text.contains(&registry.host), "{text}");
    assert!(
        text.to_lowercase().contains("certificate") || text.contains("UnknownIssuer"),
        "{text}"
    );
    assert!(text.contains("caSecretRef"), "{text}");
    Ok(())
}

#[test]
fn invalid_tag_filter_is_reported_with_the_regex_error() {
    let err = TagFilter::new("^v(1").expect_err("unclosed group");
    let text = err.to_string();
    assert!(text.contains("unclosed group"), "{text}");
}

/// A rule as a user writes it, against a TLS registry with basic auth, with its
/// credentials in a `kubernetes.io/dockerconfigjson` Secret and its CA in another.
#[tokio::test]
async fn rule_with_a_dockerconfigjson_secret_discovers_its_images() -> Result<()> {
    use base64::Engine as _;
    let registry = Registry::start(RegistryMode::TlsAuth).await?;
    let v1 = push_image(&registry, "team-a/api", "v1", &image("api 1")?).await?;
    push_image(&registry, "team-a/api", "latest", &image("api 1")?).await?;
    push_image(&registry, "team-b/api", "v1", &image("b")?).await?;

    let (user, password) = registry.credentials().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let docker_config = serde_json::json!({
        "auths": { format!("https://{}", registry.host): { "auth": auth } }
    });
    let secret_data = BTreeMap::from([(
        ".dockerconfigjson".to_string(),
        ByteString(serde_json::to_vec(&docker_config)?),
    )]);
    let credentials = Credentials::from_secret_data(&secret_data, &registry.host)?;

    let rule: ScanRuleSpec = serde_json::from_value(serde_json::json!({
        "registry": {"url": format!("https://{}", registry.host)},
        "scope": {"type": "Namespace", "name": "team-a"},
        "tagFilter": "^v[0-9]+$",
    }))?;
    let discovery = discover_for_rule(
        &rule,
        registry.ca_pem().map(str::to_string),
        Some(credentials),
        loopback_egress(),
        &DiscoveryLimits::default(),
    )
    .await?;
    assert_eq!(discovery.images, vec![found("team-a/api", "v1", &v1)]);

    let mut bad = rule.clone();
    bad.tag_filter = "^v[0-9+$".into();
    let err = discover_for_rule(
        &bad,
        None,
        None,
        loopback_egress(),
        &DiscoveryLimits::default(),
    )
    .await
    .expect_err("invalid regex");
    assert!(
        matches!(err, RuleDiscoveryError::InvalidTagFilter { .. }),
        "{err}"
    );
    assert_eq!(err.reason(), "InvalidTagFilter");
    assert!(err.to_string().contains("^v[0-9+$"), "{err}");
    Ok(())
}

#[tokio::test]
async fn plain_http_registry_reached_over_https_is_a_tls_error() -> Result<()> {
    let registry = Registry::start(RegistryMode::Plain).await?;
    let client = RegistryClient::new(
        &RegistryAccess::new(&registry.host, false)?.with_egress(loopback_egress()),
    )?;
    let err = discover(
        &client,
        &Scope::Repository("team-a/api".into()),
        &TagFilter::new(".*")?,
        None,
        &DiscoveryLimits::default(),
    )
    .await
    .expect_err("the registry does not speak TLS");
    assert!(matches!(err, RegistryError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("insecure: true"), "{err}");
    Ok(())
}

/// Pushes an OCI index of `children` (digest, architecture) as `repository:tag` over plain
/// HTTP; returns the index digest.
async fn push_index(
    registry: &Registry,
    repository: &str,
    tag: &str,
    children: &[(&str, &str)],
) -> Result<String> {
    let http = reqwest::Client::new();
    let base = format!("http://{}/v2/{repository}/manifests", registry.host);
    let mut manifests = Vec::new();
    for (digest, architecture) in children {
        let body = http
            .get(format!("{base}/{digest}"))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": body.len(),
            "platform": {"architecture": architecture, "os": "linux"},
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))?;
    let response = http
        .put(format!("{base}/{tag}"))
        .header("content-type", "application/vnd.oci.image.index.v1+json")
        .body(index.clone())
        .send()
        .await?
        .error_for_status()?;
    let digest = imagewarden_tests::image::sha256(&index);
    assert_eq!(
        response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok()),
        Some(digest.as_str())
    );
    Ok(digest)
}

/// A multi-arch tag is as old as its linux/amd64 image, wherever that image sits in the
/// index.
#[tokio::test]
async fn max_tags_dates_a_multi_arch_index_by_its_amd64_image() -> Result<()> {
    let registry = Registry::start(RegistryMode::Plain).await?;
    let repository = "team-a/multi";
    let arm = push_created_for(
        &registry,
        repository,
        "arm-build",
        "2020-01-01T00:00:00Z",
        "arm64",
    )
    .await?;
    let amd = push_created_for(
        &registry,
        repository,
        "amd-build",
        "2025-01-01T00:00:00Z",
        "amd64",
    )
    .await?;
    let index = push_index(
        &registry,
        repository,
        "multi",
        &[(&arm, "arm64"), (&amd, "amd64")],
    )
    .await?;
    let mid = push_created(&registry, repository, "mid", "2024-01-01T00:00:00Z").await?;
    push_created(&registry, repository, "old", "2023-01-01T00:00:00Z").await?;

    let client = RegistryClient::new(&access(&registry))?;
    let discovery = discover(
        &client,
        &Scope::Repository(repository.into()),
        &TagFilter::new("^(multi|mid|old)$")?,
        Some(2),
        &DiscoveryLimits::default(),
    )
    .await?;
    assert_eq!(
        discovery.images,
        vec![
            found(repository, "mid", &mid),
            found(repository, "multi", &index)
        ]
    );
    Ok(())
}
