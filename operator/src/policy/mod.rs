//! ImagePolicy verdicts: what a policy says of an image, given its scan result, the
//! VulnerabilityExceptions that apply and the time. Pure functions; the verdict
//! controller ([`verdicts`]) records them ahead of time and the admission webhook
//! ([`admission`]) looks them up.

pub mod admission;
pub mod certs;
pub mod running;
pub mod server;
pub mod stats;
pub mod tags;
pub mod tls;
pub mod unscanned;
pub mod verdicts;

/// Image names and references as policies see them (shared with the CLI).
pub use imagewarden_scanner::policy::image;

use chrono::{DateTime, Utc};
use imagewarden_scanner::policy::{
    self as rules, ClassCounts, Exception, PolicyClass, PolicyFinding, ScannedImage,
};

use crate::crd::{
    Finding, FindingClass, ImagePolicySpec, ImageScanResult, Severity, SeverityCounts,
    VulnerabilityException,
};

pub use imagewarden_scanner::policy::{
    action, describe, pattern_matches, Action, Facts, ImageName, Outcome, Verdict, MAX_REASONS,
};

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

/// Whether a policy spec is usable; the error says what to change.
pub fn validate(spec: &ImagePolicySpec) -> Result<(), String> {
    rules::validate(&spec.rules)?;
    for pattern in &spec.match_.images {
        rules::validate_pattern(pattern).map_err(|e| format!("spec.match.images: {e}"))?;
    }
    Ok(())
}

/// The name of a result's image.
pub fn result_image(result: &ImageScanResult) -> ImageName {
    ImageName::new(&result.spec.registry, &result.spec.repository)
}

/// Whether `exception` is live at `now`.
pub fn exception_live(exception: &VulnerabilityException, now: DateTime<Utc>) -> bool {
    as_exception(exception).live(now)
}

/// An exception as the evaluator takes it.
pub fn as_exception(exception: &VulnerabilityException) -> Exception<'_> {
    Exception {
        ids: &exception.spec.ids,
        expires: crate::to_chrono(&exception.spec.expires),
    }
}

fn severity(s: Severity) -> imagewarden_scanner::finding::Severity {
    use imagewarden_scanner::finding::Severity as S;
    match s {
        Severity::Critical => S::Critical,
        Severity::High => S::High,
        Severity::Medium => S::Medium,
        Severity::Low => S::Low,
        Severity::Unknown => S::Unknown,
    }
}

fn summary(c: &SeverityCounts) -> imagewarden_scanner::finding::SeveritySummary {
    imagewarden_scanner::finding::SeveritySummary {
        critical: c.critical.into(),
        high: c.high.into(),
        medium: c.medium.into(),
        low: c.low.into(),
        unknown: c.unknown.into(),
    }
}

fn policy_finding(f: &Finding) -> PolicyFinding<'_> {
    PolicyFinding {
        id: &f.id,
        class: match f.class {
            FindingClass::SystemVulnerability => PolicyClass::SystemVulnerability,
            FindingClass::ApplicationVulnerability => PolicyClass::ApplicationVulnerability,
            FindingClass::BaselineRisk => PolicyClass::BaselineRisk,
            FindingClass::MaliciousSample => PolicyClass::MaliciousSample,
        },
        severity: severity(f.severity),
        package: f.package.as_deref(),
        version: f.version.as_deref(),
        fixed_version: f.fixed_version.as_deref(),
    }
}

/// A result as the evaluator sees it: counts from its summary (exact even when its
/// findings were cut), the findings it lists.
pub fn scanned_image(result: &ImageScanResult) -> ScannedImage<'_> {
    let status = result.status.as_ref();
    let summary_of = |pick: fn(&crate::crd::ResultSummary) -> &SeverityCounts| {
        status
            .map(|s| summary(pick(&s.summary)))
            .unwrap_or_default()
    };
    ScannedImage {
        image: result_image(result),
        scanned_at: status
            .and_then(|s| s.scan_time.as_ref())
            .map(crate::to_chrono),
        database_version: status.and_then(|s| s.database_version.as_deref()),
        counts: ClassCounts {
            system_vulnerabilities: summary_of(|s| &s.system_vulnerabilities),
            application_vulnerabilities: summary_of(|s| &s.application_vulnerabilities),
            baseline_risks: summary_of(|s| &s.baseline_risks),
            malicious_samples: summary_of(|s| &s.malicious_samples),
        },
        findings: status
            .map(|s| s.findings.iter().map(policy_finding).collect())
            .unwrap_or_default(),
    }
}

/// Findings of `result` accepted by live `exceptions`, counted by severity.
pub fn excepted_counts(
    result: &ImageScanResult,
    exceptions: &[&VulnerabilityException],
    now: DateTime<Utc>,
) -> SeverityCounts {
    let exceptions: Vec<Exception<'_>> = exceptions.iter().map(|e| as_exception(e)).collect();
    let counts = rules::excepted_counts(&scanned_image(result), &exceptions, now);
    let narrow = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    SeverityCounts {
        critical: narrow(counts.critical),
        high: narrow(counts.high),
        medium: narrow(counts.medium),
        low: narrow(counts.low),
        unknown: narrow(counts.unknown),
    }
}

/// The policy's verdict on an image: [`imagewarden_scanner::policy::evaluate`] on the
/// result and the exceptions of its namespace.
pub fn evaluate(
    policy: &ImagePolicySpec,
    subject: Subject<'_>,
    exceptions: &[&VulnerabilityException],
    facts: Facts<'_>,
) -> Verdict {
    let exceptions: Vec<Exception<'_>> = exceptions.iter().map(|e| as_exception(e)).collect();
    let scanned;
    let subject = match subject {
        Subject::Scanned(result) => {
            scanned = scanned_image(result);
            rules::Subject::Scanned(&scanned)
        }
        Subject::Unscanned => rules::Subject::Unscanned,
        Subject::ScanFailed(why) => rules::Subject::ScanFailed(why),
    };
    rules::evaluate(&policy.rules, subject, &exceptions, facts)
}

#[cfg(test)]
mod tests;
