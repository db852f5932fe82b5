//! Streaming layer walk: a layer blob (gzip, zstd or plain tar) is read once, front to back;
//! only the files some analyzer wants are read, within that analyzer's size cap. Whiteouts
//! are recorded per layer and applied across layers by [`merge_layers`], so the result
//! reflects the image's final filesystem.

mod path;

pub use path::normalize_entry_path;

use crate::analyzer::{Analyzer, FileMeta, Output};
use sha2::{Digest, Sha256, Sha512};
use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read};

/// Errors reading a layer blob.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer {digest}: digest mismatch: the blob's content hashes to {actual}")]
    DigestMismatch { digest: String, actual: String },
    #[error("layer {digest}: {reason}")]
    UnsupportedDigest { digest: String, reason: String },
    #[error("layer {digest}: the image's layers decompress to more than {limit} bytes (the per-scan budget); not scanned")]
    OverBudget { digest: String, limit: u64 },
    #[error("layer {digest}: the analyzers' results for this image (packages, findings, warnings) exceed {} kept in memory (the per-scan retained-bytes budget, --max-retained-bytes); not scanned", crate::budget::human(*limit))]
    RetainedOverBudget { digest: String, limit: u64 },
    #[error("layer {digest}: size mismatch: expected {expected} bytes, read {actual}")]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("layer {digest}: truncated or corrupt blob ({source}); pull the image again or check the registry's storage")]
    Corrupt {
        digest: String,
        #[source]
        source: io::Error,
    },
}

/// What the analyzers found in one file of a layer.
#[derive(Debug, Default, Clone)]
pub struct FileResult {
    pub output: Output,
}

/// Everything one layer contributes to the final filesystem's analysis.
#[derive(Debug, Default, Clone)]
pub struct LayerScan {
    /// `sha256:<hex>` of the blob as stored (compressed).
    pub digest: String,
    /// Results per path. A path with an empty result still hides what lower layers had
    /// there (e.g. a package database replaced by a symlink, or grown over the size cap).
    pub files: BTreeMap<String, FileResult>,
    /// Paths deleted by `.wh.<name>` entries.
    pub whiteouts: Vec<String>,
    /// Directories made opaque by `.wh..wh..opq`: lower layers' contents are hidden.
    pub opaque_dirs: Vec<String>,
    /// Entries skipped and why (unsafe paths, size caps).
    pub warnings: Vec<String>,
    /// Bytes of the blob as stored, and uncompressed tar bytes.
    pub compressed_size: u64,
    /// `sha256:<hex>` of the uncompressed tar (the config's `diff_ids`), when known: always
    /// for an uncompressed blob, and for compressed ones read with [`LayerOptions::diff_id`].
    pub diff_id: Option<String>,
    /// Bytes of the uncompressed tar stream read.
    pub uncompressed_size: u64,
    /// Warnings beyond the bound, counted in the last line of `warnings`.
    omitted_warnings: u64,
    /// About how many bytes of analysis results this layer keeps (see
    /// [`crate::analyzer::Output::approx_bytes`]).
    pub retained_bytes: u64,
}

impl LayerScan {
    /// Records a warning; past [`crate::analyzer::MAX_WARNINGS`] they are only counted.
    pub fn warn(&mut self, w: String) {
        crate::analyzer::push_bounded_warning(
            &mut self.warnings,
            &mut self.omitted_warnings,
            crate::analyzer::MAX_WARNINGS,
            w,
        );
    }
}

/// A content digest being computed in one of the algorithms the OCI image spec
/// registers (`sha256`, `sha512`).
#[derive(Clone)]
pub enum Digester {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Digester {
    /// The digester for `expected` (`alg:hex`), or why that digest cannot be verified.
    pub fn for_digest(expected: &str) -> Result<Digester, String> {
        let (alg, hex) = expected
            .split_once(':')
            .ok_or_else(|| format!("malformed digest {expected:?}"))?;
        let (digester, len) = match alg {
            "sha256" => (Digester::Sha256(Sha256::new()), 64),
            "sha512" => (Digester::Sha512(Sha512::new()), 128),
            _ => {
                return Err(format!(
                    "digest algorithm {:?} is not supported (sha256 and sha512 are); the content cannot be verified",
                    alg.chars().take(32).collect::<String>()
                ))
            }
        };
        if hex.len() != len || !hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(format!("malformed {alg} digest"));
        }
        Ok(digester)
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Digester::Sha256(h) => h.update(data),
            Digester::Sha512(h) => h.update(data),
        }
    }

    /// `alg:<hex>` of everything hashed.
    pub fn finish(self) -> String {
        match self {
            Digester::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Digester::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// A reader that hashes and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Digester,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    /// Hashes with sha256.
    pub fn new(inner: R) -> Self {
        Self::with(inner, Digester::Sha256(Sha256::new()))
    }

    pub fn with(inner: R, hasher: Digester) -> Self {
        HashingReader {
            inner,
            hasher,
            count: 0,
        }
    }

    /// `alg:<hex>` of everything read so far, and its length.
    pub fn finish(self) -> (String, u64) {
        (self.hasher.finish(), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Compression of a layer blob, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

/// Sniffs the compression of a buffered stream without consuming anything.
pub fn sniff<R: BufRead>(r: &mut R) -> io::Result<Compression> {
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    })
}

/// Wraps a buffered stream in the decompressor its magic bytes call for.
pub fn decompress<'a, R: BufRead + 'a>(mut r: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match sniff(&mut r)? {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(r)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?,
        ),
        Compression::None => Box::new(r),
    })
}

/// Reads one layer blob. `expected_digest` is checked against the sha256 of the bytes as
/// stored once the blob has been read to its end; without it the computed digest is reported.
pub fn scan_layer<R: Read>(
    blob: R,
    expected_digest: Option<&str>,
    expected_size: Option<u64>,
    analyzers: &[Box<dyn Analyzer>],
) -> Result<LayerScan, LayerError> {
    scan_layer_with(
        blob,
        expected_digest,
        expected_size,
        analyzers,
        &LayerOptions::default(),
    )
}

/// How one layer is read.
#[derive(Debug, Clone, Copy)]
pub struct LayerOptions {
    /// Also hash the uncompressed tar of a compressed blob, so that [`LayerScan::diff_id`]
    /// is always set (for checking a config's `diff_ids`).
    pub diff_id: bool,
    /// Most uncompressed bytes this layer may have (what is left of the scan's budget).
    pub max_uncompressed_bytes: u64,
    /// Largest file read for analyzers: each analyzer's own cap is lowered to this.
    pub max_file_bytes: u64,
    /// Most bytes of analysis results this layer may keep (what is left of the scan's
    /// retained-bytes budget).
    pub max_retained_bytes: u64,
}

/// Uncompressed bytes one scan reads by default, over all layers: decompression bombs
/// end here instead of running for hours.
pub use crate::budget::DEFAULT_MAX_IMAGE_BYTES;

impl Default for LayerOptions {
    fn default() -> Self {
        let budgets = crate::budget::ScanBudgets::default();
        LayerOptions {
            diff_id: false,
            max_uncompressed_bytes: budgets.max_image_bytes,
            max_file_bytes: budgets.max_file_bytes,
            max_retained_bytes: budgets.max_retained_bytes,
        }
    }
}

/// Per-file and retained-result limits of one walk over a layer's files.
#[derive(Debug, Clone, Copy)]
pub struct WalkLimits {
    /// Largest file read for analyzers.
    pub max_file_bytes: u64,
    /// Most bytes of results kept; past it the walk stops with an error.
    pub max_retained_bytes: u64,
}

impl Default for WalkLimits {
    fn default() -> Self {
        let opts = LayerOptions::default();
        WalkLimits {
            max_file_bytes: opts.max_file_bytes,
            max_retained_bytes: opts.max_retained_bytes,
        }
    }
}

/// The error a walk stops with once its results pass the retained-bytes budget.
#[derive(Debug, thiserror::Error)]
#[error("over the retained-bytes budget")]
struct RetainedOverBudget;

/// Counts what passes through, failing once more than `limit` bytes were read.
struct LimitedReader<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R: Read> Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::other("over the uncompressed byte budget"));
        }
        Ok(n)
    }
}

/// As [`scan_layer`], with options.
pub fn scan_layer_with<R: Read>(
    blob: R,
    expected_digest: Option<&str>,
    expected_size: Option<u64>,
    analyzers: &[Box<dyn Analyzer>],
    opts: &LayerOptions,
) -> Result<LayerScan, LayerError> {
    let want_diff_id = opts.diff_id;
    let label = expected_digest.unwrap_or("(unnamed)").to_string();
    let corrupt = |source: io::Error| LayerError::Corrupt {
        digest: label.clone(),
        source,
    };
    let hasher = match expected_digest {
        Some(d) => Digester::for_digest(d).map_err(|reason| LayerError::UnsupportedDigest {
            digest: label.clone(),
            reason,
        })?,
        None => Digester::Sha256(Sha256::new()),
    };
    let mut hashing = HashingReader::with(blob, hasher);
    let mut scan = LayerScan::default();
    let compression;
    {
        let mut buffered = BufReader::with_capacity(64 << 10, &mut hashing);
        compression = sniff(&mut buffered).map_err(corrupt)?;
        let tar_stream = decompress(buffered).map_err(corrupt)?;
        let mut limited = LimitedReader {
            inner: tar_stream,
            read: 0,
            limit: opts.max_uncompressed_bytes,
        };
        let limits = WalkLimits {
            max_file_bytes: opts.max_file_bytes,
            max_retained_bytes: opts.max_retained_bytes,
        };
        let walked = if want_diff_id && compression != Compression::None {
            let mut hashed = HashingReader::new(&mut limited);
            let walked = walk_tar_with(&mut hashed, analyzers, &mut scan, &limits)
                // The tar end marker may come before the end of the stream.
                .and_then(|()| io::copy(&mut hashed, &mut io::sink()).map(|_| ()));
            scan.diff_id = Some(hashed.finish().0);
            walked
        } else {
            walk_tar_with(&mut limited, analyzers, &mut scan, &limits)
        };
        if limited.read > limited.limit {
            return Err(LayerError::OverBudget {
                digest: label.clone(),
                limit: opts.max_uncompressed_bytes,
            });
        }
        if scan.retained_bytes > opts.max_retained_bytes {
            return Err(LayerError::RetainedOverBudget {
                digest: label.clone(),
                limit: opts.max_retained_bytes,
            });
        }
        walked.map_err(corrupt)?;
        scan.uncompressed_size = limited.read;
    }
    // The tar end marker may come before the end of the blob; the digest covers all of it.
    io::copy(&mut hashing, &mut io::sink()).map_err(corrupt)?;
    let (actual, size) = hashing.finish();
    if let Some(expected) = expected_digest {
        if expected != actual {
            return Err(LayerError::DigestMismatch {
                digest: expected.to_string(),
                actual,
            });
        }
    }
    if let Some(expected) = expected_size {
        if expected != size {
            return Err(LayerError::SizeMismatch {
                digest: label,
                expected,
                actual: size,
            });
        }
    }
    if compression == Compression::None && actual.starts_with("sha256:") {
        scan.diff_id = Some(actual.clone());
    }
    scan.digest = expected_digest.map(str::to_string).unwrap_or(actual);
    scan.compressed_size = size;
    for f in scan.files.values_mut() {
        for finding in &mut f.output.facts {
            match finding {
                crate::analyzer::Fact::Package(p) => p.layer = Some(scan.digest.clone()),
                crate::analyzer::Fact::Check(c) => c.layer = Some(scan.digest.clone()),
                crate::analyzer::Fact::Os(_) | crate::analyzer::Fact::Owned(_) => {}
            }
        }
    }
    Ok(scan)
}

/// Walks an uncompressed tar stream, reading only wanted files, with the default limits.
pub fn walk_tar<R: Read>(
    stream: R,
    analyzers: &[Box<dyn Analyzer>],
    scan: &mut LayerScan,
) -> io::Result<()> {
    walk_tar_with(stream, analyzers, scan, &WalkLimits::default())
}

/// Records one path's results in the layer, counting them against the retained budget.
fn keep_result(
    scan: &mut LayerScan,
    path: String,
    result: FileResult,
    limits: &WalkLimits,
) -> io::Result<()> {
    scan.retained_bytes += result.output.approx_bytes() + path.len() as u64 + 64;
    let over = result.output.over_limit();
    scan.files.insert(path, result);
    if over || scan.retained_bytes > limits.max_retained_bytes {
        return Err(io::Error::other(RetainedOverBudget));
    }
    Ok(())
}

/// As [`walk_tar`], with `limits`.
pub fn walk_tar_with<R: Read>(
    stream: R,
    analyzers: &[Box<dyn Analyzer>],
    scan: &mut LayerScan,
    limits: &WalkLimits,
) -> io::Result<()> {
    let cap_of = |a: &dyn Analyzer| a.size_cap().min(limits.max_file_bytes);
    let mut archive = tar::Archive::new(stream);
    let mut retained = Retained::default();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw_path = entry.path_bytes().into_owned();
        let Some(path) = normalize_entry_path(&raw_path) else {
            scan.warn(format!(
                "skipped entry with unsafe path {:?}",
                String::from_utf8_lossy(&raw_path)
            ));
            continue;
        };
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (d, n),
            None => ("", path.as_str()),
        };
        if let Some(target) = name.strip_prefix(".wh.") {
            if target == ".wh..opq" {
                scan.opaque_dirs.push(dir.to_string());
            } else if !target.is_empty() {
                let deleted = if dir.is_empty() {
                    target.to_string()
                } else {
                    format!("{dir}/{target}")
                };
                scan.whiteouts.push(deleted);
            }
            continue;
        }
        let header = entry.header();
        let kind = header.entry_type();
        if kind.is_dir() {
            continue;
        }
        let mode = header.mode().unwrap_or(0);
        // Entry::size includes PAX size records, unlike the raw header field.
        let size = entry.size();
        let meta = FileMeta {
            path: &path,
            mode,
            size,
        };
        let wanting: Vec<&dyn Analyzer> = analyzers
            .iter()
            .map(|a| a.as_ref())
            .filter(|a| a.wants(&meta))
            .collect();
        if wanting.is_empty() {
            continue;
        }
        let mut result = FileResult {
            output: Output::with_limit(
                limits
                    .max_retained_bytes
                    .saturating_sub(scan.retained_bytes),
            ),
        };
        if kind == tar::EntryType::Link {
            // A hard link names an earlier entry of this layer and has its content. The walk
            // reads each layer once: a target still held from its own reading is analyzed
            // under the link's path; otherwise the miss is said, not silent.
            let target = entry
                .link_name_bytes()
                .and_then(|t| normalize_entry_path(&t));
            match target.as_ref().and_then(|t| retained.get(t)) {
                Some(data) => {
                    let data = data.clone();
                    let meta = FileMeta {
                        path: &path,
                        mode,
                        size: data.len() as u64,
                    };
                    analyze_read(&meta, wanting, &data, &mut result, limits.max_file_bytes);
                }
                None => result.output.warn(format!(
                    "{path}: a hard link to {} whose content was not kept from earlier in the layer; not analyzed",
                    target.as_deref().unwrap_or("an unsafe path")
                )),
            }
            keep_result(scan, path, result, limits)?;
            continue;
        }
        // Symbolic links are never followed: their target may be outside this layer, or a loop.
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            keep_result(scan, path, result, limits)?;
            continue;
        }
        // Analyzers that judge the entry by its mode alone never read it.
        let (by_meta, wanting): (Vec<&dyn Analyzer>, Vec<&dyn Analyzer>) =
            wanting.into_iter().partition(|a| a.metadata_only());
        for a in by_meta {
            a.analyze_meta(&meta, &mut result.output);
        }
        if wanting.is_empty() {
            keep_result(scan, path, result, limits)?;
            continue;
        }
        let cap = wanting.iter().map(|a| cap_of(*a)).max().unwrap_or(0);
        let readers: Vec<&dyn Analyzer> = wanting
            .into_iter()
            .filter(|a| {
                let fits = size <= cap_of(*a);
                if !fits {
                    result.output.warn(format!(
                        "{path}: {size} bytes is over the {} analyzer's cap of {} bytes (--max-file-bytes); skipped",
                        a.name(),
                        cap_of(*a)
                    ));
                }
                fits
            })
            .collect();
        if readers.is_empty() {
            keep_result(scan, path, result, limits)?;
            continue;
        }
        let mut data = Vec::with_capacity(size.min(cap).min(16 << 20) as usize);
        let elf_only = readers.iter().all(|a| a.elf_only());
        if elf_only {
            (&mut entry).take(4).read_to_end(&mut data)?;
            if data != b"\x7fELF" {
                continue;
            }
        }
        // The header's size is not trusted: read at most the cap, plus one byte to notice more.
        (&mut entry)
            .take(cap + 1 - data.len() as u64)
            .read_to_end(&mut data)?;
        if data.len() as u64 > cap {
            result
                .output
                .warn(format!("{path}: larger than its header says; skipped"));
            keep_result(scan, path, result, limits)?;
            continue;
        }
        for a in readers {
            a.analyze_file(&meta, &data, &mut result.output);
        }
        retained.keep(&path, data);
        keep_result(scan, path, result, limits)?;
    }
    Ok(())
}

/// Runs the analyzers wanting a hard link's path on its target's content.
fn analyze_read(
    meta: &FileMeta<'_>,
    wanting: Vec<&dyn Analyzer>,
    data: &[u8],
    result: &mut FileResult,
    max_file_bytes: u64,
) {
    for a in wanting {
        let cap = a.size_cap().min(max_file_bytes);
        if a.metadata_only() {
            a.analyze_meta(meta, &mut result.output);
        } else if data.len() as u64 > cap {
            result.output.warn(format!(
                "{}: {} bytes is over the {} analyzer's cap of {} bytes (--max-file-bytes); skipped",
                meta.path,
                data.len(),
                a.name(),
                cap
            ));
        } else if !a.elf_only() || data.starts_with(b"\x7fELF") {
            a.analyze_file(meta, data, &mut result.output);
        }
    }
}

/// Content of files read earlier in a layer, kept (within a byte budget, newest first)
/// so that hard links to them can be analyzed.
#[derive(Default)]
struct Retained {
    files: std::collections::HashMap<String, std::sync::Arc<Vec<u8>>>,
    order: std::collections::VecDeque<String>,
    bytes: usize,
}

impl Retained {
    /// Bytes of file content kept for hard links, per layer.
    const BUDGET: usize = 32 << 20;

    fn keep(&mut self, path: &str, data: Vec<u8>) {
        if data.len() > Self::BUDGET / 2 {
            return;
        }
        self.bytes += data.len();
        if let Some(old) = self
            .files
            .insert(path.to_string(), std::sync::Arc::new(data))
        {
            self.bytes -= old.len();
        } else {
            self.order.push_back(path.to_string());
        }
        while self.bytes > Self::BUDGET {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(old) = self.files.remove(&oldest) {
                self.bytes -= old.len();
            }
        }
    }

    fn get(&self, path: &str) -> Option<&std::sync::Arc<Vec<u8>>> {
        self.files.get(path)
    }
}

/// Applies layers in order: each layer's whiteouts and opaque directories hide what the
/// layers below had, then its own files replace lower ones at the same path.
pub fn merge_layers<'a>(
    layers: impl IntoIterator<Item = &'a LayerScan>,
) -> BTreeMap<String, &'a FileResult> {
    let mut merged: BTreeMap<String, &'a FileResult> = BTreeMap::new();
    for layer in layers {
        for dir in &layer.opaque_dirs {
            remove_under(&mut merged, dir);
        }
        for path in &layer.whiteouts {
            merged.remove(path);
            remove_under(&mut merged, path);
        }
        for (path, result) in &layer.files {
            merged.insert(path.clone(), result);
        }
    }
    merged
}

fn remove_under(map: &mut BTreeMap<String, &FileResult>, dir: &str) {
    if dir.is_empty() {
        map.clear();
        return;
    }
    let prefix = format!("{dir}/");
    let doomed: Vec<String> = map
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect();
    for k in doomed {
        map.remove(&k);
    }
}
