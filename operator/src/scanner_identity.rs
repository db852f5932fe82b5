//! Each scanner Job runs as its own ServiceAccount, bound to a Role that lets it write the
//! ImageScanResult of its image and nothing else: a compromised scanner Pod (it parses
//! hostile images) cannot change another image's result. The three objects are named after
//! the Job and owned by it, so Kubernetes deletes them with the Job.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};

use crate::Error;

/// The ServiceAccount, Role and RoleBinding of one scanner Job (all named after the Job).
#[derive(Clone, Debug, PartialEq)]
pub struct ScannerIdentity {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub binding: RoleBinding,
}

/// What the identity of scanner Job `job_name` in `namespace` is (pure): the Role grants
/// `get`, `create` and `patch` of ImageScanResult `result_name` and `patch` of its status,
/// by name (an apply that creates the object is authorized as `create` of that name).
pub fn scanner_identity(namespace: &str, job_name: &str, result_name: &str) -> ScannerIdentity {
    job_identity(
        namespace,
        job_name,
        vec![
            named_rule("imagescanresults", result_name, &["get", "create", "patch"]),
            named_rule("imagescanresults/status", result_name, &["patch"]),
        ],
    )
}

/// What the identity of fix Job `job_name` in `namespace` is (pure): the Role grants
/// `get` of ImageFix `fix_name` (the spec it runs) and `patch` of its status, by name.
pub fn fix_identity(namespace: &str, job_name: &str, fix_name: &str) -> ScannerIdentity {
    job_identity(
        namespace,
        job_name,
        vec![
            named_rule("imagefixes", fix_name, &["get"]),
            named_rule("imagefixes/status", fix_name, &["patch"]),
        ],
    )
}

/// `verbs` on one imagewarden.io object, by name.
fn named_rule(resource: &str, name: &str, verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec!["imagewarden.io".into()]),
        resources: Some(vec![resource.into()]),
        resource_names: Some(vec![name.to_string()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

/// A ServiceAccount, a Role with `rules` and their RoleBinding, all named after Job
/// `job_name`.
fn job_identity(namespace: &str, job_name: &str, rules: Vec<PolicyRule>) -> ScannerIdentity {
    let meta = ObjectMeta {
        name: Some(job_name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(BTreeMap::from([
            (
                "app.kubernetes.io/managed-by".to_string(),
                "imagewarden-operator".to_string(),
            ),
            (
                "app.kubernetes.io/name".to_string(),
                "imagewarden-scanner".to_string(),
            ),
        ])),
        ..Default::default()
    };
    ScannerIdentity {
        service_account: ServiceAccount {
            metadata: meta.clone(),
            ..Default::default()
        },
        role: Role {
            metadata: meta.clone(),
            rules: Some(rules),
        },
        binding: RoleBinding {
            metadata: meta,
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: job_name.to_string(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: job_name.to_string(),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            }]),
        },
    }
}

async fn create_if_missing<K>(api: &Api<K>, object: &K) -> Result<(), Error>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates scanner Job `job` with its own identity: the identity first (a Pod is only
/// admitted once its ServiceAccount exists), then the Job, then the Job becomes the
/// identity's owner. A Job that exists already is left as it is.
pub async fn create_scanner_job(
    client: &Client,
    job: &Job,
    result_name: &str,
) -> Result<(), Error> {
    let identity = scanner_identity(
        &job.namespace().unwrap_or_default(),
        &job.name_any(),
        result_name,
    );
    create_job_with_identity(client, job, &identity).await
}

/// Creates Job `job` with `identity` (see [`create_scanner_job`]).
pub async fn create_job_with_identity(
    client: &Client,
    job: &Job,
    identity: &ScannerIdentity,
) -> Result<(), Error> {
    let namespace = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let roles: Api<Role> = Api::namespaced(client.clone(), &namespace);
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &namespace);
    create_if_missing(&accounts, &identity.service_account).await?;
    create_if_missing(&roles, &identity.role).await?;
    create_if_missing(&bindings, &identity.binding).await?;

    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let created = match jobs.create(&PostParams::default(), job).await {
        Ok(created) => created,
        Err(kube::Error::Api(e)) if e.code == 409 => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let owner = OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: name.clone(),
        uid: created.uid().unwrap_or_default(),
        controller: Some(false),
        block_owner_deletion: Some(false),
    };
    let adopt = serde_json::json!({"metadata": {"ownerReferences": [owner]}});
    let params = PatchParams::default();
    accounts
        .patch(&name, &params, &Patch::Merge(&adopt))
        .await?;
    roles.patch(&name, &params, &Patch::Merge(&adopt)).await?;
    bindings
        .patch(&name, &params, &Patch::Merge(&adopt))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_names_only_the_jobs_result() {
        let id = scanner_identity("team-a", "iw-scan-0123", "reg-app-abc");
        assert_eq!(
            id.service_account.metadata.name.as_deref(),
            Some("iw-scan-0123")
        );
        let rules = id.role.rules.unwrap();
        assert_eq!(rules.len(), 2);
        for rule in &rules {
            assert_eq!(
                rule.resource_names.as_deref(),
                Some(&["reg-app-abc".to_string()][..])
            );
            assert!(!rule
                .verbs
                .iter()
                .any(|v| v == "list" || v == "watch" || v == "delete" || v == "*"));
        }
        assert_eq!(id.binding.role_ref.kind, "Role");
        let subject = &id.binding.subjects.unwrap()[0];
        assert_eq!(
            (subject.name.as_str(), subject.namespace.as_deref()),
            ("iw-scan-0123", Some("team-a"))
        );
    }
}
