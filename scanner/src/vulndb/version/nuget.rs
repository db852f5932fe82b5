//! NuGet version ordering: SemVer 2.0 with up to four numeric parts and
//! case-insensitive pre-release labels; build metadata is ignored.

use std::cmp::Ordering;

/// Orders two NuGet versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (a, b) = (super::semver::parse(a), super::semver::parse(b));
    super::semver::cmp_core(&a.core, &b.core)
        .then_with(|| super::semver::cmp_pre(a.pre, b.pre, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn orders_nuget_versions() {
        super::super::check_table(
            compare,
            &[
                ("1.0", "1.0.0.0", Equal),
                ("1.0.0.1", "1.0.0", Greater),
                ("13.0.1", "13.0.2", Less),
                ("1.0.0-Beta", "1.0.0-beta", Equal),
                ("1.0.0-alpha", "1.0.0", Less),
                ("4.7.2", "4.7.10", Less),
                ("1.0.0+meta", "1.0.0", Equal),
            ],
        );
    }
}
