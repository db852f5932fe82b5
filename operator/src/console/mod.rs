//! The status API (`/api/v1/...`, JSON) on its own HTTPS port, served by every replica
//! from the informer caches. Callers send a Kubernetes bearer token: it is checked with a
//! `TokenReview`, and every read or action with a `SubjectAccessReview` for the caller on
//! the resource and namespace it concerns. Actions (scan now, fix, exceptions) are made with
//! the caller's own token, so the API server applies the caller's rights and records the
//! caller in its audit log; the operator needs no write rights for them.

pub mod auth;
pub mod views;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde::Deserialize;

use self::auth::{Access, AuthError, Authorizer, Caller, Scope};
use self::views::{FindingFilter, ImageQuery, Paging};
use crate::context::Context;
use crate::crd::{ImageFix, ImageScanResult, ScanTask, VulnerabilityException};
use crate::policy::admission::AdmissionTls;
use crate::policy::server::Caches;

/// Longest query parameter value accepted.
const MAX_PARAM: usize = 512;
/// Largest request body (an exception) accepted.
const MAX_BODY: usize = 64 * 1024;

/// Flags of the status API.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ApiArgs {
    /// Address of the status API (HTTPS), e.g. `0.0.0.0:8443`. Unset: no API.
    #[arg(long, env = "IMAGEWARDEN_API_ADDR")]
    pub api_addr: Option<SocketAddr>,
    /// PEM certificate of the API (a mounted `kubernetes.io/tls` Secret), reloaded when
    /// it changes.
    #[arg(
        long,
        env = "IMAGEWARDEN_API_TLS_CERT_FILE",
        requires = "api_tls_key_file"
    )]
    pub api_tls_cert_file: Option<PathBuf>,
    /// PEM private key of the API's certificate.
    #[arg(
        long,
        env = "IMAGEWARDEN_API_TLS_KEY_FILE",
        requires = "api_tls_cert_file"
    )]
    pub api_tls_key_file: Option<PathBuf>,
    /// The operator makes the API's CA and certificate itself and keeps them in this
    /// Secret of its namespace (as for the admission webhook); clients trust its `ca.crt`.
    #[arg(long, env = "IMAGEWARDEN_API_CERT_SECRET")]
    pub api_cert_secret: Option<String>,
    /// DNS names of the operator-made API certificate (comma-separated).
    #[arg(
        long,
        env = "IMAGEWARDEN_API_CERT_DNS_NAMES",
        value_delimiter = ',',
        requires = "api_cert_secret"
    )]
    pub api_cert_dns_names: Vec<String>,
    /// IP addresses of the operator-made API certificate (comma-separated).
    #[arg(
        long,
        env = "IMAGEWARDEN_API_CERT_IP_ADDRESSES",
        value_delimiter = ',',
        requires = "api_cert_secret"
    )]
    pub api_cert_ip_addresses: Vec<std::net::IpAddr>,
}

/// Where the API listens and its certificate.
#[derive(Clone, Debug)]
pub struct ApiServerConfig {
    pub addr: SocketAddr,
    pub tls: AdmissionTls,
}

impl ApiArgs {
    /// The server settings, `None` when the API is off; the error names the flag to set.
    pub fn server_config(&self) -> Result<Option<ApiServerConfig>, String> {
        let Some(addr) = self.api_addr else {
            if self.api_cert_secret.is_some() || self.api_tls_cert_file.is_some() {
                return Err("--api-cert-secret and --api-tls-cert-file need --api-addr".into());
            }
            return Ok(None);
        };
        let tls = match (
            &self.api_tls_cert_file,
            &self.api_tls_key_file,
            &self.api_cert_secret,
        ) {
            (Some(cert), Some(key), None) => AdmissionTls::Files {
                cert_file: cert.clone(),
                key_file: key.clone(),
            },
            (None, None, Some(secret)) => {
                let certs = crate::policy::certs::CertSettings {
                    secret: secret.clone(),
                    dns_names: self.api_cert_dns_names.clone(),
                    ip_addresses: self.api_cert_ip_addresses.clone(),
                    ca_lifetime: std::time::Duration::from_secs(8760 * 3600),
                    cert_lifetime: std::time::Duration::from_secs(2160 * 3600),
                    webhook_configuration: None,
                };
                certs.validate().map_err(|e| {
                    e.replace("--admission-cert-secret", "--api-cert-secret")
                        .replace("--admission-cert-", "--api-cert-")
                })?;
                AdmissionTls::Operator(certs)
            }
            _ => return Err("--api-addr needs a certificate: --api-tls-cert-file and --api-tls-key-file, or --api-cert-secret (the API is served over HTTPS only: it carries bearer tokens)".into()),
        };
        Ok(Some(ApiServerConfig { addr, tls }))
    }
}

/// What every handler reads.
pub struct ApiState {
    caches: Caches,
    auth: Authorizer,
    /// The operator's connection settings; actions swap in the caller's token.
    kube_config: kube::Config,
}

/// An error answer: `{"code", "reason", "message"}`.
pub struct ApiError {
    code: StatusCode,
    message: String,
}

impl ApiError {
    fn new(code: StatusCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn forbidden(caller: &Caller, access: &Access) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            format!("{} may not {access}", caller.username),
        )
    }

    fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let code = match e {
            AuthError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(code, e.to_string())
    }
}

impl From<kube::Error> for ApiError {
    fn from(e: kube::Error) -> Self {
        match e {
            // The API server's own refusal of the caller's request, passed on.
            kube::Error::Api(s) => Self::new(
                StatusCode::from_u16(s.code).unwrap_or(StatusCode::BAD_GATEWAY),
                s.message,
            ),
            e => Self::new(StatusCode::BAD_GATEWAY, format!("Kubernetes API: {e}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "code": self.code.as_u16(),
            "reason": self.code.canonical_reason().unwrap_or_default(),
            "message": self.message,
        });
        let mut response = (self.code, Json(body)).into_response();
        if self.code == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

type ApiResult = Result<Response, ApiError>;

impl ApiState {
    async fn caller(&self, headers: &HeaderMap) -> Result<(Caller, String), ApiError> {
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or_default());
        let token = auth::bearer_token(header)?;
        Ok((self.auth.authenticate(token).await?, token.to_string()))
    }

    async fn require(&self, caller: &Caller, access: Access) -> Result<(), ApiError> {
        if self.auth.allowed(caller, &access).await? {
            Ok(())
        } else {
            Err(ApiError::forbidden(caller, &access))
        }
    }

    /// The namespaces where `caller` may list `resource`: the one asked for, or every
    /// namespace of the cluster the caller may list it in. Refused when none.
    async fn readable(
        &self,
        caller: &Caller,
        resource: &'static str,
        namespace: Option<&str>,
    ) -> Result<Scope, ApiError> {
        if let Some(ns) = namespace {
            self.require(caller, Access::imagewarden("list", resource, ns))
                .await?;
            return Ok(Scope::Some([ns.to_string()].into()));
        }
        let candidates: Vec<String> = self
            .caches
            .namespaces
            .state()
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let scope = self
            .auth
            .namespaces(caller, "list", resource, candidates)
            .await?;
        if scope.is_empty() {
            // Whether or not objects exist: a caller who may read none learns nothing.
            let any = Access::imagewarden("list", resource, "");
            return Err(ApiError::forbidden(caller, &any));
        }
        Ok(scope)
    }

    /// The objects of `store` in the namespaces where the caller may list `resource`
    /// (only `namespace` when given).
    async fn visible<K>(
        &self,
        store: &Store<K>,
        resource: &'static str,
        caller: &Caller,
        namespace: Option<&str>,
    ) -> Result<Vec<Arc<K>>, ApiError>
    where
        K: kube::Resource + Clone + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone,
    {
        let all = store.state();
        let scope = self.readable(caller, resource, namespace).await?;
        Ok(in_scope(all, &scope))
    }

    async fn results(
        &self,
        caller: &Caller,
        namespace: Option<&str>,
    ) -> Result<Vec<Arc<ImageScanResult>>, ApiError> {
        self.visible(&self.caches.results, "imagescanresults", caller, namespace)
            .await
    }

    async fn tasks(
        &self,
        caller: &Caller,
        namespace: Option<&str>,
    ) -> Result<Vec<Arc<ScanTask>>, ApiError> {
        self.visible(&self.caches.tasks, "scantasks", caller, namespace)
            .await
    }

    /// [`Self::tasks`], none when the caller may read no tasks (what is shown with them
    /// is then shown without).
    async fn tasks_if_readable(
        &self,
        caller: &Caller,
        namespace: Option<&str>,
    ) -> Result<Vec<Arc<ScanTask>>, ApiError> {
        match self.tasks(caller, namespace).await {
            Err(e) if e.code == StatusCode::FORBIDDEN => Ok(Vec::new()),
            tasks => tasks,
        }
    }

    /// A client acting as the caller.
    fn as_caller(&self, token: &str) -> Result<kube::Client, ApiError> {
        let mut config = self.kube_config.clone();
        config.auth_info = serde_json::from_value(serde_json::json!({ "token": token }))
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        kube::Client::try_from(config).map_err(ApiError::from)
    }
}

fn in_scope<K: kube::Resource>(objects: Vec<Arc<K>>, scope: &Scope) -> Vec<Arc<K>> {
    objects
        .into_iter()
        .filter(|o| scope.contains(o.meta().namespace.as_deref().unwrap_or_default()))
        .collect()
}

fn json<T: serde::Serialize>(value: T) -> ApiResult {
    Ok(Json(value).into_response())
}

/// Refuses over-long parameter values before they are looked at.
fn bounded<'a>(name: &str, value: Option<&'a str>) -> Result<Option<&'a str>, ApiError> {
    match value {
        Some(v) if v.len() > MAX_PARAM => Err(ApiError::bad_request(format!(
            "{name}: longer than {MAX_PARAM} bytes"
        ))),
        v => Ok(v),
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ListQuery {
    namespace: Option<String>,
    registry: Option<String>,
    repository: Option<String>,
    rule: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

impl ListQuery {
    fn check(&self) -> Result<Paging, ApiError> {
        for (name, value) in [
            ("namespace", &self.namespace),
            ("registry", &self.registry),
            ("repository", &self.repository),
            ("rule", &self.rule),
        ] {
            bounded(name, value.as_deref())?;
        }
        Ok(Paging::new(self.offset, self.limit))
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct StatusQuery {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

async fn scan_status(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<StatusQuery>,
) -> ApiResult {
    let (caller, _) = s.caller(&headers).await?;
    bounded("registry", Some(&q.registry))?;
    bounded("repository", Some(&q.repository))?;
    let query = ImageQuery::new(
        &q.registry,
        &q.repository,
        bounded("tag", q.tag.as_deref())?,
        bounded("digest", q.digest.as_deref())?,
    )
    .map_err(ApiError::bad_request)?;
    let results = s.results(&caller, None).await?;
    // Tasks are read where the caller may read them; a caller who may read results but
    // no tasks sees results only.
    let tasks = s.tasks_if_readable(&caller, None).await?;
    json(views::scan_status(&query, &results, &tasks))
}

async fn list_rules(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let (caller, _) = s.caller(&headers).await?;
    let paging = q.check()?;
    let mut rules = s
        .visible(
            &s.caches.rules,
            "scanrules",
            &caller,
            q.namespace.as_deref(),
        )
        .await?;
    rules.sort_by_key(|r| (r.metadata.namespace.clone(), r.metadata.name.clone()));
    // A rule's last task is shown only to callers who may read tasks there.
    let tasks = s.tasks_if_readable(&caller, q.namespace.as_deref()).await?;
    json(paging.page(rules.iter().map(|r| views::rule_view(r, &tasks)).collect()))
}

async fn get_rule(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult {
    let (caller, _) = s.caller(&headers).await?;
    s.require(
        &caller,
        Access::imagewarden("get", "scanrules", &ns).named(&name),
    )
    .await?;
    let rule = s
        .caches
        .rules
        .get(&ObjectRef::new(&name).within(&ns))
        .ok_or_else(|| ApiError::not_found(&format!("ScanRule {ns}/{name}")))?;
    let tasks = s.tasks_if_readable(&caller, Some(&ns)).await?;
    json(views::rule_view(&rule, &tasks))
}

async fn list_tasks(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let (caller, _) = s.caller(&headers).await?;
    let paging = q.check()?;
    let mut tasks = s.tasks(&caller, q.namespace.as_deref()).await?;
    if let Some(rule) = &q.rule {
        tasks.retain(|t| t.spec.rule_ref.as_ref().is_some_and(|r| &r.name == rule));
    }
    views::tasks_newest_first(&mut tasks);
    json(paging.page(tasks.iter().map(|t| views::task_view(t)).collect()))
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct TaskDetail {
    #[serde(flatten)]
    task: views::TaskView,
    images: views::Page<crate::crd::ImageProgress>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PageQuery {
    offset: Option<usize>,
    limit: Option<usize>,
}

async fn get_task(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> ApiResult {
    let (caller, _) = s.caller(&headers).await?;
    s.require(
        &caller,
        Access::imagewarden("get", "scantasks", &ns).named(&name),
    )
    .await?;
    let task = s
        .caches
        .tasks
        .get(&ObjectRef::new(&name).within(&ns))
        .ok_or_else(|| ApiError::not_found(&format!("ScanTask {ns}/{name}")))?;
    let images = task
        .status
        .as_ref()
        .map(|s| s.images.clone())
        .unwrap_or_default();
    json(TaskDetail {
        task: views::task_view(&task),
        images: Paging::new(q.offset, q.limit).page(images),
    })
}

async fn list_repositories(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let (caller, _) = s.caller(&headers).await?;
    let paging = q.check()?;
    let results = s.results(&caller, q.namespace.as_deref()).await?;
    json(paging.page(views::repositories(&results)))
}

async fn list_tags(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let (caller, _) = s.caller(&headers).await?;
    let paging = q.check()?;
    let (Some(registry), Some(repository)) = (&q.registry, &q.repository) else {
        return Err(ApiError::bad_request(
            "registry and repository are required",
        ));
    };
    let results = s.results(&caller, q.namespace.as_deref()).await?;
    let name = crate::policy::image::ImageName::new(registry, repository);
    json(paging.page(views::tags(&results, &name)))
}

async fn list_results(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let (caller, _) = s.caller(&headers).await?;
    let paging = q.check()?;
    let mut results = s.results(&caller, q.namespace.as_deref()).await?;
    if let Some(registry) = &q.registry {
        results.retain(|r| &r.spec.registry == registry);
    }
    if let Some(repository) = &q.repository {
        results.retain(|r| &r.spec.repository == repository);
    }
    views::results_newest_first(&mut results);
    json(paging.page(results.iter().map(|r| views::result_view(r)).collect()))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct FindingQuery {
    class: Option<String>,
    severity: Option<String>,
    fixable: Option<bool>,
    offset: Option<usize>,
    limit: Option<usize>,
}

#[derive(serde::Serialize)]
struct ResultDetail {
    #[serde(flatten)]
    result: views::ResultView,
    findings: views::Page<crate::crd::Finding>,
}

async fn get_result(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<FindingQuery>,
) -> ApiResult {
    let (caller, _) = s.caller(&headers).await?;
    s.require(
        &caller,
        Access::imagewarden("get", "imagescanresults", &ns).named(&name),
    )
    .await?;
    let filter = FindingFilter::parse(
        bounded("class", q.class.as_deref())?,
        bounded("severity", q.severity.as_deref())?,
        q.fixable,
    )
    .map_err(ApiError::bad_request)?;
    let result = s
        .caches
        .results
        .get(&ObjectRef::new(&name).within(&ns))
        .ok_or_else(|| ApiError::not_found(&format!("ImageScanResult {ns}/{name}")))?;
    json(ResultDetail {
        result: views::result_view(&result),
        findings: Paging::new(q.offset, q.limit).page(views::findings(&result, &filter)),
    })
}

/// `POST .../scanrules/{name}/scan`: a manual scan of everything the rule matches, as
/// the `imagewarden.io/scan-now` annotation asks for it (patched as the caller).
async fn scan_rule(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult {
    let (caller, token) = s.caller(&headers).await?;
    s.require(
        &caller,
        Access::imagewarden("patch", "scanrules", &ns).named(&name),
    )
    .await?;
    let value = format!("api-{}", chrono::Utc::now().timestamp_millis());
    let patch = serde_json::json!({"metadata": {"annotations": {
        crate::controller::scan_rule::SCAN_NOW_ANNOTATION: value,
    }}});
    Api::<crate::crd::ScanRule>::namespaced(s.as_caller(&token)?, &ns)
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    tracing::info!(rule = %name, namespace = %ns, user = %caller.username, "scan requested through the API");
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"rule": name, "namespace": ns, "scanNow": value})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScanImageRequest {
    registry: String,
    repository: String,
    tag: String,
    /// The rule whose registry settings apply; unset: the namespace's rule covering the
    /// image.
    #[serde(default)]
    rule: Option<String>,
}

/// `POST /api/v1/namespaces/{ns}/scans`: a ScanTask for one tag (created as the caller).
async fn scan_image(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(ns): Path<String>,
    Json(body): Json<ScanImageRequest>,
) -> ApiResult {
    use kube::{Resource as _, ResourceExt};
    let (caller, token) = s.caller(&headers).await?;
    s.require(&caller, Access::imagewarden("create", "scantasks", &ns))
        .await?;
    for (name, value) in [
        ("registry", &body.registry),
        ("repository", &body.repository),
        ("tag", &body.tag),
    ] {
        bounded(name, Some(value))?;
    }
    let image = crate::policy::image::ImageReference::parse(&format!(
        "{}/{}:{}",
        body.registry, body.repository, body.tag
    ))
    .map_err(|e| ApiError::bad_request(format!("not an image: {e}")))?;
    let rules = s.caches.rules.state_filter(|r| {
        r.metadata.namespace.as_deref() == Some(ns.as_str())
            && body.rule.as_ref().is_none_or(|n| r.name_any() == *n)
    });
    let mut covering: Vec<_> = rules
        .into_iter()
        .filter(|r| crate::policy::unscanned::rule_covers(&r.spec, &image))
        .collect();
    covering.sort_by_key(|r| r.name_any());
    let Some(rule) = covering.first() else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "no ScanRule of namespace {ns}{} covers {}/{}:{} (its registry, scope and tag filter decide)",
                body.rule.as_ref().map(|n| format!(" named {n}")).unwrap_or_default(),
                body.registry, body.repository, body.tag
            ),
        ));
    };
    let reference = format!("{}/{}:{}", body.registry, body.repository, body.tag);
    let suffix = crate::controller::scan_rule::short_hash(&format!(
        "{reference}@{}",
        chrono::Utc::now().timestamp_millis()
    ));
    let name = crate::controller::scan_rule::task_name(&rule.name_any(), "api", &suffix);
    let mut task = ScanTask::new(
        &name,
        crate::crd::ScanTaskSpec {
            rule_ref: Some(crate::crd::RuleRef {
                name: rule.name_any(),
            }),
            images: vec![reference],
            trigger: crate::crd::TaskTrigger::Manual,
        },
    );
    // Owned by the rule (deleted with it) without blocking its deletion, which would
    // need delete rights on the rule.
    task.metadata.owner_references = rule.controller_owner_ref(&()).map(|mut o| {
        o.block_owner_deletion = None;
        vec![o]
    });
    task.metadata.labels = Some(std::collections::BTreeMap::from([(
        "imagewarden.io/rule".to_string(),
        rule.name_any(),
    )]));
    Api::<ScanTask>::namespaced(s.as_caller(&token)?, &ns)
        .create(&PostParams::default(), &task)
        .await?;
    tracing::info!(task = %name, namespace = %ns, user = %caller.username, "scan task created through the API");
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"task": name, "namespace": ns, "rule": rule.name_any()})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExceptionRequest {
    /// Name of the VulnerabilityException; unset: generated.
    #[serde(default)]
    name: Option<String>,
    #[serde(flatten)]
    spec: crate::crd::VulnerabilityExceptionSpec,
}

/// `POST /api/v1/namespaces/{ns}/exceptions`: a VulnerabilityException (created as the
/// caller; the CRD's schema checks it).
async fn add_exception(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(ns): Path<String>,
    Json(body): Json<ExceptionRequest>,
) -> ApiResult {
    let (caller, token) = s.caller(&headers).await?;
    s.require(
        &caller,
        Access::imagewarden("create", "vulnerabilityexceptions", &ns),
    )
    .await?;
    let mut exception = VulnerabilityException::new("", body.spec);
    match body.name {
        Some(name) => exception.metadata.name = Some(name),
        None => {
            exception.metadata.name = None;
            exception.metadata.generate_name = Some("api-".into());
        }
    }
    let created = Api::<VulnerabilityException>::namespaced(s.as_caller(&token)?, &ns)
        .create(&PostParams::default(), &exception)
        .await?;
    tracing::info!(exception = ?created.metadata.name, namespace = %ns, user = %caller.username, "exception created through the API");
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"exception": created.metadata.name, "namespace": ns})),
    )
        .into_response())
}

/// `POST .../imagescanresults/{name}/fix`: the ImageFix of the result's image with its
/// rule's `spec.fix` settings, created as the caller (the name is derived from the result
/// and the settings, so pressing Fix again answers with the same fix).
async fn fix_image(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult {
    use kube::ResourceExt;
    let (caller, token) = s.caller(&headers).await?;
    s.require(
        &caller,
        Access::imagewarden("get", "imagescanresults", &ns).named(&name),
    )
    .await?;
    s.require(&caller, Access::imagewarden("create", "imagefixes", &ns))
        .await?;
    let result = s
        .caches
        .results
        .get(&ObjectRef::new(&name).within(&ns))
        .ok_or_else(|| ApiError::not_found(&format!("ImageScanResult {ns}/{name}")))?;
    let rule = result
        .labels()
        .get(crate::result::RULE_LABEL)
        .and_then(|rule| s.caches.rules.get(&ObjectRef::new(rule).within(&ns)));
    let fix = crate::controller::fix_triggers::fix_for_result(
        &name,
        result.uid().as_deref(),
        rule.as_deref(),
        "Api",
    );
    let fix_name = fix.name_any();
    let created = match Api::<ImageFix>::namespaced(s.as_caller(&token)?, &ns)
        .create(&PostParams::default(), &fix)
        .await
    {
        Ok(_) => true,
        Err(kube::Error::Api(e)) if e.code == 409 => false,
        Err(e) => return Err(e.into()),
    };
    if created {
        tracing::info!(fix = %fix_name, namespace = %ns, user = %caller.username, "image fix created through the API");
    }
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(serde_json::json!({"fix": fix_name, "namespace": ns, "created": created})),
    )
        .into_response())
}

/// `GET .../imagefixes/{name}`: an ImageFix's progress and outcome, read as the caller.
async fn get_fix(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult {
    let (caller, token) = s.caller(&headers).await?;
    s.require(
        &caller,
        Access::imagewarden("get", "imagefixes", &ns).named(&name),
    )
    .await?;
    let fix = Api::<ImageFix>::namespaced(s.as_caller(&token)?, &ns)
        .get_opt(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(&format!("ImageFix {ns}/{name}")))?;
    json(views::fix_view(&fix))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such API endpoint")
}

/// The console's files, built into the binary (nothing is fetched from elsewhere).
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    ),
    (
        "/console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
    (
        "/console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
];

/// Only the console's own files run; nothing is framed or sent elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    use axum::http::header;
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The API routes (under `/api/v1/`) and the web console (`/`).
pub fn router(caches: Caches, client: kube::Client, kube_config: kube::Config) -> Router {
    let state = Arc::new(ApiState {
        caches,
        auth: Authorizer::new(client),
        kube_config,
    });
    let mut router = Router::new();
    for (path, content_type, body) in ASSETS {
        router = router.route(path, get(move || async move { asset(content_type, body) }));
    }
    router
        .route("/api/v1/scan-status", get(scan_status))
        .route("/api/v1/scanrules", get(list_rules))
        .route("/api/v1/namespaces/{ns}/scanrules/{name}", get(get_rule))
        .route(
            "/api/v1/namespaces/{ns}/scanrules/{name}/scan",
            post(scan_rule),
        )
        .route("/api/v1/scantasks", get(list_tasks))
        .route("/api/v1/namespaces/{ns}/scantasks/{name}", get(get_task))
        .route("/api/v1/namespaces/{ns}/scans", post(scan_image))
        .route("/api/v1/repositories", get(list_repositories))
        .route("/api/v1/tags", get(list_tags))
        .route("/api/v1/imagescanresults", get(list_results))
        .route(
            "/api/v1/namespaces/{ns}/imagescanresults/{name}",
            get(get_result),
        )
        .route(
            "/api/v1/namespaces/{ns}/imagescanresults/{name}/fix",
            post(fix_image),
        )
        .route("/api/v1/namespaces/{ns}/imagefixes/{name}", get(get_fix))
        .route("/api/v1/namespaces/{ns}/exceptions", post(add_exception))
        .route("/api/v1/{*rest}", get(not_found).post(not_found))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves the API on `config.addr` over TLS from `caches` (call once they are ready).
/// Returns when listening.
pub async fn spawn(
    ctx: Arc<Context>,
    caches: Caches,
    config: ApiServerConfig,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let tls = crate::policy::server::serving_tls(&ctx, &config.tls)
        .await
        .map_err(|e| anyhow::anyhow!("status API TLS: {e}"))?;
    let kube_config = kube::Config::infer()
        .await
        .context("reading the Kubernetes connection settings for the status API")?;
    let app = router(caches, ctx.client.clone(), kube_config);
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| {
            format!(
                "binding the status API address {} (--api-addr)",
                config.addr
            )
        })?;
    tracing::info!(addr = %config.addr, "status API listening");
    let options = crate::registry::webhook::ServerOptions {
        tls: Some(tls),
        max_connections: 512,
        ..Default::default()
    };
    tokio::spawn(async move {
        if let Err(e) = crate::registry::webhook::serve_router(listener, app, options).await {
            tracing::error!(error = %e, "status API stopped");
        }
    });
    Ok(())
}
