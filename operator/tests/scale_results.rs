//! The operator with thousands of ImageScanResults on a real kube-apiserver: start-up
//! time, memory, API requests while idle, and the re-match of every result after a
//! vulnerability database update.
//!
//! A measurement, not a check: run it on demand and read the table it prints.
//!
//! ```text
//! cargo test -p imagewarden-operator --test scale_results --no-run
//! IMAGEWARDEN_OPERATOR_BIN=$CARGO_TARGET_DIR/release/imagewarden-operator \
//!   <printed executable> --ignored --nocapture
//! ```
//!
//! One image (`vulnerable_alpine`) is scanned for real by the operator (inline executor);
//! its ImageScanResult, with the stored inventory a re-match reads, is then copied under
//! `SCALE_RESULTS` (default 5,000) digests. A fresh operator starts over them; after its
//! first minute one advisory that matches the image is taken out of the database
//! directory, so the next refresh (every 2 s) finds a new database and re-matches every
//! result. Targets: resident memory under 300 MB, re-match under 60 s, idle API traffic
//! near zero.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures::{StreamExt, TryStreamExt};
use imagewarden_operator::crd::{
    ImageScanResult, RuleRef, ScanPhase, ScanRule, ScanTask, ScanTaskSpec,
};
use imagewarden_tests::control_plane::apiserver_request_totals;
use imagewarden_tests::image::push_image;
use imagewarden_tests::operator::OperatorProcess;
use imagewarden_tests::process::poll as wait_for;
use imagewarden_tests::samples::{testdata, vulnerable_alpine};
use imagewarden_tests::{ControlPlane, Registry, RegistryMode};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

/// The advisory taken out to change the database: it matches the scanned image.
const ADVISORY: &str = "Alpine/ALPINE-CVE-2019-14697.json";
const IDLE_WINDOW: Duration = Duration::from_secs(60);
/// How long the re-match may take before the measurement gives up.
const REMATCH_LIMIT: Duration = Duration::from_secs(1200);
/// Resources the operator uses; requests for anything else are the API server's own.
const OPERATOR_RESOURCES: &[&str] = &[
    "scanrules",
    "scantasks",
    "imagescanresults",
    "imagepolicies",
    "vulnerabilityexceptions",
    "namespaces",
    "pods",
    "jobs",
    "secrets",
    "events",
];

fn binary() -> std::path::PathBuf {
    imagewarden_tests::operator::benchmark_binary(env!("CARGO_BIN_EXE_imagewarden-operator"))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// How many results in `default` were made with a database other than `version`.
async fn count_not_made_with(client: &Client, version: &str) -> Result<usize> {
    let api: Api<ImageScanResult> = Api::default_namespaced(client.clone());
    let mut count = 0;
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        count += page
            .items
            .iter()
            .filter(|r| {
                r.status
                    .as_ref()
                    .and_then(|s| s.database_version.as_deref())
                    != Some(version)
            })
            .count();
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(count),
        }
    }
}

#[tokio::test]
#[ignore = "a measurement (several minutes); run with --ignored --nocapture"]
async fn the_operator_over_thousands_of_results() -> Result<()> {
    let results: usize = std::env::var("SCALE_RESULTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let cp = ControlPlane::start().await?;
    cp.install_crds(&imagewarden_operator::crd::all()).await?;
    let client = cp.client().await?;
    let registry = Registry::start(RegistryMode::Plain).await?;
    let digest = push_image(&registry, "team-a/alpine", "v1", &vulnerable_alpine()).await?;
    let db = tempfile::tempdir()?;
    copy_dir(&testdata("osv"), db.path())?;
    let rule: ScanRule = serde_json::from_value(serde_json::json!({
        "apiVersion": "imagewarden.io/v1alpha1",
        "kind": "ScanRule",
        "metadata": {"name": "scale", "namespace": "default"},
        "spec": {
            "registry": {"url": registry.host, "insecure": true},
            "scope": {"type": "Repository", "name": "team-a/alpine"},
        },
    }))?;
    Api::<ScanRule>::default_namespaced(client.clone())
        .create(&PostParams::default(), &rule)
        .await?;
    let args = vec![
        "--leader-elect=false".to_string(),
        "--egress-allow=127.0.0.0/8".to_string(),
        "--executor=inline".to_string(),
        "--db-refresh-interval=2s".to_string(),
        format!("--db={}", db.path().display()),
    ];

    // One real scan.
    let mut scanner = OperatorProcess::start(&binary(), &cp, &args).await?;
    let tasks: Api<ScanTask> = Api::default_namespaced(client.clone());
    tasks
        .create(
            &PostParams::default(),
            &ScanTask::new(
                "seed",
                ScanTaskSpec {
                    rule_ref: Some(RuleRef {
                        name: "scale".into(),
                    }),
                    images: vec![format!("{}/team-a/alpine@{digest}", registry.host)],
                    trigger: Default::default(),
                },
            ),
        )
        .await?;
    wait_for("the seed scan", Duration::from_secs(180), || {
        let tasks = tasks.clone();
        async move {
            let t = tasks.get("seed").await?;
            Ok(t.status
                .filter(|s| matches!(s.phase, ScanPhase::Completed | ScanPhase::Failed))
                .map(|s| s.phase))
        }
    })
    .await
    .and_then(|phase| {
        (phase == ScanPhase::Completed)
            .then_some(())
            .context("the seed scan failed")
    })?;
    scanner.kill();
    let api: Api<ImageScanResult> = Api::default_namespaced(client.clone());
    let seed = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .next()
        .context("the seed result")?;
    let seed_status = seed.status.clone().context("the seed's status")?;
    let old_version = seed_status
        .database_version
        .clone()
        .context("the seed's database version")?;
    anyhow::ensure!(
        seed_status.inventory.is_some(),
        "the seed result keeps its inventory"
    );
    let object_kib = serde_json::to_vec(&seed)?.len() as f64 / 1024.0;

    // Its copies.
    let seeding = Instant::now();
    futures::stream::iter(1..results)
        .map(|i| {
            let api = api.clone();
            let mut copy = ImageScanResult::new(&format!("scale-{i:05}"), seed.spec.clone());
            copy.spec.digest = format!("sha256:{i:064x}");
            copy.metadata.labels = seed.metadata.labels.clone();
            let status = seed_status.clone();
            async move {
                api.create(&PostParams::default(), &copy).await?;
                let patch = serde_json::json!({
                    "apiVersion": "imagewarden.io/v1alpha1",
                    "kind": "ImageScanResult",
                    "status": status,
                });
                api.patch_status(
                    &copy.name_any(),
                    &PatchParams::apply("scale-benchmark").force(),
                    &Patch::Apply(patch),
                )
                .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await?;
    let seeded_in = seeding.elapsed();
    println!();
    println!(
        "operator {} over {results} ImageScanResults of {object_kib:.1} KiB each",
        binary().display()
    );
    println!("{:<48} {:>14} {:>10}", "figure", "measured", "target");
    row(
        "results created (16 at a time)",
        format!("{:.1} s", seeded_in.as_secs_f64()),
        "",
    );

    // A fresh operator over all of them.
    let started = Instant::now();
    let operator = OperatorProcess::start(&binary(), &cp, &args).await?;
    row(
        "start-up: process to listening",
        format!("{:.2} s", started.elapsed().as_secs_f64()),
        "",
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    row(
        "resident memory, 20 s after start",
        format!("{:.0} MiB", operator.memory_mib()?.0),
        "< 300 MB",
    );

    let before = apiserver_request_totals(&client).await?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let after = apiserver_request_totals(&client).await?;
    let mut idle_requests = 0.0;
    for (key, value) in &after {
        let resource = key.split_once(' ').map(|(_, r)| r).unwrap_or("");
        let resource = resource.split('/').next().unwrap_or("");
        if OPERATOR_RESOURCES.contains(&resource) {
            idle_requests += value - before.get(key).copied().unwrap_or(0.0);
        }
    }
    row(
        "API requests in the idle minute",
        format!("{idle_requests}"),
        "near zero",
    );
    row(
        "resident memory after the idle minute",
        format!("{:.0} MiB", operator.memory_mib()?.0),
        "< 300 MB",
    );

    // A database update: every result is re-matched.
    let before_rematch = apiserver_request_totals(&client).await?;
    std::fs::remove_file(db.path().join(ADVISORY))?;
    let changed = Instant::now();
    let mut left = results;
    while left > 0 && changed.elapsed() < REMATCH_LIMIT {
        tokio::time::sleep(Duration::from_secs(3)).await;
        left = results - count_not_made_with(&client, &old_version).await?;
    }
    let rematched_in = changed.elapsed();
    anyhow::ensure!(
        left == 0,
        "{left} of {results} results not re-matched after {} s",
        REMATCH_LIMIT.as_secs()
    );
    row(
        "re-match of every result (incl. the 2 s refresh)",
        format!("{:.1} s", rematched_in.as_secs_f64()),
        "< 60 s",
    );
    row(
        "re-match rate",
        format!("{:.0} /s", results as f64 / rematched_in.as_secs_f64()),
        "",
    );
    let after_rematch = apiserver_request_totals(&client).await?;
    // Server-side apply counts as verb APPLY, a merge patch as PATCH.
    let writes = |resource: &str| {
        ["APPLY", "PATCH"]
            .iter()
            .map(|verb| {
                let key = format!("{verb} {resource}");
                after_rematch.get(&key).copied().unwrap_or(0.0)
                    - before_rematch.get(&key).copied().unwrap_or(0.0)
            })
            .sum::<f64>()
    };
    row(
        "writes per result: status / labels",
        format!(
            "{:.2} / {:.2}",
            writes("imagescanresults/status") / results as f64,
            writes("imagescanresults") / results as f64
        ),
        "",
    );
    let (rss_after, hwm) = operator.memory_mib()?;
    row(
        "resident memory after the re-match",
        format!("{rss_after:.0} MiB"),
        "< 300 MB",
    );
    row(
        "peak resident memory (VmHWM)",
        format!("{hwm:.0} MiB"),
        "< 300 MB",
    );
    let last = api
        .get(&format!("scale-{:05}", results - 1))
        .await?
        .status
        .context("status")?;
    anyhow::ensure!(
        last.findings
            .iter()
            .all(|f| f.id != "ALPINE-CVE-2019-14697"),
        "the re-matched results no longer hold the advisory"
    );
    drop(operator);

    // The API server's own ceiling on this machine: the same status writes (server-side
    // apply of the re-matched status, 8 at a time, as the re-match sends them) with
    // nothing computed, and the worst-severity label patch a changed summary adds.
    let status = serde_json::to_value(&last)?;
    let writing = Instant::now();
    futures::stream::iter(1..results)
        .map(|i| {
            let api = api.clone();
            let mut status = status.clone();
            status["databaseVersion"] = serde_json::json!(format!("ceiling-{i}"));
            async move {
                let patch = serde_json::json!({
                    "apiVersion": "imagewarden.io/v1alpha1",
                    "kind": "ImageScanResult",
                    "status": status,
                });
                api.patch_status(
                    &format!("scale-{i:05}"),
                    &PatchParams::apply("imagewarden-operator").force(),
                    &Patch::Apply(patch),
                )
                .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(8)
        .try_collect::<()>()
        .await?;
    let written_in = writing.elapsed();
    row(
        "API server ceiling: status writes alone",
        format!("{:.0} /s", (results - 1) as f64 / written_in.as_secs_f64()),
        "",
    );
    Ok(())
}

fn row(name: &str, measured: String, target: &str) {
    println!("{name:<48} {measured:>14} {target:>10}");
}
