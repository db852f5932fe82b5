//! Talking to the registries a `ScanRule` points at: which images its scope holds
//! (catalog and tag discovery, resolved to manifest digests), and which images were just
//! pushed (the push-webhook receiver, the matcher that routes a push to rules, and the
//! coalescer that turns a burst of pushes into one batch per rule).
//!
//! Nothing here reads Kubernetes objects: the controller resolves Secrets into a
//! [`RegistryAccess`] and hands in the rule's spec. The distribution API client itself is
//! the scanner library's ([`imagewarden_scanner::registry`]), which pulls use too.

pub mod access;
#[cfg(test)]
mod bearer_tests;
pub mod discovery;
#[cfg(test)]
mod egress_tests;
pub mod notification;
pub mod push;
/// The distribution API client and its errors, shared with the scanner's pulls.
pub use imagewarden_scanner::registry::{client, error};
pub mod webhook;

pub use access::{access_from_spec, Credentials, CredentialsError, FromSecretData, RegistryAccess};
pub use client::RegistryClient;
pub use discovery::{
    discover, discover_for_rule, DiscoveredImage, Discovery, DiscoveryLimits, RepositoryError,
    RuleDiscoveryError, Scope, TagFilter,
};
pub use error::RegistryError;
pub use notification::DeleteEvent;
pub use push::{coalesce_pushes, rule_matches_push, PushBatch, PushCoalescer, PushEvent};
pub use webhook::{router, serve, WebhookError};
