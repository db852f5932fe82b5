//! Notifications delivered to real receivers on 127.0.0.1 (a DingTalk-compatible robot,
//! HTTP and HTTPS webhooks), with targets configured through real Secrets and delivery
//! state recorded on a real kube-apiserver.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use base64::Engine;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use imagewarden_operator::crd::{
    self, Finding, FindingClass, ImageProgress, ImageScanResult, ImageScanResultSpec,
    ImageScanResultStatus, NotificationDelivery, NotificationEvent, NotificationTarget,
    NotificationType, RegistrySpec, ResultSummary, RuleRef, ScanPhase, ScanRule, ScanRuleSpec,
    ScanTask, ScanTaskSpec, ScanTaskStatus, ScopeSpec, ScopeType, SecretKeyRef, SecretRef,
    Severity, SeverityCounts, TaskTrigger, TriggerSpec,
};
use imagewarden_operator::notify::{self, NotifyOptions, NotifyReport, RetryPolicy};
use imagewarden_tests::pki::TestCa;
use imagewarden_tests::{repo_root, ControlPlane};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::ByteString;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio_rustls::rustls;

const NS: &str = "default";

// ---------------------------------------------------------------------------------------
// Receivers

/// One request as a receiver saw it.
#[derive(Clone, Debug)]
struct Received {
    uri: hyper::Uri,
    headers: hyper::HeaderMap,
    body: Vec<u8>,
    at: Instant,
}

impl Received {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    fn query(&self) -> BTreeMap<String, String> {
        self.uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// What a receiver answers.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

impl Reply {
    fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            body: body.to_string(),
            headers: vec![("content-type", "application/json".into())],
            ..Self::status(status)
        }
    }
}

type Respond = dyn Fn(usize, &Received) -> Reply + Send + Sync;

/// An HTTP/1.1 server on a free 127.0.0.1 port, plain or TLS, that records every request
/// and answers what `respond(index, request)` says.
struct Receiver {
    url: String,
    requests: Arc<Mutex<Vec<Received>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Receiver {
    async fn start(
        tls: Option<&imagewarden_tests::pki::CertifiedKey>,
        respond: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static,
    ) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = match tls {
            Some(ck) => Some(tls_acceptor(ck)?),
            None => None,
        };
        let requests: Arc<Mutex<Vec<Received>>> = Arc::default();
        let respond: Arc<Respond> = Arc::new(respond);
        let reqs = requests.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (reqs, respond, acceptor) = (reqs.clone(), respond.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (reqs, respond) = (reqs.clone(), respond.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes().to_vec())
                                .unwrap_or_default();
                            let received = Received {
                                uri: parts.uri,
                                headers: parts.headers,
                                body,
                                at: Instant::now(),
                            };
                            let index = {
                                let mut all = reqs.lock().unwrap();
                                all.push(received.clone());
                                all.len() - 1
                            };
                            let reply = respond(index, &received);
                            tokio::time::sleep(reply.delay).await;
                            let mut response = Response::builder().status(reply.status);
                            for (k, v) in reply.headers {
                                response = response.header(k, v);
                            }
                            Ok::<_, Infallible>(
                                response.body(Full::new(Bytes::from(reply.body))).unwrap(),
                            )
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        Ok(Self {
            url: format!("{scheme}://{addr}"),
            requests,
            server,
        })
    }

    fn received(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }
}

fn tls_acceptor(ck: &imagewarden_tests::pki::CertifiedKey) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs =
        CertificateDer::pem_slice_iter(ck.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(ck.key_pem.as_bytes())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// A DingTalk custom robot as DingTalk documents it: checks `access_token`, then the
/// `timestamp` (within one hour of now) and `sign` (Base64 HMAC-SHA256 over
/// "{timestamp}\n{secret}" keyed by the secret), and answers in DingTalk's reply format.
async fn dingtalk_robot(access_token: &'static str, secret: &'static str) -> Result<Receiver> {
    Receiver::start(None, move |_, req| {
        let q = req.query();
        let reply = |code: i64, msg: &str| {
            Reply::json(200, serde_json::json!({"errcode": code, "errmsg": msg}))
        };
        if q.get("access_token").map(String::as_str) != Some(access_token) {
            return reply(300001, "token is not exist");
        }
        let Some(ts) = q.get("timestamp").and_then(|t| t.parse::<i64>().ok()) else {
            return reply(310000, "invalid timestamp");
        };
        let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
        if (now - ts).abs() > 3_600_000 {
            return reply(310000, "invalid timestamp");
        }
        let expected = base64::engine::general_purpose::STANDARD.encode(hmac_sha256(
            secret.as_bytes(),
            format!("{ts}\n{secret}").as_bytes(),
        ));
        if q.get("sign") != Some(&expected) {
            return reply(310000, "sign not match");
        }
        reply(0, "ok")
    })
    .await
}

// ---------------------------------------------------------------------------------------
// Kubernetes objects

struct Env {
    _cp: ControlPlane,
    client: Client,
    recorder: Recorder,
}

async fn env() -> Result<Env> {
    let cp = ControlPlane::start().await?;
    cp.install_crds(&crd::all()).await?;
    let client = cp.client().await?;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "imagewarden-operator".into(),
            instance: None,
        },
    );
    Ok(Env {
        _cp: cp,
        client,
        recorder,
    })
}

impl Env {
    async fn secret(&self, name: &str, data: &[(&str, &str)]) -> Result<()> {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        Api::<Secret>::namespaced(self.client.clone(), NS)
            .create(&PostParams::default(), &secret)
            .await?;
        Ok(())
    }

    async fn rule(&self, name: &str, notifications: Vec<NotificationTarget>) -> Result<ScanRule> {
        let rule = ScanRule::new(
            name,
            ScanRuleSpec {
                registry: RegistrySpec {
                    url: "registry.example.com".into(),
                    credentials_secret_ref: None,
                    ca_secret_ref: None,
                    insecure: false,
                },
                scope: ScopeSpec {
                    scope_type: ScopeType::Namespace,
                    name: "team-a".into(),
                },
                tag_filter: ".*".into(),
                max_tags: None,
                triggers: TriggerSpec::default(),
                scanners: crd::ScannerKind::ALL.to_vec(),
                notifications,
                fix: None,
                result_retention: None,
            },
        );
        Ok(Api::<ScanRule>::namespaced(self.client.clone(), NS)
            .create(&PostParams::default(), &rule)
            .await?)
    }

    /// A finished task of `rule` over one image, whose result has one Critical (fixable)
    /// and two High findings, plus one image that failed.
    async fn completed_task(
        &self,
        rule: &ScanRule,
        name: &str,
        notifications: Vec<NotificationDelivery>,
    ) -> Result<(ScanTask, Vec<ImageScanResult>)> {
        let result = self.result(&format!("{name}-api")).await?;
        let tasks = Api::<ScanTask>::namespaced(self.client.clone(), NS);
        let task = ScanTask::new(
            name,
            ScanTaskSpec {
                rule_ref: Some(RuleRef {
                    name: rule.metadata.name.clone().unwrap(),
                }),
                images: vec![],
                trigger: TaskTrigger::Schedule,
            },
        );
        tasks.create(&PostParams::default(), &task).await?;
        let status = ScanTaskStatus {
            phase: ScanPhase::Failed,
            total: 2,
            succeeded: 1,
            failed: 1,
            images: vec![
                ImageProgress {
                    image: "registry.example.com/team-a/api:v1.4.2".into(),
                    digest: Some(result.spec.digest.clone()),
                    phase: ScanPhase::Completed,
                    result_name: result.metadata.name.clone(),
                    attempts: 1,
                    message: None,
                },
                ImageProgress {
                    image: "registry.example.com/team-a/old:v0.1".into(),
                    digest: None,
                    phase: ScanPhase::Failed,
                    result_name: None,
                    attempts: 3,
                    message: Some("manifest unknown".into()),
                },
            ],
            notifications,
            ..Default::default()
        };
        let task = tasks
            .patch_status(
                name,
                &PatchParams::apply("imagewarden-operator").force(),
                &Patch::Apply(serde_json::json!({
                    "apiVersion": "imagewarden.io/v1alpha1",
                    "kind": "ScanTask",
                    "status": status,
                })),
            )
            .await?;
        Ok((task, vec![result]))
    }

    async fn result(&self, name: &str) -> Result<ImageScanResult> {
        let api = Api::<ImageScanResult>::namespaced(self.client.clone(), NS);
        let finding = |id: &str, severity, fixed: Option<&str>| Finding {
            id: id.into(),
            class: FindingClass::SystemVulnerability,
            severity,
            score: None,
            vector: None,
            severity_source: None,
            package: Some("openssl".into()),
            version: Some("1.1.1n-0+deb11u1".into()),
            fixed_version: fixed.map(Into::into),
            title: Some("OpenSSL issue".into()),
            location: None,
            link: None,
        };
        let counts = SeverityCounts {
            critical: 1,
            high: 2,
            ..Default::default()
        };
        let status = ImageScanResultStatus {
            short_digest: Some("3b5e2a7c6f1d".into()),
            summary: ResultSummary {
                critical: 1,
                high: 2,
                system_vulnerabilities: counts,
                ..Default::default()
            },
            findings: vec![
                finding("CVE-2022-1292", Severity::Critical, Some("1.1.1o-1")),
                finding("CVE-2023-0286", Severity::High, Some("1.1.1t-0+deb11u1")),
                finding("CVE-2023-9999", Severity::High, None),
            ],
            total_findings: 3,
            ..Default::default()
        };
        let result = ImageScanResult::new(
            name,
            ImageScanResultSpec {
                registry: "registry.example.com".into(),
                repository: "team-a/api".into(),
                digest: "sha256:3b5e2a7c6f1d8e9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a"
                    .into(),
                tags: vec!["v1.4.2".into()],
                tags_seen: vec![],
            },
        );
        api.create(&PostParams::default(), &result).await?;
        Ok(api
            .patch_status(
                name,
                &PatchParams::apply("imagewarden-operator").force(),
                &Patch::Apply(serde_json::json!({
                    "apiVersion": "imagewarden.io/v1alpha1",
                    "kind": "ImageScanResult",
                    "status": status,
                })),
            )
            .await?)
    }

    async fn notify(
        &self,
        rule: &ScanRule,
        task: &ScanTask,
        results: &[ImageScanResult],
        event: NotificationEvent,
        opts: &NotifyOptions,
    ) -> Result<NotifyReport> {
        Ok(notify::notify_task(
            &self.client,
            &self.recorder,
            rule,
            task,
            results,
            event,
            opts,
        )
        .await?)
    }

    async fn task_status(&self, name: &str) -> Result<ScanTaskStatus> {
        Ok(Api::<ScanTask>::namespaced(self.client.clone(), NS)
            .get(name)
            .await?
            .status
            .unwrap_or_default())
    }

    /// Reason and note of the events recorded for the task.
    async fn events(&self, task: &str) -> Result<Vec<(String, String, String)>> {
        let list = Api::<K8sEvent>::namespaced(self.client.clone(), NS)
            .list(&ListParams::default())
            .await?;
        Ok(list
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(task))
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
            .collect())
    }
}

fn target(name: &str, kind: NotificationType) -> NotificationTarget {
    NotificationTarget {
        name: name.into(),
        target_type: kind,
        url: None,
        url_secret_ref: None,
        signing_secret_ref: None,
        headers_secret_ref: None,
        ca_secret_ref: None,
        insecure_skip_verify: false,
        events: vec![],
        min_severity: None,
    }
}

fn key_ref(name: &str, key: &str) -> Option<SecretKeyRef> {
    Some(SecretKeyRef {
        name: name.into(),
        key: key.into(),
    })
}

fn delivery<'a>(status: &'a ScanTaskStatus, target: &str) -> &'a NotificationDelivery {
    status
        .notifications
        .iter()
        .find(|d| d.target == target)
        .unwrap_or_else(|| panic!("no delivery for {target}: {:?}", status.notifications))
}

fn condition<'a>(status: &'a ScanTaskStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

fn fast_options() -> NotifyOptions {
    NotifyOptions {
        retry: RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            max_retry_after: Duration::from_secs(5),
        },
        request_timeout: Duration::from_secs(5),
        // The receivers listen on the loopback interface, denied unless allowed.
        egress: imagewarden_tests::loopback_egress(),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios

fn schema_file(name: &str) -> Result<jsonschema::Validator> {
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        repo_root().join("docs").join(name),
    )?)?;
    jsonschema::validator_for(&schema).with_context(|| format!("{name} compiles"))
}

fn payload_schema() -> Result<jsonschema::Validator> {
    schema_file("notification-payload.schema.json")
}

/// Each JSON sample in docs/notifications.md follows its schema: scan events the scan
/// payload's, policy events (`PolicyViolation`, `ExceptionExpired`) the policy payload's.
#[test]
fn the_documented_sample_payloads_follow_their_schemas() -> Result<()> {
    let doc = std::fs::read_to_string(repo_root().join("docs/notifications.md"))?;
    let scan = payload_schema()?;
    let policy = schema_file("notification-policy-payload.schema.json")?;
    let mut rest = doc.as_str();
    let mut checked = std::collections::BTreeSet::new();
    while let Some(start) = rest.find("```json\n") {
        let body = &rest[start + "```json\n".len()..];
        let end = body.find("\n```").context("end of a JSON sample")?;
        let sample: serde_json::Value = serde_json::from_str(&body[..end])?;
        rest = &body[end..];
        let event = sample["event"].as_str().unwrap_or_default().to_string();
        let (kind, schema) = match event.as_str() {
            "PolicyViolation" | "ExceptionExpired" => ("policy", &policy),
            _ => ("scan", &scan),
        };
        let errors: Vec<String> = schema
            .iter_errors(&sample)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{event}: {errors:?}");
        checked.insert(kind);
    }
    assert_eq!(checked.len(), 2, "samples of both payloads: {checked:?}");
    Ok(())
}

#[tokio::test]
async fn dingtalk_robot_checks_the_signature_and_its_errors_are_recorded() -> Result<()> {
    let env = env().await?;
    let robot = dingtalk_robot("tok-0123456789", "SECgood-signing-secret").await?;
    let strict = dingtalk_robot("tok-9876543210", "SECthe-robots-real-secret").await?;
    env.secret(
        "dingtalk",
        &[
            (
                "url",
                &format!("{}/robot/send?access_token=tok-0123456789", robot.url),
            ),
            (
                "other-url",
                &format!("{}/robot/send?access_token=tok-9876543210", strict.url),
            ),
            ("secret", "SECgood-signing-secret"),
        ],
    )
    .await?;
    let mut ok = target("security-group", NotificationType::DingTalk);
    ok.url_secret_ref = key_ref("dingtalk", "url");
    ok.signing_secret_ref = key_ref("dingtalk", "secret");
    let mut wrong = target("ops-group", NotificationType::DingTalk);
    wrong.url_secret_ref = key_ref("dingtalk", "other-url");
    wrong.signing_secret_ref = key_ref("dingtalk", "secret");
    let rule = env.rule("team-a-releases", vec![ok, wrong]).await?;
    let (task, results) = env.completed_task(&rule, "nightly-1", vec![]).await?;

    let report = env
        .notify(
            &rule,
            &task,
            &results,
            NotificationEvent::ScanFailed,
            &fast_options(),
        )
        .await?;
    assert!(report.any_failed());

    let got = robot.received();
    assert_eq!(got.len(), 1, "the signed message is sent once");
    let body = got[0].json();
    assert_eq!(body["msgtype"], "markdown");
    let title = body["markdown"]["title"].as_str().unwrap();
    let text = body["markdown"]["text"].as_str().unwrap();
    assert_eq!(
        title,
        "imagewarden: Scan failed · team-a-releases (1 critical)"
    );
    assert!(
        text.contains("**registry.example.com/team-a/api:v1.4.2** `@3b5e2a7c6f1d`"),
        "{text}"
    );
    assert!(text.contains("🔴 Critical **1** · 🟠 High **2**"), "{text}");
    assert!(
        text.contains("- 🔴 **CVE-2022-1292** openssl 1.1.1n-0+deb11u1 → fixed in 1.1.1o-1"),
        "{text}"
    );
    assert!(text.contains("(no fix)"), "{text}");
    assert!(
        text.contains("registry.example.com/team-a/old:v0.1** — not scanned: manifest unknown"),
        "{text}"
    );
    // Without a result link template, readers are told how to find the findings.
    assert!(
        text.ends_with(&format!(
            "> `kubectl get scanresults -n {NS}` for all findings"
        )),
        "{text}"
    );
    // DingTalk errors other than its rate limit are final: the rejecting robot is asked once.
    assert_eq!(strict.received().len(), 1);

    let status = env.task_status("nightly-1").await?;
    let good = delivery(&status, "security-group");
    assert_eq!(
        (good.state.as_str(), good.event.as_str(), good.attempts),
        ("Delivered", "ScanFailed", 1)
    );
    let bad = delivery(&status, "ops-group");
    assert_eq!((bad.state.as_str(), bad.attempts), ("Failed", 1));
    let message = bad.message.as_deref().unwrap();
    // DingTalk's code in our words; its errmsg is not quoted.
    assert!(
        message.contains("errcode 310000 (the keyword, signature or IP address check failed)"),
        "{message}"
    );
    assert!(!message.contains("sign not match"), "{message}");
    let cond = condition(&status, "NotificationFailed").expect("NotificationFailed condition");
    assert_eq!(cond.status, "True");
    assert!(cond.message.contains("ops-group"), "{}", cond.message);

    let events = env.events("nightly-1").await?;
    assert!(
        events.iter().any(|(t, r, n)| t == "Warning"
            && r == "NotificationFailed"
            && n.contains("errcode 310000")),
        "{events:?}"
    );

    // Neither the access tokens nor the signing secret leak into status or events.
    let visible = format!("{:?} {:?}", serde_json::to_string(&status)?, events);
    for secret in [
        "tok-0123456789",
        "tok-9876543210",
        "SECgood-signing-secret",
        "access_token=",
    ] {
        assert!(!visible.contains(secret), "{secret} leaked: {visible}");
    }
    assert!(message.contains("/robot/send?<redacted>"), "{message}");
    Ok(())
}

#[tokio::test]
async fn http_payload_follows_the_schema_is_signed_and_filters_apply() -> Result<()> {
    let env = env().await?;
    let validator = payload_schema()?;
    let hook = Receiver::start(None, |_, _| Reply::status(204)).await?;
    let never = Receiver::start(None, |_, _| Reply::status(204)).await?;
    let picky = Receiver::start(None, |_, _| {
        Reply::json(
            400,
            serde_json::json!({"error": "unknown field in payload"}),
        )
    })
    .await?;
    env.secret("hook", &[("hmac", "whsec-0123456789abcdef")])
        .await?;
    env.secret(
        "hook-headers",
        &[("Authorization", "Bearer s3cr3t-token-value")],
    )
    .await?;

    let mut webhook = target("webhook", NotificationType::HTTP);
    webhook.url = Some(format!("{}/hooks/imagewarden", hook.url));
    webhook.signing_secret_ref = key_ref("hook", "hmac");
    webhook.headers_secret_ref = Some(SecretRef {
        name: "hook-headers".into(),
    });
    let mut critical_only = target("critical-only", NotificationType::HTTP);
    critical_only.url = Some(never.url.clone());
    critical_only.min_severity = Some(Severity::Critical);
    let mut failures_only = target("failures-only", NotificationType::HTTP);
    failures_only.url = Some(never.url.clone());
    failures_only.events = vec![NotificationEvent::ScanFailed];
    let mut rejecting = target("rejecting", NotificationType::HTTP);
    rejecting.url = Some(picky.url.clone());
    let rule = env
        .rule(
            "team-a-releases",
            vec![webhook, critical_only, failures_only, rejecting],
        )
        .await?;
    let (task, results) = env.completed_task(&rule, "nightly-2", vec![]).await?;
    // Only High findings: below the critical-only target's minimum.
    let high_only: Vec<ImageScanResult> = results
        .iter()
        .map(|r| {
            notify::new_findings_view(
                r,
                &["CVE-2023-0286".to_string(), "CVE-2023-9999".to_string()]
                    .into_iter()
                    .collect(),
            )
        })
        .collect();

    env.notify(
        &rule,
        &task,
        &high_only,
        NotificationEvent::NewFindings,
        &fast_options(),
    )
    .await?;

    let got = hook.received();
    assert_eq!(got.len(), 1);
    let req = &got[0];
    let payload = req.json();
    let errors: Vec<String> = validator
        .iter_errors(&payload)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "payload does not follow the schema: {errors:?}\n{payload:#}"
    );
    assert_eq!(payload["event"], "NewFindings");
    assert_eq!(payload["rule"]["name"], "team-a-releases");
    assert_eq!(payload["task"]["name"], "nightly-2");
    assert_eq!(payload["summary"]["high"], 2);
    assert_eq!(payload["summary"]["critical"], 0);
    assert_eq!(payload["summary"]["fixable"], 1);
    assert_eq!(
        payload["imageScanResults"],
        serde_json::json!(["nightly-2-api"])
    );
    let top = &payload["images"][0]["topFindings"];
    assert_eq!(top[0]["id"], "CVE-2023-0286");
    assert_eq!(top[0]["fixedVersion"], "1.1.1t-0+deb11u1");
    assert_eq!(payload["images"][0]["shortDigest"], "3b5e2a7c6f1d");

    let expected_id = notify::delivery_id(&rule, &task, NotificationEvent::NewFindings, "webhook");
    assert_eq!(
        req.header("x-imagewarden-delivery").as_deref(),
        Some(expected_id.as_str())
    );
    assert_eq!(payload["deliveryId"], expected_id.as_str());
    assert_eq!(
        req.header("x-imagewarden-event").as_deref(),
        Some("NewFindings")
    );
    assert_eq!(
        req.header("authorization").as_deref(),
        Some("Bearer s3cr3t-token-value")
    );
    assert_eq!(
        req.header("content-type").as_deref(),
        Some("application/json")
    );
    let ts = req
        .header("x-imagewarden-timestamp")
        .context("timestamp header")?;
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    assert!((now - ts.parse::<i64>()?).abs() < 300);
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(&req.body);
    let expected_sig = format!(
        "sha256={}",
        hex::encode(hmac_sha256(b"whsec-0123456789abcdef", &signed))
    );
    assert_eq!(req.header("x-imagewarden-signature"), Some(expected_sig));

    assert!(never.received().is_empty(), "filtered targets get nothing");
    let got = picky.received();
    assert_eq!(got.len(), 1, "4xx fails at once, without retries");

    let status = env.task_status("nightly-2").await?;
    assert_eq!(status.notifications.len(), 3, "{:?}", status.notifications);
    assert_eq!(delivery(&status, "webhook").state, "Delivered");
    let skipped = delivery(&status, "critical-only");
    assert_eq!(skipped.state, "Skipped");
    assert_eq!(
        skipped.message.as_deref(),
        Some("no findings of severity Critical or higher")
    );
    let rejected = delivery(&status, "rejecting");
    assert_eq!((rejected.state.as_str(), rejected.attempts), ("Failed", 1));
    let message = rejected.message.as_deref().unwrap();
    // The receiver's reply body stays out of status.
    assert!(message.contains("HTTP 400"), "{message}");
    assert!(!message.contains("unknown field in payload"), "{message}");
    assert!(!status
        .notifications
        .iter()
        .any(|d| d.target == "failures-only"));
    let visible =
        serde_json::to_string(&status)? + &format!("{:?}", env.events("nightly-2").await?);
    assert!(
        !visible.contains("s3cr3t-token-value") && !visible.contains("whsec-"),
        "{visible}"
    );

    // Calling again (another reconcile) sends nothing more.
    let again = env
        .notify(
            &rule,
            &task,
            &high_only,
            NotificationEvent::NewFindings,
            &fast_options(),
        )
        .await?;
    assert!(again.deliveries.is_empty(), "{again:?}");
    assert_eq!(hook.received().len(), 1);
    assert_eq!(picky.received().len(), 1);
    Ok(())
}

#[tokio::test]
async fn https_trusts_only_the_ca_from_the_secret() -> Result<()> {
    let env = env().await?;
    let ca = TestCa::new("webhook-test-ca")?;
    let cert = ca.server(&["127.0.0.1", "localhost"])?;
    let server = Receiver::start(Some(&cert), |_, _| Reply::status(200)).await?;
    env.secret("webhook-ca", &[("ca.crt", &ca.cert_pem)])
        .await?;

    let mut untrusted = target("untrusted", NotificationType::HTTPS);
    untrusted.url = Some(format!("{}/untrusted", server.url));
    let mut trusted = target("trusted", NotificationType::HTTPS);
    trusted.url = Some(format!("{}/trusted", server.url));
    trusted.ca_secret_ref = key_ref("webhook-ca", "ca.crt");
    let mut insecure = target("insecure", NotificationType::HTTPS);
    insecure.url = Some(format!("{}/insecure", server.url));
    insecure.insecure_skip_verify = true;
    // The API server refuses an http:// `url` for type HTTPS at apply; one from a Secret
    // only the operator sees.
    env.secret("plain-url", &[("url", "http://127.0.0.1:1/not-tls")])
        .await?;
    let mut plain = target("plain", NotificationType::HTTPS);
    plain.url_secret_ref = key_ref("plain-url", "url");
    let rule = env
        .rule("team-a-releases", vec![untrusted, trusted, insecure, plain])
        .await?;
    let (task, results) = env.completed_task(&rule, "nightly-3", vec![]).await?;
    env.notify(
        &rule,
        &task,
        &results,
        NotificationEvent::ScanCompleted,
        &fast_options(),
    )
    .await?;

    let paths: Vec<String> = server
        .received()
        .iter()
        .map(|r| r.uri.path().to_string())
        .collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["/insecure", "/trusted"],
        "the untrusted target never got past TLS"
    );

    let status = env.task_status("nightly-3").await?;
    let failed = delivery(&status, "untrusted");
    assert_eq!(
        (failed.state.as_str(), failed.attempts),
        ("Failed", 1),
        "{failed:?}"
    );
    let message = failed.message.as_deref().unwrap();
    assert!(
        message.contains("TLS verification of the server failed"),
        "{message}"
    );
    assert!(message.contains("caSecretRef"), "{message}");
    assert_eq!(delivery(&status, "trusted").state, "Delivered");
    assert_eq!(delivery(&status, "insecure").state, "Delivered");
    let plain = delivery(&status, "plain");
    assert_eq!(plain.state, "Failed");
    assert!(plain
        .message
        .as_deref()
        .unwrap()
        .contains("needs an https:// URL"));
    let cond = condition(&status, "NotificationFailed").unwrap();
    assert_eq!(cond.status, "True");
    assert!(
        cond.message.contains("untrusted (ScanCompleted)"),
        "{}",
        cond.message
    );

    let events = env.events("nightly-3").await?;
    assert!(
        events
            .iter()
            .any(|(t, r, n)| t == "Warning" && r == "InsecureSkipVerify" && n.contains("insecure")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|(t, r, n)| t == "Warning"
            && r == "NotificationFailed"
            && n.contains("untrusted")),
        "{events:?}"
    );
    Ok(())
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff_retry_after_and_timeouts() -> Result<()> {
    let env = env().await?;
    let flaky = Receiver::start(None, |i, _| match i {
        0 | 1 => Reply::status(503),
        _ => Reply::status(202),
    })
    .await?;
    let limited = Receiver::start(None, |i, _| match i {
        0 => Reply {
            headers: vec![("retry-after", "1".into())],
            body: "slow down".into(),
            ..Reply::status(429)
        },
        _ => Reply::status(200),
    })
    .await?;
    let silent = Receiver::start(None, |_, _| Reply {
        delay: Duration::from_secs(3600),
        ..Reply::status(200)
    })
    .await?;
    let url = |r: &Receiver| Some(format!("{}/hook", r.url));
    let mut a = target("flaky", NotificationType::HTTP);
    a.url = url(&flaky);
    let mut b = target("rate-limited", NotificationType::HTTP);
    b.url = url(&limited);
    let mut c = target("silent", NotificationType::HTTP);
    c.url = url(&silent);
    let rule = env.rule("team-a-releases", vec![a, b, c]).await?;
    let (task, results) = env.completed_task(&rule, "nightly-4", vec![]).await?;
    let opts = NotifyOptions {
        request_timeout: Duration::from_secs(1),
        retry: RetryPolicy {
            max_attempts: 3,
            ..fast_options().retry
        },
        ..fast_options()
    };
    let started = Instant::now();
    env.notify(
        &rule,
        &task,
        &results,
        NotificationEvent::ScanCompleted,
        &opts,
    )
    .await?;
    // Three silent attempts of one second each, plus two short backoffs.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    let got = flaky.received();
    assert_eq!(got.len(), 3, "two 503s, then accepted");
    let ids: std::collections::HashSet<_> = got
        .iter()
        .map(|r| r.header("x-imagewarden-delivery"))
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "every attempt carries the same idempotency key"
    );

    let got = limited.received();
    assert_eq!(got.len(), 2);
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_secs(1),
        "Retry-After: 1 not honoured: {gap:?}"
    );
    assert!(gap < Duration::from_secs(3), "{gap:?}");

    assert_eq!(silent.received().len(), 3);

    let status = env.task_status("nightly-4").await?;
    assert_eq!(status.notifications.len(), 3);
    let flaky = delivery(&status, "flaky");
    assert_eq!((flaky.state.as_str(), flaky.attempts), ("Delivered", 3));
    let limited = delivery(&status, "rate-limited");
    assert_eq!((limited.state.as_str(), limited.attempts), ("Delivered", 2));
    let silent = delivery(&status, "silent");
    assert_eq!((silent.state.as_str(), silent.attempts), ("Failed", 3));
    let message = silent.message.as_deref().unwrap();
    assert!(
        message.contains("gave up after 3 attempt(s): no response within 1s"),
        "{message}"
    );
    let cond = condition(&status, "NotificationFailed").unwrap();
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("True", "DeliveryFailed")
    );
    let events = env.events("nightly-4").await?;
    assert!(
        events
            .iter()
            .any(|(t, r, n)| t == "Warning" && r == "NotificationFailed" && n.contains("silent")),
        "{events:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_pending_delivery_left_by_a_restart_is_sent_once() -> Result<()> {
    let env = env().await?;
    let hook = Receiver::start(None, |_, _| Reply::status(200)).await?;
    let mut webhook = target("webhook", NotificationType::HTTP);
    webhook.url = Some(format!("{}/hook", hook.url));
    let rule = env.rule("team-a-releases", vec![webhook]).await?;
    // The operator recorded its intent, then stopped before recording the outcome.
    let pending = NotificationDelivery {
        target: "webhook".into(),
        event: "ScanFailed".into(),
        state: "Pending".into(),
        attempts: 1,
        last_transition_time: None,
        message: None,
    };
    let (stale_task, results) = env
        .completed_task(&rule, "nightly-5", vec![pending])
        .await?;

    // What the controller calls for a finished task: rule and results are read from the API.
    let report =
        notify::notify_finished_task(&env.client, &env.recorder, &stale_task, &fast_options())
            .await?;
    assert_eq!(report.deliveries.len(), 1);
    let got = hook.received();
    assert_eq!(got.len(), 1);
    let expected_id =
        notify::delivery_id(&rule, &stale_task, NotificationEvent::ScanFailed, "webhook");
    assert_eq!(got[0].header("x-imagewarden-delivery"), Some(expected_id));
    assert_eq!(got[0].json()["event"], "ScanFailed");
    assert_eq!(
        got[0].json()["imageScanResults"],
        serde_json::json!(["nightly-5-api"])
    );
    assert_eq!(got[0].json()["summary"]["critical"], 1);

    let status = env.task_status("nightly-5").await?;
    assert_eq!(status.notifications.len(), 1);
    let d = delivery(&status, "webhook");
    assert_eq!((d.state.as_str(), d.attempts), ("Delivered", 2));
    assert_eq!(
        condition(&status, "NotificationFailed").unwrap().status,
        "False"
    );
    // The controller's status fields survive the notification writes.
    assert_eq!(
        (status.phase, status.total, status.images.len()),
        (ScanPhase::Failed, 2, 2)
    );

    // A second call, even with the stale object that still shows Pending, sends nothing.
    let report = env
        .notify(
            &rule,
            &stale_task,
            &results,
            NotificationEvent::ScanFailed,
            &fast_options(),
        )
        .await?;
    assert!(report.deliveries.is_empty());
    assert_eq!(hook.received().len(), 1);
    Ok(())
}

#[tokio::test]
async fn receivers_in_denied_ranges_are_not_contacted() -> Result<()> {
    let env = env().await?;
    let receiver = Receiver::start(None, |_, _| Reply::status(204)).await?;
    let port = receiver.url.rsplit(':').next().unwrap().to_string();
    // The loopback receiver by address and by name, and the cloud metadata address.
    let mut by_address = target("by-address", NotificationType::HTTP);
    by_address.url = Some(format!("{}/hook", receiver.url));
    let mut by_name = target("by-name", NotificationType::HTTP);
    by_name.url = Some(format!("http://localhost:{port}/hook"));
    let mut metadata = target("metadata", NotificationType::HTTP);
    metadata.url = Some("http://169.254.169.254/latest/meta-data/".into());
    let rule = env
        .rule("team-a-egress", vec![by_address, by_name, metadata])
        .await?;
    let (task, results) = env.completed_task(&rule, "nightly-egress", vec![]).await?;
    // The operator's default policy: nothing allowed.
    let opts = NotifyOptions {
        egress: Default::default(),
        ..fast_options()
    };
    env.notify(
        &rule,
        &task,
        &results,
        NotificationEvent::ScanCompleted,
        &opts,
    )
    .await?;
    assert!(receiver.received().is_empty(), "the receiver was reached");
    let status = env.task_status("nightly-egress").await?;
    for (name, range) in [
        ("by-address", "loopback"),
        ("by-name", "loopback"),
        ("metadata", "cloud metadata"),
    ] {
        let d = delivery(&status, name);
        // Refused for good (an address in the URL before any attempt, a name when it is
        // resolved): retrying cannot help.
        assert_eq!(d.state, "Failed", "{name}: {d:?}");
        assert!(d.attempts <= 1, "{name}: {d:?}");
        let message = d.message.as_deref().unwrap_or_default();
        assert!(
            message.contains("not contacted") && message.contains(range),
            "{name}: {message}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn result_links_replace_the_kubectl_hint_in_dingtalk_and_http() -> Result<()> {
    let env = env().await?;
    let validator = payload_schema()?;
    let robot = dingtalk_robot("tok-links-0123", "SEClinks-secret").await?;
    let hook = Receiver::start(None, |_, _| Reply::status(204)).await?;
    env.secret(
        "dingtalk",
        &[
            (
                "url",
                &format!("{}/robot/send?access_token=tok-links-0123", robot.url),
            ),
            ("secret", "SEClinks-secret"),
        ],
    )
    .await?;
    let mut chat = target("security-group", NotificationType::DingTalk);
    chat.url_secret_ref = key_ref("dingtalk", "url");
    chat.signing_secret_ref = key_ref("dingtalk", "secret");
    let mut webhook = target("webhook", NotificationType::HTTP);
    webhook.url = Some(format!("{}/hooks/imagewarden", hook.url));
    let rule = env.rule("team-a-releases", vec![chat, webhook]).await?;
    let (task, results) = env.completed_task(&rule, "nightly-links", vec![]).await?;
    let result = &results[0];
    let name = result.metadata.name.clone().unwrap();

    let template = imagewarden_operator::notify::links::ResultUrlTemplate::parse(
        "https://grafana.example.com/d/iw?var-namespace={namespace}&var-name={name}&var-digest={digest}",
    )
    .map_err(anyhow::Error::msg)?;
    let opts = NotifyOptions {
        result_url: Some(template),
        ..fast_options()
    };
    env.notify(&rule, &task, &results, NotificationEvent::ScanFailed, &opts)
        .await?;

    let digest = result.spec.digest.replace(':', "%3A");
    let link = format!(
        "https://grafana.example.com/d/iw?var-namespace={NS}&var-name={name}&var-digest={digest}"
    );
    let got = robot.received();
    assert_eq!(got.len(), 1);
    let text = got[0].json()["markdown"]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text.contains(&format!(
            "**[registry.example.com/team-a/api:v1.4.2]({link})**"
        )),
        "{text}"
    );
    assert!(!text.contains("kubectl"), "{text}");
    // The image that was not scanned has no result and no link.
    assert!(
        text.contains("❌ **registry.example.com/team-a/old:v0.1**"),
        "{text}"
    );

    let got = hook.received();
    assert_eq!(got.len(), 1);
    let payload = got[0].json();
    let errors: Vec<String> = validator
        .iter_errors(&payload)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{payload:#}");
    let images = payload["images"].as_array().unwrap();
    let scanned = images
        .iter()
        .find(|i| i["resultName"] == name.as_str())
        .expect("the scanned image");
    assert_eq!(scanned["resultUrl"], link.as_str());
    assert!(
        images
            .iter()
            .filter(|i| i["resultName"].is_null())
            .all(|i| i["resultUrl"].is_null()),
        "{payload:#}"
    );
    Ok(())
}
