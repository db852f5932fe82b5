//! SemVer 2.0 ordering, lenient: a leading `v` (Go), missing minor/patch, and
//! build metadata (`+incompatible`) are accepted; Go pseudo-versions are valid
//! SemVer pre-releases and order correctly as such.

use std::cmp::Ordering;

/// A parsed, borrowed SemVer-like version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lenient<'a> {
    pub core: Vec<&'a str>,
    pub pre: Option<&'a str>,
}

/// Splits `v` into numeric core components and the pre-release tag; build metadata is dropped.
pub fn parse(v: &str) -> Lenient<'_> {
    let v = v.trim();
    let v = v.strip_prefix(['v', 'V']).unwrap_or(v);
    let v = v.split_once('+').map_or(v, |(head, _)| head);
    let (core, pre) = match v.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (v, None),
    };
    Lenient {
        core: core.split('.').collect(),
        pre,
    }
}

/// Compares numeric components (missing ones are zero); non-numeric ones compare as text after numbers.
pub fn cmp_core(a: &[&str], b: &[&str]) -> Ordering {
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or("0");
        let y = b.get(i).copied().unwrap_or("0");
        let ord = cmp_identifier_numeric_first(x, y);
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

fn is_num(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())
}

fn cmp_identifier_numeric_first(x: &str, y: &str) -> Ordering {
    match (is_num(x), is_num(y)) {
        (true, true) => super::cmp_digits(x, y),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => x.cmp(y),
    }
}

/// Orders pre-release tags by SemVer 2.0 section 11; `None` (a release) is newest.
pub fn cmp_pre(a: Option<&str>, b: Option<&str>, ignore_case: bool) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(a), Some(b)) => {
            let (a, b) = if ignore_case {
                (a.to_ascii_lowercase(), b.to_ascii_lowercase())
            } else {
                (a.to_string(), b.to_string())
            };
            let mut ia = a.split('.');
            let mut ib = b.split('.');
            loop {
                match (ia.next(), ib.next()) {
                    (None, None) => return Ordering::Equal,
                    (None, Some(_)) => return Ordering::Less,
                    (Some(_), None) => return Ordering::Greater,
                    (Some(x), Some(y)) => {
                        let ord = cmp_identifier_numeric_first(x, y);
                        if ord != Ordering::Equal {
                            return ord;
                        }
                    }
                }
            }
        }
    }
}

/// Orders two SemVer versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (a, b) = (parse(a), parse(b));
    cmp_core(&a.core, &b.core).then_with(|| cmp_pre(a.pre, b.pre, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn orders_semver_versions() {
        super::super::check_table(
            compare,
            &[
                ("4.17.15", "4.17.21", Less),
                ("4.17.21", "4.17.21", Equal),
                ("1.0.0-alpha", "1.0.0-alpha.1", Less),
                ("1.0.0-alpha.1", "1.0.0-alpha.beta", Less),
                ("1.0.0-alpha.beta", "1.0.0-beta", Less),
                ("1.0.0-beta", "1.0.0-beta.2", Less),
                ("1.0.0-beta.2", "1.0.0-beta.11", Less),
                ("1.0.0-beta.11", "1.0.0-rc.1", Less),
                ("1.0.0-rc.1", "1.0.0", Less),
                ("1.0.0+build.1", "1.0.0", Equal),
                ("2.0.0", "10.0.0", Less),
                // Go
                ("v0.3.5", "v0.3.7", Less),
                ("v0.3.5", "0.3.5", Equal),
                ("v2.0.0+incompatible", "v2.0.0", Equal),
                (
                    "v0.0.0-20210226172049-e18ecbb05110",
                    "v0.0.0-20220722155217-630584e8d5aa",
                    Less,
                ),
                ("v0.0.0-20220722155217-630584e8d5aa", "v0.1.0", Less),
                ("v1.2.4-0.20191109021931-daa7c04131f5", "v1.2.3", Greater),
                ("v1.2.4-0.20191109021931-daa7c04131f5", "v1.2.4", Less),
                (
                    "v1.2.3-pre.0.20191109021931-daa7c04131f5",
                    "v1.2.3-pre",
                    Greater,
                ),
                ("1.20", "1.20.0", Equal),
                ("1.21.0-rc.2", "1.20.14", Greater),
            ],
        );
    }
}
