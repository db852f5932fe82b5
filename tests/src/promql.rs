//! The metric names a PromQL expression reads, and the names an OpenMetrics exposition
//! offers, so tests can check that dashboards and alerts query only metrics that exist.

use std::collections::BTreeSet;

/// Words of PromQL that are not metric names where they stand alone (besides
/// [`LABEL_LISTS`]).
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN", "atan2",
];

/// Modifiers followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Index just past the bracket that closes the one at `open` (`(`, `{` or `[`), skipping
/// string literals; the end of `s` when it is not closed.
fn closing(s: &[char], open: usize) -> usize {
    let (o, c) = match s[open] {
        '(' => ('(', ')'),
        '{' => ('{', '}'),
        _ => ('[', ']'),
    };
    let mut depth = 0;
    let mut i = open;
    while i < s.len() {
        match s[i] {
            '"' | '\'' | '`' => i = string_end(s, i),
            ch if ch == o => depth += 1,
            ch if ch == c => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    s.len()
}

/// Index of the quote that ends the string starting at `start`.
fn string_end(s: &[char], start: usize) -> usize {
    let quote = s[start];
    let mut i = start + 1;
    while i < s.len() && s[i] != quote {
        if s[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i
}

fn is_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_part(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The metric names `expr` selects: identifiers that are not functions, keywords, label
/// names (in `{...}` matchers or `by (...)`-style lists), durations, numbers or Grafana
/// variables. `label_values(metric, label)` (a Grafana variable query) reads `metric`.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let s: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == '"' || c == '\'' || c == '`' {
            i = string_end(&s, i) + 1;
        } else if c == '{' || c == '[' {
            i = closing(&s, i);
        } else if c == '$' {
            // A Grafana variable: `$name` or `${name}`.
            i += 1;
            if s.get(i) == Some(&'{') {
                i = closing(&s, i);
            }
            while i < s.len() && is_part(s[i]) {
                i += 1;
            }
        } else if c.is_ascii_digit() || (c == '.' && s.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number or a duration (`1h`, `0.95`, `1e3`).
            while i < s.len() && (is_part(s[i]) || s[i] == '.') {
                i += 1;
            }
        } else if is_start(c) {
            let start = i;
            while i < s.len() && is_part(s[i]) {
                i += 1;
            }
            let word: String = s[start..i].iter().collect();
            let mut next = i;
            while next < s.len() && s[next].is_whitespace() {
                next += 1;
            }
            // `sum by (x) (...)`: an aggregation whose modifier comes first.
            let modified = ["by", "without"].iter().any(|m| {
                let rest: String = s[next..].iter().take(m.len() + 1).collect();
                rest.strip_prefix(m).is_some_and(|after| {
                    after.is_empty() || !is_part(after.chars().next().unwrap())
                })
            });
            let call = s.get(next) == Some(&'(') || modified;
            if call && LABEL_LISTS.contains(&word.as_str()) {
                i = closing(&s, next);
            } else if call && word == "label_values" {
                let end = closing(&s, next);
                let inner: String = s[next + 1..end.saturating_sub(1)].iter().collect();
                // Two arguments: the selector, then a label name; one: a label name.
                if let Some((selector, _label)) = split_top_level_comma(&inner) {
                    names.extend(metric_names(&selector));
                }
                i = end;
            } else if !call
                && !KEYWORDS.contains(&word.as_str())
                && !LABEL_LISTS.contains(&word.as_str())
            {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// `s` split at its last comma outside brackets and strings.
fn split_top_level_comma(s: &str) -> Option<(String, String)> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut last = None;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = string_end(&chars, i),
            '(' | '{' | '[' => {
                i = closing(&chars, i);
                continue;
            }
            ',' => last = Some(i),
            _ => {}
        }
        i += 1;
    }
    let at = last?;
    Some((
        chars[..at].iter().collect(),
        chars[at + 1..].iter().collect(),
    ))
}

/// The series names an OpenMetrics or Prometheus text exposition offers: each family's
/// name with the suffixes its type gives its samples (`_total` for counters; `_bucket`,
/// `_sum` and `_count` for histograms; ...), and every sample's name.
pub fn exposed_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count", "_created"],
                "summary" => &["", "_sum", "_count", "_created"],
                "info" => &["_info"],
                _ => &[""],
            };
            for suffix in suffixes {
                names.insert(format!("{name}{suffix}"));
            }
        } else if !line.starts_with('#') {
            let end = line.find(|c: char| !is_part(c)).unwrap_or(line.len());
            if end > 0 {
                names.insert(line[..end].to_string());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr).into_iter().collect()
    }

    #[test]
    fn functions_keywords_labels_and_durations_are_not_metrics() {
        assert_eq!(
            names(
                r#"histogram_quantile(0.95, sum by (le) (rate(a_seconds_bucket{job=~"x|y", le!="1"}[5m])))
                 / on(instance) group_left(pod) b_total offset 1h > bool 2e3 unless c"#
            ),
            ["a_seconds_bucket", "b_total", "c"]
        );
        assert_eq!(
            names(r#"sum(rate(x_total{ns=~"$namespace"}[$__rate_interval])) or vector(0)"#),
            ["x_total"]
        );
        assert_eq!(
            names("time() - max(ts_seconds) > 48 * 3600"),
            ["ts_seconds"]
        );
        assert_eq!(names(r#"{__name__="x"}"#), Vec::<String>::new());
    }

    #[test]
    fn a_grafana_label_values_query_reads_its_selector_only() {
        assert_eq!(names("label_values(m_a{x=\"1\"}, namespace)"), ["m_a"]);
        assert_eq!(names("label_values(namespace)"), Vec::<String>::new());
    }

    #[test]
    fn an_exposition_offers_each_type_s_sample_names() {
        let text = "# TYPE a counter\na_total 1\n# TYPE h histogram\nh_bucket{le=\"1\"} 0\n# TYPE g gauge\n# EOF\n";
        let n = exposed_names(text);
        for want in ["a_total", "h_bucket", "h_sum", "h_count", "g"] {
            assert!(n.contains(want), "{want} in {n:?}");
        }
        assert!(!n.contains("a"));
    }
}
