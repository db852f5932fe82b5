//! What a user asks to leave out of a report: severities, unfixed findings,
//! and ignore files (ids with an optional package and expiry date).

use std::path::Path;

use anyhow::Context as _;
use chrono::NaiveDate;
use serde::Deserialize;

use crate::finding::Finding;
use crate::finding::Severity;
use crate::matcher::Matches;

/// One ignore rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IgnoreRule {
    /// Advisory id or alias (`CVE-2022-1292`, `DLA-3008-1`, `GHSA-...`).
    pub id: String,
    /// Only for this package (installed name or source name).
    #[serde(default)]
    pub package: Option<String>,
    /// The rule stops applying after this day.
    #[serde(default, alias = "expired_at", alias = "until")]
    pub expires: Option<NaiveDate>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl IgnoreRule {
    fn applies(&self, f: &Finding, today: NaiveDate) -> bool {
        if self.expires.is_some_and(|e| today > e) {
            return false;
        }
        if let Some(p) = &self.package {
            if *p != f.package.name && f.package.source_name.as_deref() != Some(p.as_str()) {
                return false;
            }
        }
        f.ids().any(|id| id.eq_ignore_ascii_case(&self.id))
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IgnoreYaml {
    Rules(Vec<IgnoreRule>),
    Sections {
        #[serde(default, alias = "ignore")]
        vulnerabilities: Vec<IgnoreRule>,
    },
}

/// Parses an ignore file: YAML (`vulnerabilities:` / `ignore:` list, or a bare list
/// of `{id, package, expires, reason}`), or plain text with one id per line,
/// optionally followed by `package=NAME` and `exp:YYYY-MM-DD`; `#` starts a comment.
pub fn parse_ignore_file(text: &str, origin: &str) -> anyhow::Result<Vec<IgnoreRule>> {
    let looks_yaml = text.lines().any(|l| {
        let t = l.trim_start();
        t.starts_with("- ")
            || t.starts_with("id:")
            || t.starts_with("vulnerabilities:")
            || t.starts_with("ignore:")
    });
    if looks_yaml {
        let parsed: IgnoreYaml = serde_norway::from_str(text).with_context(|| {
            format!("{origin}: not a valid ignore file (expected a YAML list of {{id, package, expires}} or one id per line)")
        })?;
        return Ok(match parsed {
            IgnoreYaml::Rules(r) => r,
            IgnoreYaml::Sections { vulnerabilities } => vulnerabilities,
        });
    }
    let mut rules = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        let Some(id) = words.next() else { continue };
        let mut rule = IgnoreRule {
            id: id.to_string(),
            package: None,
            expires: None,
            reason: None,
        };
        for w in words {
            if let Some(d) = w
                .strip_prefix("exp:")
                .or_else(|| w.strip_prefix("expires="))
            {
                rule.expires =
                    Some(NaiveDate::parse_from_str(d, "%Y-%m-%d").with_context(|| {
                        format!("{origin}:{}: expiry {d:?} is not YYYY-MM-DD", n + 1)
                    })?);
            } else if let Some(p) = w
                .strip_prefix("package=")
                .or_else(|| w.strip_prefix("pkg:"))
            {
                rule.package = Some(p.to_string());
            } else {
                anyhow::bail!(
                    "{origin}:{}: unknown word {w:?} (use package=NAME or exp:YYYY-MM-DD)",
                    n + 1
                );
            }
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// Reads an ignore file from disk.
pub fn read_ignore_file(path: &Path) -> anyhow::Result<Vec<IgnoreRule>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read ignore file {}", path.display()))?;
    parse_ignore_file(&text, &path.display().to_string())
}

/// Filters applied to matches before reporting.
#[derive(Debug, Clone, Default)]
pub struct FindingFilter {
    /// Report only these severities (empty: all).
    pub severities: Vec<Severity>,
    /// Leave out findings with no fixed version.
    pub ignore_unfixed: bool,
    pub ignore: Vec<IgnoreRule>,
}

impl FindingFilter {
    /// Applies the filter as of `today`; returns the ids that ignore rules removed.
    pub fn apply(&self, matches: &mut Matches, today: NaiveDate) -> Vec<String> {
        let mut ignored = Vec::new();
        let mut keep = |f: &Finding| -> bool {
            if self.ignore.iter().any(|r| r.applies(f, today)) {
                if !ignored.contains(&f.id) {
                    ignored.push(f.id.clone());
                }
                return false;
            }
            true
        };
        matches.vulnerabilities.retain(&mut keep);
        matches.malicious_packages.retain(&mut keep);
        matches.vulnerabilities.retain(|f| {
            (self.severities.is_empty() || self.severities.contains(&f.severity))
                && !(self.ignore_unfixed && f.fixed_version.is_none())
        });
        ignored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_ignore_files() {
        let rules = parse_ignore_file(
            "# comment\nCVE-2022-1292 exp:2030-01-01\nDLA-3008-1 package=openssl\n\n",
            "x",
        )
        .unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].expires, NaiveDate::from_ymd_opt(2030, 1, 1));
        assert_eq!(rules[1].package.as_deref(), Some("openssl"));
    }

    #[test]
    fn parses_yaml_ignore_files() {
        let y = "vulnerabilities:\n  - id: CVE-2022-1292\n    package: openssl\n    expires: 2030-01-01\n    reason: not reachable\n";
        let rules = parse_ignore_file(y, "x").unwrap();
        assert_eq!(rules[0].id, "CVE-2022-1292");
        let y = "- id: GO-2021-0113\n";
        assert_eq!(parse_ignore_file(y, "x").unwrap()[0].id, "GO-2021-0113");
    }
}
