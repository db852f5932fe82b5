//! Checks beyond vulnerabilities: baseline risks (CIS Docker Benchmark section 4),
//! exposed secrets and malicious samples.
//!
//! File checks run as analyzers in the single layer walk ([`file_analyzers`]); their
//! findings reach [`ScannedImage::file_findings`] after whiteouts are applied.
//! [`run`] adds the checks of the image configuration and of the inventory and sorts
//! everything into the three result classes.

pub mod baseline;
pub mod malware;
pub mod secret;

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::analyzer::{Analyzer, Fact, Output};
use crate::finding::Severity;
use crate::finding::{CheckClass, CheckFinding, ScannerKind, SeveritySummary};
use crate::source::ScannedImage;

pub(crate) fn emit(out: &mut Output, f: CheckFinding) {
    out.fact(Fact::Check(Box::new(f)));
}

/// What the checks look for.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub baseline: bool,
    pub secrets: bool,
    pub malware: bool,
    /// Extra SHA-256 digests of known-malicious files, besides the bundled list.
    pub malware_hashes: Vec<malware::HashEntry>,
    /// The compiled YARA rules: the bundled set with the user's rule files (see
    /// [`CheckOptions::load_malware_rules`]); `None` runs the bundled set alone.
    pub malware_rules: Option<&'static malware::RuleSet>,
    /// Largest file the secret rules read.
    pub secret_size_cap: u64,
    /// Largest file hashed and searched for malware.
    pub malware_size_cap: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            baseline: true,
            secrets: true,
            malware: true,
            malware_hashes: Vec::new(),
            malware_rules: None,
            secret_size_cap: 1 << 20,
            malware_size_cap: 32 << 20,
        }
    }
}

impl CheckOptions {
    /// Options for the scanners named (`vuln` has no file checks).
    pub fn for_scanners(scanners: &[ScannerKind]) -> CheckOptions {
        let on: HashSet<ScannerKind> = scanners.iter().copied().collect();
        CheckOptions {
            baseline: on.contains(&ScannerKind::Baseline),
            secrets: on.contains(&ScannerKind::Secret),
            malware: on.contains(&ScannerKind::Malware),
            ..CheckOptions::default()
        }
    }

    /// Adds the digests of a hash list file (`sha256 [name]` per line, `#` comments).
    pub fn add_malware_hash_file(&mut self, path: &Path) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read hash list {}: {e}", path.display()))?;
        let entries = malware::parse_hash_list(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        self.malware_hashes.extend(entries);
        Ok(())
    }

    /// Compiles the bundled YARA rules with the user's rule files or directories (`*.yar`,
    /// `*.yara`; hidden entries such as a ConfigMap's `..data` are skipped, symbolic links
    /// followed). Compilation happens once per process for a given list of paths; a syntax
    /// error names the file and line.
    pub fn load_malware_rules(&mut self, paths: &[PathBuf]) -> Result<(), malware::RuleError> {
        self.malware_rules = Some(malware::RuleSet::with_user_rules(paths)?);
        Ok(())
    }
}

/// The analyzers that run the file checks in the layer walk.
pub fn file_analyzers(opts: &CheckOptions) -> Vec<Box<dyn Analyzer>> {
    let mut v: Vec<Box<dyn Analyzer>> = Vec::new();
    if opts.baseline {
        v.push(Box::new(baseline::FileModeAnalyzer));
        v.push(Box::new(baseline::SensitiveFileAnalyzer));
    }
    if opts.secrets {
        v.push(Box::new(secret::SecretAnalyzer {
            size_cap: opts.secret_size_cap,
        }));
        v.push(Box::new(secret::OversizedSecretCandidates {
            size_cap: opts.secret_size_cap,
        }));
    }
    if opts.malware {
        v.push(Box::new(malware::MalwareAnalyzer::with_rules(
            opts.malware_size_cap,
            &opts.malware_hashes,
            opts.malware_rules.unwrap_or_else(malware::RuleSet::bundled),
        )));
    }
    v
}

/// Findings of one class with their count per severity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSection {
    pub summary: SeveritySummary,
    pub findings: Vec<CheckFinding>,
}

impl CheckSection {
    fn from_findings(mut findings: Vec<CheckFinding>) -> CheckSection {
        findings.sort_by(|a, b| {
            b.severity.cmp(&a.severity).then_with(|| {
                (&a.id, &a.path, &a.config_key, a.line).cmp(&(
                    &b.id,
                    &b.path,
                    &b.config_key,
                    b.line,
                ))
            })
        });
        findings.dedup();
        CheckSection {
            summary: SeveritySummary::of(findings.iter().map(|f| f.severity)),
            findings,
        }
    }
}

impl CheckSection {
    /// Keeps only findings of the given severities and recounts.
    pub fn retain_severities(&mut self, severities: &[Severity]) {
        let findings = std::mem::take(&mut self.findings)
            .into_iter()
            .filter(|f| severities.contains(&f.severity))
            .collect();
        *self = CheckSection::from_findings(findings);
    }
}

/// Everything the checks found in one image, by result class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckFindings {
    pub baseline: CheckSection,
    pub secrets: CheckSection,
    pub malware: CheckSection,
}

/// Runs the configuration and inventory checks on a scanned image and sorts them, with
/// the file findings of the layer walk, into the three classes `opts` enables.
pub fn run(image: &ScannedImage, opts: &CheckOptions) -> CheckFindings {
    let mut all: Vec<CheckFinding> = image.file_findings.clone();
    if opts.baseline {
        if let Some(config) = &image.config {
            all.extend(baseline::config_checks(config));
        }
        all.extend(baseline::inventory_checks(&image.inventory));
        if let Some(config) = &image.config {
            all.extend(secret::config_env_secrets(config));
        }
    }
    let mut by_class: [Vec<CheckFinding>; 3] = Default::default();
    for f in all {
        let (i, on) = match f.class() {
            CheckClass::Baseline => (0, opts.baseline),
            CheckClass::Secret => (1, opts.secrets),
            CheckClass::Malware => (2, opts.malware),
        };
        if on {
            by_class[i].push(f);
        }
    }
    let [baseline, secrets, malware] = by_class;
    CheckFindings {
        baseline: CheckSection::from_findings(baseline),
        secrets: CheckSection::from_findings(secrets),
        malware: CheckSection::from_findings(malware),
    }
}

/// Masks a secret: its first four characters, then `****`.
pub fn redact(value: &str) -> String {
    let head: String = value.chars().take(4).collect();
    format!("{head}****")
}

/// Whether a file looks binary: a NUL byte in its first 8 KiB.
pub(crate) fn is_binary(data: &[u8]) -> bool {
    data[..data.len().min(8192)].contains(&0)
}

/// Line numbers of many offsets in one text: the newlines are found once, then each
/// lookup is a binary search (so many matches in one file cost `O(n + m log n)`).
pub(crate) struct LineIndex {
    newlines: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(data: &[u8]) -> LineIndex {
        LineIndex {
            newlines: data
                .iter()
                .enumerate()
                .filter_map(|(i, b)| (*b == b'\n').then_some(i))
                .collect(),
        }
    }

    /// 1-based line number of byte offset `at` (as [`line_of`]).
    pub(crate) fn line(&self, at: usize) -> u32 {
        self.newlines.partition_point(|&nl| nl < at) as u32 + 1
    }
}

/// 1-based line number of byte offset `at`.
pub(crate) fn line_of(data: &[u8], at: usize) -> u32 {
    data[..at.min(data.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count() as u32
        + 1
}
