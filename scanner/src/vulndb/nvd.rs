//! NVD's CVSS ratings of CVEs, read from the NVD CVE JSON 2.0 format: the yearly feeds
//! NVD publishes (`nvdcve-2.0-YYYY.json.gz`, `{"vulnerabilities":[{"cve":{...}}, ...]}`,
//! also as `.json` and `.json.xz`), API responses of the same shape, and one-CVE files
//! (`{"id":"CVE-...","metrics":{...}}`, flat or in the `CVE-YYYY/CVE-YYYY-NNNxx/` layout of
//! community mirrors).
//!
//! Only what a severity needs is kept: per CVE, one CVSS vector and its base score. Which
//! one: the first CVSS version that has any metric, in the order v3.1, v3.0, v2, v4.0, and
//! within it NVD's own metric (`type` `Primary`) when present, else the first `Secondary`
//! one (a CNA's). See [`select_metric`].
//!
//! Feeds are read as a stream: one CVE at a time is held in memory, so a feed of hundreds
//! of MiB costs no more memory than a small one.

use std::io::Read;
use std::path::Path;

use anyhow::Context as _;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::severity::{cvss_base_score, Rating, Severity};

/// The prefix that names an NVD source on the command line: `nvd:PATH` or `nvd:URL`.
pub const SOURCE_PREFIX: &str = "nvd:";

/// Vectors longer than this are not CVSS vectors and are not kept.
const MAX_VECTOR_LEN: usize = 256;

/// One CVE of the NVD API 2.0 (the fields severity needs; the rest is skipped unread).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NvdCve {
    pub id: String,
    #[serde(default)]
    pub last_modified: Option<String>,
    #[serde(default)]
    pub metrics: NvdMetrics,
}

/// The `metrics` object of a CVE: one list per CVSS version.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NvdMetrics {
    #[serde(rename = "cvssMetricV31", default)]
    pub v31: Vec<NvdMetric>,
    #[serde(rename = "cvssMetricV30", default)]
    pub v30: Vec<NvdMetric>,
    #[serde(rename = "cvssMetricV2", default)]
    pub v2: Vec<NvdMetric>,
    #[serde(rename = "cvssMetricV40", default)]
    pub v40: Vec<NvdMetric>,
}

/// One metric: whose (`source`, `type`) and the CVSS data.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NvdMetric {
    #[serde(default)]
    pub source: String,
    /// `Primary` (NVD's own) or `Secondary` (a CNA's).
    #[serde(rename = "type", default)]
    pub kind: String,
    pub cvss_data: CvssData,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CvssData {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub vector_string: String,
    #[serde(default)]
    pub base_score: Option<f64>,
}

/// The metric a CVE is rated by: the first CVSS version with any metric (v3.1, v3.0, v2,
/// v4.0), within it the `Primary` one, else the first `Secondary` one (else the first).
pub fn select_metric(metrics: &NvdMetrics) -> Option<&NvdMetric> {
    for list in [&metrics.v31, &metrics.v30, &metrics.v2, &metrics.v40] {
        let usable = || {
            list.iter()
                .filter(|m| !m.cvss_data.vector_string.is_empty())
        };
        if usable().next().is_none() {
            continue;
        }
        return usable()
            .find(|m| m.kind == "Primary")
            .or_else(|| usable().find(|m| m.kind == "Secondary"))
            .or_else(|| usable().next());
    }
    None
}

/// What the index keeps of one CVE.
#[derive(Debug, Clone, PartialEq)]
pub struct NvdEntry {
    /// [`cve_key`] of the CVE id.
    pub key: u64,
    /// Base score × 10 (0..=100).
    pub score10: u8,
    /// Whether the metric is NVD's own (`Primary`).
    pub primary: bool,
    pub vector: String,
    pub last_modified: Option<String>,
}

impl NvdEntry {
    /// The entry of a CVE, when it has a usable metric (`None` for CVEs not yet analysed,
    /// with empty `metrics`, and for ids that are not CVE ids).
    pub fn from_cve(cve: &NvdCve) -> Option<NvdEntry> {
        let key = cve_key(&cve.id)?;
        let metric = select_metric(&cve.metrics)?;
        let vector = metric.cvss_data.vector_string.trim();
        // The longest real vector (CVSS v4.0 with every metric) is under 200 bytes.
        if vector.len() > MAX_VECTOR_LEN {
            return None;
        }
        // The score is computed from the vector; NVD's own number only for a vector the
        // CVSS library cannot read.
        let score = cvss_base_score(vector).or(metric.cvss_data.base_score)?;
        if !(0.0..=10.0).contains(&score) {
            return None;
        }
        Some(NvdEntry {
            key,
            score10: (score * 10.0).round() as u8,
            primary: metric.kind == "Primary",
            vector: vector.to_string(),
            last_modified: cve.last_modified.clone(),
        })
    }

    /// The rating this entry gives.
    pub fn rating(&self) -> Rating {
        rating(&self.vector, self.score10)
    }
}

/// The rating of a stored vector and score.
pub(crate) fn rating(vector: &str, score10: u8) -> Rating {
    let score = f64::from(score10) / 10.0;
    Rating {
        severity: Severity::from_vector_score(vector, score),
        score: Some(score),
        vector: Some(vector.to_string()),
        source: Some("nvd".to_string()),
    }
}

/// The key a CVE id is filed under: `year << 32 | number`. Accepts ids that end in a CVE
/// id (`ALPINE-CVE-2019-14697`, `DEBIAN-CVE-2022-1292`); `None` for other ids.
pub fn cve_key(id: &str) -> Option<u64> {
    let at = id.rfind("CVE-")?;
    let rest = &id[at + 4..];
    let (year, number) = rest.split_once('-')?;
    if year.len() != 4
        || number.is_empty()
        || number.len() > 9
        || !year.bytes().all(|b| b.is_ascii_digit())
        || !number.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let year: u64 = year.parse().ok()?;
    let number: u64 = number.parse().ok()?;
    (number <= u64::from(u32::MAX)).then_some((year << 32) | number)
}

/// The CVE id of a key (inverse of [`cve_key`]).
pub fn cve_id(key: u64) -> String {
    format!("CVE-{}-{:04}", key >> 32, key & 0xffff_ffff)
}

/// Reads NVD CVE JSON 2.0 from `reader` — a feed or API response, or one CVE object —
/// calling `sink` for each CVE; returns how many CVEs it read. Feeds are streamed.
pub fn read_cves<R: Read>(
    reader: R,
    sink: &mut dyn FnMut(NvdCve),
) -> Result<u64, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_reader(reader);
    let n = Document { sink }.deserialize(&mut de)?;
    de.end()?;
    Ok(n)
}

struct Document<'s> {
    sink: &'s mut dyn FnMut(NvdCve),
}

impl<'de> DeserializeSeed<'de> for Document<'_> {
    type Value = u64;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Document<'_> {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(
            "an NVD CVE JSON 2.0 object: a feed {\"vulnerabilities\": [{\"cve\": {...}}]} or one CVE {\"id\": ..., \"metrics\": ...}",
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        let sink = self.sink;
        let mut single = NvdCve::default();
        let (mut feed, mut count, mut has_id) = (false, 0u64, false);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "vulnerabilities" => {
                    feed = true;
                    count += map.next_value_seed(Vulnerabilities { sink: &mut *sink })?;
                }
                "id" => {
                    single.id = map.next_value()?;
                    has_id = true;
                }
                "lastModified" => single.last_modified = map.next_value()?,
                "metrics" => single.metrics = map.next_value()?,
                "CVE_Items" => {
                    return Err(de::Error::custom(
                        "this is NVD's retired 1.1 feed format (CVE_Items); use the CVE JSON 2.0 feeds (nvdcve-2.0-YYYY.json.gz)",
                    ))
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if feed {
            return Ok(count);
        }
        if !has_id {
            return Err(de::Error::custom(
                "neither a \"vulnerabilities\" list nor a CVE \"id\": not NVD CVE JSON 2.0",
            ));
        }
        sink(single);
        Ok(1)
    }
}

struct Vulnerabilities<'s> {
    sink: &'s mut dyn FnMut(NvdCve),
}

impl<'de> DeserializeSeed<'de> for Vulnerabilities<'_> {
    type Value = u64;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Vulnerabilities<'_> {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of {\"cve\": {...}} items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        #[derive(Deserialize)]
        struct Item {
            cve: NvdCve,
        }
        let mut n = 0;
        while let Some(item) = seq.next_element::<Item>()? {
            (self.sink)(item.cve);
            n += 1;
        }
        Ok(n)
    }
}

/// The file kinds an NVD source may hold, by name.
fn nvd_file_kind(path: &Path) -> Option<Compression> {
    let name = path.file_name()?.to_str()?;
    if name.ends_with(".json.gz") {
        Some(Compression::Gzip)
    } else if name.ends_with(".json.xz") {
        Some(Compression::Xz)
    } else if name.ends_with(".json") {
        Some(Compression::None)
    } else {
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Xz,
}

/// Whether a file name is one an NVD source reads (`.json`, `.json.gz`, `.json.xz`).
pub fn is_nvd_file(path: &Path) -> bool {
    nvd_file_kind(path).is_some()
}

/// Reads one NVD file (a feed or one CVE; `.json`, `.json.gz` or `.json.xz`), calling
/// `sink` for each CVE. A malformed or truncated file is an error naming it.
pub fn read_file(path: &Path, sink: &mut dyn FnMut(NvdCve)) -> anyhow::Result<u64> {
    let kind = nvd_file_kind(path).with_context(|| {
        format!(
            "{}: not an NVD file (expected .json, .json.gz or .json.xz)",
            path.display()
        )
    })?;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open NVD file {}", path.display()))?;
    let reader = std::io::BufReader::with_capacity(1 << 16, file);
    let result = match kind {
        Compression::None => read_cves(reader, sink),
        Compression::Gzip => read_cves(
            std::io::BufReader::with_capacity(1 << 16, flate2::read::MultiGzDecoder::new(reader)),
            sink,
        ),
        Compression::Xz => read_cves(
            std::io::BufReader::with_capacity(1 << 16, lzma_rust2::XzReader::new(reader, true)),
            sink,
        ),
    };
    result.map_err(|e| {
        let what = if e.is_eof() || e.is_io() {
            "truncated or unreadable"
        } else {
            "malformed"
        };
        anyhow::anyhow!("{}: {what} NVD CVE JSON 2.0 file: {e}", path.display())
    })
}

/// Every NVD file under `dir`, recursively, in name order (so that which of two records of
/// one CVE is read last does not depend on the file system).
pub fn files_under(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .with_context(|| format!("cannot read NVD directory {}", d.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot read NVD directory {}", d.display()))?;
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for e in entries {
            let path = e.path();
            let kind = e.file_type()?;
            if kind.is_dir() {
                subdirs.push(path);
            } else if kind.is_file() && is_nvd_file(&path) {
                out.push(path);
            }
        }
        // Depth first, in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cve_keys_round_trip() {
        let k = cve_key("CVE-2019-14697").unwrap();
        assert_eq!(cve_id(k), "CVE-2019-14697");
        assert_eq!(cve_key("ALPINE-CVE-2019-14697"), Some(k));
        assert_eq!(
            cve_id(cve_key("CVE-2018-1000003").unwrap()),
            "CVE-2018-1000003"
        );
        assert_eq!(cve_id(cve_key("CVE-2014-0160").unwrap()), "CVE-2014-0160");
        assert!(cve_key("CVE-2014-0160").unwrap() < cve_key("CVE-2014-10000").unwrap());
        for bad in [
            "GHSA-xxxx",
            "CVE-19-1",
            "CVE-2019-",
            "CVE-2019-12a",
            "CVE-2019-1-2",
        ] {
            assert_eq!(cve_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn streams_feeds_and_reads_single_records() {
        let feed = br#"{"resultsPerPage": 2, "format": "NVD_CVE", "vulnerabilities": [
            {"cve": {"id": "CVE-2020-0001", "descriptions": [{"lang": "en", "value": "x"}], "metrics": {
              "cvssMetricV2": [{"source": "nvd@nist.gov", "type": "Primary", "cvssData": {"version": "2.0", "vectorString": "AV:N/AC:L/Au:N/C:P/I:P/A:P", "baseScore": 7.5}}]}}},
            {"cve": {"id": "CVE-2020-0002", "metrics": {}}}
        ], "timestamp": "2024-01-01T00:00:00.000"}"#;
        let mut seen = Vec::new();
        let n = read_cves(&feed[..], &mut |c| seen.push(c)).unwrap();
        assert_eq!(n, 2);
        assert_eq!(seen[0].id, "CVE-2020-0001");
        assert!(NvdEntry::from_cve(&seen[0]).is_some());
        assert!(
            NvdEntry::from_cve(&seen[1]).is_none(),
            "empty metrics add nothing"
        );
        let single =
            br#"{"id": "CVE-2021-0001", "lastModified": "2021-01-01T00:00:00.000", "metrics": {}}"#;
        let mut seen = Vec::new();
        assert_eq!(read_cves(&single[..], &mut |c| seen.push(c)).unwrap(), 1);
        assert_eq!(
            seen[0].last_modified.as_deref(),
            Some("2021-01-01T00:00:00.000")
        );
        let truncated = &feed[..feed.len() / 2];
        assert!(read_cves(truncated, &mut |_| {}).unwrap_err().is_eof());
        assert!(read_cves(&br#"{"CVE_Items": []}"#[..], &mut |_| {}).is_err());
        assert!(read_cves(&br#"{"other": 1}"#[..], &mut |_| {}).is_err());
    }

    #[test]
    fn a_damaged_nvd_section_is_an_error_or_no_answer_never_a_panic() {
        use crate::vulndb::{Db, DbBuilder};
        let mut b = DbBuilder::new();
        let feed = br#"{"vulnerabilities": [
            {"cve": {"id": "CVE-2020-0001", "metrics": {"cvssMetricV31": [{"source": "nvd@nist.gov", "type": "Primary",
              "cvssData": {"version": "3.1", "vectorString": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "baseScore": 9.8}}]}}},
            {"cve": {"id": "CVE-2020-0002", "metrics": {"cvssMetricV2": [{"source": "nvd@nist.gov", "type": "Primary",
              "cvssData": {"version": "2.0", "vectorString": "AV:N/AC:L/Au:N/C:C/I:C/A:C", "baseScore": 10.0}}]}}}
        ]}"#;
        read_cves(&feed[..], &mut |c| b.add_nvd_cve(&c)).unwrap();
        let mut bytes = Vec::new();
        b.write(&mut bytes).unwrap();
        let db = Db::from_bytes(bytes.clone(), "ok").unwrap();
        let r = db.nvd_rating("CVE-2020-0001").unwrap();
        assert_eq!((r.score, r.severity), (Some(9.8), Severity::Critical));
        let r = db.nvd_rating("CVE-2020-0002").unwrap();
        assert_eq!((r.score, r.severity), (Some(10.0), Severity::High));
        assert!(db.nvd_rating("CVE-2020-0003").is_none());
        // Header: magic, format, flags, then (offset, length) per section; NVD vectors last.
        let at = |i: usize| 16 + i * 16;
        // Changed bytes get a new checksum trailer, as a forger would write.
        let resealed = |mut b: Vec<u8>| {
            use sha2::{Digest, Sha256};
            let body = b.len() - 32;
            let sum = Sha256::digest(&b[..body]);
            b[body..].copy_from_slice(&sum);
            b
        };
        let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let (table, vectors) = (
            u64_at(&bytes, at(5)) as usize,
            u64_at(&bytes, at(6)) as usize,
        );
        // A vector count past the section: refused on open.
        let mut bad = bytes.clone();
        bad[vectors..vectors + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Db::from_bytes(resealed(bad), "bad count").is_err());
        // An entry pointing past the vector table: no answer.
        let mut bad = bytes.clone();
        bad[table + 6..table + 10].copy_from_slice(&u32::MAX.to_le_bytes());
        let db = Db::from_bytes(resealed(bad), "bad index").unwrap();
        assert!(db.nvd_rating("CVE-2020-0001").is_none());
        // A vector offset past the end of the strings: no answer.
        let mut bad = bytes;
        bad[vectors + 4..vectors + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        let db = Db::from_bytes(resealed(bad), "bad offset").unwrap();
        assert!(db.nvd_rating("CVE-2020-0001").is_none());
    }

    #[test]
    fn metric_order_and_primary_preference() {
        let m = |kind: &str, vector: &str| NvdMetric {
            source: "x".into(),
            kind: kind.into(),
            cvss_data: CvssData {
                version: String::new(),
                vector_string: vector.into(),
                base_score: None,
            },
        };
        let v31 = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H";
        let v31_cna = "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:L";
        let mut metrics = NvdMetrics {
            v31: vec![m("Secondary", v31_cna), m("Primary", v31)],
            v2: vec![m("Primary", "AV:N/AC:L/Au:N/C:P/I:P/A:P")],
            ..Default::default()
        };
        assert_eq!(
            select_metric(&metrics).unwrap().cvss_data.vector_string,
            v31
        );
        metrics.v31.remove(1);
        assert_eq!(
            select_metric(&metrics).unwrap().cvss_data.vector_string,
            v31_cna
        );
        metrics.v31.clear();
        assert_eq!(select_metric(&metrics).unwrap().kind, "Primary");
        metrics.v2.clear();
        assert!(select_metric(&metrics).is_none());
    }
}
