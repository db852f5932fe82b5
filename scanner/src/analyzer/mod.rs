//! Analyzers: one module per package format. Each one names the paths it wants and a size
//! cap, so a layer is read once and only the files some analyzer wants are opened.

pub mod apk;
pub mod binary;
pub mod cargo;
pub mod composer;
pub mod dotnet;
pub mod dpkg;
pub mod gem;
pub mod java;
pub mod node;
pub mod os;
pub mod python;
pub mod rpm;

use crate::inventory::{Ecosystem, Inventory, OsInfo, Package};

/// What an analyzer learned from one file: a fact about the OS, a package, or a check's
/// finding.
// Packages are most facts by far: boxing them would add an allocation to each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// A fact about the operating system; the one with the lowest `rank` wins.
    Os(OsFact),
    /// An installed package. OS packages get their distro-specific ecosystem and purl
    /// qualifiers later, in [`finalize`], once the operating system of the image is known.
    Package(Package),
    /// A baseline risk, exposed secret or malicious sample found in the file
    /// (see [`crate::checks`]).
    Check(Box<crate::finding::CheckFinding>),
    /// Files an OS package installed that hold application package records (from dpkg's
    /// `var/lib/dpkg/info/<package>.list`), so that those packages are known as the OS
    /// package's.
    Owned(OwnedFiles),
}

/// Application package records (paths without a leading `/`) that an OS package installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedFiles {
    pub owner: String,
    pub paths: Vec<String>,
}

/// One file's statement about the operating system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsFact {
    pub family: String,
    pub version: String,
    /// Lower is more authoritative (`etc/os-release` is 0).
    pub rank: u8,
}

/// Facts and warnings collected from one file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Output {
    pub facts: Vec<Fact>,
    /// At most [`MAX_WARNINGS`] warnings of at most [`MAX_WARNING_LEN`] bytes each, then
    /// one line counting the rest.
    pub warnings: Vec<String>,
    /// Warnings beyond [`MAX_WARNINGS`], counted in the last line of `warnings`.
    omitted_warnings: u64,
    /// Bytes of facts this output may hold (what is left of the scan's retained-bytes
    /// budget); `None`: no bound.
    limit: Option<u64>,
    /// [`fact_bytes`] of the facts added through [`Output::package`] and [`Output::fact`].
    kept: u64,
    /// A fact was dropped because it would have passed `limit`.
    over_limit: bool,
}

/// About how many bytes a fact takes in memory (strings and a fixed cost).
pub fn fact_bytes(fact: &Fact) -> u64 {
    let n = match fact {
        Fact::Package(p) => {
            p.name.len()
                + p.version.len()
                + p.purl.len()
                + p.path.len()
                + p.source_name.as_ref().map_or(0, String::len)
                + p.source_version.as_ref().map_or(0, String::len)
                + p.vendor.as_ref().map_or(0, String::len)
                + p.module.as_ref().map_or(0, String::len)
                + p.install_state.as_ref().map_or(0, String::len)
                + p.os_package.as_ref().map_or(0, String::len)
                + 256
        }
        Fact::Os(o) => o.family.len() + 128,
        Fact::Owned(o) => o.owner.len() + o.paths.iter().map(|p| p.len() + 24).sum::<usize>() + 64,
        Fact::Check(c) => {
            c.id.len()
                + c.title.len()
                + c.path.as_ref().map_or(0, String::len)
                + c.config_key.as_ref().map_or(0, String::len)
                + 512
        }
    };
    n as u64
}

impl Output {
    /// An output that holds at most `limit` bytes of facts: analyzers stop growing it
    /// there (a file of millions of packages is not parsed into memory first and
    /// measured after), and [`Output::over_limit`] tells the walk to fail the scan.
    pub fn with_limit(limit: u64) -> Self {
        Output {
            limit: Some(limit),
            ..Output::default()
        }
    }

    /// Whether a fact was dropped for the byte limit.
    pub fn over_limit(&self) -> bool {
        self.over_limit
    }

    /// About how many bytes these results take in memory (strings and a fixed cost per
    /// item), for the per-scan retained-bytes budget.
    pub fn approx_bytes(&self) -> u64 {
        let facts: u64 = self.facts.iter().map(fact_bytes).sum();
        let warnings: usize = self.warnings.iter().map(|w| w.len() + 24).sum();
        facts + warnings as u64
    }

    /// Adds `fact` unless it would pass the limit (then it is dropped and remembered).
    pub fn fact(&mut self, fact: Fact) {
        if self.over_limit {
            return;
        }
        let bytes = fact_bytes(&fact);
        if self
            .limit
            .is_some_and(|limit| self.kept.saturating_add(bytes) > limit)
        {
            self.over_limit = true;
            return;
        }
        self.kept += bytes;
        self.facts.push(fact);
    }
}

/// Most warnings kept per file (and, times ten, per scan); the rest are counted.
pub const MAX_WARNINGS: usize = 20;
/// Longest warning kept, in bytes; longer ones are cut.
pub const MAX_WARNING_LEN: usize = 300;

/// Cuts a warning to [`MAX_WARNING_LEN`] bytes (at a character boundary).
pub fn bounded_warning(w: String) -> String {
    if w.len() <= MAX_WARNING_LEN {
        return w;
    }
    let mut end = MAX_WARNING_LEN;
    while !w.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &w[..end])
}

/// Appends `w` to `warnings` keeping at most `max` lines plus one line counting the rest;
/// `omitted` carries the count between calls.
pub fn push_bounded_warning(warnings: &mut Vec<String>, omitted: &mut u64, max: usize, w: String) {
    if warnings.len() < max {
        warnings.push(bounded_warning(w));
        return;
    }
    *omitted += 1;
    let line = format!("{omitted} more warning(s) not shown");
    if *omitted == 1 {
        warnings.push(line);
    } else if let Some(last) = warnings.last_mut() {
        *last = line;
    }
}

/// Names the flag that bounds a scan's warnings in the line counting the rest, once
/// [`push_bounded_warning`] is done with `warnings`.
pub fn name_the_warning_budget(warnings: &mut [String], omitted: u64) {
    if omitted > 0 {
        if let Some(last) = warnings.last_mut() {
            *last = format!("{omitted} more warning(s) not shown (--max-warnings)");
        }
    }
}

impl Output {
    pub fn package(&mut self, p: Package) {
        self.fact(Fact::Package(p));
    }
    pub fn warn(&mut self, w: impl Into<String>) {
        push_bounded_warning(
            &mut self.warnings,
            &mut self.omitted_warnings,
            MAX_WARNINGS,
            w.into(),
        );
    }
}

/// A file the layer walker offers to analyzers.
#[derive(Debug, Clone, Copy)]
pub struct FileMeta<'a> {
    /// Path inside the image, relative, without a leading `/` (`etc/os-release`).
    pub path: &'a str,
    /// Unix mode bits.
    pub mode: u32,
    pub size: u64,
}

/// A package-format or OS-detection analyzer.
pub trait Analyzer: Send + Sync {
    /// Short name used in warnings.
    fn name(&self) -> &'static str;
    /// Whether this analyzer wants to read the file.
    fn wants(&self, file: &FileMeta<'_>) -> bool;
    /// The largest file this analyzer reads; bigger files are skipped with a warning.
    fn size_cap(&self) -> u64 {
        8 << 20
    }
    /// Whether only ELF files are of interest (the walker checks the magic before reading on).
    fn elf_only(&self) -> bool {
        false
    }
    /// Parses the file's content.
    fn analyze(&self, path: &str, data: &[u8], out: &mut Output);
    /// Parses the file's content knowing its metadata (mode bits); what the walkers call.
    /// The default hands the path and content to [`Analyzer::analyze`].
    fn analyze_file(&self, file: &FileMeta<'_>, data: &[u8], out: &mut Output) {
        self.analyze(file.path, data, out)
    }
    /// Whether this analyzer judges a file by its metadata (mode, size) alone; such an
    /// analyzer is given [`Analyzer::analyze_meta`] for regular files and never reads them.
    fn metadata_only(&self) -> bool {
        false
    }
    /// Judges a regular file by its metadata (only called when [`Analyzer::metadata_only`]).
    fn analyze_meta(&self, _file: &FileMeta<'_>, _out: &mut Output) {}
}

/// Every analyzer, in the order their results are reported, with the default budgets.
pub fn default_analyzers() -> Vec<Box<dyn Analyzer>> {
    analyzers_with(&crate::budget::ScanBudgets::default())
}

/// Every analyzer, in the order their results are reported, within `budgets`.
pub fn analyzers_with(budgets: &crate::budget::ScanBudgets) -> Vec<Box<dyn Analyzer>> {
    vec![
        Box::new(os::OsReleaseAnalyzer),
        Box::new(dpkg::DpkgStatusAnalyzer),
        Box::new(dpkg::DpkgFileListAnalyzer),
        Box::new(apk::ApkInstalledAnalyzer),
        Box::new(rpm::RpmSqliteAnalyzer),
        Box::new(rpm::RpmBerkeleyDbAnalyzer),
        Box::new(rpm::RpmNdbAnalyzer),
        Box::new(python::PythonMetadataAnalyzer),
        Box::new(node::NodePackageJsonAnalyzer),
        Box::new(java::JavaArchiveAnalyzer {
            max_entries: budgets.max_zip_entries,
        }),
        Box::new(binary::ExecutableAnalyzer),
        Box::new(cargo::CargoLockAnalyzer),
        Box::new(composer::ComposerInstalledAnalyzer),
        Box::new(gem::GemspecAnalyzer),
        Box::new(dotnet::DotnetDepsAnalyzer),
    ]
}

/// The file name part of a path.
pub(crate) fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Percent-encodes a purl name or version segment (RFC 3986 unreserved characters stay).
pub fn purl_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A package with no layer and no source, as most analyzers build it.
pub(crate) fn package(
    ecosystem: Ecosystem,
    name: impl Into<String>,
    version: impl Into<String>,
    purl: String,
    path: &str,
) -> Package {
    Package {
        ecosystem,
        name: name.into(),
        version: version.into(),
        purl,
        source_name: None,
        source_version: None,
        vendor: None,
        module: None,
        install_state: None,
        os_package: None,
        layer: None,
        path: path.to_string(),
    }
}

/// Marks the application packages whose record file an OS package installed (`owned`:
/// path in the final filesystem → OS package), whichever layers the record and the file
/// list came from.
pub fn mark_os_owned(packages: &mut [Package], owned: &std::collections::HashMap<&str, &str>) {
    if owned.is_empty() {
        return;
    }
    for p in packages.iter_mut().filter(|p| !p.ecosystem.is_os()) {
        if let Some(owner) = owned.get(p.path.as_str()) {
            p.os_package = Some((*owner).to_string());
        }
    }
}

/// The OS chosen from all OS facts of the final filesystem.
pub fn choose_os<'a>(facts: impl IntoIterator<Item = &'a OsFact>) -> Option<OsInfo> {
    facts
        .into_iter()
        .filter(|f| !f.family.is_empty())
        .min_by_key(|f| f.rank)
        .map(|f| OsInfo {
            family: f.family.clone(),
            version: f.version.clone(),
        })
}

/// Gives OS packages their distro ecosystem and the purl `distro=` qualifier, and sorts the
/// packages, once the operating system is known.
pub fn finalize(
    target: String,
    digest: Option<String>,
    os: Option<OsInfo>,
    mut packages: Vec<Package>,
) -> Inventory {
    let os = match os {
        // distroless images have dpkg records but no os-release file.
        None if packages.iter().any(|p| p.purl.starts_with("pkg:deb/")) => Some(OsInfo {
            family: "debian".into(),
            version: String::new(),
        }),
        other => other,
    };
    for p in &mut packages {
        if !p.ecosystem.is_os() {
            continue;
        }
        let Some(os) = &os else { continue };
        if let Some(eco) = os_ecosystem(&os.family, p.ecosystem) {
            p.ecosystem = eco;
        }
        let namespace = match p.ecosystem {
            Ecosystem::Ubuntu => "ubuntu",
            Ecosystem::Debian => "debian",
            Ecosystem::Alpine => "alpine",
            _ => os.family.as_str(),
        };
        // Analyzers write OS purls with a placeholder namespace: `pkg:TYPE/_/...`.
        if let Some(rest) = p.purl.strip_prefix("pkg:deb/_/") {
            p.purl = format!("pkg:deb/{namespace}/{rest}");
        } else if let Some(rest) = p.purl.strip_prefix("pkg:apk/_/") {
            p.purl = format!("pkg:apk/{namespace}/{rest}");
        } else if let Some(rest) = p.purl.strip_prefix("pkg:rpm/_/") {
            p.purl = format!("pkg:rpm/{}/{rest}", rpm_namespace(&os.family));
        }
        if !os.version.is_empty() && !p.purl.contains("distro=") {
            let sep = if p.purl.contains('?') { '&' } else { '?' };
            p.purl = format!("{}{sep}distro={}-{}", p.purl, os.family, os.version);
        }
    }
    // Packages whose OS could not be told keep the placeholder namespace as the type's default.
    for p in &mut packages {
        if let Some(rest) = p.purl.strip_prefix("pkg:deb/_/") {
            p.purl = format!("pkg:deb/debian/{rest}");
        } else if let Some(rest) = p.purl.strip_prefix("pkg:apk/_/") {
            p.purl = format!("pkg:apk/alpine/{rest}");
        } else if let Some(rest) = p.purl.strip_prefix("pkg:rpm/_/") {
            p.purl = format!("pkg:rpm/redhat/{rest}");
        }
    }
    packages.sort_by(|a, b| {
        (a.ecosystem, &a.name, &a.version, &a.path).cmp(&(
            b.ecosystem,
            &b.name,
            &b.version,
            &b.path,
        ))
    });
    packages.dedup_by(|a, b| {
        a.ecosystem == b.ecosystem && a.name == b.name && a.version == b.version && a.path == b.path
    });
    Inventory {
        target,
        digest,
        os,
        packages,
    }
}

/// The OSV ecosystem of an OS package, given the image's os-release `ID`.
pub fn os_ecosystem(family: &str, found_as: Ecosystem) -> Option<Ecosystem> {
    Some(match (family, found_as) {
        ("ubuntu", Ecosystem::Debian) => Ecosystem::Ubuntu,
        (_, Ecosystem::Debian) => Ecosystem::Debian,
        (_, Ecosystem::Alpine) => Ecosystem::Alpine,
        ("rocky", _) => Ecosystem::RockyLinux,
        ("almalinux", _) => Ecosystem::AlmaLinux,
        ("amzn", _) => Ecosystem::AmazonLinux,
        ("sles" | "sled" | "suse" | "sles_sap" | "sle_hpc" | "sle-micro", _) => Ecosystem::SUSE,
        (f, _) if f.starts_with("opensuse") => Ecosystem::OpenSuse,
        // Other rpm distributions (Oracle Linux, Alibaba Cloud Linux, Anolis OS, Fedora) keep
        // the generic rpm ecosystem; which advisories apply is decided by the OS itself.
        _ => return None,
    })
}

fn rpm_namespace(family: &str) -> &str {
    match family {
        "rhel" => "redhat",
        "amzn" => "amazon",
        "ol" => "oracle",
        "alinux" => "alibaba",
        f if f.starts_with("opensuse") || f == "sles" => "suse",
        f => f,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purl_encoding_keeps_unreserved_and_escapes_the_rest() {
        assert_eq!(purl_encode("1.1.0l-1~deb9u6"), "1.1.0l-1~deb9u6");
        assert_eq!(purl_encode("1:2.3+dfsg"), "1%3A2.3%2Bdfsg");
        assert_eq!(purl_encode("@types"), "%40types");
    }

    #[test]
    fn dpkg_packages_on_ubuntu_become_ubuntu_with_distro_qualifier() {
        let p = package(
            Ecosystem::Debian,
            "bash",
            "4.4",
            "pkg:deb/_/bash@4.4?arch=amd64".into(),
            "var/lib/dpkg/status",
        );
        let inv = finalize(
            "t".into(),
            None,
            Some(OsInfo {
                family: "ubuntu".into(),
                version: "18.04".into(),
            }),
            vec![p],
        );
        assert_eq!(inv.packages[0].ecosystem, Ecosystem::Ubuntu);
        assert_eq!(
            inv.packages[0].purl,
            "pkg:deb/ubuntu/bash@4.4?arch=amd64&distro=ubuntu-18.04"
        );
    }
}
