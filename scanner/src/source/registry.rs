//! Registry pulls: manifests and config in memory, layers streamed through the layer walk
//! and never written to disk; every request through the one [`RegistryClient`], within the
//! pull's egress policy.

use super::oci::{self, Manifest};
use super::progress::{bar, label, ProgressReader};
use super::{assemble, ImageRef, PullOptions, ScannedImage, SourceError};
use crate::analyzer::Analyzer;
use crate::egress::EgressPolicy;
use crate::layer::{scan_layer_with, LayerError, LayerScan};
use crate::registry::{
    Credentials, CredentialsError, DockerConfig, DockerCredential, HelperPolicy, RegistryAccess,
    RegistryClient, RegistryError,
};
use futures::StreamExt;
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::io::{StreamReader, SyncIoBridge};

/// Where registry credentials come from. Explicit values win over the Docker config file.
#[derive(Debug, Clone, Default)]
pub struct RegistryCredentials {
    pub username: Option<String>,
    pub password: Option<String>,
    /// A bearer token sent as is.
    pub bearer_token: Option<String>,
    /// A Docker `config.json` (or the directory holding one, as `DOCKER_CONFIG` names it),
    /// read with its credential helpers. Nothing is read when unset: see
    /// [`RegistryCredentials::from_environment`] for the user's own.
    pub docker_config: Option<PathBuf>,
}

impl RegistryCredentials {
    /// The user's own Docker config: `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`, when it exists.
    pub fn from_environment() -> Self {
        Self {
            docker_config: default_docker_config(),
            ..Default::default()
        }
    }
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, when it exists.
pub fn default_docker_config() -> Option<PathBuf> {
    let path = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => PathBuf::from(dir).join("config.json"),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".docker/config.json"),
    };
    path.exists().then_some(path)
}

/// The credentials to use for `registry` (`host[:port]`): explicit ones, else what the
/// Docker config (and the credential helpers it names) holds for it.
pub fn registry_credentials(
    registry: &str,
    creds: &RegistryCredentials,
) -> Result<Option<DockerCredential>, SourceError> {
    if let Some(t) = &creds.bearer_token {
        return Ok(Some(DockerCredential::Bearer(t.clone())));
    }
    if let Some(u) = &creds.username {
        return Ok(Some(DockerCredential::Basic(Credentials::new(
            u.clone(),
            creds.password.clone().unwrap_or_default(),
        ))));
    }
    let Some(path) = &creds.docker_config else {
        return Ok(None);
    };
    // A directory is taken the way DOCKER_CONFIG is.
    let path = if path.is_dir() {
        path.join("config.json")
    } else {
        path.clone()
    };
    let invalid = |e: &dyn std::fmt::Display| {
        SourceError::Invalid(format!("registry config {}: {e}", path.display()))
    };
    let bytes = std::fs::read(&path).map_err(SourceError::io(format!(
        "registry config {}",
        path.display()
    )))?;
    DockerConfig::parse(&bytes, "config.json")
        .and_then(|config| config.credentials_for(registry, &HelperPolicy::run()))
        .map_err(|e| invalid(&e))
}

/// [`registry_credentials`] for oci-client (database pulls and pushes).
pub fn registry_auth(
    registry: &str,
    creds: &RegistryCredentials,
) -> Result<RegistryAuth, SourceError> {
    Ok(match registry_credentials(registry, creds)? {
        Some(DockerCredential::Basic(c)) => RegistryAuth::Basic(c.username, c.password),
        Some(DockerCredential::Bearer(t)) => RegistryAuth::Bearer(t),
        Some(DockerCredential::IdentityToken(_)) => {
            return Err(SourceError::Invalid(
                CredentialsError::IdentityToken {
                    key: "config.json",
                    host: registry.to_string(),
                    user: "a database push or pull through oci://",
                }
                .to_string(),
            ))
        }
        None => RegistryAuth::Anonymous,
    })
}

/// A client for pulls from the registry of `reference`.
pub(crate) fn client(
    reference: &Reference,
    target: &str,
    opts: &PullOptions,
) -> Result<RegistryClient, SourceError> {
    let registry = reference.resolve_registry();
    let mut access = RegistryAccess::new(registry, opts.insecure)
        .map_err(|e| SourceError::Invalid(format!("{target}: {e}")))?
        .with_egress(
            opts.egress
                .clone()
                .unwrap_or_else(|| Arc::new(EgressPolicy::unrestricted())),
        );
    access = access.with_docker_credential(registry_credentials(registry, &opts.credentials)?);
    if let Some(ca) = &opts.ca_file {
        let pem = std::fs::read_to_string(ca)
            .map_err(SourceError::io(format!("CA file {}", ca.display())))?;
        access = access.with_ca_pem(pem);
    }
    Ok(
        RegistryClient::for_pulls_within(&access, opts.request_timeout)
            .map_err(|e| registry_error(target, e))?
            .with_max_manifest_bytes(opts.budgets.registry_manifest_bytes()),
    )
}

/// What to ask the registry's manifest endpoint for: the reference's digest, else its
/// tag, else `latest`.
pub(crate) fn manifest_tag_or_digest(reference: &Reference) -> &str {
    reference.digest().or(reference.tag()).unwrap_or("latest")
}

fn registry_error(target: &str, e: RegistryError) -> SourceError {
    SourceError::Registry {
        reference: target.to_string(),
        message: e.to_string(),
    }
}

/// Uncompressed bytes read and result bytes kept by layers.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    read: u64,
    kept: u64,
}

impl Usage {
    fn add(&mut self, scan: &LayerScan) {
        self.read = self.read.saturating_add(scan.uncompressed_size);
        self.kept = self.kept.saturating_add(scan.retained_bytes);
    }
}

/// Pulls one layer and reads it, with what is left of the scan's budgets after the layers
/// that `finished` counts (those read at the same time are checked afterwards, in order,
/// by [`within_budgets`]).
async fn pull_layer(
    client: &RegistryClient,
    repository: &str,
    target: &str,
    opts: &PullOptions,
    l: &oci::Descriptor,
    analyzers: Arc<Vec<Box<dyn Analyzer>>>,
    finished: &std::sync::Mutex<Usage>,
) -> Result<LayerScan, SourceError> {
    let response = client
        .blob(repository, l.digest.as_str())
        .await
        .map_err(|e| registry_error(target, e))?;
    let content_length = response.content_length();
    let size = (l.size > 0).then_some(l.size as u64);
    let progress = bar(
        opts.progress,
        size.or(content_length),
        label(opts, target, &l.digest),
    );
    let stream = response
        .bytes_stream()
        .map(|chunk| chunk.map_err(std::io::Error::other));
    let reader = SyncIoBridge::new(StreamReader::new(stream));
    let before = *finished.lock().unwrap_or_else(|e| e.into_inner());
    let layer_opts = opts.layer_options(before.read, before.kept, false);
    let digest = l.digest.clone();
    let scan = tokio::task::spawn_blocking(move || {
        let reader = ProgressReader {
            inner: reader,
            bar: progress,
        };
        scan_layer_with(reader, Some(&digest), size, &analyzers, &layer_opts)
    })
    .await
    .map_err(|e| SourceError::Invalid(format!("{target}: layer task failed: {e}")))??;
    finished
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .add(&scan);
    Ok(scan)
}

/// A layer's result as reading the layers one after another gives it: a layer read beside
/// others started with more of the budgets left than the layers below it leave, so the
/// budgets are checked again over the layers in order, failing on the same layer.
fn within_budgets(
    result: Result<LayerScan, SourceError>,
    digest: &str,
    earlier: &Usage,
    budgets: &crate::budget::ScanBudgets,
) -> Result<LayerScan, SourceError> {
    let left_to_read = budgets.max_image_bytes.saturating_sub(earlier.read);
    let left_to_keep = budgets.max_retained_bytes.saturating_sub(earlier.kept);
    let over_read = || LayerError::OverBudget {
        digest: digest.to_string(),
        limit: left_to_read,
    };
    let over_kept = || LayerError::RetainedOverBudget {
        digest: digest.to_string(),
        limit: left_to_keep,
    };
    match result {
        Ok(scan) if scan.uncompressed_size > left_to_read => Err(over_read().into()),
        Ok(scan) if scan.retained_bytes > left_to_keep => Err(over_kept().into()),
        Ok(scan) => Ok(scan),
        Err(SourceError::Layer(LayerError::OverBudget { .. })) => Err(over_read().into()),
        Err(SourceError::Layer(LayerError::RetainedOverBudget { .. })) => Err(over_kept().into()),
        Err(e) => Err(e),
    }
}

/// Pulls and reads an image from its registry.
pub async fn read(
    target: &str,
    opts: &PullOptions,
    analyzers: Arc<Vec<Box<dyn Analyzer>>>,
) -> Result<ScannedImage, SourceError> {
    let reference: Reference = target
        .parse()
        .map_err(|e| SourceError::Invalid(format!("{target}: not an image reference: {e}")))?;
    let client = client(&reference, target, opts)?;
    let repository = reference.repository();
    let error = |e| registry_error(target, e);
    let (raw, digest) = client
        .manifest_bytes(
            repository,
            manifest_tag_or_digest(&reference),
            oci::ACCEPTED_MANIFESTS,
        )
        .await
        .map_err(error)?;
    if let Some(expected) = reference.digest() {
        oci::verify_digest(&raw, expected, target)?;
    }
    let root = oci::parse_manifest(&raw, target)?;
    let (digest, config, layers) = match root {
        Manifest::Image { config, layers } => (digest, config, layers),
        Manifest::Index(entries) => {
            let chosen = oci::select_platform(&entries, &opts.platform, target)?.clone();
            let (raw, _) = client
                .manifest_bytes(repository, &chosen.digest, oci::ACCEPTED_MANIFESTS)
                .await
                .map_err(error)?;
            oci::verify_digest(&raw, &chosen.digest, target)?;
            match oci::parse_manifest(&raw, target)? {
                Manifest::Image { config, layers } => (chosen.digest, config, layers),
                Manifest::Index(_) => {
                    return Err(SourceError::Unsupported(format!(
                        "{target}: an index inside an index is not supported for registry pulls"
                    )))
                }
            }
        }
    };
    let config_json = client
        .small_blob(repository, config.digest.as_str())
        .await
        .map_err(error)?;
    oci::verify_digest(&config_json, &config.digest, &format!("{target}: config"))?;

    // Up to `layers_at_once` layers stream and are analyzed together; results come back in
    // layer order, so the image's result is the same as one layer at a time.
    let finished = Arc::new(std::sync::Mutex::new(Usage::default()));
    let client = &client;
    let mut pulls = futures::stream::iter(layers.into_iter().map(|l| {
        let analyzers = analyzers.clone();
        let finished = finished.clone();
        async move {
            let result =
                pull_layer(client, repository, target, opts, &l, analyzers, &finished).await;
            (l, result)
        }
    }))
    .buffered(opts.layers_at_once());
    let mut scans: Vec<LayerScan> = Vec::new();
    let mut earlier = Usage::default();
    while let Some((l, result)) = pulls.next().await {
        let scan = within_budgets(result, &l.digest, &earlier, &opts.budgets)?;
        earlier.add(&scan);
        scans.push(scan);
    }
    Ok(assemble(
        &ImageRef::Registry(target.to_string()),
        Some(digest),
        &scans,
        Some(config_json),
        Vec::new(),
        opts.budgets.max_warnings,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_auth_entry() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.json");
        // "alice:s3cret"
        std::fs::write(
            &cfg,
            r#"{"auths":{"https://127.0.0.1:5000/v2/":{"auth":"YWxpY2U6czNjcmV0"}}}"#,
        )
        .unwrap();
        let creds = RegistryCredentials {
            docker_config: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        match registry_auth("127.0.0.1:5000", &creds).unwrap() {
            RegistryAuth::Basic(u, p) => assert_eq!((u.as_str(), p.as_str()), ("alice", "s3cret")),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            registry_auth("other:5000", &creds).unwrap(),
            RegistryAuth::Anonymous
        ));
        // Nothing is read unless a config is named.
        assert!(matches!(
            registry_auth("127.0.0.1:5000", &RegistryCredentials::default()).unwrap(),
            RegistryAuth::Anonymous
        ));
    }
}
