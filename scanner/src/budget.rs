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

/// The budgets of one scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanBudgets {
    pub max_image_bytes: u64,
    pub max_file_bytes: u64,
    pub max_retained_bytes: u64,
}

impl Default for ScanBudgets {
    fn default() -> Self {
        ScanBudgets {
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_retained_bytes: DEFAULT_MAX_RETAINED_BYTES,
        }
    }
}

impl ScanBudgets {
    /// Memory a scan with these budgets may need, besides the vulnerability database.
    pub fn memory_needed(&self) -> u64 {
        self.max_file_bytes
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
            "a scan may need {} (largest file {}, retained results {}, database {}, overhead {}) \
             but the memory limit is {}: lower --max-file-bytes or --max-retained-bytes, or raise the limit",
            human(needed),
            human(self.max_file_bytes),
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
}

impl BudgetArgs {
    /// The budgets these flags set.
    pub fn budgets(&self) -> ScanBudgets {
        ScanBudgets {
            max_image_bytes: self.max_image_bytes,
            max_file_bytes: self.max_file_bytes,
            max_retained_bytes: self.max_retained_bytes,
        }
    }

    /// The same flags, to pass on to another process (a scanner Job).
    pub fn args(&self) -> Vec<String> {
        vec![
            format!("--max-image-bytes={}", self.max_image_bytes),
            format!("--max-file-bytes={}", self.max_file_bytes),
            format!("--max-retained-bytes={}", self.max_retained_bytes),
        ]
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
    }
}
