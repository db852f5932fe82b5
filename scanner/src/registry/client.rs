//! The client for the read side of the distribution API: catalog, tag lists, manifest
//! digests and image configs for discovery, manifests and streamed blobs for pulls, and
//! Harbor's project API; with anonymous, Basic, static Bearer and token-service auth.
//!
//! Inside an egress policy: every address is checked after DNS resolution (and literal
//! addresses before each request), a token realm must be on the registry's host (or one
//! the policy names) and gets the credentials only then, redirects stay on the registry's
//! origin except for blobs (which registries keep in object storage; such a hop carries no
//! credentials and is checked too), bodies read into memory are bounded, and remote reply
//! bodies are never quoted in errors.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::egress::{denial_in, EgressPolicy};
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, ACCEPT, LINK, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode, Url};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::access::{Credentials, RegistryAccess};
use super::error::{InRepository, RegistryError};

/// Media types a manifest may have; sent in `Accept` so the registry answers with the
/// digest of what it stores instead of converting (or refusing) it.
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

const INDEX_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Largest document (listing page, token reply) read into memory.
const MAX_DOCUMENT_BYTES: usize = 4 << 20;

/// Redirects followed for one request.
const MAX_REDIRECTS: usize = 10;

/// A cached bearer token.
struct Token {
    value: String,
    valid_until: Instant,
}

/// Read access to one registry. Cheap to share behind an `Arc`; tokens are cached per
/// scope for their lifetime.
pub struct RegistryClient {
    host: String,
    base: Url,
    http: reqwest::Client,
    egress: Arc<EgressPolicy>,
    credentials: Option<Credentials>,
    /// A bearer token sent as is.
    static_token: Option<String>,
    /// An OAuth2 refresh token, exchanged at the token service for access tokens.
    identity_token: Option<String>,
    tokens: Mutex<HashMap<String, Token>>,
    /// Set once the registry asked for Basic auth, so later requests send it up front.
    basic_auth: Mutex<bool>,
    /// Largest manifest, index or image configuration read (`--max-manifest-bytes`).
    max_manifest_bytes: usize,
    /// The time limits of requests, for messages (`no reply within 60s`).
    time_limits: String,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// A page of a paginated listing and the URL of the next one.
pub struct Page<T> {
    pub items: T,
    pub next: Option<Url>,
}

#[derive(Deserialize)]
struct CatalogPage {
    #[serde(default)]
    repositories: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct TagsPage {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

/// The client id sent with OAuth2 token requests.
const OAUTH_CLIENT_ID: &str = "imagewarden";

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDoc {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Deserialize)]
struct ImageConfig {
    #[serde(default)]
    created: Option<String>,
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Other(String),
}

impl RegistryClient {
    /// A client for `access` (TLS roots: the system's plus `access.ca_pem`).
    pub fn new(access: &RegistryAccess) -> Result<Self, RegistryError> {
        Self::with_timeout(access, Duration::from_secs(30))
    }

    /// A client whose requests give up after `timeout`.
    pub fn with_timeout(access: &RegistryAccess, timeout: Duration) -> Result<Self, RegistryError> {
        let connect = Duration::from_secs(10).min(timeout);
        let builder = reqwest::Client::builder()
            .connect_timeout(connect)
            .timeout(timeout);
        let limits = format!(
            "no connection within {} or no complete reply within {}",
            humantime::format_duration(connect),
            humantime::format_duration(timeout)
        );
        Self::build(access, builder, limits)
    }

    /// A client for pulls: layers stream for as long as they take, but a connection that
    /// stays silent for a minute is given up.
    pub fn for_pulls(access: &RegistryAccess) -> Result<Self, RegistryError> {
        Self::for_pulls_within(access, None)
    }

    /// [`RegistryClient::for_pulls`] whose connections and silences are also cut at
    /// `limit` when it is shorter (a scan's overall time limit).
    pub fn for_pulls_within(
        access: &RegistryAccess,
        limit: Option<Duration>,
    ) -> Result<Self, RegistryError> {
        let cap = |d: Duration| limit.map_or(d, |l| d.min(l));
        let (connect, read) = (cap(Duration::from_secs(10)), cap(Duration::from_secs(60)));
        let builder = reqwest::Client::builder()
            .connect_timeout(connect)
            .read_timeout(read);
        let limits = format!(
            "no connection within {} or no data for {}",
            humantime::format_duration(connect),
            humantime::format_duration(read)
        );
        Self::build(access, builder, limits)
    }

    fn build(
        access: &RegistryAccess,
        builder: reqwest::ClientBuilder,
        time_limits: String,
    ) -> Result<Self, RegistryError> {
        let redirect_policy = access.egress.clone();
        let mut builder = builder
            // Redirects stay on the origin they start from, so credentials never follow
            // one to another host; only blobs may move to another host (reqwest drops the
            // Authorization header on such a hop), and that host must pass the policy.
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                let previous = attempt.previous();
                let Some(first) = previous.first() else {
                    return attempt.stop();
                };
                if previous.len() > MAX_REDIRECTS {
                    return attempt.stop();
                }
                if first.origin() == attempt.url().origin() {
                    return attempt.follow();
                }
                if !first.path().contains("/blobs/") {
                    return attempt.stop();
                }
                if let Err(denial) = redirect_policy.check_url(attempt.url()) {
                    return attempt.error(denial);
                }
                attempt.follow()
            }))
            .user_agent(concat!("imagewarden/", env!("CARGO_PKG_VERSION")));
        builder = access.egress.apply(builder);
        if !access.insecure {
            builder = builder.https_only(true);
        }
        if let Some(pem) = &access.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
                RegistryError::Config {
                    registry: access.host.clone(),
                    message: format!("the CA Secret is not PEM certificates: {e}"),
                }
            })?;
            if certs.is_empty() {
                return Err(RegistryError::Config {
                    registry: access.host.clone(),
                    message: "the CA Secret holds no PEM certificate".into(),
                });
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().map_err(|e| RegistryError::Config {
            registry: access.host.clone(),
            message: format!("cannot build an HTTP client: {}", error_chain(&e)),
        })?;
        Ok(Self {
            host: access.host.clone(),
            base: access.base_url(),
            http,
            egress: access.egress.clone(),
            credentials: access.credentials.clone(),
            static_token: access.token.clone(),
            identity_token: access.identity_token.clone(),
            tokens: Mutex::new(HashMap::new()),
            basic_auth: Mutex::new(false),
            max_manifest_bytes: crate::budget::DEFAULT_MAX_REGISTRY_MANIFEST_BYTES as usize,
            time_limits,
        })
    }

    /// The registry's `host[:port]`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Checks that the registry answers `/v2/` with these credentials.
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let url = self.url("v2/", &[]);
        // Any scope works for the token service; the catalog scope asks for nothing.
        self.send(Method::GET, url, None, "registry:catalog:*", None)
            .await
            .map(drop)
    }

    /// One page of `/v2/_catalog`. `url` is `None` for the first page.
    pub async fn catalog_page(
        &self,
        url: Option<Url>,
        page_size: u32,
    ) -> Result<Page<Vec<String>>, RegistryError> {
        let url = url.unwrap_or_else(|| self.url("v2/_catalog", &[("n", &page_size.to_string())]));
        let response = self
            .send(Method::GET, url, None, "registry:catalog:*", None)
            .await?;
        let next = self.next_link(response.headers(), None)?;
        let page: CatalogPage = self.json(response, None).await?;
        Ok(Page {
            items: page.repositories.unwrap_or_default(),
            next,
        })
    }

    /// One page of Harbor's `/api/v2.0/projects/<project>/repositories` (Basic auth, as
    /// Harbor's API takes it). `url` is `None` for the first page.
    pub async fn harbor_repositories_page(
        &self,
        project: &str,
        url: Option<Url>,
        page_size: u32,
    ) -> Result<Page<Vec<String>>, RegistryError> {
        #[derive(Deserialize)]
        struct HarborRepository {
            name: String,
        }
        // Harbor caps page_size at 100.
        let page_size = page_size.clamp(1, 100).to_string();
        let url = url.unwrap_or_else(|| {
            self.url(
                &format!("api/v2.0/projects/{project}/repositories"),
                &[("page", "1"), ("page_size", &page_size)],
            )
        });
        self.check_egress(&url)?;
        let mut request = self.http.get(url).header(ACCEPT, "application/json");
        if let Some(c) = &self.credentials {
            request = request.basic_auth(&c.username, Some(&c.password));
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(&e, None))?;
        if !response.status().is_success() {
            return Err(self.status_error(response, None).await);
        }
        let next = self.next_link(response.headers(), None)?;
        let page: Vec<HarborRepository> = self.json(response, None).await?;
        Ok(Page {
            items: page.into_iter().map(|r| r.name).collect(),
            next,
        })
    }

    /// One page of `/v2/<repository>/tags/list`. `url` is `None` for the first page.
    pub async fn tags_page(
        &self,
        repository: &str,
        url: Option<Url>,
        page_size: u32,
    ) -> Result<Page<Vec<String>>, RegistryError> {
        let url = url.unwrap_or_else(|| {
            self.url(
                &format!("v2/{repository}/tags/list"),
                &[("n", &page_size.to_string())],
            )
        });
        let response = self.get_in(repository, url, None).await?;
        let next = self.next_link(response.headers(), Some(repository))?;
        let page: TagsPage = self.json(response, Some(repository)).await?;
        Ok(Page {
            items: page.tags.unwrap_or_default(),
            next,
        })
    }

    /// The manifest digest `repository:tag` points at (`HEAD /v2/<name>/manifests/<tag>`,
    /// header `Docker-Content-Digest`), for any of [`MANIFEST_MEDIA_TYPES`]. Where HEAD
    /// gives no digest, the manifest is read and hashed.
    pub async fn resolve_digest(
        &self,
        repository: &str,
        tag: &str,
    ) -> Result<String, RegistryError> {
        let url = self.url(&format!("v2/{repository}/manifests/{tag}"), &[]);
        let accept = MANIFEST_MEDIA_TYPES.join(", ");
        let scope = pull_scope(repository);
        let head = self
            .send(
                Method::HEAD,
                url.clone(),
                Some(&accept),
                &scope,
                Some(repository),
            )
            .await;
        match head {
            Ok(response) => {
                if let Some(digest) = content_digest(response.headers()) {
                    return Ok(digest);
                }
            }
            // Some registries do not implement HEAD on manifests.
            Err(RegistryError::Http { status: 405, .. }) => {}
            Err(e) => return Err(e),
        }
        // No digest header: read the manifest and hash it, as the registry would.
        let response = self
            .send(Method::GET, url, Some(&accept), &scope, Some(repository))
            .await?;
        if let Some(digest) = content_digest(response.headers()) {
            return Ok(digest);
        }
        let body = self.body(response, Some(repository)).await?;
        Ok(format!("sha256:{}", hex::encode(Sha256::digest(&body))))
    }

    /// The `created` time of the image `repository@digest`; for an index, of its
    /// linux/amd64 image (or its first image). `None` when the config has no time.
    pub async fn image_created(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<Option<DateTime<Utc>>, RegistryError> {
        let mut manifest = self.manifest(repository, digest).await?;
        if is_index(&manifest) {
            let children = manifest.manifests.take().unwrap_or_default();
            let chosen = children
                .iter()
                .find(|d| {
                    d.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                })
                .or_else(|| {
                    // Skip attestation manifests (platform unknown/unknown).
                    children.iter().find(|d| {
                        d.platform.as_ref().is_none_or(|p| p.os != "unknown")
                            && !d
                                .media_type
                                .as_deref()
                                .is_some_and(|m| INDEX_MEDIA_TYPES.contains(&m))
                    })
                });
            let Some(chosen) = chosen else {
                return Ok(None);
            };
            manifest = self.manifest(repository, &chosen.digest).await?;
        }
        let Some(config) = manifest.config else {
            return Ok(None);
        };
        let url = self.url(&format!("v2/{repository}/blobs/{}", config.digest), &[]);
        let response = self.get_in(repository, url, None).await?;
        let config: ImageConfig = self.json(response, Some(repository)).await?;
        Ok(config
            .created
            .and_then(|c| DateTime::parse_from_rfc3339(&c).ok())
            .map(|c| c.with_timezone(&Utc)))
    }

    async fn manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<ManifestDoc, RegistryError> {
        let url = self.url(&format!("v2/{repository}/manifests/{reference}"), &[]);
        let accept = MANIFEST_MEDIA_TYPES.join(", ");
        let response = self.get_in(repository, url, Some(&accept)).await?;
        self.json(response, Some(repository)).await
    }

    /// This client with manifests, indexes and image configurations bounded to `n` bytes
    /// (`--max-manifest-bytes`).
    pub fn with_max_manifest_bytes(mut self, n: u64) -> Self {
        self.max_manifest_bytes = usize::try_from(n).unwrap_or(usize::MAX);
        self
    }

    /// The manifest `reference` (tag or digest) of `repository` as stored, accepting the
    /// `accept` media types, and its digest (the registry's `Docker-Content-Digest`, else
    /// the hash of what was read).
    pub async fn manifest_bytes(
        &self,
        repository: &str,
        reference: &str,
        accept: &[&str],
    ) -> Result<(Vec<u8>, String), RegistryError> {
        let url = self.url(&format!("v2/{repository}/manifests/{reference}"), &[]);
        let response = self
            .get_in(repository, url, Some(&accept.join(", ")))
            .await?;
        let header = content_digest(response.headers());
        let body = self.manifest_body(response, repository).await?;
        let digest =
            header.unwrap_or_else(|| format!("sha256:{}", hex::encode(Sha256::digest(&body))));
        Ok((body, digest))
    }

    /// The blob `digest` of `repository`, as a response whose body the caller streams.
    pub async fn blob(&self, repository: &str, digest: &str) -> Result<Response, RegistryError> {
        let url = self.url(&format!("v2/{repository}/blobs/{digest}"), &[]);
        self.get_in(repository, url, None).await
    }

    /// A small blob (an image configuration), read whole within the document bound.
    pub async fn small_blob(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        let response = self.blob(repository, digest).await?;
        self.manifest_body(response, repository).await
    }

    /// GET within `repository`, with its pull scope.
    async fn get_in(
        &self,
        repository: &str,
        url: Url,
        accept: Option<&str>,
    ) -> Result<Response, RegistryError> {
        self.send(
            Method::GET,
            url,
            accept,
            &pull_scope(repository),
            Some(repository),
        )
        .await
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Url {
        let mut url = self.base.join(path).expect("registry paths are relative");
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// The `rel="next"` target of a `Link` header, resolved against the registry; a link to
    /// another origin is refused so credentials never leave the registry.
    fn next_link(
        &self,
        headers: &HeaderMap,
        repository: Option<&str>,
    ) -> Result<Option<Url>, RegistryError> {
        let Some(target) = headers
            .get_all(LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_link_target)
        else {
            return Ok(None);
        };
        let url = self
            .base
            .join(&target)
            .map_err(|e| RegistryError::Protocol {
                registry: self.host.clone(),
                repository: InRepository(repository.map(str::to_string)),
                message: format!("bad Link header target {target:?}: {e}"),
            })?;
        if url.origin() != self.base.origin() {
            return Err(RegistryError::Protocol {
                registry: self.host.clone(),
                repository: InRepository(repository.map(str::to_string)),
                message: format!("the next-page Link points to another origin: {url}"),
            });
        }
        Ok(Some(url))
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        response: Response,
        repository: Option<&str>,
    ) -> Result<T, RegistryError> {
        let url = response.url().to_string();
        let body = self.body(response, repository).await?;
        // serde_json's message may quote the body; only where it went wrong is kept.
        serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
            registry: self.host.clone(),
            repository: InRepository(repository.map(str::to_string)),
            message: format!(
                "{url} did not return the expected JSON ({} at line {} column {})",
                match e.classify() {
                    serde_json::error::Category::Io => "read error",
                    serde_json::error::Category::Syntax => "syntax error",
                    serde_json::error::Category::Data => "unexpected content",
                    serde_json::error::Category::Eof => "truncated",
                },
                e.line(),
                e.column()
            ),
        })
    }

    async fn body(
        &self,
        response: Response,
        repository: Option<&str>,
    ) -> Result<Vec<u8>, RegistryError> {
        self.body_within(response, repository, MAX_DOCUMENT_BYTES, "")
            .await
    }

    /// A manifest's, index's or configuration's body, within `--max-manifest-bytes`.
    async fn manifest_body(
        &self,
        response: Response,
        repository: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        self.body_within(
            response,
            Some(repository),
            self.max_manifest_bytes,
            " (--max-manifest-bytes)",
        )
        .await
    }

    /// A body of at most `limit` bytes; `flag` names what sets the limit.
    async fn body_within(
        &self,
        mut response: Response,
        repository: Option<&str>,
        limit: usize,
        flag: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(&e, repository))?
        {
            if body.len() + chunk.len() > limit {
                return Err(RegistryError::Protocol {
                    registry: self.host.clone(),
                    repository: InRepository(repository.map(str::to_string)),
                    message: format!("{} returned more than {limit} bytes{flag}", response.url()),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Sends a request, answering auth challenges once: Basic with the credentials, or a
    /// token for `scope` from the Bearer realm. Returns only successful responses.
    async fn send(
        &self,
        method: Method,
        url: Url,
        accept: Option<&str>,
        scope: &str,
        repository: Option<&str>,
    ) -> Result<Response, RegistryError> {
        self.send_body(method, url, accept, None, scope, repository)
            .await
    }

    /// [`RegistryClient::send`] with a body and its content type (pushes).
    async fn send_body(
        &self,
        method: Method,
        url: Url,
        accept: Option<&str>,
        body: Option<(&bytes::Bytes, &str)>,
        scope: &str,
        repository: Option<&str>,
    ) -> Result<Response, RegistryError> {
        let mut challenged = false;
        let mut retries = 0;
        self.check_egress(&url)?;
        loop {
            let mut request = self.http.request(method.clone(), url.clone());
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some((body, content_type)) = body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(body.clone());
            }
            if let Some(token) = &self.static_token {
                request = request.bearer_auth(token);
            } else if let Some(token) = self.cached_token(scope) {
                request = request.bearer_auth(token);
            } else if *self.basic_auth.lock().expect("lock") {
                if let Some(c) = &self.credentials {
                    request = request.basic_auth(&c.username, Some(&c.password));
                }
            }
            let response = request
                .send()
                .await
                .map_err(|e| self.transport_error(&e, repository))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if retryable(status) && retries < MAX_RETRIES {
                let delay = retry_delay(response.headers(), retries);
                retries += 1;
                tracing::debug!(%url, %status, ?delay, "registry busy; retrying");
                tokio::time::sleep(delay).await;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(parse_challenge);
                match challenge {
                    Some(Challenge::Basic) if self.credentials.is_some() => {
                        *self.basic_auth.lock().expect("lock") = true;
                        continue;
                    }
                    Some(Challenge::Bearer {
                        realm,
                        service,
                        scope: challenge_scope,
                    }) if self.static_token.is_none() => {
                        // The registry's own scope is authoritative; ours is the fallback.
                        let wanted = challenge_scope.unwrap_or_else(|| scope.to_string());
                        self.fetch_token(&realm, service.as_deref(), &wanted, scope, repository)
                            .await?;
                        continue;
                    }
                    _ => {}
                }
            }
            return Err(self.status_error(response, repository).await);
        }
    }

    fn cached_token(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().expect("lock");
        tokens
            .get(scope)
            .filter(|t| t.valid_until > Instant::now())
            .map(|t| t.value.clone())
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        wanted_scope: &str,
        cache_scope: &str,
        repository: Option<&str>,
    ) -> Result<(), RegistryError> {
        let mut url = Url::parse(realm).map_err(|_| RegistryError::Protocol {
            registry: self.host.clone(),
            repository: InRepository(repository.map(str::to_string)),
            message: "the Bearer challenge's realm is not a URL".into(),
        })?;
        self.check_realm(&url, repository)?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            for scope in wanted_scope.split(' ').filter(|s| !s.is_empty()) {
                query.append_pair("scope", scope);
            }
        }
        let request = match &self.identity_token {
            // The OAuth2 flow of the distribution token spec: the refresh token in a form
            // POSTed to the realm, never in the URL.
            Some(refresh_token) => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", refresh_token)
                    .append_pair("client_id", OAUTH_CLIENT_ID);
                if let Some(service) = service {
                    form.append_pair("service", service);
                }
                form.append_pair("scope", wanted_scope);
                let mut post = url.clone();
                post.set_query(None);
                self.http
                    .post(post)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(form.finish())
            }
            None => {
                let mut get = self.http.get(url);
                if let Some(c) = &self.credentials {
                    get = get.basic_auth(&c.username, Some(&c.password));
                }
                get
            }
        };
        let requested = Instant::now();
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(&e, repository))?;
        if !response.status().is_success() {
            return Err(self.status_error(response, repository).await);
        }
        let token: TokenResponse = self.json(response, repository).await?;
        let value = token
            .token
            .or(token.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Protocol {
                registry: self.host.clone(),
                repository: InRepository(repository.map(str::to_string)),
                message: format!(
                    "the token service {} returned no token",
                    url_without_query(realm)
                ),
            })?;
        // The distribution token spec's default lifetime is 60 s; renew a little early.
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(60).max(1));
        let valid_until = requested + lifetime.saturating_sub(Duration::from_secs(5));
        self.tokens
            .lock()
            .expect("lock")
            .insert(cache_scope.to_string(), Token { value, valid_until });
        Ok(())
    }

    /// Refuses a URL whose literal address the egress policy denies.
    fn check_egress(&self, url: &Url) -> Result<(), RegistryError> {
        self.egress
            .check_url(url)
            .map_err(|denial| RegistryError::EgressDenied {
                registry: self.host.clone(),
                reason: denial.message,
            })
    }

    /// A token realm must be on the registry's host (or one the egress policy names) and
    /// use TLS when the registry does: the rule's credentials are sent there.
    fn check_realm(&self, realm: &Url, repository: Option<&str>) -> Result<(), RegistryError> {
        let registry_host = self.base.host_str().unwrap_or_default();
        let realm_host = realm.host_str().unwrap_or_default();
        let refuse = |message: String| RegistryError::Protocol {
            registry: self.host.clone(),
            repository: InRepository(repository.map(str::to_string)),
            message,
        };
        if !self.egress.may_follow(registry_host, realm_host) {
            return Err(refuse(format!(
                "the Bearer challenge points the token realm at another host ({realm_host}); \
                 no credentials were sent there. A cluster administrator may allow that host \
                 in the operator's egress allow list"
            )));
        }
        if !matches!(realm.scheme(), "http" | "https")
            || (self.base.scheme() == "https" && realm.scheme() != "https")
        {
            return Err(refuse(format!(
                "the Bearer challenge's token realm on {realm_host} does not use {}; no \
                 credentials were sent there",
                self.base.scheme()
            )));
        }
        self.check_egress(realm)
    }

    fn transport_error(&self, error: &reqwest::Error, repository: Option<&str>) -> RegistryError {
        if let Some(denial) = denial_in(error) {
            return RegistryError::EgressDenied {
                registry: self.host.clone(),
                reason: denial.message.clone(),
            };
        }
        let mut reason = error_chain(error);
        if error.is_timeout() {
            reason = format!("timed out ({}): {reason}", self.time_limits);
        }
        let lower = reason.to_ascii_lowercase();
        if error.is_connect()
            && ["certificate", "tls", "handshake", "corrupt message"]
                .iter()
                .any(|w| lower.contains(w))
        {
            RegistryError::Tls {
                registry: self.host.clone(),
                reason,
            }
        } else if error.is_connect() || error.is_timeout() || error.is_request() {
            RegistryError::Unreachable {
                registry: self.host.clone(),
                reason,
            }
        } else {
            RegistryError::Protocol {
                registry: self.host.clone(),
                repository: InRepository(repository.map(str::to_string)),
                message: reason,
            }
        }
    }

    async fn status_error(&self, response: Response, repository: Option<&str>) -> RegistryError {
        let status = response.status();
        let url = response.url().to_string();
        if status.is_redirection() {
            return RegistryError::Protocol {
                registry: self.host.clone(),
                repository: InRepository(repository.map(str::to_string)),
                message: format!(
                    "{url} redirected (HTTP {}) to another host, or too often; redirects are \
                     followed only within the registry",
                    status.as_u16()
                ),
            };
        }
        let message = error_message(response).await;
        let registry = self.host.clone();
        let repository = InRepository(repository.map(str::to_string));
        match status {
            StatusCode::UNAUTHORIZED => RegistryError::Unauthorized {
                registry,
                repository,
                status: status.as_u16(),
                message: if self.credentials.is_none()
                    && self.static_token.is_none()
                    && self.identity_token.is_none()
                {
                    format!("{message} (no credentials are configured)")
                } else {
                    message
                },
            },
            StatusCode::FORBIDDEN => RegistryError::Forbidden {
                registry,
                repository,
                status: status.as_u16(),
                message,
            },
            StatusCode::NOT_FOUND => RegistryError::NotFound {
                registry,
                repository,
                message,
            },
            _ => RegistryError::Http {
                registry,
                repository,
                status: status.as_u16(),
                url,
                message,
            },
        }
    }
}

/// The write side: blobs and manifests pushed (`imagewarden fix`). Upload locations must
/// stay on the registry's origin, so the credentials never go elsewhere.
impl RegistryClient {
    /// Whether `repository` has the blob `digest`.
    pub async fn has_blob(&self, repository: &str, digest: &str) -> Result<bool, RegistryError> {
        let url = self.url(&format!("v2/{repository}/blobs/{digest}"), &[]);
        match self
            .send(
                Method::HEAD,
                url,
                None,
                &push_scope(repository),
                Some(repository),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(RegistryError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Uploads `data` as the blob `digest` of `repository` (one POST, one PUT), unless the
    /// repository has it already.
    pub async fn push_blob(
        &self,
        repository: &str,
        digest: &str,
        data: bytes::Bytes,
    ) -> Result<(), RegistryError> {
        if self.has_blob(repository, digest).await? {
            return Ok(());
        }
        let scope = push_scope(repository);
        let url = self.url(&format!("v2/{repository}/blobs/uploads/"), &[]);
        let started = self
            .send(Method::POST, url, None, &scope, Some(repository))
            .await?;
        let mut location = self.upload_location(started.headers(), repository)?;
        location.query_pairs_mut().append_pair("digest", digest);
        self.send_body(
            Method::PUT,
            location,
            None,
            Some((&data, "application/octet-stream")),
            &scope,
            Some(repository),
        )
        .await?;
        Ok(())
    }

    /// Mounts the blob `digest` of `from` into `repository` (same registry); `false` when
    /// the registry started an upload instead (it would not mount).
    pub async fn mount_blob(
        &self,
        repository: &str,
        digest: &str,
        from: &str,
    ) -> Result<bool, RegistryError> {
        if self.has_blob(repository, digest).await? {
            return Ok(true);
        }
        let url = self.url(
            &format!("v2/{repository}/blobs/uploads/"),
            &[("mount", digest), ("from", from)],
        );
        let scope = format!("{} repository:{from}:pull", push_scope(repository));
        let response = self
            .send(Method::POST, url, None, &scope, Some(repository))
            .await?;
        Ok(response.status() == StatusCode::CREATED)
    }

    /// Puts `manifest` (of `media_type`) as `reference` of `repository`; returns its digest.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        manifest: bytes::Bytes,
        media_type: &str,
    ) -> Result<String, RegistryError> {
        let url = self.url(&format!("v2/{repository}/manifests/{reference}"), &[]);
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&manifest)));
        self.send_body(
            Method::PUT,
            url,
            None,
            Some((&manifest, media_type)),
            &push_scope(repository),
            Some(repository),
        )
        .await?;
        Ok(digest)
    }

    /// The `Location` of a started upload, resolved against the registry and kept on its
    /// origin.
    fn upload_location(&self, headers: &HeaderMap, repository: &str) -> Result<Url, RegistryError> {
        let refuse = |message: String| RegistryError::Protocol {
            registry: self.host.clone(),
            repository: InRepository(Some(repository.to_string())),
            message,
        };
        let location = headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| refuse("the upload was started without a Location".into()))?;
        let url = self
            .base
            .join(location)
            .map_err(|_| refuse("the upload Location is not a URL".into()))?;
        if url.origin() != self.base.origin() {
            return Err(refuse(
                "the upload Location points to another origin; nothing was sent there".into(),
            ));
        }
        Ok(url)
    }
}

fn push_scope(repository: &str) -> String {
    format!("repository:{repository}:pull,push")
}

/// What the registry's error body says, in our words: the distribution error codes it
/// names (`{"errors":[{"code":"NAME_UNKNOWN"}]}`) mapped to fixed text, else the status's
/// reason. Nothing of the body itself is quoted: it may come from any server the registry
/// address leads to, and status and Events are readable by the rule's tenants.
async fn error_message(response: Response) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
    }
    let status = response.status();
    let body = bounded_body(response, 64 * 1024).await;
    let mut known: Vec<&'static str> = serde_json::from_slice::<Errors>(&body)
        .map(|e| {
            e.errors
                .iter()
                .filter_map(|e| distribution_error_text(&e.code))
                .collect()
        })
        .unwrap_or_default();
    known.dedup();
    if known.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no reason given")
            .to_string()
    } else {
        known.join("; ")
    }
}

/// At most `limit` bytes of a body (an error body is only looked at, never quoted).
async fn bounded_body(mut response: Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= limit {
            body.truncate(limit);
            break;
        }
    }
    body
}

/// Fixed text for the error codes of the distribution specification.
fn distribution_error_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "BLOB_UNKNOWN" => "BLOB_UNKNOWN: blob unknown to the registry",
        "DIGEST_INVALID" => "DIGEST_INVALID: digest did not match the content",
        "MANIFEST_BLOB_UNKNOWN" => "MANIFEST_BLOB_UNKNOWN: a blob the manifest names is unknown",
        "MANIFEST_INVALID" => "MANIFEST_INVALID: manifest invalid",
        "MANIFEST_UNKNOWN" => "MANIFEST_UNKNOWN: manifest unknown",
        "NAME_INVALID" => "NAME_INVALID: invalid repository name",
        "NAME_UNKNOWN" => "NAME_UNKNOWN: repository name not known to the registry",
        "SIZE_INVALID" => "SIZE_INVALID: content length did not match",
        "TAG_INVALID" => "TAG_INVALID: manifest tag did not match the URI",
        "UNAUTHORIZED" => "UNAUTHORIZED: authentication required",
        "DENIED" => "DENIED: requested access to the resource is denied",
        "UNSUPPORTED" => "UNSUPPORTED: the operation is unsupported",
        "TOOMANYREQUESTS" => "TOOMANYREQUESTS: too many requests",
        "PAGINATION_NUMBER_INVALID" => "PAGINATION_NUMBER_INVALID: invalid number of results",
        _ => return None,
    })
}

/// `scheme://host[:port]/path` without query and credentials, for messages.
fn url_without_query(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(not a URL)".to_string(),
    }
}

/// An error and its sources, joined by `: `.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    let mut seen = HashSet::new();
    while let Some(e) = source {
        let part = e.to_string();
        if seen.insert(part.clone()) && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// Retries of one request that met a rate limit or an overloaded registry.
const MAX_RETRIES: u32 = 2;

/// Longest wait honoured from a `Retry-After` header.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// Statuses worth another try after a pause (every request here is a GET or a HEAD).
fn retryable(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
}

/// `Retry-After` in seconds (capped), else 0.5 s doubled per retry.
fn retry_delay(headers: &HeaderMap, retries: u32) -> Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| Duration::from_secs(secs).min(MAX_RETRY_DELAY))
        .unwrap_or_else(|| Duration::from_millis(500) * 2u32.pow(retries))
}

/// A valid `Docker-Content-Digest` header value.
fn content_digest(headers: &HeaderMap) -> Option<String> {
    headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|d| is_digest(d))
        .map(str::to_string)
}

fn is_index(manifest: &ManifestDoc) -> bool {
    manifest
        .media_type
        .as_deref()
        .is_some_and(|m| INDEX_MEDIA_TYPES.contains(&m))
        || (manifest.config.is_none() && manifest.manifests.is_some())
}

fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

/// `algorithm:hex` with a known algorithm and the right length.
pub fn is_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let len = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == len
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The target of the `rel="next"` entry of one `Link` header value
/// (`</v2/_catalog?last=b&n=2>; rel="next"`).
pub fn next_link_target(header: &str) -> Option<String> {
    header.split(',').find_map(|entry| {
        let (target, params) = entry.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let is_next = params.split(';').any(|p| {
            p.trim()
                .split_once('=')
                .is_some_and(|(k, v)| k.trim() == "rel" && v.trim().trim_matches('"') == "next")
        });
        is_next.then(|| target.to_string())
    })
}

/// Parses a `WWW-Authenticate` header value.
pub fn parse_challenge(header: &str) -> Challenge {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Challenge::Basic;
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Challenge::Other(header.to_string());
    }
    let params: HashMap<String, String> = parse_auth_params(params).into_iter().collect();
    match params.get("realm") {
        Some(realm) => Challenge::Bearer {
            realm: realm.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        },
        None => Challenge::Other(header.to_string()),
    }
}

/// The parameters of a `WWW-Authenticate` challenge, `k="v",k2=v2`, with commas allowed
/// inside quotes (scopes hold `pull,push`); keys lower-cased.
pub fn parse_auth_params(params: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = params.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() || chars.next().is_none() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        out.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_keeps_quoted_commas() {
        let header = r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:team-a/api:pull,push""#;
        assert_eq!(
            parse_challenge(header),
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:team-a/api:pull,push".into()),
            }
        );
    }

    #[test]
    fn auth_params_keep_quoted_commas() {
        let p = parse_auth_params(
            r#"realm="https://r.example/token",service="r",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            p,
            [
                ("realm".into(), "https://r.example/token".into()),
                ("service".into(), "r".into()),
                ("scope".into(), "repository:a/b:pull,push".into()),
            ]
        );
    }

    #[test]
    fn basic_and_unknown_challenges() {
        assert_eq!(parse_challenge(r#"Basic realm="x""#), Challenge::Basic);
        assert!(matches!(parse_challenge("Negotiate"), Challenge::Other(_)));
        assert!(matches!(
            parse_challenge("Bearer service=x"),
            Challenge::Other(_)
        ));
    }

    #[test]
    fn next_link_is_found_among_several() {
        assert_eq!(
            next_link_target(r#"</v2/_catalog?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/_catalog?last=b&n=2")
        );
        assert_eq!(
            next_link_target(r#"<https://r/x?p=1>; rel="prev", <https://r/x?p=3>; rel=next"#)
                .as_deref(),
            Some("https://r/x?p=3")
        );
        assert_eq!(next_link_target(r#"</x>; rel="prev""#), None);
    }

    #[test]
    fn digests_are_validated() {
        assert!(is_digest(&format!("sha256:{}", "a".repeat(64))));
        assert!(!is_digest(&format!("sha256:{}", "A".repeat(64))));
        assert!(!is_digest("sha256:abc"));
        assert!(!is_digest("md5:abc"));
    }
}
