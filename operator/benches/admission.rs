//! Admission latency under load, served from cache: the webhook server the operator runs
//! (`policy::server::spawn`: HTTPS, AdmissionReview v1) started in-process over caches
//! holding one ImagePolicy and 2,000 ImageScanResults with their recorded verdicts, and
//! 200 clients (one keep-alive connection each) sending Pod CREATE reviews of two
//! containers, half of them denied: first in bursts (all 200 at the same instant, the next
//! burst once all are answered), then in a closed loop (200 always in flight, which
//! measures throughput). Prints p50, p90, p99 and max, and the rate, of each.
//!
//! `cargo bench -p imagewarden-operator --bench admission` (optimized), or
//! `cargo bench --profile dev ...` for a quick debug-build figure. Target: p99 < 10 ms.
//! `ADMISSION_BENCH_CLIENTS` and `ADMISSION_BENCH_REQUESTS` (per client) change the load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use imagewarden_operator::context::{Context, LoadedDb};
use imagewarden_operator::crd::{
    DenyRules, Finding, FindingClass, ImagePolicy, ImagePolicySpec, ImageScanResult,
    ImageScanResultSpec, ImageScanResultStatus, PolicyRules, ResultSummary, Severity,
    SeverityThreshold,
};
use imagewarden_operator::metrics::Metrics;
use imagewarden_operator::policy::admission::AdmissionSettings;
use imagewarden_operator::policy::server::{AdmissionServerConfig, Caches, DigestIndex};
use imagewarden_operator::policy::verdicts::verdict_entries;
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::watcher;

const RESULTS: usize = 2000;
const NAMESPACE: &str = "team-a";

fn store<K>(objects: Vec<K>) -> (Store<K>, Writer<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(o));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    (store, writer)
}

fn digest(i: usize) -> String {
    format!("sha256:{i:064x}")
}

/// Results of `registry.example.com/team-a/app-<i>`: even ones hold a Critical finding.
fn result(i: usize, policy: &Arc<ImagePolicy>, db: &str) -> ImageScanResult {
    let findings: Vec<Finding> = (0..40)
        .map(|n| Finding {
            id: format!("CVE-2024-{n:05}"),
            class: FindingClass::SystemVulnerability,
            severity: if n == 0 && i.is_multiple_of(2) {
                Severity::Critical
            } else {
                Severity::Medium
            },
            score: None,
            vector: None,
            severity_source: None,
            package: Some(format!("pkg-{n}")),
            version: Some("1.0".into()),
            fixed_version: Some("1.1".into()),
            title: None,
            location: None,
            link: None,
        })
        .collect();
    let mut r = ImageScanResult::new(
        &format!("app-{i}"),
        ImageScanResultSpec {
            registry: "registry.example.com".into(),
            repository: format!("team-a/app-{i}"),
            digest: digest(i),
            tags: vec!["v1".into()],
            tags_seen: Vec::new(),
        },
    );
    r.metadata.namespace = Some(NAMESPACE.into());
    r.status = Some(ImageScanResultStatus {
        summary: ResultSummary::of(&findings),
        total_findings: findings.len() as u32,
        findings,
        scan_time: Some(imagewarden_operator::now()),
        database_version: Some(db.into()),
        ..Default::default()
    });
    let (entries, _) = verdict_entries(&r, std::slice::from_ref(policy), &[], Utc::now(), Some(db));
    r.status.as_mut().unwrap().policies = entries;
    r
}

fn review(n: usize) -> Vec<u8> {
    // Even results hold a Critical finding: even n is denied, odd n admitted.
    let (a, b) = (n % RESULTS, (2 * n + 1) % RESULTS);
    let image = |i: usize| format!("registry.example.com/team-a/app-{i}@{}", digest(i));
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-0000-0000-{n:012}"),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": format!("web-{n}"),
            "namespace": NAMESPACE,
            "operation": "CREATE",
            "userInfo": {"username": "bench"},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": format!("web-{n}"), "namespace": NAMESPACE},
                "spec": {"containers": [
                    {"name": "app", "image": image(a)},
                    {"name": "sidecar", "image": image(b)}
                ]}
            },
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    }))
    .unwrap()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Sends one review: its latency and whether it was denied.
async fn send(
    http: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
) -> anyhow::Result<(Duration, bool)> {
    let t = Instant::now();
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let reply: serde_json::Value = response.json().await?;
    let latency = t.elapsed();
    Ok((
        latency,
        reply["response"]["allowed"] == serde_json::Value::Bool(false),
    ))
}

/// Every client sends `per_client` reviews, each after the last is answered and, with
/// `barrier`, once every client is ready to send: all latencies, and how many were denied.
async fn run(
    https: &[reqwest::Client],
    url: &str,
    per_client: usize,
    barrier: Option<Arc<tokio::sync::Barrier>>,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let mut tasks = Vec::new();
    for (c, http) in https.iter().cloned().enumerate() {
        let (url, barrier) = (url.to_string(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_client);
            let mut denied = 0usize;
            for k in 0..per_client {
                let body = review(c * per_client + k);
                if let Some(barrier) = &barrier {
                    barrier.wait().await;
                }
                let (latency, was_denied) = send(&http, &url, body).await?;
                latencies.push(latency);
                denied += usize::from(was_denied);
            }
            anyhow::Ok((latencies, denied))
        }));
    }
    let mut all = Vec::new();
    let mut denied = 0;
    for t in tasks {
        let (latencies, d) = t.await??;
        all.extend(latencies);
        denied += d;
    }
    Ok((all, denied))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let clients = env_usize("ADMISSION_BENCH_CLIENTS", 200);
    let per_client = env_usize("ADMISSION_BENCH_REQUESTS", 50);

    // An operator context whose API server is never called on the admission path.
    let kube_config = kube::Config::new("https://127.0.0.1:9".parse()?);
    let client = kube::Client::try_from(kube_config)?;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        config: imagewarden_operator::config::OperatorConfig,
    }
    let config = <Cli as clap::Parser>::try_parse_from(["operator", "--db=/unused"])?.config;
    let db_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scanner/examples/example-db.idx");
    let db = imagewarden_scanner::vulndb::Db::open_index(&db_path)?;
    let ctx = Arc::new(Context::new(
        client,
        config,
        LoadedDb::new(db),
        Arc::new(Metrics::default()),
    ));
    let db_version = ctx.db().version.clone();

    let mut policy = ImagePolicy::new(
        "no-critical",
        ImagePolicySpec {
            match_: Default::default(),
            rules: PolicyRules {
                deny: DenyRules {
                    severity: Some(SeverityThreshold::Critical),
                    ..Default::default()
                },
                ..Default::default()
            },
        },
    );
    policy.metadata.generation = Some(1);
    let policy = Arc::new(policy);
    let results: Vec<ImageScanResult> = (0..RESULTS)
        .map(|i| result(i, &policy, &db_version))
        .collect();
    let mut namespace = k8s_openapi::api::core::v1::Namespace::default();
    namespace.metadata.name = Some(NAMESPACE.into());
    let (policies, _w1) = store(vec![(*policy).clone()]);
    let results_by_digest = DigestIndex::default();
    results_by_digest.apply(&watcher::Event::Init);
    for r in &results {
        results_by_digest.apply(&watcher::Event::InitApply(r.clone()));
    }
    results_by_digest.apply(&watcher::Event::InitDone);
    let (results, _w2) = store(results);
    let (exceptions, _w3) = store(Vec::new());
    let (namespaces, _w4) = store(vec![namespace]);
    let (tasks, _w5) = store(Vec::new());
    let (rules, _w6) = store(Vec::new());
    let caches = Caches {
        policies,
        results,
        results_by_digest,
        exceptions,
        namespaces,
        tasks,
        rules,
    };

    let ca = imagewarden_tests::pki::TestCa::new("admission-bench-ca")?;
    let serving = ca.server(&["127.0.0.1"])?;
    let dir = tempfile::tempdir()?;
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_file, &serving.cert_pem)?;
    std::fs::write(&key_file, &serving.key_pem)?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    imagewarden_operator::policy::server::spawn(
        ctx.clone(),
        caches,
        AdmissionServerConfig {
            addr: format!("127.0.0.1:{port}").parse()?,
            tls: imagewarden_operator::policy::admission::AdmissionTls::Files {
                cert_file,
                key_file,
            },
            tag_cache: std::time::Duration::from_secs(30),
            settings: AdmissionSettings {
                default_excluded: vec!["kube-system".into()],
            },
        },
    )
    .await?;

    let url = format!("https://127.0.0.1:{port}/validate");
    let ca_cert = reqwest::Certificate::from_pem(ca.cert_pem.as_bytes())?;
    // One client (one connection) per concurrent caller, each set up by a first request
    // (the TLS handshake), not measured.
    let mut https = Vec::with_capacity(clients);
    for c in 0..clients {
        let http = reqwest::Client::builder()
            .add_root_certificate(ca_cert.clone())
            .http1_only()
            .pool_max_idle_per_host(1)
            .build()?;
        http.post(&url)
            .body(review(c))
            .send()
            .await?
            .bytes()
            .await?;
        https.push(http);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let report = |what: &str, mut all: Vec<Duration>, denied: usize, elapsed: Duration| {
        all.sort();
        println!(
            "{what}: {} requests from {clients} concurrent clients in {:.2} s ({:.0}/s), {denied} denied",
            all.len(),
            elapsed.as_secs_f64(),
            all.len() as f64 / elapsed.as_secs_f64()
        );
        println!(
            "  latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 < 10 ms)",
            ms(percentile(&all, 0.50)),
            ms(percentile(&all, 0.90)),
            ms(percentile(&all, 0.99)),
            ms(*all.last().unwrap())
        );
    };

    // Bursts: every client sends one review at the same instant (200 requests arriving
    // together, as when a Deployment of 200 replicas is created), and the next burst
    // starts when all are answered.
    let barrier = Arc::new(tokio::sync::Barrier::new(clients));
    let started = Instant::now();
    let (all, denied) = run(&https, &url, per_client, Some(barrier)).await?;
    report(
        &format!("bursts of {clients} simultaneous reviews"),
        all,
        denied,
        started.elapsed(),
    );

    // Closed loop: each client sends its next review as soon as the last is answered, so
    // `clients` reviews are always in flight (throughput-bound: latency = clients / rate).
    let started = Instant::now();
    let (all, denied) = run(&https, &url, per_client, None).await?;
    report(
        &format!("closed loop, {clients} reviews always in flight"),
        all,
        denied,
        started.elapsed(),
    );
    let text = ctx.metrics.render();
    let series = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let (sum, count) = (
        series("imagewarden_admission_duration_seconds_sum"),
        series("imagewarden_admission_duration_seconds_count"),
    );
    println!(
        "server side (judging only, from the operator's histogram): mean {:.3} ms over {count} reviews",
        sum / count.max(1.0) * 1000.0
    );
    Ok(())
}
