//! A burst of pushes reported by a real registry (`docker-registry` with notifications to
//! the operator's push webhook): `BURST_PUSHES` (default 1,000) tags, each a distinct
//! manifest digest, put within about ten seconds; the operator coalesces them into push
//! tasks and scans every digest (inline executor, `--max-concurrent-scans`
//! `BURST_SCANS`, default 2).
//!
//! A measurement, not a check: run it on demand and read the table it prints.
//!
//! ```text
//! cargo test -p imagewarden-operator --test push_burst --no-run
//! IMAGEWARDEN_OPERATOR_BIN=$CARGO_TARGET_DIR/release/imagewarden-operator \
//!   <printed executable> --ignored --nocapture
//! ```
//!
//! The digests differ only by a manifest annotation, so the layers and configuration are
//! shared (the registry content is cheap) while every push is a new digest to scan.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures::{StreamExt, TryStreamExt};
use imagewarden_operator::crd::{ImageScanResult, ScanPhase, ScanRule, ScanTask, TaskTrigger};
use imagewarden_tests::image::push_image;
use imagewarden_tests::operator::OperatorProcess;
use imagewarden_tests::registry::{NotificationEndpoint, RegistryOptions};
use imagewarden_tests::samples::{alpine311, testdata};
use imagewarden_tests::{ControlPlane, Registry, RegistryMode};
use kube::api::{Api, ListParams, PostParams};
use kube::Client;

/// How long the scans may take before the measurement gives up.
const LIMIT: Duration = Duration::from_secs(1800);

fn binary() -> std::path::PathBuf {
    imagewarden_tests::operator::benchmark_binary(env!("CARGO_BIN_EXE_imagewarden-operator"))
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn all<K>(api: &Api<K>) -> Result<Vec<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut items = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        items.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(items),
        }
    }
}

fn row(name: &str, measured: String, target: &str) {
    println!("{name:<52} {measured:>14} {target:>14}");
}

#[tokio::test]
#[ignore = "a measurement (minutes); run with --ignored --nocapture"]
async fn a_burst_of_pushes_is_coalesced_and_scanned() -> Result<()> {
    let pushes = env_usize("BURST_PUSHES", 1000);
    let scans = env_usize("BURST_SCANS", 2);
    let cp = ControlPlane::start().await?;
    cp.install_crds(&imagewarden_operator::crd::all()).await?;
    let client: Client = cp.client().await?;
    let token = "burst-token-5678";
    let token_file = cp.dir().join("webhook-token");
    std::fs::write(&token_file, token)?;
    let args = vec![
        "--leader-elect=false".to_string(),
        "--egress-allow=127.0.0.0/8".to_string(),
        "--executor=inline".to_string(),
        format!("--max-concurrent-scans={scans}"),
        format!("--db={}", testdata("osv").display()),
        format!("--webhook-token-file={}", token_file.display()),
    ];
    let operator = OperatorProcess::start(&binary(), &cp, &args).await?;
    let registry = Registry::start_with(
        RegistryMode::Plain,
        RegistryOptions {
            notifications: vec![NotificationEndpoint::operator(operator.webhook_port, token)],
            ..Default::default()
        },
    )
    .await?;
    let base_digest = push_image(&registry, "burst/app", "base", &alpine311()).await?;
    let rule: ScanRule = serde_json::from_value(serde_json::json!({
        "apiVersion": "imagewarden.io/v1alpha1",
        "kind": "ScanRule",
        "metadata": {"name": "burst", "namespace": "default"},
        "spec": {
            "registry": {"url": registry.host, "insecure": true},
            "scope": {"type": "Repository", "name": "burst/app"},
            "tagFilter": "^t\\d+$",
            "triggers": {"onPush": true},
        },
    }))?;
    Api::<ScanRule>::default_namespaced(client.clone())
        .create(&PostParams::default(), &rule)
        .await?;
    // The rule's informer sees the rule before the first push.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let http = reqwest::Client::new();
    let v2 = format!("http://{}/v2/burst/app", registry.host);
    let manifest = http
        .get(format!("{v2}/manifests/{base_digest}"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await?
        .error_for_status()?;
    let media_type = manifest
        .headers()
        .get("content-type")
        .context("manifest without content type")?
        .to_str()?
        .to_string();
    anyhow::ensure!(
        media_type == "application/vnd.oci.image.manifest.v1+json",
        "an OCI manifest (annotations make the digests distinct): {media_type}"
    );
    let mut parsed: serde_json::Value = manifest.json().await?;
    let bodies: Vec<(String, Vec<u8>)> = (0..pushes)
        .map(|i| {
            parsed["annotations"] = serde_json::json!({"io.imagewarden.burst": i.to_string()});
            (format!("t{i:04}"), serde_json::to_vec(&parsed).unwrap())
        })
        .collect();
    let digests: HashSet<String> = bodies
        .iter()
        .map(|(_, b)| imagewarden_tests::image::sha256(b))
        .collect();
    anyhow::ensure!(digests.len() == pushes, "distinct digests");

    let (rss_before, _) = operator.memory_mib()?;
    let started = Instant::now();
    futures::stream::iter(bodies)
        .map(|(tag, body)| {
            let (http, v2, media_type) = (&http, &v2, &media_type);
            async move {
                http.put(format!("{v2}/manifests/{tag}"))
                    .header("Content-Type", media_type.as_str())
                    .body(body)
                    .send()
                    .await?
                    .error_for_status()?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    let pushed = started.elapsed();

    let tasks: Api<ScanTask> = Api::default_namespaced(client.clone());
    let results: Api<ImageScanResult> = Api::default_namespaced(client.clone());
    // Every pushed digest in a push task.
    let mut first_task = None;
    let (task_count, queued) = loop {
        let listed = all(&tasks).await?;
        let push_tasks: Vec<&ScanTask> = listed
            .iter()
            .filter(|t| t.spec.trigger == TaskTrigger::Push)
            .collect();
        if !push_tasks.is_empty() && first_task.is_none() {
            first_task = Some(started.elapsed());
        }
        let covered: HashSet<&str> = push_tasks
            .iter()
            .flat_map(|t| t.spec.images.iter())
            .filter_map(|i| i.rsplit_once('@').map(|(_, d)| d))
            .collect();
        if digests.iter().all(|d| covered.contains(d.as_str())) {
            break (push_tasks.len(), started.elapsed());
        }
        anyhow::ensure!(started.elapsed() < LIMIT, "pushes never all reached a task");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut first_result = None;
    let mut peak = 0.0f64;
    let scanned = loop {
        let done = all(&results)
            .await?
            .iter()
            .filter(|r| digests.contains(&r.spec.digest))
            .count();
        if done > 0 && first_result.is_none() {
            first_result = Some(started.elapsed());
        }
        peak = peak.max(operator.memory_mib()?.1);
        if done == pushes {
            break started.elapsed();
        }
        anyhow::ensure!(
            started.elapsed() < LIMIT,
            "only {done} of {pushes} digests scanned"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let finished = all(&tasks)
        .await?
        .into_iter()
        .filter(|t| t.spec.trigger == TaskTrigger::Push)
        .filter_map(|t| t.status)
        .filter(|s| s.phase == ScanPhase::Completed)
        .count();
    let (rss_after, hwm) = operator.memory_mib()?;
    let scan_seconds = (scanned - queued).as_secs_f64();

    println!();
    row("figure", "measured".into(), "target");
    row(
        &format!("{pushes} manifest pushes (8 at a time)"),
        format!("{:.1} s", pushed.as_secs_f64()),
        "~10 s",
    );
    row(
        "push tasks made (coalescing)",
        format!("{task_count}"),
        "few",
    );
    row(
        "first push to first push task",
        format!("{:.1} s", first_task.unwrap_or_default().as_secs_f64()),
        "",
    );
    row(
        "last push to every digest in a task",
        format!("{:.1} s", (queued - pushed).as_secs_f64()),
        "< 5 s",
    );
    row(
        "first push to first result",
        format!("{:.1} s", first_result.unwrap_or_default().as_secs_f64()),
        "< 5 s + scan",
    );
    row(
        &format!("all {pushes} digests scanned, from the first push"),
        format!("{:.1} s", scanned.as_secs_f64()),
        "",
    );
    row(
        &format!("scan rate ({scans} scans at once)"),
        format!("{:.1}/s", pushes as f64 / scan_seconds.max(0.001)),
        "",
    );
    row(
        "push tasks Completed",
        format!("{finished} of {task_count}"),
        "all",
    );
    row(
        "operator memory before / after / peak",
        format!("{rss_before:.0}/{rss_after:.0}/{:.0} MiB", peak.max(hwm)),
        "< 300 MB",
    );
    drop(operator);
    Ok(())
}
