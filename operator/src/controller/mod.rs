//! The controllers: one module per resource, each with
//! `reconcile(Arc<K>, Arc<Context>) -> Result<Action, Error>`.

pub mod fix_triggers;
pub mod image_fix;
pub mod notify;
pub mod resolve;
pub mod scan_rule;
pub mod scan_task;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::core::error_boundary::InvalidObject;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use tracing::{debug, warn};

use crate::context::{Context, Watched};
use crate::crd::{ImageFix, ImageScanResult, ScanRule, ScanTask};
use crate::executor::{job_state, JobState};
use crate::Error;

/// How soon an object whose reconcile failed for a reason that retrying does not fix is
/// looked at again (a Secret it names may be created meanwhile).
const PERMANENT_ERROR_RECHECK: Duration = Duration::from_secs(60);

fn object_key<K: kube::Resource>(controller: &str, obj: &K) -> String {
    format!(
        "{controller}/{}/{}",
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    )
}

/// Requeues with a per-object backoff that grows with consecutive failures.
fn error_policy<K: kube::Resource>(
    controller: &'static str,
) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |obj, error, ctx| {
        let failures = ctx.record_failure(&object_key(controller, obj.as_ref()));
        warn!(controller, object = %object_key(controller, obj.as_ref()), failures, %error, "reconcile failed");
        ctx.metrics.error(controller, error.metric_label());
        let backoff = crate::context::reconcile_backoff(failures);
        match error.is_transient() {
            true => Action::requeue(backoff),
            // Only a change to the object (which wakes it anyway) or to what it refers to
            // helps: look again rarely.
            false => Action::requeue(backoff.max(PERMANENT_ERROR_RECHECK)),
        }
    }
}

/// An object the operator cannot read (it passed the schema but not the types, e.g. a
/// number out of range): a Warning event on it, and the controller goes on.
async fn report_invalid(ctx: &Context, kind: &str, invalid: &InvalidObject) {
    let meta = &invalid.metadata;
    warn!(kind, name = ?meta.name, namespace = ?meta.namespace, error = %invalid.error, "invalid object");
    ctx.metrics.error(kind, "invalid_object");
    let reference = ObjectReference {
        api_version: Some("imagewarden.io/v1alpha1".into()),
        kind: Some(kind.into()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: "InvalidObject".into(),
        note: Some(format!("cannot read this {kind}: {}", invalid.error)),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        warn!(error = %e, "publishing event");
    }
}

async fn reconcile_rule(
    guard: Arc<DeserializeGuard<ScanRule>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let rule = match &guard.0 {
        Ok(rule) => Arc::new(rule.clone()),
        Err(invalid) => {
            report_invalid(&ctx, "ScanRule", invalid).await;
            return Ok(Action::await_change());
        }
    };
    let key = object_key("scanrule", rule.as_ref());
    let action = scan_rule::reconcile(rule, ctx.clone()).await?;
    ctx.record_success(&key);
    Ok(action)
}

async fn reconcile_task(
    guard: Arc<DeserializeGuard<ScanTask>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let task = match &guard.0 {
        Ok(task) => Arc::new(task.clone()),
        Err(invalid) => {
            report_invalid(&ctx, "ScanTask", invalid).await;
            return Ok(Action::await_change());
        }
    };
    let key = object_key("scantask", task.as_ref());
    let action = scan_task::reconcile(task, ctx.clone()).await?;
    ctx.record_success(&key);
    Ok(action)
}

async fn reconcile_fix(
    guard: Arc<DeserializeGuard<ImageFix>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let fix = match &guard.0 {
        Ok(fix) => Arc::new(fix.clone()),
        Err(invalid) => {
            report_invalid(&ctx, "ImageFix", invalid).await;
            return Ok(Action::await_change());
        }
    };
    let key = object_key("imagefix", fix.as_ref());
    let action = image_fix::reconcile(fix, ctx.clone()).await?;
    ctx.record_success(&key);
    Ok(action)
}

/// Keeps what the ScanTask controller decides by: the versions and whether an inventory
/// is stored, not findings or inventories, so the cache stays small.
fn slim_result(guard: &mut DeserializeGuard<ImageScanResult>) {
    if let Ok(result) = &mut guard.0 {
        result.metadata.managed_fields = None;
        if let Some(status) = &mut result.status {
            status.findings = Vec::new();
            status.warnings = Vec::new();
            if status.inventory.is_some() {
                status.inventory = Some(String::new());
            }
        }
    }
}

/// The ImageScanResult of a watch event, mapped to the unfinished tasks awaiting it.
fn tasks_awaiting(
    tasks: &Store<DeserializeGuard<ScanTask>>,
    result: &DeserializeGuard<ImageScanResult>,
) -> Vec<ObjectRef<DeserializeGuard<ScanTask>>> {
    let Ok(result) = &result.0 else {
        return Vec::new();
    };
    let (ns, name) = (result.namespace(), result.name_any());
    tasks
        .state()
        .iter()
        .filter_map(|guard| guard.0.as_ref().ok())
        .filter(|task| task.namespace() == ns)
        .filter(|task| scan_task::plan::awaited_results(task).contains(&name))
        .map(scan_task::task_ref)
        .collect()
}

/// Runs the ScanRule, ScanTask and ImageFix controllers until the stream ends (the process
/// is stopping): one of each per
/// watched scope (all namespaces, or each `--watch-namespaces` entry). The ScanTask
/// controllers read rules, results and scanner Jobs from watches shared by every scope.
pub async fn run(ctx: Arc<Context>) {
    let mut watched = Watched::default();
    let rules: Vec<_> = ctx
        .scoped_apis::<DeserializeGuard<ScanRule>>()
        .into_iter()
        .zip(ctx.scoped_apis::<DeserializeGuard<ScanTask>>())
        .map(|(rules, tasks)| {
            let controller = Controller::new(rules, watcher::Config::default())
                .owns(tasks, watcher::Config::default());
            watched.rules.push(controller.store());
            controller
                .shutdown_on_signal()
                .run(reconcile_rule, error_policy("scanrule"), ctx.clone())
                .for_each(|r| async move {
                    if let Err(e) = r {
                        debug!(error = %e, "scanrule controller");
                    }
                })
        })
        .collect();

    let scopes = ctx.scope.namespaces();
    let mut tasks = Vec::new();
    for ((task_api, result_api), job_api) in ctx
        .scoped_apis::<DeserializeGuard<ScanTask>>()
        .into_iter()
        .zip(ctx.scoped_apis::<DeserializeGuard<ImageScanResult>>())
        .zip(ctx.scoped_apis::<Job>())
    {
        let (results, results_writer) = reflector::store();
        let result_events = watcher::watcher(result_api, watcher::Config::default())
            .default_backoff()
            .modify(slim_result)
            .reflect(results_writer)
            .touched_objects();
        let (jobs, jobs_writer) = reflector::store();
        let wake = ctx.clone();
        let job_events = watcher::watcher(
            job_api,
            watcher::Config::default().labels(scan_task::SCANNER_JOB_SELECTOR),
        )
        .default_backoff()
        .reflect(jobs_writer)
        .inspect(move |event| {
            // A scanner Job that ended or went away frees a slot of the concurrency bound.
            let freed = match event {
                Ok(watcher::Event::Delete(_)) => true,
                Ok(watcher::Event::Apply(job)) => job_state(job) != JobState::Running,
                _ => false,
            };
            if freed {
                wake.wakeups.slot_freed();
            }
        })
        .touched_objects();
        watched.results.push(results);
        watched.jobs.push(jobs);
        tasks.push((task_api, result_events, job_events));
    }
    let _ = ctx.watched.set(watched);
    let tasks: Vec<_> = tasks
        .into_iter()
        .zip(scopes)
        .map(|((task_api, result_events, job_events), namespace)| {
            let controller = Controller::new(task_api, watcher::Config::default());
            let task_store = controller.store();
            let wakeups = ctx.wakeups.subscribe(namespace.as_deref());
            let wakeups = futures::stream::unfold(wakeups, |mut rx| async move {
                rx.recv().await.map(|r| (r, rx))
            });
            controller
                .owns_stream(job_events)
                .watches_stream(
                    result_events.filter_map(|r| async move { r.ok().map(Ok) }),
                    move |r| tasks_awaiting(&task_store, &r),
                )
                .reconcile_on(wakeups)
                .shutdown_on_signal()
                .run(reconcile_task, error_policy("scantask"), ctx.clone())
                .for_each(|r| async move {
                    if let Err(e) = r {
                        debug!(error = %e, "scantask controller");
                    }
                })
        })
        .collect();
    let fix_jobs = ctx.config.executor == crate::config::ExecutorKind::Job;
    let fixes: Vec<_> = ctx
        .scoped_apis::<DeserializeGuard<ImageFix>>()
        .into_iter()
        .zip(ctx.scoped_apis::<Job>())
        .map(|(fixes, jobs)| {
            let controller = Controller::new(fixes, watcher::Config::default());
            // With the job executor, a fix Job that ends reconciles its ImageFix.
            let controller = match fix_jobs {
                true => controller.owns(
                    jobs,
                    watcher::Config::default().labels(image_fix::FIX_JOB_SELECTOR),
                ),
                false => controller,
            };
            controller
                .shutdown_on_signal()
                .run(reconcile_fix, error_policy("imagefix"), ctx.clone())
                .for_each(|r| async move {
                    if let Err(e) = r {
                        debug!(error = %e, "imagefix controller");
                    }
                })
        })
        .collect();
    futures::join!(
        futures::future::join_all(rules),
        futures::future::join_all(tasks),
        futures::future::join_all(fixes),
        fix_triggers::run(ctx.clone())
    );
}
