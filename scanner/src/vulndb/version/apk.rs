//! Alpine (apk-tools) version ordering: `1.2.3[letter][_suffix[N]]...[~hash][-rN]`.

use std::cmp::Ordering;

/// One token of an apk version; the declaration order is apk-tools' token order,
/// which decides when two versions disagree on what comes next.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'a> {
    Digit(&'a str),
    Letter(u8),
    Suffix(i32),
    SuffixNo(&'a str),
    Hash(&'a str),
    Revision(&'a str),
    End,
}

impl Token<'_> {
    fn rank(&self) -> u8 {
        match self {
            Token::Digit(_) => 0,
            Token::Letter(_) => 1,
            Token::Suffix(_) => 2,
            Token::SuffixNo(_) => 3,
            Token::Hash(_) => 4,
            Token::Revision(_) => 5,
            Token::End => 6,
        }
    }
}

/// Pre-release suffixes rank below zero, post-release ones above.
fn suffix_rank(s: &str) -> i32 {
    match s {
        "alpha" => -4,
        "beta" => -3,
        "pre" => -2,
        "rc" => -1,
        "cvs" => 1,
        "svn" => 2,
        "git" => 3,
        "hg" => 4,
        "p" => 5,
        _ => 0,
    }
}

fn tokenize(v: &str) -> Vec<Token<'_>> {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let take = |i: &mut usize, f: fn(u8) -> bool| {
        let s = *i;
        while *i < b.len() && f(b[*i]) {
            *i += 1;
        }
        &v[s..*i]
    };
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() {
            out.push(Token::Digit(take(&mut i, |c| c.is_ascii_digit())));
        } else if c == b'.' {
            i += 1;
        } else if c == b'_' {
            i += 1;
            let name = take(&mut i, |c| c.is_ascii_alphabetic());
            out.push(Token::Suffix(suffix_rank(name)));
            if i < b.len() && b[i].is_ascii_digit() {
                out.push(Token::SuffixNo(take(&mut i, |c| c.is_ascii_digit())));
            }
        } else if c == b'~' {
            i += 1;
            out.push(Token::Hash(take(&mut i, |c| c.is_ascii_hexdigit())));
        } else if c == b'-' && b.get(i + 1) == Some(&b'r') {
            i += 2;
            out.push(Token::Revision(take(&mut i, |c| c.is_ascii_digit())));
        } else if c.is_ascii_alphabetic() {
            out.push(Token::Letter(c));
            i += 1;
        } else {
            // Not apk syntax: skip the character rather than fail.
            i += 1;
        }
    }
    out.push(Token::End);
    out
}

/// Orders two apk versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    let ta = tokenize(a.trim());
    let tb = tokenize(b.trim());
    for (x, y) in ta.iter().zip(tb.iter()) {
        let ord = match (x, y) {
            (Token::Digit(p), Token::Digit(q))
            | (Token::SuffixNo(p), Token::SuffixNo(q))
            | (Token::Revision(p), Token::Revision(q)) => super::cmp_digits(p, q),
            (Token::Letter(p), Token::Letter(q)) => p.cmp(q),
            (Token::Suffix(p), Token::Suffix(q)) => p.cmp(q),
            (Token::Hash(p), Token::Hash(q)) => p.cmp(q),
            (Token::End, Token::End) => return Ordering::Equal,
            // The versions agree so far and then differ in kind: a pre-release
            // suffix is older than anything; otherwise the one that goes on with
            // "more version" (an earlier token kind) is newer.
            (Token::Suffix(p), _) if *p < 0 => Ordering::Less,
            (_, Token::Suffix(q)) if *q < 0 => Ordering::Greater,
            _ => y.rank().cmp(&x.rank()),
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
    fn orders_apk_versions() {
        super::super::check_table(
            compare,
            &[
                ("1.1.22-r3", "1.1.22-r4", Less),
                ("1.1.22-r3", "1.1.22-r3", Equal),
                ("1.1.22-r10", "1.1.22-r9", Greater),
                ("1.1.22", "1.1.22-r0", Less),
                ("1.30.1-r2", "1.29.3-r10", Greater),
                ("1.2.3", "1.2.3.1", Less),
                ("1.2.3_rc1", "1.2.3", Less),
                ("1.2.3_alpha", "1.2.3_beta", Less),
                ("1.2.3_beta2", "1.2.3_beta10", Less),
                ("1.2.3_pre1", "1.2.3_rc1", Less),
                ("1.2.3_p1", "1.2.3", Greater),
                ("1.2.3_p1", "1.2.4", Less),
                ("1.2.3_git20200101", "1.2.3_p1", Less),
                ("1.2.3a", "1.2.3", Greater),
                ("1.2.3a", "1.2.3b", Less),
                ("1.2.3a", "1.2.4", Less),
                ("1.0.2t-r0", "1.0.2u-r0", Less),
                ("1.1.1d-r2", "1.1.1d-r3", Less),
                ("1.1.1g-r0", "1.1.1d-r3", Greater),
                ("2.9.9-r3", "2.9.10-r0", Less),
                ("1.2.3_rc1", "1.2.3.1", Less),
                ("1.2_rc1", "1.2.1", Less),
                ("1.2-r1", "1.2.1", Less),
                ("7.66.0-r0", "7.66.0-r4", Less),
            ],
        );
    }
}
