//! Notifications when a task has finished: `ScanCompleted` / `ScanFailed`, or
//! `NewFindings` for tasks started by a database update.

use std::collections::HashSet;
use std::sync::Arc;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::ResourceExt;

use crate::context::Context;
use crate::crd::{ImageScanResult, NotificationEvent, ScanPhase, ScanRule, ScanTask, TaskTrigger};
use crate::notify::{new_findings_view, notify_task, NotifyOptions};
use crate::Error;

/// Annotation on an ImageScanResult listing the finding ids a database update added
/// (comma-separated), so that `NewFindings` notifications carry only those.
pub const NEW_FINDINGS_ANNOTATION: &str = "imagewarden.io/new-findings";

/// The event a finished task notifies.
pub fn event_of(task: &ScanTask) -> NotificationEvent {
    let phase = task.status.as_ref().map(|s| s.phase).unwrap_or_default();
    match (task.spec.trigger, phase) {
        (TaskTrigger::DatabaseUpdate, _) => NotificationEvent::NewFindings,
        (_, ScanPhase::Completed) => NotificationEvent::ScanCompleted,
        _ => NotificationEvent::ScanFailed,
    }
}

/// Delivers the notifications a finished task owes (each once), then waits for changes.
pub async fn after_finish(task: &ScanTask, ctx: &Arc<Context>) -> Result<Action, Error> {
    let Some(rule_ref) = &task.spec.rule_ref else {
        return Ok(Action::await_change());
    };
    let ns = task.namespace().unwrap_or_default();
    let Some(rule) = Api::<ScanRule>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&rule_ref.name)
        .await?
    else {
        return Ok(Action::await_change());
    };
    if rule.spec.notifications.is_empty() {
        return Ok(Action::await_change());
    }
    let event = event_of(task);
    let api: Api<ImageScanResult> = Api::namespaced(ctx.client.clone(), &ns);
    let mut results = Vec::new();
    let names: Vec<String> = task
        .status
        .as_ref()
        .map(|s| {
            s.images
                .iter()
                .filter_map(|i| i.result_name.clone())
                .collect()
        })
        .unwrap_or_default();
    let mut seen = HashSet::new();
    for name in names {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(result) = api.get_opt(&name).await? else {
            continue;
        };
        if event == NotificationEvent::NewFindings {
            let ids: HashSet<String> = result
                .annotations()
                .get(NEW_FINDINGS_ANNOTATION)
                .map(|v| {
                    v.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            results.push(new_findings_view(&result, &ids));
        } else {
            results.push(result);
        }
    }
    notify_task(
        &ctx.client,
        &ctx.recorder,
        &rule,
        task,
        &results,
        event,
        &NotifyOptions {
            egress: ctx.config.egress.policy(),
            task_locks: ctx.notify_locks.clone(),
            metrics: Some(ctx.metrics.clone()),
            result_url: ctx.config.result_url_template.clone(),
            ..Default::default()
        },
    )
    .await?;
    Ok(Action::await_change())
}
