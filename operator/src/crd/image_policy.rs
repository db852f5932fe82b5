//! `ImagePolicy`: which images may run in which namespaces (cluster-scoped).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A security policy for the images Pods run: which namespaces and images it covers,
/// which findings deny an image, what happens to images without a (fresh) result, and
/// whether a violation is denied (`Enforce`), admitted with a warning (`Warn`) or only
/// counted (`Audit`). Enforced by the operator's validating admission webhook from
/// verdicts computed ahead of time; it never scans at admission.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "imagewarden.io",
    version = "v1alpha1",
    kind = "ImagePolicy",
    status = "ImagePolicyStatus",
    shortname = "ipol",
    category = "imagewarden",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Severity","type":"string","jsonPath":".spec.deny.severity"}"#,
    printcolumn = r#"{"name":"Unscanned","type":"string","jsonPath":".spec.unscanned"}"#,
    printcolumn = r#"{"name":"Admitted","type":"integer","jsonPath":".status.admitted"}"#,
    printcolumn = r#"{"name":"Denied","type":"integer","jsonPath":".status.denied"}"#,
    printcolumn = r#"{"name":"Warned","type":"integer","jsonPath":".status.warned"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ImagePolicySpec {
    /// The namespaces and images the policy covers.
    #[serde(default, rename = "match")]
    pub match_: PolicyMatch,
    /// Which findings make an image a violation.
    #[serde(default)]
    pub deny: DenyRules,
    /// An image with no ImageScanResult, or whose result is stale (see `maxResultAge`):
    /// `Deny` (the default, as Harbor's "prevent vulnerable images from running"),
    /// `Warn`, or `Allow`.
    #[serde(default)]
    pub unscanned: UnscannedAction,
    /// Start a ScanTask (of a ScanRule in the Pod's namespace that covers the image's
    /// repository) for an image seen at admission that has no result.
    #[serde(default)]
    pub scan_unscanned: bool,
    /// An image whose last scan failed and that has no result: `Deny` (the default),
    /// `Warn`, or `Allow`.
    #[serde(default)]
    pub scan_failed: UnscannedAction,
    /// A result older than this (`90s`, `12h`, `7d`), or made with an older vulnerability
    /// database than the operator's current one, is stale and handled as `unscanned`
    /// says, on top of its findings. Unset: results do not age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_result_age: Option<String>,
    /// `Enforce` (deny violations), `Warn` (admit them with admission warnings) or
    /// `Audit` (admit them and only count them in the status).
    #[serde(default)]
    pub mode: PolicyMode,
}

/// What the policy covers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyMatch {
    /// Namespaces whose labels match. Unset: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Image patterns, `registry/repository` with `*` matching any run of characters
    /// (`registry.example.com/team-a/*`, `*`). Docker Hub images are `docker.io/library/nginx`.
    /// Empty: every image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// Namespaces never covered. Unset: `kube-system` and the operator's own namespace,
    /// so the cluster's components never wait on the webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_namespaces: Option<Vec<String>>,
}

/// A severity threshold: findings at or above it count.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum SeverityThreshold {
    Critical,
    High,
    Medium,
    Low,
}

/// How the vulnerability, baseline and malicious conditions combine.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum DenyLogic {
    /// Any set condition that holds denies.
    #[default]
    Or,
    /// Only all set conditions holding together deny.
    And,
}

/// Which findings make an image a violation. Conditions that are not set take no part;
/// `ids` always deny, whatever `logic` says.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DenyRules {
    /// Vulnerability condition: this many (`count`) system or application
    /// vulnerabilities at or above this severity. Unknown severities never count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<SeverityThreshold>,
    /// How many vulnerabilities at or above `severity` deny. Default 1.
    #[serde(default = "default_count")]
    #[schemars(default = "default_count", range(min = 1))]
    pub count: u32,
    /// Count only vulnerabilities that have a fixed version.
    #[serde(default)]
    pub only_fixable: bool,
    /// Baseline condition: any baseline risk at or above this severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_severity: Option<SeverityThreshold>,
    /// Malicious condition: any malicious sample, or a known-malicious package
    /// (an OSV `MAL-` record).
    #[serde(default)]
    pub malicious: bool,
    /// How the set conditions combine: `OR` (default) or `AND`.
    #[serde(default)]
    pub logic: DenyLogic,
    /// Finding ids that always deny: CVE or advisory ids, baseline check ids
    /// (`IW-BASE-001`). At most 256.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub ids: Vec<String>,
}

fn default_count() -> u32 {
    1
}

impl Default for DenyRules {
    fn default() -> Self {
        Self {
            severity: None,
            count: default_count(),
            only_fixable: false,
            baseline_severity: None,
            malicious: false,
            logic: DenyLogic::Or,
            ids: Vec::new(),
        }
    }
}

/// What happens to an image without a usable result.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UnscannedAction {
    /// A violation (denied in `Enforce` mode).
    #[default]
    Deny,
    /// Admitted with a warning (in `Enforce` and `Warn` modes).
    Warn,
    /// Admitted.
    Allow,
}

/// How violations are handled at admission.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PolicyMode {
    /// Violations are denied.
    #[default]
    Enforce,
    /// Violations are admitted with admission warnings.
    Warn,
    /// Violations are admitted and counted in the status.
    Audit,
}

/// Observed state of an ImagePolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePolicyStatus {
    /// The generation of the spec the verdicts were computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Admission requests this policy admitted without remark.
    #[serde(default)]
    pub admitted: u64,
    /// Admission requests this policy denied (`Enforce`).
    #[serde(default)]
    pub denied: u64,
    /// Admission requests admitted with warnings (`Warn` mode, or `unscanned: Warn`).
    #[serde(default)]
    pub warned: u64,
    /// Admission requests admitted in `Audit` mode that `Enforce` would have denied.
    #[serde(default)]
    pub audited: u64,
    /// The most recent violations (denied, warned or audited), newest first; at most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_denials: Vec<PolicyDenial>,
    /// Standard conditions (`Ready`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One violation seen at admission.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDenial {
    /// When.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// `Denied`, `Warned` or `Audited`.
    pub action: String,
    /// `Kind namespace/name` of the object admitted or refused.
    pub object: String,
    /// The image.
    pub image: String,
    /// Why, shortened.
    pub message: String,
}
