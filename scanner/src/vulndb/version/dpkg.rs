//! Debian version ordering (Debian Policy 5.6.12, dpkg's `verrevcmp`).

use std::cmp::Ordering;

/// Orders two Debian versions `[epoch:]upstream[-revision]`.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a.trim());
    let (eb, ub, rb) = split(b.trim());
    super::cmp_digits(ea, eb)
        .then_with(|| verrevcmp(ua, ub))
        .then_with(|| verrevcmp(ra, rb))
}

fn split(v: &str) -> (&str, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit()) => (e, rest),
        _ => ("0", v),
    };
    match rest.rsplit_once('-') {
        Some((upstream, revision)) => (epoch, upstream, revision),
        None => (epoch, rest, ""),
    }
}

/// dpkg's character weight: `~` sorts before everything, even the end of the string;
/// letters sort before other characters.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(b'~') => -1,
        Some(c) => c as i32 + 256,
    }
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ac = order(a.get(i).copied());
            let bc = order(b.get(j).copied());
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while i < a.len() && a[i].is_ascii_digit() && j < b.len() && b[j].is_ascii_digit() {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if i < a.len() && a[i].is_ascii_digit() {
            return Ordering::Greater;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn orders_debian_versions() {
        super::super::check_table(
            compare,
            &[
                ("1.1.0f-3+deb9u2", "1.1.0l-1~deb9u6", Less),
                ("1.1.0l-1~deb9u6", "1.1.0l-1~deb9u6", Equal),
                ("1.1.0l-1~deb9u5", "1.1.0l-1~deb9u6", Less),
                ("1.1.0l-1", "1.1.0l-1~deb9u6", Greater),
                ("1.1.1n-0+deb11u3", "1.1.1n-0+deb11u4", Less),
                ("1.1.1n-0+deb11u4", "1.1.1n-0", Greater),
                ("2.36.1-8+deb11u1", "2.36.1-8", Greater),
                ("1:2.0", "3.0", Greater),
                ("1:1.2.3", "1:1.2.3", Equal),
                ("0:1.2.3", "1.2.3", Equal),
                ("1.0~rc1", "1.0", Less),
                ("1.0~~", "1.0~", Less),
                ("1.0~", "1.0", Less),
                ("1.0", "1.0+b1", Less),
                ("1.0-1", "1.0-1.1", Less),
                ("1.2.10", "1.2.9", Greater),
                ("1.02", "1.2", Equal),
                ("2.9.4+dfsg1-2.2+deb9u7", "2.9.4+dfsg1-2.2+deb9u6", Greater),
                ("1.18.25", "1.18.26", Less),
                ("7.52.1-5+deb9u16", "7.52.1-5+deb9u9", Greater),
                ("1.0a", "1.0", Greater),
                ("1.0a", "1.0+", Less),
                ("2:1.0", "1:9.9", Greater),
                ("1.2-3-4", "1.2-3-5", Less),
            ],
        );
    }
}
