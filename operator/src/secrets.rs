//! Reading the Secrets that objects refer to (registry credentials and CAs, notification
//! URLs, signing keys, headers): one reader, whose errors say what to fix and never
//! contain a Secret's value.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::Api;
use kube::Client;

/// Why a Secret (or one of its keys) could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("Secret {namespace}/{name} does not exist: create it or fix the reference")]
    NotFound { namespace: String, name: String },
    #[error(
        "the operator may not read Secret {namespace}/{name}: grant it get on secrets in {namespace}"
    )]
    Forbidden { namespace: String, name: String },
    #[error("Secret {namespace}/{name} has no key {key:?}")]
    MissingKey {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("Secret {namespace}/{name} key {key:?} is not UTF-8 text")]
    NotText {
        namespace: String,
        name: String,
        key: String,
    },
    /// The API server could not be asked (connection, timeout, server error).
    #[error("reading Secret {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl SecretError {
    /// Whether asking again may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            SecretError::Api { source, .. } => crate::kube_error_is_transient(source),
            _ => false,
        }
    }
}

/// Reads the Secrets of one namespace.
#[derive(Clone)]
pub struct SecretReader {
    api: Api<Secret>,
    namespace: String,
}

impl SecretReader {
    pub fn new(client: &Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client.clone(), namespace),
            namespace: namespace.to_string(),
        }
    }

    /// The namespace this reader reads in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The data of Secret `name`.
    pub async fn data(&self, name: &str) -> Result<BTreeMap<String, ByteString>, SecretError> {
        let (namespace, name) = (self.namespace.clone(), name.to_string());
        match self.api.get_opt(&name).await {
            Ok(Some(secret)) => Ok(secret.data.unwrap_or_default()),
            Ok(None) => Err(SecretError::NotFound { namespace, name }),
            Err(kube::Error::Api(e)) if e.code == 403 => {
                Err(SecretError::Forbidden { namespace, name })
            }
            Err(source) => Err(SecretError::Api {
                namespace,
                name,
                source,
            }),
        }
    }

    /// The bytes of `key` in Secret `name`.
    pub async fn bytes(&self, name: &str, key: &str) -> Result<Vec<u8>, SecretError> {
        self.data(name)
            .await?
            .remove(key)
            .map(|b| b.0)
            .ok_or_else(|| SecretError::MissingKey {
                namespace: self.namespace.clone(),
                name: name.to_string(),
                key: key.to_string(),
            })
    }

    /// `key` in Secret `name` as UTF-8 text.
    pub async fn text(&self, name: &str, key: &str) -> Result<String, SecretError> {
        String::from_utf8(self.bytes(name, key).await?).map_err(|_| SecretError::NotText {
            namespace: self.namespace.clone(),
            name: name.to_string(),
            key: key.to_string(),
        })
    }
}
