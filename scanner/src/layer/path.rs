//! Tar entry paths made safe to use as keys of the image filesystem.

/// Normalizes a tar entry path to a relative path without `.` components or a leading `/`
/// (absolute paths in a layer are relative to the image root). Paths with `..` components
/// are refused: nothing is extracted, but a path that climbs out of the root is either
/// hostile or broken, and could otherwise shadow an unrelated file.
pub fn normalize_entry_path(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::normalize_entry_path as n;

    #[test]
    fn paths() {
        assert_eq!(n(b"./etc/os-release").as_deref(), Some("etc/os-release"));
        assert_eq!(n(b"/etc//passwd").as_deref(), Some("etc/passwd"));
        assert_eq!(n(b"../../etc/shadow"), None);
        assert_eq!(n(b"usr/../../x"), None);
        assert_eq!(n(b"./"), None);
    }
}
