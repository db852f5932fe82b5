//! Links from notifications to one scan result (`--result-url-template`, chart value
//! `links.resultURL`): a Grafana dashboard, Harbor, or a console, for chat readers who do
//! not have `kubectl`. Parsed once at start-up; rendering is pure.

use std::fmt;
use std::str::FromStr;

/// The placeholders a template may use.
pub const PLACEHOLDERS: [&str; 5] = ["namespace", "name", "digest", "registry", "repository"];

/// Longest template accepted.
const MAX_TEMPLATE_CHARS: usize = 2048;

/// One piece of a parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Placeholder(&'static str),
}

/// A parsed `http(s)://...{namespace}...{name}...` template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultUrlTemplate {
    source: String,
    parts: Vec<Part>,
}

/// What one link is made of: the ImageScanResult and its image.
#[derive(Clone, Copy, Debug)]
pub struct ResultLink<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub digest: &'a str,
    pub registry: &'a str,
    pub repository: &'a str,
}

impl ResultUrlTemplate {
    /// Parses a template; the error says what to fix.
    pub fn parse(template: &str) -> Result<Self, String> {
        let what = "--result-url-template (chart value links.resultURL)";
        if template.chars().count() > MAX_TEMPLATE_CHARS {
            return Err(format!(
                "{what} is longer than {MAX_TEMPLATE_CHARS} characters"
            ));
        }
        let lower = template.to_ascii_lowercase();
        if !(lower.starts_with("https://") || lower.starts_with("http://")) {
            return Err(format!(
                "{what} {template:?} is not an http:// or https:// URL"
            ));
        }
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("{what} {template:?}: a '{{' is not closed by '}}'"))?;
            let key = &after[..close];
            let known = PLACEHOLDERS.iter().find(|p| **p == key).ok_or_else(|| {
                format!(
                    "{what} {template:?}: unknown placeholder {{{key}}}; use {}",
                    PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                )
            })?;
            parts.push(Part::Placeholder(known));
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("{what} {template:?}: a '}}' has no '{{'"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        // The URL with every placeholder filled must parse.
        let sample = Self {
            source: template.to_string(),
            parts: parts.clone(),
        }
        .render(&ResultLink {
            namespace: "ns",
            name: "name",
            digest: "sha256:00",
            registry: "registry.example.com",
            repository: "team/app",
        });
        reqwest::Url::parse(&sample)
            .map_err(|e| format!("{what} {template:?} is not a valid URL: {e}"))?;
        Ok(Self {
            source: template.to_string(),
            parts,
        })
    }

    /// The link to one result; every value is percent-encoded (it may come from a
    /// registry, and must not change the URL's structure).
    pub fn render(&self, link: &ResultLink) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Placeholder(p) => {
                    let value = match *p {
                        "namespace" => link.namespace,
                        "name" => link.name,
                        "digest" => link.digest,
                        "registry" => link.registry,
                        _ => link.repository,
                    };
                    percent_encode(value, &mut out);
                }
            }
        }
        out
    }
}

/// Appends `value` with every byte but the URL-unreserved ones (`A-Z a-z 0-9 - . _ ~`)
/// percent-encoded.
fn percent_encode(value: &str, out: &mut String) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

impl FromStr for ResultUrlTemplate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl fmt::Display for ResultUrlTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Sets the `resultUrl` of every image of `payload` that has a result.
pub fn link_results(
    payload: &mut super::payload::NotificationPayload,
    template: Option<&ResultUrlTemplate>,
) {
    let Some(template) = template else { return };
    let namespace = payload.rule.namespace.clone();
    for image in &mut payload.images {
        let (Some(name), Some(digest)) = (&image.result_name, &image.digest) else {
            continue;
        };
        image.result_url = Some(template.render(&ResultLink {
            namespace: &namespace,
            name,
            digest,
            registry: image.registry.as_deref().unwrap_or_default(),
            repository: image.repository.as_deref().unwrap_or_default(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> ResultLink<'static> {
        ResultLink {
            namespace: "team-a",
            name: "api-1a2b3c-0123456789ab",
            digest: "sha256:0123",
            registry: "registry.example.com:5000",
            repository: "team-a/api",
        }
    }

    #[test]
    fn placeholders_are_filled_and_encoded() {
        let t = ResultUrlTemplate::parse(
            "https://grafana.example.com/d/iw?var-ns={namespace}&var-name={name}&d={digest}&r={registry}/{repository}",
        )
        .unwrap();
        assert_eq!(
            t.render(&link()),
            "https://grafana.example.com/d/iw?var-ns=team-a&var-name=api-1a2b3c-0123456789ab&d=sha256%3A0123&r=registry.example.com%3A5000/team-a%2Fapi"
        );
    }

    #[test]
    fn a_crafted_value_cannot_change_the_url() {
        let t = ResultUrlTemplate::parse("https://console.example.com/r?name={name}").unwrap();
        let url = t.render(&ResultLink {
            name: "x&admin=true#frag",
            ..link()
        });
        assert_eq!(
            url,
            "https://console.example.com/r?name=x%26admin%3Dtrue%23frag"
        );
    }

    #[test]
    fn bad_templates_are_refused_with_what_to_fix() {
        for (template, says) in [
            (
                "grafana.example.com/{name}",
                "is not an http:// or https:// URL",
            ),
            (
                "ftp://example.com/{name}",
                "is not an http:// or https:// URL",
            ),
            ("https://example.com/{nmae}", "unknown placeholder {nmae}"),
            ("https://example.com/{name", "is not closed"),
            ("https://example.com/name}", "has no '{'"),
            ("https:// example.com/{name}", "is not a valid URL"),
        ] {
            let err = ResultUrlTemplate::parse(template).unwrap_err();
            assert!(err.contains(says), "{template}: {err}");
            assert!(err.contains("links.resultURL"), "{err}");
        }
    }
}
