//! Fixtures that start the real parts imagewarden talks to, for tests: a Kubernetes
//! control plane (etcd + kube-apiserver + kube-controller-manager built from the pinned
//! Go modules in `tests/k8s-bin/`) and a CNCF Distribution registry (Debian's
//! `docker-registry`). Each runs on free 127.0.0.1 ports with a temporary directory and
//! stops when dropped.

pub mod alpine_repo;
pub mod cluster;
pub mod control_plane;
pub mod debian_archive;
pub mod image;
pub mod operator;
pub mod osv_mirror;
pub mod pki;
pub mod process;
pub mod promql;
pub mod registry;
pub mod samples;
pub mod token_service;

pub use control_plane::ControlPlane;
pub use registry::{Registry, RegistryMode};

/// Root of the repository checkout.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// How the scanner pulls from (and the fix pushes to) `registry`: its CA, its credentials,
/// the loopback interface allowed.
pub fn pull_options(registry: &Registry) -> imagewarden_scanner::source::PullOptions {
    let (user, password) = registry.credentials().expect("credentials");
    imagewarden_scanner::source::PullOptions {
        ca_file: registry.ca_path(),
        credentials: imagewarden_scanner::source::RegistryCredentials {
            username: Some(user.into()),
            password: Some(password.into()),
            ..Default::default()
        },
        egress: Some(loopback_egress()),
        ..Default::default()
    }
}

/// An egress policy that lets requests reach the loopback interface, where every fixture
/// listens (the default policy denies it).
pub fn loopback_egress() -> std::sync::Arc<imagewarden_scanner::egress::EgressPolicy> {
    std::sync::Arc::new(imagewarden_scanner::egress::EgressPolicy::new(
        &[],
        &["127.0.0.0/8".parse().expect("a range")],
    ))
}
