//! Docker config files (`~/.docker/config.json`, a Secret's `.dockerconfigjson`): the
//! credentials they hold in `auths`, and the credential helpers `credHelpers` and
//! `credsStore` name (`docker-credential-<name> get`, the server URL on stdin, a JSON reply
//! on stdout). One rule for Docker Hub: any of its names matches any other.
//!
//! Where a helper would be needed, the caller decides whether it may run
//! ([`HelperPolicy`]): a user's own config may name one, a tenant's Secret may not (the
//! name chooses a program to run).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;

use super::access::{is_docker_hub, same_registry, Credentials, CredentialsError, RegistryAccess};

/// Largest reply read from a credential helper (stdout and stderr each).
const MAX_HELPER_OUTPUT: u64 = 64 * 1024;

/// The server URL Docker hands helpers for Docker Hub.
const DOCKER_HUB_SERVER_URL: &str = "https://index.docker.io/v1/";

/// Whether credential helpers may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelperPolicy {
    /// A helper the config names for the registry is an error, and is never run.
    Refuse,
    /// Helpers run, and must answer within `timeout`.
    Run { timeout: Duration },
}

impl HelperPolicy {
    /// Helpers run with a 30 s limit.
    pub fn run() -> Self {
        Self::Run {
            timeout: Duration::from_secs(30),
        }
    }
}

/// Credentials found for a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerCredential {
    /// A username and password (or access token).
    Basic(Credentials),
    /// A registry token sent as a bearer token (`registrytoken`).
    Bearer(String),
    /// An identity token (`identitytoken`, or a helper's reply with username `<token>`):
    /// an OAuth2 refresh token the registry's token service exchanges for access tokens.
    IdentityToken(String),
}

impl RegistryAccess {
    /// Uses what a Docker config holds for this registry, if anything.
    pub fn with_docker_credential(self, credential: Option<DockerCredential>) -> Self {
        match credential {
            Some(DockerCredential::Basic(c)) => self.with_credentials(c),
            Some(DockerCredential::Bearer(t)) => self.with_token(t),
            Some(DockerCredential::IdentityToken(t)) => self.with_identity_token(t),
            None => self,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// A parsed Docker config.
pub struct DockerConfig {
    /// What the config was read from, for messages (`.dockerconfigjson`, `config.json`).
    key: &'static str,
    file: ConfigFile,
}

impl DockerConfig {
    /// Parses a Docker config (`{"auths": …, "credsStore": …, "credHelpers": …}`).
    pub fn parse(json: &[u8], key: &'static str) -> Result<Self, CredentialsError> {
        let file = serde_json::from_slice(json).map_err(|e| malformed(key, &e))?;
        Ok(Self { key, file })
    }

    /// Parses the legacy `.dockercfg` format: the `auths` map without the wrapper.
    pub fn parse_legacy(json: &[u8], key: &'static str) -> Result<Self, CredentialsError> {
        let auths = serde_json::from_slice(json).map_err(|e| malformed(key, &e))?;
        Ok(Self {
            key,
            file: ConfigFile {
                auths,
                ..Default::default()
            },
        })
    }

    /// What the config was read from.
    pub fn key(&self) -> &'static str {
        self.key
    }

    /// The registries `auths` names, as written.
    pub fn known_registries(&self) -> Vec<String> {
        self.file.auths.keys().cloned().collect()
    }

    /// The credentials for `registry_host` (`host[:port]`): from its `credHelpers` helper,
    /// else its `auths` entry, else the `credsStore` helper; `None` when the config has
    /// none for it (or the helper knows none).
    pub fn credentials_for(
        &self,
        registry_host: &str,
        policy: &HelperPolicy,
    ) -> Result<Option<DockerCredential>, CredentialsError> {
        let matches = |key: &str| same_registry(&config_key_host(key), registry_host);
        if let Some((_, helper)) = self.file.cred_helpers.iter().find(|(k, _)| matches(k)) {
            return run(helper, "credHelpers", registry_host, policy);
        }
        let entry = self.file.auths.iter().find(|(k, _)| matches(k));
        if let Some((_, entry)) = entry {
            if let Some(credential) = self.decode(entry)? {
                return Ok(Some(credential));
            }
        }
        if let Some(store) = self.file.creds_store.as_deref().filter(|s| !s.is_empty()) {
            return run(store, "credsStore", registry_host, policy);
        }
        match entry {
            Some(_) => Err(CredentialsError::Malformed {
                key: self.key,
                message: format!(
                    "the entry for {registry_host} has neither auth nor username and password"
                ),
            }),
            None => Ok(None),
        }
    }

    /// The credentials of one `auths` entry; `None` for an empty entry (which Docker
    /// writes when a credential store holds the secret).
    fn decode(&self, entry: &AuthEntry) -> Result<Option<DockerCredential>, CredentialsError> {
        let key = self.key;
        let present = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        if let Some(auth) = present(&entry.auth) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| CredentialsError::Malformed {
                    key,
                    message: format!("auth is not base64: {e}"),
                })?;
            let decoded = String::from_utf8(decoded).map_err(|_| CredentialsError::Malformed {
                key,
                message: "auth is not UTF-8".into(),
            })?;
            let (username, password) =
                decoded
                    .split_once(':')
                    .ok_or_else(|| CredentialsError::Malformed {
                        key,
                        message: "auth is not base64(username:password)".into(),
                    })?;
            return Ok(Some(DockerCredential::Basic(Credentials::new(
                username, password,
            ))));
        }
        if let (Some(username), Some(password)) =
            (present(&entry.username), present(&entry.password))
        {
            return Ok(Some(DockerCredential::Basic(Credentials::new(
                username, password,
            ))));
        }
        if let Some(token) = present(&entry.registrytoken) {
            return Ok(Some(DockerCredential::Bearer(token)));
        }
        if let Some(token) = present(&entry.identitytoken) {
            return Ok(Some(DockerCredential::IdentityToken(token)));
        }
        Ok(None)
    }
}

fn malformed(key: &'static str, e: &serde_json::Error) -> CredentialsError {
    // serde_json's message may quote the content; only where it went wrong is kept.
    CredentialsError::Malformed {
        key,
        message: format!(
            "not a Docker config (JSON error at line {} column {})",
            e.line(),
            e.column()
        ),
    }
}

/// `https://host:port/v1/` → `host:port`, lower-cased.
fn config_key_host(key: &str) -> String {
    let rest = key.split_once("://").map_or(key, |(_, rest)| rest);
    rest.split('/').next().unwrap_or("").to_ascii_lowercase()
}

/// Asks the helper `name` for the credentials of `registry_host`, if the policy lets it run.
fn run(
    name: &str,
    source_key: &'static str,
    registry_host: &str,
    policy: &HelperPolicy,
) -> Result<Option<DockerCredential>, CredentialsError> {
    let helper_error = |message: String| CredentialsError::Helper {
        host: registry_host.to_string(),
        helper: name.to_string(),
        message,
    };
    // The name becomes part of a program name looked up on PATH, never a path.
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let HelperPolicy::Run { timeout } = policy else {
        return Err(CredentialsError::HelperRefused {
            host: registry_host.to_string(),
            // Quoted back only when it is a plain, short name.
            helper: if valid { name } else { "<invalid name>" }.to_string(),
            source_key,
        });
    };
    if !valid {
        return Err(helper_error(format!(
            "{source_key} names {:?}, which is not a helper name",
            name.chars().take(64).collect::<String>()
        )));
    }
    let server_url = if is_docker_hub(registry_host) {
        DOCKER_HUB_SERVER_URL
    } else {
        registry_host
    };
    let reply = run_helper(&format!("docker-credential-{name}"), server_url, *timeout)
        .map_err(helper_error)?;
    let Some(reply) = reply else {
        return Ok(None);
    };
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Reply {
        #[serde(default)]
        username: String,
        #[serde(default)]
        secret: String,
    }
    let reply: Reply = serde_json::from_slice(&reply)
        .map_err(|_| helper_error("did not reply with {\"Username\": …, \"Secret\": …}".into()))?;
    if reply.secret.is_empty() {
        return Ok(None);
    }
    // Docker's convention for identity tokens kept by a helper.
    if reply.username == "<token>" {
        return Ok(Some(DockerCredential::IdentityToken(reply.secret)));
    }
    Ok(Some(DockerCredential::Basic(Credentials::new(
        reply.username,
        reply.secret,
    ))))
}

/// Runs `program get` with `server_url` on stdin: its stdout, or `None` when it says it
/// has no credentials for the server. Output is bounded and the helper is killed after
/// `timeout`.
fn run_helper(
    program: &str,
    server_url: &str,
    timeout: Duration,
) -> Result<Option<Vec<u8>>, String> {
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("{program} is not on PATH"),
            _ => format!("cannot start {program}: {e}"),
        })?;
    let deadline = Instant::now() + timeout;
    let (sender, outputs) = mpsc::channel();
    for (which, pipe) in [
        (
            0,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            1,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ] {
        let sender = sender.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(pipe) = pipe {
                let _ = pipe.take(MAX_HELPER_OUTPUT + 1).read_to_end(&mut buf);
            }
            let _ = sender.send((which, buf));
        });
    }
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its input is judged by its exit status.
        let _ = stdin.write_all(server_url.as_bytes());
    }
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not answer within {timeout:?}"));
            }
            Err(e) => return Err(format!("waiting for {program}: {e}")),
        }
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    for _ in 0..2 {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        match outputs.recv_timeout(wait) {
            Ok((0, buf)) => stdout = buf,
            Ok((_, buf)) => stderr = buf,
            Err(_) => return Err("exited but left its output open".into()),
        }
    }
    if stdout.len() as u64 > MAX_HELPER_OUTPUT || stderr.len() as u64 > MAX_HELPER_OUTPUT {
        return Err(format!("replied with more than {MAX_HELPER_OUTPUT} bytes"));
    }
    if status.success() {
        return Ok(Some(stdout));
    }
    // The helpers' protocol: "credentials not found in native keychain" on stdout.
    if String::from_utf8_lossy(&stdout).contains("credentials not found") {
        return Ok(None);
    }
    let said: String = String::from_utf8_lossy(if stderr.is_empty() { &stdout } else { &stderr })
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    Err(match said.trim() {
        "" => format!("failed ({status})"),
        said => format!("failed ({status}): {said}"),
    })
}

/// Credentials from the data of a Kubernetes Secret: its Docker config, or `username`
/// and `password` keys.
impl Credentials {
    /// Reads the credentials for `registry_host` from the data of a Secret (`get` returns
    /// a key's bytes): a `.dockerconfigjson` key (type `kubernetes.io/dockerconfigjson`),
    /// the legacy `.dockercfg` key, or `username` and `password` keys. Credential helpers
    /// the Docker config names are refused, never run.
    pub fn from_secret_entries<'a>(
        get: impl Fn(&str) -> Option<&'a [u8]>,
        registry_host: &str,
    ) -> Result<Self, CredentialsError> {
        if let Some(json) = get(".dockerconfigjson") {
            return Self::from_docker_config_json(json, registry_host);
        }
        if let Some(json) = get(".dockercfg") {
            return Self::from_legacy_dockercfg(json, registry_host);
        }
        match (get("username"), get("password")) {
            (Some(username), Some(password)) => Ok(Self {
                username: utf8("username", username)?,
                password: utf8("password", password)?,
            }),
            _ => Err(CredentialsError::MissingKeys),
        }
    }

    /// Reads the credentials for `registry_host` from Docker config JSON
    /// (`{"auths": {"<registry>": {"auth": base64(user:password)} | {"username","password"}}}`).
    /// Keys may carry a scheme and a path (`https://index.docker.io/v1/`).
    pub fn from_docker_config_json(
        json: &[u8],
        registry_host: &str,
    ) -> Result<Self, CredentialsError> {
        let config = DockerConfig::parse(json, ".dockerconfigjson")?;
        basic_from(&config, registry_host)
    }

    /// Reads the legacy `.dockercfg` format: the `auths` map without the wrapper.
    pub fn from_legacy_dockercfg(
        json: &[u8],
        registry_host: &str,
    ) -> Result<Self, CredentialsError> {
        let config = DockerConfig::parse_legacy(json, ".dockercfg")?;
        basic_from(&config, registry_host)
    }
}

/// The Basic credentials a Secret's Docker config holds for `registry_host`.
fn basic_from(config: &DockerConfig, registry_host: &str) -> Result<Credentials, CredentialsError> {
    match config.credentials_for(registry_host, &HelperPolicy::Refuse)? {
        Some(DockerCredential::Basic(credentials)) => Ok(credentials),
        Some(DockerCredential::Bearer(_)) => Err(CredentialsError::Malformed {
            key: config.key(),
            message: format!(
                "the entry for {registry_host} holds only a registry token; the operator needs \
                 a username and password"
            ),
        }),
        Some(DockerCredential::IdentityToken(_)) => Err(CredentialsError::IdentityToken {
            key: config.key(),
            host: registry_host.to_string(),
            user: "the operator",
        }),
        None => Err(CredentialsError::NoEntryForRegistry {
            host: registry_host.to_string(),
            known: config.known_registries().join(", "),
        }),
    }
}

fn utf8(key: &'static str, bytes: &[u8]) -> Result<String, CredentialsError> {
    String::from_utf8(bytes.to_vec())
        .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
        .map_err(|_| CredentialsError::Malformed {
            key,
            message: "not UTF-8".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_names_match_each_other() {
        let json = br#"{"auths":{"https://index.docker.io/v1/":{"username":"u","password":"p"}}}"#;
        let config = DockerConfig::parse(json, "config.json").unwrap();
        for host in ["docker.io", "registry-1.docker.io", "index.docker.io"] {
            assert_eq!(
                config.credentials_for(host, &HelperPolicy::Refuse).unwrap(),
                Some(DockerCredential::Basic(Credentials::new("u", "p"))),
                "{host}"
            );
        }
        assert_eq!(
            config
                .credentials_for("quay.io", &HelperPolicy::Refuse)
                .unwrap(),
            None
        );
    }

    #[test]
    fn registry_tokens_are_bearer_tokens() {
        let json = br#"{"auths":{"r.example":{"registrytoken":"tok"}}}"#;
        let config = DockerConfig::parse(json, "config.json").unwrap();
        assert_eq!(
            config
                .credentials_for("r.example", &HelperPolicy::Refuse)
                .unwrap(),
            Some(DockerCredential::Bearer("tok".into()))
        );
    }

    #[test]
    fn identity_tokens_are_kept_for_the_token_service_and_refused_by_the_operator() {
        let json = br#"{"auths":{"r.example":{"identitytoken":"refresh-me"}}}"#;
        let config = DockerConfig::parse(json, "config.json").unwrap();
        assert_eq!(
            config
                .credentials_for("r.example", &HelperPolicy::Refuse)
                .unwrap(),
            Some(DockerCredential::IdentityToken("refresh-me".into()))
        );
        let err = Credentials::from_docker_config_json(json, "r.example")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("identity token")
                && err.contains("the operator")
                && !err.contains("refresh-me"),
            "{err}"
        );
    }

    #[test]
    fn helper_names_that_are_paths_are_refused() {
        let json = br#"{"credHelpers":{"r.example":"../../bin/sh"}}"#;
        let config = DockerConfig::parse(json, "config.json").unwrap();
        let err = config
            .credentials_for("r.example", &HelperPolicy::run())
            .unwrap_err();
        assert!(err.to_string().contains("not a helper name"), "{err}");
    }

    #[test]
    fn a_refused_helper_is_quoted_only_when_it_is_a_plain_name() {
        let long = "x".repeat(500);
        let json = format!(r#"{{"credHelpers":{{"r.example":"{long}"}}}}"#);
        let config = DockerConfig::parse(json.as_bytes(), ".dockerconfigjson").unwrap();
        let err = config
            .credentials_for("r.example", &HelperPolicy::Refuse)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("<invalid name>") && !err.contains(&long),
            "{err}"
        );
    }

    #[test]
    fn a_missing_helper_is_named() {
        let json = br#"{"credsStore":"imagewarden-test-absent"}"#;
        let config = DockerConfig::parse(json, "config.json").unwrap();
        let err = config
            .credentials_for("r.example", &HelperPolicy::run())
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("docker-credential-imagewarden-test-absent is not on PATH"),
            "{err}"
        );
    }

    /// An executable script in a fresh directory.
    fn script(body: &str) -> (tempfile::TempDir, String) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("helper");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = path.to_string_lossy().into_owned();
        (dir, path)
    }

    #[test]
    fn a_helper_gets_the_server_url_on_stdin() {
        let (_dir, helper) = script(r#"read -r s; printf '{"Username":"u","Secret":"%s"}' "$s""#);
        let reply = run_helper(&helper, "r.example:5000", Duration::from_secs(10)).unwrap();
        assert_eq!(
            reply.as_deref(),
            Some(br#"{"Username":"u","Secret":"r.example:5000"}"#.as_slice())
        );
    }

    #[test]
    fn a_slow_helper_is_stopped() {
        let (_dir, helper) = script("exec sleep 30");
        let started = Instant::now();
        let err = run_helper(&helper, "r", Duration::from_millis(300)).unwrap_err();
        assert!(err.contains("did not answer within"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn helper_output_is_bounded() {
        let (_dir, helper) = script("head -c 200000 /dev/zero");
        let err = run_helper(&helper, "r", Duration::from_secs(10)).unwrap_err();
        assert!(err.contains("more than 65536 bytes"), "{err}");
    }

    #[test]
    fn helper_refusals_and_failures() {
        let (_dir, helper) = script("echo 'credentials not found in native keychain'; exit 1");
        assert_eq!(run_helper(&helper, "r", Duration::from_secs(10)), Ok(None));
        let (_dir, helper) = script("echo 'keychain locked' >&2; exit 3");
        let err = run_helper(&helper, "r", Duration::from_secs(10)).unwrap_err();
        assert!(
            err.contains("exit status: 3") && err.contains("keychain locked"),
            "{err}"
        );
    }

    #[test]
    fn malformed_json_is_not_quoted() {
        let err = DockerConfig::parse(b"{\"auths\": SECRET-TEXT", "config.json")
            .err()
            .unwrap();
        assert!(!err.to_string().contains("SECRET"), "{err}");
    }
}
