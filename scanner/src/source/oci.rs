//! Image manifests and indexes (OCI and Docker v2 schema 2), and platform selection.

use super::{Platform, SourceError};
use serde::Deserialize;
use std::collections::BTreeMap;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The media types asked for when pulling a manifest.
pub const ACCEPTED_MANIFESTS: &[&str] = &[OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// Annotation naming a manifest's tag in an OCI image layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A content descriptor.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub platform: Option<DescriptorPlatform>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The platform of an index entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct DescriptorPlatform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDoc {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: String,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
}

/// A parsed manifest document.
#[derive(Debug, Clone)]
pub enum Manifest {
    /// An image index / manifest list: one manifest per platform (or tag, in a layout).
    Index(Vec<Descriptor>),
    /// An image manifest: config and layers, lowest layer first.
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

/// Parses an OCI or Docker v2 schema 2 manifest or index.
pub fn parse_manifest(bytes: &[u8], what: &str) -> Result<Manifest, SourceError> {
    let doc: ManifestDoc = serde_json::from_slice(bytes)
        .map_err(|e| SourceError::Invalid(format!("{what}: not a manifest: {e}")))?;
    if doc.schema_version == Some(1) {
        return Err(SourceError::Unsupported(format!(
            "{what}: Docker schema 1 manifests are not supported; push the image again with a current client"
        )));
    }
    if let Some(m) = doc.manifests {
        if doc.media_type.is_empty() || doc.media_type == OCI_INDEX || doc.media_type == DOCKER_LIST
        {
            return Ok(Manifest::Index(m));
        }
    }
    match (doc.config, doc.layers) {
        (Some(config), Some(layers)) => Ok(Manifest::Image { config, layers }),
        _ => Err(SourceError::Invalid(format!(
            "{what}: neither an image manifest nor an index (media type {:?})",
            doc.media_type
        ))),
    }
}

fn is_manifest_type(t: &str) -> bool {
    t.is_empty() || ACCEPTED_MANIFESTS.contains(&t)
}

/// Picks the index entry for the platform: OS and architecture must match; a variant, when
/// asked for, must match too. An index with a single entry without platform is taken as is.
pub fn select_platform<'a>(
    entries: &'a [Descriptor],
    platform: &Platform,
    what: &str,
) -> Result<&'a Descriptor, SourceError> {
    let candidates: Vec<&Descriptor> = entries
        .iter()
        .filter(|e| is_manifest_type(&e.media_type))
        .collect();
    if let [only] = candidates.as_slice() {
        if only.platform.is_none() {
            return Ok(only);
        }
    }
    let matching = |d: &&&Descriptor| {
        d.platform.as_ref().is_some_and(|p| {
            p.os == platform.os
                && p.architecture == platform.architecture
                && match (&platform.variant, &p.variant) {
                    (Some(want), Some(have)) => want == have,
                    (Some(_), None) => false,
                    (None, _) => true,
                }
        })
    };
    if let Some(d) = candidates.iter().find(matching) {
        return Ok(d);
    }
    let available: Vec<String> = candidates
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .collect();
    Err(SourceError::PlatformNotFound {
        image: what.to_string(),
        platform: platform.to_string(),
        available: available.join(", "),
    })
}

/// Picks the `index.json` entry of an OCI layout by tag (the `ref.name` annotation).
pub fn select_tag<'a>(
    entries: &'a [Descriptor],
    tag: &str,
    what: &str,
) -> Result<&'a Descriptor, SourceError> {
    entries
        .iter()
        .find(|d| {
            d.annotations
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .is_some_and(|r| r == tag || r.ends_with(&format!(":{tag}")))
        })
        .ok_or_else(|| SourceError::Invalid(format!("{what}: no manifest tagged {tag:?}")))
}

/// Resolves an index (or a manifest) to an image manifest, fetching blobs with `fetch`.
/// Returns the image manifest's digest, config descriptor and layers.
pub fn resolve_image(
    root: Manifest,
    root_digest: Option<String>,
    platform: &Platform,
    what: &str,
    mut fetch: impl FnMut(&Descriptor) -> Result<Vec<u8>, SourceError>,
) -> Result<(Option<String>, Descriptor, Vec<Descriptor>), SourceError> {
    let mut current = root;
    let mut digest = root_digest;
    for _ in 0..8 {
        match current {
            Manifest::Image { config, layers } => return Ok((digest, config, layers)),
            Manifest::Index(entries) => {
                let chosen = select_platform(&entries, platform, what)?.clone();
                let bytes = fetch(&chosen)?;
                current = parse_manifest(&bytes, &format!("{what}@{}", chosen.digest))?;
                digest = Some(chosen.digest);
            }
        }
    }
    Err(SourceError::Invalid(format!(
        "{what}: image indexes nested too deep"
    )))
}

/// Checks that `data` hashes to `digest`; sha256 and sha512 are verified, any other
/// algorithm is refused (content that cannot be verified is not read).
pub fn verify_digest(data: &[u8], digest: &str, what: &str) -> Result<(), SourceError> {
    match crate::layer::Digester::for_digest(digest) {
        Err(reason) => Err(SourceError::Unsupported(format!("{what}: {reason}"))),
        Ok(mut d) => {
            d.update(data);
            let actual = d.finish();
            if actual != digest {
                return Err(SourceError::DigestMismatch {
                    what: what.to_string(),
                    expected: digest.to_string(),
                    actual,
                });
            }
            Ok(())
        }
    }
}
