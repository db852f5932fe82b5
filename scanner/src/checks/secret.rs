//! Exposed secrets: content rules over text files (and `Env` of the image configuration).
//!
//! Every match is redacted to its first four characters and `****` before it leaves this
//! module; the full value is never stored.

use regex::bytes::{Regex, RegexSet};
use std::sync::OnceLock;

use super::{emit, is_binary, redact, CheckClass, CheckFinding, LineIndex};
use crate::analyzer::{Analyzer, FileMeta, Output};
use crate::source::ImageConfig;
use crate::vulndb::Severity::{self, *};

/// One content rule: the secret is capture group 1 when the pattern has one, else the
/// whole match.
pub struct SecretRule {
    pub id: &'static str,
    pub title: &'static str,
    pub severity: Severity,
    pub pattern: &'static str,
}

const KEYWORD: &str =
    r"(?i:password|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential)";

/// The rules, checked in this order.
pub const RULES: &[SecretRule] = &[
    SecretRule {
        id: "IW-SECRET-AWS-ACCESS-KEY-ID",
        title: "AWS access key ID",
        severity: Critical,
        pattern: r"\b((?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16})\b",
    },
    SecretRule {
        id: "IW-SECRET-AWS-SECRET-KEY",
        title: "AWS secret access key",
        severity: Critical,
        pattern: r#"(?i:aws_?secret_?(?:access_?)?key|aws_?secret)["']?\s*[:=]\s*["']?([A-Za-z0-9/+=]{40})\b"#,
    },
    SecretRule {
        id: "IW-SECRET-GITHUB-TOKEN",
        title: "GitHub token",
        severity: Critical,
        pattern: r"\b((?:ghp|gho|ghu|ghs|ghr)_[0-9A-Za-z]{36}|github_pat_[0-9A-Za-z_]{22,255})\b",
    },
    SecretRule {
        id: "IW-SECRET-GITLAB-TOKEN",
        title: "GitLab personal access token",
        severity: Critical,
        pattern: r"\b(glpat-[0-9A-Za-z_-]{20,})",
    },
    SecretRule {
        id: "IW-SECRET-SLACK-TOKEN",
        title: "Slack token",
        severity: High,
        pattern: r"\b(xox[baprs]-[0-9A-Za-z-]{10,})",
    },
    SecretRule {
        id: "IW-SECRET-SLACK-WEBHOOK",
        title: "Slack incoming webhook URL",
        severity: Medium,
        pattern: r"(https://hooks\.slack\.com/services/T[0-9A-Za-z_]+/B[0-9A-Za-z_]+/[0-9A-Za-z_]{20,})",
    },
    SecretRule {
        id: "IW-SECRET-GOOGLE-API-KEY",
        title: "Google API key",
        severity: High,
        pattern: r"\b(AIza[0-9A-Za-z_-]{35})",
    },
    SecretRule {
        id: "IW-SECRET-STRIPE-KEY",
        title: "Stripe secret key",
        severity: Critical,
        pattern: r"\b((?:sk|rk)_live_[0-9A-Za-z]{20,})",
    },
    SecretRule {
        id: "IW-SECRET-PRIVATE-KEY",
        title: "Private key",
        severity: High,
        pattern: r"(-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----)\s*[A-Za-z0-9+/=\r\n:-]{64}",
    },
    SecretRule {
        id: "IW-SECRET-JWT",
        title: "JSON Web Token",
        severity: Medium,
        pattern: r"\b(eyJ[0-9A-Za-z_-]{10,}\.eyJ[0-9A-Za-z_-]{10,}\.[0-9A-Za-z_-]{16,})",
    },
];

/// A keyword assignment whose value looks random (checked after the rules above).
const GENERIC: &str =
    r#"(?:KEYWORD)[A-Za-z0-9_.-]{0,20}["']?\s*[:=]\s*["']([0-9A-Za-z+/_=.-]{20,100})["']"#;

struct Compiled {
    set: RegexSet,
    rules: Vec<Regex>,
    generic: Regex,
}

fn compiled() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    C.get_or_init(|| {
        let generic = GENERIC.replace("KEYWORD", KEYWORD);
        let mut patterns: Vec<String> = RULES.iter().map(|r| r.pattern.to_string()).collect();
        patterns.push(generic.clone());
        Compiled {
            set: RegexSet::new(&patterns).expect("secret patterns"),
            rules: RULES
                .iter()
                .map(|r| Regex::new(r.pattern).expect("secret pattern"))
                .collect(),
            generic: Regex::new(&generic).expect("generic secret pattern"),
        }
    })
}

/// Shannon entropy in bits per character.
fn entropy(s: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for b in s {
        counts[*b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

fn looks_random(v: &[u8]) -> bool {
    let has_digit = v.iter().any(u8::is_ascii_digit);
    let has_alpha = v.iter().any(u8::is_ascii_alphabetic);
    has_digit && has_alpha && entropy(v) >= 4.0 && !v.windows(3).any(|w| w == b"xxx" || w == b"XXX")
}

/// A secret found in a text: rule id, title, severity, byte offset, redacted value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMatch {
    pub id: &'static str,
    pub title: &'static str,
    pub severity: Severity,
    pub offset: usize,
    /// 1-based line of `offset`.
    pub line: u32,
    pub redacted: String,
}

/// Every secret in `data`, at most one per rule and line.
pub fn find_secrets(data: &[u8]) -> Vec<SecretMatch> {
    let c = compiled();
    let hits = c.set.matches(data);
    if !hits.matched_any() {
        return Vec::new();
    }
    let lines = LineIndex::new(data);
    let mut out: Vec<SecretMatch> = Vec::new();
    let mut seen_lines: std::collections::HashSet<(usize, u32)> = Default::default();
    let mut push = |out: &mut Vec<SecretMatch>,
                    i: usize,
                    rule: (&'static str, &'static str, Severity),
                    at: usize,
                    value: &[u8]| {
        let line = lines.line(at);
        if !seen_lines.insert((i, line)) {
            return;
        }
        out.push(SecretMatch {
            id: rule.0,
            title: rule.1,
            severity: rule.2,
            offset: at,
            line,
            redacted: redact(&String::from_utf8_lossy(value)),
        });
    };
    for (i, rule) in RULES.iter().enumerate() {
        if !hits.matched(i) {
            continue;
        }
        for caps in c.rules[i].captures_iter(data).take(100) {
            let m = caps.get(1).or_else(|| caps.get(0)).expect("match");
            push(
                &mut out,
                i,
                (rule.id, rule.title, rule.severity),
                m.start(),
                m.as_bytes(),
            );
        }
    }
    if hits.matched(RULES.len()) {
        let specific: std::collections::HashSet<u32> = out.iter().map(|s| s.line).collect();
        for caps in c.generic.captures_iter(data).take(100) {
            let m = caps.get(1).expect("value group");
            let line = lines.line(m.start());
            // Values a specific rule already reported on this line are not reported twice.
            if specific.contains(&line) || !looks_random(m.as_bytes()) {
                continue;
            }
            push(
                &mut out,
                RULES.len(),
                ("IW-SECRET-GENERIC", "Secret assigned to a keyword", High),
                m.start(),
                m.as_bytes(),
            );
        }
    }
    out
}

/// Files the secret rules skip: vendored test fixtures and formats that cannot hold
/// readable secrets.
fn skipped_path(path: &str) -> bool {
    const EXT: &[&str] = &[
        ".so", ".a", ".o", ".pyc", ".png", ".jpg", ".jpeg", ".gif", ".ico", ".svg", ".woff",
        ".woff2", ".ttf", ".otf", ".gz", ".xz", ".bz2", ".zst", ".zip", ".jar", ".whl", ".mo",
        ".pdf", ".map", ".wasm",
    ];
    if EXT.iter().any(|e| path.ends_with(e)) || path.contains(".so.") {
        return true;
    }
    let vendored = path.contains("site-packages/")
        || path.contains("dist-packages/")
        || path.contains("node_modules/")
        || path.contains("/vendor/")
        || path.contains("/gems/");
    let fixture = ["/test/", "/tests/", "testdata", "fixtures", "/__tests__/"]
        .iter()
        .any(|d| path.contains(d));
    (vendored && fixture)
        || path.starts_with("usr/share/doc/")
        || path.starts_with("usr/share/man/")
        || path.starts_with("usr/share/locale/")
        || path.starts_with("usr/include/")
        || path.starts_with("proc/")
        || path.starts_with("sys/")
}

/// The secret rules over text files below a size cap.
pub struct SecretAnalyzer {
    pub size_cap: u64,
}

impl Analyzer for SecretAnalyzer {
    fn name(&self) -> &'static str {
        "secret"
    }
    fn wants(&self, file: &FileMeta<'_>) -> bool {
        file.size > 0 && file.size <= self.size_cap && !skipped_path(file.path)
    }
    fn size_cap(&self) -> u64 {
        self.size_cap
    }
    fn analyze(&self, _path: &str, data: &[u8], out: &mut Output) {
        if is_binary(data) {
            return;
        }
        for m in find_secrets(data) {
            emit(
                out,
                CheckFinding::new(
                    CheckClass::Secret,
                    m.id,
                    m.title,
                    m.severity,
                    m.redacted,
                    "Remove the secret from the image, rotate it, and provide it at run time",
                )
                .line(m.line),
            );
        }
    }
}

/// Names the files the secret rules would read but for their size, so that a miss is said:
/// judged by size alone, they are never read.
pub struct OversizedSecretCandidates {
    pub size_cap: u64,
}

impl Analyzer for OversizedSecretCandidates {
    fn name(&self) -> &'static str {
        "secret"
    }
    fn wants(&self, file: &FileMeta<'_>) -> bool {
        file.size > self.size_cap && !skipped_path(file.path)
    }
    fn metadata_only(&self) -> bool {
        true
    }
    fn analyze(&self, _path: &str, _data: &[u8], _out: &mut Output) {}
    fn analyze_meta(&self, file: &FileMeta<'_>, out: &mut Output) {
        if self.wants(file) {
            out.warn(format!(
                "{}: not checked for secrets: larger than {}",
                file.path,
                crate::budget::human(self.size_cap)
            ));
        }
    }
}

/// Secrets in the configuration's `Env` (a baseline risk, CIS 4.10): names that say they
/// hold one (with a non-empty value), and values any secret rule matches.
pub fn config_env_secrets(config: &ImageConfig) -> Vec<CheckFinding> {
    let mut out = Vec::new();
    let env = config
        .config
        .as_ref()
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    for (i, var) in env.iter().enumerate() {
        let (name, value) = var.split_once('=').unwrap_or((var.as_str(), ""));
        let key = format!("config.Env[{i}]");
        let matches = find_secrets(value.as_bytes());
        let upper = name.to_ascii_uppercase();
        let named = [
            "PASSWORD",
            "PASSWD",
            "SECRET",
            "TOKEN",
            "API_KEY",
            "APIKEY",
            "PRIVATE_KEY",
        ]
        .iter()
        .any(|k| upper.contains(k))
            || upper.starts_with("AWS_");
        // Names like `*_FILE` or `*_PATH` point at a secret rather than hold one.
        let points_elsewhere = ["_FILE", "_PATH", "_DIR"]
            .iter()
            .any(|s| upper.ends_with(s));
        let (title, sev, shown) = if let Some(m) = matches.first() {
            (
                format!("{} in an environment variable", m.title),
                m.severity.max(High),
                m.redacted.clone(),
            )
        } else if named && !points_elsewhere && !value.is_empty() {
            (
                "Secret in an environment variable".to_string(),
                High,
                redact(value),
            )
        } else {
            continue;
        };
        out.push(
            CheckFinding::new(
                CheckClass::Baseline,
                "IW-CIS-4.10-ENV-SECRET",
                &title,
                sev,
                format!("{name}={shown}"),
                "Do not bake secrets into ENV; pass them at run time from a secret store",
            )
            .cis("4.10")
            .config_key(key),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_over_the_size_cap_are_named_not_skipped_silently() {
        let secret = b"token: ghp_0123456789abcdefghijABCDEFGHIJ012345\n";
        let mut big = secret.to_vec();
        big.resize(2 << 20, b'\n');
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in [
            ("etc/app/small.conf", secret.as_slice()),
            ("etc/app/big.conf", big.as_slice()),
            ("usr/lib/big.so", big.as_slice()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, path, data).unwrap();
        }
        let tar = tar.into_inner().unwrap();
        let analyzers = crate::checks::file_analyzers(&crate::checks::CheckOptions {
            baseline: false,
            malware: false,
            ..Default::default()
        });
        let scan = crate::layer::scan_layer(tar.as_slice(), None, None, &analyzers).unwrap();
        let warnings = |path: &str| -> Vec<String> {
            scan.files
                .get(path)
                .map(|r| r.output.warnings.clone())
                .unwrap_or_default()
        };
        assert_eq!(
            warnings("etc/app/big.conf"),
            ["etc/app/big.conf: not checked for secrets: larger than 1 MiB"]
        );
        assert!(warnings("etc/app/small.conf").is_empty());
        // A format the rules never read is not a miss.
        assert!(warnings("usr/lib/big.so").is_empty());
        let small = &scan.files["etc/app/small.conf"].output.facts;
        assert_eq!(small.len(), 1, "{small:?}");
    }

    #[test]
    fn rules_find_and_redact() {
        let text = b"aws_access_key_id = AKIAQWERTYUIOPASDFGH\nx = 1\ntoken: ghp_0123456789abcdefghijABCDEFGHIJ012345\n";
        let found = find_secrets(text);
        let ids: Vec<&str> = found.iter().map(|m| m.id).collect();
        assert_eq!(
            ids,
            ["IW-SECRET-AWS-ACCESS-KEY-ID", "IW-SECRET-GITHUB-TOKEN"]
        );
        assert_eq!(found[0].redacted, "AKIA****");
        assert_eq!(found[1].line, 3);
        assert_eq!(super::super::line_of(text, found[1].offset), 3);
    }

    #[test]
    fn generic_assignments_need_randomness() {
        assert!(find_secrets(br#"password = "changeme-changeme-changeme""#).is_empty());
        let hit = find_secrets(br#"api_key = "q8Zt3Lw9Vb2Nx7Kp4Rm6Hs1J""#);
        assert_eq!(hit.len(), 1);
        assert_eq!(hit[0].id, "IW-SECRET-GENERIC");
    }

    #[test]
    fn many_secrets_in_a_large_file_cost_linear_time() {
        // 1,100 secrets (AWS key ids, GitHub tokens, Slack tokens, keyword assignments)
        // spread through 3 MiB of text: line numbers were recounted from the start of
        // the file for every match, and for every pair of matches on the generic rule.
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut random = |n: usize, alphabet: &[u8]| -> String {
            (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    alphabet[(state % alphabet.len() as u64) as usize] as char
                })
                .collect()
        };
        const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        const MIXED: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let filler = format!("# {}\n", "lorem ipsum dolor sit amet ".repeat(4));
        let mut text = String::new();
        for i in 0..1100 {
            text.push_str(&filler.repeat(28));
            match i % 4 {
                0 => text.push_str(&format!("id = AKIA{}\n", random(16, UPPER))),
                1 => text.push_str(&format!("t = ghp_{}\n", random(36, MIXED))),
                2 => text.push_str(&format!("s = xoxb-{}\n", random(24, MIXED))),
                _ => text.push_str(&format!("api_key = \"{}\"\n", random(24, MIXED))),
            }
        }
        assert!(text.len() > 3 << 20);
        let started = std::time::Instant::now();
        let found = find_secrets(text.as_bytes());
        let elapsed = started.elapsed();
        // Each rule reports at most 100 matches; every line number is right.
        for id in [
            "IW-SECRET-AWS-ACCESS-KEY-ID",
            "IW-SECRET-GITHUB-TOKEN",
            "IW-SECRET-SLACK-TOKEN",
        ] {
            assert_eq!(found.iter().filter(|m| m.id == id).count(), 100, "{id}");
        }
        let generic = found.iter().filter(|m| m.id == "IW-SECRET-GENERIC").count();
        assert!((50..=100).contains(&generic), "{generic}");
        for m in found.iter().step_by(25) {
            assert_eq!(m.line, super::super::line_of(text.as_bytes(), m.offset));
        }
        assert!(elapsed < std::time::Duration::from_secs(10), "{elapsed:?}");
    }
}
