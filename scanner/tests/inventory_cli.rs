//! `imagewarden inventory` as a user runs it: JSON, CycloneDX and table output.

mod inventory_support;

use inventory_support::testdata;
use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_imagewarden"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn alpine() -> String {
    format!("docker-archive:{}", testdata("alpine-310.tar.gz").display())
}

#[test]
fn json_output_is_the_inventory_contract() {
    let (ok, out, err) = run(&["inventory", &alpine(), "--format", "json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["os"]["family"], "alpine");
    assert_eq!(v["os"]["version"], "3.10.4");
    let pkgs = v["packages"].as_array().unwrap();
    assert_eq!(pkgs.len(), 14);
    let ssl = pkgs.iter().find(|p| p["name"] == "libssl1.1").unwrap();
    assert_eq!(ssl["ecosystem"], "Alpine");
    assert_eq!(ssl["version"], "1.1.1d-r2");
    assert_eq!(ssl["sourceName"], "openssl");
    assert_eq!(ssl["path"], "lib/apk/db/installed");
    assert!(ssl["layer"].as_str().unwrap().starts_with("sha256:"));
    // The JSON reads back as the library type.
    let inv: imagewarden_scanner::inventory::Inventory = serde_json::from_str(&out).unwrap();
    assert_eq!(inv.packages.len(), 14);
}

#[test]
fn cyclonedx_output_is_a_1_5_bom_that_reads_back_as_an_sbom_input() {
    let tmp = tempfile::tempdir().unwrap();
    let bom = tmp.path().join("bom.json");
    let (ok, _, err) = run(&[
        "inventory",
        &alpine(),
        "--format",
        "cyclonedx",
        "--output",
        bom.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&bom).unwrap()).unwrap();
    assert_eq!(v["bomFormat"], "CycloneDX");
    assert_eq!(v["specVersion"], "1.5");
    let comps = v["components"].as_array().unwrap();
    assert_eq!(comps[0]["type"], "operating-system");
    assert_eq!(comps.len(), 15);
    let refs: std::collections::HashSet<&str> = comps
        .iter()
        .map(|c| c["bom-ref"].as_str().unwrap())
        .collect();
    assert_eq!(refs.len(), comps.len(), "bom-refs are unique");

    let (ok, out, err) = run(&[
        "inventory",
        &format!("sbom:{}", bom.display()),
        "--format",
        "json",
    ]);
    assert!(ok, "{err}");
    let inv: imagewarden_scanner::inventory::Inventory = serde_json::from_str(&out).unwrap();
    assert_eq!(inv.packages.len(), 14);
    assert_eq!(inv.os.unwrap().version, "3.10.4");
}

#[test]
fn table_output_and_a_clear_error_for_a_missing_file() {
    let (ok, out, err) = run(&["inventory", &alpine()]);
    assert!(ok, "{err}");
    assert!(out.contains("OS:     alpine 3.10.4"), "{out}");
    assert!(out
        .lines()
        .any(|l| l.starts_with("Alpine") && l.contains("libssl1.1") && l.contains("openssl")));
    let (ok, _, err) = run(&["inventory", "docker-archive:/nonexistent/image.tar"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/image.tar"), "{err}");
}

#[test]
fn scan_budgets_are_flags_and_environment_variables() {
    // The alpine image's installed database is about 9 KiB: a 4 KiB file budget skips it
    // with a warning; a 4 KiB retained budget fails the scan with the reason.
    let (ok, out, err) = run(&[
        "inventory",
        &alpine(),
        "--format",
        "json",
        "--max-file-bytes",
        "4Ki",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["packages"].as_array().unwrap().is_empty());
    assert!(
        out.contains("--max-file-bytes") || err.contains("--max-file-bytes"),
        "{out}{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_imagewarden"))
        .args(["inventory", &alpine(), "--format", "json"])
        .env("IMAGEWARDEN_MAX_RETAINED_BYTES", "4Ki")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("retained-bytes budget") && err.contains("4 KiB"),
        "{err}"
    );

    let (ok, _, err) = run(&["inventory", &alpine(), "--max-file-bytes", "lots"]);
    assert!(!ok);
    assert!(err.contains("not a byte count"), "{err}");
}
