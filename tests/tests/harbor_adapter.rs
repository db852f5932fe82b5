//! `imagewarden server` driven the way Harbor drives a scanner adapter: requests shaped as
//! Harbor's published OpenAPI spec of the adapter API (goharbor/pluggable-scanner-spec,
//! copied into `tests/testdata/harbor-scanner-adapter`), the Authorization value Harbor
//! builds for the registry, the real registry in token-auth mode with a real alpine:3.10
//! image, and every response body validated against the spec's schemas.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use base64::Engine as _;
use imagewarden_scanner::server::{self, CancellationToken, Config};
use imagewarden_scanner::vulndb::Db;
use imagewarden_tests::registry::{RegistryOptions, TokenAuth};
use imagewarden_tests::token_service::{self, PASSWORD, USER};
use imagewarden_tests::{repo_root, samples, Registry, RegistryMode};
use serde_json::{json, Value};
use tokio::net::TcpListener;

const TOKEN: &str = "harbor-adapter-t0ken";
const SCAN_REQUEST_V1_1: &str = "application/vnd.scanner.adapter.scan.request+json; version=1.1";
const SCAN_RESPONSE: &str = "application/vnd.scanner.adapter.scan.response+json; version=1.0";
const VULN_V1_1: &str = "application/vnd.security.vulnerability.report; version=1.1";
const VULN_HARBOR: &str = "application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0";
const SBOM: &str = "application/vnd.security.sbom.report+json; version=1.0";
const CYCLONEDX: &str = "application/vnd.cyclonedx+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The spec (v1.2, which includes v1.1) as JSON.
fn spec() -> Value {
    let path =
        repo_root().join("tests/testdata/harbor-scanner-adapter/scanner-adapter-openapi-v1.2.yaml");
    let yaml: Value = serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    yaml
}

/// Errors of `instance` against component schema `name` of the spec: the OpenAPI
/// components as a JSON Schema document (draft 4, which OpenAPI 3.0 schemas extend),
/// formats checked.
fn schema_errors(name: &str, instance: &Value) -> Vec<String> {
    let spec = spec();
    let schema = json!({
        "$ref": format!("#/components/schemas/{name}"),
        "components": spec["components"],
    });
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(true)
        .build(&schema)
        .expect("the spec's schemas compile");
    validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

fn assert_valid(name: &str, instance: &Value) {
    let errors = schema_errors(name, instance);
    assert!(errors.is_empty(), "{name}: {errors:?}\n{instance:#}");
}

/// The database of the repository's OSV test records (it has the Alpine advisory of
/// CVE-2019-14697).
fn db() -> Db {
    Db::load(&[repo_root()
        .join("scanner/testdata/osv")
        .display()
        .to_string()])
    .unwrap()
}

/// A running server and its address.
struct Adapter {
    base: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Adapter {
    async fn start(config: Config) -> Result<Adapter> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server::serve(listener, config, db(), shutdown.clone()));
        Ok(Adapter {
            base,
            shutdown,
            task,
        })
    }

    /// `POST /api/v1/scan` as Harbor sends it.
    async fn scan(&self, request: &Value) -> Result<reqwest::Response> {
        Ok(reqwest::Client::new()
            .post(format!("{}/api/v1/scan", self.base))
            .header("Content-Type", SCAN_REQUEST_V1_1)
            .header("Accept", SCAN_RESPONSE)
            .header("Authorization", format!("Bearer {TOKEN}"))
            .body(request.to_string())
            .send()
            .await?)
    }

    async fn report(&self, id: &str, accept: &str, query: &str) -> Result<reqwest::Response> {
        Ok(reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?
            .get(format!("{}/api/v1/scan/{id}/report{query}", self.base))
            .header("Accept", accept)
            .header("Authorization", format!("Bearer {TOKEN}"))
            .send()
            .await?)
    }

    /// Polls the report as Harbor does until it is not 302, and returns it.
    async fn poll(&self, id: &str, accept: &str, query: &str) -> Result<reqwest::Response> {
        for _ in 0..600 {
            let response = self.report(id, accept, query).await?;
            if response.status() != reqwest::StatusCode::FOUND {
                return Ok(response);
            }
            let refresh: u64 = response
                .headers()
                .get("Refresh-After")
                .context("a 302 has Refresh-After")?
                .to_str()?
                .parse()?;
            assert!(refresh > 0);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("the report was not ready within a minute")
    }

    /// Submits `request` and returns the scan id (202, validated).
    async fn submit(&self, request: &Value) -> Result<String> {
        let response = self.scan(request).await?;
        assert_eq!(response.status(), 202);
        assert_eq!(content_type(&response), SCAN_RESPONSE);
        let body: Value = response.json().await?;
        assert_valid("ScanResponse", &body);
        Ok(body["id"].as_str().context("an id")?.to_string())
    }

    /// Submits `request`, polls its report, expects 500 with a validated ErrorResponse,
    /// and returns the message.
    async fn failure(&self, request: &Value) -> Result<String> {
        let id = self.submit(request).await?;
        let response = self.poll(&id, VULN_V1_1, "").await?;
        assert_eq!(response.status(), 500);
        let body: Value = response.json().await?;
        assert_valid("ErrorResponse", &body);
        Ok(body["error"]["message"]
            .as_str()
            .context("a message")?
            .to_string())
    }

    async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .context("the server stops within its grace period")???;
        Ok(())
    }
}

fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The Authorization value Harbor builds for the registry from its robot account:
/// `Basic base64(name:secret)`.
fn harbor_basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A ScanRequest as Harbor 2.x sends it.
fn harbor_request(registry_url: &str, authorization: &str, digest: &str) -> Value {
    json!({
        "registry": {"url": registry_url, "authorization": authorization},
        "artifact": {
            "namespace_id": 1,
            "repository": "library/alpine",
            "tag": "3.10",
            "digest": digest,
            "mime_type": OCI_MANIFEST,
            "size": 2_800_000,
        },
        "enabled_capabilities": [
            {"type": "vulnerability", "produces_mime_types": [VULN_V1_1, VULN_HARBOR]},
            {"type": "sbom", "produces_mime_types": [SBOM],
             "parameters": {"sbom_media_types": [CYCLONEDX]}},
        ],
    })
}

/// Loopback is where the fixtures listen: allowed for these servers.
fn config() -> Config {
    Config {
        egress: imagewarden_tests::loopback_egress(),
        ..Config::new(Some(TOKEN.into()))
    }
}

/// The token-auth registry with the real alpine:3.10 image (musl held back before the
/// fix of CVE-2019-14697) as `library/alpine:3.10`.
async fn registry_with_alpine() -> Result<(Registry, Arc<token_service::TokenService>, String)> {
    let (registry, service) = token_service::start().await?;
    let digest = token_service::push(
        &registry,
        "library/alpine",
        "3.10",
        &samples::vulnerable_alpine(),
    )
    .await?;
    Ok((registry, service, digest))
}

/// The report of imagewarden's pipeline for the pushed image, pulled with the same
/// credentials and matched against the same database.
async fn direct_scan(
    registry: &Registry,
    digest: &str,
) -> Result<imagewarden_scanner::report::ScanReport> {
    use imagewarden_scanner::finding::ScannerKind;
    use imagewarden_scanner::pipeline::{self, ScanOptions, ScanSource};
    use imagewarden_scanner::source::{ImageRef, PullOptions, RegistryCredentials};
    let opts = ScanOptions {
        scanners: vec![ScannerKind::Vulnerability],
        pull: PullOptions {
            insecure: true,
            credentials: RegistryCredentials {
                username: Some(USER.into()),
                password: Some(PASSWORD.into()),
                ..Default::default()
            },
            egress: Some(imagewarden_tests::loopback_egress()),
            ..Default::default()
        },
        ..ScanOptions::default()
    };
    let source = ScanSource::Image(ImageRef::Registry(format!(
        "{}/library/alpine@{digest}",
        registry.host
    )));
    Ok(pipeline::scan(&source, Some(&db()), &opts).await?)
}

#[tokio::test]
async fn metadata_follows_the_spec_and_names_the_database() -> Result<()> {
    // Whole seconds, as the database records its build time.
    let before = chrono::Utc::now().timestamp();
    let adapter = Adapter::start(config()).await?;
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/metadata", adapter.base))
        .header(
            "Accept",
            "application/vnd.scanner.adapter.metadata+json; version=1.0",
        )
        .bearer_auth(TOKEN)
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        content_type(&response),
        "application/vnd.scanner.adapter.metadata+json; version=1.0"
    );
    let body: Value = response.json().await?;
    assert_valid("ScannerAdapterMetadata", &body);
    assert_eq!(body["scanner"]["name"], "imagewarden");
    let vuln = &body["capabilities"][0];
    assert_eq!(vuln["type"], "vulnerability");
    assert_eq!(
        vuln["consumes_mime_types"],
        json!([
            OCI_MANIFEST,
            "application/vnd.docker.distribution.manifest.v2+json"
        ])
    );
    assert_eq!(vuln["produces_mime_types"], json!([VULN_HARBOR, VULN_V1_1]));
    assert_eq!(
        body["capabilities"][1]["produces_mime_types"],
        json!([SBOM])
    );
    let db = db();
    assert_eq!(
        body["properties"]["imagewarden.io/database-version"],
        db.info().digest.as_str()
    );
    // The adapter built its database from the same records when it started: the same
    // digest, built (to the second) between the test's start and now.
    let updated = body["properties"]["harbor.scanner-adapter/vulnerability-database-updated-at"]
        .as_str()
        .unwrap_or_default();
    let updated = chrono::DateTime::parse_from_rfc3339(updated)
        .map_err(|e| anyhow::anyhow!("updated-at {updated:?}: {e}"))?
        .timestamp();
    assert!(
        (before..=chrono::Utc::now().timestamp()).contains(&updated),
        "updated-at {updated} outside the adapter's start ({before}..now); the test's own build: {}",
        db.info().built_at
    );
    adapter.stop().await
}

#[tokio::test]
async fn a_harbor_scan_with_robot_credentials_reports_the_vulnerable_musl() -> Result<()> {
    let (registry, service, digest) = registry_with_alpine().await?;
    let adapter = Adapter::start(config()).await?;
    let before = service.requests.load(Ordering::SeqCst);
    let request = harbor_request(
        &format!("http://{}", registry.host),
        &harbor_basic(USER, PASSWORD),
        &digest,
    );
    let id = adapter.submit(&request).await?;

    let response = adapter.poll(&id, VULN_V1_1, "").await?;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    assert_eq!(content_type(&response), VULN_V1_1);
    let report: Value = response.json().await?;
    assert_valid("HarborVulnerabilityReport", &report);
    assert_eq!(report["artifact"]["digest"], digest.as_str());
    assert_eq!(report["artifact"]["repository"], "library/alpine");
    assert_eq!(report["scanner"]["name"], "imagewarden");
    let musl = report["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == "CVE-2019-14697")
        .with_context(|| format!("CVE-2019-14697 in {report:#}"))?;
    assert_eq!(musl["package"], "musl");
    assert_eq!(musl["version"], "1.1.22-r2");
    assert_eq!(musl["fix_version"], "1.1.22-r3");
    // Every finding of imagewarden's own pipeline, on the same image and database, is in
    // the report with Harbor's id, severity name and fixed version.
    let direct = direct_scan(&registry, &digest).await?;
    let expected: std::collections::BTreeSet<(String, String, String, String, String)> = direct
        .vulnerabilities
        .iter()
        .chain(direct.malicious_packages.iter())
        .map(|f| {
            let id = f.ids().find(|i| i.starts_with("CVE-")).unwrap_or(&f.id);
            (
                id.to_string(),
                f.package.name.clone(),
                f.package.version.clone(),
                server::report::harbor_severity(f.severity).to_string(),
                f.fixed_version.clone().unwrap_or_default(),
            )
        })
        .collect();
    let reported: std::collections::BTreeSet<(String, String, String, String, String)> = report
        ["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            (
                s("id"),
                s("package"),
                s("version"),
                s("severity"),
                s("fix_version"),
            )
        })
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(reported, expected);
    let worst = direct
        .vulnerabilities
        .iter()
        .map(|f| f.severity)
        .max()
        .unwrap();
    assert_eq!(report["severity"], server::report::harbor_severity(worst));
    // The robot credentials were exchanged for a token at the registry's token service.
    assert!(service.requests.load(Ordering::SeqCst) > before);

    // The same report under Harbor 1.10's media type.
    let response = adapter.report(&id, VULN_HARBOR, "").await?;
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), VULN_HARBOR);
    let same: Value = response.json().await?;
    assert_eq!(same["vulnerabilities"], report["vulnerabilities"]);

    // The SBOM (spec v1.2): CycloneDX of every package of the image.
    let response = adapter
        .report(
            &id,
            SBOM,
            "?sbom_media_type=application/vnd.cyclonedx%2Bjson",
        )
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), SBOM);
    let sbom: Value = response.json().await?;
    assert_valid("HarborSbomReport", &sbom);
    assert_eq!(sbom["media_type"], CYCLONEDX);
    assert_eq!(sbom["sbom"]["bomFormat"], "CycloneDX");
    let components = sbom["sbom"]["components"].as_array().unwrap();
    assert!(components
        .iter()
        .any(|c| c["name"] == "musl" && c["version"] == "1.1.22-r2"));
    assert!(components.len() >= 14, "{}", components.len());
    // Without the media type, or with SPDX, the SBOM request is refused (400).
    for query in ["", "?sbom_media_type=application/spdx%2Bjson"] {
        let response = adapter.report(&id, SBOM, query).await?;
        assert_eq!(response.status(), 400, "{query}");
        assert_valid("ErrorResponse", &response.json().await?);
    }
    adapter.stop().await
}

#[tokio::test]
async fn a_bearer_token_harbor_made_for_the_registry_is_used_as_given() -> Result<()> {
    let (registry, service, digest) = registry_with_alpine().await?;
    let adapter = Adapter::start(config()).await?;
    // Harbor 1.x passed a registry JWT it had obtained itself.
    let jwt = service.jwt(json!([
        {"type": "repository", "name": "library/alpine", "actions": ["pull"]}
    ]));
    let before = service.requests.load(Ordering::SeqCst);
    let mut request = harbor_request(
        &format!("http://{}", registry.host),
        &format!("Bearer {jwt}"),
        &digest,
    );
    request
        .as_object_mut()
        .unwrap()
        .remove("enabled_capabilities");
    let id = adapter.submit(&request).await?;
    let response = adapter.poll(&id, VULN_V1_1, "").await?;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let report: Value = response.json().await?;
    assert_valid("HarborVulnerabilityReport", &report);
    assert!(report["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["id"] == "CVE-2019-14697"));
    assert_eq!(
        service.requests.load(Ordering::SeqCst),
        before,
        "the token was sent as given, none requested"
    );
    adapter.stop().await
}

#[tokio::test]
async fn bad_tokens_unknown_ids_and_bad_requests_get_the_spec_statuses() -> Result<()> {
    let adapter = Adapter::start(config()).await?;
    let client = reqwest::Client::new();
    for auth in [Some("Bearer wrong"), Some("Basic aGFyYm9yOnQwa2Vu"), None] {
        let mut get = client.get(format!("{}/api/v1/metadata", adapter.base));
        if let Some(auth) = auth {
            get = get.header("Authorization", auth);
        }
        let response = get.send().await?;
        assert_eq!(response.status(), 401, "{auth:?}");
        assert_valid("ErrorResponse", &response.json().await?);
    }
    let digest = format!("sha256:{}", "a".repeat(64));
    let response = client
        .post(format!("{}/api/v1/scan", adapter.base))
        .bearer_auth("wrong")
        .body(harbor_request("https://core.harbor.domain", "", &digest).to_string())
        .send()
        .await?;
    assert_eq!(response.status(), 401);

    let response = adapter
        .report("3fa85f64-5717-4562-b3fc-2c963f66afa6", VULN_V1_1, "")
        .await?;
    assert_eq!(response.status(), 404);

    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/scan", adapter.base))
        .header("Content-Type", SCAN_REQUEST_V1_1)
        .bearer_auth(TOKEN)
        .body("{\"registry\": ")
        .send()
        .await?;
    assert_eq!(response.status(), 400);
    assert_valid("ErrorResponse", &response.json().await?);

    for bad in [
        harbor_request("https://core.harbor.domain", "", "sha256:1234"),
        harbor_request("ftp://core.harbor.domain", "", &digest),
        harbor_request("https://core.harbor.domain", "Digest abc", &digest),
        json!({"registry": {"url": "https://r"}, "artifact": {"repository": "../../x", "digest": digest}}),
    ] {
        let response = adapter.scan(&bad).await?;
        assert_eq!(response.status(), 422, "{bad}");
        let body: Value = response.json().await?;
        assert_valid("ErrorResponse", &body);
    }
    // An artifact type the scanner does not consume (an image index): 501, as v1.2 says.
    let mut index = harbor_request("https://core.harbor.domain", "", &digest);
    index["artifact"]["mime_type"] = json!("application/vnd.oci.image.index.v1+json");
    assert_eq!(adapter.scan(&index).await?.status(), 501);
    adapter.stop().await
}

/// A "registry" that accepts connections and never answers, counting them: scans of it
/// hold a worker until their timeout.
async fn stalled_registry() -> Result<(String, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let host = listener.local_addr()?.to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            open.push(stream);
        }
    });
    Ok((host, accepted))
}

#[tokio::test]
async fn a_full_queue_is_503_with_retry_after_and_shutdown_is_prompt() -> Result<()> {
    let (host, accepted) = stalled_registry().await?;
    let adapter = Adapter::start(Config {
        queue: 1,
        workers: 1,
        ..config()
    })
    .await?;
    let digest = format!("sha256:{}", "b".repeat(64));
    let request = harbor_request(
        &format!("http://{host}"),
        &harbor_basic("robot$library+scan", "x"),
        &digest,
    );
    let first = adapter.submit(&request).await?;
    // The worker has taken the first scan once the registry sees its connection.
    for _ in 0..100 {
        if accepted.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        accepted.load(Ordering::SeqCst) > 0,
        "the first scan started"
    );
    adapter.submit(&request).await?;
    let response = adapter.scan(&request).await?;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["Retry-After"],
        server::RETRY_AFTER_SECS.to_string().as_str()
    );
    assert_valid("ErrorResponse", &response.json().await?);
    // A running scan answers 302 with Refresh-After.
    let response = adapter.report(&first, VULN_V1_1, "").await?;
    assert_eq!(response.status(), 302);
    assert_eq!(
        response.headers()["Refresh-After"],
        server::REFRESH_AFTER_SECS.to_string().as_str()
    );
    let started = std::time::Instant::now();
    adapter.stop().await?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn a_scan_that_cannot_pull_is_500_with_the_reason() -> Result<()> {
    let (registry, _service, digest) = registry_with_alpine().await?;
    let adapter = Adapter::start(config()).await?;
    let request = harbor_request(
        &format!("http://{}", registry.host),
        &harbor_basic(USER, "not-the-password"),
        &digest,
    );
    let message = adapter.failure(&request).await?;
    assert!(!message.contains("not-the-password"), "{message}");
    assert!(!message.is_empty());
    adapter.stop().await
}

#[tokio::test]
async fn registry_addresses_are_tenant_input_and_pass_the_egress_policy() -> Result<()> {
    let (registry, service, digest) = registry_with_alpine().await?;
    // The default policy denies loopback (and link-local, the cloud metadata address).
    let adapter = Adapter::start(Config::new(Some(TOKEN.into()))).await?;
    let before = service.requests.load(Ordering::SeqCst);
    let message = adapter
        .failure(&harbor_request(
            &format!("http://{}", registry.host),
            &harbor_basic(USER, PASSWORD),
            &digest,
        ))
        .await?;
    assert!(message.contains("127.0.0.0/8"), "{message}");
    assert_eq!(service.requests.load(Ordering::SeqCst), before);
    adapter.stop().await?;

    // --allowed-registries: other hosts are refused before anything is queued.
    let adapter = Adapter::start(Config {
        allowed_registries: vec!["core.harbor.domain".into()],
        ..config()
    })
    .await?;
    let response = adapter
        .scan(&harbor_request(
            &format!("http://{}", registry.host),
            &harbor_basic(USER, PASSWORD),
            &digest,
        ))
        .await?;
    assert_eq!(response.status(), 422);
    adapter.stop().await
}

/// Records the Authorization headers of every request it gets.
async fn credential_trap() -> Result<(u16, Arc<std::sync::Mutex<Vec<String>>>)> {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push(
                headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap_or("?").to_string())
                    .unwrap_or_default(),
            );
            (axum::http::StatusCode::OK, "{\"token\":\"stolen\"}")
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((port, seen))
}

#[tokio::test]
async fn registry_credentials_are_not_sent_to_a_token_realm_on_another_host() -> Result<()> {
    // A real registry whose Bearer challenge names a token realm on another host name
    // (`localhost`, not the registry's `127.0.0.1`) — what a hostile registry answers to
    // collect the robot credentials Harbor passes.
    let (port, seen) = credential_trap().await?;
    let signer = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["signer".to_string()])?.self_signed(&signer)?;
    let registry = Registry::start_with(
        RegistryMode::Plain,
        RegistryOptions {
            token_auth: Some(TokenAuth {
                realm: format!("http://localhost:{port}/token"),
                service: "registry".into(),
                issuer: "elsewhere".into(),
                root_cert_pem: cert.pem(),
            }),
            ..Default::default()
        },
    )
    .await?;
    let adapter = Adapter::start(config()).await?;
    let digest = format!("sha256:{}", "c".repeat(64));
    let message = adapter
        .failure(&harbor_request(
            &format!("http://{}", registry.host),
            &harbor_basic("robot$library+scan", "robot-secret"),
            &digest,
        ))
        .await?;
    assert!(message.contains("another host"), "{message}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "the realm on another host got {:?}",
        seen.lock().unwrap()
    );
    adapter.stop().await
}
