//! `imagewarden inventory`.

use imagewarden_scanner::inventory::Inventory;
use imagewarden_scanner::report::cyclonedx;
use imagewarden_scanner::source::{self, ImageRef};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Output formats of `imagewarden inventory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Cyclonedx,
    Table,
}

/// Arguments of `imagewarden inventory`.
#[derive(clap::Args)]
pub struct Args {
    /// The image: a registry reference, or oci-layout:DIR[:TAG], docker-archive:FILE, oci-archive:FILE, dir:ROOTFS, sbom:FILE.
    pub target: String,
    /// Output format.
    #[arg(
        long,
        short,
        value_enum,
        default_value = "table",
        help_heading = "Report Flags"
    )]
    pub format: Format,
    /// Write the output to this file instead of stdout.
    #[arg(long, short, help_heading = "Report Flags")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub pull: super::PullArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let target = ImageRef::parse(&args.target)?;
    let opts = args.pull.pull_options();
    let scanned = super::within(args.pull.timeout, move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        // Listing packages needs only the package analyzers, not the baseline, secret and
        // malware checks.
        let analyzers = imagewarden_scanner::analyzer::analyzers_with(&opts.budgets);
        Ok(runtime.block_on(source::read(&target, &opts, analyzers))?)
    })?;
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&scanned.inventory)? + "\n",
        Format::Cyclonedx => {
            serde_json::to_string_pretty(&cyclonedx::inventory(&scanned.inventory))? + "\n"
        }
        Format::Table => table(&scanned.inventory),
    };
    match &args.output {
        Some(p) => std::fs::write(p, text)?,
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// A plain table: one package a line.
pub fn table(inv: &Inventory) -> String {
    let mut out = String::new();
    out.push_str(&format!("Target: {}\n", inv.target));
    if let Some(d) = &inv.digest {
        out.push_str(&format!("Digest: {d}\n"));
    }
    match &inv.os {
        Some(os) => out.push_str(&format!("OS:     {} {}\n", os.family, os.version)),
        None => out.push_str("OS:     unknown\n"),
    }
    out.push_str(&format!("Packages: {}\n\n", inv.packages.len()));
    let rows: Vec<[String; 5]> = inv
        .packages
        .iter()
        .map(|p| {
            [
                p.ecosystem.as_str().to_string(),
                p.name.clone(),
                p.version.clone(),
                p.source_name.clone().unwrap_or_default(),
                p.path.clone(),
            ]
        })
        .collect();
    let header = ["ECOSYSTEM", "NAME", "VERSION", "SOURCE", "PATH"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
