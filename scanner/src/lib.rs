//! imagewarden's scanner: reads container images from registries and local files,
//! lists what is installed in them and matches that against vulnerability advisories.
//!
//! This crate knows nothing of Kubernetes; the operator wraps it.

pub mod analyzer;
pub mod budget;
pub mod checks;
pub mod egress;
pub mod finding;
pub mod fix;
pub mod inventory;
pub mod layer;
pub mod matcher;
pub mod pipeline;
pub mod policy;
pub mod reference;
pub mod registry;
pub mod report;
pub mod server;
pub mod source;
pub mod tls;
pub mod vulndb;

/// Version of the scanner, recorded in every result so that results made by an
/// older scanner can be told apart and rescanned.
pub const SCANNER_VERSION: &str = env!("CARGO_PKG_VERSION");
