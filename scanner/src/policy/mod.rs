//! Image policy verdicts: what an `ImagePolicy` says of an image, given its findings, the
//! exceptions that apply and the time. One implementation, used by the operator (verdicts
//! recorded ahead of admission) and by `imagewarden scan --policy` (offline, in CI).
//!
//! The rules of a policy ([`PolicyRules`]) are the serde shape of the `ImagePolicy` spec
//! minus its Kubernetes-only `match` (the operator's CRD flattens them in), so one YAML
//! file serves both.

pub mod file;
pub mod image;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::finding::{Severity, SeveritySummary};

pub use image::{pattern_matches, validate_pattern, ImageName, ImageReference};

/// Reasons kept in a verdict (the status and the admission message name the top ones).
pub const MAX_REASONS: usize = 10;
/// Characters of a finding's id, package or version quoted in a reason.
const MAX_FIELD_CHARS: usize = 96;
/// Most ids in `deny.ids`.
pub const MAX_DENY_IDS: usize = 256;

/// The rules of an ImagePolicy: which findings deny, what happens to images without a
/// (fresh) result, and what a violation does.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PolicyRules {
    /// Which findings make an image a violation.
    #[serde(default)]
    pub deny: DenyRules,
    /// An image with no ImageScanResult, or whose result is stale (see `maxResultAge`):
    /// `Deny` (the default, as Harbor's "prevent vulnerable images from running"),
    /// `Warn`, or `Allow`.
    #[serde(default)]
    pub unscanned: UnscannedAction,
    /// Start a ScanTask (of a ScanRule in the Pod's namespace that covers the image's
    /// repository) for an image seen at admission that has no result.
    #[serde(default)]
    pub scan_unscanned: bool,
    /// An image whose last scan failed and that has no result: `Deny` (the default),
    /// `Warn`, or `Allow`.
    #[serde(default)]
    pub scan_failed: UnscannedAction,
    /// A result older than this (`90s`, `12h`, `7d`), or made with an older vulnerability
    /// database than the operator's current one, is stale and handled as `unscanned`
    /// says, on top of its findings. Unset: results do not age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_result_age: Option<String>,
    /// `Enforce` (deny violations), `Warn` (admit them with admission warnings) or
    /// `Audit` (admit them and only count them in the status).
    #[serde(default)]
    pub mode: PolicyMode,
}

/// A severity threshold: findings at or above it count.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum SeverityThreshold {
    Critical,
    High,
    Medium,
    Low,
}

impl SeverityThreshold {
    /// The least severe [`Severity`] at or above the threshold.
    pub fn severity(self) -> Severity {
        match self {
            SeverityThreshold::Critical => Severity::Critical,
            SeverityThreshold::High => Severity::High,
            SeverityThreshold::Medium => Severity::Medium,
            SeverityThreshold::Low => Severity::Low,
        }
    }
}

/// How the vulnerability, baseline and malicious conditions combine.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum DenyLogic {
    /// Any set condition that holds denies.
    #[default]
    Or,
    /// Only all set conditions holding together deny.
    And,
}

/// Which findings make an image a violation. Conditions that are not set take no part;
/// `ids` always deny, whatever `logic` says.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DenyRules {
    /// Vulnerability condition: this many (`count`) system or application
    /// vulnerabilities at or above this severity. Unknown severities never count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<SeverityThreshold>,
    /// How many vulnerabilities at or above `severity` deny. Default 1.
    #[serde(default = "default_count")]
    #[cfg_attr(
        feature = "schema",
        schemars(default = "default_count", range(min = 1))
    )]
    pub count: u32,
    /// Count only vulnerabilities that have a fixed version.
    #[serde(default)]
    pub only_fixable: bool,
    /// Baseline condition: any baseline risk at or above this severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_severity: Option<SeverityThreshold>,
    /// Malicious condition: any malicious sample, or a known-malicious package
    /// (an OSV `MAL-` record).
    #[serde(default)]
    pub malicious: bool,
    /// How the set conditions combine: `OR` (default) or `AND`.
    #[serde(default)]
    pub logic: DenyLogic,
    /// Finding ids that always deny: CVE or advisory ids, baseline check ids
    /// (`IW-BASE-001`). At most 256.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 256)))]
    pub ids: Vec<String>,
}

fn default_count() -> u32 {
    1
}

impl Default for DenyRules {
    fn default() -> Self {
        Self {
            severity: None,
            count: default_count(),
            only_fixable: false,
            baseline_severity: None,
            malicious: false,
            logic: DenyLogic::Or,
            ids: Vec::new(),
        }
    }
}

/// What happens to an image without a usable result.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum UnscannedAction {
    /// A violation (denied in `Enforce` mode).
    #[default]
    Deny,
    /// Admitted with a warning (in `Enforce` and `Warn` modes).
    Warn,
    /// Admitted.
    Allow,
}

/// How violations are handled at admission.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum PolicyMode {
    /// Violations are denied.
    #[default]
    Enforce,
    /// Violations are admitted with admission warnings.
    Warn,
    /// Violations are admitted and counted in the status.
    Audit,
}

/// One accepted finding id of a VulnerabilityException, optionally narrowed to a package
/// and to images.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExceptedFinding {
    /// Advisory or check id (`CVE-2023-4863`, `GHSA-...`, `IW-BASE-001`).
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 256)))]
    pub id: String,
    /// Only findings of this package (exact name). Unset: any package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// Only images matching one of these patterns (`registry/repository`, `*` matches
    /// any run of characters). Empty: every image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
}

/// A VulnerabilityException as the evaluator sees it.
#[derive(Clone, Copy, Debug)]
pub struct Exception<'a> {
    pub ids: &'a [ExceptedFinding],
    pub expires: DateTime<Utc>,
}

impl Exception<'_> {
    /// Whether the exception applies at `now`.
    pub fn live(&self, now: DateTime<Utc>) -> bool {
        self.expires > now
    }

    /// Whether it accepts `finding` of `image` (expiry aside).
    fn accepts(&self, finding: &PolicyFinding<'_>, image: &ImageName) -> bool {
        self.ids.iter().any(|e| {
            e.id.eq_ignore_ascii_case(finding.id)
                && e.package
                    .as_deref()
                    .is_none_or(|p| finding.package == Some(p))
                && (e.images.is_empty() || e.images.iter().any(|p| pattern_matches(p, image)))
        })
    }
}

/// Class of a finding, as policies tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyClass {
    /// Of an operating-system package.
    SystemVulnerability,
    /// Of an application package.
    ApplicationVulnerability,
    /// A configuration risk or an exposed secret.
    BaselineRisk,
    /// A known-malicious file or package.
    MaliciousSample,
}

/// One finding, as the evaluator sees it.
#[derive(Clone, Copy, Debug)]
pub struct PolicyFinding<'a> {
    pub id: &'a str,
    pub class: PolicyClass,
    pub severity: Severity,
    pub package: Option<&'a str>,
    pub version: Option<&'a str>,
    pub fixed_version: Option<&'a str>,
}

/// Finding counts by class, exact even when the findings list was cut.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassCounts {
    pub system_vulnerabilities: SeveritySummary,
    pub application_vulnerabilities: SeveritySummary,
    pub baseline_risks: SeveritySummary,
    pub malicious_samples: SeveritySummary,
}

impl ClassCounts {
    /// Counts the findings given.
    pub fn of<'a>(findings: impl IntoIterator<Item = &'a PolicyFinding<'a>>) -> Self {
        let mut counts = ClassCounts::default();
        for f in findings {
            counts.class_mut(f.class).add(f.severity);
        }
        counts
    }

    fn class_mut(&mut self, class: PolicyClass) -> &mut SeveritySummary {
        match class {
            PolicyClass::SystemVulnerability => &mut self.system_vulnerabilities,
            PolicyClass::ApplicationVulnerability => &mut self.application_vulnerabilities,
            PolicyClass::BaselineRisk => &mut self.baseline_risks,
            PolicyClass::MaliciousSample => &mut self.malicious_samples,
        }
    }
}

/// What a scan found of an image.
#[derive(Clone, Debug)]
pub struct ScannedImage<'a> {
    /// The image (exceptions and `match.images` name images by it).
    pub image: ImageName,
    /// When it was scanned; `None`: no scan yet (judged as unscanned).
    pub scanned_at: Option<DateTime<Utc>>,
    /// Version of the vulnerability database the findings were matched against.
    pub database_version: Option<&'a str>,
    /// Exact counts, including findings cut from `findings`.
    pub counts: ClassCounts,
    /// The findings kept, most severe first.
    pub findings: Vec<PolicyFinding<'a>>,
}

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
    /// The image was scanned.
    Scanned(&'a ScannedImage<'a>),
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

/// Whether a policy's rules are usable; the error says what to change.
pub fn validate(rules: &PolicyRules) -> Result<(), String> {
    max_result_age(rules)?;
    if rules.deny.ids.len() > MAX_DENY_IDS {
        return Err(format!("spec.deny.ids: at most {MAX_DENY_IDS} ids"));
    }
    if rules.deny.count == 0 {
        return Err("spec.deny.count must be at least 1".into());
    }
    Ok(())
}

/// A duration as policies write them: `90s`, `5m`, `1h30m`, `7d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(std::time::Duration::from_secs)
            .map_err(|_| format!("invalid duration {s:?}: the number of seconds is too large"));
    }
    humantime::parse_duration(s).map_err(|e| {
        format!("invalid duration {s:?} ({e}): use e.g. 90s, 5m, 1h30m, 6h, 1d or plain seconds")
    })
}

/// `maxResultAge`, parsed.
pub fn max_result_age(rules: &PolicyRules) -> Result<Option<chrono::Duration>, String> {
    let Some(text) = &rules.max_result_age else {
        return Ok(None);
    };
    let std = parse_duration(text).map_err(|e| format!("spec.maxResultAge: {e}"))?;
    chrono::Duration::from_std(std)
        .ok()
        .filter(|d| *d <= chrono::Duration::days(3650))
        .map(Some)
        .ok_or_else(|| format!("spec.maxResultAge {text:?} is longer than ten years"))
}

/// The first of `exceptions` that accepts `finding` of `image`, if any.
fn excepted_by<'e>(
    exceptions: &[Exception<'e>],
    finding: &PolicyFinding<'_>,
    image: &ImageName,
) -> Option<Exception<'e>> {
    exceptions
        .iter()
        .copied()
        .find(|e| e.accepts(finding, image))
}

/// Findings of `scanned` accepted by the live `exceptions`, counted by severity.
pub fn excepted_counts(
    scanned: &ScannedImage<'_>,
    exceptions: &[Exception<'_>],
    now: DateTime<Utc>,
) -> SeveritySummary {
    let live: Vec<Exception<'_>> = exceptions.iter().copied().filter(|e| e.live(now)).collect();
    SeveritySummary::of(
        scanned
            .findings
            .iter()
            .filter(|f| excepted_by(&live, f, &scanned.image).is_some())
            .map(|f| f.severity),
    )
}

fn at_or_above(severity: Severity, threshold: SeverityThreshold) -> bool {
    severity != Severity::Unknown && severity >= threshold.severity()
}

fn counted_at_or_above(counts: &SeveritySummary, threshold: SeverityThreshold) -> u64 {
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

fn is_vulnerability(f: &PolicyFinding<'_>) -> bool {
    matches!(
        f.class,
        PolicyClass::SystemVulnerability | PolicyClass::ApplicationVulnerability
    )
}

/// `s` without control characters, cut to [`MAX_FIELD_CHARS`].
pub fn clip(s: &str) -> String {
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

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "Critical",
        Severity::High => "High",
        Severity::Medium => "Medium",
        Severity::Low => "Low",
        Severity::Unknown => "Unknown",
    }
}

/// `CVE-2022-1292 (Critical, openssl 1.1.1n, fixed in 1.1.1o)`.
pub fn describe(f: &PolicyFinding<'_>) -> String {
    let mut parts = vec![severity_name(f.severity).to_string()];
    if let Some(p) = f.package {
        match f.version {
            Some(v) => parts.push(format!("{} {}", clip(p), clip(v))),
            None => parts.push(clip(p)),
        }
    }
    match f.fixed_version {
        Some(v) => parts.push(format!("fixed in {}", clip(v))),
        None if is_vulnerability(f) => parts.push("no fix".into()),
        None => {}
    }
    format!("{} ({})", clip(f.id), parts.join(", "))
}

/// One condition of `deny`, evaluated.
struct Condition {
    holds: bool,
    reason: String,
    findings: Vec<String>,
}

/// The policy's verdict on an image.
///
/// Counts come from the exact [`ClassCounts`], so they hold even when the findings list
/// was cut; findings that were cut cannot be matched against exceptions or `onlyFixable`
/// and so count as fixable and not excepted (the verdict errs towards denying).
pub fn evaluate(
    rules: &PolicyRules,
    subject: Subject<'_>,
    exceptions: &[Exception<'_>],
    facts: Facts<'_>,
) -> Verdict {
    let unscanned_outcome = |action: UnscannedAction| match action {
        UnscannedAction::Deny => Outcome::Violation,
        UnscannedAction::Warn => Outcome::Warn,
        UnscannedAction::Allow => Outcome::Pass,
    };
    let unscanned = |reason: String, action: UnscannedAction| Verdict {
        outcome: unscanned_outcome(action),
        reasons: vec![reason],
        valid_until: None,
    };
    let scanned = match subject {
        Subject::Unscanned => {
            return unscanned("the image has not been scanned".into(), rules.unscanned)
        }
        Subject::ScanFailed(why) => {
            return unscanned(
                format!("the image's scan failed: {}", clip(why)),
                rules.scan_failed,
            )
        }
        Subject::Scanned(scanned) => scanned,
    };
    let Some(scanned_at) = scanned.scanned_at else {
        return unscanned(
            "the image's result holds no scan yet".into(),
            rules.unscanned,
        );
    };
    let now = facts.now;
    let image = &scanned.image;
    let live: Vec<Exception<'_>> = exceptions.iter().copied().filter(|e| e.live(now)).collect();
    // The verdict changes when a live exception expires.
    let mut valid_until = live.iter().map(|e| e.expires).min();

    let deny = &rules.deny;
    let mut violations: Vec<String> = Vec::new();
    let mut named: Vec<String> = Vec::new();

    // Ids that always deny.
    let listed: Vec<&PolicyFinding<'_>> = scanned
        .findings
        .iter()
        .filter(|f| deny.ids.iter().any(|id| id.eq_ignore_ascii_case(f.id)))
        .filter(|f| excepted_by(&live, f, image).is_none())
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
            .map(|t| vulnerability_condition(deny, t, scanned, &live)),
        deny.baseline_severity
            .map(|t| baseline_condition(t, scanned, &live)),
        deny.malicious.then(|| malicious_condition(scanned, &live)),
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
    if let (Some(current), Some(made_with)) = (facts.database_version, scanned.database_version) {
        if current != made_with {
            stale.push("the result was made with an older vulnerability database".to_string());
        }
    }
    match max_result_age(rules) {
        Ok(Some(age)) => {
            let at = scanned_at + age;
            if at <= now {
                stale.push(format!(
                    "the result is older than maxResultAge {}",
                    rules.max_result_age.as_deref().unwrap_or_default()
                ));
            } else {
                valid_until = Some(valid_until.map_or(at, |v| v.min(at)));
            }
        }
        Ok(None) => {}
        // Refused by validation; rules that slipped through judge as if stale.
        Err(e) => stale.push(e),
    }
    let mut reasons = Vec::new();
    if !stale.is_empty() {
        outcome = outcome.max(unscanned_outcome(rules.unscanned));
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

/// How many listed findings exceptions accept or `onlyFixable` leaves out, and the ones
/// that still count.
fn discount<'f, 'a>(
    findings: impl Iterator<Item = &'f PolicyFinding<'a>>,
    only_fixable: bool,
    live: &[Exception<'_>],
    image: &ImageName,
) -> (u64, Vec<&'f PolicyFinding<'a>>)
where
    'a: 'f,
{
    let mut discounted = 0;
    let mut counting = Vec::new();
    for f in findings {
        if excepted_by(live, f, image).is_some() || (only_fixable && f.fixed_version.is_none()) {
            discounted += 1;
        } else {
            counting.push(f);
        }
    }
    (discounted, counting)
}

fn top(findings: &[&PolicyFinding<'_>]) -> Vec<String> {
    findings
        .iter()
        .take(MAX_REASONS)
        .map(|f| describe(f))
        .collect()
}

fn vulnerability_condition(
    deny: &DenyRules,
    threshold: SeverityThreshold,
    scanned: &ScannedImage<'_>,
    live: &[Exception<'_>],
) -> Condition {
    let counts = &scanned.counts;
    let total = counted_at_or_above(&counts.system_vulnerabilities, threshold)
        + counted_at_or_above(&counts.application_vulnerabilities, threshold);
    let (discounted, counting) = discount(
        scanned
            .findings
            .iter()
            .filter(|f| is_vulnerability(f) && at_or_above(f.severity, threshold)),
        deny.only_fixable,
        live,
        &scanned.image,
    );
    let n = total.saturating_sub(discounted);
    let fixable = if deny.only_fixable { "fixable " } else { "" };
    Condition {
        holds: n >= u64::from(deny.count),
        reason: format!(
            "{n} {fixable}vulnerabilit{} at or above {threshold:?} (the policy denies {} or more)",
            if n == 1 { "y" } else { "ies" },
            deny.count
        ),
        findings: top(&counting),
    }
}

/// A condition that holds on any one finding `wanted` picks out of `total` that no
/// exception accepts.
fn any_condition(
    scanned: &ScannedImage<'_>,
    live: &[Exception<'_>],
    total: u64,
    wanted: impl Fn(&PolicyFinding<'_>) -> bool,
    reason: impl FnOnce(u64) -> String,
) -> Condition {
    let (discounted, counting) = discount(
        scanned.findings.iter().filter(|f| wanted(f)),
        false,
        live,
        &scanned.image,
    );
    let n = total.saturating_sub(discounted);
    Condition {
        holds: n >= 1,
        reason: reason(n),
        findings: top(&counting),
    }
}

fn baseline_condition(
    threshold: SeverityThreshold,
    scanned: &ScannedImage<'_>,
    live: &[Exception<'_>],
) -> Condition {
    any_condition(
        scanned,
        live,
        counted_at_or_above(&scanned.counts.baseline_risks, threshold),
        |f| f.class == PolicyClass::BaselineRisk && at_or_above(f.severity, threshold),
        |n| format!("{n} baseline risk(s) at or above {threshold:?}"),
    )
}

fn malicious_condition(scanned: &ScannedImage<'_>, live: &[Exception<'_>]) -> Condition {
    any_condition(
        scanned,
        live,
        scanned.counts.malicious_samples.total(),
        |f| f.class == PolicyClass::MaliciousSample,
        |n| format!("{n} malicious sample(s) or package(s)"),
    )
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

impl Action {
    /// The metric label and status spelling: `allowed`, `warned`, `denied`, `audited`.
    pub fn label(self) -> &'static str {
        match self {
            Action::Admit => "allowed",
            Action::Warn => "warned",
            Action::Deny => "denied",
            Action::Audit => "audited",
        }
    }
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
