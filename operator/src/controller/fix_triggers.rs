//! What creates ImageFixes: the `imagewarden.io/fix-now` annotation on an
//! ImageScanResult (the console's "Fix" button), and a ScanRule's `spec.fix.enabled` after
//! each of its scans. Both use the rule's `spec.fix` settings; the ImageFix's name is
//! derived from the result (its digest) and those settings, so a trigger repeated is
//! not a second fix.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};
use sha2::Digest;
use tracing::{info, warn};

use crate::context::Context;
use crate::crd::{
    ImageFix, ImageFixSpec, ImageFixTarget, ImageScanResult, ResultRef, RuleRef, ScanPhase,
    ScanRule, ScanTask,
};
use crate::Error;

/// Annotation on an ImageScanResult that asks for an ImageFix of its image; the operator
/// removes it once the ImageFix exists.
pub const FIX_NOW_ANNOTATION: &str = "imagewarden.io/fix-now";
/// Label of ImageFixes made by a trigger: `FixNow`, `Rule` or `Api` (the status API).
pub const TRIGGER_LABEL: &str = "imagewarden.io/fix-trigger";

/// The ImageFix of the image of result `result` with the fix settings of `rule` (pure).
pub fn fix_for_result(
    result: &str,
    result_uid: Option<&str>,
    rule: Option<&ScanRule>,
    trigger: &str,
) -> ImageFix {
    let settings = rule.and_then(|r| r.spec.fix.clone());
    let spec = ImageFixSpec {
        result_ref: Some(ResultRef {
            name: result.to_string(),
        }),
        image: None,
        rule_ref: rule.map(|r| RuleRef { name: r.name_any() }),
        vulnerabilities: Vec::new(),
        min_severity: settings.as_ref().and_then(|s| s.min_severity),
        target: match &settings {
            Some(s) => ImageFixTarget {
                tag_suffix: s.tag_suffix.clone(),
                overwrite: s.overwrite,
            },
            None => ImageFixTarget::default(),
        },
        sources: settings
            .as_ref()
            .map(|s| s.sources.clone())
            .unwrap_or_default(),
        keyring_secret_ref: settings.as_ref().and_then(|s| s.keyring_secret_ref.clone()),
        check_valid_until: settings.as_ref().is_none_or(|s| s.check_valid_until),
    };
    let mut fix = ImageFix::new(&fix_name(result, &spec), spec);
    let mut labels = std::collections::BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_string(),
            "imagewarden".to_string(),
        ),
        (TRIGGER_LABEL.to_string(), trigger.to_string()),
    ]);
    if let Some(rule) = rule {
        labels.insert(crate::result::RULE_LABEL.to_string(), rule.name_any());
    }
    fix.metadata.labels = Some(labels);
    // The fix goes with the result it fixes.
    fix.metadata.owner_references = result_uid.map(|uid| {
        vec![OwnerReference {
            api_version: ImageScanResult::api_version(&()).into_owned(),
            kind: ImageScanResult::kind(&()).into_owned(),
            name: result.to_string(),
            uid: uid.to_string(),
            ..Default::default()
        }]
    });
    fix
}

/// `fix-<result>-<hash of the result and the settings>`, within 63 characters.
pub fn fix_name(result: &str, spec: &ImageFixSpec) -> String {
    let key = serde_json::to_string(&(result, spec)).expect("a spec serializes");
    let hash = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    let base: String = result.chars().take(63 - 4 - 11).collect();
    format!("fix-{}-{}", base.trim_end_matches('-'), &hash[..10])
}

/// The tag of `registry/repository:tag` (empty without one).
fn tag_of(image: &str) -> &str {
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':').map_or("", |(_, t)| t)
}

/// Creates `fix` unless it exists; true when created.
async fn create(ctx: &Context, ns: &str, fix: &ImageFix) -> Result<bool, Error> {
    let api: Api<ImageFix> = Api::namespaced(ctx.client.clone(), ns);
    match api.create(&PostParams::default(), fix).await {
        Ok(_) => {
            info!(namespace = ns, fix = %fix.name_any(), "ImageFix created");
            Ok(true)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Acts on the fix-now annotation of one result: creates its ImageFix, then removes the
/// annotation.
async fn fix_now(ctx: &Context, result: &PartialObjectMeta<ImageScanResult>) -> Result<(), Error> {
    if !result.annotations().contains_key(FIX_NOW_ANNOTATION) {
        return Ok(());
    }
    let ns = result.namespace().unwrap_or_default();
    let name = result.name_any();
    let rule = match result.labels().get(crate::result::RULE_LABEL) {
        Some(rule) => {
            Api::<ScanRule>::namespaced(ctx.client.clone(), &ns)
                .get_opt(rule)
                .await?
        }
        None => None,
    };
    let fix = fix_for_result(&name, result.uid().as_deref(), rule.as_ref(), "FixNow");
    create(ctx, &ns, &fix).await?;
    let patch = serde_json::json!({"metadata": {"annotations": {FIX_NOW_ANNOTATION: null}}});
    Api::<ImageScanResult>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

/// After a finished scan of a rule with `spec.fix.enabled`, creates an ImageFix for each
/// image scanned, leaving out the images the fixes pushed.
async fn after_scan(ctx: &Context, task: &ScanTask) -> Result<(), Error> {
    let (Some(status), Some(rule_ref)) = (&task.status, &task.spec.rule_ref) else {
        return Ok(());
    };
    if !matches!(status.phase, ScanPhase::Completed | ScanPhase::Failed) {
        return Ok(());
    }
    let ns = task.namespace().unwrap_or_default();
    let Some(rule) = Api::<ScanRule>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&rule_ref.name)
        .await?
    else {
        return Ok(());
    };
    let Some(settings) = rule.spec.fix.as_ref().filter(|f| f.enabled) else {
        return Ok(());
    };
    // Only the rule's latest run: a restarted operator does not replay older ones.
    if rule.status.as_ref().and_then(|s| s.last_task.as_deref()) != Some(&task.name_any()) {
        return Ok(());
    }
    let fixes: Api<ImageFix> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = fixes.list(&Default::default()).await?.items;
    let pushed: HashSet<&str> = existing
        .iter()
        .filter_map(|f| f.status.as_ref()?.pushed.as_deref())
        .filter_map(|p| p.rsplit_once('@').map(|(_, d)| d))
        .collect();
    let names: HashSet<String> = existing.iter().map(|f| f.name_any()).collect();
    let results: Api<ImageScanResult> = Api::namespaced(ctx.client.clone(), &ns);
    for image in &status.images {
        let (Some(result), Some(digest)) = (&image.result_name, &image.digest) else {
            continue;
        };
        let tag = tag_of(&image.image);
        if image.phase != ScanPhase::Completed
            || pushed.contains(digest.as_str())
            || tag.ends_with(&settings.tag_suffix)
            || tag.ends_with(imagewarden_scanner::fix::ORIGINAL_SUFFIX)
        {
            continue;
        }
        let Some(meta) = results.get_metadata_opt(result).await? else {
            continue;
        };
        let fix = fix_for_result(result, meta.uid().as_deref(), Some(&rule), "Rule");
        if !names.contains(&fix.name_any()) {
            create(ctx, &ns, &fix).await?;
        }
    }
    Ok(())
}

/// Runs both triggers until the watches end: one of each per watched scope.
pub async fn run(ctx: Arc<Context>) {
    futures::join!(
        on_each::<PartialObjectMeta<ImageScanResult>, _, _>(&ctx, "fix-now", |ctx, result| {
            async move { fix_now(&ctx, &result).await }
        }),
        on_each::<ScanTask, _, _>(&ctx, "fixes after a scan", |ctx, task| async move {
            after_scan(&ctx, &task).await
        }),
    );
}

/// Calls `act` with each object the watches of `K` (one per watched scope) show, one at
/// a time per watch; failures are logged with `what`.
async fn on_each<K, F, Fut>(ctx: &Arc<Context>, what: &'static str, act: F)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
    K::DynamicType: Default,
    F: Fn(Arc<Context>, K) -> Fut + Clone,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let watches = ctx.scoped_apis::<K>().into_iter().map(|api| {
        let (ctx, act) = (ctx.clone(), act.clone());
        watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .for_each(move |r| {
                let (ctx, act) = (ctx.clone(), act.clone());
                async move {
                    if let Ok(object) = r {
                        let name = object.name_any();
                        if let Err(e) = act(ctx, object).await {
                            warn!(object = %name, error = %e, "{what}");
                        }
                    }
                }
            })
    });
    futures::future::join_all(watches).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(fix: &str) -> ScanRule {
        serde_norway::from_str(&format!(
            "apiVersion: imagewarden.io/v1alpha1\nkind: ScanRule\nmetadata: {{name: team-a, namespace: ns}}\nspec:\n  registry: {{url: r.example}}\n  scope: {{type: Namespace, name: team-a}}\n{fix}"
        ))
        .unwrap()
    }

    #[test]
    fn the_same_result_and_settings_make_the_same_fix() {
        let r = rule(
            "  fix: {enabled: true, overwrite: true, minSeverity: High, keyringSecretRef: {name: keys}}",
        );
        let a = fix_for_result("team-a-xml-0123abcd", Some("uid"), Some(&r), "FixNow");
        let b = fix_for_result("team-a-xml-0123abcd", Some("uid"), Some(&r), "Rule");
        assert_eq!(a.name_any(), b.name_any());
        assert!(a.name_any().len() <= 63);
        assert!(a.spec.target.overwrite);
        assert_eq!(a.spec.min_severity, Some(crate::crd::Severity::High));
        assert_eq!(a.spec.rule_ref.as_ref().unwrap().name, "team-a");
        assert_eq!(a.spec.keyring_secret_ref.as_ref().unwrap().name, "keys");
        assert_eq!(a.metadata.owner_references.as_ref().unwrap()[0].uid, "uid");
        // Other settings or another digest: another fix.
        let other = rule("  fix: {enabled: true}");
        let c = fix_for_result("team-a-xml-0123abcd", None, Some(&other), "FixNow");
        assert_ne!(a.name_any(), c.name_any());
        assert_eq!(c.spec.target.tag_suffix, "_fixd");
        let d = fix_for_result("team-a-xml-9999ffff", None, Some(&r), "FixNow");
        assert_ne!(a.name_any(), d.name_any());
    }

    #[test]
    fn tags_are_read_after_the_registry_port() {
        assert_eq!(tag_of("127.0.0.1:5000/team-a/xml:v1.0_fixd"), "v1.0_fixd");
        assert_eq!(tag_of("127.0.0.1:5000/team-a/xml"), "");
    }
}
