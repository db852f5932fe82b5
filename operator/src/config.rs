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
                    crate::dbserve::check_base_url(url)
                        .map_err(|e| format!("--db-serve-url {url:?}: {e}"))?;
                }
                Ok(())
            }
        }
    }
}

/// Where the operator and its scanner Jobs may send requests (registries, token services,
/// notification receivers). Set by the cluster administrator, never by a rule.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct EgressSettings {
    /// The cluster's Service and Pod ranges (CIDRs, comma-separated): denied, like
    /// loopback, link-local (cloud metadata) and multicast addresses, unless allowed below.
    #[arg(
        long = "cluster-cidrs",
        env = "IMAGEWARDEN_CLUSTER_CIDRS",
        value_delimiter = ',',
        value_parser = imagewarden_scanner::egress::parse_range
    )]
    pub cluster_cidrs: Vec<imagewarden_scanner::egress::IpNet>,
    /// Address ranges requests may reach although denied above (e.g. an in-cluster
    /// registry's Service address, or 127.0.0.0/8 for a registry on the node), and host
    /// names token realms may point at besides the registry's own host; comma-separated.
    #[arg(
        long = "egress-allow",
        env = "IMAGEWARDEN_EGRESS_ALLOW",
        value_delimiter = ','
    )]
    pub allow: Vec<imagewarden_scanner::egress::AllowEntry>,
}

impl EgressSettings {
    /// The policy these settings describe.
    pub fn policy(&self) -> std::sync::Arc<imagewarden_scanner::egress::EgressPolicy> {
        std::sync::Arc::new(imagewarden_scanner::egress::EgressPolicy::new(
            &self.cluster_cidrs,
            &self.allow,
        ))
    }

    /// The same settings as arguments of `scan-image` (scanner Jobs).
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if !self.cluster_cidrs.is_empty() {
            let list: Vec<String> = self.cluster_cidrs.iter().map(ToString::to_string).collect();
            args.push(format!("--cluster-cidrs={}", list.join(",")));
        }
        if !self.allow.is_empty() {
            let list: Vec<String> = self.allow.iter().map(ToString::to_string).collect();
            args.push(format!("--egress-allow={}", list.join(",")));
        }
        args
    }
}

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
    #[arg(long, value_parser = humantime_secs, default_value = "10s")]
    pub webhook_read_timeout: Duration,
    /// A push-webhook connection that sends no complete request head for this long (slow
    /// or idle) is closed.
    #[arg(long, value_parser = humantime_secs, default_value = "30s")]
    pub webhook_idle_timeout: Duration,
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
    #[command(flatten)]
    pub egress: EgressSettings,
    #[command(flatten)]
    pub network_policy: NetworkPolicySettings,
    #[command(flatten)]
    pub admission: crate::policy::server::AdmissionArgs,
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
    fn the_job_executor_needs_an_address_for_jobs_and_the_inline_one_takes_none() {
        use super::{ExecutorKind, OperatorConfig};
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            config: OperatorConfig,
        }
        let parse = |extra: &[&str]| {
            let mut args = vec!["operator", "--db=/db.idx"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).map(|c| c.config)
        };
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
    fn durations_parse_with_units() {
        assert_eq!(humantime_secs("90").unwrap(), Duration::from_secs(90));
        assert_eq!(humantime_secs("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(humantime_secs("6h").unwrap(), Duration::from_secs(21600));
        assert!(humantime_secs("6x").is_err());
        assert!(humantime_secs("h").is_err());
    }
}
