//! `imagewarden scan --policy`: the ImagePolicy manifest applied to the cluster, judged
//! offline on a real image (the bundled example: alpine 3.10 with Django 3.2, PyYAML 5.3
//! and lodash 4.17.15) against real OSV records (the bundled example database).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn scan(dir: &Path, policy: &str, exceptions: &[&str], extra: &[&str]) -> (i32, String) {
    let policy_file = dir.join("policy.yaml");
    std::fs::write(&policy_file, policy).unwrap();
    let target = format!(
        "docker-archive:{}",
        examples().join("example-image.tar.gz").display()
    );
    let db = examples().join("example-db.idx");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagewarden"));
    cmd.args([
        "scan",
        &target,
        "--db",
        db.to_str().unwrap(),
        "--format",
        "json",
    ])
    .args(["--policy", policy_file.to_str().unwrap()])
    .args(extra)
    .env_remove("IMAGEWARDEN_DB");
    for (i, text) in exceptions.iter().enumerate() {
        let file = dir.join(format!("exceptions-{i}.yaml"));
        std::fs::write(&file, text).unwrap();
        cmd.args(["--exceptions", file.to_str().unwrap()]);
    }
    let out: Output = cmd.output().unwrap();
    let code = out.status.code().expect("killed by a signal");
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn policy(spec: &str) -> String {
    format!(
        "apiVersion: imagewarden.io/v1alpha1\nkind: ImagePolicy\nmetadata:\n  name: no-critical\nspec:\n{spec}"
    )
}

const CRITICAL: &str = "  deny:\n    severity: Critical\n";

/// The seven Critical PyPI findings of the example image.
const CRITICAL_IDS: [&str; 7] = [
    "PYSEC-2021-109",
    "PYSEC-2022-190",
    "PYSEC-2022-191",
    "PYSEC-2022-213",
    "PYSEC-2023-61",
    "PYSEC-2020-96",
    "PYSEC-2021-142",
];

fn exception(name: &str, ids: &[&str], expires: &str) -> String {
    let ids: String = ids.iter().map(|id| format!("    - id: {id}\n")).collect();
    format!(
        "apiVersion: imagewarden.io/v1alpha1\nkind: VulnerabilityException\nmetadata:\n  name: {name}\n  namespace: team-a\nspec:\n  expires: \"{expires}\"\n  reason: upgrade planned in TICKET-1\n  ids:\n{ids}"
    )
}

#[test]
fn an_enforced_policy_denies_an_image_above_its_threshold_with_exit_code_3() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, stderr) = scan(tmp.path(), &policy(CRITICAL), &[], &[]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("policy no-critical (Enforce)"), "{stderr}");
    assert!(stderr.contains("DENIED"), "{stderr}");
    assert!(
        stderr.contains("7 vulnerabilities at or above Critical (the policy denies 1 or more)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("PYSEC-2020-96 (Critical, pyyaml 5.3, fixed in 5.3.1)"),
        "{stderr}"
    );
}

#[test]
fn an_image_below_the_threshold_count_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = "  deny:\n    severity: Critical\n    count: 8\n";
    let (code, stderr) = scan(tmp.path(), &policy(spec), &[], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("allowed"), "{stderr}");
    assert!(!stderr.contains("DENIED"), "{stderr}");
}

#[test]
fn warn_mode_admits_with_the_reasons_and_exit_code_0() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = format!("{CRITICAL}  mode: Warn\n");
    let (code, stderr) = scan(tmp.path(), &policy(&spec), &[], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("(Warn)"), "{stderr}");
    assert!(stderr.contains("allowed with warnings"), "{stderr}");
    assert!(
        stderr.contains("7 vulnerabilities at or above Critical"),
        "{stderr}"
    );
}

#[test]
fn audit_mode_admits_and_says_enforce_would_deny() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = format!("{CRITICAL}  mode: Audit\n");
    let (code, stderr) = scan(tmp.path(), &policy(&spec), &[], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("Enforce would deny"), "{stderr}");
}

#[test]
fn a_live_exception_lets_the_image_pass_and_an_expired_one_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let live = exception("accepted", &CRITICAL_IDS, "2999-01-01T00:00:00Z");
    let (code, stderr) = scan(tmp.path(), &policy(CRITICAL), &[&live], &[]);
    assert_eq!(code, 0, "{stderr}");
    // One id fewer: that finding still denies.
    let partial = exception("partial", &CRITICAL_IDS[1..], "2999-01-01T00:00:00Z");
    let (code, stderr) = scan(tmp.path(), &policy(CRITICAL), &[&partial], &[]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("1 vulnerability at or above Critical"),
        "{stderr}"
    );
    assert!(stderr.contains("PYSEC-2021-109"), "{stderr}");
    let expired = exception("expired", &CRITICAL_IDS, "2020-01-01T00:00:00Z");
    let (code, stderr) = scan(tmp.path(), &policy(CRITICAL), &[&expired], &[]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("exception expired expired at"), "{stderr}");
}

#[test]
fn baseline_and_listed_ids_deny_and_and_logic_needs_both() {
    let tmp = tempfile::tempdir().unwrap();
    // The example image runs as root (IW-CIS-4.1-ROOT-USER, High).
    let spec = "  deny:\n    baselineSeverity: High\n";
    let (code, stderr) = scan(tmp.path(), &policy(spec), &[], &[]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("IW-CIS-4.1-ROOT-USER"), "{stderr}");
    // AND with a malicious condition that does not hold: no denial.
    let spec = "  deny:\n    baselineSeverity: High\n    malicious: true\n    logic: AND\n";
    let (code, stderr) = scan(tmp.path(), &policy(spec), &[], &[]);
    assert_eq!(code, 0, "{stderr}");
    // A listed id denies whatever the logic says.
    let spec = "  deny:\n    malicious: true\n    logic: AND\n    ids: [NSWG-ECO-516]\n";
    let (code, stderr) = scan(tmp.path(), &policy(spec), &[], &[]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("on the policy's deny list"), "{stderr}");
}

#[test]
fn match_images_decide_whether_the_policy_covers_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = format!("  match:\n    images: [\"registry.example.com/team-a/*\"]\n{CRITICAL}");
    let (code, stderr) = scan(tmp.path(), &policy(&spec), &[], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("does not cover"), "{stderr}");
    let named = ["--policy-image", "registry.example.com/team-a/app:1.0"];
    let (code, stderr) = scan(tmp.path(), &policy(&spec), &[], &named);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("registry.example.com/team-a/app DENIED"),
        "{stderr}"
    );
}

#[test]
fn policy_files_with_mistakes_are_refused_before_the_scan() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, stderr) = scan(
        tmp.path(),
        &policy("  deny:\n    severty: Critical\n"),
        &[],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("severty"), "{stderr}");
    let (code, stderr) = scan(tmp.path(), &policy("  mod: Warn\n"), &[], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("spec.mod is not a field"), "{stderr}");
    let (code, stderr) = scan(tmp.path(), &policy("  maxResultAge: soon\n"), &[], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("spec.maxResultAge"), "{stderr}");
    let wrong_kind = "apiVersion: v1\nkind: ConfigMap\nspec: {}\n";
    let (code, stderr) = scan(tmp.path(), wrong_kind, &[], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("kind ImagePolicy"), "{stderr}");
    let (code, stderr) = scan(tmp.path(), &policy(CRITICAL), &[], &["--severity", "high"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--severity"), "{stderr}");
    let no_reason = "apiVersion: imagewarden.io/v1alpha1\nkind: VulnerabilityException\nspec:\n  expires: \"2999-01-01T00:00:00Z\"\n  reason: \"\"\n  ids: [{id: X}]\n";
    let (code, stderr) = scan(tmp.path(), &policy(CRITICAL), &[no_reason], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("spec.reason"), "{stderr}");
}
