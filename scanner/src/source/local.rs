//! Local images: OCI image layouts, docker-save and OCI archives, unpacked root filesystems.

use super::oci::{self, Descriptor, Manifest};
use super::progress::{bar, label, ProgressReader};
use super::{assemble, ImageRef, PullOptions, ScannedImage, SourceError};
use crate::analyzer::{Analyzer, FileMeta, Output};
use crate::layer::{self, scan_layer_with, FileResult, LayerScan};
use serde::Deserialize;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// Most bytes of an archive's non-layer entries (manifests, configs, other small files)
/// kept in memory together, and most such entries.
const NON_LAYER_TOTAL_CAP: u64 = 64 << 20;
const NON_LAYER_ENTRIES_CAP: usize = 10_000;

fn blob_path(dir: &Path, digest: &str) -> Result<std::path::PathBuf, SourceError> {
    let (alg, hex) = digest
        .split_once(':')
        .ok_or_else(|| SourceError::Invalid(format!("malformed digest {digest:?}")))?;
    let safe = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
    if !safe(alg) || !safe(hex) {
        return Err(SourceError::Invalid(format!("malformed digest {digest:?}")));
    }
    Ok(dir.join("blobs").join(alg).join(hex))
}

/// The error for a JSON document (manifest, index, configuration) over `cap` bytes.
fn oversized_document(what: &str, name: &str, cap: u64) -> SourceError {
    SourceError::Invalid(format!(
        "{what}: {name} is larger than {} (--max-manifest-bytes); not read",
        crate::budget::human(cap)
    ))
}

fn read_json_file(path: &Path, what: &str, cap: u64) -> Result<Vec<u8>, SourceError> {
    let f = File::open(path).map_err(SourceError::io(format!("{what}: {}", path.display())))?;
    let mut buf = Vec::new();
    f.take(cap.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(SourceError::io(format!("{what}: {}", path.display())))?;
    if buf.len() as u64 > cap {
        return Err(oversized_document(what, &path.display().to_string(), cap));
    }
    Ok(buf)
}

/// Reads an OCI image layout directory.
pub fn scan_layout(
    target: &ImageRef,
    dir: &Path,
    tag: Option<&str>,
    opts: &PullOptions,
    analyzers: &[Box<dyn Analyzer>],
) -> Result<ScannedImage, SourceError> {
    let what = target.to_string();
    let json_cap = opts.budgets.archive_manifest_bytes();
    let index_bytes = read_json_file(&dir.join("index.json"), &what, json_cap)?;
    let root = oci::parse_manifest(&index_bytes, &format!("{what}: index.json"))?;
    let fetch_json = |d: &Descriptor| -> Result<Vec<u8>, SourceError> {
        let p = blob_path(dir, &d.digest)?;
        if !p.exists() {
            return Err(SourceError::MissingBlob {
                image: what.clone(),
                digest: d.digest.clone(),
            });
        }
        let bytes = read_json_file(&p, &what, json_cap)?;
        oci::verify_digest(&bytes, &d.digest, &format!("{what}: blob {}", d.digest))?;
        Ok(bytes)
    };
    let root = match (tag, root) {
        (Some(tag), Manifest::Index(entries)) => {
            let d = oci::select_tag(&entries, tag, &what)?.clone();
            Manifest::Index(vec![Descriptor {
                platform: None,
                ..d
            }])
        }
        (_, root) => root,
    };
    let (digest, config, layers) =
        oci::resolve_image(root, None, &opts.platform, &what, fetch_json)?;
    let config_json = fetch_json(&config)?;
    let mut scans = Vec::with_capacity(layers.len());
    for l in &layers {
        let p = blob_path(dir, &l.digest)?;
        let f = File::open(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SourceError::MissingBlob {
                image: what.clone(),
                digest: l.digest.clone(),
            },
            _ => SourceError::Io {
                what: format!("{what}: {}", p.display()),
                source: e,
            },
        })?;
        let size = (l.size > 0).then_some(l.size as u64);
        let reader = ProgressReader {
            inner: f,
            bar: bar(opts.progress, size, label(opts, &what, &l.digest)),
        };
        let used = scans.iter().map(|s: &LayerScan| s.uncompressed_size).sum();
        let kept = scans.iter().map(|s: &LayerScan| s.retained_bytes).sum();
        let layer_opts = opts.layer_options(used, kept, false);
        scans.push(scan_layer_with(
            reader,
            Some(&l.digest),
            size,
            analyzers,
            &layer_opts,
        )?);
    }
    Ok(assemble(
        target,
        digest,
        &scans,
        Some(config_json),
        Vec::new(),
        opts.budgets.max_warnings,
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Reads a docker-save or OCI archive in one pass: layers are walked as they come (their
/// order in the archive does not matter: results are kept per layer and merged afterwards
/// in the manifest's order); small JSON documents are kept for the manifest resolution.
pub fn scan_archive(
    target: &ImageRef,
    path: &Path,
    opts: &PullOptions,
    analyzers: &[Box<dyn Analyzer>],
) -> Result<ScannedImage, SourceError> {
    let what = target.to_string();
    let json_cap = opts.budgets.archive_manifest_bytes();
    let file = File::open(path).map_err(SourceError::io(format!("{what}: cannot open")))?;
    let len = file.metadata().ok().map(|m| m.len());
    let reader = ProgressReader {
        inner: file,
        bar: bar(opts.progress, len, label(opts, &what, "archive")),
    };
    let corrupt = SourceError::io(format!("{what}: unreadable archive"));
    let stream = layer::decompress(BufReader::with_capacity(64 << 10, reader)).map_err(corrupt)?;
    let mut archive = tar::Archive::new(stream);
    let mut json: HashMap<String, Vec<u8>> = HashMap::new();
    let mut json_bytes = 0u64;
    // Non-layer entries too large to keep: named if a manifest turns out to be among them.
    let mut oversized: Vec<String> = Vec::new();
    let mut layers: HashMap<String, LayerScan> = HashMap::new();
    let entries = archive
        .entries()
        .map_err(SourceError::io(format!("{what}: unreadable archive")))?;
    for entry in entries {
        let entry = entry.map_err(SourceError::io(format!("{what}: unreadable archive")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let Some(name) = layer::normalize_entry_path(&entry.path_bytes()) else {
            continue;
        };
        let size = entry.header().size().unwrap_or(0);
        let mut buffered = BufReader::with_capacity(64 << 10, entry);
        let head = buffered
            .fill_buf()
            .map_err(SourceError::io(format!("{what}: {name}")))?;
        let looks_json = head
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{' || *b == b'[');
        let looks_layer = head.starts_with(&[0x1f, 0x8b])
            || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
            || head.get(257..262) == Some(b"ustar".as_slice())
            || name.ends_with(".tar")
            || name.starts_with("blobs/");
        if !looks_layer || looks_json || size == 0 {
            if size > json_cap {
                if oversized.len() < 16 {
                    oversized.push(name);
                }
                continue;
            }
            if json_bytes + size > NON_LAYER_TOTAL_CAP || json.len() >= NON_LAYER_ENTRIES_CAP {
                return Err(SourceError::Invalid(format!(
                    "{what}: the archive's non-layer entries exceed {NON_LAYER_TOTAL_CAP} bytes or {NON_LAYER_ENTRIES_CAP} entries in total; not an image archive this scanner reads"
                )));
            }
            let mut buf = Vec::new();
            // The header's size is not trusted: read at most what it announced.
            (&mut buffered)
                .take(size)
                .read_to_end(&mut buf)
                .map_err(SourceError::io(format!("{what}: {name}")))?;
            json_bytes += buf.len() as u64;
            json.insert(name, buf);
            continue;
        }
        // `blobs/<alg>/<hex>` names its content; an algorithm that cannot be verified is refused.
        let expected = name
            .strip_prefix("blobs/")
            .and_then(|rest| rest.split_once('/'))
            .filter(|(_, hex)| !hex.contains('/'))
            .map(|(alg, hex)| format!("{alg}:{hex}"));
        let used = layers.values().map(|s| s.uncompressed_size).sum();
        let kept = layers.values().map(|s| s.retained_bytes).sum();
        let layer_opts = opts.layer_options(used, kept, true);
        let scan = scan_layer_with(
            buffered,
            expected.as_deref(),
            Some(size),
            analyzers,
            &layer_opts,
        )?;
        layers.insert(name, scan);
    }
    for manifest in ["manifest.json", "index.json"] {
        if !json.contains_key(manifest) && oversized.iter().any(|n| n == manifest) {
            return Err(oversized_document(&what, manifest, json_cap));
        }
    }

    let use_docker = json.contains_key("manifest.json")
        && (matches!(target, ImageRef::DockerArchive(_)) || !json.contains_key("index.json"));
    if use_docker {
        let entries: Vec<DockerManifestEntry> = serde_json::from_slice(&json["manifest.json"])
            .map_err(|e| SourceError::Invalid(format!("{what}: manifest.json: {e}")))?;
        let entry = entries
            .first()
            .ok_or_else(|| SourceError::Invalid(format!("{what}: manifest.json lists no image")))?;
        if entries.len() > 1 {
            tracing::info!(
                "{what}: the archive holds {} images; reading the first ({:?})",
                entries.len(),
                entry.repo_tags
            );
        }
        let mut ordered = Vec::with_capacity(entry.layers.len());
        for l in &entry.layers {
            let l = layer::normalize_entry_path(l.as_bytes()).unwrap_or_default();
            let scan = layers
                .get(&l)
                .cloned()
                .ok_or_else(|| SourceError::MissingBlob {
                    image: what.clone(),
                    digest: l.clone(),
                })?;
            ordered.push(scan);
        }
        let config_name = entry.config.trim_start_matches("./");
        if oversized.iter().any(|n| n == config_name) {
            return Err(oversized_document(&what, config_name, json_cap));
        }
        let config = json.get(config_name).cloned();
        if let Some(config) = &config {
            check_diff_ids(&what, config, &entry.layers, &ordered)?;
        }
        return Ok(assemble(
            target,
            None,
            &ordered,
            config,
            Vec::new(),
            opts.budgets.max_warnings,
        ));
    }

    let index = json.get("index.json").ok_or_else(|| {
        SourceError::Invalid(format!(
            "{what}: neither manifest.json (docker save) nor index.json (OCI layout) found"
        ))
    })?;
    let root = oci::parse_manifest(index, &format!("{what}: index.json"))?;
    let fetch_json = |d: &Descriptor| -> Result<Vec<u8>, SourceError> {
        let key = format!("blobs/{}", d.digest.replacen(':', "/", 1));
        if oversized.contains(&key) {
            return Err(oversized_document(&what, &key, json_cap));
        }
        let bytes = json
            .get(&key)
            .cloned()
            .ok_or_else(|| SourceError::MissingBlob {
                image: what.clone(),
                digest: d.digest.clone(),
            })?;
        oci::verify_digest(&bytes, &d.digest, &format!("{what}: blob {}", d.digest))?;
        Ok(bytes)
    };
    let (digest, config, descs) =
        oci::resolve_image(root, None, &opts.platform, &what, fetch_json)?;
    let config_json = fetch_json(&config)?;
    let mut ordered = Vec::with_capacity(descs.len());
    for d in &descs {
        let key = format!("blobs/{}", d.digest.replacen(':', "/", 1));
        let scan = layers
            .get(&key)
            .cloned()
            .ok_or_else(|| SourceError::MissingBlob {
                image: what.clone(),
                digest: d.digest.clone(),
            })?;
        ordered.push(scan);
    }
    Ok(assemble(
        target,
        digest,
        &ordered,
        Some(config_json),
        Vec::new(),
        opts.budgets.max_warnings,
    ))
}

/// Checks each layer of a docker-save archive against its config's `rootfs.diff_ids`
/// (the sha256 of the uncompressed layer), so a layer swapped in the archive is refused.
fn check_diff_ids(
    what: &str,
    config: &[u8],
    names: &[String],
    layers: &[LayerScan],
) -> Result<(), SourceError> {
    #[derive(Deserialize)]
    struct Config {
        rootfs: Option<RootFs>,
    }
    #[derive(Deserialize)]
    struct RootFs {
        #[serde(default)]
        diff_ids: Vec<String>,
    }
    let config: Config = serde_json::from_slice(config)
        .map_err(|e| SourceError::Invalid(format!("{what}: image config: {e}")))?;
    let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    if diff_ids.len() != layers.len() {
        return Err(SourceError::Invalid(format!(
            "{what}: manifest.json lists {} layers but the config's rootfs.diff_ids has {}",
            layers.len(),
            diff_ids.len()
        )));
    }
    for ((name, layer), expected) in names.iter().zip(layers).zip(&diff_ids) {
        let Some(actual) = &layer.diff_id else {
            continue;
        };
        if !expected.starts_with("sha256:") {
            return Err(SourceError::Unsupported(format!(
                "{what}: layer {name}: diff_id {:?} is not a sha256 digest; the layer cannot be verified",
                expected.chars().take(80).collect::<String>()
            )));
        }
        if actual != expected {
            return Err(SourceError::DigestMismatch {
                what: format!("{what}: layer {name} (rootfs.diff_ids)"),
                expected: expected.clone(),
                actual: actual.clone(),
            });
        }
    }
    Ok(())
}

/// Reads an unpacked root filesystem. Symbolic links are never followed.
pub fn scan_dir(
    target: &ImageRef,
    root: &Path,
    opts: &PullOptions,
    analyzers: &[Box<dyn Analyzer>],
) -> Result<ScannedImage, SourceError> {
    use std::os::unix::fs::PermissionsExt;
    let what = target.to_string();
    let limits = opts.layer_options(0, 0, false);
    let cap_of = |a: &dyn Analyzer| a.size_cap().min(limits.max_file_bytes);
    let mut scan = LayerScan::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if dir == root => {
                return Err(SourceError::Io {
                    what: format!("{what}: cannot read"),
                    source: e,
                })
            }
            Err(e) => {
                scan.warn(format!("{}: cannot read: {e}", dir.display()));
                continue;
            }
        };
        for entry in entries.flatten() {
            let p = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p);
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            let Ok(rel) = p.strip_prefix(root) else {
                continue;
            };
            let rel = rel.to_string_lossy().into_owned();
            let fm = FileMeta {
                path: &rel,
                mode: meta.permissions().mode(),
                size: meta.len(),
            };
            let wanting: Vec<&dyn Analyzer> = analyzers
                .iter()
                .map(|a| a.as_ref())
                .filter(|a| a.wants(&fm))
                .collect();
            if wanting.is_empty() {
                continue;
            }
            // Mode-only analyzers (setuid, world-writable) judge the file as in an image layer.
            let mut result = FileResult {
                output: Output::with_limit(
                    limits
                        .max_retained_bytes
                        .saturating_sub(scan.retained_bytes),
                ),
            };
            let (by_meta, wanting): (Vec<&dyn Analyzer>, Vec<&dyn Analyzer>) =
                wanting.into_iter().partition(|a| a.metadata_only());
            for a in by_meta {
                a.analyze_meta(&fm, &mut result.output);
            }
            let wanting: Vec<&dyn Analyzer> = wanting
                .into_iter()
                .filter(|a| {
                    let fits = meta.len() <= cap_of(*a);
                    if !fits {
                        result.output.warn(format!(
                            "{rel}: {} bytes is over the {} analyzer's cap of {} bytes (--max-file-bytes); skipped",
                            meta.len(),
                            a.name(),
                            cap_of(*a)
                        ));
                    }
                    fits
                })
                .collect();
            if wanting.is_empty() {
                scan.files.insert(rel, result);
                continue;
            }
            let cap = wanting.iter().map(|a| cap_of(*a)).max().unwrap_or(0);
            let mut data = Vec::new();
            let read = File::open(&p).and_then(|f| f.take(cap).read_to_end(&mut data));
            if let Err(e) = read {
                scan.warn(format!("{rel}: cannot read: {e}"));
                continue;
            }
            for a in wanting {
                if a.elf_only() && !data.starts_with(b"\x7fELF") {
                    continue;
                }
                a.analyze_file(&fm, &data, &mut result.output);
            }
            scan.retained_bytes += result.output.approx_bytes() + rel.len() as u64 + 64;
            let over = result.output.over_limit();
            scan.files.insert(rel, result);
            if over || scan.retained_bytes > limits.max_retained_bytes {
                return Err(layer::LayerError::RetainedOverBudget {
                    digest: what,
                    limit: limits.max_retained_bytes,
                }
                .into());
            }
        }
    }
    Ok(assemble(
        target,
        None,
        &[scan],
        None,
        Vec::new(),
        opts.budgets.max_warnings,
    ))
}
