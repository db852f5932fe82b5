//! A finding's severity, in a fixed order: the record's own rating (its CVSS vector, a
//! per-package rating such as a Debian urgency), else NVD's CVSS of the CVEs it carries
//! (the highest), else unknown. Real OSV records (scanner/testdata/osv) and real NVD records
//! (scanner/testdata/nvd); every expected value is computed here from the records themselves:
//! the score with the `cvss` crate from the record's vector (checked against the score the
//! record states), the level as the record states it.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use imagewarden_scanner::finding::Finding;
use imagewarden_scanner::inventory::{Ecosystem, Inventory, OsInfo, Package};
use imagewarden_scanner::matcher::match_inventory;
use imagewarden_scanner::vulndb::{Db, DbBuilder, Severity};
use serde_json::Value;

fn testdata(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(p)
}

fn db() -> &'static Db {
    static DB: OnceLock<Db> = OnceLock::new();
    DB.get_or_init(|| {
        let mut b = DbBuilder::new();
        b.add_source(testdata("osv").to_str().unwrap()).unwrap();
        b.add_source(&format!("nvd:{}", testdata("nvd").display()))
            .unwrap();
        b.into_db("test").unwrap()
    })
}

/// The NVD record of a CVE, from the mirror layout.
fn nvd_record(cve: &str) -> Option<Value> {
    let mut parts = cve.split('-');
    let (_, year, number) = (parts.next()?, parts.next()?, parts.next()?);
    let path = testdata("nvd")
        .join(format!("CVE-{year}"))
        .join(format!("CVE-{year}-{}xx", &number[..number.len() - 2]))
        .join(format!("{cve}.json"));
    let text = std::fs::read(path).ok()?;
    Some(serde_json::from_slice(&text).unwrap())
}

/// What NVD says of a CVE, read from its record: the first CVSS version with a metric
/// (v3.1, v3.0, v2, v4.0), NVD's own (`Primary`) metric else the first `Secondary` one;
/// (score computed from the vector, the level the record states, the vector).
fn expected_nvd(cve: &str) -> Option<(f64, Severity, String)> {
    let rec = nvd_record(cve)?;
    for key in [
        "cvssMetricV31",
        "cvssMetricV30",
        "cvssMetricV2",
        "cvssMetricV40",
    ] {
        let Some(list) = rec["metrics"][key].as_array().filter(|l| !l.is_empty()) else {
            continue;
        };
        let metric = list
            .iter()
            .find(|m| m["type"] == "Primary")
            .or_else(|| list.iter().find(|m| m["type"] == "Secondary"))
            .unwrap();
        let data = &metric["cvssData"];
        let vector = data["vectorString"].as_str().unwrap().to_string();
        let parsed = if key == "cvssMetricV2" {
            cvss::Cvss::CvssV20(cvss::v2::Vector::from_str(&vector).unwrap())
        } else {
            cvss::Cvss::from_str(&vector).unwrap()
        };
        let score = (parsed.score() * 10.0).round() / 10.0;
        assert_eq!(
            Some(score),
            data["baseScore"].as_f64(),
            "{cve}: the score computed from {vector} is the one NVD states"
        );
        // v3/v4 state the level in cvssData, v2 beside it.
        let label = data["baseSeverity"]
            .as_str()
            .or(metric["baseSeverity"].as_str())
            .unwrap();
        return Some((score, Severity::from_str(label).unwrap(), vector));
    }
    None
}

/// The highest NVD rating among the CVEs a finding carries.
fn expected_for(f: &Finding) -> Option<(f64, Severity, String)> {
    let mut best: Option<(f64, Severity, String)> = None;
    for id in f.ids() {
        let Some(at) = id.rfind("CVE-") else { continue };
        if let Some(e) = expected_nvd(&id[at..]) {
            if best.as_ref().is_none_or(|b| (e.1, e.0) > (b.1, b.0)) {
                best = Some(e);
            }
        }
    }
    best
}

fn pkg(ecosystem: Ecosystem, name: &str, version: &str, source: Option<&str>) -> Package {
    Package {
        ecosystem,
        name: name.into(),
        version: version.into(),
        purl: String::new(),
        source_name: source.map(str::to_string),
        source_version: None,
        layer: None,
        path: String::new(),
        module: None,
        vendor: None,
        install_state: None,
        os_package: None,
    }
}

fn inventory(os: Option<(&str, &str)>, packages: Vec<Package>) -> Inventory {
    Inventory {
        target: "test".into(),
        digest: None,
        os: os.map(|(family, version)| OsInfo {
            family: family.into(),
            version: version.into(),
        }),
        packages,
    }
}

fn finding(inv: &Inventory, db: &Db, id: &str) -> Finding {
    let m = match_inventory(inv, db).unwrap();
    m.vulnerabilities
        .iter()
        .find(|f| f.id == id)
        .unwrap_or_else(|| {
            panic!(
                "{id} not found in {:?}",
                m.vulnerabilities.iter().map(|f| &f.id).collect::<Vec<_>>()
            )
        })
        .clone()
}

fn assert_nvd(f: &Finding, expected: &(f64, Severity, String)) {
    assert_eq!(f.severity_source.as_deref(), Some("nvd"), "{}", f.id);
    assert_eq!(f.score, Some(expected.0), "{}", f.id);
    assert_eq!(f.severity, expected.1, "{}", f.id);
    assert_eq!(f.vector.as_deref(), Some(expected.2.as_str()), "{}", f.id);
}

#[test]
fn musl_cve_2019_14697_is_critical_from_nvd_v31() {
    // Alpine's secdb record names the CVE and has no rating of its own.
    let inv = inventory(
        Some(("alpine", "3.10.2")),
        vec![pkg(Ecosystem::Alpine, "musl", "1.1.22-r2", Some("musl"))],
    );
    let f = finding(&inv, db(), "ALPINE-CVE-2019-14697");
    let expected = expected_nvd("CVE-2019-14697").unwrap();
    assert!(expected.2.starts_with("CVSS:3.1/"));
    assert_eq!((expected.0, expected.1), (9.8, Severity::Critical));
    assert_nvd(&f, &expected);
}

#[test]
fn the_records_own_vector_comes_before_nvd() {
    // NSWG-ECO-368 (lodash before 4.17.5) carries a CVSS v3.0 vector of its own, and names
    // CVE-2018-3721, which NVD rates differently.
    let inv = inventory(None, vec![pkg(Ecosystem::Npm, "lodash", "4.17.4", None)]);
    let f = finding(&inv, db(), "NSWG-ECO-368");
    let record: Value =
        serde_json::from_slice(&std::fs::read(testdata("osv/npm/NSWG-ECO-368.json")).unwrap())
            .unwrap();
    let vector = record["severity"][0]["score"].as_str().unwrap();
    let score = (cvss::Cvss::from_str(vector).unwrap().score() * 10.0).round() / 10.0;
    assert_eq!(f.score, Some(score));
    assert_eq!(f.vector.as_deref(), Some(vector));
    assert_eq!(f.severity_source.as_deref(), Some("osv"));
    assert_ne!(f.severity, Severity::Unknown);
    assert!(f.ids().any(|id| id == "CVE-2018-3721"));
    let nvd = expected_nvd("CVE-2018-3721").unwrap();
    assert_ne!(
        Some(nvd.0),
        f.score,
        "NVD's rating differs: the order decided"
    );
}

#[test]
fn a_distro_urgency_comes_before_nvd() {
    // DLA-3012-1 (libxml2, CVE-2022-29824) as published, plus the per-package Debian
    // urgency osv.dev's Debian records carry in `ecosystem_specific`.
    let mut record: Value =
        serde_json::from_slice(&std::fs::read(testdata("osv/Debian/DLA-3012-1.json")).unwrap())
            .unwrap();
    for a in record["affected"].as_array_mut().unwrap() {
        a["ecosystem_specific"] = serde_json::json!({"urgency": "low**"});
    }
    let mut b = DbBuilder::new();
    b.add_json(&serde_json::to_vec(&record).unwrap(), "DLA-3012-1");
    b.add_source(&format!("nvd:{}", testdata("nvd").display()))
        .unwrap();
    let with_urgency = b.into_db("urgency").unwrap();
    let inv = inventory(
        Some(("debian", "9.13")),
        vec![pkg(
            Ecosystem::Debian,
            "libxml2",
            "2.9.4+dfsg1-2.2+deb9u2",
            Some("libxml2"),
        )],
    );
    let f = finding(&inv, &with_urgency, "DLA-3012-1");
    assert_eq!(
        (f.severity, f.severity_source.as_deref(), f.score),
        (Severity::Low, Some("debian"), None)
    );
    // NVD would have said more: the urgency won by its place in the order, not by chance.
    let nvd = expected_nvd("CVE-2022-29824").unwrap();
    assert!(nvd.1 > Severity::Low, "{nvd:?}");
    // Without the urgency, the same finding takes NVD's rating.
    let f = finding(&inv, db(), "DLA-3012-1");
    assert_nvd(&f, &nvd);
}

#[test]
fn a_cve_with_only_cvss_v2_is_rated_on_the_v2_scale() {
    let inv = inventory(None, vec![pkg(Ecosystem::PyPI, "django", "1.2", None)]);
    let f = finding(&inv, db(), "PYSEC-2010-12");
    let rec = nvd_record("CVE-2010-3082").unwrap();
    assert!(rec["metrics"]["cvssMetricV31"].is_null() && rec["metrics"]["cvssMetricV30"].is_null());
    let expected = expected_nvd("CVE-2010-3082").unwrap();
    assert!(!expected.2.starts_with("CVSS:"));
    assert_nvd(&f, &expected);
}

#[test]
fn several_cves_take_the_highest() {
    // DLA-3172-1 fixes CVE-2022-40303 and CVE-2022-40304, rated differently by NVD.
    let inv = inventory(
        Some(("debian", "10.13")),
        vec![pkg(
            Ecosystem::Debian,
            "libxml2",
            "2.9.4+dfsg1-7+deb10u4",
            Some("libxml2"),
        )],
    );
    let f = finding(&inv, db(), "DLA-3172-1");
    let a = expected_nvd("CVE-2022-40303").unwrap();
    let b = expected_nvd("CVE-2022-40304").unwrap();
    assert_ne!(a.0, b.0, "the test needs two different ratings");
    let highest = if (a.1, a.0) > (b.1, b.0) { a } else { b };
    assert_nvd(&f, &highest);
}

#[test]
fn no_rating_anywhere_is_unknown() {
    // DLA-3051-1 (tzdata) names no CVE; PYSEC-2023-226's CVE-2023-43665 has an NVD record
    // not yet analysed (empty metrics).
    let inv = inventory(
        Some(("debian", "9.13")),
        vec![pkg(
            Ecosystem::Debian,
            "tzdata",
            "2021a-0+deb9u1",
            Some("tzdata"),
        )],
    );
    let f = finding(&inv, db(), "DLA-3051-1");
    assert_eq!(
        (f.severity, f.severity_source.as_deref()),
        (Severity::Unknown, None)
    );
    let inv = inventory(None, vec![pkg(Ecosystem::PyPI, "django", "3.2", None)]);
    let f = finding(&inv, db(), "PYSEC-2023-226");
    assert!(nvd_record("CVE-2023-43665").is_some());
    assert_eq!(expected_nvd("CVE-2023-43665"), None);
    assert_eq!(
        (f.severity, f.score, f.severity_source.as_deref()),
        (Severity::Unknown, None, None)
    );
}

#[test]
fn every_finding_without_a_rating_of_its_own_takes_nvds() {
    // The example's application packages and old Django: every finding whose records carry
    // no rating has NVD's, exactly as computed from the NVD records.
    let inv = inventory(
        None,
        vec![
            pkg(Ecosystem::PyPI, "django", "3.2", None),
            pkg(Ecosystem::PyPI, "django", "1.4", None),
            pkg(Ecosystem::PyPI, "PyYAML", "5.3", None),
        ],
    );
    let m = match_inventory(&inv, db()).unwrap();
    assert!(m.vulnerabilities.len() > 30);
    let mut from_nvd = 0;
    for f in &m.vulnerabilities {
        match expected_for(f) {
            Some(e) => {
                assert_nvd(f, &e);
                from_nvd += 1;
            }
            None => assert_eq!(f.severity, Severity::Unknown, "{}", f.id),
        }
    }
    assert!(from_nvd > 30, "{from_nvd}");
}

#[test]
fn nvd_sources_read_feeds_and_single_record_directories_alike() {
    // One yearly-feed-shaped file (gzip, xz and plain) holding the same records as the
    // mirror directory gives the same ratings.
    let dir = tempfile::tempdir().unwrap();
    let mut cves = Vec::new();
    for entry in walk(&testdata("nvd")) {
        let rec: Value = serde_json::from_slice(&std::fs::read(&entry).unwrap()).unwrap();
        cves.push(serde_json::json!({"cve": rec}));
    }
    let feed = serde_json::to_vec(&serde_json::json!({
        "resultsPerPage": cves.len(), "startIndex": 0, "totalResults": cves.len(),
        "format": "NVD_CVE", "version": "2.0", "timestamp": "2026-01-01T00:00:00.000",
        "vulnerabilities": cves,
    }))
    .unwrap();
    let gz = dir.path().join("nvdcve-2.0-all.json.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &feed).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let xz = dir.path().join("nvdcve-2.0-all.json.xz");
    let mut w =
        lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(1)).unwrap();
    std::io::Write::write_all(&mut w, &feed).unwrap();
    std::fs::write(&xz, w.finish().unwrap()).unwrap();
    let plain = dir.path().join("nvdcve-2.0-all.json");
    std::fs::write(&plain, &feed).unwrap();
    let flat = dir.path().join("flat");
    std::fs::create_dir(&flat).unwrap();
    for entry in walk(&testdata("nvd")) {
        std::fs::copy(&entry, flat.join(entry.file_name().unwrap())).unwrap();
    }
    let reference = db();
    for source in [&gz, &xz, &plain, &flat] {
        let mut b = DbBuilder::new();
        b.add_source(testdata("osv").to_str().unwrap()).unwrap();
        b.add_source(&format!("nvd:{}", source.display())).unwrap();
        let db = b.into_db("feed").unwrap();
        assert_eq!(
            db.info().nvd_records,
            reference.info().nvd_records,
            "{}",
            source.display()
        );
        assert_eq!(
            db.info().digest,
            reference.info().digest,
            "{}",
            source.display()
        );
        for cve in ["CVE-2019-14697", "CVE-2010-3082", "CVE-2022-40304"] {
            assert_eq!(db.nvd_rating(cve), reference.nvd_rating(cve));
        }
    }
    // A record with empty metrics adds nothing.
    assert!(reference.nvd_rating("CVE-2023-43665").is_none());
    assert_eq!(
        reference.info().nvd_records as usize,
        walk(&testdata("nvd"))
            .iter()
            .filter(|p| expected_nvd(p.file_stem().unwrap().to_str().unwrap()).is_some())
            .count()
    );
}

#[test]
fn malformed_and_truncated_feeds_are_errors_naming_the_file_and_keep_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("db.iwdb");
    let mut good = DbBuilder::new();
    good.add_source(testdata("osv").to_str().unwrap()).unwrap();
    let before = good.write_file(&index).unwrap();
    let record = std::fs::read(walk(&testdata("nvd"))[0].clone()).unwrap();
    let feed = format!(
        "{{\"vulnerabilities\": [{{\"cve\": {}}}]}}",
        String::from_utf8(record).unwrap()
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "truncated.json",
            feed.as_bytes()[..feed.len() - 40].to_vec(),
        ),
        (
            "malformed.json",
            feed.replace("\"metrics\"", "\"metrics\" 1").into_bytes(),
        ),
        ("truncated.json.gz", {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut enc, feed.as_bytes()).unwrap();
            let full = enc.finish().unwrap();
            full[..full.len() / 2].to_vec()
        }),
        ("not-gzip.json.gz", b"this is not gzip".to_vec()),
        ("old-format.json", br#"{"CVE_Items": []}"#.to_vec()),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_imagewarden"))
            .args(["db", "build", "--source"])
            .arg(testdata("osv"))
            .arg("--source")
            .arg(format!("nvd:{}", path.display()))
            .arg("--out")
            .arg(&index)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&path.display().to_string()),
            "{name}: {stderr}"
        );
        assert_eq!(
            Db::open_index(&index).unwrap().info().digest,
            before.digest,
            "{name}: the index in place is unchanged"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
    out.sort();
    out
}
