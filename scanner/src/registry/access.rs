//! How to reach a registry: its address, transport, trusted CA and credentials, and the
//! credentials a Secret's data holds (a Docker config, or `username` and `password`).

use std::fmt;
use std::sync::Arc;

use reqwest::Url;

use super::error::RegistryError;
use crate::egress::EgressPolicy;

/// Docker Hub's names in image references and in Docker config files; its API lives at
/// [`DOCKER_HUB_API_HOST`].
const DOCKER_HUB_ALIASES: &[&str] = &[
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];
const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";

/// Everything needed to talk to one registry, with Secrets already resolved.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAccess {
    /// `host[:port]`, lower-cased, as it appears in image references.
    pub host: String,
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
    /// PEM CA certificates trusted in addition to the system roots.
    pub ca_pem: Option<String>,
    /// Basic credentials; `None` for anonymous access.
    pub credentials: Option<Credentials>,
    /// A bearer token sent as is (instead of asking a token service).
    pub token: Option<String>,
    /// An identity (OAuth2 refresh) token, exchanged at the registry's token service for
    /// access tokens, as `docker login` keeps for Azure Container Registry and others.
    pub identity_token: Option<String>,
    /// Where requests for this registry may go (the operator's egress policy).
    pub egress: Arc<EgressPolicy>,
}

impl fmt::Debug for RegistryAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAccess")
            .field("host", &self.host)
            .field("insecure", &self.insecure)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field("credentials", &self.credentials)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field(
                "identity_token",
                &self.identity_token.as_ref().map(|_| "<redacted>"),
            )
            .field("egress", &self.egress)
            .finish()
    }
}

impl RegistryAccess {
    /// Parses a registry address as a `ScanRule` spells it: `host`, `host:port`, or
    /// `http(s)://host[:port][/]`. A scheme, when given, must agree with `insecure`.
    pub fn new(url: &str, insecure: bool) -> Result<Self, RegistryError> {
        let host = registry_host(url, insecure)?;
        Ok(Self {
            host,
            insecure,
            ca_pem: None,
            credentials: None,
            token: None,
            identity_token: None,
            egress: Arc::new(EgressPolicy::default()),
        })
    }

    /// Sets the trusted CA certificates (PEM).
    pub fn with_ca_pem(mut self, ca_pem: impl Into<String>) -> Self {
        self.ca_pem = Some(ca_pem.into());
        self
    }

    /// Sets the egress policy (the default denies loopback, link-local and multicast
    /// addresses).
    pub fn with_egress(mut self, egress: Arc<EgressPolicy>) -> Self {
        self.egress = egress;
        self
    }

    /// Sets the credentials.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Sets a bearer token sent as is.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets an identity token, exchanged for access tokens at the token service.
    pub fn with_identity_token(mut self, token: impl Into<String>) -> Self {
        self.identity_token = Some(token.into());
        self
    }

    /// `http(s)://host[:port]/`, where the distribution API (`/v2/`) lives.
    pub fn base_url(&self) -> Url {
        let scheme = if self.insecure { "http" } else { "https" };
        let api_host = if is_docker_hub(&self.host) {
            DOCKER_HUB_API_HOST
        } else {
            &self.host
        };
        Url::parse(&format!("{scheme}://{api_host}/")).expect("host was validated")
    }
}

/// Normalizes a registry address to `host[:port]`, lower-cased, without a default port.
pub fn registry_host(url: &str, insecure: bool) -> Result<String, RegistryError> {
    let config_error = |message: String| RegistryError::Config {
        registry: url.to_string(),
        message,
    };
    let trimmed = url.trim();
    let (scheme, rest) = match trimmed.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, trimmed),
    };
    match scheme.as_deref() {
        None => {}
        Some("http") if insecure => {}
        Some("https") if !insecure => {}
        Some("http") => {
            return Err(config_error(
                "the URL says http:// but insecure is false; set insecure: true for plain HTTP"
                    .into(),
            ))
        }
        Some("https") => return Err(config_error(
            "the URL says https:// but insecure is true; drop the scheme or set insecure: false"
                .into(),
        )),
        Some(other) => return Err(config_error(format!("unsupported scheme {other}://"))),
    }
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(config_error(
            "expected host[:port] with no path (the scope names repositories)".into(),
        ));
    }
    let scheme = if insecure { "http" } else { "https" };
    let parsed = Url::parse(&format!("{scheme}://{authority}/"))
        .map_err(|e| config_error(format!("not a valid host[:port]: {e}")))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(config_error(
            "credentials in the URL are not allowed; use credentialsSecretRef".into(),
        ));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| config_error("no host".into()))?
        .to_ascii_lowercase();
    // Url drops the scheme's default port, so `host:443` and `host` compare equal.
    Ok(match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

/// True for Docker Hub's various names.
pub fn is_docker_hub(host: &str) -> bool {
    DOCKER_HUB_ALIASES.contains(&host)
}

/// True when two `host[:port]` names denote the same registry.
pub fn same_registry(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    a == b || (is_docker_hub(&a) && is_docker_hub(&b))
}

/// Username and password (or token) for Basic auth and the token service.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why a credentials Secret (or Docker config) could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    #[error("the Secret has neither a .dockerconfigjson key nor username and password keys")]
    MissingKeys,
    #[error("{key} is not valid: {message}")]
    Malformed { key: &'static str, message: String },
    #[error("the Docker config has no credentials for registry {host} (it has: {known})")]
    NoEntryForRegistry { host: String, known: String },
    #[error("the Docker config sends registry {host} to the credential helper docker-credential-{helper} ({source_key}); credential helpers named in a Secret are never run (the helper name would choose a program to run in the operator): put the credentials in auths instead, e.g. with kubectl create secret docker-registry")]
    HelperRefused {
        host: String,
        helper: String,
        source_key: &'static str,
    },
    #[error("credential helper docker-credential-{helper} for {host}: {message}")]
    Helper {
        host: String,
        helper: String,
        message: String,
    },
    #[error("{key}: the credentials for {host} are an identity token, which {user} cannot use; use a username and password or an access token")]
    IdentityToken {
        key: &'static str,
        host: String,
        /// What refused it.
        user: &'static str,
    },
}

impl Credentials {
    /// Builds credentials from a username and password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use std::collections::BTreeMap;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn from_data(
        data: &BTreeMap<String, Vec<u8>>,
        host: &str,
    ) -> Result<Credentials, CredentialsError> {
        Credentials::from_secret_entries(|k| data.get(k).map(Vec::as_slice), host)
    }

    #[test]
    fn addresses_normalize_to_host_and_port() {
        assert_eq!(
            registry_host("Registry.Example.com", false).unwrap(),
            "registry.example.com"
        );
        assert_eq!(
            registry_host("https://r.example:443/", false).unwrap(),
            "r.example"
        );
        assert_eq!(
            registry_host("http://127.0.0.1:5000", true).unwrap(),
            "127.0.0.1:5000"
        );
        assert_eq!(
            registry_host("127.0.0.1:5000", true).unwrap(),
            "127.0.0.1:5000"
        );
        assert!(registry_host("http://r.example", false).is_err());
        assert!(registry_host("https://r.example", true).is_err());
        assert!(registry_host("r.example/team-a", false).is_err());
        assert!(registry_host("https://user:pw@r.example", false).is_err());
        assert!(registry_host("", false).is_err());
    }

    #[test]
    fn docker_hub_uses_its_api_host() {
        let access = RegistryAccess::new("docker.io", false).unwrap();
        assert_eq!(access.base_url().as_str(), "https://registry-1.docker.io/");
    }

    #[test]
    fn dockerconfigjson_auth_field_is_decoded_for_the_matching_host() {
        let auth = base64::engine::general_purpose::STANDARD.encode("robot$ci:pa:ss");
        let json = format!(
            r#"{{"auths":{{"other.example":{{"auth":"eDp5"}},"https://r.example:5000/v1/":{{"auth":"{auth}"}}}}}}"#
        );
        let creds = from_data(&data(&[(".dockerconfigjson", &json)]), "r.example:5000").unwrap();
        assert_eq!(creds, Credentials::new("robot$ci", "pa:ss"));
    }

    #[test]
    fn dockerconfigjson_username_and_password_fields_work() {
        let json = r#"{"auths":{"r.example":{"username":"u","password":"p"}}}"#;
        let creds = Credentials::from_docker_config_json(json.as_bytes(), "r.example").unwrap();
        assert_eq!(creds, Credentials::new("u", "p"));
    }

    #[test]
    fn dockerconfigjson_for_docker_hub_matches_its_aliases() {
        let json = r#"{"auths":{"https://index.docker.io/v1/":{"username":"u","password":"p"}}}"#;
        assert!(Credentials::from_docker_config_json(json.as_bytes(), "docker.io").is_ok());
    }

    #[test]
    fn dockerconfigjson_without_the_host_names_what_it_has() {
        let json = r#"{"auths":{"a.example":{"auth":"eDp5"}}}"#;
        let err = Credentials::from_docker_config_json(json.as_bytes(), "b.example").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the Docker config has no credentials for registry b.example (it has: a.example)"
        );
    }

    #[test]
    fn malformed_dockerconfigjson_is_reported() {
        let err = Credentials::from_docker_config_json(b"{", "r").unwrap_err();
        assert!(matches!(err, CredentialsError::Malformed { .. }), "{err}");
        let json = r#"{"auths":{"r":{"auth":"%%%"}}}"#;
        let err = Credentials::from_docker_config_json(json.as_bytes(), "r").unwrap_err();
        assert!(err.to_string().contains("not base64"), "{err}");
    }

    #[test]
    fn username_password_secret_works_and_trailing_newlines_are_dropped() {
        let creds = from_data(
            &data(&[("username", "scanner\n"), ("password", "pw\n")]),
            "r",
        )
        .unwrap();
        assert_eq!(creds, Credentials::new("scanner", "pw"));
        assert_eq!(
            from_data(&data(&[("username", "u")]), "r").unwrap_err(),
            CredentialsError::MissingKeys
        );
    }

    #[test]
    fn credential_helpers_in_a_secret_are_refused_not_run() {
        for json in [
            r#"{"auths":{},"credHelpers":{"r.example":"evil"}}"#,
            r#"{"credsStore":"evil"}"#,
            r#"{"auths":{"r.example":{}},"credsStore":"evil"}"#,
        ] {
            let err =
                Credentials::from_docker_config_json(json.as_bytes(), "r.example").unwrap_err();
            assert!(
                matches!(&err, CredentialsError::HelperRefused { helper, .. } if helper == "evil"),
                "{json}: {err}"
            );
            assert!(err.to_string().contains("never run"), "{err}");
        }
        // A helper for another registry, or a store beside real credentials, is not needed.
        let json = r#"{"auths":{"r.example":{"auth":"dTpw"}},"credHelpers":{"o.example":"x"},"credsStore":"x"}"#;
        let creds = Credentials::from_docker_config_json(json.as_bytes(), "r.example").unwrap();
        assert_eq!(creds, Credentials::new("u", "p"));
    }

    #[test]
    fn debug_output_hides_the_password() {
        let text = format!("{:?}", Credentials::new("u", "hunter2"));
        assert!(!text.contains("hunter2"), "{text}");
    }
}
