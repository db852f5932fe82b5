//! What a ScanTask needs next, decided without I/O: from the task, its rule, the
//! ImageScanResults and scanner Jobs the watches hold, the scans running in this process
//! and the clock, [`plan`] returns the [`Step`]s the apply layer carries out.
//!
//! When a decision needs something only the API server or a registry can tell (the
//! images a Pending task covers, the registry access of an inline scan, the outcome of a
//! re-match), the plan is a single [`Step::Fetch`]; the apply layer fetches it, puts the
//! answer in [`Fetched`] and plans again.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use crate::conditions::condition;
use crate::config::ExecutorKind;
use crate::context::{scan_retry_delay, InlineScans, ScanKey};
use crate::crd::{ImageProgress, ImageScanResult, ScanPhase, ScanRule, ScanTask, ScanTaskStatus};
use crate::executor::{
    job_name, judge_job, judge_result, rescan_message, reusable, rule_scanners, JobState,
    ScanTarget, ScanVerdict, StoredResult,
};
use imagewarden_scanner::reference::ImageReference;

/// The operator settings a plan depends on.
#[derive(Clone, Debug)]
pub struct Settings {
    pub executor: ExecutorKind,
    pub max_concurrent_scans: usize,
    pub max_scan_attempts: u32,
    /// Version of the database in use.
    pub db_version: String,
    /// Whether scanner Jobs have an address to download the database from.
    pub jobs_reach_db: bool,
}

/// The task's rule, as the watch holds it.
#[derive(Clone, Copy, Debug)]
pub enum Rule<'a> {
    /// The task names no rule.
    None,
    /// The task names a rule that does not exist.
    Missing(&'a str),
    Found(&'a ScanRule),
}

impl<'a> Rule<'a> {
    fn get(self) -> Option<&'a ScanRule> {
        match self {
            Rule::Found(r) => Some(r),
            _ => None,
        }
    }
}

/// A scanner Job of the task, as far as the plan needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobView {
    pub state: JobState,
    /// The database version the Job was given.
    pub database: Option<String>,
    /// When the Job started (Unix milliseconds, the Job controller's time).
    pub started_ms: Option<i64>,
}

/// What the watches and this process know.
#[derive(Clone, Copy)]
pub struct Observed<'a> {
    /// ImageScanResults of the task's namespace, by name.
    pub results: &'a BTreeMap<String, Arc<ImageScanResult>>,
    /// Scanner Jobs of the task, by name.
    pub jobs: &'a BTreeMap<String, JobView>,
    /// Scanner Jobs of every task that have not finished (the concurrency bound).
    pub active_jobs: usize,
    /// Inline scans of this process.
    pub inline: &'a InlineScans,
}

/// A failure that ends the task: the `Complete` condition's reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
}

/// Answers to [`Step::Fetch`]es of earlier plans of the same reconcile.
#[derive(Clone, Debug, Default)]
pub struct Fetched {
    /// The images of a Pending task.
    pub images: Option<Result<Vec<ImageProgress>, Failure>>,
    /// Whether the rule's registry access (Secrets) could be read.
    pub access: Option<Result<(), Failure>>,
    /// Re-matches done, by result name: whether the result now holds the current database.
    pub rematched: BTreeMap<String, bool>,
}

/// I/O a decision waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// Read the rule's registry access and resolve the task's images to digests.
    Images,
    /// Read the rule's registry access (for inline scans).
    Access,
    /// Re-match the stored inventory of this result with the current database and write it.
    Rematch(String),
}

/// A metric to count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Metric {
    TaskStarted(String),
    TaskFinished(&'static str),
    /// An image's scan ended: `reused`, `rematched` or `failed`.
    Scan(&'static str),
    /// How long a scanner Job took, in milliseconds (inline scans are timed where they run).
    JobScanMillis(u64),
    /// Images waiting for the concurrency bound or a retry.
    QueueDepth(i64),
}

/// One thing to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Fetch, then plan again.
    Fetch(Fetch),
    /// Add the tags of an image and the results' owner to a result that is reused.
    RecordOnResult {
        result: String,
        tags: Vec<String>,
        owner: Option<OwnerReference>,
    },
    /// The outcome of this inline scan is recorded: forget it.
    ForgetOutcome(ScanKey),
    /// The next attempt of this inline scan waits until then.
    RetryAt(ScanKey, Instant),
    /// Start an inline scan (after the status recording its attempt is written).
    StartInline {
        key: ScanKey,
        target: ScanTarget,
        owner: Option<OwnerReference>,
    },
    /// Create the scanner Job of this attempt (after the scanner's identity is ensured).
    CreateJob {
        target: ScanTarget,
        attempt: u32,
    },
    Count(Metric),
    Publish {
        type_: EventType,
        reason: &'static str,
        note: String,
    },
    /// Write the task's status.
    WriteStatus(Box<ScanTaskStatus>),
    /// The task waits for a scan slot: wake it when one frees.
    WaitForSlot,
    /// Nothing will wake the task before then (a retry backoff).
    RequeueAfter(Duration),
    /// The task has finished: deliver what notifications it owes.
    Notify,
}

/// Everything a plan looks at.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    pub task: &'a ScanTask,
    pub rule: Rule<'a>,
    pub observed: Observed<'a>,
    pub fetched: &'a Fetched,
    pub settings: &'a Settings,
    /// Wall clock (status times) and monotonic clock (retry timers).
    pub now: (&'a Time, Instant),
}

/// Decides the next steps of a task.
pub fn plan(inputs: Inputs<'_>) -> Vec<Step> {
    let task = inputs.task;
    let old = task.status.clone().unwrap_or_default();
    if matches!(old.phase, ScanPhase::Completed | ScanPhase::Failed) {
        return vec![Step::Notify];
    }
    let mut status = old.clone();
    status.observed_generation = task.metadata.generation;
    if let Rule::Missing(name) = inputs.rule {
        let ns = task.namespace().unwrap_or_default();
        return fail(
            inputs,
            status,
            Failure {
                reason: "RuleNotFound",
                message: format!("ScanRule {ns}/{name} not found"),
            },
        );
    }
    if matches!(inputs.rule, Rule::None) && task.spec.images.is_empty() {
        return fail(
            inputs,
            status,
            Failure {
                reason: "NothingToScan",
                message: "the task names neither a rule nor images".into(),
            },
        );
    }
    if old.images.is_empty() && old.start_time.is_none() {
        return start(inputs, status);
    }
    if let Some(Err(failure)) = &inputs.fetched.access {
        // The Secrets an inline scan needs cannot be read: the task ends, as at its start.
        return fail(inputs, status, failure.clone());
    }
    advance(inputs, status)
}

/// A Pending task: its images resolved (fetched), it starts running.
fn start(inputs: Inputs<'_>, mut status: ScanTaskStatus) -> Vec<Step> {
    let images = match &inputs.fetched.images {
        None => return vec![Step::Fetch(Fetch::Images)],
        Some(Err(failure)) => return fail(inputs, status, failure.clone()),
        Some(Ok(images)) => images.clone(),
    };
    status.images = images;
    status.start_time = Some(inputs.now.0.clone());
    summarize(&mut status);
    if status.phase == ScanPhase::Running || status.total == 0 {
        status.conditions = vec![];
    }
    let mut steps = vec![
        Step::Count(Metric::TaskStarted(format!(
            "{:?}",
            inputs.task.spec.trigger
        ))),
        Step::Publish {
            type_: EventType::Normal,
            reason: "Started",
            note: format!("scanning {} images", status.total),
        },
    ];
    if status.total == 0 {
        status.phase = ScanPhase::Completed;
    }
    finish_if_done(inputs, &mut status, &mut steps);
    steps.push(Step::WriteStatus(Box::new(status)));
    steps
}

/// What became of the unfinished images of a running task, and what they wait for.
#[derive(Default)]
struct Pass {
    steps: Vec<Step>,
    /// Scans this plan starts (inline scans or Jobs), against the concurrency bound.
    started: usize,
    waiting: i64,
    waiting_for_slot: bool,
    retry_in: Option<Duration>,
    /// Inline scans and Jobs this plan starts: an image whose digest another image of the
    /// task already starts waits for that scan.
    starting: std::collections::HashSet<String>,
}

/// A running task: every unfinished image advanced.
fn advance(inputs: Inputs<'_>, mut status: ScanTaskStatus) -> Vec<Step> {
    let old = status.clone();
    let mut pass = Pass::default();
    for entry in status.images.iter_mut() {
        if matches!(entry.phase, ScanPhase::Completed | ScanPhase::Failed) {
            continue;
        }
        if let Some(fetch) = advance_image(inputs, entry, &mut pass) {
            // Decided once the answer is known; the rest of this plan is discarded.
            return vec![Step::Fetch(fetch)];
        }
    }
    let mut steps = pass.steps;
    steps.push(Step::Count(Metric::QueueDepth(pass.waiting)));
    summarize(&mut status);
    finish_if_done(inputs, &mut status, &mut steps);
    if status != old {
        steps.push(Step::WriteStatus(Box::new(status)));
    }
    if pass.waiting_for_slot {
        steps.push(Step::WaitForSlot);
    }
    if let Some(wait) = pass.retry_in {
        steps.push(Step::RequeueAfter(wait));
    }
    steps
}

/// Why an image has no scan target.
enum NoTarget {
    /// Its reference does not name a registry image.
    Reference(String),
    /// Its tag was not resolved to a digest (the entry's message may say why).
    Digest,
}

/// The scan target of the image of `entry`.
fn target_of(entry: &ImageProgress) -> Result<ScanTarget, NoTarget> {
    let reference = ImageReference::parse_qualified(&entry.image).map_err(|_| {
        NoTarget::Reference(format!("{} is not a registry image reference", entry.image))
    })?;
    let digest = entry.digest.clone().ok_or(NoTarget::Digest)?;
    Ok(ScanTarget {
        registry: reference.registry().to_string(),
        repository: reference.repository().to_string(),
        digest,
        tags: reference.tag().map(str::to_string).into_iter().collect(),
    })
}

/// Advances one unfinished image; `Some` when its decision waits for a fetch.
fn advance_image(inputs: Inputs<'_>, entry: &mut ImageProgress, pass: &mut Pass) -> Option<Fetch> {
    let target = match target_of(entry) {
        Ok(t) => t,
        Err(NoTarget::Reference(message)) => {
            entry.phase = ScanPhase::Failed;
            entry.message = Some(message);
            return None;
        }
        Err(NoTarget::Digest) => {
            entry.phase = ScanPhase::Failed;
            entry
                .message
                .get_or_insert_with(|| "the tag could not be resolved to a digest".into());
            return None;
        }
    };
    let name = target.result_name();
    let key = ScanKey {
        task_uid: inputs.task.uid().unwrap_or_default(),
        digest: target.digest.clone(),
    };
    let existing = inputs.observed.results.get(&name).map(Arc::as_ref);
    let outcome = inputs.observed.inline.finished.get(&key);
    let settings = inputs.settings;
    // Reuse: a result for this digest made by this scanner with this database (the
    // outcome of this process's own scan tells it before the watch does).
    let scanners = rule_scanners(inputs.rule.get());
    let current = |s: &StoredResult| reusable(s, &scanners, &settings.db_version);
    let stored = match outcome {
        Some(Ok(written)) => Some(written.clone()),
        _ => existing.map(StoredResult::from),
    };
    if stored.as_ref().is_some_and(current) {
        reuse(
            inputs,
            entry,
            &target,
            &name,
            existing,
            outcome.is_some(),
            pass,
        );
        if outcome.is_some() {
            pass.steps.push(Step::ForgetOutcome(key));
        }
        return None;
    }
    match settings.executor {
        ExecutorKind::Inline => advance_inline(inputs, entry, target, key, stored.as_ref(), pass),
        ExecutorKind::Job => advance_job(inputs, entry, target, stored.as_ref(), pass),
    }
}

/// The image's result is current: the image is done, and the result records the image's
/// tag and the rule.
fn reuse(
    inputs: Inputs<'_>,
    entry: &mut ImageProgress,
    target: &ScanTarget,
    name: &str,
    existing: Option<&ImageScanResult>,
    reported: bool,
    pass: &mut Pass,
) {
    let scanned_here = entry.phase == ScanPhase::Running;
    entry.phase = ScanPhase::Completed;
    entry.result_name = Some(name.to_string());
    entry.message = match entry.message.take() {
        None if scanned_here => Some("scanned".into()),
        None => Some("existing result reused".into()),
        Some(why) if scanned_here && why.ends_with("; rescanning") => {
            Some(format!("scanned again ({why})"))
        }
        kept => kept,
    };
    if !scanned_here {
        pass.steps.push(Step::Count(Metric::Scan("reused")));
    } else if inputs.settings.executor == ExecutorKind::Job {
        // Inline scans count when they end; a Job's scan counts when its result is read.
        pass.steps.push(Step::Count(Metric::Scan("scanned")));
        let jname = job_name(
            &inputs.task.uid().unwrap_or_default(),
            target,
            entry.attempts.max(1),
        );
        if let Some(job) = inputs.observed.jobs.get(&jname) {
            count_job_duration(inputs, job, pass);
        }
    }
    let owner = result_owner(inputs.task, inputs.rule.get());
    let record = match existing {
        // This image's own inline scan wrote its tags and owner.
        _ if reported && scanned_here => false,
        Some(existing) => {
            !crate::lifecycle::found_plan(existing, &target.tags, owner.as_ref(), inputs.now.0)
                .is_empty()
        }
        // Another image of the task scanned the digest; the watch has not shown the
        // result yet.
        None => reported,
    };
    if record {
        pass.steps.push(Step::RecordOnResult {
            result: name.to_string(),
            tags: target.tags.clone(),
            owner,
        });
    }
}

fn advance_inline(
    inputs: Inputs<'_>,
    entry: &mut ImageProgress,
    target: ScanTarget,
    key: ScanKey,
    stored: Option<&StoredResult>,
    pass: &mut Pass,
) -> Option<Fetch> {
    let settings = inputs.settings;
    let inline = inputs.observed.inline;
    let name = target.result_name();
    if let Some(outcome) = inline.finished.get(&key) {
        let verdict = match outcome {
            // Written, but not with the current database (else it was reused).
            Ok(_) => judge_result(
                "the scan",
                &name,
                stored,
                &rule_scanners(inputs.rule.get()),
                &settings.db_version,
            ),
            Err(message) => ScanVerdict::Rescan(message.clone()),
        }
        .bounded(entry.attempts, settings.max_scan_attempts);
        let fetch = apply_verdict(inputs, entry, verdict.clone(), &name, stored, pass);
        if fetch.is_some() {
            return fetch;
        }
        if let ScanVerdict::Rescan(_) = verdict {
            let wait = scan_retry_delay(entry.attempts);
            pass.steps
                .push(Step::RetryAt(key.clone(), inputs.now.1 + wait));
            pass.retry_in = Some(pass.retry_in.map_or(wait, |w| w.min(wait)));
        }
        pass.steps.push(Step::ForgetOutcome(key));
        return None;
    }
    if inline.running.contains(&key) || pass.starting.contains(&key.digest) {
        return None;
    }
    if let Some(at) = inline.retry_at.get(&key).filter(|t| **t > inputs.now.1) {
        pass.waiting += 1;
        let wait = at.duration_since(inputs.now.1);
        pass.retry_in = Some(pass.retry_in.map_or(wait, |w| w.min(wait)));
        return None;
    }
    if inline.running.len() + pass.started >= settings.max_concurrent_scans.max(1) {
        pass.waiting += 1;
        pass.waiting_for_slot = true;
        return None;
    }
    if let Some(message) = attempts_exhausted(entry, settings.max_scan_attempts) {
        // Attempts were recorded but never reported back: the scans ended the process.
        entry.phase = ScanPhase::Failed;
        entry.message = Some(message);
        pass.steps.push(Step::Count(Metric::Scan("failed")));
        return None;
    }
    if inputs.rule.get().is_some() && inputs.fetched.access.is_none() {
        return Some(Fetch::Access);
    }
    entry.attempts += 1;
    entry.phase = ScanPhase::Running;
    entry.message = None;
    pass.started += 1;
    pass.starting.insert(key.digest.clone());
    pass.steps.push(Step::StartInline {
        key,
        target,
        owner: result_owner(inputs.task, inputs.rule.get()),
    });
    None
}

/// A Job's scan took from the Job's start until its result is read.
fn count_job_duration(inputs: Inputs<'_>, job: &JobView, pass: &mut Pass) {
    if let Some(started) = job.started_ms {
        let now = inputs.now.0 .0.as_millisecond();
        if let Ok(millis) = u64::try_from(now - started) {
            pass.steps.push(Step::Count(Metric::JobScanMillis(millis)));
        }
    }
}

fn advance_job(
    inputs: Inputs<'_>,
    entry: &mut ImageProgress,
    target: ScanTarget,
    stored: Option<&StoredResult>,
    pass: &mut Pass,
) -> Option<Fetch> {
    let settings = inputs.settings;
    // Each attempt has its own Job; `attempts` counts the Jobs created.
    let attempt = entry.attempts.max(1);
    let jname = job_name(&inputs.task.uid().unwrap_or_default(), &target, attempt);
    let name = target.result_name();
    if let Some(job) = inputs.observed.jobs.get(&jname) {
        let verdict = judge_job(
            &jname,
            job.database.as_deref(),
            &job.state,
            &name,
            stored,
            &rule_scanners(inputs.rule.get()),
            &settings.db_version,
        )
        .bounded(attempt, settings.max_scan_attempts);
        // As in `reuse`: a Job's scan counts when its result is read.
        let scanned = verdict == ScanVerdict::Completed;
        let fetch = apply_verdict(inputs, entry, verdict, &name, stored, pass);
        if scanned && fetch.is_none() {
            pass.steps.push(Step::Count(Metric::Scan("scanned")));
            count_job_duration(inputs, job, pass);
        }
        return fetch;
    }
    if pass.starting.contains(&jname) {
        return None;
    }
    if inputs.observed.active_jobs + pass.started >= settings.max_concurrent_scans.max(1) {
        pass.waiting += 1;
        pass.waiting_for_slot = true;
        return None;
    }
    if !settings.jobs_reach_db {
        entry.phase = ScanPhase::Failed;
        entry.message = Some(
            "the operator has no address for scanner Jobs to download the database from (--db-serve-service)".into(),
        );
        return None;
    }
    pass.started += 1;
    pass.starting.insert(jname);
    entry.phase = ScanPhase::Running;
    entry.attempts = attempt;
    pass.steps.push(Step::CreateJob { target, attempt });
    None
}

/// Applies what was decided about one image's scan to its entry.
fn apply_verdict(
    inputs: Inputs<'_>,
    entry: &mut ImageProgress,
    verdict: ScanVerdict,
    name: &str,
    stored: Option<&StoredResult>,
    pass: &mut Pass,
) -> Option<Fetch> {
    let settings = inputs.settings;
    let max = settings.max_scan_attempts;
    let verdict = match verdict {
        ScanVerdict::Rematch { scanned_with } if stored.is_some() => {
            match inputs.fetched.rematched.get(name) {
                None => return Some(Fetch::Rematch(name.to_string())),
                Some(true) => {
                    pass.steps.push(Step::Count(Metric::Scan("rematched")));
                    entry.phase = ScanPhase::Completed;
                    entry.result_name = Some(name.to_string());
                    entry.message = Some(format!(
                        "scanned with database {scanned_with}, re-matched with the current database {}",
                        settings.db_version
                    ));
                    return None;
                }
                Some(false) => {
                    ScanVerdict::Rescan(rescan_message(&scanned_with, &settings.db_version))
                        .bounded(entry.attempts.max(1), max)
                }
            }
        }
        ScanVerdict::Rematch { scanned_with } => {
            ScanVerdict::Rescan(rescan_message(&scanned_with, &settings.db_version))
                .bounded(entry.attempts.max(1), max)
        }
        verdict => verdict,
    };
    match verdict {
        ScanVerdict::Wait => entry.phase = ScanPhase::Running,
        ScanVerdict::Completed | ScanVerdict::Rematch { .. } => {
            entry.phase = ScanPhase::Completed;
            entry.result_name = stored.map(|_| name.to_string());
            entry.message = Some("scanned".into());
        }
        ScanVerdict::Rescan(message) => {
            entry.phase = ScanPhase::Retrying;
            if settings.executor == ExecutorKind::Job {
                // The next Job is the next attempt (inline scans count when they start).
                entry.attempts = entry.attempts.max(1) + 1;
            }
            entry.message = Some(message);
        }
        ScanVerdict::Failed(message) => {
            entry.phase = ScanPhase::Failed;
            entry.message = Some(message);
            pass.steps.push(Step::Count(Metric::Scan("failed")));
        }
    }
    None
}

/// Why an image gets no further inline attempt: every allowed attempt was started
/// (and recorded) without the scan reporting back, as when a scan ends the process.
pub fn attempts_exhausted(entry: &ImageProgress, max_attempts: u32) -> Option<String> {
    (entry.phase == ScanPhase::Running && entry.attempts >= max_attempts.max(1)).then(|| {
        format!(
            "scan of {} did not finish in {} attempt(s): the scanner stopped during the scan",
            entry.image, entry.attempts
        )
    })
}

/// Derives phase and counters from the per-image entries.
pub fn summarize(status: &mut ScanTaskStatus) {
    let count = |phase| status.images.iter().filter(|i| i.phase == phase).count() as u32;
    status.total = status.images.len() as u32;
    status.succeeded = count(ScanPhase::Completed);
    status.failed = count(ScanPhase::Failed);
    status.phase = if status.succeeded + status.failed < status.total {
        ScanPhase::Running
    } else if status.failed == 0 {
        ScanPhase::Completed
    } else {
        ScanPhase::Failed
    };
}

/// Sets completion time and the `Complete` condition, with metric and event, when the
/// task reaches a final phase.
fn finish_if_done(inputs: Inputs<'_>, status: &mut ScanTaskStatus, steps: &mut Vec<Step>) {
    if !matches!(status.phase, ScanPhase::Completed | ScanPhase::Failed)
        || status.completion_time.is_some()
    {
        return;
    }
    status.completion_time = Some(inputs.now.0.clone());
    let ok = status.phase == ScanPhase::Completed;
    let message = format!(
        "{} of {} images scanned, {} failed",
        status.succeeded, status.total, status.failed
    );
    let reason = if ok {
        "AllImagesScanned"
    } else {
        "ImagesFailed"
    };
    status.conditions = vec![condition(
        "Complete",
        ok,
        reason,
        &message,
        inputs.task.metadata.generation,
        &status.conditions,
    )];
    steps.push(Step::Count(Metric::TaskFinished(if ok {
        "Completed"
    } else {
        "Failed"
    })));
    let (type_, reason) = if ok {
        (EventType::Normal, "Completed")
    } else {
        (EventType::Warning, "Failed")
    };
    steps.push(Step::Publish {
        type_,
        reason,
        note: message,
    });
}

/// The task fails as a whole.
fn fail(inputs: Inputs<'_>, mut status: ScanTaskStatus, failure: Failure) -> Vec<Step> {
    let old = inputs.task.status.clone().unwrap_or_default();
    status.phase = ScanPhase::Failed;
    status
        .completion_time
        .get_or_insert_with(|| inputs.now.0.clone());
    status.conditions = vec![condition(
        "Complete",
        false,
        failure.reason,
        &failure.message,
        inputs.task.metadata.generation,
        &old.conditions,
    )];
    if status == old {
        return vec![];
    }
    vec![
        Step::Count(Metric::TaskFinished("Failed")),
        Step::Publish {
            type_: EventType::Warning,
            reason: failure.reason,
            note: failure.message,
        },
        Step::WriteStatus(Box::new(status)),
    ]
}

/// Results belong to the rule (deleting the rule deletes them) or, for ad-hoc tasks
/// without a rule, to the task.
pub fn result_owner(task: &ScanTask, rule: Option<&ScanRule>) -> Option<OwnerReference> {
    let owner = match rule {
        Some(rule) => rule.owner_ref(&()),
        None => task.owner_ref(&()),
    };
    owner.map(|mut o| {
        o.controller = None;
        o.block_owner_deletion = None;
        o
    })
}

/// The names of the ImageScanResults the unfinished images of `task` wait for.
pub fn awaited_results(task: &ScanTask) -> HashSet<String> {
    task.status
        .iter()
        .filter(|s| !matches!(s.phase, ScanPhase::Completed | ScanPhase::Failed))
        .flat_map(|s| s.images.iter())
        .filter(|i| !matches!(i.phase, ScanPhase::Completed | ScanPhase::Failed))
        .filter_map(|i| target_of(i).ok())
        .map(|t| t.result_name())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ImageScanResultSpec, ImageScanResultStatus, RuleRef, ScanTaskSpec};

    /// 2026-01-01T00:00:00Z.
    const JOB_STARTED_MS: i64 = 1_767_225_600_000;
    const DB: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const OLD_DB: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const DIGEST: &str = "sha256:abababababababababababababababababababababababababababababababab";
    const IMAGE: &str = "registry.local/team-a/app:v1";

    fn settings(executor: ExecutorKind) -> Settings {
        Settings {
            executor,
            max_concurrent_scans: 2,
            max_scan_attempts: 3,
            db_version: DB.into(),
            jobs_reach_db: true,
        }
    }

    fn entry(phase: ScanPhase, attempts: u32) -> ImageProgress {
        ImageProgress {
            image: IMAGE.into(),
            digest: Some(DIGEST.into()),
            phase,
            attempts,
            ..Default::default()
        }
    }

    /// A running task (started, with these images).
    fn task(images: Vec<ImageProgress>) -> ScanTask {
        let mut t = ScanTask::new(
            "t",
            ScanTaskSpec {
                rule_ref: None,
                images: vec![IMAGE.into()],
                trigger: Default::default(),
            },
        );
        t.metadata.namespace = Some("team-a".into());
        t.metadata.uid = Some("uid-1".into());
        let mut status = ScanTaskStatus {
            images,
            start_time: Some(crate::now()),
            ..Default::default()
        };
        summarize(&mut status);
        t.status = Some(status);
        t
    }

    fn result_name() -> String {
        target_of(&entry(ScanPhase::Pending, 0))
            .ok()
            .unwrap()
            .result_name()
    }

    fn result(db: &str, inventory: bool, tags: &[&str]) -> Arc<ImageScanResult> {
        let mut r = ImageScanResult::new(
            &result_name(),
            ImageScanResultSpec {
                registry: "registry.local".into(),
                repository: "team-a/app".into(),
                digest: DIGEST.into(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                tags_seen: Vec::new(),
            },
        );
        r.status = Some(ImageScanResultStatus {
            scanner_version: Some(imagewarden_scanner::SCANNER_VERSION.into()),
            database_version: Some(db.into()),
            inventory: inventory.then(String::new),
            ..Default::default()
        });
        Arc::new(r)
    }

    fn key() -> ScanKey {
        ScanKey {
            task_uid: "uid-1".into(),
            digest: DIGEST.into(),
        }
    }

    /// Everything one plan call looks at, with nothing known by default.
    struct World {
        task: ScanTask,
        settings: Settings,
        results: BTreeMap<String, Arc<ImageScanResult>>,
        jobs: BTreeMap<String, JobView>,
        active_jobs: usize,
        inline: InlineScans,
        fetched: Fetched,
        now: Instant,
    }

    impl World {
        fn new(executor: ExecutorKind, images: Vec<ImageProgress>) -> Self {
            Self {
                task: task(images),
                settings: settings(executor),
                results: BTreeMap::new(),
                jobs: BTreeMap::new(),
                active_jobs: 0,
                inline: InlineScans::default(),
                fetched: Fetched::default(),
                now: Instant::now(),
            }
        }

        fn plan(&self) -> Vec<Step> {
            let wall = crate::now();
            plan(Inputs {
                task: &self.task,
                rule: Rule::None,
                observed: Observed {
                    results: &self.results,
                    jobs: &self.jobs,
                    active_jobs: self.active_jobs,
                    inline: &self.inline,
                },
                fetched: &self.fetched,
                settings: &self.settings,
                now: (&wall, self.now),
            })
        }

        fn job(&mut self, attempt: u32, state: JobState) {
            let target = target_of(&entry(ScanPhase::Pending, 0)).ok().unwrap();
            self.jobs.insert(
                job_name("uid-1", &target, attempt),
                JobView {
                    state,
                    database: Some(DB.into()),
                    started_ms: Some(JOB_STARTED_MS),
                },
            );
        }
    }

    fn written(steps: &[Step]) -> Option<&ScanTaskStatus> {
        steps.iter().find_map(|s| match s {
            Step::WriteStatus(st) => Some(st.as_ref()),
            _ => None,
        })
    }

    fn image(steps: &[Step]) -> ImageProgress {
        written(steps).expect("a status write").images[0].clone()
    }

    fn has(steps: &[Step], f: impl Fn(&Step) -> bool) -> bool {
        steps.iter().any(f)
    }

    #[test]
    fn a_current_result_is_reused_and_records_the_tag() {
        for executor in [ExecutorKind::Inline, ExecutorKind::Job] {
            let mut w = World::new(executor, vec![entry(ScanPhase::Pending, 0)]);
            w.results.insert(result_name(), result(DB, true, &["old"]));
            let steps = w.plan();
            let img = image(&steps);
            assert_eq!(img.phase, ScanPhase::Completed);
            assert_eq!(img.message.as_deref(), Some("existing result reused"));
            assert_eq!(img.result_name, Some(result_name()));
            assert!(has(
                &steps,
                |s| matches!(s, Step::RecordOnResult { tags, .. } if tags == &["v1".to_string()])
            ));
            assert!(has(&steps, |s| *s == Step::Count(Metric::Scan("reused"))));
            assert_eq!(written(&steps).unwrap().phase, ScanPhase::Completed);
            assert!(!has(&steps, |s| matches!(
                s,
                Step::StartInline { .. } | Step::CreateJob { .. }
            )));
        }
    }

    #[test]
    fn two_tags_of_one_digest_start_one_scan() {
        let other = ImageProgress {
            image: "registry.local/team-a/app:v2".into(),
            ..entry(ScanPhase::Pending, 0)
        };
        let mut w = World::new(
            ExecutorKind::Inline,
            vec![entry(ScanPhase::Pending, 0), other],
        );
        let steps = w.plan();
        let started = steps
            .iter()
            .filter(|s| matches!(s, Step::StartInline { .. }))
            .count();
        assert_eq!(started, 1);
        // The scan reports back: both images take its result.
        w.task.status = written(&steps).cloned();
        let key = key();
        w.inline.finished.insert(
            key,
            Ok(StoredResult {
                scanner_version: Some(imagewarden_scanner::SCANNER_VERSION.into()),
                database_version: Some(DB.into()),
                has_inventory: true,
                scanners: imagewarden_scanner::finding::ScannerKind::ALL.to_vec(),
            }),
        );
        let steps = w.plan();
        let done = written(&steps).unwrap();
        assert!(
            done.images.iter().all(|i| i.phase == ScanPhase::Completed),
            "{done:?}"
        );
        assert!(!has(&steps, |s| matches!(s, Step::StartInline { .. })));
        // The scan wrote v1; v2 is recorded on its result.
        let recorded: Vec<&Vec<String>> = steps
            .iter()
            .filter_map(|s| match s {
                Step::RecordOnResult { tags, .. } => Some(tags),
                _ => None,
            })
            .collect();
        assert_eq!(recorded, [&vec!["v2".to_string()]]);
    }

    #[test]
    fn a_result_made_without_the_rules_scanners_is_not_reused() {
        let mut w = World::new(ExecutorKind::Job, vec![entry(ScanPhase::Pending, 0)]);
        let mut partial = (*result(DB, true, &["v1"])).clone();
        partial.status.as_mut().unwrap().scanners =
            vec![imagewarden_scanner::finding::ScannerKind::Baseline];
        w.results.insert(result_name(), Arc::new(partial));
        let steps = w.plan();
        assert!(has(&steps, |s| matches!(
            s,
            Step::CreateJob { attempt: 1, .. }
        )));
        assert_eq!(image(&steps).phase, ScanPhase::Running);
    }

    #[test]
    fn a_result_of_another_database_is_not_reused() {
        let mut w = World::new(ExecutorKind::Inline, vec![entry(ScanPhase::Pending, 0)]);
        w.results
            .insert(result_name(), result(OLD_DB, true, &["v1"]));
        let steps = w.plan();
        assert!(has(&steps, |s| matches!(s, Step::StartInline { .. })));
        assert_eq!(image(&steps).attempts, 1);
        assert_eq!(image(&steps).phase, ScanPhase::Running);
    }

    #[test]
    fn an_inline_scan_that_wrote_an_old_database_result_is_rematched() {
        let mut w = World::new(ExecutorKind::Inline, vec![entry(ScanPhase::Running, 1)]);
        let mut old = StoredResult::from(result(OLD_DB, true, &[]).as_ref());
        old.has_inventory = true;
        w.inline.finished.insert(key(), Ok(old));
        // First the re-match is fetched...
        assert_eq!(w.plan(), vec![Step::Fetch(Fetch::Rematch(result_name()))]);
        // ...then the image is done with it.
        w.fetched.rematched.insert(result_name(), true);
        let steps = w.plan();
        let img = image(&steps);
        assert_eq!(img.phase, ScanPhase::Completed);
        assert!(img
            .message
            .unwrap()
            .contains("re-matched with the current database"));
        assert!(has(&steps, |s| *s == Step::ForgetOutcome(key())));
        // A result that cannot be re-matched is scanned again.
        w.fetched.rematched.insert(result_name(), false);
        let img = image(&w.plan());
        assert_eq!(img.phase, ScanPhase::Retrying);
        assert!(img.message.unwrap().ends_with("; rescanning"));
    }

    #[test]
    fn a_failed_inline_scan_is_retried_after_a_backoff() {
        let mut w = World::new(ExecutorKind::Inline, vec![entry(ScanPhase::Running, 1)]);
        w.inline
            .finished
            .insert(key(), Err("registry said 503".into()));
        let steps = w.plan();
        let img = image(&steps);
        assert_eq!(
            (img.phase, img.message.as_deref()),
            (ScanPhase::Retrying, Some("registry said 503"))
        );
        let retry = scan_retry_delay(1);
        assert!(has(&steps, |s| *s == Step::RetryAt(key(), w.now + retry)));
        assert!(has(&steps, |s| *s == Step::RequeueAfter(retry)));
        assert!(has(&steps, |s| *s == Step::ForgetOutcome(key())));

        // Before the backoff ends the image waits, woken by the timer only.
        let mut w = World::new(ExecutorKind::Inline, vec![img.clone()]);
        w.inline
            .retry_at
            .insert(key(), w.now + Duration::from_secs(2));
        let steps = w.plan();
        assert!(written(&steps).is_none());
        assert!(has(&steps, |s| *s == Step::RequeueAfter(Duration::from_secs(2))));
        assert!(!has(&steps, |s| *s == Step::WaitForSlot));
        // After it, the next attempt starts.
        w.now += Duration::from_secs(3);
        let steps = w.plan();
        assert!(has(&steps, |s| matches!(s, Step::StartInline { .. })));
        assert_eq!(
            (image(&steps).phase, image(&steps).attempts),
            (ScanPhase::Running, 2)
        );
    }

    #[test]
    fn a_retrying_image_gets_the_next_job_once_a_slot_is_free() {
        let mut retrying = entry(ScanPhase::Retrying, 2);
        retrying.message = Some("scanner Pod killed".into());
        let w = World::new(ExecutorKind::Job, vec![retrying]);
        let steps = w.plan();
        assert!(has(&steps, |s| matches!(
            s,
            Step::CreateJob { attempt: 2, .. }
        )));
        assert_eq!(image(&steps).phase, ScanPhase::Running);
        // No free slot: it stays Retrying, and the task stays Running.
        let mut w = World::new(ExecutorKind::Job, vec![entry(ScanPhase::Retrying, 2)]);
        w.active_jobs = w.settings.max_concurrent_scans;
        let steps = w.plan();
        assert!(!has(&steps, |s| matches!(s, Step::CreateJob { .. })));
        assert!(has(&steps, |s| *s == Step::WaitForSlot));
        let status = written(&steps)
            .cloned()
            .unwrap_or_else(|| w.task.status.clone().unwrap());
        assert_eq!(status.images[0].phase, ScanPhase::Retrying);
        assert_ne!(status.phase, ScanPhase::Completed);
        assert_ne!(status.phase, ScanPhase::Failed);
    }

    #[test]
    fn the_last_allowed_attempt_that_fails_fails_the_image_and_the_task() {
        let mut w = World::new(ExecutorKind::Inline, vec![entry(ScanPhase::Running, 3)]);
        w.inline
            .finished
            .insert(key(), Err("manifest unknown".into()));
        let steps = w.plan();
        let status = written(&steps).unwrap();
        assert_eq!(status.images[0].phase, ScanPhase::Failed);
        assert_eq!(status.phase, ScanPhase::Failed);
        assert!(status.completion_time.is_some());
        assert_eq!(status.conditions[0].reason, "ImagesFailed");
        assert!(has(&steps, |s| *s
            == Step::Count(Metric::TaskFinished("Failed"))));
        assert!(!has(&steps, |s| matches!(s, Step::RetryAt(..))));
    }

    #[test]
    fn an_inline_scan_that_never_reported_back_stops_after_the_allowed_attempts() {
        // Attempt 2 of 3 was recorded and then the process ended: one more is allowed.
        let w = World::new(ExecutorKind::Inline, vec![entry(ScanPhase::Running, 2)]);
        assert!(has(&w.plan(), |s| matches!(s, Step::StartInline { .. })));
        let w = World::new(ExecutorKind::Inline, vec![entry(ScanPhase::Running, 3)]);
        let img = image(&w.plan());
        assert_eq!(img.phase, ScanPhase::Failed);
        assert!(img
            .message
            .unwrap()
            .contains("did not finish in 3 attempt(s)"));
    }

    #[test]
    fn a_running_inline_scan_is_left_alone() {
        let mut w = World::new(ExecutorKind::Inline, vec![entry(ScanPhase::Running, 1)]);
        w.inline.running.insert(key());
        let steps = w.plan();
        assert!(written(&steps).is_none());
        assert!(!has(&steps, |s| matches!(
            s,
            Step::StartInline { .. } | Step::WaitForSlot | Step::RequeueAfter(_)
        )));
    }

    #[test]
    fn the_concurrency_bound_counts_scans_of_every_task() {
        // Inline: two scans of other tasks run in this process.
        let mut w = World::new(ExecutorKind::Inline, vec![entry(ScanPhase::Pending, 0)]);
        for d in ["sha256:1", "sha256:2"] {
            w.inline.running.insert(ScanKey {
                task_uid: "other".into(),
                digest: d.into(),
            });
        }
        let steps = w.plan();
        assert!(has(&steps, |s| *s == Step::WaitForSlot));
        assert!(has(&steps, |s| *s == Step::Count(Metric::QueueDepth(1))));
        assert!(written(&steps).is_none());
        // Jobs: two unfinished scanner Jobs of other tasks.
        let mut w = World::new(ExecutorKind::Job, vec![entry(ScanPhase::Pending, 0)]);
        w.active_jobs = 2;
        assert!(has(&w.plan(), |s| *s == Step::WaitForSlot));
        // Within one task, the scans this plan starts count too.
        let mut second = entry(ScanPhase::Pending, 0);
        second.digest = Some("sha256:cdcd".into());
        let mut third = second.clone();
        third.digest = Some("sha256:efef".into());
        let mut w = World::new(
            ExecutorKind::Job,
            vec![entry(ScanPhase::Pending, 0), second, third],
        );
        w.active_jobs = 1;
        let steps = w.plan();
        let created = steps
            .iter()
            .filter(|s| matches!(s, Step::CreateJob { .. }))
            .count();
        assert_eq!(created, 1);
        assert!(has(&steps, |s| *s == Step::WaitForSlot));
    }

    #[test]
    fn a_job_is_created_per_attempt_and_waited_for() {
        let w = World::new(ExecutorKind::Job, vec![entry(ScanPhase::Pending, 0)]);
        let steps = w.plan();
        assert!(has(&steps, |s| matches!(
            s,
            Step::CreateJob { attempt: 1, .. }
        )));
        let img = image(&steps);
        assert_eq!((img.phase, img.attempts), (ScanPhase::Running, 1));

        let mut w = World::new(ExecutorKind::Job, vec![img]);
        w.job(1, JobState::Running);
        let steps = w.plan();
        assert!(written(&steps).is_none());
        assert!(!has(&steps, |s| matches!(
            s,
            Step::CreateJob { .. } | Step::WaitForSlot
        )));
    }

    #[test]
    fn a_succeeded_job_completes_the_image_with_its_result() {
        let mut w = World::new(ExecutorKind::Job, vec![entry(ScanPhase::Running, 1)]);
        w.job(1, JobState::Succeeded);
        // The watch has not shown the result yet: the Job ended without writing it.
        let img = image(&w.plan());
        assert_eq!((img.phase, img.attempts), (ScanPhase::Retrying, 2));
        assert!(img
            .message
            .unwrap()
            .contains("finished without writing result"));
        // With the result written by the Job, the image is done.
        w.results.insert(result_name(), result(DB, true, &["v1"]));
        let before = crate::now();
        let steps = w.plan();
        let img = image(&steps);
        assert_eq!(
            (img.phase, img.message.as_deref()),
            (ScanPhase::Completed, Some("scanned"))
        );
        assert_eq!(written(&steps).unwrap().phase, ScanPhase::Completed);
        assert!(has(&steps, |s| *s == Step::Count(Metric::Scan("scanned"))));
        // Timed from the Job's start until the result was read.
        let least = u64::try_from(before.0.as_millisecond() - JOB_STARTED_MS).unwrap();
        let most = u64::try_from(crate::now().0.as_millisecond() - JOB_STARTED_MS).unwrap();
        assert!(has(&steps, |s| matches!(
            s,
            Step::Count(Metric::JobScanMillis(ms)) if (least..=most).contains(ms)
        )));
    }

    #[test]
    fn a_failed_job_fails_the_image_with_the_reason() {
        let mut w = World::new(ExecutorKind::Job, vec![entry(ScanPhase::Running, 1)]);
        w.job(
            1,
            JobState::Failed {
                exit_code: None,
                message: "Job has reached the specified backoff limit".into(),
            },
        );
        let steps = w.plan();
        let img = image(&steps);
        assert_eq!(img.phase, ScanPhase::Failed);
        assert!(img.message.unwrap().contains("backoff limit"));
        assert!(has(&steps, |s| *s == Step::Count(Metric::Scan("failed"))));
    }

    #[test]
    fn a_job_past_its_deadline_fails_the_image_with_the_reason() {
        let mut w = World::new(ExecutorKind::Job, vec![entry(ScanPhase::Running, 1)]);
        w.job(
            1,
            JobState::Failed {
                exit_code: None,
                message: "Job was active longer than specified deadline".into(),
            },
        );
        let img = image(&w.plan());
        assert_eq!(img.phase, ScanPhase::Failed);
        assert!(img
            .message
            .unwrap()
            .contains("longer than specified deadline"));
    }

    #[test]
    fn a_job_that_could_not_get_the_database_is_retried_then_fails() {
        let unavailable = JobState::Failed {
            exit_code: Some(crate::dbserve::EXIT_DB_UNAVAILABLE),
            message: "exit code".into(),
        };
        let mut w = World::new(ExecutorKind::Job, vec![entry(ScanPhase::Running, 1)]);
        w.job(1, unavailable.clone());
        let img = image(&w.plan());
        assert_eq!((img.phase, img.attempts), (ScanPhase::Retrying, 2));
        let mut w = World::new(ExecutorKind::Job, vec![entry(ScanPhase::Running, 3)]);
        w.job(3, unavailable);
        assert_eq!(image(&w.plan()).phase, ScanPhase::Failed);
    }

    #[test]
    fn jobs_without_a_database_address_fail_the_image() {
        let mut w = World::new(ExecutorKind::Job, vec![entry(ScanPhase::Pending, 0)]);
        w.settings.jobs_reach_db = false;
        let img = image(&w.plan());
        assert_eq!(img.phase, ScanPhase::Failed);
        assert!(img.message.unwrap().contains("--db-serve-service"));
    }

    #[test]
    fn a_task_started_under_one_executor_continues_under_the_other() {
        // Started as a Job (attempt 1 recorded), now inline: attempt 2 runs in process.
        let w = World::new(ExecutorKind::Inline, vec![entry(ScanPhase::Running, 1)]);
        let steps = w.plan();
        assert!(has(&steps, |s| matches!(s, Step::StartInline { .. })));
        assert_eq!(image(&steps).attempts, 2);
        // Started inline (attempt 1), now with Jobs: the Job of attempt 1 is created.
        let w = World::new(ExecutorKind::Job, vec![entry(ScanPhase::Running, 1)]);
        assert!(has(&w.plan(), |s| matches!(
            s,
            Step::CreateJob { attempt: 1, .. }
        )));
    }

    #[test]
    fn unusable_images_fail_without_a_scan() {
        let mut bad = entry(ScanPhase::Pending, 0);
        bad.image = "app:v1".into();
        let mut unresolved = entry(ScanPhase::Pending, 0);
        unresolved.digest = None;
        unresolved.message = Some("manifest unknown".into());
        let w = World::new(ExecutorKind::Inline, vec![bad, unresolved]);
        let status = written(&w.plan()).unwrap().clone();
        assert_eq!(
            status.images[0].message.as_deref(),
            Some("app:v1 is not a registry image reference")
        );
        assert_eq!(
            status.images[1].message.as_deref(),
            Some("manifest unknown")
        );
        assert_eq!(status.phase, ScanPhase::Failed);
    }

    #[test]
    fn a_pending_task_resolves_its_images_then_starts() {
        let mut w = World::new(ExecutorKind::Inline, vec![]);
        w.task.status = None;
        assert_eq!(w.plan(), vec![Step::Fetch(Fetch::Images)]);
        w.fetched.images = Some(Ok(vec![entry(ScanPhase::Pending, 0)]));
        let steps = w.plan();
        let status = written(&steps).unwrap();
        assert_eq!((status.phase, status.total), (ScanPhase::Running, 1));
        assert!(status.start_time.is_some());
        assert!(has(&steps, |s| matches!(
            s,
            Step::Publish {
                reason: "Started",
                ..
            }
        )));
        // A discovery failure ends the task with its reason.
        w.fetched.images = Some(Err(Failure {
            reason: "DiscoveryFailed",
            message: "catalog: 401".into(),
        }));
        let status = written(&w.plan()).unwrap().clone();
        assert_eq!(status.phase, ScanPhase::Failed);
        assert_eq!(status.conditions[0].reason, "DiscoveryFailed");
    }

    #[test]
    fn a_missing_rule_fails_the_task_and_a_finished_task_only_notifies() {
        let mut w = World::new(ExecutorKind::Inline, vec![entry(ScanPhase::Pending, 0)]);
        w.task.spec.rule_ref = Some(RuleRef {
            name: "gone".into(),
        });
        let wall = crate::now();
        let steps = plan(Inputs {
            task: &w.task,
            rule: Rule::Missing("gone"),
            observed: Observed {
                results: &w.results,
                jobs: &w.jobs,
                active_jobs: 0,
                inline: &w.inline,
            },
            fetched: &w.fetched,
            settings: &w.settings,
            now: (&wall, w.now),
        });
        let status = written(&steps).unwrap();
        assert_eq!(status.conditions[0].reason, "RuleNotFound");
        assert!(status.conditions[0].message.contains("team-a/gone"));

        let mut w = World::new(ExecutorKind::Inline, vec![entry(ScanPhase::Completed, 1)]);
        assert_eq!(w.task.status.as_ref().unwrap().phase, ScanPhase::Completed);
        w.active_jobs = 5;
        assert_eq!(w.plan(), vec![Step::Notify]);
    }

    #[test]
    fn a_task_with_nothing_changed_plans_no_write() {
        let mut w = World::new(ExecutorKind::Job, vec![entry(ScanPhase::Running, 1)]);
        w.job(1, JobState::Running);
        let steps = w.plan();
        assert_eq!(steps, vec![Step::Count(Metric::QueueDepth(0))]);
    }
}
