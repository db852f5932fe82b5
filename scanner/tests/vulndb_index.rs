//! The compiled index: what `db build` writes, what `db info` reads, and that an
//! index file, an OSV directory, an all.zip and an http(s) source give the same answers.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use imagewarden_scanner::inventory::{Ecosystem, Inventory, OsInfo, Package};
use imagewarden_scanner::matcher::match_inventory;
use imagewarden_scanner::vulndb::{Db, DbBuilder};

fn osv_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/osv")
}

fn mixed_inventory() -> Inventory {
    let p = |ecosystem, name: &str, version: &str, source: Option<&str>| Package {
        ecosystem,
        name: name.into(),
        version: version.into(),
        purl: String::new(),
        source_name: source.map(str::to_string),
        source_version: None,
        vendor: None,
        module: None,
        install_state: None,
        os_package: None,
        layer: None,
        path: String::new(),
    };
    Inventory {
        target: "mixed".into(),
        digest: None,
        os: Some(OsInfo {
            family: "debian".into(),
            version: "9.13".into(),
        }),
        packages: vec![
            p(
                Ecosystem::Debian,
                "libssl1.1",
                "1.1.0f-3+deb9u2",
                Some("openssl"),
            ),
            p(Ecosystem::PyPI, "PyYAML", "5.3", None),
            p(Ecosystem::Go, "golang.org/x/text", "v0.3.5", None),
            p(Ecosystem::Npm, "lodash", "4.17.15", None),
        ],
    }
}

fn finding_ids(db: &Db) -> Vec<String> {
    match_inventory(&mixed_inventory(), db)
        .unwrap()
        .vulnerabilities
        .into_iter()
        .map(|f| f.id)
        .collect()
}

fn zip_dir(dir: &Path, out: &mut impl Write) {
    let mut buf = Vec::new();
    {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(&mut buf));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            zip.start_file(f.file_name().unwrap().to_str().unwrap(), opts)
                .unwrap();
            zip.write_all(&std::fs::read(&f).unwrap()).unwrap();
        }
        zip.finish().unwrap();
    }
    out.write_all(&buf).unwrap();
}

#[test]
fn index_file_answers_like_the_osv_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("osv.iwdb");
    let mut b = DbBuilder::new();
    b.add_source(osv_dir().to_str().unwrap()).unwrap();
    let written = b.write_file(&path).unwrap();
    assert!(Db::is_index_file(&path));
    let mapped = Db::open_index(&path).unwrap();
    assert_eq!(mapped.info(), &written);
    assert!(mapped.info().digest.starts_with("sha256:"));
    let loaded = Db::load(&[osv_dir().to_str().unwrap().to_string()]).unwrap();
    assert_eq!(finding_ids(&mapped), finding_ids(&loaded));
    assert!(finding_ids(&mapped).contains(&"DLA-3008-1".to_string()));
    // Two builds of the same records have the same content digest.
    assert_eq!(loaded.info().digest, mapped.info().digest);
}

#[test]
fn index_info_counts_records_per_release() {
    let db = Db::load(&[osv_dir().to_str().unwrap().to_string()]).unwrap();
    let info = db.info();
    let files = walk(&osv_dir());
    assert_eq!(
        info.records + info.withdrawn_skipped + info.non_security_skipped,
        files as u64
    );
    // The bug-fix errata among the AlmaLinux records (ALBA-2022:8256).
    let bug_fix = std::fs::read_dir(osv_dir().join("AlmaLinux"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("ALBA-")
        })
        .count();
    assert!(bug_fix > 0);
    assert_eq!(info.non_security_skipped, bug_fix as u64);
    assert_eq!(info.malicious_records, 0);
    for key in [
        "Debian:9",
        "Debian:11",
        "Alpine:v3.10",
        "Alpine:v3.11",
        "Go",
        "PyPI",
        "npm",
        "crates.io",
    ] {
        assert!(
            info.ecosystems
                .get(key)
                .is_some_and(|s| s.records > 0 && s.packages > 0),
            "{key}: {:?}",
            info.ecosystems
        );
    }
    assert_eq!(info.ecosystems["npm"].records, 3);
    // runc, selinux, x/sys, x/text and stdlib (named by one of the runc records).
    assert_eq!(info.ecosystems["Go"].packages, 5);
    // The newest `modified` among the records (Go's zero times are not counted).
    assert!(info
        .newest_modified
        .as_deref()
        .is_some_and(|m| m >= "2024-"));
}

fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            if p.is_dir() {
                walk(&p)
            } else {
                usize::from(p.extension().is_some_and(|e| e == "json"))
            }
        })
        .sum()
}

#[test]
fn rejects_files_that_are_not_an_index() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("not-an-index");
    std::fs::write(&path, b"hello world, this is not an index file at all, not even close....................................................................").unwrap();
    let err = Db::open_index(&path).unwrap_err().to_string();
    assert!(
        err.contains("not an imagewarden vulnerability index"),
        "{err}"
    );
    // A truncated index names the problem instead of panicking.
    let good = tmp.path().join("good.iwdb");
    let mut b = DbBuilder::new();
    b.add_source(osv_dir().join("npm").to_str().unwrap())
        .unwrap();
    b.write_file(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = Db::open_index(&path).unwrap_err().to_string();
    assert!(err.contains("truncated or corrupt"), "{err}");
}

#[test]
fn zip_archives_in_osv_dev_layout_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    for eco in ["Debian", "PyPI", "Go", "npm"] {
        std::fs::create_dir_all(tmp.path().join(eco)).unwrap();
        let mut f = std::fs::File::create(tmp.path().join(eco).join("all.zip")).unwrap();
        zip_dir(&osv_dir().join(eco), &mut f);
    }
    // One zip named directly, the others found by walking the directory.
    let direct = tmp
        .path()
        .join("Debian/all.zip")
        .to_str()
        .unwrap()
        .to_string();
    let db = Db::load(&[direct]).unwrap();
    assert_eq!(
        finding_ids(&db)
            .iter()
            .filter(|id| id.starts_with("D"))
            .count(),
        8
    );
    let dir_db = Db::load(&[tmp.path().to_str().unwrap().to_string()]).unwrap();
    let all = Db::load(&[osv_dir().to_str().unwrap().to_string()]).unwrap();
    assert_eq!(finding_ids(&dir_db), finding_ids(&all));
}

/// Serves `<Ecosystem>/all.zip` archives over HTTP on 127.0.0.1 for a bounded number of requests.
fn serve_zips(zips: Vec<(String, Vec<u8>)>, requests: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let Ok(mut s) = stream else { continue };
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .ok();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&req)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            match zips.iter().find(|(p, _)| *p == path) {
                Some((_, body)) => {
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(body);
                }
                None => {
                    let _ = write!(
                        s,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
            }
        }
    });
    format!("http://{addr}")
}

#[test]
fn http_base_url_fetches_each_ecosystem_archive() {
    let mut zips = Vec::new();
    for eco in ["Debian", "PyPI", "Go", "npm"] {
        let mut body = Vec::new();
        zip_dir(&osv_dir().join(eco), &mut body);
        zips.push((format!("/{eco}/all.zip"), body));
    }
    let base = serve_zips(
        zips,
        imagewarden_scanner::vulndb::source::URL_ECOSYSTEMS.len(),
    );
    let db = Db::load(&[format!("{base}/")]).unwrap();
    let mut ids = finding_ids(&db);
    ids.sort();
    assert!(ids.contains(&"DLA-3008-1".to_string()));
    assert!(ids.contains(&"GO-2021-0113".to_string()));
    assert!(ids.contains(&"PYSEC-2020-96".to_string()));
    assert!(ids.contains(&"NSWG-ECO-516".to_string()));
    assert_eq!(db.info().sources, vec![format!("{base}/")]);
}

#[test]
fn malicious_package_records_are_kept_apart() {
    // A record in the shape of OSV's malicious-packages data, to pin the MAL- flag.
    let record = br#"{"id": "MAL-2022-1", "modified": "2022-06-20T20:35:34Z", "summary": "Malicious code in example-evil (npm)",
        "affected": [{"package": {"ecosystem": "npm", "name": "example-evil"},
                      "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}]}]}]}"#;
    let mut b = DbBuilder::new();
    b.add_json(record, "inline");
    b.add_source(osv_dir().join("npm").to_str().unwrap())
        .unwrap();
    let db = b.into_db("test").unwrap();
    assert_eq!(db.info().malicious_records, 1);
    let mut inv = mixed_inventory();
    inv.packages.push(Package {
        ecosystem: Ecosystem::Npm,
        name: "example-evil".into(),
        version: "1.0.0".into(),
        purl: "pkg:npm/example-evil@1.0.0".into(),
        source_name: None,
        source_version: None,
        vendor: None,
        module: None,
        install_state: None,
        os_package: None,
        layer: None,
        path: "/app/node_modules/example-evil/package.json".into(),
    });
    let m = match_inventory(&inv, &db).unwrap();
    assert_eq!(m.malicious_packages.len(), 1);
    assert_eq!(m.malicious_packages[0].id, "MAL-2022-1");
    assert!(m.vulnerabilities.iter().all(|f| !f.id.starts_with("MAL-")));
}

#[test]
fn db_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Db>();
}

#[test]
fn url_sources_load_from_a_blocking_task_of_an_async_runtime() {
    // As the operator's database refresh does: `Db::load` inside `spawn_blocking`.
    let mut body = Vec::new();
    zip_dir(&osv_dir().join("npm"), &mut body);
    let base = serve_zips(
        vec![("/npm/all.zip".to_string(), body)],
        imagewarden_scanner::vulndb::source::URL_ECOSYSTEMS.len(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let db = runtime
        .block_on(async move {
            tokio::task::spawn_blocking(move || Db::load(&[base]))
                .await
                .unwrap()
        })
        .unwrap();
    assert_eq!(db.info().records, 3);
    // And the async form, for callers already on the runtime.
    let mut body = Vec::new();
    zip_dir(&osv_dir().join("npm"), &mut body);
    let url = serve_zips(vec![("/npm/all.zip".to_string(), body)], 1);
    let mut builder = DbBuilder::new();
    runtime
        .block_on(builder.add_url(&format!("{url}/npm/all.zip")))
        .unwrap();
    assert_eq!(builder.len(), 3);
}

/// `bytes` with its checksum trailer recomputed, as a forger would: only the content
/// digest can then tell a changed record.
fn resealed(mut bytes: Vec<u8>) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let body = bytes.len() - 32;
    let sum = Sha256::digest(&bytes[..body]);
    bytes[body..].copy_from_slice(&sum);
    bytes
}

#[test]
fn a_received_index_is_verified_against_its_content_digest() {
    let nvd = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/nvd");
    let db = Db::load(&[
        osv_dir().display().to_string(),
        format!("nvd:{}", nvd.display()),
    ])
    .unwrap();
    assert!(db.info().nvd_records > 0);
    let recorded = db.info().digest.clone();
    let bytes = db.as_bytes().to_vec();
    let copy = Db::from_bytes(bytes.clone(), "copy").unwrap();
    assert_eq!(copy.verify_digest().unwrap(), recorded);

    let header = |i: usize| {
        let at = 16 + i * 16;
        let off = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
        let len = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap()) as usize;
        (off, len)
    };
    // A changed byte without a new checksum is refused on open.
    let (blobs, blobs_len) = header(4);
    let mut flipped = bytes.clone();
    flipped[blobs] ^= 0x55;
    let err = Db::from_bytes(flipped, "flipped").unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");
    // Any changed byte of a record or of NVD's ratings, resealed, and the digest no
    // longer holds.
    let (nvd_table, nvd_len) = header(5);
    let (vectors, vectors_len) = header(6);
    assert!(nvd_len > 0 && vectors_len > 0);
    for at in [
        blobs,
        blobs + blobs_len / 2,
        blobs + blobs_len - 1,
        nvd_table + nvd_len - 1,
        vectors + vectors_len - 1,
    ] {
        let mut tampered = bytes.clone();
        tampered[at] ^= 0x55;
        let err = Db::from_bytes(resealed(tampered), "tampered")
            .unwrap()
            .verify_digest()
            .unwrap_err()
            .to_string();
        assert!(err.contains("tampered") && err.contains("digest"), "{err}");
    }
    // An advisory entry pointing elsewhere is caught too (lookups would read other bytes).
    let (advisories, _) = header(3);
    let mut moved = bytes.clone();
    moved[advisories] ^= 1;
    let err = Db::from_bytes(resealed(moved), "moved")
        .unwrap()
        .verify_digest()
        .unwrap_err()
        .to_string();
    assert!(err.contains("out of place"), "{err}");
    // A truncated download is not an index.
    assert!(Db::from_bytes(bytes[..bytes.len() / 2].to_vec(), "half").is_err());
}
