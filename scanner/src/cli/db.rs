//! `imagewarden db`.

use std::process::ExitCode;

/// `imagewarden db` subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Compile OSV records into one index file.
    Build {
        /// OSV sources: directories, all.zip files, or http(s) base URLs.
        #[arg(long, required = true)]
        source: Vec<String>,
        /// Where to write the index.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Print what an index holds.
    Info {
        /// The index file.
        file: std::path::PathBuf,
    },
}

pub fn run(_cmd: Command) -> anyhow::Result<ExitCode> {
    anyhow::bail!("imagewarden db is not available in this build yet")
}
