//! Maven version ordering, following Maven 3's `ComparableVersion`:
//! `alpha < beta < milestone < rc = cr < snapshot < "" = ga = final = release < sp`,
//! unknown qualifiers after `sp` in text order, and `-` starting a nested list.

use std::cmp::Ordering;

/// One scalar item of a version; `-` and digit/letter changes open a nested list,
/// which is always the last item of its parent, so a version is a chain of levels.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Int(String),
    Str(String),
}

const QUALIFIERS: [&str; 7] = ["alpha", "beta", "milestone", "rc", "snapshot", "", "sp"];

fn qualifier_key(q: &str) -> String {
    match QUALIFIERS.iter().position(|x| *x == q) {
        Some(i) => i.to_string(),
        None => format!("{}-{q}", QUALIFIERS.len()),
    }
}

fn string_item(s: &str, followed_by_digit: bool) -> Item {
    let s = if followed_by_digit && s.len() == 1 {
        match s {
            "a" => "alpha",
            "b" => "beta",
            "m" => "milestone",
            other => other,
        }
    } else {
        s
    };
    let s = match s {
        "ga" | "final" | "release" => "",
        "cr" => "rc",
        other => other,
    };
    Item::Str(s.to_string())
}

fn parse_item(is_digit: bool, s: &str) -> Item {
    if is_digit {
        let t = s.trim_start_matches('0');
        Item::Int(if t.is_empty() { "0".into() } else { t.into() })
    } else {
        string_item(s, false)
    }
}

impl Item {
    fn is_null(&self) -> bool {
        match self {
            Item::Int(v) => v == "0",
            Item::Str(s) => s.is_empty(),
        }
    }

    /// Compares with a missing item (the shorter version's padding).
    fn cmp_null(&self) -> Ordering {
        match self {
            Item::Int(v) => {
                if v == "0" {
                    Ordering::Equal
                } else {
                    Ordering::Greater
                }
            }
            Item::Str(s) => qualifier_key(s).cmp(&qualifier_key("")),
        }
    }

    fn cmp(&self, other: &Item) -> Ordering {
        use Item::*;
        match (self, other) {
            (Int(a), Int(b)) => super::cmp_digits(a, b),
            (Int(_), Str(_)) => Ordering::Greater,
            (Str(_), Int(_)) => Ordering::Less,
            (Str(a), Str(b)) => qualifier_key(a).cmp(&qualifier_key(b)),
        }
    }
}

/// A parsed version: level `k + 1` is the nested list that ends level `k`.
struct Version {
    levels: Vec<Vec<Item>>,
}

/// An element of a level: a scalar, the nested list (the next level), or padding.
enum Elem<'a> {
    Item(&'a Item),
    List(usize),
    None,
}

impl Version {
    fn elem(&self, level: usize, i: usize) -> Elem<'_> {
        let items = &self.levels[level];
        match items.get(i) {
            Some(item) => Elem::Item(item),
            None if i == items.len() && level + 1 < self.levels.len() => Elem::List(level + 1),
            None => Elem::None,
        }
    }

    /// A nested list compared with padding: its first scalar decides.
    fn list_cmp_null(&self, mut level: usize) -> Ordering {
        loop {
            match self.levels[level].first() {
                Some(item) => return item.cmp_null(),
                None if level + 1 < self.levels.len() => level += 1,
                None => return Ordering::Equal,
            }
        }
    }
}

/// Builds the chain of levels of a version, normalized as Maven normalizes its lists.
fn parse(v: &str) -> Version {
    let v = v.trim().to_ascii_lowercase();
    let b = v.as_bytes();
    let mut levels: Vec<Vec<Item>> = vec![Vec::new()];
    let mut is_digit = false;
    let mut start = 0;
    for i in 0..b.len() {
        let c = b[i];
        let cur = levels.len() - 1;
        if c == b'.' || c == b'-' {
            let item = if i == start {
                Item::Int("0".into())
            } else {
                parse_item(is_digit, &v[start..i])
            };
            levels[cur].push(item);
            start = i + 1;
            if c == b'-' {
                levels.push(Vec::new());
            }
        } else if c.is_ascii_digit() {
            if !is_digit && i > start {
                levels[cur].push(string_item(&v[start..i], true));
                start = i;
                levels.push(Vec::new());
            }
            is_digit = true;
        } else {
            if is_digit && i > start {
                levels[cur].push(parse_item(true, &v[start..i]));
                start = i;
                levels.push(Vec::new());
            }
            is_digit = false;
        }
    }
    if b.len() > start {
        let cur = levels.len() - 1;
        levels[cur].push(parse_item(is_digit, &v[start..]));
    }
    // Maven drops null items from the end of each list, looking past a trailing
    // non-null sub-list; an emptied sub-list is itself null and goes too.
    for k in (0..levels.len()).rev() {
        while levels[k].last().is_some_and(Item::is_null) {
            levels[k].pop();
        }
        if k > 0 && levels[k].is_empty() && k + 1 == levels.len() {
            levels.pop();
        }
    }
    Version { levels }
}

fn cmp_versions(a: &Version, b: &Version) -> Ordering {
    let mut level = 0;
    'levels: loop {
        let n = a.levels[level].len().max(b.levels[level].len()) + 1;
        for i in 0..n {
            let ord = match (a.elem(level, i), b.elem(level, i)) {
                (Elem::Item(x), Elem::Item(y)) => x.cmp(y),
                (Elem::List(_), Elem::List(_)) => {
                    // Both lists are the last elements of their levels: a tail call.
                    level += 1;
                    continue 'levels;
                }
                (Elem::Item(Item::Int(_)), Elem::List(_)) => Ordering::Greater,
                (Elem::Item(Item::Str(_)), Elem::List(_)) => Ordering::Less,
                (Elem::List(_), Elem::Item(Item::Int(_))) => Ordering::Less,
                (Elem::List(_), Elem::Item(Item::Str(_))) => Ordering::Greater,
                (Elem::Item(x), Elem::None) => x.cmp_null(),
                (Elem::None, Elem::Item(y)) => y.cmp_null().reverse(),
                (Elem::List(l), Elem::None) => a.list_cmp_null(l),
                (Elem::None, Elem::List(l)) => b.list_cmp_null(l).reverse(),
                (Elem::None, Elem::None) => return Ordering::Equal,
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        return Ordering::Equal;
    }
}

/// Orders two Maven versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    cmp_versions(&parse(a), &parse(b))
}

/// The recursive nested-list implementation this module replaced, kept as an oracle.
#[cfg(test)]
mod reference {
    use std::cmp::Ordering;

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Item {
        Int(String),
        Str(String),
        List(Vec<Item>),
    }

    const QUALIFIERS: [&str; 7] = ["alpha", "beta", "milestone", "rc", "snapshot", "", "sp"];

    fn qualifier_key(q: &str) -> String {
        match QUALIFIERS.iter().position(|x| *x == q) {
            Some(i) => i.to_string(),
            None => format!("{}-{q}", QUALIFIERS.len()),
        }
    }

    fn string_item(s: &str, followed_by_digit: bool) -> Item {
        let s = if followed_by_digit && s.len() == 1 {
            match s {
                "a" => "alpha",
                "b" => "beta",
                "m" => "milestone",
                other => other,
            }
        } else {
            s
        };
        let s = match s {
            "ga" | "final" | "release" => "",
            "cr" => "rc",
            other => other,
        };
        Item::Str(s.to_string())
    }

    fn parse_item(is_digit: bool, s: &str) -> Item {
        if is_digit {
            let t = s.trim_start_matches('0');
            Item::Int(if t.is_empty() { "0".into() } else { t.into() })
        } else {
            string_item(s, false)
        }
    }

    impl Item {
        fn is_null(&self) -> bool {
            match self {
                Item::Int(v) => v == "0",
                Item::Str(s) => s.is_empty(),
                Item::List(l) => l.is_empty(),
            }
        }

        /// Compares with a missing item (the shorter version's padding).
        fn cmp_null(&self) -> Ordering {
            match self {
                Item::Int(v) => {
                    if v == "0" {
                        Ordering::Equal
                    } else {
                        Ordering::Greater
                    }
                }
                Item::Str(s) => qualifier_key(s).cmp(&qualifier_key("")),
                Item::List(l) => l.first().map_or(Ordering::Equal, Item::cmp_null),
            }
        }

        fn cmp(&self, other: &Item) -> Ordering {
            use Item::*;
            match (self, other) {
                (Int(a), Int(b)) => crate::vulndb::version::cmp_digits(a, b),
                (Int(_), _) => Ordering::Greater,
                (Str(_), Int(_)) => Ordering::Less,
                (Str(a), Str(b)) => qualifier_key(a).cmp(&qualifier_key(b)),
                (Str(_), List(_)) => Ordering::Less,
                (List(_), Int(_)) => Ordering::Less,
                (List(_), Str(_)) => Ordering::Greater,
                (List(a), List(b)) => {
                    for i in 0..a.len().max(b.len()) {
                        let ord = match (a.get(i), b.get(i)) {
                            (Some(x), Some(y)) => x.cmp(y),
                            (Some(x), None) => x.cmp_null(),
                            (None, Some(y)) => y.cmp_null().reverse(),
                            (None, None) => Ordering::Equal,
                        };
                        if ord != Ordering::Equal {
                            return ord;
                        }
                    }
                    Ordering::Equal
                }
            }
        }
    }

    fn normalize(list: &mut Vec<Item>) {
        for item in list.iter_mut() {
            if let Item::List(inner) = item {
                normalize(inner);
            }
        }
        // Drop null items from the end, looking past trailing sub-lists as Maven does.
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            if list[i].is_null() {
                list.remove(i);
            } else if !matches!(list[i], Item::List(_)) {
                break;
            }
        }
    }

    /// Builds the nested item list of a version.
    fn parse(v: &str) -> Item {
        let v = v.trim().to_ascii_lowercase();
        let b = v.as_bytes();
        // Lists are built bottom-up: `stack` holds the open lists, innermost last.
        let mut stack: Vec<Vec<Item>> = vec![Vec::new()];
        let mut is_digit = false;
        let mut start = 0;
        let close_into_new = |stack: &mut Vec<Vec<Item>>| stack.push(Vec::new());
        for i in 0..b.len() {
            let c = b[i];
            if c == b'.' {
                let item = if i == start {
                    Item::Int("0".into())
                } else {
                    parse_item(is_digit, &v[start..i])
                };
                stack.last_mut().expect("open list").push(item);
                start = i + 1;
            } else if c == b'-' {
                let item = if i == start {
                    Item::Int("0".into())
                } else {
                    parse_item(is_digit, &v[start..i])
                };
                stack.last_mut().expect("open list").push(item);
                start = i + 1;
                close_into_new(&mut stack);
            } else if c.is_ascii_digit() {
                if !is_digit && i > start {
                    stack
                        .last_mut()
                        .expect("open list")
                        .push(string_item(&v[start..i], true));
                    start = i;
                    close_into_new(&mut stack);
                }
                is_digit = true;
            } else {
                if is_digit && i > start {
                    stack
                        .last_mut()
                        .expect("open list")
                        .push(parse_item(true, &v[start..i]));
                    start = i;
                    close_into_new(&mut stack);
                }
                is_digit = false;
            }
        }
        if b.len() > start {
            stack
                .last_mut()
                .expect("open list")
                .push(parse_item(is_digit, &v[start..]));
        }
        // Fold the open lists: each is the last element of its parent.
        let mut inner = stack.pop().expect("root list");
        normalize(&mut inner);
        while let Some(mut parent) = stack.pop() {
            parent.push(Item::List(inner));
            normalize(&mut parent);
            inner = parent;
        }
        Item::List(inner)
    }

    pub(super) fn compare(a: &str, b: &str) -> Ordering {
        parse(a).cmp(&parse(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn orders_maven_versions() {
        super::super::check_table(
            compare,
            &[
                ("1", "1.0", Equal),
                ("1.0", "1.0.0", Equal),
                ("1-alpha", "1-beta", Less),
                ("1-alpha1", "1-alpha2", Less),
                ("1-a1", "1-alpha-1", Equal),
                ("1-beta", "1-milestone", Less),
                ("1-m1", "1-milestone-1", Equal),
                ("1-milestone", "1-rc", Less),
                ("1-rc", "1-cr", Equal),
                ("1-rc", "1-snapshot", Less),
                ("1-snapshot", "1", Less),
                ("1", "1-ga", Equal),
                ("1", "1-final", Equal),
                ("1", "1.RELEASE", Equal),
                ("1", "1-sp", Less),
                ("1-sp", "1-foo", Less),
                ("1-foo", "1-foo2", Less),
                ("1", "1-1", Less),
                ("1-1", "1.1", Less),
                ("2.12.6", "2.12.6.1", Less),
                ("2.9.10.8", "2.12.0", Less),
                ("2.14.1", "2.15.0", Less),
                ("2.15.0-rc1", "2.15.0", Less),
                ("2.0.0-M4", "2.0.0", Less),
                ("5.3.17", "5.3.18", Less),
                ("1.2.3-SNAPSHOT", "1.2.3", Less),
                ("4.1.86.Final", "4.1.87.Final", Less),
                ("4.1.86.Final", "4.1.86", Equal),
                ("31.1-jre", "32.0.0-jre", Less),
                ("1.0.0.Beta1", "1.0.0", Less),
            ],
        );
    }

    /// A tiny deterministic generator, so the differential test needs no dependency.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn iterative_order_equals_the_nested_list_order() {
        const PARTS: [&str; 16] = [
            "0", "1", "2", "10", ".", "-", "-", "a", "b", "m", "rc", "sp", "ga", "snapshot", "x",
            "final",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15;
        let gen = |state: &mut u64| {
            let n = next(state) % 9;
            (0..n)
                .map(|_| PARTS[(next(state) % PARTS.len() as u64) as usize])
                .collect::<String>()
        };
        for _ in 0..50_000 {
            let (a, b) = (gen(&mut state), gen(&mut state));
            assert_eq!(
                compare(&a, &b),
                reference::compare(&a, &b),
                "{a:?} vs {b:?}"
            );
        }
    }

    #[test]
    fn deeply_nested_versions_compare_without_recursion() {
        // Each `-` opens a nested list; the nested-list implementation overflowed its
        // stack on such strings. The comparator is also cut at MAX_VERSION_LEN.
        let deep = "1-".repeat(200_000);
        let deeper = format!("{deep}2");
        assert_eq!(compare(&deep, &deeper), Less);
        assert_eq!(
            super::super::VersionScheme::Maven.compare(&deep, &deeper),
            Equal
        );
    }
}
