//! Running one image scan: inline (in this process, with the scanner library) or as a
//! `batch/v1` Job that runs `imagewarden-operator scan-image`. Both end the same way: the
//! ImageScanResult for the digest is written through the API server.

use std::collections::BTreeMap;
use std::io::Write;

use imagewarden_scanner::checks::CheckOptions;
use imagewarden_scanner::matcher::match_inventory;
use imagewarden_scanner::source::{self, ImageRef, PullOptions, RegistryCredentials};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::Client;

use crate::config::JobSettings;
use crate::context::{LoadedDb, FIELD_MANAGER};
use crate::crd::{ImageScanResult, ImageScanResultSpec, ImageScanResultStatus};
use crate::registry::RegistryAccess;
use crate::result::{build_status, result_name, ScanOutcome};
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

/// Pulls and scans `target` with the scanner library, matching against `db`, with the file
/// and configuration checks of `checks` (its malware rules compiled once, at start-up).
pub async fn scan(
    target: &ScanTarget,
    access: &RegistryAccess,
    db: &LoadedDb,
    checks: &CheckOptions,
) -> Result<ImageScanResultStatus, Error> {
    // The scanner takes a CA file; keep it for the duration of the pull.
    let ca_file = match &access.ca_pem {
        Some(pem) => {
            let mut f = tempfile::NamedTempFile::new()
                .map_err(|e| Error::Scan(format!("writing CA file: {e}")))?;
            f.write_all(pem.as_bytes())
                .map_err(|e| Error::Scan(format!("writing CA file: {e}")))?;
            Some(f)
        }
        None => None,
    };
    let opts = PullOptions {
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
    let reference = ImageRef::Registry(target.reference());
    let mut analyzers = imagewarden_scanner::analyzer::default_analyzers();
    analyzers.extend(imagewarden_scanner::checks::file_analyzers(checks));
    let scanned = source::scan_with(&reference, &opts, analyzers)
        .await
        .map_err(|e| Error::Scan(e.to_string()))?;
    let matches =
        match_inventory(&scanned.inventory, &db.db).map_err(|e| Error::Scan(e.to_string()))?;
    let mut status = build_status(ScanOutcome {
        digest: &target.digest,
        inventory: &scanned.inventory,
        matches: &matches,
        extra: crate::result::check_findings(&imagewarden_scanner::checks::run(&scanned, checks)),
        database_version: &db.version,
    });
    status.scan_time = Some(crate::now());
    Ok(status)
}

/// Makes sure `namespace` has the scanner ServiceAccount and a RoleBinding granting it
/// the scanner ClusterRole (only what `scan-image` needs: writing ImageScanResults there).
/// Objects that exist are left as they are, so an administrator may manage them.
pub async fn ensure_scanner_identity(
    client: &Client,
    namespace: &str,
    settings: &JobSettings,
) -> Result<(), Error> {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
    use kube::api::PostParams;

    let labels = BTreeMap::from([(
        "app.kubernetes.io/managed-by".to_string(),
        "imagewarden-operator".to_string(),
    )]);
    let name = &settings.scanner_service_account;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    if accounts.get_opt(name).await?.is_none() {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.to_string()),
                labels: Some(labels.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        match accounts.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
    if bindings.get_opt(name).await?.is_none() {
        let rb = RoleBinding {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.to_string()),
                labels: Some(labels),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: settings.scanner_cluster_role.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: name.clone(),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            }]),
        };
        match bindings.create(&PostParams::default(), &rb).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
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
    let mut tags: Vec<String> = existing
        .as_ref()
        .map(|r| r.spec.tags.clone())
        .unwrap_or_default();
    for t in &target.tags {
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
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
            tags,
        },
    );
    object.metadata.owner_references = (!owners.is_empty()).then_some(owners);
    object.metadata.labels = Some(BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_string(),
            "imagewarden".to_string(),
        ),
        (
            "imagewarden.io/digest".to_string(),
            crate::result::short_digest(&target.digest),
        ),
    ]));
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

/// Name of the scanner Job for one image of one task: deterministic, so a restarted
/// operator finds the Job it created instead of creating another.
pub fn job_name(task_uid: &str, target: &ScanTarget) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("{task_uid}/{}", target.reference()).as_bytes());
    format!("iw-scan-{}", &hex::encode(h)[..16])
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

/// The scanner Job for one image of `task` (pure; the controller creates it).
pub fn build_job(
    settings: &JobSettings,
    namespace: &str,
    task_name: &str,
    owner: OwnerReference,
    target: &ScanTarget,
    registry: &JobRegistry,
) -> Job {
    let mut args = vec![
        "scan-image".to_string(),
        format!("--namespace={namespace}"),
        format!("--registry={}", target.registry),
        format!("--repository={}", target.repository),
        format!("--digest={}", target.digest),
        format!("--db={}", settings.job_db_path),
        format!("--owner-kind={}", owner.kind),
        format!("--owner-name={}", owner.name),
        format!("--owner-uid={}", owner.uid),
    ];
    for t in &target.tags {
        args.push(format!("--tag={t}"));
    }
    if registry.insecure {
        args.push("--insecure".to_string());
    }
    args.extend(registry.egress_args.iter().cloned());
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
    if let Some(configmap) = &settings.job_malware_rules_configmap {
        volumes.push(Volume {
            name: "malware-rules".into(),
            config_map: Some(k8s_openapi::api::core::v1::ConfigMapVolumeSource {
                name: configmap.clone(),
                // A namespace without the ConfigMap scans with the bundled rules.
                optional: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "malware-rules".into(),
            mount_path: JOB_MALWARE_RULES_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
        args.push(format!("--malware-rules={JOB_MALWARE_RULES_DIR}"));
    }
    if let Some(claim) = &settings.job_db_volume_claim {
        volumes.push(Volume {
            name: "db".into(),
            persistent_volume_claim: Some(
                k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone(),
                    read_only: Some(true),
                },
            ),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "db".into(),
            mount_path: settings.job_db_path.clone(),
            read_only: Some(true),
            ..Default::default()
        });
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
    let labels = job_labels(task_name, target);
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&owner.uid, target)),
            namespace: Some(namespace.to_string()),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(settings.job_backoff_limit),
            active_deadline_seconds: Some(settings.job_active_deadline_seconds),
            ttl_seconds_after_finished: Some(settings.job_ttl_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: Some(settings.scanner_service_account.clone()),
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
