//! What happens to ImageScanResults besides scanning, with the operator as a real process
//! against a real kube-apiserver and a real registry: tags follow the registry, deleted
//! images are marked and collected, a database update never skips a result silently, and
//! a rule's `Ready` says what the registry answered.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use imagewarden_operator::crd::{ImageScanResult, ScanPhase, ScanRule, ScanTask, TaskTrigger};
use imagewarden_tests::image::push_image;
use imagewarden_tests::operator::OperatorProcess;
use imagewarden_tests::process::poll as wait_for;
use imagewarden_tests::registry::{NotificationEndpoint, RegistryOptions};
use imagewarden_tests::samples::{alpine311, testdata, vulnerable_alpine};
use imagewarden_tests::{ControlPlane, Registry, RegistryMode};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;

const BIN: &str = env!("CARGO_BIN_EXE_imagewarden-operator");

fn args(db: &Path) -> Vec<String> {
    vec![
        format!("--db={}", db.display()),
        "--egress-allow=127.0.0.0/8".to_string(),
        "--executor=inline".to_string(),
        "--leader-elect=false".to_string(),
    ]
}

async fn setup() -> Result<(ControlPlane, Client)> {
    let cp = ControlPlane::start().await?;
    cp.install_crds(&imagewarden_operator::crd::all()).await?;
    let client = cp.client().await?;
    Ok((cp, client))
}

async fn apply_rule(client: &Client, yaml: &str) -> Result<ScanRule> {
    let rule: ScanRule = serde_norway::from_str(yaml)?;
    let api: Api<ScanRule> = Api::default_namespaced(client.clone());
    let name = rule.metadata.name.clone().unwrap();
    Ok(api
        .patch(
            &name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&rule),
        )
        .await?)
}

fn rule_yaml(name: &str, registry: &Registry, scan_now: &str, extra: &str) -> String {
    format!(
        "apiVersion: imagewarden.io/v1alpha1
kind: ScanRule
metadata:
  name: {name}
  annotations:
    imagewarden.io/scan-now: '{scan_now}'
spec:
  registry:
    url: {host}
    insecure: true
  scope:
    type: Namespace
    name: team-a
  tagFilter: '^v'
{extra}",
        host = registry.host,
    )
}

/// Starts a manual scan of `rule` and waits until its task finished.
async fn scan_now(client: &Client, rule: &str, value: &str) -> Result<ScanTask> {
    let rules: Api<ScanRule> = Api::default_namespaced(client.clone());
    let before = rules.get(rule).await?.status.and_then(|s| s.last_task);
    rules
        .patch(
            rule,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"imagewarden.io/scan-now": value}}})),
        )
        .await?;
    let task = wait_for("a new task", Duration::from_secs(30), || {
        let (rules, before) = (rules.clone(), before.clone());
        async move {
            Ok(rules
                .get(rule)
                .await?
                .status
                .and_then(|s| s.last_task)
                .filter(|t| Some(t) != before.as_ref()))
        }
    })
    .await?;
    finished(client, &task).await
}

async fn finished(client: &Client, name: &str) -> Result<ScanTask> {
    let tasks: Api<ScanTask> = Api::default_namespaced(client.clone());
    wait_for(
        &format!("task {name} to finish"),
        Duration::from_secs(120),
        || {
            let tasks = tasks.clone();
            async move {
                Ok(tasks.get_opt(name).await?.filter(|t| {
                    t.status.as_ref().is_some_and(|s| {
                        matches!(s.phase, ScanPhase::Completed | ScanPhase::Failed)
                    })
                }))
            }
        },
    )
    .await
}

async fn result_of(client: &Client, digest: &str) -> Result<Option<ImageScanResult>> {
    let results: Api<ImageScanResult> = Api::default_namespaced(client.clone());
    Ok(results
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|r| r.spec.digest == digest))
}

fn deleted(result: &ImageScanResult) -> Option<(String, String)> {
    result
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Deleted" && c.status == "True")
        .map(|c| (c.reason.clone(), c.message.clone()))
}

fn sorted_tags(result: &ImageScanResult) -> Vec<String> {
    let mut tags = result.spec.tags.clone();
    tags.sort();
    tags
}

#[tokio::test]
async fn tags_follow_the_registry_and_a_vanished_digest_is_deleted_comes_back_and_is_collected(
) -> Result<()> {
    let (cp, client) = setup().await?;
    let registry = Registry::start(RegistryMode::Plain).await?;
    let a = push_image(&registry, "team-a/app", "v1", &alpine311()).await?;
    let b = push_image(&registry, "team-a/app", "v2", &vulnerable_alpine()).await?;
    push_image(&registry, "team-a/app", "dev", &alpine311()).await?;
    let operator = OperatorProcess::start(Path::new(BIN), &cp, &args(&testdata("osv"))).await?;
    apply_rule(
        &client,
        &rule_yaml("team-a", &registry, "1", "  resultRetention: 1h\n"),
    )
    .await?;
    let rules: Api<ScanRule> = Api::default_namespaced(client.clone());
    let first = wait_for("the first task", Duration::from_secs(30), || {
        let rules = rules.clone();
        async move { Ok(rules.get("team-a").await?.status.and_then(|s| s.last_task)) }
    })
    .await?;
    finished(&client, &first).await?;
    let old = result_of(&client, &a).await?.expect("result of v1");
    assert_eq!(sorted_tags(&old), ["v1"]);
    assert_eq!(old.spec.tags_seen.len(), 1);
    let first_seen = old.spec.tags_seen[0].last_seen.clone();

    // v1 moves to B's image; `dev` (outside the filter) still points at A.
    push_image(&registry, "team-a/app", "v1", &vulnerable_alpine()).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    scan_now(&client, "team-a", "2").await?;
    let moved_to = result_of(&client, &b).await?.unwrap();
    assert_eq!(sorted_tags(&moved_to), ["v1", "v2"], "{}", operator.log());
    assert!(moved_to
        .spec
        .tags_seen
        .iter()
        .all(|t| t.last_seen.0 > first_seen.0));
    let left = result_of(&client, &a).await?.unwrap();
    assert!(
        left.spec.tags.is_empty(),
        "the moved tag left the old result: {:?}\n{}",
        left.spec.tags,
        operator.log()
    );
    let (reason, message) = deleted(&left).expect("A is no longer in the rule's scope");
    assert_eq!(reason, "NotFoundInScope");
    assert!(message.contains("team-a"), "{message}");
    assert!(deleted(&moved_to).is_none());

    // A is pushed again under a matching tag: the result comes back.
    push_image(&registry, "team-a/app", "v3", &alpine311()).await?;
    scan_now(&client, "team-a", "3").await?;
    let back = result_of(&client, &a).await?.unwrap();
    assert!(deleted(&back).is_none(), "{:?}", back.status);
    assert_eq!(sorted_tags(&back), ["v3"]);

    // Gone again, with a short retention: the result is collected.
    push_image(&registry, "team-a/app", "v3", &vulnerable_alpine()).await?;
    apply_rule(
        &client,
        &rule_yaml("team-a", &registry, "3", "  resultRetention: 3s\n"),
    )
    .await?;
    scan_now(&client, "team-a", "4").await?;
    wait_for(
        "the deleted result to be collected",
        Duration::from_secs(60),
        || {
            let client = client.clone();
            let a = a.clone();
            async move { Ok(result_of(&client, &a).await?.is_none().then_some(())) }
        },
    )
    .await?;
    assert!(result_of(&client, &b).await?.is_some());
    Ok(())
}

#[tokio::test]
async fn a_registry_delete_event_marks_the_result_deleted_and_a_push_brings_it_back() -> Result<()>
{
    let (cp, client) = setup().await?;
    let token = "push-token-5678";
    let token_file = cp.dir().join("webhook-token");
    std::fs::write(&token_file, token)?;
    let mut args = args(&testdata("osv"));
    args.extend([
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
    apply_rule(
        &client,
        &rule_yaml("team-a", &registry, "1", "  triggers: {onPush: true}\n"),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let digest = push_image(&registry, "team-a/app", "v1", &alpine311()).await?;
    let scanned = wait_for("the pushed image's result", Duration::from_secs(90), || {
        let (client, digest) = (client.clone(), digest.clone());
        async move {
            Ok(result_of(&client, &digest)
                .await?
                .filter(|r| r.status.as_ref().is_some_and(|s| s.scan_time.is_some())))
        }
    })
    .await?;
    assert!(deleted(&scanned).is_none());
    // The push's own task (its coalescing window may end after the rule's first scan) has
    // finished before the delete: a push task that runs after it finds the digest again.
    wait_for("the push task to finish", Duration::from_secs(90), || {
        let client = client.clone();
        async move {
            let tasks = Api::<ScanTask>::default_namespaced(client)
                .list(&ListParams::default())
                .await?
                .items;
            Ok(tasks
                .iter()
                .find(|t| t.spec.trigger == TaskTrigger::Push)
                .and_then(|t| t.status.as_ref())
                .filter(|st| matches!(st.phase, ScanPhase::Completed | ScanPhase::Failed))
                .map(|_| ()))
        }
    })
    .await?;

    // The manifest is deleted through the registry's API; the registry notifies.
    let response = reqwest::Client::new()
        .delete(format!(
            "http://{}/v2/team-a/app/manifests/{digest}",
            registry.host
        ))
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 202, "{}", registry.log());
    let marked = wait_for(
        "the result to be marked Deleted",
        Duration::from_secs(60),
        || {
            let (client, digest) = (client.clone(), digest.clone());
            async move { Ok(result_of(&client, &digest).await?.and_then(|r| deleted(&r))) }
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", operator.log()))?;
    assert_eq!(marked.0, "DeletedInRegistry");
    assert!(marked.1.contains(&digest), "{}", marked.1);

    // Pushed again: the push task finds the digest and the mark goes.
    push_image(&registry, "team-a/app", "v1", &alpine311()).await?;
    wait_for("the result to come back", Duration::from_secs(90), || {
        let (client, digest) = (client.clone(), digest.clone());
        async move {
            Ok(result_of(&client, &digest)
                .await?
                .filter(|r| deleted(r).is_none()))
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", operator.log()))?;
    Ok(())
}

#[tokio::test]
async fn a_database_update_scans_again_an_image_whose_inventory_is_not_kept() -> Result<()> {
    let (cp, client) = setup().await?;
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
    let mut args = args(db.path());
    args.push("--db-refresh-interval=2s".to_string());
    let operator = OperatorProcess::start(Path::new(BIN), &cp, &args).await?;
    apply_rule(&client, &rule_yaml("team-a", &registry, "1", "")).await?;
    let rules: Api<ScanRule> = Api::default_namespaced(client.clone());
    let first = wait_for("the first task", Duration::from_secs(30), || {
        let rules = rules.clone();
        async move { Ok(rules.get("team-a").await?.status.and_then(|s| s.last_task)) }
    })
    .await?;
    finished(&client, &first).await?;
    let result = result_of(&client, &digest).await?.unwrap();
    // As a result whose inventory was too large to keep: none stored.
    let results: Api<ImageScanResult> = Api::default_namespaced(client.clone());
    let mut status = result.status.clone().unwrap();
    assert!(status.inventory.is_some());
    status.inventory = None;
    results
        .patch_status(
            &result.metadata.name.clone().unwrap(),
            &PatchParams::apply("imagewarden-operator").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "imagewarden.io/v1alpha1",
                "kind": "ImageScanResult",
                "status": status,
            })),
        )
        .await?;

    std::fs::copy(testdata("osv").join(musl), db.path().join(musl))?;
    let tasks: Api<ScanTask> = Api::default_namespaced(client.clone());
    let update = wait_for("a database-update task", Duration::from_secs(60), || {
        let tasks = tasks.clone();
        async move {
            Ok(tasks
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .find(|t| t.spec.trigger == TaskTrigger::DatabaseUpdate))
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", operator.log()))?;
    assert!(
        update.spec.images.iter().any(|i| i.ends_with(&digest)),
        "{:?}",
        update.spec.images
    );
    finished(&client, &update.metadata.name.clone().unwrap()).await?;
    let rescanned = result_of(&client, &digest).await?.unwrap();
    assert!(rescanned
        .status
        .as_ref()
        .unwrap()
        .findings
        .iter()
        .any(|f| f.id == "ALPINE-CVE-2019-14697"));
    assert_eq!(
        operator
            .metric("imagewarden_image_scans_total{outcome=\"scanned\"}")
            .await?,
        2.0,
        "scanned again, not skipped"
    );
    Ok(())
}

#[tokio::test]
async fn ready_says_what_the_registry_answered_and_probes_only_on_spec_change() -> Result<()> {
    let (cp, client) = setup().await?;
    let registry = Registry::start(RegistryMode::TlsAuth).await?;
    let (user, _) = registry.credentials().unwrap();
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    for (name, password) in [
        ("good", registry.credentials().unwrap().1),
        ("bad", "wrong-password"),
    ] {
        secrets
            .create(
                &PostParams::default(),
                &serde_json::from_value(serde_json::json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": name},
                    "stringData": {"username": user, "password": password},
                }))?,
            )
            .await?;
    }
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "ca"},
                "stringData": {"ca.crt": registry.ca_pem().unwrap()},
            }))?,
        )
        .await?;
    let _operator = OperatorProcess::start(Path::new(BIN), &cp, &args(&testdata("osv"))).await?;
    let rule = |name: &str, secret: &str, filter: &str| {
        format!(
            "apiVersion: imagewarden.io/v1alpha1
kind: ScanRule
metadata:
  name: {name}
spec:
  registry:
    url: {host}
    credentialsSecretRef: {{name: {secret}}}
    caSecretRef: {{name: ca, key: ca.crt}}
  scope: {{type: Namespace, name: team-a}}
  tagFilter: '{filter}'
",
            host = registry.host
        )
    };
    let rules: Api<ScanRule> = Api::default_namespaced(client.clone());
    let ready =
        |name: &'static str| {
            let rules = rules.clone();
            async move {
                wait_for(
                    &format!("{name} to have a Ready condition"),
                    Duration::from_secs(30),
                    || {
                        let rules = rules.clone();
                        async move {
                            Ok(rules.get(name).await?.status.and_then(|s| {
                                s.conditions.into_iter().find(|c| c.type_ == "Ready")
                            }))
                        }
                    },
                )
                .await
            }
        };
    apply_rule(&client, &rule("good", "good", "^v")).await?;
    let good = ready("good").await?;
    assert_eq!(good.status, "True", "{good:?}");
    assert!(
        good.message
            .contains("answered /v2/ with the rule's credentials"),
        "{good:?}"
    );
    apply_rule(&client, &rule("bad", "bad", "^v")).await?;
    let bad = ready("bad").await?;
    assert_eq!(
        (bad.status.as_str(), bad.reason.as_str()),
        ("False", "RegistryUnreachable"),
        "{bad:?}"
    );
    assert!(bad.message.contains("authentication failed"), "{bad:?}");

    // Reconciles without a spec change do not probe again; a spec change does.
    let probes = || registry.log().matches("\"GET /v2/ HTTP").count();
    let before = probes();
    for i in 0..5 {
        rules
            .patch(
                "bad",
                &PatchParams::default(),
                &Patch::Merge(
                    serde_json::json!({"metadata": {"labels": {"touch": i.to_string()}}}),
                ),
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(probes(), before, "no probe without a spec change");
    apply_rule(&client, &rule("bad", "bad", "^v1")).await?;
    wait_for(
        "a probe after the spec change",
        Duration::from_secs(30),
        || {
            let after = probes();
            async move { Ok((after > before).then_some(())) }
        },
    )
    .await?;
    Ok(())
}
