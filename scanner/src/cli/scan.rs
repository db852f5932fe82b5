//! `imagewarden scan`.

use std::process::ExitCode;

/// Arguments of `imagewarden scan`.
#[derive(clap::Args)]
pub struct Args {
    /// The image: a registry reference, or oci-layout:DIR, docker-archive:FILE, oci-archive:FILE, dir:ROOTFS.
    pub target: String,
}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("imagewarden scan is not available in this build yet")
}
