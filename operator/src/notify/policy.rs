//! Policy events sent to the targets of ScanRules: `ExceptionExpired` (a
//! VulnerabilityException that covered findings of the rule's images expired; sent once
//! per expiry, recorded in the exception's status) and `PolicyViolation` (running Pods
//! whose images, scanned under the rule, a policy now denies; one notification per sweep
//! and target). The body is [`PolicyEventPayload`]; delivery, retries, signatures and
//! DingTalk are those of scan notifications.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::Recorder;
use kube::{Client, Resource, ResourceExt};

use super::delivery::{self, Secrets};
use super::payload::{policy_event_payload, ObjectName, PolicyEventItem, PolicyEventPayload};
use super::plan::{event_name, DeliveryState};
use super::redact::truncate;
use super::NotifyOptions;
use crate::crd::{
    NotificationDelivery, NotificationEvent, NotificationTarget, ScanRule, VulnerabilityException,
};

/// Field manager of the exception's notification status (the verdict controller's
/// condition writes use their own, so neither removes the other's fields).
pub const NOTIFY_FIELD_MANAGER: &str = "imagewarden-policy-notify";
/// Deliveries recorded per exception (rules × targets); more targets are not notified.
pub const MAX_EXCEPTION_DELIVERIES: usize = 64;

/// The targets of `rule` that `event` selects (`events` empty: all). Policy events have
/// no severity of their own, so `minSeverity` does not filter them.
pub fn selected(rule: &ScanRule, event: NotificationEvent) -> Vec<&NotificationTarget> {
    rule.spec
        .notifications
        .iter()
        .filter(|t| t.events.is_empty() || t.events.contains(&event))
        .collect()
}

/// Name of a delivery of a policy event in status and messages: `<rule>/<target>`.
pub fn delivery_target(rule: &ScanRule, target: &NotificationTarget) -> String {
    format!("{}/{}", rule.name_any(), target.name)
}

fn rule_name(rule: &ScanRule) -> ObjectName {
    ObjectName {
        namespace: rule.namespace().unwrap_or_default(),
        name: rule.name_any(),
    }
}

fn entry(
    target: String,
    event: NotificationEvent,
    state: DeliveryState,
    attempts: u32,
    message: Option<String>,
) -> NotificationDelivery {
    NotificationDelivery {
        target,
        event: event_name(event).to_string(),
        state: state.as_str().to_string(),
        attempts,
        last_transition_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        message,
    }
}

/// Sends `payload` to `targets` of `rule` (the key of each delivery is `key/<target>`);
/// one entry per target in its final state, named `<rule>/<target>`.
pub async fn send(
    client: &Client,
    rule: &ScanRule,
    targets: &[(&NotificationTarget, u32)],
    payload: &PolicyEventPayload,
    key: &str,
    opts: &NotifyOptions,
) -> Vec<NotificationDelivery> {
    let secrets = Secrets::new(client, &rule.namespace().unwrap_or_default());
    let event = payload.event;
    let sends = targets.iter().map(|(target, previous)| {
        let secrets = &secrets;
        async move {
            let name = delivery_target(rule, target);
            let resolved = match delivery::resolve(secrets, target, opts).await {
                Ok(r) => r,
                Err(message) => {
                    opts.count(target.target_type, event, "misconfigured");
                    return entry(
                        name,
                        event,
                        DeliveryState::Failed,
                        *previous,
                        Some(format!("target misconfigured: {message}")),
                    )
                }
            };
            let mut payload = payload.clone();
            payload.delivery_id = format!("{key}/{}", target.name);
            let outcome = resolved.deliver(&payload, &opts.retry).await;
            opts.count(resolved.kind, event, outcome.label());
            tracing::info!(target_name = %name, event = event_name(event), delivered = outcome.delivered, attempts = outcome.attempts, message = %outcome.message, "notification");
            entry(
                name,
                event,
                if outcome.delivered {
                    DeliveryState::Delivered
                } else {
                    DeliveryState::Failed
                },
                previous + outcome.attempts,
                Some(truncate(&outcome.message, 1000)),
            )
        }
    });
    futures::future::join_all(sends).await
}

/// Events on `regarding` for the outcomes: one Warning naming the failed targets, one
/// Normal naming the delivered ones.
pub async fn publish_outcomes(
    recorder: &Recorder,
    regarding: &k8s_openapi::api::core::v1::ObjectReference,
    event: NotificationEvent,
    deliveries: &[NotificationDelivery],
) {
    let report = super::NotifyReport {
        deliveries: deliveries.to_vec(),
    };
    super::publish_outcomes(recorder, regarding, event, &report).await;
}

/// `PolicyViolation`: `items` to the targets of `rule`, one notification per target;
/// failures become a Warning event on the rule.
pub async fn notify_violations(
    client: &Client,
    recorder: &Recorder,
    rule: &ScanRule,
    items: Vec<PolicyEventItem>,
    opts: &NotifyOptions,
) -> Vec<NotificationDelivery> {
    let targets: Vec<(&NotificationTarget, u32)> =
        selected(rule, NotificationEvent::PolicyViolation)
            .into_iter()
            .map(|t| (t, 0))
            .collect();
    if targets.is_empty() || items.is_empty() {
        return Vec::new();
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // The key names the violations: a receiver drops a repeat of the same batch.
    let digest = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for i in &items {
            h.update(i.object.namespace.as_bytes());
            h.update(b"/");
            h.update(i.object.name.as_bytes());
            h.update(b"|");
            h.update(i.policy.as_deref().unwrap_or_default().as_bytes());
            h.update(b"|");
            h.update(i.image.as_deref().unwrap_or_default().as_bytes());
            h.update(b"\n");
        }
        hex::encode(&h.finalize()[..8])
    };
    let key = format!(
        "{}/{}/PolicyViolation/{digest}",
        rule.namespace().unwrap_or_default(),
        rule.name_any()
    );
    let payload = policy_event_payload(
        &rule_name(rule),
        NotificationEvent::PolicyViolation,
        items,
        &now,
    );
    let deliveries = send(client, rule, &targets, &payload, &key, opts).await;
    publish_outcomes(
        recorder,
        &rule.object_ref(&()),
        NotificationEvent::PolicyViolation,
        &deliveries,
    )
    .await;
    deliveries
}

/// The item of an expired exception: its expiry, what it covered, its reason (bounded).
pub fn expired_item(exception: &VulnerabilityException) -> PolicyEventItem {
    let expires = crate::to_chrono(&exception.spec.expires);
    let when = expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let ids: Vec<&str> = exception
        .spec
        .ids
        .iter()
        .take(10)
        .map(|e| e.id.as_str())
        .collect();
    let more = exception.spec.ids.len().saturating_sub(ids.len());
    let mut covered = format!("covered {}", ids.join(", "));
    if more > 0 {
        covered.push_str(&format!(" and {more} more"));
    }
    PolicyEventItem {
        kind: NotificationEvent::ExceptionExpired,
        object: super::payload::PolicyObject {
            kind: "VulnerabilityException".into(),
            namespace: exception.namespace().unwrap_or_default(),
            name: exception.name_any(),
            owner: None,
        },
        policy: None,
        image: None,
        reasons: vec![
            format!("expired at {when}: its findings count again"),
            covered,
            format!("reason was: {}", exception.spec.reason),
        ],
        when,
    }
}

/// What notifying an expired exception calls for: per (rule, target) not yet notified
/// of this expiry (or `Pending` from an interrupted send), the attempts made so far.
pub fn plan_expired<'a>(
    recorded: &[NotificationDelivery],
    rules: &'a [std::sync::Arc<ScanRule>],
) -> Vec<(&'a ScanRule, &'a NotificationTarget, u32)> {
    let mut out = Vec::new();
    for rule in rules {
        for target in selected(rule, NotificationEvent::ExceptionExpired) {
            let name = delivery_target(rule, target);
            match recorded.iter().find(|d| d.target == name) {
                Some(d) if d.state == DeliveryState::Pending.as_str() => {
                    out.push((rule.as_ref(), target, d.attempts))
                }
                Some(_) => {}
                None => out.push((rule.as_ref(), target, 0)),
            }
        }
    }
    // Bounded: the status keeps at most this many entries.
    let room = MAX_EXCEPTION_DELIVERIES.saturating_sub(
        recorded
            .iter()
            .filter(|d| d.state != DeliveryState::Pending.as_str())
            .count(),
    );
    out.truncate(room);
    out
}

async fn write_status(
    api: &Api<VulnerabilityException>,
    current: &VulnerabilityException,
    notifications: &[NotificationDelivery],
) -> Result<VulnerabilityException, kube::Error> {
    let patch = serde_json::json!({
        "apiVersion": "imagewarden.io/v1alpha1",
        "kind": "VulnerabilityException",
        "metadata": {"name": current.name_any(), "resourceVersion": current.resource_version()},
        "status": {
            "notifiedExpiry": current.spec.expires,
            "notifications": notifications,
        },
    });
    api.patch_status(
        &current.name_any(),
        &PatchParams::apply(NOTIFY_FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
}

fn merged(
    recorded: &[NotificationDelivery],
    entries: &[NotificationDelivery],
) -> Vec<NotificationDelivery> {
    let mut out = recorded.to_vec();
    for e in entries {
        super::plan::upsert(&mut out, e.clone());
    }
    out.truncate(MAX_EXCEPTION_DELIVERIES);
    out
}

/// `ExceptionExpired` for `exception` to the targets of `rules` (the rules whose results
/// it covered), once per expiry: intent (`Pending`) is written to the exception's status
/// before sending, the outcome after, both guarded by resourceVersion. An interrupted
/// send is repeated with the same key. Errors only when the API server could not be
/// read or written.
pub async fn notify_expired(
    client: &Client,
    recorder: &Recorder,
    exception: &VulnerabilityException,
    rules: &[std::sync::Arc<ScanRule>],
    opts: &NotifyOptions,
) -> Result<Vec<NotificationDelivery>, kube::Error> {
    let namespace = exception.namespace().unwrap_or_default();
    let api: Api<VulnerabilityException> = Api::namespaced(client.clone(), &namespace);
    let Some(current) = api.get_opt(&exception.name_any()).await? else {
        return Ok(Vec::new());
    };
    if crate::policy::exception_live(&current, chrono::Utc::now()) {
        return Ok(Vec::new());
    }
    let status = current.status.clone().unwrap_or_default();
    let recorded = if status.notified_expiry.as_ref() == Some(&current.spec.expires) {
        status.notifications.clone()
    } else {
        Vec::new()
    };
    let planned = plan_expired(&recorded, rules);
    if planned.is_empty() {
        return Ok(Vec::new());
    }
    let intents: Vec<NotificationDelivery> = planned
        .iter()
        .map(|(rule, target, attempts)| {
            entry(
                delivery_target(rule, target),
                NotificationEvent::ExceptionExpired,
                DeliveryState::Pending,
                *attempts,
                None,
            )
        })
        .collect();
    let intents = merged(&recorded, &intents);
    // A conflict means another write came first: the next reconcile plans again.
    let current = match write_status(&api, &current, &intents).await {
        Ok(c) => c,
        Err(kube::Error::Api(e)) if e.code == 409 => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let uid = super::short_uid(current.metadata.uid.as_deref());
    let expires = crate::to_chrono(&current.spec.expires).timestamp();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut finals = Vec::new();
    for rule in rules {
        let targets: Vec<(&NotificationTarget, u32)> = planned
            .iter()
            .filter(|(r, _, _)| std::ptr::eq(*r, rule.as_ref()))
            .map(|(_, t, a)| (*t, *a))
            .collect();
        if targets.is_empty() {
            continue;
        }
        let key = format!(
            "{namespace}/{}/{uid}/ExceptionExpired/{expires}/{}",
            current.name_any(),
            rule.name_any()
        );
        let payload = policy_event_payload(
            &rule_name(rule),
            NotificationEvent::ExceptionExpired,
            vec![expired_item(&current)],
            &now,
        );
        finals.extend(send(client, rule, &targets, &payload, &key, opts).await);
    }
    let mut latest = current;
    for _ in 0..5 {
        let status = latest.status.clone().unwrap_or_default();
        match write_status(&api, &latest, &merged(&status.notifications, &finals)).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 => {
                latest = api.get(&latest.name_any()).await?;
            }
            Err(e) => return Err(e),
        }
    }
    publish_outcomes(
        recorder,
        &latest.object_ref(&()),
        NotificationEvent::ExceptionExpired,
        &finals,
    )
    .await;
    Ok(finals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::payload::tests::sample_rule;

    fn delivered(target: &str, state: DeliveryState) -> NotificationDelivery {
        entry(
            target.into(),
            NotificationEvent::ExceptionExpired,
            state,
            1,
            None,
        )
    }

    #[test]
    fn an_expiry_is_sent_once_per_target_and_pending_sends_are_repeated() {
        let mut rule = sample_rule();
        let first: NotificationTarget = serde_json::from_value(serde_json::json!({
            "name": "hook", "type": "HTTP", "url": "http://127.0.0.1:1/hook",
        }))
        .unwrap();
        let mut second = first.clone();
        second.name = "second".into();
        let mut scans_only = first.clone();
        scans_only.name = "scans-only".into();
        scans_only.events = vec![NotificationEvent::ScanCompleted];
        rule.spec.notifications = vec![first.clone(), second, scans_only];
        let rules = vec![std::sync::Arc::new(rule)];
        let names = |p: Vec<(&ScanRule, &NotificationTarget, u32)>| {
            p.into_iter()
                .map(|(r, t, a)| (delivery_target(r, t), a))
                .collect::<Vec<_>>()
        };
        let r = rules[0].name_any();
        assert_eq!(
            names(plan_expired(&[], &rules)),
            vec![
                (format!("{r}/{}", first.name), 0),
                (format!("{r}/second"), 0)
            ]
        );
        let recorded = vec![
            delivered(&format!("{r}/{}", first.name), DeliveryState::Delivered),
            delivered(&format!("{r}/second"), DeliveryState::Pending),
        ];
        assert_eq!(
            names(plan_expired(&recorded, &rules)),
            vec![(format!("{r}/second"), 1)]
        );
    }

    #[test]
    fn policy_payloads_are_bounded_and_keep_the_scan_payload_version() {
        let item = PolicyEventItem {
            kind: NotificationEvent::PolicyViolation,
            object: super::super::payload::PolicyObject {
                kind: "Pod".into(),
                namespace: "team-a".into(),
                name: "web".into(),
                owner: None,
            },
            policy: Some("no-critical".into()),
            image: Some(format!("registry.example.com/{}", "a".repeat(5000))),
            reasons: (0..20).map(|i| format!("reason {i}")).collect(),
            when: "2026-01-01T00:00:00Z".into(),
        };
        let payload = policy_event_payload(
            &ObjectName {
                namespace: "team-a".into(),
                name: "rule".into(),
            },
            NotificationEvent::PolicyViolation,
            vec![item; 60],
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(
            payload.api_version,
            super::super::payload::PAYLOAD_API_VERSION
        );
        assert_eq!(payload.items.len(), super::super::payload::MAX_POLICY_ITEMS);
        assert_eq!(payload.omitted, 10);
        assert!(payload.items[0].image.as_ref().unwrap().len() <= 512);
        assert_eq!(payload.items[0].reasons.len(), 5);
        let json = serde_json::to_value(&payload).unwrap();
        assert_eq!(json["event"], "PolicyViolation");
        assert_eq!(json["items"][0]["kind"], "PolicyViolation");
        assert_eq!(json["items"][0]["object"]["name"], "web");
    }
}
