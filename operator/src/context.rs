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
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub db: RwLock<Arc<LoadedDb>>,
    pub inline: Mutex<InlineScans>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
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
            inline: Mutex::new(InlineScans::default()),
            metrics,
        }
    }

    /// The database in use now.
    pub fn db(&self) -> Arc<LoadedDb> {
        self.db.read().expect("db lock").clone()
    }
}
