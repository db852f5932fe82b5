//! How to reach a registry. The types live in the scanner library, which pulls with them
//! too; here a rule's `registry` block and a credentials Secret's data are read into them.

use std::collections::BTreeMap;

pub use imagewarden_scanner::registry::access::*;
use k8s_openapi::ByteString;

use super::error::RegistryError;
use crate::crd::RegistrySpec;

/// The access described by a rule's `registry` block, with its Secrets resolved by the
/// caller.
pub fn access_from_spec(
    spec: &RegistrySpec,
    ca_pem: Option<String>,
    credentials: Option<Credentials>,
) -> Result<RegistryAccess, RegistryError> {
    let mut access = RegistryAccess::new(&spec.url, spec.insecure)?;
    access.ca_pem = ca_pem;
    access.credentials = credentials;
    Ok(access)
}

/// Credentials read from the data of a Kubernetes Secret.
pub trait FromSecretData: Sized {
    /// Reads the credentials for `registry_host` from a Secret's data: a
    /// `.dockerconfigjson` key (type `kubernetes.io/dockerconfigjson`), the legacy
    /// `.dockercfg` key, or `username` and `password` keys. A Docker config that sends the
    /// registry to a credential helper is refused: the helper is never run.
    fn from_secret_data(
        data: &BTreeMap<String, ByteString>,
        registry_host: &str,
    ) -> Result<Self, CredentialsError>;
}

impl FromSecretData for Credentials {
    fn from_secret_data(
        data: &BTreeMap<String, ByteString>,
        registry_host: &str,
    ) -> Result<Self, CredentialsError> {
        Credentials::from_secret_entries(|key| data.get(key).map(|v| v.0.as_slice()), registry_host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn secret_data_is_read_and_helpers_are_refused() {
        let json = r#"{"auths":{"r.example":{"username":"u","password":"p"}}}"#;
        let creds = <Credentials as FromSecretData>::from_secret_data(
            &data(&[(".dockerconfigjson", json)]),
            "r.example",
        )
        .unwrap();
        assert_eq!(creds, Credentials::new("u", "p"));
        let json = r#"{"credHelpers":{"r.example":"ecr-login"}}"#;
        let err = <Credentials as FromSecretData>::from_secret_data(
            &data(&[(".dockerconfigjson", json)]),
            "r.example",
        )
        .unwrap_err();
        assert!(
            matches!(err, CredentialsError::HelperRefused { .. }),
            "{err}"
        );
    }

    #[test]
    fn spec_access_keeps_the_secrets() {
        let spec: RegistrySpec =
            serde_json::from_str(r#"{"url":"https://R.example:443/","insecure":false}"#).unwrap();
        let access = access_from_spec(&spec, Some("pem".into()), None).unwrap();
        assert_eq!(access.host, "r.example");
        assert_eq!(access.ca_pem.as_deref(), Some("pem"));
    }
}
