//! How many Kubernetes API requests the operator makes per minute while nothing changes.
//!
//! A measurement, not a check: run it on demand and read what it prints.
//!
//! ```text
//! cargo test -p imagewarden-operator --test idle_api_calls --no-run
//! <printed executable> --ignored --nocapture
//! ```
//!
//! "Idle" here: ten ScanTasks and nothing in the cluster or the registry changing for
//! the 60 s window. Five tasks are `Completed` (scanned inline, their results current);
//! five run with the Job executor and `--max-concurrent-scans=1` against a control plane
//! without kube-controller-manager, so the one scanner Job created never gets a Pod:
//! one task stays `Running` on that Job and four wait for the concurrency bound.
//!
//! The count is the real kube-apiserver's `apiserver_request_total` delta over the
//! window, for the resources the operator reads and writes (the API server's own
//! bookkeeping, such as its identity Leases and the `kubernetes` Service endpoints, is
//! printed but not counted; the operator runs with `--leader-elect=false`, so it makes
//! no Lease calls of its own).

use std::time::Duration;

use anyhow::Result;
use imagewarden_operator::crd::{RuleRef, ScanPhase, ScanTask, ScanTaskSpec};
use imagewarden_tests::control_plane::apiserver_request_totals;
use imagewarden_tests::image::push_image;
use imagewarden_tests::operator::OperatorProcess;
use imagewarden_tests::process::{free_port, poll as wait_for};
use imagewarden_tests::samples::{alpine311, testdata, vulnerable_alpine};
use imagewarden_tests::{ControlPlane, Registry, RegistryMode};
use kube::api::{Api, PostParams};
use kube::Client;

/// The operator binary: `IMAGEWARDEN_OPERATOR_BIN` (e.g. a copy of another build, to
/// compare), else the one cargo built with this test.
fn binary() -> std::path::PathBuf {
    std::env::var_os("IMAGEWARDEN_OPERATOR_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_imagewarden-operator").into())
}
const WINDOW: Duration = Duration::from_secs(60);

/// Resources the operator uses; requests for anything else are the API server's own.
const OPERATOR_RESOURCES: &[&str] = &[
    "scanrules",
    "scantasks",
    "imagescanresults",
    "jobs",
    "secrets",
    "configmaps",
    "events",
    "serviceaccounts",
    "rolebindings",
    "networkpolicies",
];

async fn create_tasks(client: &Client, prefix: &str, image: &str, n: usize) -> Result<()> {
    let api: Api<ScanTask> = Api::default_namespaced(client.clone());
    for i in 0..n {
        let task = ScanTask::new(
            &format!("{prefix}-{i}"),
            ScanTaskSpec {
                rule_ref: Some(RuleRef {
                    name: "idle".into(),
                }),
                images: vec![image.to_string()],
                trigger: Default::default(),
            },
        );
        api.create(&PostParams::default(), &task).await?;
    }
    Ok(())
}

/// Waits until at least `n` tasks named `prefix-*` satisfy `done`.
async fn wait_tasks(
    client: &Client,
    prefix: &str,
    n: usize,
    done: fn(&ScanTask) -> bool,
) -> Result<()> {
    let api: Api<ScanTask> = Api::default_namespaced(client.clone());
    wait_for(
        &format!("{n} tasks {prefix}-*"),
        Duration::from_secs(120),
        || {
            let api = api.clone();
            async move {
                let list = api.list(&Default::default()).await?;
                let count = list
                    .items
                    .iter()
                    .filter(|t| t.metadata.name.as_deref().unwrap_or("").starts_with(prefix))
                    .filter(|t| done(t))
                    .count();
                Ok((count >= n).then_some(()))
            }
        },
    )
    .await
}

fn phase(t: &ScanTask) -> ScanPhase {
    t.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

#[tokio::test]
#[ignore = "a measurement (two minutes); run with --ignored --nocapture"]
async fn api_requests_per_minute_with_ten_idle_tasks() -> Result<()> {
    let cp = ControlPlane::start().await?;
    cp.install_crds(&imagewarden_operator::crd::all()).await?;
    let client = cp.client().await?;
    let registry = Registry::start(RegistryMode::Plain).await?;
    let scanned = push_image(&registry, "team-a/alpine", "v1", &vulnerable_alpine()).await?;
    let waiting = push_image(&registry, "team-a/app", "v2", &alpine311()).await?;
    let rule: imagewarden_operator::crd::ScanRule = serde_json::from_value(serde_json::json!({
        "apiVersion": "imagewarden.io/v1alpha1",
        "kind": "ScanRule",
        "metadata": {"name": "idle", "namespace": "default"},
        "spec": {
            "registry": {"url": registry.host, "insecure": true},
            "scope": {"type": "Namespace", "name": "team-a"},
        },
    }))?;
    Api::<imagewarden_operator::crd::ScanRule>::default_namespaced(client.clone())
        .create(&PostParams::default(), &rule)
        .await?;
    let common = [
        "--leader-elect=false".to_string(),
        "--egress-allow=127.0.0.0/8".to_string(),
        format!("--db={}", testdata("osv").display()),
    ];

    // Five finished tasks (one scan, four reuses), by an operator scanning inline.
    let mut args = common.to_vec();
    args.push("--executor=inline".into());
    let mut inline = OperatorProcess::start(&binary(), &cp, &args).await?;
    let image = format!("{}/team-a/alpine@{scanned}", registry.host);
    create_tasks(&client, "finished", &image, 5).await?;
    wait_tasks(&client, "finished", 5, |t| phase(t) == ScanPhase::Completed).await?;
    inline.kill();

    // Five running tasks: one on a scanner Job that never gets a Pod, four waiting.
    let serve_port = free_port()?;
    let mut args = common.to_vec();
    args.extend([
        "--executor=job".to_string(),
        "--max-concurrent-scans=1".to_string(),
        "--scanner-image=registry.local/imagewarden:test".to_string(),
        format!("--db-serve-addr=127.0.0.1:{serve_port}"),
        format!("--db-serve-url=http://127.0.0.1:{serve_port}"),
    ]);
    let operator = OperatorProcess::start(&binary(), &cp, &args).await?;
    let image = format!("{}/team-a/app@{waiting}", registry.host);
    create_tasks(&client, "running", &image, 5).await?;
    wait_tasks(&client, "running", 5, |t| phase(t) == ScanPhase::Running).await?;
    wait_tasks(&client, "running", 1, |t| {
        t.status
            .as_ref()
            .is_some_and(|s| s.images.iter().any(|i| i.phase == ScanPhase::Running))
    })
    .await?;
    // Let the start-up reconciles and the first watch events pass.
    tokio::time::sleep(Duration::from_secs(10)).await;

    let before = apiserver_request_totals(&client).await?;
    tokio::time::sleep(WINDOW).await;
    let after = apiserver_request_totals(&client).await?;

    let mut operator_total = 0.0;
    let mut other_total = 0.0;
    println!("requests in {} s, by verb and resource:", WINDOW.as_secs());
    for (key, value) in &after {
        let delta = value - before.get(key).copied().unwrap_or(0.0);
        if delta <= 0.0 {
            continue;
        }
        let resource = key.split_once(' ').map(|(_, r)| r).unwrap_or("");
        let resource = resource.split('/').next().unwrap_or("");
        let ours = OPERATOR_RESOURCES.contains(&resource);
        if ours {
            operator_total += delta;
        } else {
            other_total += delta;
        }
        println!(
            "  {delta:>6} {key}{}",
            if ours { "" } else { "  (API server's own)" }
        );
    }
    println!(
        "operator requests per minute with 10 idle tasks: {operator_total} (API server's own: {other_total})"
    );
    let tasks = Api::<ScanTask>::default_namespaced(client.clone())
        .list(&Default::default())
        .await?;
    for t in tasks.items {
        let s = t.status.unwrap_or_default();
        println!(
            "  task {}: {:?}, images {:?}",
            t.metadata.name.unwrap_or_default(),
            s.phase,
            s.images.iter().map(|i| i.phase).collect::<Vec<_>>()
        );
    }
    drop(operator);
    Ok(())
}
