//! The read side of the distribution API for pulls (manifests and blobs), with Basic and
//! Bearer-token auth, inside an egress policy: every address is checked after DNS
//! resolution, a token realm must be on the registry's host (or one the policy names),
//! manifests are never redirected to another host, and credentials never leave the
//! registry and its token service. Remote reply bodies are never quoted in errors.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_client::secrets::RegistryAuth;
use reqwest::header::{ACCEPT, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode, Url};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::SourceError;
use crate::egress::{denial_in, EgressPolicy};

/// Largest manifest, index or token reply read into memory.
const MAX_DOCUMENT_BYTES: usize = 4 << 20;
/// Redirects followed for one request.
const MAX_REDIRECTS: usize = 10;

/// A puller for one repository of one registry.
pub(crate) struct Puller {
    http: reqwest::Client,
    base: Url,
    repository: String,
    /// The image reference, for messages.
    what: String,
    auth: RegistryAuth,
    egress: Arc<EgressPolicy>,
    /// The token from the Bearer realm, once fetched.
    token: Mutex<Option<String>>,
    /// Set once the registry asked for Basic auth.
    basic: Mutex<bool>,
}

#[derive(Deserialize)]
struct TokenReply {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

impl Puller {
    /// `registry` is `host[:port]` as the API is reached (Docker Hub already resolved).
    pub(crate) fn new(
        registry: &str,
        repository: &str,
        what: &str,
        insecure: bool,
        ca_pem: Option<Vec<u8>>,
        auth: RegistryAuth,
        egress: Arc<EgressPolicy>,
    ) -> Result<Self, SourceError> {
        let scheme = if insecure { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{registry}/")).map_err(|_| {
            SourceError::Invalid(format!("{what}: {registry} is not a registry host"))
        })?;
        let redirect_policy = egress.clone();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("imagewarden/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                let previous = attempt.previous();
                if previous.len() > MAX_REDIRECTS {
                    return attempt.stop();
                }
                let Some(first) = previous.first() else {
                    return attempt.stop();
                };
                if first.origin() == attempt.url().origin() {
                    return attempt.follow();
                }
                // Only blobs may move to another host (registries keep them in object
                // storage); reqwest drops the Authorization header on such a hop.
                if !first.path().contains("/blobs/") {
                    return attempt.stop();
                }
                if let Err(denial) = redirect_policy.check_url(attempt.url()) {
                    return attempt.error(denial);
                }
                attempt.follow()
            }));
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    SourceError::Invalid(format!("{what}: the CA file holds no PEM certificate"))
                })?;
            builder = builder.tls_certs_merge(certs);
        }
        builder = egress.apply(builder);
        let http = builder.build().map_err(|e| {
            SourceError::Invalid(format!("{what}: cannot build an HTTP client: {e}"))
        })?;
        Ok(Self {
            http,
            base,
            repository: repository.to_string(),
            what: what.to_string(),
            auth,
            egress,
            token: Mutex::new(None),
            basic: Mutex::new(false),
        })
    }

    /// The manifest `reference` (tag or digest) and its digest (the registry's
    /// `Docker-Content-Digest`, else the hash of what was read).
    pub(crate) async fn manifest(
        &self,
        reference: &str,
        accept: &[&str],
    ) -> Result<(Vec<u8>, String), SourceError> {
        let url = self.url(&format!("manifests/{reference}"))?;
        let response = self.get(url, Some(&accept.join(", "))).await?;
        let header = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string());
        let body = self.read_bounded(response, "manifest").await?;
        let digest = header
            .filter(|d| d.starts_with("sha256:") && d.len() == 71)
            .unwrap_or_else(|| format!("sha256:{}", hex::encode(Sha256::digest(&body))));
        Ok((body, digest))
    }

    /// A blob, as a response whose body is streamed.
    pub(crate) async fn blob(&self, digest: &str) -> Result<Response, SourceError> {
        let url = self.url(&format!("blobs/{digest}"))?;
        self.get(url, None).await
    }

    /// A small blob (the image configuration), read whole.
    pub(crate) async fn small_blob(&self, digest: &str) -> Result<Vec<u8>, SourceError> {
        let response = self.blob(digest).await?;
        self.read_bounded(response, "configuration blob").await
    }

    fn url(&self, tail: &str) -> Result<Url, SourceError> {
        self.base
            .join(&format!("v2/{}/{tail}", self.repository))
            .map_err(|_| {
                SourceError::Invalid(format!("{}: not a valid repository path", self.what))
            })
    }

    fn error(&self, message: impl Into<String>) -> SourceError {
        SourceError::Registry {
            reference: self.what.clone(),
            message: message.into(),
        }
    }

    fn check(&self, url: &Url) -> Result<(), SourceError> {
        self.egress
            .check_url(url)
            .map_err(|d| self.error(format!("not contacted: {d}")))
    }

    fn transport_error(&self, e: &reqwest::Error, host: &str) -> SourceError {
        if let Some(denial) = denial_in(e) {
            return self.error(format!("not contacted: {denial}"));
        }
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connection failed"
        } else if e.is_redirect() {
            "too many redirects"
        } else {
            "request failed"
        };
        self.error(format!("{host}: {kind}: {}", error_chain(e)))
    }

    /// GET with the configured auth, answering one challenge.
    async fn get(&self, url: Url, accept: Option<&str>) -> Result<Response, SourceError> {
        self.check(&url)?;
        let host = url.host_str().unwrap_or_default().to_string();
        let mut challenged = false;
        loop {
            let mut request = self.http.get(url.clone());
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            request = match (&self.auth, self.token.lock().expect("lock").clone()) {
                (RegistryAuth::Bearer(token), _) => request.bearer_auth(token),
                (_, Some(token)) => request.bearer_auth(token),
                (RegistryAuth::Basic(u, p), None) if *self.basic.lock().expect("lock") => {
                    request.basic_auth(u, Some(p))
                }
                _ => request,
            };
            let response = request
                .send()
                .await
                .map_err(|e| self.transport_error(&e, &host))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if status == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .unwrap_or_default();
                let (scheme, params) = challenge
                    .trim()
                    .split_once(' ')
                    .unwrap_or((challenge.trim(), ""));
                if scheme.eq_ignore_ascii_case("basic")
                    && matches!(self.auth, RegistryAuth::Basic(..))
                {
                    *self.basic.lock().expect("lock") = true;
                    continue;
                }
                if scheme.eq_ignore_ascii_case("bearer")
                    && !matches!(self.auth, RegistryAuth::Bearer(_))
                {
                    self.fetch_token(params).await?;
                    continue;
                }
            }
            return Err(self.status_error(status, response.url(), &host));
        }
    }

    fn status_error(&self, status: StatusCode, url: &Url, host: &str) -> SourceError {
        if status.is_redirection() {
            return self.error(format!(
                "{host} redirected (HTTP {}) to another host; only blobs may be fetched from \
                 another host",
                status.as_u16()
            ));
        }
        let what = if url.path().contains("/manifests/") {
            "manifest"
        } else if url.path().contains("/blobs/") {
            "blob"
        } else {
            "request"
        };
        let hint = match status {
            StatusCode::UNAUTHORIZED => {
                if matches!(self.auth, RegistryAuth::Anonymous) {
                    "; no credentials are configured"
                } else {
                    "; check the credentials"
                }
            }
            StatusCode::FORBIDDEN => "; the credentials lack pull permission",
            StatusCode::NOT_FOUND => "; the repository or reference does not exist",
            _ => "",
        };
        self.error(format!(
            "{host}: {what} refused: HTTP {} {}{hint}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ))
    }

    /// Gets a pull token from the Bearer challenge's realm.
    async fn fetch_token(&self, params: &str) -> Result<(), SourceError> {
        let params = parse_auth_params(params);
        let Some(realm) = params.iter().find(|(k, _)| k == "realm").map(|(_, v)| v) else {
            return Err(self.error("the Bearer challenge names no realm"));
        };
        let mut url = Url::parse(realm)
            .map_err(|_| self.error("the Bearer challenge's realm is not a URL"))?;
        let registry_host = self.base.host_str().unwrap_or_default();
        let realm_host = url.host_str().unwrap_or_default().to_string();
        if !self.egress.may_follow(registry_host, &realm_host) {
            return Err(self.error(format!(
                "the Bearer challenge points the token realm at another host ({realm_host}); \
                 no credentials were sent there"
            )));
        }
        if !matches!(url.scheme(), "http" | "https")
            || (self.base.scheme() == "https" && url.scheme() != "https")
        {
            return Err(self.error(format!(
                "the token realm on {realm_host} does not use {}; no credentials were sent there",
                self.base.scheme()
            )));
        }
        self.check(&url)?;
        {
            let mut query = url.query_pairs_mut();
            if let Some((_, service)) = params.iter().find(|(k, _)| k == "service") {
                query.append_pair("service", service);
            }
            let scope = params
                .iter()
                .find(|(k, _)| k == "scope")
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
            for s in scope.split(' ').filter(|s| !s.is_empty()) {
                query.append_pair("scope", s);
            }
        }
        let mut request = self.http.get(url);
        if let RegistryAuth::Basic(u, p) = &self.auth {
            request = request.basic_auth(u, Some(p));
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(&e, &realm_host))?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.error(format!(
                "the token service on {realm_host} refused: HTTP {} {}{}",
                status.as_u16(),
                status.canonical_reason().unwrap_or(""),
                if status == StatusCode::UNAUTHORIZED {
                    "; check the credentials"
                } else {
                    ""
                }
            )));
        }
        let body = self.read_bounded(response, "token reply").await?;
        let reply: TokenReply = serde_json::from_slice(&body).map_err(|_| {
            self.error(format!(
                "the token service on {realm_host} did not reply with a token"
            ))
        })?;
        let token = reply
            .token
            .or(reply.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                self.error(format!(
                    "the token service on {realm_host} did not reply with a token"
                ))
            })?;
        *self.token.lock().expect("lock") = Some(token);
        Ok(())
    }

    async fn read_bounded(
        &self,
        mut response: Response,
        what: &str,
    ) -> Result<Vec<u8>, SourceError> {
        let host = response.url().host_str().unwrap_or_default().to_string();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(&e, &host))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(self.error(format!(
                    "the {what} is larger than {MAX_DOCUMENT_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// An error and its sources, `: `-separated, without repeats (transport errors only:
/// these never carry a reply body).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
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
    use super::parse_auth_params;

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
}
