//! Talking to registries: how to reach one ([`RegistryAccess`]: address, TLS, credentials,
//! egress policy), Docker config credentials (with credential helpers where the caller
//! allows them), and the one distribution API client ([`RegistryClient`]) that discovery
//! (catalog, tags, digests, configs) and pulls (manifests, blobs) share.

pub mod access;
pub mod client;
pub mod docker_config;
pub mod error;

pub use access::{
    is_docker_hub, registry_host, same_registry, Credentials, CredentialsError, RegistryAccess,
};
pub use client::{
    is_digest, next_link_target, parse_auth_params, Page, RegistryClient, MANIFEST_MEDIA_TYPES,
};
pub use docker_config::{DockerConfig, DockerCredential, HelperPolicy};
pub use error::{InRepository, RegistryError};
