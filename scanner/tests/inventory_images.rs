//! Inventories of real images and package databases: the docker-save archives and
//! database files in testdata/ (see testdata/SOURCES.md), and OCI layouts built from them.

mod inventory_support;

use imagewarden_scanner::inventory::Ecosystem;
use inventory_support::*;

const ALPINE_310_PACKAGES: &[(&str, &str, &str)] = &[
    ("musl", "1.1.22-r3", "musl"),
    ("busybox", "1.30.1-r3", "busybox"),
    ("alpine-baselayout", "3.1.2-r0", "alpine-baselayout"),
    ("alpine-keys", "2.1-r2", "alpine-keys"),
    ("libcrypto1.1", "1.1.1d-r2", "openssl"),
    ("libssl1.1", "1.1.1d-r2", "openssl"),
    ("ca-certificates-cacert", "20190108-r0", "ca-certificates"),
    ("libtls-standalone", "2.9.1-r0", "libtls-standalone"),
    ("ssl_client", "1.30.1-r3", "busybox"),
    ("zlib", "1.2.11-r1", "zlib"),
    ("apk-tools", "2.10.4-r2", "apk-tools"),
    ("scanelf", "1.2.3-r0", "pax-utils"),
    ("musl-utils", "1.1.22-r3", "musl"),
    ("libc-utils", "0.7.1-r0", "libc-dev"),
];

#[test]
fn alpine_310_docker_archive_lists_os_and_its_14_apk_packages() {
    let target = format!("docker-archive:{}", testdata("alpine-310.tar.gz").display());
    let image = scan(&target).unwrap();
    let inv = &image.inventory;
    let os = inv.os.as_ref().expect("os detected");
    assert_eq!(
        (os.family.as_str(), os.version.as_str()),
        ("alpine", "3.10.4")
    );
    assert_eq!(inv.packages.len(), 14, "{:#?}", inv.packages);
    for (name, version, origin) in ALPINE_310_PACKAGES {
        let p = inv
            .packages
            .iter()
            .find(|p| p.name == *name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(p.ecosystem, Ecosystem::Alpine);
        assert_eq!(p.version, *version, "{name}");
        assert_eq!(p.source_name.as_deref(), Some(*origin), "{name}");
        assert_eq!(p.path, "lib/apk/db/installed");
    }
    let ssl = inv.packages.iter().find(|p| p.name == "libssl1.1").unwrap();
    assert_eq!(
        ssl.purl,
        "pkg:apk/alpine/libssl1.1@1.1.1d-r2?arch=x86_64&distro=alpine-3.10.4"
    );
    // Old-style docker save: the layer is named by the digest of its tar, computed on the way.
    let layer = ssl.layer.as_deref().unwrap();
    assert!(layer.starts_with("sha256:") && layer.len() == 71, "{layer}");
    let config = image.config.expect("config read");
    assert_eq!(config.architecture, "amd64");
    assert!(config
        .config
        .unwrap()
        .cmd
        .unwrap()
        .contains(&"/bin/sh".to_string()));
}

#[test]
fn alpine_311_docker_archive_lists_its_packages() {
    let target = format!("docker-archive:{}", testdata("alpine-311.tar.gz").display());
    let inv = scan(&target).unwrap().inventory;
    let os = inv.os.as_ref().unwrap();
    assert_eq!(
        (os.family.as_str(), os.version.as_str()),
        ("alpine", "3.11.5")
    );
    assert_eq!(inv.packages.len(), 14);
    let got = names(&inv, Ecosystem::Alpine);
    for want in [
        "musl@1.1.24-r2",
        "busybox@1.31.1-r9",
        "alpine-baselayout@3.2.0-r3",
        "libcrypto1.1@1.1.1d-r3",
    ] {
        assert!(got.contains(&want.to_string()), "{want} not in {got:?}");
    }
    // The layer digest is the sha256 of the layer tar as stored in the archive.
    assert!(inv.packages.iter().all(|p| p.layer.as_deref()
        == Some("sha256:beee9f30bc1f711043e78d4a2be0668955d4b761d587d6f60c2c8dc081efb203")));
}

#[test]
fn oci_layout_built_from_the_alpine_layer_gives_the_same_inventory() {
    let tmp = tempfile::tempdir().unwrap();
    let layer = gzip(&docker_archive_layer(&testdata("alpine-310.tar.gz")));
    let layer_digest = sha256(&layer);
    Layout::single(tmp.path(), &[layer]);
    let image = scan(&format!("oci-layout:{}", tmp.path().display())).unwrap();
    let inv = &image.inventory;
    assert_eq!(inv.os.as_ref().unwrap().version, "3.10.4");
    assert_eq!(inv.packages.len(), 14);
    assert!(inv.digest.as_deref().unwrap().starts_with("sha256:"));
    assert!(inv
        .packages
        .iter()
        .all(|p| p.layer.as_deref() == Some(layer_digest.as_str())));
    let cfg = image.config.unwrap().config.unwrap();
    assert_eq!(cfg.user.as_deref(), Some("app"));
    assert!(cfg.exposed_ports.unwrap().contains_key("8080/tcp"));
    assert_eq!(image.layers.len(), 1);
}

#[test]
fn oci_layout_index_is_resolved_by_platform_and_by_tag() {
    let tmp = tempfile::tempdir().unwrap();
    let l = Layout::new(tmp.path());
    let alpine310 = gzip(&docker_archive_layer(&testdata("alpine-310.tar.gz")));
    let alpine311 = gzip(&docker_archive_layer(&testdata("alpine-311.tar.gz")));
    let amd64 = l.image(&[alpine310], Some(("linux", "amd64")));
    let mut arm64 = l.image(&[alpine311], Some(("linux", "arm64")));
    // A nested index for arm64 exercises index-in-index resolution.
    let nested = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [arm64.clone()]});
    let nested = serde_json::to_vec(&nested).unwrap();
    arm64 = serde_json::json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": l.blob(&nested), "size": nested.len(), "platform": {"os": "linux", "architecture": "arm64"}});
    l.index(vec![amd64.clone(), arm64]);

    let t = imagewarden_scanner::source::ImageRef::parse(&format!(
        "oci-layout:{}",
        tmp.path().display()
    ))
    .unwrap();
    let analyzers = imagewarden_scanner::analyzer::default_analyzers();
    let mut opts = imagewarden_scanner::source::PullOptions::default();
    let inv = imagewarden_scanner::source::read_local(&t, &opts, &analyzers)
        .unwrap()
        .inventory;
    assert_eq!(inv.os.unwrap().version, "3.10.4");
    opts.platform = "linux/arm64".parse().unwrap();
    let inv = imagewarden_scanner::source::read_local(&t, &opts, &analyzers)
        .unwrap()
        .inventory;
    assert_eq!(inv.os.unwrap().version, "3.11.5");
    opts.platform = "linux/s390x".parse().unwrap();
    let err = imagewarden_scanner::source::read_local(&t, &opts, &analyzers)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("linux/s390x") && err.contains("linux/amd64"),
        "{err}"
    );

    // Tags: the ref.name annotation of index.json.
    let mut tagged = amd64;
    tagged["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "v3.10"});
    l.index(vec![tagged]);
    let inv = scan(&format!("oci-layout:{}:v3.10", tmp.path().display()))
        .unwrap()
        .inventory;
    assert_eq!(inv.os.unwrap().version, "3.10.4");
    let err = scan(&format!("oci-layout:{}:nope", tmp.path().display())).unwrap_err();
    assert!(err.to_string().contains("no manifest tagged"), "{err}");
}

#[test]
fn oci_archive_of_a_layout_is_read_in_one_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let layout_dir = tmp.path().join("layout");
    let layer = gzip(&docker_archive_layer(&testdata("alpine-311.tar.gz")));
    Layout::single(&layout_dir, &[layer]);
    let archive = tmp.path().join("image.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&archive).unwrap());
    b.append_dir_all(".", &layout_dir).unwrap();
    b.finish().unwrap();
    drop(b);
    let inv = scan(&format!("oci-archive:{}", archive.display()))
        .unwrap()
        .inventory;
    assert_eq!(inv.os.unwrap().version, "3.11.5");
    assert_eq!(inv.packages.len(), 14);
}

#[test]
fn ubuntu_dpkg_status_gives_90_installed_packages_with_source_names() {
    let status = txtar_member(
        &testdata("dpkg-status-ubuntu1804.txtar"),
        "var/lib/dpkg/status",
    );
    let os_release = "NAME=\"Ubuntu\"\nVERSION=\"18.04.4 LTS (Bionic Beaver)\"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"18.04\"\n";
    let tmp = tempfile::tempdir().unwrap();
    let layer = gzip(&tar_layer(&[
        file("etc/os-release", os_release),
        file("var/lib/dpkg/status", &status),
    ]));
    Layout::single(tmp.path(), &[layer]);
    let inv = scan(&format!("oci-layout:{}", tmp.path().display()))
        .unwrap()
        .inventory;
    assert_eq!(inv.os.as_ref().unwrap().family, "ubuntu");
    assert_eq!(inv.packages.len(), 90);
    assert!(inv
        .packages
        .iter()
        .all(|p| p.ecosystem == Ecosystem::Ubuntu));
    // The deinstalled package is not listed.
    assert!(!inv.packages.iter().any(|p| p.name == "git"));
    let find = |n: &str| inv.packages.iter().find(|p| p.name == n).unwrap();
    let bsdutils = find("bsdutils");
    assert_eq!(bsdutils.version, "1:2.31.1-0.4ubuntu3.1");
    assert_eq!(bsdutils.source_name.as_deref(), Some("util-linux"));
    assert_eq!(
        bsdutils.source_version.as_deref(),
        Some("2.31.1-0.4ubuntu3.1")
    );
    let libc6 = find("libc6");
    assert_eq!(libc6.version, "2.27-3ubuntu1");
    assert_eq!(libc6.source_name.as_deref(), Some("glibc"));
    assert_eq!(libc6.source_version.as_deref(), Some("2.27-3ubuntu1"));
    assert_eq!(
        libc6.purl,
        "pkg:deb/ubuntu/libc6@2.27-3ubuntu1?arch=amd64&upstream=glibc&distro=ubuntu-18.04"
    );
    // A package without Source: is its own source.
    let bash = find("bash");
    assert_eq!(bash.source_name.as_deref(), Some("bash"));
}

#[test]
fn apk_database_skips_the_stanza_without_a_version_with_a_warning() {
    let db = std::fs::read(testdata("apk-installed-alpine")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rootfs");
    std::fs::create_dir_all(root.join("lib/apk/db")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("lib/apk/db/installed"), db).unwrap();
    std::fs::write(root.join("etc/alpine-release"), "3.9.0\n").unwrap();
    let image = scan(&format!("dir:{}", root.display())).unwrap();
    let inv = &image.inventory;
    assert_eq!(inv.packages.len(), 15);
    assert!(!inv.packages.iter().any(|p| p.name.starts_with("invalid")));
    assert!(
        image
            .warnings
            .iter()
            .any(|w| w.contains("invalidPackageWithoutAVersion")),
        "{:?}",
        image.warnings
    );
    let got = names(inv, Ecosystem::Alpine);
    for want in [
        "musl@1.1.14-r10",
        "sqlite-libs@3.26.0-r3",
        "test@2.9.11_pre20061021-r2",
        "ada-libs@2.7.4-r0",
    ] {
        assert!(got.contains(&want.to_string()), "{want} not in {got:?}");
    }
    let test = inv.packages.iter().find(|p| p.name == "test").unwrap();
    assert_eq!(test.source_name.as_deref(), Some("test-parent"));
    // dir: inputs have no layers.
    assert!(inv.packages.iter().all(|p| p.layer.is_none()));
    assert_eq!(inv.os.as_ref().unwrap().version, "3.9.0");
}

#[test]
fn distroless_status_d_files_are_read_and_count_as_debian() {
    let tmp = tempfile::tempdir().unwrap();
    let layer = gzip(&tar_layer(&[
        file(
            "var/lib/dpkg/status.d/base-files",
            "Package: base-files\nVersion: 12.4+deb12u5\nArchitecture: amd64\n",
        ),
        file(
            "var/lib/dpkg/status.d/libssl3",
            "Package: libssl3\nSource: openssl\nVersion: 3.0.11-1~deb12u2\nArchitecture: amd64\n",
        ),
        file("var/lib/dpkg/status.d/libssl3.md5sums", "ignored"),
        file("etc/debian_version", "12.5\n"),
    ]));
    Layout::single(tmp.path(), &[layer]);
    let inv = scan(&format!("oci-layout:{}", tmp.path().display()))
        .unwrap()
        .inventory;
    assert_eq!(inv.os.as_ref().unwrap().family, "debian");
    assert_eq!(
        names(&inv, Ecosystem::Debian),
        ["base-files@12.4+deb12u5", "libssl3@3.0.11-1~deb12u2"]
    );
    let ssl = inv.packages.iter().find(|p| p.name == "libssl3").unwrap();
    assert_eq!(ssl.source_name.as_deref(), Some("openssl"));
    assert_eq!(
        ssl.purl,
        "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64&upstream=openssl&distro=debian-12.5"
    );
}

#[test]
fn sboms_in_cyclonedx_xml_become_inventories() {
    let inv = scan(&format!(
        "sbom:{}",
        testdata("sbom-postgres-stretch.cdx.xml").display()
    ))
    .unwrap()
    .inventory;
    let os = inv.os.as_ref().unwrap();
    assert_eq!((os.family.as_str(), os.version.as_str()), ("debian", "9"));
    assert_eq!(
        inv.packages
            .iter()
            .filter(|p| p.ecosystem == Ecosystem::Debian)
            .count(),
        132
    );
    let bsd = inv.packages.iter().find(|p| p.name == "bsdutils").unwrap();
    assert_eq!(bsd.source_name.as_deref(), Some("util-linux"));
    assert!(inv.packages.iter().any(|p| p.ecosystem == Ecosystem::Go
        && p.name == "github.com/opencontainers/runc"
        && p.version == "1.0.1"));

    let inv = scan(&format!(
        "sbom:{}",
        testdata("sbom-alpine.cdx.xml").display()
    ))
    .unwrap()
    .inventory;
    assert_eq!(inv.os.as_ref().unwrap().version, "3.17.2");
    assert_eq!(inv.packages.len(), 14);
    assert!(inv
        .packages
        .iter()
        .all(|p| p.ecosystem == Ecosystem::Alpine));
}

#[test]
fn rpm_sqlite_database_written_by_rpm_lists_epoch_release_and_source_rpm() {
    let db = std::fs::read(testdata("rpmdb.sqlite")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let layer = gzip(&tar_layer(&[
        file(
            "etc/os-release",
            "NAME=\"Rocky Linux\"\nID=\"rocky\"\nVERSION_ID=\"8.4\"\n",
        ),
        file("var/lib/rpm/rpmdb.sqlite", &db),
    ]));
    Layout::single(tmp.path(), &[layer]);
    let inv = scan(&format!("oci-layout:{}", tmp.path().display()))
        .unwrap()
        .inventory;
    assert_eq!(
        names(&inv, Ecosystem::RockyLinux),
        ["bash@4.4.20-1.el8", "openssl-libs@1:1.1.1k-5.el8"]
    );
    let ssl = inv
        .packages
        .iter()
        .find(|p| p.name == "openssl-libs")
        .unwrap();
    assert_eq!(ssl.source_name.as_deref(), Some("openssl-libs"));
    assert_eq!(ssl.source_version.as_deref(), Some("1:1.1.1k-5.el8"));
    assert_eq!(
        ssl.purl,
        "pkg:rpm/rocky/openssl-libs@1.1.1k-5.el8?arch=x86_64&epoch=1&distro=rocky-8.4"
    );
}

#[test]
fn rpm_berkeley_db_written_by_db_load_lists_the_same_packages() {
    // 4096-byte pages (one overflow page per header) and 512-byte pages (chains of them).
    for fixture in ["rpm-Packages-bdb", "rpm-Packages-bdb-512"] {
        let db = std::fs::read(testdata(fixture)).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let layer = gzip(&tar_layer(&[
            file("etc/redhat-release", "CentOS Linux release 8.4.2105\n"),
            file("var/lib/rpm/Packages", &db),
        ]));
        Layout::single(tmp.path(), &[layer]);
        let image = scan(&format!("oci-layout:{}", tmp.path().display())).unwrap();
        let inv = image.inventory;
        assert_eq!(inv.os.as_ref().unwrap().family, "centos", "{fixture}");
        assert_eq!(
            names(&inv, Ecosystem::RedHat),
            ["bash@4.4.20-1.el8", "openssl-libs@1:1.1.1k-5.el8"],
            "{fixture}: {:?}",
            image.warnings
        );
        let bash = inv.packages.iter().find(|p| p.name == "bash").unwrap();
        assert_eq!(
            bash.purl,
            "pkg:rpm/centos/bash@4.4.20-1.el8?arch=noarch&distro=centos-8.4.2105"
        );
    }
}

#[test]
fn cargo_lock_composer_gemspec_and_deps_json_formats() {
    let cargo_lock = r#"# This file is automatically @generated by Cargo.
version = 3

[[package]]
name = "app"
version = "0.1.0"
dependencies = [
 "smallvec",
]

[[package]]
name = "smallvec"
version = "1.6.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "fe0f37c9e8f3c5a4a66ad655a93c74daac4ad00c441533bf5c6e7990bb42604e"
"#;
    let composer = r#"{"packages": [
        {"name": "guzzlehttp/guzzle", "version": "7.4.0", "version_normalized": "7.4.0.0", "type": "library"},
        {"name": "symfony/http-kernel", "version": "v5.3.9", "type": "library"}
    ], "dev": true}"#;
    let gemspec = "# -*- encoding: utf-8 -*-\n# stub: rack 2.2.3 ruby lib\n\nGem::Specification.new do |s|\n  s.name = \"rack\".freeze\n  s.version = \"2.2.3\"\nend\n";
    let deps = r#"{"runtimeTarget": {"name": ".NETCoreApp,Version=v6.0"},
        "libraries": {
            "App/1.0.0": {"type": "project", "serviceable": false, "sha512": ""},
            "Newtonsoft.Json/12.0.1": {"type": "package", "serviceable": true, "sha512": "sha512-x"}
        }}"#;
    let tmp = tempfile::tempdir().unwrap();
    let layer = gzip(&tar_layer(&[
        file("src/app/Cargo.lock", cargo_lock),
        file("var/www/vendor/composer/installed.json", composer),
        file(
            "usr/local/bundle/specifications/rack-2.2.3.gemspec",
            gemspec,
        ),
        file("app/App.deps.json", deps),
    ]));
    Layout::single(tmp.path(), &[layer]);
    let inv = scan(&format!("oci-layout:{}", tmp.path().display()))
        .unwrap()
        .inventory;
    // The workspace crate has no registry source: nothing to match, not listed.
    assert_eq!(names(&inv, Ecosystem::CratesIo), ["smallvec@1.6.0"]);
    assert_eq!(
        names(&inv, Ecosystem::Packagist),
        ["guzzlehttp/guzzle@7.4.0", "symfony/http-kernel@5.3.9"]
    );
    assert_eq!(names(&inv, Ecosystem::RubyGems), ["rack@2.2.3"]);
    assert_eq!(names(&inv, Ecosystem::NuGet), ["Newtonsoft.Json@12.0.1"]);
    let purls: Vec<&str> = inv.packages.iter().map(|p| p.purl.as_str()).collect();
    for want in [
        "pkg:cargo/smallvec@1.6.0",
        "pkg:composer/guzzlehttp/guzzle@7.4.0",
        "pkg:gem/rack@2.2.3",
        "pkg:nuget/Newtonsoft.Json@12.0.1",
    ] {
        assert!(purls.contains(&want), "{want} not in {purls:?}");
    }
}
