//! Verdicts computed ahead of admission: whenever an ImageScanResult is written, or an
//! ImagePolicy or a VulnerabilityException changes, or the database changes (results
//! are re-matched then), each covering policy's verdict is recorded in the result's
//! `status.policies`, and the exceptions of its namespace in `status.excepted`. Also
//! keeps the `Ready` condition of policies and the `Active` condition of exceptions
//! (with an event when one expires). Runs on the leader.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};

use super::server::Caches;
use super::{evaluate, excepted_counts, exception_live, validate, Facts, Subject};
use crate::context::Context;
use crate::crd::{
    ImagePolicy, ImageScanResult, PolicyVerdictEntry, SeverityCounts, VulnerabilityException,
};
use crate::Error;

/// Field manager of the fields this controller writes (so that the scan path's own
/// status writes, under the operator's manager, never remove them).
pub const POLICY_FIELD_MANAGER: &str = "imagewarden-policy";

/// Verdicts are looked at again at least this often.
const RESYNC: Duration = Duration::from_secs(3600);

/// The `policies` and `excepted` a result's status should hold (pure).
pub fn verdict_entries(
    result: &ImageScanResult,
    policies: &[Arc<ImagePolicy>],
    exceptions: &[Arc<VulnerabilityException>],
    now: DateTime<Utc>,
    database_version: Option<&str>,
) -> (Vec<PolicyVerdictEntry>, Option<SeverityCounts>) {
    let exceptions: Vec<&VulnerabilityException> = exceptions.iter().map(Arc::as_ref).collect();
    let image = crate::policy::result_image(result);
    let mut entries: Vec<PolicyVerdictEntry> = policies
        .iter()
        .filter(|p| {
            p.spec.match_.images.is_empty()
                || p.spec
                    .match_
                    .images
                    .iter()
                    .any(|pat| super::pattern_matches(pat, &image))
        })
        .map(|p| {
            let verdict = evaluate(
                &p.spec,
                Subject::Scanned(result),
                &exceptions,
                Facts {
                    now,
                    database_version,
                },
            );
            PolicyVerdictEntry {
                policy: p.name_any(),
                generation: p.metadata.generation.unwrap_or_default(),
                verdict: verdict.outcome.as_str().into(),
                reasons: verdict.reasons,
                valid_until: verdict.valid_until.map(crate::from_chrono),
            }
        })
        .collect();
    entries.sort_by(|a, b| a.policy.cmp(&b.policy));
    let excepted = excepted_counts(result, &exceptions, now);
    (entries, (excepted.total() > 0).then_some(excepted))
}

async fn reconcile_result(
    guard: Arc<DeserializeGuard<ImageScanResult>>,
    data: Arc<(Arc<Context>, Caches)>,
) -> Result<Action, Error> {
    let (ctx, caches) = (&data.0, &data.1);
    let Ok(result) = &guard.0 else {
        return Ok(Action::await_change());
    };
    let namespace = result.namespace().unwrap_or_default();
    let now = Utc::now();
    let exceptions = caches
        .exceptions
        .state_filter(|e| e.metadata.namespace.as_deref() == Some(namespace.as_str()));
    let db = ctx.db();
    let (entries, excepted) = verdict_entries(
        result,
        &caches.policies.state(),
        &exceptions,
        now,
        Some(&db.version),
    );
    let current = result.status.as_ref();
    let unchanged = current.is_some_and(|s| s.excepted == excepted && s.policies == entries);
    if !unchanged && current.is_some() {
        let api: Api<ImageScanResult> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = serde_json::json!({
            "apiVersion": "imagewarden.io/v1alpha1",
            "kind": "ImageScanResult",
            "status": {"policies": entries, "excepted": excepted},
        });
        api.patch_status(
            &result.name_any(),
            &PatchParams::apply(POLICY_FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    }
    let next = entries
        .iter()
        .filter_map(|e| e.valid_until.as_ref().map(crate::to_chrono))
        .min()
        .and_then(|t| (t - now).to_std().ok())
        .map_or(RESYNC, |d| (d + Duration::from_secs(1)).min(RESYNC));
    Ok(Action::requeue(next))
}

async fn reconcile_policy(
    guard: Arc<DeserializeGuard<ImagePolicy>>,
    data: Arc<(Arc<Context>, Caches)>,
) -> Result<Action, Error> {
    let ctx = &data.0;
    let Ok(policy) = &guard.0 else {
        return Ok(Action::await_change());
    };
    let previous = policy
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let generation = policy.metadata.generation;
    let (ok, reason, message) = match validate(&policy.spec) {
        Ok(()) => (
            true,
            "Valid",
            "verdicts are recorded in the ImageScanResults".to_string(),
        ),
        Err(e) => (false, "InvalidSpec", e),
    };
    let condition =
        crate::conditions::condition("Ready", ok, reason, &message, generation, &previous);
    let same = policy
        .status
        .as_ref()
        .is_some_and(|s| s.observed_generation == generation && s.conditions.contains(&condition));
    if !same {
        if !ok {
            publish(
                ctx,
                policy.object_ref(&()),
                EventType::Warning,
                "InvalidSpec",
                &message,
            )
            .await;
        }
        let api: Api<ImagePolicy> = Api::all(ctx.client.clone());
        let patch = serde_json::json!({
            "apiVersion": "imagewarden.io/v1alpha1",
            "kind": "ImagePolicy",
            "status": {"observedGeneration": generation, "conditions": [condition]},
        });
        api.patch_status(
            &policy.name_any(),
            &PatchParams::apply(POLICY_FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    }
    Ok(Action::await_change())
}

async fn reconcile_exception(
    guard: Arc<DeserializeGuard<VulnerabilityException>>,
    data: Arc<(Arc<Context>, Caches)>,
) -> Result<Action, Error> {
    let ctx = &data.0;
    let Ok(exception) = &guard.0 else {
        return Ok(Action::await_change());
    };
    let now = Utc::now();
    let live = exception_live(exception, now);
    let expires = crate::to_chrono(&exception.spec.expires);
    let (reason, message) = if live {
        ("Live", format!("applies until {}", expires.to_rfc3339()))
    } else {
        (
            "Expired",
            format!(
                "expired at {}: its findings count again",
                expires.to_rfc3339()
            ),
        )
    };
    let previous = exception
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let condition = crate::conditions::condition(
        "Active",
        live,
        reason,
        &message,
        exception.metadata.generation,
        &previous,
    );
    if !previous.contains(&condition) {
        if !live {
            publish(
                ctx,
                exception.object_ref(&()),
                EventType::Warning,
                "Expired",
                &message,
            )
            .await;
        }
        let api: Api<VulnerabilityException> = Api::namespaced(
            ctx.client.clone(),
            &exception.namespace().unwrap_or_default(),
        );
        let patch = serde_json::json!({
            "apiVersion": "imagewarden.io/v1alpha1",
            "kind": "VulnerabilityException",
            "status": {"conditions": [condition]},
        });
        api.patch_status(
            &exception.name_any(),
            &PatchParams::apply(POLICY_FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    }
    if !live {
        notify_expired(ctx, &data.1, exception).await?;
    }
    Ok(match (expires - now).to_std() {
        Ok(left) if live => Action::requeue((left + Duration::from_secs(1)).min(RESYNC)),
        _ => Action::await_change(),
    })
}

/// The rules whose results of the exception's namespace it covered (it accepted one of
/// their findings just before it expired).
pub fn rules_covered(
    caches: &Caches,
    exception: &VulnerabilityException,
) -> Vec<Arc<crate::crd::ScanRule>> {
    let namespace = exception.namespace().unwrap_or_default();
    let before = crate::to_chrono(&exception.spec.expires) - chrono::Duration::seconds(1);
    let mut rules: Vec<Arc<crate::crd::ScanRule>> = caches
        .results
        .state_filter(|r| r.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .iter()
        .filter(|r| excepted_counts(r, &[exception], before).total() > 0)
        .flat_map(|r| caches.rules_of(r))
        .collect();
    rules.sort_by_key(|r| r.name_any());
    rules.dedup_by_key(|r| r.name_any());
    rules
}

/// `ExceptionExpired` to the targets of the rules the exception covered.
async fn notify_expired(
    ctx: &Context,
    caches: &Caches,
    exception: &VulnerabilityException,
) -> Result<(), Error> {
    let rules = rules_covered(caches, exception);
    if rules.is_empty() {
        return Ok(());
    }
    let opts = crate::notify::NotifyOptions {
        egress: ctx.config.egress.policy(),
        task_locks: ctx.notify_locks.clone(),
        metrics: Some(ctx.metrics.clone()),
        ..Default::default()
    };
    crate::notify::policy::notify_expired(&ctx.client, &ctx.recorder, exception, &rules, &opts)
        .await?;
    Ok(())
}

async fn publish(
    ctx: &Context,
    reference: ObjectReference,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1024).collect()),
        action: "Evaluate".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        tracing::warn!(error = %e, "publishing event");
    }
}

fn error_policy<K>(_obj: Arc<K>, error: &Error, data: Arc<(Arc<Context>, Caches)>) -> Action {
    tracing::warn!(%error, "policy verdicts: reconcile failed");
    data.0.metrics.error("policy", error.metric_label());
    Action::requeue(Duration::from_secs(5))
}

/// Sends a unit on `trigger` whenever an object of `api` changes its spec or is deleted,
/// once `cache` (what verdicts are computed from) shows the change.
async fn trigger_on_changes<K>(
    api: Api<K>,
    cache: kube::runtime::reflector::Store<K>,
    trigger: futures::channel::mpsc::Sender<()>,
) where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    use std::collections::HashMap;
    let mut seen: HashMap<String, Option<i64>> = HashMap::new();
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    while let Some(event) = events.next().await {
        let (obj, deleted) = match event {
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => (obj, false),
            Ok(watcher::Event::Delete(obj)) => (obj, true),
            _ => continue,
        };
        let uid = obj.meta().uid.clone().unwrap_or_default();
        let generation = obj.meta().generation;
        if !deleted && seen.get(&uid) == Some(&generation) {
            continue; // a status write
        }
        if deleted {
            seen.remove(&uid);
        } else {
            seen.insert(uid, generation);
        }
        let key = ObjectRef::from_obj(&obj);
        for _ in 0..50 {
            let cached = cache.get(&key);
            let caught_up = match (&cached, deleted) {
                (None, true) => true,
                (Some(c), false) => c.meta().generation >= generation,
                _ => false,
            };
            if caught_up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut trigger = trigger.clone();
        let _ = futures::SinkExt::send(&mut trigger, ()).await;
    }
}

/// Runs the verdict, policy and exception controllers until the process stops.
pub async fn run(ctx: Arc<Context>, caches: Caches) {
    if caches.ready().await.is_err() {
        tracing::error!("policy caches stopped: no verdicts are recorded");
        return;
    }
    let client = ctx.client.clone();
    let data = Arc::new((ctx.clone(), caches.clone()));
    let (trigger, triggers) = futures::channel::mpsc::channel(16);
    tokio::spawn(trigger_on_changes(
        Api::<ImagePolicy>::all(client.clone()),
        caches.policies.clone(),
        trigger.clone(),
    ));
    tokio::spawn(trigger_on_changes(
        Api::<VulnerabilityException>::all(client.clone()),
        caches.exceptions.clone(),
        trigger,
    ));
    let results = Controller::new(
        Api::<DeserializeGuard<ImageScanResult>>::all(client.clone()),
        watcher::Config::default(),
    )
    .reconcile_all_on(triggers)
    .shutdown_on_signal()
    .run(reconcile_result, error_policy, data.clone())
    .for_each(|_| async {});
    let policies = Controller::new(
        Api::<DeserializeGuard<ImagePolicy>>::all(client.clone()),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(reconcile_policy, error_policy, data.clone())
    .for_each(|_| async {});
    let exceptions = Controller::new(
        Api::<DeserializeGuard<VulnerabilityException>>::all(client.clone()),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(reconcile_exception, error_policy, data.clone())
    .for_each(|_| async {});
    futures::join!(results, policies, exceptions);
}
