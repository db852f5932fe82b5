//! Benchmark (ignored; run by hand): discovery of a registry at scale on the real registry.
//! `DISCOVERY_SCALE_REPOSITORIES` repositories (default 1,000) with `DISCOVERY_SCALE_TAGS`
//! tags each (default 10) all point at one image, so the content is cheap to build: blobs
//! mounted across repositories, manifests put by tag. Prints the discovery time, the images
//! and distinct digests found, the requests the registry served and the process's peak RSS.
//!
//!   cargo test -p imagewarden-tests --test discovery_scale --no-run
//!   (cd tests && <that executable> --ignored --nocapture)

use std::time::Instant;

use anyhow::{ensure, Context, Result};
use futures::{StreamExt, TryStreamExt};
use imagewarden_operator::registry::{
    discover, DiscoveryLimits, RegistryAccess, RegistryClient, Scope, TagFilter,
};
use imagewarden_tests::image::{push_image, LayerBuilder, TestImage};
use imagewarden_tests::{loopback_egress, Registry, RegistryMode};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Peak resident memory of this process so far, in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Requests the registry has answered so far.
fn served(registry: &Registry) -> usize {
    registry.log().matches("response completed").count()
}

#[tokio::test]
#[ignore = "benchmark: run by hand with --ignored --nocapture"]
async fn discovery_of_ten_thousand_tags() -> Result<()> {
    let repositories = env_usize("DISCOVERY_SCALE_REPOSITORIES", 1000);
    let tags = env_usize("DISCOVERY_SCALE_TAGS", 10);
    let registry = Registry::start(RegistryMode::Plain).await?;
    let image = TestImage {
        layers: vec![LayerBuilder::new()
            .file("app/version", 0o644, b"1")?
            .finish()?],
        ..Default::default()
    };
    let first = "scale/r0000";
    let digest = push_image(&registry, first, "t00", &image).await?;
    let http = reqwest::Client::new();
    let base = format!("http://{}/v2", registry.host);
    let manifest = http
        .get(format!("{base}/{first}/manifests/{digest}"))
        .header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await?
        .error_for_status()?;
    let media_type = manifest
        .headers()
        .get("content-type")
        .context("manifest without content type")?
        .to_str()?
        .to_string();
    let manifest = manifest.bytes().await?;
    let parsed: serde_json::Value = serde_json::from_slice(&manifest)?;
    let mut blobs = vec![parsed["config"]["digest"]
        .as_str()
        .context("config digest")?
        .to_string()];
    for l in parsed["layers"].as_array().context("layers")? {
        blobs.push(l["digest"].as_str().context("layer digest")?.to_string());
    }

    let started = Instant::now();
    futures::stream::iter(0..repositories)
        .map(|i| {
            let (http, base, blobs, manifest, media_type) =
                (&http, &base, &blobs, &manifest, &media_type);
            async move {
                let repository = format!("scale/r{i:04}");
                if i > 0 {
                    for blob in blobs {
                        let mounted = http
                            .post(format!(
                                "{base}/{repository}/blobs/uploads/?mount={blob}&from={first}"
                            ))
                            .send()
                            .await?;
                        ensure!(
                            mounted.status() == 201,
                            "mount {blob}: {}",
                            mounted.status()
                        );
                    }
                }
                for t in 0..tags {
                    http.put(format!("{base}/{repository}/manifests/t{t:02}"))
                        .header("Content-Type", media_type.as_str())
                        .body(manifest.clone())
                        .send()
                        .await?
                        .error_for_status()?;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    println!(
        "populated {repositories} repositories x {tags} tags in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let access = RegistryAccess::new(&registry.host, true)?.with_egress(loopback_egress());
    let client = RegistryClient::new(&access)?;
    let limits = DiscoveryLimits {
        max_images: repositories * tags,
        ..Default::default()
    };
    let before = served(&registry);
    let rss_before = peak_rss_mib();
    let started = Instant::now();
    let discovery = discover(
        &client,
        &Scope::Namespace("scale".into()),
        &TagFilter::new(".*")?,
        None,
        &limits,
    )
    .await?;
    let elapsed = started.elapsed().as_secs_f64();
    let requests = served(&registry) - before;
    let digests: std::collections::BTreeSet<&str> =
        discovery.images.iter().map(|i| i.digest.as_str()).collect();
    assert_eq!(discovery.images.len(), repositories * tags);
    assert!(discovery.errors.is_empty(), "{:?}", discovery.errors);
    assert_eq!(digests.into_iter().collect::<Vec<_>>(), [digest.as_str()]);
    println!(
        "discovery: {} images over {repositories} repositories, 1 distinct digest, {elapsed:.1} s, \
         {requests} registry requests, peak RSS {:.0} MiB (before discovery {rss_before:.0} MiB), load {}",
        discovery.images.len(),
        peak_rss_mib(),
        std::fs::read_to_string("/proc/loadavg")?
            .split(' ')
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}
