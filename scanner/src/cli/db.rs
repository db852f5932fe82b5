//! `imagewarden db`.

use std::process::ExitCode;

use anyhow::Context as _;
use imagewarden_scanner::vulndb::update::{self, UpdateOptions};
use imagewarden_scanner::vulndb::{Db, DbBuilder, DbInfo, OsvLimits};

/// Where `db update` downloads from and to; `scan` shares these flags.
#[derive(clap::Args, Clone)]
pub struct UpdateArgs {
    /// The database cache: downloaded sources and the index compiled from them
    /// [default: $XDG_CACHE_HOME/imagewarden/db, else ~/.cache/imagewarden/db].
    #[arg(long, env = "IMAGEWARDEN_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<std::path::PathBuf>,
    /// Base URL of the OSV export (`<URL>/<Ecosystem>/all.zip`); a mirror works.
    #[arg(long, env = "IMAGEWARDEN_OSV_URL", default_value = update::DEFAULT_OSV_URL)]
    pub osv_url: String,
    /// Base URL of NVD's CVE JSON 2.0 feeds (`<URL>/nvdcve-2.0-YYYY.json.gz`); a mirror works.
    #[arg(long, env = "IMAGEWARDEN_NVD_URL", default_value = update::DEFAULT_NVD_URL)]
    pub nvd_url: String,
}

/// The largest OSV record a database build compiles; bigger records are skipped with a
/// warning naming the flag.
#[derive(clap::Args, Clone, Debug)]
pub struct OsvLimitArgs {
    /// Largest OSV JSON document read (a file, or a member of an all.zip). Bytes, or with
    /// a unit: 64Mi.
    #[arg(long, env = "IMAGEWARDEN_MAX_OSV_RECORD_BYTES", default_value = "64Mi",
          value_parser = imagewarden_scanner::budget::parse_bytes)]
    pub max_osv_record_bytes: u64,
    /// Most `affected` entries in one OSV record.
    #[arg(long, env = "IMAGEWARDEN_MAX_OSV_AFFECTED", default_value_t = OsvLimits::default().max_affected,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_osv_affected: u64,
    /// Most events in one range of an OSV record; at most 5000, the matcher's own bound.
    #[arg(long, env = "IMAGEWARDEN_MAX_OSV_RANGE_EVENTS", default_value_t = OsvLimits::default().max_range_events,
          value_parser = clap::value_parser!(u64).range(1..=imagewarden_scanner::matcher::MAX_RANGE_EVENTS as u64))]
    pub max_osv_range_events: u64,
}

impl OsvLimitArgs {
    pub fn limits(&self) -> OsvLimits {
        OsvLimits {
            max_record_bytes: self.max_osv_record_bytes,
            max_affected: self.max_osv_affected,
            max_range_events: self.max_osv_range_events,
        }
    }
}

impl UpdateArgs {
    /// The cache directory named or the default one.
    pub fn cache_dir(&self) -> anyhow::Result<std::path::PathBuf> {
        match &self.cache_dir {
            Some(d) => Ok(d.clone()),
            None => update::default_cache_dir().context(
                "no cache directory: neither XDG_CACHE_HOME nor HOME is set; pass --cache-dir",
            ),
        }
    }

    pub fn options(&self) -> anyhow::Result<UpdateOptions> {
        let mut opts = UpdateOptions::new(self.cache_dir()?);
        opts.osv_url = self.osv_url.clone();
        opts.nvd_url = self.nvd_url.clone();
        opts.progress = super::progress() && std::io::IsTerminal::is_terminal(&std::io::stderr());
        Ok(opts)
    }
}

/// Downloads what changed into the cache and rebuilds its index; prints what it did.
pub fn run_update(opts: &UpdateOptions) -> anyhow::Result<DbInfo> {
    let started = std::time::Instant::now();
    super::note!(
        "Updating the vulnerability database in {} (OSV from {}, NVD from {})",
        opts.cache_dir.display(),
        opts.osv_url,
        opts.nvd_url
    );
    let summary = update::update_blocking(opts)?;
    super::note!(
        "{} downloaded ({:.1} MiB), {} unchanged, {} not on the server; {} ({} records, {} NVD ratings) in {:.1}s",
        summary.downloaded.len(),
        summary.bytes as f64 / (1024.0 * 1024.0),
        summary.unchanged.len(),
        summary.missing.len(),
        if summary.rebuilt { "index rebuilt" } else { "index unchanged" },
        summary.info.records,
        summary.info.nvd_records,
        started.elapsed().as_secs_f64()
    );
    Ok(summary.info)
}

/// `imagewarden db` subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Compile OSV records (and NVD's CVSS ratings) into one index file.
    Build {
        /// Sources: OSV directories, all.zip files, or http(s) base URLs; `nvd:PATH` or
        /// `nvd:URL` for NVD CVE JSON 2.0 (yearly feeds .json.gz/.json/.json.xz, or
        /// directories of one-CVE files). Repeatable.
        #[arg(long, required = true)]
        source: Vec<String>,
        /// Where to write the index.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Mark the index as a sample (e.g. compiled from test records): whoever loads it
        /// warns that it is not a real database.
        #[arg(long)]
        sample: bool,
        #[command(flatten)]
        osv_limits: OsvLimitArgs,
    },
    /// Store a compiled index in a registry as an OCI artifact, for clusters that read
    /// their database with `--db oci://HOST/REPOSITORY:TAG`.
    Push {
        /// The index file (from `imagewarden db build`).
        file: std::path::PathBuf,
        /// Where to push: `oci://HOST/REPOSITORY:TAG`, or `oci+http://...` for plain HTTP.
        destination: String,
    },
    /// Download the official sources (OSV per-ecosystem all.zip, NVD yearly feeds) into the
    /// cache and compile them; `scan` uses that database when --db is not given. Only what
    /// changed since the last update is downloaded.
    Update {
        #[command(flatten)]
        update: UpdateArgs,
        #[command(flatten)]
        osv_limits: OsvLimitArgs,
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
        Command::Build {
            source,
            out,
            sample,
            osv_limits,
        } => {
            let started = std::time::Instant::now();
            let mut builder = DbBuilder::new().with_limits(osv_limits.limits());
            builder.set_sample(sample);
            for s in &source {
                builder
                    .add_source(s)
                    .with_context(|| format!("reading source {s}"))?;
            }
            if builder.is_empty() {
                anyhow::bail!(
                    "no OSV records or NVD ratings found in {}; nothing to build",
                    source.join(", ")
                );
            }
            let info = builder.write_file(&out)?;
            let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            super::note!(
                "wrote {} ({} records, {} NVD ratings, {:.1} MiB) in {:.1}s",
                out.display(),
                info.records,
                info.nvd_records,
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
            super::note!(
                "pushed {} ({} records) to {url}",
                file.display(),
                db.info().records
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Update { update, osv_limits } => {
            let mut opts = update.options()?;
            opts.osv_limits = osv_limits.limits();
            run_update(&opts)?;
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
    if info.sample {
        let _ = writeln!(
            out,
            "sample:          yes (not a real database: it finds almost nothing in real images)"
        );
    }
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
    let _ = writeln!(
        out,
        "NVD ratings:     {} (newest modified {})",
        info.nvd_records,
        info.nvd_newest_modified.as_deref().unwrap_or("-")
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
