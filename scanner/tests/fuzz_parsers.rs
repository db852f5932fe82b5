//! Mutation fuzzing of every parser, on the stable toolchain: seeds from `testdata/` and
//! `tests/fuzz-corpus/` are mutated by a deterministic generator and fed to each parser,
//! which must return (with a result or an error) and never panic or overflow its stack.
//!
//! Each target runs for `IMAGEWARDEN_FUZZ_SECS` seconds (default 1, so that `cargo test`
//! in CI runs them all briefly); `IMAGEWARDEN_FUZZ_SEED` changes the generator's seed.
//! An input that panics is written to the temporary directory and named in the failure.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use imagewarden_scanner::analyzer::{self, default_analyzers, Analyzer, Output};
use imagewarden_scanner::layer::{self, LayerScan};
use imagewarden_scanner::source::{self, ImageRef};
use imagewarden_scanner::vulndb::version::VersionScheme;
use imagewarden_scanner::vulndb::{Db, DbBuilder};

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn seed(rel: &str) -> Vec<u8> {
    std::fs::read(manifest_dir().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn corpus(name: &str) -> Vec<u8> {
    seed(&format!("tests/fuzz-corpus/{name}"))
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: &[u8] = b"\0\xff\n\r:-.~^_+{}[]\"\\/0 9aZ!@";

/// One to four random edits: bit flips, interesting bytes, inserted, deleted, repeated
/// or spliced ranges; the result stays under `max` bytes.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8], max: usize) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = v.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n)
                    .map(|_| INTERESTING[rng.below(INTERESTING.len())])
                    .collect();
                v.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(256));
                v.drain(i..i + n);
            }
            4 if len > 0 => {
                // Repeat a short range many times: grows lists, nesting and counts.
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                let chunk = v[i..i + n].to_vec();
                let times = 1 + rng.below(2000);
                let at = i + n;
                v.splice(at..at, chunk.iter().copied().cycle().take(n * times));
            }
            5 if !other.is_empty() => {
                let i = rng.below(len + 1);
                let j = rng.below(other.len());
                let n = 1 + rng.below((other.len() - j).min(512));
                v.splice(i..i, other[j..j + n].iter().copied());
            }
            _ if len > 0 => {
                // Overwrite with a little-endian or big-endian extreme (lengths, offsets).
                let i = rng.below(len);
                let word: [u8; 4] = match rng.below(4) {
                    0 => [0xff; 4],
                    1 => [0x7f, 0xff, 0xff, 0xff],
                    2 => [0, 0, 0, 0x80],
                    _ => [0xff, 0xff, 0, 0],
                };
                for (k, b) in word.iter().enumerate() {
                    if let Some(x) = v.get_mut(i + k) {
                        *x = *b;
                    }
                }
            }
            _ => {}
        }
        v.truncate(max);
    }
    v
}

/// A parser under test, called with one input.
type Parser = Box<dyn Fn(&[u8])>;

struct Target {
    name: &'static str,
    seeds: Vec<Vec<u8>>,
    /// Largest input produced (near the parser's own cap is not needed to find bugs).
    max: usize,
    run: Parser,
}

fn fuzz_secs() -> f64 {
    std::env::var("IMAGEWARDEN_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

/// Runs `target` for the configured time; returns (executions, failing input files).
fn fuzz(target: &Target) -> (u64, Vec<PathBuf>) {
    let seed: u64 = std::env::var("IMAGEWARDEN_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let mut rng = Rng(seed ^ target.name.len() as u64 ^ (target.name.as_bytes()[0] as u64) << 32);
    let deadline = Instant::now() + Duration::from_secs_f64(fuzz_secs());
    let mut execs = 0u64;
    let mut failures = Vec::new();
    // The seeds themselves first, then mutations (of seeds and of earlier mutations).
    let mut pool: Vec<Vec<u8>> = target.seeds.clone();
    let mut queue: Vec<Vec<u8>> = target.seeds.clone();
    loop {
        let input = match queue.pop() {
            Some(i) => i,
            None => {
                if Instant::now() >= deadline {
                    break;
                }
                let base = &pool[rng.below(pool.len())];
                let other = &pool[rng.below(pool.len())];
                mutate(&mut rng, base, other, target.max)
            }
        };
        execs += 1;
        let outcome = catch_unwind(AssertUnwindSafe(|| (target.run)(&input)));
        if outcome.is_err() {
            let path = std::env::temp_dir().join(format!(
                "imagewarden-fuzz-{}-{}-{execs}.bin",
                target.name,
                std::process::id()
            ));
            let _ = std::fs::write(&path, &input);
            failures.push(path);
            if failures.len() >= 5 {
                break;
            }
        } else if execs.is_multiple_of(64) && pool.len() < 256 {
            // Keep some mutants as bases: edits accumulate over generations.
            pool.push(input);
        }
    }
    (execs, failures)
}

/// An analyzer of the default set, run on `path` whatever its size cap.
fn analyzer_target(name: &'static str, path: &'static str, seeds: Vec<Vec<u8>>) -> Target {
    Target {
        name,
        seeds,
        max: 64 << 10,
        run: Box::new(move |data| {
            let meta = analyzer::FileMeta {
                path,
                mode: 0o644,
                size: data.len() as u64,
            };
            for a in default_analyzers() {
                if a.wants(&meta) {
                    a.analyze_file(&meta, data, &mut Output::default());
                }
            }
        }),
    }
}

fn index_bytes() -> Vec<u8> {
    let mut b = DbBuilder::new();
    b.add_source(manifest_dir().join("testdata/osv/npm").to_str().unwrap())
        .unwrap();
    let mut out = Vec::new();
    b.write(&mut out).unwrap();
    out
}

fn targets() -> Vec<Target> {
    let txtar = String::from_utf8(seed("testdata/dpkg-status-ubuntu1804.txtar")).unwrap();
    let osv_seeds: Vec<Vec<u8>> = ["npm/NSWG-ECO-368.json", "npm/NSWG-ECO-493.json"]
        .iter()
        .map(|f| seed(&format!("testdata/osv/{f}")))
        .collect();
    let alpine_layer = {
        use std::io::Read;
        let f = std::fs::File::open(manifest_dir().join("testdata/alpine-310.tar.gz")).unwrap();
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
        let mut layer = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_string_lossy().ends_with("layer.tar") {
                e.read_to_end(&mut layer).unwrap();
            }
        }
        // The first files of the layer: headers, links, directories, small files.
        layer.truncate(256 << 10);
        layer
    };
    vec![
        analyzer_target(
            "dpkg-status",
            "var/lib/dpkg/status",
            vec![txtar.into_bytes()],
        ),
        analyzer_target(
            "apk-installed",
            "lib/apk/db/installed",
            vec![seed("testdata/apk-installed-alpine")],
        ),
        Target {
            name: "rpm-bdb",
            seeds: vec![seed("testdata/rpm-Packages-bdb")],
            max: 1 << 20,
            run: Box::new(|d| {
                if let Ok(blobs) = analyzer::rpm::read_bdb_hash(d) {
                    for b in blobs.iter().take(50) {
                        let _ = analyzer::rpm::parse_header(b);
                    }
                }
            }),
        },
        Target {
            name: "rpm-header",
            seeds: analyzer::rpm::read_bdb_hash(&seed("testdata/rpm-Packages-bdb"))
                .unwrap()
                .into_iter()
                .take(8)
                .collect(),
            max: 256 << 10,
            run: Box::new(|d| {
                let _ = analyzer::rpm::parse_header(d);
            }),
        },
        Target {
            name: "rpm-ndb",
            seeds: vec![seed("testdata/rpm-Packages-bdb")[..4096].to_vec()],
            max: 64 << 10,
            run: Box::new(|d| {
                let _ = analyzer::rpm::read_ndb(d);
            }),
        },
        analyzer_target(
            "rpm-sqlite",
            "var/lib/rpm/rpmdb.sqlite",
            vec![seed("testdata/rpmdb.sqlite")],
        ),
        analyzer_target(
            "python-metadata",
            "usr/lib/python3/site-packages/PyYAML-5.3.dist-info/METADATA",
            vec![corpus("METADATA")],
        ),
        analyzer_target(
            "node-package-json",
            "app/node_modules/lodash/package.json",
            vec![corpus("package.json")],
        ),
        analyzer_target(
            "java-archive",
            "app/demo-1.2.3.jar",
            vec![corpus("demo-1.2.3.jar")],
        ),
        analyzer_target(
            "cargo-lock",
            "app/Cargo.lock",
            vec![corpus("cargo-lock.toml")],
        ),
        analyzer_target(
            "composer-installed",
            "app/vendor/composer/installed.json",
            vec![corpus("installed.json")],
        ),
        analyzer_target(
            "gemspec",
            "usr/lib/ruby/gems/3.0.0/specifications/rake-13.0.6.gemspec",
            vec![corpus("rake.gemspec")],
        ),
        analyzer_target(
            "dotnet-deps",
            "app/app.deps.json",
            vec![corpus("app.deps.json")],
        ),
        analyzer_target("os-release", "etc/os-release", vec![corpus("os-release")]),
        Target {
            name: "elf-binary",
            // Go build info and Rust audit data live in ELF files; a minimal ELF header
            // is the seed (the real binaries are fixtures fetched by script, not kept here).
            // The second seed once made the bounds arithmetic overflow.
            seeds: vec![
                {
                    let mut elf = b"\x7fELF\x02\x01\x01\0".to_vec();
                    elf.resize(4096, 0);
                    elf
                },
                corpus("elf-wrapping-offsets.bin"),
            ],
            max: 64 << 10,
            run: Box::new(|d| {
                let meta = analyzer::FileMeta {
                    path: "usr/local/bin/app",
                    mode: 0o755,
                    size: d.len() as u64,
                };
                analyzer::binary::ExecutableAnalyzer.analyze_file(&meta, d, &mut Output::default());
            }),
        },
        Target {
            name: "tar-walk",
            seeds: vec![alpine_layer.clone()],
            max: 512 << 10,
            run: Box::new(|d| {
                let _ = layer::walk_tar(
                    Cursor::new(d),
                    &default_analyzers(),
                    &mut LayerScan::default(),
                );
            }),
        },
        Target {
            name: "layer-blob",
            seeds: vec![{
                use std::io::Write;
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&alpine_layer[..64 << 10]).unwrap();
                e.finish().unwrap()
            }],
            max: 256 << 10,
            run: Box::new(|d| {
                let _ = layer::scan_layer(Cursor::new(d), None, None, &default_analyzers());
            }),
        },
        Target {
            name: "oci-manifest",
            seeds: vec![
                corpus("oci-index.json"),
                corpus("oci-manifest.json"),
                corpus("docker-manifest.json"),
            ],
            max: 64 << 10,
            run: Box::new(|d| {
                let _ = source::oci::parse_manifest(d, "fuzz");
            }),
        },
        Target {
            name: "sbom",
            seeds: vec![
                corpus("sbom.cdx.json"),
                seed("testdata/sbom-alpine.cdx.xml"),
            ],
            max: 64 << 10,
            run: Box::new(|d| {
                let file = tempfile::NamedTempFile::new().unwrap();
                std::fs::write(file.path(), d).unwrap();
                let _ = source::sbom::read(
                    &ImageRef::Sbom(file.path().to_path_buf()),
                    file.path(),
                    &Default::default(),
                );
            }),
        },
        Target {
            name: "osv-record",
            seeds: osv_seeds,
            max: 64 << 10,
            run: Box::new(|d| {
                let mut b = DbBuilder::new();
                b.add_json(d, "fuzz");
                let mut out = Vec::new();
                if b.write(&mut out).is_ok() {
                    let db = Db::from_bytes(out, "fuzz").unwrap();
                    for (eco, name) in db.packages().take(20) {
                        for e in db.affected(&eco, &name).unwrap() {
                            let _ = db.advisory(e.advisory).unwrap();
                        }
                    }
                }
            }),
        },
        Target {
            name: "nvd-feed",
            // A feed of two real CVE records (the shape NVD's yearly feeds have) and one
            // record alone; every CVE read is rated as the index would rate it.
            seeds: {
                let cve = |y: &str, dir: &str, id: &str| {
                    seed(&format!("testdata/nvd/CVE-{y}/{dir}/{id}.json"))
                };
                let a = cve("2021", "CVE-2021-256xx", "CVE-2021-25633");
                let b = cve("2021", "CVE-2021-256xx", "CVE-2021-25634");
                let feed = [
                    &br#"{"resultsPerPage":2,"format":"NVD_CVE","version":"2.0","vulnerabilities":[{"cve":"#[..],
                    &a,
                    &br#"},{"cve":"#[..],
                    &b,
                    &br#"}]}"#[..],
                ]
                .concat();
                vec![feed, a]
            },
            max: 64 << 10,
            run: Box::new(|d| {
                let mut b = DbBuilder::new();
                let _ = imagewarden_scanner::vulndb::nvd::read_cves(Cursor::new(d), &mut |cve| {
                    if let Some(entry) = imagewarden_scanner::vulndb::nvd::NvdEntry::from_cve(&cve)
                    {
                        let _ = entry.rating();
                    }
                    b.add_nvd_cve(&cve);
                });
                let mut out = Vec::new();
                let _ = b.write(&mut out);
            }),
        },
        Target {
            name: "index-file",
            seeds: vec![index_bytes()],
            max: 1 << 20,
            run: Box::new(|d| {
                // Mutants rarely keep the checksum; those that do (the seed) are walked.
                if let Ok(db) = Db::from_bytes(d.to_vec(), "fuzz") {
                    for (eco, name) in db.packages().take(50) {
                        if let Ok(entries) = db.affected(&eco, &name) {
                            for e in entries {
                                let _ = db.advisory(e.advisory);
                            }
                        }
                    }
                }
            }),
        },
        Target {
            name: "versions",
            seeds: vec![corpus("versions.txt")],
            max: 4 << 10,
            run: Box::new(|d| {
                let text = String::from_utf8_lossy(d);
                let lines: Vec<&str> = text.lines().take(64).collect();
                for scheme in [
                    VersionScheme::Dpkg,
                    VersionScheme::Apk,
                    VersionScheme::Rpm,
                    VersionScheme::SemVer,
                    VersionScheme::Pep440,
                    VersionScheme::Maven,
                    VersionScheme::RubyGems,
                    VersionScheme::NuGet,
                    VersionScheme::Composer,
                ] {
                    for w in lines.windows(2) {
                        let ab = scheme.compare(w[0], w[1]);
                        let ba = scheme.compare(w[1], w[0]);
                        assert_eq!(ab, ba.reverse(), "{scheme:?}: {:?} vs {:?}", w[0], w[1]);
                    }
                }
            }),
        },
    ]
}

#[test]
fn every_parser_survives_mutated_input() {
    // Panics are caught per input; keep their messages off the test output.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut report = Vec::new();
    let mut failed = Vec::new();
    let mut total = 0;
    for target in targets() {
        let (execs, failures) = fuzz(&target);
        total += execs;
        report.push(format!(
            "{}: {execs} executions, {} failing",
            target.name,
            failures.len()
        ));
        for f in failures {
            failed.push(format!("{}: {}", target.name, f.display()));
        }
    }
    std::panic::set_hook(hook);
    eprintln!("{}\ntotal: {total} executions", report.join("\n"));
    assert!(
        failed.is_empty(),
        "inputs that panicked:\n{}",
        failed.join("\n")
    );
}
