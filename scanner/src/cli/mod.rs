//! Subcommands of the `imagewarden` CLI, one module each.

pub mod db;
pub mod inventory;
pub mod policy;
pub mod scan;

use std::path::PathBuf;

use imagewarden_scanner::source::{Platform, PullOptions, RegistryCredentials};

/// How to pull an image from a registry: the flags `inventory` and `scan` share.
#[derive(clap::Args)]
pub struct PullArgs {
    /// Platform to take from a multi-platform image (os/arch[/variant]).
    #[arg(long, default_value = "linux/amd64")]
    pub platform: Platform,
    /// Registry user name (basic authentication).
    #[arg(long, env = "IMAGEWARDEN_USERNAME")]
    pub username: Option<String>,
    /// Registry password.
    #[arg(long, env = "IMAGEWARDEN_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Registry bearer token.
    #[arg(long, env = "IMAGEWARDEN_REGISTRY_TOKEN", hide_env_values = true)]
    pub registry_token: Option<String>,
    /// Docker config.json (or the directory holding it) to take registry credentials from.
    #[arg(long)]
    pub registry_config: Option<PathBuf>,
    /// PEM file with CA certificates to trust for the registry.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Talk plain HTTP to the registry.
    #[arg(long)]
    pub insecure: bool,
    #[command(flatten)]
    pub budgets: imagewarden_scanner::budget::BudgetArgs,
}

impl PullArgs {
    /// The scanner's pull options, with progress bars when stderr is a terminal.
    pub fn pull_options(&self) -> PullOptions {
        PullOptions {
            credentials: RegistryCredentials {
                username: self.username.clone(),
                password: self.password.clone(),
                bearer_token: self.registry_token.clone(),
                // The user's own Docker config (and its credential helpers) unless one
                // is named.
                docker_config: self
                    .registry_config
                    .clone()
                    .or_else(imagewarden_scanner::source::default_docker_config),
            },
            ca_file: self.ca_file.clone(),
            insecure: self.insecure,
            platform: self.platform.clone(),
            progress: true,
            // A user's own machine, against registries the user names: any address.
            egress: None,
            budgets: self.budgets.budgets(),
        }
    }
}
