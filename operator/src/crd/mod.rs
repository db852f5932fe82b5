//! Custom resources of imagewarden (`imagewarden.io/v1alpha1`).
//!
//! Every type here has a status subresource; all but `ImagePolicy` are namespaced. Enums are plain
//! strings and variants are spelled out as separate optional fields, so the
//! generated OpenAPI schemas are structural and `kubectl explain` documents them.

pub mod image_fix;
pub mod image_policy;
pub mod image_scan_result;
pub mod scan_rule;
pub mod scan_task;
pub mod vulnerability_exception;

pub use image_fix::*;
pub use image_policy::*;
pub use image_scan_result::*;
pub use scan_rule::*;
pub use scan_task::*;
pub use vulnerability_exception::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of imagewarden's resources.
pub const GROUP: &str = "imagewarden.io";

/// All of imagewarden's CRDs, in the order they are written to `crds/`.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        ScanRule::crd(),
        ScanTask::crd(),
        ImageScanResult::crd(),
        ImagePolicy::crd(),
        VulnerabilityException::crd(),
        ImageFix::crd(),
    ]
}

/// Refers to one key of a Secret in the object's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as the object that refers to it.
    pub name: String,
    /// Key inside the Secret's data.
    pub key: String,
}

/// Refers to a whole Secret in the object's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret, in the same namespace as the object that refers to it.
    pub name: String,
}

/// Severity of a finding, from most to least severe.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
    Unknown,
}

/// Number of findings at each severity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeverityCounts {
    /// Findings of severity Critical.
    pub critical: u32,
    /// Findings of severity High.
    pub high: u32,
    /// Findings of severity Medium.
    pub medium: u32,
    /// Findings of severity Low.
    pub low: u32,
    /// Findings whose severity is not known.
    pub unknown: u32,
}

impl SeverityCounts {
    /// Counts one more finding of `severity`.
    pub fn add(&mut self, severity: Severity) {
        match severity {
            Severity::Critical => self.critical += 1,
            Severity::High => self.high += 1,
            Severity::Medium => self.medium += 1,
            Severity::Low => self.low += 1,
            Severity::Unknown => self.unknown += 1,
        }
    }

    /// All findings counted.
    pub fn total(&self) -> u32 {
        self.critical + self.high + self.medium + self.low + self.unknown
    }
}

/// The YAML of a CRD as written to `crds/`.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_norway::Error> {
    serde_norway::to_string(crd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The apiserver rejects CRDs whose schemas are not structural; these are the shapes
    /// it rejects that a derive can produce by accident.
    #[test]
    fn schemas_are_structural() {
        for crd in all() {
            let json = serde_json::to_string(&crd).unwrap();
            let name = crd.metadata.name.clone().unwrap();
            for forbidden in ["\"oneOf\"", "\"anyOf\"", "\"$ref\"", "\"allOf\""] {
                assert!(
                    !json.contains(forbidden),
                    "{name} schema contains {forbidden}"
                );
            }
            let version = &crd.spec.versions[0];
            assert!(
                version.subresources.as_ref().unwrap().status.is_some(),
                "{name}"
            );
            let scope = if name == "imagepolicies.imagewarden.io" {
                "Cluster"
            } else {
                "Namespaced"
            };
            assert_eq!(crd.spec.scope, scope, "{name}");
        }
    }

    #[test]
    fn scan_results_are_reachable_by_their_short_names() {
        let crd = ImageScanResult::crd();
        let names = crd.spec.names;
        assert_eq!(names.plural, "imagescanresults");
        let short = names.short_names.unwrap();
        for want in ["scanresults", "scanresult", "isr"] {
            assert!(short.iter().any(|s| s == want), "missing short name {want}");
        }
    }
}
