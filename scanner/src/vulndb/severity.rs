//! Severity of an advisory: the CVSS base score computed from its vector
//! (v2, v3.0, v3.1, v4.0), else the advisory's own qualitative rating.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

use super::osv::OsvSeverity;

/// Severity levels, ordered from least to most severe.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "unknown",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// All levels, most severe first.
    pub const DESCENDING: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Unknown,
    ];

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

impl FromStr for Severity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "critical" => Ok(Severity::Critical),
            "high" => Ok(Severity::High),
            "medium" => Ok(Severity::Medium),
            "low" => Ok(Severity::Low),
            "unknown" => Ok(Severity::Unknown),
            other => Err(format!(
                "unknown severity {other:?}: use critical, high, medium, low or unknown"
            )),
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rating kept for an advisory: level, and the CVSS score and vector it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Rating {
    pub severity: Severity,
    pub score: Option<f64>,
    pub vector: Option<String>,
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

/// Rates from an OSV `severity` list: the newest CVSS version present wins.
pub fn rate_osv(severities: &[OsvSeverity]) -> Option<Rating> {
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
            match cvss_base_score(&s.score) {
                Some(score) => Rating {
                    severity: Severity::from_score(score),
                    score: Some(score),
                    vector: Some(s.score.clone()),
                },
                None => continue,
            }
        } else {
            // Qualitative ratings (osv.dev's `Ubuntu` type) rank below any vector.
            let sev = Severity::from_label(&s.score);
            if sev == Severity::Unknown {
                continue;
            }
            Rating {
                severity: sev,
                score: None,
                vector: None,
            }
        };
        if best.as_ref().is_none_or(|(b, _)| r > *b) {
            best = Some((r, rating));
        }
    }
    best.map(|(_, r)| r)
}

/// Rates from a `database_specific` / `ecosystem_specific` object: `severity`, `urgency`, or a `cvss` vector.
pub fn rate_specific(value: Option<&serde_json::Value>) -> Option<Rating> {
    let obj = value?.as_object()?;
    for key in ["cvss", "cvss_v3", "cvss_vector"] {
        if let Some(vector) = obj.get(key).and_then(|v| v.as_str()) {
            if let Some(score) = cvss_base_score(vector) {
                return Some(Rating {
                    severity: Severity::from_score(score),
                    score: Some(score),
                    vector: Some(vector.to_string()),
                });
            }
        }
    }
    for key in ["severity", "urgency"] {
        if let Some(label) = obj.get(key).and_then(|v| v.as_str()) {
            let sev = Severity::from_label(label);
            if sev != Severity::Unknown {
                return Some(Rating {
                    severity: sev,
                    score: None,
                    vector: None,
                });
            }
        }
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
        let r = rate_osv(&[
            sev("CVSS_V2", "AV:N/AC:L/Au:N/C:P/I:P/A:P"),
            sev("CVSS_V3", "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:L"),
        ])
        .unwrap();
        assert_eq!(r.severity, Severity::Low);
        assert_eq!(r.score, Some(3.3));
    }

    #[test]
    fn reads_qualitative_labels() {
        assert_eq!(Severity::from_label("MODERATE"), Severity::Medium);
        assert_eq!(Severity::from_label("low**"), Severity::Low);
        assert_eq!(Severity::from_label("not yet assigned"), Severity::Unknown);
        let v = serde_json::json!({"severity": "HIGH"});
        assert_eq!(rate_specific(Some(&v)).unwrap().severity, Severity::High);
    }
}
