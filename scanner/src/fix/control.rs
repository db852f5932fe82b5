//! Debian control files (`Packages`, `InRelease`, `/var/lib/dpkg/status`, a package's
//! `control`): stanzas of fields, kept in order so a status file is rewritten as dpkg
//! writes it.

use crate::vulndb::version::VersionScheme;

/// Largest number of stanzas read from one file.
const MAX_STANZAS: usize = 500_000;

/// One stanza: fields in file order, values without the `Name: ` prefix (continuation
/// lines kept with their leading space, joined by `\n`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stanza {
    pub fields: Vec<(String, String)>,
}

impl Stanza {
    /// The value of a field (names compare case-insensitively, as dpkg's do).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Sets a field, in place when present, else at the end.
    pub fn set(&mut self, name: &str, value: &str) {
        match self
            .fields
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some((_, v)) => *v = value.to_string(),
            None => self.fields.push((name.to_string(), value.to_string())),
        }
    }

    /// Inserts a field after `after` (or at the end).
    pub fn insert_after(&mut self, after: &str, name: &str, value: &str) {
        let at = self
            .fields
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(after))
            .map_or(self.fields.len(), |i| i + 1);
        self.fields
            .insert(at, (name.to_string(), value.to_string()));
    }

    pub fn remove(&mut self, name: &str) {
        self.fields.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// The stanza as dpkg writes it, ending in one newline.
    pub fn write(&self, out: &mut String) {
        for (name, value) in &self.fields {
            out.push_str(name);
            out.push(':');
            if !value.is_empty() && !value.starts_with('\n') {
                out.push(' ');
            }
            out.push_str(value);
            out.push('\n');
        }
    }
}

/// The stanzas of a control file. Lines before a field, or that are neither fields nor
/// continuations, are an error; `#` comment lines and blank-line runs are skipped.
pub fn stanzas(text: &str) -> Result<Vec<Stanza>, String> {
    let mut out = Vec::new();
    let mut current = Stanza::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            if !current.fields.is_empty() {
                if out.len() >= MAX_STANZAS {
                    return Err(format!("more than {MAX_STANZAS} stanzas"));
                }
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let Some((_, value)) = current.fields.last_mut() else {
                return Err(format!("line {}: a continuation without a field", n + 1));
            };
            value.push('\n');
            value.push_str(line);
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("line {}: not a field", n + 1));
        };
        current
            .fields
            .push((name.trim().to_string(), value.trim().to_string()));
    }
    if !current.fields.is_empty() {
        out.push(current);
    }
    Ok(out)
}

/// One alternative of a dependency: `name[:arch] [(op version)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub name: String,
    pub constraint: Option<(String, String)>,
}

/// A `Depends`-style field: a list of alternatives lists (`a (>= 1) | b, c`).
pub fn relations(field: &str) -> Vec<Vec<Relation>> {
    field
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(|group| {
            group
                .split('|')
                .filter_map(|alt| {
                    let alt = alt.trim();
                    let (name, rest) = match alt.find(['(', ' ', '[', '<']) {
                        Some(i) => (&alt[..i], &alt[i..]),
                        None => (alt, ""),
                    };
                    let name = name.split(':').next().unwrap_or(name).trim();
                    if name.is_empty() {
                        return None;
                    }
                    let constraint = rest
                        .split_once('(')
                        .and_then(|(_, r)| r.split_once(')'))
                        .map(|(c, _)| c.trim())
                        .and_then(|c| {
                            let op_len = c.find(|ch: char| !"<>=".contains(ch))?;
                            Some((c[..op_len].to_string(), c[op_len..].trim().to_string()))
                        });
                    Some(Relation {
                        name: name.to_string(),
                        constraint,
                    })
                })
                .collect()
        })
        .collect()
}

/// Whether `version` satisfies `op constraint`, ordered by `scheme` (dpkg's operators and
/// apk's, whose `~` is a fuzzy match: the constraint's version or one it prefixes).
pub fn satisfies(scheme: VersionScheme, version: &str, op: &str, constraint: &str) -> bool {
    use std::cmp::Ordering::*;
    let ord = scheme.compare(version, constraint);
    match op {
        ">=" => ord != Less,
        "<=" => ord != Greater,
        ">>" | ">" => ord == Greater,
        "<<" | "<" => ord == Less,
        "=" => ord == Equal,
        "~" | "~=" => {
            ord == Equal
                || version
                    .strip_prefix(constraint)
                    .is_some_and(|rest| rest.starts_with(['.', '-', '_']))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanzas_keep_fields_in_order_and_continuations() {
        let text =
            "Package: a\nStatus: install ok installed\nDescription: x\n long\n .\n\n\nPackage: b\n";
        let s = stanzas(text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].get("description"), Some("x\n long\n ."));
        let mut out = String::new();
        s[0].write(&mut out);
        assert_eq!(
            out,
            "Package: a\nStatus: install ok installed\nDescription: x\n long\n .\n"
        );
        assert!(stanzas(" orphan\n").is_err());
    }

    #[test]
    fn relations_parse_alternatives_and_constraints() {
        let r = relations("libc6 (>= 2.36), debconf (>= 0.5) | debconf-2.0, libfoo:any");
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[0][0].constraint,
            Some((">=".to_string(), "2.36".to_string()))
        );
        assert_eq!(r[1][1].name, "debconf-2.0");
        assert_eq!(r[2][0].name, "libfoo");
        let dpkg = VersionScheme::Dpkg;
        assert!(satisfies(dpkg, "2.36-9+deb12u14", ">=", "2.36"));
        assert!(!satisfies(dpkg, "2.35", ">=", "2.36"));
        assert!(satisfies(dpkg, "1.0", "<<", "1.0.1"));
        assert!(satisfies(VersionScheme::Apk, "1.2.12-r0", "~", "1.2"));
        assert!(!satisfies(VersionScheme::Apk, "1.20-r0", "~", "1.2"));
    }
}
