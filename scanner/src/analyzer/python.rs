//! Python packages: `*.dist-info/METADATA` and `*.egg-info/PKG-INFO` (or a bare `*.egg-info` file).

use super::{package, purl_encode, Analyzer, FileMeta, Output};
use crate::inventory::Ecosystem;

/// Reads installed Python distributions' core metadata.
pub struct PythonMetadataAnalyzer;

impl Analyzer for PythonMetadataAnalyzer {
    fn name(&self) -> &'static str {
        "python"
    }
    fn wants(&self, file: &FileMeta<'_>) -> bool {
        let p = file.path;
        p.ends_with(".dist-info/METADATA")
            || p.ends_with(".egg-info/PKG-INFO")
            || (p.ends_with(".egg-info") && file.size > 0)
    }
    fn size_cap(&self) -> u64 {
        4 << 20
    }
    fn analyze(&self, path: &str, data: &[u8], out: &mut Output) {
        let text = String::from_utf8_lossy(data);
        let (mut name, mut version) = (None, None);
        // Only the header block: the description that follows may contain anything.
        for line in text.lines() {
            if line.is_empty() {
                break;
            }
            match line.split_once(':') {
                Some(("Name", v)) if name.is_none() => name = Some(v.trim()),
                Some(("Version", v)) if version.is_none() => version = Some(v.trim()),
                _ => {}
            }
        }
        match (name, version) {
            (Some(n), Some(v)) if !n.is_empty() && !v.is_empty() => {
                let n = normalize_name(n);
                let purl = format!("pkg:pypi/{}@{}", purl_encode(&n), purl_encode(v));
                out.package(package(Ecosystem::PyPI, n, v, purl, path));
            }
            _ => out.warn(format!(
                "{path}: no Name and Version in Python package metadata"
            )),
        }
    }
}

/// PEP 503 normalization: lower case, runs of `-`, `_` and `.` become one `-`.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn pep503() {
        assert_eq!(super::normalize_name("PyYAML"), "pyyaml");
        assert_eq!(
            super::normalize_name("zope.interface__x"),
            "zope-interface-x"
        );
    }
}
