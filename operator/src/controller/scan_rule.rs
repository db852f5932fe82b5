//! The ScanRule controller: validates rules, and starts ScanTasks for the manual
//! `imagewarden.io/scan-now` annotation and for the rule's cron schedule.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use sha2::Digest;
use tracing::info;

use crate::context::{Context, FIELD_MANAGER};
use crate::crd::{
    RegistrySpec, RuleRef, ScanRule, ScanRuleSpec, ScanTask, ScanTaskSpec, TaskTrigger,
};
use crate::registry::RegistryAccess;
use crate::Error;
use imagewarden_scanner::egress::EgressPolicy;

/// Annotation whose every new value starts a manual scan of the rule.
pub const SCAN_NOW_ANNOTATION: &str = "imagewarden.io/scan-now";

/// Checks a rule's spec; the error says what to fix (pure).
pub fn validate(spec: &ScanRuleSpec) -> Result<(), String> {
    if spec.registry.url.trim().is_empty() {
        return Err("spec.registry.url is empty".into());
    }
    if spec.scope.name.trim().is_empty()
        || spec.scope.name.starts_with('/')
        || spec.scope.name.ends_with('/')
    {
        return Err(format!(
            "spec.scope.name {:?} is not a registry namespace or repository",
            spec.scope.name
        ));
    }
    regex::Regex::new(&spec.tag_filter)
        .map_err(|e| format!("spec.tagFilter is not a valid regular expression: {e}"))?;
    if let Some(s) = &spec.triggers.schedule {
        parse_schedule(s)?;
    }
    if let Some(r) = &spec.result_retention {
        crate::lifecycle::deleted::parse_retention(r)?;
    }
    if let Some(fix) = &spec.fix {
        // Hosts are checked against the egress policy on each ImageFix.
        super::image_fix::validate_settings(
            ("spec.fix.tagSuffix", "spec.fix.sources"),
            &fix.tag_suffix,
            &fix.sources,
            &EgressPolicy::unrestricted(),
        )?;
        if let Some(r) = &fix.keyring_secret_ref {
            super::image_fix::check_name("spec.fix.keyringSecretRef.name", &r.name)?;
        }
    }
    let mut names = std::collections::HashSet::new();
    for n in &spec.notifications {
        if !names.insert(n.name.as_str()) {
            return Err(format!(
                "spec.notifications: name {:?} is used twice",
                n.name
            ));
        }
        if n.url.is_none() && n.url_secret_ref.is_none() {
            return Err(format!(
                "spec.notifications[{}]: set url or urlSecretRef",
                n.name
            ));
        }
    }
    Ok(())
}

/// Parses a 5-field cron expression (UTC).
pub fn parse_schedule(s: &str) -> Result<Cron, String> {
    Cron::from_str(s)
        .map_err(|e| format!("spec.triggers.schedule {s:?} is not a valid cron expression: {e}"))
}

/// When the schedule should have fired last, at or before `now`, if after `since` (pure).
/// Missed firings while the operator was down collapse into one, as CronJob does.
pub fn due_firing(cron: &Cron, since: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut last = None;
    let mut t = since;
    // Bounded walk: a minute-granular schedule over a long outage stops after this many.
    for _ in 0..10_000 {
        match cron.find_next_occurrence(&t, false) {
            Ok(next) if next <= now => {
                last = Some(next);
                t = next;
            }
            _ => break,
        }
    }
    last
}

fn ready_condition(ok: bool, reason: &str, message: &str, rule: &ScanRule) -> Condition {
    let previous = rule.status.as_ref().map(|s| s.conditions.as_slice());
    crate::conditions::condition(
        "Ready",
        ok,
        reason,
        message,
        rule.metadata.generation,
        previous.unwrap_or_default(),
    )
}

async fn publish(ctx: &Context, rule: &ScanRule, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    let _ = ctx.recorder.publish(&event, &rule.object_ref(&())).await;
}

/// Creates a ScanTask for `rule` (idempotent: the name is derived from what started it).
pub async fn start_task(
    ctx: &Context,
    rule: &ScanRule,
    name: &str,
    trigger: TaskTrigger,
    images: Vec<String>,
) -> Result<String, Error> {
    // Every trigger (manual, schedule, push, database update) starts tasks here: a rule
    // whose spec is refused starts none.
    validate(&rule.spec).map_err(|message| Error::InvalidSpec {
        field: "ScanRule",
        message,
    })?;
    let ns = rule.namespace().unwrap_or_default();
    let mut task = ScanTask::new(
        name,
        ScanTaskSpec {
            rule_ref: Some(RuleRef {
                name: rule.name_any(),
            }),
            images,
            trigger,
        },
    );
    task.metadata.owner_references = rule.controller_owner_ref(&()).map(|o| vec![o]);
    task.metadata.labels = Some(std::collections::BTreeMap::from([
        ("imagewarden.io/rule".to_string(), rule.name_any()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "imagewarden".to_string(),
        ),
    ]));
    let api: Api<ScanTask> = Api::namespaced(ctx.client.clone(), &ns);
    match api.create(&PostParams::default(), &task).await {
        Ok(_) => {
            info!(rule = %rule.name_any(), task = name, ?trigger, "task created");
            publish(
                ctx,
                rule,
                EventType::Normal,
                "TaskCreated",
                format!("{trigger:?} scan task {name} created"),
            )
            .await;
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(name.to_string())
}

/// A task name `<rule>-<kind>-<suffix>` within the 63 characters labels allow.
pub fn task_name(rule: &str, kind: &str, suffix: &str) -> String {
    let keep = 63 - kind.len() - suffix.len() - 2;
    let rule: String = rule.chars().take(keep).collect();
    format!("{}-{kind}-{suffix}", rule.trim_end_matches('-'))
}

/// The first 5 bytes of the SHA-256 of `s`, in hex: the suffix of task names.
pub fn short_hash(s: &str) -> String {
    hex::encode(&sha2::Sha256::digest(s.as_bytes())[..5])
}

/// Why the operator will not contact the rule's registry: its address, or every address
/// its name resolves to, is denied by the egress policy. A name that does not resolve is
/// left to the scans to report (DNS trouble may pass).
async fn registry_denied(spec: &RegistrySpec, policy: &EgressPolicy) -> Option<String> {
    let access = RegistryAccess::new(&spec.url, spec.insecure).ok()?;
    let url = access.base_url();
    let refused = |message: String| {
        format!(
            "spec.registry.url: the operator does not contact {}: {message}",
            access.host
        )
    };
    if let Err(denial) = policy.check_url(&url) {
        return Some(refused(denial.message));
    }
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let port = url.port_or_known_default()?;
    let addresses = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((host, port)),
    )
    .await
    .ok()?
    .ok()?;
    let mut first = None;
    for address in addresses {
        match policy.check_ip(host, address.ip()) {
            Ok(()) => return None,
            Err(denial) => {
                first.get_or_insert(denial.message);
            }
        }
    }
    first.map(refused)
}

/// Reconciles one ScanRule.
pub async fn reconcile(rule: Arc<ScanRule>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconcile("scanrule");
    let ns = rule.namespace().unwrap_or_default();
    let old = rule.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = rule.metadata.generation;
    let mut requeue = Duration::from_secs(300);

    let verdict = match validate(&rule.spec) {
        Err(message) => Err(("InvalidSpec", message)),
        Ok(()) => match registry_denied(&rule.spec.registry, &ctx.config.egress.policy()).await {
            Some(message) => Err(("EgressDenied", message)),
            None => Ok(()),
        },
    };
    match verdict {
        Err((reason, message)) => {
            status.conditions = vec![ready_condition(false, reason, &message, &rule)];
            if status != old {
                publish(&ctx, &rule, EventType::Warning, reason, message).await;
            }
        }
        Ok(()) => {
            // The registry's answer informs; tasks still start and report their own errors.
            let ready = match crate::probe::registry_ready(
                &ctx.registry_probes,
                &ctx.client,
                ctx.config.egress.policy(),
                &rule,
            )
            .await
            {
                Ok(message) => ready_condition(true, "RegistryReachable", &message, &rule),
                Err((reason, message)) => {
                    let condition = ready_condition(false, reason, &message, &rule);
                    if !old.conditions.contains(&condition) {
                        publish(&ctx, &rule, EventType::Warning, reason, message).await;
                    }
                    condition
                }
            };
            status.conditions = vec![ready];
            // Manual trigger.
            if let Some(value) = rule.annotations().get(SCAN_NOW_ANNOTATION) {
                if old.last_scan_now.as_deref() != Some(value.as_str()) {
                    let name = task_name(
                        &rule.name_any(),
                        "manual",
                        &short_hash(&format!("{}/{value}", rule.uid().unwrap_or_default())),
                    );
                    status.last_task =
                        Some(start_task(&ctx, &rule, &name, TaskTrigger::Manual, vec![]).await?);
                    status.last_scan_now = Some(value.clone());
                }
            }
            // Schedule.
            if let Some(expr) = &rule.spec.triggers.schedule {
                let cron = parse_schedule(expr).map_err(|message| Error::InvalidSpec {
                    field: "spec.triggers.schedule",
                    message,
                })?;
                let now = Utc::now();
                let since = old
                    .last_schedule_time
                    .as_ref()
                    .map(crate::to_chrono)
                    .or_else(|| {
                        rule.metadata
                            .creation_timestamp
                            .as_ref()
                            .map(crate::to_chrono)
                    })
                    .unwrap_or(now);
                if let Some(fired) = due_firing(&cron, since, now) {
                    let name = task_name(&rule.name_any(), "sched", &fired.timestamp().to_string());
                    status.last_task =
                        Some(start_task(&ctx, &rule, &name, TaskTrigger::Schedule, vec![]).await?);
                    status.last_schedule_time = Some(crate::from_chrono(fired));
                }
                if let Ok(next) = cron.find_next_occurrence(&now, false) {
                    let wait =
                        (next - now).to_std().unwrap_or_default() + Duration::from_millis(500);
                    requeue = requeue.min(wait);
                }
            }
            // The last task's image count is what the rule matched.
            if let Some(last) = &status.last_task {
                if let Some(task) = Api::<ScanTask>::namespaced(ctx.client.clone(), &ns)
                    .get_opt(last)
                    .await?
                {
                    if let Some(st) = task.status.filter(|s| s.start_time.is_some()) {
                        status.matched_images = Some(st.total);
                    }
                    requeue = requeue.min(Duration::from_secs(5));
                }
            }
        }
    }

    if status != old {
        let api: Api<ScanRule> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({
            "apiVersion": "imagewarden.io/v1alpha1",
            "kind": "ScanRule",
            "status": status,
        });
        api.patch_status(
            &rule.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    }
    Ok(Action::requeue(requeue))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ScanRuleSpec {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn invalid_specs_say_what_to_fix() {
        let ok = spec("registry: {url: r.example.com}\nscope: {type: Namespace, name: team-a}\ntagFilter: '^v1'");
        assert_eq!(validate(&ok), Ok(()));
        let bad_regex =
            spec("registry: {url: r}\nscope: {type: Namespace, name: a}\ntagFilter: '^v(1'");
        let err = validate(&bad_regex).unwrap_err();
        assert!(
            err.contains("spec.tagFilter") && err.contains("unclosed group"),
            "{err}"
        );
        let bad_cron = spec("registry: {url: r}\nscope: {type: Namespace, name: a}\ntriggers: {schedule: 'every day'}");
        assert!(validate(&bad_cron)
            .unwrap_err()
            .contains("spec.triggers.schedule"));
        let dup = spec("registry: {url: r}\nscope: {type: Namespace, name: a}\nnotifications: [{name: x, type: HTTP, url: 'http://a'}, {name: x, type: HTTP, url: 'http://b'}]");
        assert!(validate(&dup).unwrap_err().contains("used twice"));
        let retention =
            spec("registry: {url: r}\nscope: {type: Namespace, name: a}\nresultRetention: 48h");
        assert_eq!(validate(&retention), Ok(()));
        let bad_retention = spec(
            "registry: {url: r}\nscope: {type: Namespace, name: a}\nresultRetention: two days",
        );
        let err = validate(&bad_retention).unwrap_err();
        assert!(err.contains("spec.resultRetention \"two days\""), "{err}");
        let fix =
            spec("registry: {url: r}\nscope: {type: Namespace, name: a}\nfix: {enabled: true}");
        assert_eq!(validate(&fix), Ok(()));
        let apk = spec("registry: {url: r}\nscope: {type: Namespace, name: a}\nfix: {enabled: true, sources: ['https://dl-cdn.alpinelinux.org/alpine/v3.19/main']}");
        assert_eq!(validate(&apk), Ok(()));
        let tagged = spec("registry: {url: r}\nscope: {type: Namespace, name: a}\nfix: {enabled: true, sources: ['@edge https://dl-cdn.alpinelinux.org/alpine/edge/main']}");
        let err = validate(&tagged).unwrap_err();
        assert!(err.contains("spec.fix.sources[0]: apk repository"), "{err}");
        let keyring = spec("registry: {url: r}\nscope: {type: Namespace, name: a}\nfix: {enabled: true, keyringSecretRef: {name: 'Keys!'}}");
        let err = validate(&keyring).unwrap_err();
        assert!(err.contains("spec.fix.keyringSecretRef.name"), "{err}");
        let suffix = spec("registry: {url: r}\nscope: {type: Namespace, name: a}\nfix: {enabled: true, tagSuffix: '/x'}");
        let err = validate(&suffix).unwrap_err();
        assert!(err.contains("spec.fix.tagSuffix"), "{err}");
    }

    #[test]
    fn missed_firings_collapse_into_one() {
        let cron = parse_schedule("0 3 * * *").unwrap();
        let since: DateTime<Utc> = "2026-11-20T04:00:00Z".parse().unwrap();
        let now: DateTime<Utc> = "2026-11-27T09:00:00Z".parse().unwrap();
        assert_eq!(
            due_firing(&cron, since, now),
            Some("2026-11-27T03:00:00Z".parse().unwrap())
        );
        let just_after: DateTime<Utc> = "2026-11-27T03:00:00Z".parse().unwrap();
        assert_eq!(due_firing(&cron, just_after, now), None);
    }

    #[test]
    fn task_names_fit_label_limits() {
        let n = task_name(&"r".repeat(80), "manual", "0123456789");
        assert!(n.len() <= 63, "{n}");
        assert!(n.ends_with("-manual-0123456789"));
    }
}
