//! Where images come from: registries (pulled with oci-client), OCI image layouts, OCI and
//! docker-save archives, unpacked root filesystems, and SBOMs. Every source ends in the same
//! layer walk ([`crate::layer`]) and analyzers ([`crate::analyzer`]).

mod config;
mod local;
pub mod oci;
mod progress;
pub(crate) mod registry;
pub mod sbom;

pub use crate::registry::parse_auth_params;
pub use config::{ContainerConfig, History, ImageConfig, RootFs};
pub use registry::{
    default_docker_config, registry_auth, registry_credentials, RegistryCredentials,
};

use crate::analyzer::{self, Analyzer, Fact};
use crate::inventory::Inventory;
use crate::layer::{self, LayerError, LayerScan};
use std::path::PathBuf;
use std::sync::Arc;

/// Errors getting an image's content.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error("{what}: digest mismatch: expected {expected}, content hashes to {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{image}: blob {digest} is missing; the image is incomplete")]
    MissingBlob { image: String, digest: String },
    #[error("{image}: no manifest for platform {platform} (available: {available}); choose one with --platform")]
    PlatformNotFound {
        image: String,
        platform: String,
        available: String,
    },
    #[error("{reference}: {message}")]
    Registry { reference: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unsupported(String),
}

impl SourceError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SourceError {
        let what = what.into();
        move |source| SourceError::Io { what, source }
    }
}

/// An image as the user names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// `host[:port]/repo[:tag|@digest]`, pulled from a registry.
    Registry(String),
    /// `docker-archive:FILE`: `docker save` output, gzip-compressed or not.
    DockerArchive(PathBuf),
    /// `oci-layout:DIR[:TAG]`.
    OciLayout { dir: PathBuf, tag: Option<String> },
    /// `oci-archive:FILE`: a tar (optionally compressed) of an OCI layout.
    OciArchive(PathBuf),
    /// `dir:ROOTFS`: an unpacked root filesystem.
    Dir(PathBuf),
    /// `sbom:FILE`: a CycloneDX SBOM (JSON or XML); its packages are taken as the inventory.
    Sbom(PathBuf),
}

impl ImageRef {
    /// Parses a target as the CLI takes it.
    pub fn parse(s: &str) -> Result<Self, SourceError> {
        let (scheme, rest) = s.split_once(':').unwrap_or(("", s));
        Ok(match scheme {
            "docker-archive" => ImageRef::DockerArchive(rest.into()),
            "oci-archive" => ImageRef::OciArchive(rest.into()),
            "dir" => ImageRef::Dir(rest.into()),
            // skopeo's spelling of a registry reference.
            "docker" if rest.starts_with("//") => ImageRef::Registry(rest[2..].to_string()),
            "sbom" => ImageRef::Sbom(rest.into()),
            "oci-layout" | "oci" => {
                // The tag follows the last `:` unless that would cut into a path.
                match rest.rsplit_once(':') {
                    Some((dir, tag)) if !tag.contains('/') && !dir.is_empty() => {
                        ImageRef::OciLayout {
                            dir: dir.into(),
                            tag: Some(tag.to_string()),
                        }
                    }
                    _ => ImageRef::OciLayout {
                        dir: rest.into(),
                        tag: None,
                    },
                }
            }
            _ => {
                if s.is_empty() {
                    return Err(SourceError::Invalid("empty image reference".into()));
                }
                ImageRef::Registry(s.to_string())
            }
        })
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageRef::Registry(r) => write!(f, "{r}"),
            ImageRef::DockerArchive(p) => write!(f, "docker-archive:{}", p.display()),
            ImageRef::OciLayout { dir, tag: None } => write!(f, "oci-layout:{}", dir.display()),
            ImageRef::OciLayout { dir, tag: Some(t) } => {
                write!(f, "oci-layout:{}:{t}", dir.display())
            }
            ImageRef::OciArchive(p) => write!(f, "oci-archive:{}", p.display()),
            ImageRef::Dir(p) => write!(f, "dir:{}", p.display()),
            ImageRef::Sbom(p) => write!(f, "sbom:{}", p.display()),
        }
    }
}

/// A platform: `os/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Default for Platform {
    fn default() -> Self {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl std::str::FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(format!("platform {s:?} is not os/arch[/variant]")),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.variant {
            Some(v) => write!(f, "{}/{}/{v}", self.os, self.architecture),
            None => write!(f, "{}/{}", self.os, self.architecture),
        }
    }
}

/// How to reach a registry and which image of an index to take.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    pub credentials: RegistryCredentials,
    /// PEM file with extra CA certificates to trust.
    pub ca_file: Option<PathBuf>,
    /// Talk plain HTTP to the registry.
    pub insecure: bool,
    pub platform: Platform,
    /// Draw progress bars on stderr (only when it is a terminal).
    pub progress: bool,
    /// The image's name on progress bars; `None`: the target as named.
    pub progress_label: Option<String>,
    /// Cuts every registry request that gets no connection or no data for this long
    /// (when shorter than the defaults: 10 s to connect, 60 s of silence).
    pub request_timeout: Option<std::time::Duration>,
    /// Where registry requests may go; `None`: anywhere ([`EgressPolicy::unrestricted`],
    /// for a user's own machine). Manifests are never redirected to another host.
    ///
    /// [`EgressPolicy::unrestricted`]: crate::egress::EgressPolicy::unrestricted
    pub egress: Option<std::sync::Arc<crate::egress::EgressPolicy>>,
    /// What one scan may read and keep (uncompressed bytes, file, SBOM and manifest
    /// sizes, archive entries, warnings).
    pub budgets: crate::budget::ScanBudgets,
    /// Layers pulled and analyzed at once from a registry; 0 and 1: one after another.
    /// Each layer in flight may hold its own largest file (`max_file_bytes`) and results,
    /// so memory grows with it; the result does not change.
    pub layer_concurrency: usize,
}

/// Layers the CLI pulls at once by default (Trivy analyzes 5 at once).
pub const DEFAULT_LAYER_CONCURRENCY: usize = 3;

impl PullOptions {
    /// Layers pulled at once: [`PullOptions::layer_concurrency`], at least one.
    pub fn layers_at_once(&self) -> usize {
        self.layer_concurrency.max(1)
    }

    /// The budgets of a scan with these options.
    pub fn budgets(&self) -> crate::budget::ScanBudgets {
        self.budgets
    }

    /// Sets the budgets.
    pub fn with_budgets(mut self, budgets: crate::budget::ScanBudgets) -> Self {
        self.budgets = budgets;
        self
    }

    /// Options for the next layer, given the uncompressed bytes the earlier ones read and
    /// the result bytes they keep.
    pub(crate) fn layer_options(&self, used: u64, kept: u64, diff_id: bool) -> layer::LayerOptions {
        let budgets = self.budgets();
        layer::LayerOptions {
            diff_id,
            max_uncompressed_bytes: budgets.max_image_bytes.saturating_sub(used),
            max_file_bytes: budgets.max_file_bytes,
            max_retained_bytes: budgets.max_retained_bytes.saturating_sub(kept),
        }
    }
}

/// One layer of a scanned image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    pub digest: String,
    /// Bytes as stored (compressed).
    pub size: u64,
}

/// Everything read from one image: the inventory, the image configuration (for baseline
/// checks: user, environment, healthcheck, exposed ports, history), and warnings about
/// content that was skipped.
#[derive(Debug, Clone)]
pub struct ScannedImage {
    pub inventory: Inventory,
    pub config: Option<ImageConfig>,
    /// The configuration blob as stored.
    pub config_json: Option<Vec<u8>>,
    pub layers: Vec<LayerInfo>,
    pub warnings: Vec<String>,
    /// Baseline risks, secrets and malicious samples found in files of the final
    /// filesystem (files deleted by later layers do not count); the checks add the
    /// configuration checks and report them.
    pub file_findings: Vec<crate::finding::CheckFinding>,
}

/// Reads an image and lists its operating system and packages.
pub async fn inventory(target: &ImageRef, opts: &PullOptions) -> Result<Inventory, SourceError> {
    Ok(read(target, opts, analyzer::analyzers_with(&opts.budgets))
        .await?
        .inventory)
}

/// Reads an image with the given analyzers.
pub async fn read(
    target: &ImageRef,
    opts: &PullOptions,
    analyzers: Vec<Box<dyn Analyzer>>,
) -> Result<ScannedImage, SourceError> {
    let analyzers: Arc<Vec<Box<dyn Analyzer>>> = Arc::new(analyzers);
    match target {
        ImageRef::Registry(r) => registry::read(r, opts, analyzers).await,
        _ => {
            let target = target.clone();
            let opts = opts.clone();
            tokio::task::spawn_blocking(move || read_local(&target, &opts, &analyzers))
                .await
                .map_err(|e| SourceError::Invalid(format!("scan task failed: {e}")))?
        }
    }
}

/// Reads a local image (anything but a registry reference) on the current thread.
pub fn read_local(
    target: &ImageRef,
    opts: &PullOptions,
    analyzers: &[Box<dyn Analyzer>],
) -> Result<ScannedImage, SourceError> {
    match target {
        ImageRef::Registry(r) => Err(SourceError::Invalid(format!(
            "{r}: registry references are read with `read`"
        ))),
        ImageRef::DockerArchive(p) | ImageRef::OciArchive(p) => {
            local::scan_archive(target, p, opts, analyzers)
        }
        ImageRef::OciLayout { dir, tag } => {
            local::scan_layout(target, dir, tag.as_deref(), opts, analyzers)
        }
        ImageRef::Dir(dir) => local::scan_dir(target, dir, opts, analyzers),
        ImageRef::Sbom(p) => sbom::read(target, p, &opts.budgets),
    }
}

/// Builds the result from the layers in order (lowest first).
pub(crate) fn assemble(
    target: &ImageRef,
    digest: Option<String>,
    layers: &[LayerScan],
    config_json: Option<Vec<u8>>,
    mut warnings: Vec<String>,
    max_warnings: u64,
) -> ScannedImage {
    let merged = layer::merge_layers(layers);
    let mut os_facts = Vec::new();
    let mut packages = Vec::new();
    let mut file_findings = Vec::new();
    let mut owned: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    // One scan keeps a bounded number of warnings (--max-warnings), whatever the image holds.
    let max = usize::try_from(max_warnings).unwrap_or(usize::MAX);
    let mut omitted = 0;
    let mut given = std::mem::take(&mut warnings).into_iter();
    let mut add = |warnings: &mut Vec<String>, w: String| {
        analyzer::push_bounded_warning(warnings, &mut omitted, max, w)
    };
    for w in given.by_ref() {
        add(&mut warnings, w);
    }
    for l in layers {
        for w in &l.warnings {
            add(&mut warnings, format!("layer {}: {w}", l.digest));
        }
    }
    for (path, result) in &merged {
        for w in &result.output.warnings {
            add(&mut warnings, w.clone());
        }
        for f in &result.output.facts {
            match f {
                Fact::Os(fact) => os_facts.push(fact.clone()),
                Fact::Package(p) => {
                    let mut p = p.clone();
                    if p.path.is_empty() {
                        p.path = path.clone();
                    }
                    packages.push(p);
                }
                Fact::Owned(o) => {
                    for p in &o.paths {
                        owned.insert(p, &o.owner);
                    }
                }
                Fact::Check(c) => {
                    let mut c = (**c).clone();
                    if c.path.is_none() {
                        c.path = Some(path.clone());
                    }
                    file_findings.push(c);
                }
            }
        }
    }
    analyzer::mark_os_owned(&mut packages, &owned);
    analyzer::name_the_warning_budget(&mut warnings, omitted);
    for w in &warnings {
        tracing::warn!(target = %target, "{w}");
    }
    let os = analyzer::choose_os(&os_facts);
    let inventory = analyzer::finalize(target.to_string(), digest, os, packages);
    let config = config_json
        .as_deref()
        .and_then(|c| serde_json::from_slice::<ImageConfig>(c).ok());
    ScannedImage {
        inventory,
        config,
        config_json,
        layers: layers
            .iter()
            .map(|l| LayerInfo {
                digest: l.digest.clone(),
                size: l.compressed_size,
            })
            .collect(),
        warnings,
        file_findings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            ImageRef::parse("oci-layout:/tmp/x:v1").unwrap(),
            ImageRef::OciLayout {
                dir: "/tmp/x".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            ImageRef::parse("127.0.0.1:5000/a/b:1").unwrap(),
            ImageRef::Registry("127.0.0.1:5000/a/b:1".into())
        );
        assert_eq!(
            ImageRef::parse("docker-archive:a.tar.gz").unwrap(),
            ImageRef::DockerArchive("a.tar.gz".into())
        );
    }
}
