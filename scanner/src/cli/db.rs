//! `imagewarden db`.

use std::process::ExitCode;

use anyhow::Context as _;
use imagewarden_scanner::vulndb::{Db, DbBuilder, DbInfo};

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
    /// Store a compiled index in a registry as an OCI artifact, for clusters that read
    /// their database with `--db oci://HOST/REPOSITORY:TAG`.
    Push {
        /// The index file (from `imagewarden db build`).
        file: std::path::PathBuf,
        /// Where to push: `oci://HOST/REPOSITORY:TAG`, or `oci+http://...` for plain HTTP.
        destination: String,
    },
    /// Print what an index holds.
    Info {
        /// The index file.
        file: std::path::PathBuf,
        /// Print the index metadata as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Build { source, out } => {
            let started = std::time::Instant::now();
            let mut builder = DbBuilder::new();
            for s in &source {
                builder
                    .add_source(s)
                    .with_context(|| format!("reading OSV source {s}"))?;
            }
            if builder.is_empty() {
                anyhow::bail!(
                    "no OSV records found in {}; nothing to build",
                    source.join(", ")
                );
            }
            let info = builder.write_file(&out)?;
            let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            eprintln!(
                "wrote {} ({} records, {:.1} MiB) in {:.1}s",
                out.display(),
                info.records,
                size as f64 / (1024.0 * 1024.0),
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Push { file, destination } => {
            use imagewarden_scanner::vulndb::oci::{push_index, OciSource};
            let source = OciSource::parse(&destination).with_context(|| {
                format!("{destination}: name the artifact as oci://HOST/REPOSITORY:TAG or oci+http://...")
            })?;
            let db = Db::open_index(&file)?;
            let info = serde_json::to_vec(db.info())?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let url = runtime.block_on(push_index(bytes, info, &source, &Default::default()))?;
            eprintln!(
                "pushed {} ({} records) to {url}",
                file.display(),
                db.info().records
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Info { file, json } => {
            let db = Db::open_index(&file)?;
            if json {
                println!("{}", serde_json::to_string_pretty(db.info())?);
            } else {
                print!("{}", describe(db.info(), db.size()));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn describe(info: &DbInfo, size: usize) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "format:          {}", info.format);
    let _ = writeln!(out, "digest:          {}", info.digest);
    let _ = writeln!(out, "built at:        {}", info.built_at);
    let _ = writeln!(out, "built by:        imagewarden {}", info.scanner_version);
    let _ = writeln!(
        out,
        "size:            {:.1} MiB",
        size as f64 / (1024.0 * 1024.0)
    );
    let _ = writeln!(
        out,
        "records:         {} ({} malicious-package)",
        info.records, info.malicious_records
    );
    let _ = writeln!(out, "withdrawn:       {} skipped", info.withdrawn_skipped);
    if info.non_security_skipped > 0 {
        let _ = writeln!(
            out,
            "bug-fix errata:  {} skipped (not vulnerabilities)",
            info.non_security_skipped
        );
    }
    let _ = writeln!(
        out,
        "newest modified: {}",
        info.newest_modified.as_deref().unwrap_or("-")
    );
    let _ = writeln!(out, "sources:         {}", info.sources.join(", "));
    let _ = writeln!(
        out,
        "\n{:<24} {:>8} {:>9}",
        "ECOSYSTEM", "RECORDS", "PACKAGES"
    );
    for (eco, s) in &info.ecosystems {
        let _ = writeln!(out, "{eco:<24} {:>8} {:>9}", s.records, s.packages);
    }
    out
}
