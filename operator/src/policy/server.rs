//! The validating admission webhook: `POST /validate` (AdmissionReview v1) over HTTPS,
//! answered from informer caches on every replica, leader or not.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use kube::core::DynamicObject;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};

use super::admission::{respond, AdmissionSettings, Lookup};
pub use super::admission::{AdmissionArgs, AdmissionServerConfig};
use super::image::ImageReference;
use super::stats::AdmissionStats;
use crate::context::Context;
use crate::crd::{
    ImagePolicy, ImageScanResult, ScanPhase, ScanRule, ScanTask, VulnerabilityException,
};

/// Path of the admission endpoint.
pub const VALIDATE_PATH: &str = "/validate";

/// The objects admission looks at, kept current by watches.
#[derive(Clone)]
pub struct Caches {
    pub policies: Store<ImagePolicy>,
    pub results: Store<ImageScanResult>,
    /// The results' keys by digest, kept by the same watch as `results`.
    pub results_by_digest: DigestIndex,
    pub exceptions: Store<VulnerabilityException>,
    pub namespaces: Store<Namespace>,
    pub tasks: Store<ScanTask>,
    /// Rules a `scanUnscanned` policy starts scans with.
    pub rules: Store<ScanRule>,
}

/// A cache of `api`'s objects, each changed by `modify` before it is kept.
pub(crate) fn watch<K>(api: Api<K>, modify: impl FnMut(&mut K) + Send + 'static) -> Store<K>
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    watch_with(api, modify, |_| {})
}

/// [`watch`], showing every event to `observe` once the object is changed and before the
/// cache applies it.
fn watch_with<K>(
    api: Api<K>,
    modify: impl FnMut(&mut K) + Send + 'static,
    mut observe: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> Store<K>
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(modify)
            .inspect_ok(move |event| observe(event)),
    )
    .applied_objects()
    .for_each(|_| async {});
    tokio::spawn(stream);
    store
}

type ResultKey = reflector::ObjectRef<ImageScanResult>;

/// The keys of the cached results by image digest, so admission finds an image's results
/// without reading every result. Fed the results watch's events; a key found here is
/// read from the results cache and checked again, so the index may lag the cache but
/// never decides alone.
#[derive(Clone, Default)]
pub struct DigestIndex(Arc<RwLock<IndexState>>);

#[derive(Default)]
struct IndexState {
    by_digest: HashMap<String, Vec<ResultKey>>,
    digest_of: HashMap<ResultKey, String>,
    /// Built during a relist, swapped in when it is complete.
    relisting: Option<Box<IndexState>>,
}

impl IndexState {
    fn insert(&mut self, result: &ImageScanResult) {
        let key = reflector::ObjectRef::from_obj(result);
        self.remove(&key);
        let digest = result.spec.digest.clone();
        self.by_digest
            .entry(digest.clone())
            .or_default()
            .push(key.clone());
        self.digest_of.insert(key, digest);
    }

    fn remove(&mut self, key: &ResultKey) {
        let Some(digest) = self.digest_of.remove(key) else {
            return;
        };
        if let Some(keys) = self.by_digest.get_mut(&digest) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.by_digest.remove(&digest);
            }
        }
    }
}

impl DigestIndex {
    /// Applies a watch event, as the reflector applies it to the cache.
    pub fn apply(&self, event: &watcher::Event<ImageScanResult>) {
        let mut state = self.0.write().expect("index lock");
        match event {
            watcher::Event::Apply(r) => state.insert(r),
            watcher::Event::Delete(r) => state.remove(&reflector::ObjectRef::from_obj(r)),
            watcher::Event::Init => state.relisting = Some(Box::default()),
            watcher::Event::InitApply(r) => state.relisting.get_or_insert_default().insert(r),
            watcher::Event::InitDone => {
                let fresh = state.relisting.take().unwrap_or_default();
                *state = *fresh;
            }
        }
    }

    /// Keys of the results recorded for `digest`.
    pub fn get(&self, digest: &str) -> Vec<ResultKey> {
        self.0
            .read()
            .expect("index lock")
            .by_digest
            .get(digest)
            .cloned()
            .unwrap_or_default()
    }
}

/// A result as the caches keep it: without its stored inventory, warnings and managed
/// fields.
pub(crate) fn slim_result(r: &mut ImageScanResult) {
    r.metadata.managed_fields = None;
    if let Some(s) = r.status.as_mut() {
        s.inventory = None;
        s.warnings.clear();
    }
}

impl Caches {
    /// Starts the watches. Results are kept without their stored inventory and every
    /// object without its managed fields, to keep the caches small.
    pub fn start(client: &Client) -> Self {
        let strip = |meta: &mut kube::api::ObjectMeta| meta.managed_fields = None;
        let results_by_digest = DigestIndex::default();
        let index = results_by_digest.clone();
        Self {
            results_by_digest,
            policies: watch(Api::all(client.clone()), move |p: &mut ImagePolicy| {
                strip(&mut p.metadata)
            }),
            results: watch_with(Api::all(client.clone()), slim_result, move |event| {
                index.apply(event)
            }),
            exceptions: watch(
                Api::all(client.clone()),
                move |e: &mut VulnerabilityException| strip(&mut e.metadata),
            ),
            namespaces: watch(Api::all(client.clone()), move |n: &mut Namespace| {
                strip(&mut n.metadata);
                n.spec = None;
                n.status = None;
            }),
            tasks: watch(Api::all(client.clone()), move |t: &mut ScanTask| {
                strip(&mut t.metadata);
                if let Some(s) = t.status.as_mut() {
                    s.notifications.clear();
                }
            }),
            rules: watch(Api::all(client.clone()), move |r: &mut ScanRule| {
                strip(&mut r.metadata);
                r.status = None;
            }),
        }
    }

    /// Waits until every cache has listed its objects once.
    pub async fn ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.policies.wait_until_ready().await?;
        self.results.wait_until_ready().await?;
        self.exceptions.wait_until_ready().await?;
        self.namespaces.wait_until_ready().await?;
        self.tasks.wait_until_ready().await?;
        self.rules.wait_until_ready().await?;
        Ok(())
    }
}

impl Caches {
    /// The ScanRules that produced `result`: the rules of the ScanTasks owning it, else
    /// the rules of its namespace that cover its image.
    pub fn rules_of(&self, result: &ImageScanResult) -> Vec<Arc<ScanRule>> {
        let namespace = result.metadata.namespace.clone().unwrap_or_default();
        let mut names: Vec<String> = result
            .metadata
            .owner_references
            .iter()
            .flatten()
            .filter(|o| o.kind == "ScanTask")
            .filter_map(|o| {
                self.tasks
                    .get(&reflector::ObjectRef::new(&o.name).within(&namespace))
            })
            .filter_map(|t| t.spec.rule_ref.as_ref().map(|r| r.name.clone()))
            .collect();
        names.sort();
        names.dedup();
        let mut rules: Vec<Arc<ScanRule>> = names
            .iter()
            .filter_map(|n| {
                self.rules
                    .get(&reflector::ObjectRef::new(n).within(&namespace))
            })
            .collect();
        if rules.is_empty() {
            let image = ImageReference {
                name: crate::policy::result_image(result),
                tag: None,
                digest: Some(result.spec.digest.clone()),
            };
            rules = self.rules.state_filter(|r| {
                r.metadata.namespace.as_deref() == Some(namespace.as_str())
                    && super::unscanned::rule_covers(&r.spec, &image)
            });
            rules.sort_by_key(|r| r.name_any());
        }
        rules
    }
}

fn scan_time(r: &ImageScanResult) -> i64 {
    r.status
        .as_ref()
        .and_then(|s| s.scan_time.as_ref())
        .map_or(0, |t| t.0.as_second())
}

impl Lookup for Caches {
    fn policies(&self) -> Vec<Arc<ImagePolicy>> {
        self.policies.state()
    }

    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces
            .get(&reflector::ObjectRef::new(namespace))
            .map(|n| n.labels().clone())
    }

    fn result(&self, image: &ImageReference, namespace: &str) -> Option<Arc<ImageScanResult>> {
        let candidates = match (&image.digest, &image.tag) {
            // By digest through the index: the keys of that digest's results only.
            (Some(digest), _) => self
                .results_by_digest
                .get(digest)
                .iter()
                .filter_map(|key| self.results.get(key))
                .filter(|r| {
                    r.spec.digest == *digest && crate::policy::result_image(r) == image.name
                })
                .collect(),
            // Tag first: a string comparison, where the name allocates.
            (None, Some(tag)) => self.results.state_filter(|r| {
                r.spec.tags.iter().any(|t| t == tag) && crate::policy::result_image(r) == image.name
            }),
            (None, None) => Vec::new(),
        };
        // A tag that moved is judged by its newest digest; the Pod's namespace first.
        candidates.into_iter().max_by_key(|r| {
            (
                r.metadata.namespace.as_deref() == Some(namespace),
                scan_time(r),
            )
        })
    }

    fn scan_failure(&self, image: &ImageReference) -> Option<String> {
        self.tasks
            .state()
            .iter()
            .filter_map(|t| t.status.as_ref())
            .flat_map(|s| &s.images)
            .filter(|i| i.phase == ScanPhase::Failed)
            .find(|i| {
                let Ok(seen) = ImageReference::parse(&i.image) else {
                    return false;
                };
                seen.name == image.name
                    && match (&image.digest, &image.tag) {
                        (Some(d), _) => i.digest.as_ref() == Some(d),
                        (None, tag) => seen.tag == *tag,
                    }
            })
            .map(|i| i.message.clone().unwrap_or_else(|| "scan failed".into()))
    }

    fn exceptions(&self, namespace: &str) -> Vec<Arc<VulnerabilityException>> {
        self.exceptions
            .state_filter(|e| e.metadata.namespace.as_deref() == Some(namespace))
    }
}

struct AdmissionState {
    caches: Caches,
    settings: AdmissionSettings,
    stats: Arc<AdmissionStats>,
    ctx: Arc<Context>,
    scans: super::unscanned::ScanRequests,
    tags: super::tags::TagResolver,
}

async fn validate(State(state): State<Arc<AdmissionState>>, body: axum::body::Bytes) -> Response {
    let started = std::time::Instant::now();
    let response = answer(&state, &body).await;
    state
        .ctx
        .metrics
        .admission_duration(started.elapsed().as_secs_f64());
    response
}

/// The tag-only images of the request's Pod spec.
fn tagged_images(request: &AdmissionRequest<DynamicObject>) -> Vec<ImageReference> {
    let Some(object) = request.object.as_ref() else {
        return Vec::new();
    };
    let Ok(value) = serde_json::to_value(object) else {
        return Vec::new();
    };
    let Some(spec) = super::admission::pod_spec(&request.kind.kind, &value) else {
        return Vec::new();
    };
    super::admission::images_of(spec)
        .iter()
        .take(super::admission::MAX_IMAGES)
        .filter_map(|c| ImageReference::parse(&c.image).ok())
        .filter(|r| r.digest.is_none())
        .collect()
}

async fn answer(state: &AdmissionState, body: &[u8]) -> Response {
    let metrics = &state.ctx.metrics;
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            metrics.admission_error("bad_request");
            return (
                StatusCode::BAD_REQUEST,
                format!("not an AdmissionReview: {e}\n"),
            )
                .into_response();
        }
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            metrics.admission_error("bad_request");
            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
        }
    };
    // Tags point where the registry says now: resolved before judging (rules of the
    // request's namespace only, bounded in time).
    let namespace = request.namespace.clone().unwrap_or_default();
    let digests = state
        .tags
        .resolve(&namespace, &tagged_images(&request), &state.caches.rules)
        .await;
    let lookup = super::tags::WithDigests {
        inner: &state.caches,
        digests,
    };
    let (response, decision) = respond(&request, &lookup, &state.settings, chrono::Utc::now());
    if !request.dry_run {
        let namespace = request.namespace.as_deref().unwrap_or_default();
        for j in decision.judgements.iter().filter(|j| j.scan_wanted) {
            if let Ok(image) = ImageReference::parse(&j.image) {
                state
                    .scans
                    .request(&state.ctx, &state.caches.rules, namespace, &image);
            }
        }
        let name = request
            .object
            .as_ref()
            .and_then(|o| o.metadata.name.clone().or(o.metadata.generate_name.clone()))
            .unwrap_or_else(|| request.name.clone());
        state.stats.record(
            &request.kind.kind,
            request.namespace.as_deref().unwrap_or_default(),
            &name,
            &decision,
        );
    }
    if decision.invalid.is_some() {
        metrics.admission_error("invalid_object");
    }
    let by_policy = super::stats::strongest(&decision);
    if by_policy.is_empty() && decision.invalid.is_none() {
        metrics.admission("", super::Action::Admit.label());
    }
    for (policy, j) in by_policy {
        metrics.admission(policy, j.action.label());
    }
    if !decision.allowed() {
        tracing::info!(kind = %request.kind.kind, namespace = ?request.namespace, name = %request.name, message = %decision.message(), "admission denied");
    }
    Json(response.into_review()).into_response()
}

/// The admission routes.
pub fn router(
    ctx: Arc<Context>,
    caches: Caches,
    settings: AdmissionSettings,
    stats: Arc<AdmissionStats>,
    tag_cache: std::time::Duration,
) -> Router {
    let tags = super::tags::TagResolver::new(
        ctx.client.clone(),
        ctx.config.egress.policy(),
        super::tags::RESOLVE_TIMEOUT,
        tag_cache,
    );
    let state = Arc::new(AdmissionState {
        caches,
        settings,
        stats,
        ctx,
        scans: Default::default(),
        tags,
    });
    Router::new()
        .route(VALIDATE_PATH, post(validate))
        .with_state(state)
}

/// TLS settings serving the certificate `tls` names: files reloaded when they change, or
/// the operator's certificate Secret (created if missing, followed as it changes).
pub async fn serving_tls(
    ctx: &Context,
    tls: &super::admission::AdmissionTls,
) -> anyhow::Result<Arc<tokio_rustls::rustls::ServerConfig>> {
    match tls {
        super::admission::AdmissionTls::Files {
            cert_file,
            key_file,
        } => super::tls::reloading_config(cert_file, key_file),
        super::admission::AdmissionTls::Operator(certs) => {
            // Every replica: the shared Secret (created by whichever replica comes
            // first), served from memory and swapped when the Secret changes.
            let namespace = ctx.config.lease_namespace.clone();
            let secret = super::certs::ensure(&ctx.client, &namespace, certs).await?;
            let (cert, key) = super::certs::serving_pem(&secret)
                .ok_or_else(|| anyhow::anyhow!("Secret {} holds no certificate", certs.secret))?;
            let shared = Arc::new(
                super::tls::SharedCert::new(&cert, &key)
                    .map_err(|e| anyhow::anyhow!("Secret {}: {e}", certs.secret))?,
            );
            tokio::spawn(super::certs::watch_secret(
                ctx.client.clone(),
                namespace,
                certs.secret.clone(),
                shared.clone(),
            ));
            shared.config()
        }
    }
    .map_err(anyhow::Error::msg)
}

/// Starts the caches, waits until they are filled, then serves the webhook on
/// `config.addr` over TLS (the certificate files, or the operator's certificate Secret,
/// are read again when they change, so a rotated certificate is served without a
/// restart) and writes admission counts to the
/// policies. Returns when listening. Call it once `caches` are [`Caches::ready`].
pub async fn spawn(
    ctx: Arc<Context>,
    caches: Caches,
    config: AdmissionServerConfig,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let tls = serving_tls(&ctx, &config.tls)
        .await
        .map_err(|e| anyhow::anyhow!("admission webhook TLS: {e}"))?;
    let stats = Arc::new(AdmissionStats::default());
    let client = ctx.client.clone();
    let app = router(
        ctx,
        caches.clone(),
        config.settings.clone(),
        stats.clone(),
        config.tag_cache,
    );
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("binding the admission address {}", config.addr))?;
    tracing::info!(addr = %config.addr, "admission webhook listening");
    let options = crate::registry::webhook::ServerOptions {
        tls: Some(tls),
        max_connections: 1024,
        ..Default::default()
    };
    tokio::spawn(async move {
        if let Err(e) = crate::registry::webhook::serve_router(listener, app, options).await {
            tracing::error!(error = %e, "admission webhook stopped");
        }
    });
    tokio::spawn(async move { stats.run(client).await });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ImageScanResultSpec;

    fn result(namespace: &str, name: &str, digest: &str) -> ImageScanResult {
        let mut r = ImageScanResult::new(
            name,
            ImageScanResultSpec {
                registry: "r.example".into(),
                repository: "team/app".into(),
                digest: digest.into(),
                tags: vec![],
                tags_seen: vec![],
            },
        );
        r.metadata.namespace = Some(namespace.into());
        r
    }

    fn names(index: &DigestIndex, digest: &str) -> Vec<String> {
        let mut names: Vec<String> = index
            .get(digest)
            .iter()
            .map(|k| format!("{}/{}", k.namespace.clone().unwrap_or_default(), k.name))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_digest_index_follows_applies_deletes_and_relists() {
        use watcher::Event;
        let index = DigestIndex::default();
        index.apply(&Event::Apply(result("a", "one", "sha256:1")));
        index.apply(&Event::Apply(result("b", "one", "sha256:1")));
        index.apply(&Event::Apply(result("a", "two", "sha256:2")));
        assert_eq!(names(&index, "sha256:1"), ["a/one", "b/one"]);
        assert_eq!(names(&index, "sha256:2"), ["a/two"]);

        // An object whose digest changed leaves its old digest.
        index.apply(&Event::Apply(result("b", "one", "sha256:2")));
        assert_eq!(names(&index, "sha256:1"), ["a/one"]);
        assert_eq!(names(&index, "sha256:2"), ["a/two", "b/one"]);

        index.apply(&Event::Delete(result("a", "one", "sha256:1")));
        assert!(index.get("sha256:1").is_empty());

        // A relist replaces everything once it is complete, not before.
        index.apply(&Event::Init);
        index.apply(&Event::InitApply(result("c", "three", "sha256:3")));
        assert_eq!(names(&index, "sha256:2"), ["a/two", "b/one"]);
        assert!(index.get("sha256:3").is_empty());
        index.apply(&Event::InitDone);
        assert!(index.get("sha256:2").is_empty());
        assert_eq!(names(&index, "sha256:3"), ["c/three"]);
    }
}
