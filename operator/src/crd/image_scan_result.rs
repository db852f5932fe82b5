//! `ImageScanResult`: the findings for one image digest.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ScannerKind, Severity, SeverityCounts};

/// Findings for one image digest: system and application vulnerabilities, baseline
/// risks and malicious samples, summarized by severity. Read with
/// `kubectl get scanresults`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "imagewarden.io",
    version = "v1alpha1",
    kind = "ImageScanResult",
    namespaced,
    status = "ImageScanResultStatus",
    shortname = "scanresults",
    shortname = "scanresult",
    shortname = "isr",
    category = "imagewarden",
    doc = "The findings of one image digest in a registry: system and application vulnerabilities, baseline risks, exposed secrets and malicious samples, most severe first, with counts by severity and class. Written by the operator for the ScanRules that cover the image; labelled `imagewarden.io/rule`, `imagewarden.io/repository` and `imagewarden.io/worst-severity` for selection.",
    printcolumn = r#"{"name":"Repository","type":"string","jsonPath":".spec.repository"}"#,
    printcolumn = r#"{"name":"Tag","type":"string","jsonPath":".spec.tags[0]"}"#,
    printcolumn = r#"{"name":"Digest","type":"string","jsonPath":".status.shortDigest"}"#,
    printcolumn = r#"{"name":"Critical","type":"integer","jsonPath":".status.summary.critical"}"#,
    printcolumn = r#"{"name":"High","type":"integer","jsonPath":".status.summary.high"}"#,
    printcolumn = r#"{"name":"Medium","type":"integer","jsonPath":".status.summary.medium"}"#,
    printcolumn = r#"{"name":"Low","type":"integer","jsonPath":".status.summary.low"}"#,
    printcolumn = r#"{"name":"Unknown","type":"integer","jsonPath":".status.summary.unknown"}"#,
    printcolumn = r#"{"name":"Registry","type":"string","priority":1,"jsonPath":".spec.registry"}"#,
    printcolumn = r#"{"name":"OS","type":"string","priority":1,"jsonPath":".status.os.family"}"#,
    printcolumn = r#"{"name":"OS-Version","type":"string","priority":1,"jsonPath":".status.os.version"}"#,
    printcolumn = r#"{"name":"Scanned","type":"date","priority":1,"jsonPath":".status.scanTime"}"#,
    printcolumn = r#"{"name":"Fixable","type":"integer","priority":1,"jsonPath":".status.summary.fixable"}"#,
    printcolumn = r#"{"name":"Malicious","type":"integer","priority":1,"jsonPath":".status.summary.malicious"}"#,
    printcolumn = r#"{"name":"Deleted","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Deleted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ImageScanResultSpec {
    /// Registry host (and port) the image was read from.
    pub registry: String,
    /// Repository inside the registry, e.g. `team-a/api`.
    pub repository: String,
    /// Manifest digest of the image (`sha256:...`).
    pub digest: String,
    /// Tags pointing at this digest as of the last discovery or push that saw them: a tag
    /// moved to another digest, or removed from the registry, leaves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Each tag of `tags` with the time it was last seen pointing at this digest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags_seen: Vec<SeenTag>,
}

/// A tag and when it was last seen pointing at the result's digest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeenTag {
    /// The tag.
    pub tag: String,
    /// When a discovery or push last saw the tag point at this digest.
    pub last_seen: Time,
}

/// Class of a finding.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum FindingClass {
    /// A vulnerability of an operating-system package (dpkg, apk, rpm).
    SystemVulnerability,
    /// A vulnerability of an application package (PyPI, npm, Maven, Go, ...).
    ApplicationVulnerability,
    /// A configuration risk or an exposed secret.
    BaselineRisk,
    /// A known-malicious file or package.
    MaliciousSample,
}

/// The operating system the image is built on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperatingSystem {
    /// Distribution id (`debian`, `ubuntu`, `alpine`, `rhel`, ...).
    pub family: String,
    /// Distribution release.
    pub version: String,
}

/// Finding counts by severity, in total and per class.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResultSummary {
    /// All findings of severity Critical.
    pub critical: u32,
    /// All findings of severity High.
    pub high: u32,
    /// All findings of severity Medium.
    pub medium: u32,
    /// All findings of severity Low.
    pub low: u32,
    /// All findings of unknown severity.
    pub unknown: u32,
    /// Vulnerabilities of operating-system packages.
    pub system_vulnerabilities: SeverityCounts,
    /// Vulnerabilities of application packages.
    pub application_vulnerabilities: SeverityCounts,
    /// Configuration risks and exposed secrets.
    pub baseline_risks: SeverityCounts,
    /// Known-malicious files and packages.
    pub malicious_samples: SeverityCounts,
    /// Vulnerabilities with a fixed version to upgrade to.
    #[serde(default)]
    pub fixable: u32,
    /// Known-malicious files and packages, of any severity.
    #[serde(default)]
    pub malicious: u32,
}

/// One finding.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Advisory or check id (`CVE-2022-1292`, `DLA-3008-1`, `IW-BASE-001`, ...).
    pub id: String,
    /// Class of the finding.
    pub class: FindingClass,
    /// Severity of the finding.
    pub severity: Severity,
    /// CVSS base score, when the rating has a vector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// The CVSS vector the score was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<String>,
    /// Whose rating the severity is (osv for the CVSS of the advisory itself, ghsa, debian,
    /// ubuntu, alpine, nvd for the NVD CVSS of the CVEs of the finding, or a vendor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity_source: Option<String>,
    /// Affected package name (vulnerabilities and malicious packages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// Installed version of the package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// First version that fixes the vulnerability, when one exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_version: Option<String>,
    /// One-line description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Where in the image: file path or image configuration key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Primary link for more information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// Observed state of an ImageScanResult.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageScanResultStatus {
    /// First 12 hex digits of the digest, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_digest: Option<String>,
    /// Operating system of the image, when one was recognized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<OperatingSystem>,
    /// Version of the scanner that produced the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanner_version: Option<String>,
    /// Version of the vulnerability database the findings were matched against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_version: Option<String>,
    /// The scanners that made the result. Absent on results written before scanners were
    /// recorded, which ran them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scanners: Vec<ScannerKind>,
    /// When the image was scanned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_time: Option<Time>,
    /// Counts by severity.
    #[serde(default)]
    pub summary: ResultSummary,
    /// Findings, most severe first. Cut to keep the object small; see `truncated`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    /// Whether `findings` was cut to keep the object under 1 MiB.
    #[serde(default)]
    pub truncated: bool,
    /// Number of findings before any cut.
    #[serde(default)]
    pub total_findings: u32,
    /// What could not be checked, so that no findings does not read as no vulnerabilities:
    /// e.g. "no advisory source for this distribution (Alibaba Cloud Linux 3): 180 OS
    /// package(s) not checked", packages of a release the database has no advisories for,
    /// rpm packages from other vendors, package versions that are not versions, advisories
    /// whose ranges could not be evaluated. At most 20, the last counting any more.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The image's package inventory, gzip-compressed JSON in base64, kept so that a
    /// vulnerability database update re-matches the image without pulling it again. Unset
    /// when it is too large for the object (a warning says so): a database update then
    /// scans the image again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<String>,
    /// The identity (`id` and `package`) of every finding, including those cut from
    /// `findings`, gzip-compressed lines in base64: a database update reports as new only
    /// what is not among them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding_ids: Option<String>,
    /// Standard conditions: `Deleted` (status True, with the time) when the registry
    /// reported the image deleted or discovery no longer finds it in the rule's scope;
    /// such a result is removed after the rule's `resultRetention`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Findings accepted by live VulnerabilityExceptions of this namespace, by
    /// severity; still listed and still in `summary`. Written by the policy controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excepted: Option<SeverityCounts>,
    /// The verdict of each ImagePolicy covering this image, computed ahead of admission.
    /// Written by the policy controller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyVerdictEntry>,
    /// Before the last database update: the database the findings were matched with and
    /// their counts, set when a database update re-matched the stored inventory (the
    /// console's trend). Unset after a full scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousMatch>,
}

/// The findings of a result before a database update re-matched it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviousMatch {
    /// The database version the findings were matched with.
    pub database_version: String,
    /// Their number at each severity, every class together.
    pub totals: SeverityCounts,
}

/// One ImagePolicy's verdict on an image.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyVerdictEntry {
    /// Name of the ImagePolicy.
    pub policy: String,
    /// The policy's generation the verdict was computed for.
    #[serde(default)]
    pub generation: i64,
    /// `Pass`, `Warn` or `Violation` (before the policy's mode is applied).
    pub verdict: String,
    /// The top reasons, most severe first (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// When the verdict stops holding (a result ages past `maxResultAge`, or an
    /// exception expires); it is computed again then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<Time>,
}
