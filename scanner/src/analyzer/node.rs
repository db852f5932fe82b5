//! npm packages: `node_modules/<name>/package.json` and `node_modules/@scope/<name>/package.json`.

use super::{package, purl_encode, Analyzer, FileMeta, Output};
use crate::inventory::Ecosystem;

/// Reads installed npm packages' manifests.
pub struct NodePackageJsonAnalyzer;

impl Analyzer for NodePackageJsonAnalyzer {
    fn name(&self) -> &'static str {
        "npm"
    }
    fn wants(&self, file: &FileMeta<'_>) -> bool {
        let Some(dir) = file.path.strip_suffix("/package.json") else {
            return false;
        };
        let parts: Vec<&str> = dir.rsplit('/').take(3).collect();
        match parts.as_slice() {
            [_, "node_modules", ..] => true,
            [_, scope, "node_modules"] => scope.starts_with('@'),
            _ => false,
        }
    }
    fn size_cap(&self) -> u64 {
        2 << 20
    }
    fn analyze(&self, path: &str, data: &[u8], out: &mut Output) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
            out.warn(format!("{path}: not valid JSON"));
            return;
        };
        let name = v.get("name").and_then(|n| n.as_str()).unwrap_or_default();
        let version = v
            .get("version")
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        // Workspace packages and private packages are not published: nothing to match.
        if name.is_empty() || version.is_empty() || v.get("private") == Some(&true.into()) {
            return;
        }
        let purl = match name.split_once('/') {
            Some((scope, n)) if scope.starts_with('@') => format!(
                "pkg:npm/{}/{}@{}",
                purl_encode(scope),
                purl_encode(n),
                purl_encode(version)
            ),
            _ => format!("pkg:npm/{}@{}", purl_encode(name), purl_encode(version)),
        };
        out.package(package(Ecosystem::Npm, name, version, purl, path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wants(p: &str) -> bool {
        NodePackageJsonAnalyzer.wants(&FileMeta {
            path: p,
            mode: 0o644,
            size: 10,
        })
    }

    #[test]
    fn only_package_roots_are_wanted() {
        assert!(wants("app/node_modules/lodash/package.json"));
        assert!(wants("node_modules/@babel/core/package.json"));
        assert!(!wants("app/node_modules/lodash/fp/package.json"));
        assert!(!wants("app/package.json"));
    }
}
