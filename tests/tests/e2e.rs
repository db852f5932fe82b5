//! End to end on a real node: the cluster of `tests/scripts/cluster.sh` (kubelet on
//! containerd + runc, CNI bridge, kube-proxy), imagewarden installed from the Helm chart
//! in `deploy/` with its own image from the cluster's registry, scanner Jobs running as
//! Pods, registry notifications reaching the operator through its Service, and
//! notifications reaching a receiver on the host.
//!
//! The tests share one installation and run one at a time.

use std::time::Duration;

use anyhow::{Context, Result};
use imagewarden_operator::crd::{ImageScanResult, ScanPhase, ScanRule, ScanTask, TaskTrigger};
use imagewarden_tests::cluster::Cluster;
use imagewarden_tests::image::{push_image_with, LayerBuilder, TestImage};
use imagewarden_tests::osv_mirror::OsvMirror;
use imagewarden_tests::process::poll as wait_for;
use imagewarden_tests::registry::{NotificationEndpoint, RegistryOptions};
use imagewarden_tests::samples::{alpine311, vulnerable_alpine};
use imagewarden_tests::{Registry, RegistryMode};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::Client;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

const OPERATOR_NS: &str = "imagewarden-system";
const WEBHOOK_TOKEN: &str = "e2e-webhook-token-3b1f";
/// The ConfigMap of YARA rules scanner Jobs mount from their namespace.
const RULES_CONFIGMAP: &str = "imagewarden-yara";

/// One test at a time: they share the installed operator, and one of them deletes its Pod.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
/// The operator's database source: an HTTP mirror of the OSV test records on the node.
static MIRROR: std::sync::OnceLock<OsvMirror> = std::sync::OnceLock::new();
/// The musl advisory the database refresh test takes away and gives back.
const MUSL_ADVISORY: &str = "Alpine/ALPINE-CVE-2019-14697.json";

fn osv_records() -> std::path::PathBuf {
    imagewarden_tests::samples::testdata("osv")
}

fn mirror() -> &'static OsvMirror {
    MIRROR
        .get()
        .expect("the mirror starts with the installation")
}

/// The cluster with imagewarden installed from the chart, a client, and the test lock.
async fn setup() -> Result<(
    &'static Cluster,
    Client,
    tokio::sync::MutexGuard<'static, ()>,
)> {
    let guard = SERIAL.lock().await;
    let cluster = tokio::task::spawn_blocking(Cluster::get).await??;
    INSTALLED
        .get_or_try_init(|| async { install(cluster) })
        .await?;
    // Every test starts with the operator on the mirror's current records.
    operator_uses(cluster, &mirror_version().await?).await?;
    let client = cluster.client().await?;
    Ok((cluster, client, guard))
}

/// `helm upgrade --install` of `deploy/helm/imagewarden` with the cluster's image, the job
/// executor, a webhook token, and as the database an HTTP mirror of the OSV test records
/// on the node (refreshed every few seconds); waits until the operator is available.
fn install(cluster: &Cluster) -> Result<()> {
    let (repository, tag) = cluster
        .image
        .rsplit_once(':')
        .context("image reference has a tag")?;
    let mirror = match MIRROR.get() {
        Some(m) => m,
        None => {
            let m = OsvMirror::start(&cluster.node_ip, &osv_records())?;
            MIRROR.get_or_init(|| m)
        }
    };
    cluster.helm(&[
        "upgrade",
        "--install",
        "imagewarden",
        "deploy/helm/imagewarden",
        "--namespace",
        OPERATOR_NS,
        "--create-namespace",
        "--set",
        &format!("image.repository={repository}"),
        "--set",
        &format!("image.tag={tag}"),
        "--set",
        "image.pullPolicy=Always",
        "--set",
        "executor=job",
        // The cluster has no network: the sample database baked into the test image, not
        // the official sources.
        "--set",
        "db.sources={/usr/share/imagewarden/db.idx}",
        "--set",
        &format!("db.sources={{{}}}", mirror.url),
        "--set",
        "db.refreshInterval=5s",
        "--set",
        "maxConcurrentScans=2",
        "--set",
        &format!("webhook.token={WEBHOOK_TOKEN}"),
        "--set",
        &format!("malware.rulesConfigMap={RULES_CONFIGMAP}"),
        // The cluster's Pod and Service ranges (tests/scripts/cluster.sh) are denied to the
        // operator's and scanners' requests; registries and receivers are on the node.
        "--set",
        "egress.clusterCIDRs={10.244.0.0/24,10.96.0.0/16}",
        // The first install pulls the operator's image onto the node while the other tests
        // start: under load its readiness has taken longer than four minutes.
        "--wait",
        "--timeout",
        "480s",
    ])?;
    operator_available(cluster)?;
    Ok(())
}

/// Waits until the operator's Deployment is rolled out and available.
fn operator_available(cluster: &Cluster) -> Result<()> {
    cluster.kubectl(&[
        "-n",
        OPERATOR_NS,
        "rollout",
        "status",
        "deployment/imagewarden-operator",
        "--timeout=240s",
    ])?;
    Ok(())
}

/// The database version the mirror's records give, computed as the operator computes it
/// (the scanner library loading the same URL).
async fn mirror_version() -> Result<String> {
    let mut builder = imagewarden_scanner::vulndb::DbBuilder::new();
    builder.add_url(&mirror().url).await?;
    Ok(builder.into_db(&mirror().url)?.info().digest.clone())
}

/// The version of the database the running operator uses, from its `/metrics` (read on
/// its Pod's address, which the node routes to).
async fn operator_db_version(cluster: &Cluster) -> Result<Option<String>> {
    let ip = cluster
        .kubectl(&[
            "-n",
            OPERATOR_NS,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=imagewarden,app.kubernetes.io/component=operator",
            "--field-selector=status.phase=Running",
            "-o",
            "jsonpath={.items[0].status.podIP}",
        ])?
        .trim()
        .to_string();
    let Ok(resp) = reqwest::get(format!("http://{ip}:8080/metrics")).await else {
        return Ok(None);
    };
    Ok(resp.text().await?.lines().find_map(|l| {
        l.strip_prefix("imagewarden_database_info{version=\"")
            .and_then(|rest| rest.split_once('"'))
            .map(|(v, _)| v.to_string())
    }))
}

/// Waits until the operator uses database `version`.
async fn operator_uses(cluster: &Cluster, version: &str) -> Result<()> {
    wait_for(
        &format!("the operator to use database {version}"),
        Duration::from_secs(90),
        || async move {
            Ok((operator_db_version(cluster).await?.as_deref() == Some(version)).then_some(()))
        },
    )
    .await
}

fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!("{prefix}-{}", n % 1_000_000_000)
}

async fn push(host: &str, repository: &str, tag: &str, image: &TestImage) -> Result<String> {
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    push_image_with(
        &client,
        &RegistryAuth::Anonymous,
        host,
        repository,
        tag,
        image,
    )
    .await
}

/// A namespace for one test (created; left behind for inspection).
fn namespace(cluster: &Cluster, prefix: &str) -> Result<String> {
    let ns = unique(prefix);
    cluster.kubectl(&["create", "namespace", &ns])?;
    Ok(ns)
}

/// A ScanRule scanning `scope_type`/`scope` of the plain-HTTP registry `url` right away,
/// followed by `extra` spec lines.
fn rule_yaml(name: &str, url: &str, scope_type: &str, scope: &str, extra: &str) -> String {
    format!(
        "apiVersion: imagewarden.io/v1alpha1
kind: ScanRule
metadata:
  name: {name}
  annotations:
    imagewarden.io/scan-now: first
spec:
  registry:
    url: {url}
    insecure: true
  scope:
    type: {scope_type}
    name: {scope}
{extra}"
    )
}

async fn apply_rule(client: &Client, ns: &str, yaml: &str) -> Result<ScanRule> {
    let rule: ScanRule = serde_norway::from_str(yaml)?;
    let api: Api<ScanRule> = Api::namespaced(client.clone(), ns);
    let name = rule.metadata.name.clone().context("rule name")?;
    Ok(api
        .patch(
            &name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&rule),
        )
        .await?)
}

/// The rule's task once it has finished (Completed or Failed), with diagnostics on timeout.
async fn finished_task_of(
    cluster: &Cluster,
    client: &Client,
    ns: &str,
    rule: &str,
    timeout: Duration,
) -> Result<ScanTask> {
    let tasks: Api<ScanTask> = Api::namespaced(client.clone(), ns);
    let rule = rule.to_string();
    let found = wait_for(&format!("a finished task of rule {rule}"), timeout, || {
        let tasks = tasks.clone();
        let rule = rule.clone();
        async move {
            Ok(tasks
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .find(|t| {
                    t.spec.rule_ref.as_ref().is_some_and(|r| r.name == rule)
                        && t.status.as_ref().is_some_and(|s| {
                            matches!(s.phase, ScanPhase::Completed | ScanPhase::Failed)
                        })
                }))
        }
    })
    .await;
    found.map_err(|e| {
        let diag = diagnostics(cluster, ns);
        e.context(diag)
    })
}

/// What the cluster looks like, for failure messages.
fn diagnostics(cluster: &Cluster, ns: &str) -> String {
    let mut out = String::new();
    for args in [
        vec![
            "get",
            "scantasks,jobs,pods,scanresults",
            "-n",
            ns,
            "-o",
            "wide",
        ],
        vec!["get", "pods", "-n", OPERATOR_NS, "-o", "wide"],
        vec!["get", "events", "-n", ns],
        vec![
            "logs",
            "-n",
            OPERATOR_NS,
            "deployment/imagewarden-operator",
            "--tail=60",
        ],
    ] {
        out.push_str(&format!("$ kubectl {}\n", args.join(" ")));
        match cluster.kubectl(&args) {
            Ok(s) => out.push_str(&s),
            Err(e) => out.push_str(&format!("{e:#}\n")),
        }
    }
    out.push_str("--- kubelet log\n");
    out.push_str(&cluster.log_tail("kubelet", 20));
    out
}

/// An HTTP receiver on the node address (reachable from Pods) recording JSON bodies.
async fn host_receiver(
    cluster: &Cluster,
) -> Result<(
    String,
    tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind((cluster.node_ip.as_str(), 0)).await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, rx))
}

/// Scanner Pods of the Jobs in `ns`, with their Job name.
async fn scanner_pods(client: &Client, ns: &str) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    Ok(pods
        .list(&ListParams::default().labels("job-name"))
        .await?
        .items)
}

/// The Jobs in `ns` once `n` of them exist and none is still running.
async fn finished_jobs(client: &Client, ns: &str, n: usize) -> Result<Vec<Job>> {
    let api: Api<Job> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("{n} finished scanner Jobs"),
        Duration::from_secs(120),
        || {
            let api = api.clone();
            async move {
                let jobs = api.list(&ListParams::default()).await?.items;
                let done = jobs.len() == n
                    && jobs.iter().all(|j| {
                        j.status.as_ref().is_some_and(|s| {
                            s.conditions.iter().flatten().any(|c| {
                                matches!(c.type_.as_str(), "Complete" | "Failed")
                                    && c.status == "True"
                            })
                        })
                    });
                Ok(done.then_some(jobs))
            }
        },
    )
    .await
}

/// A TCP relay on the node address to `upstream` that sends the upstream's replies at
/// `bytes_per_sec`: a slow link between scanner Pods and the registry, so a scan lasts
/// long enough to be interrupted. Returns the relay's `host:port`.
async fn slow_link(cluster: &Cluster, upstream: &str, bytes_per_sec: u64) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind((cluster.node_ip.as_str(), 0)).await?;
    let addr = listener.local_addr()?.to_string();
    let upstream = upstream.to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move { tokio::io::copy(&mut cr, &mut sw).await });
                let chunk = (bytes_per_sec / 20).max(1024) as usize;
                let mut buf = vec![0u8; chunk];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(n as u64 * 1000 / bytes_per_sec))
                        .await;
                }
            });
        }
    });
    Ok(addr)
}

/// alpine 3.10 plus a layer of `size` incompressible bytes (seeded), so pulling it through
/// [`slow_link`] takes `size / rate` seconds.
fn image_with_payload(seed: u64, size: usize) -> Result<TestImage> {
    let mut x = seed | 1;
    let mut data = Vec::with_capacity(size);
    while data.len() < size {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    let mut image = vulnerable_alpine();
    image.layers.push(
        LayerBuilder::new()
            .file("opt/payload.bin", 0o644, &data)?
            .finish()?,
    );
    image.env = vec![format!("PAYLOAD_SEED={seed}")];
    Ok(image)
}

#[tokio::test]
async fn a_rule_scans_the_registry_with_scanner_pods_and_notifies_the_host() -> Result<()> {
    let (cluster, client, _guard) = setup().await?;
    let ns = namespace(cluster, "e2e-rule")?;
    let team = unique("team");
    let alpine = push(
        &cluster.registry,
        &format!("{team}/alpine"),
        "v1",
        &vulnerable_alpine(),
    )
    .await?;
    push(
        &cluster.registry,
        &format!("{team}/alpine"),
        "v1-rc",
        &vulnerable_alpine(),
    )
    .await?;
    let app = push(
        &cluster.registry,
        &format!("{team}/app"),
        "v2",
        &alpine311(),
    )
    .await?;
    push(
        &cluster.registry,
        &format!("{team}/app"),
        "dev",
        &alpine311(),
    )
    .await?;
    let (url, mut notified) = host_receiver(cluster).await?;
    // The team's own YARA rule, next to its ScanRule: it fires on alpine's busybox.
    let rule_file = tempfile::NamedTempFile::new()?;
    std::fs::write(
        rule_file.path(),
        "rule team_busybox {\n  meta:\n    id = \"TEAM-BUSYBOX\"\n    severity = \"low\"\n    title = \"BusyBox binary\"\n  strings:\n    $v = \"BusyBox v1.30\"\n  condition:\n    $v\n}\n",
    )?;
    cluster.kubectl(&[
        "create",
        "configmap",
        RULES_CONFIGMAP,
        "-n",
        &ns,
        &format!("--from-file=team.yar={}", rule_file.path().display()),
    ])?;

    apply_rule(
        &client,
        &ns,
        &rule_yaml(
            "releases",
            &cluster.registry,
            "Namespace",
            &team,
            &format!(
                "  tagFilter: '^v\\d'
  notifications:
  - name: host
    type: HTTP
    url: {url}
    events: [ScanCompleted]
"
            ),
        ),
    )
    .await?;
    let task =
        finished_task_of(cluster, &client, &ns, "releases", Duration::from_secs(300)).await?;
    let st = task.status.clone().unwrap();
    assert_eq!(
        st.phase,
        ScanPhase::Completed,
        "{:?}\n{}",
        st,
        diagnostics(cluster, &ns)
    );
    // v1 and v1-rc are one digest, v2 another; dev does not match the filter.
    assert_eq!(st.total, 3, "{:?}", st.images);
    let mut digests: Vec<_> = st.images.iter().filter_map(|i| i.digest.clone()).collect();
    digests.sort();
    digests.dedup();
    assert_eq!(digests.len(), 2, "{:?}", st.images);

    // Each digest was scanned by a Job whose Pod ran the project's image on the node.
    let jobs = finished_jobs(&client, &ns, 2).await?;
    for job in &jobs {
        assert_eq!(job.status.as_ref().and_then(|s| s.succeeded), Some(1));
    }
    let pods = scanner_pods(&client, &ns).await?;
    assert!(pods.len() >= 2, "{pods:?}");
    for pod in &pods {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some(cluster.image.as_str())
        );
        assert_eq!(spec.node_name.as_deref(), Some("imagewarden-node"));
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Succeeded"), "{status:?}");
        assert!(
            status
                .pod_ip
                .as_deref()
                .is_some_and(|ip| ip.starts_with("10.244.0.")),
            "Pod IP from the CNI bridge: {status:?}"
        );
    }
    // The apiserver reaches the kubelet: container logs.
    let pod_name = pods[0].metadata.name.clone().unwrap();
    let logs = cluster.kubectl(&["logs", "-n", &ns, &pod_name])?;
    assert!(logs.contains("result written"), "scanner log: {logs}");

    let results: Api<ImageScanResult> = Api::namespaced(client.clone(), &ns);
    let results = results.list(&ListParams::default()).await?.items;
    assert_eq!(results.len(), 2);
    // The scanner Pods scanned with the operator's database: the one its sources give.
    let version = mirror_version().await?;
    assert_eq!(operator_db_version(cluster).await?, Some(version.clone()));
    for r in &results {
        assert_eq!(
            r.status.as_ref().unwrap().database_version.as_deref(),
            Some(version.as_str()),
            "{}",
            r.spec.repository
        );
    }
    for image in &st.images {
        assert!(
            matches!(
                image.message.as_deref(),
                Some("scanned" | "existing result reused")
            ),
            "{image:?}"
        );
    }
    let vulnerable = results
        .iter()
        .find(|r| r.spec.digest == alpine)
        .context("result of the alpine digest")?;
    let vst = vulnerable.status.as_ref().unwrap();
    let musl = vst
        .findings
        .iter()
        .find(|f| f.id == "ALPINE-CVE-2019-14697")
        .context("musl finding")?;
    assert_eq!(musl.fixed_version.as_deref(), Some("1.1.22-r3"));
    let own = vst
        .findings
        .iter()
        .find(|f| f.id == "TEAM-BUSYBOX")
        .context("the namespace's YARA rule fired in the scanner Pod")?;
    assert_eq!(own.severity, imagewarden_operator::crd::Severity::Low);
    let mut tags = vulnerable.spec.tags.clone();
    tags.sort();
    assert_eq!(tags, ["v1", "v1-rc"]);
    let fixed = results
        .iter()
        .find(|r| r.spec.digest == app)
        .context("app result")?;
    assert!(
        !fixed
            .status
            .as_ref()
            .unwrap()
            .findings
            .iter()
            .any(|f| f.id == "ALPINE-CVE-2019-14697"),
        "alpine 3.11 has the fixed musl"
    );
    let table = cluster.kubectl(&["get", "scanresults", "-n", &ns])?;
    assert!(
        table.contains(&format!("{team}/alpine")) && table.contains(&format!("{team}/app")),
        "{table}"
    );

    // The operator Pod told the receiver on the host.
    let body = tokio::time::timeout(Duration::from_secs(60), notified.recv())
        .await
        .context("no notification reached the host")?
        .context("receiver closed")?;
    assert_eq!(body["event"], "ScanCompleted", "{body}");
    assert_eq!(body["rule"]["name"], "releases");
    assert_eq!(
        body["task"]["name"],
        task.metadata.name.clone().unwrap().as_str()
    );

    // exec through the kubelet into the operator's container works.
    let version = cluster.kubectl(&[
        "exec",
        "-n",
        OPERATOR_NS,
        "deployment/imagewarden-operator",
        "--",
        "imagewarden-operator",
        "--version",
    ])?;
    assert!(version.starts_with("imagewarden-operator "), "{version}");
    Ok(())
}

#[tokio::test]
async fn a_push_reaches_the_operator_through_its_service_and_is_scanned() -> Result<()> {
    let (cluster, client, _guard) = setup().await?;
    let ns = namespace(cluster, "e2e-push")?;
    let service_ip = cluster
        .kubectl(&[
            "-n",
            OPERATOR_NS,
            "get",
            "service",
            "imagewarden-webhook",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])?
        .trim()
        .to_string();
    let port = cluster
        .kubectl(&[
            "-n",
            OPERATOR_NS,
            "get",
            "service",
            "imagewarden-webhook",
            "-o",
            "jsonpath={.spec.ports[0].port}",
        ])?
        .trim()
        .to_string();
    // A registry on the node whose notifications go to the webhook Service's ClusterIP
    // (kube-proxy's rules take them to the operator Pod).
    let registry = Registry::start_with(
        RegistryMode::Plain,
        RegistryOptions {
            notifications: vec![NotificationEndpoint {
                name: "imagewarden".into(),
                url: format!("http://{service_ip}:{port}/webhook/distribution"),
                bearer_token: Some(WEBHOOK_TOKEN.into()),
            }],
            address: Some(cluster.node_ip.clone()),
            ..Default::default()
        },
    )
    .await?;
    apply_rule(
        &client,
        &ns,
        &format!(
            "apiVersion: imagewarden.io/v1alpha1
kind: ScanRule
metadata:
  name: on-push
spec:
  registry:
    url: {host}
    insecure: true
  scope:
    type: Repository
    name: team-p/alpine
  tagFilter: '^v\\d'
  triggers:
    onPush: true
",
            host = registry.host
        ),
    )
    .await?;
    let rules: Api<ScanRule> = Api::namespaced(client.clone(), &ns);
    wait_for("the rule to be Ready", Duration::from_secs(60), || {
        let rules = rules.clone();
        async move {
            Ok(rules.get("on-push").await?.status.filter(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            }))
        }
    })
    .await?;

    let digest = push(&registry.host, "team-p/alpine", "v7", &vulnerable_alpine()).await?;
    let task = finished_task_of(cluster, &client, &ns, "on-push", Duration::from_secs(180))
        .await
        .map_err(|e| e.context(format!("registry log:\n{}", registry.log())))?;
    assert_eq!(task.spec.trigger, TaskTrigger::Push);
    let st = task.status.unwrap();
    assert_eq!(st.phase, ScanPhase::Completed, "{:?}", st.images);
    assert_eq!(st.total, 1);
    assert_eq!(st.images[0].digest.as_deref(), Some(digest.as_str()));
    let results: Api<ImageScanResult> = Api::namespaced(client.clone(), &ns);
    let result = results
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|r| r.spec.digest == digest)
        .context("a result for the pushed digest")?;
    assert!(result
        .status
        .unwrap()
        .findings
        .iter()
        .any(|f| f.id == "ALPINE-CVE-2019-14697"));
    Ok(())
}

#[tokio::test]
async fn a_scanner_pod_killed_mid_scan_is_retried_and_the_task_completes() -> Result<()> {
    let (cluster, client, _guard) = setup().await?;
    let ns = namespace(cluster, "e2e-kill")?;
    let team = unique("team");
    let image = tokio::task::spawn_blocking(|| image_with_payload(7, 24 << 20)).await??;
    let digest = push(&cluster.registry, &format!("{team}/big"), "v1", &image).await?;
    // 24 MiB at 2 MiB/s: each pull takes about 12 s.
    let link = slow_link(cluster, &cluster.registry, 2 << 20).await?;
    apply_rule(
        &client,
        &ns,
        &rule_yaml("big", &link, "Repository", &format!("{team}/big"), ""),
    )
    .await?;
    // Kill the scanner Pod once its container runs.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let victim = wait_for("a running scanner Pod", Duration::from_secs(180), || {
        let pods = pods.clone();
        async move {
            Ok(pods
                .list(&ListParams::default().labels("job-name"))
                .await?
                .items
                .into_iter()
                .find(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.container_statuses.as_ref())
                        .is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
                        })
                }))
        }
    })
    .await?;
    let victim_name = victim.metadata.name.clone().unwrap();
    pods.delete(&victim_name, &DeleteParams::default().grace_period(0))
        .await?;

    let task = finished_task_of(cluster, &client, &ns, "big", Duration::from_secs(300)).await?;
    let st = task.status.unwrap();
    assert_eq!(st.phase, ScanPhase::Completed, "{:?}", st.images);
    assert_eq!(st.images[0].digest.as_deref(), Some(digest.as_str()));
    let jobs = finished_jobs(&client, &ns, 1).await?;
    let js = jobs[0].status.clone().unwrap();
    assert_eq!(js.succeeded, Some(1), "{js:?}");
    assert!(
        js.failed.unwrap_or(0) >= 1,
        "the killed Pod counts as a failure: {js:?}"
    );
    let names: Vec<String> = scanner_pods(&client, &ns)
        .await?
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert!(
        names.iter().any(|n| n != &victim_name),
        "a replacement Pod ran: {names:?}"
    );
    let results: Api<ImageScanResult> = Api::namespaced(client.clone(), &ns);
    assert_eq!(results.list(&ListParams::default()).await?.items.len(), 1);
    Ok(())
}

#[tokio::test]
async fn the_operator_pod_deleted_mid_task_is_replaced_without_duplicate_scans() -> Result<()> {
    let (cluster, client, _guard) = setup().await?;
    let ns = namespace(cluster, "e2e-failover")?;
    let team = unique("team");
    // Four digests, two at a time, each pulled over a slow link (8 MiB at 1 MiB/s): the
    // task is still running when the operator goes.
    let mut digests = Vec::new();
    for i in 0..4u64 {
        let image =
            tokio::task::spawn_blocking(move || image_with_payload(100 + i, 8 << 20)).await??;
        digests.push(push(&cluster.registry, &format!("{team}/svc{i}"), "v1", &image).await?);
    }
    let link = slow_link(cluster, &cluster.registry, 1 << 20).await?;
    apply_rule(
        &client,
        &ns,
        &rule_yaml("many", &link, "Namespace", &team, ""),
    )
    .await?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    wait_for("the first scanner Job", Duration::from_secs(120), || {
        let jobs = jobs.clone();
        async move {
            let n = jobs.list(&ListParams::default()).await?.items.len();
            Ok((n > 0).then_some(()))
        }
    })
    .await?;
    let operator_pods: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NS);
    let selector = ListParams::default()
        .labels("app.kubernetes.io/name=imagewarden,app.kubernetes.io/component=operator");
    let before = operator_pods.list(&selector).await?.items;
    assert_eq!(before.len(), 1, "one operator Pod");
    let old = before[0].metadata.name.clone().unwrap();
    operator_pods.delete(&old, &DeleteParams::default()).await?;

    let task = finished_task_of(cluster, &client, &ns, "many", Duration::from_secs(420)).await?;
    let st = task.status.unwrap();
    assert_eq!(st.phase, ScanPhase::Completed, "{:?}", st.images);
    assert_eq!(st.total, 4);
    let after = operator_pods.list(&selector).await?.items;
    assert!(
        after
            .iter()
            .all(|p| p.metadata.name.as_deref() != Some(old.as_str())),
        "the Deployment replaced the deleted Pod"
    );
    // One Job per digest, each with exactly one successful Pod: nothing scanned twice.
    let jobs = finished_jobs(&client, &ns, 4).await?;
    for job in &jobs {
        assert_eq!(job.status.as_ref().and_then(|s| s.succeeded), Some(1));
    }
    let succeeded = scanner_pods(&client, &ns)
        .await?
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
        .count();
    assert_eq!(succeeded, 4, "one successful scan per digest");
    let results: Api<ImageScanResult> = Api::namespaced(client.clone(), &ns);
    let mut got: Vec<String> = results
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|r| r.spec.digest)
        .collect();
    got.sort();
    digests.sort();
    assert_eq!(got, digests);
    Ok(())
}

#[tokio::test]
async fn a_database_refresh_between_job_start_and_result_still_ends_in_a_correct_result(
) -> Result<()> {
    let (cluster, client, _guard) = setup().await?;
    let full = mirror_version().await?;
    operator_uses(cluster, &full).await?;
    let ns = namespace(cluster, "e2e-refresh")?;
    let team = unique("team");
    // 32 MiB at 1 MiB/s: the scan lasts about 32 s after the Pod got the database.
    let image = tokio::task::spawn_blocking(|| image_with_payload(11, 32 << 20)).await??;
    let digest = push(&cluster.registry, &format!("{team}/big"), "v1", &image).await?;
    let link = slow_link(cluster, &cluster.registry, 1 << 20).await?;
    apply_rule(
        &client,
        &ns,
        &rule_yaml("refreshed", &link, "Repository", &format!("{team}/big"), ""),
    )
    .await?;
    // The scanner Pod downloaded and verified the operator's database ...
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = wait_for(
        "a scanner Pod with the database",
        Duration::from_secs(180),
        || {
            let (pods, ns) = (pods.clone(), ns.clone());
            async move {
                for pod in pods
                    .list(&ListParams::default().labels("job-name"))
                    .await?
                    .items
                {
                    let name = pod.metadata.name.clone().unwrap();
                    let logs = cluster
                        .kubectl(&["logs", "-n", &ns, &name])
                        .unwrap_or_default();
                    if logs.contains("vulnerability database downloaded and verified") {
                        return Ok(Some((name, logs)));
                    }
                }
                Ok(None)
            }
        },
    )
    .await
    .map_err(|e| e.context(diagnostics(cluster, &ns)))?;
    assert!(pod.1.contains(&format!("version={full}")), "{}", pod.1);
    // ... and while it pulls the image, the database loses the musl advisory and the
    // operator refreshes.
    let _restore = RestoreMirror;
    mirror().serve(&osv_records(), &[MUSL_ADVISORY])?;
    let without = mirror_version().await?;
    assert_ne!(without, full);
    operator_uses(cluster, &without).await?;

    let task =
        finished_task_of(cluster, &client, &ns, "refreshed", Duration::from_secs(300)).await?;
    let st = task.status.clone().unwrap();
    assert_eq!(
        st.phase,
        ScanPhase::Completed,
        "{:?}\n{}",
        st.images,
        diagnostics(cluster, &ns)
    );
    // The Job's result is re-matched when it arrives after the refresh; on a machine slow
    // enough that the scan ended first, the refresh's own pass re-matches the stored result.
    // Either way the result below must be the current database's.
    let rematched =
        format!("scanned with database {full}, re-matched with the current database {without}");
    assert!(
        st.images[0].message.as_deref() == Some(rematched.as_str())
            || st.images[0].message.as_deref() == Some("scanned"),
        "{:?}",
        st.images
    );
    let jobs = finished_jobs(&client, &ns, 1).await?;
    assert_eq!(
        jobs[0].metadata.annotations.as_ref().unwrap()["imagewarden.io/database-version"],
        full,
        "the Job was given the database of before the refresh"
    );
    let results: Api<ImageScanResult> = Api::namespaced(client.clone(), &ns);
    let rs = wait_for(
        "the result made with the current database",
        Duration::from_secs(60),
        || {
            let (results, digest, without) = (results.clone(), digest.clone(), without.clone());
            async move {
                Ok(results
                    .list(&ListParams::default())
                    .await?
                    .items
                    .into_iter()
                    .find(|r| r.spec.digest == digest)
                    .and_then(|r| r.status)
                    .filter(|st| st.database_version.as_deref() == Some(without.as_str())))
            }
        },
    )
    .await?;
    // Correct: what the current database says of the image's stored inventory.
    let mut current = imagewarden_scanner::vulndb::DbBuilder::new();
    current.add_url(&mirror().url).await?;
    let current = current.into_db("current")?;
    let inventory =
        imagewarden_operator::result::decode_inventory(rs.inventory.as_deref().unwrap())?;
    let mut want: Vec<String> =
        imagewarden_scanner::matcher::match_inventory(&inventory, &current)?
            .vulnerabilities
            .into_iter()
            .map(|v| v.id)
            .collect();
    want.sort();
    want.dedup();
    let mut got: Vec<String> = rs
        .findings
        .iter()
        .filter(|f| {
            use imagewarden_operator::crd::FindingClass::*;
            matches!(f.class, SystemVulnerability | ApplicationVulnerability)
        })
        .map(|f| f.id.clone())
        .collect();
    got.sort();
    got.dedup();
    assert_eq!(got, want);
    assert!(!got.iter().any(|id| id == "ALPINE-CVE-2019-14697"));
    // With the database it was given, the Job found the musl advisory: the result is not
    // the Job's own, it was re-matched.
    let given = imagewarden_scanner::vulndb::Db::load(&[osv_records().display().to_string()])?;
    assert!(
        imagewarden_scanner::matcher::match_inventory(&inventory, &given)?
            .vulnerabilities
            .iter()
            .any(|v| v.id == "ALPINE-CVE-2019-14697"),
        "the image has the vulnerable musl"
    );

    // The full records again, for the other tests.
    drop(_restore);
    operator_uses(cluster, &full).await?;
    Ok(())
}

/// Serves the full records again when dropped (also when a test fails half-way).
struct RestoreMirror;

impl Drop for RestoreMirror {
    fn drop(&mut self) {
        if let Err(e) = mirror().serve(&osv_records(), &[]) {
            eprintln!("restoring the OSV mirror: {e:#}");
        }
    }
}

#[tokio::test]
async fn helm_test_passes_on_a_ready_release_and_fails_without_the_operator() -> Result<()> {
    let (cluster, _client, _guard) = setup().await?;
    let helm_test = || {
        cluster
            .command("helm")
            .args([
                "test",
                "imagewarden",
                "-n",
                OPERATOR_NS,
                "--timeout",
                "180s",
            ])
            .output()
    };
    let out = helm_test()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "helm test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("Phase:          Succeeded"), "{stdout}");
    // The test Job is deleted once it succeeded (its hook-delete-policy).

    // Without a running operator, the same test fails and says why.
    let scale = |n: &str| {
        cluster.kubectl(&[
            "-n",
            OPERATOR_NS,
            "scale",
            "deployment/imagewarden-operator",
            &format!("--replicas={n}"),
        ])
    };
    scale("0")?;
    cluster.kubectl(&[
        "-n",
        OPERATOR_NS,
        "wait",
        "--for=delete",
        "pod",
        "-l",
        "app.kubernetes.io/name=imagewarden,app.kubernetes.io/component=operator",
        "--timeout=120s",
    ])?;
    let out = helm_test()?;
    // A failed test Job is kept: its log says why.
    let logs = cluster
        .kubectl(&["-n", OPERATOR_NS, "logs", "job/imagewarden-test"])
        .unwrap_or_else(|e| format!("{e:#}"));
    scale("1")?;
    operator_available(cluster)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "helm test passed without the operator:\n{stdout}"
    );
    assert!(logs.contains("/readyz"), "{logs}");
    Ok(())
}

/// The chain's last link on a real node: with an `Enforce` ImagePolicy covering one
/// namespace, the chart's webhook (its generated certificate, the API server calling the
/// operator's Service) refuses a Deployment of a scanned image with a denied advisory
/// (the musl one), naming the image, the policy and the advisory, and the same Deployment
/// with a clean image is admitted and its Pod runs on the node.
#[tokio::test]
async fn a_vulnerable_deployment_is_refused_and_the_same_with_a_clean_image_runs() -> Result<()> {
    use imagewarden_operator::crd::ImagePolicy;
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::PostParams;

    let (cluster, client, _guard) = setup().await?;
    let ns = namespace(cluster, "e2e-gate")?;
    let team = unique("gate");
    let vulnerable_digest = push(
        &cluster.registry,
        &format!("{team}/alpine"),
        "v1",
        &vulnerable_alpine(),
    )
    .await?;
    push(
        &cluster.registry,
        &format!("{team}/app"),
        "v1",
        &alpine311(),
    )
    .await?;
    apply_rule(
        &client,
        &ns,
        &rule_yaml("gate", &cluster.registry, "Namespace", &team, ""),
    )
    .await?;
    let task = finished_task_of(cluster, &client, &ns, "gate", Duration::from_secs(300)).await?;
    let st = task.status.clone().context("task status")?;
    assert_eq!(
        st.phase,
        ScanPhase::Completed,
        "{st:?}\n{}",
        diagnostics(cluster, &ns)
    );

    // A policy for this namespace only (ImagePolicies are cluster-wide).
    let policy_name = ns.clone();
    let policy: ImagePolicy = serde_norway::from_str(&format!(
        "apiVersion: imagewarden.io/v1alpha1
kind: ImagePolicy
metadata:
  name: {policy_name}
spec:
  match:
    namespaceSelector:
      matchLabels:
        kubernetes.io/metadata.name: {ns}
  deny:
    ids: [ALPINE-CVE-2019-14697]
  unscanned: Deny
  mode: Enforce
"
    ))?;
    let policies: Api<ImagePolicy> = Api::all(client.clone());
    policies
        .patch(
            &policy_name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&policy),
        )
        .await?;

    let deployment = |image: &str| -> Result<Deployment> {
        Ok(serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [{
                            "name": "app",
                            "image": image,
                            "command": ["sleep", "3600"],
                        }],
                    },
                },
            },
        }))?)
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let vulnerable = format!("{}/{team}/alpine:v1", cluster.registry);
    let clean = format!("{}/{team}/app:v1", cluster.registry);

    // The verdict is computed when the policy arrives: until the webhook's caches hold
    // it, the Deployment may still be admitted; a refusal is awaited, not assumed.
    let message = wait_for(
        "the vulnerable Deployment to be refused",
        Duration::from_secs(60),
        || {
            let deployments = deployments.clone();
            let d = deployment(&vulnerable);
            async move {
                match deployments.create(&PostParams::default(), &d?).await {
                    Err(kube::Error::Api(e)) if e.message.contains("admission webhook") => {
                        Ok(Some(e.message))
                    }
                    Err(e) => Err(e.into()),
                    Ok(_) => {
                        deployments.delete("web", &DeleteParams::default()).await?;
                        Ok(None)
                    }
                }
            }
        },
    )
    .await
    .map_err(|e| e.context(diagnostics(cluster, &ns)))?;
    assert!(
        message.contains(&format!(
            "image {vulnerable} is denied by ImagePolicy {policy_name}"
        )) && message.contains("ALPINE-CVE-2019-14697"),
        "{message}"
    );
    // The verdict is recorded on the vulnerable digest's ImageScanResult.
    let results: Api<ImageScanResult> = Api::namespaced(client.clone(), &ns);
    let (digest, policy) = (vulnerable_digest.clone(), policy_name.clone());
    wait_for("the recorded verdict", Duration::from_secs(60), || {
        let (results, digest, policy) = (results.clone(), digest.clone(), policy.clone());
        async move {
            let list = results.list(&ListParams::default()).await?.items;
            Ok(list
                .into_iter()
                .filter(|r| r.spec.digest == digest)
                .flat_map(|r| r.status.map(|s| s.policies).unwrap_or_default())
                .find(|v| v.policy == policy && v.verdict == "Violation"))
        }
    })
    .await?;

    // The same Deployment with the clean image is admitted and runs.
    wait_for("no Deployment web left", Duration::from_secs(30), || {
        let deployments = deployments.clone();
        async move { Ok(deployments.get_opt("web").await?.is_none().then_some(())) }
    })
    .await?;
    deployments
        .create(&PostParams::default(), &deployment(&clean)?)
        .await
        .map_err(|e| anyhow::anyhow!("the clean Deployment was refused: {e}"))?;
    let rollout = cluster.kubectl(&[
        "-n",
        &ns,
        "rollout",
        "status",
        "deployment/web",
        "--timeout=180s",
    ]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let running = pods
        .list(&ListParams::default().labels("app=web"))
        .await?
        .items
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count();
    let diag = diagnostics(cluster, &ns);
    policies
        .delete(&policy_name, &DeleteParams::default())
        .await?;
    deployments.delete("web", &DeleteParams::default()).await?;
    rollout.with_context(|| diag.clone())?;
    assert_eq!(running, 1, "{diag}");
    Ok(())
}

/// The Debian image of `imagewarden_tests::debian_archive` with `dpkg-query` (and the
/// one library it needs besides libc) from this Debian 12 host in a second layer, so a
/// container can read the image's own dpkg database.
fn debian_image_with_dpkg_query() -> Result<TestImage> {
    let mut image = imagewarden_tests::debian_archive::image()?;
    let tools = LayerBuilder::new()
        .file(
            "usr/bin/dpkg-query",
            0o755,
            &std::fs::read("/usr/bin/dpkg-query")?,
        )?
        .file(
            "usr/lib/x86_64-linux-gnu/libmd.so.0",
            0o644,
            &std::fs::read("/usr/lib/x86_64-linux-gnu/libmd.so.0")?,
        )?
        .finish()?;
    image.layers.push(tools);
    Ok(image)
}

#[tokio::test]
async fn an_image_fix_runs_in_a_scanner_pod_and_the_fixed_image_runs_on_the_node() -> Result<()> {
    use imagewarden_operator::crd::{ImageFix, ImageFixPhase};
    use imagewarden_tests::debian_archive::{
        archive_version, serve_archive_on, untouched, write_advisory, ADVISORY, SUITE,
    };
    use kube::api::PostParams;

    let (cluster, client, _guard) = setup().await?;
    let ns = namespace(cluster, "e2e-fix")?;
    let team = unique("fix");
    let digest = push(
        &cluster.registry,
        &format!("{team}/xml"),
        "v1.0",
        &debian_image_with_dpkg_query()?,
    )
    .await?;
    // Debian's bookworm-security slice, served on the node for the fix Pod; the advisory
    // naming its expat build as fixed joins the operator's database.
    let archive = serve_archive_on(&cluster.node_ip, untouched()).await?;
    let records = tempfile::tempdir()?;
    copy_dir(&osv_records(), records.path())?;
    write_advisory(records.path())?;
    mirror().serve(records.path(), &[])?;
    let outcome = async {
        operator_uses(cluster, &mirror_version().await?).await?;
        let rule: ScanRule = serde_norway::from_str(&format!(
            "apiVersion: imagewarden.io/v1alpha1
kind: ScanRule
metadata: {{name: fix}}
spec:
  registry:
    url: {}
    insecure: true
  scope: {{type: Repository, name: {team}/xml}}
",
            cluster.registry
        ))?;
        Api::<ScanRule>::namespaced(client.clone(), &ns)
            .patch(
                "fix",
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&rule),
            )
            .await?;
        let fix: ImageFix = serde_norway::from_str(&format!(
            "apiVersion: imagewarden.io/v1alpha1
kind: ImageFix
metadata: {{name: xml}}
spec:
  image: {}/{team}/xml:v1.0@{digest}
  ruleRef: {{name: fix}}
  sources: ['{archive} {SUITE} main']
  checkValidUntil: false
",
            cluster.registry
        ))?;
        let fixes: Api<ImageFix> = Api::namespaced(client.clone(), &ns);
        fixes.create(&PostParams::default(), &fix).await?;
        // The chart's executor: the fix runs in a scanner Pod on the node.
        let fixed = wait_for("the ImageFix to finish", Duration::from_secs(300), || {
            let fixes = fixes.clone();
            async move {
                Ok(fixes
                    .get("xml")
                    .await?
                    .status
                    .filter(|s| s.phase.is_final()))
            }
        })
        .await
        .map_err(|e| e.context(diagnostics(cluster, &ns)))?;
        anyhow::Ok(fixed)
    }
    .await;
    mirror().serve(&osv_records(), &[])?;
    let status = outcome?;
    assert_eq!(
        status.phase,
        ImageFixPhase::Completed,
        "{status:?}\n{}",
        diagnostics(cluster, &ns)
    );
    assert_eq!(status.verification.clone().unwrap().fixed, [ADVISORY]);
    let pushed = status.pushed.clone().context("the pushed image")?;
    assert!(
        pushed.starts_with(&format!(
            "{}/{team}/xml:v1.0_fixd@sha256:",
            cluster.registry
        )),
        "{pushed}"
    );

    // The fixed image runs on the node: its dpkg database has the archive's versions
    // (dpkg-query lists them by name), and its expat tool runs with the new library.
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "fixed", "namespace": ns},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "dpkg",
                    "image": pushed,
                    "command": ["dpkg-query", "-W", "-f", "${Package} ${Version} ${Status}\\n", "libexpat1", "expat"],
                },
                {
                    "name": "xmlwf",
                    "image": pushed,
                    "command": ["xmlwf", "-v"],
                },
            ],
        },
    }))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.create(&PostParams::default(), &pod).await?;
    let phase = wait_for(
        "the fixed image's Pod to end",
        Duration::from_secs(180),
        || {
            let pods = pods.clone();
            async move {
                Ok(pods
                    .get("fixed")
                    .await?
                    .status
                    .and_then(|s| s.phase)
                    .filter(|p| p == "Succeeded" || p == "Failed"))
            }
        },
    )
    .await
    .map_err(|e| e.context(diagnostics(cluster, &ns)))?;
    let logs = |container: &'static str| {
        let pods = pods.clone();
        async move {
            pods.logs(
                "fixed",
                &kube::api::LogParams {
                    container: Some(container.into()),
                    ..Default::default()
                },
            )
            .await
        }
    };
    let (dpkg, xmlwf) = (logs("dpkg").await?, logs("xmlwf").await?);
    assert_eq!(
        phase,
        "Succeeded",
        "{dpkg}\n{xmlwf}\n{}",
        diagnostics(cluster, &ns)
    );
    assert_eq!(
        dpkg,
        format!(
            "expat {} install ok installed\nlibexpat1 {} install ok installed\n",
            archive_version("expat")?,
            archive_version("libexpat1")?
        )
    );
    assert!(xmlwf.starts_with("xmlwf using expat_"), "{xmlwf}");
    Ok(())
}

/// Copies the OSV records of `from` (one folder per ecosystem) into `to`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    for eco in std::fs::read_dir(from)? {
        let eco = eco?.path();
        if !eco.is_dir() {
            continue;
        }
        let dest = to.join(eco.file_name().context("a folder name")?);
        std::fs::create_dir_all(&dest)?;
        for f in std::fs::read_dir(&eco)? {
            let f = f?.path();
            if f.is_file() {
                std::fs::copy(&f, dest.join(f.file_name().context("a file name")?))?;
            }
        }
    }
    Ok(())
}
