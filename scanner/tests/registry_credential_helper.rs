//! `imagewarden inventory` against a real registry (docker-registry with TLS and htpasswd)
//! whose credentials come from a Docker credential helper on PATH, as `docker login` with a
//! credential store leaves them.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use imagewarden_tests::image::{push_image, LayerBuilder, TestImage};
use imagewarden_tests::{Registry, RegistryMode};

/// Writes `docker-credential-<name>` into `bin` with `body` after the shebang.
fn helper(bin: &Path, name: &str, body: &str) {
    let path = bin.join(format!("docker-credential-{name}"));
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn inventory(
    registry: &Registry,
    image: &str,
    bin: &Path,
    docker_config: &Path,
) -> (bool, String, String) {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_imagewarden"))
        .args(["inventory", image, "--format", "json", "--ca-file"])
        .arg(registry.ca_path().expect("TLS registry"))
        .env("PATH", path)
        .env("DOCKER_CONFIG", docker_config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn credentials_come_from_the_helper_the_docker_config_names() {
    let registry = Registry::start(RegistryMode::TlsAuth).await.unwrap();
    let layer = LayerBuilder::new()
        .file("etc/os-release", 0o644, b"ID=alpine\nVERSION_ID=3.19.1\n")
        .unwrap()
        .finish()
        .unwrap();
    let image = TestImage {
        layers: vec![layer],
        ..Default::default()
    };
    push_image(&registry, "team-a/app", "v1", &image)
        .await
        .unwrap();
    let reference = format!("{}/team-a/app:v1", registry.host);
    let (user, password) = registry.credentials().expect("credentials");

    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let config = dir.path().join("docker");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&config).unwrap();
    let asked = dir.path().join("asked");
    helper(
        &bin,
        "iwtest",
        &format!(
            "[ \"$1\" = get ] || exit 9\nread -r server\nprintf '%s' \"$server\" > '{}'\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{password}\"}}' \"$server\"",
            asked.display()
        ),
    );
    helper(
        &bin,
        "iwempty",
        "echo 'credentials not found in native keychain'; exit 1",
    );
    helper(&bin, "iwbroken", "echo 'keychain locked' >&2; exit 3");
    // A reply that is not the protocol's, carrying the secret: the secret is never quoted.
    helper(
        &bin,
        "iwgarbled",
        &format!("cat > /dev/null; printf 'Secret={password} not json'"),
    );
    let write_config = |doc: serde_json::Value| {
        std::fs::write(
            config.join("config.json"),
            serde_json::to_vec(&doc).unwrap(),
        )
        .unwrap()
    };

    // credHelpers for this registry: the helper is asked with the registry's host.
    write_config(serde_json::json!({"credHelpers": {registry.host.clone(): "iwtest"}}));
    let (ok, out, err) = inventory(&registry, &reference, &bin, &config);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["os"]["version"], "3.19.1");
    assert_eq!(std::fs::read_to_string(&asked).unwrap(), registry.host);

    // credsStore serves every registry without a credHelpers entry.
    std::fs::remove_file(&asked).unwrap();
    write_config(serde_json::json!({"auths": {}, "credsStore": "iwtest"}));
    let (ok, _, err) = inventory(&registry, &reference, &bin, &config);
    assert!(ok, "{err}");
    assert_eq!(std::fs::read_to_string(&asked).unwrap(), registry.host);

    // A helper that knows no credentials: an anonymous pull, which the registry refuses.
    write_config(serde_json::json!({"credsStore": "iwempty"}));
    let (ok, _, err) = inventory(&registry, &reference, &bin, &config);
    assert!(!ok);
    assert!(err.contains("no credentials are configured"), "{err}");

    // A helper the config names but PATH lacks is named.
    write_config(serde_json::json!({"credHelpers": {registry.host.clone(): "iwabsent"}}));
    let (ok, _, err) = inventory(&registry, &reference, &bin, &config);
    assert!(!ok);
    assert!(
        err.contains("docker-credential-iwabsent is not on PATH"),
        "{err}"
    );

    write_config(serde_json::json!({"credsStore": "iwgarbled"}));
    let (ok, _, err) = inventory(&registry, &reference, &bin, &config);
    assert!(!ok);
    assert!(err.contains("docker-credential-iwgarbled"), "{err}");
    assert!(!err.contains(password), "{err}");

    // A failing helper is named with what it said.
    write_config(serde_json::json!({"credHelpers": {registry.host.clone(): "iwbroken"}}));
    let (ok, _, err) = inventory(&registry, &reference, &bin, &config);
    assert!(!ok);
    assert!(
        err.contains("docker-credential-iwbroken") && err.contains("keychain locked"),
        "{err}"
    );
}

// The token service runs on this test's runtime while the CLI is waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_token_from_a_helper_is_exchanged_for_access_tokens() {
    use imagewarden_tests::token_service::{self, REFRESH_TOKEN};
    let (registry, service) = token_service::start().await.unwrap();
    let layer = LayerBuilder::new()
        .file("etc/os-release", 0o644, b"ID=alpine\nVERSION_ID=3.20.3\n")
        .unwrap()
        .finish()
        .unwrap();
    let image = TestImage {
        layers: vec![layer],
        ..Default::default()
    };
    token_service::push(&registry, "team-a/app", "v1", &image)
        .await
        .unwrap();
    let reference = format!("{}/team-a/app:v1", registry.host);
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let config = dir.path().join("docker");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&config).unwrap();
    // What the ACR helper answers: Docker's `<token>` username with a refresh token.
    for (name, secret) in [
        ("iwacr", REFRESH_TOKEN),
        ("iwstale", "revoked-refresh-token"),
    ] {
        helper(
            &bin,
            name,
            &format!(
                "cat > /dev/null; printf '{{\"Username\":\"<token>\",\"Secret\":\"{secret}\"}}'"
            ),
        );
    }
    let run = |helper: &str| {
        std::fs::write(
            config.join("config.json"),
            serde_json::to_vec(
                &serde_json::json!({"credHelpers": {registry.host.clone(): helper}}),
            )
            .unwrap(),
        )
        .unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new(env!("CARGO_BIN_EXE_imagewarden"))
            .args(["inventory", &reference, "--format", "json", "--insecure"])
            .env("PATH", path)
            .env("DOCKER_CONFIG", &config)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (ok, out, err) = run("iwacr");
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["os"]["version"], "3.20.3");
    let forms = service.oauth_forms.lock().unwrap().clone();
    assert!(
        forms
            .iter()
            .any(|f| f.contains(&("refresh_token".into(), REFRESH_TOKEN.into()))),
        "{forms:?}"
    );

    let (ok, _, err) = run("iwstale");
    assert!(!ok);
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains("revoked-refresh-token"), "{err}");
}
