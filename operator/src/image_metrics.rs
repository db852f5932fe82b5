//! Per-image gauges (`imagewarden_image_findings`, `imagewarden_image_policy_verdict`),
//! computed at each scrape from the cached ImageScanResults, so a deleted result's series
//! leave with it and nothing is kept between scrapes.
//!
//! Only the replica that holds the leader Lease renders them (the others render the
//! families empty): every replica caches the same results, and one source keeps `sum` in
//! dashboards and alerts from counting an image once per replica.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use kube::runtime::reflector::Store;
use kube::ResourceExt;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::crd::{FindingClass, ImageScanResult, SeverityCounts};

/// Label pairs of one series.
pub type Labels = Vec<(&'static str, String)>;

/// Series of both per-image families a scrape renders at most, unless configured.
pub const DEFAULT_SERIES_LIMIT: usize = 100_000;

/// Name of the findings family.
pub const FINDINGS: &str = "imagewarden_image_findings";
/// Name of the verdicts family.
pub const VERDICTS: &str = "imagewarden_image_policy_verdict";
/// Name of the gauge of series left out for the limit.
pub const DROPPED: &str = "imagewarden_image_series_dropped";

/// The classes as the CRD spells them, with their counts in a summary.
fn classes(s: &crate::crd::ResultSummary) -> [(FindingClass, &SeverityCounts); 4] {
    [
        (FindingClass::SystemVulnerability, &s.system_vulnerabilities),
        (
            FindingClass::ApplicationVulnerability,
            &s.application_vulnerabilities,
        ),
        (FindingClass::BaselineRisk, &s.baseline_risks),
        (FindingClass::MaliciousSample, &s.malicious_samples),
    ]
}

fn class_name(class: FindingClass) -> &'static str {
    match class {
        FindingClass::SystemVulnerability => "SystemVulnerability",
        FindingClass::ApplicationVulnerability => "ApplicationVulnerability",
        FindingClass::BaselineRisk => "BaselineRisk",
        FindingClass::MaliciousSample => "MaliciousSample",
    }
}

fn severities(c: &SeverityCounts) -> [(&'static str, u32); 5] {
    [
        ("Critical", c.critical),
        ("High", c.high),
        ("Medium", c.medium),
        ("Low", c.low),
        ("Unknown", c.unknown),
    ]
}

/// The per-image series of a set of results.
#[derive(Debug, Default, PartialEq)]
pub struct ImageSeries {
    /// `imagewarden_image_findings`: labels and count.
    pub findings: Vec<(Labels, i64)>,
    /// `imagewarden_image_policy_verdict`: labels (value 1).
    pub verdicts: Vec<Labels>,
    /// Series left out because the limit was reached.
    pub dropped: u64,
}

/// The series of one result: per tag (`tag=""` when no tag points at the digest any
/// more), one findings series per class and severity with findings (pairs with none are
/// left out), and one verdict series per ImagePolicy verdict in status.
fn result_series(r: &ImageScanResult) -> (Vec<(Labels, i64)>, Vec<Labels>) {
    let namespace = r.namespace().unwrap_or_default();
    let spec = &r.spec;
    let image = |extra: Labels| -> Labels {
        let mut l: Labels = vec![
            ("namespace", namespace.clone()),
            ("registry", spec.registry.clone()),
            ("repository", spec.repository.clone()),
        ];
        l.extend(extra);
        l
    };
    let Some(status) = r.status.as_ref() else {
        return (Vec::new(), Vec::new());
    };
    let untagged = [String::new()];
    let tags = if spec.tags.is_empty() {
        &untagged[..]
    } else {
        &spec.tags[..]
    };
    let mut findings = Vec::new();
    for tag in tags {
        for (class, counts) in classes(&status.summary) {
            for (severity, n) in severities(counts) {
                if n > 0 {
                    findings.push((
                        image(vec![
                            ("tag", tag.clone()),
                            ("digest", spec.digest.clone()),
                            ("class", class_name(class).to_string()),
                            ("severity", severity.to_string()),
                        ]),
                        i64::from(n),
                    ));
                }
            }
        }
    }
    let verdicts = status
        .policies
        .iter()
        .map(|p| {
            image(vec![
                ("digest", spec.digest.clone()),
                ("policy", p.policy.clone()),
                ("verdict", p.verdict.clone()),
            ])
        })
        .collect();
    (findings, verdicts)
}

/// The series of `results`, at most `limit` of them: results are taken in namespace and
/// name order and each whole or not at all, so an image is never shown half.
pub fn image_series(results: &[Arc<ImageScanResult>], limit: usize) -> ImageSeries {
    let mut sorted: Vec<&ImageScanResult> = results.iter().map(|r| r.as_ref()).collect();
    sorted.sort_by_key(|r| (r.namespace(), r.name_any()));
    let mut out = ImageSeries::default();
    let mut rendered = 0usize;
    for r in sorted {
        let (findings, verdicts) = result_series(r);
        let n = findings.len() + verdicts.len();
        if rendered + n > limit {
            out.dropped += n as u64;
            continue;
        }
        rendered += n;
        out.findings.extend(findings);
        out.verdicts.extend(verdicts);
    }
    out
}

/// A cache of `api`'s results, kept as the policy caches keep them, for an operator that
/// runs without those caches (`--watch-namespaces`).
pub fn watch_results(api: kube::Api<ImageScanResult>) -> Store<ImageScanResult> {
    crate::policy::server::watch(api, crate::policy::server::slim_result)
}

/// The collector registered in [`crate::metrics::Metrics`]: reads the result caches it is
/// given at each scrape while `leader` is non-zero.
pub struct ImageGauges {
    stores: RwLock<Vec<Store<ImageScanResult>>>,
    leader: Arc<dyn Fn() -> bool + Send + Sync>,
    limit: AtomicUsize,
    /// Series the last scrape left out (kept for [`ImageGauges::last_dropped`]).
    dropped: AtomicU64,
}

impl std::fmt::Debug for ImageGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageGauges")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl ImageGauges {
    /// Gauges rendered while `leader()` is true.
    pub fn new(leader: Arc<dyn Fn() -> bool + Send + Sync>) -> Self {
        Self {
            stores: RwLock::default(),
            leader,
            limit: AtomicUsize::new(DEFAULT_SERIES_LIMIT),
            dropped: AtomicU64::new(0),
        }
    }

    /// Renders the results of `store` too (one per watched namespace, or one for all).
    pub fn add_results(&self, store: Store<ImageScanResult>) {
        self.stores.write().expect("stores lock").push(store);
    }

    /// Sets the most series of both families one scrape renders.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Series the last scrape left out for the limit.
    pub fn last_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn current(&self) -> ImageSeries {
        if !(self.leader)() {
            return ImageSeries::default();
        }
        let results: Vec<Arc<ImageScanResult>> = self
            .stores
            .read()
            .expect("stores lock")
            .iter()
            .flat_map(|s| s.state())
            .collect();
        image_series(&results, self.limit.load(Ordering::Relaxed))
    }
}

impl Collector for ImageGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let series = self.current();
        self.dropped.store(series.dropped, Ordering::Relaxed);
        let findings = Family::<Labels, Gauge>::default();
        for (labels, n) in &series.findings {
            findings.get_or_create(labels).set(*n);
        }
        findings.encode(encoder.encode_descriptor(
            FINDINGS,
            "Findings of each scanned image by tag, class and severity, from the \
             ImageScanResults' summaries (class and severity pairs without findings are left \
             out; tag=\"\" for a digest no tag points at any more); rendered by the leader only",
            None,
            findings.metric_type(),
        )?)?;
        let verdicts = Family::<Labels, Gauge>::default();
        for labels in &series.verdicts {
            verdicts.get_or_create(labels).set(1);
        }
        verdicts.encode(encoder.encode_descriptor(
            VERDICTS,
            "1 for each ImagePolicy verdict (Pass, Warn, Violation) recorded on an \
             ImageScanResult; rendered by the leader only",
            None,
            verdicts.metric_type(),
        )?)?;
        let dropped: Gauge = Gauge::default();
        dropped.set(i64::try_from(series.dropped).unwrap_or(i64::MAX));
        dropped.encode(encoder.encode_descriptor(
            DROPPED,
            "Per-image series the last scrape left out because there were more than \
             --metrics-image-series-limit",
            None,
            dropped.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        ImageScanResultSpec, ImageScanResultStatus, PolicyVerdictEntry, ResultSummary,
    };

    fn result(ns: &str, name: &str, tags: &[&str], summary: ResultSummary) -> Arc<ImageScanResult> {
        let mut r = ImageScanResult::new(
            name,
            ImageScanResultSpec {
                registry: "registry.example:5000".into(),
                repository: "team-a/api".into(),
                digest: format!("sha256:{name}"),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                tags_seen: Vec::new(),
            },
        );
        r.metadata.namespace = Some(ns.into());
        r.status = Some(ImageScanResultStatus {
            summary,
            policies: vec![PolicyVerdictEntry {
                policy: "no-critical".into(),
                verdict: "Violation".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        Arc::new(r)
    }

    fn summary() -> ResultSummary {
        ResultSummary {
            system_vulnerabilities: SeverityCounts {
                critical: 2,
                low: 1,
                ..Default::default()
            },
            baseline_risks: SeverityCounts {
                medium: 3,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn value(s: &ImageSeries, tag: &str, class: &str, severity: &str) -> Option<i64> {
        s.findings.iter().find_map(|(l, n)| {
            let has = |k: &str, v: &str| l.iter().any(|(lk, lv)| *lk == k && lv == v);
            (has("tag", tag) && has("class", class) && has("severity", severity)).then_some(*n)
        })
    }

    #[test]
    fn each_tag_gets_the_summary_by_class_and_severity() {
        let s = image_series(&[result("team-a", "r1", &["v1", "latest"], summary())], 100);
        for tag in ["v1", "latest"] {
            assert_eq!(value(&s, tag, "SystemVulnerability", "Critical"), Some(2));
            assert_eq!(value(&s, tag, "SystemVulnerability", "Low"), Some(1));
            assert_eq!(value(&s, tag, "BaselineRisk", "Medium"), Some(3));
            assert_eq!(value(&s, tag, "SystemVulnerability", "High"), None);
        }
        assert_eq!(s.findings.len(), 6);
        assert_eq!(s.verdicts.len(), 1);
        assert!(s.verdicts[0].contains(&("verdict", "Violation".into())));
        assert!(s.verdicts[0].contains(&("digest", "sha256:r1".into())));
        assert_eq!(s.dropped, 0);
    }

    #[test]
    fn a_result_no_tag_points_at_is_shown_with_an_empty_tag() {
        let s = image_series(&[result("team-a", "r1", &[], summary())], 100);
        assert_eq!(value(&s, "", "SystemVulnerability", "Critical"), Some(2));
    }

    #[test]
    fn a_result_without_status_has_no_series() {
        let mut r = (*result("team-a", "r1", &["v1"], summary())).clone();
        r.status = None;
        assert_eq!(image_series(&[Arc::new(r)], 100), ImageSeries::default());
    }

    #[test]
    fn the_limit_leaves_out_whole_results_and_counts_their_series() {
        let results = [
            result("team-b", "r3", &["v1"], summary()),
            result("team-a", "r2", &["v1"], summary()),
            result("team-a", "r1", &["v1", "v2"], summary()),
        ];
        // r1 has 7 series, r2 and r3 have 4 each: r1 and r2 fit in 12, r3 does not.
        let s = image_series(&results, 12);
        assert_eq!(s.findings.len() + s.verdicts.len(), 11);
        assert_eq!(s.dropped, 4);
        assert!(s
            .verdicts
            .iter()
            .all(|l| !l.contains(&("namespace", "team-b".into()))));
    }
}
