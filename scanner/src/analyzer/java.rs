//! Java archives: jar, war, ear (nested archives included). Maven coordinates come from
//! `META-INF/maven/**/pom.properties`; `META-INF/MANIFEST.MF` and the file name are fallbacks.

use super::{package, purl_encode, Analyzer, FileMeta, Output};
use crate::inventory::Ecosystem;
use std::io::{Cursor, Read};

/// Reads Maven coordinates out of Java archives.
pub struct JavaArchiveAnalyzer;

/// Largest archive read into memory.
const ARCHIVE_CAP: u64 = 256 << 20;
/// Largest archive nested in another one that is extracted into memory.
const NESTED_CAP: u64 = 128 << 20;
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
        analyze_archive(path, path, data, 0, out);
    }
}

fn analyze_archive(
    file_path: &str,
    archive_name: &str,
    data: &[u8],
    depth: usize,
    out: &mut Output,
) {
    let mut zip = match zip::ZipArchive::new(Cursor::new(data)) {
        Ok(z) => z,
        Err(e) => {
            out.warn(format!("{archive_name}: not a readable Java archive: {e}"));
            return;
        }
    };
    let mut found = false;
    let mut manifest = None;
    for i in 0..zip.len() {
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
            if let Some(text) = read_capped(&mut entry, 1 << 20) {
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
            let mut buf = Vec::with_capacity(entry.size() as usize);
            let read = (&mut entry).take(NESTED_CAP).read_to_end(&mut buf);
            drop(entry);
            // Nested archives are read one at a time: memory stays within depth × cap.
            if read.is_ok() {
                let nested_name = format!("{archive_name}!{name}");
                analyze_archive(file_path, &nested_name, &buf, depth + 1, out);
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
}
