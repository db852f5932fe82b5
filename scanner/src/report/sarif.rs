//! SARIF 2.1.0, in the shape GitHub code scanning reads: one rule per advisory,
//! one result per affected package, `security-severity` on the rule.

use serde_json::{json, Value};

use super::ScanReport;
use crate::finding::Finding;
use crate::finding::Severity;

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Unknown => "note",
    }
}

/// The score GitHub sorts by; a qualitative rating gets its band's midpoint.
fn security_severity(f: &Finding) -> String {
    let score = f.score.unwrap_or(match f.severity {
        Severity::Critical => 9.5,
        Severity::High => 8.0,
        Severity::Medium => 5.5,
        Severity::Low => 2.0,
        Severity::Unknown => 0.0,
    });
    format!("{score:.1}")
}

/// `HIGH 7.5 (nvd, CVSS:3.1/...)`: the severity and where it came from.
fn rating_text(f: &Finding) -> String {
    let mut out = f.severity.as_str().to_ascii_uppercase();
    if let Some(score) = f.score {
        out.push_str(&format!(" {score:.1}"));
    }
    let from: Vec<&str> = [f.severity_source.as_deref(), f.vector.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    if !from.is_empty() {
        out.push_str(&format!(" ({})", from.join(", ")));
    }
    out
}

/// The finding's rating as result properties.
fn rating_properties(f: &Finding) -> serde_json::Value {
    let mut p = json!({"severity": f.severity.as_str()});
    if let Some(score) = f.score {
        p["score"] = json!(score);
    }
    if let Some(v) = &f.vector {
        p["vector"] = json!(v);
    }
    if let Some(s) = &f.severity_source {
        p["severitySource"] = json!(s);
    }
    p
}

/// Builds the SARIF log of a report.
pub fn render(report: &ScanReport) -> Value {
    let mut rules: Vec<Value> = Vec::new();
    let mut rule_ids: Vec<&str> = Vec::new();
    let mut results = Vec::new();
    let findings = report
        .vulnerabilities
        .iter()
        .chain(report.malicious_packages.iter());
    for f in findings {
        let index = match rule_ids.iter().position(|r| *r == f.id) {
            Some(i) => i,
            None => {
                rule_ids.push(&f.id);
                let title = if f.title.is_empty() && f.related.is_empty() {
                    f.id.clone()
                } else {
                    super::display_title(f)
                };
                let link = f.link.clone().unwrap_or_default();
                rules.push(json!({
                    "id": f.id,
                    "name": "OsPackageVulnerability",
                    "shortDescription": {"text": title},
                    "fullDescription": {"text": title},
                    "helpUri": link,
                    "help": {
                        "text": format!("{}\nSeverity: {}\nAliases: {}\n{}", f.id, rating_text(f), f.aliases.join(", "), link),
                        "markdown": format!("**{}** ({})\n\n{}\n\nAliases: {}\n\n[{}]({})", f.id, rating_text(f), title, f.aliases.join(", "), link, link),
                    },
                    "defaultConfiguration": {"level": level(f.severity)},
                    "properties": {
                        "precision": "very-high",
                        "security-severity": security_severity(f),
                        "tags": ["vulnerability", "security", f.severity.as_str()],
                    },
                }));
                rules.len() - 1
            }
        };
        let uri = if f.package.path.is_empty() {
            report.target.clone()
        } else {
            f.package.path.trim_start_matches('/').to_string()
        };
        let fixed = f
            .fixed_version
            .as_deref()
            .map(|v| format!(", fixed in {v}"))
            .unwrap_or_default();
        results.push(json!({
            "ruleId": f.id,
            "ruleIndex": index,
            "level": level(f.severity),
            "message": {"text": format!(
                "Package: {}\nInstalled version: {}\nVulnerability: {}\nSeverity: {}{}\nImage: {}",
                f.package.name, f.package.version, f.id, f.severity, fixed, report.target)},
            "locations": [{
                "physicalLocation": {
                    "artifactLocation": {"uri": uri, "uriBaseId": "ROOTPATH"},
                    "region": {"startLine": 1, "startColumn": 1, "endLine": 1, "endColumn": 1},
                },
                "message": {"text": format!("{}: {}@{}", report.target, f.package.name, f.package.version)},
            }],
            "partialFingerprints": {"primaryLocationLineHash": format!("{}/{}/{}", f.id, f.package.purl, f.package.version)},
            "properties": rating_properties(f),
        }));
    }
    for (i, r) in rules.iter_mut().enumerate() {
        // Rules for malicious-package records are named as such.
        if report
            .malicious_packages
            .iter()
            .any(|f| Some(f.id.as_str()) == rule_ids.get(i).copied())
        {
            r["name"] = json!("MaliciousPackage");
        } else if report
            .vulnerabilities
            .iter()
            .any(|f| f.id == rule_ids[i] && !f.package.ecosystem.is_os())
        {
            r["name"] = json!("LanguageSpecificPackageVulnerability");
        }
    }
    let sections = [
        ("BaselineRisk", "baseline", &report.baseline_risks),
        ("Secret", "secret", &report.secrets),
        ("MaliciousSample", "malware", &report.malicious_samples),
    ];
    for (kind, tag, section) in sections {
        let Some(section) = section else { continue };
        for f in &section.findings {
            let index = match rule_ids.iter().position(|r| *r == f.id) {
                Some(i) => i,
                None => {
                    rule_ids.push(&f.id);
                    let cis = f
                        .cis
                        .as_deref()
                        .map(|c| format!(" (CIS Docker Benchmark {c})"))
                        .unwrap_or_default();
                    rules.push(json!({
                        "id": f.id,
                        "name": kind,
                        "shortDescription": {"text": f.title},
                        "fullDescription": {"text": format!("{}{cis}", f.title)},
                        "help": {
                            "text": format!("{}{cis}\nSeverity: {}\n{}", f.title, f.severity, f.remediation),
                            "markdown": format!("**{}** ({}){cis}\n\n{}", f.id, f.severity, f.remediation),
                        },
                        "defaultConfiguration": {"level": level(f.severity)},
                        "properties": {
                            "precision": "high",
                            "security-severity": check_security_severity(f.severity),
                            "tags": [tag, "security", f.severity.as_str()],
                        },
                    }));
                    rules.len() - 1
                }
            };
            let uri = f.path.clone().unwrap_or_else(|| report.target.clone());
            let line = f.line.unwrap_or(1);
            let place = f
                .config_key
                .as_deref()
                .map(|k| format!(" ({k})"))
                .unwrap_or_default();
            results.push(json!({
                "ruleId": f.id,
                "ruleIndex": index,
                "level": level(f.severity),
                "message": {"text": format!("{}: {}{place}\nImage: {}", f.title, f.evidence, report.target)},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": uri, "uriBaseId": "ROOTPATH"},
                        "region": {"startLine": line, "startColumn": 1, "endLine": line, "endColumn": 1},
                    },
                    "message": {"text": format!("{}: {}{place}", report.target, f.id)},
                }],
                "partialFingerprints": {"primaryLocationLineHash": format!("{}/{}/{}/{}", f.id, uri, line, f.config_key.as_deref().unwrap_or(""))},
            }));
        }
    }
    json!({
        "version": "2.1.0",
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "runs": [{
            "tool": {"driver": {
                "name": "imagewarden",
                "informationUri": "https://github.com/imagewarden/imagewarden",
                "version": report.scanner_version,
                "rules": rules,
            }},
            "results": results,
            "columnKind": "utf16CodeUnits",
            "originalUriBaseIds": {"ROOTPATH": {"uri": "file:///"}},
            "properties": {"imageName": report.target, "imageDigest": report.digest},
        }],
    })
}

/// GitHub's `security-severity` for a check finding's severity.
fn check_security_severity(sev: Severity) -> &'static str {
    match sev {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "2.0",
        Severity::Unknown => "0.0",
    }
}
