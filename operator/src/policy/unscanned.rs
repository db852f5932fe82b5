//! `scanUnscanned`: an image seen at admission without a result gets a ScanTask of a
//! ScanRule of the Pod's namespace that covers it (never another namespace's rule, whose
//! registry credentials the Pod's owners may not use).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::reflector::Store;
use kube::ResourceExt;

use super::image::ImageReference;
use crate::context::Context;
use crate::crd::{ScanRule, ScanRuleSpec, TaskTrigger};
use crate::registry::access::{registry_host, same_registry};
use crate::registry::discovery::{Scope, TagFilter};

/// An image is asked for at most once in this period per namespace.
const REQUEST_EVERY: Duration = Duration::from_secs(300);
/// Requests remembered at most (older ones are forgotten first).
const MAX_REMEMBERED: usize = 4096;

/// Whether a rule covers an image: same registry, a repository in its scope and, for a
/// tag, a tag its filter accepts (pure).
pub fn rule_covers(spec: &ScanRuleSpec, image: &ImageReference) -> bool {
    let Ok(rule_host) = registry_host(&spec.registry.url, spec.registry.insecure) else {
        return false;
    };
    let image_host = registry_host(&image.name.registry, spec.registry.insecure)
        .unwrap_or_else(|_| image.name.registry.clone());
    let hub = |h: &str| super::image::ImageName::new(h, "x").registry;
    if !same_registry(&rule_host, &image_host) && hub(&rule_host) != hub(&image_host) {
        return false;
    }
    if !Scope::from(&spec.scope).contains(&image.name.repository) {
        return false;
    }
    match (&image.tag, &image.digest) {
        (Some(tag), _) => TagFilter::new(&spec.tag_filter).is_ok_and(|f| f.matches(tag)),
        (None, _) => true,
    }
}

/// Scans asked for at admission, remembered so that a burst of Pods asks once.
#[derive(Default)]
pub struct ScanRequests {
    recent: Mutex<HashMap<String, Instant>>,
}

impl ScanRequests {
    /// Starts (in the background) a ScanTask for `image` with the first rule of
    /// `namespace` that covers it, unless one was asked for lately.
    pub fn request(
        &self,
        ctx: &Arc<Context>,
        rules: &Store<ScanRule>,
        namespace: &str,
        image: &ImageReference,
    ) {
        let reference = image.to_string();
        let key = format!("{namespace}/{reference}");
        {
            let mut recent = self.recent.lock().expect("scan requests lock");
            let now = Instant::now();
            recent.retain(|_, at| now.duration_since(*at) < REQUEST_EVERY);
            if recent.contains_key(&key) || recent.len() >= MAX_REMEMBERED {
                return;
            }
            recent.insert(key, now);
        }
        let mut candidates = rules.state_filter(|r| {
            r.metadata.namespace.as_deref() == Some(namespace) && rule_covers(&r.spec, image)
        });
        candidates.sort_by_key(|r| r.name_any());
        let Some(rule) = candidates.into_iter().next() else {
            tracing::info!(namespace, image = %reference, "scanUnscanned: no ScanRule of the namespace covers the image");
            return;
        };
        let name = crate::controller::scan_rule::task_name(
            &rule.name_any(),
            "admission",
            &crate::controller::scan_rule::short_hash(&reference),
        );
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::controller::scan_rule::start_task(
                &ctx,
                &rule,
                &name,
                TaskTrigger::Admission,
                vec![reference],
            )
            .await
            {
                tracing::warn!(task = %name, error = %e, "starting a scan of an image seen at admission");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str, scope: &str, name: &str, tag_filter: &str) -> ScanRuleSpec {
        serde_json::from_value(serde_json::json!({
            "registry": {"url": url},
            "scope": {"type": scope, "name": name},
            "tagFilter": tag_filter,
        }))
        .unwrap()
    }

    #[test]
    fn a_rule_covers_images_of_its_registry_scope_and_tags() {
        let rule = spec("registry.example.com", "Namespace", "team-a", r"^v\d");
        let image = |r: &str| ImageReference::parse(r).unwrap();
        assert!(rule_covers(
            &rule,
            &image("registry.example.com/team-a/api:v1")
        ));
        assert!(rule_covers(
            &rule,
            &image("registry.example.com/team-a/api@sha256:0123")
        ));
        assert!(!rule_covers(
            &rule,
            &image("registry.example.com/team-a/api:dev")
        ));
        assert!(!rule_covers(
            &rule,
            &image("registry.example.com/team-b/api:v1")
        ));
        assert!(!rule_covers(
            &rule,
            &image("other.example.com/team-a/api:v1")
        ));
        let hub = spec("docker.io", "Namespace", "library", ".*");
        assert!(rule_covers(&hub, &image("nginx:1.27")));
    }
}
