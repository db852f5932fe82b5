//! PEP 440 version ordering (epochs, pre/post/dev releases, local versions),
//! with the normalizations `packaging` applies (`alpha`→`a`, `-1`→`.post1`, ...).

use std::cmp::Ordering;
use std::sync::LazyLock;

use regex::Regex;

static PEP440: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?x)^\s*v?
        (?:(?P<epoch>[0-9]+)!)?
        (?P<release>[0-9]+(?:\.[0-9]+)*)
        (?:[-_.]?(?P<pre_l>alpha|a|beta|b|preview|pre|c|rc)[-_.]?(?P<pre_n>[0-9]+)?)?
        (?:-(?P<post_n1>[0-9]+)|[-_.]?(?P<post_l>post|rev|r)[-_.]?(?P<post_n2>[0-9]+)?)?
        (?:[-_.]?(?P<dev_l>dev)[-_.]?(?P<dev_n>[0-9]+)?)?
        (?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?
        \s*$",
    )
    .expect("valid PEP 440 pattern")
});

/// Sort key of a PEP 440 version, ordered the way `packaging.version` orders them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    epoch: u64,
    release: Vec<u64>,
    /// (phase, number): phase -1 = dev-only release (before any pre-release), 0..=2 = a/b/rc, 3 = final.
    pre: (i8, u64),
    /// `None` sorts before any post-release.
    post: Option<u64>,
    /// `None` (not a dev release) sorts after every dev release.
    dev: (u8, u64),
    /// Local segments: numbers sort after strings.
    local: Vec<(u8, u64, String)>,
}

fn num(s: Option<regex::Match<'_>>) -> u64 {
    s.and_then(|m| m.as_str().parse().ok()).unwrap_or(0)
}

thread_local! {
    /// Parsed versions: matching compares the same few strings many times, and the
    /// regex is the costly part.
    static PARSED: std::cell::RefCell<std::collections::HashMap<String, Option<Key>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn key(v: &str) -> Option<Key> {
    if let Some(k) = PARSED.with(|c| c.borrow().get(v).cloned()) {
        return k;
    }
    let k = parse_key(v);
    PARSED.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() > 50_000 {
            c.clear();
        }
        c.insert(v.to_string(), k.clone());
    });
    k
}

fn parse_key(v: &str) -> Option<Key> {
    let lower = v.to_ascii_lowercase();
    let c = PEP440.captures(&lower)?;
    let mut release: Vec<u64> = c["release"]
        .split('.')
        .map(|s| s.parse().unwrap_or(u64::MAX))
        .collect();
    while release.len() > 1 && release.last() == Some(&0) {
        release.pop();
    }
    let post = if c.name("post_n1").is_some() {
        Some(num(c.name("post_n1")))
    } else if c.name("post_l").is_some() {
        Some(num(c.name("post_n2")))
    } else {
        None
    };
    let dev = c.name("dev_l").map(|_| num(c.name("dev_n")));
    let pre = match c.name("pre_l").map(|m| m.as_str()) {
        Some("a" | "alpha") => (0, num(c.name("pre_n"))),
        Some("b" | "beta") => (1, num(c.name("pre_n"))),
        Some(_) => (2, num(c.name("pre_n"))),
        None if post.is_none() && dev.is_some() => (-1, 0),
        None => (3, 0),
    };
    let local = c
        .name("local")
        .map(|m| {
            m.as_str()
                .split(['-', '_', '.'])
                .map(|s| match s.parse::<u64>() {
                    Ok(n) => (1, n, String::new()),
                    Err(_) => (0, 0, s.to_string()),
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Key {
        epoch: num(c.name("epoch")),
        release,
        pre,
        post,
        dev: match dev {
            Some(n) => (0, n),
            None => (1, 0),
        },
        local,
    })
}

/// Whether `v` is a valid PEP 440 version.
pub fn is_valid(v: &str) -> bool {
    key(v).is_some()
}

/// Orders two PEP 440 versions; invalid (legacy) versions sort before valid ones,
/// and among themselves by the lenient SemVer tokenizer.
pub fn compare(a: &str, b: &str) -> Ordering {
    match (key(a), key(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (None, None) => super::semver::compare(a, b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn orders_pep440_versions() {
        super::super::check_table(
            compare,
            &[
                ("3.2.0", "3.2.1", Less),
                ("3.2", "3.2.0", Equal),
                ("3.2.13", "3.2.4", Greater),
                ("5.3", "5.4", Less),
                ("5.3.1", "5.4b1", Less),
                ("5.4b1", "5.4", Less),
                ("5.4b2", "5.4b10", Less),
                ("1.0.dev0", "1.0a1", Less),
                ("1.0a1", "1.0a2.dev1", Less),
                ("1.0a2.dev1", "1.0a2", Less),
                ("1.0a2", "1.0b1", Less),
                ("1.0b1", "1.0rc1", Less),
                ("1.0rc1", "1.0c2", Less),
                ("1.0rc1", "1.0", Less),
                ("1.0", "1.0.post1.dev0", Less),
                ("1.0.post1.dev0", "1.0.post1", Less),
                ("1.0.post1", "1.0-2", Less),
                ("1.0", "1.0+local.1", Less),
                ("1.0+abc", "1.0+1", Less),
                ("1.0+1", "1.0+1.1", Less),
                ("1!0.1", "2.0", Greater),
                ("1.0-alpha-1", "1.0a1", Equal),
                ("1.0.0RC1", "1.0rc1", Equal),
                ("v1.0", "1.0", Equal),
                ("2.2.28", "3.0", Less),
                ("1.0.post1", "1.1.dev1", Less),
            ],
        );
    }
}
