//! Running workloads: Pods admitted earlier whose images a policy would deny now (a
//! database update found new vulnerabilities, a policy became stricter, an exception
//! expired). Every [`SWEEP_INTERVAL`] the leader judges each Pod from the same caches and
//! with the same function as admission, and for each newly violating (Pod, policy,
//! image) publishes a `PolicyViolation` Warning event on the Pod's controller (its
//! ReplicaSet, StatefulSet, DaemonSet, Job; the Pod itself when it has none). The
//! gauge `imagewarden_running_pods_denied{policy}` counts the Pods each policy would deny.

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
        }
        // A violation that ended (Pod gone, image rescanned, policy relaxed) may be
        // reported again when it comes back.
        reported.retain(|k| still.contains(k));
    }
}
