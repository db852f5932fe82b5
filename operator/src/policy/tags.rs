//! Tags resolved to digests at admission: an image a Pod names by tag is judged by the
//! digest the tag points at now, not by an older result that still lists the tag. Only
//! images a ScanRule of the Pod's namespace covers are resolved, with that rule's registry
//! access (credentials, CA, egress policy), within a short timeout; answers are kept for a
//! short while. An image that cannot be resolved in time is judged by its tag, as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imagewarden_scanner::egress::EgressPolicy;
use kube::runtime::reflector::Store;
use kube::ResourceExt;

use super::admission::Lookup;
use super::image::ImageReference;
use super::unscanned::rule_covers;
use crate::crd::{ImagePolicy, ImageScanResult, ScanRule, VulnerabilityException};
use crate::registry::{RegistryAccess, RegistryClient};

/// Time all the tags of one admission request may take to resolve.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a tag that could not be resolved is not asked again (at most the TTL).
const FAILED_TTL: Duration = Duration::from_secs(10);
/// Answers kept at most.
const MAX_CACHED: usize = 4096;

/// Resolves tags through the registries of the namespaces' rules, with a small cache.
pub struct TagResolver {
    client: kube::Client,
    egress: Arc<EgressPolicy>,
    timeout: Duration,
    /// How long a resolved tag is reused.
    ttl: Duration,
    /// `namespace/reference` → the digest (`None`: could not be resolved) and when.
    cache: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

impl TagResolver {
    pub fn new(
        client: kube::Client,
        egress: Arc<EgressPolicy>,
        timeout: Duration,
        ttl: Duration,
    ) -> Self {
        Self {
            client,
            egress,
            timeout,
            ttl,
            cache: Mutex::default(),
        }
    }

    /// The digests of the tag-only `images` that a rule of `namespace` covers, by the
    /// reference as [`ImageReference`] prints it.
    pub async fn resolve(
        &self,
        namespace: &str,
        images: &[ImageReference],
        rules: &Store<ScanRule>,
    ) -> HashMap<String, String> {
        let mut found = HashMap::new();
        let mut asks = Vec::new();
        let rules = rules.state();
        for image in images {
            if image.digest.is_some() || image.tag.is_none() {
                continue;
            }
            let key = format!("{namespace}/{image}");
            match self.cached(&key) {
                Some(Some(digest)) => {
                    found.insert(image.to_string(), digest);
                }
                Some(None) => {}
                None => {
                    let rule = rules
                        .iter()
                        .find(|r| {
                            r.namespace().as_deref() == Some(namespace)
                                && rule_covers(&r.spec, image)
                        })
                        .cloned();
                    if let Some(rule) = rule {
                        asks.push(async move {
                            let digest = self.ask(namespace, &rule, image).await;
                            (key, image.to_string(), digest)
                        });
                    }
                }
            }
        }
        if asks.is_empty() {
            return found;
        }
        let answers =
            match tokio::time::timeout(self.timeout, futures::future::join_all(asks)).await {
                Ok(answers) => answers,
                Err(_) => {
                    tracing::debug!(namespace, "resolving tags at admission timed out");
                    return found;
                }
            };
        for (key, reference, digest) in answers {
            self.remember(key, digest.clone());
            if let Some(digest) = digest {
                found.insert(reference, digest);
            }
        }
        found
    }

    fn cached(&self, key: &str) -> Option<Option<String>> {
        let cache = self.cache.lock().expect("tag cache lock");
        let (digest, at) = cache.get(key)?;
        let ttl = if digest.is_some() {
            self.ttl
        } else {
            FAILED_TTL.min(self.ttl)
        };
        (at.elapsed() < ttl).then(|| digest.clone())
    }

    fn remember(&self, key: String, digest: Option<String>) {
        let mut cache = self.cache.lock().expect("tag cache lock");
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (_, at)| at.elapsed() < self.ttl);
            if cache.len() >= MAX_CACHED {
                if let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone())
                {
                    cache.remove(&oldest);
                }
            }
        }
        cache.insert(key, (digest, Instant::now()));
    }

    /// The digest `image`'s tag points at, asked with `rule`'s registry access.
    async fn ask(
        &self,
        namespace: &str,
        rule: &ScanRule,
        image: &ImageReference,
    ) -> Option<String> {
        let tag = image.tag.as_deref()?;
        let access: RegistryAccess = match crate::access::registry_access(
            &self.client,
            namespace,
            &rule.spec.registry,
            self.egress.clone(),
        )
        .await
        {
            Ok(access) => access,
            Err(e) => {
                tracing::debug!(rule = %rule.name_any(), error = %e, "registry access for a tag at admission");
                return None;
            }
        };
        let client = RegistryClient::with_timeout(&access, self.timeout).ok()?;
        match client.resolve_digest(&image.name.repository, tag).await {
            Ok(digest) => Some(digest),
            Err(e) => {
                tracing::debug!(image = %image, error = %e, "resolving a tag at admission");
                None
            }
        }
    }
}

/// A [`Lookup`] that judges tag-only references by the digests resolved for them.
pub struct WithDigests<'a> {
    pub inner: &'a dyn Lookup,
    /// Digest by reference (as [`ImageReference`] prints it).
    pub digests: HashMap<String, String>,
}

impl WithDigests<'_> {
    fn pinned(&self, image: &ImageReference) -> Option<ImageReference> {
        let digest = self.digests.get(&image.to_string())?;
        Some(ImageReference {
            digest: Some(digest.clone()),
            ..image.clone()
        })
    }
}

impl Lookup for WithDigests<'_> {
    fn policies(&self) -> Vec<Arc<ImagePolicy>> {
        self.inner.policies()
    }

    fn namespace_labels(
        &self,
        namespace: &str,
    ) -> Option<std::collections::BTreeMap<String, String>> {
        self.inner.namespace_labels(namespace)
    }

    fn result(&self, image: &ImageReference, namespace: &str) -> Option<Arc<ImageScanResult>> {
        match self.pinned(image) {
            Some(pinned) => self.inner.result(&pinned, namespace),
            None => self.inner.result(image, namespace),
        }
    }

    fn scan_failure(&self, image: &ImageReference) -> Option<String> {
        match self.pinned(image) {
            Some(pinned) => self.inner.scan_failure(&pinned),
            None => self.inner.scan_failure(image),
        }
    }

    fn exceptions(&self, namespace: &str) -> Vec<Arc<VulnerabilityException>> {
        self.inner.exceptions(namespace)
    }
}
