//! The vulnerability database as an OCI artifact, for clusters that reach only their own
//! registry: `imagewarden db push` stores a compiled index (or OSV `all.zip` files) in a
//! registry, and `--db oci://HOST/REPO:TAG` (HTTPS) or `--db oci+http://HOST/REPO:TAG`
//! (plain HTTP) reads it back with the scanner's registry client: within the egress policy
//! (every address checked as it is connected to), every blob's digest verified.
//!
//! Credentials come from the Docker config (`DOCKER_CONFIG` or `~/.docker/config.json`);
//! extra CA certificates from the PEM file named by `IMAGEWARDEN_DB_CA_FILE`.

use anyhow::{bail, Context as _};
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::{Client, Reference};

use crate::layer::Digester;
use crate::registry::{RegistryAccess, RegistryClient, RegistryError};
use crate::source::oci::{parse_manifest, verify_digest, Manifest, OCI_MANIFEST};
use crate::source::{registry_auth, registry_credentials, RegistryCredentials};

/// Media type of a layer holding a compiled index (`imagewarden db build` output).
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.imagewarden.vulndb.index.v1";
/// Media type of a layer holding an OSV `all.zip`.
pub const ZIP_MEDIA_TYPE: &str = "application/zip";
/// Media type of the artifact's config (the index metadata as JSON).
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.imagewarden.vulndb.config.v1+json";
/// Largest database layer pulled (the size its manifest declares, and what is read).
pub const MAX_LAYER_BYTES: u64 = 4 << 30;

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
    /// Where the registry may be: every address the pull connects to is checked.
    /// `None`: anywhere.
    pub egress: Option<std::sync::Arc<crate::egress::EgressPolicy>>,
}

/// The extra CA certificates: `opts.ca_pem`, else the file `IMAGEWARDEN_DB_CA_FILE` names.
fn ca_pem(opts: &OciOptions) -> anyhow::Result<Option<String>> {
    Ok(match &opts.ca_pem {
        Some(pem) => Some(pem.clone()),
        None => match std::env::var_os("IMAGEWARDEN_DB_CA_FILE") {
            Some(path) => Some(std::fs::read_to_string(&path).with_context(|| {
                format!("reading IMAGEWARDEN_DB_CA_FILE {}", path.to_string_lossy())
            })?),
            None => None,
        },
    })
}

/// The oci-client of pushes (run by a user of the CLI, who names the registry).
fn push_client(source: &OciSource, opts: &OciOptions) -> anyhow::Result<Client> {
    let mut config = ClientConfig {
        protocol: if source.insecure {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        ..Default::default()
    };
    if let Some(pem) = ca_pem(opts)? {
        config
            .extra_root_certificates
            .push(oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data: pem.into_bytes(),
            });
    }
    Ok(Client::new(config))
}

fn reference(source: &OciSource) -> anyhow::Result<Reference> {
    source.reference.parse().with_context(|| {
        format!(
            "{} is not an image reference (oci://HOST/REPOSITORY:TAG)",
            source.reference
        )
    })
}

/// The registry client of pulls: the registry of `reference`, with the Docker config's
/// credentials for it, within `opts.egress`.
fn pull_client(
    reference: &Reference,
    source: &OciSource,
    opts: &OciOptions,
) -> anyhow::Result<RegistryClient> {
    let registry = reference.resolve_registry();
    let egress = opts
        .egress
        .clone()
        .unwrap_or_else(|| std::sync::Arc::new(crate::egress::EgressPolicy::unrestricted()));
    let mut access = RegistryAccess::new(registry, source.insecure)?.with_egress(egress);
    access = access.with_docker_credential(registry_credentials(
        registry,
        &RegistryCredentials::from_environment(),
    )?);
    if let Some(pem) = ca_pem(opts)? {
        access = access.with_ca_pem(pem);
    }
    Ok(RegistryClient::for_pulls(&access)?)
}

/// The database layers of the artifact: `(media type, bytes)`, digests verified.
pub async fn pull(source: &OciSource, opts: &OciOptions) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let reference = reference(source)?;
    let what = &source.reference;
    let failed = |e: RegistryError| match e {
        RegistryError::EgressDenied { reason, .. } => {
            anyhow::anyhow!("the vulnerability database {what} is not fetched: {reason}")
        }
        other => {
            anyhow::Error::new(other).context(format!("pulling the vulnerability database {what}"))
        }
    };
    let client = pull_client(&reference, source, opts)?;
    let repository = reference.repository();
    let wanted = crate::source::registry::manifest_tag_or_digest(&reference);
    let (raw, _) = client
        .manifest_bytes(repository, wanted, &[OCI_MANIFEST])
        .await
        .map_err(failed)?;
    if let Some(expected) = reference.digest() {
        verify_digest(&raw, expected, what)?;
    }
    let layers = match parse_manifest(&raw, what)? {
        Manifest::Image { layers, .. } => layers,
        Manifest::Index(_) => bail!("{what} is an image index, not a database artifact"),
    };
    let mut out = Vec::new();
    for layer in layers {
        if layer.media_type != INDEX_MEDIA_TYPE && layer.media_type != ZIP_MEDIA_TYPE {
            continue;
        }
        let declared = u64::try_from(layer.size)
            .ok()
            .filter(|n| *n <= MAX_LAYER_BYTES)
            .with_context(|| {
                format!(
                    "{what}: layer {} declares {} bytes; at most {MAX_LAYER_BYTES} are pulled",
                    layer.digest, layer.size
                )
            })?;
        let mut digester = Digester::for_digest(&layer.digest)
            .map_err(|e| anyhow::anyhow!("{what}: layer {}: {e}", layer.digest))?;
        let mut response = client
            .blob(repository, &layer.digest)
            .await
            .map_err(failed)?;
        let mut data = Vec::with_capacity(declared.min(64 << 20) as usize);
        while let Some(chunk) = response
            .chunk()
            .await
            .with_context(|| format!("{what}: reading layer {}", layer.digest))?
        {
            if data.len() as u64 + chunk.len() as u64 > declared {
                bail!(
                    "{what}: layer {} is larger than the {declared} bytes its manifest declares",
                    layer.digest
                );
            }
            digester.update(&chunk);
            data.extend_from_slice(&chunk);
        }
        let got = digester.finish();
        if got != layer.digest || data.len() as u64 != declared {
            bail!(
                "{what}: layer {} does not match its digest and size ({} bytes read, digest {got})",
                layer.digest,
                data.len()
            );
        }
        out.push((layer.media_type, data));
    }
    if out.is_empty() {
        bail!("{what} holds no database layer ({INDEX_MEDIA_TYPE} or {ZIP_MEDIA_TYPE})");
    }
    Ok(out)
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
    let response = push_client(source, opts)?
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
