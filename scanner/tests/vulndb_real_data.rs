//! Matching real package sets against real OSV records (scanner/testdata/osv).
//! Each test asserts the exact set of advisories: a missed advisory and a false
//! positive are both failures.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use imagewarden_scanner::finding::{Finding, FindingClass};
use imagewarden_scanner::inventory::{Ecosystem, Inventory, OsInfo, Package};
use imagewarden_scanner::matcher::{match_inventory, Matches};
use imagewarden_scanner::vulndb::{Db, DbBuilder, Severity};

fn osv_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/osv")
}

fn db() -> &'static Db {
    static DB: OnceLock<Db> = OnceLock::new();
    DB.get_or_init(|| {
        let mut b = DbBuilder::new();
        b.add_source(osv_dir().to_str().unwrap()).unwrap();
        b.into_db("testdata/osv").unwrap()
    })
}

fn pkg(ecosystem: Ecosystem, name: &str, version: &str) -> Package {
    Package {
        ecosystem,
        name: name.to_string(),
        version: version.to_string(),
        purl: String::new(),
        source_name: None,
        source_version: None,
        vendor: None,
        module: None,
        install_state: None,
        os_package: None,
        layer: None,
        path: String::new(),
    }
}

fn os_pkg(ecosystem: Ecosystem, name: &str, version: &str, source: &str) -> Package {
    Package {
        source_name: Some(source.to_string()),
        ..pkg(ecosystem, name, version)
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

fn scan(inv: &Inventory) -> Matches {
    match_inventory(inv, db()).unwrap()
}

fn ids(findings: &[Finding]) -> BTreeSet<String> {
    findings.iter().map(|f| f.id.clone()).collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn find<'a>(m: &'a Matches, id: &str) -> &'a Finding {
    m.vulnerabilities
        .iter()
        .find(|f| f.id == id)
        .unwrap_or_else(|| panic!("{id} not found in {:?}", ids(&m.vulnerabilities)))
}

#[test]
fn debian9_libssl_from_openssl_source_finds_dla_3008_1() {
    let inv = inventory(
        Some(("debian", "9.13")),
        vec![os_pkg(
            Ecosystem::Debian,
            "libssl1.1",
            "1.1.0f-3+deb9u2",
            "openssl",
        )],
    );
    let m = scan(&inv);
    // Every Debian:9 openssl advisory fixed after 1.1.0f-3+deb9u2 (DSA-4157-1 fixed exactly
    // that version and DSA-4018-1 before it).
    assert_eq!(
        ids(&m.vulnerabilities),
        set(&[
            "DLA-2492-1",
            "DLA-2563-1",
            "DLA-2766-1",
            "DLA-2952-1",
            "DLA-3008-1",
            "DSA-4348-1",
            "DSA-4475-1",
            "DSA-4539-1"
        ])
    );
    let f = find(&m, "DLA-3008-1");
    assert_eq!(f.fixed_version.as_deref(), Some("1.1.0l-1~deb9u6"));
    assert_eq!(f.aliases, vec!["CVE-2022-1292".to_string()]);
    assert_eq!(f.package.name, "libssl1.1");
    assert_eq!(f.package.source_name.as_deref(), Some("openssl"));
    assert_eq!(f.class, FindingClass::Os);
    assert_eq!(
        f.severity,
        Severity::Unknown,
        "the tracker lists carry no severity"
    );
}

#[test]
fn debian9_openssl_at_the_dla_3008_1_fix_finds_nothing() {
    let inv = inventory(
        Some(("debian", "9")),
        vec![
            os_pkg(Ecosystem::Debian, "libssl1.1", "1.1.0l-1~deb9u6", "openssl"),
            pkg(Ecosystem::Debian, "openssl", "1.1.0l-1~deb9u6"),
        ],
    );
    assert_eq!(scan(&inv).vulnerabilities, vec![]);
}

#[test]
fn source_version_is_used_for_binnmu_binaries() {
    // A binNMU binary carries `+b1`; the advisory's fixed version is the source's.
    let mut p = os_pkg(
        Ecosystem::Debian,
        "libssl1.1",
        "1.1.0l-1~deb9u5+b1",
        "openssl",
    );
    p.source_version = Some("1.1.0l-1~deb9u5".into());
    let m = scan(&inventory(Some(("debian", "9.13")), vec![p]));
    assert_eq!(ids(&m.vulnerabilities), set(&["DLA-3008-1"]));
}

#[test]
fn debian_advisories_are_release_specific() {
    // Debian 11 openssl: DSA-5343-1 fixed 1.1.1n-0+deb11u4.
    let before = inventory(
        Some(("debian", "11.6")),
        vec![os_pkg(
            Ecosystem::Debian,
            "libssl1.1",
            "1.1.1n-0+deb11u3",
            "openssl",
        )],
    );
    assert!(ids(&scan(&before).vulnerabilities).contains("DSA-5343-1"));
    let after = inventory(
        Some(("debian", "11.6")),
        vec![os_pkg(
            Ecosystem::Debian,
            "libssl1.1",
            "1.1.1n-0+deb11u4",
            "openssl",
        )],
    );
    assert!(!ids(&scan(&after).vulnerabilities).contains("DSA-5343-1"));
    // The Debian 9 version under Debian 10 is judged by Debian 10's advisories only.
    let ten = inventory(
        Some(("debian", "10")),
        vec![os_pkg(
            Ecosystem::Debian,
            "libssl1.1",
            "1.1.0f-3+deb9u2",
            "openssl",
        )],
    );
    assert!(!ids(&scan(&ten).vulnerabilities).contains("DLA-3008-1"));
    // No OS release known: OS packages cannot be matched.
    let none = inventory(
        None,
        vec![os_pkg(
            Ecosystem::Debian,
            "libssl1.1",
            "1.1.0f-3+deb9u2",
            "openssl",
        )],
    );
    assert!(scan(&none).vulnerabilities.is_empty());
}

/// The 14 packages of the real alpine:3.10 image (testdata/alpine-310.tar.gz,
/// `lib/apk/db/installed`, /etc/alpine-release 3.10.4).
fn alpine_310_image() -> Inventory {
    let p =
        |name: &str, version: &str, origin: &str| os_pkg(Ecosystem::Alpine, name, version, origin);
    inventory(
        Some(("alpine", "3.10.4")),
        vec![
            p("musl", "1.1.22-r3", "musl"),
            p("busybox", "1.30.1-r3", "busybox"),
            p("alpine-baselayout", "3.1.2-r0", "alpine-baselayout"),
            p("alpine-keys", "2.1-r2", "alpine-keys"),
            p("libcrypto1.1", "1.1.1d-r2", "openssl"),
            p("libssl1.1", "1.1.1d-r2", "openssl"),
            p("ca-certificates-cacert", "20190108-r0", "ca-certificates"),
            p("libtls-standalone", "2.9.1-r0", "libtls-standalone"),
            p("ssl_client", "1.30.1-r3", "busybox"),
            p("zlib", "1.2.11-r1", "zlib"),
            p("apk-tools", "2.10.4-r2", "apk-tools"),
            p("scanelf", "1.2.3-r0", "pax-utils"),
            p("musl-utils", "1.1.22-r3", "musl"),
            p("libc-utils", "0.7.1-r0", "libc-dev"),
        ],
    )
}

#[test]
fn alpine_310_image_is_patched_against_its_secdb() {
    // Every v3.10 secfix for these origins is at or below the installed version
    // (musl's CVE-2019-14697 was fixed in exactly 1.1.22-r3).
    assert_eq!(scan(&alpine_310_image()).vulnerabilities, vec![]);
}

#[test]
fn alpine_310_older_musl_and_openssl_find_alpine_cve_records() {
    let mut inv = alpine_310_image();
    for p in &mut inv.packages {
        match p.name.as_str() {
            "musl" => p.version = "1.1.22-r2".into(),
            "libssl1.1" => p.version = "1.1.1c-r0".into(),
            _ => {}
        }
    }
    let m = scan(&inv);
    assert_eq!(
        ids(&m.vulnerabilities),
        set(&[
            "ALPINE-CVE-2019-14697",
            "ALPINE-CVE-2019-1547",
            "ALPINE-CVE-2019-1549",
            "ALPINE-CVE-2019-1563"
        ])
    );
    let f = find(&m, "ALPINE-CVE-2019-14697");
    assert_eq!(f.fixed_version.as_deref(), Some("1.1.22-r3"));
    assert_eq!(f.aliases, vec!["CVE-2019-14697".to_string()]);
    assert_eq!(find(&m, "ALPINE-CVE-2019-1547").package.name, "libssl1.1");
}

#[test]
fn alpine_apk_fixture_versions_under_310() {
    // Old package versions from the apk installed-database fixture, judged as Alpine 3.10.
    let p =
        |name: &str, version: &str, origin: &str| os_pkg(Ecosystem::Alpine, name, version, origin);
    let inv = inventory(
        Some(("alpine", "3.10.0")),
        vec![
            p("musl", "1.1.14-r10", "musl"),
            p("busybox", "1.24.2-r9", "busybox"),
            p("sqlite-libs", "3.26.0-r3", "sqlite"),
        ],
    );
    let m = scan(&inv);
    let got = ids(&m.vulnerabilities);
    for id in [
        "ALPINE-CVE-2016-8859",
        "ALPINE-CVE-2019-14697",
        "ALPINE-CVE-2017-15873",
        "ALPINE-CVE-2018-20679",
        "ALPINE-CVE-2019-5747",
    ] {
        assert!(got.contains(id), "{id} missing from {got:?}");
    }
    assert!(got.iter().all(|id| id.starts_with("ALPINE-CVE-")));
}

#[test]
fn go_x_text_v0_3_5_finds_go_2021_0113() {
    let m = scan(&inventory(
        None,
        vec![pkg(Ecosystem::Go, "golang.org/x/text", "v0.3.5")],
    ));
    // GO-2020-0015 was fixed in v0.3.3, before this version.
    assert_eq!(
        ids(&m.vulnerabilities),
        set(&["GO-2021-0113", "GO-2022-1059", "GO-2026-5970"])
    );
    let f = find(&m, "GO-2021-0113");
    assert_eq!(f.fixed_version.as_deref(), Some("0.3.7"));
    assert_eq!(f.title, "Out-of-bounds read in golang.org/x/text/language");
    assert_eq!(
        f.aliases,
        vec![
            "CVE-2021-38561".to_string(),
            "GHSA-ppp9-7jff-5vj2".to_string()
        ]
    );
    assert_eq!(f.class, FindingClass::App);
    let fixed = scan(&inventory(
        None,
        vec![pkg(Ecosystem::Go, "golang.org/x/text", "v0.39.0")],
    ));
    assert_eq!(fixed.vulnerabilities, vec![]);
}

#[test]
fn go_pseudo_version_before_fix_is_affected() {
    // A pseudo-version based on v0.3.6 sorts after v0.3.6 and before v0.3.7.
    let m = scan(&inventory(
        None,
        vec![pkg(
            Ecosystem::Go,
            "golang.org/x/text",
            "v0.3.7-0.20210503195748-5c7c50ebbd4f",
        )],
    ));
    assert!(ids(&m.vulnerabilities).contains("GO-2021-0113"));
}

#[test]
fn django_3_2_0_finds_its_pysec_records() {
    // The expected set was computed independently with Python `packaging` over these records.
    let expected = set(&[
        "PYSEC-2021-109",
        "PYSEC-2021-439",
        "PYSEC-2021-7",
        "PYSEC-2021-8",
        "PYSEC-2021-98",
        "PYSEC-2021-99",
        "PYSEC-2022-1",
        "PYSEC-2022-19",
        "PYSEC-2022-190",
        "PYSEC-2022-191",
        "PYSEC-2022-2",
        "PYSEC-2022-20",
        "PYSEC-2022-213",
        "PYSEC-2022-245",
        "PYSEC-2022-3",
        "PYSEC-2022-304",
        "PYSEC-2023-100",
        "PYSEC-2023-12",
        "PYSEC-2023-13",
        "PYSEC-2023-222",
        "PYSEC-2023-225",
        "PYSEC-2023-226",
        "PYSEC-2023-61",
        "PYSEC-2024-28",
        "PYSEC-2024-47",
    ]);
    let m = scan(&inventory(
        None,
        vec![pkg(Ecosystem::PyPI, "Django", "3.2.0")],
    ));
    let reported: BTreeSet<String> = m
        .vulnerabilities
        .iter()
        .flat_map(|f| f.ids().map(str::to_string))
        .collect();
    assert!(
        expected.is_subset(&reported),
        "missing: {:?}",
        expected.difference(&reported).collect::<Vec<_>>()
    );
    assert!(
        ids(&m.vulnerabilities).is_subset(&expected),
        "unexpected: {:?}",
        ids(&m.vulnerabilities)
    );
    assert!(m.vulnerabilities.iter().all(|f| f.package.name == "Django"));
    let past = scan(&inventory(
        None,
        vec![pkg(Ecosystem::PyPI, "django", "5.1.4")],
    ));
    assert_eq!(past.vulnerabilities, vec![]);
}

#[test]
fn pyyaml_5_3_finds_pysec_2020_96_and_2021_142() {
    let m = scan(&inventory(
        None,
        vec![pkg(Ecosystem::PyPI, "PyYAML", "5.3")],
    ));
    assert_eq!(
        ids(&m.vulnerabilities),
        set(&["PYSEC-2020-96", "PYSEC-2021-142"])
    );
    assert_eq!(
        find(&m, "PYSEC-2020-96").fixed_version.as_deref(),
        Some("5.3.1")
    );
    let m = scan(&inventory(
        None,
        vec![pkg(Ecosystem::PyPI, "pyyaml", "5.3.1")],
    ));
    assert_eq!(ids(&m.vulnerabilities), set(&["PYSEC-2021-142"]));
    let m = scan(&inventory(
        None,
        vec![pkg(Ecosystem::PyPI, "pyyaml", "5.4")],
    ));
    assert_eq!(m.vulnerabilities, vec![]);
}

#[test]
fn lodash_4_17_15_finds_nswg_eco_516_with_cvss_score() {
    let m = scan(&inventory(
        None,
        vec![pkg(Ecosystem::Npm, "lodash", "4.17.15")],
    ));
    assert_eq!(ids(&m.vulnerabilities), set(&["NSWG-ECO-516"]));
    let f = find(&m, "NSWG-ECO-516");
    assert_eq!(f.fixed_version.as_deref(), Some("4.17.19"));
    assert!(f
        .vector
        .as_deref()
        .is_some_and(|v| v.starts_with("CVSS:3.0/")));
    assert!(f.score.is_some());
    assert_ne!(f.severity, Severity::Unknown);
    assert_eq!(
        scan(&inventory(
            None,
            vec![pkg(Ecosystem::Npm, "lodash", "4.17.21")]
        ))
        .vulnerabilities,
        vec![]
    );
    let old = scan(&inventory(
        None,
        vec![pkg(Ecosystem::Npm, "lodash", "4.17.4")],
    ));
    assert_eq!(
        ids(&old.vulnerabilities),
        set(&["NSWG-ECO-368", "NSWG-ECO-493"])
    );
}

#[test]
fn crates_io_ranges_with_prerelease_bounds() {
    let m = scan(&inventory(
        None,
        vec![pkg(Ecosystem::CratesIo, "smallvec", "0.6.9")],
    ));
    assert_eq!(
        ids(&m.vulnerabilities),
        set(&[
            "RUSTSEC-2018-0018",
            "RUSTSEC-2019-0009",
            "RUSTSEC-2019-0012",
            "RUSTSEC-2021-0003"
        ])
    );
    let m = scan(&inventory(
        None,
        vec![pkg(Ecosystem::CratesIo, "smallvec", "1.6.0")],
    ));
    assert_eq!(ids(&m.vulnerabilities), set(&["RUSTSEC-2021-0003"]));
    assert_eq!(
        find(&m, "RUSTSEC-2021-0003").fixed_version.as_deref(),
        Some("1.6.1")
    );
    let m = scan(&inventory(
        None,
        vec![pkg(Ecosystem::CratesIo, "smallvec", "1.13.2")],
    ));
    assert_eq!(m.vulnerabilities, vec![]);
    let m = scan(&inventory(
        None,
        vec![pkg(Ecosystem::CratesIo, "time", "0.1.45")],
    ));
    assert_eq!(ids(&m.vulnerabilities), set(&["RUSTSEC-2020-0071"]));
    let m = scan(&inventory(
        None,
        vec![pkg(Ecosystem::CratesIo, "regex", "1.5.4")],
    ));
    assert_eq!(ids(&m.vulnerabilities), set(&["RUSTSEC-2022-0013"]));
    let m = scan(&inventory(
        None,
        vec![pkg(Ecosystem::CratesIo, "regex", "1.5.5")],
    ));
    assert_eq!(m.vulnerabilities, vec![]);
}

#[test]
fn withdrawn_records_are_not_matched() {
    let m = scan(&inventory(
        None,
        vec![
            pkg(Ecosystem::PyPI, "redis", "4.5.3"),
            pkg(Ecosystem::CratesIo, "ring", "0.16.20"),
        ],
    ));
    assert_eq!(m.vulnerabilities, vec![]);
    // PYSEC-2023-73, RUSTSEC-2025-0007 and GO-2025-3543 are withdrawn.
    assert_eq!(db().info().withdrawn_skipped, 3);
}

#[test]
fn findings_are_sorted_most_severe_first() {
    let m = scan(&inventory(
        None,
        vec![
            pkg(Ecosystem::PyPI, "django", "3.2.0"),
            pkg(Ecosystem::Npm, "lodash", "4.17.4"),
        ],
    ));
    let sevs: Vec<Severity> = m.vulnerabilities.iter().map(|f| f.severity).collect();
    let mut sorted = sevs.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(sevs, sorted);
}

#[test]
fn rematch_after_database_update_reports_only_new_findings() {
    // The "old" database lacks the npm records; the update adds them.
    let mut old = DbBuilder::new();
    for eco in ["Debian", "Alpine", "Go", "PyPI", "crates.io"] {
        old.add_source(osv_dir().join(eco).to_str().unwrap())
            .unwrap();
    }
    let old = old.into_db("old").unwrap();
    let inv = inventory(
        Some(("debian", "9.13")),
        vec![
            os_pkg(Ecosystem::Debian, "libssl1.1", "1.1.0l-1~deb9u5", "openssl"),
            pkg(Ecosystem::Npm, "lodash", "4.17.15"),
        ],
    );
    let before = match_inventory(&inv, &old).unwrap().vulnerabilities;
    let after = scan(&inv).vulnerabilities;
    let new = imagewarden_scanner::matcher::new_findings(&before, &after);
    assert_eq!(ids(&new), set(&["NSWG-ECO-516"]));
    assert!(imagewarden_scanner::matcher::new_findings(&after, &after).is_empty());
}

#[test]
fn debian_advisory_titles_name_their_package() {
    let m = scan(&inventory(
        Some(("debian", "9")),
        vec![pkg(Ecosystem::Debian, "tzdata", "2021a-0+deb9u3")],
    ));
    assert_eq!(
        find(&m, "DLA-3051-1").title,
        "tzdata: new timezone database"
    );
}

#[test]
fn go_stdlib_versions_match_with_or_without_the_go_prefix() {
    // GO-2022-0493: stdlib fixed 1.17.10, and 1.18.2 for the 1.18 line.
    for v in ["1.17.5", "go1.17.5", "1.18.1"] {
        let m = scan(&inventory(None, vec![pkg(Ecosystem::Go, "stdlib", v)]));
        assert!(ids(&m.vulnerabilities).contains("GO-2022-0493"), "{v}");
    }
    assert_eq!(
        find(
            &scan(&inventory(
                None,
                vec![pkg(Ecosystem::Go, "stdlib", "1.18.1")]
            )),
            "GO-2022-0493"
        )
        .fixed_version
        .as_deref(),
        Some("1.18.2")
    );
    for v in ["1.17.10", "go1.18.2", "1.21.0"] {
        let m = scan(&inventory(None, vec![pkg(Ecosystem::Go, "stdlib", v)]));
        assert!(!ids(&m.vulnerabilities).contains("GO-2022-0493"), "{v}");
    }
}

#[test]
fn reissued_debian_advisories_of_one_issue_are_merged() {
    // DSA-4273-2 re-issued DSA-4273-1 (same CVEs, later fixed version): one finding,
    // fixed by the later version. DSA-4447-2 names no CVE and DSA-4565-2 another CVE,
    // so they stay apart. Expected set computed with `dpkg --compare-versions`.
    let p = |v: &str| {
        inventory(
            Some(("debian", "9.4")),
            vec![pkg(Ecosystem::Debian, "intel-microcode", v)],
        )
    };
    let m = scan(&p("3.20180312.1~deb9u1"));
    assert_eq!(
        ids(&m.vulnerabilities),
        set(&[
            "DLA-2546-1",
            "DLA-2718-1",
            "DSA-4273-1",
            "DSA-4447-1",
            "DSA-4447-2",
            "DSA-4565-1",
            "DSA-4565-2",
            "DSA-4701-1"
        ])
    );
    let f = find(&m, "DSA-4273-1");
    assert_eq!(f.fixed_version.as_deref(), Some("3.20180807a.1~deb9u1"));
    assert_eq!(
        f.aliases,
        vec![
            "CVE-2018-3639".to_string(),
            "CVE-2018-3640".to_string(),
            "DSA-4273-2".to_string()
        ]
    );
    // Past the first fix only the re-issue remains.
    let m = scan(&p("3.20180703.2~deb9u1"));
    assert!(!ids(&m.vulnerabilities).contains("DSA-4273-1"));
    assert_eq!(
        find(&m, "DSA-4273-2").fixed_version.as_deref(),
        Some("3.20180807a.1~deb9u1")
    );
}
