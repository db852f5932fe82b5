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
    assert_eq!(
        crds.len(),
        imagewarden_operator::crd::all().len(),
        "crds/ should hold one file per CRD the operator defines"
    );
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
        [
            "NAME",
            "READY",
            "REGISTRY",
            "SCOPE",
            "TAGFILTER",
            "LASTTASK",
            "AGE"
        ]
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

/// `kubectl apply -f -` of `yaml`; the error output when refused.
fn apply_refused(cp: &ControlPlane, yaml: &str) -> Result<Option<String>> {
    use std::io::Write;
    let mut child = cp
        .kubectl()?
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().unwrap().write_all(yaml.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok((!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned()))
}

fn rule_yaml(name: &str, registry: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: imagewarden.io/v1alpha1
kind: ScanRule
metadata:
  name: {name}
  namespace: default
spec:
  registry: {registry}
  scope: {{type: Repository, name: team-a/api}}
{spec_extra}"
    )
}

#[tokio::test]
async fn the_api_server_refuses_bad_rules_at_apply_with_the_reason() -> Result<()> {
    let cp = ControlPlane::start().await?;
    cp.install_crds(&committed_crds()?).await?;
    let reg = "{url: registry.example.com}";
    // Accepted: what the operator accepts.
    for (name, registry, extra) in [
        ("ok-plain", reg, "  tagFilter: '^v\\d+\\.\\d+$'\n  triggers: {schedule: '0 3 * * 1-5'}\n"),
        ("ok-macro", reg, "  triggers: {schedule: '@daily'}\n"),
        ("ok-http", "{url: 'http://registry.local:5000', insecure: true}", ""),
        (
            "ok-notify",
            reg,
            "  notifications:\n    - {name: a, type: HTTPS, url: 'HTTPS://hooks.example.com/x'}\n    - {name: b, type: DingTalk, urlSecretRef: {name: s, key: url}}\n",
        ),
    ] {
        let refused = apply_refused(&cp, &rule_yaml(name, registry, extra))?;
        assert!(refused.is_none(), "{name} was refused: {refused:?}");
    }
    // Refused, each with its message.
    for (name, registry, extra, says) in [
        (
            "bad-regex",
            reg,
            "  tagFilter: '^v(1'\n",
            "spec.tagFilter is not a valid regular expression",
        ),
        (
            "bad-cron",
            reg,
            "  triggers: {schedule: 'every night'}\n",
            "must be a cron expression of 5 fields",
        ),
        (
            "bad-cron-4",
            reg,
            "  triggers: {schedule: '0 3 * *'}\n",
            "must be a cron expression of 5 fields",
        ),
        (
            "bad-scheme",
            "{url: 'http://registry.example.com'}",
            "",
            "a scheme must match insecure",
        ),
        (
            "bad-notify-scheme",
            reg,
            "  notifications:\n    - {name: a, type: HTTPS, url: 'http://hooks.example.com/x'}\n",
            "an https:// URL for type HTTPS",
        ),
        (
            "bad-notify-ftp",
            reg,
            "  notifications:\n    - {name: a, type: HTTP, url: 'ftp://hooks.example.com/x'}\n",
            "url must be an http:// or https:// URL",
        ),
        (
            "bad-notify-nourl",
            reg,
            "  notifications:\n    - {name: a, type: HTTP}\n",
            "set url or urlSecretRef",
        ),
    ] {
        let refused = apply_refused(&cp, &rule_yaml(name, registry, extra))?
            .unwrap_or_else(|| panic!("{name} was accepted"));
        assert!(refused.contains(says), "{name}: {refused}");
    }
    Ok(())
}

#[tokio::test]
async fn kubectl_explains_the_kinds_and_selects_and_widens_results() -> Result<()> {
    use imagewarden_operator::executor::{store_result, ScanTarget};
    let cp = ControlPlane::start().await?;
    cp.install_crds(&committed_crds()?).await?;
    for (kind, says) in [
        ("scanresult", "The findings of one image digest"),
        ("scanrule", "Which images of a registry to scan"),
        ("scantask", "One scan run"),
        ("imagepolicy", "A cluster-wide security policy"),
        ("vulnerabilityexception", "Findings accepted, with a reason"),
    ] {
        // The API server publishes a new CRD's OpenAPI schema a moment after the CRD is
        // Established; kubectl explain reads that schema.
        let out = imagewarden_tests::process::poll(
            &format!("kubectl explain {kind}"),
            std::time::Duration::from_secs(60),
            || async { Ok(cp.kubectl_output(&["explain", kind]).ok()) },
        )
        .await?;
        assert!(out.contains(says), "kubectl explain {kind}: {out}");
        assert!(
            !out.contains("Auto-generated"),
            "kubectl explain {kind}: {out}"
        );
    }

    // Two results as the operator writes them: one High with a fix and a malicious file, one
    // clean whose repository is too long for a label value.
    let client = cp.client().await?;
    let high = {
        let mut findings = vec![imagewarden_operator::crd::Finding {
            id: "CVE-2022-1292".into(),
            class: imagewarden_operator::crd::FindingClass::SystemVulnerability,
            severity: imagewarden_operator::crd::Severity::High,
            score: None,
            vector: None,
            severity_source: None,
            package: Some("openssl".into()),
            version: Some("1.1.1n-0+deb11u1".into()),
            fixed_version: Some("1.1.1n-0+deb11u2".into()),
            title: None,
            location: None,
            link: None,
        }];
        let mut malicious = findings[0].clone();
        malicious.id = "IW-MAL-EICAR".into();
        malicious.class = imagewarden_operator::crd::FindingClass::MaliciousSample;
        malicious.severity = imagewarden_operator::crd::Severity::Medium;
        malicious.fixed_version = None;
        findings.push(malicious);
        ImageScanResultStatus {
            short_digest: Some("aaaaaaaaaaaa".into()),
            os: Some(imagewarden_operator::crd::OperatingSystem {
                family: "debian".into(),
                version: "11".into(),
            }),
            scan_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            )),
            summary: ResultSummary::of(&findings),
            total_findings: 2,
            findings,
            ..Default::default()
        }
    };
    let rule_owner = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "imagewarden.io/v1alpha1".into(),
        kind: "ScanRule".into(),
        name: "team-a-releases".into(),
        uid: "0b7a7c1e-0000-4000-8000-000000000001".into(),
        ..Default::default()
    };
    let target = |repository: &str, digest: &str| ScanTarget {
        registry: "registry.example.com:5000".into(),
        repository: repository.into(),
        digest: digest.into(),
        tags: vec!["v1".into()],
    };
    let api_target = target("team-a/api", &format!("sha256:{}", "a".repeat(64)));
    store_result(
        &client,
        "default",
        &api_target,
        Some(rule_owner.clone()),
        &high,
    )
    .await?;
    let long_repo = format!("team-a/{}", "very-long-component-".repeat(5));
    let clean_target = target(&long_repo, &format!("sha256:{}", "b".repeat(64)));
    store_result(
        &client,
        "default",
        &clean_target,
        Some(rule_owner),
        &ImageScanResultStatus::default(),
    )
    .await?;

    let names = |selector: &str| -> Result<String> {
        cp.kubectl_output(&["get", "scanresults", "-l", selector, "-o", "name"])
    };
    let api_name = api_target.result_name();
    let clean_name = clean_target.result_name();
    assert_eq!(
        names("imagewarden.io/worst-severity=High")?.trim(),
        format!("imagescanresult.imagewarden.io/{api_name}")
    );
    assert_eq!(
        names("imagewarden.io/worst-severity=None")?.trim(),
        format!("imagescanresult.imagewarden.io/{clean_name}")
    );
    assert_eq!(
        names("imagewarden.io/repository=team-a.api")?.trim(),
        format!("imagescanresult.imagewarden.io/{api_name}")
    );
    let long_value = imagewarden_operator::result::repository_label_value(&long_repo);
    assert!(long_value.len() <= 63, "{long_value}");
    assert_eq!(
        names(&format!("imagewarden.io/repository={long_value}"))?.trim(),
        format!("imagescanresult.imagewarden.io/{clean_name}")
    );
    assert_eq!(
        names("imagewarden.io/rule=team-a-releases")?
            .lines()
            .count(),
        2
    );

    let wide = cp.kubectl_output(&[
        "get",
        "scanresults",
        "-o",
        "wide",
        "--field-selector",
        &format!("metadata.name={api_name}"),
    ])?;
    let mut lines = wide.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let column = |name: &str| {
        let i = header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"));
        row[i]
    };
    assert_eq!(column("REGISTRY"), "registry.example.com:5000");
    assert_eq!(column("OS"), "debian");
    assert_eq!(column("OS-VERSION"), "11");
    assert_eq!(column("FIXABLE"), "1");
    assert_eq!(column("MALICIOUS"), "1");
    assert!(column("SCANNED").ends_with('s'), "{wide}");
    // Not in the default table.
    let plain = cp.kubectl_output(&["get", "scanresults"])?;
    assert!(
        !plain.contains("FIXABLE") && !plain.contains("MALICIOUS"),
        "{plain}"
    );
    Ok(())
}
