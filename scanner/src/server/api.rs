//! The messages of Harbor's Pluggable Scanner API (scanner adapter API v1.0 to v1.2, as
//! published in `goharbor/pluggable-scanner-spec`), and their checks: a scan request is
//! tenant input, so every field is bounded and validated before anything is pulled.

use base64::Engine as _;
use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::registry::is_digest;

/// Media type of the metadata (v1.0; v1.1 has the same fields plus capability types).
pub const METADATA_V1_0: &str = "application/vnd.scanner.adapter.metadata+json; version=1.0";
/// Media type of the metadata with capability types (spec v1.2).
pub const METADATA_V1_1: &str = "application/vnd.scanner.adapter.metadata+json; version=1.1";
/// Media type of a scan response.
pub const SCAN_RESPONSE: &str = "application/vnd.scanner.adapter.scan.response+json; version=1.0";
/// Media type of an error.
pub const ERROR: &str = "application/vnd.scanner.adapter.error+json; version=1.0";
/// Harbor's vulnerability report, as Harbor 1.10 and later read it.
pub const VULN_REPORT_HARBOR: &str =
    "application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0";
/// The same report under the name of spec v1.1 (Harbor 2.x).
pub const VULN_REPORT_V1_1: &str = "application/vnd.security.vulnerability.report; version=1.1";
/// Harbor's SBOM report (spec v1.2, Harbor 2.11 and later).
pub const SBOM_REPORT: &str = "application/vnd.security.sbom.report+json; version=1.0";
/// The SBOM format inside [`SBOM_REPORT`]: CycloneDX JSON (SPDX is not produced).
pub const CYCLONEDX: &str = "application/vnd.cyclonedx+json";
/// Artifacts the scanner reads: single-platform image manifests.
pub const CONSUMES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Longest repository name accepted (the distribution spec's limit for a name is 255
/// characters with the host; Harbor's project/repository fits in it).
const MAX_REPOSITORY: usize = 255;
/// Longest registry URL or Authorization value accepted.
const MAX_URL: usize = 2048;
const MAX_AUTHORIZATION: usize = 16 * 1024;

/// `Scanner`: who made a report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Scanner {
    pub name: String,
    pub vendor: String,
    pub version: String,
}

impl Scanner {
    /// imagewarden itself.
    pub fn imagewarden() -> Self {
        Scanner {
            name: "imagewarden".into(),
            vendor: "imagewarden".into(),
            version: crate::SCANNER_VERSION.into(),
        }
    }
}

/// `Registry` of a scan request: where the artifact is, and the Authorization value
/// Harbor made for it (`Basic` robot credentials, or a `Bearer` token).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Registry {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub authorization: Option<String>,
}

/// `Artifact`: what to scan.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Artifact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
}

/// One of `enabled_capabilities` (spec v1.2).
#[derive(Debug, Clone, Deserialize)]
pub struct EnabledCapability {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub produces_mime_types: Option<Vec<String>>,
    #[serde(default)]
    pub parameters: Option<CapabilityParameters>,
}

/// `SbomParameters`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CapabilityParameters {
    #[serde(default)]
    pub sbom_media_types: Option<Vec<String>>,
}

/// `ScanRequest` as Harbor sends it.
#[derive(Debug, Clone, Deserialize)]
pub struct ScanRequest {
    pub registry: Registry,
    pub artifact: Artifact,
    #[serde(default)]
    pub enabled_capabilities: Option<Vec<EnabledCapability>>,
}

/// The registry credentials of a scan request.
#[derive(Clone, PartialEq, Eq)]
pub enum RegistryAuthorization {
    Anonymous,
    Basic { username: String, password: String },
    Bearer(String),
}

impl std::fmt::Debug for RegistryAuthorization {
    /// Never prints a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Anonymous => "Anonymous",
            Self::Basic { .. } => "Basic(..)",
            Self::Bearer(_) => "Bearer(..)",
        })
    }
}

/// What a scan produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produces {
    pub vulnerability: bool,
    pub sbom: bool,
}

/// A checked scan request.
#[derive(Debug, Clone)]
pub struct ScanJob {
    /// `host[:port]` of the registry.
    pub registry_host: String,
    /// Plain HTTP (the registry URL is `http://`).
    pub insecure: bool,
    pub authorization: RegistryAuthorization,
    /// The artifact as the report names it.
    pub artifact: Artifact,
    pub repository: String,
    pub digest: String,
    pub produces: Produces,
}

impl ScanJob {
    /// The image reference pulled: `host[:port]/repository@digest`.
    pub fn reference(&self) -> String {
        format!("{}/{}@{}", self.registry_host, self.repository, self.digest)
    }
}

/// Why a scan request is refused, with the status the spec gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// 400: not JSON, or JSON of the wrong shape.
    BadRequest(String),
    /// 422: a field with a value that cannot be used.
    Invalid(String),
    /// 501: an artifact type or capability the scanner does not have.
    Unsupported(String),
}

/// A repository name as the distribution spec defines it: lowercase path components of
/// `[a-z0-9]` separated by `.`, `_`, `__` or dashes.
fn valid_repository(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_REPOSITORY {
        return false;
    }
    name.split('/').all(|component| {
        let bytes = component.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if alnum(b) {
                i += 1;
                continue;
            }
            // A separator: `.`, `_`, `__`, or one or more `-`.
            let run = bytes[i..].iter().take_while(|c| **c == b).count();
            let ok = match b {
                b'.' => run == 1,
                b'_' => run <= 2,
                b'-' => true,
                _ => false,
            };
            if !ok {
                return false;
            }
            i += run;
        }
        true
    })
}

/// A tag as the distribution spec defines it: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Parses the Authorization value Harbor passes for the registry.
pub fn parse_authorization(value: Option<&str>) -> Result<RegistryAuthorization, RequestError> {
    let value = value.map(str::trim).unwrap_or_default();
    if value.is_empty() {
        return Ok(RegistryAuthorization::Anonymous);
    }
    if value.len() > MAX_AUTHORIZATION {
        return Err(RequestError::Invalid(
            "registry.authorization is too long".into(),
        ));
    }
    let (scheme, rest) = value.split_once(' ').ok_or_else(|| {
        RequestError::Invalid(
            "registry.authorization must be `Basic <base64 user:password>` or `Bearer <token>`"
                .into(),
        )
    })?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                RequestError::Invalid(
                    "registry.authorization: Basic credentials are not base64 of UTF-8".into(),
                )
            })?;
        let (username, password) = decoded.split_once(':').ok_or_else(|| {
            RequestError::Invalid(
                "registry.authorization: Basic credentials are not `user:password`".into(),
            )
        })?;
        if username.is_empty() {
            return Err(RequestError::Invalid(
                "registry.authorization: Basic credentials have no user name".into(),
            ));
        }
        Ok(RegistryAuthorization::Basic {
            username: username.into(),
            password: password.into(),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(RequestError::Invalid(
                "registry.authorization: the Bearer token is empty or not printable ASCII".into(),
            ));
        }
        Ok(RegistryAuthorization::Bearer(rest.into()))
    } else {
        Err(RequestError::Invalid(
            "registry.authorization: only the Basic and Bearer schemes are supported".into(),
        ))
    }
}

/// `host[:port]` and whether it is plain HTTP, of the registry URL of a request.
pub fn parse_registry_url(url: &str) -> Result<(String, bool), RequestError> {
    let invalid = |why: &str| RequestError::Invalid(format!("registry.url: {why}"));
    if url.len() > MAX_URL {
        return Err(invalid("too long"));
    }
    let parsed = Url::parse(url).map_err(|_| invalid("not a URL"))?;
    let insecure = match parsed.scheme() {
        "https" => false,
        "http" => true,
        _ => return Err(invalid("the scheme must be http or https")),
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            "credentials go in registry.authorization, not in the URL",
        ));
    }
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() || parsed.fragment().is_some()
    {
        return Err(invalid(
            "a registry base URL has no path, query or fragment",
        ));
    }
    let host = parsed.host_str().ok_or_else(|| invalid("no host"))?;
    let host = match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    Ok((host.to_ascii_lowercase(), insecure))
}

impl ScanRequest {
    /// Parses and checks a request body.
    pub fn parse(body: &[u8]) -> Result<ScanJob, RequestError> {
        let request: ScanRequest = serde_json::from_slice(body)
            .map_err(|e| RequestError::BadRequest(format!("not a ScanRequest: {e}")))?;
        request.check()
    }

    /// Checks the fields.
    pub fn check(self) -> Result<ScanJob, RequestError> {
        let url = self
            .registry
            .url
            .as_deref()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| RequestError::Invalid("registry.url is missing".into()))?;
        let (registry_host, insecure) = parse_registry_url(url)?;
        let authorization = parse_authorization(self.registry.authorization.as_deref())?;
        let repository = self
            .artifact
            .repository
            .clone()
            .filter(|r| !r.is_empty())
            .ok_or_else(|| RequestError::Invalid("artifact.repository is missing".into()))?;
        if !valid_repository(&repository) {
            return Err(RequestError::Invalid(
                "artifact.repository is not a repository name (lowercase path components, at most 255 characters)"
                    .into(),
            ));
        }
        let digest = self
            .artifact
            .digest
            .clone()
            .filter(|d| !d.is_empty())
            .ok_or_else(|| RequestError::Invalid("artifact.digest is missing".into()))?;
        if !is_digest(&digest) {
            return Err(RequestError::Invalid(
                "artifact.digest is not sha256:<64 hex> or sha512:<128 hex>".into(),
            ));
        }
        if let Some(tag) = self.artifact.tag.as_deref().filter(|t| !t.is_empty()) {
            if !valid_tag(tag) {
                return Err(RequestError::Invalid("artifact.tag is not a tag".into()));
            }
        }
        if let Some(mime) = self.artifact.mime_type.as_deref().filter(|m| !m.is_empty()) {
            if !CONSUMES.contains(&mime) {
                return Err(RequestError::Unsupported(format!(
                    "artifact.mime_type: only {} are scanned",
                    CONSUMES.join(" and ")
                )));
            }
        }
        let produces = match &self.enabled_capabilities {
            None => Produces {
                vulnerability: true,
                sbom: true,
            },
            Some(list) => produces(list)?,
        };
        Ok(ScanJob {
            registry_host,
            insecure,
            authorization,
            artifact: Artifact {
                size: None,
                ..self.artifact
            },
            repository,
            digest,
            produces,
        })
    }
}

/// What `enabled_capabilities` asks for.
fn produces(list: &[EnabledCapability]) -> Result<Produces, RequestError> {
    let mut produces = Produces {
        vulnerability: false,
        sbom: false,
    };
    for capability in list {
        let (known, flag): (&[&str], &mut bool) =
            match capability.kind.as_str() {
                "vulnerability" => (
                    &[VULN_REPORT_HARBOR, VULN_REPORT_V1_1],
                    &mut produces.vulnerability,
                ),
                "sbom" => (&[SBOM_REPORT], &mut produces.sbom),
                _ => return Err(RequestError::Unsupported(
                    "enabled_capabilities: the scanner has the capabilities vulnerability and sbom"
                        .into(),
                )),
            };
        if let Some(types) = &capability.produces_mime_types {
            if let Some(other) = types.iter().find(|t| !known.contains(&t.as_str())) {
                return Err(RequestError::Unsupported(format!(
                    "enabled_capabilities: the {} capability does not produce {}",
                    capability.kind,
                    other.chars().take(100).collect::<String>()
                )));
            }
        }
        if let Some(media) = capability
            .parameters
            .as_ref()
            .and_then(|p| p.sbom_media_types.as_ref())
        {
            if !media.is_empty() && !media.iter().any(|m| m == CYCLONEDX) {
                return Err(RequestError::Unsupported(format!(
                    "enabled_capabilities: SBOMs are produced as {CYCLONEDX} only"
                )));
            }
        }
        *flag = true;
    }
    if !produces.vulnerability && !produces.sbom {
        return Err(RequestError::Invalid(
            "enabled_capabilities enables nothing".into(),
        ));
    }
    Ok(produces)
}

/// The report types an `Accept` value can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportType {
    /// Harbor's vulnerability report, under the given media type.
    Vulnerability(&'static str),
    Sbom,
}

/// Whether media type `a` names `b`: the same type and the same parameters, whatever the
/// spacing and case of the type and parameter names.
fn same_media_type(a: &str, b: &str) -> bool {
    fn parts(s: &str) -> Vec<String> {
        let mut it = s.split(';');
        let mut out = vec![it.next().unwrap_or_default().trim().to_ascii_lowercase()];
        let mut params: Vec<String> = it
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                format!(
                    "{}={}",
                    k.trim().to_ascii_lowercase(),
                    v.trim().trim_matches('"')
                )
            })
            .filter(|p| !p.starts_with("q="))
            .collect();
        params.sort();
        out.extend(params);
        out
    }
    parts(a) == parts(b)
}

/// The report an `Accept` header asks for: the first type listed that the scanner
/// produces; without one (or `*/*`), Harbor's vulnerability report. `Err` carries what was
/// asked for when it is nothing the scanner produces.
pub fn report_type(accept: Option<&str>) -> Result<ReportType, String> {
    let accept = accept.map(str::trim).unwrap_or_default();
    if accept.is_empty() {
        return Ok(ReportType::Vulnerability(VULN_REPORT_HARBOR));
    }
    for range in accept.split(',') {
        let range = range.trim();
        let kind = range.split(';').next().unwrap_or_default().trim();
        if kind == "*/*" || kind == "application/*" {
            return Ok(ReportType::Vulnerability(VULN_REPORT_HARBOR));
        }
        for known in [VULN_REPORT_HARBOR, VULN_REPORT_V1_1] {
            if same_media_type(range, known) {
                return Ok(ReportType::Vulnerability(known));
            }
        }
        if same_media_type(range, SBOM_REPORT) {
            return Ok(ReportType::Sbom);
        }
    }
    Err(accept.chars().take(200).collect())
}

/// `ErrorResponse`.
pub fn error_body(message: &str) -> serde_json::Value {
    serde_json::json!({"error": {"message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_follow_the_distribution_grammar() {
        for ok in [
            "library/mongo",
            "a",
            "team-a/api",
            "a__b/c.d",
            "a--b",
            "x/y/z",
        ] {
            assert!(valid_repository(ok), "{ok}");
        }
        for bad in [
            "",
            "Library/mongo",
            "a//b",
            "/a",
            "a/",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "a b",
            "../etc",
            "a@b",
        ] {
            assert!(!valid_repository(bad), "{bad}");
        }
        assert!(!valid_repository(&"a".repeat(256)));
    }

    #[test]
    fn harbor_authorization_values_are_understood() {
        // Harbor 2.x: `Basic base64(robot$project+name:secret)`.
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("robot$library+scan:s3cr:et")
        );
        assert_eq!(
            parse_authorization(Some(&basic)).unwrap(),
            RegistryAuthorization::Basic {
                username: "robot$library+scan".into(),
                password: "s3cr:et".into()
            }
        );
        assert_eq!(
            parse_authorization(Some("Bearer eyJ.abc.def")).unwrap(),
            RegistryAuthorization::Bearer("eyJ.abc.def".into())
        );
        assert_eq!(
            parse_authorization(None).unwrap(),
            RegistryAuthorization::Anonymous
        );
        for bad in ["Basic !!!", "Digest x", "Bearer", "Basic Zm9v"] {
            assert!(
                matches!(
                    parse_authorization(Some(bad)),
                    Err(RequestError::Invalid(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            format!("{:?}", parse_authorization(Some(&basic)).unwrap()),
            "Basic(..)"
        );
    }

    #[test]
    fn registry_urls_are_base_urls() {
        assert_eq!(
            parse_registry_url("http://harbor-core:8080").unwrap(),
            ("harbor-core:8080".into(), true)
        );
        assert_eq!(
            parse_registry_url("https://Core.Harbor.Domain/").unwrap(),
            ("core.harbor.domain".into(), false)
        );
        for bad in [
            "ftp://x",
            "https://u:p@x",
            "https://x/v2/",
            "https://x?a=b",
            "x",
            "file:///etc/passwd",
        ] {
            assert!(parse_registry_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn accept_selects_the_report() {
        assert_eq!(
            report_type(None),
            Ok(ReportType::Vulnerability(VULN_REPORT_HARBOR))
        );
        assert_eq!(
            report_type(Some(
                "application/vnd.security.vulnerability.report;version=1.1"
            )),
            Ok(ReportType::Vulnerability(VULN_REPORT_V1_1))
        );
        assert_eq!(
            report_type(Some(
                "application/vnd.security.sbom.report+json; version=1.0"
            )),
            Ok(ReportType::Sbom)
        );
        assert_eq!(
            report_type(Some("text/html, */*;q=0.1")),
            Ok(ReportType::Vulnerability(VULN_REPORT_HARBOR))
        );
        assert!(report_type(Some("application/vnd.scanner.adapter.vuln.report.raw")).is_err());
        assert!(report_type(Some(
            "application/vnd.security.vulnerability.report; version=9"
        ))
        .is_err());
    }

    #[test]
    fn capabilities_select_what_is_produced() {
        let request = |caps: serde_json::Value| {
            let body = serde_json::json!({
                "registry": {"url": "https://r.example"},
                "artifact": {"repository": "a/b", "digest": format!("sha256:{}", "0".repeat(64))},
                "enabled_capabilities": caps,
            });
            ScanRequest::parse(body.to_string().as_bytes())
        };
        let only_sbom = request(serde_json::json!([{"type": "sbom",
            "produces_mime_types": [SBOM_REPORT],
            "parameters": {"sbom_media_types": ["application/spdx+json", CYCLONEDX]}}]))
        .unwrap();
        assert_eq!(
            only_sbom.produces,
            Produces {
                vulnerability: false,
                sbom: true
            }
        );
        assert!(matches!(
            request(serde_json::json!([{"type": "sbom",
                "parameters": {"sbom_media_types": ["application/spdx+json"]}}])),
            Err(RequestError::Unsupported(_))
        ));
        assert!(matches!(
            request(serde_json::json!([{"type": "malware"}])),
            Err(RequestError::Unsupported(_))
        ));
        assert!(matches!(
            request(serde_json::json!([])),
            Err(RequestError::Invalid(_))
        ));
    }
}
