//! `ScanRule`: which images of a registry to scan, when, and whom to tell.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use imagewarden_scanner::finding::ScannerKind;

use super::{SecretKeyRef, SecretRef, Severity};

/// A declarative scan rule: a registry, a scope in it (a registry namespace or one
/// repository), a tag filter, the triggers that start a scan, the scanners to run and
/// the notification targets that hear about results.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "imagewarden.io",
    version = "v1alpha1",
    kind = "ScanRule",
    namespaced,
    status = "ScanRuleStatus",
    shortname = "sr",
    category = "imagewarden",
    doc = "Which images of a registry to scan, when, and whom to tell: a registry, a scope in it (a registry namespace or one repository), a tag filter, triggers (manual `imagewarden.io/scan-now` annotation, registry push, cron schedule), the scanners to run and notification targets. Each run is a ScanTask; each scanned image digest gets an ImageScanResult.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Registry","type":"string","jsonPath":".spec.registry.url"}"#,
    printcolumn = r#"{"name":"Scope","type":"string","jsonPath":".spec.scope.name"}"#,
    printcolumn = r#"{"name":"TagFilter","type":"string","jsonPath":".spec.tagFilter"}"#,
    printcolumn = r#"{"name":"LastTask","type":"string","jsonPath":".status.lastTask"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ScanRuleSpec {
    /// The registry to scan.
    pub registry: RegistrySpec,
    /// The part of the registry this rule covers.
    pub scope: ScopeSpec,
    /// Regular expression (Rust `regex` syntax) that a tag must match, anywhere in the tag
    /// unless anchored with ^ and $. Default: every tag. The API server refuses a pattern
    /// that is not valid RE2 (the common subset of both syntaxes).
    #[serde(default = "default_tag_filter")]
    #[schemars(default = "default_tag_filter", length(max = 1024))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "''.matches(self) ? true : true",
        "message": "spec.tagFilter is not a valid regular expression"
    }]))]
    pub tag_filter: String,
    /// Keep only the newest N matching tags of each repository (by image creation time).
    /// Unset: all matching tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_tags: Option<u32>,
    /// What starts a scan besides the manual `imagewarden.io/scan-now` annotation.
    #[serde(default)]
    pub triggers: TriggerSpec,
    /// Which scanners run on each image: `Vulnerability` (package vulnerabilities and
    /// malicious packages), `Baseline`, `Secret`, `Malware` (malicious files). Default: all
    /// of them. A result made without one of the rule's scanners is not reused for it.
    #[serde(default = "default_scanners")]
    #[schemars(default = "default_scanners", length(min = 1))]
    pub scanners: Vec<ScannerKind>,
    /// Where results are reported when a scan task finishes or new findings appear (at
    /// most 64 targets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub notifications: Vec<NotificationTarget>,
    /// Building patched images (`<tag>_fixd`) for images with fixable OS vulnerabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<FixSpec>,
    /// How long an ImageScanResult of this rule is kept once it is marked `Deleted` (the
    /// registry reported the image deleted, or discovery no longer finds it in the rule's
    /// scope), as a duration such as `168h`, `30m` or `7d`. Unset: 168h (7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_retention: Option<String>,
}

fn default_tag_filter() -> String {
    ".*".to_string()
}

fn default_scanners() -> Vec<ScannerKind> {
    ScannerKind::ALL.to_vec()
}

/// The shape of a cron expression, checked by the API server (the operator parses it
/// fully): 5 (or, with seconds, 6) fields of cron characters, or a `@daily`-style macro.
const CRON_SHAPE_RULE: &str = r"self.matches('^\\s*(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[0-9A-Za-z*/,?#-]+(\\s+[0-9A-Za-z*/,?#-]+){4,5})\\s*$')";

/// How to reach a registry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!self.url.contains('://') || self.url.lowerAscii().startsWith(self.insecure ? 'http://' : 'https://')",
    "message": "spec.registry.url: a scheme must match insecure (https:// when insecure is false, http:// when it is true), or leave the scheme out"
}]))]
pub struct RegistrySpec {
    /// Registry address, e.g. `registry.example.com`, `registry.example.com:5000` or
    /// `https://registry.example.com`. A scheme, when given, must match `insecure`.
    pub url: String,
    /// Secret with the registry credentials: either of type
    /// `kubernetes.io/dockerconfigjson` (key `.dockerconfigjson`) or with keys
    /// `username` and `password`. Unset: anonymous access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// Secret key holding PEM CA certificates to trust for this registry, in addition
    /// to the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// Talk plain HTTP to the registry. Only for registries on a trusted network.
    #[serde(default)]
    pub insecure: bool,
}

/// Kind of registry scope.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ScopeType {
    /// Every repository under a registry namespace (the path prefix before the last `/`).
    Namespace,
    /// One repository.
    Repository,
}

/// The part of the registry a rule covers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScopeSpec {
    /// `Namespace` (all repositories under `name/`) or `Repository` (exactly `name`).
    #[serde(rename = "type")]
    pub scope_type: ScopeType,
    /// The registry namespace (e.g. `team-a`) or repository (e.g. `team-a/api`).
    pub name: String,
}

/// What starts a scan.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerSpec {
    /// Scan an image when the registry reports that it was pushed (CNCF Distribution
    /// notifications or Harbor webhooks sent to the operator's push endpoint).
    #[serde(default)]
    pub on_push: bool,
    /// Cron schedule (5 fields, UTC) for full scans of the rule's scope, e.g. `0 3 * * *`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": CRON_SHAPE_RULE,
        "message": "spec.triggers.schedule must be a cron expression of 5 fields (minute hour day-of-month month day-of-week), e.g. \"0 3 * * *\""
    }]))]
    pub schedule: Option<String>,
}

/// Kind of notification target.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum NotificationType {
    /// DingTalk custom robot (markdown message, optional signing secret).
    DingTalk,
    /// A JSON document POSTed to a plain HTTP URL.
    HTTP,
    /// A JSON document POSTed to an HTTPS URL, verifying the server certificate.
    HTTPS,
}

/// An event that can be notified.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum NotificationEvent {
    /// A scan task finished and every image was scanned.
    ScanCompleted,
    /// A scan task finished with images that could not be scanned.
    ScanFailed,
    /// A vulnerability database update revealed findings that were not there before.
    NewFindings,
    /// A VulnerabilityException of the rule's namespace that covered findings of the
    /// rule's images expired (policy-event payload).
    ExceptionExpired,
    /// A running Pod's image, scanned under the rule, is now denied by an ImagePolicy
    /// (policy-event payload, one per sweep with every new violation).
    PolicyViolation,
    /// An ImageFix of one of the rule's images pushed and verified its fixed image
    /// (policy-event payload: the ImageFix, the pushed image, what was fixed).
    FixCompleted,
    /// An ImageFix of one of the rule's images failed (policy-event payload with the
    /// reason).
    FixFailed,
}

/// One place that hears about scan results.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.url) || has(self.urlSecretRef)",
        "message": "set url or urlSecretRef"
    },
    {
        "rule": "!has(self.url) || (self.type == 'HTTPS' ? self.url.lowerAscii().startsWith('https://') : (self.url.lowerAscii().startsWith('http://') || self.url.lowerAscii().startsWith('https://')))",
        "message": "url must be an http:// or https:// URL, and an https:// URL for type HTTPS"
    }
]))]
pub struct NotificationTarget {
    /// Name of the target, unique within the rule; used in the task's delivery status.
    pub name: String,
    /// Kind of target.
    #[serde(rename = "type")]
    pub target_type: NotificationType,
    /// Webhook URL (at most 2048 characters). For DingTalk the URL carries the access
    /// token, so prefer `urlSecretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub url: Option<String>,
    /// Secret key holding the webhook URL; takes precedence over `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<SecretKeyRef>,
    /// Secret key holding the signing secret: DingTalk's robot secret (`SEC...`), or the
    /// HMAC-SHA256 key for the `X-Imagewarden-Signature` header of HTTP(S) targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret_ref: Option<SecretKeyRef>,
    /// Secret whose keys and values are sent as extra HTTP headers (e.g. `Authorization`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_secret_ref: Option<SecretRef>,
    /// Secret key holding PEM CA certificates that sign the HTTPS server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// Skip verification of the HTTPS server certificate. Records a Warning event on use.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Events to notify. Default: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<NotificationEvent>,
    /// Notify only when findings at or above this severity exist. Unset: always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<Severity>,
}

/// Building patched images for images with fixable OS vulnerabilities: the settings of
/// the ImageFixes made for the rule's images, after each scan (`enabled`) or by the
/// `imagewarden.io/fix-now` annotation on one of its ImageScanResults.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FixSpec {
    /// After each scan, create an ImageFix for every image of the rule that was scanned
    /// (not for the images the fixes pushed).
    #[serde(default)]
    pub enabled: bool,
    /// Suffix appended to the tag of the patched image (letters, digits, `_ . -`).
    #[serde(default = "default_fix_suffix")]
    #[schemars(default = "default_fix_suffix", length(min = 1, max = 32))]
    pub tag_suffix: String,
    /// Move the image's tag to the patched image instead; the original image stays
    /// reachable as `<tag>_orig`.
    #[serde(default)]
    pub overwrite: bool,
    /// Vulnerabilities below this severity are left alone. Unset: every severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<Severity>,
    /// Package sources (apt's `[deb] URL SUITE COMPONENT...`, apk's repository URL; at
    /// most 16). Empty: each image's own sources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub sources: Vec<String>,
    /// A Secret in the rule's namespace whose data entries are keyring files, each entry's key
    /// its file name: OpenPGP keyrings (binary or armored) for apt sources' `InRelease`,
    /// RSA public keys named `<name>.rsa.pub` (the name signatures give) for apk's
    /// `APKINDEX`. Given, these keys are used instead of the image's own
    /// (`/etc/apt/trusted.gpg.d`, `/usr/share/keyrings`, `/etc/apk/keys`): for images
    /// that hold none, or to trust only the keys named here. At most 64 entries, 1 MiB
    /// in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyring_secret_ref: Option<SecretRef>,
    /// Refuse a repository's `InRelease` past its `Valid-Until`, as apt does.
    #[serde(default = "default_true")]
    #[schemars(default = "default_true")]
    pub check_valid_until: bool,
}

fn default_true() -> bool {
    true
}

fn default_fix_suffix() -> String {
    "_fixd".to_string()
}

/// Observed state of a ScanRule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanRuleStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the rule is valid and its registry answered `/v2/` with the rule's
    /// credentials (checked when the spec changes, then every 30 minutes); the message
    /// says what was checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Name of the most recent ScanTask started for this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_task: Option<String>,
    /// When the schedule last started a task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// The `imagewarden.io/scan-now` annotation value that was last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scan_now: Option<String>,
    /// Number of images (repository:tag) the rule matched when it last resolved its scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_images: Option<u32>,
}
