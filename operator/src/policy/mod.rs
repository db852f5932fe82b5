//! ImagePolicy verdicts: what a policy says of an image, given its scan result, the
//! VulnerabilityExceptions that apply and the time. Pure functions; the verdict
//! controller ([`verdicts`]) records them ahead of time and the admission webhook
//! ([`admission`]) looks them up.

pub mod admission;
pub mod image;
pub mod server;
pub mod stats;
pub mod tls;
pub mod unscanned;
pub mod verdicts;

use chrono::{DateTime, Utc};

use crate::crd::{
    DenyLogic, DenyRules, Finding, FindingClass, ImagePolicySpec, ImageScanResult, PolicyMode,
    Severity, SeverityCounts, SeverityThreshold, UnscannedAction, VulnerabilityException,
};

pub use image::{pattern_matches, ImageName};

/// Reasons kept in a verdict (the status and the admission message name the top ones).
pub const MAX_REASONS: usize = 10;
/// Characters of a finding's id, package or version quoted in a reason.
const MAX_FIELD_CHARS: usize = 96;

/// What a policy says of an image, before its `mode` is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Nothing to object to.
    Pass,
    /// Admitted with a warning whatever the mode (`unscanned: Warn`).
    Warn,
    /// A violation: denied in `Enforce`, warned in `Warn`, counted in `Audit`.
    Violation,
}

impl Outcome {
    /// The spelling in `ImageScanResult.status.policies[].verdict`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "Pass",
            Outcome::Warn => "Warn",
            Outcome::Violation => "Violation",
        }
    }

    /// Parses the status spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Pass" => Outcome::Pass,
            "Warn" => Outcome::Warn,
            "Violation" => Outcome::Violation,
            _ => return None,
        })
    }
}

/// A policy's verdict on one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    /// Why, most important first; at most [`MAX_REASONS`].
    pub reasons: Vec<String>,
    /// When the verdict stops holding: the result ages past `maxResultAge`, or an
    /// exception it relied on (or that was about to apply) expires.
    pub valid_until: Option<DateTime<Utc>>,
}

/// What is known of an image.
#[derive(Clone, Copy, Debug)]
pub enum Subject<'a> {
    /// The image's ImageScanResult.
    Scanned(&'a ImageScanResult),
    /// No result, and no failed scan either.
    Unscanned,
    /// No result, and its last scan failed (the message says why).
    ScanFailed(&'a str),
}

/// Facts of the moment a verdict is computed for.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    pub now: DateTime<Utc>,
    /// Version of the vulnerability database in use; results made with another are stale.
    pub database_version: Option<&'a str>,
}

/// Whether a policy spec is usable; the error says what to change.
pub fn validate(spec: &ImagePolicySpec) -> Result<(), String> {
    max_result_age(spec)?;
    for pattern in &spec.match_.images {
        image::validate_pattern(pattern).map_err(|e| format!("spec.match.images: {e}"))?;
    }
    if spec.deny.ids.len() > 256 {
        return Err("spec.deny.ids: at most 256 ids".into());
    }
    if spec.deny.count == 0 {
        return Err("spec.deny.count must be at least 1".into());
    }
    Ok(())
}

/// `spec.maxResultAge`, parsed.
pub fn max_result_age(spec: &ImagePolicySpec) -> Result<Option<chrono::Duration>, String> {
    let Some(text) = &spec.max_result_age else {
        return Ok(None);
    };
    let std = crate::config::parse_duration(text).map_err(|e| format!("spec.maxResultAge: {e}"))?;
    chrono::Duration::from_std(std)
        .ok()
        .filter(|d| *d <= chrono::Duration::days(3650))
        .map(Some)
        .ok_or_else(|| format!("spec.maxResultAge {text:?} is longer than ten years"))
}

/// Whether `exception` is live at `now`.
pub fn exception_live(exception: &VulnerabilityException, now: DateTime<Utc>) -> bool {
    crate::to_chrono(&exception.spec.expires) > now
}

/// Whether a live exception accepts `finding` of `image`.
fn excepts(exception: &VulnerabilityException, finding: &Finding, image: &ImageName) -> bool {
    exception.spec.ids.iter().any(|e| {
        e.id.eq_ignore_ascii_case(&finding.id)
            && e.package
                .as_deref()
                .is_none_or(|p| finding.package.as_deref() == Some(p))
            && (e.images.is_empty() || e.images.iter().any(|p| pattern_matches(p, image)))
    })
}

/// The live exceptions among `exceptions` that accept `finding`, if any.
fn excepted_by<'a>(
    exceptions: &[&'a VulnerabilityException],
    finding: &Finding,
    image: &ImageName,
) -> Option<&'a VulnerabilityException> {
    exceptions
        .iter()
        .copied()
        .find(|e| excepts(e, finding, image))
}

/// Findings of `result` accepted by live `exceptions`, counted by severity.
pub fn excepted_counts(
    result: &ImageScanResult,
    exceptions: &[&VulnerabilityException],
    now: DateTime<Utc>,
) -> SeverityCounts {
    let live: Vec<&VulnerabilityException> = exceptions
        .iter()
        .copied()
        .filter(|e| exception_live(e, now))
        .collect();
    let image = ImageName::of_result(result);
    let mut counts = SeverityCounts::default();
    for f in result.status.iter().flat_map(|s| &s.findings) {
        if excepted_by(&live, f, &image).is_some() {
            counts.add(f.severity);
        }
    }
    counts
}

fn at_or_above(severity: Severity, threshold: SeverityThreshold) -> bool {
    let limit = match threshold {
        SeverityThreshold::Critical => Severity::Critical,
        SeverityThreshold::High => Severity::High,
        SeverityThreshold::Medium => Severity::Medium,
        SeverityThreshold::Low => Severity::Low,
    };
    severity != Severity::Unknown && severity <= limit
}

fn counted_at_or_above(counts: &SeverityCounts, threshold: SeverityThreshold) -> u32 {
    let mut n = counts.critical;
    if threshold >= SeverityThreshold::High {
        n += counts.high;
    }
    if threshold >= SeverityThreshold::Medium {
        n += counts.medium;
    }
    if threshold >= SeverityThreshold::Low {
        n += counts.low;
    }
    n
}

fn is_vulnerability(f: &Finding) -> bool {
    matches!(
        f.class,
        FindingClass::SystemVulnerability | FindingClass::ApplicationVulnerability
    )
}

fn clip(s: &str) -> String {
    let mut out: String = s
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_FIELD_CHARS)
        .collect();
    if s.chars().count() > MAX_FIELD_CHARS {
        out.push('…');
    }
    out
}

/// `CVE-2022-1292 (Critical, openssl 1.1.1n, fixed in 1.1.1o)`.
pub fn describe(f: &Finding) -> String {
    let mut parts = vec![format!("{:?}", f.severity)];
    if let Some(p) = &f.package {
        match &f.version {
            Some(v) => parts.push(format!("{} {}", clip(p), clip(v))),
            None => parts.push(clip(p)),
        }
    }
    match &f.fixed_version {
        Some(v) => parts.push(format!("fixed in {}", clip(v))),
        None if is_vulnerability(f) => parts.push("no fix".into()),
        None => {}
    }
    format!("{} ({})", clip(&f.id), parts.join(", "))
}

/// One condition of `deny`, evaluated.
struct Condition {
    holds: bool,
    reason: String,
    findings: Vec<String>,
}

/// The policy's verdict on an image (see the crate docs of [`crate::crd::ImagePolicy`]).
///
/// Counts come from the result's summary, so they are exact even when its findings list
/// was cut; findings that were cut cannot be matched against exceptions or `onlyFixable`
/// and so count as fixable and not excepted (the verdict errs towards denying).
pub fn evaluate(
    policy: &ImagePolicySpec,
    subject: Subject<'_>,
    exceptions: &[&VulnerabilityException],
    facts: Facts<'_>,
) -> Verdict {
    let unscanned_outcome = |action: UnscannedAction| match action {
        UnscannedAction::Deny => Outcome::Violation,
        UnscannedAction::Warn => Outcome::Warn,
        UnscannedAction::Allow => Outcome::Pass,
    };
    let result = match subject {
        Subject::Unscanned => {
            return Verdict {
                outcome: unscanned_outcome(policy.unscanned),
                reasons: vec!["the image has not been scanned".into()],
                valid_until: None,
            }
        }
        Subject::ScanFailed(why) => {
            return Verdict {
                outcome: unscanned_outcome(policy.scan_failed),
                reasons: vec![format!("the image's scan failed: {}", clip(why))],
                valid_until: None,
            }
        }
        Subject::Scanned(result) => result,
    };
    let Some(status) = result.status.as_ref().filter(|s| s.scan_time.is_some()) else {
        return Verdict {
            outcome: unscanned_outcome(policy.unscanned),
            reasons: vec!["the image's result holds no scan yet".into()],
            valid_until: None,
        };
    };
    let now = facts.now;
    let image = ImageName::of_result(result);
    let live: Vec<&VulnerabilityException> = exceptions
        .iter()
        .copied()
        .filter(|e| exception_live(e, now))
        .collect();
    // The verdict changes when a live exception expires.
    let mut valid_until = live.iter().map(|e| crate::to_chrono(&e.spec.expires)).min();

    let deny = &policy.deny;
    let mut violations: Vec<String> = Vec::new();
    let mut named: Vec<String> = Vec::new();

    // Ids that always deny.
    let listed: Vec<&Finding> = status
        .findings
        .iter()
        .filter(|f| deny.ids.iter().any(|id| id.eq_ignore_ascii_case(&f.id)))
        .filter(|f| excepted_by(&live, f, &image).is_none())
        .collect();
    if !listed.is_empty() {
        violations.push(format!(
            "{} finding(s) on the policy's deny list",
            listed.len()
        ));
        named.extend(listed.iter().map(|f| describe(f)));
    }

    let conditions = [
        deny.severity
            .map(|t| vulnerability_condition(deny, t, status, &live, &image)),
        deny.baseline_severity
            .map(|t| baseline_condition(t, status, &live, &image)),
        deny.malicious
            .then(|| malicious_condition(status, &live, &image)),
    ];
    let set: Vec<&Condition> = conditions.iter().flatten().collect();
    let denied = match deny.logic {
        DenyLogic::Or => set.iter().any(|c| c.holds),
        DenyLogic::And => !set.is_empty() && set.iter().all(|c| c.holds),
    };
    if denied {
        for c in set.iter().filter(|c| c.holds) {
            violations.push(c.reason.clone());
        }
        for c in set.iter().filter(|c| c.holds) {
            named.extend(c.findings.iter().cloned());
        }
    }

    let mut outcome = if violations.is_empty() {
        Outcome::Pass
    } else {
        Outcome::Violation
    };

    // A stale result is handled like no result, on top of its findings.
    let mut stale = Vec::new();
    if let (Some(current), Some(made_with)) =
        (facts.database_version, status.database_version.as_deref())
    {
        if current != made_with {
            stale.push("the result was made with an older vulnerability database".to_string());
        }
    }
    match max_result_age(policy) {
        Ok(Some(age)) => {
            let scanned = status.scan_time.as_ref().map(crate::to_chrono);
            let expires = scanned.map(|t| t + age);
            match expires {
                Some(at) if at <= now => stale.push(format!(
                    "the result is older than maxResultAge {}",
                    policy.max_result_age.as_deref().unwrap_or_default()
                )),
                Some(at) => valid_until = Some(valid_until.map_or(at, |v| v.min(at))),
                None => {}
            }
        }
        Ok(None) => {}
        // Refused by validation; a policy that slipped through judges as if stale.
        Err(e) => stale.push(e),
    }
    let mut reasons = Vec::new();
    if !stale.is_empty() {
        outcome = outcome.max(unscanned_outcome(policy.unscanned));
        reasons.extend(stale);
    }
    reasons.extend(violations);
    reasons.extend(named);
    reasons.dedup();
    reasons.truncate(MAX_REASONS);
    if outcome == Outcome::Pass {
        reasons.clear();
    }
    Verdict {
        outcome,
        reasons,
        valid_until,
    }
}

/// Listed findings of `class` at or above the threshold that exceptions accept or that
/// `onlyFixable` leaves out, and the most severe ones that still count.
fn discount<'a>(
    findings: impl Iterator<Item = &'a Finding>,
    threshold: SeverityThreshold,
    only_fixable: bool,
    live: &[&VulnerabilityException],
    image: &ImageName,
) -> (u32, Vec<&'a Finding>) {
    let mut discounted = 0;
    let mut counting = Vec::new();
    for f in findings.filter(|f| at_or_above(f.severity, threshold)) {
        if excepted_by(live, f, image).is_some() || (only_fixable && f.fixed_version.is_none()) {
            discounted += 1;
        } else {
            counting.push(f);
        }
    }
    (discounted, counting)
}

fn top(findings: &[&Finding]) -> Vec<String> {
    findings
        .iter()
        .take(MAX_REASONS)
        .map(|f| describe(f))
        .collect()
}

fn threshold_name(t: SeverityThreshold) -> String {
    format!("{t:?}")
}

fn vulnerability_condition(
    deny: &DenyRules,
    threshold: SeverityThreshold,
    status: &crate::crd::ImageScanResultStatus,
    live: &[&VulnerabilityException],
    image: &ImageName,
) -> Condition {
    let summary = &status.summary;
    let total = counted_at_or_above(&summary.system_vulnerabilities, threshold)
        + counted_at_or_above(&summary.application_vulnerabilities, threshold);
    let (discounted, counting) = discount(
        status.findings.iter().filter(|f| is_vulnerability(f)),
        threshold,
        deny.only_fixable,
        live,
        image,
    );
    let n = total.saturating_sub(discounted);
    let fixable = if deny.only_fixable { "fixable " } else { "" };
    Condition {
        holds: n >= deny.count,
        reason: format!(
            "{n} {fixable}vulnerabilit{} at or above {} (the policy denies {} or more)",
            if n == 1 { "y" } else { "ies" },
            threshold_name(threshold),
            deny.count
        ),
        findings: top(&counting),
    }
}

fn baseline_condition(
    threshold: SeverityThreshold,
    status: &crate::crd::ImageScanResultStatus,
    live: &[&VulnerabilityException],
    image: &ImageName,
) -> Condition {
    let total = counted_at_or_above(&status.summary.baseline_risks, threshold);
    let (discounted, counting) = discount(
        status
            .findings
            .iter()
            .filter(|f| f.class == FindingClass::BaselineRisk),
        threshold,
        false,
        live,
        image,
    );
    let n = total.saturating_sub(discounted);
    Condition {
        holds: n >= 1,
        reason: format!(
            "{n} baseline risk(s) at or above {}",
            threshold_name(threshold)
        ),
        findings: top(&counting),
    }
}

fn malicious_condition(
    status: &crate::crd::ImageScanResultStatus,
    live: &[&VulnerabilityException],
    image: &ImageName,
) -> Condition {
    let total = status.summary.malicious_samples.total();
    let mut discounted = 0;
    let mut counting = Vec::new();
    for f in status
        .findings
        .iter()
        .filter(|f| f.class == FindingClass::MaliciousSample)
    {
        if excepted_by(live, f, image).is_some() {
            discounted += 1;
        } else {
            counting.push(f);
        }
    }
    let n = total.saturating_sub(discounted);
    Condition {
        holds: n >= 1,
        reason: format!("{n} malicious sample(s) or package(s)"),
        findings: top(&counting),
    }
}

/// What admission does with a verdict under the policy's mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Admit,
    Warn,
    Deny,
    /// Admitted, counted as a violation `Enforce` would deny.
    Audit,
}

/// The admission action for `outcome` under `mode`.
pub fn action(mode: PolicyMode, outcome: Outcome) -> Action {
    match (mode, outcome) {
        (_, Outcome::Pass) => Action::Admit,
        (PolicyMode::Audit, _) => Action::Audit,
        (PolicyMode::Enforce, Outcome::Violation) => Action::Deny,
        (PolicyMode::Enforce | PolicyMode::Warn, _) => Action::Warn,
    }
}

#[cfg(test)]
mod tests;
