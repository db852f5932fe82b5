//! Resolving a task's images to digests: the rule's scope discovered in the registry, or
//! the task's explicit image list.

use std::sync::Arc;

use imagewarden_scanner::egress::EgressPolicy;

use crate::crd::{ImageProgress, ScanPhase, ScanRule, ScanTask};
use crate::registry::discovery::{discover, DiscoveryLimits, Scope, TagFilter};
use crate::registry::{RegistryAccess, RegistryClient};
use crate::Error;

use imagewarden_scanner::reference::ImageReference;

fn failed(image: String, message: String) -> ImageProgress {
    ImageProgress {
        image,
        phase: ScanPhase::Failed,
        message: Some(message),
        ..Default::default()
    }
}

/// The images a task covers, each with its digest or the reason it has none.
///
/// Boxed as `Send` here, where its borrows have concrete lifetimes, so the controller's
/// future stays `Send`.
pub fn task_images<'a>(
    task: &'a ScanTask,
    rule: Option<&'a ScanRule>,
    access: Option<&'a RegistryAccess>,
    egress: Arc<EgressPolicy>,
) -> futures::future::BoxFuture<'a, Result<Vec<ImageProgress>, Error>> {
    Box::pin(task_images_inner(task, rule, access, egress))
}

async fn task_images_inner(
    task: &ScanTask,
    rule: Option<&ScanRule>,
    access: Option<&RegistryAccess>,
    egress: Arc<EgressPolicy>,
) -> Result<Vec<ImageProgress>, Error> {
    let mut out = Vec::new();
    if task.spec.images.is_empty() {
        let (Some(rule), Some(access)) = (rule, access) else {
            return Ok(out);
        };
        let filter = TagFilter::new(&rule.spec.tag_filter).map_err(|e| Error::InvalidSpec {
            field: "spec.tagFilter",
            message: e.to_string(),
        })?;
        let client = RegistryClient::new(access)?;
        let found = discover(
            &client,
            &Scope::from(&rule.spec.scope),
            &filter,
            rule.spec.max_tags,
            &DiscoveryLimits::default(),
        )
        .await?;
        for image in found.images {
            out.push(ImageProgress {
                image: format!("{}/{}:{}", access.host, image.repository, image.tag),
                digest: Some(image.digest),
                ..Default::default()
            });
        }
        for e in found.errors {
            out.push(failed(
                format!("{}/{}", access.host, e.repository),
                e.error.to_string(),
            ));
        }
        return Ok(out);
    }
    for image in &task.spec.images {
        let Ok(reference) = ImageReference::parse_qualified(image) else {
            out.push(failed(
                image.clone(),
                format!(
                    "{image} is not a registry image reference (host/repository:tag or @digest)"
                ),
            ));
            continue;
        };
        if let Some(digest) = reference.digest() {
            out.push(ImageProgress {
                image: image.clone(),
                digest: Some(digest.to_string()),
                ..Default::default()
            });
            continue;
        }
        let (host, repository) = (reference.registry(), reference.repository());
        let tag = reference.tag().unwrap_or_default();
        // The rule's access applies to images of its registry; others are read anonymously.
        let own;
        let access = match access {
            Some(a) if crate::registry::access::same_registry(&a.host, host) => a,
            _ => match RegistryAccess::new(host, false) {
                Ok(a) => {
                    own = a.with_egress(egress.clone());
                    &own
                }
                Err(e) => {
                    out.push(failed(image.clone(), e.to_string()));
                    continue;
                }
            },
        };
        let resolved = match RegistryClient::new(access) {
            Ok(client) => client.resolve_digest(repository, tag).await,
            Err(e) => Err(e),
        };
        match resolved {
            Ok(digest) => out.push(ImageProgress {
                image: image.clone(),
                digest: Some(digest),
                ..Default::default()
            }),
            Err(e) => out.push(failed(image.clone(), e.to_string())),
        }
    }
    Ok(out)
}
