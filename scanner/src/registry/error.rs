//! Errors from talking to a registry, each naming the registry (and the repository when
//! there is one) so that a user can act on the condition message alone.

use std::fmt;

/// `" repository NAME"` when a repository is known, nothing otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct InRepository(pub Option<String>);

impl fmt::Display for InRepository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(repository) => write!(f, " repository {repository}"),
            None => Ok(()),
        }
    }
}

/// What went wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry (or its token service) refused the credentials, or asked for
    /// credentials when none were configured.
    #[error("registry {registry}{repository}: authentication failed (HTTP {status}): {message}; check the rule's credentials Secret")]
    Unauthorized {
        registry: String,
        repository: InRepository,
        status: u16,
        message: String,
    },
    /// The credentials were accepted but do not grant access to this resource.
    #[error("registry {registry}{repository}: access denied (HTTP {status}): {message}; the credentials lack pull (or catalog) permission")]
    Forbidden {
        registry: String,
        repository: InRepository,
        status: u16,
        message: String,
    },
    /// No connection could be made: DNS, refused connection, timeout, TLS handshake.
    #[error("registry {registry} unreachable: {reason}")]
    Unreachable { registry: String, reason: String },
    /// The repository or tag does not exist.
    #[error("registry {registry}{repository}: not found (HTTP 404): {message}")]
    NotFound {
        registry: String,
        repository: InRepository,
        message: String,
    },
    /// Any other unexpected HTTP status.
    #[error("registry {registry}{repository}: HTTP {status} from {url}: {message}")]
    Http {
        registry: String,
        repository: InRepository,
        status: u16,
        url: String,
        message: String,
    },
    /// The TLS handshake failed: an untrusted or mismatched certificate, or a registry
    /// that does not speak TLS.
    #[error("registry {registry}: TLS handshake failed: {reason}; set the rule's caSecretRef to the CA that signed the registry's certificate, or insecure: true if the registry serves plain HTTP")]
    Tls { registry: String, reason: String },
    /// The registry answered with something that does not follow the distribution API.
    #[error("registry {registry}{repository}: unexpected response: {message}")]
    Protocol {
        registry: String,
        repository: InRepository,
        message: String,
    },
    /// The egress policy refused the address the registry (or its token service) is at.
    #[error("registry {registry}: not contacted: {reason}")]
    EgressDenied { registry: String, reason: String },
    /// A configured bound (pages, repositories, tags, images) was exceeded.
    #[error("registry {registry}{repository}: more than {limit} {what}; narrow the rule's scope or tag filter, or raise the limit")]
    LimitExceeded {
        registry: String,
        repository: InRepository,
        what: &'static str,
        limit: usize,
    },
    /// The registry settings themselves are unusable (bad URL, bad CA PEM).
    #[error("registry {registry}: invalid configuration: {message}")]
    Config { registry: String, message: String },
}

impl RegistryError {
    /// A short, stable label for metrics and condition reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unauthorized { .. } => "Unauthorized",
            Self::Forbidden { .. } => "Forbidden",
            Self::Unreachable { .. } => "Unreachable",
            Self::Tls { .. } => "TLSError",
            Self::NotFound { .. } => "NotFound",
            Self::Http { .. } => "RegistryError",
            Self::Protocol { .. } => "ProtocolError",
            Self::LimitExceeded { .. } => "LimitExceeded",
            Self::EgressDenied { .. } => "EgressDenied",
            Self::Config { .. } => "InvalidRegistryConfig",
        }
    }

    /// True when retrying later may help (network trouble, server errors, rate limits).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Http { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}
