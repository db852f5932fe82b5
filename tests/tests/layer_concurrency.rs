//! Layers pulled at once from a real registry (Debian's docker-registry): several blob
//! downloads are in flight together (the registry's own log shows their times), and the
//! image's result and budget errors are those of one layer after another.

use anyhow::{Context, Result};
use imagewarden_scanner::budget::ScanBudgets;
use imagewarden_scanner::pipeline;
use imagewarden_scanner::source::{ImageRef, PullOptions, ScannedImage};
use imagewarden_tests::image::{push_image, LayerBuilder, TestImage};
use imagewarden_tests::{Registry, RegistryMode};

/// Bytes of incompressible content per layer: enough that a layer's download lasts while
/// the next ones start.
const NOISE_BYTES: usize = 12 << 20;

/// Incompressible bytes from a xorshift generator seeded with `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Five layers, each with its own Python package and a file of noise; the third layer
/// upgrades the first layer's package and the fifth deletes the second's.
fn five_layer_image() -> Result<TestImage> {
    let metadata = |name: &str, version: &str| {
        format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n").into_bytes()
    };
    let site = "usr/lib/python3/site-packages";
    let mut layers = Vec::new();
    for (i, (name, version)) in [
        ("alpha", "1.0"),
        ("beta", "2.0"),
        ("alpha", "1.1"),
        ("gamma", "3.0"),
        ("delta", "4.0"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut layer = LayerBuilder::new()
            .file(
                &format!("{site}/{name}-{version}.dist-info/METADATA"),
                0o644,
                &metadata(name, version),
            )?
            .file(
                &format!("opt/noise-{i}.bin"),
                0o644,
                &noise(i as u64 + 7, NOISE_BYTES),
            )?;
        if i == 2 {
            layer = layer.file(&format!("{site}/.wh.alpha-1.0.dist-info"), 0o644, b"")?;
        }
        if i == 4 {
            layer = layer.file(&format!("{site}/.wh.beta-2.0.dist-info"), 0o644, b"")?;
        }
        layers.push(layer.finish()?);
    }
    Ok(TestImage {
        layers,
        user: "app".into(),
        env: vec![],
    })
}

/// One completed request in the registry's log: its URI, start and end in seconds.
#[derive(Debug)]
struct Completed {
    uri: String,
    start: f64,
    end: f64,
}

/// The value of `key=value` or `key="value"` in a logrus text line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = match line.strip_prefix(&format!("{key}=")) {
        Some(_) => key.len() + 1,
        None => line.find(&format!(" {key}="))? + key.len() + 2,
    };
    let rest = &line[at..];
    match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next(),
        None => rest.split(' ').next(),
    }
}

/// A Go duration (`850µs`, `12.5ms`, `1.2s`, `1m2.5s`) in seconds.
fn go_duration(s: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (n, tail) = rest.split_at(split);
        let n: f64 = n.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        total += n * match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "µs" | "us" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = next;
    }
    Some(total)
}

/// The blob GETs the registry completed, from its log lines `response completed` (their
/// time is when the response ended; their duration gives the start).
fn blob_gets(log: &str) -> Result<Vec<Completed>> {
    let mut out = Vec::new();
    for line in log.lines().filter(|l| l.contains("response completed")) {
        let (Some(method), Some(uri)) = (
            field(line, "http.request.method"),
            field(line, "http.request.uri"),
        ) else {
            continue;
        };
        if method != "GET" || !uri.contains("/blobs/") {
            continue;
        }
        let time = field(line, "time").context("log line without time")?;
        let end =
            chrono::DateTime::parse_from_rfc3339(time).with_context(|| format!("time {time:?}"))?;
        let end = end.timestamp() as f64 + f64::from(end.timestamp_subsec_nanos()) * 1e-9;
        let duration = field(line, "http.response.duration")
            .and_then(go_duration)
            .with_context(|| format!("duration in {line:?}"))?;
        out.push(Completed {
            uri: uri.to_string(),
            start: end - duration,
            end,
        });
    }
    Ok(out)
}

/// Most requests in flight at one instant.
fn most_at_once(requests: &[Completed]) -> usize {
    requests
        .iter()
        .map(|r| {
            requests
                .iter()
                .filter(|o| o.start <= r.start && r.start < o.end)
                .count()
        })
        .max()
        .unwrap_or(0)
}

async fn read(
    target: &ImageRef,
    layers_at_once: usize,
    budgets: ScanBudgets,
) -> Result<ScannedImage> {
    let opts = PullOptions {
        insecure: true,
        layer_concurrency: layers_at_once,
        budgets,
        ..Default::default()
    };
    Ok(pipeline::read_image(target, &opts, &Default::default()).await?)
}

/// Everything of a scan that must not depend on how many layers were read at once.
fn outcome(scanned: &ScannedImage) -> Result<String> {
    Ok(format!(
        "{}\n{:?}\n{:?}\n{:?}",
        serde_json::to_string_pretty(&scanned.inventory)?,
        scanned.layers,
        scanned.warnings,
        scanned.config_json
    ))
}

#[tokio::test]
async fn layers_are_pulled_at_once_and_the_result_is_that_of_one_after_another() -> Result<()> {
    let registry = Registry::start(RegistryMode::Plain).await?;
    let image = five_layer_image()?;
    push_image(&registry, "team/five", "v1", &image).await?;
    let target = ImageRef::parse(&format!("{}/team/five:v1", registry.host))?;
    let blobs = |log: &str| -> Result<Vec<Completed>> {
        // Layer blobs only: the config is fetched before the layers.
        Ok(blob_gets(log)?
            .into_iter()
            .filter(|r| {
                image
                    .layers
                    .iter()
                    .any(|l| r.uri.ends_with(&imagewarden_tests::image::sha256(&l.gzip)))
            })
            .collect())
    };

    let one_by_one = read(&target, 1, ScanBudgets::default()).await?;
    let sequential = blobs(&registry.log())?;
    assert_eq!(sequential.len(), 5, "{sequential:?}");
    assert_eq!(most_at_once(&sequential), 1, "{sequential:?}");

    let at_once = read(&target, 4, ScanBudgets::default()).await?;
    let all = blobs(&registry.log())?;
    let concurrent = &all[sequential.len()..];
    assert_eq!(concurrent.len(), 5, "{concurrent:?}");
    let most = most_at_once(concurrent);
    assert!(
        (2..=4).contains(&most),
        "expected 2 to 4 layer downloads in flight at once, saw {most}: {concurrent:?}"
    );

    assert_eq!(outcome(&at_once)?, outcome(&one_by_one)?);
    let packages: Vec<String> = at_once
        .inventory
        .packages
        .iter()
        .map(|p| format!("{}@{}", p.name, p.version))
        .collect();
    assert_eq!(packages, ["alpha@1.1", "delta@4.0", "gamma@3.0"]);
    Ok(())
}

#[tokio::test]
async fn the_image_byte_budget_fails_on_the_same_layer_whatever_is_pulled_at_once() -> Result<()> {
    let registry = Registry::start(RegistryMode::Plain).await?;
    let image = five_layer_image()?;
    push_image(&registry, "team/five", "v1", &image).await?;
    let target = ImageRef::parse(&format!("{}/team/five:v1", registry.host))?;
    // Room for three and a half layers: the fourth passes the budget.
    let budgets = ScanBudgets {
        max_image_bytes: (NOISE_BYTES as u64) * 7 / 2,
        ..Default::default()
    };
    let one_by_one = read(&target, 1, budgets).await.unwrap_err().to_string();
    let fourth = imagewarden_tests::image::sha256(&image.layers[3].gzip);
    assert!(one_by_one.contains(&fourth), "{one_by_one}");
    for layers_at_once in [2, 5] {
        let at_once = read(&target, layers_at_once, budgets)
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(at_once, one_by_one, "{layers_at_once} layers at once");
    }
    Ok(())
}
