//! npm packages: `node_modules/<name>/package.json` and `node_modules/@scope/<name>/package.json`,
//! and Debian's modules under `usr/share/nodejs`, `usr/lib/nodejs` and `usr/lib/<triplet>/nodejs`.

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
            _ => is_debian_module_dir(dir),
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
        // Debian's modules are built from the upstream repository, whose package.json is
        // often marked private (lodash's is) though the module is the published one.
        let debian_module = path
            .strip_suffix("/package.json")
            .is_some_and(is_debian_module_dir);
        let private = v.get("private") == Some(&true.into()) && !debian_module;
        if name.is_empty() || version.is_empty() || private {
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

/// Whether `dir` is a module of Debian's Node.js search path: `usr/share/nodejs/NAME`,
/// `usr/lib/nodejs/NAME` or `usr/lib/TRIPLET/nodejs/NAME` (and `@scope/NAME` in them),
/// where Debian's `node-*` packages install modules instead of `node_modules`.
fn is_debian_module_dir(dir: &str) -> bool {
    let module_root = |root: &str| {
        root == "usr/share/nodejs"
            || root == "usr/lib/nodejs"
            || root
                .strip_prefix("usr/lib/")
                .and_then(|r| r.strip_suffix("/nodejs"))
                .is_some_and(|triplet| !triplet.is_empty() && !triplet.contains('/'))
    };
    let Some((parent, name)) = dir.rsplit_once('/') else {
        return false;
    };
    if name.is_empty() || name.starts_with('@') {
        return false;
    }
    if module_root(parent) {
        return true;
    }
    match parent.rsplit_once('/') {
        Some((root, scope)) => scope.len() > 1 && scope.starts_with('@') && module_root(root),
        None => false,
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

    #[test]
    fn debian_module_directories_are_wanted() {
        assert!(wants("usr/share/nodejs/lodash/package.json"));
        assert!(wants("usr/share/nodejs/@types/lodash/package.json"));
        assert!(wants("usr/lib/nodejs/npm/package.json"));
        assert!(wants("usr/lib/x86_64-linux-gnu/nodejs/bcrypt/package.json"));
        // Files inside a module (ES module markers, nested packages) are not package roots.
        assert!(!wants("usr/share/nodejs/lodash/fp/package.json"));
        assert!(!wants("usr/share/nodejs/@types/package.json"));
        assert!(!wants("usr/share/nodejs/package.json"));
        assert!(!wants("usr/lib/a/b/nodejs/x/package.json"));
        assert!(!wants("opt/share/nodejs/x/package.json"));
    }
}
