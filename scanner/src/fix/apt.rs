//! Debian and Ubuntu package repositories as apt reads them: a source line, the signed
//! `InRelease` checked against a keyring, the `Packages` index it names checked by its
//! SHA256, and the `.deb` files the index names checked the same way.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey};
use reqwest::Url;
use sha2::{Digest as _, Sha256};

use super::control::{relations, stanzas, Stanza};
use super::plan::Candidate;
use super::FixError;
use crate::egress::{denial_in, EgressPolicy};

/// Largest `InRelease` read.
pub const MAX_RELEASE_BYTES: u64 = 4 << 20;
/// Largest `Packages` index read, compressed or not (Debian's main archive is ~45 MiB).
pub const MAX_INDEX_BYTES: u64 = 128 << 20;
/// Largest keyring file read from the image or given.
const MAX_KEYRING_BYTES: usize = 1 << 20;
/// Keyring files read from one image.
const MAX_KEYRING_FILES: usize = 64;

/// One apt repository: `URL SUITE COMPONENT...` (the one-line `sources.list` form, with or
/// without the leading `deb`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    pub url: Url,
    pub suite: String,
    pub components: Vec<String>,
}

impl AptSource {
    /// Parses a source line; `[options]` are not supported and are refused.
    pub fn parse(line: &str) -> Result<Self, FixError> {
        let bad = |why: &str| FixError::Invalid(format!("package source {line:?}: {why}"));
        let mut words = line.split_whitespace().peekable();
        if words.peek() == Some(&"deb") {
            words.next();
        }
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            return Err(bad("source options in [...] are not supported"));
        }
        let url = words.next().ok_or_else(|| bad("no URL"))?;
        let mut url = Url::parse(url).map_err(|_| bad("not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("only http and https repositories are supported"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("credentials in the URL are not supported"));
        }
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let suite = words.next().ok_or_else(|| bad("no suite"))?.to_string();
        if suite.contains("..") || suite.starts_with('/') {
            return Err(bad("the suite is not a plain name"));
        }
        let components: Vec<String> = words.map(str::to_string).collect();
        if components.is_empty() {
            return Err(bad("no component (main, ...)"));
        }
        if components
            .iter()
            .any(|c| c.contains("..") || c.starts_with('/'))
        {
            return Err(bad("a component is not a plain name"));
        }
        Ok(AptSource {
            url,
            suite,
            components,
        })
    }

    /// The `deb` lines of a `sources.list` (comments and `deb-src` skipped).
    pub fn from_sources_list(text: &str) -> Vec<AptSource> {
        text.lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| l.starts_with("deb "))
            .filter_map(|l| AptSource::parse(l).ok())
            .collect()
    }

    fn dist_url(&self, path: &str) -> Result<Url, FixError> {
        self.url
            .join(&format!("dists/{}/{path}", self.suite))
            .map_err(|e| FixError::Invalid(format!("{}: {e}", self.url)))
    }

    /// The URL of a file the index names (`pool/...`).
    pub fn pool_url(&self, filename: &str) -> Result<Url, FixError> {
        if filename.starts_with('/') || filename.split('/').any(|p| p == "..") {
            return Err(FixError::Index(format!(
                "{}: the index names a file outside the repository",
                self.url
            )));
        }
        self.url
            .join(filename)
            .map_err(|e| FixError::Invalid(format!("{}: {e}", self.url)))
    }
}

impl std::fmt::Display for AptSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.url,
            self.suite,
            self.components.join(" ")
        )
    }
}

/// OpenPGP public keys a repository's signature must verify against.
#[derive(Default)]
pub struct Keyring {
    keys: Vec<SignedPublicKey>,
    /// Where the keys came from, for messages.
    pub sources: Vec<String>,
}

impl Keyring {
    /// Adds the keys of one file (binary or ASCII-armored, one or more keys); a file that
    /// holds none is an error naming it.
    pub fn add_file(&mut self, name: &str, data: &[u8]) -> Result<(), FixError> {
        if data.len() > MAX_KEYRING_BYTES {
            return Err(FixError::Keyring(format!(
                "{name}: larger than {MAX_KEYRING_BYTES} bytes"
            )));
        }
        let before = self.keys.len();
        let parsed = SignedPublicKey::from_reader_many(data)
            .map_err(|e| FixError::Keyring(format!("{name}: not an OpenPGP keyring: {e}")))?;
        // A key that cannot be read is skipped; the others of the file still count.
        self.keys.extend(parsed.0.flatten());
        if self.keys.len() == before {
            return Err(FixError::Keyring(format!(
                "{name}: holds no usable public key"
            )));
        }
        self.sources.push(name.to_string());
        Ok(())
    }

    /// The keyring of an image: `/etc/apt/trusted.gpg`, `/etc/apt/trusted.gpg.d/*` and
    /// `/usr/share/keyrings/*` (apt's `Signed-By` keyrings), except the removed-keys
    /// keyring. Files that hold no key are skipped.
    pub fn from_image(files: &HashMap<String, Vec<u8>>) -> Keyring {
        let mut keyring = Keyring::default();
        let mut names: Vec<&String> = files.keys().filter(|p| is_keyring_path(p)).collect();
        names.sort();
        for name in names.into_iter().take(MAX_KEYRING_FILES) {
            let _ = keyring.add_file(&format!("/{name}"), &files[name]);
        }
        keyring
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Whether an image path is one of apt's keyrings.
pub fn is_keyring_path(path: &str) -> bool {
    let keyring_file = |name: &str| {
        (name.ends_with(".gpg") || name.ends_with(".asc")) && !name.contains("removed")
    };
    path == "etc/apt/trusted.gpg"
        || path
            .strip_prefix("etc/apt/trusted.gpg.d/")
            .is_some_and(|n| !n.contains('/') && keyring_file(n))
        || path
            .strip_prefix("usr/share/keyrings/")
            .is_some_and(|n| !n.contains('/') && keyring_file(n))
}

/// What a verified `InRelease` says.
#[derive(Debug, Clone)]
pub struct Release {
    /// `path → (sha256, size)` of the files the release names.
    pub sha256: HashMap<String, (String, u64)>,
    pub valid_until: Option<DateTime<Utc>>,
    pub codename: Option<String>,
}

/// Checks `data` (an `InRelease`) against `keyring` and returns what its signed part says;
/// nothing outside the signed text is read.
pub fn verify_in_release(
    source: &AptSource,
    data: &[u8],
    keyring: &Keyring,
    now: Option<DateTime<Utc>>,
) -> Result<Release, FixError> {
    let refuse = |why: String| FixError::Signature(format!("{source}: InRelease {why}"));
    let text = std::str::from_utf8(data).map_err(|_| refuse("is not text".into()))?;
    let (message, _) = CleartextSignedMessage::from_string(text)
        .map_err(|e| refuse(format!("is not a signed message: {e}")))?;
    let verified = keyring.keys.iter().any(|key| {
        // The keyring's primary keys are trusted as given; a subkey only when its binding
        // signature by the primary key verifies.
        message.verify(key).is_ok()
            || key.public_subkeys.iter().any(|sub| {
                sub.verify_bindings(&key.primary_key).is_ok() && message.verify(sub).is_ok()
            })
    });
    if !verified {
        return Err(refuse(format!(
            "is not signed by a key of the keyring ({})",
            if keyring.sources.is_empty() {
                "empty".to_string()
            } else {
                keyring.sources.join(", ")
            }
        )));
    }
    let signed = message.signed_text().replace("\r\n", "\n");
    let release = parse_release(&signed).map_err(refuse)?;
    if let (Some(now), Some(until)) = (now, release.valid_until) {
        if until < now {
            return Err(refuse(format!(
                "expired at {until} (Valid-Until); the repository is stale or replayed"
            )));
        }
    }
    Ok(release)
}

fn parse_release(text: &str) -> Result<Release, String> {
    let stanza = stanzas(text)
        .map_err(|e| format!("is malformed: {e}"))?
        .into_iter()
        .next()
        .ok_or_else(|| "is empty".to_string())?;
    let mut sha256 = HashMap::new();
    for line in stanza.get("SHA256").unwrap_or("").lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if let [hash, size, path] = parts[..] {
            if let Ok(size) = size.parse::<u64>() {
                sha256.insert(path.to_string(), (hash.to_ascii_lowercase(), size));
            }
        }
    }
    if sha256.is_empty() {
        return Err("names no file with a SHA256".into());
    }
    let valid_until = stanza
        .get("Valid-Until")
        .map(|v| {
            DateTime::parse_from_rfc2822(&v.replace("UTC", "+0000"))
                .map(|d| d.with_timezone(&Utc))
                .map_err(|_| "has an unreadable Valid-Until".to_string())
        })
        .transpose()?;
    Ok(Release {
        sha256,
        valid_until,
        codename: stanza.get("Codename").map(str::to_string),
    })
}

/// The package a `Packages` stanza offers.
fn candidate(stanza: &Stanza, repository: usize) -> Option<Candidate> {
    let name = stanza.get("Package")?.to_string();
    let version = stanza.get("Version")?.to_string();
    let (source, source_version) = source_of(stanza, &name, &version);
    Some(Candidate {
        architecture: stanza.get("Architecture").unwrap_or("").to_string(),
        filename: stanza.get("Filename")?.to_string(),
        checksum: stanza.get("SHA256")?.to_ascii_lowercase(),
        size: stanza.get("Size")?.parse().ok()?,
        depends: relations(stanza.get("Pre-Depends").unwrap_or(""))
            .into_iter()
            .chain(relations(stanza.get("Depends").unwrap_or("")))
            .collect(),
        name,
        version,
        source,
        source_version,
        repository,
    })
}

/// A stanza's source package and its version (`Source: name (version)`, `Source: name`,
/// or none: the binary's own name and version).
pub fn source_of(stanza: &Stanza, name: &str, version: &str) -> (String, String) {
    match stanza.get("Source") {
        Some(s) => match s.split_once('(') {
            Some((n, v)) => (
                n.trim().to_string(),
                v.trim_end_matches(')').trim().to_string(),
            ),
            None => (s.trim().to_string(), version.to_string()),
        },
        None => (name.to_string(), version.to_string()),
    }
}

/// Downloads from package repositories: no credentials, every address (and redirect)
/// within the egress policy, every body bounded.
pub struct Fetcher {
    http: reqwest::Client,
    egress: Arc<EgressPolicy>,
}

impl Fetcher {
    pub fn new(egress: Arc<EgressPolicy>) -> Result<Self, FixError> {
        let builder = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .read_timeout(std::time::Duration::from_secs(60))
            .user_agent(concat!("imagewarden/", env!("CARGO_PKG_VERSION")));
        let http = egress
            .apply_to_downloads(builder)
            .build()
            .map_err(|e| FixError::Invalid(format!("cannot build an HTTP client: {e}")))?;
        Ok(Fetcher { http, egress })
    }

    /// The body of `url`, at most `limit` bytes; `None` for 404.
    pub async fn get(&self, url: &Url, limit: u64) -> Result<Option<Vec<u8>>, FixError> {
        self.egress
            .check_url(url)
            .map_err(|d| FixError::Egress(format!("{url}: {}", d.message)))?;
        let transport = |e: reqwest::Error| match denial_in(&e) {
            Some(d) => FixError::Egress(format!("{url}: {}", d.message)),
            None => FixError::Fetch(format!("{url}: {e}")),
        };
        let mut response = self.http.get(url.clone()).send().await.map_err(transport)?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(FixError::Fetch(format!(
                "{url}: HTTP {}",
                response.status().as_u16()
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(FixError::Fetch(format!("{url}: larger than {limit} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(body))
    }
}

/// A repository read and verified: its packages for the image's architecture.
pub struct RepositoryIndex {
    pub source: AptSource,
    pub release: Release,
    pub packages: Vec<Candidate>,
}

/// Reads `source`'s `InRelease`, checks it against `keyring`, then reads each component's
/// `Packages` index for `arch` (and `all`), checking its SHA256 and size.
pub async fn read_repository(
    fetcher: &Fetcher,
    source: &AptSource,
    repository: usize,
    arch: &str,
    keyring: &Keyring,
    now: Option<DateTime<Utc>>,
) -> Result<RepositoryIndex, FixError> {
    let url = source.dist_url("InRelease")?;
    let data = fetcher
        .get(&url, MAX_RELEASE_BYTES)
        .await?
        .ok_or_else(|| FixError::Fetch(format!("{url}: not found (the repository has no InRelease; unsigned or Release+Release.gpg repositories are not supported)")))?;
    let release = verify_in_release(source, &data, keyring, now)?;
    let mut packages = Vec::new();
    for component in &source.components {
        let base = format!("{component}/binary-{arch}/Packages");
        // The smallest listed form the mirror has: xz, gz, then plain (as apt falls back).
        let listed: Vec<(String, (String, u64))> = ["xz", "gz", ""]
            .iter()
            .filter_map(|ext| {
                let path = if ext.is_empty() {
                    base.clone()
                } else {
                    format!("{base}.{ext}")
                };
                release.sha256.get(&path).map(|h| (path, h.clone()))
            })
            .collect();
        if listed.is_empty() {
            return Err(FixError::Index(format!(
                "{source}: the InRelease lists no {base} index"
            )));
        }
        let mut found = None;
        for (path, (hash, size)) in listed {
            if size > MAX_INDEX_BYTES {
                return Err(FixError::Index(format!(
                    "{source}: {path} is {size} bytes, more than {MAX_INDEX_BYTES}"
                )));
            }
            let url = source.dist_url(&path)?;
            let Some(data) = fetcher.get(&url, size).await? else {
                continue;
            };
            check_sha256(&data, &hash, size)
                .map_err(|why| FixError::Index(format!("{url}: {why}; the index was refused")))?;
            found = Some((path, url, data));
            break;
        }
        let (path, url, data) = found.ok_or_else(|| {
            FixError::Fetch(format!(
                "{source}: none of the {base} indexes it lists is there"
            ))
        })?;
        let text = decompress_index(&path, &data)
            .map_err(|e| FixError::Index(format!("{url}: cannot read: {e}")))?;
        let text = String::from_utf8(text)
            .map_err(|_| FixError::Index(format!("{url}: not UTF-8 text")))?;
        for stanza in stanzas(&text).map_err(|e| FixError::Index(format!("{url}: {e}")))? {
            if let Some(c) = candidate(&stanza, repository) {
                if c.architecture == arch || c.architecture == "all" {
                    packages.push(c);
                }
            }
        }
    }
    Ok(RepositoryIndex {
        source: source.clone(),
        release,
        packages,
    })
}

/// Checks `data` against a SHA256 (hex) and size from a signed index.
pub fn check_sha256(data: &[u8], hash: &str, size: u64) -> Result<(), String> {
    if data.len() as u64 != size {
        return Err(format!(
            "{} bytes where the signed index says {size}",
            data.len()
        ));
    }
    let got = hex::encode(Sha256::digest(data));
    if !got.eq_ignore_ascii_case(hash) {
        return Err(format!("SHA256 {got} where the signed index says {hash}"));
    }
    Ok(())
}

fn decompress_index(path: &str, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let reader: Box<dyn Read + '_> = if path.ends_with(".xz") {
        Box::new(lzma_rust2::XzReader::new(data, true))
    } else if path.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(data))
    } else {
        Box::new(data)
    };
    let mut out = Vec::new();
    reader.take(MAX_INDEX_BYTES * 4 + 1).read_to_end(&mut out)?;
    if out.len() as u64 > MAX_INDEX_BYTES * 4 {
        return Err(std::io::Error::other(format!(
            "more than {} bytes uncompressed",
            MAX_INDEX_BYTES * 4
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_lines_parse_and_odd_ones_are_refused() {
        let s =
            AptSource::parse("deb http://deb.debian.org/debian-security bookworm-security main")
                .unwrap();
        assert_eq!(s.url.as_str(), "http://deb.debian.org/debian-security/");
        assert_eq!(s.suite, "bookworm-security");
        assert_eq!(s.components, ["main"]);
        for bad in [
            "ftp://x/ bookworm main",
            "http://u:p@x/ bookworm main",
            "http://x/ bookworm",
            "deb [signed-by=/k] http://x/ bookworm main",
            "http://x/ ../../etc main",
        ] {
            assert!(AptSource::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn index_paths_outside_the_repository_are_refused() {
        let s = AptSource::parse("http://127.0.0.1/debian bookworm main").unwrap();
        assert!(s.pool_url("../x.deb").is_err());
        assert!(s.pool_url("/etc/passwd").is_err());
        assert_eq!(
            s.pool_url("pool/main/e/expat/x.deb").unwrap().as_str(),
            "http://127.0.0.1/debian/pool/main/e/expat/x.deb"
        );
    }

    #[test]
    fn keyring_paths_are_apts() {
        assert!(is_keyring_path(
            "etc/apt/trusted.gpg.d/debian-archive-bookworm-stable.asc"
        ));
        assert!(is_keyring_path(
            "usr/share/keyrings/debian-archive-keyring.gpg"
        ));
        assert!(!is_keyring_path(
            "usr/share/keyrings/debian-archive-removed-keys.gpg"
        ));
        assert!(!is_keyring_path("etc/apt/trusted.gpg.d/sub/x.gpg"));
    }

    #[test]
    fn an_unsigned_release_is_refused() {
        let source = AptSource::parse("http://127.0.0.1/ bookworm main").unwrap();
        let err = verify_in_release(
            &source,
            b"Origin: Debian\nSHA256:\n abc 1 main/binary-amd64/Packages\n",
            &Keyring::default(),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a signed message"), "{err}");
    }
}
