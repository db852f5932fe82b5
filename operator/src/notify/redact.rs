//! Keeping secrets out of logs, events and status: webhook URLs lose their query string
//! and user info (DingTalk's carries the `access_token`), and known secret values are
//! masked wherever they appear. Pure functions.

use std::sync::LazyLock;

use regex::Regex;

/// What a secret is replaced with.
pub const REDACTED: &str = "<redacted>";

/// `url` without user info, query or fragment: `https://host:port/path?<redacted>`.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let had_query = u.query().is_some() || u.fragment().is_some();
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            let mut s = u.to_string();
            if had_query {
                s.push('?');
                s.push_str(REDACTED);
            }
            s
        }
        // Not a URL: show nothing of it rather than risk a token.
        Err(_) => REDACTED.to_string(),
    }
}

static URL_QUERY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b([a-z][a-z0-9+.-]*://[^\s?#"'<>]*)[?#][^\s"'<>)]*"#).expect("valid regex")
});
static URL_USERINFO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@"'<>]+@"#).expect("valid regex")
});

/// Masks known secret values and the query strings and user info of any URL in a text.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Masks `secret` from now on. Very short values are ignored: masking them would
    /// mangle ordinary words without protecting anything.
    pub fn add(&mut self, secret: impl Into<String>) {
        let secret = secret.into();
        if secret.trim().len() >= 4 && !self.secrets.contains(&secret) {
            self.secrets.push(secret);
            // Longest first, so a secret containing another is masked whole.
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// `text` with every secret, URL query string and URL user info masked.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            out = out.replace(s.as_str(), REDACTED);
        }
        let out = URL_USERINFO.replace_all(&out, format!("${{1}}{REDACTED}@"));
        URL_QUERY
            .replace_all(&out, format!("${{1}}?{REDACTED}"))
            .into_owned()
    }
}

/// `text` cut to at most `max` bytes on a character boundary, marked with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_query_and_credentials() {
        assert_eq!(
            redact_url("https://oapi.dingtalk.com/robot/send?access_token=0123456789abcdef"),
            "https://oapi.dingtalk.com/robot/send?<redacted>"
        );
        assert_eq!(
            redact_url("https://user:pw@hooks.example.com:8443/a/b"),
            "https://hooks.example.com:8443/a/b"
        );
        assert_eq!(redact_url("not a url with token"), "<redacted>");
    }

    #[test]
    fn secrets_and_query_strings_are_masked_in_messages() {
        let mut r = Redactor::default();
        r.add("SECverysecret");
        r.add("ab"); // too short to mask
        let text = "error sending request for url \
            (http://127.0.0.1:9/robot/send?access_token=tok&sign=x): SECverysecret rejected, ab";
        assert_eq!(
            r.redact(text),
            "error sending request for url (http://127.0.0.1:9/robot/send?<redacted>): \
             <redacted> rejected, ab"
        );
        assert_eq!(
            r.redact("see https://u:p@h.example/x"),
            "see https://<redacted>@h.example/x"
        );
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        let cut = truncate("ééééé", 6);
        assert!(cut.len() <= 6 && cut.ends_with('…'), "{cut}");
    }
}
