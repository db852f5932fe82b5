//! imagewarden's operator: turns `ScanRule`s into `ScanTask`s and `ImageScanResult`s.

pub mod access;
pub mod conditions;
pub mod config;
pub mod context;
pub mod controller;
pub mod crd;
pub mod dbserve;
pub mod dbupdate;
pub mod executor;
pub mod finding_ids;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod netpol;
pub mod notify;
pub mod policy;
pub mod probe;
pub mod registry;
pub mod result;
pub mod scanner_identity;
pub mod scope;

/// Errors of reconciles and scans.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    /// The object (or something it refers to) is invalid; retrying will not help until it
    /// changes.
    #[error("{0}")]
    Invalid(String),
    #[error("registry: {0}")]
    Registry(String),
    #[error("scan failed: {0}")]
    Scan(String),
    #[error("serialization: {0}")]
    Serde(#[from] serde_json::Error),
    /// Notification status could not be read or written; retried.
    #[error("notifications: {0}")]
    Notify(String),
}

impl Error {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Invalid(_) => "invalid",
            Error::Registry(_) => "registry",
            Error::Scan(_) => "scan",
            Error::Serde(_) => "serde",
            Error::Notify(_) => "notify",
        }
    }
}

/// The current time as Kubernetes objects carry it.
pub fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
}

/// A Kubernetes time as chrono's UTC time (second precision).
pub fn to_chrono(
    t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t.0.as_second(), 0).unwrap_or_default()
}

/// chrono's UTC time as a Kubernetes time.
pub fn from_chrono(
    t: chrono::DateTime<chrono::Utc>,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(t.timestamp())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}
