//! Images for tests made from the real `docker save` archives in `scanner/testdata`.

use std::io::Read;

use crate::image::{Layer, LayerBuilder, TestImage};
use crate::repo_root;

/// A file of `scanner/testdata`.
pub fn testdata(name: &str) -> std::path::PathBuf {
    repo_root().join("scanner/testdata").join(name)
}

/// The single layer (uncompressed tar) of a real `docker save` archive.
pub fn archive_layer(name: &str) -> Vec<u8> {
    let f = std::fs::File::open(testdata(name)).unwrap();
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy().ends_with("layer.tar") {
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            return v;
        }
    }
    panic!("no layer in {name}");
}

/// A layer (gzipped) from an uncompressed tar.
pub fn layer_from_tar(tar: Vec<u8>) -> Layer {
    use std::io::Write;
    let diff_id = crate::image::sha256(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    Layer {
        gzip: gz.finish().unwrap(),
        diff_id,
    }
}

/// The installed-package database of the real alpine:3.10 image.
pub fn alpine310_installed() -> String {
    let layer = archive_layer("alpine-310.tar.gz");
    let mut a = tar::Archive::new(&layer[..]);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy() == "lib/apk/db/installed" {
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            return s;
        }
    }
    panic!("no apk database");
}

/// alpine:3.10 with musl held back at 1.1.22-r2, before the fix of CVE-2019-14697
/// (Alpine secdb: fixed in 1.1.22-r3): a second layer replaces the package database.
pub fn vulnerable_alpine() -> TestImage {
    let installed = alpine310_installed().replace("P:musl\nV:1.1.22-r3", "P:musl\nV:1.1.22-r2");
    assert!(installed.contains("V:1.1.22-r2"));
    let layer2 = LayerBuilder::new()
        .file("lib/apk/db/installed", 0o644, installed.as_bytes())
        .unwrap()
        .finish()
        .unwrap();
    TestImage {
        layers: vec![layer_from_tar(archive_layer("alpine-310.tar.gz")), layer2],
        ..Default::default()
    }
}

/// The real alpine:3.11 image.
pub fn alpine311() -> TestImage {
    TestImage {
        layers: vec![layer_from_tar(archive_layer("alpine-311.tar.gz"))],
        ..Default::default()
    }
}
