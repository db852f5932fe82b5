//! Layer semantics and hostile input: whiteouts across layers, unsafe paths, links,
//! decompression bombs, truncated and mismatching blobs, incomplete images.

mod inventory_support;

use imagewarden_scanner::analyzer::default_analyzers;
use imagewarden_scanner::inventory::Ecosystem;
use imagewarden_scanner::layer::{scan_layer, LayerError};
use imagewarden_scanner::source::SourceError;
use inventory_support::*;

const APK_A: &str = "P:musl\nV:1.1.22-r3\no:musl\n\nP:zlib\nV:1.2.11-r1\no:zlib\n\n";
const APK_B: &str = "P:musl\nV:1.1.24-r2\no:musl\n\n";
const OS_RELEASE: &str = "ID=alpine\nVERSION_ID=3.11.5\n";

fn layout_scan(
    layers: &[Vec<u8>],
) -> Result<imagewarden_scanner::source::ScannedImage, SourceError> {
    let tmp = tempfile::tempdir().unwrap();
    Layout::single(tmp.path(), layers);
    scan(&format!("oci-layout:{}", tmp.path().display()))
}

#[test]
fn a_package_database_replaced_in_a_later_layer_wins() {
    let l1 = gzip(&tar_layer(&[
        file("etc/os-release", OS_RELEASE),
        file("lib/apk/db/installed", APK_A),
    ]));
    let l2 = gzip(&tar_layer(&[file("lib/apk/db/installed", APK_B)]));
    let l2_digest = sha256(&l2);
    let inv = layout_scan(&[l1, l2]).unwrap().inventory;
    assert_eq!(names(&inv, Ecosystem::Alpine), ["musl@1.1.24-r2"]);
    assert_eq!(inv.packages[0].layer.as_deref(), Some(l2_digest.as_str()));
}

#[test]
fn a_whiteout_deletes_a_file_of_a_lower_layer() {
    let l1 = gzip(&tar_layer(&[
        file("etc/os-release", OS_RELEASE),
        file("lib/apk/db/installed", APK_A),
        file(
            "usr/lib/python3.8/site-packages/requests-2.22.0.dist-info/METADATA",
            "Name: requests\nVersion: 2.22.0\n",
        ),
    ]));
    let l2 = gzip(&tar_layer(&[
        file("lib/apk/db/.wh.installed", ""),
        // Deleting a directory deletes everything below it.
        file("usr/lib/python3.8/.wh.site-packages", ""),
    ]));
    let inv = layout_scan(&[l1, l2]).unwrap().inventory;
    assert!(inv.packages.is_empty(), "{:#?}", inv.packages);
    assert_eq!(inv.os.unwrap().family, "alpine");
}

#[test]
fn an_opaque_directory_hides_lower_content_but_keeps_its_own() {
    let l1 = gzip(&tar_layer(&[
        file(
            "app/node_modules/lodash/package.json",
            r#"{"name":"lodash","version":"4.17.15"}"#,
        ),
        file(
            "app/node_modules/minimist/package.json",
            r#"{"name":"minimist","version":"1.2.0"}"#,
        ),
    ]));
    let l2 = gzip(&tar_layer(&[
        Entry::Dir("app/node_modules".into()),
        file("app/node_modules/.wh..wh..opq", ""),
        file(
            "app/node_modules/lodash/package.json",
            r#"{"name":"lodash","version":"4.17.21"}"#,
        ),
    ]));
    let inv = layout_scan(&[l1, l2]).unwrap().inventory;
    assert_eq!(names(&inv, Ecosystem::Npm), ["lodash@4.17.21"]);
}

#[test]
fn a_file_readded_after_a_whiteout_is_listed() {
    let l1 = gzip(&tar_layer(&[file("lib/apk/db/installed", APK_A)]));
    let l2 = gzip(&tar_layer(&[file("lib/apk/db/.wh.installed", "")]));
    let l3 = gzip(&tar_layer(&[file("lib/apk/db/installed", APK_B)]));
    let inv = layout_scan(&[l1, l2, l3]).unwrap().inventory;
    assert_eq!(names(&inv, Ecosystem::Alpine), ["musl@1.1.24-r2"]);
}

#[test]
fn a_database_replaced_by_a_symlink_is_not_followed_and_hides_the_old_one() {
    let l1 = gzip(&tar_layer(&[file("lib/apk/db/installed", APK_A)]));
    let l2 = gzip(&tar_layer(&[Entry::Symlink(
        "lib/apk/db/installed".into(),
        "/etc/shadow".into(),
    )]));
    let inv = layout_scan(&[l1, l2]).unwrap().inventory;
    assert!(inv.packages.is_empty());
}

#[test]
fn traversal_and_absolute_paths_cannot_reach_outside_the_image_root() {
    let layer = tar_layer(&[
        Entry::RawFile(
            b"../../lib/apk/db/installed".to_vec(),
            APK_A.as_bytes().to_vec(),
        ),
        Entry::RawFile(
            b"lib/../../etc/os-release".to_vec(),
            b"ID=evil\nVERSION_ID=1\n".to_vec(),
        ),
        Entry::RawFile(b"/etc/os-release".to_vec(), OS_RELEASE.as_bytes().to_vec()),
        Entry::RawFile(b"/lib/apk/db/installed".to_vec(), APK_B.as_bytes().to_vec()),
    ]);
    let scan = scan_layer(layer.as_slice(), None, None, &default_analyzers()).unwrap();
    // Absolute paths are taken relative to the image root; climbing paths are refused.
    assert_eq!(
        scan.files.keys().collect::<Vec<_>>(),
        ["etc/os-release", "lib/apk/db/installed"]
    );
    assert_eq!(scan.warnings.len(), 2, "{:?}", scan.warnings);
    assert!(scan.warnings.iter().all(|w| w.contains("unsafe path")));
    let image = layout_scan(&[gzip(&layer)]).unwrap();
    assert_eq!(image.inventory.os.as_ref().unwrap().family, "alpine");
    assert_eq!(
        names(&image.inventory, Ecosystem::Alpine),
        ["musl@1.1.24-r2"]
    );
}

#[test]
fn symlink_loops_are_not_followed() {
    let layer = gzip(&tar_layer(&[
        Entry::Symlink("a".into(), "b".into()),
        Entry::Symlink("b".into(), "a".into()),
        Entry::Symlink("etc/os-release".into(), "../etc/os-release".into()),
        Entry::Symlink("lib/apk/db/installed".into(), "installed".into()),
        file("usr/lib/os-release", OS_RELEASE),
    ]));
    let inv = layout_scan(&[layer]).unwrap().inventory;
    // etc/os-release is a link (not read); the usr/lib fallback gives the OS.
    assert_eq!(inv.os.unwrap().version, "3.11.5");
    assert!(inv.packages.is_empty());
}

#[test]
fn a_decompression_bomb_is_walked_in_bounded_memory_and_the_file_skipped() {
    // 256 MiB of zeros in a wanted file (four times the apk analyzer's cap) compresses to about 256 KiB.
    const SIZE: u64 = 256 << 20;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        let mut b = tar::Builder::new(&mut enc);
        let mut h = tar::Header::new_gnu();
        h.set_size(SIZE);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(
            &mut h,
            "lib/apk/db/installed",
            std::io::repeat(0).take_compat(SIZE),
        )
        .unwrap();
        b.finish().unwrap();
    }
    let blob = enc.finish().unwrap();
    assert!(blob.len() < 8 << 20);
    let rss_before = peak_rss_kib();
    let scan = scan_layer(
        blob.as_slice(),
        Some(&sha256(&blob)),
        None,
        &default_analyzers(),
    )
    .unwrap();
    let rss_after = peak_rss_kib();
    let result = &scan.files["lib/apk/db/installed"];
    assert!(result.output.facts.is_empty());
    assert!(
        result.output.warnings.iter().any(|w| w.contains("cap")),
        "{:?}",
        result.output.warnings
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        assert!(
            after - before < 100 << 10,
            "peak RSS grew by {} KiB",
            after - before
        );
    }
}

/// `Read::take` for `std::io::Repeat` without importing the trait at every call.
trait TakeCompat: std::io::Read + Sized {
    fn take_compat(self, n: u64) -> std::io::Take<Self> {
        std::io::Read::take(self, n)
    }
}
impl<R: std::io::Read> TakeCompat for R {}

fn peak_rss_kib() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn a_truncated_blob_is_a_clear_error() {
    let blob = gzip(&tar_layer(&[file(
        "lib/apk/db/installed",
        APK_A.repeat(200),
    )]));
    let cut = &blob[..blob.len() / 2];
    let err = scan_layer(cut, Some(&sha256(&blob)), None, &default_analyzers()).unwrap_err();
    assert!(matches!(err, LayerError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("truncated or corrupt"), "{err}");
    // Through an image layout too: the manifest's size and digest no longer match the file.
    let tmp = tempfile::tempdir().unwrap();
    let l = Layout::single(tmp.path(), std::slice::from_ref(&blob));
    let path = l
        .dir
        .join("blobs/sha256")
        .join(&sha256(&blob)["sha256:".len()..]);
    std::fs::write(&path, cut).unwrap();
    let err = scan(&format!("oci-layout:{}", tmp.path().display())).unwrap_err();
    assert!(err.to_string().contains("truncated or corrupt"), "{err}");
}

#[test]
fn a_blob_whose_content_does_not_match_its_digest_is_refused() {
    let good = gzip(&tar_layer(&[file("lib/apk/db/installed", APK_A)]));
    let evil = gzip(&tar_layer(&[file("lib/apk/db/installed", APK_B)]));
    let tmp = tempfile::tempdir().unwrap();
    let l = Layout::single(tmp.path(), std::slice::from_ref(&good));
    let path = l
        .dir
        .join("blobs/sha256")
        .join(&sha256(&good)["sha256:".len()..]);
    // Same length, different content: only the digest can tell.
    let mut swapped = evil.clone();
    swapped.resize(good.len(), 0);
    std::fs::write(&path, &swapped).unwrap();
    let err = scan(&format!("oci-layout:{}", tmp.path().display())).unwrap_err();
    assert!(
        matches!(err, SourceError::Layer(LayerError::DigestMismatch { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("digest mismatch"), "{err}");
}

#[test]
fn a_manifest_listing_a_missing_layer_is_an_incomplete_image() {
    let layer = gzip(&tar_layer(&[file("lib/apk/db/installed", APK_A)]));
    let tmp = tempfile::tempdir().unwrap();
    let l = Layout::single(tmp.path(), std::slice::from_ref(&layer));
    std::fs::remove_file(
        l.dir
            .join("blobs/sha256")
            .join(&sha256(&layer)["sha256:".len()..]),
    )
    .unwrap();
    let err = scan(&format!("oci-layout:{}", tmp.path().display())).unwrap_err();
    assert!(matches!(err, SourceError::MissingBlob { .. }), "{err:?}");
    assert!(err.to_string().contains(&sha256(&layer)), "{err}");
}

#[test]
fn a_malformed_status_file_gives_what_it_can_and_never_panics() {
    let garbage: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let status = "Package: ok-pkg\nStatus: install ok installed\nVersion: 1.0-1\n\nPackage: no-version\nStatus: install ok installed\n\nVersion: 2.0\n\n:::\n\n";
    let mut status = status.as_bytes().to_vec();
    status.extend_from_slice(&garbage);
    let layer = gzip(&tar_layer(&[
        file("var/lib/dpkg/status", &status),
        file("etc/os-release", &garbage),
        file("lib/apk/db/installed", &garbage),
        file("app/node_modules/x/package.json", &garbage),
        exe(
            "usr/bin/fake-elf",
            [b"\x7fELF".as_slice(), &garbage].concat(),
        ),
        file("app/lib/broken.jar", &garbage),
    ]));
    let image = layout_scan(&[layer]).unwrap();
    assert_eq!(names(&image.inventory, Ecosystem::Debian), ["ok-pkg@1.0-1"]);
    assert!(
        image.warnings.iter().any(|w| w.contains("no-version")),
        "{:?}",
        image.warnings
    );
    assert!(
        image.warnings.iter().any(|w| w.contains("broken.jar")),
        "{:?}",
        image.warnings
    );
}

#[test]
fn zstd_and_uncompressed_layers_are_sniffed() {
    let tar = tar_layer(&[file("lib/apk/db/installed", APK_B)]);
    let scan_plain = scan_layer(tar.as_slice(), None, None, &default_analyzers()).unwrap();
    assert_eq!(scan_plain.files.len(), 1);
    // A zstd frame made with the reference encoder's raw-block format: the tar stored
    // uncompressed inside a valid frame.
    let frame = zstd_raw_frame(&tar);
    let scan_zstd = scan_layer(frame.as_slice(), None, None, &default_analyzers()).unwrap();
    let strip_layer = |s: &imagewarden_scanner::layer::LayerScan| {
        let mut f = s.files["lib/apk/db/installed"].output.facts.clone();
        for x in &mut f {
            if let imagewarden_scanner::analyzer::Fact::Package(p) = x {
                p.layer = None;
            }
        }
        f
    };
    assert_eq!(strip_layer(&scan_zstd), strip_layer(&scan_plain));
    assert_eq!(
        scan_zstd.files["lib/apk/db/installed"].output.facts.len(),
        1
    );
}

/// A zstd frame holding `data` in raw (stored) blocks.
fn zstd_raw_frame(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd];
    // Frame header: single segment, 8-byte content size.
    out.push(0b1110_0000);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    let chunks: Vec<&[u8]> = data.chunks(100_000).collect();
    for (i, c) in chunks.iter().enumerate() {
        let last = (i + 1 == chunks.len()) as u32;
        let header = last | (c.len() as u32) << 3; // block type 0 = raw
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(c);
    }
    out
}
