//! Alpine's apk database: `lib/apk/db/installed`.

use super::{package, purl_encode, Analyzer, FileMeta, Output};
use crate::inventory::Ecosystem;

/// Reads installed packages from the apk database.
pub struct ApkInstalledAnalyzer;

impl Analyzer for ApkInstalledAnalyzer {
    fn name(&self) -> &'static str {
        "apk"
    }
    fn wants(&self, file: &FileMeta<'_>) -> bool {
        file.path == "lib/apk/db/installed"
    }
    fn size_cap(&self) -> u64 {
        64 << 20
    }
    fn analyze(&self, path: &str, data: &[u8], out: &mut Output) {
        parse_installed(path, &String::from_utf8_lossy(data), out);
    }
}

/// Parses the apk installed database: `P:` name, `V:` version, `o:` origin (the source
/// package that security advisories name), `A:` architecture.
pub fn parse_installed(path: &str, text: &str, out: &mut Output) {
    for stanza in text.split("\n\n") {
        let mut name = None;
        let mut version = None;
        let mut origin = None;
        let mut arch = None;
        for line in stanza.lines() {
            match line.split_once(':') {
                Some(("P", v)) => name = Some(v.trim()),
                Some(("V", v)) => version = Some(v.trim()),
                Some(("o", v)) => origin = Some(v.trim()),
                Some(("A", v)) => arch = Some(v.trim()),
                _ => {}
            }
        }
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            continue;
        };
        let Some(version) = version.filter(|v| !v.is_empty()) else {
            out.warn(format!(
                "{path}: skipped package {name}: it has no version (V:)"
            ));
            continue;
        };
        let mut purl = format!("pkg:apk/_/{}@{}", purl_encode(name), purl_encode(version));
        if let Some(a) = arch {
            purl.push_str(&format!("?arch={}", purl_encode(a)));
        }
        let mut p = package(Ecosystem::Alpine, name, version, purl, path);
        p.source_name = Some(origin.unwrap_or(name).to_string());
        p.source_version = Some(version.to_string());
        out.package(p);
    }
}
