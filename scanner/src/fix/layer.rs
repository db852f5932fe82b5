//! The one layer a fix adds, whatever the package format: the packages' files copied from
//! their data archives, whiteouts for files that go, and the rewritten package database;
//! bounded in entries and bytes.

use std::collections::BTreeSet;
use std::io::{Read, Write};

use sha2::{Digest as _, Sha256};

use super::FixError;
use crate::layer::normalize_entry_path;

/// Largest layer a fix writes (uncompressed).
pub const MAX_LAYER_BYTES: u64 = 1 << 30;
/// Entries read from one package's data archive.
pub const MAX_ENTRIES: usize = 200_000;

/// The new layer: its gzip and digests, and what the fix should tell about it.
pub struct FixLayer {
    pub gzip: Vec<u8>,
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// `sha256:` of the gzip.
    pub digest: String,
    /// Packages whose maintainer scripts were not run, with the scripts.
    pub scripts_not_run: Vec<(String, Vec<String>)>,
    /// Conffiles the image had changed, left as they were.
    pub kept_conffiles: Vec<String>,
}

/// One entry of a package's data archive: its normalized path (no leading `/`), header
/// and content.
pub struct DataEntry {
    pub path: String,
    pub header: tar::Header,
    pub body: Vec<u8>,
}

impl DataEntry {
    /// The link target: a hard link's by archive path (normalized), a symlink's as written.
    pub fn link_target(&self) -> Option<String> {
        let kind = self.header.entry_type();
        let link = self.header.link_name_bytes()?;
        if kind.is_hard_link() {
            Some(normalize_entry_path(&link).unwrap_or_default())
        } else if kind.is_symlink() {
            Some(String::from_utf8_lossy(&link).into_owned())
        } else {
            None
        }
    }
}

/// Calls `each` for every entry of a package's uncompressed data tar (`what` names the
/// package in errors), at most [`MAX_ENTRIES`]; entries outside the root, the root itself
/// and whiteout names are skipped.
pub fn for_each_entry(
    what: &str,
    data: &[u8],
    mut each: impl FnMut(DataEntry) -> Result<(), FixError>,
) -> Result<(), FixError> {
    let bad = |e: std::io::Error| FixError::Package(format!("{what}: data: {e}"));
    let mut archive = tar::Archive::new(data);
    for (count, entry) in archive.entries().map_err(bad)?.enumerate() {
        if count >= MAX_ENTRIES {
            return Err(FixError::Package(format!(
                "{what}: more than {MAX_ENTRIES} files"
            )));
        }
        let mut entry = entry.map_err(bad)?;
        let raw = entry.path_bytes().into_owned();
        let Some(path) = normalize_entry_path(&raw) else {
            continue;
        };
        if path.is_empty() || path.split('/').any(|p| p.starts_with(".wh.")) {
            continue;
        }
        let header = entry.header().clone();
        let mut body = Vec::new();
        entry.read_to_end(&mut body).map_err(bad)?;
        each(DataEntry { path, header, body })?;
    }
    Ok(())
}

/// Writes the layer's tar, counting its size against [`MAX_LAYER_BYTES`].
pub struct LayerWriter {
    tar: tar::Builder<Vec<u8>>,
    written: u64,
    whiteouts: BTreeSet<String>,
    written_paths: BTreeSet<String>,
}

impl Default for LayerWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerWriter {
    pub fn new() -> Self {
        LayerWriter {
            tar: tar::Builder::new(Vec::new()),
            written: 0,
            whiteouts: BTreeSet::new(),
            written_paths: BTreeSet::new(),
        }
    }

    fn count(&mut self, bytes: u64) -> Result<(), FixError> {
        self.written += bytes + 512;
        if self.written > MAX_LAYER_BYTES {
            return Err(FixError::Package(format!(
                "the fix layer would be larger than {MAX_LAYER_BYTES} bytes"
            )));
        }
        Ok(())
    }

    /// Copies an entry of a package's data archive as it is (links kept as links).
    pub fn copy(&mut self, entry: &DataEntry) -> Result<(), FixError> {
        self.count(entry.body.len() as u64)?;
        let bad = |e: std::io::Error| FixError::Package(format!("{}: {e}", entry.path));
        let mut header = entry.header.clone();
        match entry.link_target() {
            Some(target) => self
                .tar
                .append_link(&mut header, &entry.path, &target)
                .map_err(bad)?,
            None => self
                .tar
                .append_data(&mut header, &entry.path, entry.body.as_slice())
                .map_err(bad)?,
        }
        self.written_paths.insert(entry.path.clone());
        Ok(())
    }

    /// Writes a regular file (root-owned, mtime 0).
    pub fn file(&mut self, path: &str, body: &[u8], mode: u32) -> Result<(), FixError> {
        self.count(body.len() as u64)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(mode);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mtime(0);
        self.tar
            .append_data(&mut header, path, body)
            .map_err(|e| FixError::Package(format!("writing {path} to the layer: {e}")))?;
        self.written_paths.insert(path.to_string());
        Ok(())
    }

    /// Removes `path` (no leading `/`) from the image, unless the layer writes it.
    pub fn whiteout(&mut self, path: &str) {
        self.whiteouts.insert(path.to_string());
    }

    /// Writes the whiteouts and returns the layer, gzipped, with what the fix tells of it.
    pub fn finish(
        mut self,
        scripts_not_run: Vec<(String, Vec<String>)>,
        kept_conffiles: Vec<String>,
    ) -> Result<FixLayer, FixError> {
        let mut whiteouts = std::mem::take(&mut self.whiteouts);
        whiteouts.retain(|p| !self.written_paths.contains(p));
        for path in &whiteouts {
            let (dir, base) = match path.rsplit_once('/') {
                Some((d, b)) => (format!("{d}/"), b),
                None => (String::new(), path.as_str()),
            };
            self.file(&format!("{dir}.wh.{base}"), b"", 0o644)?;
        }
        let tar = self
            .tar
            .into_inner()
            .map_err(|e| FixError::Package(format!("writing the layer: {e}")))?;
        let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar)
            .map_err(|e| FixError::Package(format!("compressing the layer: {e}")))?;
        let gzip = gz
            .finish()
            .map_err(|e| FixError::Package(format!("compressing the layer: {e}")))?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&gzip)));
        Ok(FixLayer {
            gzip,
            diff_id,
            digest,
            scripts_not_run,
            kept_conffiles,
        })
    }
}
