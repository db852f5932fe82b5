//! The admission webhook's serving certificate, read from PEM files (a mounted
//! `kubernetes.io/tls` Secret, as cert-manager or the chart writes it) and read again when
//! the files change, so that a rotated certificate is served without a restart and
//! without a failed handshake.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio_rustls::rustls;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

/// How often the files are looked at (kubelet updates Secret volumes within about a
/// minute).
const CHECK_EVERY: Duration = Duration::from_secs(10);

/// Loads a certificate chain and key; the error names the file and the problem.
pub fn load(
    cert_file: &Path,
    key_file: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let (certs, key) = crate::registry::webhook::read_pem_files(cert_file, key_file)?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: unusable private key: {e}", key_file.display()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| {
        format!(
            "{} and {} do not belong together: {e}",
            cert_file.display(),
            key_file.display()
        )
    })?;
    Ok(Arc::new(certified))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

struct Loaded {
    key: Arc<CertifiedKey>,
    stamps: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

/// Serves the certificate of two files, reloading them when they change; a broken
/// update keeps the previous certificate (and is logged).
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish()
    }
}

impl ReloadingCert {
    fn stamps(&self) -> (Option<SystemTime>, Option<SystemTime>) {
        (modified(&self.cert_file), modified(&self.key_file))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut loaded = self.loaded.lock().ok()?;
        if loaded.checked.elapsed() >= CHECK_EVERY {
            loaded.checked = Instant::now();
            let stamps = self.stamps();
            if stamps != loaded.stamps {
                match load(&self.cert_file, &self.key_file, &self.provider) {
                    Ok(key) => {
                        tracing::info!(cert = %self.cert_file.display(), "admission certificate reloaded");
                        loaded.key = key;
                        loaded.stamps = stamps;
                    }
                    // Mid-update (one file written, not the other): try again later.
                    Err(e) => tracing::warn!(error = %e, "admission certificate not reloaded"),
                }
            }
        }
        Some(loaded.key.clone())
    }
}

/// TLS settings serving the certificate of `cert_file` and `key_file`, reloaded when
/// they change.
pub fn reloading_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key = load(cert_file, key_file, &provider)?;
    let resolver = ReloadingCert {
        cert_file: cert_file.to_path_buf(),
        key_file: key_file.to_path_buf(),
        provider: provider.clone(),
        loaded: Mutex::new(Loaded {
            key,
            stamps: (modified(cert_file), modified(key_file)),
            checked: Instant::now(),
        }),
    };
    server_config(provider, Arc::new(resolver))
}

/// Serves whatever certificate it was last given ([`SharedCert::set_pem`]): the
/// operator-made certificate, handed over from the Secret watch.
pub struct SharedCert {
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: std::sync::RwLock<(Vec<u8>, Arc<CertifiedKey>)>,
}

impl std::fmt::Debug for SharedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCert").finish_non_exhaustive()
    }
}

fn certified_from_pem(
    cert: &[u8],
    key: &[u8],
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<rustls_pki_types::CertificateDer<'static>> =
        rustls_pki_types::CertificateDer::pem_slice_iter(cert)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate".into());
    }
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| format!("private key: {e}"))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("unusable private key: {e}"))?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| format!("certificate and key do not belong together: {e}"))?;
    Ok(Arc::new(certified))
}

impl SharedCert {
    /// Starts with the PEM certificate chain and key given.
    pub fn new(cert: &[u8], key: &[u8]) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certified = certified_from_pem(cert, key, &provider)?;
        Ok(Self {
            provider,
            current: std::sync::RwLock::new((cert.to_vec(), certified)),
        })
    }

    /// Serves `cert` and `key` from now on. `Ok(false)`: that is the certificate served
    /// already; `Err`: unusable, the previous one stays.
    pub fn set_pem(&self, cert: &[u8], key: &[u8]) -> Result<bool, String> {
        if self.current.read().map(|c| c.0 == cert).unwrap_or(false) {
            return Ok(false);
        }
        let certified = certified_from_pem(cert, key, &self.provider)?;
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        *current = (cert.to_vec(), certified);
        Ok(true)
    }

    /// TLS settings serving this certificate.
    pub fn config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, String> {
        server_config(self.provider.clone(), self.clone())
    }
}

impl ResolvesServerCert for SharedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.1.clone())
    }
}

fn server_config(
    provider: Arc<rustls::crypto::CryptoProvider>,
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
