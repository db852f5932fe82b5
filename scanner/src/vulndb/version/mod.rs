//! Version ordering, one module per ecosystem's rules.
//!
//! Every comparator is total and never fails: a version that does not follow its
//! ecosystem's syntax is still ordered (by the same tokenizer), so a malformed
//! advisory or package version can at worst produce a wrong answer for that one
//! pair, never an error for the whole scan.

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

    /// Orders two versions under this scheme.
    pub fn compare(self, a: &str, b: &str) -> Ordering {
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
