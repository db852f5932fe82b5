//! What happens to ImageScanResults besides scanning: their tags follow the registry (a
//! tag moved to another digest leaves), an image the registry deleted or the rule's
//! discovery no longer finds is marked `Deleted`, and a `Deleted` result is removed after
//! its rule's `resultRetention`. A digest that comes back (re-pushed, or in scope again)
//! loses the mark.
//!
//! The decisions are pure ([`plan_result`], [`tags`], [`deleted`]); the functions here
//! read and write the results.

pub mod deleted;
pub mod tags;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::ResourceExt;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::context::Context;
use crate::crd::{ImageProgress, ImageScanResult, ScanRule, ScanTask, SeenTag};
use crate::registry::access::{registry_host, same_registry};
use crate::registry::notification::DeleteEvent;
use crate::registry::{Scope, TagFilter};
use crate::Error;
use imagewarden_scanner::reference::ImageReference;

use deleted::{
    clear_deleted, collect_at, deleted_since, mark_deleted, retention_of, DELETED_IN_REGISTRY,
    NOT_FOUND,
};
use tags::{merge_tags, tag_names, TagObservation};

/// Results listed per request: one page is held at a time, however many exist.
const PAGE_SIZE: u32 = 100;
/// Longest wait between two garbage-collection sweeps when nothing is due sooner.
const GC_IDLE_SWEEP: Duration = Duration::from_secs(3600);

/// Whether an observation found the result's digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presence {
    /// Seen: a `Deleted` mark is cleared.
    Found,
    /// Looked for where it should be and not found (reason, message).
    Absent { reason: String, message: String },
    /// The observation says nothing about the digest.
    Unknown,
}

/// The changes one result needs; `None` fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResultPlan {
    pub tags: Option<Vec<SeenTag>>,
    pub owners: Option<Vec<OwnerReference>>,
    pub conditions: Option<Vec<Condition>>,
}

impl ResultPlan {
    pub fn is_empty(&self) -> bool {
        self.tags.is_none() && self.owners.is_none() && self.conditions.is_none()
    }
}

/// Decides what `result` needs after an observation (pure): its tags merged with
/// `observation`; for an absent digest, the rule `absent_for` (its uid) leaves the owners
/// when another rule still owns the result, else the result is marked `Deleted`; a found
/// digest loses its `Deleted` mark and gains `owner`.
pub fn plan_result(
    result: &ImageScanResult,
    observation: Option<&TagObservation>,
    presence: &Presence,
    absent_for: Option<&str>,
    owner: Option<&OwnerReference>,
    now: &Time,
) -> ResultPlan {
    let mut plan = ResultPlan::default();
    if let Some(observation) = observation {
        let fallback = result
            .metadata
            .creation_timestamp
            .clone()
            .unwrap_or_else(|| now.clone());
        let merged = merge_tags(
            &result.spec.tags_seen,
            &result.spec.tags,
            &fallback,
            &result.spec.digest,
            observation,
            now,
        );
        if merged != result.spec.tags_seen || tag_names(&merged) != result.spec.tags {
            plan.tags = Some(merged);
        }
    }
    let owners = result.metadata.owner_references.clone().unwrap_or_default();
    let conditions = result
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    match presence {
        Presence::Found => {
            plan.conditions = clear_deleted(&conditions);
            if let Some(o) = owner {
                if !owners.iter().any(|x| x.uid == o.uid) {
                    let mut owners = owners;
                    owners.push(o.clone());
                    plan.owners = Some(owners);
                }
            }
        }
        Presence::Absent { reason, message } => {
            let other_rules = owners
                .iter()
                .filter(|o| o.kind == "ScanRule" && Some(o.uid.as_str()) != absent_for)
                .count();
            if other_rules > 0 && absent_for.is_some() {
                plan.owners = Some(
                    owners
                        .into_iter()
                        .filter(|o| Some(o.uid.as_str()) != absent_for)
                        .collect(),
                );
            } else {
                plan.conditions = mark_deleted(&conditions, reason, message, now);
            }
        }
        Presence::Unknown => {}
    }
    plan
}

/// Writes `plan` to `result` (only what changed), guarded by the resource version it was
/// made from; a result changed in between is left to the next observation.
async fn apply_plan(
    client: &kube::Client,
    result: &ImageScanResult,
    plan: &ResultPlan,
) -> Result<(), Error> {
    if plan.is_empty() {
        return Ok(());
    }
    let api: Api<ImageScanResult> =
        Api::namespaced(client.clone(), &result.namespace().unwrap_or_default());
    let name = result.name_any();
    let mut version = result.metadata.resource_version.clone();
    if plan.tags.is_some() || plan.owners.is_some() {
        let mut patch = serde_json::json!({"metadata": {"resourceVersion": version}});
        if let Some(owners) = &plan.owners {
            patch["metadata"]["ownerReferences"] = serde_json::to_value(owners)?;
        }
        if let Some(records) = &plan.tags {
            patch["spec"] = serde_json::json!({"tags": tag_names(records), "tagsSeen": records});
        }
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(written) => version = written.metadata.resource_version,
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                debug!(result = %name, "result changed while its tags were updated; left to the next observation");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(conditions) = &plan.conditions {
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": version},
            "status": {"conditions": conditions},
        });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                debug!(result = %name, "result changed while its conditions were updated; left to the next observation");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The results `params` selects, a page at a time. An expired continue token (410 Gone)
/// starts the listing again, at most three times: callers skip what they already handled.
/// [`result_pages`] over every namespace the operator watches, one scope after another.
pub fn scoped_result_pages(
    ctx: &Context,
    params: ListParams,
) -> impl Stream<Item = Result<Vec<ImageScanResult>, kube::Error>> {
    futures::stream::iter(ctx.scope.apis::<ImageScanResult>(&ctx.client))
        .flat_map(move |api| result_pages(api, params.clone()))
}

pub fn result_pages(
    api: Api<ImageScanResult>,
    params: ListParams,
) -> impl Stream<Item = Result<Vec<ImageScanResult>, kube::Error>> {
    enum Next {
        Page(Option<String>, u32),
        Done,
    }
    futures::stream::unfold(Next::Page(None, 0), move |next| {
        let (api, params) = (api.clone(), params.clone());
        async move {
            let Next::Page(mut token, mut restarts) = next else {
                return None;
            };
            loop {
                let mut page_params = params.clone().limit(PAGE_SIZE);
                if let Some(t) = &token {
                    page_params = page_params.continue_token(t);
                }
                match api.list(&page_params).await {
                    Ok(page) => {
                        let next = match page.metadata.continue_.filter(|t| !t.is_empty()) {
                            Some(t) => Next::Page(Some(t), restarts),
                            None => Next::Done,
                        };
                        return Some((Ok(page.items), next));
                    }
                    Err(kube::Error::Api(e)) if e.code == 410 && restarts < 3 => {
                        restarts += 1;
                        token = None;
                    }
                    Err(e) => return Some((Err(e), Next::Done)),
                }
            }
        }
    })
}

/// One repository as a task saw it.
#[derive(Default)]
struct RepositorySeen {
    observation: TagObservation,
    digests: BTreeSet<String>,
}

/// Records what a task's resolution saw: every result of the same repositories in the
/// task's namespace gets its tags merged, found digests lose a `Deleted` mark, and — for
/// a rule's discovery of its whole scope — the rule's results whose digest is no longer
/// found in a repository that was listed are marked `Deleted` (or left to the other rules
/// that own them). Failures are logged: the task goes on.
pub async fn after_resolve(
    ctx: &Context,
    task: &ScanTask,
    rule: Option<&ScanRule>,
    images: &[ImageProgress],
) {
    if let Err(e) = record_resolution(ctx, task, rule, images).await {
        warn!(task = %task.name_any(), error = %e, "recording the resolved images on their results");
    }
}

async fn record_resolution(
    ctx: &Context,
    task: &ScanTask,
    rule: Option<&ScanRule>,
    images: &[ImageProgress],
) -> Result<(), Error> {
    // A rule's discovery covers its whole scope; an explicit list (a push) only its images.
    let discovery = rule.filter(|_| task.spec.images.is_empty());
    let complete = discovery
        .filter(|r| r.spec.max_tags.is_none())
        .and_then(|r| TagFilter::new(&r.spec.tag_filter).ok());
    let mut seen: BTreeMap<(String, String), RepositorySeen> = BTreeMap::new();
    let mut failed: BTreeSet<String> = BTreeSet::new();
    for entry in images {
        let reference = ImageReference::parse_qualified(&entry.image).ok();
        match (&entry.digest, reference) {
            (Some(digest), Some(reference)) => {
                let (host, repository) = (
                    reference.registry().to_string(),
                    reference.repository().to_string(),
                );
                let tag = reference.tag().map(str::to_string);
                let repo = seen
                    .entry((host, repository))
                    .or_insert_with(|| RepositorySeen {
                        observation: TagObservation {
                            complete: complete.clone(),
                            ..Default::default()
                        },
                        ..Default::default()
                    });
                repo.digests.insert(digest.clone());
                if let Some(tag) = tag {
                    repo.observation.resolved.insert(tag, digest.clone());
                }
            }
            // A repository of the scope that could not be listed: `host/repository`.
            _ => {
                if let Some((_, repository)) = entry.image.split_once('/') {
                    failed.insert(repository.to_string());
                }
            }
        }
    }
    if seen.is_empty() && discovery.is_none() {
        return Ok(());
    }
    let scope = discovery.map(|r| {
        (
            r.uid().unwrap_or_default(),
            registry_host(&r.spec.registry.url, r.spec.registry.insecure).ok(),
            Scope::from(&r.spec.scope),
            r.name_any(),
        )
    });
    let now = crate::now();
    let ns = task.namespace().unwrap_or_default();
    let api: Api<ImageScanResult> = Api::namespaced(ctx.client.clone(), &ns);
    let mut marked = false;
    let mut pages = std::pin::pin!(result_pages(api, ListParams::default()));
    while let Some(page) = pages.next().await {
        for result in &page? {
            let repo = seen.iter().find(|((host, repository), _)| {
                same_registry(host, &result.spec.registry) && *repository == result.spec.repository
            });
            let in_scope = scope.as_ref().and_then(|(uid, host, scope, name)| {
                let owned = result.owner_references().iter().any(|o| o.uid == *uid);
                let here = host
                    .as_deref()
                    .is_some_and(|h| same_registry(h, &result.spec.registry));
                (owned
                    && here
                    && scope.contains(&result.spec.repository)
                    && !failed.contains(&result.spec.repository))
                .then_some((uid.as_str(), name.as_str()))
            });
            let empty;
            let observation = match (repo, &complete, in_scope) {
                (Some((_, r)), _, _) => Some(&r.observation),
                (None, Some(filter), Some(_)) => {
                    empty = TagObservation {
                        resolved: BTreeMap::new(),
                        complete: Some(filter.clone()),
                    };
                    Some(&empty)
                }
                _ => None,
            };
            let found = repo.is_some_and(|(_, r)| r.digests.contains(&result.spec.digest));
            let presence = match (found, in_scope) {
                (true, _) => Presence::Found,
                (false, Some((_, rule_name))) => Presence::Absent {
                    reason: NOT_FOUND.into(),
                    message: format!(
                        "ScanRule {rule_name} no longer finds this digest in its scope (task {})",
                        task.name_any()
                    ),
                },
                (false, None) => Presence::Unknown,
            };
            let plan = plan_result(
                result,
                observation,
                &presence,
                in_scope.map(|(uid, _)| uid),
                None,
                &now,
            );
            if plan
                .conditions
                .as_ref()
                .is_some_and(|c| deleted_since(c).is_some())
            {
                info!(result = %result.name_any(), "image no longer found: result marked Deleted");
                marked = true;
            }
            apply_plan(&ctx.client, result, &plan).await?;
        }
    }
    if marked {
        ctx.lifecycle.wake_collector();
    }
    Ok(())
}

/// Records on an existing result that a task found its digest under `tags`: tags not yet
/// listed are added, a `Deleted` mark is cleared, and `owner` joins the owners.
pub async fn record_found(
    ctx: &Context,
    result: &ImageScanResult,
    tags: &[String],
    owner: Option<&OwnerReference>,
) -> Result<(), Error> {
    let plan = found_plan(result, tags, owner, &crate::now());
    apply_plan(&ctx.client, result, &plan).await
}

/// What [`record_found`] would change on `result` (empty: nothing).
pub fn found_plan(
    result: &ImageScanResult,
    tags: &[String],
    owner: Option<&OwnerReference>,
    now: &Time,
) -> ResultPlan {
    let missing: BTreeMap<String, String> = tags
        .iter()
        .filter(|t| !result.spec.tags.contains(t))
        .map(|t| (t.clone(), result.spec.digest.clone()))
        .collect();
    let observation = TagObservation {
        resolved: missing,
        complete: None,
    };
    plan_result(
        result,
        Some(&observation),
        &Presence::Found,
        None,
        owner,
        now,
    )
}

/// The tags a newly written result for `digest` lists: the existing result's, merged with
/// the `tags` the scan was started for (see [`tags::merge_tags`]).
pub fn tags_for_write(
    existing: Option<&ImageScanResult>,
    digest: &str,
    tags: &[String],
) -> Vec<SeenTag> {
    let now = crate::now();
    let observation = TagObservation {
        resolved: tags
            .iter()
            .map(|t| (t.clone(), digest.to_string()))
            .collect(),
        complete: None,
    };
    match existing {
        Some(r) => merge_tags(
            &r.spec.tags_seen,
            &r.spec.tags,
            r.metadata.creation_timestamp.as_ref().unwrap_or(&now),
            digest,
            &observation,
            &now,
        ),
        None => merge_tags(&[], &[], &now, digest, &observation, &now),
    }
}

/// Marks the results of deleted manifests `Deleted` (in every namespace) and removes
/// deleted tags, as registries report them; runs until `events` closes.
pub async fn registry_deletes(ctx: Arc<Context>, mut events: mpsc::Receiver<DeleteEvent>) {
    while let Some(event) = events.recv().await {
        if let Err(e) = record_delete(&ctx, &event).await {
            warn!(registry = %event.registry_host, repository = %event.repository, error = %e, "recording a registry delete");
        }
    }
}

async fn record_delete(ctx: &Context, event: &DeleteEvent) -> Result<(), Error> {
    let params = match &event.digest {
        // Results carry the short digest as a label: only those are read.
        Some(digest) => ListParams::default().labels(&format!(
            "imagewarden.io/digest={}",
            crate::result::short_digest(digest)
        )),
        None => ListParams::default(),
    };
    let now = crate::now();
    let mut marked = false;
    let mut pages = std::pin::pin!(scoped_result_pages(ctx, params));
    while let Some(page) = pages.next().await {
        for result in page?.iter().filter(|r| {
            same_registry(&r.spec.registry, &event.registry_host)
                && r.spec.repository == event.repository
        }) {
            let plan = match (&event.digest, &event.tag) {
                (Some(digest), _) if *digest == result.spec.digest => {
                    let message = match &event.tag {
                        Some(tag) => format!("the registry reported {tag} ({digest}) deleted"),
                        None => format!("the registry reported {digest} deleted"),
                    };
                    plan_result(
                        result,
                        None,
                        &Presence::Absent {
                            reason: DELETED_IN_REGISTRY.into(),
                            message,
                        },
                        None,
                        None,
                        &now,
                    )
                }
                (None, Some(tag)) => {
                    // A tag deleted (the manifest stays): the tag leaves.
                    let mut observation = TagObservation::default();
                    observation
                        .resolved
                        .insert(tag.clone(), "deleted".to_string());
                    plan_result(
                        result,
                        Some(&observation),
                        &Presence::Unknown,
                        None,
                        None,
                        &now,
                    )
                }
                _ => continue,
            };
            marked |= plan.conditions.is_some();
            if plan.conditions.is_some() {
                info!(result = %result.name_any(), "the registry deleted the image: result marked Deleted");
            }
            apply_plan(&ctx.client, result, &plan).await?;
        }
    }
    if marked {
        ctx.lifecycle.wake_collector();
    }
    Ok(())
}

/// Removes `Deleted` results whose retention has passed, sweeping when the next one is due
/// (at most [`GC_IDLE_SWEEP`] apart) or when a result was just marked. Runs forever.
pub async fn collect_deleted(ctx: Arc<Context>) {
    loop {
        let wait = match sweep(&ctx).await {
            Ok(Some(next)) => next.min(GC_IDLE_SWEEP),
            Ok(None) => GC_IDLE_SWEEP,
            Err(e) => {
                warn!(error = %e, "collecting deleted results");
                Duration::from_secs(60)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = ctx.lifecycle.collector_woken() => {}
        }
    }
}

/// Deletes the due results; returns how long until the next one is due.
async fn sweep(ctx: &Context) -> Result<Option<Duration>, Error> {
    let mut retention: HashMap<(String, String), Option<Duration>> = HashMap::new();
    let now = crate::now();
    let mut next: Option<Duration> = None;
    let mut pages = std::pin::pin!(scoped_result_pages(ctx, ListParams::default()));
    while let Some(page) = pages.next().await {
        for result in &page? {
            let Some(since) = result
                .status
                .as_ref()
                .and_then(|s| deleted_since(&s.conditions))
            else {
                continue;
            };
            let ns = result.namespace().unwrap_or_default();
            // The longest retention of the rules that own the result; the default for
            // results of ad-hoc tasks.
            let mut keep: Option<Duration> = None;
            for owner in result
                .owner_references()
                .iter()
                .filter(|o| o.kind == "ScanRule")
            {
                let key = (ns.clone(), owner.name.clone());
                if !retention.contains_key(&key) {
                    let rule = Api::<ScanRule>::namespaced(ctx.client.clone(), &ns)
                        .get_opt(&owner.name)
                        .await?;
                    retention.insert(
                        key.clone(),
                        rule.map(|r| retention_of(r.spec.result_retention.as_deref())),
                    );
                }
                if let Some(Some(d)) = retention.get(&key) {
                    keep = Some(keep.map_or(*d, |k| k.max(*d)));
                }
            }
            let keep = keep.unwrap_or_else(|| retention_of(None));
            let due = collect_at(since, keep);
            let left = due.0.duration_since(now.0);
            if left.is_positive() {
                let left = Duration::try_from(left).unwrap_or(GC_IDLE_SWEEP);
                next = Some(next.map_or(left, |n| n.min(left)));
                continue;
            }
            let name = result.name_any();
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: result.metadata.resource_version.clone(),
                    uid: result.metadata.uid.clone(),
                }),
                ..Default::default()
            };
            match Api::<ImageScanResult>::namespaced(ctx.client.clone(), &ns)
                .delete(&name, &params)
                .await
            {
                Ok(_) => {
                    info!(result = %name, namespace = %ns, "deleted image's result removed after its retention");
                }
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ImageScanResultSpec, ImageScanResultStatus};

    const A: &str = "sha256:aaaa";

    fn at(second: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(second).unwrap())
    }

    fn owner(kind: &str, name: &str) -> OwnerReference {
        OwnerReference {
            api_version: "imagewarden.io/v1alpha1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            ..Default::default()
        }
    }

    fn result(owners: Vec<OwnerReference>) -> ImageScanResult {
        let mut r = ImageScanResult::new(
            "app-aaaa",
            ImageScanResultSpec {
                registry: "r:5000".into(),
                repository: "team-a/app".into(),
                digest: A.into(),
                tags: vec!["v1".into()],
                tags_seen: vec![SeenTag {
                    tag: "v1".into(),
                    last_seen: at(10),
                }],
            },
        );
        r.metadata.owner_references = Some(owners);
        r.status = Some(ImageScanResultStatus::default());
        r
    }

    fn absent() -> Presence {
        Presence::Absent {
            reason: NOT_FOUND.into(),
            message: "gone".into(),
        }
    }

    #[test]
    fn a_digest_only_this_rule_owned_is_marked_deleted_with_the_time() {
        let r = result(vec![owner("ScanRule", "a")]);
        let plan = plan_result(&r, None, &absent(), Some("uid-a"), None, &at(100));
        let conditions = plan.conditions.unwrap();
        assert_eq!(deleted_since(&conditions), Some(&at(100)));
        assert_eq!(conditions[0].reason, NOT_FOUND);
        assert_eq!(plan.owners, None);
    }

    #[test]
    fn a_digest_another_rule_still_owns_loses_only_this_rules_ownership() {
        let r = result(vec![owner("ScanRule", "a"), owner("ScanRule", "b")]);
        let plan = plan_result(&r, None, &absent(), Some("uid-a"), None, &at(100));
        assert_eq!(plan.conditions, None);
        assert_eq!(plan.owners, Some(vec![owner("ScanRule", "b")]));
    }

    #[test]
    fn a_digest_found_again_comes_back() {
        let mut r = result(vec![owner("ScanRule", "a")]);
        let marked = plan_result(&r, None, &absent(), Some("uid-a"), None, &at(100));
        r.status.as_mut().unwrap().conditions = marked.conditions.unwrap();
        let observation = TagObservation {
            resolved: BTreeMap::from([("v2".to_string(), A.to_string())]),
            complete: None,
        };
        let b = owner("ScanRule", "b");
        let plan = plan_result(
            &r,
            Some(&observation),
            &Presence::Found,
            None,
            Some(&b),
            &at(200),
        );
        assert_eq!(plan.conditions, Some(vec![]));
        assert_eq!(plan.owners.unwrap().len(), 2);
        assert_eq!(tag_names(&plan.tags.unwrap()), ["v1", "v2"]);
        // Nothing new: nothing to write.
        let same = plan_result(
            &result(vec![]),
            None,
            &Presence::Unknown,
            None,
            None,
            &at(1),
        );
        assert!(same.is_empty());
    }
}
