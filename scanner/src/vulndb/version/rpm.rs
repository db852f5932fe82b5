//! RPM version ordering: `[epoch:]version[-release]` compared as rpm's `rpmverCmp` does
//! (epoch, then version, then release, each with `rpmvercmp`, including the `~`
//! pre-release and `^` post-release separators).
//!
//! The comparison is a single forward scan over both strings (no recursion), and only
//! the first [`MAX_LEN`] bytes of each string are looked at, so a hostile version costs
//! at most that much work.

use std::cmp::Ordering;

/// Longest prefix of a version string that is compared; real EVRs (module builds
/// included) stay under 100 bytes.
pub const MAX_LEN: usize = 256;

/// Orders two RPM `[epoch:]version[-release]` strings.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, va, ra) = split(bounded(a.trim()));
    let (eb, vb, rb) = split(bounded(b.trim()));
    super::cmp_digits(ea, eb)
        .then_with(|| rpmvercmp(va, vb))
        .then_with(|| match (ra, rb) {
            (Some(ra), Some(rb)) => rpmvercmp(ra, rb),
            // A release-less bound (`1.2`) covers every release of that version.
            _ => Ordering::Equal,
        })
}

/// The first [`MAX_LEN`] bytes of `v`, cut at a character boundary.
fn bounded(v: &str) -> &str {
    if v.len() <= MAX_LEN {
        return v;
    }
    let mut end = MAX_LEN;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    &v[..end]
}

fn split(v: &str) -> (&str, &str, Option<&str>) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) if e.bytes().all(|c| c.is_ascii_digit()) => {
            (if e.is_empty() { "0" } else { e }, rest)
        }
        _ => ("0", v),
    };
    match rest.rsplit_once('-') {
        Some((version, release)) => (epoch, version, Some(release)),
        None => (epoch, rest, None),
    }
}

/// rpm's `rpmvercmp`, segment by segment (on at most [`MAX_LEN`] bytes of each).
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (bounded(a), bounded(b));
    if a == b {
        return Ordering::Equal;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let sep = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    loop {
        while i < a.len() && sep(a[i]) {
            i += 1;
        }
        while j < b.len() && sep(b[j]) {
            j += 1;
        }
        let (ca, cb) = (a.get(i).copied(), b.get(j).copied());
        if ca == Some(b'~') || cb == Some(b'~') {
            if ca != Some(b'~') {
                return Ordering::Greater;
            }
            if cb != Some(b'~') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if ca == Some(b'^') || cb == Some(b'^') {
            if ca.is_none() {
                return Ordering::Less;
            }
            if cb.is_none() {
                return Ordering::Greater;
            }
            if ca != Some(b'^') {
                return Ordering::Greater;
            }
            if cb != Some(b'^') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if ca.is_none() || cb.is_none() {
            break;
        }
        let numeric = a[i].is_ascii_digit();
        let class = |c: u8| {
            if numeric {
                c.is_ascii_digit()
            } else {
                c.is_ascii_alphabetic()
            }
        };
        let si = i;
        while i < a.len() && class(a[i]) {
            i += 1;
        }
        let sj = j;
        while j < b.len() && class(b[j]) {
            j += 1;
        }
        let (sa, sb) = (&a[si..i], &b[sj..j]);
        if sb.is_empty() {
            // Numeric segments are newer than alphabetic ones.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let ord = if numeric {
            super::cmp_digits(
                std::str::from_utf8(sa).unwrap_or(""),
                std::str::from_utf8(sb).unwrap_or(""),
            )
        } else {
            sa.cmp(sb)
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    match (i >= a.len(), j >= b.len()) {
        (true, true) => Ordering::Equal,
        (false, _) => Ordering::Greater,
        (true, false) => Ordering::Less,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn orders_rpm_versions() {
        super::super::check_table(
            compare,
            &[
                ("1.0", "1.0", Equal),
                ("1.0", "2.0", Less),
                ("2.0.1", "2.0", Greater),
                ("2.0.1a", "2.0.1", Greater),
                ("5.5p1", "5.5p2", Less),
                ("5.5p10", "5.5p1", Greater),
                ("10xyz", "10.1xyz", Less),
                ("xyz10", "xyz10.1", Less),
                ("1.0aa", "1.0a", Greater),
                ("6.0.rc1", "6.0", Greater),
                ("10b2", "10a1", Greater),
                ("1.0~rc1", "1.0", Less),
                ("1.0~rc1", "1.0~rc2", Less),
                ("1.0~rc1~git123", "1.0~rc1", Less),
                ("1.0^", "1.0", Greater),
                ("1.0^git1", "1.0", Greater),
                ("1.0^git1", "1.01", Less),
                ("1.0^git1", "1.0~rc1", Greater),
                ("1:1.0-1", "2.0-1", Greater),
                ("1.1.1k-7.el8_6", "1.1.1k-6.el8_5", Greater),
                ("3.0.7-25.el9_3", "3.0.7-27.el9", Less),
                ("2.28-151.el9", "2.28-151.el9", Equal),
                ("1.2.3", "1.2.3-4", Equal),
                // Real AlmaLinux 9 fixed versions: module builds, a `~` pre-release.
                ("1:3.0.1-41.el9_0", "1:3.0.1-43.el9_0", Less),
                (
                    "1:22.15.0-1.module_el9.6.0+164+2d89b8ed",
                    "1:22.16.0-1.module_el9.6.0+164+2d89b8ed",
                    Less,
                ),
                (
                    "1:1.24.0-5.module_el9.7.0+220+47ec8b91.2.alma.1",
                    "1:1.24.0-5.module_el9.7.0+220+47ec8b91",
                    Greater,
                ),
                (
                    "1:0.9.0~M3-7.module_el9.6.0+148+fb6dc857",
                    "1:0.9.0-7.module_el9.6.0+148+fb6dc857",
                    Less,
                ),
                ("0:1.0-1", "1.0-1", Equal),
                (":1.0-1", "1.0-1", Equal),
            ],
        );
    }

    #[test]
    fn hostile_lengths_cost_a_bounded_scan() {
        let long_a = format!("{}a", "1.".repeat(1_000_000));
        let long_b = format!("{}b", "1.".repeat(1_000_000));
        let start = std::time::Instant::now();
        // Only the first MAX_LEN bytes count: both are the same there.
        assert_eq!(compare(&long_a, &long_b), Equal);
        assert_eq!(compare(&long_a, "2"), Less);
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        let digits = "9".repeat(100_000);
        let _ = compare(&digits, &format!("1{digits}"));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(
            compare("é".repeat(200).as_str(), "é".repeat(300).as_str()),
            Equal
        );
    }
}
