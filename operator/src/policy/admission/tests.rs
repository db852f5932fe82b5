use super::*;
use crate::crd::{
    DenyRules, Finding, FindingClass, ImagePolicySpec, ImageScanResultSpec, ImageScanResultStatus,
    PolicyMode, PolicyVerdictEntry, Severity, SeverityThreshold,
};
use chrono::TimeZone;
use serde_json::json;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap()
}

#[derive(Default)]
struct Fixture {
    policies: Vec<Arc<ImagePolicy>>,
    results: Vec<Arc<ImageScanResult>>,
    labels: BTreeMap<String, BTreeMap<String, String>>,
}

impl Lookup for Fixture {
    fn policies(&self) -> Vec<Arc<ImagePolicy>> {
        self.policies.clone()
    }
    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.labels.get(namespace).cloned()
    }
    fn result(&self, image: &ImageReference, _namespace: &str) -> Option<Arc<ImageScanResult>> {
        self.results
            .iter()
            .find(|r| {
                crate::policy::result_image(r) == image.name
                    && (image.digest.as_deref() == Some(&r.spec.digest)
                        || image.tag.as_ref().is_some_and(|t| r.spec.tags.contains(t)))
            })
            .cloned()
    }
    fn scan_failure(&self, _image: &ImageReference) -> Option<String> {
        None
    }
    fn exceptions(&self, _namespace: &str) -> Vec<Arc<VulnerabilityException>> {
        Vec::new()
    }
}

fn settings() -> AdmissionSettings {
    AdmissionSettings {
        default_excluded: vec!["kube-system".into(), "imagewarden-system".into()],
    }
}

fn policy(name: &str, mode: PolicyMode) -> Arc<ImagePolicy> {
    let mut p = ImagePolicy::new(
        name,
        ImagePolicySpec {
            match_: Default::default(),
            rules: crate::crd::PolicyRules {
                deny: DenyRules {
                    severity: Some(SeverityThreshold::Critical),
                    ..Default::default()
                },
                mode,
                ..Default::default()
            },
        },
    );
    p.metadata.generation = Some(1);
    Arc::new(p)
}

fn musl_result(namespace: &str) -> Arc<ImageScanResult> {
    let findings = vec![Finding {
        id: "ALPINE-CVE-2019-14697".into(),
        class: FindingClass::SystemVulnerability,
        severity: Severity::Critical,
        score: None,
        vector: None,
        severity_source: None,
        package: Some("musl".into()),
        version: Some("1.1.22-r2".into()),
        fixed_version: Some("1.1.22-r3".into()),
        title: None,
        location: None,
        link: None,
    }];
    let mut r = ImageScanResult::new(
        "alpine",
        ImageScanResultSpec {
            registry: "registry.example.com".into(),
            repository: "team-a/alpine".into(),
            digest: "sha256:aaaa".into(),
            tags: vec!["v1".into()],
            tags_seen: Vec::new(),
        },
    );
    r.metadata.namespace = Some(namespace.into());
    r.status = Some(ImageScanResultStatus {
        summary: crate::crd::ResultSummary::of(&findings),
        findings,
        scan_time: Some(crate::from_chrono(now())),
        ..Default::default()
    });
    Arc::new(r)
}

fn pod(images: &[&str]) -> Value {
    json!({"spec": {
        "initContainers": [{"name": "init", "image": images[0]}],
        "containers": images[1..].iter().enumerate()
            .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
            .collect::<Vec<_>>(),
    }})
}

const VULNERABLE: &str = "registry.example.com/team-a/alpine:v1";
const CLEAN: &str = "registry.example.com/team-a/app@sha256:bbbb";

fn fixture(mode: PolicyMode) -> Fixture {
    let mut clean = (*musl_result("team-a")).clone();
    clean.spec.repository = "team-a/app".into();
    clean.spec.digest = "sha256:bbbb".into();
    clean.status.as_mut().unwrap().findings.clear();
    clean.status.as_mut().unwrap().summary = Default::default();
    Fixture {
        policies: vec![policy("no-critical", mode)],
        results: vec![musl_result("team-a"), Arc::new(clean)],
        ..Default::default()
    }
}

#[test]
fn pod_templates_are_found_in_every_workload_kind() {
    let template = json!({"spec": {"containers": [{"name": "c", "image": "nginx"}]}});
    let objects = [
        ("Pod", template.clone()),
        ("Deployment", json!({"spec": {"template": template}})),
        ("StatefulSet", json!({"spec": {"template": template}})),
        ("DaemonSet", json!({"spec": {"template": template}})),
        ("ReplicaSet", json!({"spec": {"template": template}})),
        ("Job", json!({"spec": {"template": template}})),
        (
            "CronJob",
            json!({"spec": {"jobTemplate": {"spec": {"template": template}}}}),
        ),
    ];
    for (kind, object) in objects {
        let spec = pod_spec(kind, &object).unwrap_or_else(|| panic!("{kind}"));
        assert_eq!(images_of(spec)[0].image, "nginx", "{kind}");
    }
    assert!(pod_spec("ConfigMap", &json!({"spec": {}})).is_none());
}

#[test]
fn init_and_ephemeral_containers_are_judged_too() {
    let spec = json!({
        "initContainers": [{"name": "i", "image": "a"}],
        "containers": [{"name": "c", "image": "b"}],
        "ephemeralContainers": [{"name": "e", "image": "c"}],
    });
    let fields: Vec<(&str, String)> = images_of(&spec)
        .into_iter()
        .map(|c| (c.field, c.image))
        .collect();
    assert_eq!(
        fields,
        [
            ("initContainers", "a".to_string()),
            ("containers", "b".to_string()),
            ("ephemeralContainers", "c".to_string())
        ]
    );
}

#[test]
fn a_vulnerable_image_is_denied_with_the_policy_and_the_finding() {
    let f = fixture(PolicyMode::Enforce);
    let d = judge(
        "Pod",
        "team-a",
        &pod(&[CLEAN, VULNERABLE]),
        None,
        &f,
        &settings(),
        now(),
    );
    assert!(!d.allowed());
    let message = d.message();
    assert!(message.starts_with(&format!(
        "image {VULNERABLE} is denied by ImagePolicy no-critical: 1 vulnerability at or above Critical"
    )));
    assert!(
        message.contains("ALPINE-CVE-2019-14697 (Critical, musl 1.1.22-r2, fixed in 1.1.22-r3)")
    );
    assert!(!message.contains(CLEAN));
}

#[test]
fn warn_mode_admits_with_a_warning_and_audit_mode_silently() {
    let f = fixture(PolicyMode::Warn);
    let d = judge(
        "Pod",
        "team-a",
        &pod(&[VULNERABLE]),
        None,
        &f,
        &settings(),
        now(),
    );
    assert!(d.allowed());
    let warnings = d.warnings();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].starts_with(&format!(
        "image {VULNERABLE} violates ImagePolicy no-critical"
    )));
    assert!(warnings[0].chars().count() <= 256);
    let f = fixture(PolicyMode::Audit);
    let d = judge(
        "Pod",
        "team-a",
        &pod(&[VULNERABLE]),
        None,
        &f,
        &settings(),
        now(),
    );
    assert!(d.allowed());
    assert!(d.warnings().is_empty());
    assert_eq!(d.judgements[0].action, Action::Audit);
}

#[test]
fn excluded_and_unselected_namespaces_are_not_judged() {
    let mut f = fixture(PolicyMode::Enforce);
    for ns in ["kube-system", "imagewarden-system"] {
        let d = judge("Pod", ns, &pod(&[VULNERABLE]), None, &f, &settings(), now());
        assert!(d.allowed() && d.judgements.is_empty(), "{ns}");
    }
    let mut p = (*f.policies[0]).clone();
    p.spec.match_.exclude_namespaces = Some(vec!["sandbox".into()]);
    p.spec.match_.namespace_selector = Some(
        serde_json::from_value(json!({"matchLabels": {"imagewarden.io/enforce": "true"}})).unwrap(),
    );
    f.policies = vec![Arc::new(p)];
    f.labels.insert(
        "prod".into(),
        BTreeMap::from([("imagewarden.io/enforce".into(), "true".into())]),
    );
    f.labels.insert("dev".into(), BTreeMap::new());
    let judged =
        |f: &Fixture, ns: &str| judge("Pod", ns, &pod(&[VULNERABLE]), None, f, &settings(), now());
    assert!(!judged(&f, "prod").allowed());
    assert!(judged(&f, "dev").allowed(), "labels do not match");
    // An explicit list replaces the defaults.
    f.labels.insert(
        "kube-system".into(),
        BTreeMap::from([("imagewarden.io/enforce".into(), "true".into())]),
    );
    assert!(!judged(&f, "kube-system").allowed());
}

#[test]
fn an_update_judges_only_the_images_it_adds() {
    let f = fixture(PolicyMode::Enforce);
    let old = json!({"spec": {"replicas": 1, "template": pod(&[VULNERABLE])}});
    let scaled = json!({"spec": {"replicas": 3, "template": pod(&[VULNERABLE])}});
    let d = judge(
        "Deployment",
        "team-a",
        &scaled,
        Some(&old),
        &f,
        &settings(),
        now(),
    );
    assert!(d.allowed(), "scaling a running workload is not refused");
    let old = json!({"spec": {"template": pod(&[CLEAN])}});
    let changed = json!({"spec": {"template": pod(&[VULNERABLE])}});
    let d = judge(
        "Deployment",
        "team-a",
        &changed,
        Some(&old),
        &f,
        &settings(),
        now(),
    );
    assert!(!d.allowed());
}

#[test]
fn an_unscanned_image_follows_the_unscanned_setting() {
    let f = fixture(PolicyMode::Enforce);
    let d = judge(
        "Pod",
        "team-a",
        &pod(&["registry.example.com/team-a/new:v9"]),
        None,
        &f,
        &settings(),
        now(),
    );
    assert!(!d.allowed());
    assert!(d.message().ends_with("the image has not been scanned"));
}

#[test]
fn a_recorded_verdict_is_used_only_for_the_current_generation_of_the_policy() {
    let mut f = fixture(PolicyMode::Enforce);
    let mut r = (*f.results[0]).clone();
    r.status.as_mut().unwrap().policies = vec![PolicyVerdictEntry {
        policy: "no-critical".into(),
        generation: 1,
        verdict: "Pass".into(),
        reasons: Vec::new(),
        valid_until: None,
    }];
    f.results[0] = Arc::new(r);
    let d = judge(
        "Pod",
        "team-a",
        &pod(&[VULNERABLE]),
        None,
        &f,
        &settings(),
        now(),
    );
    assert!(
        d.allowed(),
        "the recorded verdict (an exception applied) is used"
    );
    let mut p = (*f.policies[0]).clone();
    p.metadata.generation = Some(2);
    f.policies = vec![Arc::new(p)];
    let d = judge(
        "Pod",
        "team-a",
        &pod(&[VULNERABLE]),
        None,
        &f,
        &settings(),
        now(),
    );
    assert!(!d.allowed(), "an outdated verdict is computed again");
    // Pods of another namespace get that namespace's exceptions, never the record.
    let d = judge(
        "Pod",
        "team-b",
        &pod(&[VULNERABLE]),
        None,
        &f,
        &settings(),
        now(),
    );
    assert!(!d.allowed());
}

#[test]
fn an_unreadable_image_reference_is_refused_with_the_container() {
    let f = fixture(PolicyMode::Enforce);
    let d = judge(
        "Pod",
        "team-a",
        &pod(&[CLEAN, "reg.io/app@sha256:zz"]),
        None,
        &f,
        &settings(),
        now(),
    );
    assert!(!d.allowed());
    assert!(d
        .message()
        .starts_with("containers[c0] image \"reg.io/app@sha256:zz\""));
}
