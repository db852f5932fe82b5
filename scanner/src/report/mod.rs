//! Scan reports: [`ScanReport`] is the JSON contract; the printers (table, SARIF,
//! CycloneDX) only format it.
//!
//! Result classes are sibling sections of the report (`vulnerabilities`,
//! `maliciousPackages`; baseline risks, secrets and malware findings are added
//! beside them the same way), and `summary` counts vulnerabilities by severity.

pub mod cyclonedx;
pub mod filter;
pub mod sarif;
pub mod table;

use serde::{Deserialize, Serialize};

use crate::checks::{CheckFindings, CheckOptions, CheckSection};
use crate::finding::Finding;
use crate::finding::{ScannerKind, Severity, SeveritySummary};
use crate::inventory::{Inventory, OsInfo};
use crate::matcher::Matches;
use crate::vulndb::DbInfo;

/// The report of one scan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanReport {
    /// What was scanned, as the user named it.
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub os: Option<OsInfo>,
    pub scanner_version: String,
    pub database: DatabaseSummary,
    pub summary: SeveritySummary,
    pub vulnerabilities: Vec<Finding>,
    /// Installed packages known to be malicious (OSV `MAL-` records).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub malicious_packages: Vec<Finding>,
    /// Configuration risks (CIS Docker Benchmark section 4), when the baseline scanner ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_risks: Option<CheckSection>,
    /// Exposed secrets (redacted), when the secret scanner ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<CheckSection>,
    /// Known-malicious files (EICAR, hash lists, bundled rules), when the malware scanner
    /// ran. Its summary also counts `maliciousPackages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub malicious_samples: Option<CheckSection>,
    /// Findings left out by an ignore file, by id (kept so that a report says what it hides).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
    /// What could not be checked, e.g. packages of a release the database has no advisories for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The scanners that ran (not part of the printed report: its sections say it).
    #[serde(skip)]
    pub scanners: Vec<ScannerKind>,
    /// The inventory the report was made from (not part of the printed report), kept so
    /// that it can be stored and matched again against a newer database.
    #[serde(skip)]
    pub inventory: Inventory,
}

/// Says which packages of `inventory` the database cannot judge: their ecosystem (or OS
/// release) has no advisories in it, or their distribution publishes none the database
/// reads, so "no findings" would mean "not checked". Also counts rpm packages of other
/// vendors, which the distribution's advisories do not cover.
pub fn coverage_warnings(inventory: &Inventory, db: &DbInfo) -> Vec<String> {
    use crate::vulndb::ecosystem::{app_ecosystem_key, os_advisory_keys, OsAdvisoryKeys};
    use std::collections::BTreeMap;
    let mut missing: BTreeMap<String, usize> = BTreeMap::new();
    let mut no_source: BTreeMap<String, usize> = BTreeMap::new();
    let mut other_vendors: BTreeMap<String, usize> = BTreeMap::new();
    let mut no_release = 0;
    for p in &inventory.packages {
        if !p.ecosystem.is_os() {
            let key = app_ecosystem_key(p.ecosystem);
            if !db.ecosystems.contains_key(&key) {
                *missing.entry(key).or_default() += 1;
            }
            continue;
        }
        match os_advisory_keys(p.ecosystem, inventory.os.as_ref(), &db.ecosystems) {
            OsAdvisoryKeys::Keys(_) => {
                if !crate::matcher::rpm_package_is_the_distributions(inventory, p) {
                    // The vendor comes from the image: kept short in what the report says.
                    let vendor: String =
                        p.vendor.as_deref().unwrap_or("").chars().take(64).collect();
                    let vendor = if vendor.trim().is_empty() {
                        "no vendor".to_string()
                    } else {
                        vendor
                    };
                    *other_vendors.entry(vendor).or_default() += 1;
                }
            }
            OsAdvisoryKeys::NotInDatabase(key) => *missing.entry(key).or_default() += 1,
            OsAdvisoryKeys::NoSource(distribution) => {
                *no_source.entry(distribution).or_default() += 1
            }
            OsAdvisoryKeys::UnknownRelease => no_release += 1,
        }
    }
    let mut out: Vec<String> = no_source
        .into_iter()
        .map(|(distribution, n)| {
            format!("no advisory source for this distribution ({distribution}): {n} OS package(s) not checked")
        })
        .collect();
    out.extend(missing.into_iter().map(|(key, n)| {
        format!(
            "the vulnerability database has no advisories for {key}: {n} package(s) not checked"
        )
    }));
    if no_release > 0 {
        out.push(format!(
            "the operating system release is unknown: {no_release} OS package(s) not checked"
        ));
    }
    if !other_vendors.is_empty() {
        let total: usize = other_vendors.values().sum();
        let mut vendors: Vec<String> = other_vendors
            .iter()
            .take(5)
            .map(|(v, n)| format!("{v}: {n}"))
            .collect();
        if other_vendors.len() > 5 {
            vendors.push(format!("{} more", other_vendors.len() - 5));
        }
        out.push(format!(
            "{total} rpm package(s) from other vendors ({}) not checked against the distribution's advisories",
            vendors.join(", ")
        ));
    }
    out
}

/// Says that findings are unrated because the database has no NVD ratings to fall back to.
/// A hint for the command line: the operator keeps it out of its results.
pub fn unrated_warning(nvd_records: u64, vulnerabilities: &[Finding]) -> Option<String> {
    let unrated = vulnerabilities
        .iter()
        .filter(|f| f.severity == Severity::Unknown)
        .count();
    (nvd_records == 0 && unrated > 0).then(|| {
        format!(
            "the vulnerability database has no NVD ratings: {unrated} finding(s) without a rating of their own are unknown; \
             use `imagewarden db update`, or add NVD with `imagewarden db build --source nvd:...`"
        )
    })
}

/// A finding's title for display, followed by the first related ids it names (the CVEs a
/// distribution erratum fixes): "Important: openssl security update (CVE-2022-3602,
/// CVE-2022-3786)"; more than three are counted.
pub fn display_title(f: &Finding) -> String {
    if f.related.is_empty() {
        return f.title.clone();
    }
    let mut ids: Vec<&str> = f.related.iter().take(3).map(String::as_str).collect();
    let more = f.related.len().saturating_sub(3);
    let more = (more > 0).then(|| format!("+{more} more"));
    ids.extend(more.as_deref());
    if f.title.is_empty() {
        ids.join(", ")
    } else {
        format!("{} ({})", f.title, ids.join(", "))
    }
}

/// Which database the scan used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSummary {
    /// Content digest of the compiled records; equal digests mean equal answers.
    pub digest: String,
    pub built_at: String,
    pub newest_modified: Option<String>,
    pub records: u64,
    /// CVEs with an NVD rating (what findings without a rating of their own fall back to).
    #[serde(default)]
    pub nvd_records: u64,
}

impl From<&DbInfo> for DatabaseSummary {
    fn from(info: &DbInfo) -> Self {
        DatabaseSummary {
            digest: info.digest.clone(),
            built_at: info.built_at.clone(),
            newest_modified: info.newest_modified.clone(),
            records: info.records,
            nvd_records: info.nvd_records,
        }
    }
}

impl ScanReport {
    /// Builds the report of `inventory` from what matching (and filtering) kept.
    pub fn new(
        inventory: &Inventory,
        db: &DbInfo,
        matches: Matches,
        ignored: Vec<String>,
    ) -> ScanReport {
        let mut warnings = coverage_warnings(inventory, db);
        warnings.extend(unrated_warning(db.nvd_records, &matches.vulnerabilities));
        warnings.extend(matches.warnings);
        ScanReport {
            target: inventory.target.clone(),
            digest: inventory.digest.clone(),
            os: inventory.os.clone(),
            scanner_version: crate::SCANNER_VERSION.to_string(),
            database: DatabaseSummary::from(db),
            summary: SeveritySummary::count(&matches.vulnerabilities),
            vulnerabilities: matches.vulnerabilities,
            malicious_packages: matches.malicious_packages,
            baseline_risks: None,
            secrets: None,
            malicious_samples: None,
            ignored,
            warnings,
            scanners: Vec::new(),
            inventory: inventory.clone(),
        }
    }

    /// Adds the sections of the checks `opts` enabled.
    pub fn with_checks(mut self, checks: CheckFindings, opts: &CheckOptions) -> ScanReport {
        if opts.baseline {
            self.baseline_risks = Some(checks.baseline);
        }
        if opts.secrets {
            self.secrets = Some(checks.secrets);
        }
        if opts.malware {
            let mut section = checks.malware;
            for f in &self.malicious_packages {
                section.summary.add(f.severity);
            }
            self.malicious_samples = Some(section);
        }
        self
    }

    /// Whether any vulnerability, malicious package, baseline risk, secret or malicious
    /// sample at or above `threshold` remains.
    pub fn has_findings_at_or_above(&self, threshold: Severity) -> bool {
        let checks = [&self.baseline_risks, &self.secrets, &self.malicious_samples];
        !self.malicious_packages.is_empty()
            || self.vulnerabilities.iter().any(|f| f.severity >= threshold)
            || checks
                .iter()
                .filter_map(|s| s.as_ref())
                .any(|s| s.findings.iter().any(|f| f.severity >= threshold))
    }
}

/// Output formats of `imagewarden scan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Sarif,
    Cyclonedx,
}

/// Renders `report` in `format`.
pub fn render(report: &ScanReport, format: Format) -> anyhow::Result<String> {
    render_with(report, format, false)
}

/// Renders `report` in `format`; with `colour`, the table's severities carry ANSI colours
/// (the machine-readable formats never do).
pub fn render_with(report: &ScanReport, format: Format, colour: bool) -> anyhow::Result<String> {
    Ok(match format {
        Format::Table => table::render_with(report, colour),
        Format::Json => serde_json::to_string_pretty(report)? + "\n",
        Format::Sarif => serde_json::to_string_pretty(&sarif::render(report))? + "\n",
        Format::Cyclonedx => serde_json::to_string_pretty(&cyclonedx::render(report))? + "\n",
    })
}
