//! Vulnerability database refresh: reload the configured source, and when its content
//! changed, re-match every stored inventory without pulling images again, update the
//! results, and start a `DatabaseUpdate` task for each rule whose images gained findings
//! (its notifications then report what is new).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use imagewarden_scanner::matcher::match_inventory;
use imagewarden_scanner::vulndb::Db;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use tracing::{info, warn};

use crate::context::{Context, LoadedDb, FIELD_MANAGER};
use crate::controller::notify::NEW_FINDINGS_ANNOTATION;
use crate::controller::scan_rule::{start_task, task_name};
use crate::crd::{FindingClass, ImageScanResult, ScanRule, TaskTrigger};
use crate::result::{build_status, decode_inventory, ScanOutcome};
use crate::Error;

/// Loads the database from its configured sources (blocking work off the runtime).
pub async fn load(sources: Vec<String>) -> anyhow::Result<LoadedDb> {
    let db = tokio::task::spawn_blocking(move || Db::load(&sources)).await??;
    warn_if_sample(&db);
    Ok(LoadedDb::new(db))
}

/// Loads the operator's database: the `--db` sources, or else the official sources kept
/// in the cache (downloaded when they changed; a failed download keeps the cached index).
pub async fn load_configured(config: &crate::config::OperatorConfig) -> anyhow::Result<LoadedDb> {
    if !config.db.is_empty() {
        return load(config.db.clone()).await;
    }
    use imagewarden_scanner::vulndb::update;
    let opts = config.official_db.options();
    let index = update::index_path(&opts.cache_dir);
    match update::update(&opts).await {
        Ok(summary) => info!(
            downloaded = summary.downloaded.len(),
            unchanged = summary.unchanged.len(),
            missing = summary.missing.len(),
            bytes = summary.bytes,
            rebuilt = summary.rebuilt,
            "official vulnerability sources checked"
        ),
        Err(e) if index.is_file() => {
            warn!(error = %format!("{e:#}"), "updating the official vulnerability sources failed; the cached database stays in use")
        }
        Err(e) => {
            return Err(e.context(format!(
                "downloading the official vulnerability sources ({}, {}) into {}; without network access name a database with --db (an index, or oci:// as pushed by `imagewarden db push`)",
                opts.osv_url,
                opts.nvd_url,
                opts.cache_dir.display()
            )))
        }
    }
    let db = tokio::task::spawn_blocking(move || Db::open_index(&index)).await??;
    Ok(LoadedDb::new(db))
}

fn warn_if_sample(db: &Db) {
    if db.info().sample {
        warn!(
            origin = db.origin(),
            "the vulnerability database is a sample compiled from test records: it finds almost nothing in real images; name real sources (--db, chart value db.sources) or leave them out for the official ones"
        );
    }
}

/// Identity of a vulnerability finding across database versions.
fn finding_keys(status: &crate::crd::ImageScanResultStatus) -> BTreeSet<(String, Option<String>)> {
    status
        .findings
        .iter()
        .map(|f| (f.id.clone(), f.package.clone()))
        .collect()
}

/// Re-matches the stored inventory of `result` against `db`; returns the new status and
/// how many findings are new.
pub fn rematch(
    result: &ImageScanResult,
    db: &LoadedDb,
) -> Result<Option<(crate::crd::ImageScanResultStatus, Vec<String>)>, Error> {
    let Some(old) = result.status.clone() else {
        return Ok(None);
    };
    let Some(encoded) = old.inventory.as_deref() else {
        return Ok(None);
    };
    let inventory = decode_inventory(encoded)
        .map_err(|e| Error::Scan(format!("stored inventory of {}: {e}", result.name_any())))?;
    let matches = match_inventory(&inventory, &db.db).map_err(|e| Error::Scan(e.to_string()))?;
    // Findings that do not come from the database stay as they were.
    let extra = old
        .findings
        .iter()
        .filter(|f| {
            f.class == FindingClass::BaselineRisk
                || (f.class == FindingClass::MaliciousSample && f.package.is_none())
        })
        .cloned()
        .collect();
    let mut status = build_status(ScanOutcome {
        digest: &result.spec.digest,
        inventory: &inventory,
        matches: &matches,
        extra,
        database_version: &db.version,
    });
    status.scan_time = old.scan_time.clone();
    status.conditions = old.conditions.clone();
    let before = finding_keys(&old);
    let mut new: Vec<String> = finding_keys(&status)
        .difference(&before)
        .map(|(id, _)| id.clone())
        .collect();
    new.dedup();
    Ok(Some((status, new)))
}

/// Reloads the database; when it changed, re-matches stored results and starts tasks
/// for the rules whose images have new findings.
pub async fn refresh(ctx: Arc<Context>) -> anyhow::Result<()> {
    let loaded = load_configured(&ctx.config).await?;
    if loaded.version == ctx.db().version {
        return Ok(());
    }
    info!(version = %loaded.version, "vulnerability database changed");
    let loaded = Arc::new(loaded);
    *ctx.db.write().expect("db lock") = loaded.clone();

    let all: Api<ImageScanResult> = Api::all(ctx.client.clone());
    // (namespace, rule) -> images with new findings
    let mut touched: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for result in all.list(&ListParams::default()).await? {
        let ns = result.namespace().unwrap_or_default();
        let (status, new) = match rematch(&result, &loaded) {
            Ok(Some(x)) => x,
            Ok(None) => continue,
            Err(e) => {
                warn!(result = %result.name_any(), error = %e, "re-matching failed; the image will be rescanned on its next task");
                continue;
            }
        };
        let api: Api<ImageScanResult> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({
            "apiVersion": "imagewarden.io/v1alpha1",
            "kind": "ImageScanResult",
            "status": status,
        });
        api.patch_status(
            &result.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
        if new.is_empty() {
            continue;
        }
        // Bounded: the annotation names at most 200 new ids.
        let ids: Vec<&str> = new.iter().take(200).map(String::as_str).collect();
        let annotate = serde_json::json!({"metadata": {"annotations": {NEW_FINDINGS_ANNOTATION: ids.join(",")}}});
        api.patch(
            &result.name_any(),
            &PatchParams::default(),
            &Patch::Merge(annotate),
        )
        .await?;
        for owner in result
            .owner_references()
            .iter()
            .filter(|o| o.kind == "ScanRule")
        {
            touched
                .entry((ns.clone(), owner.name.clone()))
                .or_default()
                .push(format!(
                    "{}/{}@{}",
                    result.spec.registry, result.spec.repository, result.spec.digest
                ));
        }
    }
    let version_tag: String = loaded
        .version
        .trim_start_matches("sha256:")
        .chars()
        .take(10)
        .collect();
    for ((ns, rule_name), images) in touched {
        let Some(rule) = Api::<ScanRule>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&rule_name)
            .await?
        else {
            continue;
        };
        let name = task_name(&rule_name, "dbupdate", &version_tag);
        start_task(&ctx, &rule, &name, TaskTrigger::DatabaseUpdate, images).await?;
    }
    Ok(())
}
