//! The vulnerability database: OSV records compiled into one index file.
//!
//! [`DbBuilder`] reads OSV records (directories of JSON, osv.dev `all.zip`
//! archives, http(s) base URLs) and writes the index; [`Db`] opens an index
//! (memory-mapped) or builds one in memory from OSV sources, and answers
//! "which advisories affect this package" for the matcher.
//!
//! Embedding (what the operator does):
//! ```no_run
//! use imagewarden_scanner::matcher::match_inventory;
//! use imagewarden_scanner::report::{filter::FindingFilter, ScanReport};
//! use imagewarden_scanner::vulndb::Db;
//! # fn inventory() -> imagewarden_scanner::inventory::Inventory { unimplemented!() }
//! # fn main() -> anyhow::Result<()> {
//! // Load once and share (`Arc<Db>`): opening maps the file and reads only its header.
//! let db = std::sync::Arc::new(Db::open_index(std::path::Path::new("/var/lib/imagewarden/osv.iwdb"))?);
//! let inventory = inventory();
//! let mut matches = match_inventory(&inventory, &db)?;
//! let ignored = FindingFilter::default().apply(&mut matches, chrono::Utc::now().date_naive());
//! let report = ScanReport::new(&inventory, db.info(), matches, ignored);
//! // `report.database.digest` says which database answered: equal digests, equal answers.
//! # let _ = report; Ok(()) }
//! ```

pub mod download;
pub mod ecosystem;
pub mod index;
pub mod nvd;
pub mod oci;
pub mod osv;
pub mod severity;
pub mod source;
pub mod update;
pub mod version;

pub use index::{Db, DbInfo, EcosystemStats};
pub use severity::{Rating, Severity};
pub use source::{DbBuilder, OsvLimits};

use serde::{Deserialize, Serialize};

/// One advisory, as the index keeps it: what a report shows, without the
/// per-package ranges (those live in [`AffectedPackage`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advisory {
    pub id: String,
    /// Other ids of the same issue (`aliases` and `upstream` of the OSV record).
    pub aliases: Vec<String>,
    /// The OSV `summary`, else the first line of `details`.
    pub title: String,
    /// The advisory's own page when it names one, else its first reference.
    pub link: Option<String>,
    pub modified: Option<String>,
    pub published: Option<String>,
    /// Record-level rating, when the record has one.
    pub rating: Option<Rating>,
    /// An OSV `MAL-` record: the package is malicious, not vulnerable.
    pub malicious: bool,
    /// Ids of related issues (OSV `related`): the CVEs a distribution erratum fixes. Not the
    /// same issue as the advisory (so not merged as duplicates), kept for display and for
    /// the CVEs' own severity.
    pub related: Vec<String>,
}

/// One `affected[]` entry of an advisory, filed under its (ecosystem, package) key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AffectedPackage {
    /// Position of the advisory in the index (see [`Db::advisory`]).
    pub advisory: u32,
    pub ranges: Vec<VersionRange>,
    /// Explicitly listed affected versions.
    pub versions: Vec<String>,
    /// Rating specific to this package (per-affected `severity`, distro urgency), when given.
    pub rating: Option<Rating>,
    /// For an rpm built in a module stream, the stream the fix is for (`nodejs:18`); an empty
    /// string when the fix is a module build whose stream the record does not name. `None`
    /// for packages outside module streams.
    pub module: Option<String>,
}

/// An OSV range of type `ECOSYSTEM` or `SEMVER` (`GIT` ranges are not kept:
/// installed packages carry versions, not commits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRange {
    /// `SEMVER` range: compared with SemVer rules whatever the ecosystem.
    pub semver: bool,
    pub events: Vec<RangeEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RangeEvent {
    Introduced(String),
    Fixed(String),
    LastAffected(String),
    Limit(String),
}

/// Errors of the vulnerability database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{path}: not an imagewarden vulnerability index (bad magic); build one with `imagewarden db build`")]
    BadMagic { path: String },
    #[error("{path}: index format {found} is not supported (this scanner reads {supported}); rebuild it with this scanner")]
    UnsupportedFormat {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error("{path}: index is truncated or corrupt ({what}); rebuild it")]
    Corrupt { path: String, what: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
