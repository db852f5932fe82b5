//! CycloneDX SBOMs (JSON or XML) as an inventory source: packages come from the
//! components' purls, the OS from the `operating-system` component or the purls' `distro=`.

use super::{ImageRef, ScannedImage, SourceError};
use crate::analyzer;
use crate::inventory::{Ecosystem, OsInfo, Package};
use std::path::Path;

/// A parsed package URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purl {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub version: String,
    pub qualifiers: Vec<(String, String)>,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Purl {
    /// Parses `pkg:type/namespace/name@version?qualifiers#subpath`.
    pub fn parse(s: &str) -> Option<Purl> {
        let rest = s.trim().strip_prefix("pkg:")?;
        let rest = rest.split('#').next()?;
        let (rest, qualifiers) = match rest.split_once('?') {
            Some((r, q)) => (
                r,
                q.split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_ascii_lowercase(), percent_decode(v)))
                    .collect(),
            ),
            None => (rest, Vec::new()),
        };
        let (path, version) = match rest.rsplit_once('@') {
            Some((p, v)) => (p, percent_decode(v)),
            None => (rest, String::new()),
        };
        let mut segs: Vec<String> = path.split('/').map(percent_decode).collect();
        if segs.len() < 2 {
            return None;
        }
        let kind = segs.remove(0).to_ascii_lowercase();
        let name = segs.pop()?;
        let namespace = (!segs.is_empty()).then(|| segs.join("/"));
        Some(Purl {
            kind,
            namespace,
            name,
            version,
            qualifiers,
        })
    }

    pub fn qualifier(&self, k: &str) -> Option<&str> {
        self.qualifiers
            .iter()
            .find(|(q, _)| q == k)
            .map(|(_, v)| v.as_str())
    }
}

/// The inventory package a purl describes, when its ecosystem is one the matcher knows.
pub fn package_from_purl(purl_text: &str, path: &str) -> Option<Package> {
    let p = Purl::parse(purl_text)?;
    if p.version.is_empty() {
        return None;
    }
    let ns = p.namespace.clone().unwrap_or_default();
    let (ecosystem, name, version) = match p.kind.as_str() {
        "deb" => (
            if ns == "ubuntu" {
                Ecosystem::Ubuntu
            } else {
                Ecosystem::Debian
            },
            p.name.clone(),
            p.version.clone(),
        ),
        "apk" => (Ecosystem::Alpine, p.name.clone(), p.version.clone()),
        "rpm" => {
            let eco = match ns.as_str() {
                "rocky" => Ecosystem::RockyLinux,
                "almalinux" => Ecosystem::AlmaLinux,
                "amazon" | "amzn" => Ecosystem::AmazonLinux,
                "suse" | "sles" => Ecosystem::SUSE,
                "opensuse" => Ecosystem::OpenSuse,
                _ => Ecosystem::RedHat,
            };
            let v = match p.qualifier("epoch") {
                Some(e) if e != "0" => format!("{e}:{}", p.version),
                _ => p.version.clone(),
            };
            (eco, p.name.clone(), v)
        }
        "pypi" => (
            Ecosystem::PyPI,
            crate::analyzer::python::normalize_name(&p.name),
            p.version.clone(),
        ),
        "npm" => (
            Ecosystem::Npm,
            match &p.namespace {
                Some(scope) => format!("{scope}/{}", p.name),
                None => p.name.clone(),
            },
            p.version.clone(),
        ),
        "maven" => (
            Ecosystem::Maven,
            format!("{ns}:{}", p.name),
            p.version.clone(),
        ),
        "golang" => {
            if p.version.starts_with('(') {
                return None; // "(devel)": no published version
            }
            let name = match &p.namespace {
                Some(n) => format!("{n}/{}", p.name),
                None => p.name.clone(),
            };
            let v = p
                .version
                .strip_prefix('v')
                .unwrap_or(&p.version)
                .to_string();
            (Ecosystem::Go, name, v)
        }
        "cargo" => (Ecosystem::CratesIo, p.name.clone(), p.version.clone()),
        "composer" => (
            Ecosystem::Packagist,
            format!("{ns}/{}", p.name),
            p.version.clone(),
        ),
        "gem" => (Ecosystem::RubyGems, p.name.clone(), p.version.clone()),
        "nuget" => (Ecosystem::NuGet, p.name.clone(), p.version.clone()),
        _ => return None,
    };
    let (source_name, source_version) = match p.qualifier("upstream") {
        Some(u) => match u.split_once('@') {
            Some((n, v)) => (Some(n.to_string()), Some(v.to_string())),
            None => (Some(u.to_string()), Some(version.clone())),
        },
        None if ecosystem.is_os() => (Some(name.clone()), Some(version.clone())),
        None => (None, None),
    };
    Some(Package {
        ecosystem,
        name,
        version,
        purl: purl_text.trim().to_string(),
        source_name,
        source_version,
        vendor: None,
        // Red Hat writes the module of an rpm as `rpmmod=name:stream:version:context`.
        module: p
            .qualifier("rpmmod")
            .and_then(crate::vulndb::ecosystem::module_stream),
        install_state: None,
        os_package: None,
        layer: None,
        path: path.to_string(),
    })
}

/// What an SBOM lists: purls and the OS component.
#[derive(Debug, Default)]
struct SbomContent {
    purls: Vec<String>,
    os: Option<OsInfo>,
}

/// Largest SBOM file read by default (`--max-sbom-bytes`).
pub const MAX_SBOM_BYTES: u64 = crate::budget::DEFAULT_MAX_SBOM_BYTES;
/// Most components taken from one SBOM by default (`--max-sbom-components`).
pub const MAX_SBOM_COMPONENTS: u64 = crate::budget::DEFAULT_MAX_SBOM_COMPONENTS;

/// The parts of a CycloneDX JSON document the scanner uses; everything else is skipped
/// while parsing rather than built into a tree.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonBom {
    bom_format: Option<String>,
    #[serde(default)]
    components: Vec<JsonComponent>,
}

#[derive(serde::Deserialize)]
struct JsonComponent {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    purl: Option<String>,
    #[serde(default)]
    components: Vec<JsonComponent>,
}

fn parse_json(bytes: &[u8], what: &str, max_components: u64) -> Result<SbomContent, SourceError> {
    let bom: JsonBom = serde_json::from_slice(bytes)
        .map_err(|e| SourceError::Invalid(format!("{what}: not CycloneDX JSON: {e}")))?;
    if bom.bom_format.as_deref() != Some("CycloneDX") {
        return Err(SourceError::Invalid(format!(
            "{what}: not a CycloneDX SBOM (bomFormat is not \"CycloneDX\")"
        )));
    }
    let mut out = SbomContent::default();
    // Depth-first without recursion (serde_json already bounds the nesting).
    let mut stack: Vec<std::vec::IntoIter<JsonComponent>> = vec![bom.components.into_iter()];
    while let Some(top) = stack.last_mut() {
        let Some(c) = top.next() else {
            stack.pop();
            continue;
        };
        if c.kind.as_deref() == Some("operating-system") && out.os.is_none() {
            out.os = Some(OsInfo {
                family: c.name.unwrap_or_default().to_ascii_lowercase(),
                version: c.version.unwrap_or_default(),
            });
        }
        if let Some(p) = c.purl.filter(|p| !p.is_empty()) {
            out.purls.push(p);
        }
        if out.purls.len() as u64 > max_components {
            return Err(too_many_components(what, max_components));
        }
        if !c.components.is_empty() {
            stack.push(c.components.into_iter());
        }
    }
    Ok(out)
}

fn too_many_components(what: &str, max_components: u64) -> SourceError {
    SourceError::Invalid(format!(
        "{what}: the SBOM lists more than {max_components} components (--max-sbom-components); not read"
    ))
}

fn parse_xml(bytes: &[u8], what: &str, max_components: u64) -> Result<SbomContent, SourceError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let mut out = SbomContent::default();
    let mut stack: Vec<String> = Vec::new();
    // For each open <component>: whether it is the OS, and its name and version.
    let mut components: Vec<(bool, String, String)> = Vec::new();
    let mut buf = Vec::new();
    let bad = |e: quick_xml::Error| SourceError::Invalid(format!("{what}: not CycloneDX XML: {e}"));
    loop {
        match reader.read_event_into(&mut buf).map_err(bad)? {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if name == "component" {
                    let listed = stack.last().map(String::as_str) == Some("components");
                    let is_os = e.attributes().flatten().any(|a| {
                        a.key.local_name().as_ref() == b"type"
                            && a.value.as_ref() == b"operating-system"
                    });
                    components.push((listed && is_os, String::new(), String::new()));
                }
                stack.push(name);
            }
            Event::End(_) => {
                let closed_component = stack.pop().as_deref() == Some("component");
                if let (true, Some((true, n, v))) = (closed_component, components.last()) {
                    if out.os.is_none() {
                        out.os = Some(OsInfo {
                            family: n.to_ascii_lowercase(),
                            version: v.clone(),
                        });
                    }
                }
                if closed_component {
                    components.pop();
                }
            }
            Event::Text(t) => {
                let text = t
                    .unescape()
                    .map(|c| c.into_owned())
                    .unwrap_or_else(|_| String::from_utf8_lossy(&t).into_owned());
                let n = stack.len();
                if n >= 2 && stack[n - 2] == "component" {
                    if let Some(c) = components.last_mut() {
                        match stack[n - 1].as_str() {
                            "purl" => {
                                if out.purls.len() as u64 >= max_components {
                                    return Err(too_many_components(what, max_components));
                                }
                                out.purls.push(text.trim().to_string())
                            }
                            "name" => c.1 = text.trim().to_string(),
                            "version" => c.2 = text.trim().to_string(),
                            _ => {}
                        }
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if stack.is_empty() && out.purls.is_empty() && out.os.is_none() {
        tracing::warn!("{what}: the SBOM lists no components");
    }
    Ok(out)
}

/// Reads a CycloneDX SBOM file as an inventory.
pub fn read(
    target: &ImageRef,
    path: &Path,
    budgets: &crate::budget::ScanBudgets,
) -> Result<ScannedImage, SourceError> {
    let what = target.to_string();
    let max_bytes = budgets.max_sbom_bytes;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            use std::io::Read;
            f.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes)
        })
        .map_err(SourceError::io(what.clone()))?;
    if bytes.len() as u64 > max_bytes {
        return Err(SourceError::Invalid(format!(
            "{what}: larger than {} (--max-sbom-bytes); not read",
            crate::budget::human(max_bytes)
        )));
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let content = match first {
        Some(b'{') => parse_json(&bytes, &what, budgets.max_sbom_components)?,
        Some(b'<') => parse_xml(&bytes, &what, budgets.max_sbom_components)?,
        _ => {
            return Err(SourceError::Invalid(format!(
                "{what}: neither CycloneDX JSON nor XML"
            )))
        }
    };
    let mut warnings = Vec::new();
    let mut omitted = 0;
    let max_warnings = usize::try_from(budgets.max_warnings).unwrap_or(usize::MAX);
    let mut packages = Vec::new();
    for p in &content.purls {
        match package_from_purl(p, "") {
            Some(pkg) => packages.push(pkg),
            None => analyzer::push_bounded_warning(
                &mut warnings,
                &mut omitted,
                max_warnings,
                format!("{what}: purl {p} names no package that can be matched"),
            ),
        }
    }
    analyzer::name_the_warning_budget(&mut warnings, omitted);
    let os = content.os.or_else(|| {
        content.purls.iter().find_map(|p| {
            let d = Purl::parse(p)?.qualifier("distro")?.to_string();
            let (f, v) = d.split_once('-')?;
            Some(OsInfo {
                family: f.to_string(),
                version: v.to_string(),
            })
        })
    });
    let inventory = analyzer::finalize(what, None, os, packages);
    Ok(ScannedImage {
        inventory,
        config: None,
        config_json: None,
        layers: Vec::new(),
        warnings,
        file_findings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purl_with_upstream_and_epoch() {
        let p = package_from_purl(
            "pkg:deb/debian/bsdutils@1:2.29.2-1+deb9u1?arch=amd64&upstream=util-linux%402.29.2-1+deb9u1&distro=debian-9",
            "",
        )
        .unwrap();
        assert_eq!(p.version, "1:2.29.2-1+deb9u1");
        assert_eq!(p.source_name.as_deref(), Some("util-linux"));
        assert_eq!(p.source_version.as_deref(), Some("2.29.2-1+deb9u1"));
        let g = package_from_purl("pkg:golang/github.com/opencontainers/runc@v1.0.1", "").unwrap();
        assert_eq!(
            (g.name.as_str(), g.version.as_str()),
            ("github.com/opencontainers/runc", "1.0.1")
        );
    }

    fn read_file(path: &Path) -> Result<ScannedImage, SourceError> {
        read_with(path, &Default::default())
    }

    fn read_with(
        path: &Path,
        budgets: &crate::budget::ScanBudgets,
    ) -> Result<ScannedImage, SourceError> {
        read(&ImageRef::Sbom(path.to_path_buf()), path, budgets)
    }

    #[test]
    fn the_warnings_of_an_sbom_are_bounded_by_the_flag() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("bom.json");
        let components: Vec<serde_json::Value> = (0..5)
            .map(|i| serde_json::json!({"type": "library", "purl": format!("pkg:nosuchtype/p{i}@1.0.0")}))
            .collect();
        let bom = serde_json::json!({"bomFormat": "CycloneDX", "components": components});
        std::fs::write(&path, serde_json::to_vec(&bom).unwrap()).unwrap();
        assert_eq!(read_file(&path).unwrap().warnings.len(), 5);
        let two = crate::budget::ScanBudgets {
            max_warnings: 2,
            ..Default::default()
        };
        let warnings = read_with(&path, &two).unwrap().warnings;
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert_eq!(warnings[2], "3 more warning(s) not shown (--max-warnings)");
    }

    #[test]
    fn the_sbom_budgets_are_the_flags_values() {
        use crate::budget::ScanBudgets;
        let tmp = tempfile::tempdir().unwrap();
        let json = tmp.path().join("bom.json");
        let components: Vec<serde_json::Value> = (0..3)
            .map(|i| serde_json::json!({"type": "library", "purl": format!("pkg:npm/p{i}@1.0.0")}))
            .collect();
        let bom = serde_json::json!({"bomFormat": "CycloneDX", "components": components});
        let bytes = serde_json::to_vec(&bom).unwrap();
        std::fs::write(&json, &bytes).unwrap();
        let xml = tmp.path().join("bom.xml");
        std::fs::write(
            &xml,
            r#"<bom xmlns="http://cyclonedx.org/schema/bom/1.5"><components>
<component type="library"><name>a</name><version>1</version><purl>pkg:npm/a@1.0.0</purl></component>
<component type="library"><name>b</name><version>1</version><purl>pkg:npm/b@1.0.0</purl></component>
<component type="library"><name>c</name><version>1</version><purl>pkg:npm/c@1.0.0</purl></component>
</components></bom>"#,
        )
        .unwrap();
        for path in [&json, &xml] {
            // The defaults read them.
            assert_eq!(read_file(path).unwrap().inventory.packages.len(), 3);
            // Three components are within a budget of three, not of two.
            let three = ScanBudgets {
                max_sbom_components: 3,
                ..Default::default()
            };
            assert_eq!(read_with(path, &three).unwrap().inventory.packages.len(), 3);
            let two = ScanBudgets {
                max_sbom_components: 2,
                ..Default::default()
            };
            let err = read_with(path, &two).unwrap_err().to_string();
            assert!(
                err.contains("more than 2 components (--max-sbom-components)"),
                "{err}"
            );
        }
        let small = ScanBudgets {
            max_sbom_bytes: bytes.len() as u64 - 1,
            ..Default::default()
        };
        let err = read_with(&json, &small).unwrap_err().to_string();
        assert!(err.contains("(--max-sbom-bytes)"), "{err}");
        let exact = ScanBudgets {
            max_sbom_bytes: bytes.len() as u64,
            ..Default::default()
        };
        read_with(&json, &exact).unwrap();
    }

    #[test]
    fn nested_json_components_are_read_and_unknown_fields_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("bom.json");
        let bom = serde_json::json!({"bomFormat": "CycloneDX", "specVersion": "1.5",
        "metadata": {"tools": [{"name": "x", "extra": {"deep": [1, 2, 3]}}]},
        "components": [
            {"type": "operating-system", "name": "Debian", "version": "11"},
            {"type": "library", "name": "app", "purl": "pkg:npm/app@1.0.0", "hashes": [{"alg": "SHA-256"}],
             "components": [{"type": "library", "name": "lodash", "purl": "pkg:npm/lodash@4.17.15"}]}
        ]});
        std::fs::write(&path, serde_json::to_vec(&bom).unwrap()).unwrap();
        let inv = read_file(&path).unwrap().inventory;
        assert_eq!(inv.os.unwrap().family, "debian");
        let mut names: Vec<&str> = inv.packages.iter().map(|p| p.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["app", "lodash"]);
    }

    #[test]
    fn oversized_sboms_are_refused_before_parsing() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("big.json");
        let mut data = br#"{"bomFormat": "CycloneDX", "components": []"#.to_vec();
        data.resize(MAX_SBOM_BYTES as usize + 10, b' ');
        data.push(b'}');
        std::fs::write(&path, &data).unwrap();
        let err = read_file(&path).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");

        let components: Vec<serde_json::Value> = (0..=MAX_SBOM_COMPONENTS as usize)
            .map(|i| serde_json::json!({"type": "library", "purl": format!("pkg:npm/p{i}@1.0.0")}))
            .collect();
        let bom = serde_json::json!({"bomFormat": "CycloneDX", "components": components});
        std::fs::write(&path, serde_json::to_vec(&bom).unwrap()).unwrap();
        let err = read_file(&path).unwrap_err().to_string();
        assert!(err.contains("more than"), "{err}");
    }
}
