//! Running workloads: Pods admitted earlier whose images a policy would deny now (a
//! database update found new vulnerabilities, a policy became stricter, an exception
//! expired). Every [`SWEEP_INTERVAL`] the leader judges each Pod from the same caches and
//! with the same function as admission, and for each newly violating (Pod, policy,
//! image) publishes a `PolicyViolation` Warning event on the Pod's controller (its
//! ReplicaSet, StatefulSet, DaemonSet, Job; the Pod itself when it has none), and sends
//! a `PolicyViolation` notification to the targets of the ScanRule that produced the
//! image's result: one per sweep and target, listing that sweep's new violations. A
//! violation is not reported again while it persists. The gauge
//! `imagewarden_running_pods_denied{policy}` counts the Pods each policy would deny.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::Api;
use kube::runtime::events::{Event, EventType};
use kube::ResourceExt;

use super::admission::{judge, AdmissionSettings};
use super::server::{watch, Caches};
use super::Action;
use crate::context::Context;
use crate::notify::payload::{PolicyEventItem, PolicyObject};

/// How often running Pods are judged again.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// One violation reported once: Pod uid, policy, image.
type Reported = (String, String, String);

/// What a sweep found: violations (pod, policy, image, reasons) and Pods denied per policy.
#[derive(Debug, Default)]
pub struct Sweep {
    pub violations: Vec<(Arc<Pod>, String, String, Vec<String>)>,
    pub denied_pods: BTreeMap<String, i64>,
}

/// Judges running Pods (pure but for the caches it reads).
pub fn sweep(
    pods: &[Arc<Pod>],
    caches: &Caches,
    settings: &AdmissionSettings,
    now: chrono::DateTime<chrono::Utc>,
) -> Sweep {
    let mut out = Sweep::default();
    for pod in pods {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let namespace = pod.namespace().unwrap_or_default();
        let Ok(value) = serde_json::to_value(pod.as_ref()) else {
            continue;
        };
        let decision = judge("Pod", &namespace, &value, None, caches, settings, now);
        let mut policies = HashSet::new();
        for j in decision
            .judgements
            .into_iter()
            .filter(|j| j.action == Action::Deny)
        {
            if policies.insert(j.policy.clone()) {
                *out.denied_pods.entry(j.policy.clone()).or_default() += 1;
            }
            out.violations
                .push((pod.clone(), j.policy, j.image, j.reasons));
        }
    }
    out
}

/// Where the event about a Pod goes: its controller, else the Pod.
pub fn owner_reference(pod: &Pod) -> ObjectReference {
    let namespace = pod.namespace();
    match pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
    {
        Some(o) => ObjectReference {
            api_version: Some(o.api_version.clone()),
            kind: Some(o.kind.clone()),
            name: Some(o.name.clone()),
            uid: Some(o.uid.clone()),
            namespace,
            ..Default::default()
        },
        None => ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            namespace,
            ..Default::default()
        },
    }
}

/// Watches Pods (their metadata, containers and phase) and reports violations, until the
/// process stops. Runs on the leader.
pub async fn run(ctx: Arc<Context>, caches: Caches, settings: AdmissionSettings) {
    let pods = watch(Api::<Pod>::all(ctx.client.clone()), |p: &mut Pod| {
        p.metadata.managed_fields = None;
        p.metadata.annotations = None;
        if let Some(s) = p.status.as_mut() {
            *s = k8s_openapi::api::core::v1::PodStatus {
                phase: s.phase.take(),
                ..Default::default()
            };
        }
    });
    if pods.wait_until_ready().await.is_err() || caches.ready().await.is_err() {
        tracing::error!("pod cache stopped: running workloads are not judged");
        return;
    }
    let mut reported: HashSet<Reported> = HashSet::new();
    let mut ticker = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        ticker.tick().await;
        let found = sweep(&pods.state(), &caches, &settings, chrono::Utc::now());
        ctx.metrics.running_pods_denied(&found.denied_pods);
        let mut still: HashSet<Reported> = HashSet::new();
        let mut new_violations = Vec::new();
        for (pod, policy, image, reasons) in found.violations {
            let key = (pod.uid().unwrap_or_default(), policy.clone(), image.clone());
            still.insert(key.clone());
            if reported.contains(&key) {
                continue;
            }
            let note = format!(
                "Pod {}/{} runs image {image}, which ImagePolicy {policy} now denies: {}",
                pod.namespace().unwrap_or_default(),
                pod.name_any(),
                reasons
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            let event = Event {
                type_: EventType::Warning,
                reason: "PolicyViolation".into(),
                note: Some(note.chars().take(1024).collect()),
                action: "Evaluate".into(),
                secondary: None,
            };
            if let Err(e) = ctx.recorder.publish(&event, &owner_reference(&pod)).await {
                tracing::warn!(error = %e, "publishing a PolicyViolation event");
                continue; // reported again on the next sweep
            }
            reported.insert(key);
            new_violations.push((pod, policy, image, reasons));
        }
        notify_new(&ctx, &caches, new_violations);
        // A violation that ended (Pod gone, image rescanned, policy relaxed) may be
        // reported again when it comes back.
        reported.retain(|k| still.contains(k));
    }
}

/// The new violations of a sweep, grouped by the ScanRule that produced the image's
/// result (rules without `PolicyViolation` targets left out). Pure but for the caches.
pub fn violations_by_rule(
    violations: &[(Arc<Pod>, String, String, Vec<String>)],
    caches: &Caches,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<(Arc<crate::crd::ScanRule>, Vec<PolicyEventItem>)> {
    let when = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut by_rule: BTreeMap<(String, String), (Arc<crate::crd::ScanRule>, Vec<PolicyEventItem>)> =
        BTreeMap::new();
    for (pod, policy, image, reasons) in violations {
        let namespace = pod.namespace().unwrap_or_default();
        let Ok(reference) = super::image::ImageReference::parse(image) else {
            continue;
        };
        let Some(result) = super::admission::Lookup::result(caches, &reference, &namespace) else {
            continue;
        };
        let owner = owner_reference(pod);
        let owner = (owner.kind.as_deref() != Some("Pod")).then(|| {
            format!(
                "{}/{}",
                owner.kind.unwrap_or_default(),
                owner.name.unwrap_or_default()
            )
        });
        for rule in caches.rules_of(&result) {
            if crate::notify::policy::selected(
                &rule,
                crate::crd::NotificationEvent::PolicyViolation,
            )
            .is_empty()
            {
                continue;
            }
            let key = (rule.namespace().unwrap_or_default(), rule.name_any());
            let items = &mut by_rule
                .entry(key)
                .or_insert_with(|| (rule.clone(), Vec::new()))
                .1;
            items.push(PolicyEventItem {
                kind: crate::crd::NotificationEvent::PolicyViolation,
                object: PolicyObject {
                    kind: "Pod".into(),
                    namespace: namespace.clone(),
                    name: pod.name_any(),
                    owner: owner.clone(),
                },
                policy: Some(policy.clone()),
                image: Some(image.clone()),
                reasons: reasons.clone(),
                when: when.clone(),
            });
        }
    }
    by_rule.into_values().collect()
}

/// Sends one `PolicyViolation` notification per rule and target for the sweep's new
/// violations, in the background (the sweep does not wait on receivers).
fn notify_new(
    ctx: &Arc<Context>,
    caches: &Caches,
    violations: Vec<(Arc<Pod>, String, String, Vec<String>)>,
) {
    if violations.is_empty() {
        return;
    }
    let batches = violations_by_rule(&violations, caches, chrono::Utc::now());
    if batches.is_empty() {
        return;
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let opts = crate::notify::NotifyOptions {
            egress: ctx.config.egress.policy(),
            task_locks: ctx.notify_locks.clone(),
            metrics: Some(ctx.metrics.clone()),
            ..Default::default()
        };
        for (rule, items) in batches {
            crate::notify::policy::notify_violations(
                &ctx.client,
                &ctx.recorder,
                &rule,
                items,
                &opts,
            )
            .await;
        }
    });
}
