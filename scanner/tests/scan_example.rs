//! `imagewarden scan` without arguments: the bundled example image and database.

use std::path::Path;
use std::process::Command;

use imagewarden_scanner::vulndb::Db;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn bundled_example_database_is_current_with_the_test_data() {
    let bundled = Db::open_index(&manifest_dir().join("examples/example-db.idx")).unwrap();
    let fresh = Db::load(&[manifest_dir().join("testdata/osv").display().to_string()]).unwrap();
    assert_eq!(
        bundled.info().digest,
        fresh.info().digest,
        "rebuild it: imagewarden db build --source scanner/testdata/osv --out scanner/examples/example-db.idx"
    );
}

#[test]
fn scan_without_arguments_scans_the_bundled_example_offline() {
    let out = Command::new(env!("CARGO_BIN_EXE_imagewarden"))
        .args(["scan", "--format", "json"])
        .env_remove("IMAGEWARDEN_DB")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["os"]["family"], "alpine");
    assert_eq!(report["os"]["version"], "3.10.4");
    let found: Vec<(String, String)> = report["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["id"].as_str().unwrap().to_string(),
                v["package"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (id, package) in [
        ("PYSEC-2020-96", "pyyaml"),
        ("PYSEC-2021-7", "django"),
        ("NSWG-ECO-516", "lodash"),
    ] {
        assert!(
            found.contains(&(id.to_string(), package.to_string())),
            "{id} for {package} missing from {found:?}"
        );
    }
}

#[test]
fn scan_of_a_named_image_without_a_database_says_what_is_missing() {
    let out = Command::new(env!("CARGO_BIN_EXE_imagewarden"))
        .args(["scan", "docker-archive:/nonexistent.tar"])
        .env_remove("IMAGEWARDEN_DB")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--db is required"));
}
