//! Java archives: jar, war, ear (nested archives included). Maven coordinates come from
//! `META-INF/maven/**/pom.properties`; `META-INF/MANIFEST.MF` and the file name are fallbacks.

use super::{package, purl_encode, Analyzer, FileMeta, Output};
use crate::inventory::Ecosystem;
use std::io::{Cursor, Read};

/// Reads Maven coordinates out of Java archives.
pub struct JavaArchiveAnalyzer {
    /// Entries looked at in one top-level archive and everything nested in it
    /// (`--max-zip-entries`).
    pub max_entries: u64,
}

impl Default for JavaArchiveAnalyzer {
    fn default() -> Self {
        JavaArchiveAnalyzer {
            max_entries: crate::budget::DEFAULT_MAX_ZIP_ENTRIES,
        }
    }
}

/// Largest archive read into memory (within the scanner Job's 512Mi memory limit,
/// together with the nested archives extracted from it).
const ARCHIVE_CAP: u64 = 128 << 20;
/// Largest archive nested in another one that is extracted into memory.
const NESTED_CAP: u64 = 32 << 20;
/// Bytes inflated from one top-level archive and everything nested in it.
const INFLATE_BUDGET: u64 = 128 << 20;
/// How deep archives nested in archives are opened.
const MAX_DEPTH: usize = 3;

const EXTENSIONS: &[&str] = &[".jar", ".war", ".ear", ".par", ".sar", ".jpi", ".hpi"];

impl Analyzer for JavaArchiveAnalyzer {
    fn name(&self) -> &'static str {
        "java"
    }
    fn wants(&self, file: &FileMeta<'_>) -> bool {
        let lower = file.path.to_ascii_lowercase();
        EXTENSIONS.iter().any(|e| lower.ends_with(e))
    }
    fn size_cap(&self) -> u64 {
        ARCHIVE_CAP
    }
    fn analyze(&self, path: &str, data: &[u8], out: &mut Output) {
        let mut budget = Budget {
            inflated: 0,
            entries: 0,
            max_entries: self.max_entries,
            exhausted: false,
        };
        analyze_archive(path, path, data, 0, &mut budget, out);
    }
}

/// What one top-level archive may cost, nested archives included.
struct Budget {
    inflated: u64,
    entries: u64,
    max_entries: u64,
    exhausted: bool,
}

impl Budget {
    /// Takes `n` bytes of inflate budget; false (with one warning) when it runs out.
    fn inflate(&mut self, n: u64, archive_name: &str, out: &mut Output) -> bool {
        self.inflated = self.inflated.saturating_add(n);
        self.check(archive_name, out)
    }

    fn check(&mut self, archive_name: &str, out: &mut Output) -> bool {
        if self.exhausted {
            return false;
        }
        if self.inflated > INFLATE_BUDGET {
            self.exhausted = true;
            out.warn(format!(
                "{archive_name}: the archive and its nested archives exceed {INFLATE_BUDGET} inflated bytes; the rest is skipped"
            ));
            return false;
        }
        if self.entries > self.max_entries {
            self.exhausted = true;
            out.warn(format!(
                "{archive_name}: the archive and its nested archives have more than {} entries (--max-zip-entries); the rest is skipped",
                self.max_entries
            ));
            return false;
        }
        true
    }
}

/// Whether two entries of a zip share bytes (a zip bomb's trick: one compressed
/// stream listed many times). Ranges run from each local header to its data's end.
fn overlapping_entries<R: Read + std::io::Seek>(zip: &mut zip::ZipArchive<R>) -> bool {
    let mut spans: Vec<(u64, u64)> = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        let Ok(entry) = zip.by_index_raw(i) else {
            continue;
        };
        let end = entry.data_start().saturating_add(entry.compressed_size());
        spans.push((entry.header_start(), end));
    }
    spans.sort_unstable();
    spans.windows(2).any(|w| w[1].0 < w[0].1)
}

fn analyze_archive(
    file_path: &str,
    archive_name: &str,
    data: &[u8],
    depth: usize,
    budget: &mut Budget,
    out: &mut Output,
) {
    let mut zip = match zip::ZipArchive::new(Cursor::new(data)) {
        Ok(z) => z,
        Err(e) => {
            out.warn(format!("{archive_name}: not a readable Java archive: {e}"));
            return;
        }
    };
    budget.entries = budget.entries.saturating_add(zip.len() as u64);
    if !budget.check(archive_name, out) {
        return;
    }
    if overlapping_entries(&mut zip) {
        out.warn(format!(
            "{archive_name}: entries share bytes (a zip bomb's layout); not read"
        ));
        return;
    }
    let mut found = false;
    let mut manifest = None;
    for i in 0..zip.len() {
        if budget.exhausted {
            return;
        }
        let Ok(mut entry) = zip.by_index(i) else {
            out.warn(format!("{archive_name}: unreadable entry #{i}"));
            continue;
        };
        if entry.is_dir() {
            continue;
        }
        let name = entry.name().to_string();
        let lower = name.to_ascii_lowercase();
        if name.starts_with("META-INF/maven/") && name.ends_with("/pom.properties") {
            let text = read_capped(&mut entry, 1 << 20);
            if !budget.inflate(
                text.as_ref().map_or(0, |t| t.len() as u64),
                archive_name,
                out,
            ) {
                return;
            }
            if let Some(text) = text {
                if let Some((g, a, v)) = parse_pom_properties(&text) {
                    emit(file_path, &g, &a, &v, out);
                    found = true;
                }
            }
        } else if name.eq_ignore_ascii_case("META-INF/MANIFEST.MF") {
            manifest = read_capped(&mut entry, 1 << 20);
        } else if EXTENSIONS.iter().any(|e| lower.ends_with(e)) && depth < MAX_DEPTH {
            if entry.size() > NESTED_CAP {
                out.warn(format!(
                    "{archive_name}!{name}: nested archive over the size cap, skipped"
                ));
                continue;
            }
            // The declared size is not trusted: at most the cap is inflated.
            let mut buf = Vec::with_capacity(entry.size().min(NESTED_CAP) as usize);
            let read = (&mut entry).take(NESTED_CAP).read_to_end(&mut buf);
            drop(entry);
            if !budget.inflate(buf.len() as u64, archive_name, out) {
                return;
            }
            // Nested archives are read one at a time: memory stays within depth × cap.
            if read.is_ok() {
                let nested_name = format!("{archive_name}!{name}");
                analyze_archive(file_path, &nested_name, &buf, depth + 1, budget, out);
            }
        }
    }
    if !found {
        let from_manifest = manifest.as_deref().and_then(parse_manifest);
        let from_name = name_version_from_file_name(archive_name);
        match (from_manifest, from_name) {
            (Some((g, a, v)), name) => {
                // The manifest's title is often a display name; prefer the file's artifact id.
                let a = name.map(|(n, _)| n).unwrap_or(a);
                emit(file_path, &g, &a, &v, out);
            }
            (None, Some((a, v))) => emit(file_path, "", &a, &v, out),
            (None, None) => {}
        }
    }
}

fn emit(path: &str, group: &str, artifact: &str, version: &str, out: &mut Output) {
    let (name, purl) = if group.is_empty() {
        // Without a group id the advisories cannot name the package exactly; keep the
        // artifact id so that it is at least listed.
        (
            artifact.to_string(),
            format!(
                "pkg:maven/{}@{}",
                purl_encode(artifact),
                purl_encode(version)
            ),
        )
    } else {
        (
            format!("{group}:{artifact}"),
            format!(
                "pkg:maven/{}/{}@{}",
                purl_encode(group),
                purl_encode(artifact),
                purl_encode(version)
            ),
        )
    };
    out.package(package(Ecosystem::Maven, name, version, purl, path));
}

fn read_capped(r: &mut impl Read, cap: u64) -> Option<String> {
    let mut buf = Vec::new();
    r.take(cap).read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// `groupId`, `artifactId`, `version` of a pom.properties file.
pub fn parse_pom_properties(text: &str) -> Option<(String, String, String)> {
    let (mut g, mut a, mut v) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((k, val)) = line.split_once('=') else {
            continue;
        };
        let val = val.trim().to_string();
        match k.trim() {
            "groupId" => g = Some(val),
            "artifactId" => a = Some(val),
            "version" => v = Some(val),
            _ => {}
        }
    }
    Some((g?, a?, v.filter(|v| !v.is_empty())?))
}

fn parse_manifest(text: &str) -> Option<(String, String, String)> {
    let mut attrs = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(": ") {
            attrs.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    let get = |keys: &[&str]| keys.iter().find_map(|k| attrs.get(*k).cloned());
    let version = get(&[
        "Implementation-Version",
        "Specification-Version",
        "Bundle-Version",
    ])?;
    let group = get(&["Implementation-Vendor-Id", "Bundle-SymbolicName"])
        .map(|g| g.split(';').next().unwrap_or_default().to_string())
        .unwrap_or_default();
    let artifact = get(&["Implementation-Title", "Specification-Title", "Bundle-Name"])?;
    Some((group, artifact, version))
}

/// `log4j-core-2.14.1.jar` → (`log4j-core`, `2.14.1`).
fn name_version_from_file_name(path: &str) -> Option<(String, String)> {
    let file = path.rsplit(['/', '!']).next()?;
    let stem = file.rsplit_once('.')?.0;
    let idx = stem
        .match_indices('-')
        .find(|(i, _)| stem[i + 1..].starts_with(|c: char| c.is_ascii_digit()))?
        .0;
    Some((stem[..idx].to_string(), stem[idx + 1..].to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_name_fallback() {
        assert_eq!(
            name_version_from_file_name("app/lib/log4j-core-2.14.1.jar"),
            Some(("log4j-core".into(), "2.14.1".into()))
        );
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A stored (uncompressed) zip: `files` are written once each; `central` lists
    /// (name, index into `files`) entries, so several may point at the same bytes.
    fn stored_zip(files: &[(&str, &[u8])], central: &[(String, usize)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut offsets = Vec::new();
        for (name, data) in files {
            offsets.push(out.len() as u32);
            out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
            out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&crc32(data).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(data);
        }
        let cd_start = out.len() as u32;
        for (name, i) in central {
            let data = files[*i].1;
            out.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            out.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&crc32(data).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&[0; 12]);
            out.extend_from_slice(&offsets[*i].to_le_bytes());
            out.extend_from_slice(name.as_bytes());
        }
        let cd_len = out.len() as u32 - cd_start;
        out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&(central.len() as u16).to_le_bytes());
        out.extend_from_slice(&(central.len() as u16).to_le_bytes());
        out.extend_from_slice(&cd_len.to_le_bytes());
        out.extend_from_slice(&cd_start.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    #[test]
    fn the_entry_budget_is_the_flags_value() {
        // An outer jar of three entries, one of them a jar of two: five entries in all.
        let pom = b"groupId=org.example\nartifactId=inner\nversion=1.0\n";
        let inner = stored_zip(
            &[
                (
                    "META-INF/maven/org.example/inner/pom.properties",
                    pom.as_slice(),
                ),
                ("README", b"x".as_slice()),
            ],
            &[
                ("META-INF/maven/org.example/inner/pom.properties".into(), 0),
                ("README".into(), 1),
            ],
        );
        let outer = stored_zip(
            &[
                ("lib/inner.jar", inner.as_slice()),
                ("a", b"1".as_slice()),
                ("b", b"2".as_slice()),
            ],
            &[
                ("lib/inner.jar".into(), 0),
                ("a".into(), 1),
                ("b".into(), 2),
            ],
        );
        let run = |analyzer: JavaArchiveAnalyzer| {
            let mut out = Output::default();
            analyzer.analyze("app.jar", &outer, &mut out);
            out
        };
        let out = run(JavaArchiveAnalyzer::default());
        assert_eq!(out.facts.len(), 1, "{:?}", out.warnings);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        let out = run(JavaArchiveAnalyzer { max_entries: 5 });
        assert_eq!(out.facts.len(), 1, "{:?}", out.warnings);
        let out = run(JavaArchiveAnalyzer { max_entries: 4 });
        assert!(out.facts.is_empty());
        assert!(
            out.warnings
                .iter()
                .any(|w| w.contains("more than 4 entries (--max-zip-entries)")),
            "{:?}",
            out.warnings
        );
    }

    #[test]
    fn a_stored_zip_written_here_is_read() {
        let pom = b"groupId=org.example\nartifactId=inner\nversion=1.0\n";
        let jar = stored_zip(
            &[("META-INF/maven/org.example/inner/pom.properties", pom)],
            &[("META-INF/maven/org.example/inner/pom.properties".into(), 0)],
        );
        let mut out = Output::default();
        JavaArchiveAnalyzer::default().analyze("app.jar", &jar, &mut out);
        assert_eq!(out.facts.len(), 1, "{:?}", out.warnings);
    }

    #[test]
    fn nested_archives_listed_many_times_over_the_same_bytes_are_refused() {
        // Each level lists one nested jar 60 times: read naively, three levels open
        // 60³ archives. The entries overlap, so the archive is refused at once.
        let pom = b"groupId=org.example\nartifactId=inner\nversion=1.0\n";
        let mut jar = stored_zip(
            &[("META-INF/maven/org.example/inner/pom.properties", pom)],
            &[("META-INF/maven/org.example/inner/pom.properties".into(), 0)],
        );
        for level in 0..3 {
            let central: Vec<(String, usize)> = (0..60)
                .map(|i| (format!("lib/l{level}-{i}.jar"), 0))
                .collect();
            jar = stored_zip(&[("lib/nested.jar", &jar)], &central);
        }
        let started = std::time::Instant::now();
        let mut out = Output::default();
        JavaArchiveAnalyzer::default().analyze("app.jar", &jar, &mut out);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(out.facts.is_empty());
        assert!(
            out.warnings
                .iter()
                .any(|w| w.contains("entries share bytes")),
            "{:?}",
            out.warnings
        );
    }

    #[test]
    fn nested_archives_share_one_inflate_budget() {
        // Distinct (non-overlapping) copies of a 20 MiB nested jar: each is under the
        // nested cap, together they pass the archive's inflate budget.
        use std::io::Write;
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let mut inner = zip::ZipWriter::new(Cursor::new(Vec::new()));
        inner.start_file("data.bin", stored).unwrap();
        inner.write_all(&vec![b'x'; 20 << 20]).unwrap();
        let inner = inner.finish().unwrap().into_inner();
        let mut outer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for i in 0..8 {
            outer.start_file(format!("lib/n{i}.jar"), stored).unwrap();
            outer.write_all(&inner).unwrap();
        }
        let outer = outer.finish().unwrap().into_inner();
        let mut out = Output::default();
        JavaArchiveAnalyzer::default().analyze("app.jar", &outer, &mut out);
        assert!(
            out.warnings.iter().any(|w| w.contains("inflated bytes")),
            "{:?}",
            out.warnings
        );
    }
}
