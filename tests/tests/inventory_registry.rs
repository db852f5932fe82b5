//! Inventories of images pulled from a real registry (Debian's docker-registry) in each of
//! its modes: plain HTTP, TLS with the fixture's CA, and TLS with htpasswd basic auth
//! (credentials given as flags and as a Docker config.json).

use anyhow::Result;
use imagewarden_scanner::inventory::Ecosystem;
use imagewarden_scanner::pipeline;
use imagewarden_scanner::source::{self, ImageRef, PullOptions, RegistryCredentials};
use imagewarden_tests::image::{push_image, sha256, Layer, LayerBuilder, TestImage};
use imagewarden_tests::{repo_root, Registry, RegistryMode};
use std::io::{Read, Write};

/// The real Alpine 3.10 layer from the docker-save archive in scanner/testdata, plus a
/// layer that upgrades musl and deletes the busybox binary's package record.
fn alpine_image() -> Result<TestImage> {
    let archive = repo_root().join("scanner/testdata/alpine-310.tar.gz");
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(archive)?));
    let mut tar_bytes = Vec::new();
    for e in a.entries()? {
        let mut e = e?;
        if e.path()?.to_string_lossy().ends_with("layer.tar") {
            e.read_to_end(&mut tar_bytes)?;
        }
    }
    assert!(!tar_bytes.is_empty());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar_bytes)?;
    let base = Layer {
        gzip: gz.finish()?,
        diff_id: sha256(&tar_bytes),
    };
    let upgrade = LayerBuilder::new()
        .dir("lib/")?
        .dir("lib/apk/")?
        .dir("lib/apk/db/")?
        .file(
            "lib/apk/db/installed",
            0o644,
            b"P:musl\nV:1.1.22-r4\no:musl\n\nP:zlib\nV:1.2.11-r1\no:zlib\n\n",
        )?
        .finish()?;
    Ok(TestImage {
        layers: vec![base, upgrade],
        user: "nobody".into(),
        env: vec!["PATH=/bin".into()],
    })
}

async fn inventory_in(
    mode: RegistryMode,
    opts: impl FnOnce(&Registry) -> PullOptions,
) -> Result<()> {
    let registry = Registry::start(mode).await?;
    let image = alpine_image()?;
    let digest = push_image(&registry, "team-a/alpine", "3.10", &image).await?;
    let target = ImageRef::parse(&format!("{}/team-a/alpine:3.10", registry.host))?;
    let scanned = pipeline::read_image(&target, &opts(&registry), &Default::default()).await?;
    let inv = &scanned.inventory;
    assert_eq!(inv.digest.as_deref(), Some(digest.as_str()));
    let os = inv.os.as_ref().expect("os");
    assert_eq!(
        (os.family.as_str(), os.version.as_str()),
        ("alpine", "3.10.4")
    );
    let pkgs: Vec<String> = inv
        .packages
        .iter()
        .filter(|p| p.ecosystem == Ecosystem::Alpine)
        .map(|p| format!("{}@{}", p.name, p.version))
        .collect();
    // The upper layer's database replaces the lower one.
    assert_eq!(pkgs, ["musl@1.1.22-r4", "zlib@1.2.11-r1"]);
    assert_eq!(
        inv.packages[0].layer.as_deref(),
        Some(sha256(&image.layers[1].gzip).as_str())
    );
    assert_eq!(scanned.layers.len(), 2);
    let config = scanned
        .config
        .expect("config")
        .config
        .expect("container config");
    assert_eq!(config.user.as_deref(), Some("nobody"));
    Ok(())
}

#[tokio::test]
async fn inventory_over_plain_http() -> Result<()> {
    inventory_in(RegistryMode::Plain, |_| PullOptions {
        insecure: true,
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn inventory_over_tls_with_the_registry_ca() -> Result<()> {
    inventory_in(RegistryMode::Tls, |r| PullOptions {
        ca_file: r.ca_path(),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn inventory_over_tls_with_basic_auth_flags() -> Result<()> {
    inventory_in(RegistryMode::TlsAuth, |r| {
        let (u, p) = r.credentials().expect("credentials");
        PullOptions {
            ca_file: r.ca_path(),
            credentials: RegistryCredentials {
                username: Some(u.into()),
                password: Some(p.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    })
    .await
}

#[tokio::test]
async fn inventory_over_tls_with_docker_config_credentials() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config.json");
    let config_for_closure = config.clone();
    inventory_in(RegistryMode::TlsAuth, move |r| {
        use base64::Engine;
        let (u, p) = r.credentials().expect("credentials");
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        let doc = serde_json::json!({"auths": {format!("https://{}", r.host): {"auth": auth}}});
        std::fs::write(&config_for_closure, serde_json::to_vec(&doc).unwrap()).unwrap();
        PullOptions {
            ca_file: r.ca_path(),
            credentials: RegistryCredentials {
                docker_config: Some(config_for_closure.clone()),
                ..Default::default()
            },
            ..Default::default()
        }
    })
    .await
}

#[tokio::test]
async fn a_private_registry_refuses_an_anonymous_pull_with_a_clear_error() -> Result<()> {
    let registry = Registry::start(RegistryMode::TlsAuth).await?;
    push_image(&registry, "app", "v1", &alpine_image()?).await?;
    let target = ImageRef::parse(&format!("{}/app:v1", registry.host))?;
    let empty = tempfile::tempdir()?;
    let opts = PullOptions {
        ca_file: registry.ca_path(),
        credentials: RegistryCredentials {
            docker_config: Some(empty.path().join("none.json")),
            ..Default::default()
        },
        ..Default::default()
    };
    // A named config file that does not exist is an error the user can act on.
    let err = source::inventory(&target, &opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("none.json"), "{err}");
    std::fs::write(empty.path().join("none.json"), "{}")?;
    let err = source::inventory(&target, &opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&registry.host), "{err}");
    Ok(())
}

/// A one-layer image whose os-release names an Alpine release.
fn release_image(version: &str) -> Result<TestImage> {
    let layer = LayerBuilder::new()
        .file(
            "etc/os-release",
            0o644,
            format!("ID=alpine\nVERSION_ID={version}\n").as_bytes(),
        )?
        .finish()?;
    Ok(TestImage {
        layers: vec![layer],
        ..Default::default()
    })
}

#[tokio::test]
async fn an_image_index_is_resolved_with_the_platform_option() -> Result<()> {
    use imagewarden_tests::image::{auth_for, client_for};
    let registry = Registry::start(RegistryMode::Plain).await?;
    let client = client_for(&registry);
    let auth = auth_for(&registry);
    let mut entries = Vec::new();
    for (arch, version) in [("amd64", "3.10.4"), ("arm64", "3.11.5")] {
        push_image(&registry, "multi", arch, &release_image(version)?).await?;
        let reference: oci_client::Reference = format!("{}/multi:{arch}", registry.host).parse()?;
        let (raw, digest) = client
            .pull_manifest_raw(
                &reference,
                &auth,
                &["application/vnd.oci.image.manifest.v1+json"],
            )
            .await?;
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": raw.len(),
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index: oci_client::manifest::OciImageIndex = serde_json::from_value(serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }))?;
    let index_ref: oci_client::Reference = format!("{}/multi:latest", registry.host).parse()?;
    client.push_manifest_list(&index_ref, &auth, index).await?;

    let target = ImageRef::parse(&format!("{}/multi:latest", registry.host))?;
    let mut opts = PullOptions {
        insecure: true,
        ..Default::default()
    };
    let inv = source::inventory(&target, &opts).await?;
    assert_eq!(inv.os.unwrap().version, "3.10.4");
    // The inventory names the platform's manifest, not the index.
    assert_eq!(inv.digest, entries[0]["digest"].as_str().map(String::from));
    opts.platform = "linux/arm64".parse().unwrap();
    assert_eq!(
        source::inventory(&target, &opts).await?.os.unwrap().version,
        "3.11.5"
    );
    opts.platform = "linux/s390x".parse().unwrap();
    let err = source::inventory(&target, &opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("linux/s390x") && err.contains("linux/arm64"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn the_largest_manifest_read_from_a_registry_is_configurable() -> Result<()> {
    let registry = Registry::start(RegistryMode::Plain).await?;
    push_image(&registry, "team-a/alpine", "3.10", &alpine_image()?).await?;
    let target = ImageRef::parse(&format!("{}/team-a/alpine:3.10", registry.host))?;
    let with = |max_manifest_bytes: Option<u64>| PullOptions {
        insecure: true,
        budgets: imagewarden_scanner::budget::ScanBudgets {
            max_manifest_bytes,
            ..Default::default()
        },
        ..Default::default()
    };
    // The defaults and a budget above the manifest's and configuration's sizes read it.
    source::inventory(&target, &with(None)).await?;
    source::inventory(&target, &with(Some(64 << 10))).await?;
    // Below them: refused, naming the flag.
    let err = source::inventory(&target, &with(Some(64)))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("more than 64 bytes (--max-manifest-bytes)"),
        "{err}"
    );
    Ok(())
}
