//! The generated CRDs on a real kube-apiserver: accepted, usable with the examples,
//! and `kubectl get scanresults` prints the documented columns.

use std::path::Path;

use anyhow::Result;
use imagewarden_operator::crd::{
    ImageScanResult, ImageScanResultStatus, ResultSummary, ScanRule, ScanTask, SeverityCounts,
};
use imagewarden_tests::{repo_root, ControlPlane};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};

fn committed_crds() -> Result<Vec<CustomResourceDefinition>> {
    let dir = repo_root().join("crds");
    let mut crds = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            crds.push(serde_norway::from_str(&std::fs::read_to_string(&path)?)?);
        }
    }
    crds.sort_by_key(|c: &CustomResourceDefinition| c.metadata.name.clone());
    Ok(crds)
}

fn example(name: &str) -> String {
    repo_root()
        .join(Path::new("deploy/examples").join(name))
        .display()
        .to_string()
}

#[tokio::test]
async fn crds_are_accepted_and_examples_round_trip() -> Result<()> {
    let cp = ControlPlane::start().await?;
    let crds = committed_crds()?;
    assert_eq!(crds.len(), 5, "crds/ should hold five CRDs");
    cp.install_crds(&crds).await?;

    for file in ["scanrule.yaml", "scantask.yaml", "imagescanresult.yaml"] {
        let out = cp.kubectl_output(&["apply", "--server-side", "-f", &example(file)])?;
        assert!(
            out.contains("serverside-applied"),
            "kubectl apply {file}: {out}"
        );
    }

    let client = cp.client().await?;
    let rules: Api<ScanRule> = Api::default_namespaced(client.clone());
    let rule = rules.get("team-a-releases").await?;
    assert_eq!(rule.spec.scope.name, "team-a");
    assert_eq!(rule.spec.tag_filter, r"^v\d+\.\d+\.\d+$");
    assert_eq!(rule.spec.max_tags, Some(5));
    assert_eq!(rule.spec.triggers.schedule.as_deref(), Some("0 3 * * *"));
    assert_eq!(rule.spec.notifications[0].name, "security-group");
    assert_eq!(rule.spec.fix.as_ref().unwrap().tag_suffix, "_fixd");

    let tasks: Api<ScanTask> = Api::default_namespaced(client.clone());
    let task = tasks.get("adhoc-scan").await?;
    assert_eq!(task.spec.images.len(), 2);
    assert_eq!(task.spec.rule_ref.unwrap().name, "team-a-releases");

    // Status goes through the status subresource, as the operator writes it.
    let results: Api<ImageScanResult> = Api::default_namespaced(client.clone());
    let status = ImageScanResultStatus {
        short_digest: Some("3b5e2a7c6f1d".into()),
        summary: ResultSummary {
            critical: 2,
            high: 7,
            medium: 11,
            low: 3,
            unknown: 1,
            system_vulnerabilities: SeverityCounts {
                critical: 2,
                high: 7,
                medium: 11,
                low: 3,
                unknown: 1,
            },
            ..Default::default()
        },
        total_findings: 24,
        ..Default::default()
    };
    results
        .patch_status(
            "team-a-api-3b5e2a7c6f1d",
            &PatchParams::apply("imagewarden-tests").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "imagewarden.io/v1alpha1",
                "kind": "ImageScanResult",
                "status": status,
            })),
        )
        .await?;
    let stored = results.get("team-a-api-3b5e2a7c6f1d").await?;
    assert_eq!(stored.status.unwrap().summary.high, 7);

    let table = cp.kubectl_output(&["get", "scanresults"])?;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "REPOSITORY",
            "TAG",
            "DIGEST",
            "CRITICAL",
            "HIGH",
            "MEDIUM",
            "LOW",
            "UNKNOWN",
            "AGE"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..9],
        [
            "team-a-api-3b5e2a7c6f1d",
            "team-a/api",
            "v1.4.2",
            "3b5e2a7c6f1d",
            "2",
            "7",
            "11",
            "3",
            "1"
        ]
    );

    let rules_table = cp.kubectl_output(&["get", "scanrules"])?;
    let header: Vec<&str> = rules_table
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "REGISTRY", "SCOPE", "TAGFILTER", "LASTTASK", "AGE"]
    );
    let tasks_table = cp.kubectl_output(&["get", "st"])?;
    let header: Vec<&str> = tasks_table
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "RULE",
            "TRIGGER",
            "PHASE",
            "TOTAL",
            "SUCCEEDED",
            "FAILED",
            "AGE"
        ]
    );
    Ok(())
}

#[tokio::test]
async fn invalid_objects_are_rejected_by_the_schema() -> Result<()> {
    let cp = ControlPlane::start().await?;
    cp.install_crds(&committed_crds()?).await?;
    let bad = cp.dir().join("bad-rule.yaml");
    std::fs::write(
        &bad,
        "apiVersion: imagewarden.io/v1alpha1
kind: ScanRule
metadata:
  name: bad
spec:
  registry: {url: r.example.com}
  scope: {type: Everything, name: x}
",
    )?;
    let out = cp
        .kubectl()?
        .args(["apply", "-f", &bad.display().to_string()])
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spec.scope.type") && stderr.contains("Unsupported value"),
        "unexpected error: {stderr}"
    );
    Ok(())
}
