//! State shared by the controllers: the API client, configuration, the loaded
//! vulnerability database, in-process scans and metrics.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use k8s_openapi::api::batch::v1::Job;
use kube::core::DeserializeGuard;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Client;
use tokio::sync::mpsc;

use crate::config::OperatorConfig;
use crate::crd::{ImageScanResult, ScanRule, ScanTask};
pub use crate::db::LoadedDb;
use crate::metrics::Metrics;
use crate::notify::TaskLocks;
use crate::result::StoredResult;

/// Field manager of every write the operator makes (server-side apply).
pub const FIELD_MANAGER: &str = "imagewarden-operator";

/// How long a database replaced by a refresh is still served to scanner Jobs, so Jobs
/// started just before keep working.
pub const RETIRED_DB_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// State of the result lifecycle: the collector of `Deleted` results is woken when one
/// is marked.
#[derive(Default)]
pub struct ResultLifecycle {
    gc_wake: tokio::sync::Notify,
}

impl ResultLifecycle {
    /// Schedules the collection of results just marked `Deleted`.
    pub fn wake_collector(&self) {
        self.gc_wake.notify_one();
    }

    /// Waits until [`ResultLifecycle::wake_collector`] is called.
    pub async fn collector_woken(&self) {
        self.gc_wake.notified().await
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
#[derive(Clone, Default)]
pub struct InlineScans {
    pub running: HashSet<ScanKey>,
    /// Outcome of finished scans: what was written, or `Err(message)` for failures.
    pub finished: HashMap<ScanKey, Result<StoredResult, String>>,
    /// Failed scans wait until then before their next attempt.
    pub retry_at: HashMap<ScanKey, std::time::Instant>,
}

/// A ScanTask as the task controller's queue names it.
pub type TaskRef = ObjectRef<DeserializeGuard<ScanTask>>;

/// What the watches of the ScanTask controller hold (set when the controllers start): one
/// store per watched scope, each for its own namespaces.
#[derive(Clone, Default)]
pub struct Watched {
    pub rules: Vec<Store<DeserializeGuard<ScanRule>>>,
    /// ImageScanResults without findings or inventories (see the controller's watch).
    pub results: Vec<Store<DeserializeGuard<ImageScanResult>>>,
    /// Scanner Jobs (by their label).
    pub jobs: Vec<Store<Job>>,
}

impl Watched {
    /// Waits until every watch has listed its objects once; an error when the controllers
    /// stop first.
    pub async fn wait_until_ready(&self) -> Result<(), crate::Error> {
        let stopping = |_| crate::Error::Stopping;
        for store in &self.rules {
            store.wait_until_ready().await.map_err(stopping)?;
        }
        for store in &self.results {
            store.wait_until_ready().await.map_err(stopping)?;
        }
        for store in &self.jobs {
            store.wait_until_ready().await.map_err(stopping)?;
        }
        Ok(())
    }

    /// The rule `key` names.
    pub fn rule(
        &self,
        key: &ObjectRef<DeserializeGuard<ScanRule>>,
    ) -> Option<Arc<DeserializeGuard<ScanRule>>> {
        self.rules.iter().find_map(|s| s.get(key))
    }

    /// The result `key` names.
    pub fn result(
        &self,
        key: &ObjectRef<DeserializeGuard<ImageScanResult>>,
    ) -> Option<Arc<DeserializeGuard<ImageScanResult>>> {
        self.results.iter().find_map(|s| s.get(key))
    }

    /// Every scanner Job watched.
    pub fn jobs(&self) -> Vec<Arc<Job>> {
        self.jobs.iter().flat_map(|s| s.state()).collect()
    }
}

/// How ScanTasks are woken besides watch events: an inline scan that ended, and a scan
/// slot that freed up for tasks waiting on `maxConcurrentScans`.
pub struct TaskWakeups {
    /// One channel per ScanTask controller, with the namespace it serves (`None`: all).
    senders: Mutex<Vec<(Option<String>, mpsc::UnboundedSender<TaskRef>)>>,
    waiting: Mutex<HashSet<TaskRef>>,
    /// Scanner Jobs created (`namespace/name`) that the Job watch has not shown yet;
    /// they count against the bound.
    jobs_created: Mutex<HashSet<String>>,
    /// Held from counting the scans running to recording the ones a reconcile starts, so
    /// two tasks never both take the last slot.
    pub slots: tokio::sync::Mutex<()>,
    /// Per task, the resourceVersion its last status write was planned from: until the
    /// watch shows the write, the cached task is older than what the operator decided.
    planned_from: Mutex<HashMap<TaskRef, (String, std::time::Instant)>>,
}

/// How long a task's own status write may take to show in the watch before the task is
/// planned from the cache anyway.
const STALE_FOR_AT_MOST: std::time::Duration = std::time::Duration::from_secs(10);

impl Default for TaskWakeups {
    fn default() -> Self {
        Self {
            senders: Mutex::default(),
            waiting: Mutex::default(),
            jobs_created: Mutex::default(),
            slots: tokio::sync::Mutex::new(()),
            planned_from: Mutex::default(),
        }
    }
}

impl TaskWakeups {
    /// Reconciles `task` soon (through the controller of its namespace).
    pub fn wake(&self, task: TaskRef) {
        let senders = self.senders.lock().expect("wakeups lock");
        let ns = task.namespace.as_deref();
        if let Some((_, sender)) = senders
            .iter()
            .find(|(scope, _)| scope.is_none() || scope.as_deref() == ns)
        {
            // Fails only when the controller has stopped.
            let _ = sender.send(task);
        }
    }

    /// The wake-ups of the tasks in `namespace` (`None`: every namespace), for the
    /// controller serving it.
    pub fn subscribe(&self, namespace: Option<&str>) -> mpsc::UnboundedReceiver<TaskRef> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.senders
            .lock()
            .expect("wakeups lock")
            .push((namespace.map(str::to_string), sender));
        receiver
    }

    /// Records whether `task` waits for a scan slot.
    pub fn set_waiting(&self, task: TaskRef, waiting: bool) {
        let mut set = self.waiting.lock().expect("wakeups lock");
        if waiting {
            set.insert(task);
        } else {
            set.remove(&task);
        }
    }

    /// A scan slot freed up: wakes every task that waits for one.
    pub fn slot_freed(&self) {
        let waiting = std::mem::take(&mut *self.waiting.lock().expect("wakeups lock"));
        for task in waiting {
            self.wake(task);
        }
    }

    /// Records that a status of `task` planned from `resource_version` was written.
    pub fn status_written(&self, task: TaskRef, resource_version: Option<String>) {
        let mut map = self.planned_from.lock().expect("wakeups lock");
        match resource_version {
            Some(rv) => map.insert(task, (rv, std::time::Instant::now())),
            None => map.remove(&task),
        };
    }

    /// Whether the cached `task` at `resource_version` predates a status this process
    /// wrote (planning from it again would undo that write); forgets the record once the
    /// watch has moved on, or after [`STALE_FOR_AT_MOST`].
    pub fn is_stale(&self, task: &TaskRef, resource_version: Option<&str>) -> bool {
        let mut map = self.planned_from.lock().expect("wakeups lock");
        match (map.get(task), resource_version) {
            (Some((planned, at)), Some(rv))
                if planned == rv && at.elapsed() < STALE_FOR_AT_MOST =>
            {
                true
            }
            (Some(_), _) => {
                map.remove(task);
                false
            }
            (None, _) => false,
        }
    }

    /// Records a scanner Job just created.
    pub fn job_created(&self, key: String) {
        self.jobs_created.lock().expect("wakeups lock").insert(key);
    }

    /// Scanner Jobs created that `seen` (the watch) does not hold yet; forgets the others.
    pub fn jobs_not_yet_seen(&self, seen: impl Fn(&str) -> bool) -> usize {
        let mut created = self.jobs_created.lock().expect("wakeups lock");
        created.retain(|k| !seen(k));
        created.len()
    }
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
    /// The ScanTask controller's watches.
    pub watched: OnceLock<Watched>,
    pub wakeups: TaskWakeups,
    /// Serializes notifying per task.
    pub notify_locks: Arc<TaskLocks>,
    /// Deleted results waiting for collection.
    pub lifecycle: ResultLifecycle,
    /// When each rule's registry was last probed, and what it answered.
    pub registry_probes: crate::probe::RegistryProbes,
    /// The namespaces the operator acts in.
    pub scope: crate::scope::WatchScope,
    /// The ImageFixes running in this process.
    pub fixes: crate::controller::image_fix::RunningFixes,
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
        let scope = config.watch_scope();
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
            watched: OnceLock::new(),
            wakeups: TaskWakeups::default(),
            notify_locks: Arc::default(),
            lifecycle: Default::default(),
            registry_probes: Default::default(),
            scope,
            fixes: Default::default(),
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

    /// The API handles of kind `K` the operator watches and lists through: one for every
    /// namespace, or one per `--watch-namespaces` entry.
    pub fn scoped_apis<K>(&self) -> Vec<kube::Api<K>>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        self.scope.apis(&self.client)
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
    /// Jobs for [`RETIRED_DB_GRACE`].
    pub fn replace_db(&self, db: Arc<LoadedDb>) {
        let old = std::mem::replace(&mut *self.db.write().expect("db lock"), db);
        let mut retired = self.retired.lock().expect("retired lock");
        retired.push((old, std::time::Instant::now() + RETIRED_DB_GRACE));
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

#[cfg(test)]
mod stale_tests {
    use super::*;

    #[test]
    fn a_task_is_stale_until_the_watch_shows_the_status_written() {
        let wakeups = TaskWakeups::default();
        let task: TaskRef = ObjectRef::new("t").within("team-a");
        assert!(!wakeups.is_stale(&task, Some("10")));
        wakeups.status_written(task.clone(), Some("10".into()));
        // The cache still holds version 10, planned from before the write.
        assert!(wakeups.is_stale(&task, Some("10")));
        assert!(wakeups.is_stale(&task, Some("10")));
        // The write (version 11) arrived: planning goes on, and the record is gone.
        assert!(!wakeups.is_stale(&task, Some("11")));
        assert!(!wakeups.is_stale(&task, Some("10")));
    }
}
