//! The admission webhook on a real kube-apiserver: the operator (a real process) serves
//! it over TLS on 127.0.0.1, registered by URL in a ValidatingWebhookConfiguration with
//! the CA that signed its certificate. Images are pushed to a real registry and scanned
//! by the operator; Pods and Deployments are created through the API server.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Result};
use base64::Engine;
use imagewarden_operator::crd::{
    ImagePolicy, ImageScanResult, ScanPhase, ScanRule, ScanTask, VulnerabilityException,
};
use imagewarden_tests::control_plane::ControlPlaneOptions;
use imagewarden_tests::image::push_image;
use imagewarden_tests::operator::OperatorProcess;
use imagewarden_tests::pki::TestCa;
use imagewarden_tests::process::{free_port, poll as wait_for};
use imagewarden_tests::samples::{alpine311, testdata, vulnerable_alpine};
use imagewarden_tests::{ControlPlane, Registry, RegistryMode};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;

const BIN: &str = env!("CARGO_BIN_EXE_imagewarden-operator");
const WEBHOOK: &str = "imagewarden-images";

struct Setup {
    cp: ControlPlane,
    client: Client,
    operator: OperatorProcess,
    admission_port: u16,
    ca: TestCa,
    ca_pem: String,
    tls_dir: tempfile::TempDir,
    /// The operator's flags, to start it again.
    args: Vec<String>,
}

/// A control plane (with controller-manager, for namespaces' default ServiceAccounts)
/// and the operator serving admission with a certificate for 127.0.0.1.
async fn setup() -> Result<Setup> {
    setup_with(&[]).await
}

/// [`setup`] with more operator flags.
async fn setup_with(extra: &[&str]) -> Result<Setup> {
    let cp = ControlPlane::start_with(ControlPlaneOptions {
        controller_manager: true,
    })
    .await?;
    cp.install_crds(&imagewarden_operator::crd::all()).await?;
    let client = cp.client().await?;
    let ca = TestCa::new("imagewarden-admission-test-ca")?;
    let serving = ca.server(&["127.0.0.1"])?;
    let tls_dir = tempfile::tempdir()?;
    std::fs::write(tls_dir.path().join("tls.crt"), &serving.cert_pem)?;
    std::fs::write(tls_dir.path().join("tls.key"), &serving.key_pem)?;
    let admission_port = free_port()?;
    let args = vec![
        format!("--db={}", testdata("osv").display()),
        format!("--db=nvd:{}", testdata("nvd").display()),
        "--egress-allow=127.0.0.0/8".to_string(),
        "--executor=inline".to_string(),
        "--leader-elect=false".to_string(),
        format!("--admission-addr=127.0.0.1:{admission_port}"),
        format!(
            "--admission-tls-cert-file={}",
            tls_dir.path().join("tls.crt").display()
        ),
        format!(
            "--admission-tls-key-file={}",
            tls_dir.path().join("tls.key").display()
        ),
    ];
    let args: Vec<String> = args
        .into_iter()
        .chain(extra.iter().map(|a| a.to_string()))
        .collect();
    let operator = OperatorProcess::start(Path::new(BIN), &cp, &args).await?;
    wait_for_default_account(&client).await?;
    Ok(Setup {
        cp,
        client,
        operator,
        admission_port,
        ca_pem: ca.cert_pem.clone(),
        ca,
        tls_dir,
        args,
    })
}

async fn wait_for_default_account(client: &Client) -> Result<()> {
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::default_namespaced(client.clone());
    wait_for(
        "the default ServiceAccount",
        Duration::from_secs(60),
        || {
            let accounts = accounts.clone();
            async move { Ok(accounts.get_opt("default").await?) }
        },
    )
    .await?;
    Ok(())
}

/// Registers the webhook as the chart does: Pods and workload templates, the operator's
/// and kube-system's namespaces left out.
async fn register_webhook(s: &Setup, failure_policy: &str) -> Result<()> {
    register_webhook_at(
        &s.client,
        s.admission_port,
        Some(s.ca_pem.as_str()),
        failure_policy,
    )
    .await
}

/// [`register_webhook`] for the operator on `port`; without `ca_pem`, the caBundle is
/// left to the operator.
async fn register_webhook_at(
    client: &Client,
    port: u16,
    ca_pem: Option<&str>,
    failure_policy: &str,
) -> Result<()> {
    let mut client_config = serde_json::json!({
        "url": format!("https://127.0.0.1:{port}/validate"),
    });
    if let Some(ca) = ca_pem {
        client_config["caBundle"] = base64::engine::general_purpose::STANDARD.encode(ca).into();
    }
    let config: ValidatingWebhookConfiguration = serde_json::from_value(serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK},
        "webhooks": [{
            "name": "images.imagewarden.io",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": failure_policy,
            "timeoutSeconds": 5,
            "clientConfig": client_config,
            "namespaceSelector": {"matchExpressions": [{
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system"],
            }]},
            "rules": [
                {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                 "resources": ["pods", "pods/ephemeralcontainers"]},
                {"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                 "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"]},
                {"apiGroups": ["batch"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                 "resources": ["jobs", "cronjobs"]},
            ],
        }],
    }))?;
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .patch(
            WEBHOOK,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&config),
        )
        .await?;
    Ok(())
}

fn pod(name: &str, image: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }))
    .unwrap()
}

/// Creates a Pod; `Err(message)` when admission refused it.
async fn create_pod(
    client: &Client,
    ns: &str,
    name: &str,
    image: &str,
) -> Result<Result<(), String>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    match api.create(&PostParams::default(), &pod(name, image)).await {
        Ok(_) => Ok(Ok(())),
        Err(kube::Error::Api(e)) if e.message.contains("admission webhook") => Ok(Err(e.message)),
        Err(e) => Err(e.into()),
    }
}

/// `kubectl apply` of a manifest; returns (succeeded, stderr), where admission warnings
/// are printed.
fn kubectl_apply(cp: &ControlPlane, manifest: &str) -> Result<(bool, String)> {
    let mut child = cp
        .kubectl()?
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().unwrap().write_all(manifest.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

async fn apply_yaml<K>(api: &Api<K>, yaml: &str) -> Result<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_norway::from_str(yaml)?;
    let name = obj.meta().name.clone().unwrap();
    Ok(api
        .patch(
            &name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&obj),
        )
        .await?)
}

fn policy_yaml(mode: &str, unscanned: &str) -> String {
    policy_yaml_with(mode, unscanned, "")
}

fn policy_yaml_with(mode: &str, unscanned: &str, extra: &str) -> String {
    format!(
        "apiVersion: imagewarden.io/v1alpha1
kind: ImagePolicy
metadata:
  name: no-critical
spec:
  deny:
    severity: Critical
    count: 1
  unscanned: {unscanned}
  mode: {mode}
{extra}"
    )
}

/// Waits until `result` records a verdict of `policy` for its current generation.
async fn recorded_verdict(client: &Client, result: &str, policy: &str) -> Result<String> {
    let policies: Api<ImagePolicy> = Api::all(client.clone());
    let results: Api<ImageScanResult> = Api::default_namespaced(client.clone());
    wait_for(
        &format!("a verdict of {policy} in {result}"),
        Duration::from_secs(30),
        || {
            let (policies, results) = (policies.clone(), results.clone());
            async move {
                let generation = policies.get(policy).await?.metadata.generation.unwrap_or(0);
                let r = results.get(result).await?;
                Ok(r.status.and_then(|s| {
                    s.policies
                        .into_iter()
                        .find(|p| p.policy == policy && p.generation == generation)
                        .map(|p| p.verdict)
                }))
            }
        },
    )
    .await
}

/// A ScanRule scanning the registry's `team-a` namespace now; waits for its task.
async fn scan_team_a(client: &Client, registry_host: &str) -> Result<()> {
    let rules: Api<ScanRule> = Api::default_namespaced(client.clone());
    apply_yaml(
        &rules,
        &format!(
            "apiVersion: imagewarden.io/v1alpha1
kind: ScanRule
metadata:
  name: team-a
  annotations:
    imagewarden.io/scan-now: first
spec:
  registry:
    url: {registry_host}
    insecure: true
  scope:
    type: Namespace
    name: team-a
"
        ),
    )
    .await?;
    let tasks: Api<ScanTask> = Api::default_namespaced(client.clone());
    wait_for("the scan to finish", Duration::from_secs(180), || {
        let tasks = tasks.clone();
        async move {
            let list = tasks.list(&ListParams::default()).await?;
            Ok(list.items.into_iter().find(|t| {
                t.status
                    .as_ref()
                    .is_some_and(|s| s.phase == ScanPhase::Completed)
            }))
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn pods_and_workloads_are_admitted_denied_warned_and_audited_by_their_images() -> Result<()> {
    let s = setup().await?;
    let client = s.client.clone();
    let registry = Registry::start(RegistryMode::Plain).await?;
    let vulnerable_digest =
        push_image(&registry, "team-a/alpine", "v1", &vulnerable_alpine()).await?;
    push_image(&registry, "team-a/app", "v2", &alpine311()).await?;
    let h = registry.host.clone();
    let vulnerable = format!("{h}/team-a/alpine:v1");
    let vulnerable_by_digest = format!("{h}/team-a/alpine@{vulnerable_digest}");
    let clean = format!("{h}/team-a/app:v2");
    let unscanned = format!("{h}/team-a/never-pushed:v1");

    // Scan both images.
    scan_team_a(&client, &h).await?;
    let tasks: Api<ScanTask> = Api::default_namespaced(client.clone());
    let results: Api<ImageScanResult> = Api::default_namespaced(client.clone());
    let list = results.list(&ListParams::default()).await?.items;
    let vulnerable_result = list
        .iter()
        .find(|r| r.spec.digest == vulnerable_digest)
        .unwrap();
    let musl = vulnerable_result
        .status
        .as_ref()
        .unwrap()
        .findings
        .iter()
        .find(|f| f.id == "ALPINE-CVE-2019-14697")
        .expect("the musl finding");
    assert_eq!(
        format!("{:?}", musl.severity),
        "Critical",
        "NVD rates CVE-2019-14697 9.8"
    );
    let vulnerable_name = vulnerable_result.metadata.name.clone().unwrap();
    let clean_name = list
        .iter()
        .find(|r| r.spec.digest != vulnerable_digest)
        .unwrap()
        .metadata
        .name
        .clone()
        .unwrap();

    // Enforce: verdicts are recorded ahead, then admission looks them up.
    let policies: Api<ImagePolicy> = Api::all(client.clone());
    apply_yaml(&policies, &policy_yaml("Enforce", "Deny")).await?;
    assert_eq!(
        recorded_verdict(&client, &vulnerable_name, "no-critical").await?,
        "Violation"
    );
    assert_eq!(
        recorded_verdict(&client, &clean_name, "no-critical").await?,
        "Pass"
    );
    register_webhook(&s, "Fail").await?;

    create_pod(&client, "default", "clean", &clean)
        .await?
        .map_err(|e| anyhow::anyhow!("clean image refused: {e}"))?;
    for (name, image) in [
        ("by-tag", &vulnerable),
        ("by-digest", &vulnerable_by_digest),
    ] {
        let Err(message) = create_pod(&client, "default", name, image).await? else {
            bail!("{image} was admitted");
        };
        assert!(
            message.contains(&format!(
                "image {image} is denied by ImagePolicy no-critical"
            )) && message.contains("1 vulnerability at or above Critical")
                && message.contains(
                    "ALPINE-CVE-2019-14697 (Critical, musl 1.1.22-r2, fixed in 1.1.22-r3)"
                ),
            "{message}"
        );
    }
    let Err(message) = create_pod(&client, "default", "unscanned", &unscanned).await? else {
        bail!("an unscanned image was admitted");
    };
    assert!(
        message.contains("the image has not been scanned"),
        "{message}"
    );

    // A Deployment whose template runs the vulnerable image in an init container.
    let deployment = format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      initContainers:
        - name: init
          image: {vulnerable}
      containers:
        - name: app
          image: {clean}
"
    );
    let (ok, stderr) = kubectl_apply(&s.cp, &deployment)?;
    assert!(!ok, "the Deployment was admitted");
    assert!(
        stderr.contains(&format!(
            "image {vulnerable} is denied by ImagePolicy no-critical"
        )),
        "{stderr}"
    );

    // The operator's own namespace is left out by default.
    let ns: Api<Namespace> = Api::all(client.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({"metadata": {"name": "imagewarden-system"}}))?,
    )
    .await?;
    wait_for(
        "the namespace's ServiceAccount",
        Duration::from_secs(30),
        || {
            let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
                Api::namespaced(client.clone(), "imagewarden-system");
            async move { Ok(sa.get_opt("default").await?) }
        },
    )
    .await?;
    create_pod(&client, "imagewarden-system", "own", &vulnerable)
        .await?
        .map_err(|e| anyhow::anyhow!("the operator's namespace was judged: {e}"))?;

    // A live exception admits the image; its expiry makes the finding count again.
    let exceptions: Api<VulnerabilityException> = Api::default_namespaced(client.clone());
    let expires = chrono::Utc::now() + chrono::Duration::seconds(25);
    apply_yaml(
        &exceptions,
        &format!(
            "apiVersion: imagewarden.io/v1alpha1
kind: VulnerabilityException
metadata:
  name: musl
spec:
  ids:
    - id: ALPINE-CVE-2019-14697
      package: musl
      images: ['{h}/team-a/*']
  expires: '{}'
  reason: 'not reachable: the service never calls getaddrinfo; SEC-42'
",
            expires.format("%Y-%m-%dT%H:%M:%SZ")
        ),
    )
    .await?;
    wait_for(
        "the excepted count in the result",
        Duration::from_secs(30),
        || {
            let results = results.clone();
            let name = vulnerable_name.clone();
            async move {
                let r = results.get(&name).await?;
                Ok(r.status
                    .and_then(|s| s.excepted)
                    .filter(|e| e.critical == 1))
            }
        },
    )
    .await?;
    assert_eq!(
        recorded_verdict(&client, &vulnerable_name, "no-critical").await?,
        "Pass"
    );
    create_pod(&client, "default", "excepted", &vulnerable)
        .await?
        .map_err(|e| anyhow::anyhow!("refused under a live exception: {e}"))?;

    wait_for("the exception to expire", Duration::from_secs(60), || {
        let exceptions = exceptions.clone();
        async move {
            let e = exceptions.get("musl").await?;
            Ok(e.status.and_then(|s| {
                s.conditions
                    .into_iter()
                    .find(|c| c.type_ == "Active" && c.status == "False" && c.reason == "Expired")
            }))
        }
    })
    .await?;
    let Err(message) = create_pod(&client, "default", "after-expiry", &vulnerable).await? else {
        bail!("admitted after the exception expired");
    };
    assert!(message.contains("ALPINE-CVE-2019-14697"), "{message}");
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::default_namespaced(client.clone());
    let expired_events = events
        .list(&ListParams::default().fields("regarding.name=musl"))
        .await?
        .items;
    assert!(
        expired_events
            .iter()
            .any(|e| e.reason.as_deref() == Some("Expired")),
        "{expired_events:?}"
    );
    let r = results.get(&vulnerable_name).await?;
    assert_eq!(
        r.status.unwrap().excepted,
        None,
        "nothing excepted any more"
    );

    // Warn: admitted, with the reasons as admission warnings; the unscanned image gets
    // a scan (which fails: it was never pushed).
    apply_yaml(
        &policies,
        &policy_yaml_with("Warn", "Warn", "  scanUnscanned: true\n"),
    )
    .await?;
    recorded_verdict(&client, &vulnerable_name, "no-critical").await?;
    let warned_pod = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: warned
  namespace: default
spec:
  containers:
    - name: app
      image: {vulnerable}
    - name: sidecar
      image: {unscanned}
"
    );
    let (ok, stderr) = kubectl_apply(&s.cp, &warned_pod)?;
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "Warning: image {vulnerable} violates ImagePolicy no-critical"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("Warning: image {unscanned} violates ImagePolicy no-critical: the image has not been scanned")),
        "{stderr}"
    );

    let task = wait_for(
        "a scan started at admission",
        Duration::from_secs(60),
        || {
            let tasks = tasks.clone();
            let unscanned = unscanned.clone();
            async move {
                let list = tasks.list(&ListParams::default()).await?;
                Ok(list.items.into_iter().find(|t| {
                    t.spec.trigger == imagewarden_operator::crd::TaskTrigger::Admission
                        && t.spec.images == [unscanned.clone()]
                        && t.status
                            .as_ref()
                            .is_some_and(|s| s.phase == ScanPhase::Failed)
                }))
            }
        },
    )
    .await?;
    assert_eq!(
        task.metadata.labels.unwrap()["imagewarden.io/rule"],
        "team-a"
    );
    let failed_pod = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: failed-scan
  namespace: default
spec:
  containers:
    - name: app
      image: {unscanned}
"
    );
    let (ok, stderr) = kubectl_apply(&s.cp, &failed_pod)?;
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "Warning: image {unscanned} violates ImagePolicy no-critical: the image's scan failed"
        )),
        "{stderr}"
    );

    // Audit: admitted silently, counted in the policy's status.
    apply_yaml(&policies, &policy_yaml("Audit", "Deny")).await?;
    recorded_verdict(&client, &vulnerable_name, "no-critical").await?;
    let (ok, stderr) = kubectl_apply(&s.cp, &warned_pod.replace("name: warned", "name: audited"))?;
    assert!(ok && !stderr.contains("Warning"), "{stderr}");
    let status = wait_for("the audit count", Duration::from_secs(30), || {
        let policies = policies.clone();
        async move {
            Ok(policies
                .get("no-critical")
                .await?
                .status
                .filter(|s| s.audited >= 1))
        }
    })
    .await?;
    // Denied: by-tag, by-digest, unscanned, the Deployment, after-expiry. Admitted: clean,
    // excepted. Warned: warned, failed-scan.
    assert_eq!(
        (
            status.denied,
            status.admitted,
            status.warned,
            status.audited
        ),
        (5, 2, 2, 1),
        "{status:?}"
    );
    let last = &status.last_denials[0];
    assert_eq!(
        (last.action.as_str(), last.object.as_str()),
        ("Audited", "Pod default/audited")
    );
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "{status:?}"
    );
    // The same decisions on the metrics endpoint, with their latency.
    let metrics = s.operator.metrics().await?;
    let series = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    for (verdict, want) in [("denied", 5.0), ("warned", 2.0), ("audited", 1.0)] {
        let name =
            format!("imagewarden_admissions_total{{policy=\"no-critical\",verdict=\"{verdict}\"}}");
        assert_eq!(series(&name), want, "{name} in\n{metrics}");
    }
    assert!(
        series("imagewarden_admissions_total{policy=\"no-critical\",verdict=\"allowed\"}") >= 2.0,
        "{metrics}"
    );
    assert!(
        series("imagewarden_admission_duration_seconds_count") >= 10.0,
        "{metrics}"
    );
    drop(s.operator);
    Ok(())
}

#[tokio::test]
async fn a_tag_moved_to_an_unscanned_digest_is_judged_by_that_digest() -> Result<()> {
    // Resolved tags are not reused: the registry is asked at each admission.
    let s = setup_with(&["--admission-tag-cache=0s"]).await?;
    let client = s.client.clone();
    let registry = Registry::start(RegistryMode::Plain).await?;
    let clean_digest = push_image(&registry, "team-a/app", "v1", &alpine311()).await?;
    let h = registry.host.clone();
    let by_tag = format!("{h}/team-a/app:v1");
    scan_team_a(&client, &h).await?;
    let policies: Api<ImagePolicy> = Api::all(client.clone());
    apply_yaml(&policies, &policy_yaml("Enforce", "Deny")).await?;
    let results: Api<ImageScanResult> = Api::default_namespaced(client.clone());
    let clean = results.list(&ListParams::default()).await?.items;
    let clean_name = clean[0].metadata.name.clone().unwrap();
    assert_eq!(
        recorded_verdict(&client, &clean_name, "no-critical").await?,
        "Pass"
    );
    register_webhook(&s, "Fail").await?;
    create_pod(&client, "default", "before", &by_tag)
        .await?
        .map_err(|e| anyhow::anyhow!("the clean image was refused: {e}"))?;

    // The tag moves to a vulnerable digest that nothing has scanned yet; the old result
    // still lists the tag.
    let moved = push_image(&registry, "team-a/app", "v1", &vulnerable_alpine()).await?;
    assert_ne!(moved, clean_digest);
    assert_eq!(results.get(&clean_name).await?.spec.tags, ["v1"]);
    let Err(message) = create_pod(&client, "default", "after", &by_tag).await? else {
        bail!("{by_tag} was admitted on the result of the digest it pointed at before");
    };
    assert!(
        message.contains("the image has not been scanned"),
        "{message}"
    );
    // The old digest itself is still admitted.
    create_pod(
        &client,
        "default",
        "old-digest",
        &format!("{h}/team-a/app@{clean_digest}"),
    )
    .await?
    .map_err(|e| anyhow::anyhow!("the clean digest was refused: {e}"))?;
    Ok(())
}

#[tokio::test]
async fn with_the_operator_down_fail_refuses_and_ignore_admits() -> Result<()> {
    let mut s = setup().await?;
    let client = s.client.clone();
    register_webhook(&s, "Fail").await?;
    // Up: no policy, everything is admitted.
    create_pod(&client, "default", "up", "registry.example.com/app:v1")
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    s.operator.kill();
    let api: Api<Pod> = Api::default_namespaced(client.clone());
    let err = api
        .create(
            &PostParams::default(),
            &pod("down", "registry.example.com/app:v1"),
        )
        .await
        .expect_err("admitted without the webhook under failurePolicy Fail");
    assert!(err.to_string().contains("failed calling webhook"), "{err}");
    register_webhook(&s, "Ignore").await?;
    api.create(
        &PostParams::default(),
        &pod("down", "registry.example.com/app:v1"),
    )
    .await?;
    Ok(())
}

/// The certificate the admission port serves now (DER).
async fn served_certificate(s: &Setup) -> Result<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from_pem_slice(
        s.ca_pem.as_bytes(),
    )?)?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.admission_port)).await?;
    let tls = connector
        .connect(
            rustls_pki_types::ServerName::try_from("127.0.0.1")?.to_owned(),
            tcp,
        )
        .await?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec())
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_failed_admission() -> Result<()> {
    use rustls_pki_types::pem::PemObject;
    let s = setup().await?;
    let client = s.client.clone();
    register_webhook(&s, "Fail").await?;
    let before = served_certificate(&s).await?;

    // Pods are created all along while the Secret's files are replaced, as the kubelet
    // replaces them: new files, then one rename.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let creating = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut created, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match create_pod(
                    &client,
                    "default",
                    &format!("p{created}"),
                    "registry.example.com/app:v1",
                )
                .await
                {
                    Ok(Ok(())) => created += 1,
                    Ok(Err(e)) => failed.push(e),
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (created, failed)
        })
    };
    let renewed = s.ca.server(&["127.0.0.1"])?;
    let staging = s.tls_dir.path().join("..next");
    std::fs::create_dir(&staging)?;
    std::fs::write(staging.join("tls.crt"), &renewed.cert_pem)?;
    std::fs::write(staging.join("tls.key"), &renewed.key_pem)?;
    std::fs::rename(staging.join("tls.key"), s.tls_dir.path().join("tls.key"))?;
    std::fs::rename(staging.join("tls.crt"), s.tls_dir.path().join("tls.crt"))?;
    let renewed_der =
        rustls_pki_types::CertificateDer::from_pem_slice(renewed.cert_pem.as_bytes())?.to_vec();
    assert_ne!(before, renewed_der);
    wait_for(
        "the renewed certificate to be served",
        Duration::from_secs(40),
        || {
            let s = &s;
            let want = renewed_der.clone();
            async move { Ok((served_certificate(s).await? == want).then_some(())) }
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (created, failed) = creating.await?;
    assert!(failed.is_empty(), "failed admissions: {failed:?}");
    assert!(created > 10, "only {created} Pods created");
    Ok(())
}

#[tokio::test]
async fn running_pods_that_a_new_policy_denies_are_reported_on_their_owners() -> Result<()> {
    use k8s_openapi::api::events::v1::Event;
    let s = setup().await?;
    let client = s.client.clone();
    let registry = Registry::start(RegistryMode::Plain).await?;
    let digest = push_image(&registry, "team-a/alpine", "v1", &vulnerable_alpine()).await?;
    push_image(&registry, "team-a/app", "v2", &alpine311()).await?;
    let h = registry.host.clone();
    let vulnerable = format!("{h}/team-a/alpine@{digest}");
    let clean = format!("{h}/team-a/app:v2");
    scan_team_a(&client, &h).await?;

    // Admitted while no policy exists: a Deployment (its ReplicaSet makes the Pod) and
    // two bare Pods.
    register_webhook(&s, "Fail").await?;
    let (ok, stderr) = kubectl_apply(
        &s.cp,
        &format!(
            "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: app, image: \"{vulnerable}\"}}]
"
        ),
    )?;
    assert!(ok, "{stderr}");
    create_pod(&client, "default", "bare", &vulnerable)
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    create_pod(&client, "default", "clean", &clean)
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    // The ReplicaSet's Pod exists (made by the controller-manager through the webhook)
    // before the policy arrives.
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    wait_for("the Deployment's Pod", Duration::from_secs(120), || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default()).await?.items;
            Ok(list.into_iter().find(|p| {
                p.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("web-"))
            }))
        }
    })
    .await
    .map_err(|e| {
        let log = s.cp.apiserver_log_tail(40);
        e.context(format!("apiserver log tail:\n{log}"))
    })?;

    // A policy arrives: the running Pods it would deny are reported (sweeps every 30 s).
    let policies: Api<ImagePolicy> = Api::all(client.clone());
    apply_yaml(&policies, &policy_yaml("Enforce", "Deny")).await?;
    let events: Api<Event> = Api::default_namespaced(client.clone());
    let reported = wait_for(
        "PolicyViolation events on the ReplicaSet and the bare Pod",
        Duration::from_secs(150),
        || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default()).await?.items;
                let violations: Vec<Event> = list
                    .into_iter()
                    .filter(|e| e.reason.as_deref() == Some("PolicyViolation"))
                    .collect();
                let on = |kind: &str| {
                    violations
                        .iter()
                        .any(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some(kind))
                };
                Ok((on("ReplicaSet") && on("Pod")).then_some(violations))
            }
        },
    )
    .await;
    let reported = match reported {
        Ok(r) => r,
        Err(e) => {
            let list = events.list(&ListParams::default()).await?.items;
            let seen: Vec<String> = list
                .iter()
                .map(|e| {
                    format!(
                        "{:?} {:?}/{:?}: {:?}",
                        e.reason,
                        e.regarding.as_ref().and_then(|r| r.kind.clone()),
                        e.regarding.as_ref().and_then(|r| r.name.clone()),
                        e.note
                    )
                })
                .collect();
            let log: String = s
                .operator
                .log()
                .lines()
                .filter(|l| !l.contains("DEBUG"))
                .rev()
                .take(60)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            bail!("{e:#}\nevents: {seen:#?}\noperator log tail:\n{log}");
        }
    };
    let bare = reported
        .iter()
        .find(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("bare"))
        .expect("an event on the bare Pod");
    let note = bare.note.clone().unwrap_or_default();
    assert!(
        note.contains("ImagePolicy no-critical now denies")
            && note.contains("ALPINE-CVE-2019-14697"),
        "{note}"
    );
    assert!(
        !reported
            .iter()
            .any(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("clean")),
        "{reported:?}"
    );
    let metrics = s.operator.metrics().await?;
    assert!(
        metrics
            .lines()
            .any(|l| l == "imagewarden_running_pods_denied{policy=\"no-critical\"} 2"),
        "{metrics}"
    );
    Ok(())
}

/// The certificate `port` serves, verified against the CAs of `bundle_pem` (DER).
async fn served_with_roots(port: u16, bundle_pem: &[u8]) -> Result<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for der in rustls_pki_types::CertificateDer::pem_slice_iter(bundle_pem) {
        roots.add(der?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let tls = connector
        .connect(
            rustls_pki_types::ServerName::try_from("127.0.0.1")?.to_owned(),
            tcp,
        )
        .await?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec())
}

const CERT_SECRET: &str = "imagewarden-admission-certs";
const OPERATOR_NS: &str = "imagewarden-system";

/// The caBundle of the webhook (PEM), once set.
async fn webhook_ca_bundle(client: &Client) -> Result<Option<Vec<u8>>> {
    let config = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get(WEBHOOK)
        .await?;
    Ok(config
        .webhooks
        .unwrap_or_default()
        .first()
        .and_then(|w| w.client_config.ca_bundle.clone())
        .map(|b| b.0))
}

fn pem_certs(pem: &[u8]) -> Vec<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .filter_map(|c| c.ok())
        .map(|c| c.to_vec())
        .collect()
}

#[tokio::test]
async fn operator_made_certificates_are_shared_rotated_and_published_without_a_failed_admission(
) -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    let cp = ControlPlane::start_with(ControlPlaneOptions {
        controller_manager: true,
    })
    .await?;
    cp.install_crds(&imagewarden_operator::crd::all()).await?;
    let client = cp.client().await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": OPERATOR_NS}}))?,
        )
        .await?;
    // Registered by URL, without a caBundle: the operator fills it in.
    let ports = [free_port()?, free_port()?];
    register_webhook_at(&client, ports[0], None, "Fail").await?;
    let args = |port: u16| -> Vec<String> {
        vec![
            format!("--db={}", testdata("osv").display()),
            "--egress-allow=127.0.0.0/8".to_string(),
            "--executor=inline".to_string(),
            format!("--lease-namespace={OPERATOR_NS}"),
            format!("--admission-addr=127.0.0.1:{port}"),
            format!("--admission-cert-secret={CERT_SECRET}"),
            "--admission-cert-ip-addresses=127.0.0.1".to_string(),
            "--admission-cert-dns-names=imagewarden-admission.imagewarden-system.svc".to_string(),
            format!("--admission-webhook-configuration={WEBHOOK}"),
            "--admission-cert-lifetime=20s".to_string(),
            "--admission-ca-lifetime=60s".to_string(),
        ]
    };
    // Two replicas start at once on the same (missing) Secret.
    let (args_a, args_b) = (args(ports[0]), args(ports[1]));
    let (a, b) = tokio::join!(
        OperatorProcess::start(Path::new(BIN), &cp, &args_a),
        OperatorProcess::start(Path::new(BIN), &cp, &args_b),
    );
    let (_a, _b) = (a?, b?);
    wait_for_default_account(&client).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), OPERATOR_NS);
    let secret_bytes = |s: &Secret, key: &str| -> Vec<u8> {
        s.data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .unwrap_or_default()
    };

    // One CA: both replicas serve certificates it signed, and the leader put it into
    // the webhook's caBundle.
    let first = secrets.get(CERT_SECRET).await?;
    let first_ca = secret_bytes(&first, "ca.crt");
    for port in ports {
        served_with_roots(port, &first_ca).await?;
    }
    let published = wait_for("the caBundle", Duration::from_secs(60), || {
        let client = client.clone();
        async move { webhook_ca_bundle(&client).await }
    })
    .await?;
    assert_eq!(pem_certs(&published)[0], pem_certs(&first_ca)[0]);

    // Pods are created all along while the serving certificate (every ~13 s) and the CA
    // (at ~40 s, promoted some seconds later) rotate.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let creating = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut created, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match create_pod(
                    &client,
                    "default",
                    &format!("p{created}"),
                    "registry.example.com/app:v1",
                )
                .await
                {
                    Ok(Ok(())) => created += 1,
                    Ok(Err(e)) => failed.push(e),
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (created, failed)
        })
    };
    let mut served = std::collections::HashSet::new();
    let mut bundles_of_two = 0;
    let started = std::time::Instant::now();
    let mut rotated_ca = None;
    while started.elapsed() < Duration::from_secs(120) {
        let secret = secrets.get(CERT_SECRET).await?;
        let bundle = secret_bytes(&secret, "ca-bundle.crt");
        if pem_certs(&bundle).len() == 2 {
            bundles_of_two += 1;
        }
        // Both replicas serve what the Secret says, trusted by the bundle it publishes.
        for port in ports {
            served.insert(served_with_roots(port, &bundle).await?);
        }
        let ca = secret_bytes(&secret, "ca.crt");
        if ca != first_ca && served.len() >= 4 {
            rotated_ca = Some(ca);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A few more seconds on the new CA, then stop.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (created, failed) = creating.await?;
    let new_ca = rotated_ca.expect("the CA did not rotate within 2 minutes");
    assert!(
        bundles_of_two > 0,
        "the old and new CA were never trusted together"
    );
    assert!(
        served.len() >= 4,
        "only {} serving certificates seen",
        served.len()
    );
    assert!(failed.is_empty(), "failed admissions: {failed:?}");
    assert!(created > 50, "only {created} Pods created");
    // The caBundle holds the new CA; the serving certificate is the new CA's.
    let published = webhook_ca_bundle(&client).await?.unwrap_or_default();
    assert!(pem_certs(&published).contains(&pem_certs(&new_ca)[0]));
    for port in ports {
        served_with_roots(port, &new_ca).await?;
    }
    Ok(())
}

/// What a receiver got: the event header, the delivery header and the JSON body.
type Got = (String, String, serde_json::Value);

/// A receiver on 127.0.0.1 recording every POST; over TLS with `tls` (certificate, key).
async fn policy_receiver(
    tls: Option<(&str, &str)>,
) -> Result<(u16, tokio::sync::mpsc::UnboundedReceiver<Got>)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let tx = tx.clone();
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    let _ = tx.send((
                        header("x-imagewarden-event"),
                        header("x-imagewarden-delivery"),
                        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                    ));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let tls = match tls {
        Some((cert, key)) => Some(
            std::sync::Arc::new(
                imagewarden_operator::policy::tls::SharedCert::new(cert.as_bytes(), key.as_bytes())
                    .map_err(anyhow::Error::msg)?,
            )
            .config()
            .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    let options = imagewarden_operator::registry::webhook::ServerOptions {
        tls,
        ..Default::default()
    };
    tokio::spawn(imagewarden_operator::registry::webhook::serve_router(
        listener, app, options,
    ));
    Ok((port, rx))
}

/// The next notification of `event` (others are skipped), within `within`.
async fn next_of(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Got>,
    event: &str,
    within: Duration,
) -> Result<Got> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(got)) if got.0 == event => return Ok(got),
            Ok(Some(_)) => continue,
            _ => bail!("no {event} notification within {within:?}"),
        }
    }
}

/// Notifications of `event` received until now.
fn drain_of(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Got>, event: &str) -> Vec<Got> {
    let mut out = Vec::new();
    while let Ok(got) = rx.try_recv() {
        if got.0 == event {
            out.push(got);
        }
    }
    out
}

#[tokio::test]
async fn expired_exceptions_and_new_violations_are_notified_to_the_rules_targets() -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    let mut s = setup().await?;
    let client = s.client.clone();
    let registry = Registry::start(RegistryMode::Plain).await?;
    let digest = push_image(&registry, "team-a/alpine", "v1", &vulnerable_alpine()).await?;
    let h = registry.host.clone();
    let vulnerable = format!("{h}/team-a/alpine@{digest}");

    // An HTTP and an HTTPS receiver (its CA in a Secret of the rule's namespace).
    let receiver_ca = TestCa::new("policy-receiver-ca")?;
    let receiver_cert = receiver_ca.server(&["127.0.0.1"])?;
    let (http_port, mut http) = policy_receiver(None).await?;
    let (https_port, mut https) =
        policy_receiver(Some((&receiver_cert.cert_pem, &receiver_cert.key_pem))).await?;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "receiver-ca"},
                "stringData": {"ca.crt": receiver_ca.cert_pem},
            }))?,
        )
        .await?;
    let rules: Api<ScanRule> = Api::default_namespaced(client.clone());
    apply_yaml(
        &rules,
        &format!(
            "apiVersion: imagewarden.io/v1alpha1
kind: ScanRule
metadata:
  name: team-a
  annotations:
    imagewarden.io/scan-now: first
spec:
  registry:
    url: {h}
    insecure: true
  scope:
    type: Namespace
    name: team-a
  notifications:
    - name: http
      type: HTTP
      url: http://127.0.0.1:{http_port}/hook
      events: [ExceptionExpired, PolicyViolation]
    - name: https
      type: HTTPS
      url: https://127.0.0.1:{https_port}/hook
      caSecretRef: {{name: receiver-ca, key: ca.crt}}
      events: [ExceptionExpired, PolicyViolation]
"
        ),
    )
    .await?;
    let tasks: Api<ScanTask> = Api::default_namespaced(client.clone());
    wait_for("the scan to finish", Duration::from_secs(180), || {
        let tasks = tasks.clone();
        async move {
            let list = tasks.list(&ListParams::default()).await?;
            Ok(list.items.into_iter().find(|t| {
                t.status
                    .as_ref()
                    .is_some_and(|s| s.phase == ScanPhase::Completed)
            }))
        }
    })
    .await?;

    // An exception that covers the image's Critical finding expires.
    let exceptions: Api<VulnerabilityException> = Api::default_namespaced(client.clone());
    let expires = chrono::Utc::now() + chrono::Duration::seconds(15);
    apply_yaml(
        &exceptions,
        &format!(
            "apiVersion: imagewarden.io/v1alpha1
kind: VulnerabilityException
metadata:
  name: musl
spec:
  ids:
    - id: ALPINE-CVE-2019-14697
  expires: '{}'
  reason: 'SEC-42'
",
            expires.format("%Y-%m-%dT%H:%M:%SZ")
        ),
    )
    .await?;
    for (name, rx) in [("http", &mut http), ("https", &mut https)] {
        let (_, delivery, body) = next_of(rx, "ExceptionExpired", Duration::from_secs(90)).await?;
        assert_eq!(
            body["apiVersion"], "imagewarden.io/notification/v1",
            "{body}"
        );
        assert_eq!(body["event"], "ExceptionExpired", "{body}");
        assert_eq!(body["rule"]["name"], "team-a", "{body}");
        assert_eq!(body["deliveryId"], delivery.as_str());
        assert!(delivery.ends_with(&format!("/team-a/{name}")), "{delivery}");
        let item = &body["items"][0];
        assert_eq!(item["kind"], "ExceptionExpired", "{body}");
        assert_eq!(item["object"]["kind"], "VulnerabilityException", "{body}");
        assert_eq!(item["object"]["name"], "musl", "{body}");
        assert!(
            item["reasons"]
                .to_string()
                .contains("ALPINE-CVE-2019-14697"),
            "{body}"
        );
    }
    let status = wait_for("the deliveries recorded", Duration::from_secs(30), || {
        let exceptions = exceptions.clone();
        async move {
            let status = exceptions.get("musl").await?.status.unwrap_or_default();
            Ok((status.notifications.len() == 2
                && status.notifications.iter().all(|d| d.state == "Delivered"))
            .then_some(status))
        }
    })
    .await?;
    let mut targets: Vec<&str> = status
        .notifications
        .iter()
        .map(|d| d.target.as_str())
        .collect();
    targets.sort();
    assert_eq!(targets, ["team-a/http", "team-a/https"]);
    assert!(status.notified_expiry.is_some());

    // A restarted operator does not send them again.
    s.operator.kill();
    s.operator = OperatorProcess::start(Path::new(BIN), &s.cp, &s.args).await?;

    // Running Pods a new policy denies: one notification per target for the sweep,
    // listing both Pods, and none again while they keep running.
    create_pod(&client, "default", "bare-1", &vulnerable)
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    create_pod(&client, "default", "bare-2", &vulnerable)
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let policies: Api<ImagePolicy> = Api::all(client.clone());
    apply_yaml(&policies, &policy_yaml("Enforce", "Deny")).await?;
    for rx in [&mut http, &mut https] {
        let (_, _, body) = next_of(rx, "PolicyViolation", Duration::from_secs(90)).await?;
        assert_eq!(body["event"], "PolicyViolation", "{body}");
        let items = body["items"].as_array().cloned().unwrap_or_default();
        let mut pods: Vec<String> = items
            .iter()
            .map(|i| i["object"]["name"].as_str().unwrap_or_default().to_string())
            .collect();
        pods.sort();
        assert_eq!(pods, ["bare-1", "bare-2"], "{body}");
        for item in &items {
            assert_eq!(item["policy"], "no-critical", "{body}");
            assert_eq!(item["image"], vulnerable.as_str(), "{body}");
            assert!(
                item["reasons"]
                    .to_string()
                    .contains("ALPINE-CVE-2019-14697"),
                "{body}"
            );
        }
    }
    // The next sweep (30 s) finds the same violations: nothing new is sent, and the
    // restart above sent no second ExceptionExpired.
    tokio::time::sleep(
        imagewarden_operator::policy::running::SWEEP_INTERVAL + Duration::from_secs(5),
    )
    .await;
    for rx in [&mut http, &mut https] {
        let mut rest = drain_of(rx, "PolicyViolation");
        assert!(rest.is_empty(), "repeated: {rest:?}");
        rest = drain_of(rx, "ExceptionExpired");
        assert!(rest.is_empty(), "sent again after a restart: {rest:?}");
    }
    Ok(())
}
