//! Prometheus metrics, kept in a `prometheus-client` registry and rendered in the
//! OpenMetrics text format on `/metrics`.

use std::ops::Deref;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::image_metrics::ImageGauges;

/// Label pairs of one series.
type Labels = Vec<(&'static str, String)>;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A gauge whose value callers also read and change as an atomic integer.
#[derive(Default, Clone)]
pub struct AtomicGauge(Gauge<i64, AtomicI64>);

impl Deref for AtomicGauge {
    type Target = AtomicI64;

    fn deref(&self) -> &AtomicI64 {
        self.0.inner()
    }
}

/// A family whose `# HELP` and `# TYPE` are rendered before its first series, so scrapers
/// (and the chart's dashboard and alert tests) see every family the operator has.
#[derive(Debug)]
struct Described<M>(M);

impl<M: EncodeMetric> EncodeMetric for Described<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// Counters and gauges of the operator.
pub struct Metrics {
    registry: Registry,
    /// Reconciles by controller.
    reconciles: Family<Labels, Counter>,
    /// Reconcile errors by controller and error label.
    errors: Family<Labels, Counter>,
    /// Tasks started by trigger.
    tasks_started: Family<Labels, Counter>,
    /// Tasks finished by phase.
    tasks_finished: Family<Labels, Counter>,
    /// Image scans by outcome (scanned, reused, rematched, failed).
    scans: Family<Labels, Counter>,
    scan_seconds: Histogram,
    /// Images waiting for a scan slot.
    pub queue_depth: AtomicGauge,
    /// Scans running now.
    pub scans_running: AtomicGauge,
    /// 1 while this replica holds the leader Lease.
    pub leader: AtomicGauge,
    /// Version (content digest) of the vulnerability database in use.
    database_info: Family<Labels, Gauge>,
    /// Records of the vulnerability database in use.
    database_records: Gauge,
    /// Admission decisions by policy and verdict (allowed, denied, warned, audited).
    admissions: Family<Labels, Counter>,
    /// Time to answer an AdmissionReview.
    admission_seconds: Histogram,
    /// AdmissionReviews that could not be judged, by reason.
    admission_errors: Family<Labels, Counter>,
    /// Running Pods each ImagePolicy would deny now.
    running_denied: Family<Labels, Gauge>,
    /// When the database in use was compiled (Unix seconds).
    database_built: Gauge<f64, AtomicU64>,
    /// The newest record's modification time in the database in use (Unix seconds).
    database_newest_record: Gauge<f64, AtomicU64>,
    /// Notification deliveries by target type, event and outcome.
    notifications: Family<Labels, Counter>,
    /// Per-image findings and verdicts, read from the result caches at each scrape.
    pub images: Arc<ImageGauges>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::default();
        let errors = Family::default();
        let tasks_started = Family::default();
        let tasks_finished = Family::default();
        let scans = Family::default();
        // 0.5 s to about 68 min.
        let scan_seconds = Histogram::new(exponential_buckets(0.5, 2.0, 14));
        let queue_depth = AtomicGauge::default();
        let scans_running = AtomicGauge::default();
        let leader = AtomicGauge::default();
        let database_info = Family::default();
        let database_records = Gauge::default();
        let admissions = Family::default();
        // 50 µs to about 0.8 s.
        let admission_seconds = Histogram::new(exponential_buckets(0.00005, 2.0, 15));
        let admission_errors = Family::default();
        let running_denied = Family::default();
        let database_built = Gauge::default();
        let database_newest_record = Gauge::default();
        let notifications = Family::default();
        let leader_value = leader.clone();
        let images = Arc::new(ImageGauges::new(Arc::new(move || {
            leader_value.load(Ordering::Relaxed) > 0
        })));
        // Counters are registered without `_total`: the encoder appends it.
        registry.register(
            "imagewarden_reconciles",
            "Reconciles by controller",
            Described(reconciles.clone()),
        );
        registry.register(
            "imagewarden_reconcile_errors",
            "Reconcile errors",
            Described(errors.clone()),
        );
        registry.register(
            "imagewarden_tasks_started",
            "Scan tasks started, by trigger",
            Described(tasks_started.clone()),
        );
        registry.register(
            "imagewarden_tasks_finished",
            "Scan tasks finished, by phase",
            Described(tasks_finished.clone()),
        );
        registry.register(
            "imagewarden_image_scans",
            "Image scans, by outcome (scanned, reused, rematched: made with a replaced \
             database and re-matched, failed)",
            Described(scans.clone()),
        );
        registry.register(
            "imagewarden_scan_duration_seconds",
            "Duration of image scans",
            scan_seconds.clone(),
        );
        registry.register(
            "imagewarden_scan_queue_depth",
            "Images waiting for a scan slot",
            queue_depth.0.clone(),
        );
        registry.register(
            "imagewarden_scans_running",
            "Scans running now",
            scans_running.0.clone(),
        );
        registry.register(
            "imagewarden_leader",
            "1 while this replica holds the leader Lease",
            leader.0.clone(),
        );
        registry.register(
            "imagewarden_database_info",
            "The vulnerability database in use (scanner Jobs get the same one)",
            Described(database_info.clone()),
        );
        registry.register(
            "imagewarden_database_records",
            "Advisories in the vulnerability database in use",
            database_records.clone(),
        );
        registry.register(
            "imagewarden_admissions",
            "Admission decisions by ImagePolicy and verdict (allowed, denied, warned, \
             audited); requests no policy covers count under policy=\"\"",
            Described(admissions.clone()),
        );
        registry.register(
            "imagewarden_admission_duration_seconds",
            "Time to answer an AdmissionReview",
            admission_seconds.clone(),
        );
        registry.register(
            "imagewarden_admission_errors",
            "AdmissionReviews that could not be judged, by reason (bad_request: not an \
             AdmissionReview; invalid_object: refused, unreadable object or image reference)",
            Described(admission_errors.clone()),
        );
        registry.register(
            "imagewarden_running_pods_denied",
            "Running Pods whose images an ImagePolicy would deny now (judged every 30 s)",
            Described(running_denied.clone()),
        );
        registry.register(
            "imagewarden_database_built_timestamp_seconds",
            "When the vulnerability database in use was compiled (Unix time); it stops moving \
             when refreshes fail or an offline database is not replaced",
            database_built.clone(),
        );
        registry.register(
            "imagewarden_database_newest_record_timestamp_seconds",
            "Modification time of the newest advisory in the vulnerability database in use \
             (Unix time)",
            database_newest_record.clone(),
        );
        registry.register(
            "imagewarden_notifications",
            "Notification deliveries by target type (DingTalk, HTTP, HTTPS), event and outcome \
             (delivered; failed: refused, unreachable or out of attempts; misconfigured: the \
             target's Secrets or URL could not be used)",
            Described(notifications.clone()),
        );
        registry.register_collector(Box::new(images.clone()));
        Self {
            registry,
            reconciles,
            errors,
            tasks_started,
            tasks_finished,
            scans,
            scan_seconds,
            queue_depth,
            scans_running,
            leader,
            database_info,
            database_records,
            admissions,
            admission_seconds,
            admission_errors,
            running_denied,
            database_built,
            database_newest_record,
            notifications,
            images,
        }
    }
}

fn label(name: &'static str, value: &str) -> Labels {
    vec![(name, value.to_string())]
}

impl Metrics {
    pub fn reconcile(&self, controller: &str) {
        self.reconciles
            .get_or_create(&label("controller", controller))
            .inc();
    }
    pub fn error(&self, controller: &str, error: &str) {
        self.errors
            .get_or_create(&vec![
                ("controller", controller.to_string()),
                ("error", error.to_string()),
            ])
            .inc();
    }
    pub fn task_started(&self, trigger: &str) {
        self.tasks_started
            .get_or_create(&label("trigger", trigger))
            .inc();
    }
    pub fn task_finished(&self, phase: &str) {
        self.tasks_finished
            .get_or_create(&label("phase", phase))
            .inc();
    }
    pub fn scan(&self, outcome: &str, seconds: Option<f64>) {
        self.scans.get_or_create(&label("outcome", outcome)).inc();
        if let Some(s) = seconds {
            self.scan_duration(s);
        }
    }

    /// Records how long one image's scan took (inline, or a scanner Job from start to end).
    pub fn scan_duration(&self, seconds: f64) {
        self.scan_seconds.observe(seconds);
    }

    /// Counts one admission decision of `policy` (empty: no policy covered the request).
    pub fn admission(&self, policy: &str, verdict: &str) {
        self.admissions
            .get_or_create(&vec![
                ("policy", policy.to_string()),
                ("verdict", verdict.to_string()),
            ])
            .inc();
    }

    /// Records how long an AdmissionReview took to answer.
    pub fn admission_duration(&self, seconds: f64) {
        self.admission_seconds.observe(seconds);
    }

    /// Counts an AdmissionReview that could not be judged.
    pub fn admission_error(&self, reason: &str) {
        self.admission_errors
            .get_or_create(&label("reason", reason))
            .inc();
    }

    /// Sets the running Pods each policy would deny (policies absent count none).
    pub fn running_pods_denied(&self, by_policy: &std::collections::BTreeMap<String, i64>) {
        self.running_denied.clear();
        for (policy, n) in by_policy {
            self.running_denied
                .get_or_create(&label("policy", policy))
                .set(*n);
        }
    }

    /// Records the vulnerability database in use.
    pub fn database(&self, version: &str, info: &imagewarden_scanner::vulndb::index::DbInfo) {
        self.database_info.clear();
        self.database_info
            .get_or_create(&label("version", version))
            .set(1);
        self.database_records
            .set(i64::try_from(info.records).unwrap_or(i64::MAX));
        self.database_built.set(unix_seconds(&info.built_at));
        self.database_newest_record
            .set(info.newest_modified.as_deref().map_or(0.0, unix_seconds));
    }

    /// Counts one notification delivery that reached its final state.
    pub fn notification(&self, target_type: &str, event: &str, outcome: &str) {
        self.notifications
            .get_or_create(&vec![
                ("type", target_type.to_string()),
                ("event", event.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
    }

    /// The metrics in the OpenMetrics text format (served as [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Unix seconds of an RFC 3339 time; 0 when it cannot be read (the gauge then reads as
/// "very old", which the staleness alert reports rather than hides).
fn unix_seconds(rfc3339: &str) -> f64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.timestamp_millis() as f64 / 1000.0)
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the series `series` (name and labels as written), as a scraper reads it.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    #[test]
    fn series_keep_their_names_and_labels() {
        let m = Metrics::default();
        m.reconcile("scantask");
        m.reconcile("scantask");
        m.reconcile("scanrule");
        m.error("scantask", "registry");
        m.task_started("schedule");
        m.task_finished("Succeeded");
        m.scan("scanned", Some(2.0));
        m.scan("scanned", Some(3.0));
        m.scan("reused", None);
        m.queue_depth.store(4, Ordering::Relaxed);
        m.scans_running.fetch_add(2, Ordering::Relaxed);
        m.scans_running.fetch_sub(1, Ordering::Relaxed);
        m.leader.store(1, Ordering::Relaxed);
        let text = m.render();
        let expect = [
            ("imagewarden_reconciles_total{controller=\"scantask\"}", 2.0),
            ("imagewarden_reconciles_total{controller=\"scanrule\"}", 1.0),
            (
                "imagewarden_reconcile_errors_total{controller=\"scantask\",error=\"registry\"}",
                1.0,
            ),
            ("imagewarden_tasks_started_total{trigger=\"schedule\"}", 1.0),
            ("imagewarden_tasks_finished_total{phase=\"Succeeded\"}", 1.0),
            ("imagewarden_image_scans_total{outcome=\"scanned\"}", 2.0),
            ("imagewarden_image_scans_total{outcome=\"reused\"}", 1.0),
            ("imagewarden_scan_duration_seconds_sum", 5.0),
            ("imagewarden_scan_duration_seconds_count", 2.0),
            ("imagewarden_scan_queue_depth", 4.0),
            ("imagewarden_scans_running", 1.0),
            ("imagewarden_leader", 1.0),
        ];
        for (series, want) in expect {
            assert_eq!(value(&text, series), Some(want), "{series} in\n{text}");
        }
        assert!(
            text.contains("# TYPE imagewarden_reconciles counter"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(
            value(&text, "imagewarden_database_info{version=\"sha256:a\"}"),
            None
        );
    }

    #[test]
    fn admissions_are_counted_by_policy_and_verdict_with_their_latency() {
        let m = Metrics::default();
        m.admission("no-critical", "denied");
        m.admission("no-critical", "denied");
        m.admission("no-critical", "allowed");
        m.admission("", "allowed");
        m.admission_duration(0.002);
        m.admission_duration(0.001);
        m.admission_error("bad_request");
        let text = m.render();
        let expect = [
            (
                "imagewarden_admissions_total{policy=\"no-critical\",verdict=\"denied\"}",
                2.0,
            ),
            (
                "imagewarden_admissions_total{policy=\"no-critical\",verdict=\"allowed\"}",
                1.0,
            ),
            (
                "imagewarden_admissions_total{policy=\"\",verdict=\"allowed\"}",
                1.0,
            ),
            ("imagewarden_admission_duration_seconds_count", 2.0),
            ("imagewarden_admission_duration_seconds_sum", 0.003),
            (
                "imagewarden_admission_errors_total{reason=\"bad_request\"}",
                1.0,
            ),
        ];
        for (series, want) in expect {
            assert_eq!(value(&text, series), Some(want), "{series} in\n{text}");
        }
    }

    #[test]
    fn a_replaced_database_leaves_one_info_series() {
        let m = Metrics::default();
        let info = |records, built: &str| imagewarden_scanner::vulndb::index::DbInfo {
            records,
            built_at: built.into(),
            newest_modified: Some("2026-11-27T08:00:00.5Z".into()),
            ..Default::default()
        };
        m.database("sha256:a", &info(10, "2026-11-28T00:00:00Z"));
        m.database("sha256:b", &info(12, "2026-11-29T00:00:00Z"));
        let text = m.render();
        assert_eq!(
            value(&text, "imagewarden_database_info{version=\"sha256:b\"}"),
            Some(1.0)
        );
        assert!(!text.contains("sha256:a"), "{text}");
        assert_eq!(value(&text, "imagewarden_database_records"), Some(12.0));
        assert_eq!(
            value(&text, "imagewarden_database_built_timestamp_seconds"),
            Some(1_795_910_400.0)
        );
        assert_eq!(
            value(
                &text,
                "imagewarden_database_newest_record_timestamp_seconds"
            ),
            Some(1_795_766_400.5)
        );
    }

    #[test]
    fn notification_deliveries_are_counted_by_type_event_and_outcome() {
        let m = Metrics::default();
        m.notification("HTTP", "ScanCompleted", "delivered");
        m.notification("HTTP", "ScanCompleted", "delivered");
        m.notification("DingTalk", "NewFindings", "failed");
        let text = m.render();
        assert_eq!(
            value(
                &text,
                "imagewarden_notifications_total{type=\"HTTP\",event=\"ScanCompleted\",outcome=\"delivered\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                "imagewarden_notifications_total{type=\"DingTalk\",event=\"NewFindings\",outcome=\"failed\"}"
            ),
            Some(1.0)
        );
    }

    #[test]
    fn per_image_families_are_described_even_before_any_result() {
        let m = Metrics::default();
        let text = m.render();
        for family in [
            crate::image_metrics::FINDINGS,
            crate::image_metrics::VERDICTS,
        ] {
            assert!(text.contains(&format!("# TYPE {family} gauge")), "{text}");
        }
        assert_eq!(
            value(&text, crate::image_metrics::DROPPED),
            Some(0.0),
            "{text}"
        );
    }
}
