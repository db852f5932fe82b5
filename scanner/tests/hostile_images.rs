//! Crafted images: swapped blobs under sha512 digests and docker-save diff_ids, oversized
//! manifests and non-layer entries, package databases behind hard links.

mod inventory_support;

use std::path::Path;

use imagewarden_scanner::analyzer::default_analyzers;
use imagewarden_scanner::budget::ScanBudgets;
use imagewarden_scanner::inventory::Ecosystem;
use imagewarden_scanner::source::{read_local, ImageRef, ScannedImage, SourceError};
use inventory_support::*;
use sha2::{Digest, Sha512};

const DPKG_STATUS: &str = "Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.11.dfsg-2+deb11u2\n\nPackage: libc6\nStatus: install ok installed\nVersion: 2.31-13+deb11u5\n";
const OS_RELEASE: &str = "ID=debian\nVERSION_ID=11\n";

fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(data)))
}

/// An OCI layout whose descriptors all use sha512 (or `alg` for the layer); `swap`
/// stores other content under the layer's digest.
fn sha512_layout(dir: &Path, layer: &[u8], stored_layer: &[u8], layer_digest: &str) {
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |digest: &str, data: &[u8]| {
        let (alg, hex) = digest.split_once(':').unwrap();
        std::fs::create_dir_all(dir.join("blobs").join(alg)).unwrap();
        std::fs::write(dir.join("blobs").join(alg).join(hex), data).unwrap();
    };
    put(layer_digest, stored_layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]}
    }))
    .unwrap();
    put(&sha512(&config), &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha512(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": stored_layer.len()}],
    }))
    .unwrap();
    put(&sha512(&manifest), &manifest);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sha512(&manifest), "size": manifest.len()}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

fn debian_layer() -> Vec<u8> {
    tar_layer(&[
        file("etc/os-release", OS_RELEASE),
        file("var/lib/dpkg/status", DPKG_STATUS),
    ])
}

#[test]
fn sha512_digests_are_verified() {
    let good = debian_layer();
    let evil = tar_layer(&[file("etc/os-release", OS_RELEASE)]);
    // Same length, so only the digest can tell them apart.
    let evil = [
        evil.clone(),
        vec![0u8; good.len().saturating_sub(evil.len())],
    ]
    .concat();
    let tmp = tempfile::tempdir().unwrap();
    sha512_layout(tmp.path(), &good, &good, &sha512(&good));
    let inv = scan(&format!("oci-layout:{}", tmp.path().display()))
        .unwrap()
        .inventory;
    assert_eq!(names(&inv, Ecosystem::Debian).len(), 2);

    let tmp = tempfile::tempdir().unwrap();
    sha512_layout(tmp.path(), &good, &evil, &sha512(&good));
    let err = scan(&format!("oci-layout:{}", tmp.path().display())).unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
}

#[test]
fn a_digest_algorithm_that_cannot_be_verified_is_refused() {
    let good = debian_layer();
    let tmp = tempfile::tempdir().unwrap();
    let md5ish = format!("md5:{}", "0".repeat(32));
    sha512_layout(tmp.path(), &good, &good, &md5ish);
    let err = scan(&format!("oci-layout:{}", tmp.path().display())).unwrap_err();
    assert!(err.to_string().contains("not supported"), "{err}");
}

#[test]
fn docker_save_layers_are_checked_against_the_config_diff_ids() {
    let good = debian_layer();
    let evil = tar_layer(&[file("etc/os-release", OS_RELEASE)]);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("image.tar");
    docker_archive(&path, std::slice::from_ref(&good), &[sha256(&good)], &[]);
    let inv = scan(&format!("docker-archive:{}", path.display()))
        .unwrap()
        .inventory;
    assert_eq!(names(&inv, Ecosystem::Debian).len(), 2);
    // The layer swapped after the config was written.
    docker_archive(&path, &[evil], &[sha256(&good)], &[]);
    let err = scan(&format!("docker-archive:{}", path.display())).unwrap_err();
    assert!(matches!(err, SourceError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("diff_ids"), "{err}");
    // A compressed layer is checked by the digest of its uncompressed tar.
    docker_archive(&path, &[gzip(&good)], &[sha256(&good)], &[]);
    assert!(scan(&format!("docker-archive:{}", path.display())).is_ok());
    docker_archive(&path, &[gzip(&good)], &[sha256(&gzip(&good))], &[]);
    assert!(scan(&format!("docker-archive:{}", path.display())).is_err());
    // No diff_ids at all: nothing to check the layers against.
    docker_archive(&path, &[good], &[], &[]);
    let err = scan(&format!("docker-archive:{}", path.display())).unwrap_err();
    assert!(err.to_string().contains("diff_ids has 0"), "{err}");
}

#[test]
fn an_oversized_manifest_is_named_in_the_error() {
    let good = debian_layer();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("image.tar");
    let mut big = b"[".to_vec();
    big.resize((16 << 20) + 10, b' ');
    big.push(b']');
    docker_archive(
        &path,
        std::slice::from_ref(&good),
        &[sha256(&good)],
        &[("manifest.json", big)],
    );
    let err = scan(&format!("docker-archive:{}", path.display())).unwrap_err();
    assert!(
        err.to_string().contains("manifest.json is larger than"),
        "{err}"
    );
}

#[test]
fn non_layer_entries_have_a_total_budget() {
    let good = debian_layer();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("image.tar.gz");
    // Five JSON-looking entries of 15 MiB each: each under the per-document cap,
    // together over the archive's budget. Stored gzip-compressed, the archive is small.
    let mut doc = b"{".to_vec();
    doc.resize(15 << 20, b' ');
    let extra: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| (format!("junk{i}.json"), doc.clone()))
        .collect();
    let extra: Vec<(&str, Vec<u8>)> = extra.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
    let plain = tmp.path().join("image.tar");
    docker_archive(
        &plain,
        std::slice::from_ref(&good),
        &[sha256(&good)],
        &extra,
    );
    std::fs::write(&path, gzip(&std::fs::read(&plain).unwrap())).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() < 1 << 20);
    let err = scan(&format!("docker-archive:{}", path.display())).unwrap_err();
    assert!(
        err.to_string().contains("non-layer entries exceed"),
        "{err}"
    );
}

/// A layer whose dpkg status is a hard link to a file stored earlier under another path.
fn hardlinked_status_layer(target: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in [("etc/os-release", OS_RELEASE), (target, DPKG_STATUS)] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data.as_bytes()).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Link);
    b.append_link(&mut h, "var/lib/dpkg/status", target)
        .unwrap();
    b.into_inner().unwrap()
}

fn scan_all(target: &str) -> ScannedImage {
    let mut analyzers = default_analyzers();
    analyzers.extend(imagewarden_scanner::checks::file_analyzers(
        &imagewarden_scanner::checks::CheckOptions::default(),
    ));
    read_local(
        &ImageRef::parse(target).unwrap(),
        &Default::default(),
        &analyzers,
    )
    .unwrap()
}

#[test]
fn a_package_database_behind_a_hard_link_is_read_or_reported() {
    let layer = hardlinked_status_layer("opt/backup/status");
    let tmp = tempfile::tempdir().unwrap();
    Layout::single(tmp.path(), &[gzip(&layer)]);
    let target = format!("oci-layout:{}", tmp.path().display());
    // With the file checks on, the target was read (by the secret rules) and is kept:
    // the link's path is analyzed with its content.
    let image = scan_all(&target);
    let got = names(&image.inventory, Ecosystem::Debian);
    assert_eq!(got.len(), 2, "{:?}", image.warnings);
    assert!(image
        .inventory
        .packages
        .iter()
        .all(|p| p.path == "var/lib/dpkg/status"));
    // Inventory only: nothing read the target, and the miss is a warning, not silence.
    let image = scan(&target).unwrap();
    assert!(names(&image.inventory, Ecosystem::Debian).is_empty());
    assert!(
        image
            .warnings
            .iter()
            .any(|w| w.contains("var/lib/dpkg/status: a hard link to opt/backup/status")),
        "{:?}",
        image.warnings
    );
}

#[test]
fn the_uncompressed_bytes_of_a_scan_have_a_budget() {
    // Two layers of 3 MiB of zeros each (a few KiB compressed): within a 4 MiB budget
    // the first is read, the second is refused; the default budget takes both.
    let zeros = vec![0u8; 3 << 20];
    let l1 = gzip(&tar_layer(&[file("opt/a.bin", &zeros)]));
    let l2 = gzip(&tar_layer(&[file("opt/b.bin", &zeros)]));
    let tmp = tempfile::tempdir().unwrap();
    Layout::single(tmp.path(), &[l1, l2]);
    let target = ImageRef::parse(&format!("oci-layout:{}", tmp.path().display())).unwrap();
    let analyzers = default_analyzers();
    assert!(read_local(&target, &Default::default(), &analyzers).is_ok());
    let opts = imagewarden_scanner::source::PullOptions {
        budgets: ScanBudgets {
            max_image_bytes: 4 << 20,
            ..Default::default()
        },
        ..Default::default()
    };
    let err = read_local(&target, &opts, &analyzers).unwrap_err();
    assert!(err.to_string().contains("per-scan budget"), "{err}");
}

/// A dpkg status database of `n` packages with long descriptions-free stanzas.
fn many_packages_status(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!("Package: pkg-{i:06}-with-a-long-name\nStatus: install ok installed\nVersion: 1.0.{i}-1\n\n")
        })
        .collect()
}

#[test]
fn the_results_one_scan_keeps_have_a_budget() {
    // 20,000 packages in a 1.5 MiB status file: their inventory takes several MiB of
    // memory; a 1 MiB retained-bytes budget stops the scan with the reason, the default
    // budget takes it.
    let layer = tar_layer(&[
        file("etc/os-release", OS_RELEASE),
        file("var/lib/dpkg/status", many_packages_status(20_000)),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    Layout::single(tmp.path(), &[layer]);
    let target = ImageRef::parse(&format!("oci-layout:{}", tmp.path().display())).unwrap();
    let analyzers = default_analyzers();
    let image = read_local(&target, &Default::default(), &analyzers).unwrap();
    assert_eq!(names(&image.inventory, Ecosystem::Debian).len(), 20_000);
    let opts = imagewarden_scanner::source::PullOptions {
        budgets: ScanBudgets {
            max_retained_bytes: 1 << 20,
            ..Default::default()
        },
        ..Default::default()
    };
    let err = read_local(&target, &opts, &analyzers)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("retained-bytes budget") && err.contains("1 MiB"),
        "{err}"
    );

    // The same budget holds for a directory target.
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("var/lib/dpkg")).unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::write(root.path().join("etc/os-release"), OS_RELEASE).unwrap();
    std::fs::write(
        root.path().join("var/lib/dpkg/status"),
        many_packages_status(20_000),
    )
    .unwrap();
    let dir = ImageRef::parse(&format!("dir:{}", root.path().display())).unwrap();
    let err = read_local(&dir, &opts, &analyzers).unwrap_err().to_string();
    assert!(err.contains("retained-bytes budget"), "{err}");
}

#[test]
fn the_largest_file_read_for_an_analyzer_is_configurable() {
    // The dpkg analyzer's own cap is larger than this database; a 64 KiB file budget skips
    // it with a warning that names the budget.
    let status = many_packages_status(2_000);
    assert!(status.len() > 64 << 10);
    let layer = tar_layer(&[
        file("etc/os-release", OS_RELEASE),
        file("var/lib/dpkg/status", &status),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    Layout::single(tmp.path(), &[layer]);
    let target = ImageRef::parse(&format!("oci-layout:{}", tmp.path().display())).unwrap();
    let analyzers = default_analyzers();
    let opts = imagewarden_scanner::source::PullOptions {
        budgets: ScanBudgets {
            max_file_bytes: 64 << 10,
            ..Default::default()
        },
        ..Default::default()
    };
    let image = read_local(&target, &opts, &analyzers).unwrap();
    assert!(names(&image.inventory, Ecosystem::Debian).is_empty());
    assert!(
        image
            .warnings
            .iter()
            .any(|w| w.contains("var/lib/dpkg/status") && w.contains("--max-file-bytes")),
        "{:?}",
        image.warnings
    );
    let image = read_local(&target, &Default::default(), &analyzers).unwrap();
    assert_eq!(names(&image.inventory, Ecosystem::Debian).len(), 2_000);
}

#[test]
fn the_largest_manifest_read_is_configurable() {
    // An OCI layout and a docker-save archive of one small image: the default reads them,
    // a manifest budget below their documents' sizes refuses them naming the flag.
    let layer = gzip(&tar_layer(&[file("etc/os-release", OS_RELEASE)]));
    let tmp = tempfile::tempdir().unwrap();
    Layout::single(tmp.path(), std::slice::from_ref(&layer));
    let layout = ImageRef::parse(&format!("oci-layout:{}", tmp.path().display())).unwrap();
    let plain = tar_layer(&[file("etc/os-release", OS_RELEASE)]);
    let archive_path = tmp.path().join("image.tar");
    docker_archive(
        &archive_path,
        std::slice::from_ref(&plain),
        &[sha256(&plain)],
        &[],
    );
    let archive = ImageRef::parse(&format!("docker-archive:{}", archive_path.display())).unwrap();
    let analyzers = default_analyzers();
    let small = imagewarden_scanner::source::PullOptions {
        budgets: ScanBudgets {
            max_manifest_bytes: Some(64),
            ..Default::default()
        },
        ..Default::default()
    };
    let roomy = imagewarden_scanner::source::PullOptions {
        budgets: ScanBudgets {
            max_manifest_bytes: Some(64 << 10),
            ..Default::default()
        },
        ..Default::default()
    };
    for target in [&layout, &archive] {
        read_local(target, &Default::default(), &analyzers).unwrap();
        read_local(target, &roomy, &analyzers).unwrap();
        let err = read_local(target, &small, &analyzers)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("larger than 64 bytes (--max-manifest-bytes)"),
            "{target}: {err}"
        );
    }
}

#[test]
fn the_warnings_of_one_scan_are_bounded_by_the_flag() {
    // Ten entries with unsafe paths: ten warnings by default; three and a count of the
    // rest, naming the flag, within a budget of three.
    let entries: Vec<Entry> = (0..10)
        .map(|i| Entry::RawFile(format!("../escape-{i}").into_bytes(), b"x".to_vec()))
        .collect();
    let layer = gzip(&tar_layer(&entries));
    let tmp = tempfile::tempdir().unwrap();
    Layout::single(tmp.path(), &[layer]);
    let target = ImageRef::parse(&format!("oci-layout:{}", tmp.path().display())).unwrap();
    let analyzers = default_analyzers();
    let unsafe_paths = |image: &ScannedImage| {
        image
            .warnings
            .iter()
            .filter(|w| w.contains("unsafe path"))
            .count()
    };
    let image = read_local(&target, &Default::default(), &analyzers).unwrap();
    assert_eq!(unsafe_paths(&image), 10, "{:?}", image.warnings);
    let opts = imagewarden_scanner::source::PullOptions {
        budgets: ScanBudgets {
            max_warnings: 3,
            ..Default::default()
        },
        ..Default::default()
    };
    let image = read_local(&target, &opts, &analyzers).unwrap();
    assert_eq!(unsafe_paths(&image), 3, "{:?}", image.warnings);
    assert_eq!(
        image.warnings.last().map(String::as_str),
        Some("7 more warning(s) not shown (--max-warnings)")
    );
    assert_eq!(image.warnings.len(), 4);
}
