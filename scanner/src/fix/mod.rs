//! Patched images for fixable system vulnerabilities, without a daemon: the image's
//! inventory is matched against the database (every finding, not a truncated report), the
//! plan upgrades every installed binary of each affected source package to the lowest
//! version of the package sources that fixes it, the repository index is verified
//! (`InRelease` against the image's apt keyring or a given one, `Packages` by its SHA256,
//! each `.deb` by the SHA256 of the index), the packages are unpacked into one new layer
//! with dpkg's database rewritten, and the image is pushed as `<tag>_fixd` (or another
//! tag) to the same registry, then read again to tell which ids are gone.
//!
//! Alpine (apk) images the same way: `APKINDEX.tar.gz` verified against the image's
//! `/etc/apk/keys` (or given keys), each `.apk` by the index's checksum of its control
//! segment, its signature and the data hash its signed control names, and
//! `/lib/apk/db/installed` rewritten.
//!
//! Maintainer scripts are never run: a `.deb`'s are listed as warnings; an `.apk` with a
//! script beyond the known-safe ones (`ldconfig`) makes its fix unfixable with that
//! reason. rpm images are refused ("rpm fixing is not supported yet").

pub mod apk;
pub mod apt;
pub mod control;
pub mod deb;
pub mod layer;
pub mod plan;

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::sync::Arc;

use chrono::Utc;
use futures::StreamExt;
use oci_client::Reference;
use serde::Serialize;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::egress::EgressPolicy;
use crate::finding::Severity;
use crate::layer::{decompress, normalize_entry_path, Digester, HashingReader};
use crate::matcher::match_inventory;
use crate::registry::{RegistryClient, RegistryError};
use crate::source::oci::{self, Manifest};
use crate::source::{ImageRef, PullOptions, SourceError};
use crate::vulndb::{Db, DbError};
use apk::ApkRepository;
use apt::{AptSource, Fetcher, Keyring};
use deb::{DebPackage, ImageFiles, INFO, STATUS};
use layer::FixLayer;
use plan::{InstalledPackage, PackageManager, Plan, Selection};

/// The default suffix of the fixed image's tag.
pub const DEFAULT_TAG_SUFFIX: &str = "_fixd";
/// The suffix the original tag's image keeps when the fix overwrites the tag.
pub const ORIGINAL_SUFFIX: &str = "_orig";
/// The label naming the digest an image was fixed from.
pub const FIXED_FROM_LABEL: &str = "io.imagewarden.fixed-from";
/// Largest `.deb` downloaded.
pub const MAX_DEB_BYTES: u64 = 256 << 20;
/// Largest sum of the `.deb` files of one fix.
pub const MAX_DEBS_BYTES: u64 = 1 << 30;
/// Largest file read from the image for the fix (dpkg database, keyrings, conffiles).
const MAX_IMAGE_FILE_BYTES: u64 = 16 << 20;
/// Largest sum of the files read from the image for the fix.
const MAX_IMAGE_FILES_BYTES: u64 = 128 << 20;
/// Files under `etc/` larger than this are not kept for the conffile comparison.
const MAX_CONFFILE_BYTES: u64 = 256 << 10;

/// Why a fix failed. Nothing is pushed when a step before the push fails.
#[derive(Debug, thiserror::Error)]
pub enum FixError {
    #[error("{0}")]
    Invalid(String),
    #[error("keyring: {0}")]
    Keyring(String),
    #[error("signature check failed: {0}")]
    Signature(String),
    #[error("package index refused: {0}")]
    Index(String),
    #[error("download failed: {0}")]
    Fetch(String),
    #[error("egress denied: {0}")]
    Egress(String),
    #[error("package refused: {0}")]
    Package(String),
    /// The image's packages are managed by a package manager the engine cannot fix.
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Database(#[from] DbError),
}

/// A repository packages are fixed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageSource {
    /// `[deb] URL SUITE COMPONENT...`
    Apt(AptSource),
    /// One URL: the repository whose `<arch>/APKINDEX.tar.gz` lists the packages.
    Apk(ApkRepository),
}

impl PackageSource {
    /// An apt source line, or an apk repository (a line of one URL).
    pub fn parse(line: &str) -> Result<Self, FixError> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            [url] => Ok(PackageSource::Apk(ApkRepository::parse(url)?)),
            [tag, ..] if tag.starts_with('@') => {
                Ok(PackageSource::Apk(ApkRepository::parse(line)?))
            }
            _ => Ok(PackageSource::Apt(AptSource::parse(line)?)),
        }
    }

    /// The URL of the repository.
    pub fn url(&self) -> &reqwest::Url {
        match self {
            PackageSource::Apt(a) => &a.url,
            PackageSource::Apk(a) => &a.url,
        }
    }
}

impl std::fmt::Display for PackageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PackageSource::Apt(a) => a.fmt(f),
            PackageSource::Apk(a) => a.fmt(f),
        }
    }
}

/// Where the fixed image goes.
#[derive(Debug, Clone)]
pub enum FixTarget {
    /// `<tag><suffix>` in the image's repository.
    TagSuffix(String),
    /// The original tag moves to the fixed image; the old image stays as `<tag>_orig`.
    Overwrite,
    /// A reference on the same registry (`host/repository:tag`).
    Reference(String),
}

impl Default for FixTarget {
    fn default() -> Self {
        FixTarget::TagSuffix(DEFAULT_TAG_SUFFIX.into())
    }
}

/// Told each step of a fix as it starts.
pub type ProgressFn = Arc<dyn Fn(&str) + Send + Sync>;

/// How a fix runs.
#[derive(Clone, Default)]
pub struct FixOptions {
    pub selection: Selection,
    pub target: FixTarget,
    /// Package sources (apt's `URL SUITE COMPONENT...`, apk's repository URL); empty: the
    /// image's own (`/etc/apt/sources.list(.d)`, `/etc/apk/repositories`).
    pub sources: Vec<PackageSource>,
    /// Keyring files (name, content): apk keys are the files named `*.rsa.pub`, apt
    /// (OpenPGP) keyrings the others. Given, they are used instead of the image's own
    /// (`/etc/apt/trusted.gpg.d`, `/usr/share/keyrings`, `/etc/apk/keys`); empty: the
    /// image's own.
    pub keyrings: Vec<(String, Vec<u8>)>,
    /// Refuse an `InRelease` past its `Valid-Until` (apt's default); off for archives
    /// kept for replay on purpose (`Acquire::Check-Valid-Until=false`).
    pub check_valid_until: bool,
    /// Only plan: nothing is downloaded past the indexes, nothing is pushed.
    pub plan_only: bool,
    pub pull: PullOptions,
    /// Told each step as it starts (`planning`, `downloading 3 packages`, ...).
    pub progress: Option<ProgressFn>,
}

/// What a fix did: the JSON contract of `imagewarden fix`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FixReport {
    /// The image as named.
    pub image: String,
    /// The manifest digest fixed.
    pub digest: String,
    pub outcome: FixOutcome,
    pub plan: Plan,
    /// `host/repository:tag@digest` of the fixed image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pushed: Option<String>,
    /// Where the original image stays when its tag was moved (`<tag>_orig`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// How a fix ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FixOutcome {
    Completed,
    NothingToFix,
    Planned,
}

/// The fixed image read again: which planned ids are gone and which remain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub fixed: Vec<String>,
    pub remaining: Vec<String>,
}

/// The image fixed: read, plan, download and verify, build, push, rescan.
pub async fn fix(image: &str, db: &Db, opts: &FixOptions) -> Result<FixReport, FixError> {
    let reference: Reference = image
        .parse()
        .map_err(|e| FixError::Invalid(format!("{image}: not an image reference: {e}")))?;
    let client = crate::source::registry::client(&reference, image, &opts.pull)?;
    let repository = reference.repository().to_string();
    say(opts, "reading the image");
    let (raw_manifest, digest) = client
        .manifest_bytes(
            &repository,
            crate::source::registry::manifest_tag_or_digest(&reference),
            oci::ACCEPTED_MANIFESTS,
        )
        .await?;
    if let Some(expected) = reference.digest() {
        oci::verify_digest(&raw_manifest, expected, image)?;
    }
    let Manifest::Image { config, layers } = oci::parse_manifest(&raw_manifest, image)? else {
        return Err(FixError::Invalid(format!(
            "{image} is a multi-platform index; fixing one is not supported yet: name the \
             platform's image by its digest"
        )));
    };
    let config_json = client.small_blob(&repository, &config.digest).await?;
    oci::verify_digest(&config_json, &config.digest, &format!("{image}: config"))?;
    let pinned = format!("{}/{repository}@{digest}", reference.resolve_registry());
    let scanned = crate::pipeline::read_image(
        &ImageRef::Registry(pinned.clone()),
        &opts.pull,
        &Default::default(),
    )
    .await?;
    let matches = match_inventory(&scanned.inventory, db)?;
    let files = read_image_files(&client, &repository, &layers).await?;
    let manager = if files.status().is_some() {
        Some(PackageManager::Dpkg)
    } else if files.files.contains_key(apk::INSTALLED) {
        Some(PackageManager::Apk)
    } else {
        None
    };
    let installed = match manager {
        Some(PackageManager::Dpkg) => {
            let text = String::from_utf8_lossy(files.status().unwrap_or_default());
            InstalledPackage::from_status(
                &control::stanzas(&text)
                    .map_err(|e| FixError::Invalid(format!("{STATUS}: {e}")))?,
            )
        }
        Some(PackageManager::Apk) => apk::installed(&files)?,
        None => Vec::new(),
    };
    let mut report = FixReport {
        image: image.to_string(),
        digest: digest.clone(),
        outcome: FixOutcome::NothingToFix,
        plan: Plan::default(),
        pushed: None,
        original: None,
        verification: None,
        warnings: Vec::new(),
    };
    if manager.is_none() && has_rpm_packages(&scanned.inventory) {
        return Err(FixError::Unsupported(
            "rpm fixing is not supported yet".into(),
        ));
    }
    // Which findings the selection takes; with none, the plan has nothing to ask for.
    let no_repository = plan::plan(
        manager.unwrap_or(PackageManager::Dpkg),
        &matches.vulnerabilities,
        &opts.selection,
        &installed,
        &[],
    );
    let wanted_os = no_repository.unfixable.iter().any(|u| {
        u.reason.starts_with("no package source offers")
            || u.reason.starts_with("no installed package")
    });
    if !wanted_os {
        report.plan = no_repository;
        return Ok(report);
    }
    let Some(manager) = manager else {
        return Err(FixError::Invalid(format!(
            "{image} has no package database (/var/lib/dpkg/status, /lib/apk/db/installed): \
             only Debian and Ubuntu (apt) and Alpine (apk) images can be fixed"
        )));
    };
    let image_to_fix = ImageToFix {
        name: image,
        config_json: &config_json,
        findings: &matches.vulnerabilities,
        installed,
        files,
    };
    let built = match manager {
        PackageManager::Dpkg => apt_layer(image_to_fix, opts, &mut report).await?,
        PackageManager::Apk => apk::layer(image_to_fix, opts, &mut report).await?,
    };
    let Some(layer) = built else {
        return Ok(report);
    };
    let new_config = fixed_config(&config_json, &layer.diff_id, &digest, &report.plan)?;
    let config_digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&new_config)));
    let new_manifest = fixed_manifest(
        &raw_manifest,
        &config_digest,
        new_config.len(),
        &layer.digest,
        layer.gzip.len(),
    )?;
    let media_type = manifest_media_type(&raw_manifest);

    // Where it goes.
    let tag = reference.tag().unwrap_or("latest").to_string();
    let (target_repository, target_tag) = match &opts.target {
        FixTarget::TagSuffix(suffix) => (repository.clone(), format!("{tag}{suffix}")),
        FixTarget::Overwrite => {
            if reference.tag().is_none() {
                return Err(FixError::Invalid(format!(
                    "{image} has no tag to overwrite; name it by tag"
                )));
            }
            (repository.clone(), tag.clone())
        }
        FixTarget::Reference(to) => {
            let to_ref: Reference = to.parse().map_err(|e| {
                FixError::Invalid(format!("--to {to}: not an image reference: {e}"))
            })?;
            if to_ref.resolve_registry() != reference.resolve_registry() {
                return Err(FixError::Invalid(format!(
                    "--to {to}: the fixed image is pushed to the image's own registry ({})",
                    reference.resolve_registry()
                )));
            }
            (
                to_ref.repository().to_string(),
                to_ref.tag().unwrap_or("latest").to_string(),
            )
        }
    };
    check_tag(&target_tag)?;
    say(opts, &format!("pushing {target_repository}:{target_tag}"));
    if target_repository != repository {
        for l in &layers {
            if !client
                .mount_blob(&target_repository, &l.digest, &repository)
                .await?
            {
                return Err(FixError::Invalid(format!(
                    "the registry would not mount {} from {repository} into {target_repository}",
                    l.digest
                )));
            }
        }
    }
    client
        .push_blob(
            &target_repository,
            &layer.digest,
            bytes::Bytes::from(layer.gzip),
        )
        .await?;
    client
        .push_blob(
            &target_repository,
            &config_digest,
            bytes::Bytes::from(new_config),
        )
        .await?;
    if matches!(opts.target, FixTarget::Overwrite) {
        let orig_tag = format!("{tag}{ORIGINAL_SUFFIX}");
        client
            .put_manifest(
                &repository,
                &orig_tag,
                bytes::Bytes::from(raw_manifest.clone()),
                &media_type,
            )
            .await?;
        report.original = Some(format!(
            "{}/{repository}:{orig_tag}@{digest}",
            reference.resolve_registry()
        ));
    }
    let fixed_digest = client
        .put_manifest(
            &target_repository,
            &target_tag,
            bytes::Bytes::from(new_manifest),
            &media_type,
        )
        .await?;
    let pushed = format!(
        "{}/{target_repository}:{target_tag}@{fixed_digest}",
        reference.resolve_registry()
    );
    report.pushed = Some(pushed);

    say(opts, "verifying the fixed image");
    let rescanned = crate::pipeline::read_image(
        &ImageRef::Registry(format!(
            "{}/{target_repository}@{fixed_digest}",
            reference.resolve_registry()
        )),
        &opts.pull,
        &Default::default(),
    )
    .await?;
    let after = match_inventory(&rescanned.inventory, db)?;
    let still: BTreeSet<&str> = after
        .vulnerabilities
        .iter()
        .filter(|f| f.class == crate::finding::FindingClass::Os)
        .map(|f| f.id.as_str())
        .collect();
    let mut verification = Verification::default();
    for id in report.plan.fixed_ids() {
        if still.contains(id.as_str()) {
            verification.remaining.push(id);
        } else {
            verification.fixed.push(id);
        }
    }
    report.verification = Some(verification);
    report.outcome = FixOutcome::Completed;
    Ok(report)
}

/// What a fix reads of the image before choosing packages.
pub(crate) struct ImageToFix<'a> {
    /// The image as named.
    pub name: &'a str,
    pub config_json: &'a [u8],
    /// Every match of the image (not a truncated report).
    pub findings: &'a [crate::finding::Finding],
    pub installed: Vec<InstalledPackage>,
    pub files: ImageFiles,
}

fn say(opts: &FixOptions, what: &str) {
    if let Some(p) = &opts.progress {
        p(what);
    }
}

/// The package sources of the fix: those given (all of `manager`'s kind, picked by `pick`),
/// else the image's own (`own`, read from `where_`); an error when there are none.
fn package_sources<T: Clone>(
    opts: &FixOptions,
    image: &str,
    manager: PackageManager,
    own: impl FnOnce() -> Vec<T>,
    where_: &str,
    pick: impl Fn(&PackageSource) -> Option<&T>,
) -> Result<Vec<T>, FixError> {
    let kind = match manager {
        PackageManager::Dpkg => "apt",
        PackageManager::Apk => "apk",
    };
    let sources = if opts.sources.is_empty() {
        own()
    } else {
        opts.sources
            .iter()
            .map(|s| {
                pick(s).cloned().ok_or_else(|| {
                    FixError::Invalid(format!(
                        "package source {s} is not an {kind} repository, and {image} is fixed \
                         with {manager}"
                    ))
                })
            })
            .collect::<Result<_, _>>()?
    };
    if sources.is_empty() {
        return Err(FixError::Invalid(format!(
            "{image} names no {kind} package source ({where_}); give the package sources to \
             fix from"
        )));
    }
    Ok(sources)
}

/// Records `plan` in the report; false when nothing is to be downloaded (nothing to
/// upgrade, or only the plan was asked for).
fn proceed_with(report: &mut FixReport, plan: Plan, opts: &FixOptions) -> bool {
    report.plan = plan;
    if report.plan.upgrades.is_empty() {
        return false;
    }
    if opts.plan_only {
        report.outcome = FixOutcome::Planned;
        return false;
    }
    true
}

/// The HTTP client of package downloads, within the pull's egress policy.
fn fetcher(opts: &FixOptions) -> Result<Fetcher, FixError> {
    Fetcher::new(
        opts.pull
            .egress
            .clone()
            .unwrap_or_else(|| Arc::new(EgressPolicy::unrestricted())),
    )
}

/// Fails when the plan's downloads would exceed the bounds.
fn check_download_sizes(plan: &Plan, each: u64, total_max: u64) -> Result<u64, FixError> {
    let total: u64 = plan.upgrades.iter().map(|u| u.candidate.size).sum();
    if total > total_max {
        return Err(FixError::Package(format!(
            "the plan's packages are {total} bytes, more than {total_max}"
        )));
    }
    if let Some(c) = plan
        .upgrades
        .iter()
        .map(|u| &u.candidate)
        .find(|c| c.size > each)
    {
        return Err(FixError::Package(format!(
            "{} {} is {} bytes, more than {each}",
            c.name, c.version, c.size
        )));
    }
    Ok(total)
}

/// Debian and Ubuntu: the plan from the verified apt indexes, the `.deb`s downloaded and
/// checked, the layer written; `None` when there is nothing to push.
async fn apt_layer(
    image: ImageToFix<'_>,
    opts: &FixOptions,
    report: &mut FixReport,
) -> Result<Option<FixLayer>, FixError> {
    let name = image.name;
    say(opts, "reading the package sources");
    let sources = package_sources(
        opts,
        name,
        PackageManager::Dpkg,
        || image_sources(&image.files),
        "/etc/apt/sources.list, sources.list.d",
        |s| match s {
            PackageSource::Apt(a) => Some(a),
            PackageSource::Apk(_) => None,
        },
    )?;
    let given: Vec<&(String, Vec<u8>)> = opts
        .keyrings
        .iter()
        .filter(|(n, _)| !apk::is_key_name(n))
        .collect();
    let keyring = if opts.keyrings.is_empty() {
        Keyring::from_image(&image.files.files)
    } else {
        let mut k = Keyring::default();
        for (file, data) in given {
            k.add_file(file, data)?;
        }
        k
    };
    if keyring.is_empty() {
        return Err(FixError::Keyring(if opts.keyrings.is_empty() {
            format!(
                "{name} has no apt keyring (/etc/apt/trusted.gpg.d, /usr/share/keyrings); \
                 give the keyring of the package sources"
            )
        } else {
            "the keyrings given hold no apt (OpenPGP) keyring, only apk keys (*.rsa.pub)".into()
        }));
    }
    let arch = dpkg_architecture(image.config_json)?;
    let fetcher = fetcher(opts)?;
    let now = opts.check_valid_until.then(Utc::now);
    let mut candidates = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        let index = apt::read_repository(&fetcher, source, i, &arch, &keyring, now).await?;
        candidates.extend(index.packages);
    }
    say(opts, "planning");
    let plan = plan::plan(
        PackageManager::Dpkg,
        image.findings,
        &opts.selection,
        &image.installed,
        &candidates,
    );
    if !proceed_with(report, plan, opts) {
        return Ok(None);
    }
    let total = check_download_sizes(&report.plan, MAX_DEB_BYTES, MAX_DEBS_BYTES)?;
    say(
        opts,
        &format!(
            "downloading {} packages ({total} bytes)",
            report.plan.upgrades.len()
        ),
    );
    let mut packages = Vec::new();
    for u in &report.plan.upgrades {
        let c = &u.candidate;
        let url = sources[c.repository].pool_url(&c.filename)?;
        let data = fetcher
            .get(&url, c.size)
            .await?
            .ok_or_else(|| FixError::Fetch(format!("{url}: not found")))?;
        apt::check_sha256(&data, &c.checksum, c.size)
            .map_err(|why| FixError::Package(format!("{url}: {why}; the package was refused")))?;
        let deb = DebPackage::read(url.as_ref(), &data)?;
        if deb.control.get("Package") != Some(c.name.as_str())
            || deb.control.get("Version") != Some(c.version.as_str())
        {
            return Err(FixError::Package(format!(
                "{url}: its control file does not name {} {}",
                c.name, c.version
            )));
        }
        packages.push((u.package.clone(), deb));
    }
    say(opts, "writing the layer");
    let files = image.files;
    let layer = tokio::task::spawn_blocking(move || deb::build_layer(&files, &packages))
        .await
        .map_err(|e| FixError::Invalid(format!("layer task failed: {e}")))??;
    for (name, scripts) in &layer.scripts_not_run {
        report.warnings.push(format!(
            "{name}: maintainer scripts not run ({}); check that the package needs none of \
             their effects",
            scripts.join(", ")
        ));
    }
    for path in &layer.kept_conffiles {
        report
            .warnings
            .push(format!("{path}: changed in the image, kept as it was"));
    }
    Ok(Some(layer))
}

use sha2::Digest as _;

/// A tag as the distribution spec allows it.
fn check_tag(tag: &str) -> Result<(), FixError> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(FixError::Invalid(format!(
            "{tag:?} is not a valid tag (letters, digits, _ . -, at most 128)"
        )))
    }
}

/// Whether the fix reads an image path: dpkg's database, apt's keyrings and sources, and
/// small files under `etc/` (conffiles).
fn wanted(path: &str, size: u64) -> bool {
    path == STATUS
        || apk::is_wanted(path)
        || (path.starts_with(INFO) && path[INFO.len()..].starts_with('/'))
        || apt::is_keyring_path(path)
        || path == "etc/apt/sources.list"
        || (path.starts_with("etc/apt/sources.list.d/")
            && (path.ends_with(".list") || path.ends_with(".sources")))
        || (path.starts_with("etc/") && size <= MAX_CONFFILE_BYTES)
}

/// Reads the files the fix needs from the layers, lowest first, as the final filesystem
/// has them (whiteouts and opaque directories applied).
async fn read_image_files(
    client: &RegistryClient,
    repository: &str,
    layers: &[oci::Descriptor],
) -> Result<ImageFiles, FixError> {
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    for l in layers {
        let response = client.blob(repository, &l.digest).await?;
        let stream = response
            .bytes_stream()
            .map(|chunk| chunk.map_err(std::io::Error::other));
        let reader = SyncIoBridge::new(StreamReader::new(stream));
        let expected = l.digest.clone();
        let budget = MAX_IMAGE_FILES_BYTES;
        let (found, whiteouts, opaque) =
            tokio::task::spawn_blocking(move || read_layer_files(reader, &expected, budget))
                .await
                .map_err(|e| FixError::Invalid(format!("layer task failed: {e}")))??;
        files.retain(|path, _| {
            !whiteouts
                .iter()
                .any(|w| path == w || path.starts_with(&format!("{w}/")))
                && !opaque.iter().any(|d| path.starts_with(&format!("{d}/")))
        });
        files.extend(found);
        let kept: u64 = files.values().map(|v| v.len() as u64).sum();
        if kept > MAX_IMAGE_FILES_BYTES {
            return Err(FixError::Invalid(format!(
                "the image's dpkg database and configuration are more than \
                 {MAX_IMAGE_FILES_BYTES} bytes"
            )));
        }
    }
    Ok(ImageFiles { files })
}

type LayerFiles = (HashMap<String, Vec<u8>>, Vec<String>, Vec<String>);

fn read_layer_files<R: Read>(blob: R, digest: &str, budget: u64) -> Result<LayerFiles, FixError> {
    let bad = |e: std::io::Error| FixError::Invalid(format!("layer {digest}: {e}"));
    let hasher = Digester::for_digest(digest).map_err(FixError::Invalid)?;
    let mut hashing = HashingReader::with(blob, hasher);
    let mut found = HashMap::new();
    let mut whiteouts = Vec::new();
    let mut opaque = Vec::new();
    {
        let stream = decompress(std::io::BufReader::new(&mut hashing)).map_err(bad)?;
        let mut archive = tar::Archive::new(stream);
        let mut kept = 0u64;
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let raw = entry.path_bytes().into_owned();
            let Some(path) = normalize_entry_path(&raw) else {
                continue;
            };
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
            if let Some(target) = name.strip_prefix(".wh.") {
                if target == ".wh..opq" {
                    opaque.push(dir.to_string());
                } else if dir.is_empty() {
                    whiteouts.push(target.to_string());
                } else {
                    whiteouts.push(format!("{dir}/{target}"));
                }
                continue;
            }
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let size = entry.size();
            if size > MAX_IMAGE_FILE_BYTES || !wanted(&path, size) {
                continue;
            }
            // Only the names of old control members are needed, not their content.
            let body = if path.starts_with(INFO) && !path.ends_with(".list") {
                Vec::new()
            } else {
                kept += size;
                if kept > budget {
                    return Err(FixError::Invalid(format!(
                        "layer {digest}: the dpkg database and configuration are more than \
                         {budget} bytes"
                    )));
                }
                let mut body = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut body).map_err(bad)?;
                body
            };
            found.insert(path, body);
        }
        // Read to the end so the digest covers the whole blob.
        let mut rest = archive.into_inner();
        std::io::copy(&mut rest, &mut std::io::sink()).map_err(bad)?;
    }
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(bad)?;
    let (got, _) = hashing.finish();
    if got != digest {
        return Err(FixError::Invalid(format!(
            "layer {digest}: its content hashes to {got}"
        )));
    }
    Ok((found, whiteouts, opaque))
}

/// Whether the image's system packages include rpm's.
fn has_rpm_packages(inventory: &crate::inventory::Inventory) -> bool {
    use crate::inventory::Ecosystem;
    inventory.packages.iter().any(|p| {
        p.ecosystem.is_os()
            && !matches!(
                p.ecosystem,
                Ecosystem::Debian | Ecosystem::Ubuntu | Ecosystem::Alpine
            )
    })
}

/// The image's own apt sources: one-line `deb` entries and deb822 `.sources` stanzas.
fn image_sources(files: &ImageFiles) -> Vec<AptSource> {
    let mut paths: Vec<&String> = files
        .files
        .keys()
        .filter(|p| p.starts_with("etc/apt/sources.list"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let text = String::from_utf8_lossy(&files.files[path]);
        if path.ends_with(".sources") {
            for s in control::stanzas(&text).unwrap_or_default() {
                if !s
                    .get("Types")
                    .unwrap_or("deb")
                    .split_whitespace()
                    .any(|t| t == "deb")
                    || s.get("Enabled") == Some("no")
                {
                    continue;
                }
                let components = s.get("Components").unwrap_or("");
                for uri in s.get("URIs").unwrap_or("").split_whitespace() {
                    for suite in s.get("Suites").unwrap_or("").split_whitespace() {
                        if let Ok(src) = AptSource::parse(&format!("{uri} {suite} {components}")) {
                            out.push(src);
                        }
                    }
                }
            }
        } else {
            out.extend(AptSource::from_sources_list(&text));
        }
    }
    out
}

/// dpkg's name of the image's architecture.
fn dpkg_architecture(config_json: &[u8]) -> Result<String, FixError> {
    let config: serde_json::Value = serde_json::from_slice(config_json)
        .map_err(|e| FixError::Invalid(format!("the image configuration is not JSON: {e}")))?;
    let arch = config["architecture"].as_str().unwrap_or("amd64");
    let variant = config["variant"].as_str().unwrap_or("");
    Ok(match (arch, variant) {
        ("386", _) => "i386",
        ("arm", "v5" | "v6") => "armel",
        ("arm", _) => "armhf",
        ("ppc64le", _) => "ppc64el",
        ("mips64le", _) => "mips64el",
        (other, _) => other,
    }
    .to_string())
}

/// The configuration of the fixed image: the new layer's diff_id, a history entry, the
/// label naming the digest it was fixed from.
fn fixed_config(
    config_json: &[u8],
    diff_id: &str,
    from_digest: &str,
    plan: &Plan,
) -> Result<Vec<u8>, FixError> {
    let bad = |why: &str| FixError::Invalid(format!("the image configuration {why}"));
    let mut config: serde_json::Value =
        serde_json::from_slice(config_json).map_err(|_| bad("is not JSON"))?;
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let root = config
        .as_object_mut()
        .ok_or_else(|| bad("is not an object"))?;
    root.get_mut("rootfs")
        .and_then(|r| r.get_mut("diff_ids"))
        .and_then(|d| d.as_array_mut())
        .ok_or_else(|| bad("has no rootfs.diff_ids"))?
        .push(diff_id.into());
    let upgraded: Vec<String> = plan
        .upgrades
        .iter()
        .map(|u| format!("{} {} -> {}", u.package, u.from, u.to))
        .collect();
    if let Some(history) = root.get_mut("history").and_then(|h| h.as_array_mut()) {
        history.push(serde_json::json!({
            "created": now,
            "created_by": format!("imagewarden fix: {}", upgraded.join(", ")),
            "comment": format!("fixes {}", plan.fixed_ids().into_iter().collect::<Vec<_>>().join(" ")),
        }));
    }
    root.insert("created".into(), now.into());
    let inner = root
        .entry("config")
        .or_insert_with(|| serde_json::json!({}));
    if !inner.is_object() {
        *inner = serde_json::json!({});
    }
    let labels = inner
        .as_object_mut()
        .expect("an object")
        .entry("Labels")
        .or_insert_with(|| serde_json::json!({}));
    if !labels.is_object() {
        *labels = serde_json::json!({});
    }
    labels
        .as_object_mut()
        .expect("an object")
        .insert(FIXED_FROM_LABEL.into(), from_digest.into());
    serde_json::to_vec(&config).map_err(|_| bad("cannot be written"))
}

fn manifest_media_type(raw: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(raw)
        .ok()
        .and_then(|m| m["mediaType"].as_str().map(str::to_string))
        .unwrap_or_else(|| oci::OCI_MANIFEST.to_string())
}

/// The manifest of the fixed image: the original with the new config and one more layer.
fn fixed_manifest(
    raw: &[u8],
    config_digest: &str,
    config_size: usize,
    layer_digest: &str,
    layer_size: usize,
) -> Result<Vec<u8>, FixError> {
    let bad = |why: &str| FixError::Invalid(format!("the image manifest {why}"));
    let mut manifest: serde_json::Value =
        serde_json::from_slice(raw).map_err(|_| bad("is not JSON"))?;
    let docker = manifest_media_type(raw) == oci::DOCKER_MANIFEST;
    let config = manifest
        .get_mut("config")
        .and_then(|c| c.as_object_mut())
        .ok_or_else(|| bad("has no config"))?;
    config.insert("digest".into(), config_digest.into());
    config.insert("size".into(), config_size.into());
    let layer_type = if docker {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    } else {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    };
    manifest
        .get_mut("layers")
        .and_then(|l| l.as_array_mut())
        .ok_or_else(|| bad("has no layers"))?
        .push(serde_json::json!({
            "mediaType": layer_type,
            "digest": layer_digest,
            "size": layer_size,
        }));
    serde_json::to_vec(&manifest).map_err(|_| bad("cannot be written"))
}

/// Parses a severity name for `--min-severity`.
pub fn parse_severity(s: &str) -> Result<Severity, String> {
    s.parse::<Severity>()
        .map_err(|_| format!("{s:?} is not a severity (low, medium, high, critical)"))
}
