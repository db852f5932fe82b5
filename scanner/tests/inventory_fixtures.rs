//! Inventories of images built from real packages downloaded from their registries by
//! tests/scripts/fetch-fixtures.sh: Django 3.2.0 and PyYAML 5.3 (PyPI), lodash 4.17.15
//! (npm), log4j-core 2.14.1 (Maven Central, also nested in a war), a Go binary built
//! against golang.org/x/text v0.3.5, and a Rust binary built with cargo-auditable against
//! smallvec 1.6.0; and Debian node-* packages unpacked and configured by dpkg.

mod inventory_support;

use imagewarden_scanner::inventory::{Ecosystem, Inventory};
use inventory_support::*;
use std::io::{Read, Write};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    match std::env::var_os("IMAGEWARDEN_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => panic!(
            "IMAGEWARDEN_FIXTURES is not set: run tests/scripts/fetch-fixtures.sh, then set \
             IMAGEWARDEN_FIXTURES=${{IMAGEWARDEN_CACHE:-$HOME/.cache/imagewarden}}/fixtures"
        ),
    }
}

fn read(rel: &str) -> Vec<u8> {
    let p = fixtures().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run tests/scripts/fetch-fixtures.sh to download it",
            p.display()
        )
    })
}

const SITE: &str = "usr/local/lib/python3.9/site-packages";

/// Every file of a wheel, installed under site-packages as pip lays it out.
fn wheel_entries(wheel: &[u8]) -> Vec<Entry> {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(wheel)).unwrap();
    let mut out = Vec::new();
    for i in 0..z.len() {
        let mut f = z.by_index(i).unwrap();
        if f.is_dir() {
            continue;
        }
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        out.push(file(&format!("{SITE}/{}", f.name()), data));
    }
    out
}

/// The files of an sdist or npm tarball (`PREFIX/...`) moved under `dest`.
fn tgz_entries(tgz: &[u8], dest: &str, keep: impl Fn(&str) -> Option<String>) -> Vec<Entry> {
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if !e.header().entry_type().is_file() {
            continue;
        }
        let path = e.path().unwrap().to_string_lossy().into_owned();
        if let Some(rel) = keep(&path) {
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.push(file(&format!("{dest}/{rel}"), data));
        }
    }
    out
}

/// A war holding the jar in WEB-INF/lib, written with the zip crate.
fn war_with(jar: &[u8]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    w.start_file("WEB-INF/web.xml", opts).unwrap();
    w.write_all(b"<web-app/>").unwrap();
    w.start_file("WEB-INF/lib/log4j-core-2.14.1.jar", opts)
        .unwrap();
    w.write_all(jar).unwrap();
    w.finish().unwrap().into_inner()
}

/// The image is built and read once for all tests of this file.
fn build_image() -> &'static Inventory {
    static INVENTORY: std::sync::OnceLock<Inventory> = std::sync::OnceLock::new();
    INVENTORY.get_or_init(build_and_scan)
}

fn build_and_scan() -> Inventory {
    let python = {
        let mut e = wheel_entries(&read("pypi/Django-3.2-py3-none-any.whl"));
        e.extend(tgz_entries(
            &read("pypi/PyYAML-5.3.tar.gz"),
            &format!("{SITE}/PyYAML-5.3-py3.9.egg-info"),
            |p| (p == "PyYAML-5.3/PKG-INFO").then(|| "PKG-INFO".to_string()),
        ));
        e
    };
    let node = tgz_entries(
        &read("npm/lodash-4.17.15.tgz"),
        "app/node_modules/lodash",
        |p| p.strip_prefix("package/").map(str::to_string),
    );
    let jar = read("maven/log4j-core-2.14.1.jar");
    let java = vec![
        file("opt/app/lib/log4j-core-2.14.1.jar", &jar),
        file("opt/jetty/webapps/app.war", war_with(&jar)),
    ];
    let go = vec![
        exe("usr/local/bin/textfixture", read("go/textfixture")),
        exe(
            "usr/local/bin/auditable-fixture",
            read("rust/auditable-fixture"),
        ),
    ];
    let os = vec![file("etc/os-release", "ID=debian\nVERSION_ID=\"11\"\n")];
    let layers: Vec<Vec<u8>> = [os, python, node, java, go]
        .iter()
        .map(|entries| gzip(&tar_layer(entries)))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    Layout::single(tmp.path(), &layers);
    scan(&format!("oci-layout:{}", tmp.path().display()))
        .unwrap()
        .inventory
}

#[test]
fn python_wheel_and_sdist_metadata() {
    let inv = build_image();
    let py = names(inv, Ecosystem::PyPI);
    assert_eq!(py, ["django@3.2", "pyyaml@5.3"]);
    let django = inv.packages.iter().find(|p| p.name == "django").unwrap();
    assert_eq!(django.purl, "pkg:pypi/django@3.2");
    assert_eq!(django.path, format!("{SITE}/Django-3.2.dist-info/METADATA"));
}

#[test]
fn npm_package_from_its_published_tarball() {
    let inv = build_image();
    // lodash's tarball has nested package.json files (lodash/fp has none, but be strict):
    // exactly one package is listed.
    assert_eq!(names(inv, Ecosystem::Npm), ["lodash@4.17.15"]);
    let p = inv.packages.iter().find(|p| p.name == "lodash").unwrap();
    assert_eq!(p.purl, "pkg:npm/lodash@4.17.15");
    assert_eq!(p.path, "app/node_modules/lodash/package.json");
}

#[test]
fn log4j_core_jar_and_the_same_jar_nested_in_a_war() {
    let inv = build_image();
    let maven: Vec<(&str, &str, &str)> = inv
        .packages
        .iter()
        .filter(|p| p.ecosystem == Ecosystem::Maven)
        .map(|p| (p.name.as_str(), p.version.as_str(), p.path.as_str()))
        .collect();
    assert_eq!(
        maven,
        [
            (
                "org.apache.logging.log4j:log4j-core",
                "2.14.1",
                "opt/app/lib/log4j-core-2.14.1.jar"
            ),
            (
                "org.apache.logging.log4j:log4j-core",
                "2.14.1",
                "opt/jetty/webapps/app.war"
            ),
        ]
    );
    let p = inv
        .packages
        .iter()
        .find(|p| p.ecosystem == Ecosystem::Maven)
        .unwrap();
    assert_eq!(
        p.purl,
        "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1"
    );
}

#[test]
fn go_binary_build_info_lists_modules_and_stdlib() {
    let inv = build_image();
    let go: Vec<&imagewarden_scanner::inventory::Package> = inv
        .packages
        .iter()
        .filter(|p| p.ecosystem == Ecosystem::Go)
        .collect();
    let text = go
        .iter()
        .find(|p| p.name == "golang.org/x/text")
        .expect("x/text");
    assert_eq!(text.version, "0.3.5");
    assert_eq!(text.purl, "pkg:golang/golang.org/x/text@v0.3.5");
    assert_eq!(text.path, "usr/local/bin/textfixture");
    let stdlib = go.iter().find(|p| p.name == "stdlib").expect("stdlib");
    // The toolchain that built the fixture: `go version` of the binary.
    assert!(
        stdlib.version.chars().next().unwrap().is_ascii_digit() && stdlib.version.contains('.'),
        "{}",
        stdlib.version
    );
    // The main module is built from a directory: "(devel)", nothing to match.
    assert!(!go.iter().any(|p| p.name == "example.com/textfixture"));
    assert_eq!(inv.os.as_ref().unwrap().version, "11");
}

#[test]
fn rust_binary_built_with_cargo_auditable_lists_its_crates() {
    let inv = build_image();
    assert_eq!(names(inv, Ecosystem::CratesIo), ["smallvec@1.6.0"]);
    let p = inv
        .packages
        .iter()
        .find(|p| p.ecosystem == Ecosystem::CratesIo)
        .unwrap();
    assert_eq!(p.purl, "pkg:cargo/smallvec@1.6.0");
    assert_eq!(p.path, "usr/local/bin/auditable-fixture");
}

/// The files under `root` (a directory tree) whose paths start with `prefix`, as layer entries.
fn tree_entries(root: &std::path::Path, prefix: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut dirs = vec![root.join(prefix)];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                dirs.push(e.path());
            } else if t.is_file() {
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push(file(&rel, std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out
}

/// dpkg left node-lodash and node-lru-cache unpacked and configured node-semver; the
/// modules (`usr/`) and dpkg's database (`var/`) are in different layers.
#[test]
fn debian_node_modules_unpacked_and_configured_by_dpkg() {
    let root = fixtures().join("debian-node/root");
    assert!(
        root.join("var/lib/dpkg/status").is_file(),
        "{}: run tests/scripts/fetch-fixtures.sh",
        root.display()
    );
    let mut var = tree_entries(&root, "var");
    var.push(file("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n"));
    let layers: Vec<Vec<u8>> = [tree_entries(&root, "usr"), var]
        .iter()
        .map(|entries| gzip(&tar_layer(entries)))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    Layout::single(tmp.path(), &layers);
    let inv = scan(&format!("oci-layout:{}", tmp.path().display()))
        .unwrap()
        .inventory;

    // Packages dpkg only unpacked are on disk: they are reported, with their status.
    let debs: Vec<(&str, Option<&str>)> = inv
        .packages
        .iter()
        .filter(|p| p.ecosystem == Ecosystem::Debian)
        .map(|p| (p.name.as_str(), p.install_state.as_deref()))
        .collect();
    assert_eq!(
        debs,
        [
            ("node-lodash", Some("install ok unpacked")),
            ("node-lru-cache", Some("install ok unpacked")),
            ("node-semver", None),
        ]
    );

    // Every module under usr/share/nodejs is read and known as its Debian package's.
    let npm: Vec<(String, &str)> = inv
        .packages
        .iter()
        .filter(|p| p.ecosystem == Ecosystem::Npm)
        .map(|p| {
            (
                format!("{}@{}", p.name, p.version),
                p.os_package.as_deref().unwrap_or("-"),
            )
        })
        .collect();
    // lodash's package.json is marked private (Debian builds it from the upstream
    // repository); it is the published lodash all the same.
    let lodash = npm.iter().find(|(n, _)| n.starts_with("lodash@")).unwrap();
    assert_eq!(lodash, &("lodash@4.17.21".to_string(), "node-lodash"));
    assert!(
        npm.contains(&("@types/lodash@4.14.177".to_string(), "node-lodash")),
        "{npm:?}"
    );
    let semver = npm.iter().find(|(n, _)| n.starts_with("semver@")).unwrap();
    assert_eq!(semver.1, "node-semver");
    assert!(npm.iter().all(|(_, owner)| *owner != "-"), "{npm:?}");
    let on_disk = walk_package_jsons(&root.join("usr/share/nodejs"));
    assert_eq!(npm.len(), on_disk, "{npm:?}");
}

/// How many modules (`NAME/package.json`, `@scope/NAME/package.json`, regular files) are
/// under `dir`.
fn walk_package_jsons(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        // lodash-es/package.json is a symbolic link to lodash's: one module, listed once.
        let manifest = std::fs::symlink_metadata(p.join("package.json"));
        if manifest.is_ok_and(|m| m.is_file()) {
            n += 1;
        } else if p.file_name().unwrap().to_string_lossy().starts_with('@') {
            n += walk_package_jsons(&p);
        }
    }
    n
}
