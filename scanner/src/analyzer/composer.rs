//! PHP packages: composer's `vendor/composer/installed.json`.

use super::{package, purl_encode, Analyzer, FileMeta, Output};
use crate::inventory::Ecosystem;

/// Reads composer's record of installed packages (composer 1 array or composer 2 object).
pub struct ComposerInstalledAnalyzer;

impl Analyzer for ComposerInstalledAnalyzer {
    fn name(&self) -> &'static str {
        "composer"
    }
    fn wants(&self, file: &FileMeta<'_>) -> bool {
        file.path.ends_with("vendor/composer/installed.json")
    }
    fn size_cap(&self) -> u64 {
        32 << 20
    }
    fn analyze(&self, path: &str, data: &[u8], out: &mut Output) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
            out.warn(format!("{path}: not valid JSON"));
            return;
        };
        let list = v
            .get("packages")
            .and_then(|p| p.as_array())
            .or_else(|| v.as_array());
        for p in list.into_iter().flatten() {
            let name = p.get("name").and_then(|n| n.as_str()).unwrap_or_default();
            let version = p
                .get("version")
                .and_then(|n| n.as_str())
                .unwrap_or_default();
            if name.is_empty() || version.is_empty() {
                continue;
            }
            let version = version.strip_prefix('v').unwrap_or(version);
            let purl = match name.split_once('/') {
                Some((ns, n)) => format!(
                    "pkg:composer/{}/{}@{}",
                    purl_encode(ns),
                    purl_encode(n),
                    purl_encode(version)
                ),
                None => format!(
                    "pkg:composer/{}@{}",
                    purl_encode(name),
                    purl_encode(version)
                ),
            };
            out.package(package(Ecosystem::Packagist, name, version, purl, path));
        }
    }
}
