//! `imagewarden scan TARGET` on the real images and SBOMs in testdata, against the
//! real OSV records in testdata/osv. Expected sets were computed independently
//! (`dpkg --compare-versions` for Debian, the records' ranges read by hand for Go).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn testdata(p: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(p)
        .to_str()
        .unwrap()
        .to_string()
}

fn scan(target: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_imagewarden"))
        .args(["scan", target, "--db", &testdata("osv"), "--format", "json"])
        .env_remove("IMAGEWARDEN_DB")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn findings(r: &Value, class: &str) -> BTreeSet<(String, String)> {
    r["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["class"] == class)
        .map(|v| {
            (
                v["id"].as_str().unwrap().to_string(),
                v["package"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn alpine_310_image_has_no_open_secdb_advisories() {
    // Every v3.10 secfix for the image's 14 packages is at or below the installed version.
    let r = scan(&format!("docker-archive:{}", testdata("alpine-310.tar.gz")));
    assert_eq!(r["os"]["family"], "alpine");
    assert_eq!(r["os"]["version"], "3.10.4");
    assert_eq!(r["vulnerabilities"], serde_json::json!([]));
    assert_eq!(r["summary"]["unknown"], 0);
}

#[test]
fn alpine_311_image_has_no_open_secdb_advisories() {
    // openssl 1.1.1d-r3 is exactly the CVE-2019-1551 fix; nothing later is in this secdb snapshot.
    let r = scan(&format!("docker-archive:{}", testdata("alpine-311.tar.gz")));
    assert_eq!(r["os"]["version"], "3.11.5");
    assert_eq!(r["vulnerabilities"], serde_json::json!([]));
}

#[test]
fn postgres_stretch_sbom_finds_debian_and_go_advisories() {
    let r = scan(&format!(
        "sbom:{}",
        testdata("sbom-postgres-stretch.cdx.xml")
    ));
    assert_eq!(
        findings(&r, "os"),
        pairs(&[
            ("DLA-3008-1", "libssl1.1"),
            ("DLA-3008-1", "openssl"),
            ("DLA-3012-1", "libxml2"),
            ("DLA-3022-1", "dpkg"),
            ("DLA-3051-1", "tzdata"),
        ])
    );
    let runc = "github.com/opencontainers/runc";
    let mut go: Vec<(&str, &str)> = [
        "GO-2022-0274",
        "GO-2022-0452",
        "GO-2023-1627",
        "GO-2023-1682",
        "GO-2023-1683",
        "GO-2024-2491",
        "GO-2024-3110",
        "GO-2025-4096",
        "GO-2025-4097",
        "GO-2025-4098",
        "GO-2026-5761",
    ]
    .iter()
    .map(|id| (*id, runc))
    .collect();
    go.extend([
        ("GO-2022-0493", "golang.org/x/sys"),
        ("GO-2026-5024", "golang.org/x/sys"),
    ]);
    assert_eq!(findings(&r, "app"), pairs(&go));
    let dla = r["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == "DLA-3008-1")
        .unwrap();
    assert_eq!(dla["fixedVersion"], "1.1.0l-1~deb9u6");
    assert!(dla["package"]["purl"]
        .as_str()
        .unwrap()
        .starts_with("pkg:deb/debian/"));
}

#[test]
fn postgres_stretch_sbom_findings_with_nvd_records_all_have_a_severity() {
    // With the NVD records of the test data: a finding is unknown only when none of its
    // CVEs has an analysed NVD record (and its records carry no rating of their own).
    let out = Command::new(env!("CARGO_BIN_EXE_imagewarden"))
        .args([
            "scan",
            &format!("sbom:{}", testdata("sbom-postgres-stretch.cdx.xml")),
            "--db",
            &format!("{},nvd:{}", testdata("osv"), testdata("nvd")),
            "--format",
            "json",
        ])
        .env_remove("IMAGEWARDEN_DB")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let analysed = |cve: &str| -> bool {
        let mut parts = cve.split('-').skip(1);
        let (Some(year), Some(number)) = (parts.next(), parts.next()) else {
            return false;
        };
        let path = format!(
            "{}/CVE-{year}/CVE-{year}-{}xx/{cve}.json",
            testdata("nvd"),
            &number[..number.len() - 2]
        );
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|rec| {
                rec["metrics"].as_object().is_some_and(|m| {
                    m.values()
                        .any(|l| l.as_array().is_some_and(|l| !l.is_empty()))
                })
            })
    };
    let vulns = r["vulnerabilities"].as_array().unwrap();
    let mut from_nvd = 0;
    for v in vulns {
        let cves: Vec<String> = std::iter::once(&v["id"])
            .chain(v["aliases"].as_array().unwrap().iter())
            .filter_map(|i| i.as_str())
            .filter_map(|id| id.rfind("CVE-").map(|at| id[at..].to_string()))
            .collect();
        if cves.iter().any(|c| analysed(c)) {
            assert_ne!(v["severity"], "unknown", "{v}");
        }
        if v["severitySource"] == "nvd" {
            from_nvd += 1;
            assert!(v["vector"].is_string() && v["score"].is_number(), "{v}");
        }
    }
    assert!(from_nvd >= 4, "{from_nvd} of {} rated by NVD", vulns.len());
}
