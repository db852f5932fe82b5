//! Alpine's apk: the repositories of `/etc/apk/repositories`, their `APKINDEX.tar.gz`
//! verified against the image's `/etc/apk/keys` (or given keys), the `.apk` packages
//! verified by the index's checksum of their control segment, their signature and the data
//! hash the control segment names, and the layer that upgrades them with
//! `/lib/apk/db/installed` rewritten.
//!
//! Both formats are concatenated gzip streams: the first holds a tar of
//! `.SIGN.RSA.<key>` (PKCS#1 v1.5 over SHA-1, as `abuild-sign` writes it) or
//! `.SIGN.RSA256.<key>` (SHA-256) signing the next stream's bytes. An index's next stream
//! is the tar of `DESCRIPTION` and `APKINDEX`; a package's is its control segment
//! (`.PKGINFO`, install scripts), followed by the data segment whose SHA-256 `.PKGINFO`
//! names as `datahash`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;

use base64::Engine as _;
use reqwest::Url;
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use sha1::Sha1;
use sha2::{Digest as _, Sha256};

use super::control::Relation;
use super::deb::ImageFiles;
use super::layer::{for_each_entry, FixLayer, LayerWriter};
use super::plan::{self, Candidate, InstalledPackage, PackageManager};
use super::{
    check_download_sizes, fetcher, package_sources, proceed_with, say, FixError, FixOptions,
    FixReport, ImageToFix, PackageSource,
};

/// apk's database of installed packages.
pub const INSTALLED: &str = "lib/apk/db/installed";
/// apk's list of repositories.
pub const REPOSITORIES: &str = "etc/apk/repositories";
/// The directory of apk's trusted keys.
const KEYS_DIR: &str = "etc/apk/keys/";
/// Largest `APKINDEX.tar.gz` read (Alpine's community index is ~1.5 MiB).
pub const MAX_INDEX_BYTES: u64 = 64 << 20;
/// Largest `APKINDEX` text, uncompressed.
const MAX_INDEX_TEXT_BYTES: u64 = 256 << 20;
/// Largest `.apk` downloaded.
pub const MAX_APK_BYTES: u64 = 256 << 20;
/// Largest sum of the `.apk` files of one fix.
pub const MAX_APKS_BYTES: u64 = 1 << 30;
/// Largest signature or control segment, uncompressed.
const MAX_SEGMENT_BYTES: u64 = 4 << 20;
/// Largest data segment, uncompressed.
const MAX_DATA_BYTES: u64 = 512 << 20;
/// Largest key file read.
const MAX_KEY_BYTES: usize = 64 << 10;
/// Key files read from one image or given.
const MAX_KEY_FILES: usize = 64;
/// Packages read from one index or from the installed database.
const MAX_ENTRIES: usize = 500_000;
/// Signatures read from one signature segment.
const MAX_SIGNATURES: usize = 16;
/// Rounds of planning when downloaded packages turn out to carry install scripts.
const MAX_REPLANS: usize = 8;

/// One apk repository: the URL under which `<arch>/APKINDEX.tar.gz` and the packages are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApkRepository {
    pub url: Url,
}

impl ApkRepository {
    /// Parses a repository URL (a line of `/etc/apk/repositories`).
    pub fn parse(line: &str) -> Result<Self, FixError> {
        let bad = |why: &str| FixError::Invalid(format!("apk repository {line:?}: {why}"));
        let line = line.trim();
        if line.starts_with('@') {
            return Err(bad("tagged repositories (@tag URL) are not supported"));
        }
        if line.split_whitespace().count() != 1 {
            return Err(bad("an apk repository is one URL"));
        }
        let mut url = Url::parse(line).map_err(|_| bad("not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("only http and https repositories are supported"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("credentials in the URL are not supported"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a query or fragment is not supported"));
        }
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        Ok(ApkRepository { url })
    }

    /// The repositories of `/etc/apk/repositories` (comments, tagged and unreadable
    /// lines skipped).
    pub fn from_repositories(text: &str) -> Vec<ApkRepository> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('@'))
            .filter_map(|l| ApkRepository::parse(l).ok())
            .collect()
    }

    /// The URL of a file of the repository's `arch` directory.
    fn file_url(&self, arch: &str, name: &str) -> Result<Url, FixError> {
        let plain = |s: &str| !s.is_empty() && !s.contains('/') && !s.starts_with('.');
        if !plain(arch) || !plain(name) {
            return Err(FixError::Index(format!(
                "{self}: {arch}/{name} is not a file name of the repository"
            )));
        }
        self.url
            .join(&format!("{arch}/{name}"))
            .map_err(|e| FixError::Invalid(format!("{self}: {e}")))
    }
}

impl std::fmt::Display for ApkRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.url.as_str().trim_end_matches('/'))
    }
}

/// Whether a keyring file name is an apk key's (`*.rsa.pub`).
pub fn is_key_name(name: &str) -> bool {
    name.ends_with(".rsa.pub")
}

/// RSA public keys, by the file name signatures name them by.
#[derive(Default)]
pub struct ApkKeys {
    keys: Vec<(String, RsaPublicKey)>,
    /// Where the keys came from, for messages.
    pub sources: Vec<String>,
}

impl ApkKeys {
    /// Adds the key of one PEM file (`-----BEGIN PUBLIC KEY-----`); its base name is the
    /// name signatures use.
    pub fn add_file(&mut self, name: &str, data: &[u8]) -> Result<(), FixError> {
        let bad = |why: String| FixError::Keyring(format!("{name}: {why}"));
        if data.len() > MAX_KEY_BYTES {
            return Err(bad(format!("larger than {MAX_KEY_BYTES} bytes")));
        }
        if self.keys.len() >= MAX_KEY_FILES {
            return Err(bad(format!("more than {MAX_KEY_FILES} apk keys")));
        }
        let text = std::str::from_utf8(data).map_err(|_| bad("not a PEM file".into()))?;
        let key = RsaPublicKey::from_public_key_pem(text.trim())
            .map_err(|e| bad(format!("not an RSA public key (PEM): {e}")))?;
        let base = name.rsplit('/').next().unwrap_or(name).to_string();
        self.keys.push((base, key));
        self.sources.push(name.to_string());
        Ok(())
    }

    /// The keys of an image's `/etc/apk/keys` (files that hold none are skipped).
    pub fn from_image(files: &HashMap<String, Vec<u8>>) -> ApkKeys {
        let mut keys = ApkKeys::default();
        let mut names: Vec<&String> = files
            .keys()
            .filter(|p| {
                p.strip_prefix(KEYS_DIR)
                    .is_some_and(|n| !n.is_empty() && !n.contains('/'))
            })
            .collect();
        names.sort();
        for name in names.into_iter().take(MAX_KEY_FILES) {
            let _ = keys.add_file(&format!("/{name}"), &files[name]);
        }
        keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn describe(&self) -> String {
        if self.sources.is_empty() {
            "none".into()
        } else {
            self.sources.join(", ")
        }
    }
}

/// Whether a path is one the apk fix reads from the image.
pub fn is_wanted(path: &str) -> bool {
    path == INSTALLED
        || path == REPOSITORIES
        || path == "etc/apk/arch"
        || path
            .strip_prefix(KEYS_DIR)
            .is_some_and(|n| !n.contains('/'))
}

/// One signature of a signature segment.
struct Signature {
    key: String,
    sha256: bool,
    bytes: Vec<u8>,
}

/// The first gzip stream of `data`, decompressed (at most `limit` bytes), and its length
/// in `data`.
fn gzip_stream(data: &[u8], limit: u64) -> Result<(Vec<u8>, usize), String> {
    if data.is_empty() {
        return Err("ends where a gzip stream should start".into());
    }
    let mut decoder = flate2::bufread::GzDecoder::new(data);
    let mut out = Vec::new();
    (&mut decoder)
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("not a gzip stream: {e}"))?;
    if out.len() as u64 > limit {
        return Err(format!("a segment larger than {limit} bytes uncompressed"));
    }
    let rest = decoder.into_inner();
    Ok((out, data.len() - rest.len()))
}

/// The members of a (possibly cut) tar, by name: only regular files, read whole; at most
/// `max` of them.
fn tar_files(tar: &[u8], max: usize) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        if out.len() >= max {
            return Err(format!("more than {max} files"));
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let mut body = Vec::new();
        entry.read_to_end(&mut body).map_err(|e| e.to_string())?;
        out.push((name, body));
    }
    Ok(out)
}

/// The signatures of a signature segment (`.SIGN.RSA.<key>`, `.SIGN.RSA256.<key>`).
fn signatures(segment: &[u8]) -> Result<Vec<Signature>, String> {
    Ok(tar_files(segment, MAX_SIGNATURES)?
        .into_iter()
        .filter_map(|(name, bytes)| {
            let (sha256, key) = match name.strip_prefix(".SIGN.RSA256.") {
                Some(key) => (true, key),
                None => (false, name.strip_prefix(".SIGN.RSA.")?),
            };
            Some(Signature {
                key: key.to_string(),
                sha256,
                bytes,
            })
        })
        .collect())
}

/// Checks that one of `sigs` by a key of `keys` signs `signed`.
fn check_signature(
    keys: &ApkKeys,
    what: &str,
    sigs: &[Signature],
    signed: &[u8],
) -> Result<(), FixError> {
    if sigs.is_empty() {
        return Err(FixError::Signature(format!(
            "{what} carries no signature (.SIGN.RSA.*); unsigned repositories are not \
             supported"
        )));
    }
    let mut known = false;
    for sig in sigs {
        for (name, key) in keys.keys.iter().filter(|(n, _)| *n == sig.key) {
            known = true;
            let verified = if sig.sha256 {
                key.verify(
                    Pkcs1v15Sign::new::<Sha256>(),
                    &Sha256::digest(signed),
                    &sig.bytes,
                )
            } else {
                key.verify(
                    Pkcs1v15Sign::new::<Sha1>(),
                    &Sha1::digest(signed),
                    &sig.bytes,
                )
            };
            if verified.is_ok() {
                tracing::debug!(%what, key = %name, "apk signature verified");
                return Ok(());
            }
        }
    }
    let names: Vec<&str> = sigs.iter().map(|s| s.key.as_str()).collect();
    Err(FixError::Signature(if known {
        format!(
            "{what}: its signature by {} does not verify: the file is not the one that was \
             signed",
            names.join(", ")
        )
    } else {
        format!(
            "{what} is signed by {}, which is not a key of the keyring ({})",
            names.join(", "),
            keys.describe()
        )
    }))
}

/// apk's `Q1` checksum: SHA-1, base64.
fn q1(data: &[u8]) -> String {
    format!(
        "Q1{}",
        base64::engine::general_purpose::STANDARD.encode(Sha1::digest(data))
    )
}

/// Checks an `APKINDEX.tar.gz` (`what` names it) against `keys` and returns its
/// `APKINDEX` text.
pub fn verify_index(what: &str, data: &[u8], keys: &ApkKeys) -> Result<String, FixError> {
    let refuse = |why: String| FixError::Index(format!("{what}: {why}"));
    let (segment, length) = gzip_stream(data, MAX_SEGMENT_BYTES).map_err(refuse)?;
    let sigs = signatures(&segment).map_err(|e| refuse(format!("signature segment: {e}")))?;
    let signed = &data[length..];
    if signed.is_empty() && !sigs.is_empty() {
        return Err(refuse("holds a signature but no index".into()));
    }
    check_signature(keys, what, &sigs, signed)?;
    let mut tar = Vec::new();
    flate2::read::MultiGzDecoder::new(signed)
        .take(MAX_INDEX_TEXT_BYTES + 1)
        .read_to_end(&mut tar)
        .map_err(|e| refuse(format!("cannot read: {e}")))?;
    if tar.len() as u64 > MAX_INDEX_TEXT_BYTES {
        return Err(refuse(format!(
            "more than {MAX_INDEX_TEXT_BYTES} bytes uncompressed"
        )));
    }
    let (_, text) = tar_files(&tar, 16)
        .map_err(refuse)?
        .into_iter()
        .find(|(name, _)| name == "APKINDEX")
        .ok_or_else(|| refuse("holds no APKINDEX".into()))?;
    String::from_utf8(text).map_err(|_| refuse("its APKINDEX is not UTF-8".into()))
}

/// The stanzas of an index or installed database: blank-line separated `X:value` lines.
fn stanzas(text: &str) -> Result<Vec<&str>, String> {
    let out: Vec<&str> = text
        .split("\n\n")
        .map(|s| s.trim_matches('\n'))
        .filter(|s| !s.is_empty())
        .collect();
    if out.len() > MAX_ENTRIES {
        return Err(format!("more than {MAX_ENTRIES} packages"));
    }
    Ok(out)
}

/// The first value of field `key` of a stanza.
fn field(stanza: &str, key: char) -> Option<&str> {
    values(stanza, key).next()
}

fn values(stanza: &str, key: char) -> impl Iterator<Item = &str> {
    stanza.lines().filter_map(move |l| {
        let mut chars = l.chars();
        (chars.next() == Some(key) && chars.next() == Some(':')).then(|| &l[2..])
    })
}

/// A package or file name as it may appear in a repository path.
fn plain_name(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && !s.starts_with('.') && !s.contains(char::is_whitespace)
}

/// The packages an `APKINDEX` offers (`repository`: the index in the fix's list).
pub fn parse_index(text: &str, repository: usize) -> Result<Vec<Candidate>, String> {
    let mut out = Vec::new();
    for stanza in stanzas(text)? {
        let (Some(name), Some(version), Some(checksum), Some(size)) = (
            field(stanza, 'P'),
            field(stanza, 'V'),
            field(stanza, 'C'),
            field(stanza, 'S').and_then(|s| s.parse::<u64>().ok()),
        ) else {
            continue;
        };
        if !plain_name(name) || !plain_name(version) || !checksum.starts_with("Q1") {
            continue;
        }
        out.push(Candidate {
            name: name.to_string(),
            version: version.to_string(),
            architecture: field(stanza, 'A').unwrap_or("").to_string(),
            source: field(stanza, 'o').unwrap_or(name).to_string(),
            source_version: version.to_string(),
            filename: format!("{name}-{version}.apk"),
            checksum: checksum.to_string(),
            size,
            depends: depends(field(stanza, 'D').unwrap_or("")),
            repository,
        });
    }
    Ok(out)
}

/// apk's `D:` dependencies (`name`, `name>=1.2`, `so:libc.musl-x86_64.so.1`, ...): each a
/// group of one; conflicts (`!name`) are left out.
pub fn depends(field: &str) -> Vec<Vec<Relation>> {
    field
        .split_whitespace()
        .filter(|d| !d.starts_with('!'))
        .filter_map(|d| {
            let at = d.find(['<', '>', '=', '~']).unwrap_or(d.len());
            let name = d[..at].split('@').next().unwrap_or("");
            if name.is_empty() {
                return None;
            }
            let rest = &d[at..];
            let op_len = rest
                .find(|c: char| !"<>=~".contains(c))
                .unwrap_or(rest.len());
            let constraint = (!rest.is_empty())
                .then(|| (rest[..op_len].to_string(), rest[op_len..].to_string()));
            Some(vec![Relation {
                name: name.to_string(),
                constraint,
            }])
        })
        .collect()
}

/// The packages of the image's `/lib/apk/db/installed`.
pub fn installed(files: &ImageFiles) -> Result<Vec<InstalledPackage>, FixError> {
    let text = installed_text(files)?;
    Ok(stanzas(&text)
        .map_err(|e| FixError::Invalid(format!("/{INSTALLED}: {e}")))?
        .into_iter()
        .filter_map(|s| {
            let name = field(s, 'P')?.to_string();
            let version = field(s, 'V')?.to_string();
            Some(InstalledPackage {
                architecture: field(s, 'A').unwrap_or("").to_string(),
                source: field(s, 'o').unwrap_or(&name).to_string(),
                source_version: version.clone(),
                provides: field(s, 'p')
                    .unwrap_or("")
                    .split_whitespace()
                    .map(|p| p.split('=').next().unwrap_or(p).to_string())
                    .collect(),
                name,
                version,
            })
        })
        .collect())
}

fn installed_text(files: &ImageFiles) -> Result<String, FixError> {
    let data = files
        .files
        .get(INSTALLED)
        .ok_or_else(|| FixError::Invalid(format!("the image has no /{INSTALLED}")))?;
    String::from_utf8(data.clone())
        .map_err(|_| FixError::Invalid(format!("/{INSTALLED} is not UTF-8")))
}

/// One `.apk`, read and verified.
pub struct ApkPackage {
    /// `Q1` checksum of the control segment (the installed database's `C:`).
    pub checksum: String,
    /// `.PKGINFO` as `key = value` pairs, in order.
    pub pkginfo: Vec<(String, String)>,
    /// Install scripts (`.post-install`, `.trigger`, ...) by name.
    pub scripts: BTreeMap<String, Vec<u8>>,
    /// The uncompressed data tar.
    pub data: Vec<u8>,
    /// Size of the `.apk`.
    pub size: u64,
}

impl ApkPackage {
    /// Reads `data` (`what` names it) as the package `candidate` of a verified index: its
    /// control segment must have the index's checksum and a signature by one of `keys`,
    /// its data segment the SHA-256 the control segment names.
    pub fn read(
        what: &str,
        data: &[u8],
        keys: &ApkKeys,
        candidate: &Candidate,
    ) -> Result<ApkPackage, FixError> {
        let refuse = |why: String| FixError::Package(format!("{what}: {why}"));
        if data.len() as u64 != candidate.size {
            return Err(refuse(format!(
                "{} bytes where the signed index says {}; the package was refused",
                data.len(),
                candidate.size
            )));
        }
        let (segment, sig_length) = gzip_stream(data, MAX_SEGMENT_BYTES).map_err(refuse)?;
        let sigs = signatures(&segment).map_err(|e| refuse(format!("signature: {e}")))?;
        let rest = &data[sig_length..];
        let (control, control_length) = gzip_stream(rest, MAX_SEGMENT_BYTES)
            .map_err(|e| refuse(format!("control segment: {e}")))?;
        let control_bytes = &rest[..control_length];
        let checksum = q1(control_bytes);
        if checksum != candidate.checksum {
            return Err(refuse(format!(
                "control segment checksum {checksum} where the signed index says {}; the \
                 package was refused",
                candidate.checksum
            )));
        }
        check_signature(keys, what, &sigs, control_bytes)?;
        let mut pkginfo = Vec::new();
        let mut scripts = BTreeMap::new();
        for (name, body) in tar_files(&control, 64).map_err(refuse)? {
            if name == ".PKGINFO" {
                let text =
                    String::from_utf8(body).map_err(|_| refuse(".PKGINFO is not UTF-8".into()))?;
                pkginfo = text
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .filter_map(|l| l.split_once(" = "))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .collect();
            } else if name.starts_with('.') && !name.contains('/') {
                scripts.insert(name, body);
            }
        }
        let package = ApkPackage {
            checksum,
            pkginfo,
            scripts,
            data: Vec::new(),
            size: data.len() as u64,
        };
        if package.info("pkgname") != Some(candidate.name.as_str())
            || package.info("pkgver") != Some(candidate.version.as_str())
        {
            return Err(refuse(format!(
                "its .PKGINFO does not name {} {}",
                candidate.name, candidate.version
            )));
        }
        let data_segment = &rest[control_length..];
        let want = package
            .info("datahash")
            .ok_or_else(|| refuse(".PKGINFO names no datahash".into()))?;
        let got = hex::encode(Sha256::digest(data_segment));
        if !got.eq_ignore_ascii_case(want) {
            return Err(refuse(format!(
                "data segment SHA-256 {got} where the signed .PKGINFO says {want}; the \
                 package was refused"
            )));
        }
        let mut tar = Vec::new();
        flate2::read::MultiGzDecoder::new(data_segment)
            .take(MAX_DATA_BYTES + 1)
            .read_to_end(&mut tar)
            .map_err(|e| refuse(format!("data segment: {e}")))?;
        if tar.len() as u64 > MAX_DATA_BYTES {
            return Err(refuse(format!(
                "data segment larger than {MAX_DATA_BYTES} bytes uncompressed"
            )));
        }
        Ok(ApkPackage {
            data: tar,
            ..package
        })
    }

    /// The first `.PKGINFO` value of `key`.
    pub fn info<'a>(&'a self, key: &'a str) -> Option<&'a str> {
        self.infos(key).next()
    }

    fn infos<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> {
        self.pkginfo
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The install scripts the fix cannot stand in for: all but those that only run
    /// `ldconfig`.
    pub fn unvetted_scripts(&self) -> Vec<&str> {
        self.scripts
            .iter()
            .filter(|(_, body)| !only_ldconfig(body))
            .map(|(name, _)| name.as_str())
            .collect()
    }
}

/// Whether a script does nothing but run `ldconfig` (which a musl system does not need).
fn only_ldconfig(body: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .all(|l| {
            let mut words = l.split_whitespace();
            match words.next() {
                Some("exit") => words.next() == Some("0") && words.next().is_none(),
                Some("ldconfig" | "/sbin/ldconfig") => words.all(|w| {
                    w == "\"$@\""
                        || (w.starts_with('/')
                            && w.chars()
                                .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c)))
                }),
                _ => false,
            }
        })
}

/// Alpine: the plan from the verified apk indexes, the `.apk`s downloaded and checked,
/// the layer written; `None` when there is nothing to push.
pub(super) async fn layer(
    image: ImageToFix<'_>,
    opts: &FixOptions,
    report: &mut FixReport,
) -> Result<Option<FixLayer>, FixError> {
    let name = image.name;
    say(opts, "reading the package sources");
    let repositories = package_sources(
        opts,
        name,
        PackageManager::Apk,
        || {
            image
                .files
                .files
                .get(REPOSITORIES)
                .map(|t| ApkRepository::from_repositories(&String::from_utf8_lossy(t)))
                .unwrap_or_default()
        },
        "/etc/apk/repositories",
        |s| match s {
            PackageSource::Apk(a) => Some(a),
            PackageSource::Apt(_) => None,
        },
    )?;
    let keys = if opts.keyrings.is_empty() {
        ApkKeys::from_image(&image.files.files)
    } else {
        let mut keys = ApkKeys::default();
        for (file, data) in opts.keyrings.iter().filter(|(n, _)| is_key_name(n)) {
            keys.add_file(file, data)?;
        }
        keys
    };
    if keys.is_empty() {
        return Err(FixError::Keyring(if opts.keyrings.is_empty() {
            format!("{name} has no apk key (/{KEYS_DIR}*.rsa.pub); give the keys of the package sources")
        } else {
            "the keyrings given hold no apk key (a file named *.rsa.pub)".into()
        }));
    }
    let arch = apk_architecture(&image.files, image.config_json)?;
    let fetcher = fetcher(opts)?;
    let mut candidates = Vec::new();
    for (i, repository) in repositories.iter().enumerate() {
        let url = repository.file_url(&arch, "APKINDEX.tar.gz")?;
        let data = fetcher
            .get(&url, MAX_INDEX_BYTES)
            .await?
            .ok_or_else(|| FixError::Fetch(format!("{url}: not found")))?;
        let text = verify_index(url.as_str(), &data, &keys)?;
        candidates
            .extend(parse_index(&text, i).map_err(|e| FixError::Index(format!("{url}: {e}")))?);
    }
    say(opts, "planning");
    let plan_with = |candidates: &[Candidate]| {
        plan::plan(
            PackageManager::Apk,
            image.findings,
            &opts.selection,
            &image.installed,
            candidates,
        )
    };
    if !proceed_with(report, plan_with(&candidates), opts) {
        return Ok(None);
    }
    // Packages with install scripts the fix cannot stand in for are taken out of the
    // candidates and the plan made again, so what is left is applied whole.
    let mut downloaded: HashMap<(String, String), ApkPackage> = HashMap::new();
    let mut refused: BTreeMap<(String, String), String> = BTreeMap::new();
    for _ in 0..MAX_REPLANS {
        let total = check_download_sizes(&report.plan, MAX_APK_BYTES, MAX_APKS_BYTES)?;
        say(
            opts,
            &format!(
                "downloading {} packages ({total} bytes)",
                report.plan.upgrades.len()
            ),
        );
        let mut new_refusals = false;
        for u in &report.plan.upgrades {
            let c = &u.candidate;
            let key = (c.name.clone(), c.version.clone());
            if downloaded.contains_key(&key) {
                continue;
            }
            let url = repositories[c.repository].file_url(&arch, &c.filename)?;
            let data = fetcher
                .get(&url, c.size)
                .await?
                .ok_or_else(|| FixError::Fetch(format!("{url}: not found")))?;
            let package = ApkPackage::read(url.as_str(), &data, &keys, c)?;
            let scripts = package.unvetted_scripts();
            if !scripts.is_empty() {
                refused.insert(
                    key.clone(),
                    format!(
                        "{} {} has install scripts ({}) that the fix does not run and cannot \
                         stand in for",
                        c.name,
                        c.version,
                        scripts.join(", ")
                    ),
                );
                new_refusals = true;
            }
            downloaded.insert(key, package);
        }
        if !new_refusals {
            break;
        }
        let before = report.plan.clone();
        candidates.retain(|c| !refused.contains_key(&(c.name.clone(), c.version.clone())));
        report.plan = plan_with(&candidates);
        // The ids the refused packages took away: unfixable for their scripts (those of the
        // packages that fixed the id, else of every refused one: a dependency's).
        for u in report.plan.unfixable.iter_mut() {
            if !before.fixed_ids().contains(&u.id) {
                continue;
            }
            let own: Vec<&str> = before
                .upgrades
                .iter()
                .filter(|b| b.fixes.contains(&u.id))
                .filter_map(|b| refused.get(&(b.candidate.name.clone(), b.to.clone())))
                .map(String::as_str)
                .collect();
            u.reason = if own.is_empty() {
                refused.values().cloned().collect::<Vec<_>>().join("; ")
            } else {
                own.join("; ")
            };
        }
        if report.plan.upgrades.is_empty() {
            return Ok(None);
        }
    }
    if report
        .plan
        .upgrades
        .iter()
        .any(|u| refused.contains_key(&(u.candidate.name.clone(), u.to.clone())))
    {
        return Err(FixError::Package(format!(
            "the plan still needs packages with install scripts after {MAX_REPLANS} rounds"
        )));
    }
    let mut packages = Vec::new();
    for u in &report.plan.upgrades {
        let key = (u.candidate.name.clone(), u.candidate.version.clone());
        let package = downloaded
            .remove(&key)
            .ok_or_else(|| FixError::Package(format!("{} {} was not downloaded", key.0, key.1)))?;
        packages.push((u.package.clone(), package));
    }
    say(opts, "writing the layer");
    let files = image.files;
    let layer = tokio::task::spawn_blocking(move || build_layer(&files, &packages))
        .await
        .map_err(|e| FixError::Invalid(format!("layer task failed: {e}")))??;
    for (name, scripts) in &layer.scripts_not_run {
        report.warnings.push(format!(
            "{name}: install scripts not run ({}); they only run ldconfig",
            scripts.join(", ")
        ));
    }
    Ok(Some(layer))
}

/// apk's name of the image's architecture: `/etc/apk/arch`, else from the configuration.
fn apk_architecture(files: &ImageFiles, config_json: &[u8]) -> Result<String, FixError> {
    if let Some(arch) = files.files.get("etc/apk/arch") {
        let arch = String::from_utf8_lossy(arch).trim().to_string();
        if plain_name(&arch) && arch.len() <= 32 {
            return Ok(arch);
        }
        return Err(FixError::Invalid(
            "/etc/apk/arch does not name an architecture".into(),
        ));
    }
    let config: serde_json::Value = serde_json::from_slice(config_json)
        .map_err(|e| FixError::Invalid(format!("the image configuration is not JSON: {e}")))?;
    let arch = config["architecture"].as_str().unwrap_or("amd64");
    let variant = config["variant"].as_str().unwrap_or("");
    Ok(match (arch, variant) {
        ("amd64", _) => "x86_64",
        ("386", _) => "x86",
        ("arm64", _) => "aarch64",
        ("arm", "v6" | "v5") => "armhf",
        ("arm", _) => "armv7",
        (other, _) => other,
    }
    .to_string())
}

/// The files (`dir/name`) an installed-database stanza lists.
fn stanza_files(stanza: &str) -> Vec<String> {
    let mut dir = "";
    let mut out = Vec::new();
    for line in stanza.lines() {
        if let Some(d) = line.strip_prefix("F:") {
            dir = d;
        } else if let Some(name) = line.strip_prefix("R:") {
            out.push(if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            });
        }
    }
    out
}

/// The installed-database stanza of a new package: what its `.PKGINFO` says, then its
/// directories (`F:`, `M:`) and files (`R:`, `a:`, `Z:`).
fn new_stanza(package: &ApkPackage, dirs: &[(String, Option<String>, Vec<String>)]) -> String {
    let mut lines = vec![format!("C:{}", package.checksum)];
    let single = [('P', "pkgname"), ('V', "pkgver"), ('A', "arch")];
    for (key, info) in single {
        if let Some(v) = package.info(info) {
            lines.push(format!("{key}:{v}"));
        }
    }
    lines.push(format!("S:{}", package.size));
    let rest = [
        ('I', "size"),
        ('T', "pkgdesc"),
        ('U', "url"),
        ('L', "license"),
        ('o', "origin"),
        ('m', "maintainer"),
        ('t', "builddate"),
        ('c', "commit"),
        ('k', "provider_priority"),
    ];
    for (key, info) in rest {
        if let Some(v) = package.info(info) {
            lines.push(format!("{key}:{v}"));
        }
    }
    for (key, info) in [
        ('D', "depend"),
        ('p', "provides"),
        ('r', "replaces"),
        ('i', "install_if"),
    ] {
        let all: Vec<&str> = package.infos(info).collect();
        if !all.is_empty() {
            lines.push(format!("{key}:{}", all.join(" ")));
        }
    }
    for (dir, mode, files) in dirs {
        if !dir.is_empty() {
            lines.push(format!("F:{dir}"));
            if let Some(m) = mode {
                lines.push(format!("M:{m}"));
            }
        }
        lines.extend(files.iter().cloned());
    }
    lines.join("\n")
}

/// `uid:gid:mode` as apk records it, or `None` for the default it leaves out.
fn acl(header: &tar::Header, default_mode: u32) -> Option<String> {
    let uid = header.uid().unwrap_or(0);
    let gid = header.gid().unwrap_or(0);
    let mode = header.mode().unwrap_or(default_mode) & 0o7777;
    (uid != 0 || gid != 0 || mode != default_mode).then(|| format!("{uid}:{gid}:{mode:o}"))
}

/// Writes the layer that replaces each `(installed name, new package)` in the image:
/// the new files, whiteouts for files the old version had and no package keeps, and
/// `/lib/apk/db/installed` with the packages' stanzas replaced.
pub fn build_layer(
    image: &ImageFiles,
    packages: &[(String, ApkPackage)],
) -> Result<FixLayer, FixError> {
    let text = installed_text(image)?;
    let mut db: Vec<String> = stanzas(&text)
        .map_err(|e| FixError::Invalid(format!("/{INSTALLED}: {e}")))?
        .into_iter()
        .map(str::to_string)
        .collect();
    let mut owners: HashMap<String, usize> = HashMap::new();
    for s in &db {
        for path in stanza_files(s) {
            *owners.entry(path).or_default() += 1;
        }
    }
    let mut layer = LayerWriter::new();
    let mut scripts_not_run = Vec::new();
    for (name, package) in packages {
        let at = db
            .iter()
            .position(|s| field(s, 'P') == Some(name.as_str()))
            .ok_or_else(|| FixError::Invalid(format!("/{INSTALLED} has no package {name}")))?;
        let old_files = stanza_files(&db[at]);
        // Directories in archive order, each with its mode and file lines.
        let mut dirs: Vec<(String, Option<String>, Vec<String>)> = Vec::new();
        let mut dir_at: HashMap<String, usize> = HashMap::new();
        let mut new_files: BTreeSet<String> = BTreeSet::new();
        let mut checksums: HashMap<String, String> = HashMap::new();
        let mut dir_index = |dirs: &mut Vec<(String, Option<String>, Vec<String>)>, d: &str| {
            *dir_at.entry(d.to_string()).or_insert_with(|| {
                dirs.push((d.to_string(), None, Vec::new()));
                dirs.len() - 1
            })
        };
        for_each_entry(name, &package.data, |entry| {
            // Control members never belong in the data segment.
            if !entry.path.contains('/') && entry.path.starts_with('.') {
                return Ok(());
            }
            let kind = entry.header.entry_type();
            if kind.is_dir() {
                let i = dir_index(&mut dirs, &entry.path);
                dirs[i].1 = acl(&entry.header, 0o755);
                return layer.copy(&entry);
            }
            let (dir, base) = entry.path.rsplit_once('/').unwrap_or(("", &entry.path));
            let checksum = match entry.link_target() {
                Some(target) if kind.is_symlink() => q1(target.as_bytes()),
                Some(target) => checksums.get(&target).cloned().unwrap_or_default(),
                None => q1(&entry.body),
            };
            let i = dir_index(&mut dirs, dir);
            dirs[i].2.push(format!("R:{base}"));
            // apk writes `a:` for every file whose owner or mode is not root's 0644,
            // symlinks (0777) included.
            if let Some(a) = acl(&entry.header, 0o644) {
                dirs[i].2.push(format!("a:{a}"));
            }
            if !checksum.is_empty() {
                dirs[i].2.push(format!("Z:{checksum}"));
            }
            checksums.insert(entry.path.clone(), checksum);
            new_files.insert(entry.path.clone());
            layer.copy(&entry)
        })?;
        for old in &old_files {
            if !new_files.contains(old) && owners.get(old).copied().unwrap_or(0) <= 1 {
                layer.whiteout(old);
            }
        }
        let scripts: Vec<String> = package.scripts.keys().cloned().collect();
        if !scripts.is_empty() {
            scripts_not_run.push((name.clone(), scripts));
        }
        db[at] = new_stanza(package, &dirs);
    }
    let mut text = String::new();
    for s in &db {
        text.push_str(s);
        text.push_str("\n\n");
    }
    layer.file(INSTALLED, text.as_bytes(), 0o644)?;
    layer.finish(scripts_not_run, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_parse_and_odd_ones_are_refused() {
        let r = ApkRepository::from_repositories(
            "# main\nhttp://dl-cdn.alpinelinux.org/alpine/v3.10/main\n@edge http://x/edge\n\nftp://x/y\n",
        );
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0].file_url("x86_64", "APKINDEX.tar.gz").unwrap().as_str(),
            "http://dl-cdn.alpinelinux.org/alpine/v3.10/main/x86_64/APKINDEX.tar.gz"
        );
        for bad in [
            "http://u:p@x/main",
            "http://x/main extra",
            "file:///x",
            "http://x/?q",
        ] {
            assert!(ApkRepository::parse(bad).is_err(), "{bad}");
        }
        assert!(r[0].file_url("x86_64", "../../etc/passwd").is_err());
        assert!(r[0].file_url("../x", "a.apk").is_err());
    }

    #[test]
    fn dependencies_parse_with_constraints_and_without_conflicts() {
        let d = depends("so:libc.musl-x86_64.so.1 musl>=1.1.22 !busybox zlib=1.2.12-r0 x@edge");
        let got: Vec<(&str, Option<(&str, &str)>)> = d
            .iter()
            .map(|g| {
                (
                    g[0].name.as_str(),
                    g[0].constraint
                        .as_ref()
                        .map(|(o, v)| (o.as_str(), v.as_str())),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("so:libc.musl-x86_64.so.1", None),
                ("musl", Some((">=", "1.1.22"))),
                ("zlib", Some(("=", "1.2.12-r0"))),
                ("x", None),
            ]
        );
    }

    #[test]
    fn only_ldconfig_scripts_are_known_safe() {
        assert!(only_ldconfig(
            b"#!/bin/sh\n/sbin/ldconfig /usr/lib\nexit 0\n"
        ));
        assert!(only_ldconfig(b"#!/bin/sh\nldconfig \"$@\"\n"));
        assert!(!only_ldconfig(b"#!/bin/sh\nadduser -S x\n"));
        assert!(!only_ldconfig(b"#!/bin/sh\nldconfig; rm -rf /\n"));
        assert!(!only_ldconfig(&[0xff, 0xfe]));
    }

    #[test]
    fn hostile_archives_get_errors_not_panics() {
        let keys = ApkKeys::default();
        for data in [
            &b""[..],
            b"not gzip",
            &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1],
        ] {
            assert!(verify_index("x", data, &keys).is_err());
        }
        let candidate = Candidate {
            name: "a".into(),
            version: "1-r0".into(),
            architecture: String::new(),
            source: "a".into(),
            source_version: "1-r0".into(),
            filename: "a-1-r0.apk".into(),
            checksum: "Q1x".into(),
            size: 8,
            depends: vec![],
            repository: 0,
        };
        assert!(ApkPackage::read("a.apk", b"not gzip", &keys, &candidate).is_err());
        assert!(ApkKeys::default().add_file("k.rsa.pub", b"junk").is_err());
    }

    #[test]
    fn installed_stanzas_list_their_files() {
        let s = "P:zlib\nV:1.2.11-r1\nF:lib\nR:libz.so.1.2.11\na:0:0:755\nZ:Q1x=\nR:libz.so.1\nF:usr/lib\nR:x";
        assert_eq!(
            stanza_files(s),
            ["lib/libz.so.1.2.11", "lib/libz.so.1", "usr/lib/x"]
        );
    }
}
