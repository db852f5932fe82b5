//! The JSON document POSTed to HTTP and HTTPS targets, and the per-image summaries the
//! DingTalk message is rendered from. This struct *is* the contract documented in
//! `docs/notification-payload.schema.json`; building it is pure.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::crd::{
    Finding, FindingClass, ImageScanResult, NotificationEvent, ResultSummary, ScanPhase, ScanRule,
    ScanTask, Severity, SeverityCounts, TaskTrigger,
};

/// Version of the payload format, sent as the document's `apiVersion`.
pub const PAYLOAD_API_VERSION: &str = "imagewarden.io/notification/v1";

/// What an HTTP(S) target receives for one event of one task.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NotificationPayload {
    /// Always [`PAYLOAD_API_VERSION`].
    pub api_version: String,
    /// Idempotency key of this delivery; also sent as the `X-Imagewarden-Delivery` header.
    /// A re-sent notification carries the same key.
    pub delivery_id: String,
    /// What happened.
    pub event: NotificationEvent,
    /// When the task finished (or started, when it has not finished), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<String>,
    /// The rule whose notification target this is.
    pub rule: ObjectName,
    /// The task the event is about.
    pub task: TaskReport,
    /// Counts over all images of the task.
    pub summary: FindingSummary,
    /// One entry per image, the worst first.
    pub images: Vec<ImageReport>,
    /// Names of the ImageScanResults (in the rule's namespace) holding all findings.
    pub image_scan_results: Vec<String>,
}

/// Namespace and name of an object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectName {
    pub namespace: String,
    pub name: String,
}

/// The task as seen when the notification was built.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TaskReport {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    pub trigger: TaskTrigger,
    pub phase: ScanPhase,
    pub total: u32,
    pub succeeded: u32,
    pub failed: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
}

/// Finding counts by severity, by class, and how many have a fixed version.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FindingSummary {
    pub critical: u32,
    pub high: u32,
    pub medium: u32,
    pub low: u32,
    pub unknown: u32,
    /// All findings.
    pub total: u32,
    /// Findings (among those stored in the results) that name a fixed version.
    pub fixable: u32,
    pub by_class: ClassCounts,
}

/// Counts per finding class.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClassCounts {
    pub system_vulnerabilities: SeverityCounts,
    pub application_vulnerabilities: SeverityCounts,
    pub baseline_risks: SeverityCounts,
    pub malicious_samples: SeverityCounts,
}

/// One image of the task.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageReport {
    /// The image as discovered: `registry/repository:tag` (or `...@digest`).
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// First 12 hex digits of the digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_digest: Option<String>,
    /// Where the scan of this image ended.
    pub phase: ScanPhase,
    /// Why the image failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Name of the ImageScanResult holding this image's findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_name: Option<String>,
    /// Link to the result (`--result-url-template`), when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_url: Option<String>,
    /// Counts for this image; absent when the image has no result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<FindingSummary>,
    /// The most severe findings, worst first (fixable before unfixable at equal severity).
    #[serde(default)]
    pub top_findings: Vec<TopFinding>,
    /// Findings of the image in total (the result may store fewer, see `truncated`).
    #[serde(default)]
    pub total_findings: u32,
    /// Whether the ImageScanResult had to cut its findings list.
    #[serde(default)]
    pub truncated: bool,
}

/// One finding, as shown in a notification.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopFinding {
    pub id: String,
    pub class: FindingClass,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// Builds the payload for `event` of `task`, with at most `top_findings` findings per
/// image. `delivery_id` is left empty; each target sets its own.
pub fn build_payload(
    rule: &ScanRule,
    task: &ScanTask,
    results: &[ImageScanResult],
    event: NotificationEvent,
    top_findings: usize,
) -> NotificationPayload {
    let status = task.status.clone().unwrap_or_default();
    let by_name: HashMap<&str, &ImageScanResult> = results
        .iter()
        .filter_map(|r| r.metadata.name.as_deref().map(|n| (n, r)))
        .collect();
    let mut used: HashSet<&str> = HashSet::new();
    let mut images = Vec::new();
    for progress in &status.images {
        let result = progress
            .result_name
            .as_deref()
            .and_then(|n| by_name.get(n).copied())
            .or_else(|| {
                let digest = progress.digest.as_deref()?;
                results.iter().find(|r| r.spec.digest == digest)
            });
        let mut report = match result {
            Some(r) => {
                used.insert(r.metadata.name.as_deref().unwrap_or_default());
                image_report(r, top_findings)
            }
            None => ImageReport {
                image: progress.image.clone(),
                registry: None,
                repository: None,
                tags: Vec::new(),
                digest: progress.digest.clone(),
                short_digest: progress.digest.as_deref().map(short_digest),
                phase: progress.phase,
                message: None,
                result_name: progress.result_name.clone(),
                result_url: None,
                summary: None,
                top_findings: Vec::new(),
                total_findings: 0,
                truncated: false,
            },
        };
        report.image = progress.image.clone();
        report.phase = progress.phase;
        if progress.phase == ScanPhase::Failed {
            report.message = progress.message.clone();
        }
        images.push(report);
    }
    for r in results {
        if !used.contains(r.metadata.name.as_deref().unwrap_or_default()) {
            images.push(image_report(r, top_findings));
        }
    }
    images.sort_by(|a, b| {
        image_rank(b)
            .cmp(&image_rank(a))
            .then(a.image.cmp(&b.image))
    });

    let mut summary = FindingSummary::default();
    for s in images.iter().filter_map(|i| i.summary.as_ref()) {
        summary.add(s);
    }
    let mut image_scan_results: Vec<String> = images
        .iter()
        .filter_map(|i| i.result_name.clone())
        .collect();
    image_scan_results.dedup();

    let time = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.as_ref().map(|t| t.0.to_string())
    };
    NotificationPayload {
        api_version: PAYLOAD_API_VERSION.to_string(),
        delivery_id: String::new(),
        event,
        occurred_at: time(&status.completion_time).or_else(|| time(&status.start_time)),
        rule: ObjectName {
            namespace: rule.metadata.namespace.clone().unwrap_or_default(),
            name: rule.metadata.name.clone().unwrap_or_default(),
        },
        task: TaskReport {
            name: task.metadata.name.clone().unwrap_or_default(),
            uid: task.metadata.uid.clone(),
            trigger: task.spec.trigger,
            phase: status.phase,
            total: status.total,
            succeeded: status.succeeded,
            failed: status.failed,
            start_time: time(&status.start_time),
            completion_time: time(&status.completion_time),
        },
        summary,
        images,
        image_scan_results,
    }
}

/// Orders images for display: failed ones after scanned ones, then the most severe first.
fn image_rank(i: &ImageReport) -> (bool, u32, u32, u32, u32, u32) {
    let s = i.summary.clone().unwrap_or_default();
    (
        i.phase != ScanPhase::Failed,
        s.critical,
        s.high,
        s.medium,
        s.low,
        s.unknown,
    )
}

fn image_report(result: &ImageScanResult, top_findings: usize) -> ImageReport {
    let status = result.status.clone().unwrap_or_default();
    let repo_ref = match result.spec.tags.first() {
        Some(tag) => format!("{}/{}:{tag}", result.spec.registry, result.spec.repository),
        None => format!(
            "{}/{}@{}",
            result.spec.registry, result.spec.repository, result.spec.digest
        ),
    };
    ImageReport {
        image: repo_ref,
        registry: Some(result.spec.registry.clone()),
        repository: Some(result.spec.repository.clone()),
        tags: result.spec.tags.clone(),
        digest: Some(result.spec.digest.clone()),
        short_digest: Some(
            status
                .short_digest
                .clone()
                .unwrap_or_else(|| short_digest(&result.spec.digest)),
        ),
        phase: ScanPhase::Completed,
        message: None,
        result_name: result.metadata.name.clone(),
        result_url: None,
        summary: Some(FindingSummary::of(&status.summary, &status.findings)),
        top_findings: top_of(&status.findings, top_findings),
        total_findings: status.total_findings.max(status.findings.len() as u32),
        truncated: status.truncated,
    }
}

/// The first 12 hex digits of a digest.
pub fn short_digest(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.chars().take(12).collect()
}

/// The `n` worst findings: by severity, then fixable first, then by score, then by id.
pub fn top_of(findings: &[Finding], n: usize) -> Vec<TopFinding> {
    let mut sorted: Vec<&Finding> = findings.iter().collect();
    sorted.sort_by(|a, b| {
        a.severity
            .cmp(&b.severity)
            .then(b.fixed_version.is_some().cmp(&a.fixed_version.is_some()))
            .then(
                b.score
                    .unwrap_or(0.0)
                    .partial_cmp(&a.score.unwrap_or(0.0))
                    .unwrap_or(std::cmp::Ordering::Equal),
            )
            .then(a.id.cmp(&b.id))
    });
    sorted
        .into_iter()
        .take(n)
        .map(|f| TopFinding {
            id: f.id.clone(),
            class: f.class,
            severity: f.severity,
            package: f.package.clone(),
            version: f.version.clone(),
            fixed_version: f.fixed_version.clone(),
            title: f.title.clone(),
            link: f.link.clone(),
        })
        .collect()
}

impl FindingSummary {
    /// The summary of a result: its stored counts, plus how many stored findings are fixable.
    pub fn of(summary: &ResultSummary, findings: &[Finding]) -> Self {
        Self {
            critical: summary.critical,
            high: summary.high,
            medium: summary.medium,
            low: summary.low,
            unknown: summary.unknown,
            total: summary.total(),
            fixable: findings
                .iter()
                .filter(|f| f.fixed_version.is_some())
                .count() as u32,
            by_class: ClassCounts {
                system_vulnerabilities: summary.system_vulnerabilities.clone(),
                application_vulnerabilities: summary.application_vulnerabilities.clone(),
                baseline_risks: summary.baseline_risks.clone(),
                malicious_samples: summary.malicious_samples.clone(),
            },
        }
    }

    fn add(&mut self, other: &FindingSummary) {
        self.critical += other.critical;
        self.high += other.high;
        self.medium += other.medium;
        self.low += other.low;
        self.unknown += other.unknown;
        self.total += other.total;
        self.fixable += other.fixable;
        let add = |a: &mut SeverityCounts, b: &SeverityCounts| {
            a.critical += b.critical;
            a.high += b.high;
            a.medium += b.medium;
            a.low += b.low;
            a.unknown += b.unknown;
        };
        add(
            &mut self.by_class.system_vulnerabilities,
            &other.by_class.system_vulnerabilities,
        );
        add(
            &mut self.by_class.application_vulnerabilities,
            &other.by_class.application_vulnerabilities,
        );
        add(
            &mut self.by_class.baseline_risks,
            &other.by_class.baseline_risks,
        );
        add(
            &mut self.by_class.malicious_samples,
            &other.by_class.malicious_samples,
        );
    }

    /// The most severe level with at least one finding.
    pub fn worst(&self) -> Option<Severity> {
        [
            (Severity::Critical, self.critical),
            (Severity::High, self.high),
            (Severity::Medium, self.medium),
            (Severity::Low, self.low),
            (Severity::Unknown, self.unknown),
        ]
        .into_iter()
        .find(|(_, n)| *n > 0)
        .map(|(s, _)| s)
    }
}

/// A copy of `result` that keeps only the findings whose id is in `new_ids`, with the
/// summary recounted from them: what a `NewFindings` notification should be given after a
/// database update re-matched a stored inventory.
pub fn new_findings_view(result: &ImageScanResult, new_ids: &HashSet<String>) -> ImageScanResult {
    let mut view = result.clone();
    let status = view.status.get_or_insert_with(Default::default);
    status.findings.retain(|f| new_ids.contains(&f.id));
    status.summary = ResultSummary::of(&status.findings);
    status.total_findings = status.findings.len() as u32;
    status.truncated = false;
    view
}

/// Items listed in one policy-event notification; the rest are counted in `omitted`.
pub const MAX_POLICY_ITEMS: usize = 50;
/// Reasons listed per item.
pub const MAX_POLICY_REASONS: usize = 5;
/// Characters kept of an image reference or a reason (a Pod's image is its author's text).
pub const MAX_POLICY_TEXT: usize = 512;

/// What an HTTP(S) target receives for policy events (`ExceptionExpired`,
/// `PolicyViolation`): same `apiVersion`, `deliveryId` and `event` as the scan payload,
/// then one item per object the event is about. Documented in
/// `docs/notification-policy-payload.schema.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyEventPayload {
    /// Always [`PAYLOAD_API_VERSION`].
    pub api_version: String,
    /// Idempotency key; also the `X-Imagewarden-Delivery` header.
    pub delivery_id: String,
    /// `ExceptionExpired` or `PolicyViolation`.
    pub event: NotificationEvent,
    /// When the notification was built, RFC 3339.
    pub occurred_at: String,
    /// The rule whose notification target this is.
    pub rule: ObjectName,
    /// What happened, at most [`MAX_POLICY_ITEMS`].
    pub items: Vec<PolicyEventItem>,
    /// Items left out of `items`.
    #[serde(default)]
    pub omitted: u32,
}

/// One object a policy event is about.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyEventItem {
    /// `ExceptionExpired` or `PolicyViolation`.
    pub kind: NotificationEvent,
    /// The VulnerabilityException that expired, or the Pod that violates.
    pub object: PolicyObject,
    /// The ImagePolicy that denies (`PolicyViolation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The image denied (`PolicyViolation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Why: the policy's top reasons, or the exception's expiry and the ids it covered.
    pub reasons: Vec<String>,
    /// When it happened (the expiry; the sweep that found the violation), RFC 3339.
    pub when: String,
}

/// A Kubernetes object named in a policy event.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyObject {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The controller the Pod belongs to (`ReplicaSet/web-5d8c`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// `text` cut to [`MAX_POLICY_TEXT`] characters.
pub fn bounded(text: &str) -> String {
    super::redact::truncate(text, MAX_POLICY_TEXT)
}

/// The policy-event payload for `rule` with `items` (bounded; the rest counted).
pub fn policy_event_payload(
    rule: &ObjectName,
    event: NotificationEvent,
    mut items: Vec<PolicyEventItem>,
    occurred_at: &str,
) -> PolicyEventPayload {
    let omitted = items.len().saturating_sub(MAX_POLICY_ITEMS);
    items.truncate(MAX_POLICY_ITEMS);
    for item in &mut items {
        item.reasons.truncate(MAX_POLICY_REASONS);
        for r in &mut item.reasons {
            *r = bounded(r);
        }
        item.image = item.image.as_deref().map(bounded);
    }
    PolicyEventPayload {
        api_version: PAYLOAD_API_VERSION.to_string(),
        delivery_id: String::new(),
        event,
        occurred_at: occurred_at.to_string(),
        rule: rule.clone(),
        items,
        omitted: u32::try_from(omitted).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::{
        ImageProgress, ImageScanResultSpec, ImageScanResultStatus, RegistrySpec, ScanRuleSpec,
        ScanTaskSpec, ScanTaskStatus, ScopeSpec, ScopeType, TriggerSpec,
    };
    use kube::api::ObjectMeta;

    pub(crate) fn finding(id: &str, severity: Severity, fixed: Option<&str>) -> Finding {
        Finding {
            id: id.into(),
            class: FindingClass::SystemVulnerability,
            severity,
            score: None,
            vector: None,
            severity_source: None,
            package: Some("openssl".into()),
            version: Some("1.1.1n-0+deb11u1".into()),
            fixed_version: fixed.map(Into::into),
            title: None,
            location: None,
            link: None,
        }
    }

    pub(crate) fn sample_rule() -> ScanRule {
        let mut rule = ScanRule::new(
            "team-a-releases",
            ScanRuleSpec {
                registry: RegistrySpec {
                    url: "registry.example.com".into(),
                    credentials_secret_ref: None,
                    ca_secret_ref: None,
                    insecure: false,
                },
                scope: ScopeSpec {
                    scope_type: ScopeType::Namespace,
                    name: "team-a".into(),
                },
                tag_filter: ".*".into(),
                max_tags: None,
                triggers: TriggerSpec::default(),
                scanners: vec![],
                notifications: vec![],
                fix: None,
                result_retention: None,
            },
        );
        rule.metadata.namespace = Some("team-a".into());
        rule
    }

    pub(crate) fn sample_result(name: &str, repo: &str, findings: Vec<Finding>) -> ImageScanResult {
        let summary = ResultSummary::of(&findings);
        ImageScanResult {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("team-a".into()),
                ..Default::default()
            },
            spec: ImageScanResultSpec {
                registry: "registry.example.com".into(),
                repository: repo.into(),
                digest: "sha256:3b5e2a7c6f1d00112233445566778899aabbccddeeff00112233445566778899"
                    .into(),
                tags: vec!["v1.4.2".into()],
                tags_seen: vec![],
            },
            status: Some(ImageScanResultStatus {
                total_findings: findings.len() as u32,
                findings,
                summary,
                ..Default::default()
            }),
        }
    }

    pub(crate) fn sample_task(images: Vec<ImageProgress>) -> ScanTask {
        let mut task = ScanTask::new(
            "team-a-releases-1",
            ScanTaskSpec {
                rule_ref: None,
                images: vec![],
                trigger: TaskTrigger::Schedule,
            },
        );
        task.metadata.namespace = Some("team-a".into());
        task.metadata.uid = Some("0d2c6f9e-1111-2222-3333-444455556666".into());
        task.status = Some(ScanTaskStatus {
            phase: ScanPhase::Completed,
            total: images.len() as u32,
            succeeded: images
                .iter()
                .filter(|i| i.phase == ScanPhase::Completed)
                .count() as u32,
            failed: images
                .iter()
                .filter(|i| i.phase == ScanPhase::Failed)
                .count() as u32,
            images,
            ..Default::default()
        });
        task
    }

    fn progress(image: &str, phase: ScanPhase, result: Option<&str>) -> ImageProgress {
        ImageProgress {
            image: image.into(),
            digest: None,
            phase,
            result_name: result.map(Into::into),
            attempts: 1,
            message: (phase == ScanPhase::Failed).then(|| "manifest unknown".into()),
        }
    }

    #[test]
    fn payload_joins_task_images_with_their_results_worst_first() {
        let api = sample_result(
            "team-a-api-3b5e2a7c6f1d",
            "team-a/api",
            vec![
                finding("CVE-2023-0001", Severity::High, None),
                finding("CVE-2022-1292", Severity::Critical, Some("1.1.1o-1")),
                finding("CVE-2023-0002", Severity::High, Some("1.1.1t-0")),
                finding("CVE-2023-0003", Severity::Low, None),
            ],
        );
        let web = sample_result(
            "team-a-web-3b5e2a7c6f1d",
            "team-a/web",
            vec![finding("CVE-2023-0009", Severity::Medium, None)],
        );
        let task = sample_task(vec![
            progress(
                "registry.example.com/team-a/web:v2",
                ScanPhase::Completed,
                Some("team-a-web-3b5e2a7c6f1d"),
            ),
            progress(
                "registry.example.com/team-a/gone:v1",
                ScanPhase::Failed,
                None,
            ),
            progress(
                "registry.example.com/team-a/api:v1.4.2",
                ScanPhase::Completed,
                Some("team-a-api-3b5e2a7c6f1d"),
            ),
        ]);
        let p = build_payload(
            &sample_rule(),
            &task,
            &[web, api],
            NotificationEvent::ScanCompleted,
            3,
        );
        let order: Vec<&str> = p.images.iter().map(|i| i.image.as_str()).collect();
        assert_eq!(
            order,
            [
                "registry.example.com/team-a/api:v1.4.2",
                "registry.example.com/team-a/web:v2",
                "registry.example.com/team-a/gone:v1"
            ]
        );
        let api = &p.images[0];
        let ids: Vec<&str> = api.top_findings.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["CVE-2022-1292", "CVE-2023-0002", "CVE-2023-0001"]);
        assert_eq!(api.short_digest.as_deref(), Some("3b5e2a7c6f1d"));
        assert_eq!(api.summary.as_ref().unwrap().fixable, 2);
        assert_eq!(p.images[2].message.as_deref(), Some("manifest unknown"));
        assert_eq!(p.summary.total, 5);
        assert_eq!(p.summary.critical, 1);
        assert_eq!(p.summary.by_class.system_vulnerabilities.high, 2);
        assert_eq!(
            p.image_scan_results,
            ["team-a-api-3b5e2a7c6f1d", "team-a-web-3b5e2a7c6f1d"]
        );
        assert_eq!(p.task.trigger, TaskTrigger::Schedule);
        assert_eq!(p.rule.namespace, "team-a");
    }

    #[test]
    fn results_not_listed_in_the_task_are_reported_too() {
        let r = sample_result("r", "team-a/api", vec![]);
        let p = build_payload(
            &sample_rule(),
            &sample_task(vec![]),
            &[r],
            NotificationEvent::ScanCompleted,
            5,
        );
        assert_eq!(p.images.len(), 1);
        assert_eq!(p.images[0].image, "registry.example.com/team-a/api:v1.4.2");
        assert_eq!(p.summary.worst(), None);
    }

    #[test]
    fn new_findings_view_recounts_only_the_new_ones() {
        let r = sample_result(
            "r",
            "team-a/api",
            vec![
                finding("CVE-1", Severity::Critical, None),
                finding("CVE-2", Severity::Low, None),
            ],
        );
        let view = new_findings_view(&r, &HashSet::from(["CVE-2".to_string()]));
        let status = view.status.unwrap();
        assert_eq!(status.findings.len(), 1);
        assert_eq!(status.summary.critical, 0);
        assert_eq!(status.summary.low, 1);
        assert_eq!(status.summary.system_vulnerabilities.low, 1);
    }
}
