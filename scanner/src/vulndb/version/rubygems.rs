//! RubyGems version ordering (`Gem::Version#<=>`): segments split at dots and at
//! digit/letter changes; any letter segment makes a pre-release.

use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Num(String),
    Str(String),
}

fn segments(v: &str) -> Vec<Segment> {
    let v = v.trim().replace('-', ".pre.");
    let mut out = Vec::new();
    for part in v.split('.') {
        let b = part.as_bytes();
        let mut start = 0;
        for i in 1..=b.len() {
            if i == b.len() || b[i].is_ascii_digit() != b[start].is_ascii_digit() {
                let s = &part[start..i];
                out.push(if b[start].is_ascii_digit() {
                    Segment::Num(s.trim_start_matches('0').to_string())
                } else {
                    Segment::Str(s.to_string())
                });
                start = i;
            }
        }
    }
    // Trailing zeros do not count (`1.0` == `1`).
    while matches!(out.last(), Some(Segment::Num(n)) if n.is_empty()) {
        out.pop();
    }
    out
}

/// Orders two RubyGems versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (a, b) = (segments(a), segments(b));
    let zero = Segment::Num(String::new());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).unwrap_or(&zero);
        let y = b.get(i).unwrap_or(&zero);
        let ord = match (x, y) {
            (Segment::Num(p), Segment::Num(q)) => super::cmp_digits(p, q),
            (Segment::Num(_), Segment::Str(_)) => Ordering::Greater,
            (Segment::Str(_), Segment::Num(_)) => Ordering::Less,
            (Segment::Str(p), Segment::Str(q)) => p.cmp(q),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn orders_rubygems_versions() {
        super::super::check_table(
            compare,
            &[
                ("1.0", "1", Equal),
                ("1.0.0", "1.0.1", Less),
                ("1.0.a", "1.0", Less),
                ("1.0.0.pre1", "1.0.0", Less),
                ("1.0.0.rc1", "1.0.0.rc2", Less),
                ("1.0.0.beta", "1.0.0.rc1", Less),
                ("1.0.0-rc1", "1.0.0.pre.rc1", Equal),
                ("5.2.4.3", "5.2.4.4", Less),
                ("6.1.7.1", "6.1.7", Greater),
                ("1.13.10", "1.13.9", Greater),
                ("2.0.0.a", "1.9.9", Greater),
            ],
        );
    }
}
