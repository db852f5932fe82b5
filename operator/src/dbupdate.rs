//! Vulnerability database refresh: reload the configured source, and when its content
//! changed, re-match every stored inventory without pulling images again, update the
//! results, and start a `DatabaseUpdate` task for each rule whose images gained findings
//! (its notifications then report what is new).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{stream, StreamExt};
use imagewarden_scanner::vulndb::Db;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use tracing::{info, warn};

use crate::context::{Context, LoadedDb, FIELD_MANAGER};
use crate::controller::notify::NEW_FINDINGS_ANNOTATION;
use crate::controller::scan_rule::{start_task, task_name};
use crate::crd::{ImageScanResult, ScanRule, TaskTrigger};
use crate::finding_ids::stored_keys;
use crate::lifecycle::scoped_result_pages;
use crate::result::decode_inventory;
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
    let inventory = decode_inventory(encoded).map_err(|e| Error::Inventory {
        result: result.name_any(),
        message: e.to_string(),
    })?;
    let status = crate::result::rematch_inventory(&old, inventory, &result.spec.digest, db)?;
    // Against every finding the result had, not only those its list kept.
    let after = stored_keys(&status).unwrap_or_else(|| {
        status
            .findings
            .iter()
            .map(crate::finding_ids::key)
            .collect()
    });
    let Some(before) = stored_keys(&old) else {
        warn!(result = %result.name_any(), "the result's findings were cut and it keeps no finding ids (written by an older operator): no finding is reported as new");
        return Ok(Some((status, Vec::new())));
    };
    let mut new: Vec<String> = after
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
    ctx.metrics.database(&loaded.version, loaded.db.info());

    // (namespace, rule) -> images with new findings, or to scan again
    let touched = rematch_all(&ctx, &loaded).await?;
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

/// Results re-matched and written at once: the writes are two API requests each, so
/// with one at a time a re-match of thousands of results waits on round trips.
const REMATCH_CONCURRENCY: usize = 8;

/// What re-matching one result gave.
enum Rematched {
    /// Written; `true` when it gained findings (its rule is told).
    Written(bool),
    /// No stored inventory, or it could not be read: scanned again by its rule.
    Rescan,
}

/// Re-matches every result not yet made with `loaded`, page by page (up to
/// [`REMATCH_CONCURRENCY`] at once); returns, per rule, the images that gained findings
/// and those that keep no inventory (too large for the object, or unreadable): those
/// are scanned again by the rule's database-update task.
async fn rematch_all(
    ctx: &Context,
    loaded: &LoadedDb,
) -> Result<BTreeMap<(String, String), Vec<String>>, Error> {
    let mut touched: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    // A page at a time; results already made with the new database are skipped, also
    // when an expired listing starts again.
    let mut pages = std::pin::pin!(scoped_result_pages(ctx, ListParams::default()));
    while let Some(page) = pages.next().await {
        let stale = page?.into_iter().filter(|result| {
            let old_version = result
                .status
                .as_ref()
                .and_then(|s| s.database_version.as_deref());
            result.status.is_some() && old_version != Some(loaded.version.as_str())
        });
        let outcomes: Vec<(ImageScanResult, Result<Rematched, Error>)> = stream::iter(stale)
            .map(|result| async move {
                let outcome = rematch_one(ctx, loaded, &result).await;
                (result, outcome)
            })
            .buffer_unordered(REMATCH_CONCURRENCY)
            .collect()
            .await;
        for (result, outcome) in outcomes {
            if let Rematched::Written(false) = outcome? {
                continue;
            }
            let ns = result.namespace().unwrap_or_default();
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
    }
    Ok(touched)
}

/// Re-matches one result and writes it, marking the new findings' ids.
async fn rematch_one(
    ctx: &Context,
    loaded: &LoadedDb,
    result: &ImageScanResult,
) -> Result<Rematched, Error> {
    let ns = result.namespace().unwrap_or_default();
    let Some(new) = rematch_and_write(&ctx.client, result, loaded).await? else {
        return Ok(Rematched::Rescan);
    };
    if new.is_empty() {
        return Ok(Rematched::Written(false));
    }
    // Bounded: the annotation names at most 200 new ids.
    let ids: Vec<&str> = new.iter().take(200).map(String::as_str).collect();
    let annotate =
        serde_json::json!({"metadata": {"annotations": {NEW_FINDINGS_ANNOTATION: ids.join(",")}}});
    let api: Api<ImageScanResult> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch(
        &result.name_any(),
        &PatchParams::default(),
        &Patch::Merge(annotate),
    )
    .await?;
    Ok(Rematched::Written(true))
}

/// Re-matches the stored inventory of `result` with `loaded` and writes the status; the
/// ids of the findings that are new. `None` when the result keeps no inventory or it
/// could not be read: the image is then scanned again.
pub(crate) async fn rematch_and_write(
    client: &kube::Client,
    result: &ImageScanResult,
    loaded: &LoadedDb,
) -> Result<Option<Vec<String>>, Error> {
    match rematch(result, loaded) {
        Ok(Some((status, new))) => {
            apply_result_status(client, result, &status).await?;
            Ok(Some(new))
        }
        Ok(None) => {
            info!(result = %result.name_any(), "no stored inventory: the image is scanned again");
            Ok(None)
        }
        Err(e) => {
            warn!(result = %result.name_any(), error = %e, "re-matching failed: the image is scanned again");
            Ok(None)
        }
    }
}

/// Writes the re-matched status of `result` (server-side apply, the operator's field
/// manager), and its worst-severity label when that changed.
async fn apply_result_status(
    client: &kube::Client,
    result: &ImageScanResult,
    status: &crate::crd::ImageScanResultStatus,
) -> Result<(), kube::Error> {
    let name = result.name_any();
    let api: Api<ImageScanResult> =
        Api::namespaced(client.clone(), &result.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "imagewarden.io/v1alpha1",
        "kind": "ImageScanResult",
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    // The status subresource leaves labels alone: the worst severity follows the findings
    // with a merge patch (an apply of the label alone would drop the spec this field
    // manager owns), sent only when the label changes.
    let worst = crate::result::worst_severity_label_value(&status.summary);
    if result.labels().get(crate::result::WORST_SEVERITY_LABEL) == Some(&worst.to_string()) {
        return Ok(());
    }
    let labels = serde_json::json!({"metadata": {"labels": {
        crate::result::WORST_SEVERITY_LABEL: worst,
    }}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(labels))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use sha2::Digest;
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

    /// The status a scan of `inventory` with `db` writes.
    fn scanned(inventory: serde_json::Value, db: &LoadedDb) -> crate::crd::ImageScanResultStatus {
        let inventory: imagewarden_scanner::inventory::Inventory =
            serde_json::from_value(inventory).unwrap();
        let options = imagewarden_scanner::pipeline::ScanOptions::default();
        let report =
            imagewarden_scanner::pipeline::scan_inventory(inventory, Some(&db.db), &options)
                .unwrap();
        crate::result::result_status(&report, "sha256:00", &db.version)
    }

    fn openssl_result(db: &LoadedDb) -> ImageScanResult {
        let status = scanned(
            serde_json::json!({
                "target": "r/app:1", "os": {"family": "debian", "version": "9"},
                "packages": [{"ecosystem": "Debian", "name": "libssl1.1", "version": "1.1.0f-3+deb9u2",
                    "purl": "pkg:deb/debian/libssl1.1@1.1.0f-3+deb9u2", "sourceName": "openssl",
                    "path": "var/lib/dpkg/status"}]
            }),
            db,
        );
        let mut result = ImageScanResult::new(
            "app-00",
            crate::crd::ImageScanResultSpec {
                registry: "r".into(),
                repository: "app".into(),
                digest: "sha256:00".into(),
                tags: vec![],
                tags_seen: vec![],
            },
        );
        result.status = Some(status);
        result
    }

    fn test_db() -> LoadedDb {
        let osv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scanner/testdata/osv");
        LoadedDb::new(Db::load(&[osv.display().to_string()]).unwrap())
    }

    #[test]
    fn findings_cut_from_the_list_do_not_come_back_as_new() {
        let db = test_db();
        let mut result = openssl_result(&db);
        let status = result.status.as_mut().unwrap();
        assert!(status.findings.len() >= 2, "{:?}", status.findings);
        // As when the list was cut to fit the object: only the first finding is listed.
        status.findings.truncate(1);
        status.truncated = true;
        let (_, new) = rematch(&result, &db).unwrap().unwrap();
        assert_eq!(new, Vec::<String>::new(), "every finding was there before");

        // A finding that really is new is reported.
        let mut result = openssl_result(&db);
        let status = result.status.as_mut().unwrap();
        let gone = status.findings.pop().unwrap();
        status.finding_ids = crate::finding_ids::encode(&status.findings);
        status.truncated = true;
        let (_, new) = rematch(&result, &db).unwrap().unwrap();
        assert_eq!(new, [gone.id]);
    }

    #[test]
    fn an_inventory_too_large_to_keep_is_a_warning_and_a_rescan_not_a_silent_skip() {
        let db = test_db();
        // Thousands of packages with names that do not compress: over the budget.
        let packages: Vec<serde_json::Value> = (0..20_000u32)
            .map(|i| {
                let name = hex::encode(sha2::Sha256::digest(i.to_be_bytes()));
                serde_json::json!({"ecosystem": "npm", "name": name, "version": "1.0.0",
                    "purl": format!("pkg:npm/{name}@1.0.0"), "path": format!("app/node_modules/{name}/package.json")})
            })
            .collect();
        let status = scanned(
            serde_json::json!({"target": "r/app:1", "packages": packages}),
            &db,
        );
        assert_eq!(status.inventory, None);
        assert_eq!(status.warnings[0], crate::result::INVENTORY_NOT_KEPT);
        let mut result = openssl_result(&db);
        result.status = Some(status);
        // Nothing to re-match: the refresh hands the image to its rule's task to scan again.
        assert!(rematch(&result, &db).unwrap().is_none());
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
