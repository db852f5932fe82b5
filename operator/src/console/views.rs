//! What the status API answers, decided from cached objects without a client: the
//! `scan-status` of one image, and the views of rules, tasks, repositories, tags and
//! results. The caller has already dropped the objects of namespaces the user may not read.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::super::policy::image::{ImageName, ImageReference};
use crate::crd::{
    Finding, FindingClass, FixVerification, ImageFix, ImageFixPhase, ImageProgress,
    ImageScanResult, PlannedUpgrade, PreviousMatch, ResultSummary, ScanPhase, ScanRule, ScanTask,
    Severity, SeverityCounts, UnfixableVulnerability,
};

/// Largest page of a list.
pub const MAX_LIMIT: usize = 500;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: usize = 100;

/// A window of a sorted list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paging {
    pub offset: usize,
    pub limit: usize,
}

impl Paging {
    /// `limit` clamped to 1..=[`MAX_LIMIT`].
    pub fn new(offset: Option<usize>, limit: Option<usize>) -> Self {
        Self {
            offset: offset.unwrap_or(0),
            limit: limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT),
        }
    }

    /// The page of `items`.
    pub fn page<T>(self, items: Vec<T>) -> Page<T> {
        let total = items.len();
        let items = items
            .into_iter()
            .skip(self.offset)
            .take(self.limit)
            .collect();
        Page {
            items,
            total,
            offset: self.offset,
            limit: self.limit,
        }
    }
}

/// One page of a list and the size of the whole.
#[derive(Serialize, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
}

/// Where the scan of one image stands, as the managed registry's `GetRepoTagScanStatus`
/// says it.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScanState {
    /// No result and no task for the image.
    NotScanned,
    /// A task is scanning it (or is about to).
    Scanning,
    /// An attempt failed and another is scheduled or running.
    Retrying,
    /// A result exists.
    Complete,
    /// The latest task gave up on it.
    Failed,
}

/// The answer of `GET /api/v1/scan-status`.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScanStatus {
    pub status: ScanState,
    pub digest: Option<String>,
    /// `namespace/name` of the latest task that covered the image.
    pub task: Option<String>,
    /// `namespace/name` of the newest result.
    pub result: Option<String>,
    pub summary: Option<ResultSummary>,
    /// Version of the vulnerability database the result was matched with.
    pub database: Option<String>,
    pub scanned_at: Option<String>,
    /// Why the scan failed or is retried.
    pub message: Option<String>,
}

/// Which image `scan-status` is asked about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageQuery {
    pub name: ImageName,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageQuery {
    /// From the query parameters: a tag or a digest, not both, not neither.
    pub fn new(
        registry: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> Result<Self, String> {
        if registry.is_empty() || repository.is_empty() {
            return Err("registry and repository are required".into());
        }
        let tag = tag.filter(|t| !t.is_empty());
        let digest = digest.filter(|d| !d.is_empty());
        if tag.is_some() == digest.is_some() {
            return Err("give either tag or digest".into());
        }
        if let Some(d) = digest {
            if !crate::dbserve::is_version(d) {
                return Err("digest must be sha256:<64 hex digits>".into());
            }
        }
        Ok(Self {
            name: ImageName::new(registry, repository),
            tag: tag.map(str::to_string),
            digest: digest.map(str::to_string),
        })
    }

    fn matches_result(&self, r: &ImageScanResult) -> bool {
        (match (&self.digest, &self.tag) {
            (Some(d), _) => r.spec.digest == *d,
            (None, Some(t)) => r.spec.tags.iter().any(|x| x == t),
            (None, None) => false,
        }) && crate::policy::result_image(r) == self.name
    }

    fn matches_entry(&self, e: &ImageProgress) -> bool {
        let Ok(seen) = ImageReference::parse(&e.image) else {
            return false;
        };
        seen.name == self.name
            && match (&self.digest, &self.tag) {
                (Some(d), _) => e.digest.as_ref() == Some(d) || seen.digest.as_ref() == Some(d),
                (None, tag) => seen.tag == *tag,
            }
    }
}

fn key(meta: &kube::api::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

fn scan_second(r: &ImageScanResult) -> i64 {
    r.status
        .as_ref()
        .and_then(|s| s.scan_time.as_ref())
        .map_or(0, |t| t.0.as_second())
}

fn task_second(t: &ScanTask) -> i64 {
    t.metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second())
}

/// Whether a task entry still being worked on has had a failed attempt: `Retrying` while
/// the next attempt waits, `Running` with more than one attempt while it runs.
pub fn retrying(entry: &ImageProgress) -> bool {
    match entry.phase {
        ScanPhase::Retrying => true,
        // As recorded before `Retrying` existed.
        ScanPhase::Pending => entry.attempts >= 1 && entry.message.is_some(),
        ScanPhase::Running => entry.attempts >= 2,
        ScanPhase::Completed | ScanPhase::Failed => false,
    }
}

/// The scan status of `query` among `results` and `tasks`: the newest task's entry for
/// the image while it is worked on or when it failed after the newest result, else the
/// newest result.
pub fn scan_status(
    query: &ImageQuery,
    results: &[Arc<ImageScanResult>],
    tasks: &[Arc<ScanTask>],
) -> ScanStatus {
    let result = results
        .iter()
        .filter(|r| query.matches_result(r))
        .max_by_key(|r| (scan_second(r), key(&r.metadata)));
    let entry = tasks
        .iter()
        .filter_map(|t| {
            let entry = t
                .status
                .as_ref()?
                .images
                .iter()
                .find(|e| query.matches_entry(e))?;
            Some((t, entry))
        })
        .max_by_key(|(t, _)| (task_second(t), key(&t.metadata)));
    let mut status = ScanStatus {
        status: ScanState::NotScanned,
        digest: query.digest.clone(),
        task: entry.map(|(t, _)| key(&t.metadata)),
        result: None,
        summary: None,
        database: None,
        scanned_at: None,
        message: None,
    };
    if let Some(r) = result {
        let s = r.status.as_ref();
        status.status = ScanState::Complete;
        status.digest = Some(r.spec.digest.clone());
        status.result = Some(key(&r.metadata));
        status.summary = s.map(|s| s.summary.clone());
        status.database = s.and_then(|s| s.database_version.clone());
        status.scanned_at = s
            .and_then(|s| s.scan_time.as_ref())
            .map(|t| t.0.to_string());
    }
    if let Some((task, e)) = entry {
        let newer = result.is_none_or(|r| task_second(task) >= scan_second(r));
        let state = match e.phase {
            ScanPhase::Pending | ScanPhase::Running | ScanPhase::Retrying if retrying(e) => {
                Some(ScanState::Retrying)
            }
            ScanPhase::Pending | ScanPhase::Running | ScanPhase::Retrying => {
                Some(ScanState::Scanning)
            }
            ScanPhase::Failed if newer => Some(ScanState::Failed),
            ScanPhase::Failed | ScanPhase::Completed => None,
        };
        if let Some(state) = state {
            status.status = state;
            if status.digest.is_none() {
                status.digest = e.digest.clone();
            }
            status.message = e.message.clone().filter(|_| state != ScanState::Scanning);
        }
    }
    status
}

/// The most severe level with findings.
pub fn worst(summary: &ResultSummary) -> Option<Severity> {
    [
        (summary.critical, Severity::Critical),
        (summary.high, Severity::High),
        (summary.medium, Severity::Medium),
        (summary.low, Severity::Low),
        (summary.unknown, Severity::Unknown),
    ]
    .into_iter()
    .find(|(n, _)| *n > 0)
    .map(|(_, s)| s)
}

/// Higher for more severe; 0 for no finding.
pub fn rank(severity: Option<Severity>) -> u8 {
    match severity {
        Some(Severity::Critical) => 5,
        Some(Severity::High) => 4,
        Some(Severity::Medium) => 3,
        Some(Severity::Low) => 2,
        Some(Severity::Unknown) => 1,
        None => 0,
    }
}

fn parse_severity(s: &str) -> Option<Severity> {
    Some(match s.to_ascii_lowercase().as_str() {
        "critical" => Severity::Critical,
        "high" => Severity::High,
        "medium" => Severity::Medium,
        "low" => Severity::Low,
        "unknown" => Severity::Unknown,
        _ => return None,
    })
}

/// Adds the totals of `summary` to `counts`.
fn add_totals(counts: &mut SeverityCounts, summary: &ResultSummary) {
    let t = summary.totals();
    counts.critical += t.critical;
    counts.high += t.high;
    counts.medium += t.medium;
    counts.low += t.low;
    counts.unknown += t.unknown;
}

/// How the findings changed when database updates re-matched images.
#[derive(Serialize, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Trend {
    /// Results re-matched by a database update since their last full scan.
    pub images: usize,
    /// Findings now minus findings before the update, by severity.
    pub critical: i64,
    pub high: i64,
    pub medium: i64,
    pub low: i64,
    pub unknown: i64,
}

impl Trend {
    /// Adds the change of `r` when a database update re-matched it.
    fn add(&mut self, r: &ImageScanResult) {
        let Some(status) = &r.status else { return };
        let Some(previous) = &status.previous else {
            return;
        };
        let (now, before) = (status.summary.totals(), &previous.totals);
        let d = |a: u32, b: u32| i64::from(a) - i64::from(b);
        self.images += 1;
        self.critical += d(now.critical, before.critical);
        self.high += d(now.high, before.high);
        self.medium += d(now.medium, before.medium);
        self.low += d(now.low, before.low);
        self.unknown += d(now.unknown, before.unknown);
    }

    /// The change of every result that database updates re-matched; `None` when none.
    pub fn of<'a>(results: impl IntoIterator<Item = &'a ImageScanResult>) -> Option<Trend> {
        let mut trend = Trend::default();
        for r in results {
            trend.add(r);
        }
        (trend.images > 0).then_some(trend)
    }
}

/// A ScanRule, without its notification targets (their URLs may be secret).
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct RuleView {
    pub namespace: String,
    pub name: String,
    pub registry: String,
    pub scope: String,
    pub tag_filter: String,
    pub on_push: bool,
    pub schedule: Option<String>,
    pub scanners: Vec<String>,
    /// The newest task of the rule: name and phase.
    pub last_task: Option<TaskView>,
}

/// A ScanTask with its counts (and, in detail, its images).
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    pub namespace: String,
    pub name: String,
    pub rule: Option<String>,
    pub trigger: String,
    pub phase: ScanPhase,
    pub total: u32,
    pub succeeded: u32,
    pub failed: u32,
    /// Images being retried after a failed attempt.
    pub retrying: u32,
    pub created: Option<String>,
    pub completed: Option<String>,
}

pub fn task_view(t: &ScanTask) -> TaskView {
    let s = t.status.clone().unwrap_or_default();
    TaskView {
        namespace: t.metadata.namespace.clone().unwrap_or_default(),
        name: t.metadata.name.clone().unwrap_or_default(),
        rule: t.spec.rule_ref.as_ref().map(|r| r.name.clone()),
        trigger: format!("{:?}", t.spec.trigger),
        phase: s.phase,
        total: s.total,
        succeeded: s.succeeded,
        failed: s.failed,
        retrying: s.images.iter().filter(|e| retrying(e)).count() as u32,
        created: t
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
        completed: s.completion_time.map(|t| t.0.to_string()),
    }
}

/// Tasks newest first.
pub fn tasks_newest_first(tasks: &mut [Arc<ScanTask>]) {
    tasks.sort_by(|a, b| {
        task_second(b)
            .cmp(&task_second(a))
            .then_with(|| key(&a.metadata).cmp(&key(&b.metadata)))
    });
}

pub fn rule_view(rule: &ScanRule, tasks: &[Arc<ScanTask>]) -> RuleView {
    let namespace = rule.metadata.namespace.clone().unwrap_or_default();
    let name = rule.metadata.name.clone().unwrap_or_default();
    let last_task = tasks
        .iter()
        .filter(|t| {
            t.metadata.namespace.as_deref() == Some(namespace.as_str())
                && t.spec.rule_ref.as_ref().is_some_and(|r| r.name == name)
        })
        .max_by_key(|t| (task_second(t), key(&t.metadata)))
        .map(|t| task_view(t));
    let spec = &rule.spec;
    RuleView {
        registry: spec.registry.url.clone(),
        scope: format!("{:?} {}", spec.scope.scope_type, spec.scope.name),
        tag_filter: spec.tag_filter.clone(),
        on_push: spec.triggers.on_push,
        schedule: spec.triggers.schedule.clone(),
        scanners: spec
            .scanners
            .iter()
            .map(|s| format!("{s:?}").to_lowercase())
            .collect(),
        namespace,
        name,
        last_task,
    }
}

/// The images of a registry repository scanned in one namespace.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryView {
    pub namespace: String,
    pub registry: String,
    pub repository: String,
    /// Scanned digests.
    pub digests: usize,
    pub tags: usize,
    pub worst: Option<Severity>,
    /// Findings of every digest added up.
    pub counts: SeverityCounts,
    pub last_scanned: Option<String>,
    /// Since the last database update (of the digests it re-matched).
    pub trend: Option<Trend>,
}

/// Repositories, the worst first.
pub fn repositories(results: &[Arc<ImageScanResult>]) -> Vec<RepositoryView> {
    let mut by_repo: BTreeMap<(String, String, String), Vec<&ImageScanResult>> = BTreeMap::new();
    for r in results {
        by_repo
            .entry((
                r.metadata.namespace.clone().unwrap_or_default(),
                r.spec.registry.clone(),
                r.spec.repository.clone(),
            ))
            .or_default()
            .push(r);
    }
    let mut views: Vec<RepositoryView> = by_repo
        .into_iter()
        .map(|((namespace, registry, repository), rs)| {
            let mut counts = SeverityCounts::default();
            let mut tags = std::collections::BTreeSet::new();
            for r in &rs {
                if let Some(s) = &r.status {
                    add_totals(&mut counts, &s.summary);
                }
                tags.extend(r.spec.tags.iter());
            }
            let newest = rs.iter().max_by_key(|r| scan_second(r));
            RepositoryView {
                worst: rs
                    .iter()
                    .filter_map(|r| r.status.as_ref().and_then(|s| worst(&s.summary)))
                    .min(),
                digests: rs.len(),
                tags: tags.len(),
                last_scanned: newest
                    .and_then(|r| r.status.as_ref())
                    .and_then(|s| s.scan_time.as_ref())
                    .map(|t| t.0.to_string()),
                counts,
                trend: Trend::of(rs.iter().copied()),
                namespace,
                registry,
                repository,
            }
        })
        .collect();
    views.sort_by(|a, b| {
        (
            rank(b.worst),
            b.counts.critical,
            b.counts.high,
            b.counts.medium,
        )
            .cmp(&(
                rank(a.worst),
                a.counts.critical,
                a.counts.high,
                a.counts.medium,
            ))
            .then_with(|| (&a.namespace, &a.repository).cmp(&(&b.namespace, &b.repository)))
    });
    views
}

/// An ImageFix's progress and outcome.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct FixView {
    pub namespace: String,
    pub name: String,
    /// The ImageScanResult the fix is for, when made from one.
    pub result: Option<String>,
    pub phase: ImageFixPhase,
    /// Whether the phase is one the fix ends in.
    pub finished: bool,
    pub message: Option<String>,
    pub image: Option<String>,
    pub plan: Vec<PlannedUpgrade>,
    pub unfixable: Vec<UnfixableVulnerability>,
    pub pushed: Option<String>,
    pub original: Option<String>,
    pub verification: Option<FixVerification>,
    pub database: Option<String>,
    pub created: Option<String>,
}

pub fn fix_view(f: &ImageFix) -> FixView {
    let s = f.status.clone().unwrap_or_default();
    let current = s.observed_generation == f.metadata.generation;
    FixView {
        namespace: f.metadata.namespace.clone().unwrap_or_default(),
        name: f.metadata.name.clone().unwrap_or_default(),
        result: f.spec.result_ref.as_ref().map(|r| r.name.clone()),
        phase: s.phase,
        finished: current && s.phase.is_final(),
        message: s.message,
        image: s.image.or_else(|| f.spec.image.clone()),
        plan: s.plan,
        unfixable: s.unfixable,
        pushed: s.pushed,
        original: s.original,
        verification: s.verification,
        database: s.database_version,
        created: f
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
    }
}

/// An ImageScanResult without its findings.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ResultView {
    pub namespace: String,
    pub name: String,
    pub registry: String,
    pub repository: String,
    pub digest: String,
    pub tags: Vec<String>,
    pub worst: Option<Severity>,
    pub summary: ResultSummary,
    pub total_findings: u32,
    /// Only the most severe findings are stored.
    pub truncated: bool,
    pub os: Option<String>,
    pub database: Option<String>,
    pub scanned_at: Option<String>,
    /// The findings before the last database update re-matched the image.
    pub previous: Option<PreviousMatch>,
}

pub fn result_view(r: &ImageScanResult) -> ResultView {
    let s = r.status.clone().unwrap_or_default();
    ResultView {
        namespace: r.metadata.namespace.clone().unwrap_or_default(),
        name: r.metadata.name.clone().unwrap_or_default(),
        registry: r.spec.registry.clone(),
        repository: r.spec.repository.clone(),
        digest: r.spec.digest.clone(),
        tags: r.spec.tags.clone(),
        worst: worst(&s.summary),
        total_findings: s.total_findings,
        truncated: s.truncated,
        os: s.os.map(|o| format!("{} {}", o.family, o.version)),
        database: s.database_version,
        scanned_at: s.scan_time.map(|t| t.0.to_string()),
        previous: s.previous,
        summary: s.summary,
    }
}

/// Results newest first.
pub fn results_newest_first(results: &mut [Arc<ImageScanResult>]) {
    results.sort_by(|a, b| {
        scan_second(b)
            .cmp(&scan_second(a))
            .then_with(|| key(&a.metadata).cmp(&key(&b.metadata)))
    });
}

/// Which findings of a result are wanted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FindingFilter {
    pub classes: Vec<FindingClass>,
    pub severities: Vec<Severity>,
    pub fixable: Option<bool>,
}

impl FindingFilter {
    /// From comma-separated query values; an unknown value is an error that names it.
    pub fn parse(
        class: Option<&str>,
        severity: Option<&str>,
        fixable: Option<bool>,
    ) -> Result<Self, String> {
        let split = |s: Option<&str>| {
            s.unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let classes = split(class)
            .iter()
            .map(|c| {
                serde_json::from_value::<FindingClass>(serde_json::Value::String(c.clone()))
                    .map_err(|_| format!("class: {c:?} is not one of SystemVulnerability, ApplicationVulnerability, BaselineRisk, MaliciousSample"))
            })
            .collect::<Result<_, _>>()?;
        let severities = split(severity)
            .iter()
            .map(|s| {
                parse_severity(s).ok_or_else(|| {
                    format!("severity: {s:?} is not one of critical, high, medium, low, unknown")
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            classes,
            severities,
            fixable,
        })
    }

    fn keeps(&self, f: &Finding) -> bool {
        (self.classes.is_empty() || self.classes.contains(&f.class))
            && (self.severities.is_empty() || self.severities.contains(&f.severity))
            && self
                .fixable
                .is_none_or(|want| want == f.fixed_version.is_some())
    }
}

/// The findings `filter` keeps, the most severe (then highest scored) first.
pub fn findings(r: &ImageScanResult, filter: &FindingFilter) -> Vec<Finding> {
    let mut kept: Vec<Finding> = r
        .status
        .iter()
        .flat_map(|s| &s.findings)
        .filter(|f| filter.keeps(f))
        .cloned()
        .collect();
    kept.sort_by(crate::result::most_severe_first);
    kept
}

/// One tag (or an untagged digest) of a repository.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct TagView {
    pub tag: Option<String>,
    pub result: ResultView,
}

/// The tags of one repository, tag order; untagged digests last.
pub fn tags(results: &[Arc<ImageScanResult>], name: &ImageName) -> Vec<TagView> {
    let mut views: Vec<TagView> = Vec::new();
    for r in results
        .iter()
        .filter(|r| crate::policy::result_image(r) == *name)
    {
        if r.spec.tags.is_empty() {
            views.push(TagView {
                tag: None,
                result: result_view(r),
            });
        }
        for tag in &r.spec.tags {
            views.push(TagView {
                tag: Some(tag.clone()),
                result: result_view(r),
            });
        }
    }
    views.sort_by(|a, b| match (&a.tag, &b.tag) {
        (Some(x), Some(y)) => x.cmp(y).then_with(|| a.result.name.cmp(&b.result.name)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.result.name.cmp(&b.result.name),
    });
    views
}

#[cfg(test)]
mod tests;
