//! Executables: Go build info (`.go.buildinfo`) and cargo-auditable dependency lists
//! (`.dep-v0`), read from ELF section tables without running or loading anything.

use super::{package, purl_encode, Analyzer, FileMeta, Output};
use crate::inventory::Ecosystem;
use std::io::Read;

/// Reads dependency information that Go and cargo-auditable embed in ELF executables.
pub struct ExecutableAnalyzer;

const BINARY_CAP: u64 = 256 << 20;

impl Analyzer for ExecutableAnalyzer {
    fn name(&self) -> &'static str {
        "executable"
    }
    fn wants(&self, file: &FileMeta<'_>) -> bool {
        file.mode & 0o111 != 0 && file.size >= 64
    }
    fn size_cap(&self) -> u64 {
        BINARY_CAP
    }
    fn elf_only(&self) -> bool {
        true
    }
    fn analyze(&self, path: &str, data: &[u8], out: &mut Output) {
        let Some(elf) = Elf::parse(data) else {
            return;
        };
        if let Some(section) = elf.section(".go.buildinfo") {
            go_buildinfo(path, section, out);
        }
        if let Some(section) = elf.section(".dep-v0") {
            cargo_auditable(path, section, out);
        }
    }
}

/// Just enough of an ELF file to find sections by name.
pub struct Elf<'a> {
    data: &'a [u8],
    sections: Vec<(u32, u64, u64, u32)>, // name offset, file offset, size, type
    strtab: Option<(u64, u64)>,
}

impl<'a> Elf<'a> {
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        if data.len() < 64 || &data[..4] != b"\x7fELF" {
            return None;
        }
        let is64 = data[4] == 2;
        let le = data[5] == 1;
        let u16_at = |o: usize| -> Option<u64> {
            let b: [u8; 2] = data.get(o..o + 2)?.try_into().ok()?;
            Some(if le {
                u16::from_le_bytes(b)
            } else {
                u16::from_be_bytes(b)
            } as u64)
        };
        let u32_at = |o: usize| -> Option<u64> {
            let b: [u8; 4] = data.get(o..o + 4)?.try_into().ok()?;
            Some(if le {
                u32::from_le_bytes(b)
            } else {
                u32::from_be_bytes(b)
            } as u64)
        };
        let u64_at = |o: usize| -> Option<u64> {
            let b: [u8; 8] = data.get(o..o + 8)?.try_into().ok()?;
            Some(if le {
                u64::from_le_bytes(b)
            } else {
                u64::from_be_bytes(b)
            })
        };
        let word = |o: usize| if is64 { u64_at(o) } else { u32_at(o) };
        let (shoff, shentsize, shnum, shstrndx) = if is64 {
            (u64_at(0x28)?, u16_at(0x3A)?, u16_at(0x3C)?, u16_at(0x3E)?)
        } else {
            (u32_at(0x20)?, u16_at(0x2E)?, u16_at(0x30)?, u16_at(0x32)?)
        };
        let mut sections = Vec::new();
        for i in 0..shnum.min(4096) {
            let base = usize::try_from(shoff.checked_add(i * shentsize)?).ok()?;
            let name = u32_at(base)? as u32;
            let kind = u32_at(base + 4)? as u32;
            let (off, size) = if is64 {
                (word(base + 24)?, word(base + 32)?)
            } else {
                (word(base + 16)?, word(base + 20)?)
            };
            sections.push((name, off, size, kind));
        }
        let strtab = sections
            .get(shstrndx as usize)
            .map(|(_, off, size, _)| (*off, *size));
        Some(Elf {
            data,
            sections,
            strtab,
        })
    }

    fn bytes(&self, off: u64, size: u64) -> Option<&'a [u8]> {
        let start = usize::try_from(off).ok()?;
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        self.data.get(start..end)
    }

    /// The file bytes of the named section (none for sections without file data).
    pub fn section(&self, name: &str) -> Option<&'a [u8]> {
        let (soff, ssize) = self.strtab?;
        let names = self.bytes(soff, ssize)?;
        self.sections.iter().find_map(|(n, off, size, kind)| {
            let rest = names.get(*n as usize..)?;
            let end = rest.iter().position(|b| *b == 0)?;
            // SHT_NOBITS sections occupy no file space.
            (&rest[..end] == name.as_bytes() && *kind != 8)
                .then(|| self.bytes(*off, *size))
                .flatten()
        })
    }
}

fn uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut x = 0u64;
    for (i, b) in data.iter().enumerate().take(10) {
        x |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((x, i + 1));
        }
    }
    None
}

/// The Go toolchain version and module information of a Go 1.18+ binary.
pub fn parse_go_buildinfo(section: &[u8]) -> Option<(String, String)> {
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    if section.len() < 32 || !section.starts_with(MAGIC) {
        return None;
    }
    let flags = section[15];
    if flags & 2 == 0 {
        // Before Go 1.18 the strings are pointers into the data segment.
        return None;
    }
    let mut rest = &section[32..];
    let mut read = || -> Option<&[u8]> {
        let (len, n) = uvarint(rest)?;
        let s = rest.get(n..n.checked_add(usize::try_from(len).ok()?)?)?;
        rest = &rest[n + s.len()..];
        Some(s)
    };
    let version = String::from_utf8_lossy(read()?).into_owned();
    let mut modinfo = read().unwrap_or_default();
    // The module information is framed by 16-byte sentinels.
    if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        modinfo = &modinfo[16..modinfo.len() - 16];
    }
    Some((version, String::from_utf8_lossy(modinfo).into_owned()))
}

fn go_package(name: &str, version: &str, path: &str) -> crate::inventory::Package {
    // OSV's Go records write versions without the leading `v`; purls keep it.
    let bare = version.strip_prefix('v').unwrap_or(version);
    let purl = format!("pkg:golang/{}@v{}", purl_path(name), purl_encode(bare));
    package(Ecosystem::Go, name, bare, purl, path)
}

fn purl_path(name: &str) -> String {
    name.split('/')
        .map(purl_encode)
        .collect::<Vec<_>>()
        .join("/")
}

fn go_buildinfo(path: &str, section: &[u8], out: &mut Output) {
    let Some((go_version, modinfo)) = parse_go_buildinfo(section) else {
        out.warn(format!(
            "{path}: Go binary without Go 1.18+ inline build info; modules not listed"
        ));
        return;
    };
    if let Some(v) = go_version.strip_prefix("go") {
        // `go1.22.1 X:boringcrypto` and similar carry experiment suffixes.
        let v = v.split_whitespace().next().unwrap_or(v);
        out.package(go_package("stdlib", v, path));
    }
    let mut deps: Vec<(String, String)> = Vec::new();
    for line in modinfo.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["mod", module, version, ..] if *version != "(devel)" && !version.is_empty() => {
                deps.push((module.to_string(), version.to_string()))
            }
            ["dep", module, version, ..] => deps.push((module.to_string(), version.to_string())),
            // A replacement applies to the dep line just before it.
            ["=>", module, version, ..] => {
                if let Some(last) = deps.last_mut() {
                    if !version.is_empty() {
                        *last = (module.to_string(), version.to_string());
                    } else {
                        // Replaced by a local directory: no published version to match.
                        deps.pop();
                    }
                }
            }
            _ => {}
        }
    }
    for (m, v) in deps {
        out.package(go_package(&m, &v, path));
    }
}

fn cargo_auditable(path: &str, section: &[u8], out: &mut Output) {
    let mut json = Vec::new();
    let decoder = flate2::read::ZlibDecoder::new(section);
    if decoder.take(8 << 20).read_to_end(&mut json).is_err() {
        out.warn(format!(
            "{path}: unreadable cargo-auditable dependency list"
        ));
        return;
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&json) else {
        out.warn(format!(
            "{path}: cargo-auditable dependency list is not JSON"
        ));
        return;
    };
    for p in v
        .get("packages")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        let s = |k: &str| p.get(k).and_then(|x| x.as_str()).unwrap_or_default();
        if s("source") != "crates.io" || s("name").is_empty() || s("version").is_empty() {
            continue;
        }
        let purl = format!(
            "pkg:cargo/{}@{}",
            purl_encode(s("name")),
            purl_encode(s("version"))
        );
        out.package(package(
            Ecosystem::CratesIo,
            s("name"),
            s("version"),
            purl,
            path,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_buildinfo() {
        let mut s = b"\xff Go buildinf:\x08\x02".to_vec();
        s.resize(32, 0);
        let ver = b"go1.21.0";
        s.push(ver.len() as u8);
        s.extend_from_slice(ver);
        let mut m = vec![b'0'; 16];
        m.extend_from_slice(b"path\texample.com/x\nmod\texample.com/x\t(devel)\t\ndep\tgolang.org/x/text\tv0.3.5\th1:abc\n");
        m.extend_from_slice(&[b'1'; 16]);
        s.push(m.len() as u8);
        s.extend_from_slice(&m);
        let mut out = Output::default();
        go_buildinfo("app", &s, &mut out);
        let names: Vec<String> = out
            .findings
            .iter()
            .map(|f| match f {
                crate::analyzer::Finding::Package(p) => {
                    format!("{}@{} {}", p.name, p.version, p.purl)
                }
                _ => String::new(),
            })
            .collect();
        assert_eq!(
            names,
            [
                "stdlib@1.21.0 pkg:golang/stdlib@v1.21.0",
                "golang.org/x/text@0.3.5 pkg:golang/golang.org/x/text@v0.3.5"
            ]
        );
    }
}
