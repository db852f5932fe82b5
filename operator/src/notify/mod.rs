//! Notifications: telling the targets a `ScanRule` names (DingTalk robots, HTTP and HTTPS
//! webhooks) that a scan task completed or failed, or that a database update revealed
//! new findings; and policy events ([`policy`]): an exception that expired, running
//! Pods a policy now denies.
//!
//! The controller calls [`notify_task`] when a task reaches `Completed` or `Failed`. It
//! may call it again on every reconcile: what was delivered, failed or skipped is
//! recorded in `ScanTask.status.notifications` and never sent again.
//!
//! Delivery is at least once, with an idempotency key: before sending, a `Pending` entry
//! is written to the task's status (server-side apply, field manager
//! [`FIELD_MANAGER`]); after the target answers, the entry becomes `Delivered` or
//! `Failed`. A crash between the two leaves `Pending`, and the next call sends again with
//! the same key (header `X-Imagewarden-Delivery`, payload `deliveryId`), so receivers
//! drop the duplicate by key.
//!
//! Pure parts (payload, markdown, signatures, retry decisions, delivery planning,
//! redaction) live in their own modules with unit tests; this module and `delivery` do
//! the I/O.

mod delivery;
pub mod dingtalk;
#[cfg(test)]
mod docs_example;
pub mod links;
pub mod payload;
pub mod plan;
pub mod policy;
pub mod redact;
pub mod retry;
pub mod signing;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};

pub use payload::{build_payload, new_findings_view, NotificationPayload};
pub use plan::{DeliveryState, CONDITION_NOTIFICATION_FAILED};
pub use retry::RetryPolicy;

use crate::crd::{
    ImageScanResult, NotificationDelivery, NotificationEvent, NotificationTarget, NotificationType,
    ScanPhase, ScanRule, ScanTask, ScanTaskStatus, TaskTrigger,
};
use delivery::{ResolvedTarget, Secrets};
use plan::{event_name, notification_condition, plan, set_condition, upsert, Planned};
use redact::truncate;

pub use crate::context::FIELD_MANAGER;
/// Header carrying the idempotency key of a delivery.
pub const DELIVERY_HEADER: &str = "X-Imagewarden-Delivery";
/// Header carrying the event (`ScanCompleted`, `ScanFailed`, `NewFindings`).
pub const EVENT_HEADER: &str = "X-Imagewarden-Event";
/// Header carrying `sha256=<hex HMAC-SHA256 of "{timestamp}.{body}">` when the target has
/// a signing secret.
pub const SIGNATURE_HEADER: &str = "X-Imagewarden-Signature";
/// Header carrying the Unix time (seconds) the signature was made at.
pub const TIMESTAMP_HEADER: &str = "X-Imagewarden-Timestamp";

/// How notifications are delivered.
#[derive(Clone, Debug)]
pub struct NotifyOptions {
    /// Attempts and waits between them.
    pub retry: RetryPolicy,
    /// Longest time one HTTP request (connect, send, response) may take.
    pub request_timeout: Duration,
    /// Longest time establishing a connection may take.
    pub connect_timeout: Duration,
    /// Findings listed per image.
    pub top_findings: usize,
    /// `User-Agent` of requests.
    pub user_agent: String,
    /// Where receivers may be (the operator's egress policy).
    pub egress: std::sync::Arc<imagewarden_scanner::egress::EgressPolicy>,
    /// Serializes notifying per task; callers in one process share one.
    pub task_locks: Arc<TaskLocks>,
    /// Link of each image's result in payloads and DingTalk messages; unset: DingTalk
    /// messages end with the `kubectl get scanresults` hint.
    pub result_url: Option<links::ResultUrlTemplate>,
    /// Where deliveries are counted (`imagewarden_notifications_total`); unset: nowhere.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl NotifyOptions {
    /// Counts a delivery to a target of `kind` that reached its final `outcome`.
    fn count(&self, kind: NotificationType, event: NotificationEvent, outcome: &str) {
        if let Some(m) = &self.metrics {
            let kind = match kind {
                NotificationType::DingTalk => "DingTalk",
                NotificationType::HTTP => "HTTP",
                NotificationType::HTTPS => "HTTPS",
            };
            m.notification(kind, event_name(event), outcome);
        }
    }
}

impl Default for NotifyOptions {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            top_findings: 10,
            user_agent: format!("imagewarden-operator/{}", env!("CARGO_PKG_VERSION")),
            egress: Default::default(),
            task_locks: Default::default(),
            result_url: None,
            metrics: None,
        }
    }
}

/// Why notifying could not be recorded. Delivery failures are not errors: they are
/// recorded in the task's status, with a condition and an event.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The task object lacks a namespace or name.
    #[error("ScanTask without namespace or name")]
    InvalidTask,
    /// Reading the task failed.
    #[error("reading ScanTask {namespace}/{name}: {source}")]
    ReadTask {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Reading the task's rule or results failed.
    #[error("reading {what} of ScanTask {namespace}/{name}: {source}")]
    ReadInputs {
        what: String,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Writing the task's status failed; `Pending` entries will be sent on the next call.
    #[error("recording notification status of ScanTask {namespace}/{name}: {source}")]
    WriteStatus {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// Short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidTask => "invalid_task",
            Error::ReadTask { .. } => "read_task",
            Error::ReadInputs { .. } => "read_inputs",
            Error::WriteStatus { .. } => "write_status",
        }
    }
}

/// What one call of [`notify_task`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotifyReport {
    /// The entries this call wrote, in their final state (`Delivered`, `Failed` or
    /// `Skipped`), one per target it acted on; empty when there was nothing to do.
    pub deliveries: Vec<NotificationDelivery>,
}

impl NotifyReport {
    /// Whether any delivery of this call failed.
    pub fn any_failed(&self) -> bool {
        self.deliveries
            .iter()
            .any(|d| d.state == DeliveryState::Failed.as_str())
    }
}

/// The idempotency key of the delivery of `event` of `task` to `target`: stable across
/// restarts and re-sends, different for a new task of the same name (through the task's
/// uid).
pub fn delivery_id(
    rule: &ScanRule,
    task: &ScanTask,
    event: NotificationEvent,
    target: &str,
) -> String {
    let uid = short_uid(task.metadata.uid.as_deref());
    format!(
        "{}/{}/{}/{uid}/{}/{target}",
        task.namespace().unwrap_or_default(),
        rule.name_any(),
        task.name_any(),
        event_name(event),
    )
}

/// Copies what notifications recorded (the `notifications` list and the
/// `NotificationFailed` condition) from the task's current status into `next`, for
/// writers that apply the whole status with the same field manager: an apply that leaves
/// those fields out would remove them.
pub fn carry_over_notification_status(current: Option<&ScanTaskStatus>, next: &mut ScanTaskStatus) {
    let Some(current) = current else { return };
    next.notifications = current.notifications.clone();
    if let Some(c) = current
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_NOTIFICATION_FAILED)
    {
        set_condition(&mut next.conditions, c.clone());
    }
}

/// One notify at a time per task, so overlapping reconciles of the same task do not both
/// send a `Pending` entry. Shared through [`NotifyOptions::task_locks`].
#[derive(Debug, Default)]
pub struct TaskLocks(std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl TaskLocks {
    async fn lock(&self, key: String) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.0.lock().unwrap_or_else(|e| e.into_inner());
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(key).or_default().clone()
        };
        lock.lock_owned().await
    }
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn entry(
    target: &NotificationTarget,
    event: NotificationEvent,
    state: DeliveryState,
    attempts: u32,
    message: Option<String>,
) -> NotificationDelivery {
    NotificationDelivery {
        target: target.name.clone(),
        event: event_name(event).to_string(),
        state: state.as_str().to_string(),
        attempts,
        last_transition_time: Some(now()),
        message,
    }
}

/// Notifies the targets of `rule` of `event` of `task`, and records each delivery in the
/// task's status.
///
/// `results` are the task's ImageScanResults (for `NewFindings`, views holding only the
/// new findings, see [`new_findings_view`]). The task is read again from the API server,
/// so a stale `task` from a cache never causes a second send. Secrets are read from the
/// rule's namespace. For each target the event selects:
/// 1. a `Pending` entry is written (or `Skipped` when `minSeverity` is not reached, or
///    `Failed` when the target is misconfigured, e.g. a missing Secret);
/// 2. the notification is sent, retrying network errors, 5xx and 429 with backoff;
/// 3. the entry becomes `Delivered` or `Failed`, the `NotificationFailed` condition is
///    set, and an event is recorded (Warning on failure and on `insecureSkipVerify`).
///
/// Returns an error only when the API server could not be read or written; calling
/// again then is safe.
pub async fn notify_task(
    client: &Client,
    recorder: &Recorder,
    rule: &ScanRule,
    task: &ScanTask,
    results: &[ImageScanResult],
    event: NotificationEvent,
    opts: &NotifyOptions,
) -> Result<NotifyReport, Error> {
    let (Some(namespace), Some(name)) = (task.namespace(), task.meta().name.clone()) else {
        return Err(Error::InvalidTask);
    };
    if rule.spec.notifications.is_empty() {
        return Ok(NotifyReport::default());
    }
    let _guard = opts.task_locks.lock(format!("{namespace}/{name}")).await;
    let tasks: Api<ScanTask> = Api::namespaced(client.clone(), &namespace);
    let secrets_ns = rule.namespace().unwrap_or_else(|| namespace.clone());
    let secrets = Secrets::new(client, &secrets_ns);
    let read_err = |source| Error::ReadTask {
        namespace: namespace.clone(),
        name: name.clone(),
        source,
    };
    let write_err = |source| Error::WriteStatus {
        namespace: namespace.clone(),
        name: name.clone(),
        source,
    };

    // 1. Decide against the stored status and record intent.
    let mut conflicts = 0;
    let (current, intents, sends) = loop {
        let current = tasks.get(&name).await.map_err(read_err)?;
        if task.metadata.uid.is_some() && current.metadata.uid != task.metadata.uid {
            tracing::info!(task = %name, "task was replaced; not notifying for the old one");
            return Ok(NotifyReport::default());
        }
        let recorded = current
            .status
            .as_ref()
            .map(|s| s.notifications.clone())
            .unwrap_or_default();
        let mut payload_base = build_payload(rule, &current, results, event, opts.top_findings);
        links::link_results(&mut payload_base, opts.result_url.as_ref());
        let planned = plan(
            &rule.spec.notifications,
            &recorded,
            event,
            payload_base.summary.worst(),
        );
        if planned.is_empty() {
            return Ok(NotifyReport::default());
        }
        let mut intents = Vec::new();
        let mut sends: Vec<(ResolvedTarget, u32, &NotificationTarget)> = Vec::new();
        for p in planned {
            match p {
                Planned::Skip { target, reason } => intents.push(entry(
                    target,
                    event,
                    DeliveryState::Skipped,
                    0,
                    Some(reason),
                )),
                Planned::Send {
                    target,
                    previous_attempts,
                } => match delivery::resolve(&secrets, target, opts).await {
                    Ok(resolved) => {
                        intents.push(entry(
                            target,
                            event,
                            DeliveryState::Pending,
                            previous_attempts,
                            None,
                        ));
                        sends.push((resolved, previous_attempts, target));
                    }
                    Err(message) => {
                        opts.count(target.target_type, event, "misconfigured");
                        intents.push(entry(
                            target,
                            event,
                            DeliveryState::Failed,
                            previous_attempts,
                            Some(format!("target misconfigured: {message}")),
                        ))
                    }
                },
            }
        }
        match write_deliveries(&tasks, &current, &intents).await {
            Ok(updated) => break (updated, intents, sends),
            Err(kube::Error::Api(e)) if e.code == 409 && conflicts < 5 => conflicts += 1,
            Err(e) => return Err(write_err(e)),
        }
    };
    let task_ref = current.object_ref(&());
    let mut report = NotifyReport::default();
    report.deliveries.extend(
        intents
            .iter()
            .filter(|e| e.state != DeliveryState::Pending.as_str())
            .cloned(),
    );
    let insecure: Vec<String> = sends
        .iter()
        .filter(|(resolved, _, _)| resolved.insecure)
        .map(|(resolved, _, _)| format!("{} ({})", resolved.name, resolved.display_url))
        .collect();
    if !insecure.is_empty() {
        publish(
            recorder,
            &task_ref,
            event,
            EventType::Warning,
            "InsecureSkipVerify",
            format!(
                "target(s) {} do not verify the server's certificate (insecureSkipVerify): \
                 anyone on the network path can read and alter notifications",
                insecure.join(", ")
            ),
        )
        .await;
    }

    // 2. Deliver, all targets at once.
    let mut base = build_payload(rule, &current, results, event, opts.top_findings);
    links::link_results(&mut base, opts.result_url.as_ref());
    let outcomes = futures::future::join_all(sends.iter().map(|(resolved, _, target)| {
        let mut payload = base.clone();
        payload.delivery_id = delivery_id(rule, &current, event, &target.name);
        async move { resolved.deliver(&payload, &opts.retry).await }
    }))
    .await;

    // 3. Record outcomes.
    let mut finals = Vec::new();
    for ((resolved, previous, target), outcome) in sends.iter().zip(outcomes) {
        let state = if outcome.delivered {
            DeliveryState::Delivered
        } else {
            DeliveryState::Failed
        };
        opts.count(resolved.kind, event, outcome.label());
        tracing::info!(
            task = %name,
            target_name = %resolved.name,
            event = event_name(event),
            state = state.as_str(),
            attempts = outcome.attempts,
            message = %outcome.message,
            "notification"
        );
        finals.push(entry(
            target,
            event,
            state,
            previous + outcome.attempts,
            Some(truncate(&outcome.message, 1000)),
        ));
    }
    if !finals.is_empty() {
        let mut conflicts = 0;
        let mut latest = current.clone();
        loop {
            match write_deliveries(&tasks, &latest, &finals).await {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 409 && conflicts < 5 => {
                    conflicts += 1;
                    latest = tasks.get(&name).await.map_err(read_err)?;
                }
                Err(e) => return Err(write_err(e)),
            }
        }
    }
    report.deliveries.extend(finals);
    publish_outcomes(recorder, &task_ref, event, &report).await;
    Ok(report)
}

/// The event a finished scan task calls for: `ScanCompleted` or `ScanFailed` by its
/// phase; none while it runs, and none for tasks started by a database update (those
/// notify `NewFindings` with views of only the new findings, which the caller knows).
pub fn finished_event(task: &ScanTask) -> Option<NotificationEvent> {
    if task.spec.trigger == TaskTrigger::DatabaseUpdate {
        return None;
    }
    match task.status.as_ref().map(|s| s.phase) {
        Some(ScanPhase::Completed) => Some(NotificationEvent::ScanCompleted),
        Some(ScanPhase::Failed) => Some(NotificationEvent::ScanFailed),
        _ => None,
    }
}

/// [`notify_task`] for a task that reached `Completed` or `Failed`: reads the task's rule
/// (`spec.ruleRef`) and the ImageScanResults its images name, and notifies
/// [`finished_event`]. Does nothing for a task without a rule, that has not finished, or
/// that a database update started.
/// The controller may call this on every reconcile of a finished task.
pub async fn notify_finished_task(
    client: &Client,
    recorder: &Recorder,
    task: &ScanTask,
    opts: &NotifyOptions,
) -> Result<NotifyReport, Error> {
    let (Some(namespace), Some(name)) = (task.namespace(), task.meta().name.clone()) else {
        return Err(Error::InvalidTask);
    };
    let (Some(event), Some(rule_ref)) = (finished_event(task), task.spec.rule_ref.as_ref()) else {
        return Ok(NotifyReport::default());
    };
    let read_err = |what: String| {
        let (namespace, name) = (namespace.clone(), name.clone());
        move |source| Error::ReadInputs {
            what,
            namespace,
            name,
            source,
        }
    };
    let rules: Api<ScanRule> = Api::namespaced(client.clone(), &namespace);
    let Some(rule) = rules
        .get_opt(&rule_ref.name)
        .await
        .map_err(read_err(format!("ScanRule {}", rule_ref.name)))?
    else {
        tracing::info!(task = %name, rule = %rule_ref.name, "rule is gone; nothing to notify");
        return Ok(NotifyReport::default());
    };
    if rule.spec.notifications.is_empty() {
        return Ok(NotifyReport::default());
    }
    let api: Api<ImageScanResult> = Api::namespaced(client.clone(), &namespace);
    let mut names: Vec<&str> = task
        .status
        .iter()
        .flat_map(|s| s.images.iter())
        .filter_map(|i| i.result_name.as_deref())
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut results = Vec::new();
    for result in names {
        // A result deleted since is reported without findings rather than blocking.
        if let Some(r) = api
            .get_opt(result)
            .await
            .map_err(read_err(format!("ImageScanResult {result}")))?
        {
            results.push(r);
        }
    }
    notify_task(client, recorder, &rule, task, &results, event, opts).await
}

/// Writes `entries` into the notifications of `current`'s status, with the
/// `NotificationFailed` condition they call for. The whole status is applied, with
/// `current`'s resourceVersion as precondition, so a concurrent change surfaces as a 409
/// instead of being overwritten.
async fn write_deliveries(
    tasks: &Api<ScanTask>,
    current: &ScanTask,
    entries: &[NotificationDelivery],
) -> Result<ScanTask, kube::Error> {
    let mut status = current.status.clone().unwrap_or_default();
    let mut changed = false;
    for e in entries {
        changed |= upsert(&mut status.notifications, e.clone());
    }
    if let Some(c) =
        notification_condition(&status.notifications, current.metadata.generation, now())
    {
        changed |= set_condition(&mut status.conditions, c);
    }
    if !changed {
        return Ok(current.clone());
    }
    let patch = serde_json::json!({
        "apiVersion": "imagewarden.io/v1alpha1",
        "kind": "ScanTask",
        "metadata": {
            "name": current.name_any(),
            "resourceVersion": current.resource_version(),
        },
        "status": status,
    });
    tasks
        .patch_status(
            &current.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
}

/// Records one event per outcome of this call: the Events API merges events of the same
/// reason for an object into one series, so one event per target would lose all but the
/// first target's note.
async fn publish_outcomes(
    recorder: &Recorder,
    regarding: &k8s_openapi::api::core::v1::ObjectReference,
    event: NotificationEvent,
    report: &NotifyReport,
) {
    let with_state = |state: DeliveryState| {
        report
            .deliveries
            .iter()
            .filter(move |d| d.state == state.as_str())
    };
    let failed: Vec<String> = with_state(DeliveryState::Failed)
        .map(|d| format!("{}: {}", d.target, d.message.as_deref().unwrap_or_default()))
        .collect();
    if !failed.is_empty() {
        let note = format!(
            "{} notification failed for {} target(s): {}",
            event_name(event),
            failed.len(),
            failed.join("; ")
        );
        publish(
            recorder,
            regarding,
            event,
            EventType::Warning,
            "NotificationFailed",
            note,
        )
        .await;
    }
    let delivered: Vec<&str> = with_state(DeliveryState::Delivered)
        .map(|d| d.target.as_str())
        .collect();
    if !delivered.is_empty() {
        let note = format!(
            "{} notification delivered to target(s) {}",
            event_name(event),
            delivered.join(", ")
        );
        publish(
            recorder,
            regarding,
            event,
            EventType::Normal,
            "NotificationDelivered",
            note,
        )
        .await;
    }
}

async fn publish(
    recorder: &Recorder,
    regarding: &k8s_openapi::api::core::v1::ObjectReference,
    notified: NotificationEvent,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(truncate(&note, 1000)),
        action: format!("Notify{}", event_name(notified)),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, regarding).await {
        tracing::warn!(reason, error = %e, "could not record event");
    }
}

/// The first 12 hex digits of an object's uid, as delivery ids carry it.
pub(crate) fn short_uid(uid: Option<&str>) -> String {
    uid.unwrap_or_default()
        .chars()
        .filter(|c| *c != '-')
        .take(12)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::payload::tests::{sample_rule, sample_task};

    #[test]
    fn delivery_ids_name_the_task_instance_event_and_target() {
        let task = sample_task(vec![]);
        let id = delivery_id(
            &sample_rule(),
            &task,
            NotificationEvent::ScanCompleted,
            "hook",
        );
        assert_eq!(
            id,
            "team-a/team-a-releases/team-a-releases-1/0d2c6f9e1111/ScanCompleted/hook"
        );
        let mut recreated = task.clone();
        recreated.metadata.uid = Some("5f0c1a2b-0000-0000-0000-000000000000".into());
        assert_ne!(
            delivery_id(
                &sample_rule(),
                &recreated,
                NotificationEvent::ScanCompleted,
                "hook"
            ),
            id
        );
    }

    #[test]
    fn finished_tasks_call_for_their_event() {
        let mut task = sample_task(vec![]);
        assert_eq!(
            finished_event(&task),
            Some(NotificationEvent::ScanCompleted)
        );
        task.status.as_mut().unwrap().phase = ScanPhase::Failed;
        assert_eq!(finished_event(&task), Some(NotificationEvent::ScanFailed));
        task.spec.trigger = TaskTrigger::DatabaseUpdate;
        assert_eq!(finished_event(&task), None);
        task.spec.trigger = TaskTrigger::Schedule;
        task.status.as_mut().unwrap().phase = ScanPhase::Running;
        assert_eq!(finished_event(&task), None);
    }

    #[test]
    fn carry_over_keeps_deliveries_and_their_condition() {
        let now = Time("2026-01-01T00:00:00Z".parse().unwrap());
        let delivered = NotificationDelivery {
            target: "hook".into(),
            event: "ScanCompleted".into(),
            state: "Delivered".into(),
            attempts: 1,
            last_transition_time: Some(now.clone()),
            message: None,
        };
        let current = ScanTaskStatus {
            notifications: vec![delivered.clone()],
            conditions: vec![notification_condition(&[delivered], None, now).unwrap()],
            ..Default::default()
        };
        let mut next = ScanTaskStatus {
            phase: ScanPhase::Completed,
            ..Default::default()
        };
        carry_over_notification_status(Some(&current), &mut next);
        assert_eq!(next.notifications, current.notifications);
        assert_eq!(next.conditions, current.conditions);
        assert_eq!(next.phase, ScanPhase::Completed);
    }
}
