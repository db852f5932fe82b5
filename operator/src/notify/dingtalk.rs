//! DingTalk custom robot messages: the markdown rendered from a payload, and the robot's
//! JSON reply. Pure functions.

use std::fmt::Write;

use serde::Deserialize;
use serde_json::json;

use super::payload::{
    FindingSummary, ImageReport, NotificationPayload, PolicyEventPayload, TopFinding,
};
use crate::crd::{NotificationEvent, ScanPhase, Severity};

/// Images listed in one message; the rest are counted.
pub const MAX_IMAGES: usize = 10;
/// Findings listed per image.
pub const MAX_FINDINGS_PER_IMAGE: usize = 5;
/// DingTalk accepts about 20,000 bytes of markdown text; stay below with room to spare.
pub const MAX_TEXT_BYTES: usize = 15_000;

/// The robot's request body: `{"msgtype":"markdown","markdown":{"title":..,"text":..}}`.
pub fn message(payload: &NotificationPayload) -> serde_json::Value {
    let (title, text) = markdown(payload);
    json!({"msgtype": "markdown", "markdown": {"title": title, "text": text}})
}

/// The robot's request body for a policy event: a heading, then one line per item.
pub fn policy_message(payload: &PolicyEventPayload) -> serde_json::Value {
    let (icon, heading) = event_heading(payload.event);
    let title = format!(
        "{icon} {heading} ({}/{})",
        payload.rule.namespace, payload.rule.name
    );
    let mut text = format!("### {title}\n\n");
    for item in payload.items.iter().take(MAX_IMAGES) {
        let o = &item.object;
        let mut line = format!("- **{} {}/{}**", o.kind, o.namespace, o.name);
        if let Some(owner) = &o.owner {
            let _ = write!(line, " ({owner})");
        }
        if let (Some(image), Some(policy)) = (&item.image, &item.policy) {
            let _ = write!(line, ": `{image}` denied by ImagePolicy **{policy}**");
        }
        if !item.reasons.is_empty() {
            let _ = write!(line, " — {}", item.reasons.join("; "));
        }
        text.push_str(&line);
        text.push('\n');
    }
    let more = payload.items.len().saturating_sub(MAX_IMAGES) + payload.omitted as usize;
    if more > 0 {
        let _ = writeln!(text, "- … {more} more");
    }
    let text = super::redact::truncate(&text, MAX_TEXT_BYTES);
    json!({"msgtype": "markdown", "markdown": {"title": title, "text": text}})
}

fn event_heading(event: NotificationEvent) -> (&'static str, &'static str) {
    match event {
        NotificationEvent::ScanCompleted => ("✅", "Scan completed"),
        NotificationEvent::ScanFailed => ("❌", "Scan failed"),
        NotificationEvent::NewFindings => ("🆕", "New findings"),
        NotificationEvent::ExceptionExpired => ("⌛", "Vulnerability exception expired"),
        NotificationEvent::PolicyViolation => ("🚫", "Running image now denied"),
        NotificationEvent::FixCompleted => ("🔧", "Image fixed"),
        NotificationEvent::FixFailed => ("❌", "Image fix failed"),
    }
}

fn severity_icon(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "🔴",
        Severity::High => "🟠",
        Severity::Medium => "🟡",
        Severity::Low => "🔵",
        Severity::Unknown => "⚪",
    }
}

fn counts_line(s: &FindingSummary) -> String {
    if s.total == 0 {
        return "no findings".to_string();
    }
    let mut parts = Vec::new();
    for (sev, label, n) in [
        (Severity::Critical, "Critical", s.critical),
        (Severity::High, "High", s.high),
        (Severity::Medium, "Medium", s.medium),
        (Severity::Low, "Low", s.low),
        (Severity::Unknown, "Unknown", s.unknown),
    ] {
        let n = if matches!(sev, Severity::Critical | Severity::High) && n > 0 {
            format!("**{n}**")
        } else {
            n.to_string()
        };
        parts.push(format!("{} {label} {n}", severity_icon(sev)));
    }
    let fixes = match s.fixable {
        0 => "no fixes available".to_string(),
        n => format!("🔧 {n} fixable"),
    };
    format!("{} · {fixes}", parts.join(" · "))
}

fn finding_line(f: &TopFinding) -> String {
    let mut line = format!("- {} **{}**", severity_icon(f.severity), f.id);
    if let Some(p) = &f.package {
        let _ = write!(line, " {p}");
        if let Some(v) = &f.version {
            let _ = write!(line, " {v}");
        }
    }
    match &f.fixed_version {
        Some(fix) => {
            let _ = write!(line, " → fixed in {fix}");
        }
        None if f.package.is_some() => line.push_str(" (no fix)"),
        None => {}
    }
    line
}

fn image_section(i: &ImageReport) -> String {
    let mut s = String::new();
    let digest = i
        .short_digest
        .as_deref()
        .map(|d| format!(" `@{d}`"))
        .unwrap_or_default();
    if i.phase == ScanPhase::Failed {
        let _ = write!(s, "❌ **{}**{digest} — not scanned", i.image);
        if let Some(m) = &i.message {
            let _ = write!(s, ": {m}");
        }
        s.push_str("\n\n");
        return s;
    }
    match &i.result_url {
        Some(url) => {
            let _ = write!(s, "**[{}]({url})**{digest}\n\n", i.image);
        }
        None => {
            let _ = write!(s, "**{}**{digest}\n\n", i.image);
        }
    }
    match &i.summary {
        Some(summary) => {
            let _ = write!(s, "{}\n\n", counts_line(summary));
        }
        None => s.push_str("no result\n\n"),
    }
    for f in i.top_findings.iter().take(MAX_FINDINGS_PER_IMAGE) {
        s.push_str(&finding_line(f));
        s.push('\n');
    }
    let listed = i.top_findings.len().min(MAX_FINDINGS_PER_IMAGE) as u32;
    if i.total_findings > listed && listed > 0 {
        let _ = writeln!(s, "- … {} more", i.total_findings - listed);
    }
    if !i.top_findings.is_empty() {
        s.push('\n');
    }
    s
}

/// Title and markdown text of the DingTalk message for a payload: the event, rule and
/// task, the totals by severity, then per image (worst first) its tag, short digest,
/// counts and worst findings with their fixed versions.
pub fn markdown(p: &NotificationPayload) -> (String, String) {
    let (icon, heading) = event_heading(p.event);
    let worst = match p.summary.worst() {
        Some(Severity::Critical) => format!(" ({} critical)", p.summary.critical),
        Some(Severity::High) => format!(" ({} high)", p.summary.high),
        _ => String::new(),
    };
    let title = format!("imagewarden: {heading} · {}{worst}", p.rule.name);

    let mut text = String::new();
    let _ = write!(text, "### {icon} {heading} · {}\n\n", p.rule.name);
    let _ = write!(
        text,
        "Task **{}** ({:?}) in namespace {} · {} image(s): {} scanned, {} failed\n\n",
        p.task.name,
        p.task.trigger,
        p.rule.namespace,
        p.task.total.max(p.images.len() as u32),
        p.task.succeeded,
        p.task.failed
    );
    let _ = write!(text, "**Total** {}\n\n", counts_line(&p.summary));
    let mut shown = 0;
    for image in p.images.iter().take(MAX_IMAGES) {
        let section = image_section(image);
        // Keep room for the closing line.
        if text.len() + section.len() + 200 > MAX_TEXT_BYTES {
            break;
        }
        text.push_str("---\n\n");
        text.push_str(&section);
        shown += 1;
    }
    if p.images.len() > shown {
        let _ = write!(
            text,
            "---\n\n… and {} more image(s)\n\n",
            p.images.len() - shown
        );
    }
    // With result links, each image's name opens its findings; without, readers get the
    // kubectl hint.
    if !p.images.iter().any(|i| i.result_url.is_some()) {
        let _ = write!(
            text,
            "> `kubectl get scanresults -n {}` for all findings",
            p.rule.namespace
        );
    }
    (title, text)
}

/// DingTalk's reply to a robot message.
#[derive(Deserialize, Debug, PartialEq, Eq)]
pub struct Reply {
    pub errcode: i64,
    #[serde(default)]
    pub errmsg: String,
}

/// DingTalk's error code for "sending too fast" (the robot's rate limit): worth a retry.
pub const ERRCODE_RATE_LIMITED: i64 = 130101;

/// What a 2xx DingTalk reply means: `Ok(())` when `errcode` is 0, else the error as
/// `(errcode, errmsg)`. A body that is not DingTalk's JSON is an error with code -1.
pub fn parse_reply(body: &str) -> Result<(), (i64, String)> {
    match serde_json::from_str::<Reply>(body) {
        Ok(Reply { errcode: 0, .. }) => Ok(()),
        Ok(Reply { errcode, errmsg }) => Err((errcode, errmsg)),
        Err(_) => Err((-1, format!("unexpected reply: {body}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ImageProgress, NotificationEvent, Severity};
    use crate::notify::payload::build_payload;
    use crate::notify::payload::tests::{finding, sample_result, sample_rule, sample_task};

    #[test]
    fn markdown_shows_image_digest_counts_and_worst_findings_first() {
        let r = sample_result(
            "team-a-api-3b5e2a7c6f1d",
            "team-a/api",
            vec![
                finding("CVE-2023-0001", Severity::High, None),
                finding("CVE-2022-1292", Severity::Critical, Some("1.1.1o-1")),
            ],
        );
        let task = sample_task(vec![
            ImageProgress {
                image: "registry.example.com/team-a/api:v1.4.2".into(),
                phase: ScanPhase::Completed,
                result_name: Some("team-a-api-3b5e2a7c6f1d".into()),
                ..Default::default()
            },
            ImageProgress {
                image: "registry.example.com/team-a/old:v0".into(),
                phase: ScanPhase::Failed,
                message: Some("manifest unknown".into()),
                ..Default::default()
            },
        ]);
        let p = build_payload(
            &sample_rule(),
            &task,
            &[r],
            NotificationEvent::ScanFailed,
            10,
        );
        let (title, text) = markdown(&p);
        assert_eq!(
            title,
            "imagewarden: Scan failed · team-a-releases (1 critical)"
        );
        assert!(
            text.starts_with("### ❌ Scan failed · team-a-releases\n\n"),
            "{text}"
        );
        assert!(text.contains("**registry.example.com/team-a/api:v1.4.2** `@3b5e2a7c6f1d`"));
        assert!(text.contains("🔴 Critical **1** · 🟠 High **1** · 🟡 Medium 0"));
        assert!(text.contains("🔧 1 fixable"));
        let critical = text
            .find("- 🔴 **CVE-2022-1292** openssl 1.1.1n-0+deb11u1 → fixed in 1.1.1o-1")
            .expect(&text);
        let high = text
            .find("- 🟠 **CVE-2023-0001** openssl 1.1.1n-0+deb11u1 (no fix)")
            .expect(&text);
        assert!(critical < high);
        assert!(text
            .contains("❌ **registry.example.com/team-a/old:v0** — not scanned: manifest unknown"));
        let body = message(&p);
        assert_eq!(body["msgtype"], "markdown");
        assert_eq!(body["markdown"]["title"], title);
    }

    #[test]
    fn long_messages_are_cut_and_counted() {
        let results: Vec<_> = (0..40)
            .map(|i| {
                sample_result(
                    &format!("r{i}"),
                    &format!("team-a/app{i}"),
                    (0..30)
                        .map(|j| finding(&format!("CVE-2024-{j:05}"), Severity::High, None))
                        .collect(),
                )
            })
            .collect();
        let p = build_payload(
            &sample_rule(),
            &sample_task(vec![]),
            &results,
            NotificationEvent::ScanCompleted,
            10,
        );
        let (_, text) = markdown(&p);
        assert!(text.len() <= MAX_TEXT_BYTES);
        assert!(text.contains("… and 30 more image(s)"), "{text}");
        assert!(text.contains("- … 25 more"));
    }

    #[test]
    fn replies_are_parsed_as_dingtalk_sends_them() {
        assert_eq!(parse_reply(r#"{"errcode":0,"errmsg":"ok"}"#), Ok(()));
        assert_eq!(
            parse_reply(r#"{"errcode":310000,"errmsg":"sign not match"}"#),
            Err((310000, "sign not match".into()))
        );
        assert!(parse_reply("<html>").is_err());
    }
}
