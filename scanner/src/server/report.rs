//! Harbor's reports made from imagewarden's: the vulnerability report
//! (`HarborVulnerabilityReport`) and the SBOM report (`HarborSbomReport`, CycloneDX).

use serde_json::{json, Map, Value};

use super::api::{Artifact, Scanner, CYCLONEDX};
use crate::finding::{Finding, Severity};
use crate::report::ScanReport;

/// Harbor's name of a severity (`Severity` of the spec).
pub fn harbor_severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Unknown => "Unknown",
        Severity::Low => "Low",
        Severity::Medium => "Medium",
        Severity::High => "High",
        Severity::Critical => "Critical",
    }
}

/// The id Harbor shows and matches its CVE allow lists against: the finding's CVE (its
/// own id or an alias) when it has one, else its own id.
fn harbor_id(f: &Finding) -> &str {
    f.ids()
        .find(|id| id.starts_with("CVE-"))
        .unwrap_or(f.id.as_str())
}

/// `preferred_cvss` of a finding rated with a CVSS v3 or v2 vector.
fn preferred_cvss(f: &Finding) -> Option<Value> {
    let vector = f.vector.as_deref()?;
    let mut cvss = Map::new();
    if vector.starts_with("CVSS:3.") {
        cvss.insert("vector_v3".into(), json!(vector));
        if let Some(score) = f.score {
            cvss.insert("score_v3".into(), json!(score));
        }
    } else if vector.starts_with("AV:") || vector.starts_with("(AV:") {
        cvss.insert("vector_v2".into(), json!(vector));
        if let Some(score) = f.score {
            cvss.insert("score_v2".into(), json!(score));
        }
    } else {
        return None;
    }
    Some(Value::Object(cvss))
}

/// One `VulnerabilityItem`.
fn item(f: &Finding, malicious: bool) -> Value {
    let mut v = json!({
        "id": harbor_id(f),
        "package": f.package.name,
        "version": f.package.version,
        "severity": harbor_severity(f.severity),
        "description": f.title,
    });
    if let Some(fixed) = &f.fixed_version {
        v["fix_version"] = json!(fixed);
    }
    let links: Vec<&str> = f
        .link
        .iter()
        .map(String::as_str)
        .filter(|l| reqwest::Url::parse(l).is_ok_and(|u| matches!(u.scheme(), "http" | "https")))
        .collect();
    if !links.is_empty() {
        v["links"] = json!(links);
    }
    if let Some(cvss) = preferred_cvss(f) {
        v["preferred_cvss"] = cvss;
    }
    let mut vendor = Map::new();
    vendor.insert("advisory".into(), json!(f.id));
    if !f.aliases.is_empty() {
        vendor.insert("aliases".into(), json!(f.aliases));
    }
    if let Some(source) = &f.severity_source {
        vendor.insert("severity_source".into(), json!(source));
    }
    if let Some(score) = f.score {
        vendor.insert("score".into(), json!(score));
    }
    if let Some(vector) = &f.vector {
        vendor.insert("vector".into(), json!(vector));
    }
    vendor.insert("purl".into(), json!(f.package.purl));
    vendor.insert("ecosystem".into(), json!(f.package.ecosystem.as_str()));
    if let Some(layer) = &f.package.layer {
        vendor.insert("layer".into(), json!(layer));
    }
    if malicious {
        vendor.insert("class".into(), json!("malicious-package"));
    }
    v["vendor_attributes"] = Value::Object(vendor);
    v
}

/// `HarborVulnerabilityReport` of `report`: every vulnerability and malicious package,
/// the worst severity among them (`Unknown` when there is none).
pub fn vulnerability_report(report: &ScanReport, artifact: &Artifact, generated_at: &str) -> Value {
    let findings: Vec<Value> = report
        .vulnerabilities
        .iter()
        .map(|f| item(f, false))
        .chain(report.malicious_packages.iter().map(|f| item(f, true)))
        .collect();
    let worst = report
        .vulnerabilities
        .iter()
        .chain(report.malicious_packages.iter())
        .map(|f| f.severity)
        .max()
        .unwrap_or(Severity::Unknown);
    json!({
        "generated_at": generated_at,
        "artifact": artifact,
        "scanner": Scanner::imagewarden(),
        "severity": harbor_severity(worst),
        "vulnerabilities": findings,
    })
}

/// `HarborSbomReport` of `report`: the CycloneDX document of its inventory.
pub fn sbom_report(report: &ScanReport, artifact: &Artifact, generated_at: &str) -> Value {
    json!({
        "generated_at": generated_at,
        "artifact": artifact,
        "scanner": Scanner::imagewarden(),
        "vendor_attributes": {
            "spec-version": "1.5",
            "created-by": "imagewarden",
            "packages": report.inventory.packages.len(),
        },
        "media_type": CYCLONEDX,
        "sbom": crate::report::cyclonedx::inventory(&report.inventory),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(value: Value) -> Finding {
        let mut base = json!({
            "id": "ALPINE-CVE-2019-14697", "aliases": ["CVE-2019-14697"], "severity": "critical",
            "score": 9.8, "vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "severitySource": "nvd",
            "package": {"ecosystem": "Alpine", "name": "musl", "version": "1.1.22-r2",
                "purl": "pkg:apk/alpine/musl@1.1.22-r2"},
            "fixedVersion": "1.1.22-r3", "title": "musl libc through 1.1.23 has an x87 issue",
            "link": "https://security.alpinelinux.org/vuln/CVE-2019-14697", "class": "os"
        });
        base.as_object_mut()
            .unwrap()
            .extend(value.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn a_finding_becomes_a_harbor_item() {
        let v = item(&finding(json!({})), false);
        assert_eq!(v["id"], "CVE-2019-14697");
        assert_eq!(v["severity"], "Critical");
        assert_eq!(v["fix_version"], "1.1.22-r3");
        assert_eq!(v["preferred_cvss"]["score_v3"], 9.8);
        assert_eq!(v["vendor_attributes"]["advisory"], "ALPINE-CVE-2019-14697");
        assert_eq!(
            v["links"][0],
            "https://security.alpinelinux.org/vuln/CVE-2019-14697"
        );
    }

    #[test]
    fn unusable_links_and_vectors_are_left_out() {
        let v = item(
            &finding(json!({"link": "javascript:alert(1)", "fixedVersion": null,
                "vector": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"})),
            true,
        );
        assert!(v.get("links").is_none());
        assert!(v.get("fix_version").is_none());
        assert!(v.get("preferred_cvss").is_none());
        assert_eq!(v["vendor_attributes"]["class"], "malicious-package");
        let v2 = item(
            &finding(json!({"vector": "AV:N/AC:L/Au:N/C:P/I:P/A:P", "score": 7.5})),
            false,
        );
        assert_eq!(v2["preferred_cvss"]["score_v2"], 7.5);
    }
}
