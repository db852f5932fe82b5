//! `ImagePolicy`: which images may run in which namespaces (cluster-scoped).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use imagewarden_scanner::policy::{
    DenyLogic, DenyRules, PolicyMode, PolicyRules, SeverityThreshold, UnscannedAction,
};

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
    doc = "A cluster-wide security policy for the images Pods run: which namespaces and images it covers, which findings deny an image, what happens to images without a fresh result, and whether a violation is denied (Enforce), admitted with a warning (Warn) or only counted (Audit). Enforced by the admission webhook from verdicts computed ahead of time.",
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
    /// What the policy says of a covered image (shared with `imagewarden scan --policy`).
    #[serde(flatten)]
    pub rules: PolicyRules,
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
