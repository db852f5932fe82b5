//! `imagewarden server`: Harbor's Pluggable Scanner API (scanner adapter API v1.0–v1.2,
//! `goharbor/pluggable-scanner-spec`), so that Harbor scans its artifacts with imagewarden.
//!
//! - `GET /api/v1/metadata`: the scanner, its capabilities (vulnerability reports in
//!   Harbor's format, CycloneDX SBOMs) and the database it scans with.
//! - `POST /api/v1/scan`: a scan request is checked, queued (bounded: 503 with
//!   `Retry-After` when full) and answered with its id; `--workers` scans run at once.
//! - `GET /api/v1/scan/{id}/report`: 302 with `Refresh-After` while the scan runs, the
//!   report the `Accept` header names when done, 500 with the reason when it failed, 404
//!   for an id the server does not know (or whose report expired).
//!
//! The artifact is pulled from the registry the request names, with the Authorization
//! Harbor made for it, which goes to that registry (and a token realm on its host) only.
//! The registry URL is tenant input: requests go through the egress policy
//! (`--cluster-cidrs`, `--egress-allow`), and `--allowed-registries` limits the hosts.

pub mod api;
pub mod report;
pub mod store;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
pub use tokio_util::sync::CancellationToken;

use crate::budget::ScanBudgets;
use crate::egress::EgressPolicy;
use crate::finding::ScannerKind;
use crate::pipeline::{self, ScanOptions, ScanSource};
use crate::source::{ImageRef, PullOptions, RegistryCredentials};
use crate::vulndb::Db;
use api::{RegistryAuthorization, ReportType, RequestError, ScanJob, ScanRequest};
use store::{Reports, State as ScanState, Store};

/// Seconds Harbor is told to wait before asking for a report again.
pub const REFRESH_AFTER_SECS: u64 = 10;
/// Seconds a client is told to wait when the queue is full.
pub const RETRY_AFTER_SECS: u64 = 30;
/// Largest scan request body read.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Most connections served at once.
const MAX_CONNECTIONS: usize = 256;
/// Longest message of a failed scan served.
const MAX_ERROR_CHARS: usize = 2000;

/// Arguments of `imagewarden server`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on.
    #[arg(
        long,
        env = "IMAGEWARDEN_SERVER_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: SocketAddr,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "IMAGEWARDEN_SERVER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "IMAGEWARDEN_SERVER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The vulnerability database: an index file from `imagewarden db build`, OSV
    /// directories / all.zip files / http(s) base URLs, `nvd:PATH|URL` feeds, or one
    /// `oci://` database image. Repeatable.
    #[arg(long, env = "IMAGEWARDEN_DB", value_delimiter = ',', required = true)]
    pub db: Vec<String>,
    /// Load the --db sources again this often (e.g. 6h); a failed reload keeps the
    /// database in use. Unset: loaded once at start.
    #[arg(long, env = "IMAGEWARDEN_DB_REFRESH", value_parser = humantime::parse_duration)]
    pub db_refresh: Option<Duration>,
    /// File holding the token Harbor sends (`Authorization: Bearer <token>`, set as the
    /// scanner's "Bearer" authorization in Harbor). Required unless --insecure-no-auth.
    #[arg(
        long,
        env = "IMAGEWARDEN_SERVER_API_TOKEN_FILE",
        required_unless_present = "insecure_no_auth",
        conflicts_with = "insecure_no_auth"
    )]
    pub api_token_file: Option<PathBuf>,
    /// Accept requests without a token (anyone who reaches the port can make the server
    /// pull images with the credentials they pass).
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Scan requests waiting for a worker; more are refused with 503 and Retry-After.
    #[arg(long, env = "IMAGEWARDEN_SERVER_QUEUE", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub queue: u32,
    /// Scans at once.
    #[arg(long, env = "IMAGEWARDEN_SERVER_WORKERS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// How long a finished report is kept for Harbor to fetch.
    #[arg(long, env = "IMAGEWARDEN_SERVER_REPORT_TTL", default_value = "1h",
          value_parser = humantime::parse_duration)]
    pub report_ttl: Duration,
    /// Most scans (pending and finished) remembered at once; the oldest finished reports
    /// make room for new requests.
    #[arg(long, env = "IMAGEWARDEN_SERVER_MAX_REPORTS", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_reports: u32,
    /// Most bytes of finished reports kept in memory. Bytes, or with a unit: 256Mi.
    #[arg(long, env = "IMAGEWARDEN_SERVER_MAX_REPORT_BYTES", default_value = "256Mi",
          value_parser = crate::budget::parse_bytes)]
    pub max_report_bytes: u64,
    /// Longest one scan may take (pull and match); it fails after that.
    #[arg(long, env = "IMAGEWARDEN_SERVER_SCAN_TIMEOUT", default_value = "10m",
          value_parser = humantime::parse_duration)]
    pub scan_timeout: Duration,
    /// Registries (`host[:port]` as Harbor's registry URL names them, comma-separated)
    /// whose artifacts the server scans; others are refused with 422. Empty: any
    /// registry the egress policy lets through.
    #[arg(
        long,
        env = "IMAGEWARDEN_SERVER_ALLOWED_REGISTRIES",
        value_delimiter = ','
    )]
    pub allowed_registries: Vec<String>,
    #[command(flatten)]
    pub egress: crate::egress::EgressSettings,
    /// PEM file with CA certificates to trust for registries.
    #[arg(long, env = "IMAGEWARDEN_SERVER_REGISTRY_CA_FILE")]
    pub registry_ca_file: Option<PathBuf>,
    /// How long requests in flight may take to finish at shutdown.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    #[command(flatten)]
    pub budgets: crate::budget::BudgetArgs,
}

/// How the server runs.
#[derive(Clone)]
pub struct Config {
    /// Sources of the database, for --db-refresh.
    pub db_sources: Vec<String>,
    pub db_refresh: Option<Duration>,
    /// The token requests must carry; `None`: no authentication.
    pub token: Option<String>,
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    pub queue: usize,
    pub workers: usize,
    pub report_ttl: Duration,
    pub max_reports: usize,
    pub max_report_bytes: u64,
    pub scan_timeout: Duration,
    /// `host[:port]` of the registries scanned; empty: any.
    pub allowed_registries: Vec<String>,
    pub egress: Arc<EgressPolicy>,
    pub registry_ca_file: Option<PathBuf>,
    pub budgets: ScanBudgets,
    pub shutdown_grace: Duration,
}

impl Config {
    /// Settings for tests and embedding: the given token, one worker, a queue of 8,
    /// reports kept an hour, the default egress policy.
    pub fn new(token: Option<String>) -> Self {
        Config {
            db_sources: Vec::new(),
            db_refresh: None,
            token,
            tls: None,
            queue: 8,
            workers: 1,
            report_ttl: Duration::from_secs(3600),
            max_reports: 1000,
            max_report_bytes: 256 << 20,
            scan_timeout: Duration::from_secs(600),
            allowed_registries: Vec::new(),
            egress: Arc::new(EgressPolicy::default()),
            registry_ca_file: None,
            budgets: ScanBudgets::default(),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl Args {
    /// The settings these flags describe (reads the token and TLS files).
    pub fn config(&self) -> anyhow::Result<Config> {
        let token = match &self.api_token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading --api-token-file {}", path.display()))?;
                let token = text.trim().to_string();
                anyhow::ensure!(
                    !token.is_empty(),
                    "--api-token-file {} is empty",
                    path.display()
                );
                anyhow::ensure!(
                    token.bytes().all(|b| b.is_ascii_graphic()),
                    "--api-token-file {}: the token must be printable ASCII without spaces",
                    path.display()
                );
                Some(token)
            }
            None => None,
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                Some(crate::tls::tls_config(cert, key).map_err(anyhow::Error::msg)?)
            }
            _ => None,
        };
        let mut allowed_registries = Vec::new();
        for entry in &self.allowed_registries {
            let (host, _) =
                api::parse_registry_url(&format!("https://{}", entry.trim())).map_err(|_| {
                    anyhow::anyhow!("--allowed-registries: {entry:?} is not host[:port]")
                })?;
            allowed_registries.push(host);
        }
        Ok(Config {
            db_sources: self.db.clone(),
            db_refresh: self.db_refresh,
            token,
            tls,
            queue: self.queue as usize,
            workers: self.workers as usize,
            report_ttl: self.report_ttl,
            max_reports: self.max_reports as usize,
            max_report_bytes: self.max_report_bytes,
            scan_timeout: self.scan_timeout,
            allowed_registries,
            egress: self.egress.policy(),
            registry_ca_file: self.registry_ca_file.clone(),
            budgets: self.budgets.budgets(),
            shutdown_grace: self.shutdown_grace,
        })
    }
}

/// Runs `imagewarden server` until SIGTERM or Ctrl-C.
pub fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    if args.insecure_no_auth {
        eprintln!("warning: --insecure-no-auth: the scanner API accepts requests without a token");
    }
    let config = args.config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the server runtime")?;
    runtime.block_on(async move {
        let sources = config.db_sources.clone();
        let db = tokio::task::spawn_blocking(move || Db::load(&sources))
            .await?
            .context("loading the vulnerability database")?;
        if db.info().sample {
            eprintln!(
                "warning: {} is a sample vulnerability database compiled from test records: it finds almost nothing in real images",
                db.origin()
            );
        }
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        eprintln!(
            "imagewarden server listening on {} ({})",
            listener.local_addr()?,
            if config.tls.is_some() { "https" } else { "http" }
        );
        serve(listener, config, db, shutdown).await?;
        Ok(std::process::ExitCode::SUCCESS)
    })
}

async fn stop_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            shutdown.cancel();
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    shutdown.cancel();
}

/// State shared by the handlers and the workers.
struct Shared {
    config: Config,
    store: Store,
    queue: mpsc::Sender<(String, ScanJob)>,
    db: RwLock<Arc<Db>>,
    next_id: AtomicU64,
    id_key: u64,
}

impl Shared {
    fn db(&self) -> Arc<Db> {
        self.db.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A new scan id: 32 hex digits, not guessable from earlier ones.
    fn new_id(&self) -> String {
        use sha2::Digest as _;
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let digest = sha2::Sha256::new()
            .chain_update(self.id_key.to_le_bytes())
            .chain_update(n.to_le_bytes())
            .chain_update(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos()
                    .to_le_bytes(),
            )
            .finalize();
        hex::encode(&digest[..16])
    }
}

/// A random key from the standard library's per-process hasher seeds.
fn random_key() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

/// Serves the scanner API on `listener` with `db` until `shutdown` is cancelled; then
/// stops accepting, lets requests in flight finish (within `shutdown_grace`) and stops
/// the scans.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    db: Db,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let (queue, receiver) = mpsc::channel(config.queue.max(1));
    let shared = Arc::new(Shared {
        store: Store::new(
            config.report_ttl,
            config.max_reports.max(config.queue + config.workers),
            config.max_report_bytes,
        ),
        queue,
        db: RwLock::new(Arc::new(db)),
        next_id: AtomicU64::new(0),
        id_key: random_key() ^ ((random_key() as u128) << 1) as u64,
        config,
    });
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..shared.config.workers.max(1) {
        workers.spawn(worker(shared.clone(), receiver.clone(), shutdown.clone()));
    }
    if let Some(every) = shared.config.db_refresh {
        workers.spawn(refresh_db(shared.clone(), every, shutdown.clone()));
    }
    let router = router(shared.clone());
    let acceptor = shared
        .config
        .tls
        .clone()
        .map(tokio_rustls::TlsAcceptor::from);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "scanner API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Finished connections are collected as new ones come.
        while connections.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!("scanner API connection refused: too many open");
            continue;
        };
        let router = router.clone();
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => serve_connection(tls, router, shutdown).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
                None => serve_connection(stream, router, shutdown).await,
            }
        });
    }
    drop(listener);
    let grace = shared.config.shutdown_grace;
    if tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        connections.abort_all();
    }
    // Workers stop at once (a scan in progress is dropped: its report could not be
    // fetched from a stopped server anyway).
    workers.abort_all();
    while workers.join_next().await.is_some() {}
    Ok(())
}

/// Serves one connection (HTTP/1.1) until it closes, or until `shutdown`, when the
/// request in flight is finished first.
async fn serve_connection<I>(io: I, router: Router, shutdown: CancellationToken)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let mut router = router.clone();
        async move { tower_service::Service::call(&mut router, request).await }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let connection = http.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "scanner API connection ended");
    }
}

/// Takes scans off the queue, one at a time, until the queue closes or `shutdown`.
async fn worker(
    shared: Arc<Shared>,
    receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<(String, ScanJob)>>>,
    shutdown: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = async { receiver.lock().await.recv().await } => next,
        };
        let Some((id, job)) = next else { return };
        let started = std::time::Instant::now();
        let result =
            match tokio::time::timeout(shared.config.scan_timeout, scan(&shared, &job)).await {
                Ok(result) => result,
                Err(_) => Err(format!(
                    "the scan took longer than {} (--scan-timeout)",
                    humantime::format_duration(shared.config.scan_timeout)
                )),
            };
        match &result {
            Ok(_) => {
                tracing::info!(%id, image = %job.reference(), took = ?started.elapsed(), "scan finished")
            }
            Err(e) => tracing::warn!(%id, image = %job.reference(), error = %e, "scan failed"),
        }
        shared.store.finish(&id, result);
    }
}

/// The pull options of a scan: the request's credentials for its registry alone.
fn pull_options(config: &Config, job: &ScanJob) -> PullOptions {
    let mut credentials = RegistryCredentials::default();
    match &job.authorization {
        RegistryAuthorization::Anonymous => {}
        RegistryAuthorization::Basic { username, password } => {
            credentials.username = Some(username.clone());
            credentials.password = Some(password.clone());
        }
        RegistryAuthorization::Bearer(token) => credentials.bearer_token = Some(token.clone()),
    }
    PullOptions {
        credentials,
        ca_file: config.registry_ca_file.clone(),
        insecure: job.insecure,
        progress: false,
        egress: Some(config.egress.clone()),
        budgets: config.budgets,
        ..PullOptions::default()
    }
}

/// Runs one scan and builds the reports it was asked for.
async fn scan(shared: &Shared, job: &ScanJob) -> Result<Reports, String> {
    let opts = ScanOptions {
        scanners: if job.produces.vulnerability {
            vec![ScannerKind::Vulnerability]
        } else {
            Vec::new()
        },
        pull: pull_options(&shared.config, job),
        ..ScanOptions::default()
    };
    let db = shared.db();
    let source = ScanSource::Image(ImageRef::Registry(job.reference()));
    let scanned = pipeline::scan(&source, Some(&db), &opts)
        .await
        .map_err(|e| {
            let message = format!("{:#}", anyhow::Error::new(e));
            message.chars().take(MAX_ERROR_CHARS).collect::<String>()
        })?;
    let generated_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let json = |v: serde_json::Value| serde_json::to_vec(&v).map_err(|e| e.to_string());
    let artifact = &job.artifact;
    Ok(Reports {
        vulnerability: job
            .produces
            .vulnerability
            .then(|| {
                json(report::vulnerability_report(
                    &scanned,
                    artifact,
                    &generated_at,
                ))
            })
            .transpose()?,
        sbom: job
            .produces
            .sbom
            .then(|| json(report::sbom_report(&scanned, artifact, &generated_at)))
            .transpose()?,
    })
}

/// Loads the database sources again every `every`; a failed load keeps the database.
async fn refresh_db(shared: Arc<Shared>, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let sources = shared.config.db_sources.clone();
        match tokio::task::spawn_blocking(move || Db::load(&sources)).await {
            Ok(Ok(db)) => {
                tracing::info!(version = %db.info().digest, "vulnerability database reloaded");
                *shared.db.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(db);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "vulnerability database reload failed; keeping the one loaded")
            }
            Err(e) => tracing::warn!(error = %e, "vulnerability database reload failed"),
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/scan", post(accept_scan))
        .route("/api/v1/scan/{id}/report", get(get_report))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ok\n" }))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(shared)
}

/// A JSON response with `content_type`.
fn json_response(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
}

/// An `ErrorResponse` with `status`.
fn error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        api::ERROR,
        api::error_body(message).to_string().into_bytes(),
    )
}

/// The 401 response of a request without the token: `Authorization: Bearer <token>` (or Harbor's
/// `X-ScannerAdapter-API-Key: <token>`), compared in constant time.
fn unauthorized(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &shared.config.token else {
        return None;
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .or_else(|| {
            headers
                .get("x-scanneradapter-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        });
    match presented {
        Some(p) if bool::from(p.as_bytes().ct_eq(token.as_bytes())) => None,
        _ => {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "a valid token is required: Authorization: Bearer <token>",
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Some(response)
        }
    }
}

async fn metadata(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&shared, &headers) {
        return r;
    }
    let db = shared.db();
    let info = db.info();
    let mut properties = serde_json::Map::new();
    let mut prop = |k: &str, v: String| {
        properties.insert(k.into(), serde_json::Value::String(v));
    };
    prop(
        "harbor.scanner-adapter/scanner-type",
        "os-package-vulnerability".into(),
    );
    prop(
        "harbor.scanner-adapter/vulnerability-database-updated-at",
        info.built_at.clone(),
    );
    if let Some(every) = shared.config.db_refresh {
        if let Ok(built) = chrono::DateTime::parse_from_rfc3339(&info.built_at) {
            let next = built.with_timezone(&chrono::Utc)
                + chrono::Duration::from_std(every).unwrap_or_default();
            prop(
                "harbor.scanner-adapter/vulnerability-database-next-update-at",
                next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
        }
    }
    prop("imagewarden.io/database-version", info.digest.clone());
    prop("imagewarden.io/database-records", info.records.to_string());
    if let Some(m) = &info.newest_modified {
        prop("imagewarden.io/database-newest-advisory", m.clone());
    }
    if info.sample {
        prop("imagewarden.io/database-sample", "true".into());
    }
    let body = json!({
        "scanner": api::Scanner::imagewarden(),
        "capabilities": [
            {
                "type": "vulnerability",
                "consumes_mime_types": api::CONSUMES,
                "produces_mime_types": [api::VULN_REPORT_HARBOR, api::VULN_REPORT_V1_1],
            },
            {
                "type": "sbom",
                "consumes_mime_types": api::CONSUMES,
                "produces_mime_types": [api::SBOM_REPORT],
                "additional_attributes": {"sbom_media_types": [api::CYCLONEDX]},
            },
        ],
        "properties": properties,
    });
    let wants_v1_1 = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.replace(' ', "").contains("metadata+json;version=1.1"));
    json_response(
        StatusCode::OK,
        if wants_v1_1 {
            api::METADATA_V1_1
        } else {
            api::METADATA_V1_0
        },
        body.to_string().into_bytes(),
    )
}

async fn accept_scan(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(r) = unauthorized(&shared, &headers) {
        return r;
    }
    let body: Bytes = match tokio::time::timeout(
        Duration::from_secs(30),
        axum::body::to_bytes(body, MAX_REQUEST_BYTES),
    )
    .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "the scan request is not readable or larger than {MAX_REQUEST_BYTES} bytes"
                ),
            )
        }
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "the scan request body was too slow",
            )
        }
    };
    let job = match ScanRequest::parse(&body) {
        Ok(job) => job,
        Err(RequestError::BadRequest(m)) => return error(StatusCode::BAD_REQUEST, &m),
        Err(RequestError::Invalid(m)) => return error(StatusCode::UNPROCESSABLE_ENTITY, &m),
        Err(RequestError::Unsupported(m)) => return error(StatusCode::NOT_IMPLEMENTED, &m),
    };
    let allowed = &shared.config.allowed_registries;
    if !allowed.is_empty() && !allowed.contains(&job.registry_host) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "registry.url: this scanner does not scan that registry (--allowed-registries)",
        );
    }
    let id = shared.new_id();
    let busy = || {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the scan queue is full; retry later",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        r
    };
    if shared.store.insert(&id, job.produces).is_err() {
        return busy();
    }
    tracing::info!(%id, image = %job.reference(), "scan request accepted");
    if shared.queue.try_send((id.clone(), job)).is_err() {
        shared.store.remove(&id);
        return busy();
    }
    json_response(
        StatusCode::ACCEPTED,
        api::SCAN_RESPONSE,
        json!({ "id": id }).to_string().into_bytes(),
    )
}

#[derive(serde::Deserialize)]
struct ReportQuery {
    sbom_media_type: Option<String>,
}

async fn get_report(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(query): Query<ReportQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = unauthorized(&shared, &headers) {
        return r;
    }
    let Some((state, produces)) = shared.store.get(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            "no scan with this id (or its report expired)",
        );
    };
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let kind = match api::report_type(accept) {
        Ok(kind) => kind,
        Err(_) => {
            return error(
                StatusCode::NOT_IMPLEMENTED,
                &format!(
                    "the scanner produces {}, {} and {}",
                    api::VULN_REPORT_HARBOR,
                    api::VULN_REPORT_V1_1,
                    api::SBOM_REPORT
                ),
            )
        }
    };
    match kind {
        ReportType::Sbom => {
            match query.sbom_media_type.as_deref() {
                Some(api::CYCLONEDX) => {}
                Some(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!(
                            "sbom_media_type: SBOMs are produced as {} only",
                            api::CYCLONEDX
                        ),
                    )
                }
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("an SBOM report needs ?sbom_media_type={}", api::CYCLONEDX),
                    )
                }
            }
            if !produces.sbom {
                return error(
                    StatusCode::BAD_REQUEST,
                    "the scan request did not enable the sbom capability",
                );
            }
        }
        ReportType::Vulnerability(_) if !produces.vulnerability => {
            return error(
                StatusCode::BAD_REQUEST,
                "the scan request did not enable the vulnerability capability",
            )
        }
        ReportType::Vulnerability(_) => {}
    }
    match state {
        ScanState::Pending => {
            let mut r = StatusCode::FOUND.into_response();
            r.headers_mut()
                .insert("refresh-after", HeaderValue::from(REFRESH_AFTER_SECS));
            r
        }
        ScanState::Failed(message) => error(StatusCode::INTERNAL_SERVER_ERROR, &message),
        ScanState::Done(reports) => {
            let (content_type, body) = match kind {
                ReportType::Vulnerability(t) => (t, reports.vulnerability.clone()),
                ReportType::Sbom => (api::SBOM_REPORT, reports.sbom.clone()),
            };
            json_response(StatusCode::OK, content_type, body.unwrap_or_default())
        }
    }
}
