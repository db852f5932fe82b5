//! The vulnerability database as an OCI artifact, for clusters that reach only their own
//! registry: `imagewarden db push` stores a compiled index (or OSV `all.zip` files) in a
//! registry, and `--db oci://HOST/REPO:TAG` (HTTPS) or `--db oci+http://HOST/REPO:TAG`
//! (plain HTTP) reads it back with oci-client, which verifies every blob's digest.
//!
//! Credentials come from the Docker config (`DOCKER_CONFIG` or `~/.docker/config.json`);
//! extra CA certificates from the PEM file named by `IMAGEWARDEN_DB_CA_FILE`.

use anyhow::{bail, Context as _};
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::{Client, Reference};

use crate::source::{registry_auth, RegistryCredentials};

/// Media type of a layer holding a compiled index (`imagewarden db build` output).
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.imagewarden.vulndb.index.v1";
/// Media type of a layer holding an OSV `all.zip`.
pub const ZIP_MEDIA_TYPE: &str = "application/zip";
/// Media type of the artifact's config (the index metadata as JSON).
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.imagewarden.vulndb.config.v1+json";

/// A database artifact location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciSource {
    /// `host[:port]/repository:tag` or `...@sha256:...`.
    pub reference: String,
    /// Plain HTTP (`oci+http://`).
    pub insecure: bool,
}

impl OciSource {
    /// Parses `oci://REF` or `oci+http://REF`; `None` for other sources.
    pub fn parse(source: &str) -> Option<OciSource> {
        if let Some(r) = source.strip_prefix("oci://") {
            return Some(OciSource {
                reference: r.to_string(),
                insecure: false,
            });
        }
        source.strip_prefix("oci+http://").map(|r| OciSource {
            reference: r.to_string(),
            insecure: true,
        })
    }
}

/// Settings of the registry client.
#[derive(Debug, Clone, Default)]
pub struct OciOptions {
    /// Extra CA certificates (PEM); default: the file named by `IMAGEWARDEN_DB_CA_FILE`.
    pub ca_pem: Option<String>,
    /// Where the registry may be: its host's addresses are checked before the pull.
    /// `None`: anywhere.
    pub egress: Option<std::sync::Arc<crate::egress::EgressPolicy>>,
}

fn client(source: &OciSource, opts: &OciOptions) -> anyhow::Result<Client> {
    let mut config = ClientConfig {
        protocol: if source.insecure {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        ..Default::default()
    };
    let ca = match &opts.ca_pem {
        Some(pem) => Some(pem.clone()),
        None => match std::env::var_os("IMAGEWARDEN_DB_CA_FILE") {
            Some(path) => Some(std::fs::read_to_string(&path).with_context(|| {
                format!("reading IMAGEWARDEN_DB_CA_FILE {}", path.to_string_lossy())
            })?),
            None => None,
        },
    };
    if let Some(pem) = ca {
        config
            .extra_root_certificates
            .push(oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data: pem.into_bytes(),
            });
    }
    Ok(Client::new(config))
}

/// `host` and port of `host[:port]` (IPv6 literals in brackets).
fn split_host_port(registry: &str, default_port: u16) -> (&str, u16) {
    if let Some(rest) = registry.strip_prefix('[') {
        if let Some((ip, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
            return (ip, port.unwrap_or(default_port));
        }
    }
    match registry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().unwrap_or(default_port)),
        _ => (registry, default_port),
    }
}

fn reference(source: &OciSource) -> anyhow::Result<Reference> {
    source.reference.parse().with_context(|| {
        format!(
            "{} is not an image reference (oci://HOST/REPOSITORY:TAG)",
            source.reference
        )
    })
}

/// The database layers of the artifact: `(media type, bytes)`, digests verified.
pub async fn pull(source: &OciSource, opts: &OciOptions) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let reference = reference(source)?;
    if let Some(egress) = &opts.egress {
        let registry = reference.resolve_registry();
        let (host, port) = split_host_port(registry, if source.insecure { 80 } else { 443 });
        egress.check_host(host, port).await.map_err(|denial| {
            anyhow::anyhow!(
                "the vulnerability database {} is not fetched: {denial}",
                source.reference
            )
        })?;
    }
    let auth = registry_auth(
        reference.resolve_registry(),
        &RegistryCredentials::from_environment(),
    )?;
    let image = client(source, opts)?
        .pull(&reference, &auth, vec![INDEX_MEDIA_TYPE, ZIP_MEDIA_TYPE])
        .await
        .with_context(|| format!("pulling the vulnerability database {}", source.reference))?;
    if image.layers.is_empty() {
        bail!(
            "{} holds no database layer ({INDEX_MEDIA_TYPE} or {ZIP_MEDIA_TYPE})",
            source.reference
        );
    }
    Ok(image
        .layers
        .into_iter()
        .map(|l| (l.media_type, l.data.to_vec()))
        .collect())
}

/// Pushes a compiled index as a database artifact; returns the manifest URL.
pub async fn push_index(
    index: Vec<u8>,
    info_json: Vec<u8>,
    source: &OciSource,
    opts: &OciOptions,
) -> anyhow::Result<String> {
    let reference = reference(source)?;
    let auth = registry_auth(
        reference.resolve_registry(),
        &RegistryCredentials::from_environment(),
    )?;
    let layer = ImageLayer::new(index, INDEX_MEDIA_TYPE.to_string(), None);
    let config = Config::new(info_json, CONFIG_MEDIA_TYPE.to_string(), None);
    let response = client(source, opts)?
        .push(&reference, &[layer], config, &auth, None)
        .await
        .with_context(|| format!("pushing the vulnerability database to {}", source.reference))?;
    Ok(response.manifest_url)
}

/// Runs `fut` to completion from synchronous code (a fresh runtime on this thread).
pub(crate) fn block_on<F: std::future::Future>(fut: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the registry client runtime")?;
    Ok(runtime.block_on(fut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_with_their_transport() {
        assert_eq!(
            OciSource::parse("oci://r.example.com/imagewarden/db:1"),
            Some(OciSource {
                reference: "r.example.com/imagewarden/db:1".into(),
                insecure: false
            })
        );
        assert!(
            OciSource::parse("oci+http://127.0.0.1:5000/db:1")
                .unwrap()
                .insecure
        );
        assert_eq!(OciSource::parse("/var/lib/db"), None);
    }
}
