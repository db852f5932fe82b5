//! State shared by the controllers: the API client, configuration, the loaded
//! vulnerability database, in-process scans and metrics.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use imagewarden_scanner::vulndb::Db;
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;

use crate::config::OperatorConfig;
use crate::metrics::Metrics;

/// Field manager of every write the operator makes (server-side apply).
pub const FIELD_MANAGER: &str = "imagewarden-operator";

/// The vulnerability database in use and its version (the digest of its content).
#[derive(Debug)]
pub struct LoadedDb {
    pub db: Db,
    pub version: String,
}

impl LoadedDb {
    /// Wraps a database; its version is the content digest the index records.
    pub fn new(db: Db) -> Self {
        let version = db.info().digest.clone();
        Self { db, version }
    }
}

/// Identifies one image of one task.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScanKey {
    pub task_uid: String,
    pub digest: String,
}

/// Scans running in this process (inline executor) and the outcomes of those that ended
/// but were not yet recorded in their task's status. Only an optimization: the status in
/// the API server is the truth, and a restart re-derives everything from it.
#[derive(Default)]
pub struct InlineScans {
    pub running: HashSet<ScanKey>,
    /// Outcome of finished scans: `Err(message)` for failures.
    pub finished: HashMap<ScanKey, Result<String, String>>,
    /// Failed scans wait until then before their next attempt.
    pub retry_at: HashMap<ScanKey, std::time::Instant>,
}

/// Wait before the next attempt of a scan that failed `attempts` times: 2 s doubling,
/// at most a minute.
pub fn scan_retry_delay(attempts: u32) -> std::time::Duration {
    std::time::Duration::from_secs((2u64 << attempts.min(5).saturating_sub(1)).min(60))
}

/// Requeue delay after `failures` consecutive reconcile failures of one object: 1 s
/// doubling, at most five minutes.
pub fn reconcile_backoff(failures: u32) -> std::time::Duration {
    std::time::Duration::from_secs((1u64 << failures.min(9).saturating_sub(1)).min(300))
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub db: RwLock<Arc<LoadedDb>>,
    /// Databases replaced by a refresh, still served to scanner Jobs until the deadline.
    retired: Mutex<Vec<(Arc<LoadedDb>, std::time::Instant)>>,
    pub inline: Mutex<InlineScans>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Consecutive reconcile failures per object (`kind/namespace/name`), for backoff.
    pub failures: Mutex<HashMap<String, u32>>,
    /// The checks inline scans run (malware rules compiled once, at start-up).
    pub checks: imagewarden_scanner::checks::CheckOptions,
    /// Base URL scanner Jobs download the database from (job executor).
    pub db_base_url: Option<String>,
    /// Deleted results waiting for collection.
    pub lifecycle: crate::lifecycle::ResultLifecycle,
    /// When each rule's registry was last probed, and what it answered.
    pub registry_probes: crate::probe::RegistryProbes,
}

impl Context {
    pub fn new(
        client: Client,
        config: OperatorConfig,
        db: LoadedDb,
        metrics: Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: config.identity.clone(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            db: RwLock::new(Arc::new(db)),
            retired: Mutex::new(Vec::new()),
            inline: Mutex::new(InlineScans::default()),
            metrics,
            failures: Mutex::new(HashMap::new()),
            checks: imagewarden_scanner::checks::CheckOptions::default(),
            db_base_url: None,
            lifecycle: Default::default(),
            registry_probes: Default::default(),
        }
    }

    /// Scanner Jobs download the database from `base_url` (`GET <base_url>/db/<version>`).
    pub fn with_db_base_url(mut self, base_url: String) -> Self {
        self.db_base_url = Some(base_url);
        self
    }

    /// Uses `checks` for inline scans instead of the default checks.
    pub fn with_checks(mut self, checks: imagewarden_scanner::checks::CheckOptions) -> Self {
        self.checks = checks;
        self
    }

    /// Counts a failed reconcile of `key` and returns how many in a row.
    pub fn record_failure(&self, key: &str) -> u32 {
        let mut f = self.failures.lock().expect("failures lock");
        let n = f.entry(key.to_string()).or_default();
        *n += 1;
        *n
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn record_success(&self, key: &str) {
        self.failures.lock().expect("failures lock").remove(key);
    }

    /// The database in use now.
    pub fn db(&self) -> Arc<LoadedDb> {
        self.db.read().expect("db lock").clone()
    }

    /// Makes `db` the database in use; the one it replaces is still served to scanner
    /// Jobs for [`crate::dbserve::RETIRED_DB_GRACE`].
    pub fn replace_db(&self, db: Arc<LoadedDb>) {
        let old = std::mem::replace(&mut *self.db.write().expect("db lock"), db);
        let mut retired = self.retired.lock().expect("retired lock");
        retired.push((
            old,
            std::time::Instant::now() + crate::dbserve::RETIRED_DB_GRACE,
        ));
        prune(&mut retired);
    }

    /// Forgets retired databases whose grace has passed (frees their memory).
    pub fn prune_retired(&self) {
        prune(&mut self.retired.lock().expect("retired lock"));
    }

    /// The database of `version` if this process serves it: the current one, or one a
    /// refresh replaced less than the grace period ago.
    pub fn served_db(&self, version: &str) -> Option<Arc<LoadedDb>> {
        let current = self.db();
        if current.version == version {
            return Some(current);
        }
        let mut retired = self.retired.lock().expect("retired lock");
        prune(&mut retired);
        retired
            .iter()
            .rev()
            .find(|(db, _)| db.version == version)
            .map(|(db, _)| db.clone())
    }
}

fn prune(retired: &mut Vec<(Arc<LoadedDb>, std::time::Instant)>) {
    let now = std::time::Instant::now();
    retired.retain(|(_, until)| *until > now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn backoffs_grow_and_are_capped() {
        assert_eq!(scan_retry_delay(1), Duration::from_secs(2));
        assert_eq!(scan_retry_delay(2), Duration::from_secs(4));
        assert_eq!(scan_retry_delay(30), Duration::from_secs(32));
        assert_eq!(reconcile_backoff(1), Duration::from_secs(1));
        assert_eq!(reconcile_backoff(4), Duration::from_secs(8));
        assert_eq!(reconcile_backoff(100), Duration::from_secs(256));
    }
}
