//! The ImageFix controller: checks the spec, finds the image (an ImageScanResult or an
//! `image@digest` with a rule's registry access), runs the scanner library's patch
//! engine and records each phase, the plan, what cannot be fixed and why, the pushed
//! digest and its verification in the status. The engine runs in a fix Job (the job
//! executor: the scanner Jobs' hardened Pod running `imagewarden-operator fix-image` as
//! its own ServiceAccount, which may read the ImageFix and write its status only) or in
//! this process (the inline executor); both run [`execute`].
//!
//! A fix runs once per generation: a final phase with the current `observedGeneration` is
//! left alone. With the job executor, the Job's name derives from the ImageFix's uid and
//! generation, so a restarted operator finds the Job it made; when the Job ends, the
//! operator records a failure the Job could not record (deadline, memory, Pod failure),
//! tells of the outcome and deletes the Job. Inline, a fix found mid-way with no run in
//! this process (the operator restarted) runs again, which pushes the same tags again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use imagewarden_scanner::egress::EgressPolicy;
use imagewarden_scanner::finding::Severity as ScannerSeverity;
use imagewarden_scanner::fix::plan::{Plan, Selection};
use imagewarden_scanner::fix::{self, FixError, FixOptions, FixOutcome, FixReport};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Client, Resource, ResourceExt};
use oci_client::Reference;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::access::registry_access;
use crate::config::ExecutorKind;
use crate::context::{Context, FIELD_MANAGER};
use crate::crd::{
    FixVerification, ImageFix, ImageFixPhase, ImageFixSpec, ImageFixStatus, ImageScanResult,
    PlannedUpgrade, ScanRule, Severity, UnfixableVulnerability, MAX_FIX_SOURCES,
    MAX_FIX_STATUS_ENTRIES, MAX_FIX_VULNERABILITIES,
};
use crate::executor::{job_state, ExitCodes, HardenedJob, JobDatabase, JobRegistry, JobState};
use crate::registry::RegistryAccess;
use crate::Error;

/// Fixes run at once in one operator process (each holds a plan's packages in memory).
const MAX_CONCURRENT_FIXES: usize = 2;
/// Longest vulnerability id accepted in a spec.
const MAX_ID_CHARS: usize = 128;
/// Longest package source line accepted in a spec.
const MAX_SOURCE_CHARS: usize = 1024;
/// Longest message written to the status.
const MAX_MESSAGE_CHARS: usize = 1024;
/// Most entries read from a keyring Secret.
const MAX_KEYRING_FILES: usize = 64;
/// Largest sum of a keyring Secret's entries.
const MAX_KEYRING_BYTES: usize = 1 << 20;

/// The fixes running in this process, and the bound on how many run at once.
pub struct RunningFixes {
    running: Mutex<HashSet<String>>,
    slots: Arc<Semaphore>,
}

impl Default for RunningFixes {
    fn default() -> Self {
        Self {
            running: Mutex::default(),
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT_FIXES)),
        }
    }
}

impl RunningFixes {
    /// Marks `key` running; false when it already is.
    fn start(&self, key: &str) -> bool {
        self.running
            .lock()
            .expect("fixes lock")
            .insert(key.to_string())
    }

    fn finish(&self, key: &str) {
        self.running.lock().expect("fixes lock").remove(key);
    }
}

/// A spec checked and read into what the patch engine takes.
#[derive(Clone, Debug)]
pub struct ValidFix {
    pub selection: Selection,
    pub target: fix::FixTarget,
    pub sources: Vec<fix::PackageSource>,
    /// `image`, parsed, when the spec names the image directly.
    pub image: Option<Reference>,
    /// The files of `spec.keyringSecretRef` (name, content), once read; empty: the
    /// image's own keyring.
    pub keyrings: Vec<(String, Vec<u8>)>,
}

/// Why a fix does not run: a condition reason and a message for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// Checks an ImageFix's spec (pure): sizes, ids, the tag suffix, the image reference and
/// the package sources, whose hosts go through `egress` as registries' do.
pub fn validate(spec: &ImageFixSpec, egress: &EgressPolicy) -> Result<ValidFix, String> {
    let image = match (&spec.result_ref, &spec.image) {
        (Some(_), Some(_)) | (None, None) => {
            return Err("set exactly one of spec.resultRef and spec.image".into())
        }
        (Some(r), None) => {
            check_name("spec.resultRef.name", &r.name)?;
            None
        }
        (None, Some(image)) => Some(parse_image(image)?),
    };
    match &spec.rule_ref {
        Some(r) => check_name("spec.ruleRef.name", &r.name)?,
        None if image.is_some() => {
            return Err(
                "spec.image needs spec.ruleRef: the ScanRule whose registry access \
                        reads the image and pushes the fixed one"
                    .into(),
            )
        }
        None => {}
    }
    if let Some(r) = &spec.keyring_secret_ref {
        check_name("spec.keyringSecretRef.name", &r.name)?;
    }
    if spec.vulnerabilities.len() > MAX_FIX_VULNERABILITIES {
        return Err(format!(
            "spec.vulnerabilities: {} ids, at most {MAX_FIX_VULNERABILITIES}",
            spec.vulnerabilities.len()
        ));
    }
    for id in &spec.vulnerabilities {
        let ok = !id.is_empty()
            && id.len() <= MAX_ID_CHARS
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '+'));
        if !ok {
            return Err(format!(
                "spec.vulnerabilities: {:?} is not a vulnerability id (letters, digits, \
                 - _ . : +, at most {MAX_ID_CHARS})",
                truncate(id, 64)
            ));
        }
    }
    let sources = validate_settings(
        ("spec.target.tagSuffix", "spec.sources"),
        &spec.target.tag_suffix,
        &spec.sources,
        egress,
    )?;
    let target = match spec.target.overwrite {
        true => fix::FixTarget::Overwrite,
        false => fix::FixTarget::TagSuffix(spec.target.tag_suffix.clone()),
    };
    Ok(ValidFix {
        selection: Selection {
            ids: spec.vulnerabilities.clone(),
            min_severity: spec.min_severity.map(scanner_severity),
        },
        target,
        sources,
        image,
        keyrings: Vec::new(),
    })
}

/// Checks a tag suffix and package sources (named in errors as the two fields given);
/// returns the sources parsed.
pub fn validate_settings(
    (suffix_field, sources_field): (&str, &str),
    tag_suffix: &str,
    sources: &[String],
    egress: &EgressPolicy,
) -> Result<Vec<fix::PackageSource>, String> {
    let ok = !tag_suffix.is_empty()
        && tag_suffix.len() <= 32
        && tag_suffix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(format!(
            "{suffix_field} {:?} is not a tag suffix (letters, digits, _ . -, 1 to 32)",
            truncate(tag_suffix, 64)
        ));
    }
    if sources.len() > MAX_FIX_SOURCES {
        return Err(format!(
            "{sources_field}: {} sources, at most {MAX_FIX_SOURCES}",
            sources.len()
        ));
    }
    sources
        .iter()
        .enumerate()
        .map(|(i, line)| parse_source(&format!("{sources_field}[{i}]"), line, egress))
        .collect()
}

/// Checks an object name (named in errors as `field`).
pub fn check_name(field: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'));
    match ok {
        true => Ok(()),
        false => Err(format!(
            "{field} {:?} is not an object name",
            truncate(name, 64)
        )),
    }
}

/// `registry/repository:tag@sha256:...`: the tag names the fixed image, the digest is
/// what is fixed.
fn parse_image(image: &str) -> Result<Reference, String> {
    let shown = truncate(image, 128);
    let reference: Reference = image
        .parse()
        .map_err(|_| format!("spec.image {shown:?} is not an image reference"))?;
    if reference.digest().is_none() || reference.tag().is_none() {
        return Err(format!(
            "spec.image {shown:?}: name the image by tag and digest \
             (registry/repository:tag@sha256:...): the digest is fixed, the fixed image's \
             tag derives from the tag"
        ));
    }
    if !image.starts_with(reference.registry()) {
        return Err(format!(
            "spec.image {shown:?}: name the registry (registry/repository:tag@sha256:...)"
        ));
    }
    Ok(reference)
}

/// One package source (an apt line or an apk repository URL) whose URL the egress policy
/// allows.
fn parse_source(
    field: &str,
    line: &str,
    egress: &EgressPolicy,
) -> Result<fix::PackageSource, String> {
    if line.len() > MAX_SOURCE_CHARS {
        return Err(format!(
            "{field}: longer than {MAX_SOURCE_CHARS} characters"
        ));
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let first = words.first().copied().unwrap_or("");
    if first == "deb-src" {
        return Err(format!(
            "{field}: deb-src lines name source packages; give a deb line \
             ([deb] URL SUITE COMPONENT...)"
        ));
    }
    let source = fix::PackageSource::parse(line).map_err(|e| {
        format!(
            "{field}: {e} (an apt source is [deb] URL SUITE COMPONENT..., an apk repository \
             one URL; http or https)"
        )
    })?;
    egress
        .check_url(source.url())
        .map_err(|d| format!("{field}: {}", d.message))?;
    Ok(source)
}

fn scanner_severity(s: Severity) -> ScannerSeverity {
    match s {
        Severity::Critical => ScannerSeverity::Critical,
        Severity::High => ScannerSeverity::High,
        Severity::Medium => ScannerSeverity::Medium,
        Severity::Low => ScannerSeverity::Low,
        Severity::Unknown => ScannerSeverity::Unknown,
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The phase a step of the engine (its progress line) belongs to.
pub fn phase_of_step(step: &str) -> ImageFixPhase {
    if step.starts_with("downloading") || step.starts_with("writing the layer") {
        ImageFixPhase::Building
    } else if step.starts_with("pushing") {
        ImageFixPhase::Pushing
    } else if step.starts_with("verifying") {
        ImageFixPhase::Verifying
    } else {
        ImageFixPhase::Planning
    }
}

/// The status of a finished fix (pure): the plan, what is unfixable, the push and its
/// verification; an image whose package manager the engine cannot fix is `Failed`.
pub fn finished_status(report: &FixReport, base: ImageFixStatus) -> ImageFixStatus {
    let mut status = base;
    status.plan = report
        .plan
        .upgrades
        .iter()
        .take(MAX_FIX_STATUS_ENTRIES)
        .map(|u| PlannedUpgrade {
            package: u.package.clone(),
            from: u.from.clone(),
            to: u.to.clone(),
            fixes: u
                .fixes
                .iter()
                .take(MAX_FIX_STATUS_ENTRIES)
                .cloned()
                .collect(),
        })
        .collect();
    status.upgrade_count = Some(report.plan.upgrades.len() as u32);
    status.unfixable = report
        .plan
        .unfixable
        .iter()
        .take(MAX_FIX_STATUS_ENTRIES)
        .map(|u| UnfixableVulnerability {
            id: u.id.clone(),
            package: u.package.clone(),
            reason: u.reason.clone(),
        })
        .collect();
    status.unfixable_count = Some(report.plan.unfixable.len() as u32);
    status.pushed = report.pushed.clone();
    status.original = report.original.clone();
    status.verification = report.verification.as_ref().map(|v| FixVerification {
        fixed: v.fixed.clone(),
        remaining: v.remaining.clone(),
    });
    match report.outcome {
        FixOutcome::Completed => {
            let v = status.verification.clone().unwrap_or_default();
            status.phase = ImageFixPhase::Completed;
            status.message = Some(match v.remaining.len() {
                0 => format!(
                    "{} vulnerabilities fixed by {} package upgrades",
                    v.fixed.len(),
                    report.plan.upgrades.len()
                ),
                n => format!(
                    "{} vulnerabilities fixed, {n} still found in the fixed image (see \
                     verification.remaining)",
                    v.fixed.len()
                ),
            });
        }
        FixOutcome::NothingToFix | FixOutcome::Planned => match unsupported_manager(&report.plan) {
            Some(reason) => {
                status.phase = ImageFixPhase::Failed;
                status.message = Some(reason);
            }
            None => {
                status.phase = ImageFixPhase::NothingToFix;
                status.message = Some(match report.plan.unfixable.len() {
                    0 => "the image has no fixable OS vulnerability selected".into(),
                    n => format!(
                        "none of the {n} selected vulnerabilities can be fixed (see unfixable)"
                    ),
                });
            }
        },
    }
    status
}

/// "rpm fixing is not supported yet" (or apk) when the plan leaves the image's OS
/// vulnerabilities for that reason alone.
fn unsupported_manager(plan: &Plan) -> Option<String> {
    if !plan.upgrades.is_empty() {
        return None;
    }
    plan.unfixable
        .iter()
        .find(|u| u.reason.ends_with("fixing is not supported yet"))
        .map(|u| u.reason.clone())
}

/// A condition reason and a message for a failed fix. Registry errors are told by kind
/// (the full error goes to the log): what a registry answers is never quoted.
pub fn failure(e: &FixError) -> Refusal {
    match e {
        FixError::Registry(r) => Refusal::new(
            "RegistryError",
            format!(
                "the registry refused or failed ({}); the operator log has the details",
                r.reason()
            ),
        ),
        FixError::Source(_) => Refusal::new(
            "ImageUnreadable",
            "the image could not be read from the registry; the operator log has the details",
        ),
        FixError::Database(_) => Refusal::new(
            "DatabaseError",
            "the vulnerability database could not be matched; the operator log has the details",
        ),
        FixError::Signature(_) | FixError::Keyring(_) => Refusal::new(
            "SignatureRefused",
            truncate(&e.to_string(), MAX_MESSAGE_CHARS),
        ),
        FixError::Index(_) | FixError::Package(_) => Refusal::new(
            "PackageRefused",
            truncate(&e.to_string(), MAX_MESSAGE_CHARS),
        ),
        FixError::Fetch(_) | FixError::Egress(_) => Refusal::new(
            "DownloadFailed",
            truncate(&e.to_string(), MAX_MESSAGE_CHARS),
        ),
        FixError::Unsupported(why) => Refusal::new("UnsupportedImage", why.clone()),
        FixError::Invalid(_) => {
            Refusal::new("FixFailed", truncate(&e.to_string(), MAX_MESSAGE_CHARS))
        }
    }
}

/// The image to fix, resolved: its reference, the rule whose access reaches it.
struct Subject {
    /// `host/repository:tag@digest`.
    image: String,
    rule: ScanRule,
    access: RegistryAccess,
}

/// Finds the image and the rule of a valid fix.
async fn resolve(
    fix: &ImageFix,
    valid: &ValidFix,
    ctx: &Context,
    ns: &str,
) -> Result<Subject, Refusal> {
    let (image, rule_name, registry): (String, String, String) =
        match (&fix.spec.result_ref, &valid.image) {
            (Some(r), _) => {
                let results: Api<ImageScanResult> = Api::namespaced(ctx.client.clone(), ns);
                let result = results
                    .get_opt(&r.name)
                    .await
                    .map_err(|e| Refusal::new("ApiError", format!("reading the result: {e}")))?
                    .ok_or_else(|| {
                        Refusal::new(
                            "ResultNotFound",
                            format!("spec.resultRef: no ImageScanResult {:?} in {ns}", r.name),
                        )
                    })?;
                let mut tags = result.spec.tags.clone();
                tags.sort();
                let Some(tag) = tags.into_iter().next() else {
                    return Err(Refusal::new(
                        "NoTag",
                        format!(
                            "ImageScanResult {} names no tag pointing at {}: the fixed image's \
                         tag derives from one",
                            r.name, result.spec.digest
                        ),
                    ));
                };
                let rule = fix
                    .spec
                    .rule_ref
                    .as_ref()
                    .map(|r| r.name.clone())
                    .or_else(|| result.labels().get(crate::result::RULE_LABEL).cloned())
                    .ok_or_else(|| {
                        Refusal::new(
                            "NoRule",
                            format!(
                                "ImageScanResult {} was not made for a ScanRule; set spec.ruleRef \
                             to the rule whose registry access reaches the image",
                                r.name
                            ),
                        )
                    })?;
                let image = format!(
                    "{}/{}:{tag}@{}",
                    result.spec.registry, result.spec.repository, result.spec.digest
                );
                (image, rule, result.spec.registry.clone())
            }
            (None, Some(reference)) => (
                fix.spec.image.clone().unwrap_or_default(),
                fix.spec
                    .rule_ref
                    .as_ref()
                    .map(|r| r.name.clone())
                    .unwrap_or_default(),
                reference.registry().to_string(),
            ),
            (None, None) => unreachable!("validate asks for one of them"),
        };
    let rules: Api<ScanRule> = Api::namespaced(ctx.client.clone(), ns);
    let rule = rules
        .get_opt(&rule_name)
        .await
        .map_err(|e| Refusal::new("ApiError", format!("reading the rule: {e}")))?
        .ok_or_else(|| {
            Refusal::new(
                "RuleNotFound",
                format!("no ScanRule {rule_name:?} in {ns} for the registry access"),
            )
        })?;
    let access = registry_access(
        &ctx.client,
        ns,
        &rule.spec.registry,
        ctx.config.egress.policy(),
    )
    .await
    .map_err(|e| Refusal::new("RegistryAccess", e.to_string()))?;
    if !crate::registry::access::same_registry(&access.host, &registry) {
        return Err(Refusal::new(
            "OtherRegistry",
            format!(
                "the image is on {registry}, not on the registry of ScanRule {rule_name} ({}): \
                 its credentials are used for its own registry only",
                access.host
            ),
        ));
    }
    Ok(Subject {
        image,
        rule,
        access,
    })
}

/// The keyring files of Secret `name` (pure): its data entries, each key a file name;
/// bounded in number and size, and not empty.
pub fn keyring_files(
    name: &str,
    secret: Option<&Secret>,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let secret = secret.ok_or_else(|| {
        format!("spec.keyringSecretRef: Secret {name} does not exist in the ImageFix's namespace")
    })?;
    let data = secret.data.clone().unwrap_or_default();
    if data.is_empty() {
        return Err(format!(
            "spec.keyringSecretRef: Secret {name} holds no keyring file (its data is empty)"
        ));
    }
    if data.len() > MAX_KEYRING_FILES {
        return Err(format!(
            "spec.keyringSecretRef: Secret {name} holds {} entries, at most {MAX_KEYRING_FILES}",
            data.len()
        ));
    }
    let total: usize = data.values().map(|v| v.0.len()).sum();
    if total > MAX_KEYRING_BYTES {
        return Err(format!(
            "spec.keyringSecretRef: Secret {name} holds {total} bytes, at most {MAX_KEYRING_BYTES}"
        ));
    }
    Ok(data
        .into_iter()
        .map(|(file, bytes)| (format!("secret {name}/{file}"), bytes.0))
        .collect())
}

/// The keyring files a fix Job finds where its keyring Secret is mounted (named by their
/// paths), with the Secret's bounds; the kubelet's `..data` links and other dot files are
/// not entries.
pub fn keyring_dir_files(dir: &std::path::Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    use std::io::Read;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files = Vec::new();
    let mut total = 0usize;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if files.len() >= MAX_KEYRING_FILES {
            return Err(format!(
                "{} holds more than {MAX_KEYRING_FILES} keyring files",
                dir.display()
            ));
        }
        let path = entry.path();
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| {
                f.take((MAX_KEYRING_BYTES - total + 1) as u64)
                    .read_to_end(&mut bytes)
            })
            .map_err(|e| format!("{}: {e}", path.display()))?;
        total += bytes.len();
        if total > MAX_KEYRING_BYTES {
            return Err(format!(
                "{} holds more than {MAX_KEYRING_BYTES} bytes of keyring files",
                dir.display()
            ));
        }
        files.push((path.display().to_string(), bytes));
    }
    if files.is_empty() {
        return Err(format!("{} holds no keyring file", dir.display()));
    }
    files.sort();
    Ok(files)
}

/// Reads the keyring Secret the spec names (none: the image's own keys are used).
async fn read_keyrings(
    ctx: &Context,
    ns: &str,
    spec: &ImageFixSpec,
) -> Result<Vec<(String, Vec<u8>)>, Refusal> {
    let Some(r) = &spec.keyring_secret_ref else {
        return Ok(Vec::new());
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret = api.get_opt(&r.name).await.map_err(|e| {
        Refusal::new(
            "KeyringSecret",
            format!("spec.keyringSecretRef: reading Secret {}: {e}", r.name),
        )
    })?;
    keyring_files(&r.name, secret.as_ref()).map_err(|m| Refusal::new("KeyringSecret", m))
}

fn fix_key(fix: &ImageFix) -> String {
    format!("{}/{}", fix.namespace().unwrap_or_default(), fix.name_any())
}

/// Reconciles one ImageFix.
pub async fn reconcile(fix: Arc<ImageFix>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconcile("imagefix");
    let ns = fix.namespace().unwrap_or_default();
    let status = fix.status.clone().unwrap_or_default();
    let current = status.observed_generation == fix.metadata.generation;
    let jobs = ctx.config.executor == ExecutorKind::Job;
    if current && status.phase.is_final() {
        if jobs {
            // The fix Job recorded the outcome: report it once the Job has ended.
            if let Some(job) = fix_job(&ctx, &fix).await? {
                if job_state(&job) != JobState::Running {
                    finish_job(&ctx, &fix, &job, &status).await?;
                }
            }
        }
        return Ok(Action::await_change());
    }
    let key = fix_key(&fix);
    if ctx.fixes.running.lock().expect("fixes lock").contains(&key) {
        return Ok(Action::await_change());
    }
    let valid = match validate(&fix.spec, &ctx.config.egress.policy()) {
        Ok(v) => v,
        Err(message) => {
            let refusal = Refusal::new("InvalidSpec", message);
            fail(&ctx, &fix, status, &refusal).await?;
            return Ok(Action::await_change());
        }
    };
    if jobs {
        if let Some(job) = fix_job(&ctx, &fix).await? {
            // Made by this or an earlier operator process: never a second one.
            if job_state(&job) != JobState::Running {
                finish_job(&ctx, &fix, &job, &status).await?;
            }
            return Ok(Action::await_change());
        }
    }
    let subject = match resolve(&fix, &valid, &ctx, &ns).await {
        Ok(s) => s,
        Err(refusal) => {
            fail(&ctx, &fix, status, &refusal).await?;
            return Ok(Action::await_change());
        }
    };
    if jobs {
        // The Job mounts the Secret: it is checked here first, so that a missing or
        // oversized one fails the fix with its reason instead of a Pod that cannot start.
        if let Err(refusal) = read_keyrings(&ctx, &ns, &fix.spec).await {
            fail(&ctx, &fix, status, &refusal).await?;
            return Ok(Action::await_change());
        }
        start_job(&ctx, &fix, &subject).await?;
        return Ok(Action::await_change());
    }
    let keyrings = match read_keyrings(&ctx, &ns, &fix.spec).await {
        Ok(k) => k,
        Err(refusal) => {
            fail(&ctx, &fix, status, &refusal).await?;
            return Ok(Action::await_change());
        }
    };
    if !ctx.fixes.start(&key) {
        return Ok(Action::await_change());
    }
    let ctx2 = ctx.clone();
    tokio::spawn(async move {
        run(&ctx2, &fix, subject, ValidFix { keyrings, ..valid }).await;
        ctx2.fixes.finish(&key);
    });
    Ok(Action::await_change())
}

/// Writes a `Failed` status with `refusal` and a Warning event.
async fn fail(
    ctx: &Context,
    fix: &ImageFix,
    mut status: ImageFixStatus,
    refusal: &Refusal,
) -> Result<(), Error> {
    status.phase = ImageFixPhase::Failed;
    status.message = Some(refusal.message.clone());
    status.observed_generation = fix.metadata.generation;
    write_status(&ctx.client, fix, status, false, refusal.reason).await?;
    publish(ctx, fix, EventType::Warning, "FixFailed", &refusal.message).await;
    Ok(())
}

/// Writes the status of `fix` (server-side apply) with its `Ready` condition: `ok`, for
/// `reason`, saying the status's message.
pub async fn write_status(
    client: &Client,
    fix: &ImageFix,
    mut status: ImageFixStatus,
    ok: bool,
    reason: &str,
) -> Result<(), Error> {
    let previous = fix
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let message = status.message.clone().unwrap_or_default();
    status.conditions = vec![crate::conditions::condition(
        "Ready",
        ok,
        reason,
        &message,
        fix.metadata.generation,
        &previous,
    )];
    let api: Api<ImageFix> = Api::namespaced(client.clone(), &fix.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "imagewarden.io/v1alpha1",
        "kind": "ImageFix",
        "status": status,
    });
    api.patch_status(
        &fix.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
}

async fn publish(ctx: &Context, fix: &ImageFix, type_: EventType, reason: &str, note: &str) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(truncate(note, MAX_MESSAGE_CHARS)),
        action: "Fix".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &fix.object_ref(&())).await {
        warn!(error = %e, "publishing event");
    }
}

/// The `Ready` condition's status and reason of a final status.
fn ready_of(status: &ImageFixStatus) -> (bool, &'static str) {
    match status.phase {
        ImageFixPhase::Completed => (true, "Completed"),
        ImageFixPhase::NothingToFix => (true, "NothingToFix"),
        _ => (false, "UnsupportedImage"),
    }
}

/// Runs the patch engine for `fix` on `image` with the options of `valid` (both
/// executors: inline in the operator, or in the fix Job): records each phase as it starts,
/// then the outcome, in the status. Returns the final status written.
pub async fn execute(
    client: &Client,
    fix: &ImageFix,
    image: &str,
    valid: ValidFix,
    pull: imagewarden_scanner::source::PullOptions,
    db: &crate::db::LoadedDb,
    mut status: ImageFixStatus,
) -> Result<ImageFixStatus, Error> {
    let name = fix_key(fix);
    let (tx, mut steps) = tokio::sync::mpsc::unbounded_channel::<String>();
    let options = FixOptions {
        selection: valid.selection,
        target: valid.target,
        sources: valid.sources,
        keyrings: valid.keyrings,
        check_valid_until: fix.spec.check_valid_until,
        plan_only: false,
        pull,
        progress: Some(Arc::new(move |step: &str| {
            let _ = tx.send(step.to_string());
        })),
    };
    info!(fix = %name, image, "fixing");
    let started = std::time::Instant::now();
    let outcome = {
        let work = fix::fix(image, &db.db, &options);
        tokio::pin!(work);
        loop {
            tokio::select! {
                outcome = &mut work => break outcome,
                Some(step) = steps.recv() => {
                    let phase = phase_of_step(&step);
                    if phase != status.phase || status.message.as_deref() != Some(step.as_str()) {
                        status.phase = phase;
                        status.message = Some(truncate(&step, MAX_MESSAGE_CHARS));
                        if let Err(e) = write_status(client, fix, status.clone(), true, "Running").await {
                            warn!(fix = %name, error = %e, "writing status");
                        }
                    }
                }
            }
        }
    };
    drop(options);
    let (done, ok, reason) = match outcome {
        Ok(report) => {
            let done = finished_status(&report, status);
            let (ok, reason) = ready_of(&done);
            (done, ok, reason)
        }
        Err(e) => {
            warn!(fix = %name, image, error = %e, "fix failed");
            let refusal = failure(&e);
            status.phase = ImageFixPhase::Failed;
            status.message = Some(refusal.message);
            (status, false, refusal.reason)
        }
    };
    info!(fix = %name, phase = ?done.phase, seconds = started.elapsed().as_secs_f64(), "fix ended");
    write_status(client, fix, done.clone(), ok, reason).await?;
    Ok(done)
}

/// The first status of a fix about to run (`image`, the database, the generation).
fn starting_status(fix: &ImageFix, image: &str, database: &str, message: String) -> ImageFixStatus {
    ImageFixStatus {
        observed_generation: fix.metadata.generation,
        phase: ImageFixPhase::Planning,
        message: Some(message),
        image: Some(image.to_string()),
        database_version: Some(database.to_string()),
        ..Default::default()
    }
}

/// Runs the engine for one fix in this process and records its phases and its end.
async fn run(ctx: &Context, fix: &ImageFix, subject: Subject, valid: ValidFix) {
    let name = fix_key(fix);
    let db = ctx.db();
    let status = starting_status(
        fix,
        &subject.image,
        &db.version,
        "waiting for a fix slot".into(),
    );
    if let Err(e) = write_status(&ctx.client, fix, status.clone(), true, "Running").await {
        warn!(fix = %name, error = %e, "writing status");
    }
    let _permit = ctx.fixes.slots.clone().acquire_owned().await;
    let (pull, _ca_file) = match crate::executor::pull_options(&subject.access) {
        Ok(p) => p,
        Err(e) => {
            let refusal = Refusal::new("RegistryAccess", e.to_string());
            if let Err(e) = fail(ctx, fix, status, &refusal).await {
                warn!(fix = %name, error = %e, "writing status");
            }
            return;
        }
    };
    let pull = pull.with_budgets(ctx.config.job.budgets.budgets());
    match execute(&ctx.client, fix, &subject.image, valid, pull, &db, status).await {
        Ok(done) => report(ctx, Some(&subject.rule), fix, &done).await,
        Err(e) => warn!(fix = %name, error = %e, "writing status"),
    }
}

/// Tells of a finished fix: an Event on the ImageFix and the rule's notifications.
async fn report(ctx: &Context, rule: Option<&ScanRule>, fix: &ImageFix, status: &ImageFixStatus) {
    let (event_type, event) = match status.phase {
        ImageFixPhase::Completed => (EventType::Normal, "FixCompleted"),
        ImageFixPhase::NothingToFix => (EventType::Normal, "NothingToFix"),
        _ => (EventType::Warning, "FixFailed"),
    };
    let message = status.message.clone().unwrap_or_default();
    publish(ctx, fix, event_type, event, &message).await;
    if let Some(rule) = rule {
        notify(ctx, rule, fix, status).await;
        if let Some(pushed) = status.pushed.as_deref() {
            scan_pushed(ctx, rule, pushed).await;
        }
    }
}

/// The ScanTask (trigger `Fix`) that scans the image a fix pushed, so that the fixed
/// digest has its ImageScanResult; named after the pushed image, so telling the outcome
/// twice starts one task.
async fn scan_pushed(ctx: &Context, rule: &ScanRule, pushed: &str) {
    use crate::controller::scan_rule::{short_hash, task_name};
    let name = task_name(&rule.name_any(), "fix", &short_hash(pushed));
    if let Err(e) = crate::controller::scan_rule::start_task(
        ctx,
        rule,
        &name,
        crate::crd::TaskTrigger::Fix,
        vec![pushed.to_string()],
    )
    .await
    {
        warn!(task = %name, image = pushed, error = %e, "starting the scan of a fixed image");
    }
}

/// Label value of fix Jobs (`app.kubernetes.io/component`).
pub const FIX_JOB_COMPONENT: &str = "fix";
/// The label selector of fix Jobs.
pub const FIX_JOB_SELECTOR: &str =
    "app.kubernetes.io/name=imagewarden-scanner,app.kubernetes.io/component=fix";
/// Annotation of fix Jobs: the ScanRule whose notifications tell of the outcome.
const FIX_JOB_RULE_ANNOTATION: &str = "imagewarden.io/rule";

/// Name of the fix Job of one generation of an ImageFix: deterministic, so a restarted
/// operator finds the Job it created instead of starting a second fix.
pub fn fix_job_name(fix_uid: &str, generation: i64) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("{fix_uid}/{generation}").as_bytes());
    format!("iw-fix-{}", &hex::encode(h)[..16])
}

/// What a fix Job is given (pure parts of [`build_fix_job`]).
pub struct FixJobInput<'a> {
    /// The ImageFix, as the Job's controller.
    pub owner: OwnerReference,
    pub namespace: &'a str,
    pub generation: i64,
    /// `host/repository:tag@digest`.
    pub image: &'a str,
    pub rule: &'a str,
    /// The Secret of `spec.keyringSecretRef`, mounted read-only at [`FIX_JOB_KEYRING_DIR`].
    pub keyring_secret: Option<&'a str>,
}

/// Where a fix Job mounts the ImageFix's keyring Secret.
pub const FIX_JOB_KEYRING_DIR: &str = "/etc/imagewarden/keyring";

/// The fix Job of one ImageFix generation (pure): the scanner Jobs' hardened Pod running
/// `imagewarden-operator fix-image`, never retried (a fix pushes; a Pod failure fails the
/// fix with its reason).
pub fn build_fix_job(
    settings: &crate::config::JobSettings,
    input: FixJobInput<'_>,
    registry: &JobRegistry,
    database: &JobDatabase,
) -> Job {
    let FixJobInput {
        owner,
        namespace,
        generation,
        image,
        rule,
        keyring_secret,
    } = input;
    let name = fix_job_name(&owner.uid, generation);
    let mut args = vec![
        "fix-image".to_string(),
        format!("--namespace={namespace}"),
        format!("--name={}", owner.name),
        format!("--uid={}", owner.uid),
        format!("--generation={generation}"),
        format!("--image={image}"),
    ];
    args.extend(database.args());
    let mut extra_volumes = Vec::new();
    if let Some(secret) = keyring_secret {
        args.push(format!("--keyring-dir={FIX_JOB_KEYRING_DIR}"));
        extra_volumes.push((
            k8s_openapi::api::core::v1::Volume {
                name: "keyring".into(),
                secret: Some(k8s_openapi::api::core::v1::SecretVolumeSource {
                    secret_name: Some(secret.to_string()),
                    optional: Some(false),
                    ..Default::default()
                }),
                ..Default::default()
            },
            k8s_openapi::api::core::v1::VolumeMount {
                name: "keyring".into(),
                mount_path: FIX_JOB_KEYRING_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
        ));
    }
    let labels = std::collections::BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "imagewarden-scanner".to_string(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            FIX_JOB_COMPONENT.to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "imagewarden".to_string(),
        ),
    ]);
    let mut job = crate::executor::hardened_job(
        settings,
        HardenedJob {
            name,
            namespace: namespace.to_string(),
            labels,
            database_version: database.version.clone(),
            owner,
            args,
            backoff_limit: 0,
            // Every failure fails the Job at once, with the exit code in its condition.
            fail_job_on: ExitCodes::NotIn(vec![0]),
            extra_volumes,
        },
        registry,
    );
    job.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(FIX_JOB_RULE_ANNOTATION.to_string(), rule.to_string());
    job
}

/// Why a fix Job that ended without a final status failed (pure): the Job's deadline,
/// the container killed (its memory limit), the database, or the Job's own message.
pub fn job_failure(
    job_name: &str,
    state: &JobState,
    settings: &crate::config::JobSettings,
) -> Refusal {
    match state {
        JobState::Running => Refusal::new("Running", format!("fix Job {job_name} is running")),
        JobState::Succeeded => Refusal::new(
            "JobFailed",
            format!(
                "fix Job {job_name} ended without recording the outcome; the Pod's log says why"
            ),
        ),
        JobState::Failed { message, .. }
            if message.contains("active longer than specified deadline") =>
        {
            Refusal::new(
                "DeadlineExceeded",
                format!(
                    "fix Job {job_name} ran longer than its deadline of {} s \
                     (--job-active-deadline-seconds) and was stopped",
                    settings.job_active_deadline_seconds
                ),
            )
        }
        JobState::Failed {
            exit_code: Some(137),
            ..
        } => Refusal::new(
            "JobKilled",
            format!(
                "fix Job {job_name} was killed (exit code 137), most likely for going over \
                 its memory limit of {} (--job-memory-limit)",
                settings.job_memory_limit
            ),
        ),
        JobState::Failed {
            exit_code: Some(code),
            ..
        } if *code == crate::dbserve::EXIT_DB_UNAVAILABLE
            || *code == crate::dbserve::EXIT_DB_REJECTED =>
        {
            Refusal::new(
                "DatabaseUnavailable",
                format!(
                    "fix Job {job_name} could not get the vulnerability database from the \
                     operator (exit code {code}); the Pod's log says why"
                ),
            )
        }
        JobState::Failed {
            exit_code: Some(code),
            ..
        } => Refusal::new(
            "JobFailed",
            format!(
                "fix Job {job_name} failed with exit code {code} before recording the \
                 outcome; the Pod's log says why"
            ),
        ),
        JobState::Failed {
            exit_code: None,
            message,
        } => Refusal::new(
            "JobFailed",
            format!("fix Job {job_name} failed: {}", truncate(message, 512)),
        ),
    }
}

/// The fix Job of the ImageFix's current generation, if it exists.
async fn fix_job(ctx: &Context, fix: &ImageFix) -> Result<Option<Job>, Error> {
    let (Some(uid), Some(generation)) = (fix.uid(), fix.metadata.generation) else {
        return Ok(None);
    };
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &fix.namespace().unwrap_or_default());
    Ok(jobs.get_opt(&fix_job_name(&uid, generation)).await?)
}

/// Creates the fix Job of `fix` (with its own identity, which may read the ImageFix and
/// write its status only) and records that it was created.
async fn start_job(ctx: &Context, fix: &ImageFix, subject: &Subject) -> Result<(), Error> {
    let ns = fix.namespace().unwrap_or_default();
    let owner = fix
        .controller_owner_ref(&())
        .ok_or_else(|| Error::InvalidObject("ImageFix without name or uid".into()))?;
    let generation = fix.metadata.generation.unwrap_or_default();
    let db = ctx.db();
    let registry = JobRegistry {
        egress_args: ctx.config.egress.args(),
        ..crate::controller::scan_task::job_registry(Some(&subject.rule))
    };
    let job = build_fix_job(
        &ctx.config.job,
        FixJobInput {
            owner,
            namespace: &ns,
            generation,
            image: &subject.image,
            rule: &subject.rule.name_any(),
            keyring_secret: fix
                .spec
                .keyring_secret_ref
                .as_ref()
                .map(|r| r.name.as_str()),
        },
        &registry,
        &JobDatabase::current(ctx.db_base_url.as_deref().unwrap_or_default(), &db),
    );
    let name = job.name_any();
    crate::controller::scan_task::ensure_scanner_network_policy(ctx, &ns).await?;
    let identity = crate::scanner_identity::fix_identity(&ns, &name, &fix.name_any());
    crate::scanner_identity::create_job_with_identity(&ctx.client, &job, &identity).await?;
    info!(fix = %fix_key(fix), job = %name, image = %subject.image, "fix Job created");
    let status = starting_status(
        fix,
        &subject.image,
        &db.version,
        format!("fix Job {name} created; waiting for it to start"),
    );
    write_status(&ctx.client, fix, status, true, "Running").await
}

/// A fix Job has ended: records a failure it could not record itself (its Pod failed,
/// ran out of time or memory), tells of the outcome, and deletes the Job, so the outcome
/// is told once.
async fn finish_job(
    ctx: &Context,
    fix: &ImageFix,
    job: &Job,
    status: &ImageFixStatus,
) -> Result<(), Error> {
    let ns = fix.namespace().unwrap_or_default();
    let name = job.name_any();
    let api: Api<ImageFix> = Api::namespaced(ctx.client.clone(), &ns);
    let current =
        |s: &ImageFixStatus| s.observed_generation == fix.metadata.generation && s.phase.is_final();
    // The Job's last status write may not have reached this watch yet.
    let (fix, status) = if current(status) {
        (fix.clone(), status.clone())
    } else {
        match api.get_opt(&fix.name_any()).await? {
            Some(fresh) => {
                let s = fresh.status.clone().unwrap_or_default();
                (fresh, s)
            }
            None => return Ok(()),
        }
    };
    let rule_name = job
        .annotations()
        .get(FIX_JOB_RULE_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    let rule = Api::<ScanRule>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&rule_name)
        .await?;
    if current(&status) {
        info!(fix = %fix_key(&fix), job = %name, phase = ?status.phase, "fix Job ended");
        report(ctx, rule.as_ref(), &fix, &status).await;
    } else {
        let refusal = job_failure(&name, &job_state(job), &ctx.config.job);
        warn!(fix = %fix_key(&fix), job = %name, reason = refusal.reason, "fix Job failed");
        fail(ctx, &fix, status.clone(), &refusal).await?;
        if let Some(rule) = &rule {
            let mut failed = status;
            failed.phase = ImageFixPhase::Failed;
            failed.message = Some(refusal.message);
            notify(ctx, rule, &fix, &failed).await;
        }
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    match jobs
        .delete(&name, &kube::api::DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A fix Job's run of `imagewarden-operator fix-image`.
pub struct FixJobRun<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub generation: i64,
    /// `host/repository:tag@digest`, as the operator resolved it.
    pub image: &'a str,
    /// The keyring files of `spec.keyringSecretRef`, read from the Job's mount.
    pub keyrings: Vec<(String, Vec<u8>)>,
}

/// Runs one fix in a fix Job: reads the ImageFix (it must still be the object and
/// generation the Job was made for), checks its spec as the operator does, runs the
/// engine and records each phase and the outcome in the status (the Job's own identity
/// may do exactly that). Returns the final status.
pub async fn run_in_job(
    client: &Client,
    job: &FixJobRun<'_>,
    access: &RegistryAccess,
    db: &crate::db::LoadedDb,
    egress: &EgressPolicy,
    budgets: imagewarden_scanner::budget::ScanBudgets,
) -> Result<ImageFixStatus, Error> {
    let api: Api<ImageFix> = Api::namespaced(client.clone(), job.namespace);
    let fix = api.get(job.name).await?;
    if fix.uid().as_deref() != Some(job.uid) || fix.metadata.generation != Some(job.generation) {
        return Err(Error::InvalidObject(format!(
            "ImageFix {}/{} is not generation {} of {} any more; the operator fixes its \
             current spec with another Job",
            job.namespace, job.name, job.generation, job.uid
        )));
    }
    let status = starting_status(&fix, job.image, &db.version, "reading the image".into());
    let valid = match validate(&fix.spec, egress) {
        Ok(v) => v,
        Err(message) => {
            let mut failed = status;
            failed.phase = ImageFixPhase::Failed;
            failed.message = Some(message);
            write_status(client, &fix, failed.clone(), false, "InvalidSpec").await?;
            return Ok(failed);
        }
    };
    let (pull, _ca_file) = crate::executor::pull_options(access)?;
    let valid = ValidFix {
        keyrings: job.keyrings.clone(),
        ..valid
    };
    execute(
        client,
        &fix,
        job.image,
        valid,
        pull.with_budgets(budgets),
        db,
        status,
    )
    .await
}

/// `FixCompleted` / `FixFailed` to the rule's targets that select it (policy-event
/// payload; outcomes as events on the ImageFix).
async fn notify(ctx: &Context, rule: &ScanRule, fix: &ImageFix, status: &ImageFixStatus) {
    use crate::crd::NotificationEvent;
    use crate::notify::payload::{policy_event_payload, ObjectName, PolicyEventItem, PolicyObject};
    use crate::notify::policy;
    let event = match status.phase {
        ImageFixPhase::Completed => NotificationEvent::FixCompleted,
        ImageFixPhase::Failed => NotificationEvent::FixFailed,
        _ => return,
    };
    let targets: Vec<_> = policy::selected(rule, event)
        .into_iter()
        .map(|t| (t, 0))
        .collect();
    if targets.is_empty() {
        return;
    }
    let ns = fix.namespace().unwrap_or_default();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut reasons = vec![status.message.clone().unwrap_or_default()];
    if let Some(v) = &status.verification {
        if !v.fixed.is_empty() {
            reasons.push(format!("fixed: {}", v.fixed.join(", ")));
        }
    }
    let item = PolicyEventItem {
        kind: event,
        object: PolicyObject {
            kind: "ImageFix".into(),
            namespace: ns.clone(),
            name: fix.name_any(),
            owner: None,
        },
        policy: None,
        image: status.pushed.clone().or_else(|| status.image.clone()),
        reasons,
        when: now.clone(),
    };
    let payload = policy_event_payload(
        &ObjectName {
            namespace: ns.clone(),
            name: rule.name_any(),
        },
        event,
        vec![item],
        &now,
    );
    let key = format!(
        "{ns}/{}/{}/{}",
        fix.name_any(),
        crate::notify::plan::event_name(event),
        fix.metadata.generation.unwrap_or_default()
    );
    let opts = crate::notify::NotifyOptions {
        egress: ctx.config.egress.policy(),
        task_locks: ctx.notify_locks.clone(),
        ..Default::default()
    };
    let deliveries = policy::send(&ctx.client, rule, &targets, &payload, &key, &opts).await;
    policy::publish_outcomes(&ctx.recorder, &fix.object_ref(&()), event, &deliveries).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ImageFixTarget, ResultRef, RuleRef};

    fn spec() -> ImageFixSpec {
        ImageFixSpec {
            result_ref: Some(ResultRef { name: "r".into() }),
            image: None,
            rule_ref: None,
            vulnerabilities: Vec::new(),
            min_severity: None,
            target: ImageFixTarget::default(),
            sources: Vec::new(),
            keyring_secret_ref: None,
            check_valid_until: true,
        }
    }

    fn egress() -> EgressPolicy {
        EgressPolicy::new(&[], &[])
    }

    #[test]
    fn a_valid_spec_is_read_into_the_engine_options() {
        let mut s = spec();
        s.vulnerabilities = vec!["CVE-2024-45491".into()];
        s.min_severity = Some(Severity::High);
        s.sources =
            vec!["deb https://deb.debian.org/debian-security bookworm-security main".into()];
        let v = validate(&s, &egress()).unwrap();
        assert_eq!(v.selection.ids, ["CVE-2024-45491"]);
        assert_eq!(v.selection.min_severity, Some(ScannerSeverity::High));
        assert!(matches!(v.target, fix::FixTarget::TagSuffix(ref t) if t == "_fixd"));
        assert!(
            matches!(&v.sources[0], fix::PackageSource::Apt(a) if a.suite == "bookworm-security")
        );
        s.sources = vec!["https://dl-cdn.alpinelinux.org/alpine/v3.19/main".into()];
        let v = validate(&s, &egress()).unwrap();
        assert!(matches!(&v.sources[0], fix::PackageSource::Apk(_)));
    }

    #[test]
    fn a_mounted_keyring_secret_is_read_without_the_kubelet_s_links_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        assert!(keyring_dir_files(dir.path())
            .unwrap_err()
            .contains("holds no keyring file"));
        let data = dir.path().join("..2026_12_01");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("debian.gpg"), b"key").unwrap();
        std::os::unix::fs::symlink(&data, dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/debian.gpg", dir.path().join("debian.gpg")).unwrap();
        let files = keyring_dir_files(dir.path()).unwrap();
        assert_eq!(files.len(), 1);
        assert!(files[0].0.ends_with("/debian.gpg"));
        assert_eq!(files[0].1, b"key");
        std::fs::write(dir.path().join("big.gpg"), vec![0u8; MAX_KEYRING_BYTES]).unwrap();
        assert!(keyring_dir_files(dir.path())
            .unwrap_err()
            .contains("bytes of keyring files"));
    }

    #[test]
    fn a_keyring_secret_is_read_bounded_and_named_in_its_errors() {
        use k8s_openapi::ByteString;
        let secret = |entries: Vec<(&str, Vec<u8>)>| Secret {
            data: Some(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v)))
                    .collect(),
            ),
            ..Default::default()
        };
        let files =
            keyring_files("keys", Some(&secret(vec![("debian.gpg", b"k".to_vec())]))).unwrap();
        assert_eq!(
            files,
            [("secret keys/debian.gpg".to_string(), b"k".to_vec())]
        );
        for (s, expected) in [
            (None, "Secret keys does not exist"),
            (Some(secret(vec![])), "holds no keyring file"),
            (
                Some(secret(vec![("big.gpg", vec![0; MAX_KEYRING_BYTES + 1])])),
                "at most 1048576",
            ),
        ] {
            let err = keyring_files("keys", s.as_ref()).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn hostile_specs_are_refused_with_what_is_wrong() {
        type Change = Box<dyn Fn(&mut ImageFixSpec)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|s| {
                    s.sources = vec!["@edge https://dl-cdn.alpinelinux.org/alpine/edge/main".into()]
                }),
                "tagged repositories (@tag URL) are not supported",
            ),
            (
                Box::new(|s| s.sources = vec!["deb ftp://example.org/debian bookworm main".into()]),
                "only http and https",
            ),
            (
                Box::new(|s| {
                    s.sources = vec!["deb http://169.254.169.254/debian bookworm main".into()]
                }),
                "169.254.169.254",
            ),
            (
                Box::new(|s| {
                    s.sources = vec!["deb http://127.0.0.1:8080/debian bookworm main".into()]
                }),
                "127.0.0.1",
            ),
            (
                Box::new(|s| s.vulnerabilities = vec!["CVE-1; rm -rf /".into()]),
                "is not a vulnerability id",
            ),
            (
                Box::new(|s| s.vulnerabilities = vec!["CVE-1".into(); 257]),
                "at most 256",
            ),
            (
                Box::new(|s| s.target.tag_suffix = ":latest".into()),
                "is not a tag suffix",
            ),
            (
                Box::new(|s| {
                    s.result_ref = None;
                    s.image = Some("r.example/team-a/api@sha256:0123456789012345678901234567890123456789012345678901234567890123".into());
                    s.rule_ref = Some(RuleRef {
                        name: "rule".into(),
                    });
                }),
                "name the image by tag and digest",
            ),
            (
                Box::new(|s| {
                    s.result_ref = None;
                    s.image = Some("r.example/team-a/api:1.0@sha256:0123456789012345678901234567890123456789012345678901234567890123".into());
                }),
                "needs spec.ruleRef",
            ),
            (
                Box::new(|s| s.image = Some("r.example/a:1".into())),
                "exactly one of",
            ),
        ];
        for (change, expected) in cases {
            let mut s = spec();
            change(&mut s);
            let err = validate(&s, &egress()).unwrap_err();
            assert!(err.contains(expected), "{err:?} should say {expected:?}");
        }
    }

    fn job_settings() -> crate::config::JobSettings {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            settings: crate::config::JobSettings,
        }
        Cli::try_parse_from(["x"]).unwrap().settings
    }

    #[test]
    fn a_fix_job_runs_fix_image_in_the_hardened_scanner_pod_once() {
        let owner = OwnerReference {
            api_version: "imagewarden.io/v1alpha1".into(),
            kind: "ImageFix".into(),
            name: "xml".into(),
            uid: "uid-1".into(),
            controller: Some(true),
            ..Default::default()
        };
        let registry = JobRegistry {
            credentials_secret: Some("creds".into()),
            ca_secret: Some(("creds".into(), "ca.crt".into())),
            egress_args: vec!["--egress-allow=127.0.0.0/8".into()],
            ..Default::default()
        };
        let database = JobDatabase {
            base_url: "http://10.96.0.7:8081".into(),
            version: "sha256:ab".into(),
            size: 100,
        };
        let image = "r:5000/team-a/xml:v1.0@sha256:cd";
        let job = build_fix_job(
            &job_settings(),
            FixJobInput {
                owner,
                namespace: "team-a",
                generation: 3,
                image,
                rule: "team-a",
                keyring_secret: None,
            },
            &registry,
            &database,
        );
        assert_eq!(job.metadata.name, Some(fix_job_name("uid-1", 3)));
        assert_ne!(fix_job_name("uid-1", 3), fix_job_name("uid-1", 4));
        let labels = job.metadata.labels.clone().unwrap();
        assert_eq!(labels["app.kubernetes.io/component"], "fix");
        assert_eq!(
            job.metadata.annotations.unwrap()["imagewarden.io/rule"],
            "team-a"
        );
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        let rule = &spec.pod_failure_policy.unwrap().rules[0];
        let codes = rule.on_exit_codes.as_ref().unwrap();
        assert_eq!(
            (codes.operator.as_str(), &codes.values[..]),
            ("NotIn", &[0][..])
        );
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.service_account_name, Some(fix_job_name("uid-1", 3)));
        let c = &pod.containers[0];
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_non_root, Some(true));
        let args = c.args.clone().unwrap();
        assert_eq!(args[0], "fix-image");
        for want in [
            "--namespace=team-a".to_string(),
            "--name=xml".to_string(),
            "--uid=uid-1".to_string(),
            "--generation=3".to_string(),
            format!("--image={image}"),
            "--db-url=http://10.96.0.7:8081/db/sha256:ab".to_string(),
            "--credentials-dir=/var/run/imagewarden/registry-credentials".to_string(),
            "--ca-file=/var/run/imagewarden/registry-ca/ca.crt".to_string(),
            "--egress-allow=127.0.0.0/8".to_string(),
        ] {
            assert!(args.contains(&want), "{want} not in {args:?}");
        }
        assert!(!args.iter().any(|a| a.starts_with("--keyring-dir")));

        // With a keyring Secret: mounted read-only, and named to fix-image.
        let job = build_fix_job(
            &job_settings(),
            FixJobInput {
                owner: OwnerReference {
                    uid: "uid-2".into(),
                    ..Default::default()
                },
                namespace: "team-a",
                generation: 1,
                image,
                rule: "team-a",
                keyring_secret: Some("debian-keys"),
            },
            &registry,
            &database,
        );
        let pod = job.spec.unwrap().template.spec.unwrap();
        let volume = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "keyring")
            .unwrap();
        assert_eq!(
            volume.secret.unwrap().secret_name.as_deref(),
            Some("debian-keys")
        );
        let c = &pod.containers[0];
        let mount = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "keyring")
            .unwrap();
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            (FIX_JOB_KEYRING_DIR, Some(true))
        );
        assert!(c
            .args
            .as_ref()
            .unwrap()
            .contains(&format!("--keyring-dir={FIX_JOB_KEYRING_DIR}")));
    }

    #[test]
    fn a_fix_job_that_failed_tells_why() {
        let settings = job_settings();
        let failed = |code: Option<i32>, message: &str| JobState::Failed {
            exit_code: code,
            message: message.into(),
        };
        let deadline = job_failure(
            "iw-fix-1",
            &failed(None, "Job was active longer than specified deadline"),
            &settings,
        );
        assert_eq!(deadline.reason, "DeadlineExceeded");
        assert!(
            deadline.message.contains("deadline of 1800 s"),
            "{deadline:?}"
        );
        let killed = job_failure(
            "iw-fix-1",
            &failed(Some(137), "Container scanner for pod a/b failed with exit code 137 matching FailJob rule at index 0"),
            &settings,
        );
        assert_eq!(killed.reason, "JobKilled");
        assert!(
            killed.message.contains("memory limit of 512Mi"),
            "{killed:?}"
        );
        let db = job_failure(
            "iw-fix-1",
            &failed(Some(crate::dbserve::EXIT_DB_UNAVAILABLE), ""),
            &settings,
        );
        assert_eq!(db.reason, "DatabaseUnavailable");
        let other = job_failure("iw-fix-1", &failed(Some(1), ""), &settings);
        assert_eq!(
            other.message,
            "fix Job iw-fix-1 failed with exit code 1 before recording the outcome; the Pod's log says why"
        );
        assert_eq!(
            job_failure("iw-fix-1", &JobState::Succeeded, &settings).reason,
            "JobFailed"
        );
    }

    #[test]
    fn steps_map_to_phases() {
        assert_eq!(phase_of_step("reading the image"), ImageFixPhase::Planning);
        assert_eq!(
            phase_of_step("downloading 2 packages (10 bytes)"),
            ImageFixPhase::Building
        );
        assert_eq!(
            phase_of_step("pushing team-a/xml:1.0_fixd"),
            ImageFixPhase::Pushing
        );
        assert_eq!(
            phase_of_step("verifying the fixed image"),
            ImageFixPhase::Verifying
        );
    }
}
