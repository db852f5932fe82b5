//! The operator as a real process against a real kube-apiserver (+ controller-manager)
//! and a real registry: discovery, scans, results, triggers, restarts and leadership.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use imagewarden_operator::crd::{
    FindingClass, ImageScanResult, ScanPhase, ScanRule, ScanTask, ScannerKind,
};
use imagewarden_tests::control_plane::ControlPlaneOptions;
use imagewarden_tests::image::{push_image, LayerBuilder};
use imagewarden_tests::operator::OperatorProcess;
use imagewarden_tests::process::poll as wait_for;
use imagewarden_tests::registry::{NotificationEndpoint, RegistryOptions};
use imagewarden_tests::samples::{alpine311, testdata, vulnerable_alpine};
use imagewarden_tests::{ControlPlane, Registry, RegistryMode};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;

const BIN: &str = env!("CARGO_BIN_EXE_imagewarden-operator");

/// The registries and receivers of these tests listen on the loopback interface, which
/// the operator's egress policy denies unless allowed.
const ALLOW_LOOPBACK: &str = "--egress-allow=127.0.0.0/8";

/// The test database and scans inside the operator process (the default is Jobs).
fn db_args() -> Vec<String> {
    vec![
        format!("--db={}", testdata("osv").display()),
        ALLOW_LOOPBACK.to_string(),
        "--executor=inline".to_string(),
    ]
}

async fn setup(controller_manager: bool) -> Result<(ControlPlane, Client)> {
    let cp = ControlPlane::start_with(ControlPlaneOptions { controller_manager }).await?;
    cp.install_crds(&imagewarden_operator::crd::all()).await?;
    let client = cp.client().await?;
    Ok((cp, client))
}

async fn apply<K>(client: &Client, yaml: &str) -> Result<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let obj: K = serde_norway::from_str(yaml)?;
    let api: Api<K> = Api::default_namespaced(client.clone());
    let name = obj.meta().name.clone().unwrap();
    Ok(api
        .patch(
            &name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&obj),
        )
        .await?)
}

async fn finished_task(client: &Client, name: &str, timeout: Duration) -> Result<ScanTask> {
    let api: Api<ScanTask> = Api::default_namespaced(client.clone());
    wait_for(&format!("task {name} to finish"), timeout, || {
        let api = api.clone();
        async move {
            Ok(api.get_opt(name).await?.filter(|t| {
                t.status
                    .as_ref()
                    .is_some_and(|s| matches!(s.phase, ScanPhase::Completed | ScanPhase::Failed))
            }))
        }
    })
    .await
}

async fn last_task_of(client: &Client, rule: &str) -> Result<String> {
    let api: Api<ScanRule> = Api::default_namespaced(client.clone());
    wait_for(
        &format!("a task of rule {rule}"),
        Duration::from_secs(30),
        || {
            let api = api.clone();
            async move { Ok(api.get(rule).await?.status.and_then(|s| s.last_task)) }
        },
    )
    .await
}

fn rule_yaml(name: &str, registry: &Registry, extra: &str) -> String {
    format!(
        "apiVersion: imagewarden.io/v1alpha1
kind: ScanRule
metadata:
  name: {name}
  annotations:
    imagewarden.io/scan-now: first
spec:
  registry:
    url: {host}
    insecure: {insecure}
  scope:
    type: Namespace
    name: team-a
  tagFilter: '^v\\d'
{extra}",
        host = registry.host,
        insecure = registry.mode == RegistryMode::Plain,
    )
}

/// Asks `rule` for another manual scan and returns the name of the task that is not `previous`.
async fn scan_now_again(
    client: &Client,
    rule: &str,
    previous: &str,
    value: &str,
) -> Result<String> {
    let rules: Api<ScanRule> = Api::default_namespaced(client.clone());
    let annotation =
        serde_json::json!({"metadata": {"annotations": {"imagewarden.io/scan-now": value}}});
    rules
        .patch(rule, &PatchParams::default(), &Patch::Merge(annotation))
        .await?;
    wait_for("another task", Duration::from_secs(30), || {
        let rules = rules.clone();
        async move {
            Ok(rules
                .get(rule)
                .await?
                .status
                .and_then(|s| s.last_task)
                .filter(|t| t != previous))
        }
    })
    .await
}

struct Pushed {
    alpine: String,
    app: String,
}

async fn populate(registry: &Registry) -> Result<Pushed> {
    let alpine = push_image(registry, "team-a/alpine", "v1", &vulnerable_alpine()).await?;
    push_image(registry, "team-a/alpine", "v1-rc", &vulnerable_alpine()).await?;
    let app = push_image(registry, "team-a/app", "v2", &alpine311()).await?;
    push_image(registry, "team-a/app", "dev", &alpine311()).await?;
    push_image(registry, "team-b/other", "v1", &alpine311()).await?;
    Ok(Pushed { alpine, app })
}

#[tokio::test]
async fn namespace_rule_scans_each_matching_digest_once_and_cleans_up() -> Result<()> {
    let (cp, client) = setup(true).await?;
    let registry = Registry::start(RegistryMode::Plain).await?;
    let pushed = populate(&registry).await?;
    let mut args = db_args();
    args.push("--leader-elect=false".into());
    let operator = OperatorProcess::start(Path::new(BIN), &cp, &args).await?;

    apply::<ScanRule>(&client, &rule_yaml("team-a", &registry, "")).await?;
    let task_name = last_task_of(&client, "team-a").await?;
    let task = finished_task(&client, &task_name, Duration::from_secs(120)).await?;
    let status = task.status.unwrap();
    let mut images: Vec<(String, Option<String>, ScanPhase)> = status
        .images
        .iter()
        .map(|i| (i.image.clone(), i.digest.clone(), i.phase))
        .collect();
    images.sort_by(|a, b| a.0.cmp(&b.0));
    let h = &registry.host;
    assert_eq!(
        images,
        vec![
            (
                format!("{h}/team-a/alpine:v1"),
                Some(pushed.alpine.clone()),
                ScanPhase::Completed
            ),
            (
                format!("{h}/team-a/alpine:v1-rc"),
                Some(pushed.alpine.clone()),
                ScanPhase::Completed
            ),
            (
                format!("{h}/team-a/app:v2"),
                Some(pushed.app.clone()),
                ScanPhase::Completed
            ),
        ],
        "operator log:\n{}",
        operator.log()
    );
    assert_eq!(
        (status.phase, status.total, status.succeeded, status.failed),
        (ScanPhase::Completed, 3, 3, 0)
    );

    // Two digests, two results, each scanned once.
    let results: Api<ImageScanResult> = Api::default_namespaced(client.clone());
    let list = results.list(&ListParams::default()).await?;
    assert_eq!(list.items.len(), 2);
    assert_eq!(
        operator
            .metric("imagewarden_image_scans_total{outcome=\"scanned\"}")
            .await?,
        2.0
    );
    let vulnerable = list
        .items
        .iter()
        .find(|r| r.spec.digest == pushed.alpine)
        .unwrap();
    let mut tags = vulnerable.spec.tags.clone();
    tags.sort();
    assert_eq!(tags, ["v1", "v1-rc"]);
    let st = vulnerable.status.clone().unwrap();
    assert_eq!(st.os.as_ref().unwrap().family, "alpine");
    let musl = st
        .findings
        .iter()
        .find(|f| f.id == "ALPINE-CVE-2019-14697")
        .expect("musl finding");
    assert_eq!(musl.class, FindingClass::SystemVulnerability);
    assert_eq!(musl.package.as_deref(), Some("musl"));
    assert_eq!(musl.fixed_version.as_deref(), Some("1.1.22-r3"));
    assert!(st.summary.system_vulnerabilities.total() >= 1);
    // The image config has no user and no healthcheck: two baseline risks (CIS 4.1, 4.6).
    let baseline: Vec<&str> = st
        .findings
        .iter()
        .filter(|f| f.class == FindingClass::BaselineRisk)
        .map(|f| f.id.as_str())
        .collect();
    assert!(
        baseline.contains(&"IW-CIS-4.1-ROOT-USER")
            && baseline.contains(&"IW-CIS-4.6-NO-HEALTHCHECK"),
        "{baseline:?}"
    );
    assert_eq!(st.summary.baseline_risks.total(), baseline.len() as u32);
    assert_eq!(st.summary.malicious_samples.total(), 0);
    let clean = list
        .items
        .iter()
        .find(|r| r.spec.digest == pushed.app)
        .unwrap();
    assert_eq!(
        clean
            .status
            .clone()
            .unwrap()
            .summary
            .system_vulnerabilities
            .total(),
        0
    );

    let table = cp.kubectl_output(&["get", "scanresults"])?;
    assert!(
        table.contains("team-a/alpine") && table.contains(&pushed.alpine[7..19]),
        "{table}"
    );

    // A second manual scan reuses both results instead of rescanning.
    let rules: Api<ScanRule> = Api::default_namespaced(client.clone());
    let second = scan_now_again(&client, "team-a", &task_name, "second").await?;
    let second = finished_task(&client, &second, Duration::from_secs(60)).await?;
    assert_eq!(second.status.unwrap().succeeded, 3);
    assert_eq!(
        operator
            .metric("imagewarden_image_scans_total{outcome=\"scanned\"}")
            .await?,
        2.0
    );
    assert!(
        operator
            .metric("imagewarden_image_scans_total{outcome=\"reused\"}")
            .await?
            >= 2.0
    );

    // Deleting the rule deletes its tasks and results (garbage collection by owner).
    rules.delete("team-a", &DeleteParams::foreground()).await?;
    let tasks: Api<ScanTask> = Api::default_namespaced(client.clone());
    wait_for(
        "tasks and results to be collected",
        Duration::from_secs(60),
        || {
            let (tasks, results) = (tasks.clone(), results.clone());
            async move {
                let n = tasks.list(&ListParams::default()).await?.items.len()
                    + results.list(&ListParams::default()).await?.items.len();
                Ok((n == 0).then_some(()))
            }
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn an_invalid_rule_is_refused_at_apply_or_a_condition_not_a_crash() -> Result<()> {
    let (cp, client) = setup(false).await?;
    let registry = Registry::start(RegistryMode::Plain).await?;
    let mut args = db_args();
    args.push("--leader-elect=false".into());
    let operator = OperatorProcess::start(Path::new(BIN), &cp, &args).await?;
    // A rule the schema accepts but the operator's types cannot hold (maxTags beyond u32).
    let unreadable = cp.dir().join("unreadable.yaml");
    std::fs::write(
        &unreadable,
        rule_yaml("unreadable", &registry, "  maxTags: 5000000000\n"),
    )?;
    cp.kubectl_output(&["apply", "-f", &unreadable.display().to_string()])?;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::default_namespaced(client.clone());
    let event = wait_for("an InvalidObject event", Duration::from_secs(30), || {
        let events = events.clone();
        async move {
            Ok(events
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("InvalidObject")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                            == Some("unreadable")
                }))
        }
    })
    .await?;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(event
        .note
        .unwrap_or_default()
        .contains("cannot read this ScanRule"));
    // The API server refuses a tag filter that does not compile (CEL); what only the
    // operator checks (a retention that is not a duration) makes the rule Ready=False.
    let bad_filter = rule_yaml("broken", &registry, "").replace("'^v\\d'", "'^v(\\d'");
    let refused = apply::<ScanRule>(&client, &bad_filter)
        .await
        .expect_err("the API server accepted an invalid tagFilter");
    assert!(
        refused
            .to_string()
            .contains("spec.tagFilter is not a valid regular expression"),
        "{refused}"
    );
    let yaml = rule_yaml("broken", &registry, "  resultRetention: forever\n");
    apply::<ScanRule>(&client, &yaml).await?;
    let rules: Api<ScanRule> = Api::default_namespaced(client.clone());
    let cond = wait_for("Ready=False", Duration::from_secs(30), || {
        let rules = rules.clone();
        async move {
            Ok(rules.get("broken").await?.status.and_then(|s| {
                s.conditions
                    .into_iter()
                    .find(|c| c.type_ == "Ready" && c.status == "False")
            }))
        }
    })
    .await?;
    assert_eq!(cond.reason, "InvalidSpec");
    assert!(
        cond.message.contains("spec.resultRetention") && cond.message.contains("forever"),
        "{}",
        cond.message
    );
    assert!(rules
        .get("broken")
        .await?
        .status
        .unwrap()
        .last_task
        .is_none());
    // Still working: a valid rule next to it is scanned.
    push_image(&registry, "team-a/app", "v2", &alpine311()).await?;
    apply::<ScanRule>(&client, &rule_yaml("fine", &registry, "")).await?;
    let t = last_task_of(&client, "fine").await?;
    assert_eq!(
        finished_task(&client, &t, Duration::from_secs(90))
            .await?
            .status
            .unwrap()
            .phase,
        ScanPhase::Completed,
        "{}",
        operator.log()
    );
    Ok(())
}

#[tokio::test]
async fn wrong_registry_credentials_fail_each_image_with_the_reason() -> Result<()> {
    let (cp, client) = setup(false).await?;
    let registry = Registry::start(RegistryMode::TlsAuth).await?;
    push_image(&registry, "team-a/app", "v2", &alpine311()).await?;
    let mut args = db_args();
    args.push("--leader-elect=false".into());
    let _operator = OperatorProcess::start(Path::new(BIN), &cp, &args).await?;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let (user, _) = registry.credentials().unwrap();
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "creds"},
        "stringData": {"username": user, "password": "not-the-password", "ca.crt": registry.ca_pem().unwrap()},
    }))?;
    secrets.create(&PostParams::default(), &secret).await?;
    let extra =
        "    credentialsSecretRef: {name: creds}\n    caSecretRef: {name: creds, key: ca.crt}\n";
    let yaml = rule_yaml("locked", &registry, "")
        .replace(
            "    insecure: false\n",
            &format!("    insecure: false\n{extra}"),
        )
        .replace("  annotations:\n    imagewarden.io/scan-now: first\n", "");
    apply::<ScanRule>(&client, &yaml).await?;
    let task: ScanTask = serde_norway::from_str(&format!(
        "apiVersion: imagewarden.io/v1alpha1\nkind: ScanTask\nmetadata: {{name: adhoc}}\nspec:\n  ruleRef: {{name: locked}}\n  images: ['{h}/team-a/app:v2']\n",
        h = registry.host
    ))?;
    Api::<ScanTask>::default_namespaced(client.clone())
        .create(&PostParams::default(), &task)
        .await?;
    let done = finished_task(&client, "adhoc", Duration::from_secs(60)).await?;
    let st = done.status.unwrap();
    assert_eq!(st.phase, ScanPhase::Failed);
    let msg = st.images[0].message.clone().unwrap_or_default();
    assert_eq!(st.images[0].phase, ScanPhase::Failed);
    assert!(
        msg.contains(&registry.host) && msg.to_lowercase().contains("unauthorized"),
        "{msg}"
    );
    Ok(())
}

#[tokio::test]
async fn killed_operator_finishes_the_task_after_restart_without_rescanning() -> Result<()> {
    let (cp, client) = setup(false).await?;
    let registry = Registry::start(RegistryMode::Plain).await?;
    for (i, image) in [vulnerable_alpine(), alpine311()].iter().enumerate() {
        push_image(&registry, "team-a/app", &format!("v{i}"), image).await?;
    }
    // A third digest: alpine 3.11 with one more file.
    let mut third = alpine311();
    third.layers.push(
        LayerBuilder::new()
            .file("etc/motd", 0o644, b"third\n")?
            .finish()?,
    );
    push_image(&registry, "team-a/app", "v9", &third).await?;

    let mut args = db_args();
    args.extend([
        "--leader-elect=false".to_string(),
        "--max-concurrent-scans=1".to_string(),
    ]);
    let mut first = OperatorProcess::start(Path::new(BIN), &cp, &args).await?;
    apply::<ScanRule>(&client, &rule_yaml("team-a", &registry, "")).await?;
    let task_name = last_task_of(&client, "team-a").await?;
    let results: Api<ImageScanResult> = Api::default_namespaced(client.clone());
    wait_for("the first result", Duration::from_secs(60), || {
        let results = results.clone();
        async move { Ok((!results.list(&ListParams::default()).await?.items.is_empty()).then_some(())) }
    })
    .await?;
    first.kill();
    // Results with a status: a result is written spec first, then status, so a kill in
    // between leaves one without, which the restarted operator scans again.
    let before = results
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|r| r.status.as_ref().is_some_and(|s| s.scan_time.is_some()))
        .count();
    let tasks: Api<ScanTask> = Api::default_namespaced(client.clone());
    if before == 3 {
        // Everything finished before the kill; nothing left to prove.
        bail!("all scans finished before the operator was killed; the test needs slower scans");
    }
    assert!(tasks.get(&task_name).await?.status.unwrap().phase != ScanPhase::Completed);

    let second = OperatorProcess::start(Path::new(BIN), &cp, &args).await?;
    let done = finished_task(&client, &task_name, Duration::from_secs(120)).await?;
    assert_eq!(done.status.unwrap().succeeded, 3, "{}", second.log());
    assert_eq!(results.list(&ListParams::default()).await?.items.len(), 3);
    let rescanned = second
        .metric("imagewarden_image_scans_total{outcome=\"scanned\"}")
        .await?;
    assert_eq!(
        rescanned as usize + before,
        3,
        "the restarted operator scanned only what had no result"
    );
    Ok(())
}

#[tokio::test]
async fn a_push_starts_a_task_for_the_pushed_tag_only() -> Result<()> {
    let (cp, client) = setup(false).await?;
    let token = "push-token-1234";
    let token_file = cp.dir().join("webhook-token");
    std::fs::write(&token_file, token)?;
    // The operator's webhook port must be known before the registry starts.
    let mut args = db_args();
    args.extend([
        "--leader-elect=false".to_string(),
        format!("--webhook-token-file={}", token_file.display()),
        "--push-coalesce-window=1s".to_string(),
    ]);
    let operator = OperatorProcess::start(Path::new(BIN), &cp, &args).await?;
    let registry = Registry::start_with(
        RegistryMode::Plain,
        RegistryOptions {
            notifications: vec![NotificationEndpoint::operator(operator.webhook_port, token)],
            ..Default::default()
        },
    )
    .await?;
    let yaml = rule_yaml("on-push", &registry, "  triggers: {onPush: true}\n")
        .replace("  annotations:\n    imagewarden.io/scan-now: first\n", "");
    apply::<ScanRule>(&client, &yaml).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let digest = push_image(&registry, "team-a/app", "v3", &alpine311()).await?;
    push_image(&registry, "team-a/app", "dev", &alpine311()).await?;
    let tasks: Api<ScanTask> = Api::default_namespaced(client.clone());
    let task = wait_for("a push task", Duration::from_secs(60), || {
        let tasks = tasks.clone();
        async move {
            Ok(tasks
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .next())
        }
    })
    .await?;
    assert_eq!(
        task.spec.trigger,
        imagewarden_operator::crd::TaskTrigger::Push
    );
    assert_eq!(
        task.spec.images,
        vec![format!("{}/team-a/app:v3@{digest}", registry.host)],
        "{}",
        operator.log()
    );
    let done = finished_task(
        &client,
        &task.metadata.name.clone().unwrap(),
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(done.status.unwrap().phase, ScanPhase::Completed);
    let results: Api<ImageScanResult> = Api::default_namespaced(client.clone());
    assert!(results
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .any(|r| r.spec.digest == digest));
    eprintln!("push to written result: {:?}", started.elapsed());
    Ok(())
}

#[tokio::test]
async fn job_executor_creates_locked_down_scanner_jobs() -> Result<()> {
    let (cp, client) = setup(false).await?;
    let registry = Registry::start(RegistryMode::Plain).await?;
    let digest = push_image(&registry, "team-a/app", "v2", &alpine311()).await?;
    let mut args = db_args();
    args.retain(|a| !a.starts_with("--executor"));
    args.extend([
        "--leader-elect=false".to_string(),
        "--executor=job".to_string(),
        "--scanner-image=registry.local/imagewarden:test".to_string(),
        "--job-malware-rules-configmap=yara-rules".to_string(),
        format!(
            "--db-serve-addr=127.0.0.1:{}",
            imagewarden_tests::process::free_port()?
        ),
        "--db-serve-url=http://imagewarden-database.imagewarden-system.svc:8081".to_string(),
        "--scanner-network-policy=true".to_string(),
        "--cluster-cidrs=10.96.0.0/12,10.244.0.0/16".to_string(),
    ]);
    let _operator = OperatorProcess::start(Path::new(BIN), &cp, &args).await?;
    apply::<ScanRule>(&client, &rule_yaml("jobs", &registry, "")).await?;
    let task_name = last_task_of(&client, "jobs").await?;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let job = wait_for("a scanner Job", Duration::from_secs(60), || {
        let jobs = jobs.clone();
        async move {
            Ok(jobs
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .next())
        }
    })
    .await?;
    let task = Api::<ScanTask>::default_namespaced(client.clone())
        .get(&task_name)
        .await?;
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("ScanTask", task_name.as_str())
    );
    assert_eq!(Some(owner.uid.clone()), task.metadata.uid);
    assert_eq!(owner.controller, Some(true));
    let spec = job.spec.unwrap();
    assert_eq!(spec.backoff_limit, Some(2));
    assert_eq!(spec.active_deadline_seconds, Some(1800));
    assert_eq!(spec.ttl_seconds_after_finished, Some(600));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    // Its own ServiceAccount, named after the Job.
    assert_eq!(
        pod.service_account_name.as_deref(),
        job.metadata.name.as_deref()
    );
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("registry.local/imagewarden:test"));
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..])
    );
    let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(limits["memory"].0, "512Mi");
    assert_eq!(limits["cpu"].0, "1");
    let args = c.args.clone().unwrap();
    assert_eq!(args[0], "scan-image");
    for want in [
        format!("--registry={}", registry.host),
        "--repository=team-a/app".to_string(),
        format!("--digest={digest}"),
        "--tag=v2".to_string(),
        "--insecure".to_string(),
        "--owner-kind=ScanTask".to_string(),
        "--malware-rules=/etc/imagewarden/malware-rules".to_string(),
        // The operator's egress settings reach the scanner too.
        "--egress-allow=127.0.0.0/8".to_string(),
        "--cluster-cidrs=10.96.0.0/12,10.244.0.0/16".to_string(),
        // So do the scan budgets.
        "--max-file-bytes=134217728".to_string(),
        "--max-retained-bytes=67108864".to_string(),
        "--max-sbom-bytes=67108864".to_string(),
        "--max-sbom-components=100000".to_string(),
        "--max-zip-entries=200000".to_string(),
        "--max-warnings=200".to_string(),
    ] {
        assert!(args.contains(&want), "missing {want} in {args:?}");
    }
    // The namespace's YARA rules ConfigMap, when it has one.
    let rules = pod
        .volumes
        .iter()
        .flatten()
        .find_map(|v| v.config_map.clone())
        .expect("a ConfigMap volume");
    assert_eq!(
        (rules.name.as_str(), rules.optional),
        ("yara-rules", Some(true))
    );
    // Bounded: one Job per digest, not more.
    assert_eq!(jobs.list(&ListParams::default()).await?.items.len(), 1);
    // The Job's ServiceAccount is bound to a Role of the same name that writes only the
    // image's result.
    let job_name = job.metadata.name.clone().unwrap();
    let sa = Api::<k8s_openapi::api::core::v1::ServiceAccount>::default_namespaced(client.clone())
        .get_opt(&job_name)
        .await?;
    assert!(sa.is_some(), "scanner ServiceAccount created");
    let rb = Api::<k8s_openapi::api::rbac::v1::RoleBinding>::default_namespaced(client.clone())
        .get(&job_name)
        .await?;
    assert_eq!(
        (rb.role_ref.kind.as_str(), rb.role_ref.name.as_str()),
        ("Role", job_name.as_str())
    );
    let subjects = rb.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        (
            subjects[0].kind.as_str(),
            subjects[0].name.as_str(),
            subjects[0].namespace.as_deref()
        ),
        ("ServiceAccount", job_name.as_str(), Some("default"))
    );
    let role = Api::<k8s_openapi::api::rbac::v1::Role>::default_namespaced(client.clone())
        .get(&job_name)
        .await?;
    let result = imagewarden_operator::result::result_name(&registry.host, "team-a/app", &digest);
    for rule in role.rules.unwrap() {
        assert_eq!(rule.resource_names, Some(vec![result.clone()]));
    }
    // The scanner Pods' NetworkPolicy, accepted by the API server: nothing in; out to DNS
    // and to every address but the denied ranges (the allowed loopback range aside).
    let policy =
        Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::default_namespaced(client.clone())
            .get("imagewarden-scanner")
            .await?;
    let spec = policy.spec.unwrap();
    assert_eq!(
        spec.pod_selector.and_then(|s| s.match_labels).unwrap()["app.kubernetes.io/name"],
        "imagewarden-scanner"
    );
    // Ingress among the policy types, with no rule: nothing may connect.
    assert!(spec.policy_types.unwrap().contains(&"Ingress".to_string()));
    assert!(spec.ingress.unwrap_or_default().is_empty());
    let egress = spec.egress.unwrap();
    let blocks: Vec<_> = egress
        .iter()
        .flat_map(|r| r.to.iter().flatten())
        .filter_map(|p| p.ip_block.clone())
        .collect();
    let v4 = blocks.iter().find(|b| b.cidr == "0.0.0.0/0").unwrap();
    let except = v4.except.clone().unwrap();
    for denied in [
        "10.96.0.0/12",
        "10.244.0.0/16",
        "169.254.0.0/16",
        "127.0.0.0/8",
    ] {
        assert!(except.iter().any(|e| e == denied), "{denied} in {except:?}");
    }
    assert!(blocks
        .iter()
        .any(|b| b.cidr == "127.0.0.0/8" && b.except.is_none()));
    Ok(())
}

#[tokio::test]
async fn only_the_leader_of_two_replicas_acts() -> Result<()> {
    let (cp, client) = setup(false).await?;
    let registry = Registry::start(RegistryMode::Plain).await?;
    push_image(&registry, "team-a/app", "v2", &alpine311()).await?;
    let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let _ = ns
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                serde_json::json!({"metadata": {"name": "imagewarden-system"}}),
            )?,
        )
        .await;
    let mut a_args = db_args();
    a_args.push("--identity=replica-a".into());
    let mut b_args = db_args();
    b_args.push("--identity=replica-b".into());
    let a = OperatorProcess::start(Path::new(BIN), &cp, &a_args).await?;
    let b = OperatorProcess::start(Path::new(BIN), &cp, &b_args).await?;
    apply::<ScanRule>(&client, &rule_yaml("team-a", &registry, "")).await?;
    let task = last_task_of(&client, "team-a").await?;
    finished_task(&client, &task, Duration::from_secs(90)).await?;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "imagewarden-system");
    let holder = leases
        .get("imagewarden-operator")
        .await?
        .spec
        .unwrap()
        .holder_identity
        .unwrap();
    let (leader, follower) = if holder == "replica-a" {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(leader.metric("imagewarden_leader").await?, 1.0);
    assert_eq!(follower.metric("imagewarden_leader").await?, 0.0);
    assert!(
        leader
            .metric("imagewarden_reconciles_total{controller=\"scantask\"}")
            .await?
            > 0.0
    );
    assert_eq!(
        follower
            .metric("imagewarden_reconciles_total{controller=\"scantask\"}")
            .await?,
        0.0
    );
    assert_eq!(
        follower
            .metric("imagewarden_reconciles_total{controller=\"scanrule\"}")
            .await?,
        0.0
    );
    Ok(())
}

#[tokio::test]
async fn a_schedule_fires_a_task() -> Result<()> {
    let (cp, client) = setup(false).await?;
    let registry = Registry::start(RegistryMode::Plain).await?;
    push_image(&registry, "team-a/app", "v2", &alpine311()).await?;
    let mut args = db_args();
    args.push("--leader-elect=false".into());
    let _operator = OperatorProcess::start(Path::new(BIN), &cp, &args).await?;
    let yaml = rule_yaml(
        "nightly",
        &registry,
        "  triggers: {schedule: '* * * * *'}\n",
    )
    .replace("  annotations:\n    imagewarden.io/scan-now: first\n", "");
    apply::<ScanRule>(&client, &yaml).await?;
    let rules: Api<ScanRule> = Api::default_namespaced(client.clone());
    let status = wait_for("a scheduled task", Duration::from_secs(75), || {
        let rules = rules.clone();
        async move {
            Ok(rules
                .get("nightly")
                .await?
                .status
                .filter(|s| s.last_task.is_some()))
        }
    })
    .await?;
    let task = status.last_task.unwrap();
    assert!(task.starts_with("nightly-sched-"), "{task}");
    assert!(status.last_schedule_time.is_some());
    let t = Api::<ScanTask>::default_namespaced(client.clone())
        .get(&task)
        .await?;
    assert_eq!(
        t.spec.trigger,
        imagewarden_operator::crd::TaskTrigger::Schedule
    );
    Ok(())
}

/// An HTTP receiver on 127.0.0.1 that records every JSON body POSTed to it.
async fn json_receiver() -> Result<(u16, tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>)> {
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((port, rx))
}

async fn next_body(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    what: &str,
) -> Result<serde_json::Value> {
    match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
        Ok(Some(v)) => Ok(v),
        _ => bail!("no notification: {what}"),
    }
}

#[tokio::test]
async fn database_update_rematches_results_and_notifies_only_new_findings() -> Result<()> {
    let (cp, client) = setup(false).await?;
    let registry = Registry::start(RegistryMode::Plain).await?;
    let digest = push_image(&registry, "team-a/alpine", "v1", &vulnerable_alpine()).await?;
    // The database starts without the musl advisory and gains it later.
    let db = tempfile::tempdir()?;
    let musl = "Alpine/ALPINE-CVE-2019-14697.json";
    for eco in std::fs::read_dir(testdata("osv"))? {
        let eco = eco?.path();
        if !eco.is_dir() {
            continue;
        }
        let dest = db.path().join(eco.file_name().unwrap());
        std::fs::create_dir_all(&dest)?;
        for f in std::fs::read_dir(&eco)? {
            let f = f?.path();
            if !f.ends_with(musl) {
                std::fs::copy(&f, dest.join(f.file_name().unwrap()))?;
            }
        }
    }
    let (port, mut bodies) = json_receiver().await?;
    let args = vec![
        format!("--db={}", db.path().display()),
        "--db-refresh-interval=2s".to_string(),
        "--leader-elect=false".to_string(),
        ALLOW_LOOPBACK.to_string(),
        "--executor=inline".to_string(),
    ];
    let operator = OperatorProcess::start(Path::new(BIN), &cp, &args).await?;
    let notify = format!(
        "  notifications:\n  - name: hook\n    type: HTTP\n    url: http://127.0.0.1:{port}/hook\n"
    );
    apply::<ScanRule>(&client, &rule_yaml("team-a", &registry, &notify)).await?;
    let first = last_task_of(&client, "team-a").await?;
    finished_task(&client, &first, Duration::from_secs(90)).await?;
    let body = next_body(&mut bodies, "ScanCompleted").await?;
    assert_eq!(body["event"], "ScanCompleted", "{body}");
    assert!(body.to_string().contains(&first));
    let results: Api<ImageScanResult> = Api::default_namespaced(client.clone());
    let before = results.list(&ListParams::default()).await?.items.remove(0);
    assert_eq!(before.spec.digest, digest);
    assert!(!before
        .status
        .as_ref()
        .unwrap()
        .findings
        .iter()
        .any(|f| f.id == "ALPINE-CVE-2019-14697"));
    let tasks: Api<ScanTask> = Api::default_namespaced(client.clone());
    let n = wait_for(
        "the delivery to be recorded",
        Duration::from_secs(30),
        || {
            let (tasks, first) = (tasks.clone(), first.clone());
            async move {
                let n = tasks.get(&first).await?.status.unwrap().notifications;
                Ok(n.iter().all(|d| d.state != "Pending").then_some(n))
            }
        },
    )
    .await?;
    assert_eq!((n.len(), n[0].state.as_str()), (1, "Delivered"), "{n:?}");

    std::fs::copy(testdata("osv").join(musl), db.path().join(musl))?;
    let after = wait_for(
        "the result to be re-matched",
        Duration::from_secs(60),
        || {
            let results = results.clone();
            let old = before.status.clone().unwrap().database_version;
            async move {
                let r = results.list(&ListParams::default()).await?.items.remove(0);
                Ok((r.status.as_ref().unwrap().database_version != old).then_some(r))
            }
        },
    )
    .await?;
    assert!(after
        .status
        .as_ref()
        .unwrap()
        .findings
        .iter()
        .any(|f| f.id == "ALPINE-CVE-2019-14697"));
    // What the findings were before the update is kept for the console's trend.
    let (old, new) = (before.status.unwrap(), after.status.clone().unwrap());
    let previous = new.previous.expect("the counts before the update");
    assert_eq!(
        Some(previous.database_version),
        old.database_version,
        "the database the findings were matched with before"
    );
    assert_eq!(previous.totals, old.summary.totals());
    let sum = |c: imagewarden_operator::crd::SeverityCounts| {
        c.critical + c.high + c.medium + c.low + c.unknown
    };
    assert_eq!(
        sum(new.summary.totals()),
        sum(old.summary.totals()) + 1,
        "one finding more: the musl advisory"
    );
    let body = next_body(&mut bodies, "NewFindings").await?;
    assert_eq!(body["event"], "NewFindings", "{body}\n{}", operator.log());
    let text = body.to_string();
    assert!(text.contains("ALPINE-CVE-2019-14697"), "{text}");
    // No rescan happened: the image was re-matched from its stored inventory.
    assert_eq!(
        operator
            .metric("imagewarden_image_scans_total{outcome=\"scanned\"}")
            .await?,
        1.0
    );
    Ok(())
}

/// The series of family `name` in a `/metrics` text: labels and value.
fn series_of(text: &str, name: &str) -> Vec<(std::collections::BTreeMap<String, String>, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = rest.rsplit_once("} ")?;
            let labels = labels
                .split("\",")
                .filter_map(|kv| {
                    let (k, v) = kv.split_once("=\"")?;
                    Some((k.to_string(), v.trim_end_matches('"').to_string()))
                })
                .collect();
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn scraped_image_gauges_follow_the_results_and_deliveries_are_counted() -> Result<()> {
    let (cp, client) = setup(false).await?;
    let registry = Registry::start(RegistryMode::Plain).await?;
    // One digest under two tags.
    let digest = push_image(&registry, "team-a/alpine", "v1", &vulnerable_alpine()).await?;
    push_image(&registry, "team-a/alpine", "v2", &vulnerable_alpine()).await?;
    let (port, mut bodies) = json_receiver().await?;
    let started = chrono::Utc::now().timestamp() as f64;
    // NVD's ratings give the image's musl advisory its Critical severity.
    let mut args = db_args();
    args.push(format!("--db=nvd:{}", testdata("nvd").display()));
    args.push("--leader-elect=false".to_string());
    let operator = OperatorProcess::start(Path::new(BIN), &cp, &args).await?;
    // A target that delivers, and one whose URL Secret does not exist.
    let notify = format!(
        "  notifications:
  - name: hook
    type: HTTP
    url: http://127.0.0.1:{port}/hook
  - name: broken
    type: HTTP
    urlSecretRef: {{name: missing, key: url}}
"
    );
    apply::<ScanRule>(&client, &rule_yaml("team-a", &registry, &notify)).await?;
    let task = last_task_of(&client, "team-a").await?;
    finished_task(&client, &task, Duration::from_secs(90)).await?;
    next_body(&mut bodies, "ScanCompleted").await?;
    let results: Api<ImageScanResult> = Api::default_namespaced(client.clone());
    let result = results
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .next()
        .context("no result")?;
    assert_eq!(result.spec.digest, digest);
    let status = result.status.clone().context("no status")?;
    let mut tags = result.spec.tags.clone();
    tags.sort();
    assert_eq!(tags, ["v1", "v2"]);

    // Findings: one series per tag, class and severity with findings, valued as the summary.
    let text = operator.metrics().await?;
    let mut want = std::collections::BTreeMap::new();
    let s = &status.summary;
    for tag in &tags {
        for (class, c) in [
            ("SystemVulnerability", &s.system_vulnerabilities),
            ("ApplicationVulnerability", &s.application_vulnerabilities),
            ("BaselineRisk", &s.baseline_risks),
            ("MaliciousSample", &s.malicious_samples),
        ] {
            for (severity, n) in [
                ("Critical", c.critical),
                ("High", c.high),
                ("Medium", c.medium),
                ("Low", c.low),
                ("Unknown", c.unknown),
            ] {
                if n > 0 {
                    want.insert(
                        (tag.clone(), class.to_string(), severity.to_string()),
                        f64::from(n),
                    );
                }
            }
        }
    }
    assert!(!want.is_empty(), "the vulnerable image has findings: {s:?}");
    let mut got = std::collections::BTreeMap::new();
    for (labels, value) in series_of(&text, "imagewarden_image_findings") {
        assert_eq!(labels["namespace"], "default", "{labels:?}");
        assert_eq!(labels["registry"], registry.host, "{labels:?}");
        assert_eq!(labels["repository"], "team-a/alpine", "{labels:?}");
        assert_eq!(labels["digest"], digest, "{labels:?}");
        got.insert(
            (
                labels["tag"].clone(),
                labels["class"].clone(),
                labels["severity"].clone(),
            ),
            value,
        );
    }
    assert_eq!(got, want, "{text}");
    assert_eq!(
        operator.metric("imagewarden_image_series_dropped").await?,
        0.0
    );

    // Deliveries by outcome, and the database's age.
    let delivered = "imagewarden_notifications_total{type=\"HTTP\",event=\"ScanCompleted\",outcome=\"delivered\"}";
    let misconfigured = "imagewarden_notifications_total{type=\"HTTP\",event=\"ScanCompleted\",outcome=\"misconfigured\"}";
    wait_for(
        "the deliveries to be counted",
        Duration::from_secs(30),
        || {
            let operator = &operator;
            async move {
                Ok((operator.metric(delivered).await? == 1.0
                    && operator.metric(misconfigured).await? == 1.0)
                    .then_some(()))
            }
        },
    )
    .await?;
    let built = operator
        .metric("imagewarden_database_built_timestamp_seconds")
        .await?;
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        (started - 5.0..=now + 1.0).contains(&built),
        "the test database is compiled at start: {built} not in [{started}, {now}]"
    );

    // A deleted result takes its series with it.
    results
        .delete(
            &result.metadata.name.clone().unwrap(),
            &DeleteParams::default(),
        )
        .await?;
    wait_for("the series to go", Duration::from_secs(30), || {
        let operator = &operator;
        async move {
            let text = operator.metrics().await?;
            Ok(series_of(&text, "imagewarden_image_findings")
                .is_empty()
                .then_some(()))
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn failing_scans_are_retried_a_bounded_number_of_times_then_fail_with_the_reason(
) -> Result<()> {
    let (cp, client) = setup(false).await?;
    let registry = Registry::start(RegistryMode::Plain).await?;
    let mut args = db_args();
    args.extend([
        "--leader-elect=false".to_string(),
        "--max-scan-attempts=3".to_string(),
    ]);
    let operator = OperatorProcess::start(Path::new(BIN), &cp, &args).await?;
    // A digest the registry does not hold: every pull fails.
    let missing = format!("{}/team-a/app@sha256:{}", registry.host, "0".repeat(64));
    let task: ScanTask = serde_norway::from_str(&format!(
        "apiVersion: imagewarden.io/v1alpha1\nkind: ScanTask\nmetadata: {{name: retried}}\nspec:\n  images: ['{missing}']\n"
    ))?;
    Api::<ScanTask>::default_namespaced(client.clone())
        .create(&PostParams::default(), &task)
        .await?;
    let started = Instant::now();
    let done = finished_task(&client, "retried", Duration::from_secs(90)).await?;
    let st = done.status.unwrap();
    assert_eq!(st.phase, ScanPhase::Failed);
    assert_eq!(st.images[0].phase, ScanPhase::Failed);
    assert_eq!(st.images[0].attempts, 3, "{}", operator.log());
    let msg = st.images[0].message.clone().unwrap_or_default();
    assert!(msg.contains("team-a/app"), "{msg}");
    // Two waits between three attempts: 2 s and 4 s.
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    let cond = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Complete")
        .unwrap();
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "ImagesFailed")
    );
    Ok(())
}

/// Plays the kubelet for the Pod of scanner Job `job` (this control plane has no node): runs
/// the Pod's container command here, with the control plane's kubeconfig instead of the
/// in-cluster ServiceAccount and `extra` flags, and reports how it ended in the Pod's
/// status. The Job controller takes it from there. Returns the exit code and the output.
async fn run_scanner_pod(
    cp: &ControlPlane,
    client: &Client,
    job: &str,
    extra: &[&str],
) -> Result<(i32, String)> {
    let pod = imagewarden_tests::operator::pod_of_job(client, "default", job).await?;
    let container = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        container.command.as_deref(),
        Some(&["imagewarden-operator".to_string()][..])
    );
    let mut args = container.args.clone().unwrap_or_default();
    args.extend(extra.iter().map(|s| s.to_string()));
    imagewarden_tests::operator::run_pod_here(client, &pod, Path::new(BIN), &args, cp.kubeconfig())
        .await
}

/// A copy of the OSV test records in a directory the test may change.
fn osv_copy() -> Result<tempfile::TempDir> {
    let db = tempfile::tempdir()?;
    for eco in std::fs::read_dir(testdata("osv"))? {
        let eco = eco?.path();
        if !eco.is_dir() {
            continue;
        }
        let dest = db.path().join(eco.file_name().unwrap());
        std::fs::create_dir_all(&dest)?;
        for f in std::fs::read_dir(&eco)? {
            let f = f?.path();
            std::fs::copy(&f, dest.join(f.file_name().unwrap()))?;
        }
    }
    Ok(db)
}

fn version_of(dir: &Path) -> Result<String> {
    let db = imagewarden_scanner::vulndb::Db::load(&[dir.display().to_string()])?;
    Ok(db.info().digest.clone())
}

/// The operator's database version, from its metrics.
async fn operator_db_version(operator: &OperatorProcess) -> Result<Option<String>> {
    Ok(operator.metrics().await?.lines().find_map(|l| {
        l.strip_prefix("imagewarden_database_info{version=\"")
            .and_then(|rest| rest.split_once('"'))
            .map(|(v, _)| v.to_string())
    }))
}

fn job_executor_args(db: &Path, serve_port: u16, serve_url: &str) -> Vec<String> {
    vec![
        format!("--db={}", db.display()),
        "--db-refresh-interval=2s".to_string(),
        "--leader-elect=false".to_string(),
        "--executor=job".to_string(),
        "--scanner-image=registry.local/imagewarden:test".to_string(),
        format!("--db-serve-addr=127.0.0.1:{serve_port}"),
        format!("--db-serve-url={serve_url}"),
        ALLOW_LOOPBACK.to_string(),
    ]
}

#[tokio::test]
async fn a_scanner_job_scans_with_the_operators_database_and_a_refresh_in_between_is_rematched(
) -> Result<()> {
    let (cp, client) = setup(true).await?;
    let registry = Registry::start(RegistryMode::Plain).await?;
    let digest = push_image(&registry, "team-a/alpine", "v1", &vulnerable_alpine()).await?;
    let db = osv_copy()?;
    let full = version_of(db.path())?;
    let port = imagewarden_tests::process::free_port()?;
    let args = job_executor_args(db.path(), port, &format!("http://127.0.0.1:{port}"));
    let operator = OperatorProcess::start(Path::new(BIN), &cp, &args).await?;
    assert_eq!(operator_db_version(&operator).await?, Some(full.clone()));

    apply::<ScanRule>(&client, &rule_yaml("team-a", &registry, "")).await?;
    let task_name = last_task_of(&client, "team-a").await?;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let job = wait_for("a scanner Job", Duration::from_secs(60), || {
        let jobs = jobs.clone();
        async move {
            Ok(jobs
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .next())
        }
    })
    .await?;
    let job_name = job.metadata.name.clone().unwrap();
    // The Job is given the operator's database, by version, and nothing of its own.
    assert_eq!(
        job.metadata.annotations.as_ref().unwrap()["imagewarden.io/database-version"],
        full
    );
    let job_args = job
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap();
    assert!(
        job_args.contains(&format!("--db-url=http://127.0.0.1:{port}/db/{full}")),
        "{job_args:?}"
    );
    assert!(
        job_args.contains(&format!("--db-version={full}")),
        "{job_args:?}"
    );
    assert!(
        !job_args.iter().any(|a| a.starts_with("--db=")),
        "{job_args:?}"
    );
    let policy = job
        .spec
        .as_ref()
        .unwrap()
        .pod_failure_policy
        .clone()
        .unwrap();
    assert_eq!(
        policy.rules[0].on_exit_codes.as_ref().unwrap().values,
        [
            imagewarden_operator::dbserve::EXIT_DB_UNAVAILABLE,
            imagewarden_operator::dbserve::EXIT_DB_REJECTED
        ]
    );

    // Before the Pod runs, the database loses the musl advisory and the operator refreshes.
    let musl = "Alpine/ALPINE-CVE-2019-14697.json";
    std::fs::remove_file(db.path().join(musl))?;
    let without = version_of(db.path())?;
    assert_ne!(without, full);
    wait_for("the operator to refresh", Duration::from_secs(30), || {
        let operator = &operator;
        let without = without.clone();
        async move { Ok((operator_db_version(operator).await? == Some(without)).then_some(())) }
    })
    .await?;

    // The Pod still gets the database its Job was given (served for a while after the
    // refresh), verifies it and writes a result made with it.
    let (code, output) = run_scanner_pod(&cp, &client, &job_name, &[]).await?;
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains(&format!("version={full}")) && output.contains("result written"),
        "{output}"
    );

    let task = finished_task(&client, &task_name, Duration::from_secs(60)).await?;
    let st = task.status.unwrap();
    assert_eq!(
        st.phase,
        ScanPhase::Completed,
        "{:?}\n{}",
        st.images,
        operator.log()
    );
    assert_eq!(
        st.images[0].message.as_deref(),
        Some(
            format!("scanned with database {full}, re-matched with the current database {without}")
                .as_str()
        ),
        "{}",
        operator.log()
    );
    // The stored inventory was re-matched with the operator's database: no rescan, and
    // the result is the one the current database gives.
    assert_eq!(jobs.list(&ListParams::default()).await?.items.len(), 1);
    let results: Api<ImageScanResult> = Api::default_namespaced(client.clone());
    let result = results.list(&ListParams::default()).await?.items.remove(0);
    assert_eq!(result.spec.digest, digest);
    let rs = result.status.unwrap();
    assert_eq!(rs.database_version.as_deref(), Some(without.as_str()));
    assert_eq!(operator_db_version(&operator).await?, Some(without.clone()));
    let current = imagewarden_scanner::vulndb::Db::load(&[db.path().display().to_string()])?;
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
            matches!(
                f.class,
                FindingClass::SystemVulnerability | FindingClass::ApplicationVulnerability
            )
        })
        .map(|f| f.id.clone())
        .collect();
    got.sort();
    got.dedup();
    assert_eq!(got, want);
    assert!(!got.iter().any(|id| id == "ALPINE-CVE-2019-14697"));

    // A version the operator does not serve (never had, or dropped after the grace) is
    // a clear error with its own exit code, and nothing of the response is quoted.
    let unknown = format!("sha256:{}", "0".repeat(64));
    let out = tokio::process::Command::new(BIN)
        .args([
            "scan-image".to_string(),
            "--namespace=default".into(),
            format!("--registry={}", registry.host),
            "--repository=team-a/alpine".into(),
            format!("--digest={digest}"),
            "--insecure".into(),
            format!("--db-url=http://127.0.0.1:{port}/db/{unknown}"),
            format!("--db-version={unknown}"),
            "--db-max-bytes=1000000".into(),
            "--db-fetch-patience=1s".into(),
        ])
        .env("KUBECONFIG", cp.kubeconfig())
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(imagewarden_operator::dbserve::EXIT_DB_UNAVAILABLE),
        "{stderr}"
    );
    assert!(
        stderr.contains("does not serve this version (HTTP 404)"),
        "{stderr}"
    );
    assert!(!stderr.contains("is not served here"), "{stderr}");
    // A download bigger than allowed is refused before it is read.
    let out = tokio::process::Command::new(BIN)
        .args([
            "scan-image".to_string(),
            "--namespace=default".into(),
            format!("--registry={}", registry.host),
            "--repository=team-a/alpine".into(),
            format!("--digest={digest}"),
            format!("--db-url=http://127.0.0.1:{port}/db/{without}"),
            format!("--db-version={without}"),
            "--db-max-bytes=1000".into(),
        ])
        .env("KUBECONFIG", cp.kubeconfig())
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(imagewarden_operator::dbserve::EXIT_DB_REJECTED),
        "{stderr}"
    );
    assert!(
        stderr.contains("more than the 1000 bytes expected"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn a_scanner_job_that_cannot_get_the_database_fails_with_the_reason() -> Result<()> {
    let (cp, client) = setup(true).await?;
    let registry = Registry::start(RegistryMode::Plain).await?;
    push_image(&registry, "team-a/app", "v2", &alpine311()).await?;
    let db = osv_copy()?;
    let version = version_of(db.path())?;
    let port = imagewarden_tests::process::free_port()?;
    // Jobs are sent to an address where nothing listens.
    let nowhere = imagewarden_tests::process::free_port()?;
    let mut args = job_executor_args(db.path(), port, &format!("http://127.0.0.1:{nowhere}"));
    args.push("--max-scan-attempts=2".into());
    let operator = OperatorProcess::start(Path::new(BIN), &cp, &args).await?;
    apply::<ScanRule>(&client, &rule_yaml("team-a", &registry, "")).await?;
    let task_name = last_task_of(&client, "team-a").await?;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let mut seen = Vec::new();
    for attempt in 1..=2 {
        let job = wait_for(
            &format!("scanner Job {attempt}"),
            Duration::from_secs(60),
            || {
                let (jobs, seen) = (jobs.clone(), seen.clone());
                async move {
                    Ok(jobs
                        .list(&ListParams::default())
                        .await?
                        .items
                        .into_iter()
                        .find(|j| !seen.contains(j.metadata.name.as_ref().unwrap())))
                }
            },
        )
        .await?;
        let name = job.metadata.name.clone().unwrap();
        let (code, output) =
            run_scanner_pod(&cp, &client, &name, &["--db-fetch-patience=1s"]).await?;
        assert_eq!(
            code,
            imagewarden_operator::dbserve::EXIT_DB_UNAVAILABLE,
            "{output}"
        );
        assert!(
            output.contains(&format!(
                "could not download the vulnerability database {version} from http://127.0.0.1:{nowhere}/db/{version}"
            )),
            "{output}"
        );
        // The Pod failure policy fails the Job at once, without another Pod.
        let failed = wait_for("the Job to fail", Duration::from_secs(60), || {
            let (jobs, name) = (jobs.clone(), name.clone());
            async move {
                Ok(jobs.get(&name).await?.status.filter(|s| {
                    s.conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Failed" && c.status == "True")
                }))
            }
        })
        .await?;
        assert_eq!(failed.failed, Some(1), "{failed:?}");
        seen.push(name);
    }
    let task = finished_task(&client, &task_name, Duration::from_secs(60)).await?;
    let st = task.status.unwrap();
    assert_eq!(st.phase, ScanPhase::Failed);
    let image = &st.images[0];
    assert_eq!(
        (image.phase, image.attempts),
        (ScanPhase::Failed, 2),
        "{}",
        operator.log()
    );
    let msg = image.message.clone().unwrap_or_default();
    assert_eq!(
        msg,
        format!(
            "scanner Job {} could not download the vulnerability database {version} from the operator (exit code 3; the scanner Pod's log says why)",
            seen[1]
        )
    );
    assert!(!msg.contains("finished without writing result"));
    assert_eq!(jobs.list(&ListParams::default()).await?.items.len(), 2);
    Ok(())
}

/// Text only a hostile server knows; it must never reach status or Events.
const REMOTE_TEXT: &str = "REMOTE-BODY-7d2e internal details";

/// What reached a listener: path and `Authorization` header of each request.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;

/// An HTTP listener on 127.0.0.1 answering every request with `respond`, recording what it
/// receives. Returns its port.
async fn listener(
    respond: impl Fn() -> axum::response::Response + Clone + Send + Sync + 'static,
) -> Result<(u16, Seen)> {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = socket.local_addr()?.port();
    let seen: Seen = Default::default();
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let respond = respond.clone();
        let record = record.clone();
        async move {
            let auth = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            record
                .lock()
                .unwrap()
                .push((request.uri().path().to_string(), auth));
            respond()
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(socket, app).await;
    });
    Ok((port, seen))
}

#[tokio::test]
async fn hostile_rules_get_a_condition_and_no_credential_leaves_the_registry() -> Result<()> {
    use axum::response::IntoResponse;

    let (cp, client) = setup(false).await?;
    let registry = Registry::start(RegistryMode::Plain).await?;
    push_image(&registry, "team-a/app", "v2", &alpine311()).await?;
    // The loopback interface is allowed (every fixture is there); link-local is not.
    let mut args = db_args();
    args.push("--leader-elect=false".into());
    let operator = OperatorProcess::start(Path::new(BIN), &cp, &args).await?;
    let rules: Api<ScanRule> = Api::default_namespaced(client.clone());

    // A rule aimed at the cloud metadata address: a condition on the rule, no task.
    let metadata = "apiVersion: imagewarden.io/v1alpha1
kind: ScanRule
metadata:
  name: metadata
  annotations:
    imagewarden.io/scan-now: first
spec:
  registry:
    url: 169.254.169.254
    insecure: true
  scope:
    type: Namespace
    name: team-a
";
    apply::<ScanRule>(&client, metadata).await?;
    let cond = wait_for("Ready=False", Duration::from_secs(30), || {
        let rules = rules.clone();
        async move {
            Ok(rules.get("metadata").await?.status.and_then(|s| {
                s.conditions
                    .into_iter()
                    .find(|c| c.type_ == "Ready" && c.status == "False")
            }))
        }
    })
    .await?;
    assert_eq!(cond.reason, "EgressDenied");
    assert!(
        cond.message.contains("169.254.169.254") && cond.message.contains("cloud metadata"),
        "{}",
        cond.message
    );
    assert!(rules
        .get("metadata")
        .await?
        .status
        .unwrap()
        .last_task
        .is_none());

    // A task naming an image there: that image fails, in our words.
    let task: ScanTask = serde_norway::from_str(
        "apiVersion: imagewarden.io/v1alpha1\nkind: ScanTask\nmetadata: {name: metadata-image}\nspec:\n  images: ['169.254.169.254/team-a/app:v1']\n",
    )?;
    Api::<ScanTask>::default_namespaced(client.clone())
        .create(&PostParams::default(), &task)
        .await?;
    let st = finished_task(&client, "metadata-image", Duration::from_secs(60))
        .await?
        .status
        .unwrap();
    assert_eq!(st.images[0].phase, ScanPhase::Failed);
    let msg = st.images[0].message.clone().unwrap_or_default();
    assert!(msg.contains("not contacted"), "{msg}");

    // A registry whose 401 sends the token request to another host (localhost instead of
    // 127.0.0.1), a real listener that records what reaches it.
    let (foreign_port, foreign) =
        listener(|| ([("content-type", "application/json")], r#"{"token":"t"}"#).into_response())
            .await?;
    let realm = format!("http://localhost:{foreign_port}/token");
    let (hostile_port, hostile) = listener(move || {
        (
            axum::http::StatusCode::UNAUTHORIZED,
            [(
                "www-authenticate",
                format!(r#"Bearer realm="{realm}",service="r""#),
            )],
            REMOTE_TEXT,
        )
            .into_response()
    })
    .await?;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "hostile-creds"},
        "stringData": {"username": "robot", "password": "pa55-never-sent"},
    }))?;
    Api::<Secret>::default_namespaced(client.clone())
        .create(&PostParams::default(), &secret)
        .await?;
    let realm_rule = format!(
        "apiVersion: imagewarden.io/v1alpha1
kind: ScanRule
metadata:
  name: realm
  annotations:
    imagewarden.io/scan-now: first
spec:
  registry:
    url: 127.0.0.1:{hostile_port}
    insecure: true
    credentialsSecretRef: {{name: hostile-creds}}
  scope:
    type: Namespace
    name: team-a
"
    );
    apply::<ScanRule>(&client, &realm_rule).await?;
    let t = last_task_of(&client, "realm").await?;
    let done = finished_task(&client, &t, Duration::from_secs(60)).await?;
    let st = done.status.clone().unwrap();
    assert_eq!(st.phase, ScanPhase::Failed);
    assert!(
        !hostile.lock().unwrap().is_empty(),
        "the registry was asked"
    );
    assert!(
        foreign.lock().unwrap().is_empty(),
        "a request reached the foreign host: {:?}",
        foreign.lock().unwrap()
    );
    let status_text = serde_json::to_string(&st)?;
    assert!(status_text.contains("another host"), "{status_text}");
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::default_namespaced(client.clone());
    let notes: Vec<String> = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|e| e.note)
        .collect();
    let rule_text = serde_json::to_string(&rules.get("realm").await?.status)?;
    for visible in [&status_text, &rule_text, &format!("{notes:?}")] {
        assert!(!visible.contains("REMOTE-BODY"), "{visible}");
        assert!(!visible.contains("pa55-never-sent"), "{visible}");
    }

    // Still working: a valid rule next to them is scanned.
    apply::<ScanRule>(&client, &rule_yaml("fine", &registry, "")).await?;
    let t = last_task_of(&client, "fine").await?;
    assert_eq!(
        finished_task(&client, &t, Duration::from_secs(90))
            .await?
            .status
            .unwrap()
            .phase,
        ScanPhase::Completed,
        "{}",
        operator.log()
    );
    Ok(())
}

/// A front for `upstream` that passes every request through (one per connection) except
/// blob downloads, which it holds open without answering: a scan through it stays in
/// progress until the operator goes away, as a scan that takes the process down does.
async fn stalling_registry_front(upstream: String) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let host = format!("127.0.0.1:{}", listener.local_addr()?.port());
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                let end = loop {
                    let n = client.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i;
                    }
                };
                let text = String::from_utf8_lossy(&head[..end]).into_owned();
                if text.lines().next().is_some_and(|l| l.contains("/blobs/")) {
                    // Never answer; return when the client goes away.
                    while client.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                    return;
                }
                let mut rewritten: String = text
                    .lines()
                    .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                    .map(|l| format!("{l}\r\n"))
                    .collect();
                rewritten.push_str("Connection: close\r\n\r\n");
                let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let mut out = rewritten.into_bytes();
                out.extend_from_slice(&head[end + 4..]);
                if up.write_all(&out).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                }
            });
        }
    });
    Ok(host)
}

#[tokio::test]
async fn a_scan_that_ends_the_operator_fails_its_image_after_the_allowed_attempts() -> Result<()> {
    let (cp, client) = setup(false).await?;
    let registry = Registry::start(RegistryMode::Plain).await?;
    push_image(&registry, "team-a/app", "v1", &alpine311()).await?;
    let front = stalling_registry_front(registry.host.clone()).await?;
    let mut args = db_args();
    args.extend([
        "--leader-elect=false".to_string(),
        "--max-scan-attempts=2".to_string(),
    ]);
    let tasks: Api<ScanTask> = Api::default_namespaced(client.clone());
    let mut operator = OperatorProcess::start(Path::new(BIN), &cp, &args).await?;
    // A rule whose registry is the front: discovery passes, blob downloads hang.
    let rule = rule_yaml("crashing", &registry, "").replace(&registry.host, &front);
    apply::<ScanRule>(&client, &rule).await?;
    let task_name = last_task_of(&client, "crashing").await?;
    for attempt in 1..=2u32 {
        // The attempt is recorded while the scan is still running...
        let recorded = wait_for(
            &format!("attempt {attempt} recorded"),
            Duration::from_secs(60),
            || {
                let tasks = tasks.clone();
                let task_name = task_name.clone();
                async move {
                    let t = tasks.get(&task_name).await?;
                    Ok(t.status
                        .and_then(|s| s.images.first().cloned())
                        .filter(|i| i.phase == ScanPhase::Running && i.attempts == attempt)
                        .map(|_| ()))
                }
            },
        )
        .await;
        if let Err(e) = recorded {
            let t = tasks.get(&task_name).await?;
            bail!("{e}: {:?}\n{}", t.status, operator.log());
        }
        // ...and then the process ends in the middle of it.
        operator.kill();
        operator = OperatorProcess::start(Path::new(BIN), &cp, &args).await?;
    }
    let done = finished_task(&client, &task_name, Duration::from_secs(60)).await?;
    let image = done.status.unwrap().images.remove(0);
    assert_eq!(image.phase, ScanPhase::Failed, "{}", operator.log());
    assert_eq!(image.attempts, 2);
    let message = image.message.unwrap_or_default();
    assert!(
        message.contains("did not finish in 2 attempt(s)"),
        "{message}"
    );
    // The operator that took over is still serving.
    operator
        .metric("imagewarden_image_scans_total{outcome=\"failed\"}")
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_rule_runs_only_its_scanners_and_a_result_without_them_is_not_reused() -> Result<()> {
    let (cp, client) = setup(false).await?;
    let registry = Registry::start(RegistryMode::Plain).await?;
    let digest = push_image(&registry, "team-a/alpine", "v1", &vulnerable_alpine()).await?;
    let mut args = db_args();
    args.push("--leader-elect=false".into());
    let operator = OperatorProcess::start(Path::new(BIN), &cp, &args).await?;
    let results: Api<ImageScanResult> = Api::default_namespaced(client.clone());
    let scanned = || operator.metric("imagewarden_image_scans_total{outcome=\"scanned\"}");

    // Configuration risks only: no vulnerabilities are matched, and the result says so.
    apply::<ScanRule>(
        &client,
        &rule_yaml("baseline-only", &registry, "  scanners: [Baseline]"),
    )
    .await?;
    let task = last_task_of(&client, "baseline-only").await?;
    let task = finished_task(&client, &task, Duration::from_secs(120)).await?;
    let entry = &task.status.unwrap().images[0];
    assert_eq!(entry.phase, ScanPhase::Completed, "{:?}", entry.message);
    let name = entry.result_name.clone().unwrap();
    let st = results.get(&name).await?.status.unwrap();
    assert_eq!(st.scanners, [ScannerKind::Baseline]);
    let classes: Vec<FindingClass> = st.findings.iter().map(|f| f.class).collect();
    assert!(
        classes.contains(&FindingClass::BaselineRisk),
        "{:?}",
        st.findings
    );
    assert!(
        classes.iter().all(|c| *c == FindingClass::BaselineRisk),
        "only baseline risks: {:?}",
        st.findings
    );
    assert!(st.warnings.is_empty(), "{:?}", st.warnings);
    assert_eq!(scanned().await?, 1.0);

    // A rule that wants vulnerabilities does not reuse that result: the digest is scanned
    // again, with that rule's scanners.
    apply::<ScanRule>(
        &client,
        &rule_yaml("vulns", &registry, "  scanners: [Vulnerability, Baseline]"),
    )
    .await?;
    let task = last_task_of(&client, "vulns").await?;
    let task = finished_task(&client, &task, Duration::from_secs(120)).await?;
    let entry = &task.status.unwrap().images[0];
    assert_eq!(entry.phase, ScanPhase::Completed, "{:?}", entry.message);
    assert_eq!(entry.result_name.as_deref(), Some(name.as_str()));
    assert_eq!(scanned().await?, 2.0, "operator log:\n{}", operator.log());
    let st = results.get(&name).await?.status.unwrap();
    assert_eq!(
        st.scanners,
        [ScannerKind::Vulnerability, ScannerKind::Baseline]
    );
    let musl = st
        .findings
        .iter()
        .find(|f| f.id == "ALPINE-CVE-2019-14697")
        .expect("musl finding");
    assert_eq!(musl.class, FindingClass::SystemVulnerability);
    assert_eq!(results.get(&name).await?.spec.digest, digest);

    // The baseline-only rule is answered by the result that covers its scanner.
    let first = last_task_of(&client, "baseline-only").await?;
    let again = scan_now_again(&client, "baseline-only", &first, "again").await?;
    let again = finished_task(&client, &again, Duration::from_secs(60)).await?;
    assert_eq!(again.status.unwrap().succeeded, 1);
    assert_eq!(scanned().await?, 2.0);

    // A rule that names no scanner at all is refused by the API server.
    let err = apply::<ScanRule>(&client, &rule_yaml("none", &registry, "  scanners: []"))
        .await
        .expect_err("an empty scanner list is rejected");
    assert!(err.to_string().contains("scanners"), "{err}");
    Ok(())
}
