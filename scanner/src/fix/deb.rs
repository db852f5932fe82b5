//! `.deb` files (an `ar` archive of `control.tar.*` and `data.tar.*`) and the one layer a
//! fix adds: the new files of each upgraded package, whiteouts for files the old version
//! had and the new one lacks, and dpkg's database rewritten. Maintainer scripts are never
//! run: packages that carry them are named in the fix's warnings.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;

use md5::{Digest as _, Md5};

use super::control::{stanzas, Stanza};
use super::layer::{for_each_entry, FixLayer, LayerWriter};
use super::FixError;
use crate::layer::normalize_entry_path;

/// Largest uncompressed size of one package's control or data archive.
pub const MAX_MEMBER_BYTES: u64 = 512 << 20;

/// Maintainer scripts dpkg would run.
const MAINTAINER_SCRIPTS: &[&str] = &["preinst", "postinst", "prerm", "postrm", "config"];

/// One `.deb`, read.
pub struct DebPackage {
    pub control: Stanza,
    /// Control members other than `control` (`md5sums`, `conffiles`, `triggers`, scripts...).
    pub control_files: BTreeMap<String, Vec<u8>>,
    /// The uncompressed data tar.
    pub data: Vec<u8>,
}

impl DebPackage {
    /// Reads a `.deb` (`what` names it in errors).
    pub fn read(what: &str, deb: &[u8]) -> Result<DebPackage, FixError> {
        let bad = |why: String| FixError::Package(format!("{what}: {why}"));
        let members = ar_members(deb).map_err(bad)?;
        let find = |prefix: &str| {
            members
                .iter()
                .find(|(name, _)| name.starts_with(prefix))
                .ok_or_else(|| bad(format!("has no {prefix}* member")))
        };
        let (control_name, control_tar) = find("control.tar")?;
        let (data_name, data_tar) = find("data.tar")?;
        let control_tar = decompress(control_name, control_tar).map_err(bad)?;
        let data = decompress(data_name, data_tar).map_err(bad)?;
        let mut control = None;
        let mut control_files = BTreeMap::new();
        let mut archive = tar::Archive::new(control_tar.as_slice());
        for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
            let mut entry = entry.map_err(|e| bad(e.to_string()))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let raw = entry.path_bytes().into_owned();
            let Some(name) = normalize_entry_path(&raw) else {
                continue;
            };
            if name.contains('/') {
                continue;
            }
            let mut body = Vec::new();
            entry
                .read_to_end(&mut body)
                .map_err(|e| bad(e.to_string()))?;
            if name == "control" {
                let text =
                    String::from_utf8(body).map_err(|_| bad("control is not UTF-8".into()))?;
                control = stanzas(&text).map_err(bad)?.into_iter().next();
            } else {
                control_files.insert(name, body);
            }
        }
        let control = control.ok_or_else(|| bad("has no control file".into()))?;
        Ok(DebPackage {
            control,
            control_files,
            data,
        })
    }

    /// The maintainer scripts it carries (which the fix does not run).
    pub fn scripts(&self) -> Vec<&str> {
        MAINTAINER_SCRIPTS
            .iter()
            .copied()
            .filter(|s| self.control_files.contains_key(*s))
            .collect()
    }

    /// Conffiles (paths without the leading `/`).
    pub fn conffiles(&self) -> BTreeSet<String> {
        self.control_files
            .get("conffiles")
            .map(|c| {
                String::from_utf8_lossy(c)
                    .lines()
                    .map(|l| l.trim().trim_start_matches('/').to_string())
                    .filter(|l| !l.is_empty() && !l.starts_with("remove-on-upgrade"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The members of an `ar` archive, by name.
fn ar_members(data: &[u8]) -> Result<Vec<(String, &[u8])>, String> {
    let mut rest = data
        .strip_prefix(b"!<arch>\n")
        .ok_or("not an ar archive (a .deb)")?;
    let mut out = Vec::new();
    while rest.len() >= 60 {
        let header = &rest[..60];
        if &header[58..60] != b"`\n" {
            return Err("a corrupt ar member header".into());
        }
        let name = String::from_utf8_lossy(&header[..16])
            .trim()
            .trim_end_matches('/')
            .to_string();
        let size: usize = String::from_utf8_lossy(&header[48..58])
            .trim()
            .parse()
            .map_err(|_| "an ar member size that is not a number")?;
        let body = rest
            .get(60..60 + size)
            .ok_or("an ar member runs past the end")?;
        out.push((name, body));
        let next = 60 + size + (size % 2);
        rest = rest.get(next..).unwrap_or(&[]);
        if out.len() > 16 {
            return Err("more ar members than a .deb has".into());
        }
    }
    Ok(out)
}

/// A tar member of a `.deb` decompressed by its name's suffix, bounded.
fn decompress(name: &str, data: &[u8]) -> Result<Vec<u8>, String> {
    let reader: Box<dyn Read + '_> = if name.ends_with(".xz") {
        Box::new(lzma_rust2::XzReader::new(data, true))
    } else if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(data))
    } else if name.ends_with(".zst") {
        Box::new(ruzstd::decoding::StreamingDecoder::new(data).map_err(|e| format!("{name}: {e}"))?)
    } else if name.ends_with(".tar") {
        Box::new(data)
    } else {
        return Err(format!("{name}: unsupported compression"));
    };
    let mut out = Vec::new();
    reader
        .take(MAX_MEMBER_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{name}: {e}"))?;
    if out.len() as u64 > MAX_MEMBER_BYTES {
        return Err(format!(
            "{name}: more than {MAX_MEMBER_BYTES} bytes uncompressed"
        ));
    }
    Ok(out)
}

/// What the image holds of dpkg's database and configuration, read before the fix.
#[derive(Debug, Default)]
pub struct ImageFiles {
    /// Files by path (no leading `/`): the status file, `info/*` files, keyrings, sources
    /// lists and small files under `etc/` (to keep conffiles the image changed).
    pub files: HashMap<String, Vec<u8>>,
}

impl ImageFiles {
    /// `/var/lib/dpkg/status`.
    pub fn status(&self) -> Option<&[u8]> {
        self.files.get(STATUS).map(Vec::as_slice)
    }

    /// The `info/` base name dpkg uses for a package: `name:arch` when the image has it so
    /// (Multi-Arch: same), else `name`.
    fn info_name(&self, name: &str, arch: &str) -> String {
        let qualified = format!("{name}:{arch}");
        if self.files.contains_key(&format!("{INFO}/{qualified}.list")) {
            qualified
        } else {
            name.to_string()
        }
    }
}

pub const STATUS: &str = "var/lib/dpkg/status";
pub const INFO: &str = "var/lib/dpkg/info";

/// Writes the layer that replaces each `(installed name, new package)` in the image.
pub fn build_layer(
    image: &ImageFiles,
    packages: &[(String, DebPackage)],
) -> Result<FixLayer, FixError> {
    let status_text = image
        .status()
        .ok_or_else(|| FixError::Invalid("the image has no /var/lib/dpkg/status".into()))?;
    let status_text = String::from_utf8(status_text.to_vec())
        .map_err(|_| FixError::Invalid("/var/lib/dpkg/status is not UTF-8".into()))?;
    let mut status = stanzas(&status_text)
        .map_err(|e| FixError::Invalid(format!("/var/lib/dpkg/status: {e}")))?;
    // Every path some package keeps, so a path another package still lists is not deleted.
    let mut listed_elsewhere: HashMap<String, usize> = HashMap::new();
    for (path, body) in &image.files {
        if path.starts_with(INFO) && path.ends_with(".list") {
            for line in String::from_utf8_lossy(body).lines() {
                *listed_elsewhere.entry(line.to_string()).or_default() += 1;
            }
        }
    }
    let mut layer = LayerWriter::new();
    let mut scripts_not_run = Vec::new();
    let mut kept_conffiles = Vec::new();
    for (name, deb) in packages {
        let arch = deb.control.get("Architecture").unwrap_or("").to_string();
        let info = image.info_name(name, &arch);
        let old_list_path = format!("{INFO}/{info}.list");
        let old_list: Vec<String> = image
            .files
            .get(&old_list_path)
            .map(|b| {
                String::from_utf8_lossy(b)
                    .lines()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let old_stanza = status
            .iter()
            .find(|s| s.get("Package") == Some(name.as_str()) && arch_of(s) == arch)
            .cloned();
        let old_conffiles = old_stanza
            .as_ref()
            .map(recorded_conffiles)
            .unwrap_or_default();
        let conffiles = deb.conffiles();
        let mut new_list = vec!["/.".to_string()];
        let mut conffile_md5 = BTreeMap::new();
        for_each_entry(name, &deb.data, |entry| {
            let path = &entry.path;
            new_list.push(format!("/{path}"));
            if conffiles.contains(path) {
                conffile_md5.insert(path.clone(), hex::encode(Md5::digest(&entry.body)));
                // A conffile the image changed (its content differs from what the old
                // version recorded) stays as it is, as dpkg keeps it by default.
                if let (Some(have), Some(recorded)) =
                    (image.files.get(path), old_conffiles.get(path))
                {
                    if &hex::encode(Md5::digest(have)) != recorded {
                        kept_conffiles.push(format!("/{path}"));
                        return Ok(());
                    }
                }
            }
            layer.copy(&entry)
        })?;
        // Files the old version had and the new one lacks, unless another package lists
        // them or they are directories of what stays.
        let new_set: BTreeSet<&str> = new_list.iter().map(String::as_str).collect();
        for old in &old_list {
            if old == "/." || new_set.contains(old.as_str()) {
                continue;
            }
            if listed_elsewhere.get(old).copied().unwrap_or(0) > 1 {
                continue;
            }
            let prefix = format!("{old}/");
            if old_list.iter().any(|p| p.starts_with(&prefix)) {
                continue;
            }
            layer.whiteout(old.trim_start_matches('/'));
        }
        // dpkg's info files: the new list, the new control members, whiteouts for old
        // control members the new version lacks.
        let mut info_files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut list_text = new_list.join("\n");
        list_text.push('\n');
        info_files.insert(format!("{INFO}/{info}.list"), list_text.into_bytes());
        for (member, body) in &deb.control_files {
            info_files.insert(format!("{INFO}/{info}.{member}"), body.clone());
        }
        let old_prefix = format!("{INFO}/{info}.");
        for old in image.files.keys().filter(|p| p.starts_with(&old_prefix)) {
            if !info_files.contains_key(old) {
                layer.whiteout(old);
            }
        }
        for (path, body) in &info_files {
            layer.file(path, body, 0o644)?;
        }
        let scripts = deb.scripts();
        if !scripts.is_empty() {
            scripts_not_run.push((
                name.clone(),
                scripts.into_iter().map(str::to_string).collect(),
            ));
        }
        // The status entry: the new control fields, the old entry's Status, the new
        // conffiles' MD5s.
        let mut entry = deb.control.clone();
        let state = old_stanza
            .as_ref()
            .and_then(|s| s.get("Status"))
            .unwrap_or("install ok installed")
            .to_string();
        entry.remove("Status");
        entry.insert_after("Package", "Status", &state);
        if !conffile_md5.is_empty() {
            let value: String = conffile_md5
                .iter()
                .map(|(p, m)| format!("\n /{p} {m}"))
                .collect();
            entry.set("Conffiles", &value);
        }
        match status
            .iter_mut()
            .find(|s| s.get("Package") == Some(name.as_str()) && arch_of(s) == arch)
        {
            Some(s) => *s = entry,
            None => status.push(entry),
        }
    }
    let mut text = String::new();
    for (i, s) in status.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        s.write(&mut text);
    }
    layer.file(STATUS, text.as_bytes(), 0o644)?;
    layer.finish(scripts_not_run, kept_conffiles)
}

fn arch_of(s: &Stanza) -> String {
    s.get("Architecture").unwrap_or("").to_string()
}

/// `path → md5` of a status entry's `Conffiles`.
fn recorded_conffiles(s: &Stanza) -> HashMap<String, String> {
    s.get("Conffiles")
        .unwrap_or("")
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((
                parts.next()?.trim_start_matches('/').to_string(),
                parts.next()?.to_string(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ar_members_are_read_and_truncation_is_refused() {
        let mut ar = b"!<arch>\n".to_vec();
        for (name, body) in [("debian-binary", &b"2.0\n"[..]), ("odd", &b"abc"[..])] {
            ar.extend_from_slice(
                format!(
                    "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    0,
                    0,
                    0,
                    100644,
                    body.len()
                )
                .as_bytes(),
            );
            ar.extend_from_slice(body);
            if body.len() % 2 == 1 {
                ar.push(b'\n');
            }
        }
        let m = ar_members(&ar).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1], ("odd".to_string(), &b"abc"[..]));
        assert!(ar_members(&ar[..ar.len() - 3]).is_err());
        assert!(DebPackage::read("x.deb", b"not a deb").is_err());
    }
}
