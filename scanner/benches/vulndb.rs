//! Vulnerability index benchmark: compiles every OSV record of the shared test data
//! (../shared/testdata/vulndb/osv, or IMAGEWARDEN_OSV_DIR) and reports build time,
//! index size, load time and resident memory after loading and after queries, with
//! the figures extrapolated per record to a full public OSV dump.
//!
//! Run: `cargo bench -p imagewarden-scanner --bench vulndb`. Skips (and says so)
//! when the data is not there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use imagewarden_scanner::inventory::{Ecosystem, Inventory, OsInfo, Package};
use imagewarden_scanner::matcher::match_inventory;
use imagewarden_scanner::vulndb::{Db, DbBuilder};

/// Records in a full public OSV dump of the ecosystems the scanner reads
/// (Debian, Ubuntu, Alpine, PyPI, npm, Go, Maven, crates.io), roughly.
const FULL_DUMP_RECORDS: f64 = 500_000.0;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Runs in a fresh process so that its memory is the loaded index's alone.
fn load_and_query(path: &Path) {
    let rss_start = status_kib("VmRSS:");
    let t = Instant::now();
    let db = Db::open_index(path).expect("open index");
    let load = t.elapsed();
    let rss_load = status_kib("VmRSS:");
    // A realistic image: a Debian 9 package set and application packages.
    let p = |ecosystem, name: &str, version: &str, source: Option<&str>| Package {
        ecosystem,
        name: name.into(),
        version: version.into(),
        purl: String::new(),
        source_name: source.map(str::to_string),
        source_version: None,
        vendor: None,
        module: None,
        install_state: None,
        os_package: None,
        layer: None,
        path: String::new(),
    };
    let inventory = Inventory {
        target: "bench".into(),
        digest: None,
        os: Some(OsInfo {
            family: "debian".into(),
            version: "9.13".into(),
        }),
        packages: vec![
            p(
                Ecosystem::Debian,
                "libssl1.1",
                "1.1.0f-3+deb9u2",
                Some("openssl"),
            ),
            p(Ecosystem::Debian, "libxml2", "2.9.4+dfsg1-2.2+deb9u2", None),
            p(Ecosystem::Debian, "dpkg", "1.18.24", None),
            p(Ecosystem::Debian, "tzdata", "2017c-0+deb9u1", None),
            p(Ecosystem::Debian, "libc6", "2.24-11+deb9u1", Some("glibc")),
            p(Ecosystem::Debian, "curl", "7.52.1-5+deb9u5", None),
            p(Ecosystem::PyPI, "django", "3.2.0", None),
            p(Ecosystem::PyPI, "pyyaml", "5.3", None),
            p(Ecosystem::Go, "golang.org/x/text", "v0.3.5", None),
            p(Ecosystem::Npm, "lodash", "4.17.15", None),
        ],
    };
    let t = Instant::now();
    let mut findings = 0;
    const SCANS: usize = 200;
    for _ in 0..SCANS {
        findings = match_inventory(&inventory, &db)
            .expect("match")
            .vulnerabilities
            .len();
    }
    let per_scan = t.elapsed() / SCANS as u32;
    let rss_scan = status_kib("VmRSS:");
    // Worst case: every package key of the index queried and every advisory decoded.
    let t = Instant::now();
    let mut queries = 0usize;
    let mut entries = 0usize;
    for (eco, name) in db.packages().collect::<Vec<_>>() {
        for e in db.affected(&eco, &name).expect("affected") {
            db.advisory(e.advisory).expect("advisory");
            entries += 1;
        }
        queries += 1;
    }
    let all = t.elapsed();
    println!("load_index_ms           {:.3}", load.as_secs_f64() * 1000.0);
    println!("rss_before_load_mib     {:.1}", mib(rss_start));
    println!("rss_after_load_mib      {:.1}", mib(rss_load));
    println!(
        "scan_10_packages_us     {:.1}   ({findings} findings, mean of {SCANS})",
        per_scan.as_secs_f64() * 1e6
    );
    println!("rss_after_scans_mib     {:.1}", mib(rss_scan));
    println!(
        "query_all_keys_ms       {:.1}   ({queries} keys, {entries} entries decoded)",
        all.as_secs_f64() * 1000.0
    );
    println!("rss_after_all_keys_mib  {:.1}", mib(status_kib("VmRSS:")));
    println!("peak_rss_mib            {:.1}", mib(status_kib("VmHWM:")));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--load-index") {
        load_and_query(Path::new(&args[i + 1]));
        return;
    }
    let dir = std::env::var_os("IMAGEWARDEN_OSV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/vulndb/osv")
        });
    if !dir.is_dir() {
        println!(
            "vulndb benchmark skipped: no OSV data at {} (set IMAGEWARDEN_OSV_DIR)",
            dir.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let index = tmp.path().join("osv.iwdb");
    let t = Instant::now();
    let mut builder = DbBuilder::new();
    builder
        .add_source(dir.to_str().expect("utf-8 path"))
        .expect("read OSV records");
    let read = t.elapsed();
    let info = builder.write_file(&index).expect("write index");
    let build = t.elapsed();
    drop(builder);
    let size = std::fs::metadata(&index).expect("index").len();
    let source_bytes = dir_size(&dir);
    let records = info.records + info.withdrawn_skipped;
    println!("osv_dir                 {}", dir.display());
    println!(
        "records                 {} ({} kept, {} withdrawn)",
        records, info.records, info.withdrawn_skipped
    );
    println!(
        "source_mib              {:.1}",
        source_bytes as f64 / 1048576.0
    );
    println!("read_parse_s            {:.2}", read.as_secs_f64());
    println!("build_total_s           {:.2}", build.as_secs_f64());
    println!("build_peak_rss_mib      {:.1}", mib(status_kib("VmHWM:")));
    println!("index_mib               {:.2}", size as f64 / 1048576.0);
    println!(
        "index_bytes_per_record  {:.0}",
        size as f64 / info.records as f64
    );
    let out = Command::new(std::env::current_exe().expect("own path"))
        .args(["--load-index", index.to_str().expect("utf-8 path")])
        .output()
        .expect("run the load benchmark");
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    let field = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let scale = FULL_DUMP_RECORDS / info.records as f64;
    println!("-- extrapolated to {FULL_DUMP_RECORDS:.0} records (linear in records) --");
    println!("full_build_s            {:.0}", build.as_secs_f64() * scale);
    println!(
        "full_build_peak_rss_mib {:.0}   (compiled records are held encoded until written)",
        mib(status_kib("VmHWM:")) * scale
    );
    println!(
        "full_index_mib          {:.0}",
        size as f64 * scale / 1048576.0
    );
    println!(
        "full_load_ms            {:.1}   (load reads the header and metadata only)",
        field("load_index_ms")
    );
    println!(
        "full_rss_after_load_mib {:.1}   (mapped pages are touched only by queries)",
        field("rss_after_load_mib")
    );
    println!(
        "full_rss_all_keys_mib   {:.0}   (upper bound: every page of the index resident)",
        field("rss_before_load_mib") + size as f64 * scale / 1048576.0
    );
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        dir_size(&p)
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
