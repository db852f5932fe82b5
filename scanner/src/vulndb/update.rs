//! A local database from the official sources: `imagewarden db update` downloads OSV's
//! per-ecosystem `all.zip` archives and NVD's yearly CVE JSON 2.0 feeds into a cache
//! directory and compiles them into one index there.
//!
//! Downloads are conditional (`If-None-Match` / `If-Modified-Since` from the previous
//! download's `ETag` / `Last-Modified`): an unchanged source is not downloaded again, and
//! when nothing changed the index is not rebuilt. Every download goes to a temporary file,
//! is verified (length, zip CRCs, gzip CRC, and NVD's `.meta` SHA-256 when published) and
//! only then replaces the cached copy; the index is rebuilt into a temporary file and
//! renamed over the old one. An interrupted or corrupt download leaves the cache as it was.
//!
//! Cache layout:
//! ```text
//! <cache>/vulndb.iwdb                         the compiled index
//! <cache>/state.json                          when it was last checked, from where
//! <cache>/sources/osv/<Ecosystem>/all.zip     (+ .meta.json: ETag, Last-Modified, SHA-256)
//! <cache>/sources/nvd/nvdcve-2.0-YYYY.json.gz (+ .meta.json)
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::download::{check_source_url, current_year, http_client, sanitize};
pub use super::download::{
    download_nvd_source, fetch, nvd_feed_names, Fetched, Verify, FIRST_NVD_YEAR, MAX_DOWNLOAD_BYTES,
};
use super::index::DbInfo;
use super::source::{DbBuilder, URL_ECOSYSTEMS};

/// osv.dev's public export (`<base>/<Ecosystem>/all.zip`).
pub const DEFAULT_OSV_URL: &str = "https://osv-vulnerabilities.storage.googleapis.com";
/// NVD's CVE JSON 2.0 feeds (`<base>/nvdcve-2.0-YYYY.json.gz`).
pub const DEFAULT_NVD_URL: &str = "https://nvd.nist.gov/feeds/json/cve/2.0";
/// How old (seconds since it was last checked) a cache may get before `scan` updates it.
pub const MAX_AGE_SECS: i64 = 24 * 3600;

/// Where the cache is when no directory is named: `$XDG_CACHE_HOME/imagewarden/db`, else
/// `$HOME/.cache/imagewarden/db`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("imagewarden").join("db"))
}

/// The index file of a cache directory.
pub fn index_path(cache: &Path) -> PathBuf {
    cache.join("vulndb.iwdb")
}

fn state_path(cache: &Path) -> PathBuf {
    cache.join("state.json")
}

/// What the cache remembers of its last update.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CacheState {
    /// When the sources were last checked (RFC 3339).
    pub checked_at: String,
    pub osv_url: String,
    pub nvd_url: String,
    /// The record limits the index was compiled with (absent: the defaults).
    #[serde(default)]
    pub osv_limits: Option<super::OsvLimits>,
}

/// The cache's state, when it has one.
pub fn read_state(cache: &Path) -> Option<CacheState> {
    let bytes = std::fs::read(state_path(cache)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// How long ago the cache was last checked (`None`: never, or no index).
pub fn cache_age(cache: &Path) -> Option<chrono::Duration> {
    if !index_path(cache).is_file() {
        return None;
    }
    let checked = read_state(cache)?.checked_at;
    let at = chrono::DateTime::parse_from_rfc3339(&checked).ok()?;
    Some(chrono::Utc::now().signed_duration_since(at.with_timezone(&chrono::Utc)))
}

/// What `update` downloads and from where.
#[derive(Debug, Clone)]
pub struct UpdateOptions {
    pub cache_dir: PathBuf,
    /// Base URL laid out as osv.dev's export: `<base>/<Ecosystem>/all.zip`.
    pub osv_url: String,
    /// Base URL laid out as NVD's feeds: `<base>/nvdcve-2.0-YYYY.json.gz`.
    pub nvd_url: String,
    /// OSV ecosystems to download (osv.dev's names).
    pub ecosystems: Vec<String>,
    /// NVD feed years.
    pub nvd_years: std::ops::RangeInclusive<i32>,
    /// Draw progress bars on standard error (when it is a terminal).
    pub progress: bool,
    /// Where downloads may go (the operator's egress policy; the CLI's is unrestricted).
    pub egress: std::sync::Arc<crate::egress::EgressPolicy>,
    /// The largest OSV record compiled; the index is rebuilt when these change.
    pub osv_limits: super::OsvLimits,
}

impl UpdateOptions {
    /// The official sources, every ecosystem and every NVD year up to now.
    pub fn new(cache_dir: PathBuf) -> UpdateOptions {
        UpdateOptions {
            cache_dir,
            osv_url: DEFAULT_OSV_URL.to_string(),
            nvd_url: DEFAULT_NVD_URL.to_string(),
            ecosystems: URL_ECOSYSTEMS.iter().map(|e| e.to_string()).collect(),
            nvd_years: FIRST_NVD_YEAR..=current_year(),
            progress: true,
            egress: std::sync::Arc::new(crate::egress::EgressPolicy::unrestricted()),
            osv_limits: Default::default(),
        }
    }
}

/// What an update did.
#[derive(Debug, Clone, Default)]
pub struct UpdateSummary {
    /// URLs downloaded (new or changed).
    pub downloaded: Vec<String>,
    /// URLs the server said were unchanged.
    pub unchanged: Vec<String>,
    /// URLs the server does not have (404).
    pub missing: Vec<String>,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Whether the index was rebuilt.
    pub rebuilt: bool,
    /// What the index now holds.
    pub info: DbInfo,
}

/// Downloads what changed and rebuilds the cache's index when anything did (or when there
/// is no index yet). On any error the index in place is left as it was.
pub async fn update(opts: &UpdateOptions) -> anyhow::Result<UpdateSummary> {
    let cache = &opts.cache_dir;
    std::fs::create_dir_all(cache)
        .with_context(|| format!("cannot create the database cache {}", cache.display()))?;
    check_source_url(&opts.egress, &opts.osv_url)?;
    check_source_url(&opts.egress, &opts.nvd_url)?;
    let client = http_client(&opts.egress)?;
    let mut summary = UpdateSummary::default();
    let osv_base = opts.osv_url.trim_end_matches('/');
    let nvd_base = opts.nvd_url.trim_end_matches('/');
    let mut jobs: Vec<(String, PathBuf)> = Vec::new();
    for eco in &opts.ecosystems {
        jobs.push((
            format!("{osv_base}/{}/all.zip", eco.replace(' ', "%20")),
            cache
                .join("sources/osv")
                .join(sanitize(eco))
                .join("all.zip"),
        ));
    }
    for name in nvd_feed_names(opts.nvd_years.clone()) {
        jobs.push((
            format!("{nvd_base}/{name}"),
            cache.join("sources/nvd").join(&name),
        ));
    }
    for (url, dest) in &jobs {
        match fetch(&client, url, dest, opts.progress).await? {
            Fetched::Downloaded(n) => {
                summary.bytes += n;
                summary.downloaded.push(url.clone());
            }
            Fetched::Unchanged => summary.unchanged.push(url.clone()),
            Fetched::NotFound => {
                tracing::warn!(%url, "not found; skipped");
                summary.missing.push(url.clone());
            }
        }
    }
    let osv_files: Vec<PathBuf> = opts
        .ecosystems
        .iter()
        .map(|e| cache.join("sources/osv").join(sanitize(e)).join("all.zip"))
        .filter(|p| p.is_file())
        .collect();
    anyhow::ensure!(
        !osv_files.is_empty(),
        "no OSV archive found under {osv_base} (expected <Ecosystem>/all.zip); check --osv-url"
    );
    let nvd_files: Vec<PathBuf> = nvd_feed_names(opts.nvd_years.clone())
        .into_iter()
        .map(|n| cache.join("sources/nvd").join(n))
        .filter(|p| p.is_file())
        .collect();
    if nvd_files.is_empty() {
        tracing::warn!(url = %nvd_base, "no NVD feed found: findings get no NVD severities");
    }
    let index = index_path(cache);
    let current = super::Db::open_index(&index).ok();
    let built_with = read_state(cache)
        .and_then(|s| s.osv_limits)
        .unwrap_or_default();
    let limits = opts.osv_limits;
    if summary.downloaded.is_empty() && current.is_some() && built_with == limits {
        summary.info = current.map(|d| d.info().clone()).unwrap_or_default();
    } else {
        drop(current);
        let (osv_url, nvd_url) = (osv_base.to_string(), nvd_base.to_string());
        summary.info = tokio::task::spawn_blocking(move || -> anyhow::Result<DbInfo> {
            let mut builder = DbBuilder::new().with_limits(limits);
            for f in &osv_files {
                builder.add_source(&f.display().to_string())?;
            }
            for f in &nvd_files {
                builder.add_nvd_path(f)?;
            }
            builder.set_sources(vec![osv_url, nvd_url]);
            builder.write_file(&index)
        })
        .await
        .context("building the index")??;
        summary.rebuilt = true;
    }
    let state = CacheState {
        checked_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        osv_url: osv_base.to_string(),
        nvd_url: nvd_base.to_string(),
        osv_limits: Some(if summary.rebuilt { limits } else { built_with }),
    };
    let tmp = state_path(cache).with_extension(format!("json.tmp-{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&state)?)?;
    std::fs::rename(&tmp, state_path(cache))?;
    Ok(summary)
}

/// [`update`] from synchronous code (the CLI).
pub fn update_blocking(opts: &UpdateOptions) -> anyhow::Result<UpdateSummary> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP client runtime")?
        .block_on(update(opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dir_follows_xdg() {
        assert_eq!(sanitize("../x"), "_x");
        assert_eq!(sanitize("Rocky Linux"), "Rocky Linux");
        assert_eq!(
            nvd_feed_names(2002..=2003),
            ["nvdcve-2.0-2002.json.gz", "nvdcve-2.0-2003.json.gz"]
        );
    }
}
