//! dpkg's database: `var/lib/dpkg/status` and distroless `var/lib/dpkg/status.d/*`.

use super::{package, purl_encode, Analyzer, Fact, FileMeta, Output, OwnedFiles};
use crate::inventory::Ecosystem;

/// Reads installed packages from dpkg status files.
pub struct DpkgStatusAnalyzer;

impl Analyzer for DpkgStatusAnalyzer {
    fn name(&self) -> &'static str {
        "dpkg"
    }
    fn wants(&self, file: &FileMeta<'_>) -> bool {
        file.path == "var/lib/dpkg/status"
            || file
                .path
                .strip_prefix("var/lib/dpkg/status.d/")
                .is_some_and(|n| !n.is_empty() && !n.contains('/') && !n.ends_with(".md5sums"))
    }
    fn size_cap(&self) -> u64 {
        64 << 20
    }
    fn analyze(&self, path: &str, data: &[u8], out: &mut Output) {
        parse_status(path, &String::from_utf8_lossy(data), out);
    }
}

/// Reads dpkg's file lists (`var/lib/dpkg/info/<package>[:<arch>].list`) for the
/// application package records an OS package installed (Debian's `node-*` modules under
/// `usr/share/nodejs`), keeping only those paths.
pub struct DpkgFileListAnalyzer;

impl Analyzer for DpkgFileListAnalyzer {
    fn name(&self) -> &'static str {
        "dpkg-files"
    }
    fn wants(&self, file: &FileMeta<'_>) -> bool {
        file.path
            .strip_prefix("var/lib/dpkg/info/")
            .and_then(|n| n.strip_suffix(".list"))
            .is_some_and(|n| !n.is_empty() && !n.contains('/'))
    }
    fn size_cap(&self) -> u64 {
        // The largest lists (kernel modules, texlive) are a few MB.
        32 << 20
    }
    fn analyze(&self, path: &str, data: &[u8], out: &mut Output) {
        let Some(owner) = path
            .strip_prefix("var/lib/dpkg/info/")
            .and_then(|n| n.strip_suffix(".list"))
        else {
            return;
        };
        // `libc6:amd64.list` is multi-arch `libc6`.
        let owner = owner.split_once(':').map_or(owner, |(n, _)| n);
        let records = super::node::NodePackageJsonAnalyzer;
        let paths: Vec<String> = String::from_utf8_lossy(data)
            .lines()
            .filter_map(|l| l.trim_end().strip_prefix('/'))
            .filter(|p| {
                records.wants(&FileMeta {
                    path: p,
                    mode: 0o100644,
                    size: 0,
                })
            })
            .map(str::to_string)
            .collect();
        if !paths.is_empty() {
            out.fact(Fact::Owned(OwnedFiles {
                owner: owner.to_string(),
                paths,
            }));
        }
    }
}

/// Whether a package's files are on disk, by its dpkg `Status` (`want flag state`).
#[derive(Debug, PartialEq, Eq)]
enum OnDisk {
    /// `install ok installed` or `hold ok installed`: the normal case.
    Installed,
    /// The files are there (all of them, or for `half-installed` some) but dpkg has not
    /// finished with the package, or it is marked for removal: reported, with the status.
    Partly(String),
    /// `not-installed` or `config-files`: only configuration files (or nothing) remain.
    No,
}

fn on_disk(status: &str) -> OnDisk {
    let words: Vec<&str> = status.split_whitespace().collect();
    let [want, flag, state] = words.as_slice() else {
        return OnDisk::No;
    };
    match *state {
        "not-installed" | "config-files" => OnDisk::No,
        "installed" if matches!(*want, "install" | "hold") && *flag == "ok" => OnDisk::Installed,
        "installed" | "unpacked" | "half-configured" | "half-installed" | "triggers-awaited"
        | "triggers-pending" => OnDisk::Partly(words.join(" ")),
        _ => OnDisk::No,
    }
}

/// Parses a dpkg status file. Packages whose files are on disk are kept: `installed`, and
/// also `unpacked`, `half-configured`, `half-installed` and `triggers-*` (with the status in
/// [`crate::inventory::Package::install_state`]), as Syft and Trivy report them; packages
/// left as `config-files` or `not-installed` are not. status.d files of distroless images
/// carry no Status field and are all installed.
pub fn parse_status(path: &str, text: &str, out: &mut Output) {
    let distroless = path != "var/lib/dpkg/status";
    // Stanzas end at blank lines; `lines()` also takes `\r\n` endings, so a status file
    // written with CRLF reads the same.
    let mut lines = text.lines().peekable();
    while lines.peek().is_some() {
        let stanza: Vec<&str> = lines
            .by_ref()
            .skip_while(|l| l.trim().is_empty())
            .take_while(|l| !l.trim().is_empty())
            .collect();
        if stanza.is_empty() {
            continue;
        }
        let mut name = None;
        let mut version = None;
        let mut status = None;
        let mut source = None;
        let mut arch = None;
        for line in stanza {
            if line.starts_with([' ', '\t']) {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k {
                "Package" => name = Some(v),
                "Version" => version = Some(v),
                "Status" => status = Some(v),
                "Source" => source = Some(v),
                "Architecture" => arch = Some(v),
                _ => {}
            }
        }
        let (Some(name), Some(version)) = (name, version) else {
            if name.is_some() || version.is_some() {
                out.warn(format!(
                    "{path}: skipped a stanza without Package or Version ({})",
                    name.unwrap_or("?")
                ));
            }
            continue;
        };
        let install_state = match status.map(on_disk) {
            Some(OnDisk::Installed) => None,
            Some(OnDisk::Partly(s)) => Some(s),
            Some(OnDisk::No) => continue,
            None if distroless => None,
            // A stanza of the status file without Status is not a package dpkg installed.
            None => continue,
        };
        // `Source: openssl (1.1.1n-0+deb11u3)`: the version in parentheses is the
        // source version when it differs from the binary version.
        let (source_name, source_version) = match source {
            Some(s) => match s.split_once('(') {
                Some((n, v)) => (
                    n.trim().to_string(),
                    v.trim_end_matches(')').trim().to_string(),
                ),
                None => (s.trim().to_string(), version.to_string()),
            },
            None => (name.to_string(), version.to_string()),
        };
        let mut purl = format!("pkg:deb/_/{}@{}", purl_encode(name), purl_encode(version));
        if let Some(a) = arch {
            purl.push_str(&format!("?arch={}", purl_encode(a)));
        }
        if source_name != name {
            let sep = if purl.contains('?') { '&' } else { '?' };
            purl.push_str(&format!("{sep}upstream={}", purl_encode(&source_name)));
        }
        let mut p = package(Ecosystem::Debian, name, version, purl, path);
        p.install_state = install_state;
        p.source_name = Some(source_name);
        p.source_version = Some(source_version);
        out.package(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_with_version_in_parentheses() {
        let mut out = Output::default();
        parse_status(
            "var/lib/dpkg/status",
            "Package: libssl1.1\nStatus: install ok installed\nArchitecture: amd64\nSource: openssl (1.1.1n-0+deb11u3)\nVersion: 1.1.1n-0+deb11u3+b1\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n",
            &mut out,
        );
        assert_eq!(out.facts.len(), 1);
        let Fact::Package(p) = &out.facts[0] else {
            panic!()
        };
        assert_eq!(p.source_name.as_deref(), Some("openssl"));
        assert_eq!(p.source_version.as_deref(), Some("1.1.1n-0+deb11u3"));
        assert_eq!(
            p.purl,
            "pkg:deb/_/libssl1.1@1.1.1n-0%2Bdeb11u3%2Bb1?arch=amd64&upstream=openssl"
        );
    }

    #[test]
    fn packages_whose_files_are_on_disk_are_kept_with_their_state() {
        let stanzas: String = [
            ("a", "install ok installed"),
            ("b", "hold ok installed"),
            ("c", "install ok unpacked"),
            ("d", "install ok half-configured"),
            ("e", "install reinstreq half-installed"),
            ("f", "install ok triggers-pending"),
            ("g", "deinstall ok installed"),
            ("h", "deinstall ok config-files"),
            ("i", "purge ok not-installed"),
            ("j", "install ok"),
        ]
        .iter()
        .map(|(n, s)| format!("Package: {n}\nStatus: {s}\nVersion: 1\n\n"))
        .collect();
        let mut out = Output::default();
        parse_status("var/lib/dpkg/status", &stanzas, &mut out);
        let kept: Vec<(&str, Option<&str>)> = out
            .facts
            .iter()
            .map(|f| match f {
                Fact::Package(p) => (p.name.as_str(), p.install_state.as_deref()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kept,
            [
                ("a", None),
                ("b", None),
                ("c", Some("install ok unpacked")),
                ("d", Some("install ok half-configured")),
                ("e", Some("install reinstreq half-installed")),
                ("f", Some("install ok triggers-pending")),
                ("g", Some("deinstall ok installed")),
            ]
        );
    }

    #[test]
    fn file_lists_name_the_modules_their_package_installed() {
        let list = "/.\n/usr\n/usr/share/nodejs\n/usr/share/nodejs/lodash\n/usr/share/nodejs/lodash/package.json\n/usr/share/nodejs/lodash/fp/package.json\n/usr/share/nodejs/@types/lodash/package.json\n/usr/share/doc/node-lodash/copyright\n";
        let a = DpkgFileListAnalyzer;
        let path = "var/lib/dpkg/info/node-lodash:all.list";
        assert!(a.wants(&FileMeta {
            path,
            mode: 0o100644,
            size: 1
        }));
        let mut out = Output::default();
        a.analyze(path, list.as_bytes(), &mut out);
        assert_eq!(
            out.facts,
            [Fact::Owned(OwnedFiles {
                owner: "node-lodash".into(),
                paths: vec![
                    "usr/share/nodejs/lodash/package.json".into(),
                    "usr/share/nodejs/@types/lodash/package.json".into(),
                ],
            })]
        );
    }

    #[test]
    fn a_status_file_stops_growing_its_results_at_the_byte_limit() {
        // 20,000 packages would take ~6 MB of results; the output holds 64 KiB of them.
        let status: String = (0..20_000)
            .map(|i| format!("Package: p{i}\nStatus: install ok installed\nVersion: 1.{i}\n\n"))
            .collect();
        let mut out = Output::with_limit(64 << 10);
        parse_status("var/lib/dpkg/status", &status, &mut out);
        assert!(out.over_limit());
        assert!(out.approx_bytes() <= 64 << 10, "{}", out.approx_bytes());
        assert!(!out.facts.is_empty() && out.facts.len() < 1_000);
        let mut unbounded = Output::default();
        parse_status("var/lib/dpkg/status", &status, &mut unbounded);
        assert_eq!(unbounded.facts.len(), 20_000);
        assert!(!unbounded.over_limit());
    }

    #[test]
    fn crlf_status_file_reads_like_lf() {
        let lf = "Package: libssl1.1\nStatus: install ok installed\nSource: openssl (1.1.1n-0+deb11u3)\nVersion: 1.1.1n-0+deb11u3+b1\n\nPackage: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.11.dfsg-2+deb11u2\n";
        let crlf = lf.replace('\n', "\r\n");
        let (mut a, mut b) = (Output::default(), Output::default());
        parse_status("var/lib/dpkg/status", lf, &mut a);
        parse_status("var/lib/dpkg/status", &crlf, &mut b);
        assert_eq!(a.facts.len(), 2);
        assert_eq!(a, b);
    }
}
