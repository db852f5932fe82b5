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
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
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

async fn reconcile_rule(rule: Arc<ScanRule>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = object_key("scanrule", rule.as_ref());
    let action = scan_rule::reconcile(rule, ctx.clone()).await?;
    ctx.record_success(&key);
    Ok(action)
}

async fn reconcile_task(task: Arc<ScanTask>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = object_key("scantask", task.as_ref());
    let action = scan_task::reconcile(task, ctx.clone()).await?;
    ctx.record_success(&key);
    Ok(action)
}

/// Runs both controllers until the stream ends (the process is stopping).
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let rules = Controller::new(
        Api::<ScanRule>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<ScanTask>::all(client.clone()),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(reconcile_rule, error_policy("scanrule"), ctx.clone())
    .for_each(|r| async move {
        if let Err(e) = r {
            debug!(error = %e, "scanrule controller");
        }
    });
    let tasks = Controller::new(
        Api::<ScanTask>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Job>::all(client.clone()),
        watcher::Config::default().labels("app.kubernetes.io/name=imagewarden-scanner"),
    )
    .shutdown_on_signal()
    .run(reconcile_task, error_policy("scantask"), ctx.clone())
    .for_each(|r| async move {
        if let Err(e) = r {
            debug!(error = %e, "scantask controller");
        }
    });
    futures::join!(rules, tasks);
}
