//! `ImageFix`: one patched image built for the fixable system vulnerabilities of one
//! image digest, pushed next to it (`<tag>_fixd`) or over its tag.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{RuleRef, SecretRef, Severity};

/// Most vulnerability ids one ImageFix may name.
pub const MAX_FIX_VULNERABILITIES: usize = 256;
/// Most package sources one ImageFix may name.
pub const MAX_FIX_SOURCES: usize = 16;
/// Most upgrades and unfixable ids kept in the status (the counts say how many in all).
pub const MAX_FIX_STATUS_ENTRIES: usize = 256;

/// A patched image for the fixable OS (dpkg/apt, apk) vulnerabilities of one image digest:
/// the plan (package upgrades from verified repository indexes), one new layer, the push
/// (`<tag>_fixd`, or over the tag with the original kept as `<tag>_orig`) and the
/// rescan of the pushed digest.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "imagewarden.io",
    version = "v1alpha1",
    kind = "ImageFix",
    namespaced,
    status = "ImageFixStatus",
    shortname = "ifx",
    category = "imagewarden",
    doc = "A patched image for the fixable OS (Debian/Ubuntu, Alpine) vulnerabilities of one image digest: the plan (package upgrades from repository indexes verified against the image's apt keyring or apk keys, or those of spec.keyringSecretRef instead), one new layer with dpkg's or apk's database rewritten, the push (`<tag>_fixd`, or over the tag with the original kept as `<tag>_orig`) and the rescan of the pushed digest. Created by hand, by the `imagewarden.io/fix-now` annotation on an ImageScanResult, or by a ScanRule's `spec.fix` after each scan.",
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".status.image"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Fixed","type":"string","jsonPath":".status.pushed"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.resultRef) != has(self.image)",
    "message": "set exactly one of resultRef and image"
}, {
    "rule": "!has(self.image) || has(self.ruleRef)",
    "message": "image needs ruleRef: the ScanRule whose registry access reads and pushes the image"
}]))]
pub struct ImageFixSpec {
    /// The ImageScanResult (same namespace) of the image to fix. Its rule's registry
    /// access is used unless `ruleRef` names another rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_ref: Option<ResultRef>,
    /// The image to fix, by tag and digest: `registry/repository:tag@sha256:...` (the
    /// fixed image's tag derives from the tag; the digest is what is fixed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image: Option<String>,
    /// The ScanRule (same namespace) whose registry access (credentials, CA, insecure)
    /// reads the image and pushes the fixed one; the image must be on its registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_ref: Option<RuleRef>,
    /// Vulnerability ids (or aliases such as CVE ids) to fix, at most 256. Empty: every
    /// fixable OS vulnerability at or above `minSeverity`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub vulnerabilities: Vec<String>,
    /// Vulnerabilities below this severity are left alone. Unset: every severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<Severity>,
    /// Where the fixed image goes.
    #[serde(default)]
    pub target: ImageFixTarget,
    /// Package sources to fix from (http or https, at most 16): apt's in `sources.list`
    /// one-line form (`[deb] URL SUITE COMPONENT...`), apk's as a repository URL (a line
    /// of `/etc/apk/repositories`). Empty: the image's own sources. Indexes are verified
    /// against the image's keys, or those of `keyringSecretRef`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub sources: Vec<String>,
    /// A Secret in this namespace whose data entries are keyring files, each entry's key
    /// its file name: OpenPGP keyrings (binary or armored) for apt sources' `InRelease`,
    /// RSA public keys named `<name>.rsa.pub` (the name signatures give) for apk's
    /// `APKINDEX`. Given, these keys are used instead of the image's own
    /// (`/etc/apt/trusted.gpg.d`, `/usr/share/keyrings`, `/etc/apk/keys`): for images
    /// that hold none, or to trust only the keys named here. At most 64 entries, 1 MiB
    /// in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyring_secret_ref: Option<SecretRef>,
    /// Refuse a repository's `InRelease` past its `Valid-Until`, as apt does. False only
    /// for archives kept for replay on purpose (apt's `Check-Valid-Until=false`).
    #[serde(default = "default_true")]
    #[schemars(default = "default_true")]
    pub check_valid_until: bool,
}

fn default_true() -> bool {
    true
}

/// Names an ImageScanResult in the ImageFix's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResultRef {
    /// Name of the ImageScanResult.
    pub name: String,
}

/// Where the fixed image is pushed: always the image's own repository.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageFixTarget {
    /// Appended to the image's tag to name the fixed image (`1.0` → `1.0_fixd`). Letters,
    /// digits, `_`, `.`, `-`; at most 32.
    #[serde(default = "default_tag_suffix")]
    #[schemars(default = "default_tag_suffix", length(min = 1, max = 32))]
    pub tag_suffix: String,
    /// Move the image's tag to the fixed image instead; the original image stays
    /// reachable as `<tag>_orig`. `tagSuffix` is then not used.
    #[serde(default)]
    pub overwrite: bool,
}

impl Default for ImageFixTarget {
    fn default() -> Self {
        Self {
            tag_suffix: default_tag_suffix(),
            overwrite: false,
        }
    }
}

fn default_tag_suffix() -> String {
    imagewarden_scanner::fix::DEFAULT_TAG_SUFFIX.to_string()
}

/// Phase of an ImageFix.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ImageFixPhase {
    /// Reading the image and the verified package indexes, deciding the upgrades.
    #[default]
    Planning,
    /// Downloading and verifying the packages, writing the new layer.
    Building,
    /// Pushing the layer, the configuration and the manifest.
    Pushing,
    /// Reading the pushed image again and matching it against the database.
    Verifying,
    /// The fixed image is pushed and verified.
    Completed,
    /// The fix could not be made; nothing was pushed unless `pushed` says so.
    Failed,
    /// No selected vulnerability can be fixed (see `unfixable`); nothing was pushed.
    NothingToFix,
}

impl ImageFixPhase {
    /// Whether the fix has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::NothingToFix)
    }
}

/// One package upgrade of the plan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedUpgrade {
    /// The binary package.
    pub package: String,
    /// The installed version.
    pub from: String,
    /// The version installed in the fixed image.
    pub to: String,
    /// The vulnerability ids this upgrade fixes; empty for an upgrade that a fixed
    /// package depends on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fixes: Vec<String>,
}

/// A vulnerability the fix leaves, and why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnfixableVulnerability {
    /// The vulnerability id.
    pub id: String,
    /// The package (or source package) it concerns.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub package: String,
    /// Why it is not fixed.
    pub reason: String,
}

/// The pushed image read again: which planned ids are gone.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FixVerification {
    /// Planned ids no longer found in the fixed image.
    #[serde(default)]
    pub fixed: Vec<String>,
    /// Planned ids still found in the fixed image.
    #[serde(default)]
    pub remaining: Vec<String>,
}

/// Observed state of an ImageFix.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageFixStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the fix is.
    #[serde(default)]
    pub phase: ImageFixPhase,
    /// What the phase means now, or why the fix failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The image fixed: `registry/repository:tag@digest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The package upgrades (at most 256 listed; `upgradeCount` is the total).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<PlannedUpgrade>,
    /// Number of package upgrades in the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_count: Option<u32>,
    /// The selected vulnerabilities that are not fixed, with the reason for each (at most
    /// 256 listed; `unfixableCount` is the total).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unfixable: Vec<UnfixableVulnerability>,
    /// Number of vulnerabilities not fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unfixable_count: Option<u32>,
    /// The fixed image: `registry/repository:tag@digest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<String>,
    /// With `target.overwrite`, where the original image stays: `...:<tag>_orig@digest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
    /// The rescan of the fixed image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<FixVerification>,
    /// The database version the plan and the verification were matched against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_version: Option<String>,
    /// `Ready`: the spec is valid and the fix ran (`False` with the reason otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
