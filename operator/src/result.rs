//! Turning a scan into an `ImageScanResult`: deterministic names, findings sorted by
//! severity, counts per class, and a size budget that keeps the object well under
//! etcd's limit. Pure functions; the controllers do the I/O.

use std::io::{Read, Write};

use base64::Engine;
use imagewarden_scanner::inventory::Inventory;
use imagewarden_scanner::matcher::{self, Matches};
use imagewarden_scanner::report::coverage_warnings;
use imagewarden_scanner::vulndb::{DbInfo, Severity as DbSeverity};
use sha2::{Digest, Sha256};

use crate::crd::{
    Finding, FindingClass, ImageScanResultStatus, OperatingSystem, ResultSummary, Severity,
};

/// Bytes the findings of one result may take when serialized. The object also holds the
/// compressed inventory; together they stay well under the 1 MiB the result is promised
/// to stay below (etcd's own limit is about 1.5 MiB).
pub const FINDINGS_BUDGET: usize = 700 * 1024;

/// Bytes the compressed inventory may take; larger inventories are not stored, and a
/// database update then rescans the image instead of re-matching it.
pub const INVENTORY_BUDGET: usize = 200 * 1024;

/// The warning of a result whose inventory did not fit [`INVENTORY_BUDGET`].
pub const INVENTORY_NOT_KEPT: &str = "the package inventory is larger than the 200 KiB a result keeps: a vulnerability database update scans this image again instead of re-matching it";

/// Name of the ImageScanResult for `repository` at `digest`: readable, deterministic and
/// a valid DNS subdomain. Different registries or repositories that sanitize alike get
/// different names through a short hash of the full location.
pub fn result_name(registry: &str, repository: &str, digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    let mut base: String = repository
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while base.contains("--") {
        base = base.replace("--", "-");
    }
    let base: String = base.trim_matches('-').chars().take(40).collect();
    let base = base.trim_end_matches('-');
    let location = hex::encode(&Sha256::digest(format!("{registry}/{repository}").as_bytes())[..3]);
    let short: String = hex.chars().take(12).collect();
    if base.is_empty() {
        format!("img-{location}-{short}")
    } else {
        format!("{base}-{location}-{short}")
    }
}

/// First 12 hex digits of a digest.
pub fn short_digest(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.chars().take(12).collect()
}

/// The CRD severity of a scanner severity.
pub fn severity(s: DbSeverity) -> Severity {
    match s {
        DbSeverity::Critical => Severity::Critical,
        DbSeverity::High => Severity::High,
        DbSeverity::Medium => Severity::Medium,
        DbSeverity::Low => Severity::Low,
        DbSeverity::Unknown => Severity::Unknown,
    }
}

fn vulnerability_finding(f: &matcher::Finding, class: FindingClass) -> Finding {
    Finding {
        id: f.id.clone(),
        class,
        severity: severity(f.severity),
        score: f.score,
        vector: f.vector.clone(),
        severity_source: f.severity_source.clone(),
        package: Some(f.package.name.clone()),
        version: Some(f.package.version.clone()),
        fixed_version: f.fixed_version.clone(),
        // Errata name the CVEs they fix after their title.
        title: Some(imagewarden_scanner::report::display_title(f)).filter(|t| !t.is_empty()),
        location: (!f.package.path.is_empty()).then(|| f.package.path.clone()),
        link: f.link.clone(),
    }
}

/// Baseline risks, exposed secrets and malicious samples of a scan in CRD form. Secrets are
/// already redacted by the scanner; the evidence says what was seen.
pub fn check_findings(found: &imagewarden_scanner::checks::CheckFindings) -> Vec<Finding> {
    let convert = |f: &imagewarden_scanner::checks::CheckFinding, class: FindingClass| Finding {
        id: f.id.clone(),
        class,
        severity: severity(f.severity),
        score: None,
        vector: None,
        severity_source: None,
        package: None,
        version: None,
        fixed_version: None,
        title: Some(match &f.cis {
            Some(cis) => format!("{} (CIS {cis}): {}", f.title, f.evidence),
            None => format!("{}: {}", f.title, f.evidence),
        }),
        location: f
            .path
            .clone()
            .map(|p| match f.line {
                Some(l) => format!("{p}:{l}"),
                None => p,
            })
            .or_else(|| f.config_key.clone()),
        link: None,
    };
    let mut out = Vec::new();
    out.extend(
        found
            .baseline
            .findings
            .iter()
            .map(|f| convert(f, FindingClass::BaselineRisk)),
    );
    out.extend(
        found
            .secrets
            .findings
            .iter()
            .map(|f| convert(f, FindingClass::BaselineRisk)),
    );
    out.extend(
        found
            .malware
            .findings
            .iter()
            .map(|f| convert(f, FindingClass::MaliciousSample)),
    );
    out
}

/// Every finding of a scan in CRD form (not yet sorted or cut).
pub fn findings_of(matches: &Matches, extra: Vec<Finding>) -> Vec<Finding> {
    let mut findings: Vec<Finding> = matches
        .vulnerabilities
        .iter()
        .map(|f| {
            let class = match f.class {
                matcher::FindingClass::Os => FindingClass::SystemVulnerability,
                matcher::FindingClass::App => FindingClass::ApplicationVulnerability,
            };
            vulnerability_finding(f, class)
        })
        .collect();
    findings.extend(
        matches
            .malicious_packages
            .iter()
            .map(|f| vulnerability_finding(f, FindingClass::MaliciousSample)),
    );
    findings.extend(extra);
    findings
}

/// Counts by severity, in total and per class.
pub fn summarize(findings: &[Finding]) -> ResultSummary {
    let mut summary = ResultSummary::default();
    for f in findings {
        match f.class {
            FindingClass::SystemVulnerability => summary.system_vulnerabilities.add(f.severity),
            FindingClass::ApplicationVulnerability => {
                summary.application_vulnerabilities.add(f.severity)
            }
            FindingClass::BaselineRisk => summary.baseline_risks.add(f.severity),
            FindingClass::MaliciousSample => summary.malicious_samples.add(f.severity),
        }
        match f.severity {
            Severity::Critical => summary.critical += 1,
            Severity::High => summary.high += 1,
            Severity::Medium => summary.medium += 1,
            Severity::Low => summary.low += 1,
            Severity::Unknown => summary.unknown += 1,
        }
    }
    summary
}

/// Sorts findings most severe first (then by score, id, package) and keeps as many as fit
/// in `budget` serialized bytes. Returns whether any were cut.
pub fn sort_and_cut(findings: &mut Vec<Finding>, budget: usize) -> bool {
    findings.sort_by(|a, b| {
        a.severity
            .cmp(&b.severity)
            .then_with(|| {
                b.score
                    .unwrap_or(0.0)
                    .partial_cmp(&a.score.unwrap_or(0.0))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .then_with(|| a.id.cmp(&b.id))
            .then_with(|| a.package.cmp(&b.package))
    });
    let mut used = 0usize;
    let mut keep = findings.len();
    for (i, f) in findings.iter().enumerate() {
        used += serde_json::to_vec(f).map(|v| v.len() + 1).unwrap_or(0);
        if used > budget {
            keep = i;
            break;
        }
    }
    let cut = keep < findings.len();
    findings.truncate(keep);
    cut
}

/// What goes into the status of an ImageScanResult for one scan.
pub struct ScanOutcome<'a> {
    pub digest: &'a str,
    pub inventory: &'a Inventory,
    pub matches: &'a Matches,
    /// Baseline, secret and malware findings, already in CRD form.
    pub extra: Vec<Finding>,
    pub database_version: &'a str,
    /// What the database holds: decides which packages could not be checked.
    pub database: &'a DbInfo,
}

/// At most this many warnings are kept in a result, each at most [`WARNING_CHARS`] long
/// (parts of them, such as OS names and rpm vendors, come from the image).
pub const MAX_WARNINGS: usize = 20;
/// See [`MAX_WARNINGS`].
pub const WARNING_CHARS: usize = 300;

/// The warnings of a scan, bounded for the status: coverage (see [`coverage_warnings`]),
/// then the matcher's (versions and advisories that could not be evaluated), and when cut,
/// one line counting the rest.
pub fn result_warnings(
    inventory: &Inventory,
    database: &DbInfo,
    matched: &[String],
) -> Vec<String> {
    let all: Vec<String> = coverage_warnings(inventory, database)
        .into_iter()
        .chain(matched.iter().cloned())
        .collect();
    let mut out: Vec<String> = all
        .iter()
        .take(if all.len() > MAX_WARNINGS {
            MAX_WARNINGS - 1
        } else {
            MAX_WARNINGS
        })
        .map(|w| w.chars().take(WARNING_CHARS).collect())
        .collect();
    if all.len() > out.len() {
        out.push(format!(
            "{} more warning(s) not shown",
            all.len() - out.len()
        ));
    }
    out
}

/// Builds the status of an ImageScanResult (without scan time and conditions, which the
/// caller sets).
pub fn build_status(outcome: ScanOutcome<'_>) -> ImageScanResultStatus {
    let mut findings = findings_of(outcome.matches, outcome.extra);
    let summary = summarize(&findings);
    let total = findings.len() as u32;
    let finding_ids = crate::finding_ids::encode(&findings);
    let truncated = sort_and_cut(&mut findings, FINDINGS_BUDGET);
    let inventory = encode_inventory(outcome.inventory);
    let mut warnings = result_warnings(
        outcome.inventory,
        outcome.database,
        &outcome.matches.warnings,
    );
    if inventory.is_none() {
        warnings.insert(0, INVENTORY_NOT_KEPT.to_string());
        warnings.truncate(MAX_WARNINGS);
    }
    ImageScanResultStatus {
        short_digest: Some(short_digest(outcome.digest)),
        os: outcome.inventory.os.as_ref().map(|os| OperatingSystem {
            family: os.family.clone(),
            version: os.version.clone(),
        }),
        scanner_version: Some(imagewarden_scanner::SCANNER_VERSION.to_string()),
        database_version: Some(outcome.database_version.to_string()),
        scan_time: None,
        summary,
        findings,
        truncated,
        total_findings: total,
        warnings,
        inventory,
        finding_ids,
        conditions: Vec::new(),
        ..Default::default()
    }
}

/// The inventory as stored in a result: gzip-compressed JSON in base64, or `None` when it
/// does not fit [`INVENTORY_BUDGET`].
pub fn encode_inventory(inventory: &Inventory) -> Option<String> {
    let json = serde_json::to_vec(inventory).ok()?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&json).ok()?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(gz.finish().ok()?);
    (encoded.len() <= INVENTORY_BUDGET).then_some(encoded)
}

/// Reads back an inventory stored by [`encode_inventory`].
pub fn decode_inventory(encoded: &str) -> anyhow::Result<Inventory> {
    let gz = base64::engine::general_purpose::STANDARD.decode(encoded)?;
    let mut json = Vec::new();
    // Bounded: a stored inventory is at most a few MiB uncompressed.
    flate2::read::GzDecoder::new(&gz[..])
        .take(64 << 20)
        .read_to_end(&mut json)?;
    Ok(serde_json::from_slice(&json)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(id: &str, severity: Severity, score: Option<f64>) -> Finding {
        Finding {
            id: id.into(),
            class: FindingClass::SystemVulnerability,
            severity,
            score,
            vector: None,
            severity_source: None,
            package: Some("openssl".into()),
            version: Some("1.1.0f-3+deb9u2".into()),
            fixed_version: Some("1.1.0l-1~deb9u6".into()),
            title: Some("x".repeat(200)),
            location: None,
            link: None,
        }
    }

    #[test]
    fn names_are_valid_deterministic_and_distinct() {
        let d = "sha256:3b5e2a7c6f1d8e9a0b4c2d6e8f0a1b3c5d7e9f1a2b4c6d8e0f2a4b6c8d0e2f4a";
        let a = result_name("r.example.com", "Team-A/API_server", d);
        assert_eq!(a, result_name("r.example.com", "Team-A/API_server", d));
        assert!(a.starts_with("team-a-api-server-"), "{a}");
        assert!(a.ends_with("-3b5e2a7c6f1d"), "{a}");
        assert!(a.len() <= 63);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        assert_ne!(a, result_name("r.example.com", "team-a/api-server", d));
        assert_ne!(a, result_name("other.example.com", "Team-A/API_server", d));
        let long = result_name("r", &"x/".repeat(100), d);
        assert!(long.len() <= 63, "{long}");
    }

    #[test]
    fn findings_sort_most_severe_first_and_cut_to_budget() {
        let mut findings = vec![
            finding("CVE-3", Severity::Low, Some(2.0)),
            finding("CVE-1", Severity::Critical, Some(9.1)),
            finding("CVE-2", Severity::High, Some(7.5)),
            finding("CVE-4", Severity::High, Some(8.8)),
            finding("CVE-5", Severity::Unknown, None),
        ];
        let all = summarize(&findings);
        assert_eq!((all.critical, all.high, all.low, all.unknown), (1, 2, 1, 1));
        assert_eq!(all.system_vulnerabilities.total(), 5);
        assert!(!sort_and_cut(&mut findings, 1 << 20));
        let ids: Vec<&str> = findings.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["CVE-1", "CVE-4", "CVE-2", "CVE-3", "CVE-5"]);

        let one = serde_json::to_vec(&findings[0]).unwrap().len() + 1;
        assert!(sort_and_cut(&mut findings, one * 2 + 10));
        assert_eq!(findings.len(), 2);
        assert_eq!(findings[1].id, "CVE-4");
    }

    #[test]
    fn a_huge_report_still_fits_the_object_budget() {
        let mut findings: Vec<Finding> = (0..50_000)
            .map(|i| finding(&format!("CVE-2024-{i:05}"), Severity::Medium, Some(5.0)))
            .collect();
        assert!(sort_and_cut(&mut findings, FINDINGS_BUDGET));
        let bytes = serde_json::to_vec(&findings).unwrap().len();
        assert!(bytes <= FINDINGS_BUDGET + 1, "{bytes}");
        assert!(!findings.is_empty());
    }

    #[test]
    fn inventories_round_trip_through_their_stored_form() {
        let inventory: Inventory = serde_json::from_value(serde_json::json!({
            "target": "r/app:1", "os": {"family": "debian", "version": "9"},
            "packages": [{"ecosystem": "Debian", "name": "libssl1.1", "version": "1.1.0f-3+deb9u2",
                "purl": "pkg:deb/debian/libssl1.1@1.1.0f-3+deb9u2", "sourceName": "openssl",
                "path": "var/lib/dpkg/status"}]
        }))
        .unwrap();
        let stored = encode_inventory(&inventory).unwrap();
        assert_eq!(decode_inventory(&stored).unwrap(), inventory);
    }

    #[test]
    fn a_distribution_without_advisories_is_a_warning_in_the_status_not_a_clean_result() {
        let inventory: Inventory = serde_json::from_value(serde_json::json!({
            "target": "r/app:1", "os": {"family": "alinux", "version": "3"},
            "packages": [{"ecosystem": "Red Hat", "name": "openssl-libs",
                "version": "1:1.1.1k-5.al8", "purl": "pkg:rpm/alibaba/openssl-libs@1.1.1k-5.al8",
                "vendor": "Alibaba Cloud", "path": "var/lib/rpm/Packages"}]
        }))
        .unwrap();
        let database = DbInfo::default();
        let status = build_status(ScanOutcome {
            digest: "sha256:3b5e2a7c6f1d8e9a0b4c2d6e8f0a1b3c5d7e9f1a2b4c6d8e0f2a4b6c8d0e2f4a",
            inventory: &inventory,
            matches: &Matches::default(),
            extra: Vec::new(),
            database_version: "sha256:0",
            database: &database,
        });
        assert_eq!(status.total_findings, 0);
        assert_eq!(
            status.warnings,
            coverage_warnings(&inventory, &database),
            "the result says what the report says"
        );
        assert_eq!(
            status.warnings,
            ["no advisory source for this distribution (Alibaba Cloud Linux 3): 1 OS package(s) not checked"]
        );
        // Image-controlled text is bounded in the object.
        let mut long = inventory.clone();
        long.os.as_mut().unwrap().family = "x".repeat(10_000);
        let w = result_warnings(&long, &database, &[]);
        assert!(w.len() == 1 && w[0].chars().count() == WARNING_CHARS);
    }

    #[test]
    fn findings_carry_the_rating_and_whose_it_is() {
        // DLA-3008-1 has no rating of its own: NVD's CVSS of CVE-2022-1292 rates it.
        let testdata = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scanner/testdata");
        let mut builder = imagewarden_scanner::vulndb::DbBuilder::new();
        builder
            .add_source(testdata.join("osv").to_str().unwrap())
            .unwrap();
        builder
            .add_source(&format!("nvd:{}", testdata.join("nvd").display()))
            .unwrap();
        let db = builder.into_db("test").unwrap();
        let inventory: Inventory = serde_json::from_value(serde_json::json!({
            "target": "r/app:1", "os": {"family": "debian", "version": "9"},
            "packages": [{"ecosystem": "Debian", "name": "libssl1.1", "version": "1.1.0f-3+deb9u2",
                "purl": "pkg:deb/debian/libssl1.1@1.1.0f-3+deb9u2", "sourceName": "openssl",
                "path": "var/lib/dpkg/status"}]
        }))
        .unwrap();
        let matches = imagewarden_scanner::matcher::match_inventory(&inventory, &db).unwrap();
        let scanner_finding = matches
            .vulnerabilities
            .iter()
            .find(|f| f.id == "DLA-3008-1")
            .unwrap()
            .clone();
        let status = build_status(ScanOutcome {
            digest: "sha256:00",
            inventory: &inventory,
            matches: &matches,
            extra: Vec::new(),
            database_version: "sha256:db",
            database: db.info(),
        });
        let f = status
            .findings
            .iter()
            .find(|f| f.id == "DLA-3008-1")
            .unwrap();
        assert_eq!(f.severity_source.as_deref(), Some("nvd"));
        assert_eq!(f.vector, scanner_finding.vector);
        assert!(f
            .vector
            .as_deref()
            .is_some_and(|v| v.starts_with("CVSS:3.1/")));
        assert_eq!(f.score, scanner_finding.score);
        assert_eq!(f.severity, severity(scanner_finding.severity));
        assert_ne!(f.severity, Severity::Unknown);
    }

    #[test]
    fn a_version_that_cannot_be_checked_is_a_warning_in_the_status() {
        let testdata = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scanner/testdata");
        let db =
            imagewarden_scanner::vulndb::Db::load(&[testdata.join("osv").display().to_string()])
                .unwrap();
        let deep = "1-".repeat(5_000);
        let inventory: Inventory = serde_json::from_value(serde_json::json!({
            "target": "r/app:1",
            "packages": [{"ecosystem": "PyPI", "name": "django", "version": deep,
                "purl": "", "path": "usr/lib/python3/dist-packages"}]
        }))
        .unwrap();
        let matches = matcher::match_inventory(&inventory, &db).unwrap();
        assert!(
            !matches.warnings.is_empty(),
            "the matcher says it skipped the package"
        );
        let status = build_status(ScanOutcome {
            digest: "sha256:00",
            inventory: &inventory,
            matches: &matches,
            extra: Vec::new(),
            database_version: "sha256:db",
            database: db.info(),
        });
        assert_eq!(status.total_findings, 0);
        assert_eq!(status.warnings.len(), matches.warnings.len());
        assert!(
            status.warnings[0].contains("django") && status.warnings[0].contains("not checked")
        );
        assert!(status
            .warnings
            .iter()
            .all(|w| w.chars().count() <= WARNING_CHARS));

        // Many warnings: the first ones, then one line counting the rest.
        let many: Vec<String> = (0..50).map(|i| format!("warning {i}")).collect();
        let w = result_warnings(&inventory, db.info(), &many);
        assert_eq!(w.len(), MAX_WARNINGS);
        assert_eq!(
            w.last().unwrap(),
            &format!("{} more warning(s) not shown", 50 - (MAX_WARNINGS - 1))
        );
    }
}
