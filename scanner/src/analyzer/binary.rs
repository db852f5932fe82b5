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
            go_buildinfo(path, &elf, section, out);
        }
        if let Some(section) = elf.section(".dep-v0") {
            cargo_auditable(path, section, out);
        }
    }
}

/// Just enough of an ELF file to find sections by name.
pub struct Elf<'a> {
    data: &'a [u8],
    sections: Vec<(u32, u64, u64, u32, u64)>, // name offset, file offset, size, type, address
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
            let b: [u8; 2] = data.get(o..o.checked_add(2)?)?.try_into().ok()?;
            Some(if le {
                u16::from_le_bytes(b)
            } else {
                u16::from_be_bytes(b)
            } as u64)
        };
        let u32_at = |o: usize| -> Option<u64> {
            let b: [u8; 4] = data.get(o..o.checked_add(4)?)?.try_into().ok()?;
            Some(if le {
                u32::from_le_bytes(b)
            } else {
                u32::from_be_bytes(b)
            } as u64)
        };
        let u64_at = |o: usize| -> Option<u64> {
            let b: [u8; 8] = data.get(o..o.checked_add(8)?)?.try_into().ok()?;
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
            // A section header table near the end of the address space must not wrap.
            let at = |delta: usize| base.checked_add(delta);
            let kind = u32_at(at(4)?)? as u32;
            let (addr, off, size) = if is64 {
                (word(at(16)?)?, word(at(24)?)?, word(at(32)?)?)
            } else {
                (word(at(12)?)?, word(at(16)?)?, word(at(20)?)?)
            };
            sections.push((name, off, size, kind, addr));
        }
        let strtab = sections
            .get(shstrndx as usize)
            .map(|(_, off, size, _, _)| (*off, *size));
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
        self.sections.iter().find_map(|(n, off, size, kind, _)| {
            let rest = names.get(*n as usize..)?;
            let end = rest.iter().position(|b| *b == 0)?;
            // SHT_NOBITS sections occupy no file space.
            (&rest[..end] == name.as_bytes() && *kind != 8)
                .then(|| self.bytes(*off, *size))
                .flatten()
        })
    }

    /// `len` bytes at virtual address `addr`, from the section that holds them.
    pub fn read_at_address(&self, addr: u64, len: u64) -> Option<&'a [u8]> {
        self.sections
            .iter()
            .find_map(|(_, off, size, kind, start)| {
                let within = *kind != 8
                    && addr >= *start
                    && addr.checked_add(len)? <= start.checked_add(*size)?;
                within
                    .then(|| self.bytes(off.checked_add(addr - start)?, len))
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
    let modinfo = read().unwrap_or_default();
    Some((version, strip_sentinels(modinfo)))
}

/// The module information is framed by 16-byte sentinels.
fn strip_sentinels(mut modinfo: &[u8]) -> String {
    if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        modinfo = &modinfo[16..modinfo.len() - 16];
    }
    String::from_utf8_lossy(modinfo).into_owned()
}

/// Build info of Go 1.13–1.17 binaries: the section holds pointers to two Go string
/// headers (pointer, length) elsewhere in the image, resolved through section addresses.
pub fn parse_go_buildinfo_legacy(elf: &Elf<'_>, section: &[u8]) -> Option<(String, String)> {
    if section.len() < 32 || !section.starts_with(b"\xff Go buildinf:") {
        return None;
    }
    let ptr_size = section[14] as usize;
    if ptr_size != 4 && ptr_size != 8 {
        return None;
    }
    let big_endian = section[15] & 1 != 0;
    let read_ptr = |b: &[u8]| -> Option<u64> {
        let b = b.get(..ptr_size)?;
        Some(match (ptr_size, big_endian) {
            (8, false) => u64::from_le_bytes(b.try_into().ok()?),
            (8, true) => u64::from_be_bytes(b.try_into().ok()?),
            (_, false) => u32::from_le_bytes(b.try_into().ok()?) as u64,
            (_, true) => u32::from_be_bytes(b.try_into().ok()?) as u64,
        })
    };
    let read_string = |addr: u64| -> Option<&[u8]> {
        let header = elf.read_at_address(addr, 2 * ptr_size as u64)?;
        let (data, len) = (read_ptr(header)?, read_ptr(&header[ptr_size..])?);
        if len > 1 << 24 {
            return None;
        }
        elf.read_at_address(data, len)
    };
    let version = read_string(read_ptr(&section[16..])?)?;
    let modinfo = read_ptr(&section[16 + ptr_size..]).and_then(read_string);
    Some((
        String::from_utf8_lossy(version).into_owned(),
        strip_sentinels(modinfo.unwrap_or_default()),
    ))
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

fn go_buildinfo(path: &str, elf: &Elf<'_>, section: &[u8], out: &mut Output) {
    let parsed = parse_go_buildinfo(section).or_else(|| parse_go_buildinfo_legacy(elf, section));
    let Some((go_version, modinfo)) = parsed else {
        out.warn(format!(
            "{path}: unreadable Go build info; modules not listed"
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
    use crate::analyzer::Fact;

    #[test]
    fn offsets_at_the_end_of_the_address_space_do_not_wrap() {
        // Section headers said to start 3 bytes before the end of the address space
        // (found by coverage-guided fuzzing: the bounds arithmetic overflowed).
        let mut header = vec![0u8; 64];
        header[..4].copy_from_slice(b"\x7fELF");
        header[4] = 2;
        header[5] = 1;
        header[0x28..0x30].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
        header[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        header[0x3C..0x3E].copy_from_slice(&1u16.to_le_bytes());
        assert!(Elf::parse(&header).is_none());
        // A section whose address range wraps holds no address.
        let file = elf(&[(".data", u64::MAX - 1, &[1, 2, 3, 4])]);
        let parsed = Elf::parse(&file).unwrap();
        assert_eq!(parsed.read_at_address(u64::MAX - 1, 1), None);
        let mut out = Output::default();
        ExecutableAnalyzer.analyze_file(
            &FileMeta {
                path: "usr/local/bin/app",
                mode: 0o755,
                size: header.len() as u64,
            },
            &header,
            &mut out,
        );
    }

    /// A minimal little-endian ELF64 file with the given (name, address, data) sections.
    fn elf(sections: &[(&str, u64, &[u8])]) -> Vec<u8> {
        let mut shstrtab = vec![0u8];
        let mut headers = vec![(0u32, 0u32, 0u64, 0u64, 0u64)];
        let mut out = vec![0u8; 64];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = 1;
        for (name, addr, data) in sections {
            let n = shstrtab.len() as u32;
            shstrtab.extend_from_slice(name.as_bytes());
            shstrtab.push(0);
            headers.push((n, 1, *addr, out.len() as u64, data.len() as u64));
            out.extend_from_slice(data);
        }
        let n = shstrtab.len() as u32;
        shstrtab.extend_from_slice(b".shstrtab\0");
        headers.push((n, 3, 0, out.len() as u64, shstrtab.len() as u64));
        out.extend_from_slice(&shstrtab);
        let shoff = out.len() as u64;
        for (name, kind, addr, off, size) in &headers {
            let mut h = [0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[16..24].copy_from_slice(&addr.to_le_bytes());
            h[24..32].copy_from_slice(&off.to_le_bytes());
            h[32..40].copy_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&h);
        }
        out[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        out[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        out[0x3C..0x3E].copy_from_slice(&(headers.len() as u16).to_le_bytes());
        out[0x3E..0x40].copy_from_slice(&((headers.len() - 1) as u16).to_le_bytes());
        out
    }

    fn modinfo() -> Vec<u8> {
        let mut m = vec![b'0'; 16];
        m.extend_from_slice(b"path\texample.com/x\nmod\texample.com/x\t(devel)\t\ndep\tgolang.org/x/text\tv0.3.5\th1:abc\ndep\tgithub.com/a/b\tv1.0.0\th1:x\n=>\tgithub.com/fork/b\tv1.0.1\th1:y\n");
        m.extend_from_slice(&[b'1'; 16]);
        m
    }

    fn listed(binary: &[u8]) -> Vec<String> {
        let mut out = Output::default();
        ExecutableAnalyzer.analyze("app", binary, &mut out);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        out.facts
            .iter()
            .map(|f| match f {
                Fact::Package(p) => format!("{}@{} {}", p.name, p.version, p.purl),
                _ => String::new(),
            })
            .collect()
    }

    const EXPECTED: [&str; 3] = [
        "stdlib@1.16.15 pkg:golang/stdlib@v1.16.15",
        "golang.org/x/text@0.3.5 pkg:golang/golang.org/x/text@v0.3.5",
        "github.com/fork/b@1.0.1 pkg:golang/github.com/fork/b@v1.0.1",
    ];

    #[test]
    fn inline_buildinfo_of_go_1_18_and_later() {
        let mut s = b"\xff Go buildinf:\x08\x02".to_vec();
        s.resize(32, 0);
        let ver = b"go1.16.15";
        s.push(ver.len() as u8);
        s.extend_from_slice(ver);
        let m = modinfo();
        s.extend_from_slice(&[(m.len() as u8) | 0x80, (m.len() >> 7) as u8]);
        s.extend_from_slice(&m);
        assert_eq!(listed(&elf(&[(".go.buildinfo", 0x1000, &s)])), EXPECTED);
    }

    #[test]
    fn pointer_buildinfo_of_go_1_13_to_1_17() {
        let m = modinfo();
        let mut s = b"\xff Go buildinf:\x08\x00".to_vec();
        s.extend_from_slice(&0x2000u64.to_le_bytes());
        s.extend_from_slice(&0x2010u64.to_le_bytes());
        s.resize(32, 0);
        let mut data = Vec::new();
        data.extend_from_slice(&0x2020u64.to_le_bytes());
        data.extend_from_slice(&9u64.to_le_bytes());
        data.extend_from_slice(&0x2029u64.to_le_bytes());
        data.extend_from_slice(&(m.len() as u64).to_le_bytes());
        data.extend_from_slice(b"go1.16.15");
        data.extend_from_slice(&m);
        let binary = elf(&[(".go.buildinfo", 0x1000, &s), (".data", 0x2000, &data)]);
        assert_eq!(listed(&binary), EXPECTED);
        // A pointer outside every section is a warning, not a crash.
        let mut bad = s.clone();
        bad[16..24].copy_from_slice(&0xdead_0000u64.to_le_bytes());
        let mut out = Output::default();
        ExecutableAnalyzer.analyze("app", &elf(&[(".go.buildinfo", 0x1000, &bad)]), &mut out);
        assert!(out.facts.is_empty() && out.warnings.len() == 1);
    }
}
