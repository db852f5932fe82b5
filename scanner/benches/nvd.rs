//! NVD benchmark: builds the index from a full-size NVD (by default 300,000 CVEs, as NVD
//! holds today) in NVD's yearly feed format, and reports the build time and how much the
//! NVD ratings add to the index.
//!
//! The records are generated, in the real shape of NVD CVE JSON 2.0 records: descriptions
//! in two languages, CVSS v3.1 / v3.0 / v2 / v4.0 metrics (NVD's and a CNA's) with every
//! field NVD writes, weaknesses, CPE configurations and references, with sizes and the mix
//! of metric versions close to NVD's (older years v2 only, a share not yet analysed). They
//! are written as `nvdcve-2.0-YYYY.json.gz` feeds, pretty-printed as NVD publishes them.
//!
//! Run: `cargo bench -p imagewarden-scanner --bench nvd`
//! (`IMAGEWARDEN_NVD_BENCH_CVES=N` for another size, `IMAGEWARDEN_NVD_DIR=DIR` to build
//! from real feeds instead).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use imagewarden_scanner::vulndb::DbBuilder;

/// A small deterministic generator (xorshift), so that runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
    fn words(&mut self, n: usize) -> String {
        const W: [&str; 24] = [
            "remote",
            "attackers",
            "execute",
            "arbitrary",
            "code",
            "via",
            "crafted",
            "request",
            "buffer",
            "overflow",
            "in",
            "the",
            "function",
            "allows",
            "denial",
            "of",
            "service",
            "memory",
            "corruption",
            "when",
            "parsing",
            "input",
            "authentication",
            "bypass",
        ];
        (0..n)
            .map(|_| W[self.below(24) as usize])
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn v31(rng: &mut Rng, source: &str, kind: &str, version: &str) -> serde_json::Value {
    let av = rng.pick(&["N", "A", "L", "P"]);
    let ac = rng.pick(&["L", "H"]);
    let pr = rng.pick(&["N", "L", "H"]);
    let ui = rng.pick(&["N", "R"]);
    let s = rng.pick(&["U", "C"]);
    let (c, i, a) = (
        rng.pick(&["N", "L", "H"]),
        rng.pick(&["N", "L", "H"]),
        rng.pick(&["N", "L", "H"]),
    );
    let vector = format!("CVSS:{version}/AV:{av}/AC:{ac}/PR:{pr}/UI:{ui}/S:{s}/C:{c}/I:{i}/A:{a}");
    let score = (rng.below(100) as f64) / 10.0;
    serde_json::json!({
        "source": source, "type": kind,
        "cvssData": {
            "version": version, "vectorString": vector, "baseScore": score, "baseSeverity": "HIGH",
            "attackVector": "NETWORK", "attackComplexity": "LOW", "privilegesRequired": "NONE",
            "userInteraction": "NONE", "scope": "UNCHANGED", "confidentialityImpact": "HIGH",
            "integrityImpact": "HIGH", "availabilityImpact": "HIGH"
        },
        "exploitabilityScore": 3.9, "impactScore": 5.9
    })
}

fn v2(rng: &mut Rng) -> serde_json::Value {
    let av = rng.pick(&["N", "A", "L"]);
    let ac = rng.pick(&["L", "M", "H"]);
    let au = rng.pick(&["N", "S", "M"]);
    let (c, i, a) = (
        rng.pick(&["N", "P", "C"]),
        rng.pick(&["N", "P", "C"]),
        rng.pick(&["N", "P", "C"]),
    );
    serde_json::json!({
        "source": "nvd@nist.gov", "type": "Primary",
        "cvssData": {
            "version": "2.0", "vectorString": format!("AV:{av}/AC:{ac}/Au:{au}/C:{c}/I:{i}/A:{a}"),
            "baseScore": 5.0, "accessVector": "NETWORK", "accessComplexity": "LOW",
            "authentication": "NONE", "confidentialityImpact": "PARTIAL",
            "integrityImpact": "NONE", "availabilityImpact": "NONE"
        },
        "baseSeverity": "MEDIUM", "exploitabilityScore": 10.0, "impactScore": 2.9,
        "acInsufInfo": false, "obtainAllPrivilege": false, "obtainUserPrivilege": false,
        "obtainOtherPrivilege": false, "userInteractionRequired": false
    })
}

fn v40(rng: &mut Rng) -> serde_json::Value {
    let av = rng.pick(&["N", "A", "L", "P"]);
    let vc = rng.pick(&["N", "L", "H"]);
    serde_json::json!({
        "source": "cna@example.org", "type": "Secondary",
        "cvssData": {
            "version": "4.0",
            "vectorString": format!("CVSS:4.0/AV:{av}/AC:L/AT:N/PR:N/UI:N/VC:{vc}/VI:H/VA:H/SC:N/SI:N/SA:N"),
            "baseScore": 9.3, "baseSeverity": "CRITICAL", "attackVector": "NETWORK",
            "attackComplexity": "LOW", "attackRequirements": "NONE", "privilegesRequired": "NONE",
            "userInteraction": "NONE", "vulnConfidentialityImpact": "HIGH",
            "vulnIntegrityImpact": "HIGH", "vulnAvailabilityImpact": "HIGH",
            "subConfidentialityImpact": "NONE", "subIntegrityImpact": "NONE",
            "subAvailabilityImpact": "NONE", "exploitMaturity": "NOT_DEFINED"
        }
    })
}

fn record(rng: &mut Rng, year: u32, n: u32) -> serde_json::Value {
    let id = format!("CVE-{year}-{n:04}");
    let mut metrics = serde_json::Map::new();
    let roll = rng.below(100);
    if year >= 2016 && roll < 8 {
        // not yet analysed
    } else if year < 2016 {
        metrics.insert("cvssMetricV2".into(), serde_json::json!([v2(rng)]));
        if roll < 40 {
            metrics.insert(
                "cvssMetricV31".into(),
                serde_json::json!([v31(rng, "nvd@nist.gov", "Primary", "3.1")]),
            );
        }
    } else {
        let mut list = vec![v31(rng, "nvd@nist.gov", "Primary", "3.1")];
        if roll < 50 {
            list.push(v31(rng, "cna@example.org", "Secondary", "3.1"));
        }
        if roll >= 90 {
            list.remove(0);
        }
        metrics.insert("cvssMetricV31".into(), serde_json::Value::Array(list));
        if roll < 20 {
            metrics.insert(
                "cvssMetricV30".into(),
                serde_json::json!([v31(rng, "nvd@nist.gov", "Primary", "3.0")]),
            );
        }
        if year < 2023 && roll < 60 {
            metrics.insert("cvssMetricV2".into(), serde_json::json!([v2(rng)]));
        }
        if year >= 2023 && roll < 30 {
            metrics.insert("cvssMetricV40".into(), serde_json::json!([v40(rng)]));
        }
    }
    let refs: Vec<serde_json::Value> = (0..3 + rng.below(12))
        .map(|i| serde_json::json!({
            "url": format!("https://vendor{}.example.com/security/advisories/{id}-{i}", rng.below(500)),
            "source": "cve@mitre.org", "tags": ["Third Party Advisory", "Vendor Advisory"]
        }))
        .collect();
    let cpes: Vec<serde_json::Value> = (0..1 + rng.below(6))
        .map(|_| serde_json::json!({
            "vulnerable": true,
            "criteria": format!("cpe:2.3:a:vendor{}:product{}:*:*:*:*:*:*:*:*", rng.below(2000), rng.below(5000)),
            "versionEndExcluding": format!("{}.{}.{}", rng.below(10), rng.below(30), rng.below(50)),
            "matchCriteriaId": "13443AFD-6FA0-487D-8C84-068829D44AD0"
        }))
        .collect();
    let words = 25 + rng.below(60) as usize;
    serde_json::json!({
        "cve": {
            "id": id, "sourceIdentifier": "cve@mitre.org",
            "published": format!("{year}-05-05T15:15:08.483"),
            "lastModified": format!("{year}-06-17T03:51:58.720"),
            "vulnStatus": if metrics.is_empty() { "Awaiting Analysis" } else { "Analyzed" },
            "cveTags": [],
            "descriptions": [
                {"lang": "en", "value": rng.words(words)},
                {"lang": "es", "value": rng.words(words)}
            ],
            "metrics": metrics,
            "weaknesses": [{"source": "nvd@nist.gov", "type": "Primary",
                "description": [{"lang": "en", "value": format!("CWE-{}", rng.below(1000))}]}],
            "configurations": [{"nodes": [{"operator": "OR", "negate": false, "cpeMatch": cpes}]}],
            "references": refs
        }
    })
}

/// Writes `total` CVEs as yearly feeds (1999–2026, later years larger, as NVD's are).
fn generate(dir: &Path, total: u32) -> (u64, u64) {
    let years: Vec<u32> = (1999..=2026).collect();
    let weights: Vec<u32> = years
        .iter()
        .map(|y| 1 + (y - 1999) * (y - 1999) / 8)
        .collect();
    let sum: u32 = weights.iter().sum();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut raw, mut gz) = (0u64, 0u64);
    let mut written = 0u32;
    for (i, year) in years.iter().enumerate() {
        let n = if i + 1 == years.len() {
            total - written
        } else {
            (u64::from(total) * u64::from(weights[i]) / u64::from(sum)) as u32
        };
        written += n;
        let path = dir.join(format!("nvdcve-2.0-{year}.json.gz"));
        let file = std::fs::File::create(&path).unwrap();
        let mut enc = flate2::write::GzEncoder::new(
            std::io::BufWriter::new(file),
            flate2::Compression::fast(),
        );
        let mut out = CountingWriter(&mut enc, 0);
        write!(
            out,
            "{{\n  \"resultsPerPage\" : {n},\n  \"startIndex\" : 0,\n  \"totalResults\" : {n},\n  \"format\" : \"NVD_CVE\",\n  \"version\" : \"2.0\",\n  \"timestamp\" : \"2026-11-30T03:00:00.000\",\n  \"vulnerabilities\" : [ "
        )
        .unwrap();
        for k in 0..n {
            if k > 0 {
                out.write_all(b", ").unwrap();
            }
            let rec = record(&mut rng, *year, 1000 + k);
            serde_json::to_writer_pretty(&mut out, &rec).unwrap();
        }
        out.write_all(b" ]\n}\n").unwrap();
        raw += out.1;
        enc.finish().unwrap().flush().unwrap();
        gz += std::fs::metadata(&path).unwrap().len();
    }
    (raw, gz)
}

struct CountingWriter<'a, W: Write>(&'a mut W, u64);

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1 += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn osv_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/osv")
}

fn main() {
    let tmp = std::env::temp_dir().join(format!("imagewarden-nvd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let feeds = match std::env::var_os("IMAGEWARDEN_NVD_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let total: u32 = std::env::var("IMAGEWARDEN_NVD_BENCH_CVES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(300_000);
            let dir = tmp.join("feeds");
            std::fs::create_dir_all(&dir).unwrap();
            let t = Instant::now();
            let (raw, gz) = generate(&dir, total);
            println!(
                "generated {total} CVEs: {:.0} MiB of JSON, {:.0} MiB as .json.gz feeds ({:.0}s)",
                raw as f64 / 1048576.0,
                gz as f64 / 1048576.0,
                t.elapsed().as_secs_f64()
            );
            dir
        }
    };
    // Baseline: the OSV test records alone.
    let mut base = DbBuilder::new();
    base.add_source(osv_dir().to_str().unwrap()).unwrap();
    let base_info = base.write_file(&tmp.join("osv.iwdb")).unwrap();
    let base_size = std::fs::metadata(tmp.join("osv.iwdb")).unwrap().len();
    drop(base);
    // The same plus NVD.
    let t = Instant::now();
    let mut b = DbBuilder::new();
    b.add_source(osv_dir().to_str().unwrap()).unwrap();
    let t_nvd = Instant::now();
    b.add_source(&format!("nvd:{}", feeds.display())).unwrap();
    let read = t_nvd.elapsed();
    let info = b.write_file(&tmp.join("osv-nvd.iwdb")).unwrap();
    let total = t.elapsed();
    let size = std::fs::metadata(tmp.join("osv-nvd.iwdb")).unwrap().len();
    let peak = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    println!(
        "index build with NVD: {:.1}s total ({:.1}s reading the NVD feeds); {} NVD ratings kept",
        total.as_secs_f64(),
        read.as_secs_f64(),
        info.nvd_records
    );
    println!(
        "index size: {:.2} MiB without NVD ({} records), {:.2} MiB with: NVD adds {:.2} MiB ({:.1} bytes per rating); peak memory {:.0} MiB",
        base_size as f64 / 1048576.0,
        base_info.records,
        size as f64 / 1048576.0,
        (size - base_size) as f64 / 1048576.0,
        (size - base_size) as f64 / info.nvd_records.max(1) as f64,
        peak as f64 / 1024.0
    );
    // Lookups: every rating read back.
    let db = imagewarden_scanner::vulndb::Db::open_index(&tmp.join("osv-nvd.iwdb")).unwrap();
    let t = Instant::now();
    let mut found = 0;
    for year in 1999..=2026 {
        for n in 1000..1100 {
            found += usize::from(db.nvd_rating(&format!("CVE-{year}-{n:04}")).is_some());
        }
    }
    println!(
        "{} lookups in {:.1} ms ({found} rated)",
        28 * 100,
        t.elapsed().as_secs_f64() * 1000.0
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
