//! The worst input of each hostile class of issue 14, written to disk for measuring the
//! release CLI on them (bench/hostile.sh runs this, then times each case): version strings
//! that made comparisons recurse, a crafted index, archive and decompression bombs,
//! oversized manifests and SBOMs, dpkg status files made of warnings, overlapping and
//! nested jars, files full of secrets, OSV records with huge range counts, hard links.
//!
//! `IW_HOSTILE_DIR=/tmp/hostile cargo test -p imagewarden-scanner --test hostile_inputs -- --ignored`
//! writes the inputs and `cases.tsv`: one case a line, `name<TAB>what<TAB>CLI arguments`
//! (arguments separated by spaces, `@` standing for the output directory).

mod inventory_support;

use std::fmt::Write as _;
use std::path::Path;

use imagewarden_scanner::vulndb::DbBuilder;
use inventory_support::*;
use sha2::{Digest, Sha256};

const DEBIAN_OS: &str = "ID=debian\nVERSION_ID=12\n";

fn write(path: &Path, data: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// An OSV record for one package with one range of `events`.
fn osv_record(id: &str, ecosystem: &str, name: &str, events: &[serde_json::Value]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": id, "modified": "2024-01-01T00:00:00Z",
        "affected": [{"package": {"ecosystem": ecosystem, "name": name},
                      "ranges": [{"type": "ECOSYSTEM", "events": events}]}]
    }))
    .unwrap()
}

fn npm_package(root: &Path, name: &str, version: &str) {
    write(
        &root.join(format!("app/node_modules/{name}/package.json")),
        serde_json::to_vec(&serde_json::json!({"name": name, "version": version})).unwrap(),
    );
}

/// Every case: (name, what it is, arguments after `imagewarden`).
struct Cases(Vec<(String, String, String)>);

impl Cases {
    fn add(&mut self, name: &str, what: &str, args: &str) {
        self.0.push((name.into(), what.into(), args.into()));
    }
}

fn version_strings(out: &Path, cases: &mut Cases) {
    // A jar whose pom.properties version is `1-1-1-…` (100,000 components), and an OSV
    // record whose `fixed` is the same: the Maven comparison once recursed on it.
    let version = "1-".repeat(100_000) + "1";
    let pom = format!("groupId=org.example\nartifactId=evil\nversion={version}\n");
    let jar = stored_zip(
        &[(
            "META-INF/maven/org.example/evil/pom.properties",
            pom.as_bytes(),
        )],
        &[("META-INF/maven/org.example/evil/pom.properties".into(), 0)],
    );
    let root = out.join("version/rootfs");
    write(&root.join("app/evil.jar"), jar);
    write(
        &out.join("version/osv/Maven/EVIL-1.json"),
        osv_record(
            "EVIL-1",
            "Maven",
            "org.example:evil",
            &[
                serde_json::json!({"introduced": "0"}),
                serde_json::json!({"fixed": version}),
            ],
        ),
    );
    cases.add(
        "version-maven",
        "jar and OSV record with a 200 KB Maven version 1-1-1-... (100,000 components)",
        "scan dir:@/version/rootfs --db @/version/osv --format json -o /dev/null",
    );
}

fn crafted_index(out: &Path, cases: &mut Cases) {
    let record = osv_record(
        "GHSA-test-0001",
        "npm",
        "left-pad",
        &[
            serde_json::json!({"introduced": "0"}),
            serde_json::json!({"fixed": "1.3.0"}),
        ],
    );
    let mut builder = DbBuilder::new();
    builder.add_json(&record, "inline");
    let mut index = Vec::new();
    builder.write(&mut index).unwrap();
    // The first key's blob offset (keys section: header entry 1, at byte 32) made to wrap
    // when its length is added; the checksum trailer is recomputed so that only the
    // offset checks stand between the file and a panic.
    let keys = u64::from_le_bytes(index[32..40].try_into().unwrap()) as usize;
    index[keys + 8..keys + 16].copy_from_slice(&(u64::MAX - 2).to_le_bytes());
    let body = index.len() - 32;
    let sum = Sha256::digest(&index[..body]);
    index[body..].copy_from_slice(&sum);
    write(&out.join("index/crafted.idx"), index);
    npm_package(&out.join("index/rootfs"), "left-pad", "1.0.0");
    cases.add(
        "index-wrapping-offset",
        "index file whose key points at offset 2^64-3 (checksum valid)",
        "scan dir:@/index/rootfs --db @/index/crafted.idx --format json -o /dev/null",
    );
}

fn archives(out: &Path, cases: &mut Cases) {
    let good = tar_layer(&[
        file("etc/os-release", DEBIAN_OS),
        file(
            "var/lib/dpkg/status",
            "Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13.dfsg-1\n\n",
        ),
    ]);
    // 60 JSON-looking non-layer entries of 15 MiB each (each under the per-document cap),
    // gzip-compressed to about 1 MB.
    let mut doc = b"{".to_vec();
    doc.resize(15 << 20, b' ');
    let names: Vec<String> = (0..60).map(|i| format!("junk{i:02}.json")).collect();
    let extra: Vec<(&str, Vec<u8>)> = names.iter().map(|n| (n.as_str(), doc.clone())).collect();
    let plain = out.join("archive/non-layer.tar");
    std::fs::create_dir_all(plain.parent().unwrap()).unwrap();
    docker_archive(
        &plain,
        std::slice::from_ref(&good),
        &[sha256(&good)],
        &extra,
    );
    write(
        &out.join("archive/non-layer.tar.gz"),
        gzip(&std::fs::read(&plain).unwrap()),
    );
    std::fs::remove_file(&plain).unwrap();
    cases.add(
        "archive-non-layer-entries",
        "docker-archive (gzip, ~1 MB) with 60 x 15 MiB JSON entries beside the image",
        "scan docker-archive:@/archive/non-layer.tar.gz --db scanner/testdata/osv/npm --format json -o /dev/null",
    );

    // manifest.json just over its 16 MiB cap.
    let mut big = b"[".to_vec();
    big.resize((16 << 20) + 10, b' ');
    big.push(b']');
    docker_archive(
        &out.join("archive/big-manifest.tar"),
        std::slice::from_ref(&good),
        &[sha256(&good)],
        &[("manifest.json", big)],
    );
    cases.add(
        "manifest-over-cap",
        "docker-archive whose manifest.json is 16 MiB + 11 bytes",
        "scan docker-archive:@/archive/big-manifest.tar --db scanner/testdata/osv/npm --format json -o /dev/null",
    );

    // A layer of 1 GiB of zeros, about 1 MB compressed, against a 512 MiB image budget.
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1 << 30);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(
        &mut h,
        "zeros.bin",
        std::io::Read::take(std::io::repeat(0), 1 << 30),
    )
    .unwrap();
    let bomb = tar.into_inner().unwrap();
    let bomb_id = sha256(&bomb);
    docker_archive(
        &out.join("archive/gzip-bomb.tar"),
        &[gzip(&bomb)],
        &[bomb_id],
        &[],
    );
    cases.add(
        "decompression-bomb",
        "docker-archive with a 1 MB gzip layer of 1 GiB of zeros, --max-image-bytes 512Mi",
        "scan docker-archive:@/archive/gzip-bomb.tar --max-image-bytes 512Mi --db scanner/testdata/osv/npm --format json -o /dev/null",
    );

    // 20,000 hard links to one 4 MiB file, and the dpkg status reached only through one.
    let mut b = tar::Builder::new(Vec::new());
    let add = |b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
    };
    add(&mut b, "etc/os-release", DEBIAN_OS.as_bytes());
    add(&mut b, "opt/blob.json", &vec![b' '; 4 << 20]);
    add(
        &mut b,
        "opt/status.orig",
        many_packages_status(2_000).as_bytes(),
    );
    let link = |b: &mut tar::Builder<Vec<u8>>, name: &str, target: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Link);
        b.append_link(&mut h, name, target).unwrap();
    };
    for i in 0..20_000 {
        link(&mut b, &format!("opt/links/l{i:05}.json"), "opt/blob.json");
    }
    link(&mut b, "var/lib/dpkg/status", "opt/status.orig");
    let layer = b.into_inner().unwrap();
    docker_archive(
        &out.join("archive/hard-links.tar"),
        std::slice::from_ref(&layer),
        &[sha256(&layer)],
        &[],
    );
    cases.add(
        "hard-links",
        "layer with 20,000 hard links to a 4 MiB file and the dpkg status behind a hard link",
        "scan docker-archive:@/archive/hard-links.tar --db scanner/testdata/osv/npm --format json -o /dev/null",
    );
}

fn many_packages_status(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!("Package: pkg-{i:07}-with-a-long-name\nStatus: install ok installed\nVersion: 1.0.{i}-1\n\n")
        })
        .collect()
}

fn sboms(out: &Path, cases: &mut Cases) {
    let bom = |n: usize, description: &str| {
        let mut s = String::from(
            r#"{"bomFormat":"CycloneDX","specVersion":"1.5","version":1,"components":["#,
        );
        for i in 0..n {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(
                s,
                r#"{{"type":"library","name":"package-{i}","version":"1.0.{i}","purl":"pkg:npm/package-{i}@1.0.{i}","description":"{description}"}}"#
            );
        }
        s.push_str("]}");
        s
    };
    let short = "a component of a very large bill of materials";
    write(&out.join("sbom/huge.cdx.json"), bom(700_000, short));
    cases.add(
        "sbom-huge",
        "CycloneDX JSON SBOM of ~107 MB (700,000 components)",
        "scan sbom:@/sbom/huge.cdx.json --db scanner/testdata/osv/npm --format json -o /dev/null",
    );
    // The most an SBOM may hold: 99,000 components in ~62 MB.
    write(
        &out.join("sbom/under-cap.cdx.json"),
        bom(99_000, &"d".repeat(470)),
    );
    cases.add(
        "sbom-under-cap",
        "CycloneDX JSON SBOM of ~62 MB with 99,000 components (under both caps)",
        "scan sbom:@/sbom/under-cap.cdx.json --db scanner/testdata/osv/npm --format json -o /dev/null",
    );
}

fn dpkg(out: &Path, cases: &mut Cases) {
    // 1 MiB of stanzas that are each a warning: no version, a version that is not one,
    // lines that are not fields.
    let root = out.join("dpkg/warnings");
    write(&root.join("etc/os-release"), DEBIAN_OS);
    let mut status = String::new();
    let mut i = 0;
    while status.len() < 1 << 20 {
        let _ = match i % 3 {
            0 => write!(status, "Package: p{i}\nStatus: install ok installed\n\n"),
            1 => write!(
                status,
                "Package: p{i}\nStatus: install ok installed\nVersion: :::{}\n\n",
                "x".repeat(200)
            ),
            _ => write!(status, "{} not a field\n\n", "y".repeat(300)),
        };
        i += 1;
    }
    write(&root.join("var/lib/dpkg/status"), status);
    cases.add(
        "dpkg-status-warnings",
        "1 MiB dpkg status of broken stanzas (no version, bad versions, lines that are not fields)",
        "scan dir:@/dpkg/warnings --db scanner/testdata/osv/Debian --format json -o /dev/null",
    );

    let root = out.join("dpkg/many");
    write(&root.join("etc/os-release"), DEBIAN_OS);
    // Just under the dpkg analyzer's 64 MiB file cap.
    write(
        &root.join("var/lib/dpkg/status"),
        many_packages_status(700_000),
    );
    cases.add(
        "dpkg-status-huge",
        "63 MB dpkg status with 700,000 packages (under the 64 MiB file cap)",
        "scan dir:@/dpkg/many --db scanner/testdata/osv/Debian --format json -o /dev/null",
    );
}

fn jars(out: &Path, cases: &mut Cases) {
    // Each level lists one nested jar 60 times over the same bytes: 60^3 archives naively.
    let pom = b"groupId=org.example\nartifactId=inner\nversion=1.0\n";
    let mut jar = stored_zip(
        &[("META-INF/maven/org.example/inner/pom.properties", pom)],
        &[("META-INF/maven/org.example/inner/pom.properties".into(), 0)],
    );
    for level in 0..3 {
        let central: Vec<(String, usize)> = (0..60)
            .map(|i| (format!("lib/l{level}-{i}.jar"), 0))
            .collect();
        jar = stored_zip(&[("lib/nested.jar", &jar)], &central);
    }
    write(&out.join("jars/overlapping/app/app.jar"), jar);
    cases.add(
        "jar-overlapping-nested",
        "jar nesting 3 levels of 60 entries that overlap the same bytes",
        "scan dir:@/jars/overlapping --db scanner/testdata/osv/npm --format json -o /dev/null",
    );

    // Distinct nested jars: 6 x 20 MiB each (under the 128 MiB jar cap), past the inflate
    // budget together.
    let big = vec![b'x'; 20 << 20];
    let inner = stored_zip(&[("data.bin", &big)], &[("data.bin".into(), 0)]);
    let names: Vec<String> = (0..6).map(|i| format!("lib/n{i}.jar")).collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &inner[..])).collect();
    let central: Vec<(String, usize)> = names.iter().cloned().zip(0..).collect();
    write(
        &out.join("jars/distinct/app/app.jar"),
        stored_zip(&files, &central),
    );
    cases.add(
        "jar-nested-inflate",
        "jar of 120 MiB holding 6 distinct nested jars of 20 MiB each",
        "scan dir:@/jars/distinct --db scanner/testdata/osv/npm --format json -o /dev/null",
    );
}

fn secrets(out: &Path, cases: &mut Cases) {
    // The second fills the secret scanner's 1 MiB file cap.
    for (name, n) in [("secrets-1100", 1_100), ("secrets-25k", 25_000)] {
        let mut text = String::new();
        for i in 0..n {
            let _ = writeln!(text, "aws_access_key_id = AKIA{:016X}", i as u64 * 7919);
        }
        write(&out.join(format!("{name}/etc/app.conf")), text);
        cases.add(
            name,
            &format!("one file with {n} AWS access keys"),
            &format!("scan dir:@/{name} --scanners secret --format json -o /dev/null"),
        );
    }
}

fn osv_ranges(out: &Path, cases: &mut Cases) {
    let mut events = vec![serde_json::json!({"introduced": "0"})];
    for i in 0..100_000 {
        events.push(serde_json::json!({"fixed": format!("1.{i}.0")}));
        events.push(serde_json::json!({"introduced": format!("1.{i}.1")}));
    }
    write(
        &out.join("osv-ranges/osv/npm/GHSA-many-events.json"),
        osv_record("GHSA-many-events", "npm", "left-pad", &events),
    );
    // Beside it, the most a record may hold within the caps: 400 affected entries of
    // 4,999 events each (2 million events, ~45 MB).
    let range: Vec<serde_json::Value> = std::iter::once(serde_json::json!({"introduced": "0"}))
        .chain((0..2_499).flat_map(|i| {
            [
                serde_json::json!({"fixed": format!("1.{i}.0")}),
                serde_json::json!({"introduced": format!("1.{i}.1")}),
            ]
        }))
        .collect();
    let affected: Vec<serde_json::Value> = (0..400)
        .map(|_| {
            serde_json::json!({"package": {"ecosystem": "npm", "name": "left-pad"},
                "ranges": [{"type": "SEMVER", "events": range}]})
        })
        .collect();
    write(
        &out.join("osv-ranges/osv/npm/GHSA-most-events.json"),
        serde_json::to_vec(&serde_json::json!({
            "id": "GHSA-most-events", "modified": "2024-01-01T00:00:00Z", "affected": affected
        }))
        .unwrap(),
    );
    npm_package(&out.join("osv-ranges/rootfs"), "left-pad", "1.99999.5");
    cases.add(
        "osv-range-events",
        "OSV records of 200,001 events in one range, and of 400 ranges x 4,999 events",
        "scan dir:@/osv-ranges/rootfs --db @/osv-ranges/osv --format json -o /dev/null",
    );
}

#[test]
#[ignore = "writes ~250 MB of crafted inputs for bench/hostile.sh"]
fn write_worst_inputs() {
    let out = std::path::PathBuf::from(
        std::env::var_os("IW_HOSTILE_DIR").expect("IW_HOSTILE_DIR names the output directory"),
    );
    std::fs::create_dir_all(&out).unwrap();
    let mut cases = Cases(Vec::new());
    version_strings(&out, &mut cases);
    crafted_index(&out, &mut cases);
    archives(&out, &mut cases);
    sboms(&out, &mut cases);
    dpkg(&out, &mut cases);
    jars(&out, &mut cases);
    secrets(&out, &mut cases);
    osv_ranges(&out, &mut cases);
    let tsv: String = cases
        .0
        .iter()
        .map(|(name, what, args)| format!("{name}\t{what}\t{args}\n"))
        .collect();
    std::fs::write(out.join("cases.tsv"), tsv).unwrap();
}
