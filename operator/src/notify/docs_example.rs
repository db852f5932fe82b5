//! The sample payload and DingTalk message in `docs/notifications.md` are what the code
//! produces for the sample task below; this test keeps them in step.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::payload::tests::{finding, sample_result, sample_rule};
use super::payload::{build_payload, NotificationPayload};
use crate::crd::{
    FindingClass, ImageProgress, NotificationEvent, ScanPhase, ScanTask, ScanTaskSpec,
    ScanTaskStatus, Severity, TaskTrigger,
};

fn time(s: &str) -> Option<Time> {
    Some(Time(s.parse().unwrap()))
}

/// The task the documentation describes: one image with findings, one clean image and
/// one that could not be scanned.
pub(crate) fn sample_payload() -> NotificationPayload {
    let mut base_image = finding("DLA-3449-1", Severity::Medium, Some("1.46.5-2~deb11u1"));
    base_image.package = Some("e2fsprogs".into());
    base_image.version = Some("1.46.2-2".into());
    let mut requests = finding("GHSA-j8r2-6x86-q33q", Severity::Medium, Some("2.31.0"));
    requests.class = FindingClass::ApplicationVulnerability;
    requests.package = Some("requests".into());
    requests.version = Some("2.25.1".into());
    let mut root = finding("IW-BASE-001", Severity::Low, None);
    root.class = FindingClass::BaselineRisk;
    root.package = None;
    root.version = None;
    root.title = Some("image runs as root".into());
    let mut zlib = finding("CVE-2023-45853", Severity::Critical, None);
    zlib.package = Some("zlib1g".into());
    zlib.version = Some("1:1.2.11.dfsg-2+deb11u2".into());
    let api = sample_result(
        "team-a-api-3b5e2a7c6f1d",
        "team-a/api",
        vec![
            zlib,
            finding("CVE-2022-1292", Severity::Critical, Some("1.1.1o-1")),
            finding("CVE-2023-0286", Severity::High, Some("1.1.1t-0+deb11u1")),
            base_image,
            requests,
            root,
        ],
    );
    let mut web = sample_result("team-a-web-9f86d081884c", "team-a/web", vec![]);
    web.spec.digest =
        "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into();
    web.spec.tags = vec!["v2.0.1".into()];
    let mut task = ScanTask::new(
        "team-a-releases-29395980",
        ScanTaskSpec {
            rule_ref: None,
            images: vec![],
            trigger: TaskTrigger::Schedule,
        },
    );
    task.metadata.namespace = Some("team-a".into());
    task.metadata.uid = Some("7c9e6679-7425-40de-944b-e07fc1f90ae7".into());
    task.status = Some(ScanTaskStatus {
        phase: ScanPhase::Failed,
        total: 3,
        succeeded: 2,
        failed: 1,
        start_time: time("2026-11-27T03:00:00Z"),
        completion_time: time("2026-11-27T03:04:12Z"),
        images: vec![
            ImageProgress {
                image: "registry.example.com/team-a/api:v1.4.2".into(),
                phase: ScanPhase::Completed,
                result_name: Some("team-a-api-3b5e2a7c6f1d".into()),
                ..Default::default()
            },
            ImageProgress {
                image: "registry.example.com/team-a/web:v2.0.1".into(),
                phase: ScanPhase::Completed,
                result_name: Some("team-a-web-9f86d081884c".into()),
                ..Default::default()
            },
            ImageProgress {
                image: "registry.example.com/team-a/batch:v0.9.0".into(),
                phase: ScanPhase::Failed,
                message: Some("pulling manifest: manifest unknown".into()),
                ..Default::default()
            },
        ],
        ..Default::default()
    });
    let rule = sample_rule();
    let mut payload = build_payload(&rule, &task, &[api, web], NotificationEvent::ScanFailed, 3);
    payload.delivery_id = super::delivery_id(
        &rule,
        &task,
        NotificationEvent::ScanFailed,
        "security-webhook",
    );
    payload
}

#[test]
fn documentation_shows_what_the_code_sends() {
    let payload = sample_payload();
    let json = serde_json::to_string_pretty(&payload).unwrap();
    let (title, text) = super::dingtalk::markdown(&payload);
    if std::env::var_os("IMAGEWARDEN_PRINT_DOCS").is_some() {
        println!("{json}\n----\n{title}\n----\n{text}");
    }
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/notifications.md"
    ))
    .unwrap();
    assert!(
        doc.contains(&json),
        "docs/notifications.md: sample payload is stale"
    );
    assert!(
        doc.contains(&title),
        "docs/notifications.md: DingTalk title is stale"
    );
    assert!(
        doc.contains(&text),
        "docs/notifications.md: DingTalk text is stale"
    );
}
