//! The memory and work one scan may take, so that a crafted image ends with a clear error
//! instead of an out-of-memory kill: uncompressed bytes read, the largest file read into
//! memory for an analyzer, and the bytes of analysis results kept until the scan ends.

/// Uncompressed layer bytes one scan reads by default, over all layers.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 16 << 30;

/// Largest file read into memory for an analyzer by default (package databases, archives,
/// binaries): each analyzer's own cap is lowered to this. It fits the scanner Job's
/// default 512 MiB memory limit beside the database and the retained results.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 128 << 20;

/// Bytes of analysis results (packages, findings, warnings) one scan keeps by default.
pub const DEFAULT_MAX_RETAINED_BYTES: u64 = 64 << 20;

/// Memory a scan needs besides the database, its largest file and its retained results:
/// the runtime, decompression windows, the hard-link cache of one layer (32 MiB) and a
/// nested archive (32 MiB).
pub const SCAN_OVERHEAD_BYTES: u64 = 128 << 20;

/// Largest SBOM document read by default.
pub const DEFAULT_MAX_SBOM_BYTES: u64 = 64 << 20;
/// Most components taken from one SBOM by default.
pub const DEFAULT_MAX_SBOM_COMPONENTS: u64 = 100_000;
/// Largest manifest or index read from a registry by default (what registries accept).
pub const DEFAULT_MAX_REGISTRY_MANIFEST_BYTES: u64 = 4 << 20;
/// Largest JSON document (manifest, index, configuration) read from an archive or an OCI
/// layout by default: docker-save's `manifest.json` lists every image of the archive.
pub const DEFAULT_MAX_ARCHIVE_MANIFEST_BYTES: u64 = 16 << 20;
/// Entries looked at by default in one Java archive and everything nested in it.
pub const DEFAULT_MAX_ZIP_ENTRIES: u64 = 200_000;
/// Warnings one scan reports by default; the rest are counted in one last line.
pub const DEFAULT_MAX_WARNINGS: u64 = 200;

/// The budgets of one scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanBudgets {
    pub max_image_bytes: u64,
    pub max_file_bytes: u64,
    pub max_retained_bytes: u64,
    /// Largest SBOM document read (`sbom:` targets).
    pub max_sbom_bytes: u64,
    /// Most components (purls) taken from one SBOM.
    pub max_sbom_components: u64,
    /// Largest manifest, index or image configuration read; `None`: 4 MiB from a
    /// registry, 16 MiB in an archive or layout.
    pub max_manifest_bytes: Option<u64>,
    /// Entries looked at in one Java archive and everything nested in it.
    pub max_zip_entries: u64,
    /// Warnings one scan reports; the rest are counted in one last line.
    pub max_warnings: u64,
}

impl Default for ScanBudgets {
    fn default() -> Self {
        ScanBudgets {
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_retained_bytes: DEFAULT_MAX_RETAINED_BYTES,
            max_sbom_bytes: DEFAULT_MAX_SBOM_BYTES,
            max_sbom_components: DEFAULT_MAX_SBOM_COMPONENTS,
            max_manifest_bytes: None,
            max_zip_entries: DEFAULT_MAX_ZIP_ENTRIES,
            max_warnings: DEFAULT_MAX_WARNINGS,
        }
    }
}

impl ScanBudgets {
    /// Largest manifest, index or configuration read from a registry.
    pub fn registry_manifest_bytes(&self) -> u64 {
        self.max_manifest_bytes
            .unwrap_or(DEFAULT_MAX_REGISTRY_MANIFEST_BYTES)
    }

    /// Largest JSON document read from an archive or an OCI layout.
    pub fn archive_manifest_bytes(&self) -> u64 {
        self.max_manifest_bytes
            .unwrap_or(DEFAULT_MAX_ARCHIVE_MANIFEST_BYTES)
    }

    /// The biggest document held in memory at once besides the analyzers' files: an SBOM
    /// (read whole, then parsed) or a manifest. The SBOM's and the manifest's parsed forms
    /// are counted in the retained-results budget and the overhead.
    fn largest_document(&self) -> u64 {
        self.max_sbom_bytes
            .max(self.registry_manifest_bytes())
            .max(self.archive_manifest_bytes())
    }

    /// Memory a scan with these budgets may need, besides the vulnerability database: the
    /// largest of an analyzer's file and a whole document (SBOM, manifest), the retained
    /// results and the overhead.
    pub fn memory_needed(&self) -> u64 {
        self.max_file_bytes
            .max(self.largest_document())
            .saturating_add(self.max_retained_bytes)
            .saturating_add(SCAN_OVERHEAD_BYTES)
    }

    /// Checks that a scan fits a memory limit of `limit` bytes beside a database of
    /// `db_bytes`; the error says which budget to lower or which limit to raise.
    pub fn check_fits(&self, limit: u64, db_bytes: u64) -> Result<(), String> {
        let needed = self.memory_needed().saturating_add(db_bytes);
        if needed <= limit {
            return Ok(());
        }
        Err(format!(
            "a scan may need {} (largest file or document {}, retained results {}, database {}, overhead {}) \
             but the memory limit is {}: lower --max-file-bytes, --max-sbom-bytes, --max-manifest-bytes \
             or --max-retained-bytes, or raise the limit",
            human(needed),
            human(self.max_file_bytes.max(self.largest_document())),
            human(self.max_retained_bytes),
            human(db_bytes),
            human(SCAN_OVERHEAD_BYTES),
            human(limit)
        ))
    }
}

/// The budgets as command-line flags (and `IMAGEWARDEN_*` variables), shared by the CLI,
/// the operator and its scanner Jobs.
#[derive(Clone, Debug, clap::Args)]
pub struct BudgetArgs {
    /// Most uncompressed layer bytes one scan reads, over all layers (a budget against
    /// decompression bombs); a bigger image is an error. Bytes, or with a unit: 16Gi.
    #[arg(long, env = "IMAGEWARDEN_MAX_IMAGE_BYTES", value_parser = parse_bytes, default_value = "16Gi")]
    pub max_image_bytes: u64,
    /// Largest file read into memory for an analyzer (package databases, archives,
    /// binaries); bigger files are skipped with a warning. Bytes, or with a unit: 128Mi.
    #[arg(long, env = "IMAGEWARDEN_MAX_FILE_BYTES", value_parser = parse_bytes, default_value = "128Mi")]
    pub max_file_bytes: u64,
    /// Most bytes of analysis results (packages, findings, warnings) one scan keeps in
    /// memory; an image that needs more is an error. Bytes, or with a unit: 64Mi.
    #[arg(long, env = "IMAGEWARDEN_MAX_RETAINED_BYTES", value_parser = parse_bytes, default_value = "64Mi")]
    pub max_retained_bytes: u64,
    /// Largest SBOM document read (`sbom:` targets); a bigger one is an error. Bytes, or
    /// with a unit: 64Mi.
    #[arg(long, env = "IMAGEWARDEN_MAX_SBOM_BYTES", value_parser = parse_bytes, default_value = "64Mi")]
    pub max_sbom_bytes: u64,
    /// Most components (package URLs) taken from one SBOM; an SBOM listing more is an error.
    #[arg(long, env = "IMAGEWARDEN_MAX_SBOM_COMPONENTS", default_value_t = DEFAULT_MAX_SBOM_COMPONENTS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_sbom_components: u64,
    /// Largest manifest, index or image configuration read; a bigger one is an error.
    /// Bytes, or with a unit. Unset: 4Mi from a registry, 16Mi in an archive or layout.
    #[arg(long, env = "IMAGEWARDEN_MAX_MANIFEST_BYTES", value_parser = parse_bytes)]
    pub max_manifest_bytes: Option<u64>,
    /// Most entries looked at in one Java archive (jar, war, ear) and everything nested in
    /// it; the rest of a bigger archive is skipped with a warning.
    #[arg(long, env = "IMAGEWARDEN_MAX_ZIP_ENTRIES", default_value_t = DEFAULT_MAX_ZIP_ENTRIES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_zip_entries: u64,
    /// Most warnings one scan reports (skipped files, unreadable databases); the rest are
    /// counted in one last line.
    #[arg(long, env = "IMAGEWARDEN_MAX_WARNINGS", default_value_t = DEFAULT_MAX_WARNINGS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_warnings: u64,
}

impl BudgetArgs {
    /// The budgets these flags set.
    pub fn budgets(&self) -> ScanBudgets {
        ScanBudgets {
            max_image_bytes: self.max_image_bytes,
            max_file_bytes: self.max_file_bytes,
            max_retained_bytes: self.max_retained_bytes,
            max_sbom_bytes: self.max_sbom_bytes,
            max_sbom_components: self.max_sbom_components,
            max_manifest_bytes: self.max_manifest_bytes,
            max_zip_entries: self.max_zip_entries,
            max_warnings: self.max_warnings,
        }
    }

    /// The same flags, to pass on to another process (a scanner Job).
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--max-image-bytes={}", self.max_image_bytes),
            format!("--max-file-bytes={}", self.max_file_bytes),
            format!("--max-retained-bytes={}", self.max_retained_bytes),
            format!("--max-sbom-bytes={}", self.max_sbom_bytes),
            format!("--max-sbom-components={}", self.max_sbom_components),
            format!("--max-zip-entries={}", self.max_zip_entries),
            format!("--max-warnings={}", self.max_warnings),
        ];
        if let Some(n) = self.max_manifest_bytes {
            args.push(format!("--max-manifest-bytes={n}"));
        }
        args
    }
}

/// `n` bytes as `512 MiB` (whole units) or `N bytes`.
pub fn human(n: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}

/// Parses a byte count: `1048576`, or with a binary (`Ki`, `Mi`, `Gi`, `Ti`) or decimal
/// (`k`, `M`, `G`, `T`) suffix as Kubernetes quantities have, e.g. `128Mi`, `16Gi`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count (e.g. 134217728, 128Mi, 16Gi)"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "Ki" | "KiB" => 1 << 10,
        "Mi" | "MiB" => 1 << 20,
        "Gi" | "GiB" => 1 << 30,
        "Ti" | "TiB" => 1 << 40,
        "k" | "K" | "kB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        "T" | "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use Ki, Mi, Gi, Ti or k, M, G, T)"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_parse_with_kubernetes_units() {
        assert_eq!(parse_bytes("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_bytes("128Mi").unwrap(), 128 << 20);
        assert_eq!(parse_bytes("16Gi").unwrap(), 16 << 30);
        assert_eq!(parse_bytes("2G").unwrap(), 2_000_000_000);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("12Xi").unwrap_err().contains("unknown unit"));
        assert!(parse_bytes("99999999999Ti")
            .unwrap_err()
            .contains("too large"));
        assert_eq!(human(512 << 20), "512 MiB");
    }

    #[test]
    fn the_default_budgets_fit_the_scanner_jobs_memory_limit_beside_a_database() {
        // The chart's default job.memoryLimit is 512Mi: room remains for a database of
        // 192 MiB beside the largest file, the retained results and the overhead.
        let limit = parse_bytes("512Mi").unwrap();
        ScanBudgets::default().check_fits(limit, 192 << 20).unwrap();
        let err = ScanBudgets {
            max_file_bytes: 512 << 20,
            ..Default::default()
        }
        .check_fits(limit, 0)
        .unwrap_err();
        assert!(err.contains("--max-file-bytes"), "{err}");
        // A whole SBOM is held in memory too.
        let err = ScanBudgets {
            max_sbom_bytes: 512 << 20,
            ..Default::default()
        }
        .check_fits(limit, 0)
        .unwrap_err();
        assert!(err.contains("--max-sbom-bytes"), "{err}");
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        budgets: BudgetArgs,
    }

    #[test]
    fn every_budget_flag_is_passed_on_to_scanner_jobs() {
        use clap::Parser;
        let set = [
            "--max-image-bytes=1Gi",
            "--max-file-bytes=3Mi",
            "--max-retained-bytes=5Mi",
            "--max-sbom-bytes=7Mi",
            "--max-sbom-components=11",
            "--max-manifest-bytes=13Ki",
            "--max-zip-entries=17",
            "--max-warnings=19",
        ];
        let parsed = Cli::try_parse_from(std::iter::once("x").chain(set)).unwrap();
        let again =
            Cli::try_parse_from(std::iter::once("x".to_string()).chain(parsed.budgets.args()))
                .unwrap();
        assert_eq!(again.budgets.budgets(), parsed.budgets.budgets());
        assert_ne!(parsed.budgets.budgets(), ScanBudgets::default());
        // The defaults are the scanner's own.
        let defaults = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(defaults.budgets.budgets(), ScanBudgets::default());
        let err = Cli::try_parse_from(["x", "--max-warnings=0"])
            .err()
            .unwrap();
        assert!(err.to_string().contains("--max-warnings"), "{err}");
    }
}
