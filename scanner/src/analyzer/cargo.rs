//! Rust crates: `Cargo.lock` files left in images.

use super::{package, purl_encode, Analyzer, FileMeta, Output};
use crate::inventory::Ecosystem;

/// Reads the registry crates locked in a `Cargo.lock`.
pub struct CargoLockAnalyzer;

impl Analyzer for CargoLockAnalyzer {
    fn name(&self) -> &'static str {
        "cargo-lock"
    }
    fn wants(&self, file: &FileMeta<'_>) -> bool {
        super::file_name(file.path) == "Cargo.lock"
    }
    fn size_cap(&self) -> u64 {
        16 << 20
    }
    fn analyze(&self, path: &str, data: &[u8], out: &mut Output) {
        let text = String::from_utf8_lossy(data);
        let mut emit =
            |name: &Option<String>, version: &Option<String>, source: &Option<String>| {
                // Workspace members and path dependencies have no source: they are not on crates.io.
                if let (Some(n), Some(v), Some(_)) = (name, version, source) {
                    let purl = format!("pkg:cargo/{}@{}", purl_encode(n), purl_encode(v));
                    out.package(package(
                        Ecosystem::CratesIo,
                        n.clone(),
                        v.clone(),
                        purl,
                        path,
                    ));
                }
            };
        let (mut name, mut version, mut source) = (None, None, None);
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                emit(&name, &version, &source);
                (name, version, source) = (None, None, None);
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').to_string();
            match k.trim() {
                "name" => name = Some(v),
                "version" => version = Some(v),
                "source" if v.starts_with("registry+") || v.starts_with("sparse+") => {
                    source = Some(v)
                }
                _ => {}
            }
        }
        emit(&name, &version, &source);
    }
}
