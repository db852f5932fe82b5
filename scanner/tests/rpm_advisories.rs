//! rpm-based images against their distribution's advisories. The rpm databases are written
//! by rpm itself: `rpmbuild` packages with real names, epochs and versions, recorded with
//! `rpm --justdb` in rpm's SQLite form (el9) and copied into a Berkeley DB `Packages` file
//! (el8), inside images with the distributions' own os-release files. They are matched
//! against the real AlmaLinux OSV records in testdata/osv/AlmaLinux, and the expected
//! findings are computed here from those records with rpm's own version comparison
//! (`rpm.vercmp`). Needs `rpm` and `rpmbuild`, and `db5.3_load` for the Berkeley DB form
//! (tests/scripts/install-deps.sh installs them); without them the tests say so and pass.

mod inventory_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use imagewarden_scanner::finding::Finding;
use imagewarden_scanner::inventory::Inventory;
use imagewarden_scanner::matcher::{match_inventory, Matches};
use imagewarden_scanner::report::coverage_warnings;
use imagewarden_scanner::vulndb::{Db, Severity};
use inventory_support::*;

/// One package to build.
struct Rpm {
    name: &'static str,
    epoch: Option<u32>,
    version: &'static str,
    release: &'static str,
    vendor: Option<&'static str>,
    modularity_label: Option<&'static str>,
}

impl Rpm {
    fn evr(&self) -> String {
        match self.epoch {
            Some(e) => format!("{e}:{}-{}", self.version, self.release),
            None => format!("{}-{}", self.version, self.release),
        }
    }
}

const ALMA: Option<&str> = Some("AlmaLinux");

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Builds an rpm with no files (rpmbuild -bb) and returns its path.
fn build(dir: &Path, p: &Rpm) -> PathBuf {
    let mut spec = format!(
        "Name: {}\nVersion: {}\nRelease: {}\nSummary: test package\nLicense: MIT\nBuildArch: noarch\n",
        p.name, p.version, p.release
    );
    if let Some(e) = p.epoch {
        spec.push_str(&format!("Epoch: {e}\n"));
    }
    if let Some(v) = p.vendor {
        spec.push_str(&format!("Vendor: {v}\n"));
    }
    if let Some(m) = p.modularity_label {
        spec.push_str(&format!("ModularityLabel: {m}\n"));
    }
    spec.push_str("%description\ntest package\n%files\n");
    let spec_path = dir.join(format!("{}.spec", p.name));
    std::fs::write(&spec_path, spec).unwrap();
    let top = dir.join("top");
    run(Command::new("rpmbuild")
        .arg("-bb")
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .args(["--define", "debug_package %{nil}"])
        .arg(&spec_path));
    top.join("RPMS/noarch")
        .join(format!("{}-{}-{}.noarch.rpm", p.name, p.version, p.release))
}

/// An rpm database (rpm's default SQLite form) with `pkgs` recorded in it; returns its
/// directory.
fn rpmdb(dir: &Path, pkgs: &[Rpm]) -> PathBuf {
    let files: Vec<PathBuf> = pkgs.iter().map(|p| build(dir, p)).collect();
    let db = dir.join("rpmdb");
    std::fs::create_dir_all(&db).unwrap();
    run(Command::new("rpm").arg("--dbpath").arg(&db).arg("--initdb"));
    run(Command::new("rpm")
        .arg("--dbpath")
        .arg(&db)
        .args([
            "-i",
            "--justdb",
            "--nodeps",
            "--noscripts",
            "--ignorearch",
            "--ignoreos",
        ])
        .args(&files));
    let listed =
        run(Command::new("rpm")
            .arg("--dbpath")
            .arg(&db)
            .args(["-qa", "--qf", "%{NAME}\\n"]));
    assert_eq!(listed.lines().count(), pkgs.len(), "{listed}");
    db
}

/// The header blobs of an SQLite rpm database written as the Berkeley DB hash `Packages`
/// file of rpm before 4.16 (key: package number, little-endian; value: the header), with
/// Berkeley DB's own `db5.3_load`. rpm's read-only Berkeley DB backend must list them.
fn berkeley_db(sqlite_dir: &Path, dir: &Path) -> Vec<u8> {
    let conn = rusqlite::Connection::open(sqlite_dir.join("rpmdb.sqlite")).unwrap();
    let mut stmt = conn.prepare("SELECT hnum, blob FROM Packages").unwrap();
    let rows: Vec<(u32, Vec<u8>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut dump =
        String::from("VERSION=3\nformat=bytevalue\ntype=hash\ndb_pagesize=4096\nHEADER=END\n");
    for (hnum, blob) in &rows {
        dump.push_str(&format!(
            " {}\n {}\n",
            hex::encode(hnum.to_le_bytes()),
            hex::encode(blob)
        ));
    }
    dump.push_str("DATA=END\n");
    let bdb = dir.join("bdb");
    std::fs::create_dir_all(&bdb).unwrap();
    std::fs::write(dir.join("dump"), dump).unwrap();
    run(Command::new("db5.3_load")
        .arg("-f")
        .arg(dir.join("dump"))
        .arg(bdb.join("Packages")));
    let listed = run(Command::new("rpm").arg("--dbpath").arg(&bdb).args([
        "--define",
        "_db_backend bdb_ro",
        "-qa",
        "--qf",
        "%{NAME}\\n",
    ]));
    assert_eq!(listed.lines().count(), rows.len(), "{listed}");
    std::fs::read(bdb.join("Packages")).unwrap()
}

/// The inventory of a one-layer image with these files.
fn image(files: &[(&str, Vec<u8>)]) -> Inventory {
    let tmp = tempfile::tempdir().unwrap();
    let entries: Vec<Entry> = files.iter().map(|(p, d)| file(p, d)).collect();
    Layout::single(tmp.path(), &[gzip(&tar_layer(&entries))]);
    let scanned = scan(&format!("oci-layout:{}", tmp.path().display())).unwrap();
    assert!(scanned.warnings.is_empty(), "{:?}", scanned.warnings);
    scanned.inventory
}

fn os_release(name: &str) -> Vec<u8> {
    std::fs::read(testdata("os-release").join(name)).unwrap()
}

fn osv_dir() -> PathBuf {
    testdata("osv").join("AlmaLinux")
}

/// One `affected[]` entry of a record, as the test reads it.
struct AdvisoryEntry {
    id: String,
    summary: String,
    related: Vec<String>,
    ecosystem: String,
    name: String,
    fixed: String,
}

fn entries() -> Vec<AdvisoryEntry> {
    let mut out = Vec::new();
    for f in std::fs::read_dir(osv_dir()).unwrap() {
        let path = f.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        for a in rec["affected"].as_array().unwrap() {
            for r in a["ranges"].as_array().unwrap() {
                for e in r["events"].as_array().unwrap() {
                    if let Some(fixed) = e["fixed"].as_str() {
                        out.push(AdvisoryEntry {
                            id: rec["id"].as_str().unwrap().into(),
                            summary: rec["summary"].as_str().unwrap().into(),
                            related: rec["related"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|v| v.as_str().unwrap().to_string())
                                .collect(),
                            ecosystem: a["package"]["ecosystem"].as_str().unwrap().into(),
                            name: a["package"]["name"].as_str().unwrap().into(),
                            fixed: fixed.into(),
                        });
                    }
                }
            }
        }
    }
    out
}

impl AdvisoryEntry {
    /// The module stream the record is for, as its summary names it ("Important: nodejs:22
    /// security update"), when the fix is a module build.
    fn stream(&self) -> Option<String> {
        let release = self.fixed.rsplit_once('-').unwrap().1;
        if !release.contains(".module") {
            return None;
        }
        let rest = self.summary.split_once(": ").unwrap().1;
        rest.split_whitespace()
            .find(|w| w.contains(':'))
            .map(str::to_string)
    }
}

/// `rpm.vercmp(a, b)` for every pair, in one rpm run.
fn vercmp(pairs: &[(String, String)]) -> Vec<i32> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs");
    let text: String = pairs.iter().map(|(a, b)| format!("{a} {b}\n")).collect();
    std::fs::write(&input, text).unwrap();
    let script = format!(
        "%{{lua: for l in io.lines(\"{}\") do local a, b = l:match(\"^(%S+) (%S+)$\"); io.write(rpm.vercmp(a, b), \"\\n\") end}}",
        input.display()
    );
    let out = run(Command::new("rpm").args(["--eval", &script]));
    let answers: Vec<i32> = out
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(answers.len(), pairs.len());
    answers
}

/// The records whose `fixed` version is above `pkg`'s installed one (by `rpm.vercmp`), among
/// the entries of `ecosystem` naming the package's binary name; security errata only when
/// `security_only`; only those for the package's module stream (or, outside one, not for
/// any) when `by_stream`.
fn affected_by_version(
    all: &[AdvisoryEntry],
    ecosystem: &str,
    pkg: &Rpm,
    security_only: bool,
    by_stream: bool,
) -> BTreeSet<String> {
    let stream = pkg
        .modularity_label
        .map(|l| l.splitn(3, ':').take(2).collect::<Vec<_>>().join(":"));
    let candidates: Vec<&AdvisoryEntry> = all
        .iter()
        .filter(|e| e.ecosystem == ecosystem && e.name == pkg.name)
        .filter(|e| !security_only || e.id.starts_with("ALSA-"))
        .filter(|e| !by_stream || e.stream() == stream)
        .collect();
    let pairs: Vec<(String, String)> = candidates
        .iter()
        .map(|e| (pkg.evr(), e.fixed.clone()))
        .collect();
    candidates
        .iter()
        .zip(vercmp(&pairs))
        .filter(|(_, c)| *c < 0)
        .map(|(e, _)| e.id.clone())
        .collect()
}

fn found_for(m: &Matches, name: &str) -> BTreeSet<String> {
    m.vulnerabilities
        .iter()
        .filter(|f| f.package.name == name)
        .map(|f| f.id.clone())
        .collect()
}

fn tools(with_bdb: bool) -> bool {
    let ok = have("rpm") && have("rpmbuild") && (!with_bdb || have("db5.3_load"));
    if !ok {
        println!(
            "skipped: rpm, rpmbuild or db5.3_load is not installed (tests/scripts/install-deps.sh)"
        );
    }
    ok
}

const OPENSSL: Rpm = Rpm {
    name: "openssl-libs",
    epoch: Some(1),
    version: "3.0.1",
    release: "41.el9_0",
    vendor: ALMA,
    modularity_label: None,
};
const NODEJS_22: Rpm = Rpm {
    name: "nodejs",
    epoch: Some(1),
    version: "22.13.1",
    release: "1.module_el9.5.0+139+09296491",
    vendor: ALMA,
    modularity_label: Some("nodejs:22:9050020250115104339:rhel9"),
};
const QATZIP: Rpm = Rpm {
    name: "qatzip-libs",
    epoch: None,
    version: "1.0.7",
    release: "1.el9",
    vendor: ALMA,
    modularity_label: None,
};
const EPEL_LIBXML2: Rpm = Rpm {
    name: "libxml2",
    epoch: None,
    version: "2.9.13",
    release: "3.el9_1",
    vendor: Some("Fedora Project"),
    modularity_label: None,
};

#[test]
fn almalinux_9_sqlite_image_reports_its_errata_by_rpm_order_stream_and_vendor() {
    if !tools(false) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pkgs = [OPENSSL, NODEJS_22, QATZIP, EPEL_LIBXML2];
    let db_dir = rpmdb(tmp.path(), &pkgs);
    let inv = image(&[
        ("etc/os-release", os_release("almalinux-9.4")),
        (
            "var/lib/rpm/rpmdb.sqlite",
            std::fs::read(db_dir.join("rpmdb.sqlite")).unwrap(),
        ),
    ]);
    assert_eq!(inv.os.as_ref().unwrap().family, "almalinux");
    let nodejs = inv.packages.iter().find(|p| p.name == "nodejs").unwrap();
    assert_eq!(nodejs.module.as_deref(), Some("nodejs:22"));
    assert_eq!(nodejs.vendor.as_deref(), Some("AlmaLinux"));

    let db = Db::load(&[osv_dir().display().to_string()]).unwrap();
    let m = match_inventory(&inv, &db).unwrap();
    let all = entries();

    // openssl-libs 1:3.0.1-41.el9_0: every later security erratum, computed by rpm.
    let want = affected_by_version(&all, "AlmaLinux:9", &OPENSSL, true, true);
    println!("openssl-libs {}: {} errata", OPENSSL.evr(), want.len());
    assert!(want.contains("ALSA-2022:7288") && !want.contains("ALSA-2022:6224"));
    assert_eq!(found_for(&m, "openssl-libs"), want);
    let f: &Finding = m
        .vulnerabilities
        .iter()
        .find(|f| f.id == "ALSA-2022:7288")
        .unwrap();
    let record = all
        .iter()
        .find(|e| e.id == "ALSA-2022:7288" && e.name == "openssl-libs")
        .unwrap();
    assert_eq!(f.fixed_version.as_deref(), Some(record.fixed.as_str()));
    assert_eq!(f.related, record.related);
    // Shown after the title: "Important: openssl security update (CVE-2022-3602, ...)".
    let shown = imagewarden_scanner::report::display_title(f);
    assert!(
        record
            .related
            .iter()
            .all(|cve| shown.contains(cve.as_str())),
        "{shown}"
    );
    // The vendor's rating is the summary's first word: Important is High.
    assert!(record.summary.starts_with("Important:"));
    assert_eq!(f.severity, Severity::High);

    // nodejs from the nodejs:22 stream: that stream's errata only, though errata for
    // nodejs:24 name higher versions too.
    let want = affected_by_version(&all, "AlmaLinux:9", &NODEJS_22, true, true);
    let any_stream = affected_by_version(&all, "AlmaLinux:9", &NODEJS_22, true, false);
    println!(
        "nodejs:22 package: {} of {} errata by version are for its stream",
        want.len(),
        any_stream.len()
    );
    assert!(!want.is_empty() && want.len() < any_stream.len());
    assert_eq!(found_for(&m, "nodejs"), want);

    // A bug-fix erratum (ALBA) whose fix is above the installed version is no finding.
    let bugfix = affected_by_version(&all, "AlmaLinux:9", &QATZIP, false, true);
    assert!(
        bugfix.iter().any(|id| id.starts_with("ALBA-")),
        "{bugfix:?}"
    );
    assert_eq!(found_for(&m, "qatzip-libs"), BTreeSet::new());

    // libxml2 from another vendor: AlmaLinux's errata do not apply, and the report says so.
    let by_version = affected_by_version(&all, "AlmaLinux:9", &EPEL_LIBXML2, true, true);
    assert!(!by_version.is_empty());
    assert_eq!(found_for(&m, "libxml2"), BTreeSet::new());
    let warnings = coverage_warnings(&inv, db.info());
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("other vendors") && w.contains("Fedora Project: 1")),
        "{warnings:?}"
    );
}

#[test]
fn almalinux_8_berkeley_db_image_reports_its_errata() {
    if !tools(true) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The real build that ALSA-2024:0265 shipped.
    let java = Rpm {
        name: "java-1.8.0-openjdk-headless",
        epoch: Some(1),
        version: "1.8.0.402.b06",
        release: "2.el8",
        vendor: ALMA,
        modularity_label: None,
    };
    let db_dir = rpmdb(tmp.path(), std::slice::from_ref(&java));
    let packages = berkeley_db(&db_dir, tmp.path());
    let inv = image(&[
        ("etc/os-release", os_release("almalinux-8.10")),
        ("var/lib/rpm/Packages", packages),
    ]);
    let db = Db::load(&[osv_dir().display().to_string()]).unwrap();
    let m = match_inventory(&inv, &db).unwrap();
    let all = entries();
    let want = affected_by_version(&all, "AlmaLinux:8", &java, true, true);
    assert!(
        !want.contains("ALSA-2024:0265") && want.len() > 5,
        "{want:?}"
    );
    assert_eq!(found_for(&m, java.name), want);
    // The el9 build of the same package has its own entries, not used for an el8 image.
    assert!(m.vulnerabilities.iter().all(|f| f
        .fixed_version
        .as_deref()
        .is_some_and(|v| v.ends_with(".el8"))));
}

#[test]
fn alibaba_cloud_linux_image_warns_that_no_advisory_source_exists() {
    if !tools(true) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let openssl = Rpm {
        name: "openssl-libs",
        epoch: Some(1),
        version: "1.1.1k",
        release: "5.al8",
        vendor: Some("Alibaba Cloud"),
        modularity_label: None,
    };
    let db_dir = rpmdb(tmp.path(), std::slice::from_ref(&openssl));
    let inv = image(&[
        ("etc/os-release", os_release("alinux-3")),
        ("var/lib/rpm/Packages", berkeley_db(&db_dir, tmp.path())),
    ]);
    assert_eq!(inv.os.as_ref().unwrap().family, "alinux");
    let db = Db::load(&[osv_dir().display().to_string()]).unwrap();
    let m = match_inventory(&inv, &db).unwrap();
    assert!(m.vulnerabilities.is_empty());
    // Not a silent zero: the report says why nothing was checked.
    assert_eq!(
        coverage_warnings(&inv, db.info()),
        ["no advisory source for this distribution (Alibaba Cloud Linux 3): 1 OS package(s) not checked"]
    );
}

#[test]
fn ubi_image_is_red_hat_and_says_when_the_database_lacks_red_hat_advisories() {
    if !tools(false) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let openssl = Rpm {
        name: "openssl-libs",
        epoch: Some(1),
        version: "3.0.7",
        release: "24.el9",
        vendor: Some("Red Hat, Inc."),
        modularity_label: None,
    };
    let db_dir = rpmdb(tmp.path(), std::slice::from_ref(&openssl));
    let inv = image(&[
        ("etc/os-release", os_release("rhel-9.3")),
        (
            "var/lib/rpm/rpmdb.sqlite",
            std::fs::read(db_dir.join("rpmdb.sqlite")).unwrap(),
        ),
    ]);
    let os = inv.os.as_ref().unwrap();
    assert_eq!((os.family.as_str(), os.version.as_str()), ("rhel", "9.3"));
    assert!(inv.packages[0]
        .purl
        .starts_with("pkg:rpm/redhat/openssl-libs@3.0.7-24.el9"));
    // This database holds AlmaLinux records only: the UBI image is not silently clean.
    let db = Db::load(&[osv_dir().display().to_string()]).unwrap();
    assert_eq!(
        coverage_warnings(&inv, db.info()),
        ["the vulnerability database has no advisories for Red Hat:enterprise_linux:9: 1 package(s) not checked"]
    );
}
