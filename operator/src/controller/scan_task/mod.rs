//! The ScanTask controller: resolves a task's images to digests, scans each digest once
//! (reusing results made with the same scanner and database), bounded by
//! `maxConcurrentScans`, and moves the task Pending → Running → Completed/Failed.
//!
//! Each reconcile dereferences what the task depends on from the watches (rule,
//! ImageScanResults, scanner Jobs) and this process's inline scans, lets the pure
//! [`plan::plan`] decide, and applies its steps. Nothing polls: a task is reconciled when
//! it, its results or its Jobs change, when one of its inline scans ends, when a scan
//! slot it waits for frees up, or when a retry backoff ends.
//!
//! All progress lives in the task's status and in ImageScanResults, so a restarted
//! operator continues where the last one stopped, without losing or repeating scans.

pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::Event;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use crate::access::registry_access;
use crate::context::{Context, LoadedDb, ScanKey, TaskRef, Watched, FIELD_MANAGER};
use crate::crd::{ImageScanResult, ScanPhase, ScanRule, ScanTask, ScanTaskStatus};
use crate::executor::{
    self, build_job, job_name, job_state, JobDatabase, JobOwner, JobRegistry, JobState, ScanTarget,
    StoredResult, JOB_DATABASE_ANNOTATION,
};
use crate::registry::RegistryAccess;
use crate::Error;

use super::resolve;
use plan::{Failure, Fetch, Fetched, Inputs, JobView, Metric, Observed, Rule, Settings, Step};

pub use plan::summarize;

/// Label every scanner Job carries (the Job watch selects on it).
pub const SCANNER_JOB_SELECTOR: &str = "app.kubernetes.io/name=imagewarden-scanner";

/// When a task seen before its own status write is looked at again, should that write's
/// watch event not come.
const STALE_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a reconcile waits for the watches to list their objects.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// A running task is looked at again at least this often, from the caches (no API
/// request unless something changed), should a watch event have been missed.
const RUNNING_RESYNC: std::time::Duration = std::time::Duration::from_secs(10);

/// The queue's name for `task`.
pub fn task_ref(task: &ScanTask) -> TaskRef {
    ObjectRef::new(&task.name_any()).within(&task.namespace().unwrap_or_default())
}

/// Reconciles one ScanTask.
pub async fn reconcile(task: Arc<ScanTask>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconcile("scantask");
    let watched = ctx.watched.get().cloned().ok_or_else(|| Error::Stopping)?;
    // Bounded: a task is looked at again rather than waiting on a watch indefinitely.
    match tokio::time::timeout(READY_WAIT, watched.wait_until_ready()).await {
        Ok(ready) => ready?,
        Err(_) => {
            tracing::debug!(task = %task.name_any(), "watches not listed yet; looking again");
            return Ok(Action::requeue(STALE_RECHECK));
        }
    }
    let me = task_ref(&task);
    if ctx
        .wakeups
        .is_stale(&me, task.metadata.resource_version.as_deref())
    {
        // The watch event of the status just written reconciles the task again.
        return Ok(Action::requeue(STALE_RECHECK));
    }
    let ns = task.namespace().unwrap_or_default();
    let rule = rule_of(&task, &watched)?;
    let rule_view = match (&task.spec.rule_ref, &rule) {
        (None, _) => Rule::None,
        (Some(r), None) => Rule::Missing(&r.name),
        (Some(_), Some(rule)) => Rule::Found(rule),
    };
    // A running task may start scans: count the running ones and record the started
    // ones under one lock.
    let running = task.status.as_ref().is_some_and(|s| {
        s.start_time.is_some() && !matches!(s.phase, ScanPhase::Completed | ScanPhase::Failed)
    });
    let slots = match running {
        true => Some(ctx.wakeups.slots.lock().await),
        false => None,
    };
    let results = results_of(&task, &watched);
    let jobs = jobs_of(&task, &watched);
    let active_jobs = active_jobs(&ctx, &watched);
    let db = ctx.db();
    let settings = Settings {
        executor: ctx.config.executor,
        max_concurrent_scans: ctx.config.max_concurrent_scans,
        max_scan_attempts: ctx.config.max_scan_attempts,
        db_version: db.version.clone(),
        jobs_reach_db: ctx.db_base_url.is_some(),
    };
    let wall = crate::now();
    let mut fetched = Fetched::default();
    let mut access: Option<RegistryAccess> = None;
    // Each fetch answers one question of the plan; a task asks a few at most.
    let steps = loop {
        let inline = ctx.inline.lock().expect("inline lock").clone();
        let steps = plan::plan(Inputs {
            task: &task,
            rule: rule_view,
            observed: Observed {
                results: &results,
                jobs: &jobs,
                active_jobs,
                inline: &inline,
            },
            fetched: &fetched,
            settings: &settings,
            now: (&wall, Instant::now()),
        });
        let [Step::Fetch(fetch)] = steps.as_slice() else {
            break steps;
        };
        match fetch {
            Fetch::Images => {
                let outcome = resolve_images(&task, rule.as_deref(), &ctx).await;
                if let Ok((images, a)) = &outcome {
                    crate::lifecycle::after_resolve(&ctx, &task, rule.as_deref(), images).await;
                    access = a.clone();
                }
                fetched.images = Some(outcome.map(|(images, _)| images));
            }
            Fetch::Access => {
                let rule = rule.as_deref().expect("access is fetched for a rule");
                let outcome = registry_access(
                    &ctx.client,
                    &ns,
                    &rule.spec.registry,
                    ctx.config.egress.policy(),
                )
                .await;
                fetched.access = Some(match outcome {
                    Ok(a) => {
                        access = Some(a);
                        Ok(())
                    }
                    Err(e) => Err(Failure {
                        reason: "RegistryAccess",
                        message: e.to_string(),
                    }),
                });
            }
            Fetch::Rematch(name) => {
                // The watch holds results without their inventory: read the whole one.
                let api: Api<ImageScanResult> = Api::namespaced(ctx.client.clone(), &ns);
                let done = match api.get_opt(name).await? {
                    Some(result) => rematch_result(&ctx, &result, &db).await?,
                    None => false,
                };
                fetched.rematched.insert(name.clone(), done);
            }
        }
    };
    apply(&task, rule.as_deref(), &ctx, steps, access, slots).await
}

/// The task's rule from the watch; `None` when it names none or the rule does not exist.
fn rule_of(task: &ScanTask, watched: &Watched) -> Result<Option<Arc<ScanRule>>, Error> {
    let Some(r) = &task.spec.rule_ref else {
        return Ok(None);
    };
    let key = ObjectRef::new(&r.name).within(&task.namespace().unwrap_or_default());
    match watched.rule(&key) {
        None => Ok(None),
        Some(guard) => match &guard.0 {
            Ok(rule) => Ok(Some(Arc::new(rule.clone()))),
            Err(invalid) => Err(Error::InvalidObject(format!(
                "ScanRule {} cannot be read: {}",
                r.name, invalid.error
            ))),
        },
    }
}

/// The ImageScanResults the task's images wait for, from the watch.
fn results_of(task: &ScanTask, watched: &Watched) -> BTreeMap<String, Arc<ImageScanResult>> {
    let ns = task.namespace().unwrap_or_default();
    let mut out = BTreeMap::new();
    for name in plan::awaited_results(task) {
        let guard = watched.result(&ObjectRef::new(&name).within(&ns));
        if let Some(Ok(result)) = guard.as_deref().map(|g| &g.0) {
            out.insert(name, Arc::new(result.clone()));
        }
    }
    out
}

/// The task's scanner Jobs, from the watch.
fn jobs_of(task: &ScanTask, watched: &Watched) -> BTreeMap<String, JobView> {
    let uid = task.uid();
    watched
        .jobs()
        .into_iter()
        .filter(|job| {
            job.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
        })
        .map(|job| {
            let view = JobView {
                state: job_state(&job),
                database: job.annotations().get(JOB_DATABASE_ANNOTATION).cloned(),
                started_ms: job
                    .status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .map(|t| t.0.as_millisecond()),
            };
            (job.name_any(), view)
        })
        .collect()
}

/// Scanner Jobs of every task that have not finished, with those just created.
fn active_jobs(ctx: &Context, watched: &Watched) -> usize {
    let jobs = watched.jobs();
    let running = jobs
        .iter()
        .filter(|j| job_state(j) == JobState::Running)
        .count();
    let key = |j: &k8s_openapi::api::batch::v1::Job| {
        format!("{}/{}", j.namespace().unwrap_or_default(), j.name_any())
    };
    running
        + ctx
            .wakeups
            .jobs_not_yet_seen(|k| jobs.iter().any(|j| key(j) == k))
}

/// Reads the rule's registry access and resolves the task's images.
async fn resolve_images(
    task: &ScanTask,
    rule: Option<&ScanRule>,
    ctx: &Context,
) -> Result<(Vec<crate::crd::ImageProgress>, Option<RegistryAccess>), Failure> {
    let ns = task.namespace().unwrap_or_default();
    let access = match rule {
        Some(rule) => Some(
            registry_access(
                &ctx.client,
                &ns,
                &rule.spec.registry,
                ctx.config.egress.policy(),
            )
            .await
            .map_err(|e| Failure {
                reason: "RegistryAccess",
                message: e.to_string(),
            })?,
        ),
        None => None,
    };
    let images = resolve::task_images(task, rule, access.as_ref(), ctx.config.egress.policy())
        .await
        .map_err(|e| Failure {
            reason: "DiscoveryFailed",
            message: e.to_string(),
        })?;
    Ok((images, access))
}

/// Carries out the steps of a plan.
/// `slots` (the scan-slot lock, when the task may start scans) is held until the status
/// recording the scans started is written, and never across notifications, which may
/// take minutes against a receiver that is down.
async fn apply(
    task: &Arc<ScanTask>,
    rule: Option<&ScanRule>,
    ctx: &Arc<Context>,
    steps: Vec<Step>,
    access: Option<RegistryAccess>,
    mut slots: Option<tokio::sync::MutexGuard<'_, ()>>,
) -> Result<Action, Error> {
    let ns = task.namespace().unwrap_or_default();
    let me = task_ref(task);
    let finished = |phase: &ScanPhase| matches!(phase, ScanPhase::Completed | ScanPhase::Failed);
    let mut unfinished = task.status.as_ref().is_some_and(|s| !finished(&s.phase));
    let mut action = Action::await_change();
    let mut waiting = false;
    let mut to_start = Vec::new();
    let mut identity_ready = false;
    for step in steps {
        match step {
            Step::Fetch(_) => unreachable!("fetches are answered before applying"),
            Step::Notify => {
                drop(slots.take());
                return super::notify::after_finish(task, ctx).await;
            }
            Step::RecordOnResult {
                result,
                tags,
                owner,
            } => {
                let api: Api<ImageScanResult> = Api::namespaced(ctx.client.clone(), &ns);
                if let Some(existing) = api.get_opt(&result).await? {
                    crate::lifecycle::record_found(ctx, &existing, &tags, owner.as_ref()).await?;
                }
            }
            Step::ForgetOutcome(key) => {
                ctx.inline
                    .lock()
                    .expect("inline lock")
                    .finished
                    .remove(&key);
            }
            Step::RetryAt(key, at) => {
                ctx.inline
                    .lock()
                    .expect("inline lock")
                    .retry_at
                    .insert(key, at);
            }
            Step::StartInline { key, target, owner } => {
                // Counted as running before the status records the attempt, so no other
                // reconcile starts it too.
                let mut inline = ctx.inline.lock().expect("inline lock");
                inline.retry_at.remove(&key);
                inline.running.insert(key.clone());
                to_start.push((key, target, owner));
            }
            Step::CreateJob { target, attempt } => {
                if !identity_ready {
                    ensure_scanner_network_policy(ctx, &ns).await?;
                    identity_ready = true;
                }
                create_job(task, rule, ctx, &target, attempt).await?;
            }
            Step::Count(metric) => count(ctx, metric),
            Step::Publish {
                type_,
                reason,
                note,
            } => {
                if reason == "Started" {
                    info!(task = %task.name_any(), %note, "task started");
                } else if type_ == kube::runtime::events::EventType::Warning {
                    warn!(task = %task.name_any(), %reason, %note, "task failed");
                }
                publish(ctx, task, type_, reason, note).await;
            }
            Step::WriteStatus(status) => {
                unfinished = !finished(&status.phase);
                let written = match patch_status(task, ctx, &status).await {
                    Ok(written) => written,
                    Err(e) => {
                        let mut inline = ctx.inline.lock().expect("inline lock");
                        for (key, _, _) in &to_start {
                            inline.running.remove(key);
                        }
                        return Err(e);
                    }
                };
                // A write that changed nothing leaves the version, and no watch event.
                let planned_from = task.metadata.resource_version.clone();
                if written != planned_from {
                    ctx.wakeups.status_written(me.clone(), planned_from);
                }
                // The scans started are recorded: other tasks may count them now.
                drop(slots.take());
            }
            Step::WaitForSlot => waiting = true,
            Step::RequeueAfter(wait) => action = Action::requeue(wait),
        }
    }
    ctx.wakeups.set_waiting(me.clone(), waiting);
    for (key, target, owner) in to_start {
        let scanners = executor::rule_scanners(rule);
        spawn_inline_scan(
            ctx.clone(),
            me.clone(),
            key,
            target,
            access.clone(),
            owner,
            scanners,
        );
    }
    if unfinished && action == Action::await_change() {
        action = Action::requeue(RUNNING_RESYNC);
    }
    Ok(action)
}

fn count(ctx: &Context, metric: Metric) {
    match metric {
        Metric::TaskStarted(trigger) => ctx.metrics.task_started(&trigger),
        Metric::TaskFinished(phase) => ctx.metrics.task_finished(phase),
        Metric::Scan(outcome) => ctx.metrics.scan(outcome, None),
        Metric::JobScanMillis(millis) => ctx.metrics.scan_duration(millis as f64 / 1000.0),
        Metric::QueueDepth(n) => ctx
            .metrics
            .queue_depth
            .store(n, std::sync::atomic::Ordering::Relaxed),
    }
}

/// Writes the task's status; the resourceVersion the write left.
async fn patch_status(
    task: &ScanTask,
    ctx: &Context,
    status: &ScanTaskStatus,
) -> Result<Option<String>, Error> {
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
    let written = api
        .patch_status(
            &task.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    Ok(written.metadata.resource_version)
}

async fn publish(
    ctx: &Context,
    task: &ScanTask,
    type_: kube::runtime::events::EventType,
    reason: &str,
    note: String,
) {
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

/// The scanner NetworkPolicy (when enabled) in the namespace scanner Jobs run in; each
/// Job gets its own identity when it is created.
async fn ensure_scanner_network_policy(ctx: &Context, ns: &str) -> Result<(), Error> {
    if ctx.config.network_policy.scanner_network_policy {
        crate::netpol::ensure_scanner_network_policy(
            &ctx.client,
            ns,
            &ctx.config.egress,
            &ctx.config.network_policy,
            Some(&crate::netpol::DatabaseSource {
                namespace: ctx.config.lease_namespace.clone(),
                port: ctx.config.job.db_serve_addr.port(),
            }),
        )
        .await?;
    }
    Ok(())
}

async fn create_job(
    task: &ScanTask,
    rule: Option<&ScanRule>,
    ctx: &Context,
    target: &ScanTarget,
    attempt: u32,
) -> Result<(), Error> {
    let ns = task.namespace().unwrap_or_default();
    let owner = task
        .controller_owner_ref(&())
        .ok_or_else(|| Error::InvalidObject("ScanTask without name or uid".into()))?;
    let name = job_name(&owner.uid, target, attempt);
    let base_url = ctx.db_base_url.as_deref().unwrap_or_default();
    let registry = JobRegistry {
        egress_args: ctx.config.egress.args(),
        ..job_registry(rule)
    };
    let task_name = task.name_any();
    let job = build_job(
        &ctx.config.job,
        JobOwner {
            namespace: &ns,
            task_name: &task_name,
            owner,
            attempt,
        },
        target,
        &executor::rule_scanners(rule),
        &registry,
        &JobDatabase::current(base_url, &ctx.db()),
    );
    crate::scanner_identity::create_scanner_job(&ctx.client, &job, &target.result_name()).await?;
    ctx.wakeups.job_created(format!("{ns}/{name}"));
    Ok(())
}

/// Re-matches the stored inventory of `result` with `db` and writes the result; false
/// when it has no inventory that can be read.
async fn rematch_result(
    ctx: &Context,
    result: &ImageScanResult,
    db: &LoadedDb,
) -> Result<bool, Error> {
    Ok(crate::dbupdate::rematch_and_write(&ctx.client, result, db)
        .await?
        .is_some())
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

/// Scans `target` in this process; when it ends, records the outcome and wakes `task`
/// and the tasks waiting for a scan slot.
fn spawn_inline_scan(
    ctx: Arc<Context>,
    task: TaskRef,
    key: ScanKey,
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
        let namespace = task.namespace.clone().unwrap_or_default();
        let outcome = scan_inline(&ctx, &namespace, &target, access, owner, &scanners).await;
        ctx.metrics
            .scans_running
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        match &outcome {
            Ok(_) => ctx
                .metrics
                .scan("scanned", Some(started.elapsed().as_secs_f64())),
            Err(e) => warn!(image = %target.reference(), error = %e, "scan failed"),
        }
        {
            let mut inline = ctx.inline.lock().expect("inline lock");
            inline.running.remove(&key);
            inline.finished.insert(key, outcome);
        }
        ctx.wakeups.wake(task);
        ctx.wakeups.slot_freed();
    });
}

/// Pulls, scans and stores the result of `target`: what was written, or why not. The
/// rule's credentials go only to the rule's registry; other registries are read
/// anonymously.
async fn scan_inline(
    ctx: &Context,
    namespace: &str,
    target: &ScanTarget,
    access: Option<RegistryAccess>,
    owner: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    scanners: &[imagewarden_scanner::finding::ScannerKind],
) -> Result<StoredResult, String> {
    let access = match access
        .filter(|a| crate::registry::access::same_registry(&a.host, &target.registry))
    {
        Some(a) => a,
        None => RegistryAccess::new(&target.registry, false)
            .map_err(|e| e.to_string())?
            .with_egress(ctx.config.egress.policy()),
    };
    let db = ctx.db();
    let status = executor::scan_target(
        target,
        &access,
        &db,
        &ctx.checks,
        scanners,
        ctx.config.job.budgets.budgets(),
    )
    .await
    .map_err(|e| e.to_string())?;
    executor::store_result(&ctx.client, namespace, target, owner, &status)
        .await
        .map_err(|e| format!("writing result: {e}"))?;
    Ok(StoredResult::of_status(&status))
}
