//! The fix plan, decided without I/O: which installed packages to upgrade to which
//! versions of the repositories' indexes, and which vulnerabilities cannot be fixed and
//! why.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::control::{relations, satisfies, Relation, Stanza};
use crate::finding::{Finding, Severity};
use crate::inventory::Ecosystem;
use crate::vulndb::version::VersionScheme;

/// Rounds of dependency closure before a plan is given up (each adds at least one package).
const MAX_CLOSURE_ROUNDS: usize = 64;

/// The package manager whose database an image's system packages are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageManager {
    /// Debian and Ubuntu: `/var/lib/dpkg/status`, apt repositories.
    Dpkg,
    /// Alpine: `/lib/apk/db/installed`, apk repositories.
    Apk,
}

impl PackageManager {
    /// How the manager orders versions.
    pub fn scheme(self) -> VersionScheme {
        match self {
            PackageManager::Dpkg => VersionScheme::Dpkg,
            PackageManager::Apk => VersionScheme::Apk,
        }
    }

    fn manages(self, ecosystem: Ecosystem) -> bool {
        match self {
            PackageManager::Dpkg => matches!(ecosystem, Ecosystem::Debian | Ecosystem::Ubuntu),
            PackageManager::Apk => ecosystem == Ecosystem::Alpine,
        }
    }

    fn compare(self, a: &str, b: &str) -> Ordering {
        self.scheme().compare(a, b)
    }
}

impl std::fmt::Display for PackageManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PackageManager::Dpkg => "dpkg",
            PackageManager::Apk => "apk",
        })
    }
}

/// One package a repository's index offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub source: String,
    pub source_version: String,
    /// The file's path in the repository.
    pub filename: String,
    /// The index's digest of the file: apt's SHA256 (hex) of the `.deb`; apk's `Q1` SHA-1
    /// (base64) of the `.apk`'s control segment.
    pub checksum: String,
    pub size: u64,
    /// What it needs installed (`Pre-Depends` then `Depends`; apk's `D:`): groups of
    /// alternatives.
    pub depends: Vec<Vec<Relation>>,
    /// Index of the repository in the list the plan was made from.
    pub repository: usize,
}

/// A package as the image's package database records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledPackage {
    pub name: String,
    pub architecture: String,
    pub version: String,
    pub source: String,
    pub source_version: String,
    /// Virtual packages it provides.
    pub provides: Vec<String>,
}

impl InstalledPackage {
    /// The installed packages of a status file (entries not installed or unpacked, such as
    /// `deinstall ok config-files`, are left out).
    pub fn from_status(stanzas: &[Stanza]) -> Vec<InstalledPackage> {
        stanzas
            .iter()
            .filter(|s| {
                s.get("Status").is_some_and(|st| {
                    st.ends_with(" installed") || st.ends_with(" unpacked") || st.contains("half")
                })
            })
            .filter_map(|s| {
                let name = s.get("Package")?.to_string();
                let version = s.get("Version")?.to_string();
                let (source, source_version) = super::apt::source_of(s, &name, &version);
                Some(InstalledPackage {
                    architecture: s.get("Architecture").unwrap_or("").to_string(),
                    provides: relations(s.get("Provides").unwrap_or(""))
                        .into_iter()
                        .flatten()
                        .map(|r| r.name)
                        .collect(),
                    name,
                    version,
                    source,
                    source_version,
                })
            })
            .collect()
    }
}

/// Which findings to fix.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Ids (or aliases) to fix; empty: every fixable system vulnerability.
    pub ids: Vec<String>,
    /// Findings below this severity are left alone (not reported unfixable either).
    pub min_severity: Option<Severity>,
}

/// One package upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Upgrade {
    pub package: String,
    pub from: String,
    pub to: String,
    /// The ids this upgrade fixes; empty for an upgrade a fixed package depends on.
    pub fixes: Vec<String>,
    #[serde(skip)]
    pub candidate: Candidate,
}

/// A vulnerability the plan does not fix, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unfixable {
    pub id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub package: String,
    pub reason: String,
}

/// What to do to the image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub upgrades: Vec<Upgrade>,
    pub unfixable: Vec<Unfixable>,
}

impl Plan {
    /// Every id the plan fixes.
    pub fn fixed_ids(&self) -> BTreeSet<String> {
        self.upgrades
            .iter()
            .flat_map(|u| u.fixes.iter().cloned())
            .collect()
    }
}

/// Plans the fix of `findings` (the full, unfiltered matches of the image) for the
/// packages of `installed` (in `manager`'s database), from the repositories' `candidates`.
pub fn plan(
    manager: PackageManager,
    findings: &[Finding],
    selection: &Selection,
    installed: &[InstalledPackage],
    candidates: &[Candidate],
) -> Plan {
    let mut out = Plan::default();
    let wanted = |f: &Finding| {
        (selection.ids.is_empty() || f.ids().any(|id| selection.ids.iter().any(|w| w == id)))
            && selection.min_severity.is_none_or(|min| f.severity >= min)
    };
    for id in &selection.ids {
        if !findings.iter().any(|f| f.ids().any(|i| i == id)) {
            out.unfixable.push(Unfixable {
                id: id.clone(),
                package: String::new(),
                reason: "the image is not affected by it (no finding has this id or alias)".into(),
            });
        }
    }
    // Source package → (the highest fixed version asked for, the ids).
    let mut by_source: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for f in findings.iter().filter(|f| wanted(f)) {
        let unfixable = |reason: String| Unfixable {
            id: f.id.clone(),
            package: f.package.name.clone(),
            reason,
        };
        match f.package.ecosystem {
            e if manager.manages(e) => {}
            e if e.is_os() => {
                let reason = match e {
                    Ecosystem::Debian | Ecosystem::Ubuntu | Ecosystem::Alpine => {
                        format!("{e} packages are not in the image's {manager} database")
                    }
                    _ => "rpm fixing is not supported yet".into(),
                };
                out.unfixable.push(unfixable(reason));
                continue;
            }
            // Application packages are fixed by rebuilding the application, not here.
            _ => {
                if !selection.ids.is_empty() {
                    out.unfixable.push(unfixable(format!(
                        "{} packages are not system packages; rebuild the application",
                        f.package.ecosystem
                    )));
                }
                continue;
            }
        }
        let Some(fixed) = f.fixed_version.clone() else {
            out.unfixable
                .push(unfixable("no fixed version is published".into()));
            continue;
        };
        let source = f
            .package
            .source_name
            .clone()
            .unwrap_or_else(|| f.package.name.clone());
        let entry = by_source
            .entry(source)
            .or_insert_with(|| (fixed.clone(), BTreeSet::new()));
        if manager.compare(&fixed, &entry.0) == Ordering::Greater {
            entry.0 = fixed;
        }
        entry.1.insert(f.id.clone());
    }
    let mut chosen: BTreeMap<String, Upgrade> = BTreeMap::new();
    for (source, (fixed, ids)) in by_source {
        match plan_source(manager, &source, &fixed, installed, candidates) {
            Ok(upgrades) => {
                for mut u in upgrades {
                    if u.fixes.is_empty() && u.candidate.source == source {
                        u.fixes = ids.iter().cloned().collect();
                    }
                    merge(manager, &mut chosen, u);
                }
            }
            Err(reason) => {
                for id in ids {
                    out.unfixable.push(Unfixable {
                        id,
                        package: source.clone(),
                        reason: reason.clone(),
                    });
                }
            }
        }
    }
    out.upgrades = chosen.into_values().collect();
    out.unfixable
        .sort_by(|a, b| a.id.cmp(&b.id).then(a.package.cmp(&b.package)));
    out.unfixable.dedup();
    out
}

/// Keeps one upgrade per package: the higher version, with the fixes of both.
fn merge(manager: PackageManager, chosen: &mut BTreeMap<String, Upgrade>, u: Upgrade) {
    match chosen.get_mut(&u.package) {
        Some(existing) => {
            let mut fixes: BTreeSet<String> = existing.fixes.drain(..).collect();
            fixes.extend(u.fixes.iter().cloned());
            if manager.compare(&u.to, &existing.to) == Ordering::Greater {
                *existing = u;
            }
            existing.fixes = fixes.into_iter().collect();
        }
        None => {
            chosen.insert(u.package.clone(), u);
        }
    }
}

/// The upgrades that bring every installed binary of `source` to at least `fixed`, with
/// the upgrades their dependencies need; or why that cannot be done.
fn plan_source(
    manager: PackageManager,
    source: &str,
    fixed: &str,
    installed: &[InstalledPackage],
    candidates: &[Candidate],
) -> Result<Vec<Upgrade>, String> {
    let binaries: Vec<&InstalledPackage> =
        installed.iter().filter(|p| p.source == source).collect();
    if binaries.is_empty() {
        return Err(format!("no installed package is built from {source}"));
    }
    let mut upgrades: BTreeMap<String, Upgrade> = BTreeMap::new();
    for b in &binaries {
        let best = lowest(manager, candidates, |c| {
            c.name == b.name
                && arch_fits(&c.architecture, &b.architecture)
                && c.source == source
                && manager.compare(&c.source_version, fixed) != Ordering::Less
                && manager.compare(&c.version, &b.version) == Ordering::Greater
        });
        let Some(c) = best else {
            return Err(format!(
                "no package source offers {} built from {source} {fixed} or later",
                b.name
            ));
        };
        upgrades.insert(b.name.clone(), upgrade(b, c));
    }
    // Close over the dependencies of the new versions.
    for _ in 0..MAX_CLOSURE_ROUNDS {
        let mut added = false;
        let current: Vec<Upgrade> = upgrades.values().cloned().collect();
        for u in &current {
            for group in &u.candidate.depends {
                if group
                    .iter()
                    .any(|r| satisfied(manager, r, installed, &upgrades))
                {
                    continue;
                }
                // An installed package that is too old: upgrade it to the lowest version
                // that satisfies the relation.
                let next = group.iter().find_map(|r| {
                    let have = installed.iter().find(|p| p.name == r.name)?;
                    let c = lowest(manager, candidates, |c| {
                        c.name == r.name
                            && arch_fits(&c.architecture, &have.architecture)
                            && r.constraint.as_ref().is_none_or(|(op, v)| {
                                satisfies(manager.scheme(), &c.version, op, v)
                            })
                            && manager.compare(&c.version, &have.version) == Ordering::Greater
                    })?;
                    Some(upgrade(have, c))
                });
                match next {
                    Some(dep) => {
                        upgrades.insert(dep.package.clone(), dep);
                        added = true;
                    }
                    None => {
                        let names: Vec<String> = group.iter().map(describe).collect();
                        return Err(format!(
                            "{} {} needs {}, which the image does not have and the plan \
                             cannot add without installing a new package",
                            u.package,
                            u.to,
                            names.join(" | ")
                        ));
                    }
                }
            }
        }
        if !added {
            return Ok(upgrades.into_values().collect());
        }
    }
    Err(format!(
        "the dependencies of {source} need more than {MAX_CLOSURE_ROUNDS} rounds of upgrades"
    ))
}

fn upgrade(have: &InstalledPackage, c: &Candidate) -> Upgrade {
    Upgrade {
        package: have.name.clone(),
        from: have.version.clone(),
        to: c.version.clone(),
        fixes: Vec::new(),
        candidate: c.clone(),
    }
}

fn describe(r: &Relation) -> String {
    match &r.constraint {
        Some((op, v)) => format!("{} ({op} {v})", r.name),
        None => r.name.clone(),
    }
}

fn arch_fits(candidate: &str, installed: &str) -> bool {
    let any = |a: &str| a == "all" || a == "noarch";
    candidate == installed || any(candidate) || any(installed)
}

fn lowest(
    manager: PackageManager,
    candidates: &[Candidate],
    pred: impl Fn(&Candidate) -> bool,
) -> Option<&Candidate> {
    candidates
        .iter()
        .filter(|c| pred(c))
        .min_by(|a, b| manager.compare(&a.version, &b.version))
}

/// Whether `r` holds after the plan: by the planned version of the package, else the
/// installed one, else a package that provides it (unversioned relations only).
fn satisfied(
    manager: PackageManager,
    r: &Relation,
    installed: &[InstalledPackage],
    upgrades: &BTreeMap<String, Upgrade>,
) -> bool {
    let version = upgrades.get(&r.name).map(|u| u.to.as_str()).or_else(|| {
        installed
            .iter()
            .find(|p| p.name == r.name)
            .map(|p| p.version.as_str())
    });
    match (version, &r.constraint) {
        (Some(_), None) => true,
        (Some(v), Some((op, c))) => satisfies(manager.scheme(), v, op, c),
        (None, None) => installed.iter().any(|p| p.provides.contains(&r.name)),
        (None, Some(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::{FindingClass, FindingPackage};

    fn finding(id: &str, pkg: &str, source: &str, fixed: Option<&str>) -> Finding {
        Finding {
            id: id.into(),
            aliases: vec![],
            severity: Severity::High,
            score: None,
            vector: None,
            severity_source: None,
            package: FindingPackage {
                ecosystem: Ecosystem::Debian,
                name: pkg.into(),
                version: "2.5.0-1+deb12u2".into(),
                purl: String::new(),
                source_name: Some(source.into()),
                layer: None,
                path: String::new(),
            },
            fixed_version: fixed.map(str::to_string),
            title: String::new(),
            link: None,
            class: FindingClass::Os,
            related: vec![],
        }
    }

    fn installed(name: &str, version: &str, source: &str) -> InstalledPackage {
        InstalledPackage {
            name: name.into(),
            architecture: "amd64".into(),
            version: version.into(),
            source: source.into(),
            source_version: version.into(),
            provides: vec![],
        }
    }

    fn candidate(name: &str, version: &str, source: &str, depends: &str) -> Candidate {
        Candidate {
            name: name.into(),
            version: version.into(),
            architecture: "amd64".into(),
            source: source.into(),
            source_version: version.into(),
            filename: format!("pool/{name}_{version}.deb"),
            checksum: String::new(),
            size: 1,
            depends: relations(depends),
            repository: 0,
        }
    }

    fn dpkg_plan(
        findings: &[Finding],
        selection: &Selection,
        installed: &[InstalledPackage],
        candidates: &[Candidate],
    ) -> Plan {
        plan(
            PackageManager::Dpkg,
            findings,
            selection,
            installed,
            candidates,
        )
    }

    fn image() -> Vec<InstalledPackage> {
        vec![
            installed("libc6", "2.36-9", "glibc"),
            installed("libexpat1", "2.5.0-1+deb12u2", "expat"),
            installed("expat", "2.5.0-1+deb12u2", "expat"),
        ]
    }

    #[test]
    fn every_binary_of_the_source_goes_to_the_lowest_fixed_version() {
        let findings = [finding(
            "CVE-1",
            "libexpat1",
            "expat",
            Some("2.5.0-1+deb12u3"),
        )];
        let candidates = [
            candidate("libexpat1", "2.5.0-1+deb12u5", "expat", "libc6 (>= 2.36)"),
            candidate("libexpat1", "2.5.0-1+deb12u3", "expat", "libc6 (>= 2.36)"),
            candidate(
                "expat",
                "2.5.0-1+deb12u3",
                "expat",
                "libexpat1 (>= 2.5.0), libc6",
            ),
        ];
        let plan = dpkg_plan(&findings, &Selection::default(), &image(), &candidates);
        let got: Vec<(&str, &str)> = plan
            .upgrades
            .iter()
            .map(|u| (u.package.as_str(), u.to.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("expat", "2.5.0-1+deb12u3"),
                ("libexpat1", "2.5.0-1+deb12u3")
            ]
        );
        assert!(plan.upgrades.iter().all(|u| u.fixes == ["CVE-1"]));
        assert!(plan.unfixable.is_empty());
    }

    #[test]
    fn a_fix_that_needs_a_new_package_is_unfixable_with_its_reason() {
        let findings = [finding(
            "CVE-1",
            "libexpat1",
            "expat",
            Some("2.5.0-1+deb12u3"),
        )];
        let candidates = [candidate(
            "libexpat1",
            "2.5.0-1+deb12u3",
            "expat",
            "libnew1",
        )];
        let only_lib = vec![installed("libexpat1", "2.5.0-1+deb12u2", "expat")];
        let plan = dpkg_plan(&findings, &Selection::default(), &only_lib, &candidates);
        assert!(plan.upgrades.is_empty());
        assert_eq!(plan.unfixable.len(), 1);
        assert!(
            plan.unfixable[0].reason.contains("needs libnew1"),
            "{:?}",
            plan.unfixable
        );
    }

    #[test]
    fn an_installed_dependency_too_old_is_upgraded_too() {
        let findings = [finding(
            "CVE-1",
            "libexpat1",
            "expat",
            Some("2.5.0-1+deb12u3"),
        )];
        let candidates = [
            candidate("libexpat1", "2.5.0-1+deb12u3", "expat", "libc6 (>= 2.37)"),
            candidate("libc6", "2.37-1", "glibc", ""),
        ];
        let only_lib = vec![
            installed("libc6", "2.36-9", "glibc"),
            installed("libexpat1", "2.5.0-1+deb12u2", "expat"),
        ];
        let plan = dpkg_plan(&findings, &Selection::default(), &only_lib, &candidates);
        let libc = plan.upgrades.iter().find(|u| u.package == "libc6").unwrap();
        assert_eq!((libc.to.as_str(), libc.fixes.len()), ("2.37-1", 0));
    }

    #[test]
    fn missing_versions_and_unknown_ids_are_reported() {
        let findings = [finding("CVE-2", "libexpat1", "expat", None)];
        let selection = Selection {
            ids: vec!["CVE-2".into(), "CVE-9".into()],
            min_severity: None,
        };
        let plan = dpkg_plan(&findings, &selection, &image(), &[]);
        let reasons: Vec<(&str, &str)> = plan
            .unfixable
            .iter()
            .map(|u| (u.id.as_str(), u.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 2);
        assert!(reasons[0].1.contains("no fixed version"));
        assert!(reasons[1].1.contains("not affected"));
    }

    #[test]
    fn no_candidate_at_the_fixed_version_is_unfixable() {
        let findings = [finding("CVE-1", "libexpat1", "expat", Some("2.6.0-1"))];
        let candidates = [candidate("libexpat1", "2.5.0-1+deb12u5", "expat", "")];
        let plan = dpkg_plan(&findings, &Selection::default(), &image(), &candidates);
        assert!(plan.upgrades.is_empty());
        assert!(plan.unfixable[0].reason.contains("2.6.0-1 or later"));
    }
}
