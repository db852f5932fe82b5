//! `imagewarden`: the standalone scanner CLI.

mod cli;

use clap::{Parser, Subcommand};

/// Scan container images for vulnerabilities and other security risks.
#[derive(Parser)]
#[command(name = "imagewarden", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the operating system and every package installed in an image.
    Inventory(Box<cli::inventory::Args>),
    /// Scan an image and report its vulnerabilities.
    Scan(Box<cli::scan::Args>),
    /// Build and inspect the compiled vulnerability database.
    #[command(subcommand)]
    Db(cli::db::Command),
    /// Serve Harbor's Pluggable Scanner API: Harbor scans its artifacts with imagewarden.
    Server(Box<imagewarden_scanner::server::Args>),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IMAGEWARDEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inventory(args) => cli::inventory::run(*args),
        Command::Scan(args) => cli::scan::run(*args),
        Command::Db(cmd) => cli::db::run(cmd),
        Command::Server(args) => imagewarden_scanner::server::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
