//! `imagewarden db` and `imagewarden scan --inventory` end to end: the binary, real
//! OSV records, and the report formats' shapes.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn osv_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/osv")
}

fn imagewarden(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_imagewarden"))
        .args(args)
        .env_remove("IMAGEWARDEN_DB")
        .output()
        .unwrap();
    assert!(out.status.code().is_some(), "killed by a signal");
    out
}

/// A Debian 9 image with an old OpenSSL and an application layer with lodash and PyYAML.
const INVENTORY: &str = r#"{
  "target": "registry.example/app:1.0",
  "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000001",
  "os": {"family": "debian", "version": "9.13"},
  "packages": [
    {"ecosystem": "Debian", "name": "libssl1.1", "version": "1.1.0f-3+deb9u2", "sourceName": "openssl",
     "purl": "pkg:deb/debian/libssl1.1@1.1.0f-3%2Bdeb9u2?arch=amd64&upstream=openssl&distro=debian-9",
     "layer": "sha256:aaaa", "path": "/var/lib/dpkg/status"},
    {"ecosystem": "npm", "name": "lodash", "version": "4.17.15", "purl": "pkg:npm/lodash@4.17.15",
     "path": "/app/node_modules/lodash/package.json"},
    {"ecosystem": "PyPI", "name": "pyyaml", "version": "5.3", "purl": "pkg:pypi/pyyaml@5.3",
     "path": "/usr/lib/python3/dist-packages/PyYAML-5.3.dist-info/METADATA"}
  ]
}"#;

struct Fixture {
    _tmp: tempfile::TempDir,
    index: PathBuf,
    inventory: PathBuf,
    dir: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let index = dir.join("osv.iwdb");
    let out = imagewarden(&[
        "db",
        "build",
        "--source",
        osv_dir().to_str().unwrap(),
        "--out",
        index.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inventory = dir.join("inventory.json");
    std::fs::write(&inventory, INVENTORY).unwrap();
    Fixture {
        _tmp: tmp,
        index,
        inventory,
        dir,
    }
}

fn scan_json(f: &Fixture, extra: &[&str]) -> (Value, i32) {
    let mut args = vec![
        "scan",
        "--inventory",
        f.inventory.to_str().unwrap(),
        "--db",
        f.index.to_str().unwrap(),
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = imagewarden(&args);
    let code = out.status.code().unwrap();
    assert!(
        code != 2,
        "scan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (serde_json::from_slice(&out.stdout).unwrap(), code)
}

fn ids(report: &Value) -> Vec<String> {
    report["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn db_info_prints_ecosystems_counts_and_dates() {
    let f = fixture();
    let out = imagewarden(&["db", "info", f.index.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "Debian:9",
        "Alpine:v3.10",
        "PyPI",
        "crates.io",
        "newest modified:",
        "built at:",
        "withdrawn:       3 skipped",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    let out = imagewarden(&["db", "info", "--json", f.index.to_str().unwrap()]);
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["format"], 2);
    assert!(info["records"].as_u64().unwrap() > 200);
}

#[test]
fn json_report_is_the_documented_contract() {
    let f = fixture();
    let (r, code) = scan_json(&f, &[]);
    assert_eq!(code, 0);
    assert_eq!(r["target"], "registry.example/app:1.0");
    assert_eq!(r["os"]["family"], "debian");
    assert!(r["database"]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    for k in ["critical", "high", "medium", "low", "unknown"] {
        assert!(r["summary"][k].is_u64(), "summary.{k}");
    }
    let total: u64 = ["critical", "high", "medium", "low", "unknown"]
        .iter()
        .map(|k| r["summary"][k].as_u64().unwrap())
        .sum();
    assert_eq!(total as usize, ids(&r).len());
    let dla = r["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == "DLA-3008-1")
        .unwrap();
    for k in [
        "id",
        "aliases",
        "severity",
        "score",
        "package",
        "fixedVersion",
        "title",
        "link",
        "class",
    ] {
        assert!(dla.get(k).is_some(), "vulnerability.{k} missing: {dla}");
    }
    for k in ["ecosystem", "name", "version", "purl"] {
        assert!(dla["package"].get(k).is_some(), "package.{k}");
    }
    assert_eq!(dla["fixedVersion"], "1.1.0l-1~deb9u6");
    assert_eq!(dla["class"], "os");
    assert_eq!(dla["package"]["ecosystem"], "Debian");
    assert_eq!(dla["aliases"][0], "CVE-2022-1292");
    let lodash = r["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == "NSWG-ECO-516")
        .unwrap();
    assert_eq!(lodash["severity"], "medium");
    assert_eq!(lodash["score"], 6.3);
    assert_eq!(lodash["class"], "app");
    // The first entries are the most severe.
    assert_eq!(r["vulnerabilities"][0]["id"], "NSWG-ECO-516");
}

#[test]
fn osv_directory_works_as_db_without_building() {
    let f = fixture();
    let (from_index, _) = scan_json(&f, &[]);
    let out = imagewarden(&[
        "scan",
        "--inventory",
        f.inventory.to_str().unwrap(),
        "--db",
        osv_dir().to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_dir: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&from_index), ids(&from_dir));
}

#[test]
fn exit_code_applies_at_the_fail_on_severity() {
    let f = fixture();
    // The records rate one finding (NSWG-ECO-516, CVSS 6.3) and leave the others unknown.
    let (_, code) = scan_json(&f, &["--exit-code", "3", "--fail-on", "high"]);
    assert_eq!(code, 0, "nothing is rated high");
    let (_, code) = scan_json(&f, &["--exit-code", "3", "--fail-on", "medium"]);
    assert_eq!(code, 3);
    let (_, code) = scan_json(
        &f,
        &[
            "--exit-code",
            "3",
            "--fail-on",
            "medium",
            "--severity",
            "low,unknown",
        ],
    );
    assert_eq!(code, 0, "the medium finding is not reported");
    let (_, code) = scan_json(&f, &["--exit-code", "5"]);
    assert_eq!(code, 5, "by default any finding fails");
    let (r, code) = scan_json(
        &f,
        &[
            "--exit-code",
            "4",
            "--fail-on",
            "medium",
            "--severity",
            "medium",
        ],
    );
    assert_eq!(code, 4);
    assert_eq!(ids(&r), vec!["NSWG-ECO-516".to_string()]);
    assert!(r["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["severity"] == "medium"));
}

#[test]
fn ignore_files_remove_findings_until_they_expire() {
    let f = fixture();
    let yaml = f.dir.join("ignore.yaml");
    std::fs::write(
        &yaml,
        "vulnerabilities:\n  - id: CVE-2022-1292\n    package: openssl\n    expires: 2999-01-01\n    reason: tracked elsewhere\n  - id: NSWG-ECO-516\n    expires: 2001-01-01\n",
    )
    .unwrap();
    let (r, _) = scan_json(&f, &["--ignore-file", yaml.to_str().unwrap()]);
    assert!(
        !ids(&r).contains(&"DLA-3008-1".to_string()),
        "ignored through its CVE alias and source package"
    );
    assert!(
        ids(&r).contains(&"NSWG-ECO-516".to_string()),
        "an expired rule no longer applies"
    );
    assert_eq!(r["ignored"], serde_json::json!(["DLA-3008-1"]));
    let plain = f.dir.join(".imagewardenignore");
    std::fs::write(
        &plain,
        "# accepted\nGHSA-6757-jp84-gxfx package=pyyaml exp:2999-12-31\n",
    )
    .unwrap();
    let (r, _) = scan_json(&f, &["--ignore-file", plain.to_str().unwrap()]);
    assert!(!ids(&r).contains(&"PYSEC-2020-96".to_string()));
    assert!(ids(&r).contains(&"PYSEC-2021-142".to_string()));
    assert!(ids(&r).contains(&"DLA-3008-1".to_string()));
}

#[test]
fn ignore_unfixed_keeps_findings_with_a_fix() {
    let f = fixture();
    let (all, _) = scan_json(&f, &[]);
    let (fixed, _) = scan_json(&f, &["--ignore-unfixed"]);
    // Every record in this data names a fixed version.
    assert_eq!(ids(&all), ids(&fixed));
    assert!(fixed["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["fixedVersion"].is_string()));
}

fn scan_format(f: &Fixture, format: &str) -> Value {
    let out = imagewarden(&[
        "scan",
        "--inventory",
        f.inventory.to_str().unwrap(),
        "--db",
        f.index.to_str().unwrap(),
        "--format",
        format,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn sarif_report_has_rules_and_results_for_code_scanning() {
    let f = fixture();
    let s = scan_format(&f, "sarif");
    assert_eq!(s["version"], "2.1.0");
    let run = &s["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "imagewarden");
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    let results = run["results"].as_array().unwrap();
    assert!(!results.is_empty());
    for res in results {
        let rule = &rules[res["ruleIndex"].as_u64().unwrap() as usize];
        assert_eq!(rule["id"], res["ruleId"]);
        assert!(rule["properties"]["security-severity"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .is_ok());
        assert!(["error", "warning", "note"].contains(&res["level"].as_str().unwrap()));
        assert!(res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].is_string());
    }
    let dla = results
        .iter()
        .find(|r| r["ruleId"] == "DLA-3008-1")
        .unwrap();
    assert_eq!(
        dla["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "var/lib/dpkg/status"
    );
}

#[test]
fn cyclonedx_report_links_vulnerabilities_to_components() {
    let f = fixture();
    let c = scan_format(&f, "cyclonedx");
    assert_eq!(c["bomFormat"], "CycloneDX");
    assert_eq!(c["specVersion"], "1.5");
    let refs: Vec<&str> = c["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["bom-ref"].as_str().unwrap())
        .collect();
    let vulns = c["vulnerabilities"].as_array().unwrap();
    assert!(!vulns.is_empty());
    for v in vulns {
        assert!(refs.contains(&v["affects"][0]["ref"].as_str().unwrap()));
    }
    let lodash = vulns.iter().find(|v| v["id"] == "NSWG-ECO-516").unwrap();
    assert_eq!(lodash["ratings"][0]["method"], "CVSSv3");
    assert_eq!(lodash["ratings"][0]["score"], 6.3);
    assert_eq!(lodash["affects"][0]["ref"], "pkg:npm/lodash@4.17.15");
}

#[test]
fn table_lists_findings_with_their_fixes() {
    let f = fixture();
    let out = imagewarden(&[
        "scan",
        "--inventory",
        f.inventory.to_str().unwrap(),
        "--db",
        f.index.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("registry.example/app:1.0 (debian 9.13)"),
        "{text}"
    );
    assert!(text.contains("Total: "));
    let line = text.lines().find(|l| l.contains("DLA-3008-1")).unwrap();
    assert!(
        line.starts_with("libssl1.1") && line.contains("1.1.0l-1~deb9u6"),
        "{line}"
    );
}

#[test]
fn scan_without_inventory_or_db_explains_what_to_do() {
    let out = imagewarden(&[
        "scan",
        "--inventory",
        "/nonexistent/inventory.json",
        "--db",
        "/nonexistent/db",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cannot read inventory /nonexistent/inventory.json"));
}

#[test]
fn releases_and_ecosystems_without_advisories_are_reported_as_unchecked() {
    let f = fixture();
    let inv = f.dir.join("bookworm.json");
    std::fs::write(
        &inv,
        r#"{"target": "debian:12", "os": {"family": "debian", "version": "12.5"}, "packages": [
            {"ecosystem": "Debian", "name": "libssl3", "version": "3.0.11-1~deb12u2", "sourceName": "openssl", "purl": "", "path": ""},
            {"ecosystem": "Maven", "name": "org.apache.logging.log4j:log4j-core", "version": "2.14.1", "purl": "", "path": ""},
            {"ecosystem": "npm", "name": "lodash", "version": "4.17.21", "purl": "", "path": ""}]}"#,
    )
    .unwrap();
    let out = imagewarden(&[
        "scan",
        "--inventory",
        inv.to_str().unwrap(),
        "--db",
        f.index.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        r["warnings"],
        serde_json::json!([
            "the vulnerability database has no advisories for Debian:12: 1 package(s) not checked",
            "the vulnerability database has no advisories for Maven: 1 package(s) not checked"
        ])
    );
    let (r, _) = scan_json(&f, &[]);
    assert!(
        r.get("warnings").is_none(),
        "every package of the fixture is covered"
    );
}
