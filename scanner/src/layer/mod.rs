//! Streaming layer walk: a layer blob (gzip, zstd or plain tar) is read once, front to back;
//! only the files some analyzer wants are read, within that analyzer's size cap. Whiteouts
//! are recorded per layer and applied across layers by [`merge_layers`], so the result
//! reflects the image's final filesystem.

mod path;

pub use path::normalize_entry_path;

use crate::analyzer::{Analyzer, FileMeta, Output};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read};

/// Errors reading a layer blob.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer {digest}: digest mismatch: the blob's content hashes to {actual}")]
    DigestMismatch { digest: String, actual: String },
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
}

/// A reader that hashes and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    /// `sha256:<hex>` of everything read so far, and its length.
    pub fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        )
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
    let label = expected_digest.unwrap_or("(unnamed)").to_string();
    let corrupt = |source: io::Error| LayerError::Corrupt {
        digest: label.clone(),
        source,
    };
    let mut hashing = HashingReader::new(blob);
    let mut scan = LayerScan::default();
    {
        let buffered = BufReader::with_capacity(64 << 10, &mut hashing);
        let tar_stream = decompress(buffered).map_err(corrupt)?;
        walk_tar(tar_stream, analyzers, &mut scan).map_err(corrupt)?;
    }
    // The tar end marker may come before the end of the blob; the digest covers all of it.
    io::copy(&mut hashing, &mut io::sink()).map_err(corrupt)?;
    let (actual, size) = hashing.finish();
    if let Some(expected) = expected_digest {
        if expected.starts_with("sha256:") && expected != actual {
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
    scan.digest = expected_digest.map(str::to_string).unwrap_or(actual);
    scan.compressed_size = size;
    for f in scan.files.values_mut() {
        for finding in &mut f.output.findings {
            match finding {
                crate::analyzer::Finding::Package(p) => p.layer = Some(scan.digest.clone()),
                crate::analyzer::Finding::Check(c) => c.layer = Some(scan.digest.clone()),
                crate::analyzer::Finding::Os(_) => {}
            }
        }
    }
    Ok(scan)
}

/// Walks an uncompressed tar stream, reading only wanted files.
pub fn walk_tar<R: Read>(
    stream: R,
    analyzers: &[Box<dyn Analyzer>],
    scan: &mut LayerScan,
) -> io::Result<()> {
    let mut archive = tar::Archive::new(stream);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw_path = entry.path_bytes().into_owned();
        let Some(path) = normalize_entry_path(&raw_path) else {
            scan.warnings.push(format!(
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
        let mut result = FileResult::default();
        // Links are never followed: their target may be outside this layer, or a loop.
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            scan.files.insert(path, result);
            continue;
        }
        // Analyzers that judge the entry by its mode alone never read it.
        let (by_meta, wanting): (Vec<&dyn Analyzer>, Vec<&dyn Analyzer>) =
            wanting.into_iter().partition(|a| a.metadata_only());
        for a in by_meta {
            a.analyze_meta(&meta, &mut result.output);
        }
        if wanting.is_empty() {
            scan.files.insert(path, result);
            continue;
        }
        let cap = wanting.iter().map(|a| a.size_cap()).max().unwrap_or(0);
        let readers: Vec<&dyn Analyzer> = wanting
            .into_iter()
            .filter(|a| {
                let fits = size <= a.size_cap();
                if !fits {
                    result.output.warn(format!(
                        "{path}: {size} bytes is over the {} analyzer's cap of {} bytes; skipped",
                        a.name(),
                        a.size_cap()
                    ));
                }
                fits
            })
            .collect();
        if readers.is_empty() {
            scan.files.insert(path, result);
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
            scan.files.insert(path, result);
            continue;
        }
        for a in readers {
            a.analyze_file(&meta, &data, &mut result.output);
        }
        scan.files.insert(path, result);
    }
    Ok(())
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
