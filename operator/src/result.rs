//! Turning a scan into an `ImageScanResult`: deterministic names, findings sorted by
//! severity, counts per class, and a size budget that keeps the object well under
//! etcd's limit. Pure functions; the controllers do the I/O.

use std::io::{Read, Write};

use base64::Engine;
use imagewarden_scanner::finding::ScannerKind;
use imagewarden_scanner::finding::{
    CheckFinding, Finding as VulnerabilityFinding, Severity as DbSeverity,
};
use imagewarden_scanner::inventory::Inventory;
use imagewarden_scanner::pipeline::{self, ScanOptions};
use imagewarden_scanner::report::{unrated_warning, ScanReport};
use sha2::{Digest, Sha256};

use crate::crd::{
    Finding, FindingClass, ImageScanResultStatus, OperatingSystem, PreviousMatch, ResultSummary,
    Severity, SeverityCounts,
};
use crate::db::LoadedDb;
use crate::Error;

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

fn vulnerability_finding(f: &VulnerabilityFinding, class: FindingClass) -> Finding {
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

/// A baseline risk, exposed secret or malicious sample in CRD form. Secrets are already
/// redacted by the scanner; the evidence says what was seen.
fn check_finding(f: &CheckFinding, class: FindingClass) -> Finding {
    Finding {
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
    }
}

/// Every finding of a report in CRD form (not yet sorted or cut): vulnerabilities,
/// malicious packages, then baseline risks, secrets and malicious samples.
pub fn report_findings(report: &ScanReport) -> Vec<Finding> {
    use imagewarden_scanner::policy::file::{classified_findings, ReportFinding};
    use imagewarden_scanner::policy::PolicyClass;
    classified_findings(report)
        .into_iter()
        .map(|(class, f)| {
            let class = match class {
                PolicyClass::SystemVulnerability => FindingClass::SystemVulnerability,
                PolicyClass::ApplicationVulnerability => FindingClass::ApplicationVulnerability,
                PolicyClass::BaselineRisk => FindingClass::BaselineRisk,
                PolicyClass::MaliciousSample => FindingClass::MaliciousSample,
            };
            match f {
                ReportFinding::Advisory(f) => vulnerability_finding(f, class),
                ReportFinding::Check(f) => check_finding(f, class),
            }
        })
        .collect()
}

impl ResultSummary {
    /// The number of findings at each severity, every class together.
    pub fn totals(&self) -> SeverityCounts {
        SeverityCounts {
            critical: self.critical,
            high: self.high,
            medium: self.medium,
            low: self.low,
            unknown: self.unknown,
        }
    }

    /// Counts `findings` by severity, per class and in total.
    pub fn of(findings: &[Finding]) -> ResultSummary {
        let mut summary = ResultSummary::default();
        for f in findings {
            if f.fixed_version.is_some() {
                summary.fixable += 1;
            }
            if f.class == FindingClass::MaliciousSample {
                summary.malicious += 1;
            }
            match f.class {
                FindingClass::SystemVulnerability => &mut summary.system_vulnerabilities,
                FindingClass::ApplicationVulnerability => &mut summary.application_vulnerabilities,
                FindingClass::BaselineRisk => &mut summary.baseline_risks,
                FindingClass::MaliciousSample => &mut summary.malicious_samples,
            }
            .add(f.severity);
        }
        let classes = [
            &summary.system_vulnerabilities,
            &summary.application_vulnerabilities,
            &summary.baseline_risks,
            &summary.malicious_samples,
        ];
        let sum = |level: fn(&SeverityCounts) -> u32| classes.iter().map(|c| level(c)).sum();
        ResultSummary {
            critical: sum(|c| c.critical),
            high: sum(|c| c.high),
            medium: sum(|c| c.medium),
            low: sum(|c| c.low),
            unknown: sum(|c| c.unknown),
            ..summary.clone()
        }
    }

    /// All findings counted.
    pub fn total(&self) -> u32 {
        self.critical + self.high + self.medium + self.low + self.unknown
    }

    /// The most severe level with a finding; `None` when there are none.
    pub fn worst(&self) -> Option<Severity> {
        [
            (self.critical, Severity::Critical),
            (self.high, Severity::High),
            (self.medium, Severity::Medium),
            (self.low, Severity::Low),
            (self.unknown, Severity::Unknown),
        ]
        .into_iter()
        .find(|(n, _)| *n > 0)
        .map(|(_, s)| s)
    }
}

/// Label of a result: the ScanRule that last wrote it.
pub const RULE_LABEL: &str = "imagewarden.io/rule";
/// Label of a result: its repository in label form (see [`repository_label_value`]).
pub const REPOSITORY_LABEL: &str = "imagewarden.io/repository";
/// Label of a result: its most severe finding's level, or `None`.
pub const WORST_SEVERITY_LABEL: &str = "imagewarden.io/worst-severity";

/// The value of [`WORST_SEVERITY_LABEL`] for `summary`: `Critical`, `High`, `Medium`,
/// `Low`, `Unknown` or `None`.
pub fn worst_severity_label_value(summary: &ResultSummary) -> &'static str {
    match summary.worst() {
        Some(Severity::Critical) => "Critical",
        Some(Severity::High) => "High",
        Some(Severity::Medium) => "Medium",
        Some(Severity::Low) => "Low",
        Some(Severity::Unknown) => "Unknown",
        None => "None",
    }
}

/// A repository as a label value: `/` becomes `.` (`team-a/api` → `team-a.api`), other
/// characters a label value cannot hold become `_`, and a value longer than the 63
/// characters a label allows keeps its first 50 and ends in `-` and 12 hex digits of the
/// SHA-256 of the repository.
pub fn repository_label_value(repository: &str) -> String {
    let mapped: String = repository
        .chars()
        .map(|c| match c {
            '/' => '.',
            c if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') => c,
            _ => '_',
        })
        .collect();
    // A label value begins and ends with an alphanumeric character.
    let trim = |s: &str| {
        s.trim_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_string()
    };
    let value = trim(&mapped);
    if value.len() <= 63 && value.len() == mapped.len() {
        return value;
    }
    let hash = hex::encode(&Sha256::digest(repository.as_bytes())[..6]);
    let head = trim(&value.chars().take(50).collect::<String>());
    if head.is_empty() {
        hash
    } else {
        format!("{head}-{hash}")
    }
}

/// The order findings are stored and shown in: most severe first, then by score, id,
/// package.
pub fn most_severe_first(a: &Finding, b: &Finding) -> std::cmp::Ordering {
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
}

/// Sorts findings most severe first (then by score, id, package) and keeps as many as fit
/// in `budget` serialized bytes. Returns whether any were cut.
pub fn sort_and_cut(findings: &mut Vec<Finding>, budget: usize) -> bool {
    findings.sort_by(most_severe_first);
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

/// At most this many warnings are kept in a result, each at most [`WARNING_CHARS`] long
/// (parts of them, such as OS names and rpm vendors, come from the image).
pub const MAX_WARNINGS: usize = 20;
/// See [`MAX_WARNINGS`].
pub const WARNING_CHARS: usize = 300;

/// The warnings of a report, bounded for the status: coverage (see [`coverage_warnings`]),
/// then the matcher's (versions and advisories that could not be evaluated), and when cut,
/// one line counting the rest. The command-line hint about missing NVD ratings stays out.
pub fn result_warnings(report: &ScanReport) -> Vec<String> {
    let unrated = unrated_warning(report.database.nvd_records, &report.vulnerabilities);
    let all: Vec<&String> = report
        .warnings
        .iter()
        .filter(|w| Some(*w) != unrated.as_ref())
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

/// The status of the ImageScanResult of `report`, matched against database
/// `database_version` (without scan time and conditions, which the caller sets).
/// `digest` is the digest the image was asked for by (an index's, for a multi-platform image).
pub fn result_status(
    report: &ScanReport,
    digest: &str,
    database_version: &str,
) -> ImageScanResultStatus {
    status_with(report, digest, database_version, Vec::new())
}

/// The status of a stored result re-matched against a newer database: `report` holds the
/// new matches of its stored inventory; the findings that do not come from the database
/// (baseline risks, secrets, malicious files) and the scanners stay as they were.
pub fn rematched_status(
    old: &ImageScanResultStatus,
    report: &ScanReport,
    digest: &str,
    database_version: &str,
) -> ImageScanResultStatus {
    let kept = old
        .findings
        .iter()
        .filter(|f| {
            f.class == FindingClass::BaselineRisk
                || (f.class == FindingClass::MaliciousSample && f.package.is_none())
        })
        .cloned()
        .collect();
    let mut status = status_with(report, digest, database_version, kept);
    status.scanners = old.scanners.clone();
    status.scan_time = old.scan_time.clone();
    status.conditions = old.conditions.clone();
    status.previous = match &old.database_version {
        // Matched again with another database: the counts before it.
        Some(before) if before != database_version => Some(PreviousMatch {
            database_version: before.clone(),
            totals: old.summary.totals(),
        }),
        _ => old.previous.clone(),
    };
    status
}

/// Re-matches the stored `inventory` of a result with status `old` against `db` (only the
/// vulnerability scanner uses the database, and only when it made the result).
pub fn rematch_inventory(
    old: &ImageScanResultStatus,
    inventory: Inventory,
    digest: &str,
    db: &LoadedDb,
) -> Result<ImageScanResultStatus, Error> {
    let scanners = result_scanners(old)
        .into_iter()
        .filter(|s| *s == ScannerKind::Vulnerability)
        .collect();
    let options = ScanOptions {
        scanners,
        ..ScanOptions::default()
    };
    let report = pipeline::scan_inventory(inventory, Some(&db.db), &options)?;
    Ok(rematched_status(old, &report, digest, &db.version))
}

/// The scanners that made a stored result (results written before they were recorded ran
/// them all).
pub fn result_scanners(status: &ImageScanResultStatus) -> Vec<ScannerKind> {
    if status.scanners.is_empty() {
        ScannerKind::ALL.to_vec()
    } else {
        status.scanners.clone()
    }
}

fn status_with(
    report: &ScanReport,
    digest: &str,
    database_version: &str,
    kept: Vec<Finding>,
) -> ImageScanResultStatus {
    let mut findings = report_findings(report);
    findings.extend(kept);
    let summary = ResultSummary::of(&findings);
    let total = findings.len() as u32;
    let finding_ids = crate::finding_ids::encode(&findings);
    let truncated = sort_and_cut(&mut findings, FINDINGS_BUDGET);
    let inventory = &report.inventory;
    let encoded = encode_inventory(inventory);
    let mut warnings = result_warnings(report);
    if encoded.is_none() {
        warnings.insert(0, INVENTORY_NOT_KEPT.to_string());
        warnings.truncate(MAX_WARNINGS);
    }
    ImageScanResultStatus {
        short_digest: Some(short_digest(digest)),
        os: inventory.os.as_ref().map(|os| OperatingSystem {
            family: os.family.clone(),
            version: os.version.clone(),
        }),
        scanner_version: Some(imagewarden_scanner::SCANNER_VERSION.to_string()),
        database_version: Some(database_version.to_string()),
        scanners: report.scanners.clone(),
        scan_time: None,
        summary,
        findings,
        truncated,
        total_findings: total,
        warnings,
        inventory: encoded,
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

/// A stored ImageScanResult as far as judging a finished scan needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredResult {
    pub scanner_version: Option<String>,
    pub database_version: Option<String>,
    pub has_inventory: bool,
    /// The scanners that made it.
    pub scanners: Vec<ScannerKind>,
}

impl StoredResult {
    /// What `status` says about the scan that wrote it.
    pub fn of_status(status: &ImageScanResultStatus) -> Self {
        Self {
            scanner_version: status.scanner_version.clone(),
            database_version: status.database_version.clone(),
            has_inventory: status.inventory.is_some(),
            scanners: result_scanners(status),
        }
    }
}

impl From<&crate::crd::ImageScanResult> for StoredResult {
    fn from(r: &crate::crd::ImageScanResult) -> Self {
        r.status.as_ref().map(Self::of_status).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_become_label_values_and_long_ones_are_hashed() {
        let valid = regex::Regex::new(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$").unwrap();
        assert_eq!(repository_label_value("team-a/api"), "team-a.api");
        assert_eq!(repository_label_value("library/redis_6"), "library.redis_6");
        let long = format!("team-a/{}", "x".repeat(80));
        let long_value = repository_label_value(&long);
        assert_eq!(long_value.len(), 50 + 1 + 12, "{long_value}");
        assert!(long_value.starts_with("team-a.xxx"), "{long_value}");
        // Two long repositories with the same first 50 characters stay apart.
        let other = format!("team-a/{}y", "x".repeat(80));
        assert_ne!(repository_label_value(&other), long_value);
        for repo in [
            "team-a/api",
            long.as_str(),
            "-odd-/",
            "a/-b",
            &"/".repeat(70),
        ] {
            let v = repository_label_value(repo);
            assert!(v.len() <= 63 && valid.is_match(&v), "{repo:?} -> {v:?}");
        }
    }

    #[test]
    fn the_worst_severity_label_follows_the_counts() {
        let mut s = ResultSummary::default();
        assert_eq!(worst_severity_label_value(&s), "None");
        s.unknown = 1;
        assert_eq!(worst_severity_label_value(&s), "Unknown");
        s.medium = 2;
        assert_eq!(worst_severity_label_value(&s), "Medium");
        s.critical = 1;
        assert_eq!(worst_severity_label_value(&s), "Critical");
    }
    use imagewarden_scanner::matcher::{self, Matches};
    use imagewarden_scanner::report::coverage_warnings;
    use imagewarden_scanner::vulndb::DbInfo;

    /// The report the pipeline makes of `inventory` and what matching found.
    fn report_of(inventory: &Inventory, db: &DbInfo, matches: Matches) -> ScanReport {
        ScanReport::new(inventory, db, matches, Vec::new())
    }

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
        let all = ResultSummary::of(&findings);
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
        let status = result_status(
            &report_of(&inventory, &database, Matches::default()),
            "sha256:3b5e2a7c6f1d8e9a0b4c2d6e8f0a1b3c5d7e9f1a2b4c6d8e0f2a4b6c8d0e2f4a",
            "sha256:0",
        );
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
        let w = result_warnings(&report_of(&long, &database, Matches::default()));
        assert!(w.len() == 1 && w[0].chars().count() == WARNING_CHARS);
    }

    #[test]
    fn findings_carry_the_rating_and_whose_it_is() {
        // DLA-3008-1 has no rating of its own: NVD's CVSS of CVE-2022-1292 rates it.
        let db = db_with_nvd();
        let inventory = debian_inventory();
        let matches = matcher::match_inventory(&inventory, &db).unwrap();
        let scanner_finding = matches
            .vulnerabilities
            .iter()
            .find(|f| f.id == "DLA-3008-1")
            .unwrap()
            .clone();
        let status = result_status(
            &report_of(&inventory, db.info(), matches.clone()),
            "sha256:00",
            "sha256:db",
        );
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
        let status = result_status(
            &report_of(&inventory, db.info(), matches.clone()),
            "sha256:00",
            "sha256:db",
        );
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
        let mut report = report_of(&inventory, db.info(), Matches::default());
        report.warnings = many;
        let w = result_warnings(&report);
        assert_eq!(w.len(), MAX_WARNINGS);
        assert_eq!(
            w.last().unwrap(),
            &format!("{} more warning(s) not shown", 50 - (MAX_WARNINGS - 1))
        );
    }

    fn db_with_nvd() -> imagewarden_scanner::vulndb::Db {
        let testdata = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scanner/testdata");
        let mut builder = imagewarden_scanner::vulndb::DbBuilder::new();
        builder
            .add_source(testdata.join("osv").to_str().unwrap())
            .unwrap();
        builder
            .add_source(&format!("nvd:{}", testdata.join("nvd").display()))
            .unwrap();
        builder.into_db("test").unwrap()
    }

    fn debian_inventory() -> Inventory {
        serde_json::from_value(serde_json::json!({
            "target": "r/app:1", "os": {"family": "debian", "version": "9"},
            "packages": [{"ecosystem": "Debian", "name": "libssl1.1", "version": "1.1.0f-3+deb9u2",
                "purl": "pkg:deb/debian/libssl1.1@1.1.0f-3+deb9u2", "sourceName": "openssl",
                "path": "var/lib/dpkg/status"}]
        }))
        .unwrap()
    }

    #[test]
    fn the_status_is_the_report_in_crd_form() {
        let db = db_with_nvd();
        let options = ScanOptions {
            scanners: vec![ScannerKind::Vulnerability, ScannerKind::Secret],
            ..ScanOptions::default()
        };
        let report = pipeline::scan_inventory(debian_inventory(), Some(&db), &options).unwrap();
        let status = result_status(&report, "sha256:3b5e2a7c6f1d8e9a", "sha256:db");
        assert_eq!(
            status.scanners,
            [ScannerKind::Vulnerability, ScannerKind::Secret]
        );
        assert_eq!(status.short_digest.as_deref(), Some("3b5e2a7c6f1d"));
        assert_eq!(status.database_version.as_deref(), Some("sha256:db"));
        assert_eq!(status.total_findings as usize, report.vulnerabilities.len());
        assert_eq!(
            status.summary.system_vulnerabilities.total() as usize,
            report.vulnerabilities.len()
        );
        assert_eq!(u64::from(status.summary.total()), report.summary.total());
        assert_eq!(
            decode_inventory(status.inventory.as_deref().unwrap()).unwrap(),
            debian_inventory()
        );
    }

    #[test]
    fn the_command_line_hint_about_missing_nvd_ratings_stays_out_of_the_status() {
        // Without NVD, DLA-3008-1 (no rating of its own) is unknown: the report says why.
        let testdata = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scanner/testdata");
        let db =
            imagewarden_scanner::vulndb::Db::load(&[testdata.join("osv").display().to_string()])
                .unwrap();
        let report =
            pipeline::scan_inventory(debian_inventory(), Some(&db), &ScanOptions::default())
                .unwrap();
        let hint = unrated_warning(0, &report.vulnerabilities).expect("unrated findings");
        assert!(report.warnings.contains(&hint));
        let status = result_status(&report, "sha256:00", "sha256:db");
        assert!(!status.warnings.contains(&hint), "{:?}", status.warnings);
        assert_eq!(status.warnings.len(), report.warnings.len() - 1);
    }

    #[test]
    fn a_rematch_keeps_the_scanners_and_adds_no_vulnerabilities_to_a_result_made_without_them() {
        let db = crate::db::LoadedDb::new(db_with_nvd());
        let old = ImageScanResultStatus {
            scanners: vec![ScannerKind::Baseline],
            findings: vec![Finding {
                class: FindingClass::BaselineRisk,
                package: None,
                ..finding("IW-CIS-4.1-ROOT-USER", Severity::Medium, None)
            }],
            ..Default::default()
        };
        let status = rematch_inventory(&old, debian_inventory(), "sha256:00", &db).unwrap();
        assert_eq!(status.scanners, [ScannerKind::Baseline]);
        let ids: Vec<&str> = status.findings.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["IW-CIS-4.1-ROOT-USER"]);
        assert_eq!(
            status.database_version.as_deref(),
            Some(db.version.as_str())
        );

        // With the vulnerability scanner, the database's findings come in.
        let old = ImageScanResultStatus {
            scanners: vec![ScannerKind::Vulnerability, ScannerKind::Baseline],
            ..old
        };
        let status = rematch_inventory(&old, debian_inventory(), "sha256:00", &db).unwrap();
        assert!(status.findings.iter().any(|f| f.id == "DLA-3008-1"));
        assert!(status
            .findings
            .iter()
            .any(|f| f.id == "IW-CIS-4.1-ROOT-USER"));
    }

    #[test]
    fn a_rematch_with_another_database_keeps_the_counts_before_it() {
        let db = crate::db::LoadedDb::new(db_with_nvd());
        let old = ImageScanResultStatus {
            scanners: vec![ScannerKind::Vulnerability],
            database_version: Some("sha256:older".into()),
            summary: ResultSummary {
                high: 4,
                ..Default::default()
            },
            ..Default::default()
        };
        let status = rematch_inventory(&old, debian_inventory(), "sha256:00", &db).unwrap();
        let previous = status.previous.clone().unwrap();
        assert_eq!(previous.database_version, "sha256:older");
        assert_eq!(previous.totals.high, 4);
        // Matched again with the same database: the counts before the update stay.
        let again = rematch_inventory(&status, debian_inventory(), "sha256:00", &db).unwrap();
        assert_eq!(again.previous, Some(previous));
        assert_eq!(again.summary, status.summary);
    }
}
