//! Image names as policies see them: `registry/repository`, with Docker Hub's short
//! forms spelled out, and `*` patterns over them.

use crate::reference::{normalize_registry, DOCKER_HUB};

/// Longest image reference considered; longer ones are refused.
pub const MAX_REFERENCE_CHARS: usize = 512;

/// A registry and a repository in it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageName {
    /// Host and port; Docker Hub is always `docker.io`.
    pub registry: String,
    pub repository: String,
}

impl ImageName {
    /// Normalizes Docker Hub's aliases and its implicit `library/`.
    pub fn new(registry: &str, repository: &str) -> Self {
        let registry = normalize_registry(registry);
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_string()
        };
        Self {
            registry,
            repository,
        }
    }
}

impl std::fmt::Display for ImageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

/// An image reference as a container spec writes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageReference {
    pub name: ImageName,
    /// The tag, when the reference has one (`latest` when it has neither tag nor digest).
    pub tag: Option<String>,
    /// The digest, when the reference pins one.
    pub digest: Option<String>,
}

impl ImageReference {
    /// Parses `nginx`, `team/app:1.2`, `registry:5000/team/app@sha256:...` the way the
    /// container runtime does: the first path part is a registry when it has a dot or a
    /// port or is `localhost`, else the image is on Docker Hub.
    pub fn parse(reference: &str) -> Result<Self, String> {
        if reference.is_empty() || reference.len() > MAX_REFERENCE_CHARS {
            return Err("an image reference must be 1 to 512 characters".into());
        }
        if reference
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("an image reference holds no spaces or control characters".into());
        }
        let parsed = crate::reference::ImageReference::parse(reference)
            .map_err(|e| format!("{reference:?}: {e}"))?;
        let tag = match (parsed.tag(), parsed.digest()) {
            (None, None) => Some("latest".to_string()),
            (tag, _) => tag.map(str::to_string),
        };
        Ok(Self {
            name: ImageName::new(parsed.registry(), &parsed.repository().to_ascii_lowercase()),
            tag,
            digest: parsed.digest().map(str::to_string),
        })
    }
}

impl std::fmt::Display for ImageReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Whether a pattern is usable: 1 to 256 characters, no spaces.
pub fn validate_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() || pattern.len() > 256 {
        return Err(format!("pattern {pattern:?}: 1 to 256 characters"));
    }
    if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("pattern {pattern:?} holds spaces"));
    }
    Ok(())
}

/// Whether `pattern` (with `*` matching any run of characters, `/` included) matches
/// `registry/repository`. Docker Hub's short forms in the pattern are spelled out
/// (`nginx` matches `docker.io/library/nginx`).
pub fn pattern_matches(pattern: &str, image: &ImageName) -> bool {
    wildcard(&spell_out(pattern), &image.to_string())
}

/// A pattern with its registry written as [`ImageName`] writes it.
fn spell_out(pattern: &str) -> String {
    match pattern.split_once('/') {
        Some((host, rest)) if host.contains(['.', ':', '*']) || host == "localhost" => {
            format!("{}/{rest}", normalize_registry(host))
        }
        Some(_) => format!("{DOCKER_HUB}/{pattern}"),
        None if pattern.contains('*') => pattern.to_string(),
        None => format!("{DOCKER_HUB}/library/{pattern}"),
    }
}

/// Glob match with `*` only: the classic greedy algorithm with one back-track point,
/// O(len(pattern) × len(text)) in the worst case.
fn wildcard(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_read_as_the_runtime_reads_them() {
        let r = ImageReference::parse("nginx").unwrap();
        assert_eq!(r.name.to_string(), "docker.io/library/nginx");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let r = ImageReference::parse("team/app:1.2").unwrap();
        assert_eq!(r.name.to_string(), "docker.io/team/app");
        assert_eq!(r.tag.as_deref(), Some("1.2"));
        let r = ImageReference::parse("127.0.0.1:5000/team/app@sha256:abcd").unwrap();
        assert_eq!(r.name.registry, "127.0.0.1:5000");
        assert_eq!(r.name.repository, "team/app");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some("sha256:abcd"));
        let r = ImageReference::parse("localhost/app:v1@sha256:00").unwrap();
        assert_eq!(r.name.registry, "localhost");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert!(ImageReference::parse("reg.io/app@sha256:not-hex").is_err());
        assert!(ImageReference::parse("").is_err());
        assert!(ImageReference::parse("a b").is_err());
        assert!(ImageReference::parse(&"a".repeat(600)).is_err());
    }

    #[test]
    fn hub_aliases_are_one_registry() {
        assert_eq!(
            ImageName::new("index.docker.io", "nginx"),
            ImageName::new("docker.io", "library/nginx")
        );
        assert_eq!(
            ImageName::new("registry-1.docker.io", "library/nginx").to_string(),
            "docker.io/library/nginx"
        );
    }

    #[test]
    fn patterns_match_registry_and_repository() {
        let app = ImageName::new("registry.example.com", "team-a/api");
        assert!(pattern_matches("*", &app));
        assert!(pattern_matches("registry.example.com/team-a/*", &app));
        assert!(pattern_matches("registry.example.com/*/api", &app));
        assert!(pattern_matches("*/team-a/api", &app));
        assert!(!pattern_matches("registry.example.com/team-b/*", &app));
        assert!(!pattern_matches("registry.example.com/team-a", &app));
        let nginx = ImageName::new("docker.io", "library/nginx");
        assert!(pattern_matches("nginx", &nginx));
        assert!(pattern_matches("docker.io/library/*", &nginx));
        assert!(pattern_matches("index.docker.io/library/nginx", &nginx));
        assert!(!pattern_matches("nginx", &app));
    }

    #[test]
    fn many_stars_against_a_long_name_end_with_an_answer() {
        let name = ImageName::new("r.io", &"a".repeat(400));
        assert!(!pattern_matches(&format!("{}b", "*a".repeat(120)), &name));
        assert!(pattern_matches(
            &format!("r.io/{}", "*a".repeat(120)),
            &name
        ));
    }
}
