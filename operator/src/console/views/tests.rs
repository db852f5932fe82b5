use super::*;

fn result(
    ns: &str,
    name: &str,
    digest: &str,
    tags: &[&str],
    scanned: &str,
    critical: u32,
) -> Arc<ImageScanResult> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "apiVersion": "imagewarden.io/v1alpha1",
            "kind": "ImageScanResult",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"registry": "registry.example:5000", "repository": "team-a/app", "digest": digest, "tags": tags},
            "status": {
                "scanTime": scanned,
                "databaseVersion": "sha256:db",
                "summary": serde_json::to_value(ResultSummary { critical, high: 1, ..Default::default() }).unwrap(),
                "findings": [
                    {"id": "CVE-2", "class": "SystemVulnerability", "severity": "High", "score": 7.5, "package": "zlib", "version": "1", "fixedVersion": "2"},
                    {"id": "CVE-1", "class": "SystemVulnerability", "severity": "Critical", "package": "musl"},
                    {"id": "IW-BASE-1", "class": "BaselineRisk", "severity": "Medium"},
                    {"id": "CVE-3", "class": "ApplicationVulnerability", "severity": "High", "score": 9.0, "package": "lodash", "fixedVersion": "4.17.21"}
                ]
            }
        }))
        .unwrap(),
    )
}

fn task(ns: &str, name: &str, created: &str, images: serde_json::Value) -> Arc<ScanTask> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "apiVersion": "imagewarden.io/v1alpha1",
            "kind": "ScanTask",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
            "spec": {},
            "status": {"phase": "Running", "images": images}
        }))
        .unwrap(),
    )
}

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn by_tag(tag: &str) -> ImageQuery {
    ImageQuery::new("registry.example:5000", "team-a/app", Some(tag), None).unwrap()
}

#[test]
fn an_image_without_result_or_task_is_not_scanned() {
    let s = scan_status(&by_tag("v1"), &[], &[]);
    assert_eq!(s.status, ScanState::NotScanned);
    assert_eq!((s.result, s.task), (None, None));
}

#[test]
fn a_result_makes_the_tag_complete_with_its_summary_and_database() {
    let results = [result(
        "team-a",
        "app-1",
        D1,
        &["v1"],
        "2026-01-01T00:00:00Z",
        2,
    )];
    let s = scan_status(&by_tag("v1"), &results, &[]);
    assert_eq!(s.status, ScanState::Complete);
    assert_eq!(s.digest.as_deref(), Some(D1));
    assert_eq!(s.result.as_deref(), Some("team-a/app-1"));
    assert_eq!(s.summary.unwrap().critical, 2);
    assert_eq!(s.database.as_deref(), Some("sha256:db"));
    assert_eq!(
        scan_status(&by_tag("v2"), &results, &[]).status,
        ScanState::NotScanned
    );
    let by_digest = ImageQuery::new("registry.example:5000", "team-a/app", None, Some(D1)).unwrap();
    assert_eq!(
        scan_status(&by_digest, &results, &[]).status,
        ScanState::Complete
    );
}

#[test]
fn a_task_entry_in_progress_is_scanning_and_after_a_failed_attempt_retrying() {
    let image = "registry.example:5000/team-a/app:v1";
    let running = [task(
        "team-a",
        "t1",
        "2026-01-02T00:00:00Z",
        serde_json::json!([{"image": image, "phase": "Running", "attempts": 1}]),
    )];
    let s = scan_status(&by_tag("v1"), &[], &running);
    assert_eq!(s.status, ScanState::Scanning);
    assert_eq!(s.task.as_deref(), Some("team-a/t1"));
    let waiting = [task(
        "team-a",
        "t1",
        "2026-01-02T00:00:00Z",
        serde_json::json!([{"image": image, "phase": "Pending", "attempts": 1, "message": "pulling: connection refused"}]),
    )];
    let s = scan_status(&by_tag("v1"), &[], &waiting);
    assert_eq!(s.status, ScanState::Retrying);
    assert_eq!(s.message.as_deref(), Some("pulling: connection refused"));
    let second = [task(
        "team-a",
        "t1",
        "2026-01-02T00:00:00Z",
        serde_json::json!([{"image": image, "phase": "Running", "attempts": 2}]),
    )];
    assert_eq!(
        scan_status(&by_tag("v1"), &[], &second).status,
        ScanState::Retrying
    );
    // A new task's entry that has not started yet is scanning, not retrying.
    let fresh = [task(
        "team-a",
        "t1",
        "2026-01-02T00:00:00Z",
        serde_json::json!([{"image": image, "phase": "Pending", "attempts": 0}]),
    )];
    assert_eq!(
        scan_status(&by_tag("v1"), &[], &fresh).status,
        ScanState::Scanning
    );
}

#[test]
fn a_failure_counts_only_when_newer_than_the_result() {
    let image = "registry.example:5000/team-a/app:v1";
    let failed = |created: &str| {
        task(
            "team-a",
            "t2",
            created,
            serde_json::json!([{"image": image, "phase": "Failed", "attempts": 3, "message": "gave up"}]),
        )
    };
    let results = [result(
        "team-a",
        "app-1",
        D1,
        &["v1"],
        "2026-01-05T00:00:00Z",
        0,
    )];
    let s = scan_status(&by_tag("v1"), &results, &[failed("2026-01-06T00:00:00Z")]);
    assert_eq!(s.status, ScanState::Failed);
    assert_eq!(s.message.as_deref(), Some("gave up"));
    assert_eq!(
        s.result.as_deref(),
        Some("team-a/app-1"),
        "the last good result is still named"
    );
    let s = scan_status(&by_tag("v1"), &results, &[failed("2026-01-04T00:00:00Z")]);
    assert_eq!(s.status, ScanState::Complete);
}

#[test]
fn the_newest_of_several_results_and_tasks_answers() {
    let results = [
        result(
            "team-a",
            "old",
            "sha256:0",
            &["v1"],
            "2026-01-01T00:00:00Z",
            5,
        ),
        result("team-a", "new", D1, &["v1"], "2026-01-03T00:00:00Z", 0),
    ];
    let s = scan_status(&by_tag("v1"), &results, &[]);
    assert_eq!(s.result.as_deref(), Some("team-a/new"));
}

#[test]
fn a_query_needs_exactly_one_of_tag_and_digest_and_a_real_digest() {
    assert!(ImageQuery::new("r", "x", None, None).is_err());
    assert!(ImageQuery::new("r", "x", Some("v1"), Some(D1)).is_err());
    assert!(ImageQuery::new("r", "x", None, Some("sha256:zz")).is_err());
    assert!(ImageQuery::new("", "x", Some("v1"), None).is_err());
}

#[test]
fn findings_are_filtered_and_sorted_most_severe_first() {
    let r = result("team-a", "app-1", D1, &["v1"], "2026-01-01T00:00:00Z", 1);
    let ids = |f: &FindingFilter| {
        findings(&r, f)
            .into_iter()
            .map(|f| f.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&FindingFilter::default()),
        ["CVE-1", "CVE-3", "CVE-2", "IW-BASE-1"]
    );
    let system = FindingFilter::parse(Some("SystemVulnerability"), None, None).unwrap();
    assert_eq!(ids(&system), ["CVE-1", "CVE-2"]);
    let fixable = FindingFilter::parse(None, Some("high,Critical"), Some(true)).unwrap();
    assert_eq!(ids(&fixable), ["CVE-3", "CVE-2"]);
    assert!(FindingFilter::parse(Some("Nope"), None, None)
        .unwrap_err()
        .contains("Nope"));
    assert!(FindingFilter::parse(None, Some("severe"), None).is_err());
}

#[test]
fn repositories_are_grouped_per_namespace_and_worst_first() {
    let mut other = (*result("team-b", "b-1", D1, &["v1"], "2026-01-01T00:00:00Z", 0)).clone();
    other.spec.repository = "team-b/base".into();
    if let Some(s) = other.status.as_mut() {
        s.summary.high = 0;
        s.summary.low = 3;
    }
    let results = [
        Arc::new(other),
        result(
            "team-a",
            "a-1",
            D1,
            &["v1", "latest"],
            "2026-01-01T00:00:00Z",
            1,
        ),
        result(
            "team-a",
            "a-2",
            "sha256:2",
            &["v2"],
            "2026-01-02T00:00:00Z",
            0,
        ),
    ];
    let repos = repositories(&results);
    assert_eq!(repos.len(), 2);
    assert_eq!(
        (repos[0].repository.as_str(), repos[0].worst),
        ("team-a/app", Some(Severity::Critical))
    );
    assert_eq!(
        (repos[0].digests, repos[0].tags, repos[0].counts.high),
        (2, 3, 2)
    );
    assert_eq!(repos[1].worst, Some(Severity::Low));
    let name = ImageName::new("registry.example:5000", "team-a/app");
    let t: Vec<_> = tags(&results, &name)
        .into_iter()
        .map(|t| t.tag.unwrap())
        .collect();
    assert_eq!(t, ["latest", "v1", "v2"]);
}

#[test]
fn the_trend_adds_up_what_database_updates_changed_in_each_repository() {
    let rematched = |name: &str, critical: u32, before: SeverityCounts| {
        let mut r = (*result(
            "team-a",
            name,
            D1,
            &["v1"],
            "2026-01-01T00:00:00Z",
            critical,
        ))
        .clone();
        r.status.as_mut().unwrap().previous = Some(PreviousMatch {
            database_version: "sha256:old".into(),
            totals: before,
        });
        Arc::new(r)
    };
    let results = [
        // One more critical finding, one high finding fewer.
        rematched(
            "a-1",
            2,
            SeverityCounts {
                critical: 1,
                high: 2,
                ..Default::default()
            },
        ),
        // Unchanged.
        rematched(
            "a-2",
            0,
            SeverityCounts {
                high: 1,
                ..Default::default()
            },
        ),
        // Scanned in full since: not compared.
        result(
            "team-a",
            "a-3",
            "sha256:3",
            &["v3"],
            "2026-01-02T00:00:00Z",
            5,
        ),
    ];
    let repos = repositories(&results);
    assert_eq!(
        repos[0].trend,
        Some(Trend {
            images: 2,
            critical: 1,
            high: -1,
            ..Default::default()
        })
    );
    let untouched = repositories(&results[2..]);
    assert_eq!(untouched[0].trend, None, "no image was re-matched");
}

#[test]
fn pages_are_bounded() {
    let p = Paging::new(Some(2), Some(10_000));
    assert_eq!(p.limit, MAX_LIMIT);
    let page = Paging::new(Some(2), Some(2)).page((0..5).collect::<Vec<_>>());
    assert_eq!((page.items, page.total), (vec![2, 3], 5));
}
