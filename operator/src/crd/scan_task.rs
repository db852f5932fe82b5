//! `ScanTask`: one run of a rule (or an ad-hoc list of images), with per-image progress.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One scan run: the images of a ScanRule resolved to digests at the time it started,
/// or an explicit list of images. The operator creates these for rules; users may
/// create them for ad-hoc scans.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "imagewarden.io",
    version = "v1alpha1",
    kind = "ScanTask",
    namespaced,
    status = "ScanTaskStatus",
    shortname = "st",
    category = "imagewarden",
    doc = "One scan run: the images of a ScanRule resolved to digests when it started, or an explicit list of images. The operator creates these for rules (manual, push, schedule, database update); users may create them for ad-hoc scans. Status shows progress, per-image outcomes and notification deliveries.",
    printcolumn = r#"{"name":"Rule","type":"string","jsonPath":".spec.ruleRef.name"}"#,
    printcolumn = r#"{"name":"Trigger","type":"string","jsonPath":".spec.trigger"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Total","type":"integer","jsonPath":".status.total"}"#,
    printcolumn = r#"{"name":"Succeeded","type":"integer","jsonPath":".status.succeeded"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.failed"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ScanTaskSpec {
    /// The rule this task runs. Its registry settings, scanners and notification targets
    /// apply. When `images` is empty the task covers everything the rule matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_ref: Option<RuleRef>,
    /// Explicit images to scan (`registry/repository:tag` or `...@sha256:...`). With a
    /// `ruleRef`, the rule's registry credentials are used for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// What started the task.
    #[serde(default)]
    pub trigger: TaskTrigger,
}

/// Names a ScanRule in the task's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleRef {
    /// Name of the ScanRule.
    pub name: String,
}

/// What started a task.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TaskTrigger {
    /// A user: the `imagewarden.io/scan-now` annotation or a ScanTask created by hand.
    #[default]
    Manual,
    /// A registry push notification.
    Push,
    /// The rule's cron schedule.
    Schedule,
    /// A vulnerability database update re-matched stored inventories.
    DatabaseUpdate,
    /// An ImagePolicy with `scanUnscanned` saw the image at admission without a result.
    Admission,
    /// An ImageFix pushed a fixed image: its ImageScanResult.
    Fix,
}

/// Phase of a task or of one image in it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ScanPhase {
    /// Waiting to start.
    #[default]
    Pending,
    /// In progress.
    Running,
    /// An image only: an attempt failed and another is scheduled (it runs as `Running`,
    /// with `attempts` above 1).
    Retrying,
    /// Finished; for a task, every image succeeded.
    Completed,
    /// Finished; for a task, at least one image failed.
    Failed,
}

/// Observed state of a ScanTask.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanTaskStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the task is.
    #[serde(default)]
    pub phase: ScanPhase,
    /// Number of images the task covers.
    #[serde(default)]
    pub total: u32,
    /// Images scanned successfully (or whose existing result was reused).
    #[serde(default)]
    pub succeeded: u32,
    /// Images that could not be scanned.
    #[serde(default)]
    pub failed: u32,
    /// One entry per image the task covers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageProgress>,
    /// When the task started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the task finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Delivery state of each notification target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<NotificationDelivery>,
    /// Standard conditions (`Complete`, `Failed`, `NotificationFailed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Progress of one image of a task.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageProgress {
    /// The image as discovered: `registry/repository:tag`.
    pub image: String,
    /// Manifest digest the tag resolved to when the task started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Where the scan of this image is.
    #[serde(default)]
    pub phase: ScanPhase,
    /// Name of the ImageScanResult that holds this image's findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_name: Option<String>,
    /// Scan attempts made so far.
    #[serde(default)]
    pub attempts: u32,
    /// Why the image failed, or how it was satisfied (e.g. an existing result reused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Delivery state of one notification target for one event of a task.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationDelivery {
    /// The target's name in the rule.
    pub target: String,
    /// The event notified (`ScanCompleted`, `ScanFailed`, `NewFindings`).
    pub event: String,
    /// `Pending` (intent recorded, not yet confirmed), `Delivered`, `Failed` or `Skipped`.
    pub state: String,
    /// Attempts made.
    #[serde(default)]
    pub attempts: u32,
    /// When the state last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Why delivery failed or was skipped. Never holds secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
