//! How advisories and installed packages are keyed: OSV ecosystem strings with
//! their release suffix (`Debian:9`, `Alpine:v3.10`, `Ubuntu:22.04`) and
//! package names normalized where the ecosystem says names are equivalent.

use std::collections::BTreeMap;

use super::EcosystemStats;
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

/// Where the advisories for the OS packages of an image are filed in a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OsAdvisoryKeys {
    /// Look packages up under these keys: one for most distributions, several for Red Hat
    /// (one per repository: `::baseos`, `::appstream`, ...) and SUSE (product and modules).
    Keys(Vec<String>),
    /// The distribution publishes OSV advisories, but the database has none filed under
    /// this key (e.g. it was built without that ecosystem).
    NotInDatabase(String),
    /// The distribution publishes no advisories in a form the database reads (Amazon Linux,
    /// Oracle Linux, Alibaba Cloud Linux, Anolis OS, Fedora): named for the warning.
    NoSource(String),
    /// The operating system, or its release, is unknown.
    UnknownRelease,
}

/// Whether packages of `ecosystem` are rpm packages.
pub fn is_rpm(ecosystem: Ecosystem) -> bool {
    matches!(
        ecosystem,
        Ecosystem::RedHat
            | Ecosystem::RockyLinux
            | Ecosystem::AlmaLinux
            | Ecosystem::AmazonLinux
            | Ecosystem::SUSE
            | Ecosystem::OpenSuse
    )
}

/// The keys the OS packages (of `ecosystem`) of an image running `os` are matched under,
/// given the ecosystem keys the database has. rpm distributions are told apart by the
/// os-release `ID`: `almalinux` → `AlmaLinux:9`, `rocky` → `Rocky Linux:9`, `rhel` (UBI
/// too) and `centos` → every `Red Hat:enterprise_linux:9::<repository>`, `sles` 15.5 →
/// `SUSE:Linux Enterprise Server 15 SP5` and every `SUSE:Linux Enterprise Module for ... 15
/// SP5`, `opensuse-leap` → `openSUSE:Leap 15.5`, `opensuse-tumbleweed` → `openSUSE:Tumbleweed`.
pub fn os_advisory_keys(
    ecosystem: Ecosystem,
    os: Option<&OsInfo>,
    db_keys: &BTreeMap<String, EcosystemStats>,
) -> OsAdvisoryKeys {
    let Some(os) = os else {
        return OsAdvisoryKeys::UnknownRelease;
    };
    let single = |key: String| {
        if db_keys.contains_key(&key) {
            OsAdvisoryKeys::Keys(vec![key])
        } else {
            OsAdvisoryKeys::NotInDatabase(key)
        }
    };
    if !is_rpm(ecosystem) {
        return match os_ecosystem_key(ecosystem, Some(os)) {
            Some(key) => single(key),
            None => OsAdvisoryKeys::UnknownRelease,
        };
    }
    let version = os.version.trim();
    let major: String = version.chars().take_while(char::is_ascii_digit).collect();
    let family = os.family.as_str();
    let named = |what: &str| {
        if version.is_empty() {
            what.to_string()
        } else {
            format!("{what} {version}")
        }
    };
    // Every key starting with `prefix` (and ending with `suffix`), plus `exact` when present.
    let matching = |exact: Option<&str>, prefix: &str, suffix: &str| -> Vec<String> {
        let mut keys: Vec<String> = db_keys
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| k.ends_with(suffix))
            .map(|(k, _)| k.clone())
            .collect();
        if let Some(e) = exact.filter(|e| db_keys.contains_key(*e)) {
            keys.insert(0, e.to_string());
        }
        keys
    };
    let found = |keys: Vec<String>, wanted: String| {
        if keys.is_empty() {
            OsAdvisoryKeys::NotInDatabase(wanted)
        } else {
            OsAdvisoryKeys::Keys(keys)
        }
    };
    match family {
        "almalinux" | "rocky" | "rhel" | "redhat" | "centos" if major.is_empty() => {
            OsAdvisoryKeys::UnknownRelease
        }
        "almalinux" => single(format!("AlmaLinux:{major}")),
        "rocky" => single(format!("Rocky Linux:{major}")),
        // CentOS Linux was rebuilt from RHEL sources; Red Hat's errata are the closest source.
        "rhel" | "redhat" | "centos" => {
            let prefix = format!("Red Hat:enterprise_linux:{major}::");
            found(
                matching(None, &prefix, ""),
                format!("Red Hat:enterprise_linux:{major}"),
            )
        }
        "sles" | "sled" | "sles_sap" | "sle-micro" | "sle_hpc" if version.is_empty() => {
            OsAdvisoryKeys::UnknownRelease
        }
        "sles" | "sled" | "sles_sap" | "sle_hpc" => {
            let product = match family {
                "sled" => "Linux Enterprise Desktop",
                "sles_sap" => "Linux Enterprise Server for SAP Applications",
                "sle_hpc" => "Linux Enterprise High Performance Computing",
                _ => "Linux Enterprise Server",
            };
            // `15.5` is `15 SP5`; `15` (or `15.0`) is the first release.
            let release = match version.split_once('.') {
                Some((m, sp)) if sp != "0" && !sp.is_empty() => format!("{m} SP{sp}"),
                Some((m, _)) => m.to_string(),
                None => version.to_string(),
            };
            let exact = format!("SUSE:{product} {release}");
            found(
                matching(
                    Some(&exact),
                    "SUSE:Linux Enterprise Module for ",
                    &format!(" {release}"),
                ),
                exact,
            )
        }
        "sle-micro" => single(format!("SUSE:Linux Enterprise Micro {version}")),
        "opensuse-leap" | "opensuse" if !version.is_empty() => {
            single(format!("openSUSE:Leap {version}"))
        }
        "opensuse-leap" | "opensuse" => OsAdvisoryKeys::UnknownRelease,
        "opensuse-tumbleweed" => single("openSUSE:Tumbleweed".to_string()),
        // OSV has no Amazon Linux ecosystem; a database built with such records is used.
        "amzn" => match single(format!("Amazon Linux:{major}")) {
            OsAdvisoryKeys::NotInDatabase(_) => OsAdvisoryKeys::NoSource(named("Amazon Linux")),
            keys => keys,
        },
        "ol" => OsAdvisoryKeys::NoSource(named("Oracle Linux")),
        "alinux" => OsAdvisoryKeys::NoSource(named("Alibaba Cloud Linux")),
        "anolis" => OsAdvisoryKeys::NoSource(named("Anolis OS")),
        "fedora" => OsAdvisoryKeys::NoSource(named("Fedora")),
        other => OsAdvisoryKeys::NoSource(named(other)),
    }
}

/// Whether an rpm package's vendor (its `Vendor`, else `Packager`) is the distribution
/// `family` itself, so that the distribution's advisories apply to it. Packages of other
/// vendors (EPEL's "Fedora Project", a third-party repository, a local build without a
/// vendor) are not matched against the distribution's advisories. For a distribution
/// without a known vendor name, every package counts as the distribution's.
pub fn is_distribution_vendor(family: &str, vendor: &str) -> bool {
    let marks: &[&str] = match family {
        "almalinux" => &["almalinux"],
        // "Rocky Enterprise Software Foundation"
        "rocky" => &["rocky"],
        // "Red Hat, Inc." (RHEL and UBI)
        "rhel" | "redhat" => &["red hat"],
        "centos" => &["centos"],
        "sles" | "sled" | "sles_sap" | "sle_hpc" | "sle-micro" => &["suse"],
        f if f.starts_with("opensuse") => &["suse"],
        "amzn" => &["amazon"],
        "ol" => &["oracle"],
        "alinux" => &["alibaba"],
        "anolis" => &["anolis", "alibaba"],
        "fedora" => &["fedora"],
        _ => return true,
    };
    let vendor = vendor.to_ascii_lowercase();
    marks.iter().any(|m| vendor.contains(m))
}

/// The `name:stream` of an rpm module label (`nodejs:18:8090020231009141924:a75119d5`, the
/// `MODULARITYLABEL` header tag and Red Hat's `rpmmod` purl qualifier); `None` when the
/// label is empty or has no stream.
pub fn module_stream(label: &str) -> Option<String> {
    let mut parts = label.trim().splitn(3, ':');
    let name = parts.next().filter(|n| !n.is_empty())?;
    let stream = parts.next().filter(|s| !s.is_empty())?;
    Some(format!("{name}:{stream}"))
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
    fn rpm_distributions_find_their_keys_or_say_why_not() {
        let db: BTreeMap<String, EcosystemStats> = [
            "AlmaLinux:9",
            "Red Hat:enterprise_linux:9::appstream",
            "Red Hat:enterprise_linux:9::baseos",
            "Red Hat:enterprise_linux:8::baseos",
            "Red Hat:rhel_eus:9.2::baseos",
            "SUSE:Linux Enterprise Server 15 SP5",
            "SUSE:Linux Enterprise Module for Basesystem 15 SP5",
            "SUSE:Linux Enterprise Module for Basesystem 15 SP4",
            "openSUSE:Leap 15.5",
        ]
        .into_iter()
        .map(|k| (k.to_string(), EcosystemStats::default()))
        .collect();
        let keys = |eco: Ecosystem, family: &str, version: &str| {
            let os = OsInfo {
                family: family.into(),
                version: version.into(),
            };
            os_advisory_keys(eco, Some(&os), &db)
        };
        let some = |k: &[&str]| OsAdvisoryKeys::Keys(k.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            keys(Ecosystem::AlmaLinux, "almalinux", "9.4"),
            some(&["AlmaLinux:9"])
        );
        assert_eq!(
            keys(Ecosystem::AlmaLinux, "almalinux", "8.10"),
            OsAdvisoryKeys::NotInDatabase("AlmaLinux:8".into())
        );
        // UBI's os-release says `rhel`: every repository of the main stream, not EUS.
        assert_eq!(
            keys(Ecosystem::RedHat, "rhel", "9.3"),
            some(&[
                "Red Hat:enterprise_linux:9::appstream",
                "Red Hat:enterprise_linux:9::baseos"
            ])
        );
        assert_eq!(
            keys(Ecosystem::SUSE, "sles", "15.5"),
            some(&[
                "SUSE:Linux Enterprise Server 15 SP5",
                "SUSE:Linux Enterprise Module for Basesystem 15 SP5"
            ])
        );
        assert_eq!(
            keys(Ecosystem::OpenSuse, "opensuse-leap", "15.5"),
            some(&["openSUSE:Leap 15.5"])
        );
        assert_eq!(
            keys(Ecosystem::RockyLinux, "rocky", "9.3"),
            OsAdvisoryKeys::NotInDatabase("Rocky Linux:9".into())
        );
        for (family, version, name) in [
            ("alinux", "3", "Alibaba Cloud Linux 3"),
            ("anolis", "8.6", "Anolis OS 8.6"),
            ("ol", "8.9", "Oracle Linux 8.9"),
            ("amzn", "2023", "Amazon Linux 2023"),
        ] {
            assert_eq!(
                keys(Ecosystem::RedHat, family, version),
                OsAdvisoryKeys::NoSource(name.into())
            );
        }
        assert_eq!(
            keys(Ecosystem::RedHat, "rhel", ""),
            OsAdvisoryKeys::UnknownRelease
        );
    }

    #[test]
    fn distribution_vendors_and_module_streams() {
        assert!(is_distribution_vendor("almalinux", "AlmaLinux"));
        assert!(is_distribution_vendor("rhel", "Red Hat, Inc."));
        assert!(is_distribution_vendor(
            "rocky",
            "Rocky Enterprise Software Foundation"
        ));
        assert!(!is_distribution_vendor("almalinux", "Fedora Project"));
        assert!(!is_distribution_vendor("rhel", ""));
        assert_eq!(
            module_stream("nodejs:18:8090020231009141924:a75119d5").as_deref(),
            Some("nodejs:18")
        );
        assert_eq!(module_stream(""), None);
        assert_eq!(module_stream("nodejs"), None);
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
