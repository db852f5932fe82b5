//! `imagewarden db update` against local mirrors on 127.0.0.1 holding the test data in the
//! layout of the official sources (`<osv>/<Ecosystem>/all.zip`, `<nvd>/nvdcve-2.0-YYYY.json.gz`
//! with NVD's `.meta` files): a fresh cache, an unchanged source (no download), a changed
//! one, an interrupted transfer, a corrupt archive, a missing source; and `scan` using the
//! cache without --db.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use imagewarden_scanner::vulndb::Db;
use sha2::Digest;

fn testdata(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(p)
}

#[derive(Clone)]
enum Body {
    Full(Vec<u8>),
    /// Announces the full length, sends half, and closes.
    Cut(Vec<u8>),
}

#[derive(Clone)]
struct Resource {
    body: Body,
    etag: String,
}

#[derive(Default)]
struct Mirror {
    files: HashMap<String, Resource>,
    /// (path, status) of every request answered.
    log: Vec<(String, u16)>,
}

type Shared = Arc<Mutex<Mirror>>;

/// Serves `mirror` on 127.0.0.1 (at most `max` connections); returns its base URL.
fn serve(mirror: Shared, max: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max) {
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
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("")
                .to_string();
            let if_none_match = text.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("if-none-match")
                    .then(|| v.trim().to_string())
            });
            let mut m = mirror.lock().unwrap();
            let res = m.files.get(&path).cloned();
            let status = match res {
                None => {
                    let _ = write!(
                        s,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    404
                }
                Some(r) if if_none_match.as_deref() == Some(r.etag.as_str()) => {
                    let _ = write!(
                        s,
                        "HTTP/1.1 304 Not Modified\r\nETag: {}\r\nConnection: close\r\n\r\n",
                        r.etag
                    );
                    304
                }
                Some(Resource {
                    body: Body::Full(b),
                    etag,
                }) => {
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: {etag}\r\nLast-Modified: Mon, 02 Nov 2026 10:00:00 GMT\r\nConnection: close\r\n\r\n",
                        b.len()
                    );
                    let _ = s.write_all(&b);
                    200
                }
                Some(Resource {
                    body: Body::Cut(b),
                    etag,
                }) => {
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: {etag}\r\nConnection: close\r\n\r\n",
                        b.len()
                    );
                    let _ = s.write_all(&b[..b.len() / 2]);
                    200
                }
            };
            m.log.push((path, status));
        }
    });
    format!("http://{addr}")
}

fn zip_records(files: &[PathBuf]) -> Vec<u8> {
    let mut buf = Vec::new();
    {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(&mut buf));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for f in files {
            zip.start_file(f.file_name().unwrap().to_str().unwrap(), opts)
                .unwrap();
            zip.write_all(&std::fs::read(f).unwrap()).unwrap();
        }
        zip.finish().unwrap();
    }
    buf
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(json_files(&p));
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn etag(body: &[u8]) -> String {
    format!("\"{}\"", &hex::encode(sha2::Sha256::digest(body))[..16])
}

fn full(body: Vec<u8>) -> Resource {
    Resource {
        etag: etag(&body),
        body: Body::Full(body),
    }
}

/// The test data in the official layout: OSV archives per ecosystem, NVD feeds per year
/// (with `.meta` files as NVD publishes them).
fn official_layout() -> (Mirror, u64) {
    let mut m = Mirror::default();
    let mut ecosystems: Vec<String> = std::fs::read_dir(testdata("osv"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    ecosystems.sort();
    for eco in ecosystems {
        let files = json_files(&testdata("osv").join(&eco));
        m.files
            .insert(format!("/osv/{eco}/all.zip"), full(zip_records(&files)));
    }
    let mut by_year: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    let mut rated = 0;
    for f in json_files(&testdata("nvd")) {
        let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        if rec["metrics"].as_object().is_some_and(|m| !m.is_empty()) {
            rated += 1;
        }
        let year = rec["id"].as_str().unwrap()[4..8].to_string();
        by_year
            .entry(year)
            .or_default()
            .push(serde_json::json!({ "cve": rec }));
    }
    for (year, cves) in by_year {
        let json = serde_json::to_vec(&serde_json::json!({
            "resultsPerPage": cves.len(), "format": "NVD_CVE", "version": "2.0",
            "vulnerabilities": cves,
        }))
        .unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&json).unwrap();
        let gz = enc.finish().unwrap();
        let meta = format!(
            "lastModifiedDate:2026-11-02T03:00:01-04:00\r\nsize:{}\r\nzipSize:0\r\ngzSize:{}\r\nsha256:{}\r\n",
            json.len(),
            gz.len(),
            hex::encode_upper(sha2::Sha256::digest(&json))
        );
        m.files.insert(
            format!("/nvd/nvdcve-2.0-{year}.meta"),
            full(meta.into_bytes()),
        );
        m.files
            .insert(format!("/nvd/nvdcve-2.0-{year}.json.gz"), full(gz));
    }
    (m, rated)
}

fn imagewarden(args: &[&str], cache: &Path, base: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imagewarden"))
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .arg("--osv-url")
        .arg(format!("{base}/osv"))
        .arg("--nvd-url")
        .arg(format!("{base}/nvd"))
        .env_remove("IMAGEWARDEN_DB")
        .env_remove("IMAGEWARDEN_CACHE_DIR")
        .output()
        .unwrap()
}

fn statuses(m: &Shared, from: usize, suffix: &str) -> Vec<u16> {
    m.lock().unwrap().log[from..]
        .iter()
        .filter(|(p, _)| p.ends_with(suffix))
        .map(|(_, s)| *s)
        .collect()
}

fn log_len(m: &Shared) -> usize {
    m.lock().unwrap().log.len()
}

fn digest(cache: &Path) -> String {
    Db::open_index(&cache.join("vulndb.iwdb"))
        .unwrap()
        .info()
        .digest
        .clone()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn update_downloads_what_changed_and_keeps_the_cache_on_failure() {
    let (mirror, rated) = official_layout();
    let archives = mirror.files.keys().filter(|k| k.ends_with(".zip")).count();
    let feeds = mirror
        .files
        .keys()
        .filter(|k| k.ends_with(".json.gz"))
        .count();
    let mirror: Shared = Arc::new(Mutex::new(mirror));
    let base = serve(mirror.clone(), 2000);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("db");

    // Fresh: every archive and feed downloaded, the index built from them.
    let out = imagewarden(&["db", "update"], &cache, &base);
    assert_ok(&out);
    assert_eq!(
        statuses(&mirror, 0, ".zip")
            .iter()
            .filter(|s| **s == 200)
            .count(),
        archives
    );
    assert_eq!(
        statuses(&mirror, 0, ".json.gz")
            .iter()
            .filter(|s| **s == 200)
            .count(),
        feeds
    );
    let db = Db::open_index(&cache.join("vulndb.iwdb")).unwrap();
    assert_eq!(db.info().nvd_records, rated);
    let mut osv_only = imagewarden_scanner::vulndb::DbBuilder::new();
    osv_only
        .add_source(testdata("osv").to_str().unwrap())
        .unwrap();
    assert_eq!(db.info().records as usize, osv_only.len());
    assert!(db.nvd_rating("CVE-2019-14697").is_some());
    let first = db.info().digest.clone();
    drop(db);

    // Unchanged: conditional requests only, nothing downloaded, nothing rebuilt.
    let at = log_len(&mirror);
    let out = imagewarden(&["db", "update"], &cache, &base);
    assert_ok(&out);
    // (Ecosystems and years the mirror does not have are asked for too, and skipped: 404.)
    let zips = statuses(&mirror, at, ".zip");
    let gzs = statuses(&mirror, at, ".json.gz");
    assert!(
        zips.iter()
            .chain(gzs.iter())
            .all(|s| *s == 304 || *s == 404),
        "{zips:?} {gzs:?}"
    );
    let unchanged = |v: &[u16]| v.iter().filter(|s| **s == 304).count();
    assert_eq!((unchanged(&zips), unchanged(&gzs)), (archives, feeds));
    assert!(String::from_utf8_lossy(&out.stderr).contains("index unchanged"));
    assert_eq!(digest(&cache), first);

    // Changed: one archive loses a record; only it is downloaded, and the index follows.
    let npm = json_files(&testdata("osv/npm"));
    {
        let mut m = mirror.lock().unwrap();
        m.files.insert(
            "/osv/npm/all.zip".into(),
            full(zip_records(&npm[..npm.len() - 1])),
        );
    }
    let at = log_len(&mirror);
    let out = imagewarden(&["db", "update"], &cache, &base);
    assert_ok(&out);
    let downloaded: Vec<String> = mirror.lock().unwrap().log[at..]
        .iter()
        .filter(|(p, s)| *s == 200 && !p.ends_with(".meta"))
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(downloaded, ["/osv/npm/all.zip"]);
    let db = Db::open_index(&cache.join("vulndb.iwdb")).unwrap();
    assert_eq!(db.info().records as usize, osv_only.len() - 1);
    let changed = db.info().digest.clone();
    assert_ne!(changed, first);
    drop(db);
    let cached_npm = std::fs::read(cache.join("sources/osv/npm/all.zip")).unwrap();

    // Interrupted: the transfer stops half way; the cache and index stay as they were.
    {
        let mut m = mirror.lock().unwrap();
        let body = zip_records(&npm);
        m.files.insert(
            "/osv/npm/all.zip".into(),
            Resource {
                etag: "\"cut\"".into(),
                body: Body::Cut(body),
            },
        );
    }
    let out = imagewarden(&["db", "update"], &cache, &base);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/osv/npm/all.zip") && stderr.contains("interrupted"),
        "{stderr}"
    );
    assert_eq!(digest(&cache), changed);
    assert_eq!(
        std::fs::read(cache.join("sources/osv/npm/all.zip")).unwrap(),
        cached_npm
    );
    let leftovers: Vec<_> = std::fs::read_dir(cache.join("sources/osv/npm"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Corrupt: a complete transfer of something that is not a zip archive.
    {
        let mut m = mirror.lock().unwrap();
        let mut body = zip_records(&npm);
        let mid = body.len() / 2;
        for b in &mut body[mid - 8..mid + 8] {
            *b ^= 0x55;
        }
        m.files.insert("/osv/npm/all.zip".into(), full(body));
    }
    let out = imagewarden(&["db", "update"], &cache, &base);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/osv/npm/all.zip") && stderr.contains("corrupt"),
        "{stderr}"
    );
    assert_eq!(digest(&cache), changed);
    assert_eq!(
        std::fs::read(cache.join("sources/osv/npm/all.zip")).unwrap(),
        cached_npm
    );

    // A feed whose content is not what NVD's .meta says is refused.
    {
        let mut m = mirror.lock().unwrap();
        m.files
            .insert("/osv/npm/all.zip".into(), full(zip_records(&npm)));
        let key = m
            .files
            .keys()
            .find(|k| k.ends_with(".json.gz"))
            .unwrap()
            .clone();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(br#"{"vulnerabilities": []}"#).unwrap();
        m.files.insert(key, full(enc.finish().unwrap()));
    }
    let out = imagewarden(&["db", "update"], &cache, &base);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(".meta"), "{stderr}");
    assert_eq!(digest(&cache), changed);
}

#[test]
fn a_mirror_without_the_sources_is_an_error_and_builds_nothing() {
    let mirror: Shared = Arc::new(Mutex::new(Mirror::default()));
    let base = serve(mirror.clone(), 200);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("db");
    let out = imagewarden(&["db", "update"], &cache, &base);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no OSV archive found"), "{stderr}");
    assert!(statuses(&mirror, 0, "all.zip").iter().all(|s| *s == 404));
    assert!(!cache.join("vulndb.iwdb").exists());
    // A scan without a database says what to do.
    let inventory = dir.path().join("inventory.json");
    std::fs::write(
        &inventory,
        br#"{"target": "t", "os": null, "packages": []}"#,
    )
    .unwrap();
    let out = imagewarden(
        &[
            "scan",
            "--inventory",
            inventory.to_str().unwrap(),
            "--offline",
        ],
        &cache,
        &base,
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("imagewarden db update"), "{stderr}");
}

#[test]
fn scan_uses_the_cache_and_updates_it_when_a_day_old() {
    let (mirror, _) = official_layout();
    let mirror: Shared = Arc::new(Mutex::new(mirror));
    let base = serve(mirror.clone(), 2000);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("db");
    let inventory = dir.path().join("inventory.json");
    std::fs::write(
        &inventory,
        serde_json::to_vec(&serde_json::json!({
            "target": "example", "os": {"family": "alpine", "version": "3.10.2"},
            "packages": [
                {"ecosystem": "Alpine", "name": "musl", "version": "1.1.22-r2", "purl": "", "path": "", "sourceName": "musl"},
                {"ecosystem": "PyPI", "name": "django", "version": "3.2", "purl": "", "path": ""},
            ],
        }))
        .unwrap(),
    )
    .unwrap();
    let scan = |extra: &[&str]| {
        let mut args = vec![
            "scan",
            "--inventory",
            inventory.to_str().unwrap(),
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        imagewarden(&args, &cache, &base)
    };
    // No cache yet: the scan downloads the database first.
    let out = scan(&[]);
    assert_ok(&out);
    assert!(log_len(&mirror) > 0);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let musl = report["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == "ALPINE-CVE-2019-14697")
        .unwrap();
    assert_eq!(musl["severitySource"], "nvd");
    assert_eq!(musl["severity"], "critical");
    // A fresh cache is used as it is: no request.
    let at = log_len(&mirror);
    assert_ok(&scan(&[]));
    assert_eq!(log_len(&mirror), at);
    // A day old: updated first (conditional requests), unless told not to.
    let state = cache.join("state.json");
    let mut s: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    s["checkedAt"] = serde_json::json!("2000-01-01T00:00:00Z");
    std::fs::write(&state, serde_json::to_vec(&s).unwrap()).unwrap();
    assert_ok(&scan(&["--skip-db-update"]));
    assert_ok(&scan(&["--offline"]));
    assert_eq!(log_len(&mirror), at);
    assert_ok(&scan(&[]));
    assert!(log_len(&mirror) > at);
    let zips = statuses(&mirror, at, ".zip");
    assert!(zips.contains(&304) && !zips.contains(&200), "{zips:?}");
    // The mirror gone: the scan goes on with the cached database and says so.
    let gone = "http://127.0.0.1:9";
    std::fs::write(&state, serde_json::to_vec(&s).unwrap()).unwrap();
    let out = imagewarden(
        &["scan", "--inventory", inventory.to_str().unwrap()],
        &cache,
        gone,
    );
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not be updated"));
}

#[test]
fn db_build_reads_nvd_feeds_from_a_url() {
    let (mirror, rated) = official_layout();
    let one_year: (String, u64) = {
        // The feed of one year, and how many of its CVEs have a rating.
        let key = mirror
            .files
            .keys()
            .filter(|k| k.ends_with(".json.gz"))
            .min()
            .unwrap()
            .clone();
        let year = &key[key.len() - 12..key.len() - 8];
        let n = json_files(&testdata("nvd").join(format!("CVE-{year}")))
            .iter()
            .filter(|f| {
                let rec: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
                rec["metrics"].as_object().is_some_and(|m| !m.is_empty())
            })
            .count() as u64;
        (key, n)
    };
    let mirror: Shared = Arc::new(Mutex::new(mirror));
    let base = serve(mirror.clone(), 500);
    let dir = tempfile::tempdir().unwrap();
    for (source, expected) in [
        (format!("nvd:{base}/nvd"), rated),
        (format!("nvd:{base}{}", one_year.0), one_year.1),
    ] {
        let out_file = dir.path().join("db.iwdb");
        let out = Command::new(env!("CARGO_BIN_EXE_imagewarden"))
            .args(["db", "build", "--source"])
            .arg(testdata("osv"))
            .args(["--source", &source, "--out"])
            .arg(&out_file)
            .output()
            .unwrap();
        assert_ok(&out);
        let db = Db::open_index(&out_file).unwrap();
        assert_eq!(db.info().nvd_records, expected, "{source}");
        assert!(db.info().sources.contains(&source));
    }
    // A base URL without feeds is an error.
    let out = Command::new(env!("CARGO_BIN_EXE_imagewarden"))
        .args(["db", "build", "--source"])
        .arg(testdata("osv"))
        .args(["--source", &format!("nvd:{base}/nothing"), "--out"])
        .arg(dir.path().join("x.iwdb"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no NVD feed"));
}

#[test]
fn update_compiles_within_the_record_limits_given_and_rebuilds_when_they_change() {
    let (mirror, _) = official_layout();
    let mirror: Shared = Arc::new(Mutex::new(mirror));
    let base = serve(mirror.clone(), 2000);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("db");
    let records = || {
        Db::open_index(&cache.join("vulndb.iwdb"))
            .unwrap()
            .info()
            .records
    };
    assert_ok(&imagewarden(&["db", "update"], &cache, &base));
    let all = records();
    assert!(all > 0);
    // Nothing changed on the mirror, but a range of one event is no range: every record
    // with a range is skipped, so the index is rebuilt with fewer records.
    assert_ok(&imagewarden(
        &["db", "update", "--max-osv-range-events=1"],
        &cache,
        &base,
    ));
    let limited = records();
    assert!(limited < all, "{limited} of {all}");
    // Back to the defaults: rebuilt again, with every record.
    assert_ok(&imagewarden(&["db", "update"], &cache, &base));
    assert_eq!(records(), all);
    // A range limit past the matcher's own bound would be ignored when matching: refused.
    let out = imagewarden(
        &["db", "update", "--max-osv-range-events=5001"],
        &cache,
        &base,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--max-osv-range-events"), "{err}");
}
