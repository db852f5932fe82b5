//! Conditional, verified downloads of database sources (OSV archives, NVD feeds): what
//! `imagewarden db update` keeps in its cache and what `--db nvd:URL` reads.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The first year NVD publishes a feed for (it holds every CVE up to 2002).
pub const FIRST_NVD_YEAR: i32 = 2002;
/// Largest download accepted (a mirror that sends more is cut off).
pub const MAX_DOWNLOAD_BYTES: u64 = 8 << 30;
pub(crate) fn current_year() -> i32 {
    use chrono::Datelike;
    chrono::Utc::now().year()
}

/// The names of NVD's yearly feeds for `years`.
pub fn nvd_feed_names(years: std::ops::RangeInclusive<i32>) -> Vec<String> {
    years.map(|y| format!("nvdcve-2.0-{y}.json.gz")).collect()
}

/// What the cache remembers of one downloaded file.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct FileMeta {
    url: String,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    last_modified: Option<String>,
    sha256: String,
    size: u64,
}

fn meta_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".meta.json");
    file.with_file_name(name)
}

fn read_meta(file: &Path) -> Option<FileMeta> {
    let meta: FileMeta = serde_json::from_slice(&std::fs::read(meta_path(file)).ok()?).ok()?;
    // A cached copy that is not the one the metadata describes is downloaded again.
    let size = std::fs::metadata(file).ok()?.len();
    (size == meta.size).then_some(meta)
}

/// How a download is checked before it replaces the cached copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// A zip archive: its directory and every member's CRC.
    Zip,
    /// A gzip file (its CRC), and NVD's `.meta` SHA-256 of the content when published.
    NvdGzip,
    /// An xz file (its checks).
    Xz,
    /// Nothing beyond the length.
    None,
}

impl Verify {
    fn for_name(name: &str) -> Verify {
        if name.ends_with(".zip") {
            Verify::Zip
        } else if name.ends_with(".gz") {
            Verify::NvdGzip
        } else if name.ends_with(".xz") {
            Verify::Xz
        } else {
            Verify::None
        }
    }
}

/// The result of one conditional download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    Downloaded(u64),
    Unchanged,
    NotFound,
}

/// The client of database downloads: every address it connects to, redirects included,
/// passes `egress`. Callers check the base URL first with [`check_source_url`] (an address
/// written in a URL meets no resolver).
pub(crate) fn http_client(
    egress: &std::sync::Arc<crate::egress::EgressPolicy>,
) -> anyhow::Result<reqwest::Client> {
    egress
        .apply_to_downloads(reqwest::Client::builder())
        .user_agent(concat!("imagewarden/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(30))
        .read_timeout(std::time::Duration::from_secs(120))
        .build()
        .context("building the HTTP client")
}

/// Refuses a database source URL whose address `egress` denies, naming the source.
pub(crate) fn check_source_url(
    egress: &crate::egress::EgressPolicy,
    url: &str,
) -> anyhow::Result<()> {
    egress.check_url_str(url).map_err(|denial| {
        anyhow::anyhow!("the vulnerability database source {url} is not fetched: {denial}")
    })
}

fn progress_bar(show: bool, len: Option<u64>, label: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:40!} [{bar:30}] {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label.to_string());
    bar
}

/// Downloads `url` to `dest` when it changed since the cached copy (conditional request),
/// verifying it before it replaces the cached copy. The error names the URL.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    dest: &Path,
    progress: bool,
) -> anyhow::Result<Fetched> {
    let cached = read_meta(dest).filter(|m| m.url == url);
    let mut req = client.get(url);
    if let Some(m) = &cached {
        if let Some(etag) = &m.etag {
            req = req.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        if let Some(lm) = &m.last_modified {
            req = req.header(reqwest::header::IF_MODIFIED_SINCE, lm);
        }
    }
    let mut resp = req
        .send()
        .await
        .with_context(|| format!("fetching {url}"))?;
    match resp.status() {
        reqwest::StatusCode::NOT_MODIFIED if cached.is_some() => return Ok(Fetched::Unchanged),
        reqwest::StatusCode::NOT_FOUND => return Ok(Fetched::NotFound),
        s if !s.is_success() => anyhow::bail!("fetching {url}: HTTP {s}"),
        _ => {}
    }
    let header = |name: reqwest::header::HeaderName| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let etag = header(reqwest::header::ETAG);
    let last_modified = header(reqwest::header::LAST_MODIFIED);
    let expected_len = resp.content_length();
    if expected_len.is_some_and(|n| n > MAX_DOWNLOAD_BYTES) {
        anyhow::bail!(
            "fetching {url}: {} bytes is more than the {MAX_DOWNLOAD_BYTES} bytes accepted",
            expected_len.unwrap_or(0)
        );
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    // Named per process, so that two updates of one cache do not write into one file.
    let mut part_name = dest.file_name().unwrap_or_default().to_os_string();
    part_name.push(format!(".part-{}", std::process::id()));
    let part = dest.with_file_name(part_name);
    let result = async {
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&part)
                .with_context(|| format!("cannot create {}", part.display()))?,
        );
        let name = url.rsplit('/').take(2).collect::<Vec<_>>();
        let label = name.into_iter().rev().collect::<Vec<_>>().join("/");
        let bar = progress_bar(progress, expected_len, &label);
        let mut hasher = Sha256::new();
        let mut n = 0u64;
        while let Some(chunk) = resp
            .chunk()
            .await
            .with_context(|| format!("downloading {url}: the transfer was interrupted"))?
        {
            n += chunk.len() as u64;
            if n > MAX_DOWNLOAD_BYTES {
                anyhow::bail!(
                    "downloading {url}: more than the {MAX_DOWNLOAD_BYTES} bytes accepted"
                );
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .with_context(|| format!("writing {}", part.display()))?;
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        if let Some(expected) = expected_len {
            anyhow::ensure!(
                n == expected,
                "downloading {url}: the transfer was interrupted ({n} of {expected} bytes)"
            );
        }
        file.into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()
            .with_context(|| format!("writing {}", part.display()))?;
        let verify = Verify::for_name(url);
        let nvd_meta = if verify == Verify::NvdGzip {
            fetch_nvd_meta(client, url).await
        } else {
            None
        };
        let part_for_check = part.clone();
        let url_owned = url.to_string();
        tokio::task::spawn_blocking(move || {
            verify_file(&part_for_check, verify, nvd_meta, &url_owned)
        })
        .await
        .context("verifying the download")??;
        Ok::<_, anyhow::Error>((n, hex::encode(hasher.finalize())))
    }
    .await;
    let (size, sha256) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    std::fs::rename(&part, dest)
        .with_context(|| format!("cannot move the download into place at {}", dest.display()))?;
    let meta = FileMeta {
        url: url.to_string(),
        etag,
        last_modified,
        sha256,
        size,
    };
    std::fs::write(meta_path(dest), serde_json::to_vec_pretty(&meta)?)
        .with_context(|| format!("cannot write {}", meta_path(dest).display()))?;
    Ok(Fetched::Downloaded(size))
}

/// NVD's `.meta` file of a feed: `gzSize` and the `sha256` of the uncompressed feed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NvdMeta {
    pub gz_size: Option<u64>,
    pub sha256: Option<String>,
}

impl NvdMeta {
    /// Reads the `key:value` lines of a `.meta` file.
    pub fn parse(text: &str) -> NvdMeta {
        let mut m = NvdMeta::default();
        for line in text.lines() {
            match line.trim().split_once(':') {
                Some(("gzSize", v)) => m.gz_size = v.trim().parse().ok(),
                Some(("sha256", v)) => m.sha256 = Some(v.trim().to_ascii_lowercase()),
                _ => {}
            }
        }
        m
    }
}

async fn fetch_nvd_meta(client: &reqwest::Client, url: &str) -> Option<NvdMeta> {
    let meta_url = format!("{}.meta", url.strip_suffix(".json.gz")?);
    let resp = client.get(&meta_url).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    // A `.meta` file is a few lines; anything large is not one.
    if resp.content_length().is_some_and(|n| n > 4096) {
        return None;
    }
    let text = resp.text().await.ok()?;
    (text.len() <= 4096).then(|| NvdMeta::parse(&text))
}

fn verify_file(
    path: &Path,
    verify: Verify,
    meta: Option<NvdMeta>,
    url: &str,
) -> anyhow::Result<()> {
    let open = || {
        std::fs::File::open(path)
            .map(std::io::BufReader::new)
            .with_context(|| format!("cannot open {}", path.display()))
    };
    match verify {
        Verify::Zip => {
            let mut zip = zip::ZipArchive::new(open()?)
                .with_context(|| format!("{url}: the download is not a valid zip archive"))?;
            for i in 0..zip.len() {
                let mut member = zip
                    .by_index(i)
                    .with_context(|| format!("{url}: corrupt zip member {i}"))?;
                std::io::copy(&mut member, &mut std::io::sink()).with_context(|| {
                    format!("{url}: corrupt zip member {i} (CRC mismatch or truncated)")
                })?;
            }
        }
        Verify::NvdGzip => {
            let size = std::fs::metadata(path)?.len();
            let mut gz = flate2::read::MultiGzDecoder::new(open()?);
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = gz
                    .read(&mut buf)
                    .with_context(|| format!("{url}: the download is not a valid gzip file"))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            if let Some(meta) = meta {
                if let Some(gz_size) = meta.gz_size {
                    anyhow::ensure!(
                        gz_size == size,
                        "{url}: {size} bytes downloaded, NVD's .meta says {gz_size}"
                    );
                }
                if let Some(sha) = meta.sha256 {
                    let got = hex::encode(hasher.finalize());
                    anyhow::ensure!(
                        got == sha,
                        "{url}: the content's SHA-256 {got} is not the {sha} NVD's .meta publishes"
                    );
                }
            }
        }
        Verify::Xz => {
            let mut xz = lzma_rust2::XzReader::new(open()?, true);
            std::io::copy(&mut xz, &mut std::io::sink())
                .with_context(|| format!("{url}: the download is not a valid xz file"))?;
        }
        Verify::None => {}
    }
    Ok(())
}

/// Downloads an NVD http(s) source into `dir` (no cache): the URL itself when it names one
/// file (`.json`, `.json.gz`, `.json.xz`), else the yearly feeds under the base URL. Years
/// the server does not have are skipped; none at all is an error.
pub async fn download_nvd_source(
    url: &str,
    dir: &Path,
    egress: &std::sync::Arc<crate::egress::EgressPolicy>,
) -> anyhow::Result<Vec<PathBuf>> {
    check_source_url(egress, url)?;
    let client = http_client(egress)?;
    let single = [".json", ".json.gz", ".json.xz"]
        .iter()
        .any(|s| url.ends_with(s));
    let urls: Vec<String> = if single {
        vec![url.to_string()]
    } else {
        let base = url.trim_end_matches('/');
        nvd_feed_names(FIRST_NVD_YEAR..=current_year())
            .into_iter()
            .map(|n| format!("{base}/{n}"))
            .collect()
    };
    let mut out = Vec::new();
    for u in &urls {
        let name = u.rsplit('/').next().unwrap_or("feed.json.gz");
        let dest = dir.join(sanitize(name));
        match fetch(&client, u, &dest, false).await? {
            Fetched::NotFound if !single => continue,
            Fetched::NotFound => anyhow::bail!("fetching {u}: not found (HTTP 404)"),
            _ => out.push(dest),
        }
    }
    anyhow::ensure!(
        !out.is_empty(),
        "{url}: no NVD feed (nvdcve-2.0-YYYY.json.gz) found under this base URL"
    );
    Ok(out)
}

/// A file name safe to create: path separators and leading dots replaced.
pub(crate) fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c == '\0' {
                '_'
            } else {
                c
            }
        })
        .collect();
    let s = s.trim_start_matches('.').to_string();
    if s.is_empty() {
        "download".to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nvd_meta_files() {
        let m = NvdMeta::parse(
            "lastModifiedDate:2024-05-01T03:00:01-04:00\r\nsize:12345\r\nzipSize:100\r\ngzSize:99\r\nsha256:ABCDEF\r\n",
        );
        assert_eq!(m.gz_size, Some(99));
        assert_eq!(m.sha256.as_deref(), Some("abcdef"));
    }
}
