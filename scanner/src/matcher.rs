//! Matching an inventory against the vulnerability database: `Inventory × Db → findings`.

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::finding::{Finding, FindingClass, FindingPackage};
use crate::inventory::{Ecosystem, Inventory, Package};
use crate::vulndb::ecosystem::{
    app_ecosystem_key, is_distribution_vendor, is_rpm, normalize_name, os_advisory_keys,
    OsAdvisoryKeys,
};
use crate::vulndb::version::{self, VersionScheme};
use crate::vulndb::{
    Advisory, AffectedPackage, Db, DbError, RangeEvent, Rating, Severity, VersionRange,
};

/// What matching found, by result class.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Matches {
    /// Vulnerabilities, most severe first.
    pub vulnerabilities: Vec<Finding>,
    /// Installed packages that an OSV `MAL-` record says are malicious.
    pub malicious_packages: Vec<Finding>,
    /// What could not be evaluated: package versions and advisory ranges that are not
    /// versions (too long, too many components), one line each.
    pub warnings: Vec<String>,
}

/// Matches every package of `inventory` against `db`.
pub fn match_inventory(inventory: &Inventory, db: &Db) -> Result<Matches, DbError> {
    let mut matcher = Matcher {
        db,
        advisories: HashMap::new(),
        os_keys: HashMap::new(),
        warned_advisories: std::collections::HashSet::new(),
        warnings: Vec::new(),
    };
    let mut out = Matches::default();
    for pkg in &inventory.packages {
        let (vulns, malicious) = matcher.match_package(inventory, pkg)?;
        out.vulnerabilities.extend(vulns);
        out.malicious_packages.extend(malicious);
    }
    out.warnings = matcher.warnings;
    sort_findings(&mut out.vulnerabilities);
    sort_findings(&mut out.malicious_packages);
    Ok(out)
}

/// Findings of `current` that `previous` did not have (same advisory id or alias on the
/// same package name and version): what to announce after a database update re-match.
pub fn new_findings(previous: &[Finding], current: &[Finding]) -> Vec<Finding> {
    current
        .iter()
        .filter(|f| {
            !previous.iter().any(|p| {
                p.package.name == f.package.name
                    && p.package.version == f.package.version
                    && p.package.ecosystem == f.package.ecosystem
                    && p.ids().any(|id| f.ids().any(|other| other == id))
            })
        })
        .cloned()
        .collect()
}

/// Most severe first, then by package and id, so reports are stable.
pub fn sort_findings(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| b.score.partial_cmp(&a.score).unwrap_or(Ordering::Equal))
            .then_with(|| a.package.name.cmp(&b.package.name))
            .then_with(|| a.package.version.cmp(&b.package.version))
            .then_with(|| a.id.cmp(&b.id))
    });
}

struct Matcher<'a> {
    db: &'a Db,
    advisories: HashMap<u32, Advisory>,
    /// Per OS package ecosystem: the keys its advisories are filed under.
    os_keys: HashMap<Ecosystem, Vec<String>>,
    /// Advisories already reported as having an invalid version.
    warned_advisories: std::collections::HashSet<u32>,
    warnings: Vec<String>,
}

/// A hit before duplicates are merged.
struct Hit {
    advisory: Advisory,
    rating: Rating,
    fixed: Option<String>,
    via_source: Option<String>,
}

impl Matcher<'_> {
    fn advisory(&mut self, index: u32) -> Result<Advisory, DbError> {
        if let Some(a) = self.advisories.get(&index) {
            return Ok(a.clone());
        }
        let a = self.db.advisory(index)?;
        self.advisories.insert(index, a.clone());
        Ok(a)
    }

    fn match_package(
        &mut self,
        inventory: &Inventory,
        pkg: &Package,
    ) -> Result<(Vec<Finding>, Vec<Finding>), DbError> {
        let eco = pkg.ecosystem;
        // A module an OS package installed (Debian's `node-lodash`) is the distribution's
        // build, often patched without a new upstream version: the distribution's
        // advisories for the OS package rate it, as Trivy does by default.
        if pkg.os_package.is_some() && !eco.is_os() {
            return Ok((Vec::new(), Vec::new()));
        }
        let scheme = VersionScheme::for_ecosystem(eco);
        // (name, version) pairs the advisories may use: distro advisories name the
        // source package, so it is asked first; the binary name is the fallback.
        let mut queries: Vec<(String, String, Option<String>)> = Vec::new();
        let keys = if eco.is_os() {
            let keys = self
                .os_keys
                .entry(eco)
                .or_insert_with(|| {
                    match os_advisory_keys(eco, inventory.os.as_ref(), &self.db.info().ecosystems) {
                        OsAdvisoryKeys::Keys(keys) => keys,
                        // Said once per report by `coverage_warnings`.
                        _ => Vec::new(),
                    }
                })
                .clone();
            if keys.is_empty() || !rpm_package_is_the_distributions(inventory, pkg) {
                return Ok((Vec::new(), Vec::new()));
            }
            let source = pkg
                .source_name
                .as_deref()
                .filter(|s| !s.is_empty() && *s != pkg.name)
                .map(|src| {
                    let v = pkg
                        .source_version
                        .clone()
                        .unwrap_or_else(|| pkg.version.clone());
                    (src.to_string(), v, Some(src.to_string()))
                });
            let binary = (pkg.name.clone(), pkg.version.clone(), None);
            // AlmaLinux errata name every binary rpm; Red Hat and Rocky Linux records name binary
            // or source rpms; Debian, Ubuntu, Alpine and SUSE name source packages first.
            match eco {
                Ecosystem::AlmaLinux => queries.push(binary),
                Ecosystem::RedHat | Ecosystem::RockyLinux => {
                    queries.push(binary);
                    queries.extend(source);
                }
                _ => {
                    queries.extend(source);
                    queries.push(binary);
                }
            }
            keys
        } else {
            let mut version = pkg.version.clone();
            if eco == Ecosystem::Go {
                // Go toolchain versions are written `go1.21.3`; OSV's stdlib ranges are SemVer.
                if let Some(v) = version.strip_prefix("go") {
                    version = v.to_string();
                }
            }
            queries.push((normalize_name(eco, &pkg.name), version, None));
            vec![app_ecosystem_key(eco)]
        };
        let mut hits: Vec<Hit> = Vec::new();
        let mut checked = Vec::with_capacity(queries.len());
        for (name, version, via_source) in queries {
            if let Err(why) = version::check(&version) {
                // Not a version: "unknown", never matched against open ranges.
                self.warnings.push(format!(
                    "{eco:?} package {} version \"{}\" not checked for vulnerabilities: {why}",
                    version::excerpt(&pkg.name),
                    version::excerpt(&version)
                ));
                continue;
            }
            checked.push((name, version, via_source));
        }
        let entries = checked.into_iter().flat_map(|(name, version, via_source)| {
            keys.iter()
                .map(move |key| (key, name.clone(), version.clone(), via_source.clone()))
        });
        for (key, name, version, via_source) in entries {
            for entry in self.db.affected(key, &name)? {
                if is_rpm(eco) && !same_module_stream(pkg, &entry) {
                    continue;
                }
                if !self.warned_advisories.contains(&entry.advisory) {
                    if let Some(why) = invalid_version_in(&entry) {
                        self.warned_advisories.insert(entry.advisory);
                        let id = self.advisory(entry.advisory)?.id;
                        self.warnings.push(format!(
                            "advisory {} is not fully evaluated ({why}); the ranges concerned are skipped",
                            version::excerpt(&id)
                        ));
                    }
                }
                let Some(fixed) = affects(scheme, &version, &entry) else {
                    continue;
                };
                let advisory = self.advisory(entry.advisory)?;
                if hits.iter().any(|h| h.advisory.id == advisory.id) {
                    continue;
                }
                let rating = entry
                    .rating
                    .clone()
                    .or_else(|| advisory.rating.clone())
                    .unwrap_or_default();
                hits.push(Hit {
                    advisory,
                    rating,
                    fixed,
                    via_source: via_source.clone(),
                });
            }
        }
        let class = if eco.is_os() {
            FindingClass::Os
        } else {
            FindingClass::App
        };
        let (malicious, vulns): (Vec<Hit>, Vec<Hit>) =
            hits.into_iter().partition(|h| h.advisory.malicious);
        let db = self.db;
        let to_findings = |hits: Vec<Hit>| -> Vec<Finding> {
            merge_duplicates(hits, class)
                .into_iter()
                .map(|(primary, merged)| {
                    let mut aliases: Vec<String> = Vec::new();
                    let mut related: Vec<String> = Vec::new();
                    let mut rating = primary.rating.clone();
                    let mut fixed = primary.fixed.clone();
                    for h in std::iter::once(&primary).chain(merged.iter()) {
                        for id in &h.advisory.related {
                            if !related.contains(id) {
                                related.push(id.clone());
                            }
                        }
                        for id in std::iter::once(&h.advisory.id).chain(h.advisory.aliases.iter()) {
                            if *id != primary.advisory.id && !aliases.contains(id) {
                                aliases.push(id.clone());
                            }
                        }
                        if rating.severity == Severity::Unknown
                            && h.rating.severity != Severity::Unknown
                        {
                            rating = h.rating.clone();
                        }
                        // The version that fixes every report of the issue is the highest.
                        if let Some(f) = &h.fixed {
                            if fixed
                                .as_deref()
                                .is_none_or(|cur| scheme.compare(f, cur) == Ordering::Greater)
                            {
                                fixed = Some(f.clone());
                            }
                        }
                    }
                    aliases.sort();
                    if rating.severity == Severity::Unknown {
                        // No record rates it: NVD's rating of its CVEs, the highest.
                        if let Some(nvd) = nvd_rating(
                            db,
                            std::iter::once(primary.advisory.id.as_str())
                                .chain(aliases.iter().map(String::as_str))
                                // An erratum's CVEs (`related`): the vendor rating comes first,
                                // NVD's rates an erratum that has none.
                                .chain(related.iter().map(String::as_str)),
                        ) {
                            rating = nvd;
                        }
                    }
                    Finding {
                        id: primary.advisory.id.clone(),
                        aliases,
                        severity: rating.severity,
                        score: rating.score,
                        vector: rating.vector.clone(),
                        severity_source: rating.source.clone(),
                        package: FindingPackage {
                            ecosystem: eco,
                            name: pkg.name.clone(),
                            version: pkg.version.clone(),
                            purl: pkg.purl.clone(),
                            source_name: primary.via_source.clone(),
                            layer: pkg.layer.clone(),
                            path: pkg.path.clone(),
                        },
                        fixed_version: fixed,
                        title: primary.advisory.title.clone(),
                        link: primary.advisory.link.clone(),
                        class,
                        related,
                    }
                })
                .collect()
        };
        Ok((to_findings(vulns), to_findings(malicious)))
    }
}

/// Whether an rpm package was built by the distribution the image runs (its `Vendor`, see
/// [`is_distribution_vendor`]), so that the distribution's advisories apply; packages of
/// other vendors (EPEL, third-party repositories, local builds) are not matched against them.
/// Packages whose vendor is unknown (from an SBOM) and non-rpm packages are matched.
pub fn rpm_package_is_the_distributions(inventory: &Inventory, pkg: &Package) -> bool {
    match (&inventory.os, &pkg.vendor) {
        (Some(os), Some(vendor)) if is_rpm(pkg.ecosystem) => {
            is_distribution_vendor(&os.family, vendor)
        }
        _ => true,
    }
}

/// Whether an rpm advisory entry is for the module stream the package came from: a package
/// from a stream (`nodejs:18`) only against fixes for that stream, a package outside module
/// streams only against fixes outside them. A module build whose stream is not known (a
/// record that names none, a package from an SBOM whose release says `.module`) matches
/// every stream.
fn same_module_stream(pkg: &Package, entry: &AffectedPackage) -> bool {
    let release_is_module_build = || {
        pkg.version
            .rsplit_once('-')
            .is_some_and(|(_, r)| r.contains(".module"))
    };
    let pkg_stream = match &pkg.module {
        Some(m) => Some(m.as_str()),
        None if pkg.vendor.is_none() && release_is_module_build() => Some(""),
        None => None,
    };
    match (pkg_stream, entry.module.as_deref()) {
        (None, None) => true,
        (Some(p), Some(e)) => p.is_empty() || e.is_empty() || p == e,
        _ => false,
    }
}

/// NVD's rating of the CVEs among `ids` (ids that are CVE ids or end in one, such as
/// `ALPINE-CVE-2019-14697`): the highest, by severity then score.
pub fn nvd_rating<'i>(db: &Db, ids: impl Iterator<Item = &'i str>) -> Option<Rating> {
    let mut seen: Vec<u64> = Vec::new();
    let mut best: Option<Rating> = None;
    for id in ids {
        let Some(key) = crate::vulndb::nvd::cve_key(id) else {
            continue;
        };
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        if let Some(r) = db.nvd_rating(id) {
            if best.as_ref().is_none_or(|b| r.rank(b) == Ordering::Greater) {
                best = Some(r);
            }
        }
    }
    best
}

/// How much a record is preferred as the primary report of an issue (lower first):
/// for OS packages the distro's own advisory, for applications the ecosystem's own database.
fn primary_rank(id: &str, class: FindingClass) -> u8 {
    const DISTRO_ADVISORY: [&str; 8] = [
        "DSA-",
        "DLA-",
        "USN-",
        "RHSA-",
        "ALSA-",
        "RLSA-",
        "SUSE-",
        "openSUSE-",
    ];
    const DISTRO_CVE: [&str; 3] = ["DEBIAN-", "UBUNTU-", "ALPINE-"];
    match class {
        FindingClass::Os if DISTRO_ADVISORY.iter().any(|p| id.starts_with(p)) => 0,
        FindingClass::Os if DISTRO_CVE.iter().any(|p| id.starts_with(p)) => 1,
        FindingClass::App if id.starts_with("GHSA-") => 1,
        FindingClass::App if id.starts_with("CVE-") => 2,
        FindingClass::App => 0,
        FindingClass::Os => 2,
    }
}

/// Groups reports of one issue: two records are one issue when one's id is among the
/// other's aliases, or all of one's aliases are among the other's ids (so two distro
/// advisories that share one CVE but fix different ones stay apart). The preferred
/// record of a group is its primary; among equals, the one naming the most issues.
fn merge_duplicates(mut hits: Vec<Hit>, class: FindingClass) -> Vec<(Hit, Vec<Hit>)> {
    hits.sort_by(|a, b| {
        primary_rank(&a.advisory.id, class)
            .cmp(&primary_rank(&b.advisory.id, class))
            .then_with(|| b.advisory.aliases.len().cmp(&a.advisory.aliases.len()))
            .then_with(|| a.advisory.id.cmp(&b.advisory.id))
    });
    let mut groups: Vec<(Hit, Vec<Hit>)> = Vec::new();
    for hit in hits {
        let joins = groups.iter_mut().position(|(p, merged)| {
            std::iter::once(&*p)
                .chain(merged.iter())
                .any(|m| same_issue(&m.advisory, &hit.advisory))
        });
        match joins {
            Some(g) => groups[g].1.push(hit),
            None => groups.push((hit, Vec::new())),
        }
    }
    groups
}

fn same_issue(a: &Advisory, b: &Advisory) -> bool {
    let covers = |x: &Advisory, y: &Advisory| {
        x.aliases.contains(&y.id)
            || (!y.aliases.is_empty()
                && y.aliases
                    .iter()
                    .all(|alias| *alias == x.id || x.aliases.contains(alias)))
    };
    a.id == b.id || covers(a, b) || covers(b, a)
}

/// Most events one range may have to be evaluated; real records have a few dozen.
pub const MAX_RANGE_EVENTS: usize = 5_000;

/// The first problem with a version or range `entry` names, if any.
fn invalid_version_in(entry: &AffectedPackage) -> Option<String> {
    if let Some(r) = entry
        .ranges
        .iter()
        .find(|r| r.events.len() > MAX_RANGE_EVENTS)
    {
        return Some(format!(
            "a range has {} events, more than {MAX_RANGE_EVENTS}",
            r.events.len()
        ));
    }
    let events = entry.ranges.iter().flat_map(|r| r.events.iter());
    entry
        .versions
        .iter()
        .map(String::as_str)
        .chain(events.map(event_version))
        .find_map(|v| version::check(v).err())
        .map(|e| e.to_string())
}

/// Whether `version` is affected by `entry`; `Some(fixed)` when it is, with the
/// version that fixes it when the range names one. An invalid `version` is never
/// affected; a listed version or a range naming an invalid version is skipped.
pub fn affects(
    scheme: VersionScheme,
    version: &str,
    entry: &AffectedPackage,
) -> Option<Option<String>> {
    if version::check(version).is_err() {
        return None;
    }
    let mut listed = false;
    if entry.versions.iter().any(|v| {
        version::check(v).is_ok() && (v == version || scheme.compare(v, version) == Ordering::Equal)
    }) {
        listed = true;
    }
    for range in &entry.ranges {
        if range.events.len() > MAX_RANGE_EVENTS
            || range
                .events
                .iter()
                .any(|e| version::check(event_version(e)).is_err())
        {
            continue;
        }
        let s = if range.semver {
            VersionScheme::SemVer
        } else {
            scheme
        };
        if let Some(fixed) = range_affects(s, version, range) {
            return Some(fixed);
        }
    }
    listed.then_some(None)
}

fn event_version(e: &RangeEvent) -> &str {
    match e {
        RangeEvent::Introduced(v)
        | RangeEvent::Fixed(v)
        | RangeEvent::LastAffected(v)
        | RangeEvent::Limit(v) => v,
    }
}

/// OSV range evaluation: walk the events in version order up to `version`;
/// `introduced` opens, `fixed` (at or below) and `last_affected` (below) close.
fn range_affects(
    scheme: VersionScheme,
    version: &str,
    range: &VersionRange,
) -> Option<Option<String>> {
    let cmp = |a: &str, b: &str| -> Ordering {
        match (a == "0", b == "0") {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => scheme.compare(a, b),
        }
    };
    let mut events: Vec<&RangeEvent> = range
        .events
        .iter()
        .filter(|e| !matches!(e, RangeEvent::Limit(_)))
        .collect();
    version::sort_by_version(&mut events, |a, b| cmp(event_version(a), event_version(b)));
    let mut affected = false;
    for e in &events {
        let at = cmp(version, event_version(e));
        match e {
            RangeEvent::Introduced(_) if at != Ordering::Less => affected = true,
            RangeEvent::Fixed(_) if at != Ordering::Less => affected = false,
            RangeEvent::LastAffected(_) if at == Ordering::Greater => affected = false,
            _ => {}
        }
    }
    if !affected {
        return None;
    }
    let limits: Vec<&str> = range
        .events
        .iter()
        .filter_map(|e| match e {
            RangeEvent::Limit(v) => Some(v.as_str()),
            _ => None,
        })
        .collect();
    if !limits.is_empty()
        && !limits
            .iter()
            .any(|l| *l == "*" || cmp(version, l) == Ordering::Less)
    {
        return None;
    }
    let fixed = events
        .iter()
        .filter_map(|e| match e {
            RangeEvent::Fixed(v) if cmp(version, v) == Ordering::Less => Some(v.as_str()),
            _ => None,
        })
        .next()
        .map(str::to_string);
    Some(fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(semver: bool, events: &[(&str, &str)]) -> AffectedPackage {
        AffectedPackage {
            advisory: 0,
            ranges: vec![VersionRange {
                semver,
                events: events
                    .iter()
                    .map(|(k, v)| match *k {
                        "introduced" => RangeEvent::Introduced(v.to_string()),
                        "fixed" => RangeEvent::Fixed(v.to_string()),
                        "last_affected" => RangeEvent::LastAffected(v.to_string()),
                        _ => RangeEvent::Limit(v.to_string()),
                    })
                    .collect(),
            }],
            versions: vec![],
            rating: None,
            module: None,
        }
    }

    #[test]
    fn evaluates_introduced_fixed_ranges() {
        let e = range(false, &[("introduced", "0"), ("fixed", "1.1.0l-1~deb9u6")]);
        assert_eq!(
            affects(VersionScheme::Dpkg, "1.1.0f-3+deb9u2", &e),
            Some(Some("1.1.0l-1~deb9u6".into()))
        );
        assert_eq!(affects(VersionScheme::Dpkg, "1.1.0l-1~deb9u6", &e), None);
        assert_eq!(affects(VersionScheme::Dpkg, "1.1.0l-1~deb9u7", &e), None);
    }

    #[test]
    fn evaluates_multiple_intervals_in_one_range() {
        let e = range(
            true,
            &[
                ("introduced", "1.0.0"),
                ("fixed", "1.2.0"),
                ("introduced", "2.0.0"),
                ("fixed", "2.0.3"),
            ],
        );
        assert_eq!(affects(VersionScheme::SemVer, "0.9.0", &e), None);
        assert_eq!(
            affects(VersionScheme::SemVer, "1.1.0", &e),
            Some(Some("1.2.0".into()))
        );
        assert_eq!(affects(VersionScheme::SemVer, "1.5.0", &e), None);
        assert_eq!(
            affects(VersionScheme::SemVer, "2.0.1", &e),
            Some(Some("2.0.3".into()))
        );
        assert_eq!(affects(VersionScheme::SemVer, "2.0.3", &e), None);
    }

    #[test]
    fn evaluates_last_affected_and_limit() {
        let e = range(false, &[("introduced", "1.0"), ("last_affected", "1.4")]);
        assert_eq!(affects(VersionScheme::Pep440, "1.4", &e), Some(None));
        assert_eq!(affects(VersionScheme::Pep440, "1.4.post1", &e), None);
        let e = range(false, &[("introduced", "0"), ("limit", "2.0")]);
        assert_eq!(affects(VersionScheme::Pep440, "1.9", &e), Some(None));
        assert_eq!(affects(VersionScheme::Pep440, "2.0", &e), None);
    }

    fn rpm(version: &str, vendor: Option<&str>, module: Option<&str>) -> Package {
        Package {
            ecosystem: Ecosystem::AlmaLinux,
            name: "nodejs".into(),
            version: version.into(),
            purl: String::new(),
            source_name: None,
            source_version: None,
            vendor: vendor.map(str::to_string),
            module: module.map(str::to_string),
            install_state: None,
            os_package: None,
            layer: None,
            path: String::new(),
        }
    }

    #[test]
    fn module_packages_match_only_fixes_for_their_stream() {
        let fix = |module: Option<&str>| AffectedPackage {
            module: module.map(str::to_string),
            ..range(false, &[("introduced", "0"), ("fixed", "1:22.15.0-1")])
        };
        let stream22 = rpm("1:22.13.1-1.module_el9.5.0+139", ALMA, Some("nodejs:22"));
        assert!(same_module_stream(&stream22, &fix(Some("nodejs:22"))));
        assert!(!same_module_stream(&stream22, &fix(Some("nodejs:24"))));
        assert!(!same_module_stream(&stream22, &fix(None)));
        // A fix that is a module build of a stream the record does not name: any stream.
        assert!(same_module_stream(&stream22, &fix(Some(""))));
        let plain = rpm("1:16.20.2-1.el9_2", ALMA, None);
        assert!(same_module_stream(&plain, &fix(None)));
        assert!(!same_module_stream(&plain, &fix(Some("nodejs:22"))));
        // From an SBOM (no vendor, no label): a module build release counts as some stream.
        let from_sbom = rpm("1:22.13.1-1.module_el9.5.0+139", None, None);
        assert!(same_module_stream(&from_sbom, &fix(Some("nodejs:22"))));
        assert!(!same_module_stream(&from_sbom, &fix(None)));
    }

    const ALMA: Option<&str> = Some("AlmaLinux");

    #[test]
    fn only_the_distribution_s_own_rpms_meet_its_advisories() {
        let inv = |family: &str| Inventory {
            target: "t".into(),
            digest: None,
            os: Some(crate::inventory::OsInfo {
                family: family.into(),
                version: "9.4".into(),
            }),
            packages: Vec::new(),
        };
        let alma = inv("almalinux");
        assert!(rpm_package_is_the_distributions(
            &alma,
            &rpm("1-1", ALMA, None)
        ));
        assert!(!rpm_package_is_the_distributions(
            &alma,
            &rpm("1-1", Some("Fedora Project"), None)
        ));
        assert!(!rpm_package_is_the_distributions(
            &alma,
            &rpm("1-1", Some(""), None)
        ));
        assert!(rpm_package_is_the_distributions(
            &alma,
            &rpm("1-1", None, None)
        ));
    }

    #[test]
    fn open_ended_range_has_no_fix() {
        let e = range(false, &[("introduced", "0")]);
        assert_eq!(affects(VersionScheme::Apk, "1.0-r0", &e), Some(None));
    }

    #[test]
    fn explicit_versions_match_exactly() {
        let mut e = range(false, &[]);
        e.ranges.clear();
        e.versions = vec!["1.0.0".into(), "1.0.1".into()];
        assert_eq!(affects(VersionScheme::SemVer, "1.0.1", &e), Some(None));
        assert_eq!(affects(VersionScheme::SemVer, "1.0.2", &e), None);
    }

    fn maven_db(fixed: &str) -> Db {
        let record = serde_json::json!({
            "id": "GHSA-mvn-0001",
            "modified": "2024-01-01T00:00:00Z",
            "affected": [{
                "package": {"ecosystem": "Maven", "name": "org.example:lib"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}]
            }]
        });
        let mut b = crate::vulndb::DbBuilder::new();
        b.add_json(record.to_string().as_bytes(), "inline");
        b.into_db("test").unwrap()
    }

    fn maven_inventory(versions: &[&str]) -> Inventory {
        Inventory {
            target: "t".into(),
            digest: None,
            os: None,
            packages: versions
                .iter()
                .map(|v| Package {
                    ecosystem: Ecosystem::Maven,
                    name: "org.example:lib".into(),
                    version: v.to_string(),
                    purl: String::new(),
                    source_name: None,
                    source_version: None,
                    layer: None,
                    path: String::new(),
                    module: None,
                    vendor: None,
                    install_state: None,
                    os_package: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_module_an_os_package_installed_is_left_to_the_distribution_s_advisories() {
        let mut b = crate::vulndb::DbBuilder::new();
        b.add_json(
            include_bytes!("../testdata/osv/npm/NSWG-ECO-516.json"),
            "NSWG-ECO-516.json",
        );
        let db = b.into_db("test").unwrap();
        let lodash = |path: &str, owner: Option<&str>| Package {
            ecosystem: Ecosystem::Npm,
            name: "lodash".into(),
            version: "4.17.15".into(),
            purl: "pkg:npm/lodash@4.17.15".into(),
            source_name: None,
            source_version: None,
            vendor: None,
            module: None,
            install_state: None,
            os_package: owner.map(str::to_string),
            layer: None,
            path: path.into(),
        };
        let inv = Inventory {
            target: "t".into(),
            digest: None,
            os: None,
            packages: vec![
                lodash("app/node_modules/lodash/package.json", None),
                lodash("usr/share/nodejs/lodash/package.json", Some("node-lodash")),
            ],
        };
        let m = match_inventory(&inv, &db).unwrap();
        let paths: Vec<&str> = m
            .vulnerabilities
            .iter()
            .map(|f| f.package.path.as_str())
            .collect();
        assert_eq!(paths, ["app/node_modules/lodash/package.json"]);
    }

    #[test]
    fn an_oversized_package_version_is_unknown_with_one_warning() {
        let deep = "1-".repeat(100_000);
        let m = match_inventory(&maven_inventory(&["1.0", &deep]), &maven_db("2.0")).unwrap();
        // The valid version is matched; the crafted one is neither matched nor quoted whole.
        assert_eq!(m.vulnerabilities.len(), 1);
        assert_eq!(m.vulnerabilities[0].package.version, "1.0");
        assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
        assert!(m.warnings[0].contains("not checked"), "{}", m.warnings[0]);
        assert!(m.warnings[0].len() < 300);
        // Many components within the length limit are refused the same way.
        let many = "1.".repeat(50);
        let m = match_inventory(&maven_inventory(&[&many]), &maven_db("2.0")).unwrap();
        assert!(m.vulnerabilities.is_empty());
        assert_eq!(m.warnings.len(), 1);
    }

    #[test]
    fn an_oversized_fixed_version_skips_its_range_instead_of_affecting_everything() {
        let deep = "1-".repeat(100_000);
        let m = match_inventory(&maven_inventory(&["1.0", "3.0"]), &maven_db(&deep)).unwrap();
        assert!(m.vulnerabilities.is_empty(), "{:?}", m.vulnerabilities);
        assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
        assert!(m.warnings[0].contains("GHSA-mvn-0001"), "{}", m.warnings[0]);
    }

    #[test]
    fn events_sort_without_a_total_order() {
        // rpm's release-less bounds make its order intransitive; sorting must not panic.
        let versions: Vec<String> = (0..2000)
            .map(|i| match i % 3 {
                0 => format!("1.{}", i % 7),
                1 => format!("1.{}-{}", i % 7, i % 11),
                _ => format!("1.{}-{}.el{}", i % 5, i, i % 3),
            })
            .collect();
        let events: Vec<(&str, &str)> = versions
            .iter()
            .enumerate()
            .map(|(i, v)| (if i % 2 == 0 { "introduced" } else { "fixed" }, v.as_str()))
            .collect();
        let e = range(false, &events);
        let _ = affects(VersionScheme::Rpm, "1.3-5", &e);
    }

    #[test]
    fn records_with_huge_ranges_are_skipped_when_compiling() {
        let events: Vec<serde_json::Value> = (0..200_000)
            .map(|i| {
                if i % 2 == 0 {
                    serde_json::json!({"introduced": format!("1.{i}")})
                } else {
                    serde_json::json!({"fixed": format!("1.{i}")})
                }
            })
            .collect();
        let record = serde_json::json!({
            "id": "GHSA-huge-0001",
            "modified": "2024-01-01T00:00:00Z",
            "affected": [{
                "package": {"ecosystem": "Maven", "name": "org.example:lib"},
                "ranges": [{"type": "ECOSYSTEM", "events": events}]
            }]
        });
        let mut b = crate::vulndb::DbBuilder::new();
        b.add_json(record.to_string().as_bytes(), "inline");
        let db = b.into_db("test").unwrap();
        assert_eq!(db.info().records, 0);
        let m = match_inventory(&maven_inventory(&["1.5"]), &db).unwrap();
        assert!(m.vulnerabilities.is_empty());
    }

    #[test]
    fn a_range_over_the_event_limit_in_an_index_is_skipped_with_a_warning() {
        // An index built elsewhere may hold such a range: matching skips it and says so.
        let mut events: Vec<(&str, String)> = vec![("introduced", "0".into())];
        events.extend((0..MAX_RANGE_EVENTS).map(|i| ("fixed", format!("9.{i}"))));
        let refs: Vec<(&str, &str)> = events.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let e = range(false, &refs);
        assert_eq!(affects(VersionScheme::Maven, "1.0", &e), None);
        assert!(invalid_version_in(&e).unwrap().contains("events"));
    }
}
