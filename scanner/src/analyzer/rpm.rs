//! rpm's package databases: the SQLite form (`rpmdb.sqlite`: RHEL 9, Fedora 33+) and the
//! Berkeley DB hash form (`Packages`: RHEL/CentOS 7 and 8, Amazon Linux 2) and rpm's own
//! NDB form (`Packages.db`: SUSE 15+). Each record is
//! an rpm header blob; databases and headers are read without librpm or libdb.

use super::{package, purl_encode, Analyzer, FileMeta, Output};
use crate::inventory::Ecosystem;

/// Reads installed rpm packages from an SQLite rpm database.
pub struct RpmSqliteAnalyzer;

const PATHS: &[&str] = &[
    "var/lib/rpm/rpmdb.sqlite",
    "usr/lib/sysimage/rpm/rpmdb.sqlite",
];

impl Analyzer for RpmSqliteAnalyzer {
    fn name(&self) -> &'static str {
        "rpm-sqlite"
    }
    fn wants(&self, file: &FileMeta<'_>) -> bool {
        PATHS.contains(&file.path)
    }
    fn size_cap(&self) -> u64 {
        128 << 20
    }
    fn analyze(&self, path: &str, data: &[u8], out: &mut Output) {
        emit_headers(path, read_sqlite(data), out);
    }
}

/// Reads installed rpm packages from a Berkeley DB `Packages` database.
pub struct RpmBerkeleyDbAnalyzer;

const BDB_PATHS: &[&str] = &["var/lib/rpm/Packages", "usr/lib/sysimage/rpm/Packages"];

impl Analyzer for RpmBerkeleyDbAnalyzer {
    fn name(&self) -> &'static str {
        "rpm-bdb"
    }
    fn wants(&self, file: &FileMeta<'_>) -> bool {
        BDB_PATHS.contains(&file.path)
    }
    fn size_cap(&self) -> u64 {
        128 << 20
    }
    fn analyze(&self, path: &str, data: &[u8], out: &mut Output) {
        // rpm keeps a small bookkeeping record (the next package number) beside the headers.
        let headers = read_bdb_hash(data).map(|blobs| {
            blobs
                .into_iter()
                .filter(|b| b.len() > 16)
                .collect::<Vec<_>>()
        });
        emit_headers(path, headers, out);
    }
}

/// The values of a Berkeley DB hash database (keys are rpm's package numbers, unused here).
/// Reads hash pages in file order and follows overflow chains; every offset is checked.
pub fn read_bdb_hash(data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    const HASH_MAGIC: u32 = 0x0006_1561;
    let magic = data.get(12..16).ok_or("too short for a Berkeley DB file")?;
    let le = match (
        u32::from_le_bytes(magic.try_into().unwrap()),
        u32::from_be_bytes(magic.try_into().unwrap()),
    ) {
        (HASH_MAGIC, _) => true,
        (_, HASH_MAGIC) => false,
        _ => return Err("not a Berkeley DB hash database".into()),
    };
    let u16_at = |b: &[u8], o: usize| -> Option<usize> {
        let x: [u8; 2] = b.get(o..o + 2)?.try_into().ok()?;
        Some(if le {
            u16::from_le_bytes(x)
        } else {
            u16::from_be_bytes(x)
        } as usize)
    };
    let u32_at = |b: &[u8], o: usize| -> Option<usize> {
        let x: [u8; 4] = b.get(o..o + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(x)
        } else {
            u32::from_be_bytes(x)
        } as usize)
    };
    let page_size = u32_at(data, 20).ok_or("no page size")?;
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(format!("implausible page size {page_size}"));
    }
    let pages = data.len() / page_size;
    let page = |n: usize| data.get(n * page_size..(n + 1) * page_size);
    let mut values = Vec::new();
    for n in 1..pages {
        let Some(p) = page(n) else { break };
        // P_HASH_UNSORTED = 2, P_HASH = 13.
        if p[25] != 13 && p[25] != 2 {
            continue;
        }
        let entries = u16_at(p, 20).unwrap_or(0);
        for i in (1..entries).step_by(2) {
            let Some(off) = u16_at(p, 26 + 2 * i) else {
                break;
            };
            // Items are laid out from the end of the page: item i ends where item i-1 starts.
            let end = u16_at(p, 26 + 2 * (i - 1))
                .unwrap_or(page_size)
                .min(page_size);
            let Some(item) = p.get(off..end.max(off)) else {
                continue;
            };
            match item.first() {
                // H_KEYDATA: the value in place.
                Some(1) => values.push(item[1..].to_vec()),
                // H_OFFPAGE: first overflow page and total length.
                Some(3) => {
                    let (Some(mut next), Some(total)) = (u32_at(item, 4), u32_at(item, 8)) else {
                        continue;
                    };
                    if total > data.len() {
                        return Err(format!(
                            "overflow item of {total} bytes in a {} byte file",
                            data.len()
                        ));
                    }
                    let mut value = Vec::with_capacity(total);
                    let mut hops = 0;
                    while next != 0 && value.len() < total && hops <= pages {
                        let op = page(next)
                            .ok_or_else(|| format!("overflow page {next} is past the end"))?;
                        let used = u16_at(op, 22).unwrap_or(0);
                        let chunk = op.get(26..26 + used).ok_or("overflow page overruns")?;
                        value.extend_from_slice(chunk);
                        next = u32_at(op, 16).unwrap_or(0);
                        hops += 1;
                    }
                    value.truncate(total);
                    values.push(value);
                }
                _ => {}
            }
        }
    }
    Ok(values)
}

/// Emits a package for every readable header blob of an rpm database, warning about the
/// rest; a database that cannot be read at all is one warning.
fn emit_headers<E: std::fmt::Display>(
    path: &str,
    blobs: Result<Vec<Vec<u8>>, E>,
    out: &mut Output,
) {
    match blobs {
        Ok(blobs) => {
            for blob in blobs {
                match parse_header(&blob) {
                    Some(h) => emit(path, h, out),
                    None => out.warn(format!("{path}: skipped an unreadable rpm header")),
                }
            }
        }
        Err(e) => out.warn(format!("{path}: unreadable rpm database: {e}")),
    }
}

/// Reads installed rpm packages from rpm's native `Packages.db` (NDB: SUSE 15+).
pub struct RpmNdbAnalyzer;

const NDB_PATHS: &[&str] = &[
    "var/lib/rpm/Packages.db",
    "usr/lib/sysimage/rpm/Packages.db",
];

impl Analyzer for RpmNdbAnalyzer {
    fn name(&self) -> &'static str {
        "rpm-ndb"
    }
    fn wants(&self, file: &FileMeta<'_>) -> bool {
        NDB_PATHS.contains(&file.path)
    }
    fn size_cap(&self) -> u64 {
        128 << 20
    }
    fn analyze(&self, path: &str, data: &[u8], out: &mut Output) {
        emit_headers(path, read_ndb(data), out);
    }
}

/// The header blobs of an NDB database: a 32-byte header (`RpmP`, version 0, generation,
/// slot page count), slot pages of 16-byte slots (`Slot`, package index, block offset,
/// block count), and blobs at 16-byte blocks (`BlbS`, package index, checksum, length).
/// All little-endian.
pub fn read_ndb(data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    const PAGE: usize = 4096;
    let le32 = |o: usize| -> Option<u32> {
        Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?))
    };
    if data.get(0..4) != Some(b"RpmP".as_slice()) {
        return Err("not an rpm NDB database".into());
    }
    if le32(4) != Some(0) {
        return Err(format!("unsupported NDB version {:?}", le32(4)));
    }
    let slot_pages = le32(12).ok_or("truncated header")? as usize;
    if slot_pages == 0 || slot_pages.saturating_mul(PAGE) > data.len() {
        return Err(format!("implausible slot page count {slot_pages}"));
    }
    let mut blobs = Vec::new();
    // The file header takes the place of the first two slots.
    for slot in (32..slot_pages * PAGE).step_by(16) {
        if data.get(slot..slot + 4) != Some(b"Slot".as_slice()) {
            return Err(format!("bad slot at offset {slot}"));
        }
        let (pkg, blk_offset) = (le32(slot + 4).unwrap_or(0), le32(slot + 8).unwrap_or(0));
        if pkg == 0 {
            continue;
        }
        let at = blk_offset as usize * 16;
        if data.get(at..at + 4) != Some(b"BlbS".as_slice()) || le32(at + 4) != Some(pkg) {
            return Err(format!("package {pkg}: no blob at offset {at}"));
        }
        let len = le32(at + 12).unwrap_or(0) as usize;
        let blob = data
            .get(at + 16..(at + 16).saturating_add(len))
            .ok_or_else(|| format!("package {pkg}: blob runs past the end"))?;
        blobs.push(blob.to_vec());
    }
    Ok(blobs)
}

fn read_sqlite(data: &[u8]) -> Result<Vec<Vec<u8>>, Box<dyn std::error::Error>> {
    use std::io::Write;
    // SQLite reads databases from files. The copy goes into a fresh private directory
    // (random name, mode 0700, created exclusively), so nothing planted in the shared
    // temp directory can redirect the write; SQLite's `-wal`/`-shm` files land there too.
    let dir = tempfile::Builder::new()
        .prefix("imagewarden-rpmdb-")
        .tempdir()?;
    let path = dir.path().join("rpmdb.sqlite");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?
        .write_all(data)?;
    let conn = rusqlite::Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let mut stmt = conn.prepare("SELECT blob FROM Packages")?;
    let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
    let mut blobs = Vec::new();
    for r in rows {
        blobs.push(r?);
    }
    Ok(blobs)
}

/// The tags of one rpm header that an inventory needs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RpmHeader {
    pub name: String,
    pub epoch: Option<u32>,
    pub version: String,
    pub release: String,
    pub arch: String,
    pub source_rpm: String,
    /// `Vendor` (tag 1011), empty when absent.
    pub vendor: String,
    /// `Packager` (tag 1015), empty when absent.
    pub packager: String,
    /// `MODULARITYLABEL` (tag 5096, `name:stream:version:context`), empty when the package
    /// is not from a module stream.
    pub modularity_label: String,
}

/// Parses an rpm header blob as stored in the database (index count, data length,
/// index entries, data store; all big-endian).
pub fn parse_header(blob: &[u8]) -> Option<RpmHeader> {
    let be32 = |o: usize| -> Option<u32> {
        Some(u32::from_be_bytes(blob.get(o..o + 4)?.try_into().ok()?))
    };
    let il = be32(0)? as usize;
    let dl = be32(4)? as usize;
    let store_start = 8usize.checked_add(il.checked_mul(16)?)?;
    let store = blob.get(store_start..store_start.checked_add(dl)?)?;
    let string_at = |off: usize| -> Option<String> {
        let s = store.get(off..)?;
        let end = s.iter().position(|b| *b == 0)?;
        Some(String::from_utf8_lossy(&s[..end]).into_owned())
    };
    let mut h = RpmHeader::default();
    for i in 0..il {
        let e = 8 + i * 16;
        let (tag, kind, off) = (be32(e)?, be32(e + 4)?, be32(e + 8)? as usize);
        match (tag, kind) {
            (1000, 6) => h.name = string_at(off)?,
            (1001, 6) => h.version = string_at(off)?,
            (1002, 6) => h.release = string_at(off)?,
            (1003, 4) => {
                h.epoch = Some(u32::from_be_bytes(
                    store.get(off..off + 4)?.try_into().ok()?,
                ))
            }
            (1022, 6) => h.arch = string_at(off)?,
            (1044, 6) => h.source_rpm = string_at(off)?,
            // Vendor and Packager are plain strings; some builders write them as i18n strings.
            (1011, 6 | 9) => h.vendor = string_at(off)?,
            (1015, 6 | 9) => h.packager = string_at(off)?,
            (5096, 6) => h.modularity_label = string_at(off)?,
            _ => {}
        }
    }
    (!h.name.is_empty() && !h.version.is_empty()).then_some(h)
}

/// `openssl-1.1.1k-5.el8.src.rpm` → (`openssl`, `1.1.1k`, `5.el8`).
pub fn split_source_rpm(s: &str) -> Option<(String, String, String)> {
    let s = s.strip_suffix(".rpm")?;
    let s = s.rsplit_once('.')?.0; // arch: src / nosrc
    let (rest, release) = s.rsplit_once('-')?;
    let (name, version) = rest.rsplit_once('-')?;
    Some((name.into(), version.into(), release.into()))
}

fn emit(path: &str, h: RpmHeader, out: &mut Output) {
    if h.name == "gpg-pubkey" {
        return;
    }
    let vr = if h.release.is_empty() {
        h.version.clone()
    } else {
        format!("{}-{}", h.version, h.release)
    };
    let version = match h.epoch {
        Some(e) if e > 0 => format!("{e}:{vr}"),
        _ => vr.clone(),
    };
    let mut purl = format!("pkg:rpm/_/{}@{}", purl_encode(&h.name), purl_encode(&vr));
    let mut q = Vec::new();
    if !h.arch.is_empty() {
        q.push(format!("arch={}", purl_encode(&h.arch)));
    }
    if let Some(e) = h.epoch.filter(|e| *e > 0) {
        q.push(format!("epoch={e}"));
    }
    if !h.modularity_label.is_empty() {
        q.push(format!("rpmmod={}", purl_encode(&h.modularity_label)));
    }
    if !q.is_empty() {
        purl = format!("{purl}?{}", q.join("&"));
    }
    // The family-specific ecosystem is set once the OS is known.
    let mut p = package(Ecosystem::RedHat, h.name.clone(), version, purl, path);
    p.vendor = Some(if h.vendor.is_empty() {
        h.packager.clone()
    } else {
        h.vendor.clone()
    });
    p.module = crate::vulndb::ecosystem::module_stream(&h.modularity_label);
    if let Some((n, v, r)) = split_source_rpm(&h.source_rpm) {
        p.source_name = Some(n);
        p.source_version = Some(match h.epoch {
            Some(e) if e > 0 => format!("{e}:{v}-{r}"),
            _ => format!("{v}-{r}"),
        });
    }
    out.package(p);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndb_slots_point_at_blobs() {
        let blob = b"0123456789abcdefXYZ".to_vec();
        let mut db = vec![0u8; 4096];
        db[0..4].copy_from_slice(b"RpmP");
        db[12..16].copy_from_slice(&1u32.to_le_bytes());
        for s in (32..4096).step_by(16) {
            db[s..s + 4].copy_from_slice(b"Slot");
        }
        db[36..40].copy_from_slice(&7u32.to_le_bytes());
        db[40..44].copy_from_slice(&(4096u32 / 16).to_le_bytes());
        db.extend_from_slice(b"BlbS");
        db.extend_from_slice(&7u32.to_le_bytes());
        db.extend_from_slice(&0u32.to_le_bytes());
        db.extend_from_slice(&(blob.len() as u32).to_le_bytes());
        db.extend_from_slice(&blob);
        assert_eq!(read_ndb(&db).unwrap(), vec![blob]);
        db.truncate(4096 + 20);
        assert!(read_ndb(&db).unwrap_err().contains("past the end"));
    }

    #[test]
    fn header_blob_tags() {
        let mut store = Vec::new();
        let mut idx = Vec::new();
        let mut add_str = |tag: u32, s: &str, store: &mut Vec<u8>| {
            idx.extend_from_slice(&tag.to_be_bytes());
            idx.extend_from_slice(&6u32.to_be_bytes());
            idx.extend_from_slice(&(store.len() as u32).to_be_bytes());
            idx.extend_from_slice(&1u32.to_be_bytes());
            store.extend_from_slice(s.as_bytes());
            store.push(0);
        };
        add_str(1000, "openssl-libs", &mut store);
        add_str(1001, "1.1.1k", &mut store);
        add_str(1002, "5.el8", &mut store);
        add_str(1022, "x86_64", &mut store);
        add_str(1044, "openssl-1.1.1k-5.el8.src.rpm", &mut store);
        let mut blob = Vec::new();
        blob.extend_from_slice(&((idx.len() / 16) as u32).to_be_bytes());
        blob.extend_from_slice(&(store.len() as u32).to_be_bytes());
        blob.extend_from_slice(&idx);
        blob.extend_from_slice(&store);
        let h = parse_header(&blob).unwrap();
        assert_eq!(h.name, "openssl-libs");
        assert_eq!(h.release, "5.el8");
        assert_eq!(
            split_source_rpm(&h.source_rpm),
            Some(("openssl".into(), "1.1.1k".into(), "5.el8".into()))
        );
    }

    #[test]
    #[cfg(unix)]
    fn sqlite_copy_does_not_follow_links_planted_in_the_temp_dir() {
        let real = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/rpmdb.sqlite"),
        )
        .unwrap();
        let victim = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(victim.path(), b"victim\n").unwrap();
        // Links at every name a predictable scheme (pid and counter) could pick.
        let planted: Vec<std::path::PathBuf> = (0..64)
            .map(|n| {
                std::env::temp_dir().join(format!(
                    "imagewarden-rpmdb-{}-{n}.sqlite",
                    std::process::id()
                ))
            })
            .filter(|p| std::os::unix::fs::symlink(victim.path(), p).is_ok())
            .collect();
        let blobs = read_sqlite(&real);
        for p in &planted {
            let _ = std::fs::remove_file(p);
        }
        assert!(!blobs.unwrap().is_empty());
        assert_eq!(std::fs::read(victim.path()).unwrap(), b"victim\n");
    }
}
