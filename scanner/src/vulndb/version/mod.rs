//! Version ordering, one module per ecosystem's rules.
//!
//! Every comparator is total and never fails: a version that does not follow its
//! ecosystem's syntax is still ordered (by the same tokenizer), so a malformed
//! advisory or package version can at worst produce a wrong answer for that one
//! pair, never an error for the whole scan.
//!
//! Cost is bounded too: comparators only ever look at the first [`MAX_VERSION_LEN`]
//! bytes and never recurse, and [`check`] tells the matcher which strings are too
//! long or have too many components to be versions at all (those are "unknown").

pub mod apk;
pub mod composer;
pub mod dpkg;
pub mod maven;
pub mod nuget;
pub mod pep440;
pub mod rpm;
pub mod rubygems;
pub mod semver;

use crate::inventory::Ecosystem;
use std::cmp::Ordering;

/// Which ordering rules a version string follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionScheme {
    Dpkg,
    Apk,
    Rpm,
    /// SemVer 2.0 (npm, crates.io, Go modules with or without the `v` prefix).
    SemVer,
    Pep440,
    Maven,
    RubyGems,
    NuGet,
    Composer,
}

impl VersionScheme {
    /// The ordering an ecosystem's `ECOSYSTEM` ranges use.
    pub fn for_ecosystem(ecosystem: Ecosystem) -> VersionScheme {
        match ecosystem {
            Ecosystem::Debian | Ecosystem::Ubuntu => VersionScheme::Dpkg,
            Ecosystem::Alpine => VersionScheme::Apk,
            Ecosystem::RedHat
            | Ecosystem::RockyLinux
            | Ecosystem::AlmaLinux
            | Ecosystem::AmazonLinux
            | Ecosystem::SUSE
            | Ecosystem::OpenSuse => VersionScheme::Rpm,
            Ecosystem::PyPI => VersionScheme::Pep440,
            Ecosystem::Npm | Ecosystem::Go | Ecosystem::CratesIo => VersionScheme::SemVer,
            Ecosystem::Maven => VersionScheme::Maven,
            Ecosystem::RubyGems => VersionScheme::RubyGems,
            Ecosystem::NuGet => VersionScheme::NuGet,
            Ecosystem::Packagist => VersionScheme::Composer,
        }
    }

    /// Orders two versions under this scheme (each cut to [`MAX_VERSION_LEN`] bytes).
    pub fn compare(self, a: &str, b: &str) -> Ordering {
        let (a, b) = (bounded(a), bounded(b));
        match self {
            VersionScheme::Dpkg => dpkg::compare(a, b),
            VersionScheme::Apk => apk::compare(a, b),
            VersionScheme::Rpm => rpm::compare(a, b),
            VersionScheme::SemVer => semver::compare(a, b),
            VersionScheme::Pep440 => pep440::compare(a, b),
            VersionScheme::Maven => maven::compare(a, b),
            VersionScheme::RubyGems => rubygems::compare(a, b),
            VersionScheme::NuGet => nuget::compare(a, b),
            VersionScheme::Composer => composer::compare(a, b),
        }
    }
}

/// Orders two versions of a package of `ecosystem`.
pub fn compare(ecosystem: Ecosystem, a: &str, b: &str) -> Ordering {
    VersionScheme::for_ecosystem(ecosystem).compare(a, b)
}

/// Longest version string the matcher evaluates; real versions are far shorter.
pub const MAX_VERSION_LEN: usize = 128;

/// Most components (runs of digits or of letters) a version may have.
pub const MAX_VERSION_COMPONENTS: usize = 40;

/// Why a string is not evaluated as a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidVersion {
    Empty,
    TooLong(usize),
    TooManyComponents,
}

impl std::fmt::Display for InvalidVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvalidVersion::Empty => write!(f, "the version is empty"),
            InvalidVersion::TooLong(n) => write!(
                f,
                "the version is {n} bytes long (at most {MAX_VERSION_LEN} are evaluated)"
            ),
            InvalidVersion::TooManyComponents => write!(
                f,
                "the version has more than {MAX_VERSION_COMPONENTS} components"
            ),
        }
    }
}

/// Whether `v` is short enough, and has few enough components, to be evaluated.
pub fn check(v: &str) -> Result<(), InvalidVersion> {
    let v = v.trim();
    if v.is_empty() {
        return Err(InvalidVersion::Empty);
    }
    if v.len() > MAX_VERSION_LEN {
        return Err(InvalidVersion::TooLong(v.len()));
    }
    let mut components = 0;
    let mut prev: Option<bool> = None;
    for c in v.bytes() {
        let class = c.is_ascii_alphanumeric().then(|| c.is_ascii_digit());
        if class.is_some() && class != prev {
            components += 1;
        }
        prev = class;
    }
    if components > MAX_VERSION_COMPONENTS {
        return Err(InvalidVersion::TooManyComponents);
    }
    Ok(())
}

/// A short excerpt of a version for messages (never the whole of an oversized string).
pub fn excerpt(v: &str) -> String {
    const SHOWN: usize = 40;
    let cut = bounded_to(v, SHOWN);
    let printable: String = cut
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if cut.len() < v.len() {
        format!("{printable}…")
    } else {
        printable
    }
}

/// The first [`MAX_VERSION_LEN`] bytes of `v` (at a character boundary).
fn bounded(v: &str) -> &str {
    bounded_to(v, MAX_VERSION_LEN)
}

fn bounded_to(v: &str, max: usize) -> &str {
    if v.len() <= max {
        return v;
    }
    let mut end = max;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    &v[..end]
}

/// Sorts `items` stably by `cmp` without relying on `cmp` being a total order (a
/// version comparator fed crafted strings may not be, and `slice::sort_by` may then
/// panic); a bottom-up merge sort, `O(n log n)` comparisons.
pub fn sort_by_version<T: Clone>(items: &mut [T], mut cmp: impl FnMut(&T, &T) -> Ordering) {
    let n = items.len();
    let mut width = 1;
    let mut buf: Vec<T> = Vec::with_capacity(n);
    while width < n {
        buf.clear();
        let mut start = 0;
        while start < n {
            let mid = (start + width).min(n);
            let end = (start + 2 * width).min(n);
            let (mut i, mut j) = (start, mid);
            while i < mid && j < end {
                if cmp(&items[j], &items[i]) == Ordering::Less {
                    buf.push(items[j].clone());
                    j += 1;
                } else {
                    buf.push(items[i].clone());
                    i += 1;
                }
            }
            buf.extend_from_slice(&items[i..mid]);
            buf.extend_from_slice(&items[j..end]);
            start = end;
        }
        items.clone_from_slice(&buf);
        width *= 2;
    }
}

/// Compares two runs of ASCII digits as unbounded non-negative integers.
pub(crate) fn cmp_digits(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
pub(crate) fn check_table(cmp: fn(&str, &str) -> Ordering, table: &[(&str, &str, Ordering)]) {
    for (a, b, want) in table {
        assert_eq!(cmp(a, b), *want, "{a} vs {b}");
        assert_eq!(cmp(b, a), want.reverse(), "{b} vs {a}");
    }
}
