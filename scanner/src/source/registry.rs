//! Registry pulls: manifests and config in memory, layers streamed through the layer walk
//! and never written to disk; every request within the pull's egress policy.

use super::distribution::Puller;
use super::oci::{self, Manifest};
use super::progress::{bar, ProgressReader};
use super::{assemble, ImageRef, PullOptions, ScannedImage, SourceError};
use crate::analyzer::Analyzer;
use crate::egress::EgressPolicy;
use crate::layer::{scan_layer_with, LayerScan};
use base64::Engine;
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
    /// A Docker `config.json`; when unset, `$DOCKER_CONFIG/config.json` or
    /// `~/.docker/config.json` is read if it exists.
    pub docker_config: Option<PathBuf>,
}

fn docker_config_path(explicit: Option<&PathBuf>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        // A directory is taken the way DOCKER_CONFIG is.
        return Some(if p.is_dir() {
            p.join("config.json")
        } else {
            p.clone()
        });
    }
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// `https://index.docker.io/v1/` → `index.docker.io`; `host:5000/v2/` → `host:5000`.
fn config_key_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// The credentials to use for `registry` (a host, with port when it has one).
pub fn registry_auth(
    registry: &str,
    creds: &RegistryCredentials,
) -> Result<RegistryAuth, SourceError> {
    if let Some(t) = &creds.bearer_token {
        return Ok(RegistryAuth::Bearer(t.clone()));
    }
    if let Some(u) = &creds.username {
        return Ok(RegistryAuth::Basic(
            u.clone(),
            creds.password.clone().unwrap_or_default(),
        ));
    }
    let Some(path) = docker_config_path(creds.docker_config.as_ref()) else {
        return Ok(RegistryAuth::Anonymous);
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && creds.docker_config.is_none() => {
            return Ok(RegistryAuth::Anonymous)
        }
        Err(e) => {
            return Err(SourceError::Io {
                what: format!("registry config {}", path.display()),
                source: e,
            })
        }
    };
    let doc: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| SourceError::Invalid(format!("registry config {}: {e}", path.display())))?;
    let wanted = match registry {
        "docker.io" | "registry-1.docker.io" => "index.docker.io",
        r => r,
    };
    let Some(entry) = doc
        .get("auths")
        .and_then(|a| a.as_object())
        .and_then(|auths| {
            auths
                .iter()
                .find(|(k, _)| config_key_host(k) == wanted)
                .map(|(_, v)| v)
        })
    else {
        return Ok(RegistryAuth::Anonymous);
    };
    let s = |k: &str| {
        entry
            .get(k)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
    };
    if let Some(token) = s("registrytoken") {
        return Ok(RegistryAuth::Bearer(token.to_string()));
    }
    if let (Some(u), Some(p)) = (s("username"), s("password")) {
        return Ok(RegistryAuth::Basic(u.into(), p.into()));
    }
    if let Some(auth) = s("auth") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| {
                SourceError::Invalid(format!(
                    "registry config {}: auth for {registry} is not base64: {e}",
                    path.display()
                ))
            })?;
        let decoded = String::from_utf8_lossy(&decoded);
        if let Some((u, p)) = decoded.split_once(':') {
            return Ok(RegistryAuth::Basic(u.into(), p.into()));
        }
    }
    Ok(RegistryAuth::Anonymous)
}

/// The host the distribution API of `registry` is reached at.
fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" | "registry.hub.docker.com" => "registry-1.docker.io",
        r => r,
    }
}

fn puller(reference: &Reference, target: &str, opts: &PullOptions) -> Result<Puller, SourceError> {
    let auth = registry_auth(reference.resolve_registry(), &opts.credentials)?;
    let ca_pem = match &opts.ca_file {
        Some(ca) => {
            Some(std::fs::read(ca).map_err(SourceError::io(format!("CA file {}", ca.display())))?)
        }
        None => None,
    };
    let egress = opts
        .egress
        .clone()
        .unwrap_or_else(|| Arc::new(EgressPolicy::unrestricted()));
    Puller::new(
        api_host(reference.resolve_registry()),
        reference.repository(),
        target,
        opts.insecure,
        ca_pem,
        auth,
        egress,
    )
}

/// Pulls and reads an image from its registry.
pub async fn scan(
    target: &str,
    opts: &PullOptions,
    analyzers: Arc<Vec<Box<dyn Analyzer>>>,
) -> Result<ScannedImage, SourceError> {
    let reference: Reference = target
        .parse()
        .map_err(|e| SourceError::Invalid(format!("{target}: not an image reference: {e}")))?;
    let client = puller(&reference, target, opts)?;
    let wanted = reference
        .digest()
        .or(reference.tag())
        .unwrap_or("latest")
        .to_string();
    let (raw, digest) = client.manifest(&wanted, oci::ACCEPTED_MANIFESTS).await?;
    if let Some(expected) = reference.digest() {
        oci::verify_digest(&raw, expected, target)?;
    }
    let root = oci::parse_manifest(&raw, target)?;
    let (digest, config, layers) = match root {
        Manifest::Image { config, layers } => (digest, config, layers),
        Manifest::Index(entries) => {
            let chosen = oci::select_platform(&entries, &opts.platform, target)?.clone();
            let (raw, _) = client
                .manifest(&chosen.digest, oci::ACCEPTED_MANIFESTS)
                .await?;
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
    let config_json = client.small_blob(config.digest.as_str()).await?;
    oci::verify_digest(&config_json, &config.digest, &format!("{target}: config"))?;

    let mut scans = Vec::with_capacity(layers.len());
    for l in layers {
        let response = client.blob(l.digest.as_str()).await?;
        let content_length = response.content_length();
        let size = (l.size > 0).then_some(l.size as u64);
        let progress = bar(
            opts.progress,
            size.or(content_length),
            l.digest.chars().take(19).collect(),
        );
        let stream = response
            .bytes_stream()
            .map(|chunk| chunk.map_err(std::io::Error::other));
        let reader = SyncIoBridge::new(StreamReader::new(stream));
        let analyzers = analyzers.clone();
        let used = scans.iter().map(|s: &LayerScan| s.uncompressed_size).sum();
        let kept = scans.iter().map(|s: &LayerScan| s.retained_bytes).sum();
        let layer_opts = opts.layer_options(used, kept, false);
        let scan = tokio::task::spawn_blocking(move || {
            let reader = ProgressReader {
                inner: reader,
                bar: progress,
            };
            scan_layer_with(reader, Some(&l.digest), size, &analyzers, &layer_opts)
        })
        .await
        .map_err(|e| SourceError::Invalid(format!("{target}: layer task failed: {e}")))??;
        scans.push(scan);
    }
    Ok(assemble(
        &ImageRef::Registry(target.to_string()),
        Some(digest),
        &scans,
        Some(config_json),
        Vec::new(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_auth_entry() {
        let dir = std::env::temp_dir().join(format!("iw-dockercfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("config.json");
        // "alice:s3cret"
        std::fs::write(
            &cfg,
            r#"{"auths":{"https://127.0.0.1:5000/v2/":{"auth":"YWxpY2U6czNjcmV0"}}}"#,
        )
        .unwrap();
        let creds = RegistryCredentials {
            docker_config: Some(cfg),
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
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
