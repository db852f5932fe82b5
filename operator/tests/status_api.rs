//! The status API on a real kube-apiserver: the operator (a real process) serves it over
//! TLS; callers are real ServiceAccounts with tokens from the TokenRequest API, checked by
//! TokenReview and authorized by SubjectAccessReview against real RBAC. Images are pushed
//! to a real registry and scanned by the operator.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use imagewarden_operator::crd::{
    ImageFix, ImageScanResult, ScanRule, ScanTask, VulnerabilityException,
};
use imagewarden_tests::image::push_image;
use imagewarden_tests::operator::OperatorProcess;
use imagewarden_tests::pki::TestCa;
use imagewarden_tests::process::{free_port, poll as wait_for};
use imagewarden_tests::samples::{alpine311, testdata, vulnerable_alpine};
use imagewarden_tests::{ControlPlane, Registry, RegistryMode};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_imagewarden-operator");

struct Setup {
    cp: ControlPlane,
    client: Client,
    registry: Registry,
    operator: OperatorProcess,
    http: reqwest::Client,
    base: String,
    _tls_dir: tempfile::TempDir,
}

async fn create<K>(api: Api<K>, value: Value) -> Result<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(value)?;
    Ok(api.create(&PostParams::default(), &obj).await?)
}

/// Namespaces team-a and team-b, each with a rule scanning its part of the registry;
/// ServiceAccounts `viewer` (may read imagewarden objects of team-a, patch its rules,
/// create its tasks and exceptions) and `stranger` (no rights) in team-a; the operator
/// serving the API with a certificate for 127.0.0.1.
async fn setup() -> Result<Setup> {
    let cp = ControlPlane::start().await?;
    cp.install_crds(&imagewarden_operator::crd::all()).await?;
    let client = cp.client().await?;
    for ns in ["team-a", "team-b"] {
        create::<Namespace>(Api::all(client.clone()), json!({"metadata": {"name": ns}})).await?;
    }
    for sa in ["viewer", "stranger", "fixer"] {
        create::<ServiceAccount>(
            Api::namespaced(client.clone(), "team-a"),
            json!({"metadata": {"name": sa}}),
        )
        .await?;
    }
    create::<Role>(
        Api::namespaced(client.clone(), "team-a"),
        json!({
            "metadata": {"name": "imagewarden-viewer"},
            "rules": [
                {"apiGroups": ["imagewarden.io"], "resources": ["scanrules", "scantasks", "imagescanresults", "vulnerabilityexceptions"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["imagewarden.io"], "resources": ["scanrules"], "verbs": ["patch"]},
                {"apiGroups": ["imagewarden.io"], "resources": ["scantasks", "vulnerabilityexceptions"], "verbs": ["create"]}
            ]
        }),
    )
    .await?;
    create::<RoleBinding>(
        Api::namespaced(client.clone(), "team-a"),
        json!({
            "metadata": {"name": "viewer"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "imagewarden-viewer"},
            "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": "team-a"}]
        }),
    )
    .await?;

    // Reads results and fixes images, nothing else.
    create::<Role>(
        Api::namespaced(client.clone(), "team-a"),
        json!({
            "metadata": {"name": "imagewarden-fixer"},
            "rules": [
                {"apiGroups": ["imagewarden.io"], "resources": ["imagescanresults"], "verbs": ["get"]},
                {"apiGroups": ["imagewarden.io"], "resources": ["imagefixes"], "verbs": ["get", "create"]}
            ]
        }),
    )
    .await?;
    create::<RoleBinding>(
        Api::namespaced(client.clone(), "team-a"),
        json!({
            "metadata": {"name": "fixer"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "imagewarden-fixer"},
            "subjects": [{"kind": "ServiceAccount", "name": "fixer", "namespace": "team-a"}]
        }),
    )
    .await?;

    let registry = Registry::start(RegistryMode::Plain).await?;
    push_image(&registry, "team-a/alpine", "v1", &vulnerable_alpine()).await?;
    push_image(&registry, "team-b/other", "v1", &alpine311()).await?;

    let ca = TestCa::new("imagewarden-api-test-ca")?;
    let serving = ca.server(&["127.0.0.1"])?;
    let tls_dir = tempfile::tempdir()?;
    std::fs::write(tls_dir.path().join("tls.crt"), &serving.cert_pem)?;
    std::fs::write(tls_dir.path().join("tls.key"), &serving.key_pem)?;
    let port = free_port()?;
    let args = vec![
        format!("--db={}", testdata("osv").display()),
        "--egress-allow=127.0.0.0/8".to_string(),
        "--executor=inline".to_string(),
        "--leader-elect=false".to_string(),
        "--max-scan-attempts=3".to_string(),
        format!("--api-addr=127.0.0.1:{port}"),
        format!(
            "--api-tls-cert-file={}",
            tls_dir.path().join("tls.crt").display()
        ),
        format!(
            "--api-tls-key-file={}",
            tls_dir.path().join("tls.key").display()
        ),
    ];
    let operator = OperatorProcess::start(Path::new(BIN), &cp, &args).await?;
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.cert_pem.as_bytes())?])
        .timeout(Duration::from_secs(20))
        .build()?;
    let base = format!("https://127.0.0.1:{port}");
    wait_for("the status API", Duration::from_secs(60), || {
        let (http, base) = (http.clone(), base.clone());
        async move {
            Ok(http
                .get(format!("{base}/api/v1/scantasks"))
                .send()
                .await
                .ok())
        }
    })
    .await?;
    Ok(Setup {
        cp,
        client,
        registry,
        operator,
        http,
        base,
        _tls_dir: tls_dir,
    })
}

fn rule(ns: &str, registry: &Registry, scan_now: Option<&str>) -> Value {
    let mut rule = json!({
        "apiVersion": "imagewarden.io/v1alpha1",
        "kind": "ScanRule",
        "metadata": {"name": "images"},
        "spec": {
            "registry": {"url": registry.host, "insecure": true},
            "scope": {"type": "Namespace", "name": ns},
            "tagFilter": "^v\\d"
        }
    });
    if let Some(value) = scan_now {
        rule["metadata"]["annotations"] = json!({"imagewarden.io/scan-now": value});
    }
    rule
}

impl Setup {
    async fn call(
        &self,
        method: reqwest::Method,
        token: Option<&str>,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let code = response.status().as_u16();
        let text = response.text().await?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((code, value))
    }

    async fn get(&self, token: Option<&str>, path: &str) -> Result<(u16, Value)> {
        self.call(reqwest::Method::GET, token, path, None).await
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> Result<(u16, Value)> {
        self.call(reqwest::Method::POST, Some(token), path, Some(body))
            .await
    }

    /// `GET` that must succeed.
    async fn ok(&self, token: &str, path: &str) -> Result<Value> {
        let (code, body) = self.get(Some(token), path).await?;
        if code != 200 {
            bail!("GET {path}: {code} {body}\n{}", self.operator.log());
        }
        Ok(body)
    }

    async fn token(&self, name: &str) -> Result<String> {
        self.cp.service_account_token("team-a", name, &[]).await
    }

    fn status_path(&self, repository: &str, tag: &str) -> String {
        format!(
            "/api/v1/scan-status?registry={}&repository={repository}&tag={tag}",
            self.registry.host
        )
    }

    /// Polls `scan-status` until `done` holds of it, returning every distinct status seen.
    async fn statuses_until(
        &self,
        token: &str,
        path: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Result<(Vec<String>, Value)> {
        let started = Instant::now();
        let mut seen: Vec<String> = Vec::new();
        loop {
            let body = self.ok(token, path).await?;
            let status = body["status"].as_str().unwrap_or_default().to_string();
            if seen.last() != Some(&status) {
                seen.push(status);
            }
            if done(&body) {
                return Ok((seen, body));
            }
            if started.elapsed() > timeout {
                bail!(
                    "scan-status stayed {seen:?}: {body}\n{}",
                    self.operator.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn callers_see_what_rbac_lets_them_and_scan_status_follows_the_scan() -> Result<()> {
    let s = setup().await?;
    let viewer = s.token("viewer").await?;
    let stranger = s.token("stranger").await?;
    create::<ScanRule>(
        Api::namespaced(s.client.clone(), "team-a"),
        rule("team-a", &s.registry, None),
    )
    .await?;
    create::<ScanRule>(
        Api::namespaced(s.client.clone(), "team-b"),
        rule("team-b", &s.registry, Some("1")),
    )
    .await?;

    // No token, a malformed one, or one minted for another audience: 401.
    let (code, body) = s.get(None, "/api/v1/repositories").await?;
    assert_eq!(code, 401, "{body}");
    let (code, _) = s.get(Some("not-a-token"), "/api/v1/repositories").await?;
    assert_eq!(code, 401);
    let elsewhere =
        s.cp.service_account_token("team-a", "viewer", &["https://some-other-service"])
            .await?;
    let (code, body) = s.get(Some(&elsewhere), "/api/v1/repositories").await?;
    assert_eq!(code, 401, "{body}");

    let path = s.status_path("team-a/alpine", "v1");
    let before = s.ok(&viewer, &path).await?;
    assert_eq!(before["status"], "NOT_SCANNED", "{before}");

    // A caller without rights gets 403 everywhere, whether or not objects exist.
    for p in [
        path.as_str(),
        "/api/v1/repositories",
        "/api/v1/scanrules",
        "/api/v1/scantasks",
        "/api/v1/imagescanresults",
    ] {
        let (code, body) = s.get(Some(&stranger), p).await?;
        assert_eq!(code, 403, "{p}: {body}");
    }
    let (code, _) = s
        .post(
            &stranger,
            "/api/v1/namespaces/team-a/scanrules/images/scan",
            json!({}),
        )
        .await?;
    assert_eq!(code, 403, "scan-now needs patch rights on the rule");

    // Scan now through the API (as the viewer, who may patch the rule).
    let (code, body) = s
        .post(
            &viewer,
            "/api/v1/namespaces/team-a/scanrules/images/scan",
            json!({}),
        )
        .await?;
    assert_eq!(code, 202, "{body}");
    let (seen, done) = s
        .statuses_until(&viewer, &path, Duration::from_secs(90), |b| {
            b["status"] == "COMPLETE"
        })
        .await?;
    // Every status seen is on the way from NOT_SCANNED through SCANNING to COMPLETE.
    let order = ["NOT_SCANNED", "SCANNING", "COMPLETE"];
    let ranks: Vec<usize> = seen
        .iter()
        .map(|st| order.iter().position(|o| o == st).unwrap_or(usize::MAX))
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(
        done["summary"]["critical"].as_u64().unwrap() + done["summary"]["high"].as_u64().unwrap()
            > 0,
        "{done}"
    );
    assert!(done["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(
        done["database"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{done}"
    );
    assert!(done["scannedAt"].is_string());
    let task = done["task"].as_str().unwrap().to_string();
    assert!(task.starts_with("team-a/images-"), "{task}");
    let result = done["result"].as_str().unwrap().to_string();
    let (_, result_name) = result.split_once('/').unwrap();

    // team-b's image was scanned too, but the viewer may not see it.
    wait_for("team-b's result", Duration::from_secs(90), || {
        let api: Api<imagewarden_operator::crd::ImageScanResult> =
            Api::namespaced(s.client.clone(), "team-b");
        async move {
            Ok(api
                .list(&Default::default())
                .await?
                .items
                .into_iter()
                .next())
        }
    })
    .await?;
    let hidden = s.ok(&viewer, &s.status_path("team-b/other", "v1")).await?;
    assert_eq!(hidden["status"], "NOT_SCANNED", "{hidden}");
    let (code, _) = s
        .get(Some(&viewer), "/api/v1/repositories?namespace=team-b")
        .await?;
    assert_eq!(code, 403);

    let repos = s.ok(&viewer, "/api/v1/repositories").await?;
    assert_eq!(repos["total"], 1, "{repos}");
    assert_eq!(repos["items"][0]["repository"], "team-a/alpine");
    assert_eq!(repos["items"][0]["namespace"], "team-a");
    assert!(repos["items"][0]["worst"].is_string(), "{repos}");

    let rules = s.ok(&viewer, "/api/v1/scanrules").await?;
    assert_eq!(rules["total"], 1, "{rules}");
    assert_eq!(
        rules["items"][0]["lastTask"]["phase"], "Completed",
        "{rules}"
    );

    let tasks = s.ok(&viewer, "/api/v1/scantasks").await?;
    assert!(
        tasks["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["namespace"] == "team-a"),
        "{tasks}"
    );
    let (task_ns, task_name) = task.split_once('/').unwrap();
    let detail = s
        .ok(
            &viewer,
            &format!("/api/v1/namespaces/{task_ns}/scantasks/{task_name}"),
        )
        .await?;
    assert_eq!(detail["succeeded"], 1, "{detail}");
    assert_eq!(
        detail["images"]["items"][0]["phase"], "Completed",
        "{detail}"
    );

    let tags = s
        .ok(
            &viewer,
            &format!(
                "/api/v1/tags?registry={}&repository=team-a/alpine",
                s.registry.host
            ),
        )
        .await?;
    assert_eq!(tags["items"][0]["tag"], "v1", "{tags}");

    let results = s.ok(&viewer, "/api/v1/imagescanresults").await?;
    assert_eq!(results["total"], 1, "{results}");
    let all = s
        .ok(
            &viewer,
            &format!("/api/v1/namespaces/team-a/imagescanresults/{result_name}?limit=500"),
        )
        .await?;
    let findings = all["findings"]["items"].as_array().unwrap().clone();
    assert!(!findings.is_empty(), "{all}");
    let rank = |f: &Value| {
        ["Unknown", "Low", "Medium", "High", "Critical"]
            .iter()
            .position(|s| *s == f["severity"])
            .unwrap()
    };
    assert!(
        findings.windows(2).all(|w| rank(&w[0]) >= rank(&w[1])),
        "most severe first"
    );
    let page = s
        .ok(
            &viewer,
            &format!("/api/v1/namespaces/team-a/imagescanresults/{result_name}?class=SystemVulnerability&fixable=true&limit=1"),
        )
        .await?;
    let expected = findings
        .iter()
        .filter(|f| f["class"] == "SystemVulnerability" && f["fixedVersion"].is_string())
        .count();
    assert_eq!(page["findings"]["total"], expected, "{page}");
    assert_eq!(
        page["findings"]["items"].as_array().unwrap().len(),
        expected.min(1)
    );
    let (code, body) = s
        .get(
            Some(&viewer),
            &format!("/api/v1/namespaces/team-a/imagescanresults/{result_name}?severity=dire"),
        )
        .await?;
    assert_eq!(code, 400, "{body}");
    let (code, _) = s
        .get(
            Some(&viewer),
            &format!("/api/v1/namespaces/team-b/imagescanresults/{result_name}"),
        )
        .await?;
    assert_eq!(code, 403);

    // Scan one tag: a ScanTask of the covering rule, created as the viewer.
    let (code, body) = s
        .post(
            &viewer,
            "/api/v1/namespaces/team-a/scans",
            json!({"registry": s.registry.host, "repository": "team-a/alpine", "tag": "v1"}),
        )
        .await?;
    assert_eq!(code, 201, "{body}");
    let created: ScanTask = Api::namespaced(s.client.clone(), "team-a")
        .get(body["task"].as_str().unwrap())
        .await?;
    assert_eq!(created.spec.rule_ref.unwrap().name, "images");
    assert_eq!(
        created.spec.images,
        [format!("{}/team-a/alpine:v1", s.registry.host)]
    );
    let (code, body) = s
        .post(
            &viewer,
            "/api/v1/namespaces/team-a/scans",
            json!({"registry": s.registry.host, "repository": "team-a/alpine", "tag": "latest"}),
        )
        .await?;
    assert_eq!(code, 422, "the rule's tag filter does not cover it: {body}");

    // An exception, created as the viewer; the CRD's schema still applies.
    let (code, body) = s
        .post(
            &viewer,
            "/api/v1/namespaces/team-a/exceptions",
            json!({"name": "accepted", "ids": [{"id": "CVE-2019-14697"}], "expires": "2099-01-01T00:00:00Z", "reason": "mitigated by the ingress filter"}),
        )
        .await?;
    assert_eq!(code, 201, "{body}");
    let exception: VulnerabilityException = Api::namespaced(s.client.clone(), "team-a")
        .get("accepted")
        .await?;
    assert_eq!(exception.spec.reason, "mitigated by the ingress filter");
    let (code, body) = s
        .post(
            &viewer,
            "/api/v1/namespaces/team-a/exceptions",
            json!({"ids": [], "expires": "2099-01-01T00:00:00Z", "reason": "none"}),
        )
        .await?;
    assert_eq!(code, 422, "no ids is refused by the CRD's schema: {body}");
    let (code, _) = s
        .post(
            &viewer,
            "/api/v1/namespaces/team-b/exceptions",
            json!({"ids": [{"id": "CVE-1"}], "expires": "2099-01-01T00:00:00Z", "reason": "r"}),
        )
        .await?;
    assert_eq!(code, 403);

    // Fix: only with create rights on ImageFixes; the same result and settings make the
    // same fix, however often it is asked for.
    let fix_path = format!("/api/v1/namespaces/team-a/imagescanresults/{result_name}/fix");
    let (code, body) = s.post(&viewer, &fix_path, json!({})).await?;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("imagefixes"),
        "{body}"
    );
    let fixer = s.token("fixer").await?;
    let (code, body) = s.post(&fixer, &fix_path, json!({})).await?;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["created"], true, "{body}");
    let fix_name = body["fix"].as_str().unwrap().to_string();
    let fix: ImageFix = Api::namespaced(s.client.clone(), "team-a")
        .get(&fix_name)
        .await?;
    assert_eq!(fix.spec.result_ref.as_ref().unwrap().name, result_name);
    assert_eq!(fix.labels()["imagewarden.io/fix-trigger"], "Api");
    let result: ImageScanResult = Api::namespaced(s.client.clone(), "team-a")
        .get(result_name)
        .await?;
    assert_eq!(
        fix.owner_references()[0].uid,
        result.uid().unwrap(),
        "the fix goes with its result"
    );
    assert_eq!(
        fix.spec.rule_ref.as_ref().map(|r| r.name.as_str()),
        result
            .labels()
            .get("imagewarden.io/rule")
            .map(String::as_str),
        "the result's rule gives the fix's registry access and settings"
    );
    let (code, again) = s.post(&fixer, &fix_path, json!({})).await?;
    assert_eq!(
        (code, again["fix"].as_str(), again["created"].as_bool()),
        (200, Some(fix_name.as_str()), Some(false)),
        "{again}"
    );
    let fix_url = format!("/api/v1/namespaces/team-a/imagefixes/{fix_name}");
    let (code, _) = s.get(Some(&viewer), &fix_url).await?;
    assert_eq!(code, 403, "the viewer may not read ImageFixes");
    let view = wait_for("the fix to end", Duration::from_secs(120), || {
        let (s, fixer, fix_url) = (&s, &fixer, &fix_url);
        async move {
            let view = s.ok(fixer, fix_url).await?;
            Ok(view["finished"].as_bool().unwrap_or(false).then_some(view))
        }
    })
    .await?;
    let stored: ImageFix = Api::namespaced(s.client.clone(), "team-a")
        .get(&fix_name)
        .await?;
    let status = stored.status.unwrap();
    assert_eq!(view["name"], fix_name.as_str());
    assert_eq!(view["result"], json!(result_name));
    assert_eq!(view["phase"], json!(status.phase), "{view}");
    assert_eq!(view["message"], json!(status.message), "{view}");
    assert_eq!(
        view["unfixable"].as_array().unwrap().len(),
        status.unfixable.len()
    );
    Ok(())
}

#[tokio::test]
async fn scan_status_shows_retries_then_the_failure() -> Result<()> {
    let s = setup().await?;
    let viewer = s.token("viewer").await?;
    // A digest the registry does not hold: every pull fails; three attempts, 2 s and 4 s
    // apart.
    create::<ScanRule>(
        Api::namespaced(s.client.clone(), "team-a"),
        rule("team-a", &s.registry, None),
    )
    .await?;
    let digest = format!("sha256:{}", "0".repeat(64));
    let image = format!("{}/team-a/alpine@{digest}", s.registry.host);
    create::<ScanTask>(
        Api::namespaced(s.client.clone(), "team-a"),
        json!({
            "apiVersion": "imagewarden.io/v1alpha1",
            "kind": "ScanTask",
            "metadata": {"name": "missing"},
            "spec": {"ruleRef": {"name": "images"}, "images": [image]}
        }),
    )
    .await?;
    let path = format!(
        "/api/v1/scan-status?registry={}&repository=team-a/alpine&digest={digest}",
        s.registry.host
    );
    let (seen, done) = s
        .statuses_until(&viewer, &path, Duration::from_secs(90), |b| {
            b["status"] == "FAILED"
        })
        .await?;
    assert!(seen.contains(&"RETRYING".to_string()), "{seen:?}");
    assert!(!seen.contains(&"COMPLETE".to_string()), "{seen:?}");
    assert_eq!(done["task"], "team-a/missing");
    assert!(
        done["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{done}"
    );
    assert_eq!(done["result"], Value::Null);
    Ok(())
}

/// A headless Chromium driven through chromedriver (WebDriver over HTTP).
struct Browser {
    http: reqwest::Client,
    session: String,
    _driver: imagewarden_tests::process::Running,
    _profile: tempfile::TempDir,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    async fn start() -> Result<Self> {
        let profile = tempfile::tempdir()?;
        let port = free_port()?;
        let mut cmd = std::process::Command::new("chromedriver");
        cmd.arg(format!("--port={port}"));
        let mut driver = imagewarden_tests::process::Running::spawn(
            "chromedriver",
            cmd,
            &profile.path().join("chromedriver.log"),
        )
        .map_err(|e| {
            anyhow::anyhow!("{e:#}: install chromium-driver (tests/scripts/install-deps.sh)")
        })?;
        imagewarden_tests::process::wait_until(&mut driver, Duration::from_secs(30), || {
            imagewarden_tests::process::port_open(port)
        })
        .await?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let base = format!("http://127.0.0.1:{port}");
        // The test CA is not in Chromium's store: its certificate errors are accepted,
        // the console is still served over TLS.
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000", format!("--user-data-dir={}", profile.path().join("profile").display())]
            }
        }}});
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await?
            .json()
            .await?;
        let Some(id) = answer["value"]["sessionId"].as_str() else {
            bail!("no WebDriver session: {answer}");
        };
        Ok(Self {
            http,
            session: format!("{base}/session/{id}"),
            _driver: driver,
            _profile: profile,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await?.json().await?;
        if answer["value"]["error"].is_string() {
            bail!("WebDriver {path}: {}", answer["value"]);
        }
        Ok(answer["value"].clone())
    }

    async fn goto(&self, url: &str) -> Result<()> {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await?;
        Ok(())
    }

    async fn find(&self, css: &str) -> Result<String> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        Ok(found[ELEMENT].as_str().unwrap_or_default().to_string())
    }

    async fn click(&self, css: &str) -> Result<()> {
        let id = self.find(css).await?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await?;
        Ok(())
    }

    async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let id = self.find(css).await?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await?;
        Ok(())
    }

    async fn script(&self, script: &str) -> Result<Value> {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Waits until `script` returns something truthy (other than `false`/`null`/"").
    async fn until(&self, what: &str, script: &str) -> Result<Value> {
        let started = Instant::now();
        loop {
            let value = self.script(script).await?;
            if !(value.is_null() || value == false || value == "") {
                return Ok(value);
            }
            if started.elapsed() > Duration::from_secs(60) {
                let page = self.script("return document.body.innerText").await?;
                bail!(
                    "waiting for {what}; the page shows:\n{}",
                    page.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, name: &str) -> Result<()> {
        use base64::Engine;
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await?;
        let dir = std::env::var_os("IMAGEWARDEN_ARTIFACTS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("imagewarden-artifacts"));
        std::fs::create_dir_all(&dir)?;
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap_or_default())?;
        std::fs::write(dir.join(format!("console-{name}.png")), bytes)?;
        Ok(())
    }
}

#[tokio::test]
async fn the_console_in_a_real_browser_shows_what_the_token_may_read() -> Result<()> {
    let s = setup().await?;
    let viewer = s.token("viewer").await?;
    let stranger = s.token("stranger").await?;
    create::<ScanRule>(
        Api::namespaced(s.client.clone(), "team-a"),
        rule("team-a", &s.registry, Some("1")),
    )
    .await?;
    create::<ScanRule>(
        Api::namespaced(s.client.clone(), "team-b"),
        rule("team-b", &s.registry, Some("1")),
    )
    .await?;
    let path = s.status_path("team-a/alpine", "v1");
    s.statuses_until(&viewer, &path, Duration::from_secs(90), |b| {
        b["status"] == "COMPLETE"
    })
    .await?;
    let browser = Browser::start().await?;
    browser.goto(&format!("{}/", s.base)).await?;

    // Accessibility basics: every form field has a label; the token field has focus.
    let unlabeled = browser
        .script("return [...document.querySelectorAll('input, textarea, select')].filter(e => e.labels.length === 0).length")
        .await?;
    assert_eq!(unlabeled, 0);
    let focused = browser.script("return document.activeElement.id").await?;
    assert_eq!(focused, "token");

    browser.type_into("#token", &viewer).await?;
    browser.click("#login button[type=submit]").await?;
    let overview = browser
        .until(
            "the overview",
            "const t = document.querySelector('#view table'); return t && t.innerText.includes('team-a/alpine') && t.innerText",
        )
        .await?;
    let overview = overview.as_str().unwrap_or_default().to_string();
    assert!(
        !overview.contains("team-b"),
        "team-b is not the viewer's: {overview}"
    );
    browser.screenshot("overview").await?;
    let nameless = browser
        .script("return [...document.querySelectorAll('button, a')].filter(e => !(e.getAttribute('aria-label') || e.textContent).trim()).length")
        .await?;
    assert_eq!(nameless, 0, "every button and link has a name");

    // Repository page, then the image page with its tabs.
    browser.click("#view table tbody a").await?;
    browser
        .until("the tags", "const a = document.querySelector('#view table tbody a'); return a && a.textContent === 'v1'")
        .await?;
    browser.click("#view table tbody a").await?;
    let panel = browser
        .until(
            "the findings",
            "const p = document.querySelector('#findings'); return p && p.querySelectorAll('tbody tr').length > 0 && p.innerText",
        )
        .await?;
    let selected = browser
        .script("return document.querySelector('[role=tab][aria-selected=true]').textContent")
        .await?;
    assert!(
        selected
            .as_str()
            .unwrap()
            .starts_with("System vulnerabilities ("),
        "{selected}"
    );
    let severities = browser
        .script("return [...document.querySelectorAll('#findings tbody tr td:first-child')].map(td => td.textContent)")
        .await?;
    let rank = |s: &Value| {
        ["Unknown", "Low", "Medium", "High", "Critical"]
            .iter()
            .position(|x| *x == s)
            .unwrap_or(0)
    };
    let severities = severities.as_array().unwrap().clone();
    assert!(!severities.is_empty(), "{panel}");
    assert!(
        severities.windows(2).all(|w| rank(&w[0]) >= rank(&w[1])),
        "sorted by severity: {severities:?}"
    );
    browser.screenshot("image-system").await?;

    // Keyboard: the arrow key moves to the next tab.
    let tab = browser.find("[role=tab][aria-selected=true]").await?;
    browser
        .call(
            reqwest::Method::POST,
            &format!("/element/{tab}/value"),
            Some(json!({"text": "\u{E014}"})),
        )
        .await?;
    browser
        .until(
            "the application tab",
            "const t = document.querySelector('[role=tab][aria-selected=true]'); return t && t.textContent.startsWith('Application vulnerabilities') && document.activeElement === t",
        )
        .await?;
    browser.screenshot("image-application").await?;

    // Scan: a task is created and its progress shown until it completes.
    browser.click("#scan").await?;
    let progress = browser
        .until(
            "the scan to finish",
            "const p = document.querySelector('#scan-progress'); return p && /Completed|Failed/.test(p.textContent) && p.textContent",
        )
        .await?;
    assert!(
        progress.as_str().unwrap().contains("Completed: 1/1"),
        "{progress}"
    );
    browser.screenshot("scanned").await?;

    // A token without rights logs in but sees nothing.
    browser.click("#logout").await?;
    browser.type_into("#token", &stranger).await?;
    browser.click("#login button[type=submit]").await?;
    let refused = browser
        .until(
            "the refusal",
            "const e = document.querySelector('#view .error'); return e && e.textContent",
        )
        .await?;
    assert!(refused.as_str().unwrap().contains("Forbidden"), "{refused}");
    let page = browser.script("return document.body.innerText").await?;
    assert!(!page.as_str().unwrap().contains("team-a/alpine"), "{page}");
    browser.screenshot("forbidden").await?;
    Ok(())
}
