//! Operator configuration, from flags or environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where scans run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    /// Inside the operator process, with the scanner library (development, small clusters).
    Inline,
    /// One `batch/v1` Job per image, running the operator image's `scan-image` command.
    Job,
}

/// Settings of scanner Jobs (the `job` executor).
#[derive(Clone, Debug, clap::Args)]
pub struct JobSettings {
    /// Image of scanner Jobs (the operator's own image; it holds `imagewarden-operator scan-image`).
    #[arg(
        long,
        env = "IMAGEWARDEN_SCANNER_IMAGE",
        default_value = "imagewarden:latest"
    )]
    pub scanner_image: String,
    /// ServiceAccount scanner Jobs run as (needs only to write ImageScanResults).
    #[arg(
        long,
        env = "IMAGEWARDEN_SCANNER_SERVICE_ACCOUNT",
        default_value = "imagewarden-scanner"
    )]
    pub scanner_service_account: String,
    /// ClusterRole bound to the scanner ServiceAccount in each namespace that gets scanner
    /// Jobs (the operator creates the ServiceAccount and a RoleBinding there when missing).
    #[arg(
        long,
        env = "IMAGEWARDEN_SCANNER_CLUSTER_ROLE",
        default_value = "imagewarden-scanner"
    )]
    pub scanner_cluster_role: String,
    /// ConfigMap of YARA rules (`*.yar` keys) that scanner Jobs mount from their own
    /// namespace, when it exists there, and add to the bundled malware rules.
    #[arg(long, env = "IMAGEWARDEN_JOB_MALWARE_RULES_CONFIGMAP")]
    pub job_malware_rules_configmap: Option<String>,
    /// Seconds a scanner Job may run before it is stopped.
    #[arg(long, default_value_t = 1800)]
    pub job_active_deadline_seconds: i64,
    /// Seconds a finished scanner Job is kept before Kubernetes deletes it.
    #[arg(long, default_value_t = 600)]
    pub job_ttl_seconds: i32,
    /// Pod retries of one scanner Job before the image is Failed.
    #[arg(long, default_value_t = 2)]
    pub job_backoff_limit: i32,
    /// CPU limit of a scanner container.
    #[arg(long, default_value = "1")]
    pub job_cpu_limit: String,
    /// Memory limit of a scanner container.
    #[arg(long, default_value = "512Mi")]
    pub job_memory_limit: String,
    /// Path of the vulnerability database inside scanner Jobs (a volume the chart mounts).
    #[arg(long, default_value = "/var/lib/imagewarden/db")]
    pub job_db_path: String,
    /// ConfigMap or PVC-backed volume name holding the database for scanner Jobs; unset:
    /// Jobs use the database baked into the scanner image at `job_db_path`.
    #[arg(long)]
    pub job_db_volume_claim: Option<String>,
}

/// The operator's configuration.
#[derive(Clone, Debug, clap::Args)]
pub struct OperatorConfig {
    /// Vulnerability database: a compiled index file, an OSV directory or OSV zip files.
    #[arg(long = "db", env = "IMAGEWARDEN_DB", required = true)]
    pub db: Vec<String>,
    /// How often the database source is reloaded; a changed database re-matches stored
    /// inventories and notifies new findings.
    #[arg(long, env = "IMAGEWARDEN_DB_REFRESH", value_parser = humantime_secs, default_value = "6h")]
    pub db_refresh_interval: Duration,
    /// Where scans run.
    #[arg(long, env = "IMAGEWARDEN_EXECUTOR", value_enum, default_value = "job")]
    pub executor: ExecutorKind,
    /// Scans running at once, across all tasks.
    #[arg(long, env = "IMAGEWARDEN_MAX_CONCURRENT_SCANS", default_value_t = 2)]
    pub max_concurrent_scans: usize,
    /// Attempts per image before it is marked Failed.
    #[arg(long, default_value_t = 3)]
    pub max_scan_attempts: u32,
    /// Address of the push-webhook endpoint.
    #[arg(long, env = "IMAGEWARDEN_WEBHOOK_ADDR", default_value = "0.0.0.0:8443")]
    pub webhook_addr: SocketAddr,
    /// File holding the shared token that push webhooks must present.
    #[arg(long, env = "IMAGEWARDEN_WEBHOOK_TOKEN_FILE")]
    pub webhook_token_file: Option<PathBuf>,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "IMAGEWARDEN_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Acquire a Lease before acting, so that only one replica reconciles.
    #[arg(long, env = "IMAGEWARDEN_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "imagewarden-system")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a coalescing window for push events lasts.
    #[arg(long, value_parser = humantime_secs, default_value = "3s")]
    pub push_coalesce_window: Duration,
    /// YARA rules for the malware check, compiled with the bundled rules once at start-up:
    /// a `.yar` file or a directory of `*.yar` / `*.yara` files (e.g. a mounted ConfigMap).
    #[arg(
        long,
        env = "IMAGEWARDEN_MALWARE_RULES",
        value_name = "DIR",
        value_delimiter = ','
    )]
    pub malware_rules: Vec<PathBuf>,
    #[command(flatten)]
    pub job: JobSettings,
}

impl OperatorConfig {
    /// The scan checks, with the `--malware-rules` compiled (an error names the file and line).
    pub fn check_options(
        &self,
    ) -> Result<
        imagewarden_scanner::checks::CheckOptions,
        imagewarden_scanner::checks::malware::RuleError,
    > {
        malware_check_options(&self.malware_rules)
    }
}

/// Check options with the given malware rule paths compiled in (none: the bundled rules).
pub fn malware_check_options(
    paths: &[PathBuf],
) -> Result<
    imagewarden_scanner::checks::CheckOptions,
    imagewarden_scanner::checks::malware::RuleError,
> {
    let mut checks = imagewarden_scanner::checks::CheckOptions::default();
    if !paths.is_empty() {
        checks.load_malware_rules(paths)?;
    }
    Ok(checks)
}

/// Parses `90`, `90s`, `15m`, `6h` or `1d`.
pub fn humantime_secs(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: use e.g. 30s, 15m, 6h, 1d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("invalid duration unit in {s:?}: use s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::{humantime_secs, malware_check_options};
    use std::time::Duration;

    #[test]
    fn malware_rules_are_compiled_into_the_check_options() {
        assert!(malware_check_options(&[]).unwrap().malware_rules.is_none());
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("team.yar");
        std::fs::write(
            &rules,
            "rule team_marker { strings: $a = \"m\" condition: $a }\n",
        )
        .unwrap();
        let checks = malware_check_options(std::slice::from_ref(&rules)).unwrap();
        assert_eq!(
            checks.malware_rules.unwrap().user_files(),
            [rules.as_path()]
        );
        std::fs::write(&rules, "rule broken {\n condition: $a\n}\n").unwrap();
        let other = dir.path().join("other.yar");
        std::fs::copy(&rules, &other).unwrap();
        let err = malware_check_options(std::slice::from_ref(&other))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("{} line 2", other.display())),
            "{err}"
        );
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(humantime_secs("90").unwrap(), Duration::from_secs(90));
        assert_eq!(humantime_secs("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(humantime_secs("6h").unwrap(), Duration::from_secs(21600));
        assert!(humantime_secs("6x").is_err());
        assert!(humantime_secs("h").is_err());
    }
}
