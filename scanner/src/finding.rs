//! The finding model every part of the scanner shares: [`Severity`], what a scan finds
//! ([`Finding`] for advisories matched to packages, [`CheckFinding`] for baseline risks,
//! secrets and malicious samples), how findings are counted ([`SeveritySummary`]) and
//! which scanners produce them ([`ScannerKind`]).
//!
//! This module imports nothing else of the crate but the inventory's package types, so
//! analyzers, checks, sources, the matcher and the reports can all depend on it.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

use crate::inventory::Ecosystem;

/// Severity levels, ordered from least to most severe.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "unknown",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// All levels, most severe first.
    pub const DESCENDING: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Unknown,
    ];
}

impl FromStr for Severity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "critical" => Ok(Severity::Critical),
            "high" => Ok(Severity::High),
            "medium" => Ok(Severity::Medium),
            "low" => Ok(Severity::Low),
            "unknown" => Ok(Severity::Unknown),
            other => Err(format!(
                "unknown severity {other:?}: use critical, high, medium, low or unknown"
            )),
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which result class a finding belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingClass {
    /// An operating-system package (dpkg, apk, rpm).
    Os,
    /// An application (language) package.
    App,
}

/// The package a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FindingPackage {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    pub purl: String,
    /// Source package the advisory named, when it differs from `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
}

/// One advisory affecting one installed package (duplicate reports of one issue merged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub id: String,
    pub aliases: Vec<String>,
    pub severity: Severity,
    pub score: Option<f64>,
    /// The CVSS vector the score was computed from, when the rating has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<String>,
    /// Whose rating the severity is: `osv` (the record's own CVSS), `ghsa`, `debian`,
    /// `ubuntu`, `alpine`, `nvd` (NVD's CVSS of the finding's CVEs), a vendor; absent for
    /// `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity_source: Option<String>,
    pub package: FindingPackage,
    /// The first version that fixes it, when one is published.
    pub fixed_version: Option<String>,
    pub title: String,
    pub link: Option<String>,
    pub class: FindingClass,
    /// Related issues the advisory names (the CVEs a distribution erratum fixes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<String>,
}

impl Finding {
    /// The finding's id and all its aliases.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.id.as_str()).chain(self.aliases.iter().map(String::as_str))
    }
}

/// Which result class a check belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckClass {
    Baseline,
    Secret,
    Malware,
}

/// One baseline risk, exposed secret or malicious sample.
///
/// Secret values are never stored whole: `evidence` holds at most their first four
/// characters followed by `****`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckFinding {
    /// Stable id, e.g. `IW-CIS-4.1-ROOT-USER`, `IW-SECRET-AWS-ACCESS-KEY-ID`, `IW-MAL-EICAR`.
    pub id: String,
    #[serde(skip)]
    pub class: Option<CheckClass>,
    pub title: String,
    pub severity: Severity,
    /// The CIS Docker Benchmark control cited (e.g. `4.1`), for baseline risks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cis: Option<String>,
    /// The file, as a path inside the image without a leading `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The layer that holds the file, `sha256:<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// The image configuration key, e.g. `config.User` or `config.Env[3]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_key: Option<String>,
    /// 1-based line of the match in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// What was seen (redacted for secrets).
    pub evidence: String,
    /// What to do about it.
    pub remediation: String,
}

impl CheckFinding {
    pub(crate) fn new(
        class: CheckClass,
        id: &str,
        title: &str,
        severity: Severity,
        evidence: impl Into<String>,
        remediation: &str,
    ) -> CheckFinding {
        CheckFinding {
            id: id.to_string(),
            class: Some(class),
            title: title.to_string(),
            severity,
            cis: None,
            path: None,
            layer: None,
            config_key: None,
            line: None,
            evidence: evidence.into(),
            remediation: remediation.to_string(),
        }
    }

    pub(crate) fn cis(mut self, control: &str) -> Self {
        self.cis = Some(control.to_string());
        self
    }

    pub(crate) fn config_key(mut self, key: impl Into<String>) -> Self {
        self.config_key = Some(key.into());
        self
    }

    pub(crate) fn line(mut self, line: u32) -> Self {
        self.line = Some(line);
        self
    }

    /// The result class: the one it was made with, else told by its id (findings read
    /// back from JSON carry no class).
    pub fn class(&self) -> CheckClass {
        self.class.unwrap_or_else(|| {
            if self.id.starts_with("IW-SECRET-") {
                CheckClass::Secret
            } else if self.id.starts_with("IW-MAL-") {
                CheckClass::Malware
            } else {
                CheckClass::Baseline
            }
        })
    }
}

/// Count of findings per severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SeveritySummary {
    pub critical: u64,
    pub high: u64,
    pub medium: u64,
    pub low: u64,
    pub unknown: u64,
}

impl SeveritySummary {
    /// Counts the severities given.
    pub fn of(severities: impl IntoIterator<Item = Severity>) -> SeveritySummary {
        let mut s = SeveritySummary::default();
        for sev in severities {
            s.add(sev);
        }
        s
    }

    /// Counts findings by severity.
    pub fn count(findings: &[Finding]) -> SeveritySummary {
        SeveritySummary::of(findings.iter().map(|f| f.severity))
    }

    /// Counts one more finding of `sev`.
    pub fn add(&mut self, sev: Severity) {
        *self.get_mut(sev) += 1;
    }

    fn get_mut(&mut self, sev: Severity) -> &mut u64 {
        match sev {
            Severity::Critical => &mut self.critical,
            Severity::High => &mut self.high,
            Severity::Medium => &mut self.medium,
            Severity::Low => &mut self.low,
            Severity::Unknown => &mut self.unknown,
        }
    }

    pub fn get(&self, sev: Severity) -> u64 {
        match sev {
            Severity::Critical => self.critical,
            Severity::High => self.high,
            Severity::Medium => self.medium,
            Severity::Low => self.low,
            Severity::Unknown => self.unknown,
        }
    }

    pub fn total(&self) -> u64 {
        self.critical + self.high + self.medium + self.low + self.unknown
    }
}

/// Which scanners a scan runs. In a ScanRule they are spelled `Vulnerability`, `Baseline`,
/// `Secret`, `Malware`; on the command line `vuln`, `baseline`, `secret`, `malware`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ScannerKind {
    /// OS and application package vulnerabilities, and installed packages known to be
    /// malicious (OSV `MAL-` records).
    #[value(name = "vuln")]
    Vulnerability,
    /// Configuration risks (CIS Docker Benchmark section 4).
    Baseline,
    /// Exposed secrets in files and in the image configuration.
    Secret,
    /// Malicious samples: YARA rules, known-bad hashes, the EICAR test file.
    Malware,
}

impl ScannerKind {
    /// Every scanner, in the order reports list them.
    pub const ALL: [ScannerKind; 4] = [
        ScannerKind::Vulnerability,
        ScannerKind::Baseline,
        ScannerKind::Secret,
        ScannerKind::Malware,
    ];

    /// The name on the command line (`vuln`, `baseline`, `secret`, `malware`).
    pub fn cli_name(self) -> &'static str {
        match self {
            ScannerKind::Vulnerability => "vuln",
            ScannerKind::Baseline => "baseline",
            ScannerKind::Secret => "secret",
            ScannerKind::Malware => "malware",
        }
    }
}
