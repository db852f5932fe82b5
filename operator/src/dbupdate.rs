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
/// http(s) and oci:// sources are fetched only where `egress` allows.
pub async fn load(
    sources: Vec<String>,
    egress: Arc<imagewarden_scanner::egress::EgressPolicy>,
) -> anyhow::Result<LoadedDb> {
    let db = tokio::task::spawn_blocking(move || Db::load_with(&sources, egress)).await??;
    warn_if_sample(&db);
    Ok(LoadedDb::new(db))
}

/// Loads the operator's database: the `--db` sources, or else the official sources kept
/// in the cache (downloaded when they changed; a failed download keeps the cached index).
pub async fn load_configured(config: &crate::config::OperatorConfig) -> anyhow::Result<LoadedDb> {
    if !config.db.is_empty() {
        return load(config.db.clone(), config.egress.policy()).await;
    }
    use imagewarden_scanner::vulndb::update;
    let mut opts = config.official_db.options();
    opts.egress = config.egress.policy();
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
        database: db.db.info(),
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
    ctx.prune_retired();
    let loaded = load_configured(&ctx.config).await?;
    if loaded.version == ctx.db().version {
        return Ok(());
    }
    info!(version = %loaded.version, records = loaded.db.info().records, "vulnerability database changed");
    let loaded = Arc::new(loaded);
    ctx.replace_db(loaded.clone());
    ctx.metrics
        .database(&loaded.version, loaded.db.info().records);

    let all: Vec<ImageScanResult> = ctx.scope.list(&ctx.client, &ListParams::default()).await?;
    // (namespace, rule) -> images with new findings
    let mut touched: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for result in all {
        let ns = result.namespace().unwrap_or_default();
        let (status, new) = match rematch(&result, &loaded) {
            Ok(Some(x)) => x,
            Ok(None) => continue,
            Err(e) => {
                warn!(result = %result.name_any(), error = %e, "re-matching failed; the image will be rescanned on its next task");
                continue;
            }
        };
        apply_result_status(&ctx.client, &ns, &result.name_any(), &status).await?;
        if new.is_empty() {
            continue;
        }
        // Bounded: the annotation names at most 200 new ids.
        let ids: Vec<&str> = new.iter().take(200).map(String::as_str).collect();
        let annotate = serde_json::json!({"metadata": {"annotations": {NEW_FINDINGS_ANNOTATION: ids.join(",")}}});
        let api: Api<ImageScanResult> = Api::namespaced(ctx.client.clone(), &ns);
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

/// Writes an ImageScanResult's status (server-side apply, the operator's field manager).
pub(crate) async fn apply_result_status(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    status: &crate::crd::ImageScanResultStatus,
) -> Result<(), kube::Error> {
    let api: Api<ImageScanResult> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({
        "apiVersion": "imagewarden.io/v1alpha1",
        "kind": "ImageScanResult",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::io::{Read, Write};
    use std::sync::Mutex;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        config: crate::config::OperatorConfig,
    }

    /// Serves `files` (path, body) on 127.0.0.1 with an ETag, answering `If-None-Match`
    /// with 304; records the status of each answer.
    fn serve(files: Vec<(String, Vec<u8>)>, log: Arc<Mutex<Vec<(String, u16)>>>) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(500) {
                let Ok(mut s) = stream else { continue };
                s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                    .ok();
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16384 {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req).to_string();
                let path = text
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                let conditional = text.to_ascii_lowercase().contains("if-none-match: \"v1\"");
                let status = match files.iter().find(|(p, _)| *p == path) {
                    Some(_) if conditional => {
                        let _ = write!(s, "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n");
                        304
                    }
                    Some((_, body)) => {
                        let _ = write!(s, "HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                        let _ = s.write_all(body);
                        200
                    }
                    None => {
                        let _ = write!(s, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        404
                    }
                };
                log.lock().unwrap().push((path, status));
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn without_db_the_official_sources_are_downloaded_cached_and_checked_again() {
        // A mirror holding one OSV archive (the npm test records), nothing of NVD.
        let npm =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scanner/testdata/osv/npm");
        let mut records: Vec<_> = std::fs::read_dir(&npm)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        records.sort();
        let mut zip_bytes = Vec::new();
        {
            let mut zip = zip::ZipWriter::new(std::io::Cursor::new(&mut zip_bytes));
            for r in &records {
                zip.start_file(
                    r.file_name().unwrap().to_str().unwrap(),
                    zip::write::SimpleFileOptions::default(),
                )
                .unwrap();
                zip.write_all(&std::fs::read(r).unwrap()).unwrap();
            }
            zip.finish().unwrap();
        }
        let log = Arc::new(Mutex::new(Vec::new()));
        let base = serve(vec![("/osv/npm/all.zip".into(), zip_bytes)], log.clone());
        let cache = tempfile::tempdir().unwrap();
        let mut cli = Cli::try_parse_from([
            "imagewarden-operator",
            "--db-cache-dir",
            cache.path().to_str().unwrap(),
            "--osv-url",
            &format!("{base}/osv"),
            "--nvd-url",
            &format!("{base}/nvd"),
        ])
        .unwrap();
        assert!(cli.config.db.is_empty());
        // The mirror listens on loopback, which the egress policy denies: nothing is fetched.
        let err = format!("{:#}", load_configured(&cli.config).await.err().unwrap());
        assert!(
            err.contains("is not fetched") && err.contains("loopback"),
            "{err}"
        );
        assert!(
            log.lock().unwrap().is_empty(),
            "a request reached the mirror"
        );
        cli.config.egress.allow = vec!["127.0.0.0/8".parse().unwrap()];
        let first = load_configured(&cli.config).await.unwrap();
        assert_eq!(first.db.info().records as usize, records.len());
        assert_eq!(
            first.db.info().sources,
            [format!("{base}/osv"), format!("{base}/nvd")]
        );
        let zip_status = |log: &Mutex<Vec<(String, u16)>>| -> Vec<u16> {
            log.lock()
                .unwrap()
                .iter()
                .filter(|(p, _)| p == "/osv/npm/all.zip")
                .map(|(_, s)| *s)
                .collect()
        };
        assert_eq!(zip_status(&log), [200]);
        // The next refresh asks conditionally and keeps the same database.
        let second = load_configured(&cli.config).await.unwrap();
        assert_eq!(second.version, first.version);
        assert_eq!(zip_status(&log), [200, 304]);
        // The mirror unreachable: the cached database stays in use.
        cli.config.official_db.osv_url = "http://127.0.0.1:9/osv".into();
        cli.config.official_db.nvd_url = "http://127.0.0.1:9/nvd".into();
        let third = load_configured(&cli.config).await.unwrap();
        assert_eq!(third.version, first.version);
        // Without a cache and without the mirror: an error that says what to do.
        let empty = tempfile::tempdir().unwrap();
        cli.config.official_db.db_cache_dir = empty.path().to_path_buf();
        let err = format!("{:#}", load_configured(&cli.config).await.err().unwrap());
        assert!(err.contains("--db"), "{err}");
    }
}
