//! The identity of every finding of a result, kept beside the (possibly cut) findings
//! list, so that a database update reports as new only what was not found before.
//! Stored as gzip-compressed lines `id<TAB>package` in base64 (pure).

use std::collections::BTreeSet;
use std::io::{Read, Write};

use base64::Engine;

use crate::crd::{Finding, ImageScanResultStatus};

/// Bytes the encoded ids may take in a result: about 15 000 findings of assorted ids
/// (more when they share prefixes). With the findings (700 KiB) and the inventory
/// (200 KiB) the object stays under etcd's 1.5 MiB.
pub const FINDING_IDS_BUDGET: usize = 128 * 1024;

/// Largest decoded form read back (the budget above, decompressed, is far less).
const MAX_DECODED: u64 = 16 << 20;

/// The identity of a finding across database versions.
pub type FindingKey = (String, Option<String>);

/// The key of `finding`.
pub fn key(finding: &Finding) -> FindingKey {
    (finding.id.clone(), finding.package.clone())
}

/// Encodes the keys of `findings` (all of them, before any cut); `None` when they do not
/// fit [`FINDING_IDS_BUDGET`].
pub fn encode(findings: &[Finding]) -> Option<String> {
    let keys: BTreeSet<FindingKey> = findings.iter().map(key).collect();
    let mut text = String::new();
    for (id, package) in &keys {
        // Tabs and newlines never occur in ids or package names; drop them if crafted.
        text.push_str(&id.replace(['\t', '\n'], " "));
        text.push('\t');
        text.push_str(&package.as_deref().unwrap_or("").replace(['\t', '\n'], " "));
        text.push('\n');
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(text.as_bytes()).ok()?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(gz.finish().ok()?);
    (encoded.len() <= FINDING_IDS_BUDGET).then_some(encoded)
}

/// Reads back what [`encode`] wrote.
pub fn decode(encoded: &str) -> anyhow::Result<BTreeSet<FindingKey>> {
    let gz = base64::engine::general_purpose::STANDARD.decode(encoded)?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .take(MAX_DECODED)
        .read_to_string(&mut text)?;
    Ok(text
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(id, package)| {
            (
                id.to_string(),
                (!package.is_empty()).then(|| package.to_string()),
            )
        })
        .collect())
}

/// Every finding key a stored result had: its stored ids, or — for results written
/// before ids were kept, or whose ids did not fit — its findings list. `None` when that
/// list was cut and no ids were kept: what is new cannot be told.
pub fn stored_keys(status: &ImageScanResultStatus) -> Option<BTreeSet<FindingKey>> {
    if let Some(encoded) = &status.finding_ids {
        if let Ok(keys) = decode(encoded) {
            return Some(keys);
        }
    }
    (!status.truncated).then(|| status.findings.iter().map(key).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{FindingClass, Severity};

    fn finding(id: &str, package: Option<&str>) -> Finding {
        Finding {
            id: id.into(),
            class: FindingClass::SystemVulnerability,
            severity: Severity::High,
            score: None,
            vector: None,
            severity_source: None,
            package: package.map(String::from),
            version: None,
            fixed_version: None,
            title: None,
            location: None,
            link: None,
        }
    }

    #[test]
    fn ids_round_trip_and_a_cut_list_without_them_says_unknown() {
        let findings = vec![
            finding("CVE-2019-14697", Some("musl")),
            finding("IW-CIS-4.1-ROOT-USER", None),
            finding("CVE-2019-14697", Some("musl-utils")),
        ];
        let encoded = encode(&findings).unwrap();
        let keys = decode(&encoded).unwrap();
        assert_eq!(keys.len(), 3);
        assert!(keys.contains(&("IW-CIS-4.1-ROOT-USER".to_string(), None)));
        let mut status = ImageScanResultStatus {
            findings: findings[..1].to_vec(),
            truncated: true,
            total_findings: 3,
            finding_ids: Some(encoded),
            ..Default::default()
        };
        assert_eq!(stored_keys(&status), Some(keys));
        status.finding_ids = None;
        assert_eq!(stored_keys(&status), None);
        status.truncated = false;
        assert_eq!(stored_keys(&status).unwrap().len(), 1);
    }

    #[test]
    fn twenty_thousand_findings_fit_the_budget() {
        let findings: Vec<Finding> = (0..20_000)
            .map(|i| finding(&format!("CVE-2024-{i:05}"), Some("libexample")))
            .collect();
        let encoded = encode(&findings).expect("fits");
        assert_eq!(decode(&encoded).unwrap().len(), 20_000);
    }
}
