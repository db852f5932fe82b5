//! Least privilege with real RBAC on a real kube-apiserver: the operator runs as its
//! ServiceAccount bound by the chart's rendered RBAC for `watchNamespaces`, and each scanner
//! Job's ServiceAccount may write its own image's result only.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use imagewarden_operator::crd::{ImageScanResult, ScanRule, ScanTask};
use imagewarden_tests::control_plane::k8s_bin_dir;
use imagewarden_tests::image::push_image;
use imagewarden_tests::operator::OperatorProcess;
use imagewarden_tests::process::{free_port, poll as wait_for};
use imagewarden_tests::samples::{alpine311, testdata, vulnerable_alpine};
use imagewarden_tests::{repo_root, ControlPlane, Registry, RegistryMode};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::Role;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

const BIN: &str = env!("CARGO_BIN_EXE_imagewarden-operator");
const RELEASE_NAMESPACE: &str = "imagewarden-system";

fn forbidden<T: std::fmt::Debug>(result: kube::Result<T>) -> bool {
    matches!(result, Err(kube::Error::Api(e)) if e.code == 403)
}

/// Applies the chart's ServiceAccount and RBAC, rendered with `--set` `values`.
fn apply_chart_rbac(cp: &ControlPlane, values: &[&str]) -> Result<()> {
    let helm = k8s_bin_dir()?.join("helm");
    let home = std::env::temp_dir().join("imagewarden-tests-helm");
    let chart = repo_root().join("deploy/helm/imagewarden");
    let mut cmd = Command::new(helm);
    cmd.args(["template", "imagewarden"])
        .arg(&chart)
        .args(["--namespace", RELEASE_NAMESPACE])
        .args(["--show-only", "templates/serviceaccount.yaml"])
        .args(["--show-only", "templates/rbac.yaml"])
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG");
    for v in values {
        cmd.args(["--set", v]);
    }
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("helm template: {}", String::from_utf8_lossy(&out.stderr));
    }
    let file = cp.dir().join("chart-rbac.yaml");
    std::fs::write(&file, &out.stdout)?;
    cp.kubectl_output(&["apply", "-f", &file.display().to_string()])?;
    Ok(())
}

async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(())
}

fn rule(namespace: &str, registry: &Registry) -> Result<ScanRule> {
    Ok(serde_norway::from_str(&format!(
        "apiVersion: imagewarden.io/v1alpha1
kind: ScanRule
metadata:
  name: releases
  namespace: {namespace}
  annotations:
    imagewarden.io/scan-now: first
spec:
  registry:
    url: {host}
    insecure: true
  scope:
    type: Namespace
    name: team-a
  tagFilter: '^v\\d'
",
        host = registry.host
    ))?)
}

async fn apply_rule(client: &Client, rule: &ScanRule) -> Result<()> {
    let api: Api<ScanRule> = Api::namespaced(client.clone(), &rule.namespace().unwrap());
    api.patch(
        &rule.name_any(),
        &PatchParams::apply("test").force(),
        &Patch::Apply(rule),
    )
    .await?;
    Ok(())
}

/// The value of `--NAME=` among a scanner container's arguments.
fn arg<'a>(args: &'a [String], name: &str) -> Result<&'a str> {
    let prefix = format!("--{name}=");
    args.iter()
        .find_map(|a| a.strip_prefix(&prefix))
        .with_context(|| format!("no --{name} in {args:?}"))
}

fn container_args(job: &Job) -> Vec<String> {
    job.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap_or_default()
}

fn result_name_of(job: &Job) -> Result<String> {
    let args = container_args(job);
    Ok(imagewarden_operator::result::result_name(
        arg(&args, "registry")?,
        arg(&args, "repository")?,
        arg(&args, "digest")?,
    ))
}

#[tokio::test]
async fn an_operator_watching_listed_namespaces_stays_there_and_each_scanner_writes_only_its_result(
) -> Result<()> {
    let cp = ControlPlane::start().await?;
    cp.install_crds(&imagewarden_operator::crd::all()).await?;
    let admin = cp.client().await?;
    for ns in [RELEASE_NAMESPACE, "team-a", "team-b"] {
        create_namespace(&admin, ns).await?;
    }
    apply_chart_rbac(
        &cp,
        &["watchNamespaces={team-a}", "admission.enabled=false"],
    )?;

    let registry = Registry::start(RegistryMode::Plain).await?;
    push_image(&registry, "team-a/alpine", "v1", &vulnerable_alpine()).await?;
    push_image(&registry, "team-a/app", "v2", &alpine311()).await?;

    let operator_kubeconfig = cp
        .service_account_kubeconfig(RELEASE_NAMESPACE, "imagewarden-operator")
        .await?;
    let serve_port = free_port()?;
    let args = vec![
        format!("--db={}", testdata("osv").display()),
        "--egress-allow=127.0.0.0/8".to_string(),
        "--cluster-cidrs=10.96.0.0/12".to_string(),
        "--leader-elect=false".to_string(),
        "--executor=job".to_string(),
        "--scanner-image=registry.local/imagewarden:test".to_string(),
        "--scanner-network-policy=true".to_string(),
        format!("--db-serve-addr=127.0.0.1:{serve_port}"),
        format!("--db-serve-url=http://127.0.0.1:{serve_port}"),
        "--watch-namespaces=team-a".to_string(),
    ];
    let operator = OperatorProcess::start_as(Path::new(BIN), &operator_kubeconfig, &args).await?;

    // The same rule in a watched and in an unwatched namespace.
    apply_rule(&admin, &rule("team-b", &registry)?).await?;
    apply_rule(&admin, &rule("team-a", &registry)?).await?;

    // Team A's rule runs: a task and one scanner Job per image, in team-a.
    let jobs: Api<Job> = Api::namespaced(admin.clone(), "team-a");
    let team_a_jobs = wait_for(
        "two scanner Jobs in team-a",
        Duration::from_secs(60),
        || {
            let jobs = jobs.clone();
            async move {
                let list = jobs.list(&ListParams::default()).await?.items;
                Ok((list.len() == 2).then_some(list))
            }
        },
    )
    .await?;

    // The operator's own credentials reach nothing in team-b, and it never tried.
    let as_operator = cp
        .service_account_client(RELEASE_NAMESPACE, "imagewarden-operator")
        .await?;
    assert!(forbidden(
        Api::<ScanRule>::namespaced(as_operator.clone(), "team-b")
            .list(&ListParams::default())
            .await
    ));
    assert!(forbidden(
        Api::<ScanRule>::all(as_operator.clone())
            .list(&ListParams::default())
            .await
    ));
    assert!(forbidden(
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(as_operator.clone(), "team-b")
            .get("anything")
            .await
    ));
    let team_b_rule = Api::<ScanRule>::namespaced(admin.clone(), "team-b")
        .get("releases")
        .await?;
    assert!(
        team_b_rule.status.is_none(),
        "an unwatched rule got a status"
    );
    assert!(Api::<ScanTask>::namespaced(admin.clone(), "team-b")
        .list(&ListParams::default())
        .await?
        .items
        .is_empty());
    let log = operator.log();
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "the scoped operator made a request its RBAC denies:\n{log}"
    );

    // Each Job runs as its own ServiceAccount, whose identity the Job owns.
    let (job_a, job_b) = (&team_a_jobs[0], &team_a_jobs[1]);
    let sa_a = job_a.name_any();
    let pod = job_a.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(sa_a.as_str()));
    for owners in [
        Api::<ServiceAccount>::namespaced(admin.clone(), "team-a")
            .get(&sa_a)
            .await?
            .owner_references()
            .to_vec(),
        Api::<Role>::namespaced(admin.clone(), "team-a")
            .get(&sa_a)
            .await?
            .owner_references()
            .to_vec(),
    ] {
        assert_eq!(owners.len(), 1);
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].uid.clone()),
            ("Job", job_a.uid().unwrap())
        );
    }

    // Scanner A, with its own token, scans and writes its result...
    let scanner_a_kubeconfig = cp.service_account_kubeconfig("team-a", &sa_a).await?;
    let out = tokio::process::Command::new(BIN)
        .args(container_args(job_a))
        .env("KUBECONFIG", &scanner_a_kubeconfig)
        .env("IMAGEWARDEN_LOG", "info")
        .output()
        .await?;
    assert!(
        out.status.success(),
        "scan-image as the Job's ServiceAccount: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Api<ImageScanResult> = Api::namespaced(admin.clone(), "team-a");
    let result_a = results.get(&result_name_of(job_a)?).await?;
    assert!(result_a.status.is_some(), "scanner A wrote its result");

    // ...but cannot read, create or change image B's result, nor list results.
    let as_scanner_a = cp.service_account_client("team-a", &sa_a).await?;
    let scanner_results: Api<ImageScanResult> = Api::namespaced(as_scanner_a.clone(), "team-a");
    let name_b = result_name_of(job_b)?;
    let forged = serde_json::json!({
        "apiVersion": "imagewarden.io/v1alpha1",
        "kind": "ImageScanResult",
        "metadata": {"name": name_b},
        "spec": {"registry": registry.host, "repository": "team-a/app", "digest": "sha256:0"},
    });
    assert!(forbidden(
        scanner_results
            .patch(
                &name_b,
                &PatchParams::apply("forger").force(),
                &Patch::Apply(&forged)
            )
            .await
    ));
    assert!(forbidden(
        scanner_results
            .patch_status(
                &name_b,
                &PatchParams::apply("forger").force(),
                &Patch::Apply(serde_json::json!({
                    "apiVersion": "imagewarden.io/v1alpha1",
                    "kind": "ImageScanResult",
                    "status": {"totalFindings": 0},
                })),
            )
            .await
    ));
    assert!(forbidden(scanner_results.get(&name_b).await));
    assert!(forbidden(
        scanner_results.list(&ListParams::default()).await
    ));
    assert!(results.get_opt(&name_b).await?.is_none());
    // Scanner A's identity is no use in another namespace either.
    assert!(forbidden(
        Api::<ImageScanResult>::namespaced(as_scanner_a, "team-b")
            .get(&result_name_of(job_a)?)
            .await
    ));
    Ok(())
}
