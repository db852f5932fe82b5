//! Image references (`registry/repository[:tag][@digest]`), parsed once into their parts.
//!
//! Docker Hub rules as `docker` applies them: a first path component is a registry only
//! when it has a `.` or a `:` or is `localhost`; otherwise the image is on `docker.io`,
//! and a single-component repository there is under `library/` (`alpine` is
//! `docker.io/library/alpine`). `index.docker.io` and `registry-1.docker.io` are
//! `docker.io` too.

use std::fmt;

/// Longest reference accepted (Docker's own limit for a name is 255; with registry, tag
/// and digest this is ample).
const MAX_LEN: usize = 1024;

/// The registry Docker Hub images are named with.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageReference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

/// Why a string is not an image reference.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("not an image reference: {0}")]
    Malformed(&'static str),
    #[error("the reference names no registry (host/repository:tag or @digest)")]
    NoRegistry,
    #[error("the reference names neither a tag nor a digest")]
    NoTagOrDigest,
}

impl ImageReference {
    /// Parses `reference` with Docker Hub's defaults for a missing registry.
    pub fn parse(reference: &str) -> Result<Self, ReferenceError> {
        if reference.is_empty() || reference.len() > MAX_LEN {
            return Err(ReferenceError::Malformed("empty or too long"));
        }
        if reference
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ReferenceError::Malformed("contains whitespace"));
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((r, d)) if is_digest(d) => (r, Some(d.to_string())),
            Some(_) => return Err(ReferenceError::Malformed("bad digest")),
            None => (reference, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((host, path)) if is_registry(host) => (normalize_registry(host), path),
            _ => (DOCKER_HUB.to_string(), rest),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t.to_string())),
            _ => (path, None),
        };
        if repository.is_empty()
            || tag.as_deref() == Some("")
            || repository.split('/').any(str::is_empty)
        {
            return Err(ReferenceError::Malformed("empty repository or tag"));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_string()
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Parses a reference that names its registry and a tag or a digest, as images in a
    /// ScanTask must (`registry.example.com/team/app:v1`, `host:5000/app@sha256:…`).
    pub fn parse_qualified(reference: &str) -> Result<Self, ReferenceError> {
        let first = reference.split(['/', '@']).next().unwrap_or_default();
        if !reference.contains('/') || !is_registry(first) {
            return Err(ReferenceError::NoRegistry);
        }
        let parsed = Self::parse(reference)?;
        if parsed.tag.is_none() && parsed.digest.is_none() {
            return Err(ReferenceError::NoTagOrDigest);
        }
        Ok(parsed)
    }

    /// `host[:port]`, `docker.io` for Docker Hub.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The same image pinned to `digest`.
    pub fn with_digest(mut self, digest: &str) -> Self {
        self.digest = Some(digest.to_string());
        self
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageReference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Whether the first component of a reference names a registry.
fn is_registry(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

/// `algorithm:hex` (e.g. `sha256:…`).
fn is_digest(d: &str) -> bool {
    d.split_once(':').is_some_and(|(alg, hex)| {
        !alg.is_empty() && !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit())
    })
}

/// A registry host as references compare it: lower case, without a URL scheme or a
/// trailing slash, and Docker Hub's other host names as `docker.io`.
pub fn normalize_registry(host: &str) -> String {
    let host = host
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_string()
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(r: &ImageReference) -> (&str, &str, Option<&str>, Option<&str>) {
        (r.registry(), r.repository(), r.tag(), r.digest())
    }

    #[test]
    fn qualified_references_split_into_parts() {
        let r = ImageReference::parse_qualified("127.0.0.1:5000/team-a/api:v1").unwrap();
        assert_eq!(
            parts(&r),
            ("127.0.0.1:5000", "team-a/api", Some("v1"), None)
        );
        let r = ImageReference::parse_qualified("r.example.com/app@sha256:ab").unwrap();
        assert_eq!(parts(&r), ("r.example.com", "app", None, Some("sha256:ab")));
        let r = ImageReference::parse_qualified("localhost/a/b:1@sha256:cd").unwrap();
        assert_eq!(
            parts(&r),
            ("localhost", "a/b", Some("1"), Some("sha256:cd"))
        );
        assert_eq!(r.to_string(), "localhost/a/b:1@sha256:cd");
    }

    #[test]
    fn qualified_references_need_a_registry_and_a_tag_or_digest() {
        assert_eq!(
            ImageReference::parse_qualified("app:v1"),
            Err(ReferenceError::NoRegistry)
        );
        assert_eq!(
            ImageReference::parse_qualified("team/app:v1"),
            Err(ReferenceError::NoRegistry)
        );
        assert_eq!(
            ImageReference::parse_qualified("r.example.com/app"),
            Err(ReferenceError::NoTagOrDigest)
        );
        assert!(ImageReference::parse_qualified("r.example.com/:v1").is_err());
        assert!(ImageReference::parse_qualified("r.example.com/app:").is_err());
        assert!(ImageReference::parse_qualified("r.example.com/a b:1").is_err());
        assert!(ImageReference::parse_qualified(&format!("r.io/{}:1", "a".repeat(2000))).is_err());
    }

    #[test]
    fn docker_hub_names_are_normalised() {
        let r = ImageReference::parse("alpine:3.19").unwrap();
        assert_eq!(
            parts(&r),
            ("docker.io", "library/alpine", Some("3.19"), None)
        );
        let r = ImageReference::parse("bitnami/redis").unwrap();
        assert_eq!(parts(&r), ("docker.io", "bitnami/redis", None, None));
        let r = ImageReference::parse_qualified("index.docker.io/nginx:1").unwrap();
        assert_eq!(parts(&r), ("docker.io", "library/nginx", Some("1"), None));
        let r = ImageReference::parse("localhost:5000/nginx:1").unwrap();
        assert_eq!(parts(&r), ("localhost:5000", "nginx", Some("1"), None));
    }
}
