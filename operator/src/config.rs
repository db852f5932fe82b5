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

/// What one scan may take (inline or in a scanner Job); exceeding a budget fails the
/// image's scan with a clear message, or skips one file with a warning.
pub use imagewarden_scanner::budget::BudgetArgs as ScanBudgetSettings;

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
    /// ConfigMap of YARA rules (`*.yar` keys) that scanner Jobs mount from their own
    /// namespace, when it exists there, and add to the bundled malware rules.
    #[arg(long, env = "IMAGEWARDEN_JOB_MALWARE_RULES_CONFIGMAP")]
    pub job_malware_rules_configmap: Option<String>,
    /// How long a scanner Job may run before it is stopped (`30m`, or seconds).
    #[arg(long, value_parser = duration_seconds_i64, default_value = "30m")]
    pub job_active_deadline_seconds: i64,
    /// How long a finished scanner Job is kept before Kubernetes deletes it (`10m`, or
    /// seconds).
    #[arg(long, value_parser = duration_seconds_i32, default_value = "10m")]
    pub job_ttl_seconds: i32,
    /// Pod retries of one scanner Job before the image is Failed.
    #[arg(long, default_value_t = 2)]
    pub job_backoff_limit: i32,
    /// CPU limit of a scanner container.
    #[arg(long, default_value = "1")]
    pub job_cpu_limit: String,
    /// Memory limit of a scanner container. It must hold the database, the largest file
    /// (--max-file-bytes), the retained results (--max-retained-bytes) and 128 MiB more:
    /// checked at start-up.
    #[arg(long, default_value = "512Mi")]
    pub job_memory_limit: String,
    /// Budgets of each scan, inline or in a scanner Job (passed on to `scan-image`).
    #[command(flatten)]
    pub budgets: ScanBudgetSettings,
    /// Address scanner Jobs download the operator's compiled database from:
    /// `GET /db/<database version>` (plain HTTP; each Job verifies the content digest).
    #[arg(
        long,
        env = "IMAGEWARDEN_DB_SERVE_ADDR",
        default_value = "0.0.0.0:8081"
    )]
    pub db_serve_addr: SocketAddr,
    /// Base URL scanner Jobs reach that address at, e.g.
    /// `http://imagewarden-database.imagewarden-system.svc:8081`.
    #[arg(
        long,
        env = "IMAGEWARDEN_DB_SERVE_URL",
        conflicts_with = "db_serve_service"
    )]
    pub db_serve_url: Option<String>,
    /// Service (in the operator's namespace, `POD_NAMESPACE`) in front of the database
    /// address: its cluster IP and port make the base URL of scanner Jobs (no cluster DNS
    /// needed). Either this or `--db-serve-url` is needed by the job executor.
    #[arg(long, env = "IMAGEWARDEN_DB_SERVE_SERVICE")]
    pub db_serve_service: Option<String>,
}

impl JobSettings {
    /// Checks that a scan's budgets fit the scanner container's memory limit beside a
    /// database of `db_bytes`.
    pub fn check_memory(&self, db_bytes: u64) -> Result<(), String> {
        let limit = imagewarden_scanner::budget::parse_bytes(&self.job_memory_limit)
            .map_err(|e| format!("--job-memory-limit: {e}"))?;
        self.budgets
            .budgets()
            .check_fits(limit, db_bytes)
            .map_err(|e| format!("--job-memory-limit {}: {e}", self.job_memory_limit))
    }

    /// Checks the database-serving settings against the executor: the job executor needs
    /// a way for Jobs to reach the operator, the inline executor takes none.
    pub fn check_db_serving(&self, executor: ExecutorKind) -> Result<(), String> {
        let named = self.db_serve_url.is_some() || self.db_serve_service.is_some();
        match executor {
            ExecutorKind::Job if !named => Err("the job executor needs --db-serve-service (or --db-serve-url): \
                 the address scanner Jobs download the operator's vulnerability database from"
                .into()),
            ExecutorKind::Inline if named => Err(
                "--db-serve-service and --db-serve-url are for the job executor; the inline executor scans in this process"
                    .into(),
            ),
            _ => {
                if let Some(url) = &self.db_serve_url {
                    check_base_url(url)
                        .map_err(|e| format!("--db-serve-url {url:?}: {e}"))?;
                }
                Ok(())
            }
        }
    }
}

pub use imagewarden_scanner::egress::EgressSettings;

/// The NetworkPolicy of scanner Jobs.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct NetworkPolicySettings {
    /// Apply NetworkPolicy `imagewarden-scanner` in each namespace with scanner Jobs: their
    /// Pods accept no connection and reach only DNS, registries (any address outside the
    /// denied ranges of the egress settings, plus the allowed ranges) and the API server.
    #[arg(
        long,
        env = "IMAGEWARDEN_SCANNER_NETWORK_POLICY",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub scanner_network_policy: bool,
    /// Addresses (CIDRs) of the API server's endpoints, for when they lie in a denied range.
    #[arg(
        long,
        env = "IMAGEWARDEN_API_SERVER_CIDRS",
        value_delimiter = ',',
        value_parser = imagewarden_scanner::egress::parse_range
    )]
    pub api_server_cidrs: Vec<imagewarden_scanner::egress::IpNet>,
    /// Ports of the API server's endpoints.
    #[arg(long, value_delimiter = ',', default_value = "443,6443")]
    pub api_server_ports: Vec<u16>,
}

/// The official database sources and their local cache, used when no `--db` is given.
#[derive(Clone, Debug, clap::Args)]
pub struct OfficialDb {
    /// Cache of the downloaded sources and the index compiled from them (a writable volume;
    /// the full sources take about 2 GiB).
    #[arg(
        long,
        env = "IMAGEWARDEN_DB_CACHE_DIR",
        default_value = "/tmp/imagewarden/db"
    )]
    pub db_cache_dir: PathBuf,
    /// Base URL of the OSV export (`<URL>/<Ecosystem>/all.zip`); a mirror works.
    #[arg(long, env = "IMAGEWARDEN_OSV_URL", default_value = imagewarden_scanner::vulndb::update::DEFAULT_OSV_URL)]
    pub osv_url: String,
    /// Base URL of NVD's CVE JSON 2.0 feeds (`<URL>/nvdcve-2.0-YYYY.json.gz`); a mirror works.
    #[arg(long, env = "IMAGEWARDEN_NVD_URL", default_value = imagewarden_scanner::vulndb::update::DEFAULT_NVD_URL)]
    pub nvd_url: String,
}

impl OfficialDb {
    /// What `db update` would do with these settings (no progress bars: the operator logs).
    pub fn options(&self) -> imagewarden_scanner::vulndb::update::UpdateOptions {
        let mut opts =
            imagewarden_scanner::vulndb::update::UpdateOptions::new(self.db_cache_dir.clone());
        opts.osv_url = self.osv_url.clone();
        opts.nvd_url = self.nvd_url.clone();
        opts.progress = false;
        opts
    }
}

/// The operator's configuration.
#[derive(Clone, Debug, clap::Args)]
pub struct OperatorConfig {
    /// Vulnerability database: a compiled index file, OSV directories or zip files, http(s)
    /// base URLs, `nvd:PATH|URL`, or `oci://` (repeatable). Without it, the official sources
    /// (osv.dev's export and NVD's feeds, see --osv-url, --nvd-url) are downloaded into
    /// --db-cache-dir and refreshed every --db-refresh-interval with conditional requests.
    #[arg(long = "db", env = "IMAGEWARDEN_DB")]
    pub db: Vec<String>,
    #[command(flatten)]
    pub official_db: OfficialDb,
    /// How often the database source is reloaded; a changed database re-matches stored
    /// inventories and notifies new findings.
    #[arg(long, env = "IMAGEWARDEN_DB_REFRESH", value_parser = parse_duration, default_value = "6h")]
    pub db_refresh_interval: Duration,
    /// Namespaces whose ScanRules, ScanTasks and ImageScanResults the operator watches,
    /// reads and writes (comma-separated), and where it starts scanner Jobs and reads
    /// Secrets; objects elsewhere are not seen. Empty (the default): every namespace.
    #[arg(
        long,
        env = "IMAGEWARDEN_WATCH_NAMESPACES",
        value_delimiter = ',',
        value_parser = crate::scope::parse_namespace
    )]
    pub watch_namespaces: Vec<String>,
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
    /// PEM certificate chain of the push-webhook endpoint: it then serves HTTPS only.
    #[arg(
        long,
        env = "IMAGEWARDEN_WEBHOOK_TLS_CERT_FILE",
        requires = "webhook_tls_key_file"
    )]
    pub webhook_tls_cert_file: Option<PathBuf>,
    /// PEM private key of that certificate.
    #[arg(
        long,
        env = "IMAGEWARDEN_WEBHOOK_TLS_KEY_FILE",
        requires = "webhook_tls_cert_file"
    )]
    pub webhook_tls_key_file: Option<PathBuf>,
    /// Time a push request's body (and a TLS handshake) may take to arrive.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub webhook_read_timeout: Duration,
    /// A push-webhook connection that sends no complete request head for this long (slow
    /// or idle) is closed.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub webhook_idle_timeout: Duration,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "IMAGEWARDEN_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Most series of `imagewarden_image_findings` and `imagewarden_image_policy_verdict`
    /// one scrape renders; results past it are left out whole and counted in
    /// `imagewarden_image_series_dropped`. 0 renders no per-image series.
    #[arg(long, env = "IMAGEWARDEN_METRICS_IMAGE_SERIES_LIMIT", default_value_t = crate::image_metrics::DEFAULT_SERIES_LIMIT)]
    pub metrics_image_series_limit: usize,
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
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    pub push_coalesce_window: Duration,
    /// Link to one ImageScanResult in DingTalk and HTTP(S) notifications, instead of the
    /// `kubectl get scanresults` hint: an http(s) URL with placeholders {namespace},
    /// {name}, {digest}, {registry} and {repository} (each value percent-encoded), e.g.
    /// `https://grafana.example.com/d/iw?var-namespace={namespace}&var-name={name}`.
    #[arg(
        long,
        env = "IMAGEWARDEN_RESULT_URL_TEMPLATE",
        value_parser = crate::notify::links::ResultUrlTemplate::parse
    )]
    pub result_url_template: Option<crate::notify::links::ResultUrlTemplate>,
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
    #[command(flatten)]
    pub egress: EgressSettings,
    #[command(flatten)]
    pub network_policy: NetworkPolicySettings,
    #[command(flatten)]
    pub admission: crate::policy::admission::AdmissionArgs,
    #[command(flatten)]
    pub api: crate::console::ApiArgs,
}

impl OperatorConfig {
    /// The namespaces the operator acts in (`--watch-namespaces`).
    pub fn watch_scope(&self) -> crate::scope::WatchScope {
        crate::scope::WatchScope::from_list(&self.watch_namespaces)
    }

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

/// Parses a duration as flags, environment variables and chart values spell it: `90s`,
/// `5m`, `1h30m`, `6h`, `1d` (any [`humantime`] duration), or a plain number of seconds as
/// earlier releases took (`90`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    imagewarden_scanner::policy::parse_duration(s)
}

/// A duration (see [`parse_duration`]) in whole seconds, for Kubernetes fields that take
/// seconds; sub-second parts are refused rather than dropped.
fn duration_seconds<T: TryFrom<u64>>(s: &str) -> Result<T, String> {
    let duration = parse_duration(s)?;
    if duration.subsec_nanos() != 0 {
        return Err(format!("invalid duration {s:?}: use whole seconds"));
    }
    T::try_from(duration.as_secs()).map_err(|_| format!("invalid duration {s:?}: too long"))
}

/// [`duration_seconds`] for `i64` fields.
pub fn duration_seconds_i64(s: &str) -> Result<i64, String> {
    duration_seconds(s)
}

/// [`duration_seconds`] for `i32` fields.
pub fn duration_seconds_i32(s: &str) -> Result<i32, String> {
    duration_seconds(s)
}

/// Checks a base URL for scanner Jobs: plain `http://host[:port]`, optionally a path.
pub fn check_base_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    if parsed.scheme() != "http" {
        return Err("use http:// (the Job verifies the content digest)".into());
    }
    let host = parsed.host_str().unwrap_or_default();
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok();
    // E.g. an unexpanded `$(VAR)` of a Pod spec is not a host name.
    if host.is_empty()
        || !(ip
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
    {
        return Err(format!("{host:?} is not a host name or address"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("no query or fragment, please".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{malware_check_options, parse_duration, OperatorConfig};
    use std::time::Duration;

    /// The operator's flags as `run` parses them, after a database source.
    fn parse(extra: &[&str]) -> Result<OperatorConfig, clap::Error> {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            config: OperatorConfig,
        }
        let mut args = vec!["operator", "--db=/db.idx"];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args).map(|c| c.config)
    }

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
    fn the_job_executor_needs_an_address_for_jobs_and_the_inline_one_takes_none() {
        use super::ExecutorKind;
        let config = parse(&["--executor=job"]).unwrap();
        let err = config.job.check_db_serving(config.executor).unwrap_err();
        assert!(err.contains("--db-serve-service"), "{err}");
        let config = parse(&["--executor=job", "--db-serve-service=imagewarden-database"]).unwrap();
        assert!(config.job.check_db_serving(ExecutorKind::Job).is_ok());
        let config = parse(&["--executor=job", "--db-serve-url=https://op:8081"]).unwrap();
        let err = config.job.check_db_serving(ExecutorKind::Job).unwrap_err();
        assert!(
            err.contains("--db-serve-url") && err.contains("http://"),
            "{err}"
        );
        // The default executor is job; the inline one takes no address.
        assert_eq!(parse(&[]).unwrap().executor, ExecutorKind::Job);
        let config = parse(&[
            "--executor=inline",
            "--db-serve-service=imagewarden-database",
        ])
        .unwrap();
        assert_eq!(config.executor, ExecutorKind::Inline);
        let err = config.job.check_db_serving(config.executor).unwrap_err();
        assert!(err.contains("inline"), "{err}");
        assert!(parse(&["--db-serve-url=http://a:1", "--db-serve-service=b"]).is_err());
    }

    #[test]
    fn scan_budgets_reach_scanner_jobs_and_must_fit_their_memory_limit() {
        // The defaults fit the default 512Mi limit, with room for a database.
        let config = parse(&[]).unwrap();
        config.job.check_memory(128 << 20).unwrap();
        assert_eq!(
            config.job.budgets.args(),
            [
                "--max-image-bytes=17179869184",
                "--max-file-bytes=134217728",
                "--max-retained-bytes=67108864",
                "--max-sbom-bytes=67108864",
                "--max-sbom-components=100000",
                "--max-zip-entries=200000",
                "--max-warnings=200",
            ]
        );
        // Every budget flag set on the operator reaches its scanner Jobs.
        let config = parse(&[
            "--max-sbom-bytes=8Mi",
            "--max-sbom-components=500",
            "--max-manifest-bytes=1Mi",
            "--max-zip-entries=1000",
            "--max-warnings=50",
        ])
        .unwrap();
        let args = config.job.budgets.args();
        for want in [
            "--max-sbom-bytes=8388608",
            "--max-sbom-components=500",
            "--max-manifest-bytes=1048576",
            "--max-zip-entries=1000",
            "--max-warnings=50",
        ] {
            assert!(args.iter().any(|a| a == want), "missing {want} in {args:?}");
        }
        let config = parse(&["--max-file-bytes=1Gi", "--max-retained-bytes=16Mi"]).unwrap();
        assert_eq!(config.job.budgets.max_file_bytes, 1 << 30);
        let err = config.job.check_memory(0).unwrap_err();
        assert!(
            err.contains("--job-memory-limit 512Mi") && err.contains("--max-file-bytes"),
            "{err}"
        );
        let config = parse(&["--max-file-bytes=1Gi", "--job-memory-limit=2Gi"]).unwrap();
        config.job.check_memory(256 << 20).unwrap();
        assert!(parse(&["--max-retained-bytes=some"]).is_err());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("6h").unwrap(), Duration::from_secs(21600));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        for bad in ["6x", "h", "", "-5s", "5 parsecs"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(
                err.contains("invalid duration") && err.contains("1h30m"),
                "{err}"
            );
        }
    }

    #[test]
    fn job_durations_take_units_and_plain_seconds() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.job.job_active_deadline_seconds, 1800);
        assert_eq!(config.job.job_ttl_seconds, 600);
        let config = parse(&[
            "--job-active-deadline-seconds=1h30m",
            "--job-ttl-seconds=120",
            "--push-coalesce-window=1m30s",
        ])
        .unwrap();
        assert_eq!(config.job.job_active_deadline_seconds, 5400);
        assert_eq!(config.job.job_ttl_seconds, 120);
        assert_eq!(config.push_coalesce_window, Duration::from_secs(90));
        let err = parse(&["--job-ttl-seconds=1500ms"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("whole seconds"), "{err}");
        let err = parse(&["--job-ttl-seconds=100y"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("too long"), "{err}");
        let err = parse(&["--webhook-read-timeout=soon"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("invalid duration \"soon\""), "{err}");
    }
}
