//! Operating-system detection: `etc/os-release` and its fallbacks.

use super::{Analyzer, Fact, FileMeta, OsFact, Output};

/// Reads os-release and the distribution-specific release files.
pub struct OsReleaseAnalyzer;

// Oracle Linux's `redhat-release` names Red Hat; its own files rank before it.
const FILES: &[(&str, u8)] = &[
    ("etc/os-release", 0),
    ("usr/lib/os-release", 1),
    ("etc/alpine-release", 2),
    ("etc/system-release", 3),
    ("etc/oracle-release", 3),
    ("etc/centos-release", 3),
    ("etc/redhat-release", 4),
    ("etc/debian_version", 5),
    ("etc/lsb-release", 6),
];

impl Analyzer for OsReleaseAnalyzer {
    fn name(&self) -> &'static str {
        "os-release"
    }
    fn wants(&self, file: &FileMeta<'_>) -> bool {
        FILES.iter().any(|(p, _)| *p == file.path)
    }
    fn size_cap(&self) -> u64 {
        64 << 10
    }
    fn analyze(&self, path: &str, data: &[u8], out: &mut Output) {
        let rank = FILES
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, r)| *r)
            .unwrap_or(9);
        let text = String::from_utf8_lossy(data);
        let fact = match path {
            "etc/os-release" | "usr/lib/os-release" => parse_os_release(&text),
            "etc/alpine-release" => first_line(&text).map(|v| ("alpine".into(), v)),
            "etc/debian_version" => first_line(&text).map(|v| ("debian".into(), v)),
            "etc/redhat-release" | "etc/centos-release" | "etc/system-release"
            | "etc/oracle-release" => parse_redhat_release(&text),
            "etc/lsb-release" => parse_lsb_release(&text),
            _ => None,
        };
        match fact {
            Some((family, version)) => out.facts.push(Fact::Os(OsFact {
                family,
                version,
                rank,
            })),
            None => out.warn(format!("{path}: no operating system name found")),
        }
    }
}

fn first_line(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(v);
    v.to_string()
}

/// `ID` and `VERSION_ID` of an os-release file (Debian testing has no `VERSION_ID`:
/// the codename stands in for it).
pub fn parse_os_release(text: &str) -> Option<(String, String)> {
    let mut id = None;
    let mut version = None;
    let mut codename = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k.trim() {
            "ID" => id = Some(unquote(v).to_ascii_lowercase()),
            "VERSION_ID" => version = Some(unquote(v)),
            "VERSION_CODENAME" => codename = Some(unquote(v)),
            _ => {}
        }
    }
    let id = id.filter(|i| !i.is_empty())?;
    Some((id, version.or(codename).unwrap_or_default()))
}

/// The os-release `ID` and release of a `redhat-release`-style line: "CentOS Linux release
/// 7.9.2009 (Core)", "Red Hat Enterprise Linux release 8.4 (Ootpa)", "Amazon Linux release 2
/// (Karoo)", "Alibaba Cloud Linux release 3 (Soaring Falcon)", "Anolis OS release 8.6".
pub fn parse_redhat_release(text: &str) -> Option<(String, String)> {
    const FAMILIES: &[(&str, &str)] = &[
        ("centos", "centos"),
        ("rocky", "rocky"),
        ("almalinux", "almalinux"),
        ("fedora", "fedora"),
        ("red hat", "rhel"),
        ("oracle linux", "ol"),
        ("amazon linux", "amzn"),
        ("alibaba cloud linux", "alinux"),
        ("aliyun linux", "alinux"),
        ("anolis", "anolis"),
    ];
    let line = first_line(text)?;
    let lower = line.to_ascii_lowercase();
    let family = FAMILIES
        .iter()
        .find(|(prefix, _)| lower.starts_with(prefix))
        .map(|(_, id)| *id)?;
    let version = line
        .split_whitespace()
        .skip_while(|w| *w != "release")
        .nth(1)
        .unwrap_or_default();
    Some((family.into(), version.into()))
}

fn parse_lsb_release(text: &str) -> Option<(String, String)> {
    let mut id = None;
    let mut version = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("DISTRIB_ID", v)) => id = Some(unquote(v).to_ascii_lowercase()),
            Some(("DISTRIB_RELEASE", v)) => version = Some(unquote(v)),
            _ => {}
        }
    }
    Some((id?, version.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_gives_id_and_version_id() {
        let t = "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.10.4\n";
        assert_eq!(
            parse_os_release(t),
            Some(("alpine".into(), "3.10.4".into()))
        );
        let t = "PRETTY_NAME=\"Debian GNU/Linux 9 (stretch)\"\nVERSION_ID=\"9\"\nID=debian\n";
        assert_eq!(parse_os_release(t), Some(("debian".into(), "9".into())));
    }

    #[test]
    fn redhat_release_line() {
        for (line, id, version) in [
            ("CentOS Linux release 7.9.2009 (Core)", "centos", "7.9.2009"),
            ("CentOS Stream release 9", "centos", "9"),
            ("Red Hat Enterprise Linux release 9.4 (Plow)", "rhel", "9.4"),
            ("AlmaLinux release 9.4 (Seafoam Ocelot)", "almalinux", "9.4"),
            ("Rocky Linux release 8.9 (Green Obsidian)", "rocky", "8.9"),
            ("Oracle Linux Server release 8.9", "ol", "8.9"),
            ("Amazon Linux release 2 (Karoo)", "amzn", "2"),
            (
                "Amazon Linux release 2023.5.20240624 (Amazon Linux)",
                "amzn",
                "2023.5.20240624",
            ),
            (
                "Alibaba Cloud Linux release 3 (Soaring Falcon)",
                "alinux",
                "3",
            ),
            (
                "Aliyun Linux release 2.1903 LTS (Hunting Beagle)",
                "alinux",
                "2.1903",
            ),
            ("Anolis OS release 8.6", "anolis", "8.6"),
        ] {
            assert_eq!(
                parse_redhat_release(&format!("{line}\n")),
                Some((id.into(), version.into())),
                "{line}"
            );
        }
        assert_eq!(parse_redhat_release("Slackware 15.0\n"), None);
    }

    #[test]
    fn oracle_files_outrank_its_redhat_release() {
        let mut facts = Vec::new();
        for (path, text) in [
            (
                "etc/redhat-release",
                "Red Hat Enterprise Linux Server release 7.9 (Maipo)\n",
            ),
            ("etc/oracle-release", "Oracle Linux Server release 7.9\n"),
        ] {
            let mut out = Output::default();
            OsReleaseAnalyzer.analyze(path, text.as_bytes(), &mut out);
            for f in out.facts {
                if let Fact::Os(fact) = f {
                    facts.push(fact);
                }
            }
        }
        let os = crate::analyzer::choose_os(&facts).unwrap();
        assert_eq!((os.family.as_str(), os.version.as_str()), ("ol", "7.9"));
    }
}
