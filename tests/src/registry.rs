//! A real OCI registry: CNCF Distribution as Debian packages it (`docker-registry`),
//! on a free 127.0.0.1 port, in plain HTTP, TLS, or TLS with htpasswd basic auth.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::pki::TestCa;
use crate::process::{free_port, wait_until, Running};

/// How the registry is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryMode {
    /// Plain HTTP, anonymous.
    Plain,
    /// HTTPS with a certificate from a CA the fixture generates, anonymous.
    Tls,
    /// HTTPS plus htpasswd basic auth (see [`Registry::credentials`]).
    TlsAuth,
}

/// A registry notification endpoint (the registry POSTs event envelopes to it).
#[derive(Clone, Debug)]
pub struct NotificationEndpoint {
    pub name: String,
    pub url: String,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub bearer_token: Option<String>,
}

impl NotificationEndpoint {
    /// The push webhook of an operator listening on `127.0.0.1:port`, with its token.
    pub fn operator(port: u16, token: &str) -> Self {
        Self {
            name: "imagewarden".into(),
            url: format!("http://127.0.0.1:{port}/webhook/distribution"),
            bearer_token: Some(token.into()),
        }
    }
}

/// Token authentication as the distribution token spec describes it: the registry
/// answers unauthenticated requests with `WWW-Authenticate: Bearer realm=...,service=...`
/// and accepts JWTs from `issuer`, for audience `service`, whose `x5c` chain leads to
/// `root_cert_pem`. The test supplies the token service at `realm`.
#[derive(Clone, Debug)]
pub struct TokenAuth {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub root_cert_pem: String,
}

/// Options for [`Registry::start_with`].
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    pub notifications: Vec<NotificationEndpoint>,
    /// Token authentication instead of anonymous access (not with `TlsAuth`).
    pub token_auth: Option<TokenAuth>,
    /// Address to listen on instead of 127.0.0.1 (e.g. the test cluster's node address,
    /// so Pods reach the registry too).
    pub address: Option<String>,
}

/// A running registry; stopped and its storage removed on drop.
pub struct Registry {
    process: Running,
    /// `127.0.0.1:PORT`, the registry part of image references.
    pub host: String,
    pub mode: RegistryMode,
    ca_pem: Option<String>,
    credentials: Option<(String, String)>,
    dir: tempfile::TempDir,
}

/// Path of Debian's registry binary (package `docker-registry`).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

impl Registry {
    /// Starts a registry in `mode`.
    pub async fn start(mode: RegistryMode) -> Result<Self> {
        Self::start_with(mode, RegistryOptions::default()).await
    }

    /// Starts a registry in `mode` with extra options.
    pub async fn start_with(mode: RegistryMode, options: RegistryOptions) -> Result<Self> {
        anyhow::ensure!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} not found: install Debian's docker-registry package (.ci/run does)"
        );
        let dir = tempfile::Builder::new()
            .prefix("imagewarden-registry-")
            .tempdir()?;
        let port = free_port()?;
        let address = options.address.as_deref().unwrap_or("127.0.0.1");
        let host = format!("{address}:{port}");

        let mut config = format!(
            "version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {host}
  secret: imagewarden-test-secret
",
            storage = dir.path().join("storage").display()
        );
        let mut ca_pem = None;
        if mode != RegistryMode::Plain {
            let ca = TestCa::new("imagewarden-registry-test-ca")?;
            let cert = ca.server(&["localhost", "127.0.0.1", address])?;
            std::fs::write(dir.path().join("registry.crt"), &cert.cert_pem)?;
            std::fs::write(dir.path().join("registry.key"), &cert.key_pem)?;
            std::fs::write(dir.path().join("ca.crt"), &ca.cert_pem)?;
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("registry.crt").display(),
                dir.path().join("registry.key").display()
            ));
            ca_pem = Some(ca.cert_pem);
        }
        let mut credentials = None;
        if mode == RegistryMode::TlsAuth {
            let (user, password) = ("scanner".to_string(), "s3cret-Pa55".to_string());
            let hash = bcrypt::hash(&password, 5)?;
            std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n"))?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: imagewarden-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
            credentials = Some((user, password));
        }
        if let Some(token) = &options.token_auth {
            anyhow::ensure!(
                mode != RegistryMode::TlsAuth,
                "token auth replaces htpasswd auth; use Plain or Tls mode"
            );
            let bundle = dir.path().join("token-root.pem");
            std::fs::write(&bundle, &token.root_cert_pem)?;
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                token.realm,
                token.service,
                token.issuer,
                bundle.display()
            ));
        }
        if !options.notifications.is_empty() {
            config
                .push_str("notifications:\n  events:\n    includereferences: true\n  endpoints:\n");
            for ep in &options.notifications {
                config.push_str(&format!(
                    "    - name: {}\n      url: {}\n      timeout: 2s\n      threshold: 5\n      backoff: 1s\n",
                    ep.name, ep.url
                ));
                if let Some(token) = &ep.bearer_token {
                    config.push_str(&format!(
                        "      headers:\n        Authorization: [\"Bearer {token}\"]\n"
                    ));
                }
            }
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, &config)?;

        let mut cmd = Command::new(REGISTRY_BIN);
        cmd.arg("serve").arg(&config_path);
        let mut process = Running::spawn("docker-registry", cmd, &dir.path().join("registry.log"))?;
        let addr = format!("{address}:{port}");
        wait_until(&mut process, Duration::from_secs(20), || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(addr).await.is_ok() }
        })
        .await
        .context("starting docker-registry")?;
        Ok(Self {
            process,
            host,
            mode,
            ca_pem,
            credentials,
            dir,
        })
    }

    /// PEM of the CA that signed the registry's certificate (TLS modes).
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Path of the CA certificate file (TLS modes).
    pub fn ca_path(&self) -> Option<PathBuf> {
        self.ca_pem.as_ref().map(|_| self.dir.path().join("ca.crt"))
    }

    /// Username and password (TlsAuth mode).
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        match self.mode {
            RegistryMode::Plain => "http",
            _ => "https",
        }
    }

    /// Root of the registry's filesystem storage (`docker/registry/v2/...` below it).
    pub fn storage_path(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.process.log_path()).unwrap_or_default()
    }
}
