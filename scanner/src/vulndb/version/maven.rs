//! Maven version ordering, following Maven 3's `ComparableVersion`:
//! `alpha < beta < milestone < rc = cr < snapshot < "" = ga = final = release < sp`,
//! unknown qualifiers after `sp` in text order, and `-` starting a nested list.

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
            (Int(a), Int(b)) => super::cmp_digits(a, b),
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

/// Orders two Maven versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    parse(a).cmp(&parse(b))
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
}
