//! `imagewarden scan --policy`: an ImagePolicy (and VulnerabilityExceptions) judged
//! offline by the evaluator the operator uses.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use imagewarden_scanner::policy::file::{read_exceptions, read_policy, scanned_report};
use imagewarden_scanner::policy::file::{ExceptionFile, PolicyFile};
use imagewarden_scanner::policy::{
    action, evaluate, Action, Exception, Facts, ImageName, ImageReference, Subject,
};
use imagewarden_scanner::report::ScanReport;
use imagewarden_scanner::source::ImageRef;

/// Exit code of `imagewarden scan --policy` when the policy denies the image.
pub const DENIED_EXIT_CODE: u8 = 3;

/// A policy and its exceptions, read before the scan.
pub struct Judge {
    policy: PolicyFile,
    exceptions: Vec<ExceptionFile>,
    image_name: Option<String>,
}

impl Judge {
    /// Reads the files; refuses finding filters (`filtered`: --severity or
    /// --ignore-unfixed was given), which would change what the policy sees.
    pub fn load(
        path: &Path,
        exceptions: &[PathBuf],
        filtered: bool,
        policy_image: Option<&str>,
    ) -> anyhow::Result<Self> {
        if filtered {
            anyhow::bail!(
                "--policy judges every finding: leave out --severity and --ignore-unfixed \
                 (the policy's spec.deny.severity and spec.deny.onlyFixable say what counts)"
            );
        }
        let policy = read_policy(path).map_err(anyhow::Error::msg)?;
        for field in &policy.cluster_only {
            eprintln!(
                "note: {field} applies at admission in a cluster; offline, the policy judges the image alone"
            );
        }
        let mut all = Vec::new();
        for file in exceptions {
            all.extend(read_exceptions(file).map_err(anyhow::Error::msg)?);
        }
        if let Some(name) = policy_image {
            ImageReference::parse(name)
                .map_err(|e| anyhow::anyhow!("--policy-image {name:?}: {e}"))?;
        }
        Ok(Judge {
            policy,
            exceptions: all,
            image_name: policy_image.map(str::to_string),
        })
    }

    /// The name the policy judges the image by: --policy-image, else the registry
    /// reference scanned, else `local/<target>`.
    fn image_name(&self, target: &str) -> ImageName {
        let registry_ref = match ImageRef::parse(target) {
            Ok(ImageRef::Registry(r)) => Some(r),
            _ => None,
        };
        self.image_name
            .as_deref()
            .or(registry_ref.as_deref())
            .and_then(|r| ImageReference::parse(r).ok())
            .map(|r| r.name)
            .unwrap_or_else(|| ImageName {
                registry: "local".into(),
                repository: target.into(),
            })
    }

    /// Prints the verdict on standard error; the exit code when the policy denies.
    pub fn judge(&self, report: &ScanReport, target: &str) -> Option<ExitCode> {
        let image = self.image_name(target);
        let name = &self.policy.name;
        if !self.policy.covers(&image) {
            eprintln!("policy {name}: does not cover {image} (spec.match.images)");
            return None;
        }
        let now = chrono::Utc::now();
        let scanned = scanned_report(report, image.clone(), now);
        let exceptions: Vec<Exception<'_>> = self
            .exceptions
            .iter()
            .map(ExceptionFile::as_exception)
            .collect();
        for e in self
            .exceptions
            .iter()
            .filter(|e| !e.as_exception().live(now))
        {
            eprintln!(
                "note: exception {} expired at {}: its findings count",
                e.name,
                e.expires.to_rfc3339()
            );
        }
        let verdict = evaluate(
            &self.policy.rules,
            Subject::Scanned(&scanned),
            &exceptions,
            Facts {
                now,
                database_version: None,
            },
        );
        let mode = self.policy.rules.mode;
        let act = action(mode, verdict.outcome);
        let headline = match act {
            Action::Admit => "allowed",
            Action::Deny => "DENIED",
            Action::Warn => "allowed with warnings",
            Action::Audit => "allowed (Audit mode: Enforce would deny)",
        };
        eprintln!("policy {name} ({mode:?}): {image} {headline}");
        for reason in &verdict.reasons {
            eprintln!("  - {reason}");
        }
        (act == Action::Deny).then(|| ExitCode::from(DENIED_EXIT_CODE))
    }
}
