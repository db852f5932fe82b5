//! Resolving the Secrets a rule refers to into [`RegistryAccess`].

use kube::Client;

use crate::crd::RegistrySpec;
use crate::registry::{Credentials, FromSecretData as _, RegistryAccess};
use crate::secrets::SecretReader;
use crate::Error;

/// Resolves a rule's registry settings and Secrets.
pub async fn registry_access(
    client: &Client,
    namespace: &str,
    spec: &RegistrySpec,
    egress: std::sync::Arc<imagewarden_scanner::egress::EgressPolicy>,
) -> Result<RegistryAccess, Error> {
    let mut access = RegistryAccess::new(&spec.url, spec.insecure)?.with_egress(egress);
    let secrets = SecretReader::new(client, namespace);
    if let Some(r) = &spec.credentials_secret_ref {
        let data = secrets.data(&r.name).await?;
        let credentials = Credentials::from_secret_data(&data, &access.host)?;
        access = access.with_credentials(credentials);
    }
    if let Some(r) = &spec.ca_secret_ref {
        access = access.with_ca_pem(secrets.text(&r.name, &r.key).await?);
    }
    Ok(access)
}
