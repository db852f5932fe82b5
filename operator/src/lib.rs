//! imagewarden's operator: turns `ScanRule`s into `ScanTask`s and `ImageScanResult`s.

pub mod access;
pub mod conditions;
pub mod config;
pub mod console;
pub mod context;
pub mod controller;
pub mod crd;
pub mod db;
pub mod dbserve;
pub mod dbupdate;
pub mod executor;
pub mod finding_ids;
pub mod image_metrics;
pub mod install_check;
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
pub mod secrets;

/// Errors of reconciles and scans.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    /// A Secret the object refers to cannot be used.
    #[error(transparent)]
    Secret(#[from] secrets::SecretError),
    /// A field of the object is invalid; retrying will not help until it changes.
    #[error("{field}: {message}")]
    InvalidSpec {
        field: &'static str,
        message: String,
    },
    /// The object (or one it refers to) cannot be read as its type.
    #[error("{0}")]
    InvalidObject(String),
    /// The rule's registry settings or credentials cannot be used.
    #[error("registry credentials: {0}")]
    Credentials(#[from] imagewarden_scanner::registry::access::CredentialsError),
    #[error(transparent)]
    Registry(#[from] imagewarden_scanner::registry::RegistryError),
    #[error("scan failed: {0}")]
    Scan(#[from] imagewarden_scanner::pipeline::ScanError),
    /// A stored inventory cannot be decoded.
    #[error("stored inventory of {result}: {message}")]
    Inventory { result: String, message: String },
    /// A local file the operator needs could not be written.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("serialization: {0}")]
    Serde(#[from] serde_json::Error),
    #[error(transparent)]
    Notify(Box<notify::Error>),
    /// The controllers are stopping.
    #[error("the controllers are stopping")]
    Stopping,
}

impl Error {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Secret(_) => "secret",
            Error::InvalidSpec { .. } | Error::InvalidObject(_) | Error::Credentials(_) => {
                "invalid"
            }
            Error::Registry(_) => "registry",
            Error::Scan(_) | Error::Inventory { .. } => "scan",
            Error::Io { .. } => "io",
            Error::Serde(_) => "serde",
            Error::Notify(_) => "notify",
            Error::Stopping => "stopping",
        }
    }

    /// Whether reconciling again soon may succeed without anyone changing anything
    /// (network trouble, API server or registry overload); otherwise the object waits,
    /// with a long backoff, for a change.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Kube(e) => kube_error_is_transient(e),
            Error::Secret(e) => e.is_transient(),
            Error::Registry(e) => e.is_transient(),
            Error::Notify(_) | Error::Io { .. } | Error::Stopping => true,
            Error::Scan(_)
            | Error::InvalidSpec { .. }
            | Error::InvalidObject(_)
            | Error::Credentials(_)
            | Error::Inventory { .. }
            | Error::Serde(_) => false,
        }
    }
}

impl From<notify::Error> for Error {
    fn from(e: notify::Error) -> Self {
        Error::Notify(Box::new(e))
    }
}

/// Whether a Kubernetes API call may succeed if made again: connection trouble, timeouts,
/// conflicts, throttling and server errors; not a refusal (4xx) of the request itself.
pub fn kube_error_is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => status.code >= 500 || status.code == 409 || status.code == 429,
        kube::Error::SerdeError(_) => false,
        _ => true,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status {
                code,
                message: "m".into(),
                reason: "r".into(),
                ..Default::default()
            }
            .into(),
        )
    }

    #[test]
    fn only_errors_that_retrying_may_fix_are_transient() {
        for code in [500, 503, 429, 409] {
            assert!(Error::from(api_error(code)).is_transient(), "{code}");
        }
        for code in [400, 403, 404, 422] {
            assert!(!Error::from(api_error(code)).is_transient(), "{code}");
        }
        let missing = secrets::SecretError::NotFound {
            namespace: "team-a".into(),
            name: "creds".into(),
        };
        assert!(!Error::from(missing).is_transient());
        let unreachable = secrets::SecretError::Api {
            namespace: "team-a".into(),
            name: "creds".into(),
            source: api_error(503),
        };
        assert!(Error::from(unreachable).is_transient());
        let spec = Error::InvalidSpec {
            field: "spec.tagFilter",
            message: "unclosed group".into(),
        };
        assert!(!spec.is_transient());
        assert_eq!(spec.to_string(), "spec.tagFilter: unclosed group");
    }
}
