//! TLS settings of the servers (the scanner API, and the operator's push, admission and
//! database endpoints): a certificate chain and key from PEM files.

use std::path::Path;
use std::sync::Arc;

/// A certificate chain and private key read from PEM files; the error names the file and
/// what is wrong with it.
pub fn read_pem_files(
    cert_file: &Path,
    key_file: &Path,
) -> Result<
    (
        Vec<rustls_pki_types::CertificateDer<'static>>,
        rustls_pki_types::PrivateKeyDer<'static>,
    ),
    String,
> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("{}: not PEM certificates: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no PEM certificate", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("{}: no PEM private key: {e}", key_file.display()))?;
    Ok((certs, key))
}

/// The TLS settings of a certificate chain and private key in PEM files; the error names
/// the file and what is wrong with it.
pub fn tls_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<tokio_rustls::rustls::ServerConfig>, String> {
    use tokio_rustls::rustls;

    let (certs, key) = read_pem_files(cert_file, key_file)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "{} and {} are not a usable certificate and key: {e}",
                cert_file.display(),
                key_file.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
