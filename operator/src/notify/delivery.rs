//! Talking to targets: resolving a target's Secrets into a ready HTTP client, and sending
//! one notification with retries.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Url;

use super::dingtalk;
use super::payload::{NotificationPayload, PolicyEventPayload};
use super::plan::event_name;
use super::redact::{redact_url, Redactor};
use super::retry::{
    classify_status, next_delay, parse_retry_after, random_jitter, AttemptOutcome, RetryPolicy,
};
use super::signing::{body_signature, dingtalk_signed_url};
use super::{NotifyOptions, DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::crd::{NotificationTarget, NotificationType, SecretKeyRef};

/// Bytes of a response body read; the rest is ignored.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A target with its Secrets read and its HTTP client built.
pub(crate) struct ResolvedTarget {
    pub name: String,
    pub kind: NotificationType,
    url: Url,
    /// The URL without query string or credentials, for messages.
    pub display_url: String,
    signing_secret: Option<String>,
    headers: HeaderMap,
    client: reqwest::Client,
    redactor: Redactor,
    request_timeout: Duration,
    /// Whether certificate verification is off (`insecureSkipVerify`).
    pub insecure: bool,
}

/// A document a target can be sent: the scan payload or the policy-event payload.
pub(crate) trait Deliverable {
    fn delivery_id(&self) -> &str;
    fn event(&self) -> crate::crd::NotificationEvent;
    /// The JSON body for HTTP(S) targets.
    fn json(&self) -> Vec<u8>;
    /// The DingTalk robot's body.
    fn dingtalk(&self) -> serde_json::Value;
}

impl Deliverable for NotificationPayload {
    fn delivery_id(&self) -> &str {
        &self.delivery_id
    }
    fn event(&self) -> crate::crd::NotificationEvent {
        self.event
    }
    fn json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    fn dingtalk(&self) -> serde_json::Value {
        dingtalk::message(self)
    }
}

impl Deliverable for PolicyEventPayload {
    fn delivery_id(&self) -> &str {
        &self.delivery_id
    }
    fn event(&self) -> crate::crd::NotificationEvent {
        self.event
    }
    fn json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    fn dingtalk(&self) -> serde_json::Value {
        dingtalk::policy_message(self)
    }
}

/// How a delivery ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub delivered: bool,
    pub attempts: u32,
    /// What happened, with secrets masked.
    pub message: String,
}

impl Outcome {
    /// The outcome as `imagewarden_notifications_total` counts it.
    pub fn label(&self) -> &'static str {
        if self.delivered {
            "delivered"
        } else {
            "failed"
        }
    }
}

/// The Secrets of the rule's namespace.
pub(crate) type Secrets = crate::secrets::SecretReader;

async fn secret_key(secrets: &Secrets, r: &SecretKeyRef) -> Result<Vec<u8>, String> {
    secrets
        .bytes(&r.name, &r.key)
        .await
        .map_err(|e| e.to_string())
}

fn utf8(bytes: Vec<u8>, what: &str) -> Result<String, String> {
    String::from_utf8(bytes)
        .map(|s| s.trim().to_string())
        .map_err(|_| format!("{what} is not UTF-8 text"))
}

/// Reads the target's Secrets and builds its client. The error says what is wrong with
/// the target's configuration, without secrets.
pub(crate) async fn resolve(
    secrets: &Secrets,
    target: &NotificationTarget,
    opts: &NotifyOptions,
) -> Result<ResolvedTarget, String> {
    let mut redactor = Redactor::default();
    let raw_url = match (&target.url_secret_ref, &target.url) {
        (Some(r), _) => utf8(
            secret_key(secrets, r).await?,
            &format!("URL in Secret {}", r.name),
        )?,
        (None, Some(url)) => url.trim().to_string(),
        (None, None) => return Err("neither url nor urlSecretRef is set".to_string()),
    };
    let url = Url::parse(&raw_url).map_err(|e| format!("the webhook URL is invalid: {e}"))?;
    // The whole URL counts as secret (DingTalk's carries the access token), and so does
    // each query value on its own, in case a message quotes it.
    redactor.add(raw_url.clone());
    for (_, v) in url.query_pairs() {
        redactor.add(v.into_owned());
    }
    if let Some(p) = url.password() {
        redactor.add(p.to_string());
    }
    let display_url = redact_url(&raw_url);
    match (target.target_type, url.scheme()) {
        (NotificationType::HTTPS, "https") => {}
        (NotificationType::HTTPS, _) => {
            return Err(format!(
                "type HTTPS needs an https:// URL, got {display_url}"
            ))
        }
        (_, "http" | "https") => {}
        (_, scheme) => return Err(format!("unsupported URL scheme {scheme:?}")),
    }
    opts.egress.check_url(&url).map_err(|d| {
        format!(
            "{display_url} is not contacted: {}",
            redactor.redact(&d.message)
        )
    })?;

    let signing_secret = match &target.signing_secret_ref {
        Some(r) => {
            let s = utf8(
                secret_key(secrets, r).await?,
                &format!("signing secret in Secret {}", r.name),
            )?;
            redactor.add(s.clone());
            Some(s)
        }
        None => None,
    };

    let mut headers = HeaderMap::new();
    if let Some(r) = &target.headers_secret_ref {
        let data = secrets.data(&r.name).await.map_err(|e| e.to_string())?;
        for (key, value) in data {
            let name = HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
                format!(
                    "key {key:?} of Secret {} is not a valid header name",
                    r.name
                )
            })?;
            let text = utf8(value.0, &format!("header {key} in Secret {}", r.name))?;
            redactor.add(text.clone());
            let mut value = HeaderValue::from_str(&text).map_err(|_| {
                format!(
                    "value of key {key:?} of Secret {} is not a valid header value",
                    r.name
                )
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
    }

    let mut builder = reqwest::Client::builder()
        .timeout(opts.request_timeout)
        .connect_timeout(opts.connect_timeout.min(opts.request_timeout))
        // A redirect could carry headers and signatures to another host.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(opts.user_agent.clone());
    builder = opts.egress.apply(builder);
    if let Some(r) = &target.ca_secret_ref {
        let pem = secret_key(secrets, r).await?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                format!(
                    "key {:?} of Secret {} holds no PEM certificate",
                    r.key, r.name
                )
            })?;
        // Only the given CAs are trusted: the receiver's certificate is private.
        builder = builder.tls_certs_only(certs);
    }
    if target.insecure_skip_verify {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    let client = builder
        .build()
        .map_err(|e| format!("building the HTTP client: {}", error_chain(&e)))?;

    Ok(ResolvedTarget {
        name: target.name.clone(),
        kind: target.target_type,
        url,
        display_url,
        signing_secret,
        headers,
        client,
        redactor,
        request_timeout: opts.request_timeout,
        insecure: target.insecure_skip_verify,
    })
}

/// An error with its sources, `: `-separated, without repeats.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// Our words for DingTalk's error codes (its `errmsg` is not quoted).
fn dingtalk_meaning(code: i64) -> &'static str {
    match code {
        -1 => " (the reply is not DingTalk's JSON)",
        dingtalk::ERRCODE_RATE_LIMITED => " (sending too fast)",
        310000 => " (the keyword, signature or IP address check failed)",
        300001 | 400102 => " (the robot's access token is invalid or the robot is stopped)",
        _ => "",
    }
}

impl ResolvedTarget {
    /// Sends `payload` until it is accepted, fails for good, or the attempts run out.
    pub(crate) async fn deliver(
        &self,
        payload: &impl Deliverable,
        policy: &RetryPolicy,
    ) -> Outcome {
        let max = policy.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = self.attempt(payload).await;
            tracing::debug!(target_name = %self.name, attempt, ?outcome, "notification attempt");
            match outcome {
                AttemptOutcome::Delivered => {
                    return Outcome {
                        delivered: true,
                        attempts: attempt,
                        message: format!(
                            "delivered to {} after {attempt} attempt(s)",
                            self.display_url
                        ),
                    }
                }
                AttemptOutcome::Fail { reason } => {
                    return Outcome {
                        delivered: false,
                        attempts: attempt,
                        message: format!("{}: {reason}", self.display_url),
                    }
                }
                AttemptOutcome::Retry {
                    reason,
                    retry_after,
                } => {
                    if attempt >= max {
                        return Outcome {
                            delivered: false,
                            attempts: attempt,
                            message: format!(
                                "{}: gave up after {attempt} attempt(s): {reason}",
                                self.display_url
                            ),
                        };
                    }
                    let wait = next_delay(policy, attempt, retry_after, random_jitter());
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn attempt(&self, payload: &impl Deliverable) -> AttemptOutcome {
        let now = Timestamp::now();
        let (url, body) = match self.kind {
            NotificationType::DingTalk => {
                let url = match &self.signing_secret {
                    Some(secret) => dingtalk_signed_url(&self.url, secret, now.as_millisecond()),
                    None => self.url.clone(),
                };
                (url, payload.dingtalk().to_string().into_bytes())
            }
            NotificationType::HTTP | NotificationType::HTTPS => (self.url.clone(), payload.json()),
        };
        let mut request = self
            .client
            .post(url)
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(DELIVERY_HEADER, payload.delivery_id())
            .header(EVENT_HEADER, event_name(payload.event()));
        if self.kind != NotificationType::DingTalk {
            if let Some(secret) = &self.signing_secret {
                let ts = now.as_second();
                request = request.header(TIMESTAMP_HEADER, ts.to_string()).header(
                    SIGNATURE_HEADER,
                    body_signature(secret.as_bytes(), ts, &body),
                );
            }
        }
        let mut response = match request.body(body).send().await {
            Ok(r) => r,
            Err(e) => return self.classify_error(e),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Timestamp::now()));
        let mut bytes = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() >= MAX_RESPONSE_BYTES {
                        break;
                    }
                }
                Ok(None) => break,
                // The status line already tells the outcome; a cut body only shortens
                // the message (DingTalk's reply is checked below).
                Err(_) => break,
            }
        }
        let body = String::from_utf8_lossy(&bytes);
        // The receiver's reply is never quoted: it could be any server's, and the message
        // lands in status and Events that the rule's tenants read.
        let outcome = classify_status(status, retry_after, "");
        if self.kind == NotificationType::DingTalk && outcome == AttemptOutcome::Delivered {
            return match dingtalk::parse_reply(&body) {
                Ok(()) => AttemptOutcome::Delivered,
                Err((code, _)) => {
                    let reason =
                        format!("DingTalk replied errcode {code}{}", dingtalk_meaning(code));
                    if code == dingtalk::ERRCODE_RATE_LIMITED {
                        AttemptOutcome::Retry {
                            reason,
                            retry_after: None,
                        }
                    } else {
                        AttemptOutcome::Fail { reason }
                    }
                }
            };
        }
        outcome
    }

    fn classify_error(&self, e: reqwest::Error) -> AttemptOutcome {
        if let Some(denial) = imagewarden_scanner::egress::denial_in(&e) {
            return AttemptOutcome::Fail {
                reason: format!("not contacted: {}", self.redactor.redact(&denial.message)),
            };
        }
        let is_timeout = e.is_timeout();
        let text = self.redactor.redact(&error_chain(&e.without_url()));
        if is_timeout {
            return AttemptOutcome::Retry {
                reason: format!(
                    "no response within {}s ({text})",
                    self.request_timeout.as_secs_f64()
                ),
                retry_after: None,
            };
        }
        // A certificate the client does not trust stays untrusted on the next attempt.
        if text.contains("certificate") {
            return AttemptOutcome::Fail {
                reason: format!(
                    "TLS verification of the server failed ({text}); set caSecretRef to the \
                     CA that signed the receiver's certificate"
                ),
            };
        }
        AttemptOutcome::Retry {
            reason: text,
            retry_after: None,
        }
    }
}
