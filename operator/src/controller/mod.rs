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

/// Requeues with a per-object backoff that grows with consecutive failures.
fn error_policy<K>(controller: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |_obj, error, ctx| {
        warn!(controller, %error, "reconcile failed");
        ctx.metrics.error(controller, error.metric_label());
        match error {
            Error::Invalid(_) => Action::requeue(Duration::from_secs(60)),
            _ => Action::requeue(Duration::from_secs(5)),
        }
    }
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
    .run(scan_rule::reconcile, error_policy("scanrule"), ctx.clone())
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
    .run(scan_task::reconcile, error_policy("scantask"), ctx.clone())
    .for_each(|r| async move {
        if let Err(e) = r {
            debug!(error = %e, "scantask controller");
        }
    });
    futures::join!(rules, tasks);
}
