//! Small OCI images built by test code, and pushing them to a registry.

use std::io::Write;

use anyhow::{Context, Result};
use flate2::write::GzEncoder;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};

use crate::registry::{Registry, RegistryMode};

/// Builds one layer: an uncompressed tar, gzipped on [`LayerBuilder::finish`].
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> Self {
        Self {
            tar: tar::Builder::new(Vec::new()),
        }
    }

    /// Adds a regular file with the given mode.
    pub fn file(mut self, path: &str, mode: u32, contents: &[u8]) -> Result<Self> {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(mode);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mtime(1_700_000_000);
        self.tar.append_data(&mut header, path, contents)?;
        Ok(self)
    }

    /// Adds a directory.
    pub fn dir(mut self, path: &str) -> Result<Self> {
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o755);
        header.set_entry_type(tar::EntryType::Directory);
        self.tar.append_data(&mut header, path, std::io::empty())?;
        Ok(self)
    }

    /// The finished layer.
    pub fn finish(self) -> Result<Layer> {
        let tar = self.tar.into_inner()?;
        let diff_id = sha256(&tar);
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar)?;
        Ok(Layer {
            gzip: gz.finish()?,
            diff_id,
        })
    }
}

/// A gzipped layer and the digest of its uncompressed tar.
#[derive(Clone)]
pub struct Layer {
    pub gzip: Vec<u8>,
    pub diff_id: String,
}

/// An image: layers and the config fields tests care about.
#[derive(Clone, Default)]
pub struct TestImage {
    pub layers: Vec<Layer>,
    /// `config.User`; empty means root.
    pub user: String,
    /// `config.Env`.
    pub env: Vec<String>,
}

impl TestImage {
    /// The OCI image config JSON.
    pub fn config_json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "User": self.user, "Env": self.env },
            "rootfs": {
                "type": "layers",
                "diff_ids": self.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
            },
            "history": self.layers.iter().map(|_| serde_json::json!({"created_by": "imagewarden test"})).collect::<Vec<_>>(),
        }))
        .expect("config serializes")
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// An oci-client for `registry`, trusting its CA.
pub fn client_for(registry: &Registry) -> Client {
    let mut config = ClientConfig {
        protocol: match registry.mode {
            RegistryMode::Plain => ClientProtocol::Http,
            _ => ClientProtocol::Https,
        },
        ..Default::default()
    };
    if let Some(ca) = registry.ca_pem() {
        config
            .extra_root_certificates
            .push(oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data: ca.as_bytes().to_vec(),
            });
    }
    Client::new(config)
}

/// The credentials of `registry` for oci-client (anonymous unless it has htpasswd auth).
pub fn auth_for(registry: &Registry) -> RegistryAuth {
    match registry.credentials() {
        Some((user, password)) => RegistryAuth::Basic(user.into(), password.into()),
        None => RegistryAuth::Anonymous,
    }
}

/// Pushes `image` as `repository:tag` and returns the manifest digest.
pub async fn push_image(
    registry: &Registry,
    repository: &str,
    tag: &str,
    image: &TestImage,
) -> Result<String> {
    push_image_with(
        &client_for(registry),
        &auth_for(registry),
        &registry.host,
        repository,
        tag,
        image,
    )
    .await
}

/// Pushes `image` as `host/repository:tag` with `client` and returns the manifest digest.
pub async fn push_image_with(
    client: &Client,
    auth: &RegistryAuth,
    host: &str,
    repository: &str,
    tag: &str,
    image: &TestImage,
) -> Result<String> {
    let reference: Reference = format!("{host}/{repository}:{tag}").parse()?;
    let layers: Vec<ImageLayer> = image
        .layers
        .iter()
        .map(|l| ImageLayer::oci_v1_gzip(l.gzip.clone(), None))
        .collect();
    let config = Config::oci_v1(image.config_json(), None);
    client
        .push(&reference, &layers, config, auth, None)
        .await
        .with_context(|| format!("pushing {reference}"))?;
    let (_, digest) = client
        .pull_image_manifest(&reference, auth)
        .await
        .with_context(|| format!("reading back {reference}"))?;
    Ok(digest)
}
