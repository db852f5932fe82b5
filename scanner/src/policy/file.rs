//! ImagePolicy and VulnerabilityException manifests read from files (the YAML applied to
//! the cluster), and a scan report as the evaluator sees it: what
//! `imagewarden scan --policy` judges offline.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{
    validate, validate_pattern, ClassCounts, ExceptedFinding, Exception, ImageName, PolicyClass,
    PolicyFinding, PolicyRules, ScannedImage,
};
use crate::finding::{CheckFinding, Finding, FindingClass};
use crate::report::ScanReport;

/// API version of the manifests.
pub const API_VERSION: &str = "imagewarden.io/v1alpha1";
/// Largest manifest file read.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// Most exceptions in one file.
const MAX_EXCEPTIONS: usize = 1024;

/// Keys of an ImagePolicy's `spec`: `match` and the [`PolicyRules`] fields.
const SPEC_KEYS: [&str; 7] = [
    "match",
    "deny",
    "unscanned",
    "scanUnscanned",
    "scanFailed",
    "maxResultAge",
    "mode",
];
/// Keys of an ImagePolicy's `spec.match`.
const MATCH_KEYS: [&str; 3] = ["namespaceSelector", "images", "excludeNamespaces"];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<S> {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    spec: S,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PolicyFileSpec {
    #[serde(default, rename = "match")]
    match_: PolicyFileMatch,
    #[serde(flatten)]
    rules: PolicyRules,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PolicyFileMatch {
    #[serde(default)]
    namespace_selector: Option<serde_json::Value>,
    #[serde(default)]
    images: Vec<String>,
    #[serde(default)]
    exclude_namespaces: Option<Vec<String>>,
}

/// An ImagePolicy read from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyFile {
    /// `metadata.name`.
    pub name: String,
    /// `spec.match.images`: the images the policy covers (empty: all).
    pub images: Vec<String>,
    /// What the policy says of a covered image.
    pub rules: PolicyRules,
    /// Fields that only apply in a cluster (namespaces, `scanUnscanned`), set in the file.
    pub cluster_only: Vec<&'static str>,
}

impl PolicyFile {
    /// Whether the policy covers `image` (`spec.match.images`).
    pub fn covers(&self, image: &ImageName) -> bool {
        self.images.is_empty() || self.images.iter().any(|p| super::pattern_matches(p, image))
    }
}

fn read(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("{}: larger than 1 MiB", path.display()));
    }
    Ok(text)
}

fn unknown_keys(value: &serde_json::Value, known: &[&str], at: &str) -> Result<(), String> {
    if let Some(map) = value.as_object() {
        if let Some(key) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!(
                "{at}.{key} is not a field of an ImagePolicy (fields: {})",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

fn check_header(api_version: &str, kind: &str, want: &str) -> Result<(), String> {
    if api_version != API_VERSION || kind != want {
        return Err(format!(
            "expected apiVersion {API_VERSION} and kind {want}, found {api_version} {kind}"
        ));
    }
    Ok(())
}

/// Reads an ImagePolicy manifest (the YAML or JSON applied to the cluster).
pub fn parse_policy(text: &str) -> Result<PolicyFile, String> {
    let value: serde_json::Value =
        serde_norway::from_str(text).map_err(|e| format!("not a YAML manifest: {e}"))?;
    let spec = value.get("spec").cloned().unwrap_or_default();
    unknown_keys(&spec, &SPEC_KEYS, "spec")?;
    if let Some(m) = spec.get("match") {
        unknown_keys(m, &MATCH_KEYS, "spec.match")?;
    }
    let manifest: Manifest<PolicyFileSpec> =
        serde_json::from_value(value).map_err(|e| format!("not an ImagePolicy: {e}"))?;
    check_header(&manifest.api_version, &manifest.kind, "ImagePolicy")?;
    let spec = manifest.spec;
    validate(&spec.rules)?;
    for pattern in &spec.match_.images {
        validate_pattern(pattern).map_err(|e| format!("spec.match.images: {e}"))?;
    }
    let mut cluster_only = Vec::new();
    if spec.match_.namespace_selector.is_some() {
        cluster_only.push("spec.match.namespaceSelector");
    }
    if spec.match_.exclude_namespaces.is_some() {
        cluster_only.push("spec.match.excludeNamespaces");
    }
    if spec.rules.scan_unscanned {
        cluster_only.push("spec.scanUnscanned");
    }
    Ok(PolicyFile {
        name: manifest.metadata.name.unwrap_or_else(|| "(unnamed)".into()),
        images: spec.match_.images,
        rules: spec.rules,
        cluster_only,
    })
}

/// Reads an ImagePolicy manifest file.
pub fn read_policy(path: &std::path::Path) -> Result<PolicyFile, String> {
    parse_policy(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExceptionFileSpec {
    ids: Vec<ExceptedFinding>,
    expires: DateTime<Utc>,
    reason: String,
}

/// A VulnerabilityException read from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct ExceptionFile {
    pub name: String,
    pub ids: Vec<ExceptedFinding>,
    pub expires: DateTime<Utc>,
    pub reason: String,
}

impl ExceptionFile {
    /// As the evaluator takes it.
    pub fn as_exception(&self) -> Exception<'_> {
        Exception {
            ids: &self.ids,
            expires: self.expires,
        }
    }
}

/// Reads VulnerabilityException manifests: one or more YAML documents (`---` between
/// them). Namespaces do not matter offline: every exception read applies.
pub fn parse_exceptions(text: &str) -> Result<Vec<ExceptionFile>, String> {
    let mut out = Vec::new();
    for (n, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = serde_json::Value::deserialize(doc)
            .map_err(|e| format!("document {}: not YAML: {e}", n + 1))?;
        if value.is_null() {
            continue; // an empty document, e.g. after a trailing `---`
        }
        if out.len() == MAX_EXCEPTIONS {
            return Err(format!("more than {MAX_EXCEPTIONS} exceptions"));
        }
        let manifest: Manifest<ExceptionFileSpec> = serde_json::from_value(value)
            .map_err(|e| format!("document {}: not a VulnerabilityException: {e}", n + 1))?;
        check_header(
            &manifest.api_version,
            &manifest.kind,
            "VulnerabilityException",
        )
        .map_err(|e| format!("document {}: {e}", n + 1))?;
        let spec = manifest.spec;
        let what = |e: String| format!("document {}: {e}", n + 1);
        if spec.ids.is_empty() || spec.ids.len() > 256 {
            return Err(what("spec.ids: 1 to 256 ids".into()));
        }
        if spec.reason.trim().is_empty() || spec.reason.len() > 1024 {
            return Err(what("spec.reason: 1 to 1024 characters".into()));
        }
        for id in &spec.ids {
            if id.id.is_empty() || id.id.len() > 256 {
                return Err(what("spec.ids[].id: 1 to 256 characters".into()));
            }
            for pattern in &id.images {
                validate_pattern(pattern).map_err(|e| what(format!("spec.ids[].images: {e}")))?;
            }
        }
        out.push(ExceptionFile {
            name: manifest.metadata.name.unwrap_or_else(|| "(unnamed)".into()),
            ids: spec.ids,
            expires: spec.expires,
            reason: spec.reason,
        });
    }
    Ok(out)
}

/// Reads a file of VulnerabilityException manifests.
pub fn read_exceptions(path: &std::path::Path) -> Result<Vec<ExceptionFile>, String> {
    parse_exceptions(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))
}

fn vulnerability(f: &Finding, class: PolicyClass) -> PolicyFinding<'_> {
    PolicyFinding {
        id: &f.id,
        class,
        severity: f.severity,
        package: Some(&f.package.name),
        version: Some(&f.package.version),
        fixed_version: f.fixed_version.as_deref(),
    }
}

fn check(f: &CheckFinding, class: PolicyClass) -> PolicyFinding<'_> {
    PolicyFinding {
        id: &f.id,
        class,
        severity: f.severity,
        package: None,
        version: None,
        fixed_version: None,
    }
}

/// A finding of a report: an advisory matched to a package, or a check's finding.
#[derive(Clone, Copy, Debug)]
pub enum ReportFinding<'a> {
    Advisory(&'a Finding),
    Check(&'a CheckFinding),
}

/// Every finding of a report with its class, in report order: vulnerabilities (OS or
/// application), malicious packages (malicious samples), then baseline risks, secrets
/// (baseline risks too) and malicious samples.
pub fn classified_findings(report: &ScanReport) -> Vec<(PolicyClass, ReportFinding<'_>)> {
    let mut findings: Vec<(PolicyClass, ReportFinding<'_>)> = report
        .vulnerabilities
        .iter()
        .map(|f| {
            let class = match f.class {
                FindingClass::Os => PolicyClass::SystemVulnerability,
                FindingClass::App => PolicyClass::ApplicationVulnerability,
            };
            (class, ReportFinding::Advisory(f))
        })
        .collect();
    findings.extend(
        report
            .malicious_packages
            .iter()
            .map(|f| (PolicyClass::MaliciousSample, ReportFinding::Advisory(f))),
    );
    let sections = [
        (&report.baseline_risks, PolicyClass::BaselineRisk),
        (&report.secrets, PolicyClass::BaselineRisk),
        (&report.malicious_samples, PolicyClass::MaliciousSample),
    ];
    for (section, class) in sections {
        if let Some(section) = section {
            findings.extend(
                section
                    .findings
                    .iter()
                    .map(|f| (class, ReportFinding::Check(f))),
            );
        }
    }
    findings
}

/// Every finding of a report as the evaluator sees it, most severe first.
pub fn report_findings(report: &ScanReport) -> Vec<PolicyFinding<'_>> {
    let mut findings: Vec<PolicyFinding<'_>> = classified_findings(report)
        .into_iter()
        .map(|(class, f)| match f {
            ReportFinding::Advisory(f) => vulnerability(f, class),
            ReportFinding::Check(f) => check(f, class),
        })
        .collect();
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    findings
}

/// A fresh report as the evaluator sees it: scanned at `now`, nothing cut.
pub fn scanned_report(
    report: &ScanReport,
    image: ImageName,
    now: DateTime<Utc>,
) -> ScannedImage<'_> {
    let findings = report_findings(report);
    ScannedImage {
        image,
        scanned_at: Some(now),
        database_version: None,
        counts: ClassCounts::of(&findings),
        findings,
    }
}
