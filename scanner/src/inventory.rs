//! The inventory of an image: its operating system and every package found in it.
//! This is the contract between the image analyzers and the vulnerability matcher.

use serde::{Deserialize, Serialize};

/// Package ecosystems, spelled as OSV spells them (`affected[].package.ecosystem`,
/// without the release suffix that OS ecosystems carry, e.g. `Debian:12`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Ecosystem {
    Debian,
    Ubuntu,
    Alpine,
    #[serde(rename = "Red Hat")]
    RedHat,
    #[serde(rename = "Rocky Linux")]
    RockyLinux,
    AlmaLinux,
    #[serde(rename = "Amazon Linux")]
    AmazonLinux,
    SUSE,
    #[serde(rename = "openSUSE")]
    OpenSuse,
    PyPI,
    #[serde(rename = "npm")]
    Npm,
    Maven,
    Go,
    #[serde(rename = "crates.io")]
    CratesIo,
    Packagist,
    RubyGems,
    NuGet,
}

impl Ecosystem {
    /// The OSV spelling of the ecosystem name.
    pub fn as_str(self) -> &'static str {
        match self {
            Ecosystem::Debian => "Debian",
            Ecosystem::Ubuntu => "Ubuntu",
            Ecosystem::Alpine => "Alpine",
            Ecosystem::RedHat => "Red Hat",
            Ecosystem::RockyLinux => "Rocky Linux",
            Ecosystem::AlmaLinux => "AlmaLinux",
            Ecosystem::AmazonLinux => "Amazon Linux",
            Ecosystem::SUSE => "SUSE",
            Ecosystem::OpenSuse => "openSUSE",
            Ecosystem::PyPI => "PyPI",
            Ecosystem::Npm => "npm",
            Ecosystem::Maven => "Maven",
            Ecosystem::Go => "Go",
            Ecosystem::CratesIo => "crates.io",
            Ecosystem::Packagist => "Packagist",
            Ecosystem::RubyGems => "RubyGems",
            Ecosystem::NuGet => "NuGet",
        }
    }

    /// Whether packages of this ecosystem are operating-system packages
    /// (system vulnerabilities) rather than application packages.
    pub fn is_os(self) -> bool {
        matches!(
            self,
            Ecosystem::Debian
                | Ecosystem::Ubuntu
                | Ecosystem::Alpine
                | Ecosystem::RedHat
                | Ecosystem::RockyLinux
                | Ecosystem::AlmaLinux
                | Ecosystem::AmazonLinux
                | Ecosystem::SUSE
                | Ecosystem::OpenSuse
        )
    }
}

impl std::fmt::Display for Ecosystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The operating system an image is built on, from `/etc/os-release` or its fallbacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsInfo {
    /// Lower-case distribution id as in os-release `ID` (`debian`, `ubuntu`, `alpine`, `rhel`, ...).
    pub family: String,
    /// Release as the distribution numbers it (`12`, `22.04`, `3.10.4`).
    pub version: String,
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    pub ecosystem: Ecosystem,
    /// Name as the ecosystem's advisories name it (PEP 503-normalized for PyPI,
    /// `groupId:artifactId` for Maven, module path for Go).
    pub name: String,
    pub version: String,
    /// Package URL (https://github.com/package-url/purl-spec).
    pub purl: String,
    /// Source package name (dpkg `Source:`, apk origin, rpm source rpm name), when it differs
    /// or is known; distro advisories name source packages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_name: Option<String>,
    /// Source package version, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
    /// Who built an rpm package: its `Vendor`, else its `Packager`, empty when the header
    /// names neither. `None` where the source does not say (other formats, SBOMs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// The module stream an rpm package was installed from (`nodejs:18`, the name and
    /// stream of its `MODULARITYLABEL`; el8 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// dpkg's `Status` when the package is on disk but not fully installed (`install ok
    /// unpacked`, `install ok half-configured`, `deinstall ok installed`, ...); absent for
    /// packages in the normal installed state and for other formats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_state: Option<String>,
    /// The OS package (dpkg) whose file list holds this application package's record (e.g.
    /// `node-lodash` for `usr/share/nodejs/lodash/package.json`). Such a package is the
    /// distribution's build: it is rated by the distribution's advisories for that OS
    /// package, not by the application ecosystem's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_package: Option<String>,
    /// Digest of the layer the package's record was found in (absent for `dir:` and SBOM inputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// Path of the file the package was found in, inside the image filesystem.
    pub path: String,
}

/// Everything found in one image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// What was scanned, as the user named it.
    pub target: String,
    /// Manifest digest of the image, when it came from a registry or an image layout/archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub os: Option<OsInfo>,
    pub packages: Vec<Package>,
}
