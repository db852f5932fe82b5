//! `imagewarden-operator`: runs the controllers (`run`), or scans one image and writes
//! its ImageScanResult (`scan-image`, what scanner Jobs run).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::routing::get;
use clap::{Parser, Subcommand};
use imagewarden_operator::config::{ExecutorKind, OperatorConfig};
use imagewarden_operator::context::Context;
use imagewarden_operator::executor::{self, ScanTarget};
use imagewarden_operator::leader::{self, LeaseSettings};
use imagewarden_operator::metrics::Metrics;
use imagewarden_operator::registry::{Credentials, FromSecretData as _, RegistryAccess};
use imagewarden_operator::{controller, dbserve, dbupdate};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use tracing::{error, info, warn};

/// The imagewarden operator.
#[derive(Parser)]
#[command(name = "imagewarden-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers, the push-webhook endpoint and the metrics endpoint.
    Run(Box<OperatorConfig>),
    /// Scan one image and write its ImageScanResult (what scanner Jobs run).
    ScanImage(Box<ScanImageArgs>),
    /// Fix one image for an ImageFix and record each phase and the outcome in its status
    /// (what fix Jobs run).
    FixImage(Box<FixImageArgs>),
    /// Check an installed release (what `helm test` runs): the operator answers `/readyz`
    /// and every imagewarden CRD is Established. Exits non-zero on the first failure.
    Check(CheckArgs),
}

#[derive(clap::Args)]
struct CheckArgs {
    /// The operator's readiness endpoint, e.g.
    /// `http://imagewarden-metrics.imagewarden-system.svc:8080/readyz`.
    #[arg(long)]
    readyz_url: String,
}

/// Where a scanner Job gets the vulnerability database.
#[derive(clap::Args)]
struct JobDbArgs {
    /// Vulnerability database from local sources (index file, OSV directory or zips), for
    /// running by hand; scanner Jobs download the operator's with `--db-url` instead.
    #[arg(
        long = "db",
        required_unless_present = "db_url",
        conflicts_with = "db_url"
    )]
    db: Vec<String>,
    /// URL of the operator's database (`<base>/db/<version>`), downloaded and verified
    /// before the scan.
    #[arg(long, requires_all = ["db_version", "db_max_bytes"])]
    db_url: Option<String>,
    /// Version (content digest) the downloaded database must have.
    #[arg(long, requires = "db_url")]
    db_version: Option<String>,
    /// Largest download accepted, in bytes.
    #[arg(long, requires = "db_url")]
    db_max_bytes: Option<u64>,
    /// How long failed downloads are retried (the operator may be restarting).
    #[arg(long, value_parser = imagewarden_operator::config::parse_duration, default_value = "2m")]
    db_fetch_patience: Duration,
}

/// How a scanner Job reaches the registry (the rule's Secrets, mounted).
#[derive(clap::Args)]
struct JobRegistryArgs {
    /// Plain HTTP.
    #[arg(long)]
    insecure: bool,
    /// Directory of the mounted credentials Secret.
    #[arg(long)]
    credentials_dir: Option<PathBuf>,
    /// PEM CA file.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

/// Fix one image for an ImageFix and record the outcome in its status (what fix Jobs run).
#[derive(clap::Args)]
struct FixImageArgs {
    /// Namespace of the ImageFix.
    #[arg(long)]
    namespace: String,
    /// Name of the ImageFix.
    #[arg(long)]
    name: String,
    /// UID of the ImageFix the Job was made for.
    #[arg(long)]
    uid: String,
    /// Generation of the ImageFix's spec the Job was made for.
    #[arg(long)]
    generation: i64,
    /// The image to fix: `registry/repository:tag@digest`.
    #[arg(long)]
    image: String,
    /// Directory holding the ImageFix's keyring Secret (mounted by the operator): its
    /// files are used instead of the image's own keys.
    #[arg(long)]
    keyring_dir: Option<PathBuf>,
    #[command(flatten)]
    db: JobDbArgs,
    #[command(flatten)]
    registry_access: JobRegistryArgs,
    #[command(flatten)]
    egress: imagewarden_operator::config::EgressSettings,
    #[command(flatten)]
    budgets: imagewarden_operator::config::ScanBudgetSettings,
}

#[derive(clap::Args)]
struct ScanImageArgs {
    /// Namespace of the ImageScanResult.
    #[arg(long)]
    namespace: String,
    /// Registry `host[:port]`.
    #[arg(long)]
    registry: String,
    #[arg(long)]
    repository: String,
    /// Manifest digest to scan.
    #[arg(long)]
    digest: String,
    /// Tags pointing at the digest.
    #[arg(long = "tag")]
    tags: Vec<String>,
    #[command(flatten)]
    db: JobDbArgs,
    #[command(flatten)]
    registry_access: JobRegistryArgs,
    #[arg(long)]
    owner_kind: Option<String>,
    #[arg(long)]
    owner_name: Option<String>,
    #[arg(long)]
    owner_uid: Option<String>,
    /// YARA rules for the malware check: a `.yar` file or a directory of them (a mounted
    /// ConfigMap), compiled with the bundled rules.
    #[arg(
        long,
        env = "IMAGEWARDEN_MALWARE_RULES",
        value_name = "DIR",
        value_delimiter = ','
    )]
    malware_rules: Vec<PathBuf>,
    /// The scanners to run (comma-separated): vuln, baseline, secret, malware.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "vuln,baseline,secret,malware"
    )]
    scanners: Vec<imagewarden_scanner::finding::ScannerKind>,
    #[command(flatten)]
    egress: imagewarden_operator::config::EgressSettings,
    #[command(flatten)]
    budgets: imagewarden_operator::config::ScanBudgetSettings,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IMAGEWARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let json = std::env::var("IMAGEWARDEN_LOG_FORMAT").is_ok_and(|v| v == "json");
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    match Cli::parse().command {
        Command::Run(config) => run(*config).await,
        Command::Check(args) => {
            let client = kube::Client::try_default()
                .await
                .context("connecting to the API server")?;
            match imagewarden_operator::install_check::check(client, &args.readyz_url).await {
                Ok(lines) => {
                    for line in lines {
                        println!("ok: {line}");
                    }
                    Ok(())
                }
                Err(e) => anyhow::bail!(e),
            }
        }
        Command::FixImage(args) => job_exit(fix_image(*args).await),
        Command::ScanImage(args) => job_exit(scan_image(*args).await),
    }
}

/// How a scanner Job's command ends: without the database with its own exit code (the
/// Job's Pod failure policy fails the Job at once), else as `result` says.
fn job_exit(result: Result<(), ScanImageError>) -> anyhow::Result<()> {
    match result {
        Err(ScanImageError::Database(e)) => {
            error!(error = %e, "no vulnerability database");
            eprintln!("Error: {e}");
            std::process::exit(e.exit_code());
        }
        Err(ScanImageError::Other(e)) => Err(e),
        Ok(()) => Ok(()),
    }
}

enum ScanImageError {
    Database(dbserve::FetchError),
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for ScanImageError {
    fn from(e: E) -> Self {
        ScanImageError::Other(e.into())
    }
}

async fn run(config: OperatorConfig) -> anyhow::Result<()> {
    config
        .job
        .check_db_serving(config.executor)
        .map_err(anyhow::Error::msg)?;
    if config.executor == ExecutorKind::Job {
        // The budgets alone must fit a scanner container; the database is checked once loaded.
        config.job.check_memory(0).map_err(anyhow::Error::msg)?;
    }
    let checks = config
        .check_options()
        .context("loading the malware rules")?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let db_base_url = match (&config.job.db_serve_url, &config.job.db_serve_service) {
        (Some(url), _) => Some(url.clone()),
        (None, Some(name)) => {
            let services: kube::Api<k8s_openapi::api::core::v1::Service> =
                kube::Api::namespaced(client.clone(), &config.lease_namespace);
            let service = services.get(name).await.with_context(|| {
                format!(
                    "reading Service {}/{name} (--db-serve-service), the address scanner Jobs download the database from",
                    config.lease_namespace
                )
            })?;
            Some(dbserve::service_base_url(name, &service).map_err(anyhow::Error::msg)?)
        }
        (None, None) => None,
    };
    let sources = if config.db.is_empty() {
        format!(
            "the official sources ({}, {}) cached in {}",
            config.official_db.osv_url,
            config.official_db.nvd_url,
            config.official_db.db_cache_dir.display()
        )
    } else {
        config.db.join(", ")
    };
    info!(%sources, "loading the vulnerability database");
    let db = dbupdate::load_configured(&config)
        .await
        .with_context(|| format!("loading the vulnerability database from {sources}"))?;
    info!(version = %db.version, records = db.db.info().records, "vulnerability database loaded");
    if config.executor == ExecutorKind::Job {
        if let Err(e) = config.job.check_memory(db.db.size() as u64) {
            warn!("scanner Jobs may run out of memory: {e}");
        }
    }
    let metrics = Arc::new(Metrics::default());
    metrics.database(&db.version, db.db.info());
    let mut ctx =
        Context::new(client.clone(), config.clone(), db, metrics.clone()).with_checks(checks);
    if let Some(url) = db_base_url {
        ctx = ctx.with_db_base_url(url);
    }
    let ctx = Arc::new(ctx);

    // Scanner Jobs download the database from every replica (the Service picks one); it
    // listens before the probes, so a ready replica serves it.
    if ctx.config.executor == ExecutorKind::Job {
        let addr = ctx.config.job.db_serve_addr;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the database address {addr} (--db-serve-addr)"))?;
        info!(%addr, url = ?ctx.db_base_url, "serving the vulnerability database to scanner Jobs");
        let serving = ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = dbserve::serve(listener, serving).await {
                error!(error = %e, "database server stopped");
            }
        });
    }

    // Policy caches on every replica: each serves admission, the leader records verdicts.
    // Policies are cluster-wide and judge Pods of every namespace: a namespace-scoped
    // operator cannot read what they need, so it runs without them.
    let admission_settings = imagewarden_operator::policy::admission::AdmissionSettings {
        default_excluded: vec!["kube-system".to_string(), config.lease_namespace.clone()],
    };
    let admission_server = config
        .admission
        .server_config(admission_settings.clone())
        .map_err(anyhow::Error::msg)?;
    let operator_certs = match admission_server.as_ref().map(|s| &s.tls) {
        Some(imagewarden_operator::policy::admission::AdmissionTls::Operator(certs)) => {
            Some(certs.clone())
        }
        _ => None,
    };
    if !config.watch_namespaces.is_empty() && admission_server.is_some() {
        anyhow::bail!(
            "--watch-namespaces and the admission webhook (--admission-addr) exclude each other: admission judges Pods of every namespace against cluster-wide ImagePolicies, which a namespace-scoped operator cannot read"
        );
    }
    let policy_caches = config
        .watch_namespaces
        .is_empty()
        .then(|| imagewarden_operator::policy::server::Caches::start(&client));
    // The per-image gauges read the results cache (one per watched namespace without it).
    metrics.images.set_limit(config.metrics_image_series_limit);
    match &policy_caches {
        Some(caches) => metrics.images.add_results(caches.results.clone()),
        None => {
            for ns in &config.watch_namespaces {
                metrics
                    .images
                    .add_results(imagewarden_operator::image_metrics::watch_results(
                        kube::Api::namespaced(client.clone(), ns),
                    ));
            }
        }
    }
    if let (Some(server), Some(policy_caches)) = (admission_server, &policy_caches) {
        tokio::time::timeout(Duration::from_secs(300), policy_caches.ready())
            .await
            .context("the admission caches (ImagePolicies, ImageScanResults, VulnerabilityExceptions, Namespaces, ScanTasks) did not fill within 5 minutes: are the CRDs installed and may the operator list them?")?
            .context("an admission cache stopped")?;
        imagewarden_operator::policy::server::spawn(ctx.clone(), policy_caches.clone(), server)
            .await?;
    }
    // The status API on every replica, from the same caches.
    let api_server = config.api.server_config().map_err(anyhow::Error::msg)?;
    let api_certs = match api_server.as_ref().map(|s| &s.tls) {
        Some(imagewarden_operator::policy::admission::AdmissionTls::Operator(certs)) => {
            Some(certs.clone())
        }
        _ => None,
    };
    if let Some(server) = api_server {
        let Some(policy_caches) = &policy_caches else {
            anyhow::bail!("--watch-namespaces and the status API (--api-addr) exclude each other: the API answers from cluster-wide caches");
        };
        tokio::time::timeout(Duration::from_secs(300), policy_caches.ready())
            .await
            .context("the status API caches did not fill within 5 minutes: are the CRDs installed and may the operator list them?")?
            .context("a status API cache stopped")?;
        imagewarden_operator::console::spawn(ctx.clone(), policy_caches.clone(), server).await?;
    }

    let leading = if config.leader_elect {
        let identity = config
            .identity
            .clone()
            .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
        leader::spawn(
            client.clone(),
            LeaseSettings {
                namespace: config.lease_namespace.clone(),
                identity,
                lease_duration: Duration::from_secs(15),
            },
        )
    } else {
        tokio::sync::watch::channel(true).1
    };

    // Metrics and probes.
    let probe_leading = leading.clone();
    let m = metrics.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            imagewarden_operator::metrics::CONTENT_TYPE,
                        )],
                        m.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics address {}", config.metrics_addr))?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!(error = %e, "metrics server stopped");
        }
    });

    // Act only while leading; a replica that loses the Lease exits and is restarted.
    let mut leading = leading;
    while !*leading.borrow() {
        info!("waiting for the leader Lease");
        leading.changed().await?;
    }
    drop(probe_leading);
    metrics
        .leader
        .store(1, std::sync::atomic::Ordering::Relaxed);
    info!("leading: starting controllers");

    let refresh_ctx = ctx.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(refresh_ctx.config.db_refresh_interval);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            if let Err(e) = dbupdate::refresh(refresh_ctx.clone()).await {
                warn!(error = %e, "refreshing the vulnerability database failed; keeping the current one");
            }
        }
    });

    spawn_push_trigger(ctx.clone()).await?;
    if let Some(certs) = operator_certs {
        // The leader renews the admission certificates and keeps the caBundle current.
        tokio::spawn(imagewarden_operator::policy::certs::run_leader(
            ctx.client.clone(),
            ctx.config.lease_namespace.clone(),
            certs,
        ));
    }
    if let Some(certs) = api_certs {
        // The leader renews the status API's certificates.
        tokio::spawn(imagewarden_operator::policy::certs::run_leader(
            ctx.client.clone(),
            ctx.config.lease_namespace.clone(),
            certs,
        ));
    }
    if let Some(policy_caches) = policy_caches {
        tokio::spawn(imagewarden_operator::policy::running::run(
            ctx.clone(),
            policy_caches.clone(),
            admission_settings,
        ));
        tokio::spawn(imagewarden_operator::policy::verdicts::run(
            ctx.clone(),
            policy_caches,
        ));
    }
    tokio::spawn(imagewarden_operator::lifecycle::collect_deleted(
        ctx.clone(),
    ));

    let elect = config.leader_elect;
    let lost = async move {
        if !elect {
            return futures::future::pending::<()>().await;
        }
        loop {
            if leading.changed().await.is_err() || !*leading.borrow() {
                return;
            }
        }
    };
    tokio::select! {
        _ = controller::run(ctx.clone()) => info!("controllers stopped"),
        _ = lost => {
            error!("lost the leader Lease; exiting so that only one replica acts");
            std::process::exit(1);
        }
    }
    Ok(())
}

/// Starts the push-webhook endpoint and turns coalesced pushes into `Push` tasks for the
/// rules they match.
async fn spawn_push_trigger(ctx: Arc<Context>) -> anyhow::Result<()> {
    use futures::StreamExt;
    use imagewarden_operator::controller::scan_rule::{start_task, task_name};
    use imagewarden_operator::crd::{ScanRule, TaskTrigger};
    use imagewarden_operator::registry::webhook::{serve_with, tls_config, ServerOptions};
    use imagewarden_operator::registry::{coalesce_pushes, rule_matches_push};
    use kube::runtime::{reflector, watcher, WatchStreamExt};
    use kube::ResourceExt;

    let Some(token_file) = ctx.config.webhook_token_file.clone() else {
        warn!("no --webhook-token-file: the push-webhook endpoint is off, onPush rules will not trigger");
        return Ok(());
    };
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("reading the webhook token from {}", token_file.display()))?
        .trim()
        .to_string();
    anyhow::ensure!(
        !token.is_empty(),
        "the webhook token file {} is empty",
        token_file.display()
    );
    let tls = match (
        &ctx.config.webhook_tls_cert_file,
        &ctx.config.webhook_tls_key_file,
    ) {
        (Some(cert), Some(key)) => {
            Some(tls_config(cert, key).map_err(|e| anyhow::anyhow!("webhook TLS: {e}"))?)
        }
        _ => None,
    };
    let (deletes_tx, deletes_rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(imagewarden_operator::lifecycle::registry_deletes(
        ctx.clone(),
        deletes_rx,
    ));
    let options = ServerOptions {
        idle_timeout: ctx.config.webhook_idle_timeout,
        read_timeout: ctx.config.webhook_read_timeout,
        tls,
        deletes: Some(deletes_tx),
        ..ServerOptions::default()
    };
    let listener = tokio::net::TcpListener::bind(ctx.config.webhook_addr)
        .await
        .with_context(|| format!("binding the webhook address {}", ctx.config.webhook_addr))?;
    info!(addr = %ctx.config.webhook_addr, tls = options.tls.is_some(), "push-webhook endpoint listening");
    let (events_tx, events_rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move {
        if let Err(e) = serve_with(listener, token, events_tx, options).await {
            error!(error = %e, "push-webhook server stopped");
        }
    });

    // Guarded: one rule that cannot be read must not stop the push trigger for the others.
    // One store per watched scope (a reflector follows one watch).
    let mut stores = Vec::new();
    for rules in ctx.scoped_apis::<kube::core::DeserializeGuard<ScanRule>>() {
        let (store, writer) = reflector::store();
        stores.push(store);
        tokio::spawn(
            reflector(writer, watcher(rules, watcher::Config::default()))
                .applied_objects()
                .for_each(|_| async {}),
        );
    }
    let (batches_tx, mut batches_rx) = tokio::sync::mpsc::channel(256);
    let window = ctx.config.push_coalesce_window;
    tokio::spawn(coalesce_pushes(
        events_rx,
        window,
        move |event| {
            stores
                .iter()
                .flat_map(|store| store.state())
                .filter_map(|guard| guard.0.as_ref().ok().cloned())
                .filter(|rule| rule_matches_push(&rule.spec, event))
                .map(|rule| (rule.namespace().unwrap_or_default(), rule.name_any()))
                .collect::<Vec<_>>()
        },
        batches_tx,
    ));
    tokio::spawn(async move {
        while let Some(batch) = batches_rx.recv().await {
            let (ns, name) = batch.rule.clone();
            let rule = match kube::Api::<ScanRule>::namespaced(ctx.client.clone(), &ns)
                .get_opt(&name)
                .await
            {
                Ok(Some(rule)) => rule,
                Ok(None) => continue,
                Err(e) => {
                    warn!(rule = %name, error = %e, "reading rule for a push");
                    continue;
                }
            };
            let images: Vec<String> = batch
                .events
                .iter()
                .map(|e| {
                    format!(
                        "{}/{}:{}@{}",
                        e.registry_host, e.repository, e.tag, e.digest
                    )
                })
                .collect();
            // Named by the images and the second of the batch: a delivery the registry
            // repeats within the second is one task, a later push of the same digest (after
            // a delete, say) a new one.
            let suffix = {
                let second = chrono::Utc::now().timestamp();
                imagewarden_operator::controller::scan_rule::short_hash(&format!(
                    "{}@{second}",
                    images.join(",")
                ))
            };
            let task = task_name(&name, "push", &suffix);
            if let Err(e) = start_task(&ctx, &rule, &task, TaskTrigger::Push, images).await {
                warn!(rule = %name, error = %e, "starting a push task");
            }
        }
    });
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "imagewarden".into())
}

async fn scan_image(args: ScanImageArgs) -> Result<(), ScanImageError> {
    let checks = imagewarden_operator::config::malware_check_options(&args.malware_rules)
        .context("loading the malware rules")?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let db = load_db(&args.db, &args.egress).await?;
    let access = registry_access(&args.registry, &args.registry_access, &args.egress)?;
    let target = ScanTarget {
        registry: access.host.clone(),
        repository: args.repository,
        digest: args.digest,
        tags: args.tags,
    };
    let owner = match (args.owner_kind, args.owner_name, args.owner_uid) {
        (Some(kind), Some(name), Some(uid)) => Some(OwnerReference {
            api_version: "imagewarden.io/v1alpha1".into(),
            kind,
            name,
            uid,
            ..Default::default()
        }),
        _ => None,
    };
    let status = executor::scan_target(
        &target,
        &access,
        &db,
        &checks,
        &args.scanners,
        args.budgets.budgets(),
    )
    .await?;
    let name = executor::store_result(&client, &args.namespace, &target, owner, &status).await?;
    info!(result = %name, findings = status.total_findings, "result written");
    Ok(())
}

/// The database of a scanner Job: downloaded from the operator and verified, or loaded
/// from local sources.
async fn load_db(
    args: &JobDbArgs,
    egress: &imagewarden_operator::config::EgressSettings,
) -> Result<imagewarden_operator::db::LoadedDb, ScanImageError> {
    match &args.db_url {
        Some(url) => {
            let version = args.db_version.clone().unwrap_or_default();
            if !dbserve::is_version(&version) {
                return Err(ScanImageError::Other(anyhow::anyhow!(
                    "--db-version {version:?} is not a database version (sha256:<64 hex digits>)"
                )));
            }
            let download = dbserve::DbDownload {
                url: url.clone(),
                version,
                max_bytes: args.db_max_bytes.unwrap_or_default(),
                patience: args.db_fetch_patience,
            };
            let db = dbserve::fetch(&download)
                .await
                .map_err(ScanImageError::Database)?;
            info!(version = %db.version, bytes = db.db.size(), "vulnerability database downloaded and verified");
            Ok(db)
        }
        None => Ok(dbupdate::load(args.db.clone(), egress.policy()).await?),
    }
}

/// Access to `registry` with the mounted credentials and CA of a scanner Job.
fn registry_access(
    registry: &str,
    args: &JobRegistryArgs,
    egress: &imagewarden_operator::config::EgressSettings,
) -> anyhow::Result<RegistryAccess> {
    let mut access = RegistryAccess::new(registry, args.insecure)?.with_egress(egress.policy());
    if let Some(dir) = &args.credentials_dir {
        let mut data = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("..") || !entry.path().is_file() {
                continue;
            }
            data.insert(name, k8s_openapi::ByteString(std::fs::read(entry.path())?));
        }
        let credentials = Credentials::from_secret_data(&data, &access.host)?;
        access = access.with_credentials(credentials);
    }
    if let Some(ca) = &args.ca_file {
        access = access.with_ca_pem(std::fs::read_to_string(ca)?);
    }
    Ok(access)
}

async fn fix_image(args: FixImageArgs) -> Result<(), ScanImageError> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let reference: oci_client::Reference = args
        .image
        .parse()
        .with_context(|| format!("--image {:?} is not an image reference", args.image))?;
    let access = registry_access(reference.registry(), &args.registry_access, &args.egress)?;
    let db = load_db(&args.db, &args.egress).await?;
    let keyrings = match &args.keyring_dir {
        Some(dir) => controller::image_fix::keyring_dir_files(dir)
            .map_err(|e| anyhow::anyhow!("--keyring-dir: {e}"))?,
        None => Vec::new(),
    };
    let job = controller::image_fix::FixJobRun {
        namespace: &args.namespace,
        name: &args.name,
        uid: &args.uid,
        generation: args.generation,
        image: &args.image,
        keyrings,
    };
    let status = controller::image_fix::run_in_job(
        &client,
        &job,
        &access,
        &db,
        &args.egress.policy(),
        args.budgets.budgets(),
    )
    .await?;
    info!(fix = %args.name, phase = ?status.phase, "fix recorded");
    Ok(())
}
