//! A pull uses only the credentials it is given: the Docker config of the process's user
//! (`$DOCKER_CONFIG`, `~/.docker/config.json`) is read only when asked for, so the
//! operator's inline scans of an anonymous rule never borrow the operator's own
//! credentials. One test in this binary: it sets the process environment.

use anyhow::Result;
use base64::Engine as _;
use imagewarden_scanner::source::{self, ImageRef, PullOptions, RegistryCredentials};
use imagewarden_tests::image::{push_image, LayerBuilder, TestImage};
use imagewarden_tests::{Registry, RegistryMode};

#[tokio::test]
async fn the_users_docker_config_is_read_only_when_asked_for() -> Result<()> {
    let registry = Registry::start(RegistryMode::TlsAuth).await?;
    let layer = LayerBuilder::new()
        .file("etc/os-release", 0o644, b"ID=alpine\nVERSION_ID=3.19.1\n")?
        .finish()?;
    let image = TestImage {
        layers: vec![layer],
        ..Default::default()
    };
    push_image(&registry, "team-a/app", "v1", &image).await?;
    let (user, password) = registry.credentials().expect("credentials");
    let dir = tempfile::tempdir()?;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec(&serde_json::json!({"auths": {registry.host.clone(): {"auth": auth}}}))?,
    )?;
    // SAFETY: the only test of this binary; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("DOCKER_CONFIG", dir.path()) };

    let target = ImageRef::parse(&format!("{}/team-a/app:v1", registry.host))?;
    let anonymous = PullOptions {
        ca_file: registry.ca_path(),
        ..Default::default()
    };
    let err = source::inventory(&target, &anonymous)
        .await
        .expect_err("no credentials were given")
        .to_string();
    assert!(err.contains("no credentials are configured"), "{err}");

    let users = PullOptions {
        credentials: RegistryCredentials::from_environment(),
        ..anonymous
    };
    let inventory = source::inventory(&target, &users).await?;
    assert_eq!(inventory.os.expect("os").version, "3.19.1");
    Ok(())
}
