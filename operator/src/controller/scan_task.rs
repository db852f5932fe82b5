//! The ScanTask controller: resolves a task's images to digests, scans each digest once
//! (reusing results made with the same scanner and database), bounded by
//! `maxConcurrentScans`, and moves the task Pending → Running → Completed/Failed.
//!
//! All progress lives in the task's status and in ImageScanResults, so a restarted
//! operator continues where the last one stopped, without losing or repeating scans.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use crate::access::registry_access;
use crate::config::ExecutorKind;
use crate::context::LoadedDb;
use crate::context::{Context, ScanKey, FIELD_MANAGER};
use crate::crd::ImageProgress;
use crate::crd::{ImageScanResult, ScanPhase, ScanRule, ScanTask, ScanTaskStatus};
use crate::executor::{
    self, build_job, job_name, job_state, judge_job, judge_result, rescan_message, JobDatabase,
    JobOwner, JobRegistry, ScanTarget, ScanVerdict, StoredResult, JOB_DATABASE_ANNOTATION,
};
use crate::registry::RegistryAccess;
use crate::Error;

use super::resolve;

/// How often a running task is looked at again (besides watch events).
const RUNNING_REQUEUE: Duration = Duration::from_secs(2);

/// Splits `host/repository:tag` or `host/repository@digest`.
pub fn parse_image(image: &str) -> Option<(String, String, Option<String>, Option<String>)> {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d.to_string())),
        None => (image, None),
    };
    let (host, path) = rest.split_once('/')?;
    if !(host.contains('.') || host.contains(':') || host == "localhost") {
        return None;
    }
    let (repo, tag) = match path.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r.to_string(), Some(t.to_string())),
        _ => (path.to_string(), None),
    };
    if repo.is_empty() || (tag.is_none() && digest.is_none()) {
        return None;
    }
    Some((host.to_string(), repo, tag, digest))
}

pub(crate) fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    previous: &[Condition],
) -> Condition {
    let status = if ok { "True" } else { "False" };
    // Keep the transition time when nothing changed, so status stays stable.
    let last = previous
        .iter()
        .find(|c| {
            c.type_ == type_ && c.status == status && c.reason == reason && c.message == message
        })
        .map(|c| c.last_transition_time.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: last.unwrap_or_else(crate::now),
    }
}

/// Derives phase and counters from the per-image entries (pure).
pub fn summarize(status: &mut ScanTaskStatus) {
    status.total = status.images.len() as u32;
    status.succeeded = status
        .images
        .iter()
        .filter(|i| i.phase == ScanPhase::Completed)
        .count() as u32;
    status.failed = status
        .images
        .iter()
        .filter(|i| i.phase == ScanPhase::Failed)
        .count() as u32;
    if status.succeeded + status.failed == status.total {
        status.phase = if status.failed == 0 {
            ScanPhase::Completed
        } else {
            ScanPhase::Failed
        };
    } else {
        status.phase = ScanPhase::Running;
    }
}

async fn patch_status(
    task: &ScanTask,
    ctx: &Context,
    status: &ScanTaskStatus,
) -> Result<(), Error> {
    let api: Api<ScanTask> =
        Api::namespaced(ctx.client.clone(), &task.namespace().unwrap_or_default());
    // Keep what notifications recorded: an apply without those fields would drop them.
    let mut status = status.clone();
    crate::notify::carry_over_notification_status(task.status.as_ref(), &mut status);
    let patch = serde_json::json!({
        "apiVersion": "imagewarden.io/v1alpha1",
        "kind": "ScanTask",
        "status": &status,
    });
    api.patch_status(
        &task.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
}

async fn publish(ctx: &Context, task: &ScanTask, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Scan".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &task.object_ref(&())).await {
        warn!(error = %e, "publishing event");
    }
}

/// Reconciles one ScanTask.
pub async fn reconcile(task: Arc<ScanTask>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconcile("scantask");
    let ns = task.namespace().unwrap_or_default();
    let old = task.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = task.metadata.generation;

    if matches!(old.phase, ScanPhase::Completed | ScanPhase::Failed) {
        return super::notify::after_finish(&task, &ctx).await;
    }

    let rule = match &task.spec.rule_ref {
        Some(r) => match Api::<ScanRule>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&r.name)
            .await?
        {
            Some(rule) => Some(rule),
            None => {
                return fail_task(
                    &task,
                    &ctx,
                    status,
                    "RuleNotFound",
                    format!("ScanRule {ns}/{} not found", r.name),
                )
                .await;
            }
        },
        None => None,
    };
    if rule.is_none() && task.spec.images.is_empty() {
        return fail_task(
            &task,
            &ctx,
            status,
            "NothingToScan",
            "the task names neither a rule nor images".into(),
        )
        .await;
    }
    let access = match &rule {
        Some(rule) => match registry_access(
            &ctx.client,
            &ns,
            &rule.spec.registry,
            ctx.config.egress.policy(),
        )
        .await
        {
            Ok(a) => Some(a),
            Err(e) => return fail_task(&task, &ctx, status, "RegistryAccess", e.to_string()).await,
        },
        None => None,
    };

    if old.images.is_empty() && old.start_time.is_none() {
        // Pending: resolve images to digests, once; the list is fixed for the task's life.
        let images = match resolve::task_images(
            &task,
            rule.as_ref(),
            access.as_ref(),
            ctx.config.egress.policy(),
        )
        .await
        {
            Ok(images) => images,
            Err(e) => {
                return fail_task(&task, &ctx, status, "DiscoveryFailed", e.to_string()).await
            }
        };
        crate::lifecycle::after_resolve(&ctx, &task, rule.as_ref(), &images).await;
        status.images = images;
        status.start_time = Some(crate::now());
        summarize(&mut status);
        if status.phase == ScanPhase::Running || status.total == 0 {
            status.conditions = vec![];
        }
        ctx.metrics
            .task_started(&format!("{:?}", task.spec.trigger));
        publish(
            &ctx,
            &task,
            EventType::Normal,
            "Started",
            format!("scanning {} images", status.total),
        )
        .await;
        info!(task = %task.name_any(), images = status.total, "task started");
        if status.total == 0 {
            status.phase = ScanPhase::Completed;
        }
        finish_if_done(&task, &ctx, &mut status).await;
        patch_status(&task, &ctx, &status).await?;
        return Ok(Action::requeue(Duration::from_millis(200)));
    }

    // Running: advance every unfinished image.
    let db = ctx.db();
    let results: Api<ImageScanResult> = Api::namespaced(ctx.client.clone(), &ns);
    let task_uid = task.uid().unwrap_or_default();
    let owner = result_owner(&task, rule.as_ref());
    let scanners = executor::rule_scanners(rule.as_ref());
    let mut running_here = 0usize;
    let mut identity_ready = false;
    let max = ctx.config.max_concurrent_scans.max(1);
    // Jobs of every task count against the bound; list them once.
    let active_jobs = if ctx.config.executor == ExecutorKind::Job {
        count_active_jobs(&ctx).await?
    } else {
        0
    };
    let mut started_jobs = 0usize;
    let mut waiting = 0i64;
    // Inline scans start only after their attempt is recorded: a scan that takes the
    // process down still counts, and the image ends Failed instead of crash-looping.
    let mut to_start = Vec::new();
    for entry in status.images.iter_mut() {
        if matches!(entry.phase, ScanPhase::Completed | ScanPhase::Failed) {
            continue;
        }
        let Some((registry, repository, tag, _)) = parse_image(&entry.image) else {
            entry.phase = ScanPhase::Failed;
            entry.message = Some(format!("{} is not a registry image reference", entry.image));
            continue;
        };
        let Some(digest) = entry.digest.clone() else {
            entry.phase = ScanPhase::Failed;
            entry
                .message
                .get_or_insert_with(|| "the tag could not be resolved to a digest".into());
            continue;
        };
        let target = ScanTarget {
            registry,
            repository,
            digest: digest.clone(),
            tags: tag.into_iter().collect(),
        };
        let name = target.result_name();
        // Reuse: a result for this digest made by this scanner with this database.
        let existing = results.get_opt(&name).await?;
        if let Some(existing) = &existing {
            let st = existing.status.clone().unwrap_or_default();
            if executor::reusable(&st, &scanners, &db.version) {
                let scanned_here = entry.phase == ScanPhase::Running;
                ctx.inline
                    .lock()
                    .expect("inline lock")
                    .finished
                    .remove(&ScanKey {
                        task_uid: task_uid.clone(),
                        digest: digest.clone(),
                    });
                entry.phase = ScanPhase::Completed;
                entry.result_name = Some(name.clone());
                entry.message = match entry.message.take() {
                    None if scanned_here => Some("scanned".into()),
                    None => Some("existing result reused".into()),
                    Some(why) if scanned_here && why.ends_with("; rescanning") => {
                        Some(format!("scanned again ({why})"))
                    }
                    kept => kept,
                };
                if !scanned_here {
                    ctx.metrics.scan("reused", None);
                }
                // Record tags and ownership of this task's rule on the shared result.
                crate::lifecycle::record_found(&ctx, existing, &target.tags, owner.as_ref())
                    .await?;
                continue;
            }
        }
        let stored = existing.as_ref().map(StoredResult::from);
        let key = ScanKey {
            task_uid: task_uid.clone(),
            digest: digest.clone(),
        };
        match ctx.config.executor {
            ExecutorKind::Inline => {
                let finished = ctx
                    .inline
                    .lock()
                    .expect("inline lock")
                    .finished
                    .remove(&key);
                if let Some(outcome) = finished {
                    let verdict = match outcome {
                        // Written, but not with the current database (else it was reused above).
                        Ok(_) => {
                            judge_result("the scan", &name, stored.as_ref(), &scanners, &db.version)
                        }
                        Err(message) => ScanVerdict::Rescan(message),
                    };
                    let verdict = verdict.bounded(entry.attempts, ctx.config.max_scan_attempts);
                    if let ScanVerdict::Rescan(_) = &verdict {
                        let wait = crate::context::scan_retry_delay(entry.attempts);
                        ctx.inline
                            .lock()
                            .expect("inline lock")
                            .retry_at
                            .insert(key.clone(), Instant::now() + wait);
                    }
                    apply_verdict(&ctx, entry, verdict, existing.as_ref(), &db).await?;
                    continue;
                }
                let mut inline = ctx.inline.lock().expect("inline lock");
                if inline.running.contains(&key) {
                    running_here += 1;
                    continue;
                }
                if inline.running.len() >= max
                    || inline
                        .retry_at
                        .get(&key)
                        .is_some_and(|t| *t > Instant::now())
                {
                    waiting += 1;
                    continue;
                }
                if let Some(message) = attempts_exhausted(entry, ctx.config.max_scan_attempts) {
                    // Attempts were recorded but never reported back: the scans ended the process.
                    entry.phase = ScanPhase::Failed;
                    entry.message = Some(message);
                    ctx.metrics.scan("failed", None);
                    continue;
                }
                inline.retry_at.remove(&key);
                inline.running.insert(key.clone());
                drop(inline);
                entry.attempts += 1;
                entry.phase = ScanPhase::Running;
                entry.message = None;
                running_here += 1;
                to_start.push((key, target));
            }
            ExecutorKind::Job => {
                let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
                let owner_ref = task.controller_owner_ref(&()).expect("task has metadata");
                // Each attempt has its own Job; `attempts` counts the Jobs created.
                let attempt = entry.attempts.max(1);
                let jname = job_name(&owner_ref.uid, &target, attempt);
                match jobs.get_opt(&jname).await? {
                    Some(job) => {
                        let job_db = job
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(JOB_DATABASE_ANNOTATION))
                            .cloned();
                        let verdict = judge_job(
                            &jname,
                            job_db.as_deref(),
                            &job_state(&job),
                            &name,
                            stored.as_ref(),
                            &scanners,
                            &db.version,
                        )
                        .bounded(attempt, ctx.config.max_scan_attempts);
                        apply_verdict(&ctx, entry, verdict, existing.as_ref(), &db).await?;
                    }
                    None => {
                        if active_jobs + started_jobs >= max {
                            waiting += 1;
                            continue;
                        }
                        let Some(base_url) = ctx.db_base_url.as_deref() else {
                            entry.phase = ScanPhase::Failed;
                            entry.message = Some(
                                "the operator has no address for scanner Jobs to download the database from (--db-serve-service)".into(),
                            );
                            continue;
                        };
                        if !identity_ready {
                            if ctx.config.network_policy.scanner_network_policy {
                                crate::netpol::ensure_scanner_network_policy(
                                    &ctx.client,
                                    &ns,
                                    &ctx.config.egress,
                                    &ctx.config.network_policy,
                                    Some(&crate::netpol::DatabaseSource {
                                        namespace: ctx.config.lease_namespace.clone(),
                                        port: ctx.config.job.db_serve_addr.port(),
                                    }),
                                )
                                .await?;
                            }
                            identity_ready = true;
                        }
                        let registry = JobRegistry {
                            egress_args: ctx.config.egress.args(),
                            ..job_registry(rule.as_ref())
                        };
                        let task_name = task.name_any();
                        let job = build_job(
                            &ctx.config.job,
                            JobOwner {
                                namespace: &ns,
                                task_name: &task_name,
                                owner: owner_ref,
                                attempt,
                            },
                            &target,
                            &scanners,
                            &registry,
                            &JobDatabase::current(base_url, &db),
                        );
                        crate::scanner_identity::create_scanner_job(&ctx.client, &job, &name)
                            .await?;
                        started_jobs += 1;
                        entry.phase = ScanPhase::Running;
                        entry.attempts = attempt;
                    }
                }
            }
        }
    }
    let _ = running_here;
    ctx.metrics
        .queue_depth
        .store(waiting, std::sync::atomic::Ordering::Relaxed);
    summarize(&mut status);
    finish_if_done(&task, &ctx, &mut status).await;
    if status != old {
        if let Err(e) = patch_status(&task, &ctx, &status).await {
            let mut inline = ctx.inline.lock().expect("inline lock");
            for (key, _) in &to_start {
                inline.running.remove(key);
            }
            return Err(e);
        }
    }
    for (key, target) in to_start {
        spawn_inline_scan(
            ctx.clone(),
            key,
            ns.clone(),
            target,
            access.clone(),
            owner.clone(),
            scanners.clone(),
        );
    }
    if matches!(status.phase, ScanPhase::Completed | ScanPhase::Failed) {
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    Ok(Action::requeue(RUNNING_REQUEUE))
}

/// Applies what was decided about one image's scan to its entry; a re-match writes the
/// result with the current database.
async fn apply_verdict(
    ctx: &Context,
    entry: &mut ImageProgress,
    verdict: ScanVerdict,
    result: Option<&ImageScanResult>,
    db: &LoadedDb,
) -> Result<(), Error> {
    let verdict = match (verdict, result) {
        (ScanVerdict::Rematch { scanned_with }, Some(result)) => {
            match rematch_result(ctx, result, db).await? {
                true => {
                    ctx.metrics.scan("rematched", None);
                    entry.phase = ScanPhase::Completed;
                    entry.result_name = Some(result.name_any());
                    entry.message = Some(format!(
                        "scanned with database {scanned_with}, re-matched with the current database {}",
                        db.version
                    ));
                    return Ok(());
                }
                false => ScanVerdict::Rescan(rescan_message(&scanned_with, &db.version))
                    .bounded(entry.attempts.max(1), ctx.config.max_scan_attempts),
            }
        }
        (ScanVerdict::Rematch { scanned_with }, None) => {
            ScanVerdict::Rescan(rescan_message(&scanned_with, &db.version))
                .bounded(entry.attempts.max(1), ctx.config.max_scan_attempts)
        }
        (verdict, _) => verdict,
    };
    match verdict {
        ScanVerdict::Wait => entry.phase = ScanPhase::Running,
        ScanVerdict::Completed | ScanVerdict::Rematch { .. } => {
            entry.phase = ScanPhase::Completed;
            entry.result_name = result.map(ResourceExt::name_any);
            entry.message = Some("scanned".into());
        }
        ScanVerdict::Rescan(message) => {
            info!(image = %entry.image, %message, "scanning again");
            entry.phase = ScanPhase::Pending;
            if ctx.config.executor == ExecutorKind::Job {
                // The next Job is the next attempt (inline scans count when they start).
                entry.attempts = entry.attempts.max(1) + 1;
            }
            entry.message = Some(message);
        }
        ScanVerdict::Failed(message) => {
            entry.phase = ScanPhase::Failed;
            entry.message = Some(message);
            ctx.metrics.scan("failed", None);
        }
    }
    Ok(())
}

/// Re-matches the stored inventory of `result` with `db` and writes the result; false
/// when it has no inventory that can be read.
async fn rematch_result(
    ctx: &Context,
    result: &ImageScanResult,
    db: &LoadedDb,
) -> Result<bool, Error> {
    let status = match crate::dbupdate::rematch(result, db) {
        Ok(Some((status, _new))) => status,
        Ok(None) => return Ok(false),
        Err(e) => {
            warn!(result = %result.name_any(), error = %e, "re-matching failed");
            return Ok(false);
        }
    };
    crate::dbupdate::apply_result_status(
        &ctx.client,
        &result.namespace().unwrap_or_default(),
        &result.name_any(),
        &status,
    )
    .await?;
    Ok(true)
}

/// Sets completion time and conditions, and records metrics and events, when the task
/// reaches a final phase.
async fn finish_if_done(task: &ScanTask, ctx: &Context, status: &mut ScanTaskStatus) {
    if !matches!(status.phase, ScanPhase::Completed | ScanPhase::Failed)
        || status.completion_time.is_some()
    {
        return;
    }
    status.completion_time = Some(crate::now());
    let ok = status.phase == ScanPhase::Completed;
    let message = format!(
        "{} of {} images scanned, {} failed",
        status.succeeded, status.total, status.failed
    );
    let gen = task.metadata.generation;
    status.conditions = vec![condition(
        "Complete",
        ok,
        if ok {
            "AllImagesScanned"
        } else {
            "ImagesFailed"
        },
        &message,
        gen,
        &status.conditions,
    )];
    ctx.metrics
        .task_finished(if ok { "Completed" } else { "Failed" });
    let (type_, reason) = if ok {
        (EventType::Normal, "Completed")
    } else {
        (EventType::Warning, "Failed")
    };
    publish(ctx, task, type_, reason, message).await;
}

async fn fail_task(
    task: &ScanTask,
    ctx: &Context,
    mut status: ScanTaskStatus,
    reason: &str,
    message: String,
) -> Result<Action, Error> {
    let old = task.status.clone().unwrap_or_default();
    status.phase = ScanPhase::Failed;
    status.completion_time.get_or_insert_with(crate::now);
    status.conditions = vec![condition(
        "Complete",
        false,
        reason,
        &message,
        task.metadata.generation,
        &old.conditions,
    )];
    if status != old {
        warn!(task = %task.name_any(), %message, "task failed");
        ctx.metrics.task_finished("Failed");
        publish(ctx, task, EventType::Warning, reason, message).await;
        patch_status(task, ctx, &status).await?;
    }
    Ok(Action::requeue(Duration::from_millis(100)))
}

/// Results belong to the rule (deleting the rule deletes them) or, for ad-hoc tasks
/// without a rule, to the task.
fn result_owner(
    task: &ScanTask,
    rule: Option<&ScanRule>,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    match rule {
        Some(rule) => rule.owner_ref(&()).map(|mut o| {
            o.controller = None;
            o.block_owner_deletion = None;
            o
        }),
        None => task.owner_ref(&()).map(|mut o| {
            o.controller = None;
            o.block_owner_deletion = None;
            o
        }),
    }
}

fn job_registry(rule: Option<&ScanRule>) -> JobRegistry {
    match rule {
        Some(rule) => JobRegistry {
            insecure: rule.spec.registry.insecure,
            credentials_secret: rule
                .spec
                .registry
                .credentials_secret_ref
                .as_ref()
                .map(|r| r.name.clone()),
            ca_secret: rule
                .spec
                .registry
                .ca_secret_ref
                .as_ref()
                .map(|r| (r.name.clone(), r.key.clone())),
            egress_args: Vec::new(),
        },
        None => JobRegistry::default(),
    }
}

async fn count_active_jobs(ctx: &Context) -> Result<usize, Error> {
    let list: Vec<Job> = ctx
        .scope
        .list(
            &ctx.client,
            &ListParams::default().labels("app.kubernetes.io/name=imagewarden-scanner"),
        )
        .await?;
    Ok(list
        .iter()
        .filter(|j| {
            let st = j.status.clone().unwrap_or_default();
            st.completion_time.is_none()
                && !st
                    .conditions
                    .unwrap_or_default()
                    .iter()
                    .any(|c| (c.type_ == "Failed" || c.type_ == "Complete") && c.status == "True")
        })
        .count())
}

/// Why an image gets no further inline attempt: every allowed attempt was started
/// (and recorded) without the scan reporting back, as when a scan ends the process.
fn attempts_exhausted(entry: &crate::crd::ImageProgress, max_attempts: u32) -> Option<String> {
    (entry.phase == ScanPhase::Running && entry.attempts >= max_attempts.max(1)).then(|| {
        format!(
            "scan of {} did not finish in {} attempt(s): the scanner stopped during the scan",
            entry.image, entry.attempts
        )
    })
}

fn spawn_inline_scan(
    ctx: Arc<Context>,
    key: ScanKey,
    namespace: String,
    target: ScanTarget,
    access: Option<RegistryAccess>,
    owner: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    scanners: Vec<imagewarden_scanner::finding::ScannerKind>,
) {
    tokio::spawn(async move {
        let started = Instant::now();
        ctx.metrics
            .scans_running
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let access = match access {
            Some(a) => a,
            None => match RegistryAccess::new(&target.registry, false) {
                Ok(a) => a.with_egress(ctx.config.egress.policy()),
                Err(e) => {
                    let mut inline = ctx.inline.lock().expect("inline lock");
                    inline.running.remove(&key);
                    inline.finished.insert(key, Err(e.to_string()));
                    return;
                }
            },
        };
        let db = ctx.db();
        let outcome = match executor::scan_target(
            &target,
            &access,
            &db,
            &ctx.checks,
            &scanners,
            ctx.config.job.budgets.budgets(),
        )
        .await
        {
            Ok(status) => executor::store_result(&ctx.client, &namespace, &target, owner, &status)
                .await
                .map_err(|e| format!("writing result: {e}")),
            Err(e) => Err(e.to_string()),
        };
        ctx.metrics
            .scans_running
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        match &outcome {
            Ok(_) => ctx
                .metrics
                .scan("scanned", Some(started.elapsed().as_secs_f64())),
            Err(e) => warn!(image = %target.reference(), error = %e, "scan failed"),
        }
        let mut inline = ctx.inline.lock().expect("inline lock");
        inline.running.remove(&key);
        inline.finished.insert(key, outcome);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ImageProgress;

    #[test]
    fn an_inline_scan_that_never_reported_back_stops_after_the_allowed_attempts() {
        let mut entry = ImageProgress {
            image: "registry.local/team-a/app:v1".into(),
            phase: ScanPhase::Running,
            attempts: 2,
            ..Default::default()
        };
        // Attempt 2 of 3 was recorded and then the process ended: one more is allowed.
        assert_eq!(attempts_exhausted(&entry, 3), None);
        entry.attempts = 3;
        let why = attempts_exhausted(&entry, 3).unwrap();
        assert!(
            why.contains("team-a/app:v1") && why.contains("3 attempt"),
            "{why}"
        );
        // A Pending image (failed and reported back) is decided by the failure path.
        entry.phase = ScanPhase::Pending;
        assert_eq!(attempts_exhausted(&entry, 3), None);
    }

    #[test]
    fn image_references_split_into_parts() {
        assert_eq!(
            parse_image("127.0.0.1:5000/team-a/api:v1"),
            Some((
                "127.0.0.1:5000".into(),
                "team-a/api".into(),
                Some("v1".into()),
                None
            ))
        );
        assert_eq!(
            parse_image("r.example.com/app@sha256:ab"),
            Some((
                "r.example.com".into(),
                "app".into(),
                None,
                Some("sha256:ab".into())
            ))
        );
        assert_eq!(parse_image("app:v1"), None);
        assert_eq!(parse_image("r.example.com/app"), None);
    }

    #[test]
    fn phase_follows_the_images() {
        let mut status = ScanTaskStatus {
            images: vec![
                ImageProgress {
                    image: "a".into(),
                    phase: ScanPhase::Completed,
                    ..Default::default()
                },
                ImageProgress {
                    image: "b".into(),
                    phase: ScanPhase::Running,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        summarize(&mut status);
        assert_eq!(
            (status.phase, status.total, status.succeeded),
            (ScanPhase::Running, 2, 1)
        );
        status.images[1].phase = ScanPhase::Failed;
        summarize(&mut status);
        assert_eq!((status.phase, status.failed), (ScanPhase::Failed, 1));
        status.images[1].phase = ScanPhase::Completed;
        summarize(&mut status);
        assert_eq!(status.phase, ScanPhase::Completed);
    }
}
