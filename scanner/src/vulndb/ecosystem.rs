//! How advisories and installed packages are keyed: OSV ecosystem strings with
//! their release suffix (`Debian:9`, `Alpine:v3.10`, `Ubuntu:22.04`) and
//! package names normalized where the ecosystem says names are equivalent.

use crate::inventory::{Ecosystem, OsInfo};

/// Every ecosystem the scanner knows, for parsing OSV spellings.
pub const ALL: [Ecosystem; 17] = [
    Ecosystem::Debian,
    Ecosystem::Ubuntu,
    Ecosystem::Alpine,
    Ecosystem::RedHat,
    Ecosystem::RockyLinux,
    Ecosystem::AlmaLinux,
    Ecosystem::AmazonLinux,
    Ecosystem::SUSE,
    Ecosystem::OpenSuse,
    Ecosystem::PyPI,
    Ecosystem::Npm,
    Ecosystem::Maven,
    Ecosystem::Go,
    Ecosystem::CratesIo,
    Ecosystem::Packagist,
    Ecosystem::RubyGems,
    Ecosystem::NuGet,
];

/// Splits an OSV ecosystem string (`Debian:9`, `Ubuntu:22.04:LTS`, `PyPI`) into
/// the ecosystem and the normalized key the index files it under.
/// Returns `None` for ecosystems the scanner has no packages for.
pub fn parse_osv_ecosystem(s: &str) -> Option<(Ecosystem, String)> {
    let (base, release) = match s.split_once(':') {
        Some((b, r)) => (b, Some(r)),
        None => (s, None),
    };
    let ecosystem = ALL.into_iter().find(|e| e.as_str() == base)?;
    let key = match (ecosystem, release) {
        (_, None) => base.to_string(),
        // osv.dev spells Ubuntu releases `Ubuntu:22.04:LTS`; the LTS mark is not part of the release.
        (Ecosystem::Ubuntu, Some(r)) => format!("Ubuntu:{}", r.strip_suffix(":LTS").unwrap_or(r)),
        (_, Some(r)) => format!("{base}:{r}"),
    };
    Some((ecosystem, key))
}

/// The release-specific ecosystem key OS packages of `os` are matched under, e.g.
/// Debian `9.13` → `Debian:9`, Ubuntu `22.04` → `Ubuntu:22.04`, Alpine `3.10.4` → `Alpine:v3.10`.
pub fn os_ecosystem_key(ecosystem: Ecosystem, os: Option<&OsInfo>) -> Option<String> {
    let version = os.map(|o| o.version.trim()).unwrap_or("");
    let mut parts = version.split('.');
    // Only the leading digits count: Alpine edge says `3.19_alpha20230329`.
    let digits = |s: &str| -> String { s.chars().take_while(char::is_ascii_digit).collect() };
    let major = parts.next().map(digits).filter(|m| !m.is_empty())?;
    let minor = parts.next().map(digits).filter(|m| !m.is_empty());
    Some(match ecosystem {
        Ecosystem::Debian => format!("Debian:{major}"),
        Ecosystem::Ubuntu => format!("Ubuntu:{major}.{}", minor.as_deref().unwrap_or("04")),
        Ecosystem::Alpine => format!("Alpine:v{major}.{}", minor?),
        Ecosystem::RockyLinux | Ecosystem::AlmaLinux => format!("{}:{major}", ecosystem.as_str()),
        Ecosystem::AmazonLinux => format!("Amazon Linux:{major}"),
        _ => format!("{}:{version}", ecosystem.as_str()),
    })
}

/// The key an application ecosystem's packages are matched under.
pub fn app_ecosystem_key(ecosystem: Ecosystem) -> String {
    ecosystem.as_str().to_string()
}

/// Normalizes a package name the way the ecosystem compares names
/// (PEP 503 for PyPI; others are case-sensitive and kept).
pub fn normalize_name(ecosystem: Ecosystem, name: &str) -> String {
    match ecosystem {
        Ecosystem::PyPI => {
            let mut out = String::with_capacity(name.len());
            let mut in_sep = false;
            for c in name.trim().chars() {
                if matches!(c, '-' | '_' | '.') {
                    if !in_sep {
                        out.push('-');
                    }
                    in_sep = true;
                } else {
                    out.push(c.to_ascii_lowercase());
                    in_sep = false;
                }
            }
            out
        }
        // NuGet and Packagist names are case-insensitive.
        Ecosystem::NuGet | Ecosystem::Packagist => name.trim().to_ascii_lowercase(),
        _ => name.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_specific_ecosystems() {
        assert_eq!(
            parse_osv_ecosystem("Debian:9"),
            Some((Ecosystem::Debian, "Debian:9".into()))
        );
        assert_eq!(
            parse_osv_ecosystem("Ubuntu:22.04:LTS"),
            Some((Ecosystem::Ubuntu, "Ubuntu:22.04".into()))
        );
        assert_eq!(
            parse_osv_ecosystem("Alpine:v3.10"),
            Some((Ecosystem::Alpine, "Alpine:v3.10".into()))
        );
        assert_eq!(
            parse_osv_ecosystem("crates.io"),
            Some((Ecosystem::CratesIo, "crates.io".into()))
        );
        assert_eq!(parse_osv_ecosystem("Hex"), None);
    }

    #[test]
    fn derives_os_keys_from_os_release() {
        let os = |v: &str| OsInfo {
            family: "x".into(),
            version: v.into(),
        };
        assert_eq!(
            os_ecosystem_key(Ecosystem::Debian, Some(&os("9.13"))).as_deref(),
            Some("Debian:9")
        );
        assert_eq!(
            os_ecosystem_key(Ecosystem::Debian, Some(&os("9"))).as_deref(),
            Some("Debian:9")
        );
        assert_eq!(
            os_ecosystem_key(Ecosystem::Alpine, Some(&os("3.10.4"))).as_deref(),
            Some("Alpine:v3.10")
        );
        assert_eq!(
            os_ecosystem_key(Ecosystem::Ubuntu, Some(&os("22.04"))).as_deref(),
            Some("Ubuntu:22.04")
        );
        assert_eq!(os_ecosystem_key(Ecosystem::Debian, None), None);
        assert_eq!(
            os_ecosystem_key(Ecosystem::Alpine, Some(&os("3.19_alpha20230329"))).as_deref(),
            Some("Alpine:v3.19")
        );
        assert_eq!(
            os_ecosystem_key(Ecosystem::Debian, Some(&os("bookworm/sid"))),
            None
        );
    }

    #[test]
    fn normalizes_pypi_names() {
        assert_eq!(normalize_name(Ecosystem::PyPI, "PyYAML"), "pyyaml");
        assert_eq!(
            normalize_name(Ecosystem::PyPI, "Zope.Interface__x"),
            "zope-interface-x"
        );
        assert_eq!(normalize_name(Ecosystem::Npm, "Lodash"), "Lodash");
    }
}
