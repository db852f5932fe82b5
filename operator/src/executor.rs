//! Running one image scan: inline (in this process, with the scanner library) or as a
//! `batch/v1` Job that runs `imagewarden-operator scan-image`. Both end the same way: the
//! ImageScanResult for the digest is written through the API server.

use std::collections::BTreeMap;
use std::io::Write;

use imagewarden_scanner::checks::CheckOptions;
use imagewarden_scanner::finding::ScannerKind;
use imagewarden_scanner::pipeline::{self, ScanOptions, ScanSource};
use imagewarden_scanner::source::{ImageRef, PullOptions, RegistryCredentials};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::Client;
use kube::ResourceExt;

use crate::config::JobSettings;
use crate::context::FIELD_MANAGER;
use crate::crd::{ImageScanResult, ImageScanResultSpec, ImageScanResultStatus, ScanRule};
use crate::db::LoadedDb;
use crate::registry::RegistryAccess;
use crate::result::{result_name, result_status};
use crate::Error;

/// Where scanner Jobs mount the malware rules ConfigMap.
pub const JOB_MALWARE_RULES_DIR: &str = "/etc/imagewarden/malware-rules";

/// One image to scan, by digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanTarget {
    /// `host[:port]`.
    pub registry: String,
    pub repository: String,
    pub digest: String,
    /// Tags known to point at the digest.
    pub tags: Vec<String>,
}

impl ScanTarget {
    /// `host/repository@digest`.
    pub fn reference(&self) -> String {
        format!("{}/{}@{}", self.registry, self.repository, self.digest)
    }

    /// Name of the ImageScanResult for this digest.
    pub fn result_name(&self) -> String {
        result_name(&self.registry, &self.repository, &self.digest)
    }
}

/// The scanner library's pull options for `access`, with the file holding its CA
/// certificates (the scanner takes a CA file): keep the file for the duration of the pull.
pub fn pull_options(
    access: &RegistryAccess,
) -> Result<(PullOptions, Option<tempfile::NamedTempFile>), Error> {
    let ca_file = match &access.ca_pem {
        Some(pem) => {
            let io = |source| Error::Io {
                what: "writing the registry CA file",
                source,
            };
            let mut f = tempfile::NamedTempFile::new().map_err(io)?;
            f.write_all(pem.as_bytes()).map_err(io)?;
            Some(f)
        }
        None => None,
    };
    let pull = PullOptions {
        credentials: RegistryCredentials {
            username: access.credentials.as_ref().map(|c| c.username.clone()),
            password: access.credentials.as_ref().map(|c| c.password.clone()),
            ..Default::default()
        },
        ca_file: ca_file.as_ref().map(|f| f.path().to_path_buf()),
        insecure: access.insecure,
        egress: Some(access.egress.clone()),
        ..Default::default()
    };
    Ok((pull, ca_file))
}

/// Pulls and scans `target` with the scanner library's pipeline, running `scanners` only:
/// matching against `db`, with the file checks' settings of `checks` (its malware rules
/// compiled once, at start-up). Returns the result's status.
pub async fn scan_target(
    target: &ScanTarget,
    access: &RegistryAccess,
    db: &LoadedDb,
    checks: &CheckOptions,
    scanners: &[ScannerKind],
    budgets: imagewarden_scanner::budget::ScanBudgets,
) -> Result<ImageScanResultStatus, Error> {
    let (pull, _ca_file) = pull_options(access)?;
    let mut options = ScanOptions {
        scanners: scanners.to_vec(),
        checks: checks.clone(),
        pull,
        filter: Default::default(),
    };
    options.pull = options.pull.with_budgets(budgets);
    let source = ScanSource::Image(ImageRef::Registry(target.reference()));
    let report = pipeline::scan(&source, Some(&db.db), &options).await?;
    let mut status = result_status(&report, &target.digest, &db.version);
    status.scan_time = Some(crate::now());
    Ok(status)
}

/// The scanners a rule asks for; images named by a task without a rule get all of them.
pub fn rule_scanners(rule: Option<&ScanRule>) -> Vec<ScannerKind> {
    match rule {
        Some(rule) => rule.spec.scanners.clone(),
        None => ScannerKind::ALL.to_vec(),
    }
}

/// The scanners of `wanted` that a result made by `ran` lacks.
pub fn missing_scanners(ran: &[ScannerKind], wanted: &[ScannerKind]) -> Vec<ScannerKind> {
    let mut missing: Vec<ScannerKind> = wanted
        .iter()
        .copied()
        .filter(|s| !ran.contains(s))
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

/// Whether a stored result answers a scan with `scanners` as it is: made by this scanner,
/// with the current database, by at least those scanners.
pub fn reusable(result: &StoredResult, scanners: &[ScannerKind], current_db: &str) -> bool {
    result.scanner_version.as_deref() == Some(imagewarden_scanner::SCANNER_VERSION)
        && result.database_version.as_deref() == Some(current_db)
        && missing_scanners(&result.scanners, scanners).is_empty()
}

/// Writes the ImageScanResult for `target` (spec, owner, labels, then status).
pub async fn store_result(
    client: &Client,
    namespace: &str,
    target: &ScanTarget,
    owner: Option<OwnerReference>,
    status: &ImageScanResultStatus,
) -> Result<String, Error> {
    let api: Api<ImageScanResult> = Api::namespaced(client.clone(), namespace);
    let name = target.result_name();
    let existing = api.get_opt(&name).await?;
    let tags_seen =
        crate::lifecycle::tags_for_write(existing.as_ref(), &target.digest, &target.tags);
    // The rule writing now; a write for a rule-less task keeps the rule that wrote before.
    let rule = owner
        .as_ref()
        .filter(|o| o.kind == "ScanRule")
        .map(|o| o.name.clone())
        .or_else(|| {
            existing
                .as_ref()
                .and_then(|r| r.labels().get(crate::result::RULE_LABEL).cloned())
        });
    let mut owners: Vec<OwnerReference> = existing
        .as_ref()
        .and_then(|r| r.metadata.owner_references.clone())
        .unwrap_or_default();
    if let Some(o) = owner {
        if !owners.iter().any(|x| x.uid == o.uid) {
            owners.push(o);
        }
    }
    let mut object = ImageScanResult::new(
        &name,
        ImageScanResultSpec {
            registry: target.registry.clone(),
            repository: target.repository.clone(),
            digest: target.digest.clone(),
            tags: crate::lifecycle::tags::tag_names(&tags_seen),
            tags_seen,
        },
    );
    object.metadata.owner_references = (!owners.is_empty()).then_some(owners);
    object.metadata.labels = Some(result_labels(
        &target.repository,
        &target.digest,
        rule.as_deref(),
        &status.summary,
    ));
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(&object)).await?;
    let status_patch = serde_json::json!({
        "apiVersion": "imagewarden.io/v1alpha1",
        "kind": "ImageScanResult",
        "status": status,
    });
    api.patch_status(&name, &params, &Patch::Apply(status_patch))
        .await?;
    Ok(name)
}

/// Labels of an ImageScanResult, for selection: `kubectl get scanresults -l
/// imagewarden.io/worst-severity=Critical`, `-l imagewarden.io/rule=team-a-releases`.
pub fn result_labels(
    repository: &str,
    digest: &str,
    rule: Option<&str>,
    summary: &crate::crd::ResultSummary,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_string(),
            "imagewarden".to_string(),
        ),
        (
            "imagewarden.io/digest".to_string(),
            crate::result::short_digest(digest),
        ),
        (
            crate::result::REPOSITORY_LABEL.to_string(),
            crate::result::repository_label_value(repository),
        ),
        (
            crate::result::WORST_SEVERITY_LABEL.to_string(),
            crate::result::worst_severity_label_value(summary).to_string(),
        ),
    ]);
    if let Some(rule) = rule {
        labels.insert(crate::result::RULE_LABEL.to_string(), rule.to_string());
    }
    labels
}

/// Labels of scanner Jobs.
pub fn job_labels(task: &str, target: &ScanTarget) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "imagewarden-scanner".to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "imagewarden".to_string(),
        ),
        ("imagewarden.io/task".to_string(), task.to_string()),
        (
            "imagewarden.io/digest".to_string(),
            crate::result::short_digest(&target.digest),
        ),
    ])
}

/// Name of the scanner Job for one attempt at one image of one task: deterministic, so a
/// restarted operator finds the Job it created instead of creating another.
pub fn job_name(task_uid: &str, target: &ScanTarget, attempt: u32) -> String {
    use sha2::Digest;
    let key = match attempt {
        0 | 1 => format!("{task_uid}/{}", target.reference()),
        n => format!("{task_uid}/{}#{n}", target.reference()),
    };
    let h = sha2::Sha256::digest(key.as_bytes());
    format!("iw-scan-{}", &hex::encode(h)[..16])
}

/// Annotation of scanner Jobs: the database version they were given.
pub const JOB_DATABASE_ANNOTATION: &str = "imagewarden.io/database-version";

/// The database a scanner Job downloads from the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobDatabase {
    /// Base URL of the operator's database endpoint, as Jobs reach it.
    pub base_url: String,
    /// Version (content digest) of the operator's database now.
    pub version: String,
    /// Size of the operator's index in bytes.
    pub size: u64,
}

impl JobDatabase {
    /// The `imagewarden-operator` arguments that download this database.
    pub fn args(&self) -> [String; 3] {
        [
            format!(
                "--db-url={}",
                crate::dbserve::db_url(&self.base_url, &self.version)
            ),
            format!("--db-version={}", self.version),
            format!(
                "--db-max-bytes={}",
                self.size + crate::dbserve::SIZE_HEADROOM
            ),
        ]
    }

    /// The database the operator uses now, at `base_url`.
    pub fn current(base_url: &str, db: &LoadedDb) -> Self {
        Self {
            base_url: base_url.to_string(),
            version: db.version.clone(),
            size: db.db.size() as u64,
        }
    }
}

/// Registry settings a scanner Job needs, as Secret references (mounted, never copied).
#[derive(Clone, Debug, Default)]
pub struct JobRegistry {
    pub insecure: bool,
    pub credentials_secret: Option<String>,
    pub ca_secret: Option<(String, String)>,
    /// The operator's egress settings as `scan-image` arguments.
    pub egress_args: Vec<String>,
}

/// Which task a scanner Job belongs to, where, and which of its attempts it is.
#[derive(Clone, Debug)]
pub struct JobOwner<'a> {
    pub namespace: &'a str,
    pub task_name: &'a str,
    /// The task, as the Job's controller.
    pub owner: OwnerReference,
    pub attempt: u32,
}

/// The scanner Job for one image of a task, running `scanners` (pure; the controller
/// creates it).
pub fn build_job(
    settings: &JobSettings,
    job: JobOwner<'_>,
    target: &ScanTarget,
    scanners: &[ScannerKind],
    registry: &JobRegistry,
    database: &JobDatabase,
) -> Job {
    let JobOwner {
        namespace,
        task_name,
        owner,
        attempt,
    } = job;
    let mut args = vec![
        "scan-image".to_string(),
        format!("--namespace={namespace}"),
        format!("--registry={}", target.registry),
        format!("--repository={}", target.repository),
        format!("--digest={}", target.digest),
    ];
    args.extend(database.args());
    args.extend([
        format!("--owner-kind={}", owner.kind),
        format!("--owner-name={}", owner.name),
        format!("--owner-uid={}", owner.uid),
        scanners_arg(scanners),
    ]);
    for t in &target.tags {
        args.push(format!("--tag={t}"));
    }
    let mut extra = Vec::new();
    if let Some(configmap) = &settings.job_malware_rules_configmap {
        extra.push((
            Volume {
                name: "malware-rules".into(),
                config_map: Some(k8s_openapi::api::core::v1::ConfigMapVolumeSource {
                    name: configmap.clone(),
                    // A namespace without the ConfigMap scans with the bundled rules.
                    optional: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            },
            VolumeMount {
                name: "malware-rules".into(),
                mount_path: JOB_MALWARE_RULES_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
        ));
        args.push(format!("--malware-rules={JOB_MALWARE_RULES_DIR}"));
    }
    hardened_job(
        settings,
        HardenedJob {
            name: job_name(&owner.uid, target, attempt),
            namespace: namespace.to_string(),
            labels: job_labels(task_name, target),
            database_version: database.version.clone(),
            owner,
            args,
            backoff_limit: settings.job_backoff_limit,
            // Without the database another Pod would fail the same way: fail the Job at
            // once, with the reason in its condition.
            fail_job_on: ExitCodes::In(vec![
                crate::dbserve::EXIT_DB_UNAVAILABLE,
                crate::dbserve::EXIT_DB_REJECTED,
            ]),
            extra_volumes: extra,
        },
        registry,
    )
}

/// Exit codes of the scanner container that fail its Job at once (no Pod retry), with
/// the code in the Job's `Failed` condition.
#[derive(Clone, Debug)]
pub enum ExitCodes {
    In(Vec<i32>),
    /// Every code but these.
    NotIn(Vec<i32>),
}

/// What one scanner Job (a scan or a fix) has of its own; the rest is the same hardened
/// Pod for both.
#[derive(Clone, Debug)]
pub struct HardenedJob {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// The database version it downloads ([`JOB_DATABASE_ANNOTATION`]).
    pub database_version: String,
    /// Its controller.
    pub owner: OwnerReference,
    /// `imagewarden-operator` arguments; the registry's are added.
    pub args: Vec<String>,
    pub backoff_limit: i32,
    pub fail_job_on: ExitCodes,
    pub extra_volumes: Vec<(Volume, VolumeMount)>,
}

/// A scanner Job (pure): `imagewarden-operator <args>` in the operator's image, as its
/// own ServiceAccount (named after the Job), non-root, read-only root file system, all
/// capabilities dropped, the runtime's seccomp profile, an emptyDir `/tmp`, the
/// registry's Secrets mounted read-only, the container's resources and the Job's
/// deadline and TTL from `settings`.
pub fn hardened_job(settings: &JobSettings, job: HardenedJob, registry: &JobRegistry) -> Job {
    let HardenedJob {
        name,
        namespace,
        labels,
        database_version,
        owner,
        mut args,
        backoff_limit,
        fail_job_on,
        extra_volumes,
    } = job;
    if registry.insecure {
        args.push("--insecure".to_string());
    }
    args.extend(registry.egress_args.iter().cloned());
    args.extend(settings.budgets.args());
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("64Mi".into())),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..Default::default()
    }];
    if let Some(secret) = &registry.credentials_secret {
        volumes.push(Volume {
            name: "registry-credentials".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "registry-credentials".into(),
            mount_path: "/var/run/imagewarden/registry-credentials".into(),
            read_only: Some(true),
            ..Default::default()
        });
        args.push("--credentials-dir=/var/run/imagewarden/registry-credentials".into());
    }
    if let Some((secret, key)) = &registry.ca_secret {
        volumes.push(Volume {
            name: "registry-ca".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "registry-ca".into(),
            mount_path: "/var/run/imagewarden/registry-ca".into(),
            read_only: Some(true),
            ..Default::default()
        });
        args.push(format!("--ca-file=/var/run/imagewarden/registry-ca/{key}"));
    }
    for (volume, mount) in extra_volumes {
        volumes.push(volume);
        mounts.push(mount);
    }
    let limits = BTreeMap::from([
        ("cpu".to_string(), Quantity(settings.job_cpu_limit.clone())),
        (
            "memory".to_string(),
            Quantity(settings.job_memory_limit.clone()),
        ),
    ]);
    let requests = BTreeMap::from([
        ("cpu".to_string(), Quantity("100m".into())),
        ("memory".to_string(), Quantity("128Mi".into())),
    ]);
    let (operator, values) = match fail_job_on {
        ExitCodes::In(v) => ("In", v),
        ExitCodes::NotIn(v) => ("NotIn", v),
    };
    Job {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace),
            labels: Some(labels.clone()),
            annotations: Some(BTreeMap::from([(
                JOB_DATABASE_ANNOTATION.to_string(),
                database_version,
            )])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(backoff_limit),
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![PodFailurePolicyRule {
                    action: "FailJob".into(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: Some("scanner".into()),
                        operator: operator.into(),
                        values,
                    }),
                    on_pod_conditions: None,
                }],
            }),
            active_deadline_seconds: Some(settings.job_active_deadline_seconds),
            ttl_seconds_after_finished: Some(settings.job_ttl_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    // The Job's own ServiceAccount: it may write its own object only
                    // (see crate::scanner_identity).
                    service_account_name: Some(name),
                    automount_service_account_token: Some(true),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        fs_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    containers: vec![Container {
                        name: "scanner".into(),
                        image: Some(settings.scanner_image.clone()),
                        command: Some(vec!["imagewarden-operator".into()]),
                        args: Some(args),
                        // The error the command ends with shows in the Pod's status.
                        termination_message_policy: Some("FallbackToLogsOnError".into()),
                        resources: Some(ResourceRequirements {
                            limits: Some(limits),
                            requests: Some(requests),
                            ..Default::default()
                        }),
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            read_only_root_filesystem: Some(true),
                            run_as_non_root: Some(true),
                            capabilities: Some(Capabilities {
                                drop: Some(vec!["ALL".into()]),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        volume_mounts: Some(mounts),
                        ..Default::default()
                    }],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The `--scanners` argument of `scan-image` (`--scanners=vuln,secret`).
pub fn scanners_arg(scanners: &[ScannerKind]) -> String {
    let names: Vec<&str> = scanners.iter().map(|s| s.cli_name()).collect();
    format!("--scanners={}", names.join(","))
}

/// A scanner Job as far as its outcome goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    Running,
    Succeeded,
    /// Failed after its Pod retries, or at once by its Pod failure policy (then with the
    /// container's exit code).
    Failed {
        exit_code: Option<i32>,
        message: String,
    },
}

/// The state of a Job from its status conditions.
pub fn job_state(job: &Job) -> JobState {
    let st = job.status.clone().unwrap_or_default();
    let conditions = st.conditions.unwrap_or_default();
    if let Some(c) = conditions
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")
    {
        let message = c
            .message
            .clone()
            .or_else(|| c.reason.clone())
            .unwrap_or_default();
        // The Job controller words a Pod failure policy match as "Container scanner for
        // pod ns/name failed with exit code 3 matching FailJob rule at index 0".
        let exit_code = (c.reason.as_deref() == Some("PodFailurePolicy"))
            .then(|| {
                message
                    .split_once("exit code ")
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
            })
            .flatten();
        return JobState::Failed { exit_code, message };
    }
    if st.succeeded.unwrap_or(0) > 0
        || conditions
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
    {
        return JobState::Succeeded;
    }
    JobState::Running
}

pub use crate::result::StoredResult;

/// What to do with an image whose scan ran (or runs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanVerdict {
    /// Still running.
    Wait,
    /// The result was made by this scanner with the current database.
    Completed,
    /// The result was made with database `scanned_with`: re-match its stored inventory
    /// with the current database.
    Rematch { scanned_with: String },
    /// Scan again (a new attempt), telling why.
    Rescan(String),
    /// Give up, telling why.
    Failed(String),
}

impl ScanVerdict {
    /// A rescan when attempts remain, else a failure with the same reason.
    pub fn bounded(self, attempts: u32, max_attempts: u32) -> Self {
        match self {
            ScanVerdict::Rescan(why) if attempts >= max_attempts => ScanVerdict::Failed(why),
            other => other,
        }
    }
}

/// Judges the result a finished scan (`scan`, e.g. "scanner Job iw-scan-…") wrote as
/// `result_name`, against the current database and the scanners the rule wants.
pub fn judge_result(
    scan: &str,
    result_name: &str,
    result: Option<&StoredResult>,
    wanted: &[ScannerKind],
    current_db: &str,
) -> ScanVerdict {
    let Some(result) = result else {
        return ScanVerdict::Rescan(format!(
            "{scan} finished without writing result {result_name}; rescanning"
        ));
    };
    let scanner = result.scanner_version.as_deref().unwrap_or("unknown");
    if scanner != imagewarden_scanner::SCANNER_VERSION {
        // Another scan would run the same scanner again.
        return ScanVerdict::Failed(format!(
            "{scan} ran scanner {scanner}, the operator runs {}: scanner Jobs must use the operator's image",
            imagewarden_scanner::SCANNER_VERSION
        ));
    }
    let missing = missing_scanners(&result.scanners, wanted);
    if !missing.is_empty() {
        // Another scan of the digest, for a rule with other scanners, wrote it last.
        let names: Vec<&str> = missing.iter().map(|s| s.cli_name()).collect();
        return ScanVerdict::Rescan(format!(
            "result {result_name} was made without the {} scanner(s) the rule asks for; rescanning",
            names.join(", ")
        ));
    }
    let scanned_with = result.database_version.as_deref().unwrap_or("unknown");
    if scanned_with == current_db {
        ScanVerdict::Completed
    } else if result.has_inventory {
        ScanVerdict::Rematch {
            scanned_with: scanned_with.to_string(),
        }
    } else {
        ScanVerdict::Rescan(rescan_message(scanned_with, current_db))
    }
}

/// The message of an image whose result was made with another database and is scanned again.
pub fn rescan_message(scanned_with: &str, current_db: &str) -> String {
    format!("scanned with database {scanned_with}, current is {current_db}; rescanning")
}

/// Judges a scanner Job: `job_db` is the database version it was given, `wanted` the
/// scanners it ran.
pub fn judge_job(
    job_name: &str,
    job_db: Option<&str>,
    state: &JobState,
    result_name: &str,
    result: Option<&StoredResult>,
    wanted: &[ScannerKind],
    current_db: &str,
) -> ScanVerdict {
    let scan = format!("scanner Job {job_name}");
    match state {
        JobState::Running => ScanVerdict::Wait,
        JobState::Succeeded => judge_result(&scan, result_name, result, wanted, current_db),
        JobState::Failed {
            exit_code: Some(code),
            ..
        } if *code == crate::dbserve::EXIT_DB_UNAVAILABLE
            || *code == crate::dbserve::EXIT_DB_REJECTED =>
        {
            let wanted = job_db.unwrap_or("unknown");
            if job_db.is_some_and(|v| v != current_db) {
                return ScanVerdict::Rescan(format!(
                    "{scan} could not get database {wanted}, current is {current_db}; rescanning"
                ));
            }
            let what = if *code == crate::dbserve::EXIT_DB_UNAVAILABLE {
                "could not download"
            } else {
                "rejected the download of"
            };
            ScanVerdict::Rescan(format!(
                "{scan} {what} the vulnerability database {wanted} from the operator (exit code {code}; the scanner Pod's log says why)"
            ))
        }
        JobState::Failed { message, .. } => {
            ScanVerdict::Failed(format!("{scan} failed: {message}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const NEW: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn stored(db: &str, inventory: bool) -> StoredResult {
        StoredResult {
            scanner_version: Some(imagewarden_scanner::SCANNER_VERSION.into()),
            database_version: Some(db.into()),
            has_inventory: inventory,
            scanners: ScannerKind::ALL.to_vec(),
        }
    }

    fn failed_job(reason: &str, message: &str) -> Job {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "iw-scan-x"},
            "status": {"failed": 1, "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": reason, "message": message},
                {"type": "Failed", "status": "True", "reason": reason, "message": message},
            ]},
        }))
        .unwrap()
    }

    #[test]
    fn job_state_reads_the_exit_code_of_a_pod_failure_policy_match() {
        let job = failed_job(
            "PodFailurePolicy",
            "Container scanner for pod team-a/iw-scan-x-abcde failed with exit code 3 matching FailJob rule at index 0",
        );
        assert!(matches!(
            job_state(&job),
            JobState::Failed {
                exit_code: Some(3),
                ..
            }
        ));
        let job = failed_job(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        );
        assert_eq!(
            job_state(&job),
            JobState::Failed {
                exit_code: None,
                message: "Job has reached the specified backoff limit".into()
            }
        );
        let done: Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j"},
            "status": {"succeeded": 1},
        }))
        .unwrap();
        assert_eq!(job_state(&done), JobState::Succeeded);
        let running: Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j"}, "status": {"active": 1},
        }))
        .unwrap();
        assert_eq!(job_state(&running), JobState::Running);
    }

    #[test]
    fn a_result_made_with_another_database_is_rematched_not_discarded() {
        let verdict = judge_job(
            "iw-scan-x",
            Some(OLD),
            &JobState::Succeeded,
            "r",
            Some(&stored(OLD, true)),
            &ScannerKind::ALL,
            NEW,
        );
        assert_eq!(
            verdict,
            ScanVerdict::Rematch {
                scanned_with: OLD.into()
            }
        );
        assert_eq!(
            judge_job(
                "j",
                Some(NEW),
                &JobState::Succeeded,
                "r",
                Some(&stored(NEW, true)),
                &ScannerKind::ALL,
                NEW,
            ),
            ScanVerdict::Completed
        );
    }

    #[test]
    fn without_an_inventory_the_image_is_rescanned_with_the_reason() {
        let verdict = judge_job(
            "iw-scan-x",
            Some(OLD),
            &JobState::Succeeded,
            "r",
            Some(&stored(OLD, false)),
            &ScannerKind::ALL,
            NEW,
        );
        assert_eq!(
            verdict,
            ScanVerdict::Rescan(format!(
                "scanned with database {OLD}, current is {NEW}; rescanning"
            ))
        );
        // Out of attempts: the same reason, as a failure.
        assert_eq!(
            verdict.clone().bounded(3, 3),
            ScanVerdict::Failed(format!(
                "scanned with database {OLD}, current is {NEW}; rescanning"
            ))
        );
        assert_eq!(verdict.clone().bounded(1, 3), verdict);
    }

    #[test]
    fn a_missing_result_or_another_scanner_says_so() {
        let missing = judge_job(
            "iw-scan-x",
            Some(NEW),
            &JobState::Succeeded,
            "res-1",
            None,
            &ScannerKind::ALL,
            NEW,
        );
        assert_eq!(
            missing,
            ScanVerdict::Rescan(
                "scanner Job iw-scan-x finished without writing result res-1; rescanning".into()
            )
        );
        let other = StoredResult {
            scanner_version: Some("0.0.1-other".into()),
            ..stored(NEW, true)
        };
        let ScanVerdict::Failed(why) = judge_job(
            "iw-scan-x",
            Some(NEW),
            &JobState::Succeeded,
            "r",
            Some(&other),
            &ScannerKind::ALL,
            NEW,
        ) else {
            panic!("another scanner's result is a failure");
        };
        assert!(why.contains("ran scanner 0.0.1-other"), "{why}");
    }

    #[test]
    fn a_job_without_the_database_is_retried_or_fails_with_a_clear_message() {
        let unavailable = JobState::Failed {
            exit_code: Some(crate::dbserve::EXIT_DB_UNAVAILABLE),
            message: "…".into(),
        };
        // Its database was replaced by a refresh: a new Job gets the current one.
        assert_eq!(
            judge_job(
                "iw-scan-x",
                Some(OLD),
                &unavailable,
                "r",
                None,
                &ScannerKind::ALL,
                NEW
            ),
            ScanVerdict::Rescan(format!(
                "scanner Job iw-scan-x could not get database {OLD}, current is {NEW}; rescanning"
            ))
        );
        let ScanVerdict::Rescan(why) = judge_job(
            "iw-scan-x",
            Some(NEW),
            &unavailable,
            "r",
            None,
            &ScannerKind::ALL,
            NEW,
        ) else {
            panic!("retried");
        };
        assert!(
            why.starts_with(&format!(
                "scanner Job iw-scan-x could not download the vulnerability database {NEW} from the operator"
            )),
            "{why}"
        );
        let rejected = JobState::Failed {
            exit_code: Some(crate::dbserve::EXIT_DB_REJECTED),
            message: "…".into(),
        };
        let ScanVerdict::Rescan(why) =
            judge_job("j", Some(NEW), &rejected, "r", None, &ScannerKind::ALL, NEW)
        else {
            panic!("retried");
        };
        assert!(why.contains("rejected the download of"), "{why}");
        // Other failures keep the Job's own reason.
        let other = JobState::Failed {
            exit_code: Some(1),
            message: "Job has reached the specified backoff limit".into(),
        };
        assert_eq!(
            judge_job("j", Some(NEW), &other, "r", None, &ScannerKind::ALL, NEW),
            ScanVerdict::Failed(
                "scanner Job j failed: Job has reached the specified backoff limit".into()
            )
        );
        assert_eq!(
            judge_job(
                "j",
                Some(NEW),
                &JobState::Running,
                "r",
                None,
                &ScannerKind::ALL,
                NEW
            ),
            ScanVerdict::Wait
        );
    }

    #[test]
    fn a_scanner_job_downloads_the_operators_database_and_fails_fast_without_it() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            settings: JobSettings,
        }
        let settings = Cli::try_parse_from(["x"]).unwrap().settings;
        let target = ScanTarget {
            registry: "r:5000".into(),
            repository: "team-a/app".into(),
            digest: "sha256:ab".into(),
            tags: vec!["v1".into()],
        };
        let owner = OwnerReference {
            api_version: "imagewarden.io/v1alpha1".into(),
            kind: "ScanTask".into(),
            name: "t".into(),
            uid: "uid-1".into(),
            ..Default::default()
        };
        let database = JobDatabase {
            base_url: "http://10.96.0.7:8081".into(),
            version: NEW.into(),
            size: 5000,
        };
        let job = build_job(
            &settings,
            JobOwner {
                namespace: "team-a",
                task_name: "t",
                owner,
                attempt: 2,
            },
            &target,
            &[ScannerKind::Secret, ScannerKind::Vulnerability],
            &JobRegistry::default(),
            &database,
        );
        assert_eq!(job.metadata.name, Some(job_name("uid-1", &target, 2)));
        assert_eq!(
            job.metadata.annotations.unwrap()[JOB_DATABASE_ANNOTATION],
            NEW
        );
        let spec = job.spec.unwrap();
        let rule = &spec.pod_failure_policy.unwrap().rules[0];
        assert_eq!(rule.action, "FailJob");
        let codes = rule.on_exit_codes.as_ref().unwrap();
        assert_eq!(codes.container_name.as_deref(), Some("scanner"));
        assert_eq!(codes.values, [3, 4]);
        let pod = spec.template.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.name, "scanner");
        let args = c.args.clone().unwrap();
        for want in [
            format!("--db-url=http://10.96.0.7:8081/db/{NEW}"),
            format!("--db-version={NEW}"),
            format!("--db-max-bytes={}", 5000 + crate::dbserve::SIZE_HEADROOM),
        ] {
            assert!(args.contains(&want), "{want} not in {args:?}");
        }
        assert!(!args.iter().any(|a| a.starts_with("--db=")), "{args:?}");
        // Only the rule's scanners run, named as `scan-image` reads them.
        assert!(
            args.contains(&"--scanners=secret,vuln".to_string()),
            "{args:?}"
        );
        // Nothing but /tmp is mounted: the database is not a volume.
        assert_eq!(pod.volumes.unwrap().len(), 1);
        assert_eq!(
            c.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
    }

    #[test]
    fn a_result_made_without_a_scanner_the_rule_wants_is_scanned_again() {
        let baseline_only = StoredResult {
            scanners: vec![ScannerKind::Baseline],
            ..stored(NEW, true)
        };
        let wanted = [
            ScannerKind::Vulnerability,
            ScannerKind::Baseline,
            ScannerKind::Malware,
        ];
        assert_eq!(
            judge_result("the scan", "r", Some(&baseline_only), &wanted, NEW),
            ScanVerdict::Rescan(
                "result r was made without the vuln, malware scanner(s) the rule asks for; rescanning"
                    .into()
            )
        );
        // A result of more scanners than the rule wants answers it.
        assert_eq!(
            judge_result(
                "the scan",
                "r",
                Some(&stored(NEW, true)),
                &[ScannerKind::Secret],
                NEW
            ),
            ScanVerdict::Completed
        );
    }

    #[test]
    fn only_a_result_of_the_current_database_and_the_rules_scanners_is_reused() {
        let status = ImageScanResultStatus {
            scanner_version: Some(imagewarden_scanner::SCANNER_VERSION.into()),
            database_version: Some(NEW.into()),
            scanners: vec![ScannerKind::Baseline, ScannerKind::Secret],
            ..Default::default()
        };
        let stored = StoredResult::of_status(&status);
        assert!(reusable(&stored, &[ScannerKind::Secret], NEW));
        assert!(!reusable(&stored, &[ScannerKind::Secret], OLD));
        assert!(!reusable(&stored, &[ScannerKind::Malware], NEW));
        // Results written before scanners were recorded ran them all.
        let legacy = ImageScanResultStatus {
            scanners: Vec::new(),
            ..status
        };
        assert!(reusable(
            &StoredResult::of_status(&legacy),
            &ScannerKind::ALL,
            NEW
        ));
        assert_eq!(rule_scanners(None), ScannerKind::ALL);
    }

    #[test]
    fn each_attempt_has_its_own_job_name_and_the_first_keeps_the_old_one() {
        let t = ScanTarget {
            registry: "r:5000".into(),
            repository: "a".into(),
            digest: "sha256:ab".into(),
            tags: vec![],
        };
        assert_eq!(job_name("u", &t, 0), job_name("u", &t, 1));
        assert_ne!(job_name("u", &t, 1), job_name("u", &t, 2));
        assert_ne!(job_name("u", &t, 2), job_name("u", &t, 3));
        assert!(job_name("u", &t, 2).starts_with("iw-scan-"));
        assert_eq!(job_name("u", &t, 2).len(), "iw-scan-".len() + 16);
    }
}
