//! The controllers: one module per resource, each with
//! `reconcile(Arc<K>, Arc<Context>) -> Result<Action, Error>`.

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
use kube::runtime::watcher;
use tracing::{debug, warn};

use crate::context::Context;
use crate::crd::{ScanRule, ScanTask};
use crate::Error;

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
        match error {
            Error::Invalid(_) => Action::requeue(backoff.max(Duration::from_secs(30))),
            _ => Action::requeue(backoff),
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

/// Runs both controllers until the stream ends (the process is stopping): one of each per
/// watched scope (all namespaces, or each `--watch-namespaces` entry).
pub async fn run(ctx: Arc<Context>) {
    let rules = ctx
        .scoped_apis::<DeserializeGuard<ScanRule>>()
        .into_iter()
        .zip(ctx.scoped_apis::<DeserializeGuard<ScanTask>>())
        .map(|(rules, tasks)| {
            Controller::new(rules, watcher::Config::default())
                .owns(tasks, watcher::Config::default())
                .shutdown_on_signal()
                .run(reconcile_rule, error_policy("scanrule"), ctx.clone())
                .for_each(|r| async move {
                    if let Err(e) = r {
                        debug!(error = %e, "scanrule controller");
                    }
                })
        });
    let tasks = ctx
        .scoped_apis::<DeserializeGuard<ScanTask>>()
        .into_iter()
        .zip(ctx.scoped_apis::<Job>())
        .map(|(tasks, jobs)| {
            Controller::new(tasks, watcher::Config::default())
                .owns(
                    jobs,
                    watcher::Config::default().labels("app.kubernetes.io/name=imagewarden-scanner"),
                )
                .shutdown_on_signal()
                .run(reconcile_task, error_policy("scantask"), ctx.clone())
                .for_each(|r| async move {
                    if let Err(e) = r {
                        debug!(error = %e, "scantask controller");
                    }
                })
        });
    futures::join!(
        futures::future::join_all(rules),
        futures::future::join_all(tasks)
    );
}
