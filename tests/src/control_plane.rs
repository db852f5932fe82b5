//! A real Kubernetes control plane: etcd, kube-apiserver and (optionally)
//! kube-controller-manager, on free 127.0.0.1 ports, with a generated PKI and kubeconfig.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

use crate::pki::{key_pair_pem, TestCa};
use crate::process::{free_port, port_open, wait_until, Running};

/// Directory holding `etcd`, `kube-apiserver`, `kube-controller-manager` and `kubectl`:
/// `$IMAGEWARDEN_K8S_BIN` when set, else what `tests/scripts/build-k8s.sh` builds (and
/// caches) on first use.
pub fn k8s_bin_dir() -> Result<PathBuf> {
    static DIR: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Ok(dir) = std::env::var("IMAGEWARDEN_K8S_BIN") {
            return Ok(PathBuf::from(dir));
        }
        let script = crate::repo_root().join("tests/scripts/build-k8s.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed:\n{}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
    .clone()
    .map_err(|e| anyhow::anyhow!(e))
}

/// What to start besides etcd and kube-apiserver.
#[derive(Clone, Copy, Debug, Default)]
pub struct ControlPlaneOptions {
    /// Also run kube-controller-manager (garbage collection of owned objects, Jobs, ...).
    pub controller_manager: bool,
}

/// A running control plane. Everything stops and the data is removed on drop.
pub struct ControlPlane {
    // Dropped in reverse start order: controller-manager, apiserver, etcd.
    controller_manager: Option<Running>,
    apiserver: Running,
    _etcd: Running,
    kubeconfig: PathBuf,
    /// HTTPS URL of the API server.
    pub server: String,
    dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver.
    pub async fn start() -> Result<Self> {
        Self::start_with(ControlPlaneOptions::default()).await
    }

    /// Starts etcd, kube-apiserver and what `options` asks for. Free ports are picked
    /// before the processes bind them, so another test may take one in between: a start
    /// that fails is retried with new ports.
    pub async fn start_with(options: ControlPlaneOptions) -> Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::start_once(options).await {
                Ok(cp) => return Ok(cp),
                Err(e) if attempt < 3 => {
                    tracing::warn!(attempt, error = %format!("{e:#}"), "control plane did not start; retrying");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn start_once(options: ControlPlaneOptions) -> Result<Self> {
        let bin = k8s_bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("imagewarden-cp-")
            .tempdir()?;
        let path = |name: &str| dir.path().join(name);

        let ca = TestCa::new("imagewarden-test-ca")?;
        let serving = ca.server(&["localhost", "127.0.0.1", "kubernetes", "kubernetes.default"])?;
        let admin = ca.client("imagewarden-test-admin", &["system:masters"])?;
        let (sa_key, sa_pub) = key_pair_pem()?;
        std::fs::write(path("ca.crt"), &ca.cert_pem)?;
        std::fs::write(path("apiserver.crt"), &serving.cert_pem)?;
        std::fs::write(path("apiserver.key"), &serving.key_pem)?;
        std::fs::write(path("sa.key"), &sa_key)?;
        std::fs::write(path("sa.pub"), &sa_pub)?;

        let etcd_port = free_port()?;
        let etcd_peer_port = free_port()?;
        let mut etcd_cmd = Command::new(bin.join("etcd"));
        etcd_cmd.args([
            "--name=default".to_string(),
            format!("--data-dir={}", path("etcd").display()),
            format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
            format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer_port}"),
            "--unsafe-no-fsync=true".to_string(),
            "--log-level=warn".to_string(),
        ]);
        let mut etcd = Running::spawn("etcd", etcd_cmd, &path("etcd.log"))?;
        wait_until(&mut etcd, Duration::from_secs(30), || port_open(etcd_port)).await?;

        let api_port = free_port()?;
        let server = format!("https://127.0.0.1:{api_port}");
        let mut api_cmd = Command::new(bin.join("kube-apiserver"));
        api_cmd.args([
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            "--bind-address=127.0.0.1".to_string(),
            "--advertise-address=127.0.0.1".to_string(),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", path("apiserver-certs").display()),
            format!("--tls-cert-file={}", path("apiserver.crt").display()),
            format!("--tls-private-key-file={}", path("apiserver.key").display()),
            format!("--client-ca-file={}", path("ca.crt").display()),
            format!("--service-account-key-file={}", path("sa.pub").display()),
            format!(
                "--service-account-signing-key-file={}",
                path("sa.key").display()
            ),
            "--service-account-issuer=https://kubernetes.default.svc".to_string(),
            "--service-cluster-ip-range=10.96.0.0/16".to_string(),
            "--authorization-mode=Node,RBAC".to_string(),
            "--allow-privileged=true".to_string(),
            "--storage-backend=etcd3".to_string(),
            "--v=1".to_string(),
        ]);
        let mut apiserver = Running::spawn("kube-apiserver", api_cmd, &path("apiserver.log"))?;

        let kubeconfig = path("kubeconfig");
        std::fs::write(
            &kubeconfig,
            kubeconfig_yaml(
                &server,
                &ca.cert_pem,
                &client_certificate(&admin.cert_pem, &admin.key_pem),
                "default",
            ),
        )?;
        let client = client_for(&kubeconfig).await?;
        wait_until(&mut apiserver, Duration::from_secs(90), || {
            let client = client.clone();
            async move { readyz(&client).await }
        })
        .await?;

        let controller_manager = if options.controller_manager {
            let mut cmd = Command::new(bin.join("kube-controller-manager"));
            cmd.args([
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--authentication-kubeconfig={}", kubeconfig.display()),
                format!("--authorization-kubeconfig={}", kubeconfig.display()),
                "--bind-address=127.0.0.1".to_string(),
                format!("--secure-port={}", free_port()?),
                format!("--cert-dir={}", path("kcm-certs").display()),
                format!("--service-account-private-key-file={}", path("sa.key").display()),
                format!("--root-ca-file={}", path("ca.crt").display()),
                "--use-service-account-credentials=true".to_string(),
                "--leader-elect=false".to_string(),
                "--controllers=*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service-lb-controller,-route".to_string(),
                "--v=1".to_string(),
            ]);
            Some(Running::spawn(
                "kube-controller-manager",
                cmd,
                &path("controller-manager.log"),
            )?)
        } else {
            None
        };

        Ok(Self {
            controller_manager,
            apiserver,
            _etcd: etcd,
            kubeconfig,
            server,
            dir,
        })
    }

    /// Path of an admin kubeconfig for this control plane.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Temporary directory holding the control plane's data, logs and PKI.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An admin client.
    pub async fn client(&self) -> Result<Client> {
        client_for(&self.kubeconfig).await
    }

    /// A token of ServiceAccount `namespace/name` from the TokenRequest API, for
    /// `audiences` (empty: the API server's own), valid for an hour.
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        audiences: &[&str],
    ) -> Result<String> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client().await?, namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audiences.iter().map(|a| a.to_string()).collect(),
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        Ok(accounts
            .create_token_request(name, &Default::default(), &request)
            .await
            .with_context(|| format!("requesting a token for ServiceAccount {namespace}/{name}"))?
            .status
            .context("TokenRequest without status")?
            .token)
    }

    /// A kubeconfig (written into this control plane's directory) that authenticates as
    /// ServiceAccount `namespace/name` with a token from the TokenRequest API, as a Pod
    /// running as that ServiceAccount would: its requests are authorized by RBAC.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let token = self.service_account_token(namespace, name, &[]).await?;
        let ca = std::fs::read_to_string(self.dir().join("ca.crt"))?;
        let path = self.dir().join(format!("kubeconfig-{namespace}-{name}"));
        std::fs::write(
            &path,
            kubeconfig_yaml(&self.server, &ca, &format!("token: {token}"), namespace),
        )?;
        Ok(path)
    }

    /// A client authenticated as ServiceAccount `namespace/name` (see
    /// [`Self::service_account_kubeconfig`]).
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> Result<Client> {
        client_for(&self.service_account_kubeconfig(namespace, name).await?).await
    }

    /// A `kubectl` command pointed at this control plane.
    pub fn kubectl(&self) -> Result<Command> {
        let mut cmd = Command::new(k8s_bin_dir()?.join("kubectl"));
        cmd.env("KUBECONFIG", &self.kubeconfig);
        Ok(cmd)
    }

    /// Runs `kubectl ARGS` and returns its stdout; fails with stderr when kubectl fails.
    pub fn kubectl_output(&self, args: &[&str]) -> Result<String> {
        let out = self.kubectl()?.args(args).output()?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Server-side applies `crds` and waits until each is Established.
    pub async fn install_crds(&self, crds: &[CustomResourceDefinition]) -> Result<()> {
        let client = self.client().await?;
        let api: Api<CustomResourceDefinition> = Api::all(client);
        let params = PatchParams::apply("imagewarden-tests").force();
        for crd in crds {
            let name = crd.metadata.name.clone().context("CRD without a name")?;
            api.patch(&name, &params, &Patch::Apply(crd))
                .await
                .with_context(|| format!("applying CRD {name}"))?;
        }
        for crd in crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let cond = kube::runtime::conditions::is_crd_established();
            tokio::time::timeout(
                Duration::from_secs(30),
                kube::runtime::wait::await_condition(api.clone(), &name, cond),
            )
            .await
            .with_context(|| format!("CRD {name} not established within 30s"))??;
        }
        Ok(())
    }

    /// The last lines of the apiserver's log, for failure messages.
    pub fn apiserver_log_tail(&self, lines: usize) -> String {
        self.apiserver.log_tail(lines)
    }

    /// Whether kube-controller-manager runs.
    pub fn has_controller_manager(&self) -> bool {
        self.controller_manager.is_some()
    }
}

async fn readyz(client: &Client) -> bool {
    let Ok(req) = http::Request::get("/readyz").body(Vec::new()) else {
        return false;
    };
    matches!(client.request_text(req).await, Ok(body) if body.trim() == "ok")
}

async fn client_for(kubeconfig: &Path) -> Result<Client> {
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    Ok(Client::try_from(config)?)
}

/// A kubeconfig for `server` (trusting `ca`) whose user is `user` (the YAML of its
/// credentials, e.g. `token: ...`), in `namespace`.
fn kubeconfig_yaml(server: &str, ca: &str, user: &str, namespace: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: imagewarden-test
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: user
  user:
    {user}
contexts:
- name: imagewarden-test
  context:
    cluster: imagewarden-test
    user: user
    namespace: {namespace}
current-context: imagewarden-test
",
        ca = b64(ca),
    )
}

/// The admin's client-certificate credentials, as [`kubeconfig_yaml`] takes them.
fn client_certificate(cert: &str, key: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "client-certificate-data: {}\n    client-key-data: {}",
        b64(cert),
        b64(key)
    )
}

/// The API server's `apiserver_request_total`, summed by `verb resource[/subresource]`
/// (requests for non-resource URLs such as `/metrics` left out).
pub async fn apiserver_request_totals(
    client: &Client,
) -> Result<std::collections::BTreeMap<String, f64>> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let mut totals = std::collections::BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split("\",")
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let mut resource = label("resource");
        if resource.is_empty() {
            continue;
        }
        let sub = label("subresource");
        if !sub.is_empty() {
            resource = format!("{resource}/{sub}");
        }
        let key = format!("{} {resource}", label("verb"));
        *totals.entry(key).or_insert(0.0) += value.trim().parse::<f64>().unwrap_or(0.0);
    }
    Ok(totals)
}
