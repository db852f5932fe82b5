//! One scan, from an image (or a listed inventory) to a [`ScanReport`]: read the image once
//! with the package analyzers and the file checks the scanners want, match the inventory
//! against the vulnerability database, apply the filters, add the configuration and
//! inventory checks. The CLI, the operator's inline executor and its scanner Jobs all
//! call [`scan`]; they differ only in where the database and the image come from and in
//! how they print or store the report.

use crate::analyzer;
use crate::checks::{self, CheckOptions};
use crate::finding::ScannerKind;
use crate::inventory::Inventory;
use crate::matcher::{match_inventory, Matches};
use crate::report::filter::FindingFilter;
use crate::report::ScanReport;
use crate::source::{self, ImageRef, PullOptions, ScannedImage, SourceError};
use crate::vulndb::{Db, DbError, DbInfo};

/// What a scan reads.
#[derive(Debug, Clone)]
pub enum ScanSource {
    /// An image: pulled from its registry or read from a local archive, layout or directory.
    Image(ImageRef),
    /// An inventory listed earlier (`imagewarden inventory`): only the vulnerability
    /// scanner applies, as there are no files or configuration to check.
    Inventory(Inventory),
}

/// How a scan runs.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// The scanners to run; the report has the sections of these alone.
    pub scanners: Vec<ScannerKind>,
    /// Settings of the file checks (malware rules and hashes, size caps). Which checks run
    /// is decided by `scanners`, whatever the switches in here say.
    pub checks: CheckOptions,
    /// How images are pulled.
    pub pull: PullOptions,
    /// Severities, unfixed findings and ignore rules to leave out.
    pub filter: FindingFilter,
}

impl Default for ScanOptions {
    /// Every scanner, default check settings and pulls, nothing filtered.
    fn default() -> Self {
        ScanOptions {
            scanners: ScannerKind::ALL.to_vec(),
            checks: CheckOptions::default(),
            pull: PullOptions::default(),
            filter: FindingFilter::default(),
        }
    }
}

impl ScanOptions {
    /// Whether `scanner` runs.
    pub fn runs(&self, scanner: ScannerKind) -> bool {
        self.scanners.contains(&scanner)
    }

    /// The check settings with the checks of the scanners that run switched on, the others off.
    pub fn effective_checks(&self) -> CheckOptions {
        CheckOptions {
            baseline: self.runs(ScannerKind::Baseline),
            secrets: self.runs(ScannerKind::Secret),
            malware: self.runs(ScannerKind::Malware),
            ..self.checks.clone()
        }
    }
}

/// Why a scan failed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The image could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Matching against the database failed.
    #[error(transparent)]
    Database(#[from] DbError),
    /// The vulnerability scanner was asked for without a database.
    #[error("the vulnerability scanner needs a vulnerability database")]
    NoDatabase,
}

/// Reads an image with the package analyzers and the file checks `checks` enables, in one
/// pass over the layers.
pub async fn read_image(
    image: &ImageRef,
    pull: &PullOptions,
    checks: &CheckOptions,
) -> Result<ScannedImage, SourceError> {
    let mut analyzers = analyzer::analyzers_with(&pull.budgets);
    analyzers.extend(checks::file_analyzers(checks));
    source::read(image, pull, analyzers).await
}

/// Scans `source` with the scanners of `opts`, matching against `db` (needed when the
/// vulnerability scanner runs), and returns the report with the inventory it was made from.
pub async fn scan(
    source: &ScanSource,
    db: Option<&Db>,
    opts: &ScanOptions,
) -> Result<ScanReport, ScanError> {
    let image = match source {
        ScanSource::Inventory(inventory) => return scan_inventory(inventory.clone(), db, opts),
        ScanSource::Image(image) => image,
    };
    let vuln = opts.runs(ScannerKind::Vulnerability);
    if vuln && db.is_none() {
        return Err(ScanError::NoDatabase);
    }
    let scanned = read_image(image, &opts.pull, &opts.effective_checks()).await?;
    let inventory = scanned.inventory.clone();
    Ok(report(
        inventory,
        Some(&scanned),
        db.filter(|_| vuln),
        opts,
    )?)
}

/// [`scan`] of an inventory, which reads nothing and so need not wait: matches it against
/// `db` when the vulnerability scanner runs (the other scanners need the image).
pub fn scan_inventory(
    inventory: Inventory,
    db: Option<&Db>,
    opts: &ScanOptions,
) -> Result<ScanReport, ScanError> {
    let vuln = opts.runs(ScannerKind::Vulnerability);
    if vuln && db.is_none() {
        return Err(ScanError::NoDatabase);
    }
    Ok(report(inventory, None, db.filter(|_| vuln), opts)?)
}

/// Builds the report of what was read: matches `inventory` against `db` (when given),
/// filters, and adds the checks of `image` (when there is one).
fn report(
    inventory: Inventory,
    image: Option<&ScannedImage>,
    db: Option<&Db>,
    opts: &ScanOptions,
) -> Result<ScanReport, DbError> {
    let mut matches = match db {
        Some(db) => match_inventory(&inventory, db)?,
        None => Matches::default(),
    };
    let ignored = opts
        .filter
        .apply(&mut matches, chrono::Utc::now().date_naive());
    let no_db = DbInfo::default();
    let db_info = db.map(|d| d.info()).unwrap_or(&no_db);
    let mut report = ScanReport::new(&inventory, db_info, matches, ignored);
    if db.is_none() {
        // Coverage warnings speak of vulnerability matching, which did not run.
        report.warnings.clear();
    }
    // An inventory has no files or configuration: its report has no check sections.
    if let Some(image) = image {
        let checks = opts.effective_checks();
        let mut found = checks::run(image, &checks);
        if !opts.filter.severities.is_empty() {
            for section in [&mut found.baseline, &mut found.secrets, &mut found.malware] {
                section.retain_severities(&opts.filter.severities);
            }
        }
        report = report.with_checks(found, &checks);
    }
    let mut scanners = opts.scanners.clone();
    scanners.sort();
    scanners.dedup();
    report.scanners = scanners;
    report.inventory = inventory;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory() -> Inventory {
        serde_json::from_value(serde_json::json!({
            "target": "r/app:1", "os": {"family": "debian", "version": "9"},
            "packages": [{"ecosystem": "Debian", "name": "libssl1.1", "version": "1.1.0f-3+deb9u2",
                "purl": "pkg:deb/debian/libssl1.1@1.1.0f-3+deb9u2", "sourceName": "openssl",
                "path": "var/lib/dpkg/status"}]
        }))
        .unwrap()
    }

    fn db() -> Db {
        let osv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/osv");
        Db::load(&[osv.display().to_string()]).unwrap()
    }

    fn run(
        source: ScanSource,
        db: Option<&Db>,
        opts: &ScanOptions,
    ) -> Result<ScanReport, ScanError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(scan(&source, db, opts))
    }

    #[test]
    fn an_inventory_is_matched_and_the_report_keeps_it() {
        let db = db();
        let report = run(
            ScanSource::Inventory(inventory()),
            Some(&db),
            &ScanOptions::default(),
        )
        .unwrap();
        assert!(report.vulnerabilities.iter().any(|f| f.id == "DLA-3008-1"));
        assert_eq!(report.inventory, inventory());
        assert_eq!(report.scanners, ScannerKind::ALL);
        assert_eq!(report.database.digest, db.info().digest);
    }

    #[test]
    fn without_the_vulnerability_scanner_nothing_is_matched_or_warned() {
        let db = db();
        let opts = ScanOptions {
            scanners: vec![ScannerKind::Secret, ScannerKind::Baseline],
            ..ScanOptions::default()
        };
        let report = run(ScanSource::Inventory(inventory()), Some(&db), &opts).unwrap();
        assert!(report.vulnerabilities.is_empty());
        assert!(report.warnings.is_empty());
        assert_eq!(report.database, Default::default());
        assert_eq!(
            report.scanners,
            [ScannerKind::Baseline, ScannerKind::Secret]
        );
        let checks = opts.effective_checks();
        assert!(checks.baseline && checks.secrets && !checks.malware);
    }

    #[test]
    fn the_vulnerability_scanner_needs_a_database() {
        let err = run(
            ScanSource::Inventory(inventory()),
            None,
            &ScanOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ScanError::NoDatabase), "{err}");
    }
}
