//! Prometheus metrics, rendered in the text exposition format on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Counters and gauges of the operator.
#[derive(Default)]
pub struct Metrics {
    /// Reconciles by controller.
    reconciles: Mutex<BTreeMap<String, u64>>,
    /// Reconcile errors by controller and error label.
    errors: Mutex<BTreeMap<(String, String), u64>>,
    /// Tasks started by trigger.
    tasks_started: Mutex<BTreeMap<String, u64>>,
    /// Tasks finished by phase.
    tasks_finished: Mutex<BTreeMap<String, u64>>,
    /// Image scans by outcome (scanned, reused, rematched, failed).
    scans: Mutex<BTreeMap<String, u64>>,
    scan_seconds_sum: Mutex<f64>,
    scan_seconds_count: AtomicU64,
    /// Images waiting for a scan slot.
    pub queue_depth: AtomicI64,
    /// Scans running now.
    pub scans_running: AtomicI64,
    /// 1 while this replica holds the leader Lease.
    pub leader: AtomicI64,
    /// Version (content digest) and records of the vulnerability database in use.
    database: Mutex<Option<(String, u64)>>,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    *map.lock().expect("metrics lock").entry(key).or_default() += 1;
}

impl Metrics {
    pub fn reconcile(&self, controller: &str) {
        bump(&self.reconciles, controller.to_string());
    }
    pub fn error(&self, controller: &str, label: &str) {
        bump(&self.errors, (controller.to_string(), label.to_string()));
    }
    pub fn task_started(&self, trigger: &str) {
        bump(&self.tasks_started, trigger.to_string());
    }
    pub fn task_finished(&self, phase: &str) {
        bump(&self.tasks_finished, phase.to_string());
    }
    pub fn scan(&self, outcome: &str, seconds: Option<f64>) {
        bump(&self.scans, outcome.to_string());
        if let Some(s) = seconds {
            *self.scan_seconds_sum.lock().expect("metrics lock") += s;
            self.scan_seconds_count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records the vulnerability database in use.
    pub fn database(&self, version: &str, records: u64) {
        *self.database.lock().expect("metrics lock") = Some((version.to_string(), records));
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter =
            |out: &mut String, name: &str, help: &str, label: &str, map: &BTreeMap<String, u64>| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for (k, v) in map {
                    let _ = writeln!(out, "{name}{{{label}=\"{k}\"}} {v}");
                }
            };
        counter(
            &mut out,
            "imagewarden_reconciles_total",
            "Reconciles by controller.",
            "controller",
            &self.reconciles.lock().unwrap(),
        );
        let _ = writeln!(out, "# HELP imagewarden_reconcile_errors_total Reconcile errors.\n# TYPE imagewarden_reconcile_errors_total counter");
        for ((c, e), v) in self.errors.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "imagewarden_reconcile_errors_total{{controller=\"{c}\",error=\"{e}\"}} {v}"
            );
        }
        counter(
            &mut out,
            "imagewarden_tasks_started_total",
            "Scan tasks started, by trigger.",
            "trigger",
            &self.tasks_started.lock().unwrap(),
        );
        counter(
            &mut out,
            "imagewarden_tasks_finished_total",
            "Scan tasks finished, by phase.",
            "phase",
            &self.tasks_finished.lock().unwrap(),
        );
        counter(
            &mut out,
            "imagewarden_image_scans_total",
            "Image scans, by outcome (scanned, reused, rematched: made with a replaced database and re-matched, failed).",
            "outcome",
            &self.scans.lock().unwrap(),
        );
        let _ = writeln!(
            out,
            "# HELP imagewarden_scan_duration_seconds Duration of image scans.\n# TYPE imagewarden_scan_duration_seconds summary\nimagewarden_scan_duration_seconds_sum {}\nimagewarden_scan_duration_seconds_count {}",
            *self.scan_seconds_sum.lock().unwrap(),
            self.scan_seconds_count.load(Ordering::Relaxed)
        );
        for (name, help, v) in [
            (
                "imagewarden_scan_queue_depth",
                "Images waiting for a scan slot.",
                &self.queue_depth,
            ),
            (
                "imagewarden_scans_running",
                "Scans running now.",
                &self.scans_running,
            ),
            (
                "imagewarden_leader",
                "1 while this replica holds the leader Lease.",
                &self.leader,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        if let Some((version, records)) = &*self.database.lock().unwrap() {
            let _ = writeln!(
                out,
                "# HELP imagewarden_database_info The vulnerability database in use (scanner Jobs get the same one).\n# TYPE imagewarden_database_info gauge\nimagewarden_database_info{{version=\"{version}\"}} 1\n# HELP imagewarden_database_records Advisories in the vulnerability database in use.\n# TYPE imagewarden_database_records gauge\nimagewarden_database_records {records}"
            );
        }
        out
    }
}
