//! .NET packages: `*.deps.json` files next to published applications.

use super::{package, purl_encode, Analyzer, FileMeta, Output};
use crate::inventory::Ecosystem;

/// Reads the NuGet packages an application was published with.
pub struct DotnetDepsAnalyzer;

impl Analyzer for DotnetDepsAnalyzer {
    fn name(&self) -> &'static str {
        "dotnet-deps"
    }
    fn wants(&self, file: &FileMeta<'_>) -> bool {
        file.path.ends_with(".deps.json")
    }
    fn size_cap(&self) -> u64 {
        16 << 20
    }
    fn analyze(&self, path: &str, data: &[u8], out: &mut Output) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
            out.warn(format!("{path}: not valid JSON"));
            return;
        };
        let Some(libs) = v.get("libraries").and_then(|l| l.as_object()) else {
            return;
        };
        for (key, lib) in libs {
            if lib.get("type").and_then(|t| t.as_str()) != Some("package") {
                continue;
            }
            let Some((name, version)) = key.split_once('/') else {
                continue;
            };
            let purl = format!("pkg:nuget/{}@{}", purl_encode(name), purl_encode(version));
            out.package(package(Ecosystem::NuGet, name, version, purl, path));
        }
    }
}
