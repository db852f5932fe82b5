//! Inventory throughput and memory on a large generated multi-layer image, against plain
//! decompression of the same layers.
//!
//! `cargo bench -p imagewarden-scanner --bench inventory` (sizes from IW_BENCH_LAYERS,
//! default 4, and IW_BENCH_LAYER_MIB, default 256 uncompressed MiB per layer).

use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Text-like file content that compresses about as well as real files do.
fn filler(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "lorem",
        "ipsum",
        "dolor",
        "sit",
        "amet",
        "container",
        "layer",
        "package",
        "version",
        "static",
        "const",
        "return",
        "import",
        "module",
        "function",
        "0x7f3a",
        "\n",
        "{",
        "}",
    ];
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(WORDS[(x % WORDS.len() as u64) as usize].as_bytes());
        out.push(if x & 0x300 == 0 { b'\n' } else { b' ' });
        if x & 0xff == 7 {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

fn append(b: &mut tar::Builder<impl Write>, path: &str, data: &[u8], mode: u32) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, data).unwrap();
}

/// Writes one gzip layer to `blobs/sha256/` and returns (digest, size).
fn write_layer(dir: &Path, index: u64, mib: u64) -> (String, u64) {
    let tmp = dir.join(format!("layer-{index}.tmp"));
    let file = std::fs::File::create(&tmp).unwrap();
    let mut b = tar::Builder::new(GzEncoder::new(file, flate2::Compression::fast()));
    let mut status = String::new();
    for p in 0..500 {
        status.push_str(&format!(
            "Package: pkg{p}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {index}.{p}-1\n\n"
        ));
    }
    append(
        &mut b,
        "etc/os-release",
        b"ID=debian\nVERSION_ID=\"12\"\n",
        0o644,
    );
    append(&mut b, "var/lib/dpkg/status", status.as_bytes(), 0o644);
    for p in 0..200 {
        let meta = format!("Metadata-Version: 2.1\nName: lib{p}\nVersion: {index}.0.{p}\n");
        append(
            &mut b,
            &format!("usr/lib/python3/dist-packages/lib{p}-{index}.0.{p}.dist-info/METADATA"),
            meta.as_bytes(),
            0o644,
        );
        let pj = format!(r#"{{"name":"mod{p}","version":"{index}.0.{p}"}}"#);
        append(
            &mut b,
            &format!("app/node_modules/mod{p}/package.json"),
            pj.as_bytes(),
            0o644,
        );
    }
    // Bulk: 1 MiB files, some executable (they are read up to their magic bytes only).
    for f in 0..mib {
        let data = filler(index * 100_000 + f, 1 << 20);
        let mode = if f % 10 == 0 { 0o755 } else { 0o644 };
        append(
            &mut b,
            &format!("opt/data/{index}/file{f}.bin"),
            &data,
            mode,
        );
    }
    b.into_inner().unwrap().finish().unwrap();
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(&tmp).unwrap();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let hex = hex::encode(h.finalize());
    let size = std::fs::metadata(&tmp).unwrap().len();
    std::fs::rename(&tmp, dir.join("blobs/sha256").join(&hex)).unwrap();
    (format!("sha256:{hex}"), size)
}

fn write_json(dir: &Path, v: &serde_json::Value) -> (String, usize) {
    let data = serde_json::to_vec(v).unwrap();
    let hex = hex::encode(Sha256::digest(&data));
    std::fs::write(dir.join("blobs/sha256").join(&hex), &data).unwrap();
    (format!("sha256:{hex}"), data.len())
}

fn main() {
    let layers = env_num("IW_BENCH_LAYERS", 4);
    let mib = env_num("IW_BENCH_LAYER_MIB", 256);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let t = Instant::now();
    let descs: Vec<(String, u64)> = (0..layers).map(|i| write_layer(dir, i, mib)).collect();
    let compressed: u64 = descs.iter().map(|d| d.1).sum();
    eprintln!(
        "generated {layers} layers x {mib} MiB ({:.0} MiB gzip) in {:.1}s",
        compressed as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
    let (cd, cs) = write_json(
        dir,
        &serde_json::json!({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}}),
    );
    let layer_descs: Vec<serde_json::Value> = descs
        .iter()
        .map(|(d, s)| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s}))
        .collect();
    let (md, ms) = write_json(
        dir,
        &serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": layer_descs}),
    );
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms}]}))
        .unwrap(),
    )
    .unwrap();
    let rss_generated = vm_hwm_kib();

    // Baseline: decompress every layer to nowhere.
    let t = Instant::now();
    let mut total = 0u64;
    for (d, _) in &descs {
        let f = std::fs::File::open(dir.join("blobs/sha256").join(&d[7..])).unwrap();
        let mut gz = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(f));
        total += std::io::copy(&mut gz, &mut std::io::sink()).unwrap();
    }
    let plain = t.elapsed().as_secs_f64();

    let target =
        imagewarden_scanner::source::ImageRef::parse(&format!("oci-layout:{}", dir.display()))
            .unwrap();
    let analyzers = imagewarden_scanner::analyzer::default_analyzers();
    let t = Instant::now();
    let image =
        imagewarden_scanner::source::read_local(&target, &Default::default(), &analyzers).unwrap();
    let scan = t.elapsed().as_secs_f64();
    let rss_end = vm_hwm_kib();
    let mib_total = total as f64 / (1 << 20) as f64;
    println!(
        "image: {layers} layers, {mib_total:.0} MiB uncompressed, {:.0} MiB gzip",
        compressed as f64 / (1 << 20) as f64
    );
    println!(
        "plain gunzip:   {plain:.2}s ({:.0} MiB/s)",
        mib_total / plain
    );
    println!(
        "inventory:      {scan:.2}s ({:.0} MiB/s, {:.2}x gunzip), {} packages",
        mib_total / scan,
        scan / plain,
        image.inventory.packages.len()
    );
    println!(
        "peak RSS:       {} KiB (after generation: {} KiB)",
        rss_end, rss_generated
    );
}
