//! Baseline risks: the CIS Docker Benchmark section 4 checks that an image (rather than
//! a host or a running container) can fail.
//!
//! | id | CIS | what |
//! |---|---|---|
//! | `IW-CIS-4.1-ROOT-USER` | 4.1 | no `User`, or `root` / `0` |
//! | `IW-CIS-4.6-NO-HEALTHCHECK` | 4.6 | no `Healthcheck` |
//! | `IW-CIS-4.7-UPDATE-ALONE` | 4.7 | a history step updates the package index without installing |
//! | `IW-CIS-4.9-ADD-REMOTE` | 4.9 | `ADD http(s)://…` |
//! | `IW-BASE-PIPE-TO-SHELL` | 4.9 | `curl …\| sh` / `wget …\| sh` in a history step |
//! | `IW-BASE-PRIVILEGED-PORT` | – | an exposed port below 1024 |
//! | `IW-CIS-4.8-SETUID` | 4.8 | a setuid/setgid regular file beyond the distro allowlist |
//! | `IW-BASE-WORLD-WRITABLE` | – | a world-writable regular file outside the temporary directories |
//! | `IW-BASE-EMPTY-PASSWORD` | – | an `/etc/shadow` entry with an empty password |
//! | `IW-BASE-ROOT-PASSWORD` | – | root has a usable password hash in `/etc/shadow` |
//! | `IW-CIS-4.10-PRIVATE-KEY` | 4.10 | a private key file (PEM, OpenSSH) |
//! | `IW-CIS-4.10-CREDENTIAL-FILE` | 4.10 | `.aws/credentials`, docker `config.json` with auths, `.npmrc`/`.pypirc` with tokens, `.git-credentials`, kubeconfig with credentials |
//! | `IW-CIS-4.10-SSH-HOST-KEY` | 4.10 | `etc/ssh/ssh_host_*_key` shipped in the image |
//! | `IW-BASE-SUDO-INSTALLED` | – | the `sudo` package is installed |
//!
//! | `IW-CIS-4.10-ENV-SECRET` | 4.10 | a secret in `Env` (by name, or a value a secret rule matches; see [`super::secret::config_env_secrets`]) |

use super::{emit, CheckClass, CheckFinding};
use crate::analyzer::{file_name, Analyzer, FileMeta, Output};
use crate::inventory::Inventory;
use crate::source::ImageConfig;
use crate::vulndb::Severity::{self, *};

fn risk(id: &str, title: &str, sev: Severity, evidence: String, fix: &str) -> CheckFinding {
    CheckFinding::new(CheckClass::Baseline, id, title, sev, evidence, fix)
}

/// Setuid/setgid programs that distributions ship on purpose.
const SETUID_ALLOWLIST: &[&str] = &[
    "su",
    "sudo",
    "sudoedit",
    "passwd",
    "mount",
    "umount",
    "ping",
    "ping6",
    "chsh",
    "chfn",
    "newgrp",
    "sg",
    "gpasswd",
    "unix_chkpwd",
    "unix2_chkpwd",
    "chage",
    "expiry",
    "wall",
    "write",
    "bsd-write",
    "crontab",
    "at",
    "ssh-agent",
    "ssh-keysign",
    "pkexec",
    "fusermount",
    "fusermount3",
    "newuidmap",
    "newgidmap",
    "dbus-daemon-launch-helper",
    "pam_timestamp_check",
    "utempter",
    "mount.nfs",
    "Xorg.wrap",
    "traceroute6.iputils",
    "bbsuid",
    "dotlockfile",
    "mail-lock",
    "mail-unlock",
    "mail-touchlock",
    "lockfile",
];

/// Directories where world-writable files are expected.
const TEMP_DIRS: &[&str] = &["tmp/", "var/tmp/", "dev/shm/", "run/lock/", "var/lock/"];

/// Setuid/setgid and world-writable regular files, judged by mode alone.
pub struct FileModeAnalyzer;

impl Analyzer for FileModeAnalyzer {
    fn name(&self) -> &'static str {
        "file-mode"
    }
    // Every file is offered, so that a later layer's chmod hides a lower layer's finding.
    fn wants(&self, _file: &FileMeta<'_>) -> bool {
        true
    }
    fn metadata_only(&self) -> bool {
        true
    }
    fn analyze(&self, _path: &str, _data: &[u8], _out: &mut Output) {}
    fn analyze_meta(&self, file: &FileMeta<'_>, out: &mut Output) {
        let mode = file.mode;
        if mode & 0o6000 != 0 && !SETUID_ALLOWLIST.contains(&file_name(file.path)) {
            let bits = match (mode & 0o4000 != 0, mode & 0o2000 != 0) {
                (true, true) => "setuid+setgid",
                (true, false) => "setuid",
                _ => "setgid",
            };
            emit(
                out,
                risk(
                    "IW-CIS-4.8-SETUID",
                    "Setuid or setgid file outside the distribution's allowlist",
                    Medium,
                    format!("mode {:04o} ({bits})", mode & 0o7777),
                    "Remove the setuid/setgid bits (`chmod u-s,g-s FILE`) in the Dockerfile unless the program needs them",
                )
                .cis("4.8"),
            );
        }
        if mode & 0o002 != 0 && !TEMP_DIRS.iter().any(|d| file.path.starts_with(d)) {
            emit(
                out,
                risk(
                    "IW-BASE-WORLD-WRITABLE",
                    "World-writable file",
                    Medium,
                    format!("mode {:04o}", mode & 0o7777),
                    "Remove write permission for others (`chmod o-w FILE`)",
                ),
            );
        }
    }
}

/// Files whose presence or content is a risk: shadow, private keys, credential files,
/// SSH host keys.
pub struct SensitiveFileAnalyzer;

fn is_credential_path(path: &str) -> bool {
    let name = file_name(path);
    path.ends_with(".aws/credentials")
        || path.ends_with(".docker/config.json")
        || matches!(
            name,
            ".npmrc" | ".pypirc" | ".git-credentials" | ".netrc" | "kubeconfig"
        )
        || path.ends_with(".kube/config")
        || path == "etc/kubernetes/admin.conf"
}

fn is_key_path(path: &str) -> bool {
    let name = file_name(path);
    name.ends_with(".pem")
        || name.ends_with(".key")
        || matches!(
            name,
            "id_rsa" | "id_dsa" | "id_ecdsa" | "id_ed25519" | "identity"
        )
        || (path.starts_with("etc/ssh/ssh_host_") && name.ends_with("_key"))
}

impl Analyzer for SensitiveFileAnalyzer {
    fn name(&self) -> &'static str {
        "sensitive-file"
    }
    fn wants(&self, file: &FileMeta<'_>) -> bool {
        file.size <= self.size_cap()
            && (file.path == "etc/shadow"
                || is_credential_path(file.path)
                || is_key_path(file.path))
    }
    fn size_cap(&self) -> u64 {
        1 << 20
    }
    fn analyze(&self, path: &str, data: &[u8], out: &mut Output) {
        let text = String::from_utf8_lossy(data);
        if path == "etc/shadow" {
            shadow(&text, out);
            return;
        }
        if path.starts_with("etc/ssh/ssh_host_") && path.ends_with("_key") {
            emit(
                out,
                risk(
                    "IW-CIS-4.10-SSH-HOST-KEY",
                    "SSH host private key baked into the image",
                    High,
                    "SSH host key file".into(),
                    "Generate host keys when the container starts (ssh-keygen -A) and delete them from the image",
                )
                .cis("4.10"),
            );
        } else if is_key_path(path) {
            if let Some(kind) = private_key_kind(&text) {
                emit(
                    out,
                    risk(
                        "IW-CIS-4.10-PRIVATE-KEY",
                        "Private key stored in the image",
                        High,
                        format!("{kind} private key"),
                        "Remove the key from the image; mount it at run time from a secret store",
                    )
                    .cis("4.10"),
                );
            }
        }
        if is_credential_path(path) {
            if let Some(what) = credential_content(path, &text) {
                emit(
                    out,
                    risk(
                        "IW-CIS-4.10-CREDENTIAL-FILE",
                        "Credentials file stored in the image",
                        High,
                        what,
                        "Remove the credentials from the image (use build secrets, e.g. `RUN --mount=type=secret`) and rotate them",
                    )
                    .cis("4.10"),
                );
            }
        }
    }
}

/// The kind of the first private key block in `text`.
pub fn private_key_kind(text: &str) -> Option<&'static str> {
    const KINDS: &[(&str, &str)] = &[
        ("-----BEGIN RSA PRIVATE KEY-----", "RSA"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "OpenSSH"),
        ("-----BEGIN EC PRIVATE KEY-----", "EC"),
        ("-----BEGIN DSA PRIVATE KEY-----", "DSA"),
        ("-----BEGIN ENCRYPTED PRIVATE KEY-----", "encrypted PKCS#8"),
        ("-----BEGIN PRIVATE KEY-----", "PKCS#8"),
        ("-----BEGIN PGP PRIVATE KEY BLOCK-----", "PGP"),
    ];
    KINDS
        .iter()
        .find(|(marker, _)| text.contains(marker))
        .map(|(_, kind)| *kind)
}

/// Says what makes a credentials file hold credentials, or `None` when it holds none.
fn credential_content(path: &str, text: &str) -> Option<String> {
    let has_line = |keys: &[&str]| {
        text.lines().any(|l| {
            let l = l.trim();
            keys.iter().any(|k| {
                l.contains(k)
                    && l.split_once(['=', ':'])
                        .is_some_and(|(_, v)| !v.trim().trim_matches('"').is_empty())
            })
        })
    };
    let name = file_name(path);
    if path.ends_with(".aws/credentials") {
        return has_line(&["aws_secret_access_key", "aws_access_key_id"])
            .then(|| "AWS credentials file with keys".to_string());
    }
    if path.ends_with(".docker/config.json") {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let auths = v.get("auths")?.as_object()?;
        let with_auth = auths
            .values()
            .filter(|a| {
                a.get("auth")
                    .and_then(|x| x.as_str())
                    .is_some_and(|s| !s.is_empty())
            })
            .count();
        return (with_auth > 0)
            .then(|| format!("docker config.json with credentials for {with_auth} registr(ies)"));
    }
    match name {
        ".npmrc" => has_line(&["_authToken", "_auth", "_password"])
            .then(|| ".npmrc with an auth token".to_string()),
        ".pypirc" => {
            has_line(&["password"]).then(|| ".pypirc with a password or token".to_string())
        }
        ".git-credentials" => text
            .lines()
            .any(|l| l.contains("://") && l.contains('@'))
            .then(|| ".git-credentials with stored credentials".to_string()),
        ".netrc" => text
            .split_whitespace()
            .any(|w| w == "password")
            .then(|| ".netrc with a password".to_string()),
        _ => has_line(&["token", "client-key-data", "password"])
            .then(|| "kubeconfig with user credentials".to_string()),
    }
}

fn shadow(text: &str, out: &mut Output) {
    for (i, line) in text.lines().enumerate() {
        let mut fields = line.split(':');
        let (Some(user), Some(hash)) = (fields.next(), fields.next()) else {
            continue;
        };
        if user.is_empty() {
            continue;
        }
        let line_no = i as u32 + 1;
        if hash.is_empty() {
            emit(
                out,
                risk(
                    "IW-BASE-EMPTY-PASSWORD",
                    "Account with an empty password",
                    High,
                    format!("user {user:?} has an empty password field"),
                    "Lock the account (`passwd -l USER`) or set `*` / `!` as its password field",
                )
                .line(line_no),
            );
        } else if user == "root" && !hash.starts_with(['!', '*']) {
            emit(
                out,
                risk(
                    "IW-BASE-ROOT-PASSWORD",
                    "The root account has a password and is not locked",
                    Medium,
                    "user \"root\" has a password hash".to_string(),
                    "Lock the root account (`passwd -l root`)",
                )
                .line(line_no),
            );
        }
    }
}

/// Checks of the image configuration.
pub fn config_checks(config: &ImageConfig) -> Vec<CheckFinding> {
    let mut out = Vec::new();
    let c = config.config.clone().unwrap_or_default();
    let user = c.user.as_deref().unwrap_or("").trim();
    let user_name = user.split(':').next().unwrap_or("");
    if user_name.is_empty() || user_name == "root" || user_name == "0" {
        let evidence = if user.is_empty() {
            "no User set (runs as root)".to_string()
        } else {
            format!("User is {user:?}")
        };
        out.push(
            risk(
                "IW-CIS-4.1-ROOT-USER",
                "Image runs as root",
                High,
                evidence,
                "Add a non-root user and switch to it (`USER 10001`)",
            )
            .cis("4.1")
            .config_key("config.User"),
        );
    }
    let healthcheck_set = c
        .healthcheck
        .as_ref()
        .and_then(|h| h.get("Test"))
        .and_then(|t| t.as_array())
        .is_some_and(|t| t.first().and_then(|x| x.as_str()) != Some("NONE") && !t.is_empty());
    if !healthcheck_set {
        out.push(
            risk(
                "IW-CIS-4.6-NO-HEALTHCHECK",
                "No HEALTHCHECK instruction",
                Low,
                "config.Healthcheck is not set".to_string(),
                "Add a HEALTHCHECK instruction to the Dockerfile",
            )
            .cis("4.6")
            .config_key("config.Healthcheck"),
        );
    }
    for (port, _) in c.exposed_ports.iter().flatten() {
        let number = port.split('/').next().unwrap_or("").parse::<u32>();
        if let Ok(n) = number {
            if n < 1024 {
                out.push(
                    risk(
                        "IW-BASE-PRIVILEGED-PORT",
                        "Privileged port exposed",
                        Low,
                        format!("ExposedPorts has {port}"),
                        "Listen on a port of 1024 or above so the process needs no privilege to bind it",
                    )
                    .config_key(format!("config.ExposedPorts[{port}]")),
                );
            }
        }
    }
    for (i, h) in config.history.iter().flatten().enumerate() {
        let Some(step) = h.created_by.as_deref() else {
            continue;
        };
        let key = format!("history[{i}].created_by");
        let shown: String = step.chars().take(160).collect();
        if add_remote(step) {
            out.push(
                risk(
                    "IW-CIS-4.9-ADD-REMOTE",
                    "ADD fetches a remote URL",
                    Low,
                    shown.clone(),
                    "Download with a checksum-verified RUN step, or COPY a vetted file",
                )
                .cis("4.9")
                .config_key(key.clone()),
            );
        }
        if pipe_to_shell(step) {
            out.push(
                risk(
                    "IW-BASE-PIPE-TO-SHELL",
                    "A build step pipes a download into a shell",
                    Medium,
                    shown.clone(),
                    "Download to a file, verify its checksum or signature, then run it",
                )
                .cis("4.9")
                .config_key(key.clone()),
            );
        }
        if update_alone(step) {
            out.push(
                risk(
                    "IW-CIS-4.7-UPDATE-ALONE",
                    "Package index update in a step of its own",
                    Low,
                    shown,
                    "Update the package index and install in the same RUN step",
                )
                .cis("4.7")
                .config_key(key),
            );
        }
    }
    out
}

fn pipe_to_shell(step: &str) -> bool {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(
            r"\b(?:curl|wget)\b[^|;&]*\|\s*(?:sudo\s+)?(?:/usr)?(?:/bin/)?(?:ba|z|da)?sh\b",
        )
        .expect("pipe-to-shell pattern")
    })
    .is_match(step)
}

fn add_remote(step: &str) -> bool {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(r"\bADD\s+(?:--\S+\s+)*(?:file:\S+\s+in\s+\S+\s+)?https?://")
            .expect("ADD pattern")
    })
    .is_match(step)
}

fn update_alone(step: &str) -> bool {
    let updates = [
        "apt-get update",
        "apt update",
        "apk update",
        "yum update",
        "dnf update",
    ];
    updates.iter().any(|u| step.contains(u))
        && !step.contains("install")
        && !step.contains("upgrade")
        && !step.contains(" add ")
        && !step.contains("yum update -y")
}

/// Checks of the installed packages.
pub fn inventory_checks(inventory: &Inventory) -> Vec<CheckFinding> {
    inventory
        .packages
        .iter()
        .filter(|p| p.ecosystem.is_os() && p.name == "sudo")
        .take(1)
        .map(|p| {
            let mut f = risk(
                "IW-BASE-SUDO-INSTALLED",
                "sudo is installed",
                Low,
                format!("package sudo {}", p.version),
                "Remove sudo from the image; containers should not change user at run time",
            );
            f.path = Some(p.path.clone());
            f.layer = p.layer.clone();
            f
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_to_shell_patterns() {
        assert!(pipe_to_shell(
            "/bin/sh -c curl -fsSL https://x.example/i.sh | sh"
        ));
        assert!(pipe_to_shell("RUN wget -qO- http://x | bash -s"));
        assert!(!pipe_to_shell("curl -o x https://x && sha256sum -c x.sha"));
    }

    #[test]
    fn add_of_a_url() {
        assert!(add_remote("ADD https://example.com/x.tgz /opt/ # buildkit"));
        assert!(add_remote(
            "/bin/sh -c #(nop) ADD --chown=1:1 http://x/y /y"
        ));
        assert!(!add_remote("/bin/sh -c #(nop) ADD file:abc in / "));
    }

    #[test]
    fn shadow_entries() {
        let mut out = Output::default();
        shadow("root:!::0:::::\nbob::1:0:99999:7:::\n", &mut out);
        assert_eq!(out.facts.len(), 1);
    }
}
