//! Which images a rule's scope holds: repositories from the catalog (or the one named
//! repository), their tags filtered by the rule's regex, optionally the newest N, each
//! resolved to its manifest digest.
//!
//! Scope semantics: `Namespace` `team-a` covers the repositories whose namespace (the path
//! before the last `/`) is exactly `team-a`: `team-a/api` is in, `team-a/tools/ci` is not
//! (it belongs to namespace `team-a/tools`), as the `ScanRule` CRD documents. `Repository`
//! covers exactly the named repository and never reads the catalog, so it also works with
//! credentials that lack catalog permission.
//!
//! Harbor lets only system administrators read `/v2/_catalog`; when the catalog refuses
//! the credentials, a `Namespace` scope is listed through Harbor's project API
//! (`/api/v2.0/projects/<project>/repositories`) with the same credentials instead.
//!
//! `maxTags` keeps the tags whose images were created last (the image config's `created`
//! field; for an index, its linux/amd64 image). Images without a creation time count as
//! oldest; ties go to the lexically greater tag. The config is read only when a repository
//! has more matching tags than `maxTags`.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use futures::{stream, StreamExt, TryStreamExt};
use regex::Regex;

use super::access::Credentials;
use super::client::{Page, RegistryClient};
use super::error::{InRepository, RegistryError};
use crate::crd::{ScanRuleSpec, ScopeSpec, ScopeType};

/// A tag filter: a Rust `regex` that matches anywhere in the tag unless anchored.
#[derive(Clone, Debug)]
pub struct TagFilter {
    regex: Regex,
}

/// Compiled-size bound for a user's regex (the default is 10 MiB).
const TAG_FILTER_SIZE_LIMIT: usize = 1 << 20;

impl TagFilter {
    /// Compiles `pattern`; the error text is fit for a `Ready=False` condition message.
    pub fn new(pattern: &str) -> Result<Self, regex::Error> {
        let regex = regex::RegexBuilder::new(pattern)
            .size_limit(TAG_FILTER_SIZE_LIMIT)
            .build()?;
        Ok(Self { regex })
    }

    /// True when `tag` passes the filter.
    pub fn matches(&self, tag: &str) -> bool {
        self.regex.is_match(tag)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        self.regex.as_str()
    }
}

/// The part of a registry a rule covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Repositories directly under this namespace (no trailing `/`).
    Namespace(String),
    /// Exactly this repository.
    Repository(String),
}

impl From<&ScopeSpec> for Scope {
    fn from(spec: &ScopeSpec) -> Self {
        let name = spec.name.trim_matches('/').to_string();
        match spec.scope_type {
            ScopeType::Namespace => Self::Namespace(name),
            ScopeType::Repository => Self::Repository(name),
        }
    }
}

impl Scope {
    /// True when `repository` is in this scope.
    pub fn contains(&self, repository: &str) -> bool {
        match self {
            Self::Repository(name) => repository == name,
            Self::Namespace(namespace) => repository
                .rsplit_once('/')
                .is_some_and(|(parent, _)| parent == namespace),
        }
    }
}

/// Bounds on one discovery run; exceeding one is an error, never a silent cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryLimits {
    /// `n` asked for per catalog or tag-list page.
    pub page_size: u32,
    /// Pages followed per listing (catalog, or one repository's tags).
    pub max_pages: usize,
    /// Repositories in scope.
    pub max_repositories: usize,
    /// Tags listed per repository (before filtering).
    pub max_tags_per_repository: usize,
    /// Images (repository:tag) in the result.
    pub max_images: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
}

impl Default for DiscoveryLimits {
    fn default() -> Self {
        Self {
            page_size: 100,
            max_pages: 1000,
            max_repositories: 5000,
            max_tags_per_repository: 10_000,
            max_images: 10_000,
            concurrency: 8,
        }
    }
}

/// One tag in scope and the manifest digest it points at.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DiscoveredImage {
    pub repository: String,
    pub tag: String,
    /// `sha256:...` of the manifest (or index) the tag points at.
    pub digest: String,
}

/// A repository that could not be listed or resolved; the others still count.
#[derive(Debug)]
pub struct RepositoryError {
    pub repository: String,
    pub error: RegistryError,
}

/// The result of a discovery run.
#[derive(Debug, Default)]
pub struct Discovery {
    /// Matching images, sorted by repository then tag.
    pub images: Vec<DiscoveredImage>,
    /// Repositories that failed, sorted by repository.
    pub errors: Vec<RepositoryError>,
}

/// Lists the images in `scope` whose tags pass `filter`, keeping the newest `max_tags`
/// per repository when set, each resolved to its manifest digest.
///
/// Errors that concern the whole registry (unreachable, the catalog, any exceeded limit)
/// fail the run; failures of one repository of a
/// namespace land in [`Discovery::errors`]. For a `Repository` scope, the one
/// repository's failure fails the run.
pub async fn discover(
    client: &RegistryClient,
    scope: &Scope,
    filter: &TagFilter,
    max_tags: Option<u32>,
    limits: &DiscoveryLimits,
) -> Result<Discovery, RegistryError> {
    let repositories = match scope {
        Scope::Repository(name) => vec![name.clone()],
        Scope::Namespace(_) => list_repositories(client, scope, limits).await?,
    };
    let concurrency = limits.concurrency.max(1);
    let results: Vec<(String, Result<Vec<DiscoveredImage>, RegistryError>)> =
        stream::iter(repositories)
            .map(|repository| async move {
                let result =
                    discover_repository(client, &repository, filter, max_tags, limits).await;
                (repository, result)
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;

    let mut discovery = Discovery::default();
    for (repository, result) in results {
        match result {
            Ok(images) => discovery.images.extend(images),
            Err(error) if registry_wide(&error) || matches!(scope, Scope::Repository(_)) => {
                return Err(error)
            }
            Err(error) => discovery.errors.push(RepositoryError { repository, error }),
        }
    }
    if discovery.images.len() > limits.max_images {
        return Err(RegistryError::LimitExceeded {
            registry: client.host().to_string(),
            repository: InRepository(None),
            what: "images",
            limit: limits.max_images,
        });
    }
    discovery.images.sort();
    discovery
        .errors
        .sort_by(|a, b| a.repository.cmp(&b.repository));
    Ok(discovery)
}

/// Why a rule's images could not be discovered.
#[derive(Debug, thiserror::Error)]
pub enum RuleDiscoveryError {
    /// The rule's `tagFilter` is not a valid regex; fixing the rule is the only cure.
    #[error("tagFilter {pattern:?} is not a valid regular expression: {source}")]
    InvalidTagFilter {
        pattern: String,
        #[source]
        source: regex::Error,
    },
    /// The registry could not be read.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl RuleDiscoveryError {
    /// A short, stable label for condition reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidTagFilter { .. } => "InvalidTagFilter",
            Self::Registry(e) => e.reason(),
        }
    }
}

/// Discovers the images of a `ScanRule`: its registry (with the Secrets already read into
/// `ca_pem` and `credentials`), scope, tag filter and `maxTags`, within `egress`.
pub async fn discover_for_rule(
    spec: &ScanRuleSpec,
    ca_pem: Option<String>,
    credentials: Option<Credentials>,
    egress: std::sync::Arc<imagewarden_scanner::egress::EgressPolicy>,
    limits: &DiscoveryLimits,
) -> Result<Discovery, RuleDiscoveryError> {
    let filter = TagFilter::new(&spec.tag_filter).map_err(|source| {
        RuleDiscoveryError::InvalidTagFilter {
            pattern: spec.tag_filter.clone(),
            source,
        }
    })?;
    let access =
        super::access::access_from_spec(&spec.registry, ca_pem, credentials)?.with_egress(egress);
    let client = RegistryClient::new(&access)?;
    Ok(discover(
        &client,
        &Scope::from(&spec.scope),
        &filter,
        spec.max_tags,
        limits,
    )
    .await?)
}

/// Errors that fail the whole run: those that would repeat for every repository, and
/// exceeded limits (a partial result would look complete).
fn registry_wide(error: &RegistryError) -> bool {
    matches!(
        error,
        RegistryError::Unreachable { .. }
            | RegistryError::Tls { .. }
            | RegistryError::Config { .. }
            | RegistryError::LimitExceeded { .. }
    )
}

/// The repositories of a `Namespace` scope, from the paginated catalog; for a
/// `Repository` scope, that repository.
pub async fn list_repositories(
    client: &RegistryClient,
    scope: &Scope,
    limits: &DiscoveryLimits,
) -> Result<Vec<String>, RegistryError> {
    let namespace = match scope {
        Scope::Repository(name) => return Ok(vec![name.clone()]),
        Scope::Namespace(namespace) => namespace,
    };
    let catalog = collect_repositories(client, scope, limits, "catalog pages", |next| {
        client.catalog_page(next, limits.page_size)
    })
    .await;
    match catalog {
        // Harbor lets only system administrators read the catalog; project members and
        // robot accounts list a project's repositories through Harbor's own API.
        Err(
            catalog_error @ (RegistryError::Unauthorized { .. } | RegistryError::Forbidden { .. }),
        ) => {
            let project = namespace.split('/').next().unwrap_or(namespace);
            let harbor = collect_repositories(client, scope, limits, "project pages", |next| {
                client.harbor_repositories_page(project, next, limits.page_size)
            })
            .await;
            match harbor {
                Ok(repositories) => Ok(repositories),
                Err(harbor_error) => {
                    tracing::debug!(error = %harbor_error, "no Harbor project API either");
                    Err(catalog_error)
                }
            }
        }
        other => other,
    }
}

/// Follows a paginated repository listing, keeping the repositories in `scope`.
async fn collect_repositories<F, Fut>(
    client: &RegistryClient,
    scope: &Scope,
    limits: &DiscoveryLimits,
    pages: &'static str,
    mut fetch: F,
) -> Result<Vec<String>, RegistryError>
where
    F: FnMut(Option<reqwest::Url>) -> Fut,
    Fut: std::future::Future<Output = Result<Page<Vec<String>>, RegistryError>>,
{
    let mut repositories = Vec::new();
    let mut seen_pages = HashSet::new();
    let mut next = None;
    for _ in 0..limits.max_pages {
        let page = fetch(next.take()).await?;
        repositories.extend(page.items.into_iter().filter(|r| scope.contains(r)));
        if repositories.len() > limits.max_repositories {
            return Err(RegistryError::LimitExceeded {
                registry: client.host().to_string(),
                repository: InRepository(None),
                what: "repositories in scope",
                limit: limits.max_repositories,
            });
        }
        match page.next {
            Some(url) if seen_pages.insert(url.to_string()) => next = Some(url),
            Some(url) => {
                return Err(RegistryError::Protocol {
                    registry: client.host().to_string(),
                    repository: InRepository(None),
                    message: format!("the repository listing's next-page link repeats: {url}"),
                })
            }
            None => {
                repositories.sort();
                repositories.dedup();
                return Ok(repositories);
            }
        }
    }
    Err(RegistryError::LimitExceeded {
        registry: client.host().to_string(),
        repository: InRepository(None),
        what: pages,
        limit: limits.max_pages,
    })
}

/// Every tag of `repository`, following the tag list's pagination.
pub async fn list_tags(
    client: &RegistryClient,
    repository: &str,
    limits: &DiscoveryLimits,
) -> Result<Vec<String>, RegistryError> {
    let limit_error = |what, limit| RegistryError::LimitExceeded {
        registry: client.host().to_string(),
        repository: InRepository(Some(repository.to_string())),
        what,
        limit,
    };
    let mut tags = Vec::new();
    let mut seen_pages = HashSet::new();
    let mut next = None;
    for _ in 0..limits.max_pages {
        let page = client
            .tags_page(repository, next.take(), limits.page_size)
            .await?;
        tags.extend(page.items);
        if tags.len() > limits.max_tags_per_repository {
            return Err(limit_error("tags", limits.max_tags_per_repository));
        }
        match page.next {
            Some(url) if seen_pages.insert(url.to_string()) => next = Some(url),
            Some(url) => {
                return Err(RegistryError::Protocol {
                    registry: client.host().to_string(),
                    repository: InRepository(Some(repository.to_string())),
                    message: format!("the tag list's next-page link repeats: {url}"),
                })
            }
            None => {
                tags.sort();
                tags.dedup();
                return Ok(tags);
            }
        }
    }
    Err(limit_error("tag-list pages", limits.max_pages))
}

async fn discover_repository(
    client: &RegistryClient,
    repository: &str,
    filter: &TagFilter,
    max_tags: Option<u32>,
    limits: &DiscoveryLimits,
) -> Result<Vec<DiscoveredImage>, RegistryError> {
    let tags: Vec<String> = list_tags(client, repository, limits)
        .await?
        .into_iter()
        .filter(|t| filter.matches(t))
        .collect();
    if tags.len() > limits.max_images {
        return Err(RegistryError::LimitExceeded {
            registry: client.host().to_string(),
            repository: InRepository(Some(repository.to_string())),
            what: "matching tags",
            limit: limits.max_images,
        });
    }
    let concurrency = limits.concurrency.max(1);
    let resolved: Vec<Option<DiscoveredImage>> = stream::iter(tags)
        .map(|tag| async move {
            match client.resolve_digest(repository, &tag).await {
                Ok(digest) => Ok(Some(DiscoveredImage {
                    repository: repository.to_string(),
                    tag,
                    digest,
                })),
                // Deleted between listing and resolving: no longer in scope.
                Err(RegistryError::NotFound { .. }) => {
                    tracing::debug!(repository, tag, "tag vanished before it was resolved");
                    Ok(None)
                }
                Err(error) => Err(error),
            }
        })
        .buffered(concurrency)
        .try_collect()
        .await?;
    let images: Vec<DiscoveredImage> = resolved.into_iter().flatten().collect();
    match max_tags {
        Some(max) if images.len() > max as usize => {
            newest(client, repository, images, max as usize, concurrency).await
        }
        _ => Ok(images),
    }
}

/// The `max` images created last; see the module doc for the order.
async fn newest(
    client: &RegistryClient,
    repository: &str,
    images: Vec<DiscoveredImage>,
    max: usize,
    concurrency: usize,
) -> Result<Vec<DiscoveredImage>, RegistryError> {
    // Owned digests: a closure over borrowed ones makes the future not `Send` for callers.
    let digests: HashSet<String> = images.iter().map(|i| i.digest.clone()).collect();
    let created: HashMap<String, Option<DateTime<Utc>>> = stream::iter(digests)
        .map(|digest: String| async move {
            let created = client.image_created(repository, &digest).await?;
            Ok::<_, RegistryError>((digest, created))
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    Ok(select_newest(images, &created, max))
}

/// Sorts by creation time (unknown = oldest), then tag, descending, and keeps `max`.
pub(crate) fn select_newest(
    mut images: Vec<DiscoveredImage>,
    created: &HashMap<String, Option<DateTime<Utc>>>,
    max: usize,
) -> Vec<DiscoveredImage> {
    let key = |image: &DiscoveredImage| created.get(&image.digest).copied().flatten();
    images.sort_by(|a, b| key(b).cmp(&key(a)).then_with(|| b.tag.cmp(&a.tag)));
    images.truncate(max);
    images.sort();
    images
}

/// Groups discovered images by digest: one scan per digest, however many tags share it.
pub fn by_digest(images: &[DiscoveredImage]) -> BTreeMap<&str, Vec<&DiscoveredImage>> {
    let mut out: BTreeMap<&str, Vec<&DiscoveredImage>> = BTreeMap::new();
    for image in images {
        out.entry(image.digest.as_str()).or_default().push(image);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(tag: &str, digest: &str) -> DiscoveredImage {
        DiscoveredImage {
            repository: "r".into(),
            tag: tag.into(),
            digest: digest.into(),
        }
    }

    #[test]
    fn tag_filter_matches_anywhere_unless_anchored() {
        let filter = TagFilter::new(r"v\d+").unwrap();
        assert!(filter.matches("release-v2"));
        assert!(!filter.matches("latest"));
        let anchored = TagFilter::new(r"^v\d+$").unwrap();
        assert!(!anchored.matches("release-v2"));
        assert!(anchored.matches("v2"));
    }

    #[test]
    fn invalid_tag_filter_is_an_error_with_a_message() {
        let err = TagFilter::new("v(1").unwrap_err();
        assert!(err.to_string().contains("unclosed group"), "{err}");
    }

    #[test]
    fn namespace_scope_covers_direct_children_only() {
        let scope = Scope::Namespace("team-a".into());
        assert!(scope.contains("team-a/api"));
        assert!(!scope.contains("team-a/tools/ci"));
        assert!(!scope.contains("team-ab/api"));
        assert!(!scope.contains("team-a"));
        assert!(!scope.contains("other/team-a/api"));
        let nested = Scope::Namespace("team-a/tools".into());
        assert!(nested.contains("team-a/tools/ci"));
    }

    #[test]
    fn repository_scope_is_exact() {
        let scope = Scope::Repository("team-a/api".into());
        assert!(scope.contains("team-a/api"));
        assert!(!scope.contains("team-a/api2"));
    }

    #[test]
    fn scope_from_spec_trims_slashes() {
        let spec = ScopeSpec {
            scope_type: ScopeType::Namespace,
            name: "team-a/".into(),
        };
        assert_eq!(Scope::from(&spec), Scope::Namespace("team-a".into()));
    }

    #[test]
    fn newest_tags_by_creation_time_then_tag() {
        let t = |s: &str| Some(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc));
        let created = HashMap::from([
            ("sha256:old".to_string(), t("2024-01-01T00:00:00Z")),
            ("sha256:new".to_string(), t("2025-01-01T00:00:00Z")),
            ("sha256:unknown".to_string(), None),
        ]);
        let images = vec![
            image("a", "sha256:old"),
            image("b", "sha256:new"),
            image("c", "sha256:new"),
            image("d", "sha256:unknown"),
        ];
        let kept = select_newest(images.clone(), &created, 2);
        assert_eq!(
            kept,
            vec![image("b", "sha256:new"), image("c", "sha256:new")]
        );
        let kept = select_newest(images, &created, 3);
        assert_eq!(
            kept,
            vec![
                image("a", "sha256:old"),
                image("b", "sha256:new"),
                image("c", "sha256:new")
            ]
        );
    }
}
