//! Composer (Packagist) version ordering, as PHP's `version_compare` orders
//! normalized versions: `dev < alpha = a < beta = b < RC = rc < # < pl = p`.

use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Num(String),
    Word(String),
}

fn canonical(v: &str) -> Vec<Part> {
    let v = v.trim();
    let v = v.strip_prefix(['v', 'V']).unwrap_or(v).to_ascii_lowercase();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_digit = false;
    for c in v.chars() {
        let sep = matches!(c, '.' | '-' | '_' | '+');
        if sep || (!cur.is_empty() && c.is_ascii_digit() != cur_digit) {
            if !cur.is_empty() {
                out.push(if cur_digit {
                    Part::Num(std::mem::take(&mut cur))
                } else {
                    Part::Word(std::mem::take(&mut cur))
                });
            }
            if sep {
                continue;
            }
        }
        cur_digit = c.is_ascii_digit();
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(if cur_digit {
            Part::Num(cur)
        } else {
            Part::Word(cur)
        });
    }
    out
}

/// PHP's special-form order; numbers rank between `rc` and `pl`.
fn rank(p: &Part) -> i32 {
    match p {
        Part::Num(_) => 5,
        Part::Word(w) => match w.as_str() {
            "dev" => 1,
            "alpha" | "a" => 2,
            "beta" | "b" => 3,
            "rc" => 4,
            "pl" | "p" | "patch" => 6,
            // `stable` is the normalized name of a release.
            "stable" => 5,
            _ => 0,
        },
    }
}

/// Orders two Composer versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (a, b) = (canonical(a), canonical(b));
    for i in 0..a.len().max(b.len()) {
        let ord = match (a.get(i), b.get(i)) {
            (Some(Part::Num(x)), Some(Part::Num(y))) => super::cmp_digits(x, y),
            (Some(x), Some(y)) => rank(x).cmp(&rank(y)),
            // The longer version is newer when it goes on with a number or a patch level.
            (Some(x), None) => {
                if rank(x) >= 5 {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (None, Some(y)) => {
                if rank(y) >= 5 {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (None, None) => Ordering::Equal,
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
    fn orders_composer_versions() {
        super::super::check_table(
            compare,
            &[
                ("5.4.0", "5.4.1", Less),
                ("v5.4.0", "5.4.0", Equal),
                ("1.0.0-RC1", "1.0.0", Less),
                ("1.0.0-beta2", "1.0.0-RC1", Less),
                ("1.0.0-alpha", "1.0.0-beta", Less),
                ("1.0.0-dev", "1.0.0-alpha", Less),
                ("1.0.0-p1", "1.0.0", Greater),
                ("1.0.0", "1.0.0.1", Less),
                ("2.4.10", "2.4.9", Greater),
            ],
        );
    }
}
