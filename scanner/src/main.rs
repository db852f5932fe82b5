//! `imagewarden`: the standalone scanner CLI.

mod cli;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

/// Scan container images for vulnerabilities and other security risks.
#[derive(Parser)]
#[command(name = "imagewarden", version, about)]
struct Cli {
    #[command(flatten)]
    global: cli::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the operating system and every package installed in an image.
    Inventory(Box<cli::inventory::Args>),
    /// Scan an image and report its vulnerabilities.
    Scan(Box<cli::scan::Args>),
    /// Push a patched image (`<tag>_fixd`) with the fixable system vulnerabilities of an
    /// image fixed from verified apt repositories.
    Fix(Box<cli::fix::Args>),
    /// Build and inspect the compiled vulnerability database.
    #[command(subcommand)]
    Db(cli::db::Command),
    /// Serve Harbor's Pluggable Scanner API: Harbor scans its artifacts with imagewarden.
    Server(Box<imagewarden_scanner::server::Args>),
    /// Print reference documentation generated from the command's definitions.
    #[command(subcommand, hide = true)]
    Docs(cli::docs::Command),
}

/// The command line as parsed: every flag with its `IMAGEWARDEN_*` variable.
fn command() -> clap::Command {
    cli::with_env(Cli::command())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit());
    // --quiet leaves only errors; otherwise IMAGEWARDEN_LOG, else warnings.
    let filter = if cli.global.quiet {
        tracing_subscriber::EnvFilter::new("error")
    } else {
        tracing_subscriber::EnvFilter::try_from_env("IMAGEWARDEN_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
    cli::set_global(cli.global);
    let result = match cli.command {
        Command::Inventory(args) => cli::inventory::run(*args),
        Command::Scan(args) => cli::scan::run(*args),
        Command::Fix(args) => cli::fix::run(*args),
        Command::Db(cmd) => cli::db::run(cmd),
        Command::Server(args) => imagewarden_scanner::server::run(*args),
        Command::Docs(cmd) => cli::docs::run(cmd, command()),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
