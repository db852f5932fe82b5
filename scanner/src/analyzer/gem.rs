//! Ruby gems: `specifications/*.gemspec` as RubyGems installs them.

use super::{package, purl_encode, Analyzer, FileMeta, Output};
use crate::inventory::Ecosystem;
use regex::Regex;
use std::sync::LazyLock;

/// Reads installed gems' specifications.
pub struct GemspecAnalyzer;

static NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(?m)^\s*\w+\.name\s*=\s*["']([^"']+)["']"#).unwrap());
static VERSION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(?m)^\s*\w+\.version\s*=\s*["']([^"']+)["']"#).unwrap());

impl Analyzer for GemspecAnalyzer {
    fn name(&self) -> &'static str {
        "gemspec"
    }
    fn wants(&self, file: &FileMeta<'_>) -> bool {
        file.path.ends_with(".gemspec") && file.path.contains("/specifications/")
    }
    fn size_cap(&self) -> u64 {
        1 << 20
    }
    fn analyze(&self, path: &str, data: &[u8], out: &mut Output) {
        let text = String::from_utf8_lossy(data);
        let name = NAME.captures(&text).map(|c| c[1].to_string());
        let version = VERSION.captures(&text).map(|c| c[1].to_string());
        match (name, version) {
            (Some(n), Some(v)) => {
                let purl = format!("pkg:gem/{}@{}", purl_encode(&n), purl_encode(&v));
                out.package(package(Ecosystem::RubyGems, n, v, purl, path));
            }
            _ => out.warn(format!("{path}: no name and version in gemspec")),
        }
    }
}
