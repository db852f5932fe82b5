//! Subcommands of the `imagewarden` CLI, one module each.

pub mod db;
pub mod inventory;
pub mod scan;
