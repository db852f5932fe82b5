//! The admission webhook's own CA and serving certificate (`--admission-cert-secret`).
//!
//! The operator keeps them in one Secret of its namespace, shared by every replica:
//! - any replica creates the Secret when it is missing (a create that loses the race gets
//!   409 and reads the winner's), so all replicas serve certificates of one CA;
//! - every replica watches the Secret and serves its `tls.crt`/`tls.key` from memory,
//!   swapping them when the Secret changes;
//! - the leader renews the serving certificate at 2/3 of its lifetime, and the CA at 2/3
//!   of its lifetime in two steps: the new CA first joins the trusted bundle
//!   (`ca-bundle.crt`, written into the `caBundle` of the ValidatingWebhookConfiguration
//!   named by `--admission-webhook-configuration`), and only once the API server's
//!   configuration holds it (and [`promote_delay`] has passed) does it sign the serving
//!   certificate. The old CA stays in the bundle until it expires, so no admission fails
//!   during a rotation. Every write carries the resourceVersion it was planned from.
//!
//! [`plan`] decides (pure); [`run_leader`], [`ensure`] and [`watch_secret`] do the I/O.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The CA that signs the serving certificate now.
pub const CA_CERT: &str = "ca.crt";
/// Its private key.
pub const CA_KEY: &str = "ca.key";
/// A CA being introduced: trusted (in the bundle), not signing yet.
pub const NEXT_CA_CERT: &str = "ca-next.crt";
/// Its private key.
pub const NEXT_CA_KEY: &str = "ca-next.key";
/// Every CA the API server is to trust: the current one, the one being introduced, and
/// the previous one until it expires. What `caBundle` holds.
pub const CA_BUNDLE: &str = "ca-bundle.crt";
/// The serving certificate.
pub const TLS_CERT: &str = "tls.crt";
/// Its private key.
pub const TLS_KEY: &str = "tls.key";
/// When the next CA joined the bundle (Unix seconds).
pub const NEXT_SINCE_ANNOTATION: &str = "imagewarden.io/ca-next-since";

/// Seconds a certificate's `notBefore` lies before the time it is made: the API
/// server's clock and the operator's differ a little.
const BACKDATE: i64 = 60;

/// Shortest lifetimes accepted.
pub const MIN_CERT_LIFETIME: Duration = Duration::from_secs(10);

/// What the operator makes, and where it keeps and publishes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSettings {
    /// Name of the Secret (in the operator's namespace).
    pub secret: String,
    /// DNS names of the serving certificate.
    pub dns_names: Vec<String>,
    /// IP addresses of the serving certificate.
    pub ip_addresses: Vec<IpAddr>,
    /// Lifetime of a CA.
    pub ca_lifetime: Duration,
    /// Lifetime of a serving certificate (never beyond its CA's end).
    pub cert_lifetime: Duration,
    /// ValidatingWebhookConfiguration whose `caBundle`s the leader keeps current.
    pub webhook_configuration: Option<String>,
}

impl CertSettings {
    /// Checks the settings; the error names the flag to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.dns_names.is_empty() && self.ip_addresses.is_empty() {
            return Err("--admission-cert-secret needs --admission-cert-dns-names or --admission-cert-ip-addresses (the names the API server calls the webhook by)".into());
        }
        for name in &self.dns_names {
            if name.is_empty()
                || name.len() > 253
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'*')
            {
                return Err(format!(
                    "--admission-cert-dns-names: {name:?} is not a DNS name"
                ));
            }
        }
        if self.cert_lifetime < MIN_CERT_LIFETIME {
            return Err(format!(
                "--admission-cert-lifetime must be at least {}s",
                MIN_CERT_LIFETIME.as_secs()
            ));
        }
        if self.ca_lifetime < self.cert_lifetime * 2 {
            return Err("--admission-ca-lifetime must be at least twice --admission-cert-lifetime (a CA signs certificates for most of its life and overlaps its successor)".into());
        }
        if self.ca_lifetime > Duration::from_secs(20 * 365 * 86400) {
            return Err("--admission-ca-lifetime must be at most 20 years".into());
        }
        Ok(())
    }

    /// How often the leader looks at the Secret: often enough to renew on time.
    pub fn check_every(&self) -> Duration {
        (self.cert_lifetime / 20).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}

/// How long a new CA has been in the bundle (and in the webhook configuration) before
/// it signs: the API server reads webhook configurations through a watch, so it trusts
/// the new CA moments after the write; the delay leaves a margin.
pub fn promote_delay(ca_lifetime: Duration) -> Duration {
    (ca_lifetime / 10).min(Duration::from_secs(600))
}

/// A certificate's validity and what it says of itself.
#[derive(Clone, Debug)]
struct Parsed {
    der: Vec<u8>,
    not_before: i64,
    not_after: i64,
}

impl Parsed {
    /// Seconds since the epoch at which 2/3 of the lifetime has passed, counted from
    /// when it was made (its `notBefore` is [`BACKDATE`] earlier).
    fn renew_at(&self) -> i64 {
        let made = self.not_before + BACKDATE;
        made + (self.not_after - made).max(0) * 2 / 3
    }
}

fn parse_pem(pem: &[u8]) -> Vec<Parsed> {
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .filter_map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
            let validity = cert.validity();
            Some(Parsed {
                der: der.to_vec(),
                not_before: validity.not_before.timestamp(),
                not_after: validity.not_after.timestamp(),
            })
        })
        .collect()
}

fn to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// A CA with its key, usable to sign.
struct Ca {
    cert: Parsed,
    pem: String,
    key_pem: String,
}

impl Ca {
    fn read(data: &BTreeMap<String, Vec<u8>>, cert: &str, key: &str, now: i64) -> Option<Ca> {
        let pem = String::from_utf8(data.get(cert)?.clone()).ok()?;
        let key_pem = String::from_utf8(data.get(key)?.clone()).ok()?;
        let parsed = parse_pem(pem.as_bytes()).into_iter().next()?;
        // The key must be the certificate's, and the CA still valid.
        let key = KeyPair::from_pem(&key_pem).ok()?;
        let (_, x509) = x509_parser::parse_x509_certificate(&parsed.der).ok()?;
        if x509.public_key().raw != key.subject_public_key_info().as_slice()
            || parsed.not_after <= now
        {
            return None;
        }
        Some(Ca {
            cert: parsed,
            pem,
            key_pem,
        })
    }

    fn generate(now: i64, lifetime: Duration) -> Result<Ca, String> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            format!("imagewarden-admission-ca-{now}"),
        );
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = at(now - BACKDATE)?;
        params.not_after = at(now.saturating_add(secs(lifetime)))?;
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.self_signed(&key).map_err(err)?;
        let pem = cert.pem();
        let parsed = parse_pem(pem.as_bytes())
            .into_iter()
            .next()
            .ok_or("a generated CA could not be read back")?;
        Ok(Ca {
            cert: parsed,
            pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// A serving certificate for `settings`' names, ending at the latest when the CA does.
    fn sign(&self, settings: &CertSettings, now: i64) -> Result<(String, String), String> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(err)?;
        let issuer = Issuer::from_ca_cert_pem(&self.pem, key).map_err(err)?;
        let names: Vec<String> = settings
            .dns_names
            .iter()
            .cloned()
            .chain(settings.ip_addresses.iter().map(|ip| ip.to_string()))
            .collect();
        let mut params = CertificateParams::new(names.clone()).map_err(err)?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.not_before = at(now - BACKDATE)?;
        params.not_after = at(now
            .saturating_add(secs(settings.cert_lifetime))
            .min(self.cert.not_after))?;
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &issuer).map_err(err)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Whether `cert` was signed by this CA.
    fn signed(&self, cert: &[u8]) -> bool {
        let (Ok((_, ca)), Ok((_, c))) = (
            x509_parser::parse_x509_certificate(&self.cert.der),
            x509_parser::parse_x509_certificate(cert),
        ) else {
            return false;
        };
        c.verify_signature(Some(ca.public_key())).is_ok()
    }
}

fn err(e: impl std::fmt::Display) -> String {
    format!("making the admission certificate: {e}")
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn at(unix: i64) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::from_unix_timestamp(unix).map_err(err)
}

/// Whether the serving certificate is one to keep: for the configured names, valid, not
/// due for renewal, signed by `ca`, with its key.
fn serving_ok(
    data: &BTreeMap<String, Vec<u8>>,
    ca: &Ca,
    settings: &CertSettings,
    now: i64,
) -> bool {
    let (Some(cert), Some(key)) = (data.get(TLS_CERT), data.get(TLS_KEY)) else {
        return false;
    };
    let Some(parsed) = parse_pem(cert).into_iter().next() else {
        return false;
    };
    let Some(key) = std::str::from_utf8(key)
        .ok()
        .and_then(|k| KeyPair::from_pem(k).ok())
    else {
        return false;
    };
    let Ok((_, x509)) = x509_parser::parse_x509_certificate(&parsed.der) else {
        return false;
    };
    if x509.public_key().raw != key.subject_public_key_info().as_slice() {
        return false;
    }
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => dns.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let mut want_ips = settings.ip_addresses.clone();
    want_ips.sort();
    ips.sort();
    parsed.not_before <= now
        && now < parsed.renew_at()
        && ca.signed(&parsed.der)
        && sorted(dns) == sorted(settings.dns_names.clone())
        && ips == want_ips
}

/// A change of the Secret: its new data and annotation, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Next {
    pub data: BTreeMap<String, Vec<u8>>,
    /// [`NEXT_SINCE_ANNOTATION`]: when the next CA joined the bundle.
    pub next_since: Option<i64>,
    pub reasons: Vec<&'static str>,
}

/// What the Secret should hold next, from what it holds (`data`, `next_since`), whether
/// the webhook configuration trusts everything in the bundle already (`bundle_published`;
/// `true` when no configuration is managed), and the time. `None`: nothing to change.
pub fn plan(
    data: &BTreeMap<String, Vec<u8>>,
    next_since: Option<i64>,
    bundle_published: bool,
    now: i64,
    settings: &CertSettings,
) -> Result<Option<Next>, String> {
    let mut reasons = Vec::new();
    let mut out = data.clone();
    let mut since = next_since;
    let old_bundle = data
        .get(CA_BUNDLE)
        .map(|b| parse_pem(b))
        .unwrap_or_default();

    let mut ca = Ca::read(data, CA_CERT, CA_KEY, now);
    let mut next = Ca::read(data, NEXT_CA_CERT, NEXT_CA_KEY, now);
    if next.is_none() && data.contains_key(NEXT_CA_CERT) {
        out.remove(NEXT_CA_CERT);
        out.remove(NEXT_CA_KEY);
        since = None;
        reasons.push("unusable next CA dropped");
    }
    match (&ca, &next) {
        (None, Some(_)) => {
            // The current CA is gone or expired: the next one takes over at once.
            ca = next.take();
            since = None;
            reasons.push("next CA promoted (the current one is unusable)");
        }
        (None, None) => {
            ca = Some(Ca::generate(now, settings.ca_lifetime)?);
            reasons.push("CA created");
        }
        (Some(_), Some(_)) => {
            let waited =
                since.is_some_and(|s| now - s >= secs(promote_delay(settings.ca_lifetime)));
            if waited && bundle_published {
                ca = next.take();
                since = None;
                reasons.push("next CA promoted");
            }
        }
        (Some(current), None) => {
            if now >= current.cert.renew_at() {
                next = Some(Ca::generate(now, settings.ca_lifetime)?);
                since = Some(now);
                reasons.push("next CA added to the bundle");
            }
        }
    }
    let ca = ca.ok_or("no CA")?;
    if !serving_ok(data, &ca, settings, now)
        || reasons
            .iter()
            .any(|r| r.starts_with("next CA promoted") || *r == "CA created")
    {
        let (cert, key) = ca.sign(settings, now)?;
        out.insert(TLS_CERT.into(), cert.into_bytes());
        out.insert(TLS_KEY.into(), key.into_bytes());
        reasons.push("serving certificate issued");
    }
    // The bundle: the current CA, the next one, and earlier ones until they expire.
    let mut bundle: Vec<Vec<u8>> = vec![ca.cert.der.clone()];
    if let Some(n) = &next {
        bundle.push(n.cert.der.clone());
    }
    for old in &old_bundle {
        if old.not_after > now && !bundle.contains(&old.der) {
            bundle.push(old.der.clone());
        }
    }
    let bundle_pem: String = bundle.iter().map(|d| to_pem(d)).collect();
    out.insert(CA_BUNDLE.into(), bundle_pem.into_bytes());
    out.insert(CA_CERT.into(), ca.pem.clone().into_bytes());
    out.insert(CA_KEY.into(), ca.key_pem.clone().into_bytes());
    match &next {
        Some(n) => {
            out.insert(NEXT_CA_CERT.into(), n.pem.clone().into_bytes());
            out.insert(NEXT_CA_KEY.into(), n.key_pem.clone().into_bytes());
        }
        None => {
            out.remove(NEXT_CA_CERT);
            out.remove(NEXT_CA_KEY);
        }
    }
    if out == *data && since == next_since {
        return Ok(None);
    }
    if reasons.is_empty() {
        reasons.push("expired CA dropped from the bundle");
    }
    Ok(Some(Next {
        data: out,
        next_since: since,
        reasons,
    }))
}

fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

fn next_since(secret: &Secret) -> Option<i64> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(NEXT_SINCE_ANNOTATION)?
        .parse()
        .ok()
}

fn secret_of(name: &str, base: Option<&Secret>, next: &Next) -> Secret {
    let mut metadata = base.map(|s| s.metadata.clone()).unwrap_or(ObjectMeta {
        name: Some(name.to_string()),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_string(),
            "imagewarden-operator".to_string(),
        )])),
        ..Default::default()
    });
    metadata.managed_fields = None;
    let annotations = metadata.annotations.get_or_insert_with(Default::default);
    match next.next_since {
        Some(t) => {
            annotations.insert(NEXT_SINCE_ANNOTATION.into(), t.to_string());
        }
        None => {
            annotations.remove(NEXT_SINCE_ANNOTATION);
        }
    }
    Secret {
        metadata,
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            next.data
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// Reads the Secret, creating it when it is missing; when two replicas create it at
/// once, the API server keeps one and the other reads it. Returns the Secret whose
/// certificate to serve.
pub async fn ensure(
    client: &Client,
    namespace: &str,
    settings: &CertSettings,
) -> anyhow::Result<Secret> {
    use anyhow::Context as _;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let what = || {
        format!(
            "Secret {namespace}/{} (--admission-cert-secret)",
            settings.secret
        )
    };
    for _ in 0..5 {
        if let Some(secret) = api.get_opt(&settings.secret).await.with_context(what)? {
            if secret
                .data
                .as_ref()
                .is_some_and(|d| d.contains_key(TLS_CERT) && d.contains_key(TLS_KEY))
            {
                return Ok(secret);
            }
            // Present but without a certificate (made by hand?): the leader fills it; a
            // replica that cannot wait fills it now, guarded by its resourceVersion.
            let now = chrono::Utc::now().timestamp();
            let Some(next) = plan(
                &secret_data(&secret),
                next_since(&secret),
                false,
                now,
                settings,
            )
            .map_err(anyhow::Error::msg)?
            else {
                return Ok(secret);
            };
            match api
                .replace(
                    &settings.secret,
                    &PostParams::default(),
                    &secret_of(&settings.secret, Some(&secret), &next),
                )
                .await
            {
                Ok(s) => return Ok(s),
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(e).with_context(what),
            }
        }
        let now = chrono::Utc::now().timestamp();
        let next = plan(&BTreeMap::new(), None, false, now, settings)
            .map_err(anyhow::Error::msg)?
            .ok_or_else(|| anyhow::anyhow!("no certificate planned"))?;
        match api
            .create(
                &PostParams::default(),
                &secret_of(&settings.secret, None, &next),
            )
            .await
        {
            Ok(s) => {
                tracing::info!(secret = %settings.secret, "admission CA and serving certificate created");
                return Ok(s);
            }
            // Another replica created it first: serve its certificate.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e).with_context(what),
        }
    }
    anyhow::bail!("{}: kept changing while it was being created", what())
}

/// The serving certificate and key of the Secret, PEM.
pub fn serving_pem(secret: &Secret) -> Option<(Vec<u8>, Vec<u8>)> {
    let data = secret.data.as_ref()?;
    Some((data.get(TLS_CERT)?.0.clone(), data.get(TLS_KEY)?.0.clone()))
}

/// Follows the Secret and hands its certificate to `serve` at every change (every
/// replica). Runs until the process stops.
pub async fn watch_secret(
    client: Client,
    namespace: String,
    name: String,
    serve: Arc<super::tls::SharedCert>,
) {
    use futures::StreamExt;
    use kube::runtime::{watcher, WatchStreamExt};
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = std::pin::pin!(watcher(api, config).default_backoff().applied_objects());
    while let Some(item) = stream.next().await {
        match item {
            Ok(secret) => {
                let Some((cert, key)) = serving_pem(&secret) else {
                    continue;
                };
                match serve.set_pem(&cert, &key) {
                    Ok(true) => {
                        tracing::info!(secret = %name, "admission certificate reloaded from the Secret")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(secret = %name, error = %e, "admission certificate in the Secret is unusable; serving the previous one")
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "watching the admission certificate Secret"),
        }
    }
}

/// Whether every webhook of `config` has `bundle` as its caBundle.
fn published(config: &ValidatingWebhookConfiguration, bundle: &[u8]) -> bool {
    let webhooks = config.webhooks.as_deref().unwrap_or_default();
    !webhooks.is_empty()
        && webhooks.iter().all(|w| {
            w.client_config
                .ca_bundle
                .as_ref()
                .is_some_and(|b| b.0 == bundle)
        })
}

/// Writes `bundle` into every webhook's caBundle of the configuration, with its
/// resourceVersion as precondition. `Ok(true)` when the configuration now holds it.
async fn publish(
    api: &Api<ValidatingWebhookConfiguration>,
    name: &str,
    bundle: &[u8],
) -> Result<bool, kube::Error> {
    let Some(mut config) = api.get_opt(name).await? else {
        tracing::warn!(configuration = %name, "ValidatingWebhookConfiguration (--admission-webhook-configuration) not found; its caBundle is not set");
        return Ok(false);
    };
    if published(&config, bundle) {
        return Ok(true);
    }
    for webhook in config.webhooks.iter_mut().flatten() {
        webhook.client_config.ca_bundle = Some(ByteString(bundle.to_vec()));
    }
    config.metadata.managed_fields = None;
    match api.replace(name, &PostParams::default(), &config).await {
        Ok(c) => {
            tracing::info!(configuration = %name, "admission caBundle updated");
            Ok(published(&c, bundle))
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// One look of the leader: publish the bundle, then renew what is due. Returns whether
/// the Secret was changed.
pub async fn leader_step(
    client: &Client,
    namespace: &str,
    settings: &CertSettings,
) -> anyhow::Result<bool> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let secret = ensure(client, namespace, settings).await?;
    let data = secret_data(&secret);
    let bundle = data.get(CA_BUNDLE).cloned().unwrap_or_default();
    let published = match &settings.webhook_configuration {
        Some(name) => publish(&configs, name, &bundle).await?,
        None => true,
    };
    let now = chrono::Utc::now().timestamp();
    let Some(next) =
        plan(&data, next_since(&secret), published, now, settings).map_err(anyhow::Error::msg)?
    else {
        return Ok(false);
    };
    match secrets
        .replace(
            &settings.secret,
            &PostParams::default(),
            &secret_of(&settings.secret, Some(&secret), &next),
        )
        .await
    {
        Ok(_) => {
            tracing::info!(secret = %settings.secret, reasons = ?next.reasons, "admission certificates updated");
            if let Some(name) = &settings.webhook_configuration {
                let bundle = next.data.get(CA_BUNDLE).cloned().unwrap_or_default();
                publish(&configs, name, &bundle).await?;
            }
            Ok(true)
        }
        // Changed meanwhile (another leader's last write): planned again next time.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The leader's loop: keeps the CA, the serving certificate and the caBundle current.
pub async fn run_leader(client: Client, namespace: String, settings: CertSettings) {
    let mut ticker = tokio::time::interval(settings.check_every());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = leader_step(&client, &namespace, &settings).await {
            tracing::warn!(error = %format!("{e:#}"), "keeping the admission certificates current");
        }
    }
}

#[cfg(test)]
mod tests;
