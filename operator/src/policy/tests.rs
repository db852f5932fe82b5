//! One test per rule of [`evaluate`], on findings as the scanner records them for real
//! advisories (Alpine's musl and openssl records, the project's baseline check ids).

use super::*;
use crate::crd::{
    DenyLogic, DenyRules, ExceptedFinding, ImagePolicySpec, ImageScanResultSpec,
    ImageScanResultStatus, PolicyMode, PolicyRules, SeverityThreshold, UnscannedAction,
    VulnerabilityExceptionSpec,
};
use chrono::TimeZone;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap()
}

fn finding(
    id: &str,
    class: FindingClass,
    severity: Severity,
    package: &str,
    fixed: Option<&str>,
) -> Finding {
    Finding {
        id: id.into(),
        class,
        severity,
        score: None,
        vector: None,
        severity_source: None,
        package: (!package.is_empty()).then(|| package.to_string()),
        version: (!package.is_empty()).then(|| "1.0".to_string()),
        fixed_version: fixed.map(str::to_string),
        title: None,
        location: None,
        link: None,
    }
}

/// musl (Critical, fixed), openssl (High, fixed), busybox (High, no fix), one Unknown,
/// a Medium baseline risk.
fn alpine_findings() -> Vec<Finding> {
    use FindingClass::*;
    vec![
        finding(
            "ALPINE-CVE-2019-14697",
            SystemVulnerability,
            Severity::Critical,
            "musl",
            Some("1.1.22-r3"),
        ),
        finding(
            "ALPINE-CVE-2019-1543",
            SystemVulnerability,
            Severity::High,
            "openssl",
            Some("1.1.1b-r1"),
        ),
        finding(
            "ALPINE-CVE-2018-20679",
            SystemVulnerability,
            Severity::High,
            "busybox",
            None,
        ),
        finding(
            "GHSA-xxxx-unknown",
            ApplicationVulnerability,
            Severity::Unknown,
            "left-pad",
            None,
        ),
        finding(
            "IW-CIS-4.1-ROOT-USER",
            BaselineRisk,
            Severity::Medium,
            "",
            None,
        ),
    ]
}

fn result_with(findings: Vec<Finding>, scanned: DateTime<Utc>) -> ImageScanResult {
    let summary = crate::crd::ResultSummary::of(&findings);
    let mut r = ImageScanResult::new(
        "alpine-abc-123",
        ImageScanResultSpec {
            registry: "registry.example.com".into(),
            repository: "team-a/alpine".into(),
            digest: "sha256:1111".into(),
            tags: vec!["v1".into()],
            tags_seen: Vec::new(),
        },
    );
    r.metadata.namespace = Some("team-a".into());
    r.status = Some(ImageScanResultStatus {
        total_findings: findings.len() as u32,
        findings,
        summary,
        scan_time: Some(crate::from_chrono(scanned)),
        database_version: Some("sha256:db1".into()),
        ..Default::default()
    });
    r
}

fn result() -> ImageScanResult {
    result_with(alpine_findings(), now() - chrono::Duration::hours(1))
}

fn policy(deny: DenyRules) -> ImagePolicySpec {
    ImagePolicySpec {
        match_: Default::default(),
        rules: PolicyRules {
            deny,
            ..Default::default()
        },
    }
}

fn threshold(severity: SeverityThreshold, count: u32) -> DenyRules {
    DenyRules {
        severity: Some(severity),
        count,
        ..Default::default()
    }
}

fn facts() -> Facts<'static> {
    Facts {
        now: now(),
        database_version: None,
    }
}

fn judge(spec: &ImagePolicySpec, r: &ImageScanResult) -> Verdict {
    evaluate(spec, Subject::Scanned(r), &[], facts())
}

fn exception(
    id: &str,
    package: Option<&str>,
    images: &[&str],
    expires: DateTime<Utc>,
) -> VulnerabilityException {
    let mut e = VulnerabilityException::new(
        "accepted",
        VulnerabilityExceptionSpec {
            ids: vec![ExceptedFinding {
                id: id.into(),
                package: package.map(str::to_string),
                images: images.iter().map(|s| s.to_string()).collect(),
            }],
            expires: crate::from_chrono(expires),
            reason: "mitigated by seccomp; SEC-123".into(),
        },
    );
    e.metadata.namespace = Some("team-a".into());
    e
}

#[test]
fn a_critical_finding_violates_a_critical_threshold() {
    let v = judge(
        &policy(threshold(SeverityThreshold::Critical, 1)),
        &result(),
    );
    assert_eq!(v.outcome, Outcome::Violation);
    assert_eq!(
        v.reasons[0],
        "1 vulnerability at or above Critical (the policy denies 1 or more)"
    );
    assert_eq!(
        v.reasons[1],
        "ALPINE-CVE-2019-14697 (Critical, musl 1.0, fixed in 1.1.22-r3)"
    );
}

#[test]
fn the_count_is_how_many_findings_at_or_above_the_threshold_deny() {
    // Critical + two High = 3 at or above High; the Unknown one never counts.
    assert_eq!(
        judge(&policy(threshold(SeverityThreshold::High, 3)), &result()).outcome,
        Outcome::Violation
    );
    assert_eq!(
        judge(&policy(threshold(SeverityThreshold::High, 4)), &result()).outcome,
        Outcome::Pass
    );
    assert_eq!(
        judge(&policy(threshold(SeverityThreshold::Low, 4)), &result()).outcome,
        Outcome::Pass,
        "baseline risks and unknown severities are not vulnerabilities at or above Low"
    );
}

#[test]
fn a_clean_image_passes_without_reasons() {
    let clean = result_with(Vec::new(), now());
    let v = judge(&policy(threshold(SeverityThreshold::Low, 1)), &clean);
    assert_eq!((v.outcome, v.reasons.len()), (Outcome::Pass, 0));
}

#[test]
fn only_fixable_leaves_out_vulnerabilities_without_a_fix() {
    let mut deny = threshold(SeverityThreshold::High, 3);
    deny.only_fixable = true;
    let v = judge(&policy(deny.clone()), &result());
    assert_eq!(
        v.outcome,
        Outcome::Pass,
        "busybox has no fix: 2 fixable remain"
    );
    deny.count = 2;
    let v = judge(&policy(deny), &result());
    assert_eq!(v.outcome, Outcome::Violation);
    assert!(v.reasons[0].starts_with("2 fixable vulnerabilities at or above High"));
    assert!(!v.reasons.iter().any(|r| r.contains("busybox")));
}

#[test]
fn or_denies_on_any_condition_and_on_all_of_them() {
    let deny = DenyRules {
        severity: Some(SeverityThreshold::Critical),
        baseline_severity: Some(SeverityThreshold::High),
        logic: DenyLogic::Or,
        ..Default::default()
    };
    // The vulnerability condition holds, the baseline one (Medium < High) does not.
    let v = judge(&policy(deny.clone()), &result());
    assert_eq!(v.outcome, Outcome::Violation);
    assert!(!v.reasons.iter().any(|r| r.contains("baseline")));
    let and = DenyRules {
        logic: DenyLogic::And,
        ..deny.clone()
    };
    assert_eq!(
        judge(&policy(and.clone()), &result()).outcome,
        Outcome::Pass
    );
    let both = DenyRules {
        baseline_severity: Some(SeverityThreshold::Medium),
        ..and
    };
    let v = judge(&policy(both), &result());
    assert_eq!(v.outcome, Outcome::Violation);
    assert!(v
        .reasons
        .iter()
        .any(|r| r == "1 baseline risk(s) at or above Medium"));
    assert!(v
        .reasons
        .iter()
        .any(|r| r.starts_with("IW-CIS-4.1-ROOT-USER (Medium")));
}

#[test]
fn listed_ids_deny_whatever_the_logic() {
    let deny = DenyRules {
        ids: vec!["alpine-cve-2018-20679".into()],
        severity: Some(SeverityThreshold::Critical),
        malicious: true,
        logic: DenyLogic::And,
        ..Default::default()
    };
    // AND of Critical and malicious does not hold (nothing malicious), the id does.
    let v = judge(&policy(deny), &result());
    assert_eq!(v.outcome, Outcome::Violation);
    assert_eq!(v.reasons[0], "1 finding(s) on the policy's deny list");
    assert_eq!(
        v.reasons[1],
        "ALPINE-CVE-2018-20679 (High, busybox 1.0, no fix)"
    );
}

#[test]
fn a_malicious_sample_or_package_denies_when_malicious_is_set() {
    let mut findings = alpine_findings();
    findings.push(finding(
        "IW-MAL-EICAR",
        FindingClass::MaliciousSample,
        Severity::Critical,
        "",
        None,
    ));
    findings.push(finding(
        "MAL-2022-4691",
        FindingClass::MaliciousSample,
        Severity::Critical,
        "colors-helper",
        None,
    ));
    let r = result_with(findings, now());
    let deny = DenyRules {
        malicious: true,
        ..Default::default()
    };
    let v = judge(&policy(deny), &r);
    assert_eq!(v.outcome, Outcome::Violation);
    assert_eq!(v.reasons[0], "2 malicious sample(s) or package(s)");
    assert_eq!(
        judge(&policy(DenyRules::default()), &r).outcome,
        Outcome::Pass,
        "malicious: false leaves the condition out"
    );
}

#[test]
fn unscanned_and_failed_images_follow_their_settings() {
    let mut spec = policy(threshold(SeverityThreshold::Critical, 1));
    for (action, outcome) in [
        (UnscannedAction::Deny, Outcome::Violation),
        (UnscannedAction::Warn, Outcome::Warn),
        (UnscannedAction::Allow, Outcome::Pass),
    ] {
        spec.rules.unscanned = action;
        let v = evaluate(&spec, Subject::Unscanned, &[], facts());
        assert_eq!(v.outcome, outcome, "{action:?}");
        spec.rules.scan_failed = action;
        spec.rules.unscanned = UnscannedAction::Allow;
        let v = evaluate(&spec, Subject::ScanFailed("manifest unknown"), &[], facts());
        assert_eq!(v.outcome, outcome, "scanFailed {action:?}");
        if outcome != Outcome::Pass {
            assert_eq!(v.reasons, ["the image's scan failed: manifest unknown"]);
        }
    }
    let v = evaluate(
        &policy(DenyRules::default()),
        Subject::Unscanned,
        &[],
        facts(),
    );
    assert_eq!(v.reasons, ["the image has not been scanned"]);
}

#[test]
fn a_result_older_than_max_result_age_is_stale() {
    let mut spec = policy(DenyRules::default());
    spec.rules.max_result_age = Some("2h".into());
    let fresh = result();
    let v = judge(&spec, &fresh);
    assert_eq!(v.outcome, Outcome::Pass);
    // Scanned an hour ago: the verdict holds one more hour.
    assert_eq!(v.valid_until, Some(now() + chrono::Duration::hours(1)));
    let old = result_with(alpine_findings(), now() - chrono::Duration::hours(3));
    let v = judge(&spec, &old);
    assert_eq!(v.outcome, Outcome::Violation);
    assert_eq!(v.reasons, ["the result is older than maxResultAge 2h"]);
    spec.rules.unscanned = UnscannedAction::Warn;
    assert_eq!(judge(&spec, &old).outcome, Outcome::Warn);
}

#[test]
fn a_result_of_an_older_database_is_stale() {
    let spec = policy(DenyRules::default());
    let current = Facts {
        now: now(),
        database_version: Some("sha256:db2"),
    };
    let v = evaluate(&spec, Subject::Scanned(&result()), &[], current);
    assert_eq!(v.outcome, Outcome::Violation);
    assert_eq!(
        v.reasons,
        ["the result was made with an older vulnerability database"]
    );
    let same = Facts {
        now: now(),
        database_version: Some("sha256:db1"),
    };
    assert_eq!(
        evaluate(&spec, Subject::Scanned(&result()), &[], same).outcome,
        Outcome::Pass
    );
}

#[test]
fn a_live_exception_takes_a_finding_out_until_it_expires() {
    let spec = policy(threshold(SeverityThreshold::Critical, 1));
    let expires = now() + chrono::Duration::days(7);
    let e = exception("ALPINE-CVE-2019-14697", None, &[], expires);
    let v = evaluate(&spec, Subject::Scanned(&result()), &[&e], facts());
    assert_eq!(v.outcome, Outcome::Pass);
    assert_eq!(
        v.valid_until,
        Some(expires),
        "the verdict changes at expiry"
    );
    let expired = exception(
        "ALPINE-CVE-2019-14697",
        None,
        &[],
        now() - chrono::Duration::seconds(1),
    );
    let v = evaluate(&spec, Subject::Scanned(&result()), &[&expired], facts());
    assert_eq!(v.outcome, Outcome::Violation);
}

#[test]
fn an_exception_narrowed_to_a_package_or_images_applies_only_there() {
    let spec = policy(threshold(SeverityThreshold::Critical, 1));
    let later = now() + chrono::Duration::days(1);
    let other_package = exception("ALPINE-CVE-2019-14697", Some("openssl"), &[], later);
    let other_image = exception(
        "ALPINE-CVE-2019-14697",
        Some("musl"),
        &["registry.example.com/team-b/*"],
        later,
    );
    for e in [&other_package, &other_image] {
        let v = evaluate(&spec, Subject::Scanned(&result()), &[e], facts());
        assert_eq!(v.outcome, Outcome::Violation);
    }
    let this_image = exception(
        "ALPINE-CVE-2019-14697",
        Some("musl"),
        &["registry.example.com/team-a/*"],
        later,
    );
    let v = evaluate(&spec, Subject::Scanned(&result()), &[&this_image], facts());
    assert_eq!(v.outcome, Outcome::Pass);
}

#[test]
fn excepted_findings_are_counted_by_severity_and_only_while_live() {
    let r = result();
    let later = now() + chrono::Duration::days(1);
    let e = exception("ALPINE-CVE-2019-1543", None, &[], later);
    let counts = excepted_counts(&r, &[&e], now());
    assert_eq!((counts.high, counts.total()), (1, 1));
    let counts = excepted_counts(&r, &[&e], later + chrono::Duration::seconds(1));
    assert_eq!(counts.total(), 0);
}

#[test]
fn findings_cut_from_a_large_result_still_count() {
    // 40 Critical findings in the summary, only 2 listed (the object budget cut the
    // rest); an exception for a listed one leaves 39.
    let listed = alpine_findings()[..1].to_vec();
    let mut r = result_with(listed, now());
    let status = r.status.as_mut().unwrap();
    status.summary.system_vulnerabilities.critical = 40;
    status.summary.critical = 40;
    status.truncated = true;
    let e = exception(
        "ALPINE-CVE-2019-14697",
        None,
        &[],
        now() + chrono::Duration::days(1),
    );
    let spec = policy(threshold(SeverityThreshold::Critical, 39));
    let v = evaluate(&spec, Subject::Scanned(&r), &[&e], facts());
    assert_eq!(v.outcome, Outcome::Violation);
    assert!(v.reasons[0].starts_with("39 vulnerabilities"));
    let spec = policy(threshold(SeverityThreshold::Critical, 40));
    assert_eq!(
        evaluate(&spec, Subject::Scanned(&r), &[&e], facts()).outcome,
        Outcome::Pass
    );
}

#[test]
fn reasons_are_bounded_and_quote_no_control_characters() {
    let mut findings: Vec<Finding> = (0..50)
        .map(|i| {
            finding(
                &format!("CVE-2024-{i:05}\u{1b}[31m"),
                FindingClass::ApplicationVulnerability,
                Severity::High,
                &"p".repeat(500),
                None,
            )
        })
        .collect();
    findings.sort_by(|a, b| a.id.cmp(&b.id));
    let v = judge(
        &policy(threshold(SeverityThreshold::High, 1)),
        &result_with(findings, now()),
    );
    assert_eq!(v.reasons.len(), MAX_REASONS);
    assert!(v
        .reasons
        .iter()
        .all(|r| !r.contains('\u{1b}') && r.len() < 300));
}

#[test]
fn the_mode_decides_what_a_violation_does() {
    use PolicyMode::*;
    assert_eq!(action(Enforce, Outcome::Violation), Action::Deny);
    assert_eq!(action(Warn, Outcome::Violation), Action::Warn);
    assert_eq!(action(Audit, Outcome::Violation), Action::Audit);
    assert_eq!(action(Enforce, Outcome::Warn), Action::Warn);
    assert_eq!(action(Audit, Outcome::Warn), Action::Audit);
    for mode in [Enforce, Warn, Audit] {
        assert_eq!(action(mode, Outcome::Pass), Action::Admit);
    }
}

#[test]
fn unusable_specs_are_refused_with_the_field() {
    let mut spec = policy(DenyRules::default());
    spec.rules.max_result_age = Some("seven days".into());
    assert!(validate(&spec)
        .unwrap_err()
        .starts_with("spec.maxResultAge"));
    spec.rules.max_result_age = Some("99999999999d".into());
    assert!(validate(&spec).is_err());
    spec.rules.max_result_age = Some("7d".into());
    assert!(validate(&spec).is_ok());
    spec.match_.images = vec!["has space".into()];
    assert!(validate(&spec)
        .unwrap_err()
        .starts_with("spec.match.images"));
}
