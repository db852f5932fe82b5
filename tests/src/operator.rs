//! The operator binary run as a real process against a test control plane.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::control_plane::ControlPlane;
use crate::process::{free_port, port_open, wait_until, Running};

/// A running `imagewarden-operator run`; stopped on drop.
pub struct OperatorProcess {
    process: Running,
    /// Port of `/metrics`.
    pub metrics_port: u16,
    /// Port of the push-webhook endpoint.
    pub webhook_port: u16,
    _dir: tempfile::TempDir,
}

impl OperatorProcess {
    /// Starts `binary run` with `args` (besides the kubeconfig and ports it sets itself).
    pub async fn start(binary: &Path, cp: &ControlPlane, args: &[String]) -> Result<Self> {
        Self::start_as(binary, cp.kubeconfig(), args).await
    }

    /// Starts `binary run` with `args`, talking to the API server as `kubeconfig` says
    /// (e.g. as a ServiceAccount bound to the chart's RBAC).
    pub async fn start_as(binary: &Path, kubeconfig: &Path, args: &[String]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("imagewarden-operator-")
            .tempdir()?;
        let metrics_port = free_port()?;
        let webhook_port = free_port()?;
        let mut cmd = Command::new(binary);
        cmd.arg("run")
            .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
            .arg(format!("--webhook-addr=127.0.0.1:{webhook_port}"))
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env(
                "IMAGEWARDEN_LOG",
                "info,kube=warn,imagewarden_operator=debug",
            );
        let mut process = Running::spawn(
            "imagewarden-operator",
            cmd,
            &dir.path().join("operator.log"),
        )?;
        wait_until(&mut process, Duration::from_secs(120), || {
            port_open(metrics_port)
        })
        .await?;
        Ok(Self {
            process,
            metrics_port,
            webhook_port,
            _dir: dir,
        })
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> Result<String> {
        let body = reqwest_get(&format!("http://127.0.0.1:{}/metrics", self.metrics_port)).await?;
        Ok(body)
    }

    /// Value of one metric line (`name{labels}`), 0 when absent.
    pub async fn metric(&self, series: &str) -> Result<f64> {
        let text = self.metrics().await?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0))
    }

    /// The operator's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.process.log_path()).unwrap_or_default()
    }

    /// Kills the process at once (as a crash or a node failure would).
    pub fn kill(&mut self) {
        self.process.stop();
    }

    /// The process id (for its memory figures in `/proc`).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `VmRSS` and `VmHWM` (peak) of the process, in MiB.
    pub fn memory_mib(&self) -> Result<(f64, f64)> {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> Result<f64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("{name} in /proc/{pid}/status"))?;
            let kib: f64 = line.split_whitespace().nth(1).context("a value")?.parse()?;
            Ok(kib / 1024.0)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// Path of the log file.
    pub fn log_path(&self) -> PathBuf {
        self.process.log_path().to_path_buf()
    }
}

/// The operator binary a benchmark runs: `IMAGEWARDEN_OPERATOR_BIN` (e.g. a release
/// build), else `built` (the test's own build).
pub fn benchmark_binary(built: &str) -> PathBuf {
    std::env::var_os("IMAGEWARDEN_OPERATOR_BIN")
        .map(Into::into)
        .unwrap_or_else(|| built.into())
}

async fn reqwest_get(url: &str) -> Result<String> {
    // A plain HTTP/1.0 GET over TCP keeps this fixture free of an HTTP client.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    stream
        .write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// The Pod the Job controller made for Job `job` in `namespace`, once it exists.
pub async fn pod_of_job(
    client: &kube::Client,
    namespace: &str,
    job: &str,
) -> Result<k8s_openapi::api::core::v1::Pod> {
    use kube::api::{Api, ListParams};
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("job-name={job}");
    crate::process::poll(
        &format!("the Pod of Job {job}"),
        Duration::from_secs(60),
        || {
            let (pods, selector) = (pods.clone(), selector.clone());
            async move {
                Ok(pods
                    .list(&ListParams::default().labels(&selector))
                    .await?
                    .items
                    .into_iter()
                    .next())
            }
        },
    )
    .await
}

/// Records in the status of `pod` that its first container ended with exit code `code`
/// for `reason` (`Completed`, `Error`, `OOMKilled`), as the kubelet of a node would; the
/// Job controller takes it from there.
pub async fn end_pod(
    client: &kube::Client,
    pod: &k8s_openapi::api::core::v1::Pod,
    code: i32,
    reason: &str,
) -> Result<()> {
    use kube::api::{Api, Patch, PatchParams};
    let container = &pod.spec.as_ref().expect("a Pod spec").containers[0];
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(
        client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = serde_json::json!({"status": {
        "phase": if code == 0 { "Succeeded" } else { "Failed" },
        "startTime": now,
        "containerStatuses": [{
            "name": container.name,
            "image": container.image,
            "imageID": "",
            "ready": false,
            "restartCount": 0,
            "state": {"terminated": {
                "exitCode": code,
                "reason": reason,
                "startedAt": now,
                "finishedAt": now,
            }},
        }],
    }});
    pods.patch_status(
        pod.metadata.name.as_deref().unwrap_or_default(),
        &PatchParams::default(),
        &Patch::Merge(status),
    )
    .await?;
    Ok(())
}

/// Plays the kubelet for `pod` (a control plane without a node): runs `binary` with
/// `args` here, talking to the API server as `kubeconfig` says, then reports how it
/// ended in the Pod's status. Returns the exit code and the output.
pub async fn run_pod_here(
    client: &kube::Client,
    pod: &k8s_openapi::api::core::v1::Pod,
    binary: &Path,
    args: &[String],
    kubeconfig: &Path,
) -> Result<(i32, String)> {
    let out = tokio::process::Command::new(binary)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("IMAGEWARDEN_LOG", "info")
        .output()
        .await?;
    let code = out.status.code().unwrap_or(-1);
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let reason = if code == 0 { "Completed" } else { "Error" };
    end_pod(client, pod, code, reason).await?;
    Ok((code, output))
}
