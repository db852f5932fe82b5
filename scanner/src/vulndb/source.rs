//! Reading OSV records from their sources and compiling them: [`DbBuilder`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Cursor, Read, Seek};
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::ecosystem::{normalize_name, parse_osv_ecosystem};
use super::index::{package_key, write_index, CompiledRecords, Db, DbInfo};
use super::nvd::{self, NvdEntry};
use super::osv::{OsvAffected, OsvRecord};
use super::severity::{rate_osv, rate_specific, record_source, vendor_rating};
use super::{Advisory, AffectedPackage, RangeEvent, Rating, VersionRange};

/// Ecosystems fetched from an http(s) base URL laid out as osv.dev's bucket
/// (`<base>/<Ecosystem>/all.zip`).
pub const URL_ECOSYSTEMS: [&str; 16] = [
    "Debian",
    "Ubuntu",
    "Alpine",
    "Red Hat",
    "Rocky Linux",
    "AlmaLinux",
    "PyPI",
    "npm",
    "Go",
    "Maven",
    "crates.io",
    "Packagist",
    "RubyGems",
    "NuGet",
    "SUSE",
    "openSUSE",
];

/// Collects OSV records and compiles them into an index.
#[derive(Default)]
pub struct DbBuilder {
    /// Compiled advisories, postcard-encoded back to back; kept encoded so that
    /// compiling a full OSV dump holds little more than the index itself.
    advisories: Vec<u8>,
    advisory_spans: Vec<(u64, u32)>,
    malicious: u64,
    /// Per package key: its compiled entries, postcard-encoded back to back.
    by_key: BTreeMap<String, Vec<u8>>,
    seen: HashSet<String>,
    /// Per ecosystem key: (advisories, position of the last advisory counted).
    eco_records: BTreeMap<String, (u64, u32)>,
    sources: Vec<String>,
    withdrawn: u64,
    /// Bug-fix and enhancement errata (`ALBA-`, `RHEA-`, ...): not vulnerabilities.
    not_security: u64,
    duplicates: u64,
    unreadable: u64,
    newest_modified: Option<String>,
    /// NVD ratings by CVE key; of two records of one CVE the newer one is kept.
    nvd: HashMap<u64, NvdEntry>,
    nvd_newest_modified: Option<String>,
    sample: bool,
    /// Where http(s) and oci:// sources may be fetched from; `None`: anywhere.
    egress: Option<std::sync::Arc<crate::egress::EgressPolicy>>,
    /// The largest record compiled.
    limits: OsvLimits,
}

impl DbBuilder {
    pub fn new() -> DbBuilder {
        DbBuilder::default()
    }

    /// Skips records over `limits` (with a warning) instead of the defaults.
    pub fn with_limits(mut self, limits: OsvLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Fetches http(s) and oci:// sources only where `egress` allows (by default: anywhere,
    /// as the CLI does for registries too).
    pub fn with_egress(mut self, egress: std::sync::Arc<crate::egress::EgressPolicy>) -> Self {
        self.egress = Some(egress);
        self
    }

    fn egress(&self) -> std::sync::Arc<crate::egress::EgressPolicy> {
        self.egress
            .clone()
            .unwrap_or_else(|| std::sync::Arc::new(crate::egress::EgressPolicy::unrestricted()))
    }

    /// Number of advisories collected so far.
    pub fn len(&self) -> usize {
        self.advisory_spans.len()
    }

    /// Marks the index as a sample (see [`DbInfo::sample`]).
    pub fn set_sample(&mut self, sample: bool) {
        self.sample = sample;
    }

    /// Replaces the list of sources the index names (e.g. the URLs local copies came from).
    pub fn set_sources(&mut self, sources: Vec<String>) {
        self.sources = sources;
    }

    /// Whether any advisory was collected (NVD ratings alone match no package).
    pub fn has_advisories(&self) -> bool {
        !self.advisory_spans.is_empty()
    }

    /// Whether neither advisories nor NVD ratings were collected.
    pub fn is_empty(&self) -> bool {
        self.advisory_spans.is_empty() && self.nvd.is_empty()
    }

    /// Number of CVEs with an NVD rating collected so far.
    pub fn nvd_len(&self) -> usize {
        self.nvd.len()
    }

    /// Adds one NVD CVE: its rating, when it has a usable CVSS metric (a CVE not yet
    /// analysed, with empty `metrics`, adds nothing).
    pub fn add_nvd_cve(&mut self, cve: &nvd::NvdCve) {
        let Some(entry) = NvdEntry::from_cve(cve) else {
            return;
        };
        if let Some(m) = &entry.last_modified {
            if self
                .nvd_newest_modified
                .as_deref()
                .is_none_or(|n| m.as_str() > n)
            {
                self.nvd_newest_modified = Some(m.clone());
            }
        }
        match self.nvd.entry(entry.key) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                if entry.last_modified > o.get().last_modified {
                    o.insert(entry);
                }
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(entry);
            }
        }
    }

    /// Adds an NVD file (a yearly feed or one CVE; `.json`, `.json.gz`, `.json.xz`) or every
    /// such file under a directory (flat, or the `CVE-YYYY/CVE-YYYY-NNNxx/` layout). A
    /// malformed or truncated file is an error naming it.
    pub fn add_nvd_path(&mut self, path: &Path) -> anyhow::Result<u64> {
        let meta = std::fs::metadata(path).with_context(|| {
            format!(
                "NVD source {}: no such file or directory (expected a directory, or a .json, .json.gz or .json.xz file)",
                path.display()
            )
        })?;
        let files = if meta.is_dir() {
            nvd::files_under(path)?
        } else {
            vec![path.to_path_buf()]
        };
        let mut n = 0;
        for file in files {
            n += nvd::read_file(&file, &mut |cve| self.add_nvd_cve(&cve))?;
        }
        Ok(n)
    }

    /// Adds one OSV record. Withdrawn records and repeated ids are skipped;
    /// `affected` entries of ecosystems the scanner has no packages for are dropped.
    pub fn add_record(&mut self, rec: OsvRecord) {
        if rec.withdrawn.is_some() {
            self.withdrawn += 1;
            return;
        }
        if is_non_security_erratum(&rec.id) {
            self.not_security += 1;
            return;
        }
        if let Some(why) = self.limits.oversized(&rec) {
            tracing::warn!(id = %crate::vulndb::version::excerpt(&rec.id), "skipping record: {why}");
            self.unreadable += 1;
            return;
        }
        if !self.seen.insert(rec.id.clone()) {
            self.duplicates += 1;
            return;
        }
        let index = self.advisory_spans.len() as u32;
        // Go records of unknown age carry the zero time; it is no information.
        if let Some(m) = rec.modified.as_deref().filter(|m| !m.starts_with("0001-")) {
            if self.newest_modified.as_deref().is_none_or(|n| m > n) {
                self.newest_modified = Some(m.to_string());
            }
        }
        for affected in &rec.affected {
            let Some(pkg) = &affected.package else {
                continue;
            };
            let Some((ecosystem, eco_key)) = parse_osv_ecosystem(&pkg.ecosystem) else {
                continue;
            };
            let mut entry = compile_affected(index, affected, record_source(&rec.id));
            if super::ecosystem::is_rpm(ecosystem) {
                entry.module = module_of(&rec, affected, &entry);
            }
            if entry.ranges.is_empty() && entry.versions.is_empty() {
                continue;
            }
            let name = normalize_name(ecosystem, &pkg.name);
            let counted = self
                .eco_records
                .entry(eco_key.clone())
                .or_insert((0, u32::MAX));
            if counted.1 != index {
                *counted = (counted.0 + 1, index);
            }
            let blob = self.by_key.entry(package_key(&eco_key, &name)).or_default();
            if let Err(e) = postcard::to_io(&entry, &mut *blob) {
                tracing::warn!(id = %rec.id, error = %e, "cannot encode affected entry");
            }
        }
        let advisory = compile_advisory(&rec);
        let start = self.advisories.len();
        match postcard::to_io(&advisory, &mut self.advisories) {
            Ok(_) => {
                self.advisory_spans
                    .push((start as u64, (self.advisories.len() - start) as u32));
                self.malicious += u64::from(advisory.malicious);
            }
            Err(e) => {
                // Cannot happen for in-memory writes; keep positions consistent regardless.
                self.advisories.truncate(start);
                self.advisory_spans.push((start as u64, 0));
                tracing::warn!(id = %rec.id, error = %e, "cannot encode advisory");
            }
        }
    }

    /// Adds records from a JSON document: one record, or an array of records.
    pub fn add_json(&mut self, bytes: &[u8], origin: &str) {
        // The common case, one record per file, is read straight into the record type.
        if let Ok(rec) = serde_json::from_slice::<OsvRecord>(bytes) {
            self.add_record(rec);
            return;
        }
        let value: serde_json::Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(%origin, error = %e, "skipping file that is not JSON");
                self.unreadable += 1;
                return;
            }
        };
        let items = match value {
            serde_json::Value::Array(items) => items,
            other => vec![other],
        };
        for item in items {
            match serde_json::from_value::<OsvRecord>(item) {
                Ok(rec) => self.add_record(rec),
                Err(e) => {
                    tracing::warn!(%origin, error = %e, "skipping JSON that is not an OSV record");
                    self.unreadable += 1;
                }
            }
        }
    }

    /// Adds every `.json` member of a zip archive (osv.dev's `all.zip`); a member over
    /// [`OsvLimits::max_record_bytes`] is skipped.
    pub fn add_zip<R: Read + Seek>(&mut self, reader: R, origin: &str) -> anyhow::Result<()> {
        let mut zip =
            zip::ZipArchive::new(reader).with_context(|| format!("{origin}: not a zip archive"))?;
        let max_bytes = self.limits.max_record_bytes;
        let mut buf = Vec::new();
        for i in 0..zip.len() {
            let mut file = zip
                .by_index(i)
                .with_context(|| format!("{origin}: member {i}"))?;
            if !file.is_file() || !file.name().ends_with(".json") {
                continue;
            }
            let name = format!("{origin}!{}", file.name());
            buf.clear();
            (&mut file)
                .take(max_bytes.saturating_add(1))
                .read_to_end(&mut buf)
                .with_context(|| format!("reading {name}"))?;
            if buf.len() as u64 > max_bytes {
                tracing::warn!(%name, "skipping member over {max_bytes} bytes (--max-osv-record-bytes)");
                self.unreadable += 1;
                continue;
            }
            self.add_json(&buf, &name);
        }
        Ok(())
    }

    /// Adds every `.json` file and `.zip` archive under a directory, recursively.
    pub fn add_dir(&mut self, dir: &Path) -> anyhow::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read OSV directory {}", dir.display()))?
            .collect::<Result<_, _>>()?;
        // Sorted, so that which of two records with one id wins does not depend on the file system.
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                self.add_dir(&path)?;
            } else if path.extension().is_some_and(|e| e == "json") {
                let max_bytes = self.limits.max_record_bytes;
                let mut bytes = Vec::new();
                std::fs::File::open(&path)
                    .and_then(|f| f.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes))
                    .with_context(|| format!("reading {}", path.display()))?;
                if bytes.len() as u64 > max_bytes {
                    tracing::warn!(path = %path.display(), "skipping file over {max_bytes} bytes (--max-osv-record-bytes)");
                    self.unreadable += 1;
                    continue;
                }
                self.add_json(&bytes, &path.display().to_string());
            } else if path.extension().is_some_and(|e| e == "zip") {
                self.add_zip_file(&path)?;
            }
        }
        Ok(())
    }

    fn add_zip_file(&mut self, path: &Path) -> anyhow::Result<()> {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        self.add_zip(std::io::BufReader::new(file), &path.display().to_string())
    }

    /// Adds the NVD feeds of an http(s) source: the URL itself when it names one file
    /// (`.json`, `.json.gz`, `.json.xz`), else the yearly feeds `<base>/nvdcve-2.0-YYYY.json.gz`
    /// from 2002 to this year (see [`super::update::nvd_feed_names`]). Each download goes to
    /// a temporary file and is read from there as a stream.
    pub async fn add_nvd_url(&mut self, url: &str) -> anyhow::Result<()> {
        let dir = tempfile_dir()?;
        let files = super::download::download_nvd_source(url, &dir.0, &self.egress()).await?;
        for file in files {
            nvd::read_file(&file, &mut |cve| self.add_nvd_cve(&cve))
                .with_context(|| format!("reading the NVD feed downloaded from {url}"))?;
        }
        Ok(())
    }

    /// Adds the archives of an http(s) source (see [`fetch_url_source`]); for async callers
    /// such as the operator, where [`DbBuilder::add_source`] would block the runtime.
    pub async fn add_url(&mut self, url: &str) -> anyhow::Result<()> {
        for (u, bytes) in fetch_url_source(url, &self.egress()).await? {
            self.add_zip(Cursor::new(bytes), &u)?;
        }
        self.sources.push(url.to_string());
        Ok(())
    }

    /// Adds a source as the CLI names it: a directory, a zip file, a JSON file, or an
    /// http(s) URL (a `.zip` URL, or a base URL with `<Ecosystem>/all.zip` under it).
    pub fn add_source(&mut self, source: &str) -> anyhow::Result<()> {
        if let Some(nvd_source) = source.strip_prefix(nvd::SOURCE_PREFIX) {
            if nvd_source.starts_with("http://") || nvd_source.starts_with("https://") {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting the HTTP client runtime")?;
                runtime.block_on(self.add_nvd_url(nvd_source))?;
            } else {
                self.add_nvd_path(Path::new(nvd_source))?;
            }
            self.sources.push(source.to_string());
            return Ok(());
        }
        if let Some(oci) = super::oci::OciSource::parse(source) {
            let opts = super::oci::OciOptions {
                egress: Some(self.egress()),
                ..Default::default()
            };
            let layers = super::oci::block_on(super::oci::pull(&oci, &opts))??;
            for (media_type, data) in layers {
                if media_type == super::oci::INDEX_MEDIA_TYPE {
                    anyhow::bail!(
                        "{source} holds a compiled index, which is a whole database: use it as the only --db source"
                    );
                }
                self.add_zip(std::io::Cursor::new(data), source)?;
            }
            self.sources.push(source.to_string());
            return Ok(());
        }
        if source.starts_with("http://") || source.starts_with("https://") {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the HTTP client runtime")?;
            return runtime.block_on(self.add_url(source));
        } else {
            let path = Path::new(source);
            let meta = std::fs::metadata(path)
                .with_context(|| format!("OSV source {source}: no such file or directory (expected a directory, a .zip, or an http(s) URL)"))?;
            if meta.is_dir() {
                self.add_dir(path)?;
            } else if source.ends_with(".json") {
                let bytes = std::fs::read(path).with_context(|| format!("reading {source}"))?;
                self.add_json(&bytes, source);
            } else {
                self.add_zip_file(path)?;
            }
        }
        self.sources.push(source.to_string());
        Ok(())
    }

    fn info(&self) -> DbInfo {
        let mut ecosystems: BTreeMap<String, super::EcosystemStats> = self
            .eco_records
            .iter()
            .map(|(k, (records, _))| {
                (
                    k.clone(),
                    super::EcosystemStats {
                        records: *records,
                        packages: 0,
                    },
                )
            })
            .collect();
        for key in self.by_key.keys() {
            if let Some((eco, _)) = key.split_once('\0') {
                if let Some(s) = ecosystems.get_mut(eco) {
                    s.packages += 1;
                }
            }
        }
        DbInfo {
            format: super::index::FORMAT,
            digest: String::new(),
            built_at: build_time().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            scanner_version: crate::SCANNER_VERSION.to_string(),
            sources: self.sources.clone(),
            records: self.advisory_spans.len() as u64,
            malicious_records: self.malicious,
            withdrawn_skipped: self.withdrawn,
            non_security_skipped: self.not_security,
            newest_modified: self.newest_modified.clone(),
            ecosystems,
            nvd_records: self.nvd.len() as u64,
            nvd_newest_modified: self.nvd_newest_modified.clone(),
            sample: self.sample,
        }
    }

    /// Writes the index to `out`.
    pub fn write(&self, out: &mut impl std::io::Write) -> anyhow::Result<DbInfo> {
        if self.duplicates > 0 || self.unreadable > 0 || self.not_security > 0 {
            tracing::info!(
                duplicates = self.duplicates,
                unreadable = self.unreadable,
                bug_fix_and_enhancement_errata = self.not_security,
                "records skipped while compiling"
            );
        }
        let mut nvd: Vec<NvdEntry> = self.nvd.values().cloned().collect();
        nvd.sort_unstable_by_key(|e| e.key);
        let records = CompiledRecords {
            by_key: &self.by_key,
            advisories: &self.advisories,
            advisory_spans: &self.advisory_spans,
            nvd: &nvd,
        };
        write_index(out, self.info(), records)
    }

    /// Writes the index to `path` atomically (a temporary file renamed over it), so a
    /// scanner that has the old index mapped keeps reading a complete file.
    pub fn write_file(&self, path: &Path) -> anyhow::Result<DbInfo> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("index"),
            std::process::id()
        ));
        let written = (|| -> anyhow::Result<DbInfo> {
            let mut out = std::io::BufWriter::new(
                std::fs::File::create(&tmp)
                    .with_context(|| format!("cannot create {}", tmp.display()))?,
            );
            let info = self.write(&mut out)?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, path).with_context(|| {
                format!("cannot move the index into place at {}", path.display())
            })?;
            Ok(info)
        })();
        if written.is_err() {
            // Whatever was there before stays; the partial file goes.
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Compiles the index in memory and opens it.
    pub fn into_db(self, origin: &str) -> anyhow::Result<Db> {
        let mut bytes = Vec::new();
        self.write(&mut bytes)?;
        Ok(Db::from_bytes(bytes, origin)?)
    }
}

impl Db {
    /// Opens what `--db` names: one index file, or OSV sources (directories, zip
    /// files, URLs) compiled in memory.
    pub fn load(sources: &[String]) -> anyhow::Result<Db> {
        Self::load_with(
            sources,
            std::sync::Arc::new(crate::egress::EgressPolicy::unrestricted()),
        )
    }

    /// [`Db::load`], with http(s) and oci:// sources fetched only where `egress` allows.
    pub fn load_with(
        sources: &[String],
        egress: std::sync::Arc<crate::egress::EgressPolicy>,
    ) -> anyhow::Result<Db> {
        if let [single] = sources {
            if let Some(oci) = super::oci::OciSource::parse(single) {
                let opts = super::oci::OciOptions {
                    egress: Some(egress.clone()),
                    ..Default::default()
                };
                let layers = super::oci::block_on(super::oci::pull(&oci, &opts))??;
                if let [(media_type, _)] = &layers[..] {
                    if media_type == super::oci::INDEX_MEDIA_TYPE {
                        let (_, data) = layers.into_iter().next().expect("one layer");
                        return Ok(Db::from_bytes(data, single)?);
                    }
                }
            }
            let path = Path::new(single);
            if path.is_file() && Db::is_index_file(path) {
                return Ok(Db::open_index(path)?);
            }
        }
        let mut builder = DbBuilder::new().with_egress(egress);
        for s in sources {
            builder.add_source(s)?;
        }
        if !builder.has_advisories() {
            anyhow::bail!("no OSV records found in {}", sources.join(", "));
        }
        builder.into_db(&sources.join(","))
    }
}

/// Downloads the archives of an http(s) source: the URL itself when it names a
/// `.zip`, else `<base>/<Ecosystem>/all.zip` for each of [`URL_ECOSYSTEMS`]
/// (ecosystems the server does not have are skipped).
pub async fn fetch_url_source(
    url: &str,
    egress: &std::sync::Arc<crate::egress::EgressPolicy>,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    super::download::check_source_url(egress, url)?;
    let client = super::download::http_client(egress)?;
    let urls: Vec<String> = if url.ends_with(".zip") {
        vec![url.to_string()]
    } else {
        let base = url.trim_end_matches('/');
        URL_ECOSYSTEMS
            .iter()
            .map(|e| format!("{base}/{}/all.zip", e.replace(' ', "%20")))
            .collect()
    };
    let single = urls.len() == 1;
    let mut out = Vec::new();
    for u in urls {
        let resp = client
            .get(&u)
            .send()
            .await
            .with_context(|| format!("fetching {u}"))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND && !single {
            tracing::debug!(url = %u, "no archive for this ecosystem");
            continue;
        }
        let resp = resp
            .error_for_status()
            .with_context(|| format!("fetching {u}"))?;
        let bytes = resp.bytes().await.with_context(|| format!("reading {u}"))?;
        out.push((u, bytes.to_vec()));
    }
    if out.is_empty() {
        anyhow::bail!("{url}: no <Ecosystem>/all.zip archive found under this base URL");
    }
    Ok(out)
}

/// Largest OSV JSON document read (a file, or a member of an archive).
pub const MAX_OSV_DOCUMENT_BYTES: u64 = 64 << 20;
/// Most `affected` entries, and most range events and listed versions, in one record.
pub const MAX_AFFECTED_PER_RECORD: usize = 10_000;
pub const MAX_VERSIONS_PER_RECORD: usize = 100_000;

/// The largest OSV record a database build compiles (`imagewarden db build` and
/// `db update` flags); bigger records are skipped with a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OsvLimits {
    /// Largest OSV JSON document read (a file, or a member of an archive).
    pub max_record_bytes: u64,
    /// Most `affected` entries in one record.
    pub max_affected: u64,
    /// Most events in one range; at most [`crate::matcher::MAX_RANGE_EVENTS`], the
    /// matcher's own bound.
    pub max_range_events: u64,
}

impl Default for OsvLimits {
    fn default() -> Self {
        OsvLimits {
            max_record_bytes: MAX_OSV_DOCUMENT_BYTES,
            max_affected: MAX_AFFECTED_PER_RECORD as u64,
            max_range_events: crate::matcher::MAX_RANGE_EVENTS as u64,
        }
    }
}

impl OsvLimits {
    /// Why `rec` is too large to compile, if it is; the reason names the flag.
    fn oversized(&self, rec: &OsvRecord) -> Option<String> {
        if rec.affected.len() as u64 > self.max_affected {
            return Some(format!(
                "{} affected entries (at most {}, --max-osv-affected)",
                rec.affected.len(),
                self.max_affected
            ));
        }
        let mut versions = 0usize;
        for a in &rec.affected {
            versions += a.versions.len();
            for r in &a.ranges {
                if r.events.len() as u64 > self.max_range_events {
                    return Some(format!(
                        "a range with {} events (at most {}, --max-osv-range-events)",
                        r.events.len(),
                        self.max_range_events
                    ));
                }
            }
        }
        (versions > MAX_VERSIONS_PER_RECORD)
            .then(|| format!("{versions} listed versions (at most {MAX_VERSIONS_PER_RECORD})"))
    }
}

fn compile_advisory(rec: &OsvRecord) -> Advisory {
    let mut aliases: Vec<String> = Vec::new();
    for a in rec.aliases.iter().chain(rec.upstream.iter()) {
        if a != &rec.id && !aliases.contains(a) {
            aliases.push(a.clone());
        }
    }
    let title = rec
        .summary
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            rec.details
                .as_deref()
                .and_then(|d| d.lines().map(str::trim).find(|l| !l.is_empty()))
        })
        .map(|t| truncate(t, 200))
        .unwrap_or_default();
    // Debian's advisory lists say only "security update"; name the package it is for.
    let title = match rec.affected.iter().find_map(|a| a.package.as_ref()) {
        Some(p)
            if (rec.id.starts_with("DSA-") || rec.id.starts_with("DLA-"))
                && !title.contains(&p.name) =>
        {
            if title.is_empty() {
                p.name.clone()
            } else {
                format!("{}: {title}", p.name)
            }
        }
        _ => title,
    };
    let link = rec
        .references
        .iter()
        .find(|r| r.kind == "ADVISORY")
        .or_else(|| rec.references.first())
        .map(|r| r.url.clone())
        .or_else(|| default_link(&rec.id));
    let source = record_source(&rec.id);
    let rating = rate_osv(&rec.severity, source)
        .or_else(|| rate_specific(rec.database_specific.as_ref(), source))
        .or_else(|| erratum_rating(&rec.id, rec.summary.as_deref()));
    let mut related: Vec<String> = Vec::new();
    for r in &rec.related {
        if *r != rec.id && !aliases.contains(r) && !related.contains(r) {
            related.push(r.clone());
        }
    }
    Advisory {
        id: rec.id.clone(),
        aliases,
        title,
        link,
        modified: rec.modified.clone(),
        published: rec.published.clone(),
        rating,
        malicious: rec.id.starts_with("MAL-"),
        related,
    }
}

/// Security errata of rpm distributions: AlmaLinux, Rocky Linux, Red Hat, Oracle Linux.
const SECURITY_ERRATA: [&str; 4] = ["ALSA-", "RLSA-", "RHSA-", "ELSA-"];

/// Bug-fix and enhancement errata of the same distributions: no vulnerability is fixed.
const NON_SECURITY_ERRATA: [&str; 8] = [
    "ALBA-", "ALEA-", "RLBA-", "RLEA-", "RHBA-", "RHEA-", "ELBA-", "ELEA-",
];

/// Whether `id` names a bug-fix or enhancement erratum (not a vulnerability).
pub fn is_non_security_erratum(id: &str) -> bool {
    NON_SECURITY_ERRATA.iter().any(|p| id.starts_with(p))
}

/// The vendor's rating of a security erratum, the first word of its summary
/// ("Important: openssl security update"): Critical, Important (High), Moderate (Medium), Low.
fn erratum_rating(id: &str, summary: Option<&str>) -> Option<Rating> {
    if !SECURITY_ERRATA.iter().any(|p| id.starts_with(p)) {
        return None;
    }
    let (word, _) = summary?.trim().split_once(':')?;
    match word.trim() {
        label @ ("Critical" | "Important" | "Moderate" | "Low") => {
            vendor_rating(label, record_source(id))
        }
        _ => None,
    }
}

/// The module stream an rpm entry's fix is for (see [`AffectedPackage::module`]): Red Hat's
/// `rpmmod` purl qualifier, else, for a module build (release `.module_el8...`, `.module+el8...`),
/// the `name:stream` the summary names ("Important: nodejs:22 security update").
fn module_of(rec: &OsvRecord, affected: &OsvAffected, entry: &AffectedPackage) -> Option<String> {
    if let Some(purl) = affected.package.as_ref().and_then(|p| p.purl.as_deref()) {
        let label = purl
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("rpmmod="));
        if let Some(label) = label {
            let label = label.replace("%3A", ":").replace("%3a", ":");
            return Some(super::ecosystem::module_stream(&label).unwrap_or_default());
        }
    }
    let module_build = entry.ranges.iter().flat_map(|r| &r.events).any(|e| {
        let v = match e {
            RangeEvent::Introduced(v)
            | RangeEvent::Fixed(v)
            | RangeEvent::LastAffected(v)
            | RangeEvent::Limit(v) => v,
        };
        v.rsplit_once('-')
            .is_some_and(|(_, release)| release.contains(".module"))
    });
    if !module_build {
        return None;
    }
    let summary = rec.summary.as_deref().unwrap_or("");
    // Past the rating word: "Important: nodejs:22 security update" → "nodejs:22 ...".
    let text = summary.split_once(": ").map_or(summary, |(_, rest)| rest);
    let stream = text.split_whitespace().find_map(|w| {
        let (name, stream) = w.split_once(':')?;
        let ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(c))
        };
        (ok(name) && ok(stream)).then(|| format!("{name}:{stream}"))
    });
    Some(stream.unwrap_or_default())
}

/// The public page of well-known advisory ids, for records that list no reference.
fn default_link(id: &str) -> Option<String> {
    if id.starts_with("DSA-") || id.starts_with("DLA-") {
        Some(format!("https://security-tracker.debian.org/tracker/{id}"))
    } else if let Some(cve) = id.strip_prefix("ALPINE-") {
        Some(format!("https://security.alpinelinux.org/vuln/{cve}"))
    } else if id.starts_with("CVE-") {
        Some(format!("https://nvd.nist.gov/vuln/detail/{id}"))
    } else {
        Some(format!("https://osv.dev/vulnerability/{id}"))
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn compile_affected(advisory: u32, a: &OsvAffected, source: &str) -> AffectedPackage {
    let ranges: Vec<VersionRange> = a
        .ranges
        .iter()
        .filter(|r| r.kind == "ECOSYSTEM" || r.kind == "SEMVER")
        .map(|r| VersionRange {
            semver: r.kind == "SEMVER",
            events: r
                .events
                .iter()
                .filter_map(|e| {
                    if let Some(v) = &e.introduced {
                        Some(RangeEvent::Introduced(v.clone()))
                    } else if let Some(v) = &e.fixed {
                        Some(RangeEvent::Fixed(v.clone()))
                    } else if let Some(v) = &e.last_affected {
                        Some(RangeEvent::LastAffected(v.clone()))
                    } else {
                        e.limit.as_ref().map(|v| RangeEvent::Limit(v.clone()))
                    }
                })
                .collect(),
        })
        .filter(|r| !r.events.is_empty())
        .collect();
    let rating = rate_osv(&a.severity, source)
        .or_else(|| rate_specific(a.ecosystem_specific.as_ref(), source))
        .or_else(|| rate_specific(a.database_specific.as_ref(), source));
    // osv.dev enumerates every affected version next to the ranges; where a range
    // can be evaluated the list adds nothing but size, so it is kept only without one.
    let versions = if ranges.is_empty() {
        a.versions.clone()
    } else {
        Vec::new()
    };
    AffectedPackage {
        advisory,
        ranges,
        versions,
        rating,
        module: None,
    }
}

/// A temporary directory removed when dropped.
pub(crate) struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> anyhow::Result<TempDir> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "imagewarden-nvd-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(TempDir(dir))
}

/// When the index is built: now, or `SOURCE_DATE_EPOCH` (seconds) when set, so that the
/// same records give a byte-identical index (reproducible images).
fn build_time() -> chrono::DateTime<chrono::Utc> {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .unwrap_or_else(chrono::Utc::now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vulndb::Severity;

    fn record(json: serde_json::Value) -> OsvRecord {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn errata_rating_is_the_summary_s_first_word() {
        for (summary, want) in [
            ("Critical: kernel security update", Some(Severity::Critical)),
            ("Important: openssl security update", Some(Severity::High)),
            ("Moderate: curl security update", Some(Severity::Medium)),
            ("Low: vim security update", Some(Severity::Low)),
            ("None: kernel bug fix and enhancement update", None),
        ] {
            let a = compile_advisory(&record(serde_json::json!({
                "id": "ALSA-2022:7288", "summary": summary, "related": ["CVE-2022-3602"]
            })));
            assert_eq!(a.rating.map(|r| r.severity), want, "{summary}");
            assert_eq!(a.related, ["CVE-2022-3602"]);
            assert!(a.aliases.is_empty());
        }
        // Not an erratum: the summary is no rating.
        let a = compile_advisory(&record(serde_json::json!({
            "id": "GHSA-xxxx", "summary": "Important: something"
        })));
        assert_eq!(a.rating, None);
    }

    #[test]
    fn the_record_limits_are_the_flags_values() {
        // One record of three affected entries, each with a range of four events.
        let entry = serde_json::json!({"package": {"ecosystem": "npm", "name": "x"},
            "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.0.0"},
                {"introduced": "1.1.0"}, {"fixed": "1.2.0"}]}]});
        let json = serde_json::json!({"id": "GHSA-limits", "affected": [entry.clone(), entry.clone(), entry]});
        let bytes = serde_json::to_vec(&json).unwrap();
        let compiled = |limits: OsvLimits| {
            let mut b = DbBuilder::new().with_limits(limits);
            b.add_json(&bytes, "test");
            b.len()
        };
        let defaults = OsvLimits::default();
        assert_eq!(compiled(defaults), 1);
        let exact = OsvLimits {
            max_record_bytes: bytes.len() as u64,
            max_affected: 3,
            max_range_events: 4,
        };
        assert_eq!(compiled(exact), 1);
        for (limits, flag) in [
            (
                OsvLimits {
                    max_affected: 2,
                    ..exact
                },
                "--max-osv-affected",
            ),
            (
                OsvLimits {
                    max_range_events: 3,
                    ..exact
                },
                "--max-osv-range-events",
            ),
        ] {
            assert_eq!(compiled(limits), 0, "{flag}");
            let why = limits.oversized(&record(json.clone())).unwrap();
            assert!(why.contains(flag), "{why}");
        }
        // The document size holds for files and archive members.
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("GHSA-limits.json"), &bytes).unwrap();
        let from_dir = |limits: OsvLimits| {
            let mut b = DbBuilder::new().with_limits(limits);
            b.add_dir(tmp.path()).unwrap();
            b.len()
        };
        assert_eq!(from_dir(exact), 1);
        let small = OsvLimits {
            max_record_bytes: bytes.len() as u64 - 1,
            ..exact
        };
        assert_eq!(from_dir(small), 0);
    }

    #[test]
    fn bug_fix_and_enhancement_errata_are_not_compiled() {
        let mut b = DbBuilder::new();
        for id in ["ALBA-2022:8256", "RHEA-2023:1", "ALSA-2022:7288"] {
            b.add_record(record(serde_json::json!({
                "id": id, "summary": "Important: x",
                "affected": [{"package": {"ecosystem": "AlmaLinux:9", "name": "x"},
                  "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1-1.el9"}]}]}]
            })));
        }
        assert_eq!(b.len(), 1);
        assert!(is_non_security_erratum("RHBA-2024:1"));
        assert!(!is_non_security_erratum("RHSA-2024:1"));
    }

    #[test]
    fn module_streams_come_from_the_summary_or_the_purl() {
        let module_of_record = |json: serde_json::Value| {
            let rec = record(json);
            let a = &rec.affected[0];
            module_of(&rec, a, &compile_affected(0, a, "almalinux"))
        };
        let entry = |fixed: &str, purl: Option<&str>| {
            let mut p = serde_json::json!({"ecosystem": "AlmaLinux:9", "name": "nodejs"});
            if let Some(purl) = purl {
                p["purl"] = purl.into();
            }
            serde_json::json!([{"package": p, "ranges": [{"type": "ECOSYSTEM",
                "events": [{"introduced": "0"}, {"fixed": fixed}]}]}])
        };
        assert_eq!(
            module_of_record(serde_json::json!({"id": "ALSA-2025:7433",
                "summary": "Important: nodejs:22 security update",
                "affected": entry("1:22.15.0-1.module_el9.6.0+164+2d89b8ed", None)})),
            Some("nodejs:22".into())
        );
        // "pam:1.5.1" in a summary is no module when the fix is no module build.
        assert_eq!(
            module_of_record(serde_json::json!({"id": "ALSA-2024:10244",
                "summary": "Important: pam:1.5.1 security update",
                "affected": entry("1.5.1-22.el9_5", None)})),
            None
        );
        assert_eq!(
            module_of_record(serde_json::json!({"id": "RHSA-2024:1",
                "summary": "Important: nodejs security update",
                "affected": entry("1:18.19.1-1.module+el8.9.0+21388+1e2ad94b",
                    Some("pkg:rpm/redhat/nodejs@18.19.1-1.module%2Bel8.9.0?arch=src&rpmmod=nodejs:18:8090020240222:a75119d5"))})),
            Some("nodejs:18".into())
        );
        // A module build whose stream the record does not name: any stream.
        assert_eq!(
            module_of_record(serde_json::json!({"id": "ALSA-1",
                "summary": "Important: nodejs security update",
                "affected": entry("1:18.19.1-1.module_el9.3.0+59+28b95644", None)})),
            Some(String::new())
        );
    }
}
