//! Resolving the Secrets a rule refers to into [`RegistryAccess`].

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::Api;
use kube::Client;
use std::collections::BTreeMap;

use crate::crd::RegistrySpec;
use crate::registry::{Credentials, FromSecretData as _, RegistryAccess};
use crate::Error;

/// The data of a Secret, with `stringData` folded in.
pub async fn secret_data(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<BTreeMap<String, ByteString>, Error> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?
        .ok_or_else(|| Error::Invalid(format!("Secret {namespace}/{name} not found")))?;
    let mut data = secret.data.unwrap_or_default();
    for (k, v) in secret.string_data.unwrap_or_default() {
        data.insert(k, ByteString(v.into_bytes()));
    }
    Ok(data)
}

/// Reads one key of a Secret as UTF-8 text.
pub async fn secret_key(
    client: &Client,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<String, Error> {
    let data = secret_data(client, namespace, name).await?;
    let value = data
        .get(key)
        .ok_or_else(|| Error::Invalid(format!("Secret {namespace}/{name} has no key {key:?}")))?;
    String::from_utf8(value.0.clone()).map_err(|_| {
        Error::Invalid(format!(
            "Secret {namespace}/{name} key {key:?} is not UTF-8 text"
        ))
    })
}

/// Resolves a rule's registry settings and Secrets.
pub async fn registry_access(
    client: &Client,
    namespace: &str,
    spec: &RegistrySpec,
    egress: std::sync::Arc<imagewarden_scanner::egress::EgressPolicy>,
) -> Result<RegistryAccess, Error> {
    let mut access = RegistryAccess::new(&spec.url, spec.insecure)
        .map_err(|e| Error::Invalid(e.to_string()))?
        .with_egress(egress);
    if let Some(r) = &spec.credentials_secret_ref {
        let data = secret_data(client, namespace, &r.name).await?;
        let credentials = Credentials::from_secret_data(&data, &access.host).map_err(|e| {
            Error::Invalid(format!("credentials Secret {namespace}/{}: {e}", r.name))
        })?;
        access = access.with_credentials(credentials);
    }
    if let Some(r) = &spec.ca_secret_ref {
        access = access.with_ca_pem(secret_key(client, namespace, &r.name, &r.key).await?);
    }
    Ok(access)
}
