//! The single-node test cluster of `tests/scripts/cluster.sh` (kubelet on containerd +
//! runc, CNI bridge, kube-proxy, a registry holding the pause image and imagewarden's own
//! image), started once per machine and shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use kube::Client;

use crate::repo_root;

/// A running test cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Admin kubeconfig (client certificate in `system:masters`).
    pub kubeconfig: PathBuf,
    /// Directory of kubectl, helm and the other Kubernetes commands.
    pub bin: PathBuf,
    /// `host:port` of the cluster's registry (plain HTTP), reachable from the host and from Pods.
    pub registry: String,
    /// imagewarden's image in that registry (`registry/imagewarden/imagewarden:<version>`).
    pub image: String,
    /// The node's address: services on the host listen here to be reachable from Pods.
    pub node_ip: String,
}

fn script() -> PathBuf {
    repo_root().join("tests/scripts/cluster.sh")
}

impl Cluster {
    /// Starts the cluster (or finds it running) once per test process.
    pub fn get() -> Result<&'static Cluster> {
        static CLUSTER: OnceLock<std::result::Result<Cluster, String>> = OnceLock::new();
        CLUSTER
            .get_or_init(|| Self::up().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow::anyhow!("the test cluster did not start: {e}"))
    }

    fn up() -> Result<Cluster> {
        let out = Command::new("bash")
            .arg(script())
            .arg("up")
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("running tests/scripts/cluster.sh up")?;
        if !out.status.success() {
            bail!("tests/scripts/cluster.sh up failed ({})", out.status);
        }
        let env = Command::new("bash").arg(script()).arg("env").output()?;
        if !env.status.success() {
            bail!("tests/scripts/cluster.sh env failed");
        }
        let text = String::from_utf8(env.stdout)?;
        let var = |name: &str| -> Result<String> {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .map(str::to_string)
                .with_context(|| format!("cluster.sh env printed no {name}"))
        };
        let path = var("PATH")?;
        Ok(Cluster {
            kubeconfig: var("KUBECONFIG")?.into(),
            bin: path.split(':').next().unwrap_or_default().into(),
            registry: var("IMAGEWARDEN_REGISTRY")?,
            image: var("IMAGEWARDEN_IMAGE")?,
            node_ip: var("IMAGEWARDEN_NODE_IP")?,
        })
    }

    /// A client with the admin kubeconfig.
    pub async fn client(&self) -> Result<Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// A command of the cluster's bin directory (`kubectl`, `helm`) set up for the cluster.
    pub fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(name));
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", std::env::temp_dir())
            .current_dir(repo_root());
        cmd
    }

    /// Runs `kubectl args...` and returns its standard output; fails with its error output.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        run(self.command("kubectl").args(args))
    }

    /// Runs `helm args...` and returns its standard output.
    pub fn helm(&self, args: &[&str]) -> Result<String> {
        run(self.command("helm").args(args))
    }

    /// The log of one of the cluster's processes (`kubelet`, `containerd`, ...).
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let path = self
            .kubeconfig
            .parent()
            .unwrap_or(Path::new("."))
            .join("logs")
            .join(format!("{name}.log"));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Runs `cmd`; its standard output, or an error with its error output.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} {:?} failed ({}): {}{}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}
