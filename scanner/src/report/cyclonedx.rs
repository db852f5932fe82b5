//! CycloneDX 1.5 JSON: the affected packages as components and the findings as
//! `vulnerabilities` referring to them.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::ScanReport;
use crate::finding::Finding;
use crate::finding::Severity;

fn method(vector: Option<&str>) -> &'static str {
    match vector {
        Some(v) if v.starts_with("CVSS:4.0") => "CVSSv4",
        Some(v) if v.starts_with("CVSS:3.1") => "CVSSv31",
        Some(v) if v.starts_with("CVSS:3.0") => "CVSSv3",
        Some(_) => "CVSSv2",
        None => "other",
    }
}

fn source(id: &str) -> Value {
    let (name, url) = if id.starts_with("CVE-") {
        ("NVD", format!("https://nvd.nist.gov/vuln/detail/{id}"))
    } else if id.starts_with("GHSA-") {
        ("GitHub", format!("https://github.com/advisories/{id}"))
    } else if id.starts_with("DSA-") || id.starts_with("DLA-") {
        (
            "Debian",
            format!("https://security-tracker.debian.org/tracker/{id}"),
        )
    } else {
        ("OSV", format!("https://osv.dev/vulnerability/{id}"))
    };
    json!({"name": name, "url": url})
}

/// Whose rating a finding's severity is, as a CycloneDX source.
fn rating_source(f: &Finding) -> Option<Value> {
    let who = f.severity_source.as_deref()?;
    Some(match who {
        "nvd" => {
            // The CVE's own page when the finding has one CVE; with several, the highest
            // rated of them gave the rating, and NVD is named without picking one.
            let mut cves: Vec<&str> = f
                .ids()
                .filter(|id| crate::vulndb::nvd::cve_key(id).is_some())
                .filter_map(|id| id.rfind("CVE-").map(|at| &id[at..]))
                .collect();
            cves.sort_unstable();
            cves.dedup();
            match cves[..] {
                [cve] => {
                    json!({"name": "NVD", "url": format!("https://nvd.nist.gov/vuln/detail/{cve}")})
                }
                _ => json!({"name": "NVD", "url": "https://nvd.nist.gov"}),
            }
        }
        "ghsa" => {
            json!({"name": "GitHub", "url": format!("https://github.com/advisories/{}", f.id)})
        }
        "debian" => json!({"name": "Debian"}),
        "ubuntu" => json!({"name": "Ubuntu"}),
        "alpine" => json!({"name": "Alpine"}),
        "osv" => json!({"name": "OSV", "url": format!("https://osv.dev/vulnerability/{}", f.id)}),
        other => json!({"name": other}),
    })
}

fn bom_ref(f: &Finding) -> String {
    if f.package.purl.is_empty() {
        format!(
            "{}/{}@{}",
            f.package.ecosystem, f.package.name, f.package.version
        )
    } else {
        f.package.purl.clone()
    }
}

/// CycloneDX 1.5 JSON of an inventory: the SBOM of `imagewarden inventory --format cyclonedx`
/// and of the scanner API's sbom capability.
pub fn inventory(inv: &crate::inventory::Inventory) -> serde_json::Value {
    let mut components: Vec<serde_json::Value> = Vec::new();
    if let Some(os) = &inv.os {
        components.push(serde_json::json!({
            "type": "operating-system",
            "bom-ref": format!("os:{}@{}", os.family, os.version),
            "name": os.family,
            "version": os.version,
        }));
    }
    let mut seen = std::collections::HashSet::new();
    for p in &inv.packages {
        // bom-refs must be unique; the same package found at two paths is listed once per path.
        let mut bom_ref = p.purl.clone();
        if !seen.insert(bom_ref.clone()) {
            bom_ref = format!("{}#{}", p.purl, p.path);
            seen.insert(bom_ref.clone());
        }
        let mut props = vec![
            serde_json::json!({"name": "imagewarden:ecosystem", "value": p.ecosystem.as_str()}),
            serde_json::json!({"name": "imagewarden:path", "value": p.path}),
        ];
        if let Some(l) = &p.layer {
            props.push(serde_json::json!({"name": "imagewarden:layer", "value": l}));
        }
        if let Some(s) = &p.source_name {
            props.push(serde_json::json!({"name": "imagewarden:sourceName", "value": s}));
        }
        if let Some(s) = &p.source_version {
            props.push(serde_json::json!({"name": "imagewarden:sourceVersion", "value": s}));
        }
        components.push(serde_json::json!({
            "type": "library",
            "bom-ref": bom_ref,
            "name": p.name,
            "version": p.version,
            "purl": p.purl,
            "properties": props,
        }));
    }
    let mut metadata = serde_json::json!({
        "tools": {"components": [{"type": "application", "name": "imagewarden", "version": crate::SCANNER_VERSION}]},
        "component": {"type": "container", "bom-ref": "image", "name": inv.target},
    });
    if let Some(d) = &inv.digest {
        metadata["component"]["version"] = serde_json::Value::String(d.clone());
    }
    serde_json::json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": metadata,
        "components": components,
    })
}

/// Builds the CycloneDX document of a report.
pub fn render(report: &ScanReport) -> Value {
    let mut components: Vec<Value> = Vec::new();
    let mut refs: Vec<String> = Vec::new();
    let findings: Vec<&Finding> = report
        .vulnerabilities
        .iter()
        .chain(report.malicious_packages.iter())
        .collect();
    for f in &findings {
        let r = bom_ref(f);
        if !refs.contains(&r) {
            let mut c = json!({
                "bom-ref": r,
                "type": "library",
                "name": f.package.name,
                "version": f.package.version,
            });
            if !f.package.purl.is_empty() {
                c["purl"] = json!(f.package.purl);
            }
            components.push(c);
            refs.push(r);
        }
    }
    let vulnerabilities: Vec<Value> = findings
        .iter()
        .map(|f| {
            let mut rating = json!({"severity": if f.severity == Severity::Unknown { "unknown" } else { f.severity.as_str() }, "method": method(f.vector.as_deref())});
            if let Some(src) = rating_source(f) {
                rating["source"] = src;
            }
            if let Some(score) = f.score {
                rating["score"] = json!(score);
            }
            if let Some(v) = &f.vector {
                rating["vector"] = json!(v);
            }
            let mut v = json!({
                "bom-ref": format!("{}/{}", f.id, bom_ref(f)),
                "id": f.id,
                "source": source(&f.id),
                "ratings": [rating],
                "description": f.title,
                "affects": [{"ref": bom_ref(f)}],
                "references": f.aliases.iter().map(|a| json!({"id": a, "source": source(a)})).collect::<Vec<_>>(),
            });
            if let Some(link) = &f.link {
                v["advisories"] = json!([{"url": link}]);
            }
            if let Some(fixed) = &f.fixed_version {
                v["recommendation"] = json!(format!("Upgrade {} to {fixed} or later", f.package.name));
            }
            if report.malicious_packages.iter().any(|m| std::ptr::eq(m, *f)) {
                v["properties"] = json!([{"name": "imagewarden:class", "value": "malicious-package"}]);
            }
            v
        })
        .collect();
    // A stable serial number: the same report yields the same document.
    let digest = Sha256::digest(serde_json::to_vec(&vulnerabilities).unwrap_or_default());
    let h = hex::encode(&digest[..16]);
    let serial = format!(
        "urn:uuid:{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    );
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": serial,
        "version": 1,
        "metadata": {
            "timestamp": report.database.built_at,
            "tools": {"components": [{"type": "application", "name": "imagewarden", "version": report.scanner_version}]},
            "component": {"bom-ref": report.target, "type": "container", "name": report.target},
        },
        "components": components,
        "vulnerabilities": vulnerabilities,
    })
}
