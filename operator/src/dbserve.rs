//! One vulnerability database for the operator and its scanner Jobs: the operator serves
//! the compiled index it loaded (`GET /db/<version>`, the version being the index's content
//! digest), each scanner Job downloads the version named in its spec, checks its size and
//! recomputes its content digest before scanning with it. A database replaced by a refresh
//! is still served for [`RETIRED_DB_GRACE`], so Jobs started just before keep working.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use imagewarden_scanner::vulndb::Db;

#[cfg(test)]
use crate::config::check_base_url;
use crate::context::Context;
use crate::db::LoadedDb;

/// How long a database replaced by a refresh is still served to scanner Jobs.
pub use crate::context::RETIRED_DB_GRACE;

/// Headroom over the operator's index size a Job accepts: replicas that loaded the same
/// records may differ in metadata (build time, source names).
pub const SIZE_HEADROOM: u64 = 1 << 20;

/// Exit code of `scan-image` when the database could not be downloaded.
pub const EXIT_DB_UNAVAILABLE: i32 = 3;
/// Exit code of `scan-image` when the downloaded database failed verification.
pub const EXIT_DB_REJECTED: i32 = 4;

/// Whether `version` is a database version as the operator names them: `sha256:` and 64
/// lowercase hex digits (checked before it goes into a URL or a lookup).
pub fn is_version(version: &str) -> bool {
    version
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// The URL a scanner Job downloads database `version` from.
pub fn db_url(base: &str, version: &str) -> String {
    format!("{}/db/{version}", base.trim_end_matches('/'))
}

/// The base URL of the Service `name`: its cluster IP and its port named `database` (or
/// its only port).
pub fn service_base_url(
    name: &str,
    service: &k8s_openapi::api::core::v1::Service,
) -> Result<String, String> {
    let spec = service
        .spec
        .as_ref()
        .ok_or_else(|| format!("Service {name} has no spec"))?;
    let ip = spec
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
        .ok_or_else(|| {
            format!("Service {name} has no cluster IP: scanner Jobs need one to reach the operator")
        })?;
    let ports = spec.ports.as_deref().unwrap_or_default();
    let port = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("database"))
        .or(match ports {
            [only] => Some(only),
            _ => None,
        })
        .ok_or_else(|| format!("Service {name} needs one port, or a port named `database`"))?;
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    Ok(format!("http://{host}:{}", port.port))
}

/// An index kept alive by the response body that sends it (no copy of the bytes).
struct IndexBytes(Arc<LoadedDb>);

impl AsRef<[u8]> for IndexBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.db.as_bytes()
    }
}

async fn get_db(State(ctx): State<Arc<Context>>, Path(version): Path<String>) -> Response {
    if !is_version(&version) {
        return (
            StatusCode::BAD_REQUEST,
            "expected /db/sha256:<64 hex digits>\n",
        )
            .into_response();
    }
    match ctx.served_db(&version) {
        Some(db) => {
            let len = db.db.size();
            (
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                    (header::CONTENT_LENGTH, len.to_string()),
                ],
                axum::body::Body::from(axum::body::Bytes::from_owner(IndexBytes(db))),
            )
                .into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            format!(
                "database {version} is not served here (current: {})\n",
                ctx.db().version
            ),
        )
            .into_response(),
    }
}

/// Serves `GET /db/<version>` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, ctx: Arc<Context>) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/db/{version}", axum::routing::get(get_db))
        .with_state(ctx);
    axum::serve(listener, app).await
}

/// What a scanner Job downloads: one database version, bounded in size.
#[derive(Clone, Debug)]
pub struct DbDownload {
    pub url: String,
    pub version: String,
    pub max_bytes: u64,
    /// Retries of failed downloads stop after this long.
    pub patience: Duration,
}

/// Why a scanner Job has no database.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Not downloaded (unreachable, not served any more, cut short).
    #[error("could not download the vulnerability database {version} from {url}: {reason}")]
    Unavailable {
        url: String,
        version: String,
        reason: String,
    },
    /// Downloaded, but not the database asked for.
    #[error("the vulnerability database downloaded from {url} is not {version}: {reason}")]
    Rejected {
        url: String,
        version: String,
        reason: String,
    },
}

impl FetchError {
    /// Exit code of `scan-image` for this error (the Job's Pod failure policy fails the
    /// Job at once on these codes: retrying the Pod would not help).
    pub fn exit_code(&self) -> i32 {
        match self {
            FetchError::Unavailable { .. } => EXIT_DB_UNAVAILABLE,
            FetchError::Rejected { .. } => EXIT_DB_REJECTED,
        }
    }
}

enum Attempt {
    /// Worth trying again (connection failed, not served yet or any more, cut short).
    Retry(String),
    Reject(String),
}

async fn download_once(client: &reqwest::Client, d: &DbDownload) -> Result<Vec<u8>, Attempt> {
    let mut resp = client
        .get(&d.url)
        .send()
        .await
        .map_err(|e| Attempt::Retry(format!("{e}")))?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        // The operator refreshed or restarted with other records; another replica may not
        // have it either. The body is not quoted: only the status says what happened.
        return Err(Attempt::Retry(
            "the operator does not serve this version (HTTP 404): it was refreshed or restarted since the Job was created".into(),
        ));
    }
    if !status.is_success() {
        return Err(Attempt::Retry(format!("HTTP {status}")));
    }
    if let Some(len) = resp.content_length() {
        if len > d.max_bytes {
            return Err(Attempt::Reject(format!(
                "it is {len} bytes, more than the {} bytes expected",
                d.max_bytes
            )));
        }
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Attempt::Retry(format!("download cut short: {e}")))?
    {
        if (bytes.len() + chunk.len()) as u64 > d.max_bytes {
            return Err(Attempt::Reject(format!(
                "it is more than the {} bytes expected",
                d.max_bytes
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Checks downloaded bytes: an index whose recomputed content digest is `version`.
pub fn verify(bytes: Vec<u8>, d: &DbDownload) -> Result<LoadedDb, FetchError> {
    let reject = |reason: String| FetchError::Rejected {
        url: d.url.clone(),
        version: d.version.clone(),
        reason,
    };
    let db = Db::from_bytes(bytes, &d.url).map_err(|e| reject(e.to_string()))?;
    let digest = db.verify_digest().map_err(|e| reject(e.to_string()))?;
    if digest != d.version {
        return Err(reject(format!("its content digest is {digest}")));
    }
    Ok(LoadedDb::new(db))
}

/// Downloads and verifies the database, retrying what may be passing (the operator
/// restarting, a replica without this version) with growing waits for `d.patience`.
pub async fn fetch(d: &DbDownload) -> Result<LoadedDb, FetchError> {
    let client = reqwest::Client::builder()
        .user_agent(concat!(
            "imagewarden-scanner-job/",
            env!("CARGO_PKG_VERSION")
        ))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| FetchError::Unavailable {
            url: d.url.clone(),
            version: d.version.clone(),
            reason: format!("building the HTTP client: {e}"),
        })?;
    let deadline = tokio::time::Instant::now() + d.patience;
    let mut wait = Duration::from_millis(500);
    loop {
        match download_once(&client, d).await {
            Ok(bytes) => return verify(bytes, d),
            Err(Attempt::Reject(reason)) => {
                return Err(FetchError::Rejected {
                    url: d.url.clone(),
                    version: d.version.clone(),
                    reason,
                })
            }
            Err(Attempt::Retry(reason)) => {
                if tokio::time::Instant::now() + wait > deadline {
                    return Err(FetchError::Unavailable {
                        url: d.url.clone(),
                        version: d.version.clone(),
                        reason,
                    });
                }
                tracing::warn!(url = %d.url, %reason, "downloading the vulnerability database; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(15));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_sha256_digests_only() {
        assert!(is_version(&format!("sha256:{}", "0a".repeat(32))));
        assert!(!is_version(&format!("sha256:{}", "0A".repeat(32))));
        assert!(!is_version(&format!("sha256:{}", "0a".repeat(31))));
        assert!(!is_version(&format!("sha512:{}", "0a".repeat(32))));
        assert!(!is_version("sha256:../../etc/passwd"));
    }

    #[test]
    fn base_urls_are_plain_http_with_a_host() {
        assert!(check_base_url("http://10.96.0.9:8081").is_ok());
        assert!(check_base_url("http://imagewarden-database.imagewarden-system.svc:8081/").is_ok());
        assert!(check_base_url("https://x:8081").is_err());
        assert!(check_base_url("http://$(IMAGEWARDEN_HOST):8081").is_err());
        assert!(check_base_url("10.96.0.9:8081").is_err());
        assert_eq!(
            db_url("http://10.96.0.9:8081/", "sha256:ab"),
            "http://10.96.0.9:8081/db/sha256:ab"
        );
    }

    #[test]
    fn a_service_gives_its_cluster_ip_and_database_port() {
        let svc = |ip: &str, ports: serde_json::Value| -> k8s_openapi::api::core::v1::Service {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "db"},
                "spec": {"clusterIP": ip, "ports": ports},
            }))
            .unwrap()
        };
        let one = svc("10.96.3.4", serde_json::json!([{"port": 8081}]));
        assert_eq!(
            service_base_url("db", &one).unwrap(),
            "http://10.96.3.4:8081"
        );
        let named = svc(
            "fd00::12",
            serde_json::json!([{"name": "metrics", "port": 8080}, {"name": "database", "port": 9000}]),
        );
        assert_eq!(
            service_base_url("db", &named).unwrap(),
            "http://[fd00::12]:9000"
        );
        let two = svc(
            "10.96.3.4",
            serde_json::json!([{"name": "a", "port": 1}, {"name": "b", "port": 2}]),
        );
        assert!(service_base_url("db", &two)
            .unwrap_err()
            .contains("named `database`"));
        let headless = svc("None", serde_json::json!([{"port": 8081}]));
        assert!(service_base_url("db", &headless)
            .unwrap_err()
            .contains("no cluster IP"));
    }

    fn test_db() -> LoadedDb {
        let osv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scanner/testdata/osv");
        LoadedDb::new(Db::load(&[osv.display().to_string()]).unwrap())
    }

    #[test]
    fn downloaded_bytes_must_be_the_version_asked_for() {
        let db = test_db();
        let d = DbDownload {
            url: "http://op/db/x".into(),
            version: db.version.clone(),
            max_bytes: db.db.size() as u64,
            patience: Duration::ZERO,
        };
        let ok = verify(db.db.as_bytes().to_vec(), &d).unwrap();
        assert_eq!(ok.version, db.version);

        let other = DbDownload {
            version: format!("sha256:{}", "0".repeat(64)),
            ..d.clone()
        };
        let err = verify(db.db.as_bytes().to_vec(), &other).unwrap_err();
        assert_eq!(err.exit_code(), EXIT_DB_REJECTED);
        assert!(
            err.to_string()
                .contains(&format!("its content digest is {}", db.version)),
            "{err}"
        );

        let err = verify(b"<html>not found</html>".to_vec(), &d).unwrap_err();
        assert_eq!(err.exit_code(), EXIT_DB_REJECTED);
        assert!(!err.to_string().contains("<html>"), "{err}");
    }
}
