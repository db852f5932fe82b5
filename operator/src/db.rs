//! The vulnerability database the operator matches with, as loaded.

use imagewarden_scanner::vulndb::Db;

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
