//! Image building blocks for inventory tests: layers made with the tar crate, OCI image
//! layouts written to temporary directories.
#![allow(dead_code)]

use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One entry of a layer being built.
pub enum Entry {
    File(String, Vec<u8>, u32),
    Dir(String),
    Symlink(String, String),
    /// A raw path written without the tar crate's own checks (for hostile paths).
    RawFile(Vec<u8>, Vec<u8>),
}

pub fn file(path: &str, content: impl AsRef<[u8]>) -> Entry {
    Entry::File(path.to_string(), content.as_ref().to_vec(), 0o644)
}

pub fn exe(path: &str, content: impl AsRef<[u8]>) -> Entry {
    Entry::File(path.to_string(), content.as_ref().to_vec(), 0o755)
}

/// An uncompressed tar layer.
pub fn tar_layer(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            Entry::File(path, data, mode) => {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(*mode);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, path, data.as_slice()).unwrap();
            }
            Entry::Dir(path) => {
                let mut h = tar::Header::new_gnu();
                h.set_size(0);
                h.set_mode(0o755);
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, path, std::io::empty()).unwrap();
            }
            Entry::Symlink(path, target) => {
                let mut h = tar::Header::new_gnu();
                h.set_size(0);
                h.set_mode(0o777);
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, path, target).unwrap();
            }
            Entry::RawFile(path, data) => {
                let mut h = tar::Header::new_old();
                {
                    let name = &mut h.as_old_mut().name;
                    name[..path.len()].copy_from_slice(path);
                }
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_cksum();
                b.append(&h, data.as_slice()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// An OCI image layout being written.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    pub fn blob(&self, data: &[u8]) -> String {
        let d = sha256(data);
        std::fs::write(
            self.dir.join("blobs/sha256").join(&d["sha256:".len()..]),
            data,
        )
        .unwrap();
        d
    }

    /// Writes config and manifest for gzip layers; returns the manifest descriptor JSON.
    pub fn image(&self, layers: &[Vec<u8>], platform: Option<(&str, &str)>) -> serde_json::Value {
        let descs: Vec<serde_json::Value> = layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": self.blob(l),
                    "size": l.len(),
                })
            })
            .collect();
        let (os, arch) = platform.unwrap_or(("linux", "amd64"));
        let config = serde_json::json!({
            "architecture": arch, "os": os,
            "config": {"User": "app", "Env": ["PATH=/usr/bin", "API_TOKEN=abc"], "ExposedPorts": {"8080/tcp": {}}},
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [{"created_by": "test"}]
        });
        let config = serde_json::to_vec(&config).unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": self.blob(&config), "size": config.len()},
            "layers": descs,
        });
        let manifest = serde_json::to_vec(&manifest).unwrap();
        let mut d = serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": self.blob(&manifest),
            "size": manifest.len(),
        });
        if let Some((os, arch)) = platform {
            d["platform"] = serde_json::json!({"os": os, "architecture": arch});
        }
        d
    }

    pub fn index(&self, manifests: Vec<serde_json::Value>) {
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }

    /// A single-image layout from gzip layers.
    pub fn single(dir: &Path, layers: &[Vec<u8>]) -> Layout {
        let l = Layout::new(dir);
        let m = l.image(layers, None);
        l.index(vec![m]);
        l
    }
}

pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// Runs a local scan on the current thread.
pub fn scan(
    target: &str,
) -> Result<imagewarden_scanner::source::ScannedImage, imagewarden_scanner::source::SourceError> {
    let t = imagewarden_scanner::source::ImageRef::parse(target).unwrap();
    let analyzers = imagewarden_scanner::analyzer::default_analyzers();
    imagewarden_scanner::source::read_local(&t, &Default::default(), &analyzers)
}

/// `name@version` of every package of an ecosystem.
pub fn names(
    inv: &imagewarden_scanner::inventory::Inventory,
    eco: imagewarden_scanner::inventory::Ecosystem,
) -> Vec<String> {
    inv.packages
        .iter()
        .filter(|p| p.ecosystem == eco)
        .map(|p| format!("{}@{}", p.name, p.version))
        .collect()
}

/// The layer from a docker-save archive (the single `*/layer.tar` of alpine-3xx.tar.gz).
pub fn docker_archive_layer(archive: &Path) -> Vec<u8> {
    use std::io::Read;
    let f = std::fs::File::open(archive).unwrap();
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy().ends_with("layer.tar") {
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            return v;
        }
    }
    panic!("no layer.tar in {}", archive.display());
}

/// The dpkg status member of the txtar fixture (the `-- name --` wrapper stripped).
pub fn txtar_member(path: &Path, member: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let marker = format!("-- {member} --\n");
    let start = text.find(&marker).expect("member in txtar") + marker.len();
    let rest = &text[start..];
    let end = rest.find("\n-- ").map(|i| i + 1).unwrap_or(rest.len());
    rest[..end].to_string()
}

/// A docker-save archive: layers named `layerN/layer.tar`, the config's diff_ids as given.
pub fn docker_archive(
    path: &Path,
    layers: &[Vec<u8>],
    diff_ids: &[String],
    extra: &[(&str, Vec<u8>)],
) {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
    };
    let names: Vec<String> = (0..layers.len())
        .map(|i| format!("layer{i}/layer.tar"))
        .collect();
    for (name, data) in names.iter().zip(layers) {
        add(name, data);
    }
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    add("config.json", &serde_json::to_vec(&config).unwrap());
    for (name, data) in extra {
        add(name, data);
    }
    let manifest =
        serde_json::json!([{"Config": "config.json", "RepoTags": ["t:1"], "Layers": names}]);
    if !extra.iter().any(|(n, _)| *n == "manifest.json") {
        add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    }
    std::fs::write(path, b.into_inner().unwrap()).unwrap();
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A stored (uncompressed) zip: `files` are written once each; `central` lists
/// (name, index into `files`) entries, so several may point at the same bytes.
pub fn stored_zip(files: &[(&str, &[u8])], central: &[(String, usize)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offsets = Vec::new();
    let crcs: Vec<u32> = files.iter().map(|(_, data)| crc32(data)).collect();
    for ((name, data), crc) in files.iter().zip(&crcs) {
        offsets.push(out.len() as u32);
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
    }
    let cd_start = out.len() as u32;
    for (name, i) in central {
        let data = files[*i].1;
        out.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        out.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&crcs[*i].to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0; 12]);
        out.extend_from_slice(&offsets[*i].to_le_bytes());
        out.extend_from_slice(name.as_bytes());
    }
    let cd_len = out.len() as u32 - cd_start;
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(central.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u16).to_le_bytes());
    out.extend_from_slice(&cd_len.to_le_bytes());
    out.extend_from_slice(&cd_start.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}
