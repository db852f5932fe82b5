//! The admission decision: which images a Pod (or a workload's Pod template) runs, what
//! each covering ImagePolicy says of each, and the AdmissionResponse. Looks verdicts up
//! (see [`Lookup`]); never scans and never calls the API server.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use kube::core::{DynamicObject, SelectorExt};
use serde_json::Value;

use super::image::ImageReference;
use super::{action, evaluate, Action, Facts, Outcome, Subject, Verdict};
use crate::crd::{ImagePolicy, ImageScanResult, VulnerabilityException};

/// Images judged in one request at most; a spec with more is denied (no real Pod has
/// that many containers).
pub const MAX_IMAGES: usize = 256;
/// Characters of one admission warning (the API server shortens longer ones).
const MAX_WARNING_CHARS: usize = 256;
/// Characters of a denial message.
const MAX_MESSAGE_CHARS: usize = 2048;

/// Where admission finds what it needs: the operator's informer caches, or a test's.
pub trait Lookup {
    /// Every ImagePolicy.
    fn policies(&self) -> Vec<Arc<ImagePolicy>>;
    /// Labels of a namespace, `None` when it is not known (yet).
    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>>;
    /// The result for an image: by digest when the reference pins one, else the newest
    /// result whose tags hold the tag. Results of `namespace` are preferred.
    fn result(&self, image: &ImageReference, namespace: &str) -> Option<Arc<ImageScanResult>>;
    /// Why the image's last scan failed, when it did and no result exists.
    fn scan_failure(&self, image: &ImageReference) -> Option<String>;
    /// Exceptions of a namespace (live or not).
    fn exceptions(&self, namespace: &str) -> Vec<Arc<VulnerabilityException>>;
}

/// Settings of admission.
#[derive(Clone, Debug)]
pub struct AdmissionSettings {
    /// Namespaces a policy without `excludeNamespaces` leaves out (`kube-system` and the
    /// operator's own).
    pub default_excluded: Vec<String>,
}

/// One image in a Pod spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerImage {
    /// `containers`, `initContainers` or `ephemeralContainers`.
    pub field: &'static str,
    pub container: String,
    /// The reference as written.
    pub image: String,
}

/// What one policy decided of one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    pub policy: String,
    pub image: String,
    pub action: Action,
    pub reasons: Vec<String>,
    /// The image has no result and the policy asks for a scan of it (`scanUnscanned`).
    pub scan_wanted: bool,
}

/// The whole decision on a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub judgements: Vec<Judgement>,
    /// Set when the request is refused before any policy (unreadable object).
    pub invalid: Option<String>,
}

impl Decision {
    /// Whether the request is admitted.
    pub fn allowed(&self) -> bool {
        self.invalid.is_none() && !self.judgements.iter().any(|j| j.action == Action::Deny)
    }

    /// The denial message: each denied image, the policy and the top reasons.
    pub fn message(&self) -> String {
        if let Some(invalid) = &self.invalid {
            return invalid.clone();
        }
        let parts: Vec<String> = self
            .judgements
            .iter()
            .filter(|j| j.action == Action::Deny)
            .map(|j| {
                format!(
                    "image {} is denied by ImagePolicy {}: {}",
                    j.image,
                    j.policy,
                    j.reasons
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })
            .collect();
        clip(&parts.join("\n"), MAX_MESSAGE_CHARS)
    }

    /// Admission warnings: one per warned image and policy.
    pub fn warnings(&self) -> Vec<String> {
        self.judgements
            .iter()
            .filter(|j| j.action == Action::Warn)
            .map(|j| {
                clip(
                    &format!(
                        "image {} violates ImagePolicy {}: {}",
                        j.image,
                        j.policy,
                        j.reasons
                            .iter()
                            .take(3)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                    MAX_WARNING_CHARS,
                )
            })
            .collect()
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// The Pod spec inside an admitted object of `kind`, if the kind has one.
pub fn pod_spec<'a>(kind: &str, object: &'a Value) -> Option<&'a Value> {
    let spec = object.get("spec")?;
    match kind {
        "Pod" => Some(spec),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => spec.get("template")?.get("spec"),
        "CronJob" => spec
            .get("jobTemplate")?
            .get("spec")?
            .get("template")?
            .get("spec"),
        _ => None,
    }
}

/// The images of a Pod spec: containers, init containers and ephemeral containers.
pub fn images_of(spec: &Value) -> Vec<ContainerImage> {
    let mut out = Vec::new();
    for field in ["initContainers", "containers", "ephemeralContainers"] {
        let Some(list) = spec.get(field).and_then(Value::as_array) else {
            continue;
        };
        for c in list {
            out.push(ContainerImage {
                field,
                container: c
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                image: c
                    .get("image")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            });
        }
    }
    out
}

/// Whether `policy` covers Pods of `namespace`.
fn covers_namespace(
    policy: &ImagePolicy,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
    settings: &AdmissionSettings,
) -> bool {
    let excluded = policy
        .spec
        .match_
        .exclude_namespaces
        .as_ref()
        .unwrap_or(&settings.default_excluded);
    if excluded.iter().any(|n| n == namespace) {
        return false;
    }
    match &policy.spec.match_.namespace_selector {
        None => true,
        Some(selector) => match kube::core::Selector::try_from(selector.clone()) {
            Ok(selector) => selector.matches(labels.unwrap_or(&BTreeMap::new())),
            // An unusable selector covers everything: a typo must not open the cluster.
            Err(_) => true,
        },
    }
}

fn covers_image(policy: &ImagePolicy, image: &ImageReference) -> bool {
    let patterns = &policy.spec.match_.images;
    patterns.is_empty()
        || patterns
            .iter()
            .any(|p| super::pattern_matches(p, &image.name))
}

/// The verdict of `policy` on `image` for a Pod of `namespace`: the one recorded in the
/// result's status when it still holds, else computed from the cached objects; and
/// whether the image has no result at all. Only the
/// recorded verdicts judge a result's database version (they are computed by the
/// replica that loaded the current database).
pub fn verdict_for(
    policy: &ImagePolicy,
    image: &ImageReference,
    namespace: &str,
    lookup: &dyn Lookup,
    now: DateTime<Utc>,
) -> (Verdict, bool) {
    let result = lookup.result(image, namespace);
    let failure;
    let subject = match &result {
        Some(r) => Subject::Scanned(r),
        None => match lookup.scan_failure(image) {
            Some(why) => {
                failure = why;
                Subject::ScanFailed(&failure)
            }
            None => Subject::Unscanned,
        },
    };
    if let Some(recorded) = result
        .as_deref()
        .filter(|r| r.metadata.namespace.as_deref() == Some(namespace))
        .and_then(|r| recorded_verdict(policy, r, now))
    {
        return (recorded, false);
    }
    let unscanned = matches!(subject, Subject::Unscanned);
    let exceptions = lookup.exceptions(namespace);
    let exceptions: Vec<&VulnerabilityException> = exceptions.iter().map(Arc::as_ref).collect();
    let verdict = evaluate(
        &policy.spec,
        subject,
        &exceptions,
        Facts {
            now,
            database_version: None,
        },
    );
    (verdict, unscanned)
}

/// The verdict recorded in the result for this generation of the policy, while it holds.
fn recorded_verdict(
    policy: &ImagePolicy,
    result: &ImageScanResult,
    now: DateTime<Utc>,
) -> Option<Verdict> {
    let name = policy.metadata.name.as_deref()?;
    let entry = result
        .status
        .as_ref()?
        .policies
        .iter()
        .find(|p| p.policy == name)?;
    if Some(entry.generation) != policy.metadata.generation {
        return None;
    }
    let valid_until = entry.valid_until.as_ref().map(crate::to_chrono);
    if valid_until.is_some_and(|t| t <= now) {
        return None;
    }
    Some(Verdict {
        outcome: Outcome::parse(&entry.verdict)?,
        reasons: entry.reasons.clone(),
        valid_until,
    })
}

/// Judges the images of an object of `kind` in `namespace`: every image against every
/// policy that covers both. On update only images the old object did not run are
/// judged, so scaling or relabelling a running workload is never refused.
pub fn judge(
    kind: &str,
    namespace: &str,
    object: &Value,
    old_object: Option<&Value>,
    lookup: &dyn Lookup,
    settings: &AdmissionSettings,
    now: DateTime<Utc>,
) -> Decision {
    let Some(spec) = pod_spec(kind, object) else {
        return Decision::default();
    };
    let mut images = images_of(spec);
    if let Some(old) = old_object.and_then(|o| pod_spec(kind, o)) {
        let before: Vec<String> = images_of(old).into_iter().map(|c| c.image).collect();
        images.retain(|c| !before.contains(&c.image));
    }
    if images.len() > MAX_IMAGES {
        return Decision {
            judgements: Vec::new(),
            invalid: Some(format!(
                "the Pod spec names {} images; at most {MAX_IMAGES} are judged",
                images.len()
            )),
        };
    }
    let policies = lookup.policies();
    if policies.is_empty() {
        return Decision::default();
    }
    let labels = lookup.namespace_labels(namespace);
    let covering: Vec<&Arc<ImagePolicy>> = policies
        .iter()
        .filter(|p| covers_namespace(p, namespace, labels.as_ref(), settings))
        .collect();
    let mut decision = Decision::default();
    let mut seen = std::collections::HashSet::new();
    for c in images {
        if !seen.insert(c.image.clone()) {
            continue;
        }
        let reference = match ImageReference::parse(&c.image) {
            Ok(r) => r,
            Err(e) => {
                // Not an image the runtime could pull either; the API server's own
                // validation says so in more detail.
                if !covering.is_empty() {
                    decision.invalid = Some(format!(
                        "{}[{}] image {:?}: {e}",
                        c.field,
                        c.container,
                        clip(&c.image, 128)
                    ));
                }
                continue;
            }
        };
        for policy in covering.iter().filter(|p| covers_image(p, &reference)) {
            let (verdict, unscanned) = verdict_for(policy, &reference, namespace, lookup, now);
            decision.judgements.push(Judgement {
                policy: policy.metadata.name.clone().unwrap_or_default(),
                image: c.image.clone(),
                action: action(policy.spec.rules.mode, verdict.outcome),
                reasons: verdict.reasons,
                scan_wanted: unscanned && policy.spec.rules.scan_unscanned,
            });
        }
    }
    decision
}

/// The response to an AdmissionReview request.
pub fn respond(
    request: &AdmissionRequest<DynamicObject>,
    lookup: &dyn Lookup,
    settings: &AdmissionSettings,
    now: DateTime<Utc>,
) -> (AdmissionResponse, Decision) {
    let response = AdmissionResponse::from(request);
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return (response, Decision::default());
    }
    let Some(object) = request.object.as_ref() else {
        return (response, Decision::default());
    };
    let namespace = request
        .namespace
        .clone()
        .or_else(|| object.metadata.namespace.clone())
        .unwrap_or_default();
    let kind = request.kind.kind.as_str();
    let value = serde_json::to_value(object).unwrap_or(Value::Null);
    let old = request
        .old_object
        .as_ref()
        .and_then(|o| serde_json::to_value(o).ok());
    let decision = judge(
        kind,
        &namespace,
        &value,
        old.as_ref(),
        lookup,
        settings,
        now,
    );
    let mut response = if decision.allowed() {
        response
    } else {
        response.deny(decision.message())
    };
    let warnings = decision.warnings();
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    (response, decision)
}

/// Flags of the admission webhook.
#[derive(Clone, Debug, clap::Args)]
pub struct AdmissionArgs {
    /// Address of the validating admission webhook (`POST /validate`, HTTPS). Unset: no
    /// webhook (verdicts are still recorded in the ImageScanResults). Needs a certificate:
    /// `--admission-tls-cert-file`/`--admission-tls-key-file`, or `--admission-cert-secret`.
    #[arg(long, env = "IMAGEWARDEN_ADMISSION_ADDR")]
    pub admission_addr: Option<std::net::SocketAddr>,
    /// PEM certificate chain the webhook serves (read again when the file changes).
    #[arg(
        long,
        env = "IMAGEWARDEN_ADMISSION_TLS_CERT_FILE",
        requires = "admission_tls_key_file",
        conflicts_with = "admission_cert_secret"
    )]
    pub admission_tls_cert_file: Option<PathBuf>,
    /// PEM private key of that certificate.
    #[arg(
        long,
        env = "IMAGEWARDEN_ADMISSION_TLS_KEY_FILE",
        requires = "admission_tls_cert_file"
    )]
    pub admission_tls_key_file: Option<PathBuf>,
    /// The operator makes the webhook's CA and serving certificate itself and keeps them
    /// in this Secret of its namespace (created by whichever replica starts first, served
    /// by all, renewed by the leader).
    #[arg(long, env = "IMAGEWARDEN_ADMISSION_CERT_SECRET")]
    pub admission_cert_secret: Option<String>,
    /// DNS names of the operator-made serving certificate (comma-separated), e.g.
    /// `imagewarden-admission.imagewarden-system.svc`.
    #[arg(
        long,
        env = "IMAGEWARDEN_ADMISSION_CERT_DNS_NAMES",
        value_delimiter = ',',
        requires = "admission_cert_secret"
    )]
    pub admission_cert_dns_names: Vec<String>,
    /// IP addresses of the operator-made serving certificate (comma-separated), for a
    /// webhook registered by URL.
    #[arg(
        long,
        env = "IMAGEWARDEN_ADMISSION_CERT_IP_ADDRESSES",
        value_delimiter = ',',
        requires = "admission_cert_secret"
    )]
    pub admission_cert_ip_addresses: Vec<std::net::IpAddr>,
    /// Lifetime of the operator-made CA; a successor is introduced at 2/3 of it.
    #[arg(long, env = "IMAGEWARDEN_ADMISSION_CA_LIFETIME", value_parser = imagewarden_scanner::policy::parse_duration, default_value = "8760h")]
    pub admission_ca_lifetime: std::time::Duration,
    /// Lifetime of the operator-made serving certificate; renewed at 2/3 of it.
    #[arg(long, env = "IMAGEWARDEN_ADMISSION_CERT_LIFETIME", value_parser = imagewarden_scanner::policy::parse_duration, default_value = "2160h")]
    pub admission_cert_lifetime: std::time::Duration,
    /// ValidatingWebhookConfiguration whose `caBundle` the leader keeps equal to the
    /// operator-made CAs (with `--admission-cert-secret`).
    #[arg(
        long,
        env = "IMAGEWARDEN_ADMISSION_WEBHOOK_CONFIGURATION",
        requires = "admission_cert_secret"
    )]
    pub admission_webhook_configuration: Option<String>,
    /// How long the digest a tag was resolved to at admission is reused (`30s`; `0s`:
    /// ask the registry at every admission).
    #[arg(long, env = "IMAGEWARDEN_ADMISSION_TAG_CACHE", value_parser = tag_cache_ttl, default_value = "30s")]
    pub admission_tag_cache: std::time::Duration,
}

fn tag_cache_ttl(s: &str) -> Result<std::time::Duration, String> {
    let ttl = imagewarden_scanner::policy::parse_duration(s)?;
    if ttl > std::time::Duration::from_secs(3600) {
        return Err(format!(
            "{s:?}: at most 1h (a moved tag is judged by its old digest for this long)"
        ));
    }
    Ok(ttl)
}

/// Where the webhook's certificate comes from.
#[derive(Clone, Debug)]
pub enum AdmissionTls {
    /// PEM files (a mounted Secret that cert-manager or the chart writes), read again when
    /// they change.
    Files {
        cert_file: PathBuf,
        key_file: PathBuf,
    },
    /// Made, kept and renewed by the operator (see [`super::certs`]).
    Operator(super::certs::CertSettings),
}

/// Where and how the admission webhook is served.
#[derive(Clone, Debug)]
pub struct AdmissionServerConfig {
    pub addr: std::net::SocketAddr,
    pub tls: AdmissionTls,
    /// How long a resolved tag is reused.
    pub tag_cache: std::time::Duration,
    pub settings: AdmissionSettings,
}

impl AdmissionArgs {
    /// The server's configuration, when the webhook is on; the error says which flags
    /// are missing or wrong.
    pub fn server_config(
        &self,
        settings: AdmissionSettings,
    ) -> Result<Option<AdmissionServerConfig>, String> {
        let Some(addr) = self.admission_addr else {
            if self.admission_cert_secret.is_some() {
                return Err("--admission-cert-secret needs --admission-addr".into());
            }
            return Ok(None);
        };
        let tls = match (
            &self.admission_tls_cert_file,
            &self.admission_tls_key_file,
            &self.admission_cert_secret,
        ) {
            (Some(cert), Some(key), None) => AdmissionTls::Files {
                cert_file: cert.clone(),
                key_file: key.clone(),
            },
            (None, None, Some(secret)) => {
                let certs = super::certs::CertSettings {
                    secret: secret.clone(),
                    dns_names: self.admission_cert_dns_names.clone(),
                    ip_addresses: self.admission_cert_ip_addresses.clone(),
                    ca_lifetime: self.admission_ca_lifetime,
                    cert_lifetime: self.admission_cert_lifetime,
                    webhook_configuration: self.admission_webhook_configuration.clone(),
                };
                certs.validate()?;
                AdmissionTls::Operator(certs)
            }
            _ => return Err("--admission-addr needs a certificate: --admission-tls-cert-file and --admission-tls-key-file, or --admission-cert-secret".into()),
        };
        Ok(Some(AdmissionServerConfig {
            addr,
            tls,
            tag_cache: self.admission_tag_cache,
            settings,
        }))
    }
}

#[cfg(test)]
mod tests;
