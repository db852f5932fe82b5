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
