//! Severity of an advisory: the CVSS base score computed from its vector
//! (v2, v3.0, v3.1, v4.0), else the advisory's own qualitative rating.
//!
//! A finding's severity is taken, in this order (see [`crate::matcher`]):
//! 1. the record's own rating: a per-`affected` rating of the matched package (its
//!    `severity[]`, an `ecosystem_specific` / `database_specific` severity or Debian
//!    urgency, or a vendor rating such as an errata's), else the record's `severity[]`
//!    (see [`rate_osv`], [`rate_specific`], [`vendor_rating`]);
//! 2. else NVD's CVSS of the CVE ids the finding carries, the highest of them
//!    (see [`super::nvd`]);
//! 3. else `unknown`.
//!
//! Every [`Rating`] names where it came from ([`Rating::source`]): `osv`, `ghsa`,
//! `debian`, `ubuntu`, `alpine`, `nvd`, ...

use serde::{Deserialize, Serialize};
use std::str::FromStr;

use super::osv::OsvSeverity;
pub use crate::finding::Severity;

impl Severity {
    /// Qualitative rating of a base score of a CVSS vector: the v2 scale (low, medium,
    /// high) for v2 vectors (they carry no `CVSS:` prefix), else the v3/v4 scale.
    pub fn from_vector_score(vector: &str, score: f64) -> Severity {
        if is_cvss_v2(vector) {
            Severity::from_v2_score(score)
        } else {
            Severity::from_score(score)
        }
    }

    /// Qualitative rating of a CVSS v2 base score, as NVD gives it: v2 has no `critical`.
    pub fn from_v2_score(score: f64) -> Severity {
        if score >= 7.0 {
            Severity::High
        } else if score >= 4.0 {
            Severity::Medium
        } else if score > 0.0 {
            Severity::Low
        } else {
            Severity::Unknown
        }
    }

    /// Qualitative rating (CVSS v3/v4 scale) of a base score.
    pub fn from_score(score: f64) -> Severity {
        if score >= 9.0 {
            Severity::Critical
        } else if score >= 7.0 {
            Severity::High
        } else if score >= 4.0 {
            Severity::Medium
        } else if score > 0.0 {
            Severity::Low
        } else {
            Severity::Unknown
        }
    }

    /// Reads the words advisories use: GHSA's `MODERATE`, Debian urgencies
    /// (`low**`, `not yet assigned`), Ubuntu priorities (`negligible`).
    pub fn from_label(label: &str) -> Severity {
        let l = label.trim().trim_end_matches('*').to_ascii_lowercase();
        match l.as_str() {
            "critical" => Severity::Critical,
            "high" | "important" => Severity::High,
            "medium" | "moderate" => Severity::Medium,
            "low" | "negligible" | "unimportant" => Severity::Low,
            _ => Severity::Unknown,
        }
    }
}

/// The rating kept for an advisory: level, the CVSS score and vector it came from, and
/// whose rating it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Rating {
    pub severity: Severity,
    pub score: Option<f64>,
    pub vector: Option<String>,
    /// Whose rating: `osv` (the record's own CVSS), `ghsa`, `debian`, `ubuntu`, `alpine`,
    /// `nvd`, a vendor name, ... (`None` only for the unknown rating).
    pub source: Option<String>,
}

impl Rating {
    /// The rating of a CVSS vector, when it parses.
    pub fn from_vector(vector: &str, source: &str) -> Option<Rating> {
        let score = cvss_base_score(vector)?;
        Some(Rating {
            severity: Severity::from_vector_score(vector, score),
            score: Some(score),
            vector: Some(vector.trim().to_string()),
            source: Some(source.to_string()),
        })
    }

    /// A qualitative rating (`HIGH`, `moderate`, Debian's `low**`), when the label means one.
    pub fn from_label(label: &str, source: &str) -> Option<Rating> {
        let severity = Severity::from_label(label);
        (severity != Severity::Unknown).then(|| Rating {
            severity,
            score: None,
            vector: None,
            source: Some(source.to_string()),
        })
    }

    /// Orders ratings by severity, then score: the higher of two ratings is the greater.
    pub fn rank(&self, other: &Rating) -> std::cmp::Ordering {
        self.severity.cmp(&other.severity).then_with(|| {
            self.score
                .unwrap_or(0.0)
                .partial_cmp(&other.score.unwrap_or(0.0))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
    }
}

/// Whether a vector is CVSS v2 (written without a `CVSS:3.x/` or `CVSS:4.0/` prefix).
pub fn is_cvss_v2(vector: &str) -> bool {
    let v = vector.trim().trim_start_matches('(');
    !v.starts_with("CVSS:") || v.starts_with("CVSS:2")
}

/// Whose rating a record's own `severity[]` or `database_specific` is, by its id: the
/// database that publishes records of that id (`GHSA-` → `ghsa`, `DSA-` → `debian`, ...),
/// else `osv`.
pub fn record_source(id: &str) -> &'static str {
    const PREFIXES: [(&str, &str); 14] = [
        ("GHSA-", "ghsa"),
        ("DSA-", "debian"),
        ("DLA-", "debian"),
        ("DTSA-", "debian"),
        ("DEBIAN-", "debian"),
        ("USN-", "ubuntu"),
        ("UBUNTU-", "ubuntu"),
        ("ALPINE-", "alpine"),
        ("RHSA-", "redhat"),
        ("ALSA-", "almalinux"),
        ("ALBA-", "almalinux"),
        ("RLSA-", "rocky"),
        ("SUSE-", "suse"),
        ("openSUSE-", "suse"),
    ];
    PREFIXES
        .iter()
        .find(|(p, _)| id.starts_with(p))
        .map_or("osv", |(_, s)| s)
}

/// A vendor's qualitative rating of one package (an errata's `Important:`, a distro's
/// priority), for the per-`affected` rung: `None` when the label means no level.
pub fn vendor_rating(label: &str, vendor: &str) -> Option<Rating> {
    Rating::from_label(label, vendor)
}

/// Base score of a CVSS vector (v2 vectors carry no `CVSS:` prefix), rounded to one decimal.
pub fn cvss_base_score(vector: &str) -> Option<f64> {
    let v = vector.trim();
    let parsed = cvss::Cvss::from_str(v).ok().or_else(|| {
        // Some v2 vectors are written with a `(...)` wrapper or a `CVSS:2.0/` prefix.
        let bare = v.trim_start_matches('(').trim_end_matches(')');
        let bare = bare.strip_prefix("CVSS:2.0/").unwrap_or(bare);
        cvss::v2::Vector::from_str(bare)
            .ok()
            .map(cvss::Cvss::CvssV20)
    })?;
    let score = parsed.score();
    Some((score * 10.0).round() / 10.0)
}

/// Rates from an OSV `severity` list: the newest CVSS version present wins; `source`
/// says whose list it is (see [`record_source`]). A qualitative `Ubuntu` entry is Ubuntu's.
pub fn rate_osv(severities: &[OsvSeverity], source: &str) -> Option<Rating> {
    let rank = |kind: &str| match kind {
        "CVSS_V4" => 3,
        "CVSS_V3" => 2,
        "CVSS_V2" => 1,
        _ => 0,
    };
    let mut best: Option<(i32, Rating)> = None;
    for s in severities {
        let r = rank(&s.kind);
        let rating = if r > 0 {
            match Rating::from_vector(&s.score, source) {
                Some(rating) => rating,
                None => continue,
            }
        } else {
            // Qualitative ratings (osv.dev's `Ubuntu` type) rank below any vector.
            let who = if s.kind.eq_ignore_ascii_case("ubuntu") {
                "ubuntu"
            } else {
                source
            };
            match Rating::from_label(&s.score, who) {
                Some(rating) => rating,
                None => continue,
            }
        };
        if best.as_ref().is_none_or(|(b, _)| r > *b) {
            best = Some((r, rating));
        }
    }
    best.map(|(_, r)| r)
}

/// Rates from a `database_specific` / `ecosystem_specific` object: `severity`, `urgency`,
/// or a `cvss` vector; `source` says whose object it is (see [`record_source`]). A Debian
/// `urgency` is Debian's whatever the record.
pub fn rate_specific(value: Option<&serde_json::Value>, source: &str) -> Option<Rating> {
    let obj = value?.as_object()?;
    for key in ["cvss", "cvss_v3", "cvss_vector"] {
        if let Some(vector) = obj.get(key).and_then(|v| v.as_str()) {
            if let Some(rating) = Rating::from_vector(vector, source) {
                return Some(rating);
            }
        }
    }
    if let Some(label) = obj.get("severity").and_then(|v| v.as_str()) {
        if let Some(rating) = Rating::from_label(label, source) {
            return Some(rating);
        }
    }
    if let Some(label) = obj.get("urgency").and_then(|v| v.as_str()) {
        return Rating::from_label(label, "debian");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computes_cvss_base_scores() {
        assert_eq!(
            cvss_base_score("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),
            Some(9.8)
        );
        assert_eq!(
            cvss_base_score("CVSS:3.0/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H"),
            Some(8.1)
        );
        assert_eq!(cvss_base_score("AV:N/AC:L/Au:N/C:P/I:P/A:P"), Some(7.5));
        assert_eq!(
            cvss_base_score("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"),
            Some(9.3)
        );
        assert_eq!(cvss_base_score("nonsense"), None);
    }

    #[test]
    fn newest_cvss_version_wins() {
        let sev = |k: &str, s: &str| OsvSeverity {
            kind: k.into(),
            score: s.into(),
        };
        let r = rate_osv(
            &[
                sev("CVSS_V2", "AV:N/AC:L/Au:N/C:P/I:P/A:P"),
                sev("CVSS_V3", "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:L"),
            ],
            "ghsa",
        )
        .unwrap();
        assert_eq!(r.severity, Severity::Low);
        assert_eq!(r.score, Some(3.3));
        assert_eq!(r.source.as_deref(), Some("ghsa"));
    }

    #[test]
    fn ubuntu_priorities_are_ubuntus() {
        let r = rate_osv(
            &[OsvSeverity {
                kind: "Ubuntu".into(),
                score: "medium".into(),
            }],
            "ubuntu",
        )
        .unwrap();
        assert_eq!(
            (r.severity, r.score, r.source.as_deref()),
            (Severity::Medium, None, Some("ubuntu"))
        );
        assert_eq!(record_source("UBUNTU-CVE-2024-1234"), "ubuntu");
        assert_eq!(record_source("GHSA-xxxx-yyyy-zzzz"), "ghsa");
        assert_eq!(record_source("PYSEC-2021-7"), "osv");
        let r = vendor_rating("Important", "almalinux").unwrap();
        assert_eq!(
            (r.severity, r.source.as_deref()),
            (Severity::High, Some("almalinux"))
        );
    }

    #[test]
    fn reads_qualitative_labels() {
        assert_eq!(Severity::from_label("MODERATE"), Severity::Medium);
        assert_eq!(Severity::from_label("low**"), Severity::Low);
        assert_eq!(Severity::from_label("not yet assigned"), Severity::Unknown);
        let v = serde_json::json!({"severity": "HIGH"});
        assert_eq!(
            rate_specific(Some(&v), "ghsa").unwrap().severity,
            Severity::High
        );
        let v = serde_json::json!({"urgency": "medium**"});
        let r = rate_specific(Some(&v), "osv").unwrap();
        assert_eq!(
            (r.severity, r.source.as_deref()),
            (Severity::Medium, Some("debian"))
        );
        let v = serde_json::json!({"urgency": "not yet assigned"});
        assert_eq!(rate_specific(Some(&v), "osv"), None);
    }

    #[test]
    fn v2_scores_use_the_v2_scale() {
        // 10.0 is `high` on NVD's v2 scale, which has no `critical`.
        let r = Rating::from_vector("AV:N/AC:L/Au:N/C:C/I:C/A:C", "nvd").unwrap();
        assert_eq!((r.score, r.severity), (Some(10.0), Severity::High));
        let r = Rating::from_vector("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "nvd").unwrap();
        assert_eq!((r.score, r.severity), (Some(9.8), Severity::Critical));
    }
}
