//! The compiled index file.
//!
//! Layout (all integers little-endian):
//! ```text
//! header   magic "IWVDB\0\x01\n", u32 format, u32 flags,
//!          7 × (u64 offset, u64 length): meta, keys, names, advisories, blobs,
//!          nvd, nvd vectors
//! meta     JSON [`DbInfo`]
//! keys     sorted fixed-size entries: u32 name offset, u32 name length,
//!          u64 blob offset, u32 blob length, u32 reserved (24 bytes)
//! names    "<ecosystem key>\0<package name>" strings the keys point into
//! advisories  fixed-size entries: u64 blob offset, u32 blob length, u32 reserved (16 bytes)
//! blobs    per key its postcard-encoded `AffectedPackage` entries back to back,
//!          then one postcard-encoded `Advisory` per advisory
//! nvd      NVD ratings, sorted fixed-size entries (12 bytes): u16 CVE year,
//!          u32 CVE number, u32 vector index, u8 base score × 10, u8 flags (1: NVD's own)
//! nvd vectors  u32 count, count × (u32 offset, u32 length), then the distinct CVSS
//!          vector strings the entries point to (a few thousand serve all of NVD)
//! checksum SHA-256 of every byte before it (32 bytes, the file's end)
//! ```
//! Opening maps the file, verifies the checksum and parses only the header and meta:
//! lookups binary-search the key table in place, and a package's records are decoded
//! only when it is queried. Every offset read from the file is bounds-checked, so a
//! crafted index is an error, never a panic.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::nvd::NvdEntry;
use super::{Advisory, AffectedPackage, DbError, Rating};

const MAGIC: &[u8; 8] = b"IWVDB\0\x01\n";
/// Version of the index layout this scanner writes and reads (2: NVD ratings; advisories
/// keep `related` ids, affected entries their module stream).
pub const FORMAT: u32 = 2;
const SECTIONS: usize = 7;
const HEADER_LEN: usize = 8 + 4 + 4 + SECTIONS * 16;
const KEY_ENTRY: usize = 24;
const ADV_ENTRY: usize = 16;
const NVD_ENTRY: usize = 12;
const CHECKSUM_LEN: usize = 32;

/// Passes writes through while hashing them, for the checksum trailer.
struct HashingWriter<'a, W: Write> {
    out: &'a mut W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// What an index holds, stored in the index and printed by `imagewarden db info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DbInfo {
    pub format: u32,
    /// Content digest (`sha256:...`) of the compiled records: equal digests mean equal answers.
    pub digest: String,
    /// When the index was compiled (RFC 3339 UTC).
    pub built_at: String,
    pub scanner_version: String,
    pub sources: Vec<String>,
    /// Advisories kept (withdrawn ones are not).
    pub records: u64,
    /// Of which `MAL-` (malicious package) records.
    pub malicious_records: u64,
    pub withdrawn_skipped: u64,
    /// Bug-fix and enhancement errata (`ALBA-`, `RHEA-`, ...) left out: not vulnerabilities.
    #[serde(default)]
    pub non_security_skipped: u64,
    /// Newest `modified` timestamp among kept records.
    pub newest_modified: Option<String>,
    /// Per ecosystem key (`Debian:9`, `PyPI`): advisories and package names.
    pub ecosystems: BTreeMap<String, EcosystemStats>,
    /// CVEs with an NVD CVSS rating.
    #[serde(default)]
    pub nvd_records: u64,
    /// Newest `lastModified` among the NVD records kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvd_newest_modified: Option<String>,
    /// A sample (`db build --sample`, e.g. compiled from test records): whoever loads it
    /// warns that it is not a real database.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sample: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EcosystemStats {
    pub records: u64,
    pub packages: u64,
}

/// The key a package's entries are filed under.
pub fn package_key(ecosystem_key: &str, name: &str) -> String {
    format!("{ecosystem_key}\0{name}")
}

/// Compiled records as the builder keeps them: postcard blobs, ready to be written.
pub(crate) struct CompiledRecords<'a> {
    /// Per key (sorted by key bytes): the concatenated postcard encodings of its
    /// [`AffectedPackage`] entries.
    pub by_key: &'a BTreeMap<String, Vec<u8>>,
    /// Postcard-encoded [`Advisory`] blobs, back to back.
    pub advisories: &'a [u8],
    /// (offset into `advisories`, length) of each advisory, by position.
    pub advisory_spans: &'a [(u64, u32)],
    /// NVD ratings, sorted by key.
    pub nvd: &'a [NvdEntry],
}

/// The NVD sections: the entry table and the distinct vectors it points to.
fn nvd_sections(entries: &[NvdEntry]) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let mut index: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    let mut vectors: Vec<&str> = Vec::new();
    let mut table = Vec::with_capacity(entries.len() * NVD_ENTRY);
    let mut last = None;
    for e in entries {
        anyhow::ensure!(
            last.is_none_or(|l| l < e.key),
            "NVD entries are not sorted and unique"
        );
        last = Some(e.key);
        let v = *index.entry(e.vector.as_str()).or_insert_with(|| {
            vectors.push(e.vector.as_str());
            (vectors.len() - 1) as u32
        });
        let year = u16::try_from(e.key >> 32)?;
        table.extend_from_slice(&year.to_le_bytes());
        table.extend_from_slice(&((e.key & 0xffff_ffff) as u32).to_le_bytes());
        table.extend_from_slice(&v.to_le_bytes());
        table.push(e.score10);
        table.push(u8::from(e.primary));
    }
    let strings_len: usize = vectors.iter().map(|v| v.len()).sum();
    let mut vec_section = Vec::with_capacity(4 + vectors.len() * 8 + strings_len);
    vec_section.extend_from_slice(&(vectors.len() as u32).to_le_bytes());
    let mut off = 0u32;
    for v in &vectors {
        vec_section.extend_from_slice(&off.to_le_bytes());
        vec_section.extend_from_slice(&(v.len() as u32).to_le_bytes());
        off += v.len() as u32;
    }
    for v in &vectors {
        vec_section.extend_from_slice(v.as_bytes());
    }
    Ok((table, vec_section))
}

/// Writes an index; sections are streamed to `out`, nothing is copied whole.
pub(crate) fn write_index(
    out: &mut impl Write,
    info: DbInfo,
    records: CompiledRecords<'_>,
) -> anyhow::Result<DbInfo> {
    let mut hashing = HashingWriter {
        out,
        hasher: Sha256::new(),
    };
    let info = write_sections(&mut hashing, info, records)?;
    let checksum = hashing.hasher.finalize();
    hashing.out.write_all(&checksum)?;
    hashing.out.flush()?;
    Ok(info)
}

fn write_sections(
    out: &mut impl Write,
    mut info: DbInfo,
    records: CompiledRecords<'_>,
) -> anyhow::Result<DbInfo> {
    let key_blobs_len: u64 = records.by_key.values().map(|b| b.len() as u64).sum();
    let names_len: u64 = records.by_key.keys().map(|k| k.len() as u64).sum();
    let mut hasher = Sha256::new();
    for (key, blob) in records.by_key {
        hasher.update((key.len() as u32).to_le_bytes());
        hasher.update(key.as_bytes());
        hasher.update((blob.len() as u32).to_le_bytes());
        hasher.update(blob);
    }
    hasher.update(records.advisories);
    let (nvd_table, nvd_vectors) = nvd_sections(records.nvd)?;
    if !nvd_table.is_empty() {
        // Only a database with NVD ratings hashes them: one without keeps its digest.
        hasher.update(b"nvd");
        hasher.update(&nvd_table);
        hasher.update(&nvd_vectors);
    }
    info.format = FORMAT;
    info.digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    let meta = serde_json::to_vec(&info)?;
    let lens = [
        meta.len() as u64,
        (records.by_key.len() * KEY_ENTRY) as u64,
        names_len,
        (records.advisory_spans.len() * ADV_ENTRY) as u64,
        key_blobs_len + records.advisories.len() as u64,
        nvd_table.len() as u64,
        nvd_vectors.len() as u64,
    ];
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&FORMAT.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    let mut offset = HEADER_LEN as u64;
    for len in lens {
        header.extend_from_slice(&offset.to_le_bytes());
        header.extend_from_slice(&len.to_le_bytes());
        offset += len;
    }
    out.write_all(&header)?;
    out.write_all(&meta)?;
    let (mut name_off, mut blob_off) = (0u64, 0u64);
    for (key, blob) in records.by_key {
        let mut e = [0u8; KEY_ENTRY];
        e[0..4].copy_from_slice(&(name_off as u32).to_le_bytes());
        e[4..8].copy_from_slice(&(key.len() as u32).to_le_bytes());
        e[8..16].copy_from_slice(&blob_off.to_le_bytes());
        e[16..20].copy_from_slice(&(blob.len() as u32).to_le_bytes());
        out.write_all(&e)?;
        name_off += key.len() as u64;
        blob_off += blob.len() as u64;
    }
    for key in records.by_key.keys() {
        out.write_all(key.as_bytes())?;
    }
    for (off, len) in records.advisory_spans {
        let mut e = [0u8; ADV_ENTRY];
        e[0..8].copy_from_slice(&(key_blobs_len + off).to_le_bytes());
        e[8..12].copy_from_slice(&len.to_le_bytes());
        out.write_all(&e)?;
    }
    for blob in records.by_key.values() {
        out.write_all(blob)?;
    }
    out.write_all(records.advisories)?;
    out.write_all(&nvd_table)?;
    out.write_all(&nvd_vectors)?;
    out.flush()?;
    Ok(info)
}

enum Backing {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// An opened vulnerability database. Cheap to share (`Arc<Db>`); all lookups take `&self`.
pub struct Db {
    data: Backing,
    origin: String,
    info: DbInfo,
    keys: (usize, usize),
    names: (usize, usize),
    advisories: (usize, usize),
    blobs: (usize, usize),
    nvd: (usize, usize),
    /// Vector strings: (offset of the offset table, count, offset of the strings).
    nvd_vectors: (usize, usize, usize),
    /// The NVD vector section as written: (start, end).
    nvd_vectors_section: (usize, usize),
    nvd_vectors_end: usize,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("origin", &self.origin)
            .field("records", &self.info.records)
            .finish()
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Db {
    /// Opens an index file by mapping it; only the header and metadata are read.
    pub fn open_index(path: &Path) -> Result<Db, DbError> {
        let file = std::fs::File::open(path).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot open vulnerability index {}: {e}", path.display()),
            )
        })?;
        // SAFETY: the index is written once by `db build` and never modified in place;
        // replacing it (rename) leaves this mapping on the old inode.
        let map = unsafe { memmap2::Mmap::map(&file) }?;
        Db::from_backing(Backing::Mapped(map), path.display().to_string())
    }

    /// Reads an index held in memory (e.g. built from OSV sources without a file).
    pub fn from_bytes(bytes: Vec<u8>, origin: &str) -> Result<Db, DbError> {
        Db::from_backing(Backing::Owned(bytes), origin.to_string())
    }

    /// Whether the file at `path` starts like an index file.
    pub fn is_index_file(path: &Path) -> bool {
        use std::io::Read;
        let mut magic = [0u8; 8];
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
            && &magic == MAGIC
    }

    fn from_backing(data: Backing, origin: String) -> Result<Db, DbError> {
        let b = data.bytes();
        let corrupt = |what: &str| DbError::Corrupt {
            path: origin.clone(),
            what: what.to_string(),
        };
        if b.len() < 12 || &b[..8] != MAGIC {
            return Err(DbError::BadMagic { path: origin });
        }
        let format = u32_at(b, 8);
        if format != FORMAT {
            return Err(DbError::UnsupportedFormat {
                path: origin,
                found: format,
                supported: FORMAT,
            });
        }
        if b.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(corrupt("shorter than its header"));
        }
        let body = b.len() - CHECKSUM_LEN;
        if Sha256::digest(&b[..body]).as_slice() != &b[body..] {
            return Err(corrupt("checksum mismatch"));
        }
        let mut sections = [(0usize, 0usize); SECTIONS];
        for (i, s) in sections.iter_mut().enumerate() {
            let off = usize::try_from(u64_at(b, 16 + i * 16)).unwrap_or(usize::MAX);
            let len = usize::try_from(u64_at(b, 24 + i * 16)).unwrap_or(usize::MAX);
            if off < HEADER_LEN || off.checked_add(len).is_none_or(|end| end > body) {
                return Err(corrupt("section past end of file"));
            }
            *s = (off, len);
        }
        let [meta, keys, names, advisories, blobs, nvd, vectors] = sections;
        if keys.1 % KEY_ENTRY != 0 || advisories.1 % ADV_ENTRY != 0 || nvd.1 % NVD_ENTRY != 0 {
            return Err(corrupt("table size"));
        }
        let nvd_vectors = if vectors.1 == 0 {
            (vectors.0, 0, vectors.0)
        } else {
            if vectors.1 < 4 {
                return Err(corrupt("NVD vector table"));
            }
            let count = u32_at(b, vectors.0) as usize;
            let strings = count
                .checked_mul(8)
                .and_then(|n| n.checked_add(vectors.0 + 4))
                .filter(|end| *end <= vectors.0 + vectors.1)
                .ok_or_else(|| corrupt("NVD vector table"))?;
            (vectors.0 + 4, count, strings)
        };
        let info: DbInfo = serde_json::from_slice(&b[meta.0..meta.0 + meta.1])
            .map_err(|e| corrupt(&format!("metadata: {e}")))?;
        Ok(Db {
            data,
            origin,
            info,
            keys,
            names,
            advisories,
            blobs,
            nvd,
            nvd_vectors,
            nvd_vectors_section: (vectors.0, vectors.0 + vectors.1),
            nvd_vectors_end: vectors.0 + vectors.1,
        })
    }

    /// What the index holds.
    pub fn info(&self) -> &DbInfo {
        &self.info
    }

    /// Where the database was loaded from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Size of the index in bytes.
    pub fn size(&self) -> usize {
        self.data.bytes().len()
    }

    /// The index file's bytes, e.g. to hand the same database to another process.
    pub fn as_bytes(&self) -> &[u8] {
        self.data.bytes()
    }

    /// Recomputes the content digest from the records the lookups read and checks that it
    /// is the digest the metadata records, so an index received from elsewhere answers
    /// exactly as its digest says. Returns the digest.
    pub fn verify_digest(&self) -> Result<String, DbError> {
        let corrupt = |what: String| DbError::Corrupt {
            path: self.origin.clone(),
            what,
        };
        let b = self.data.bytes();
        let mut hasher = Sha256::new();
        let mut key_blobs: u64 = 0;
        let mut previous: Option<&[u8]> = None;
        for i in 0..self.key_count() {
            let at = self.keys.0 + i * KEY_ENTRY;
            let (name_off, name_len) = (u32_at(b, at) as usize, u32_at(b, at + 4) as usize);
            let name = name_off
                .checked_add(name_len)
                .filter(|end| *end <= self.names.1)
                .map(|end| &b[self.names.0 + name_off..self.names.0 + end])
                .ok_or_else(|| corrupt(format!("key {i} past the end of the names")))?;
            if previous.is_some_and(|p| p >= name) {
                return Err(corrupt(format!("key {i} out of order")));
            }
            previous = Some(name);
            let (off, len) = (u64_at(b, at + 8), u32_at(b, at + 16));
            // The writer puts the key blobs back to back, in key order.
            if off != key_blobs {
                return Err(corrupt(format!("entries of key {i} out of place")));
            }
            let blob = self.blob(off, len)?;
            hasher.update((name.len() as u32).to_le_bytes());
            hasher.update(name);
            hasher.update(len.to_le_bytes());
            hasher.update(blob);
            key_blobs += u64::from(len);
        }
        // The advisories follow, back to back: what lookups read is exactly what is hashed.
        let mut end = key_blobs;
        for i in 0..self.advisories.1 / ADV_ENTRY {
            let at = self.advisories.0 + i * ADV_ENTRY;
            let (off, len) = (u64_at(b, at), u32_at(b, at + 8));
            if off != end {
                return Err(corrupt(format!("advisory {i} out of place")));
            }
            end += u64::from(len);
        }
        if end != self.blobs.1 as u64 {
            return Err(corrupt("records do not fill the blobs section".into()));
        }
        hasher.update(&b[self.blobs.0 + key_blobs as usize..self.blobs.0 + self.blobs.1]);
        // NVD's ratings, hashed as the writer hashes them.
        if self.nvd.1 > 0 {
            hasher.update(b"nvd");
            hasher.update(&b[self.nvd.0..self.nvd.0 + self.nvd.1]);
            hasher.update(&b[self.nvd_vectors_section.0..self.nvd_vectors_section.1]);
        }
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        if digest != self.info.digest {
            return Err(corrupt(format!(
                "content digest {digest} differs from the recorded {}",
                self.info.digest
            )));
        }
        Ok(digest)
    }

    fn key_count(&self) -> usize {
        self.keys.1 / KEY_ENTRY
    }

    /// The name of key `i`; a name outside the names section reads as empty.
    fn key_name(&self, i: usize) -> &[u8] {
        let b = self.data.bytes();
        let at = self.keys.0 + i * KEY_ENTRY;
        let names = &b[self.names.0..self.names.0 + self.names.1];
        let off = u32_at(b, at) as usize;
        let len = u32_at(b, at + 4) as usize;
        off.checked_add(len)
            .and_then(|end| names.get(off..end))
            .unwrap_or(&[])
    }

    fn blob(&self, off: u64, len: u32) -> Result<&[u8], DbError> {
        let b = self.data.bytes();
        let blobs = &b[self.blobs.0..self.blobs.0 + self.blobs.1];
        usize::try_from(off)
            .ok()
            .and_then(|start| Some((start, start.checked_add(len as usize)?)))
            .and_then(|(start, end)| blobs.get(start..end))
            .ok_or_else(|| DbError::Corrupt {
                path: self.origin.clone(),
                what: "record past end of blobs".into(),
            })
    }

    /// The entries of every advisory affecting `name` in `ecosystem_key`
    /// (`Debian:9`, `PyPI`, ...; the name already normalized, see [`super::ecosystem`]).
    pub fn affected(
        &self,
        ecosystem_key: &str,
        name: &str,
    ) -> Result<Vec<AffectedPackage>, DbError> {
        let key = package_key(ecosystem_key, name);
        let (mut lo, mut hi) = (0, self.key_count());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.key_name(mid).cmp(key.as_bytes()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    let b = self.data.bytes();
                    let at = self.keys.0 + mid * KEY_ENTRY;
                    let mut blob = self.blob(u64_at(b, at + 8), u32_at(b, at + 16))?;
                    let mut entries = Vec::new();
                    while !blob.is_empty() {
                        let (entry, rest) = postcard::take_from_bytes::<AffectedPackage>(blob)
                            .map_err(|e| DbError::Corrupt {
                                path: self.origin.clone(),
                                what: format!("entries of {ecosystem_key}/{name}: {e}"),
                            })?;
                        entries.push(entry);
                        blob = rest;
                    }
                    return Ok(entries);
                }
            }
        }
        Ok(Vec::new())
    }

    /// The advisory at position `index` (from [`AffectedPackage::advisory`]).
    pub fn advisory(&self, index: u32) -> Result<Advisory, DbError> {
        let i = index as usize;
        if i >= self.advisories.1 / ADV_ENTRY {
            return Err(DbError::Corrupt {
                path: self.origin.clone(),
                what: format!("advisory {index} out of range"),
            });
        }
        let b = self.data.bytes();
        let at = self.advisories.0 + i * ADV_ENTRY;
        let blob = self.blob(u64_at(b, at), u32_at(b, at + 8))?;
        postcard::from_bytes(blob).map_err(|e| DbError::Corrupt {
            path: self.origin.clone(),
            what: format!("advisory {index}: {e}"),
        })
    }

    /// Number of CVEs with an NVD rating.
    pub fn nvd_len(&self) -> usize {
        self.nvd.1 / NVD_ENTRY
    }

    /// NVD's rating of a CVE (`CVE-2019-14697`, or an id ending in one such as
    /// `ALPINE-CVE-2019-14697`), when the database holds one.
    pub fn nvd_rating(&self, cve: &str) -> Option<Rating> {
        let key = super::nvd::cve_key(cve)?;
        let b = self.data.bytes();
        let entry_key = |i: usize| {
            let at = self.nvd.0 + i * NVD_ENTRY;
            let year = u16::from_le_bytes([b[at], b[at + 1]]) as u64;
            (year << 32) | u64::from(u32_at(b, at + 2))
        };
        let (mut lo, mut hi) = (0, self.nvd_len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match entry_key(mid).cmp(&key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    let at = self.nvd.0 + mid * NVD_ENTRY;
                    let vector = self.nvd_vector(u32_at(b, at + 6) as usize)?;
                    return Some(super::nvd::rating(vector, b[at + 10]));
                }
            }
        }
        None
    }

    fn nvd_vector(&self, i: usize) -> Option<&str> {
        let (table, count, strings) = self.nvd_vectors;
        if i >= count {
            return None;
        }
        let b = self.data.bytes();
        let off = strings + u32_at(b, table + i * 8) as usize;
        let len = u32_at(b, table + i * 8 + 4) as usize;
        let end = off
            .checked_add(len)
            .filter(|e| *e <= self.nvd_vectors_end)?;
        std::str::from_utf8(&b[off..end]).ok()
    }

    /// Every (ecosystem key, package name) the index has entries for, in key order.
    pub fn packages(&self) -> impl Iterator<Item = (String, String)> + '_ {
        (0..self.key_count()).filter_map(|i| {
            let k = std::str::from_utf8(self.key_name(i)).ok()?;
            let (e, n) = k.split_once('\0')?;
            Some((e.to_string(), n.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vulndb::DbBuilder;

    /// A small real index: one npm advisory with one affected package.
    fn index_bytes() -> Vec<u8> {
        let record = br#"{"id": "GHSA-test-0001", "modified": "2024-01-01T00:00:00Z",
            "affected": [{"package": {"ecosystem": "npm", "name": "left-pad"},
                          "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.3.0"}]}]}]}"#;
        let mut b = DbBuilder::new();
        b.add_json(record, "inline");
        let mut out = Vec::new();
        b.write(&mut out).unwrap();
        out
    }

    /// Rewrites the checksum trailer after a deliberate edit.
    fn reseal(bytes: &mut [u8]) {
        let body = bytes.len() - CHECKSUM_LEN;
        let sum = Sha256::digest(&bytes[..body]);
        bytes[body..].copy_from_slice(&sum);
    }

    fn section(bytes: &[u8], i: usize) -> usize {
        u64_at(bytes, 16 + i * 16) as usize
    }

    #[test]
    fn a_flipped_byte_fails_the_checksum() {
        let bytes = index_bytes();
        assert_eq!(
            Db::from_bytes(bytes.clone(), "t")
                .unwrap()
                .affected("npm", "left-pad")
                .unwrap()
                .len(),
            1
        );
        let mut bad = bytes.clone();
        let blobs = section(&bad, 4);
        bad[blobs] ^= 0x40;
        let err = Db::from_bytes(bad, "t").unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        let mut short = bytes;
        short.truncate(short.len() - 1);
        assert!(Db::from_bytes(short, "t").is_err());
    }

    #[test]
    fn wrapping_offsets_in_a_sealed_index_are_errors_not_panics() {
        let bytes = index_bytes();
        let keys = section(&bytes, 1);
        let advisories = section(&bytes, 3);
        for (at, value) in [
            // key 0: blob offset that wraps when added to the blobs section start
            (keys + 8, u64::MAX - 3),
            // key 0: blob offset just past the end
            (keys + 8, u64::from(u32::MAX)),
            // advisory 0: blob offset that wraps
            (advisories, u64::MAX),
        ] {
            let mut bad = bytes.clone();
            bad[at..at + 8].copy_from_slice(&value.to_le_bytes());
            reseal(&mut bad);
            let db = Db::from_bytes(bad, "t").unwrap();
            let looked_up = db.affected("npm", "left-pad").and_then(|_| db.advisory(0));
            let err = looked_up.unwrap_err().to_string();
            assert!(err.contains("past end of blobs"), "{err}");
        }
        // Key name offsets that wrap read as no name: the lookup finds nothing.
        let mut bad = bytes.clone();
        bad[keys..keys + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        bad[keys + 4..keys + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        reseal(&mut bad);
        let db = Db::from_bytes(bad, "t").unwrap();
        assert!(db.affected("npm", "left-pad").unwrap().is_empty());
        // A section whose end wraps is refused on open.
        let mut bad = bytes;
        bad[16 + 4 * 16..16 + 4 * 16 + 8].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
        reseal(&mut bad);
        let err = Db::from_bytes(bad, "t").unwrap_err().to_string();
        assert!(err.contains("section past end"), "{err}");
    }
}
