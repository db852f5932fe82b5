//! `imagewarden-operator check`: what `helm test` runs against an installed release. The
//! operator answers `/readyz`, and every imagewarden CRD is installed and Established.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::ResourceExt;

/// Time the `/readyz` request may take.
const READYZ_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `crd` is Established; the error says what is wrong (pure).
pub fn established(crd: &CustomResourceDefinition) -> Result<(), String> {
    let conditions = crd
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    match conditions.iter().find(|c| c.type_ == "Established") {
        Some(c) if c.status == "True" => Ok(()),
        Some(c) => Err(format!(
            "CRD {} is not Established: {}",
            crd.name_any(),
            c.message.as_deref().unwrap_or(&c.status)
        )),
        None => Err(format!("CRD {} is not Established yet", crd.name_any())),
    }
}

/// Checks the operator's `/readyz` at `readyz_url` and reads every imagewarden CRD by
/// name. Returns one line per check that passed; the first failure is the error.
pub async fn check(client: kube::Client, readyz_url: &str) -> Result<Vec<String>, String> {
    let mut passed = Vec::new();
    let http = reqwest::Client::builder()
        .timeout(READYZ_TIMEOUT)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let response = http
        .get(readyz_url)
        .send()
        .await
        .map_err(|e| format!("GET {readyz_url}: {e}"))?;
    let status = response.status();
    let body: String = response
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    if !status.is_success() {
        return Err(format!(
            "the operator is not ready: GET {readyz_url} answered {status}: {}",
            body.trim()
        ));
    }
    passed.push(format!("GET {readyz_url}: {status}"));
    let api: Api<CustomResourceDefinition> = Api::all(client);
    for crd in crate::crd::all() {
        let name = crd.name_any();
        let found = api
            .get(&name)
            .await
            .map_err(|e| format!("reading CRD {name}: {e}"))?;
        established(&found)?;
        passed.push(format!("CRD {name}: Established"));
    }
    Ok(passed)
}
