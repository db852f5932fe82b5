//! `imagewarden scan`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use imagewarden_scanner::checks::CheckOptions;
use imagewarden_scanner::finding::{ScannerKind, Severity};
use imagewarden_scanner::inventory::Inventory;
use imagewarden_scanner::pipeline::{self, ScanError, ScanOptions, ScanSource};
use imagewarden_scanner::report::filter::{read_ignore_file, FindingFilter};
use imagewarden_scanner::report::{render_with, Format};
use imagewarden_scanner::source::ImageRef;
use imagewarden_scanner::vulndb::Db;

/// Arguments of `imagewarden scan`.
#[derive(clap::Args)]
pub struct Args {
    /// The image: a registry reference, or oci-layout:DIR, docker-archive:FILE, oci-archive:FILE, dir:ROOTFS.
    /// Without a target (and without --inventory), the bundled example image is scanned
    /// with the bundled example database, offline.
    pub target: Option<String>,
    /// Scan a previously listed inventory (the JSON of `imagewarden inventory`) instead of an image.
    #[arg(long, value_name = "FILE", help_heading = "Scan Flags")]
    pub inventory: Option<PathBuf>,
    /// The vulnerability database: an index file from `imagewarden db build`, or OSV
    /// directories / all.zip files / http(s) base URLs and `nvd:PATH|URL` NVD feeds compiled
    /// in memory. Repeatable.
    /// Without it, the database `imagewarden db update` keeps in the cache is used (and
    /// updated first when it is older than a day).
    #[arg(
        long,
        env = "IMAGEWARDEN_DB",
        value_delimiter = ',',
        help_heading = "Database Flags"
    )]
    pub db: Vec<String>,
    /// Use the cached database as it is, however old.
    #[arg(long, help_heading = "Database Flags")]
    pub skip_db_update: bool,
    /// Do not use the network for the database (implies --skip-db-update).
    #[arg(long, help_heading = "Database Flags")]
    pub offline: bool,
    #[command(flatten, next_help_heading = "Database Flags")]
    pub update: super::db::UpdateArgs,
    /// Output format.
    #[arg(
        long,
        short,
        value_enum,
        default_value = "table",
        help_heading = "Report Flags"
    )]
    pub format: Format,
    /// Write the report here instead of standard output.
    #[arg(long, short = 'o', help_heading = "Report Flags")]
    pub output: Option<PathBuf>,
    /// Report only these severities (comma-separated: critical,high,medium,low,unknown).
    #[arg(long, short, value_delimiter = ',', help_heading = "Report Flags")]
    pub severity: Vec<Severity>,
    /// Leave out vulnerabilities that have no fixed version yet.
    #[arg(long, help_heading = "Report Flags")]
    pub ignore_unfixed: bool,
    /// Ids to leave out: YAML (`vulnerabilities: [{id, package, expires}]`) or one id per line.
    /// Without it, `.imagewardenignore` in the working directory is read when it exists.
    #[arg(
        long,
        visible_alias = "ignorefile",
        value_name = "FILE",
        help_heading = "Report Flags"
    )]
    pub ignore_file: Option<PathBuf>,
    /// Exit with this code when findings at or above --fail-on remain.
    #[arg(long, default_value_t = 0, help_heading = "Report Flags")]
    pub exit_code: u8,
    /// Lowest severity that makes --exit-code apply.
    #[arg(long, default_value = "unknown", help_heading = "Report Flags")]
    pub fail_on: Severity,
    /// Judge the image by an ImagePolicy manifest (the YAML applied to the cluster), as
    /// the admission webhook would: the verdict and its reasons go to standard error, and
    /// the exit code is 3 when the policy (in `Enforce` mode) denies the image.
    #[arg(long, value_name = "FILE", help_heading = "Report Flags")]
    pub policy: Option<PathBuf>,
    /// VulnerabilityException manifests (one or more YAML documents) that apply to the
    /// --policy verdict; their namespaces do not matter offline. Repeatable.
    #[arg(
        long,
        value_name = "FILE",
        requires = "policy",
        help_heading = "Report Flags"
    )]
    pub exceptions: Vec<PathBuf>,
    /// The image name (`registry/repository`) --policy judges the image by, for
    /// `spec.match.images` and the exceptions' `images`. Default: the registry reference
    /// scanned, or `local/<target>` for archives, directories and inventories.
    #[arg(
        long,
        value_name = "NAME",
        requires = "policy",
        help_heading = "Report Flags"
    )]
    pub policy_image: Option<String>,
    #[command(flatten)]
    pub pull: super::PullArgs,
    /// What to look for (comma-separated): vuln (vulnerabilities and malicious packages),
    /// baseline (configuration risks, CIS Docker Benchmark section 4), secret, malware.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "vuln,baseline,secret,malware",
        help_heading = "Scan Flags"
    )]
    pub scanners: Vec<ScannerKind>,
    /// A list of SHA-256 digests of known-malicious files (`sha256 [name]` per line), added
    /// to the bundled list.
    #[arg(long, value_name = "FILE", help_heading = "Checks Flags")]
    pub malware_hashes: Option<PathBuf>,
    /// YARA rules compiled with the bundled malware rules: a `.yar` file, or a directory of
    /// `*.yar` / `*.yara` files (a mounted ConfigMap works). Repeatable. Rule meta `id`,
    /// `title` and `severity` (critical, high, medium, low) shape the findings.
    #[arg(long, value_name = "PATH", help_heading = "Checks Flags")]
    pub malware_rules: Vec<PathBuf>,
}

/// The example image scanned when no target is given: the real alpine:3.10 layer plus the
/// package metadata of Django 3.2, PyYAML 5.3 and lodash 4.17.15 (see
/// `scanner/examples/make_example_image.py`).
const EXAMPLE_IMAGE: &[u8] = include_bytes!("../../examples/example-image.tar.gz");
/// The database the example is scanned with: `scanner/testdata/osv` compiled by
/// `imagewarden db build` (a test checks that it is current).
pub const EXAMPLE_DB: &[u8] = include_bytes!("../../examples/example-db.idx");

/// Writes the bundled example image to a temporary file and returns its target.
fn example_target() -> anyhow::Result<(String, PathBuf)> {
    let path =
        std::env::temp_dir().join(format!("imagewarden-example-{}.tar.gz", std::process::id()));
    std::fs::write(&path, EXAMPLE_IMAGE)
        .with_context(|| format!("writing the example image to {}", path.display()))?;
    Ok((format!("docker-archive:{}", path.display()), path))
}

/// The ignore file read when `--ignore-file` is not given, from the working directory.
pub const DEFAULT_IGNORE_FILE: &str = ".imagewardenignore";

/// The rules of the ignore file named (which must exist), else of `.imagewardenignore` in
/// the working directory when there is one.
fn ignore_rules(
    named: Option<&std::path::Path>,
) -> anyhow::Result<Vec<imagewarden_scanner::report::filter::IgnoreRule>> {
    if let Some(path) = named {
        return read_ignore_file(path);
    }
    let default = std::path::Path::new(DEFAULT_IGNORE_FILE);
    match std::fs::symlink_metadata(default) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        _ => read_ignore_file(default).with_context(|| {
            format!("the default ignore file {DEFAULT_IGNORE_FILE} in the working directory (name another with --ignore-file)")
        }),
    }
}

/// What to do when there is no database.
fn no_db_help(cache: &std::path::Path) -> String {
    format!(
        "no vulnerability database in {}: run `imagewarden db update` to download one (OSV and NVD, needs network access), \
         or name one with --db (an index from `imagewarden db build`, OSV directories, all.zip files or URLs); \
         without network access see docs/vulnerability-database.md (air-gapped use)",
        cache.display()
    )
}

/// The database of the cache, updated first when it is older than a day (unless
/// --skip-db-update / --offline). A failed update falls back to the cached database.
fn cached_db(args: &Args) -> anyhow::Result<Db> {
    use imagewarden_scanner::vulndb::update;
    let cache = args.update.cache_dir()?;
    let index = update::index_path(&cache);
    let may_update = !args.skip_db_update && !args.offline;
    let opened = Db::open_index(&index);
    let stale =
        update::cache_age(&cache).is_none_or(|age| age.num_seconds() > update::MAX_AGE_SECS);
    if !may_update || (!stale && opened.is_ok()) {
        return opened.map_err(|e| {
            if index.exists() {
                anyhow::anyhow!("{e}; run `imagewarden db update` to rebuild it")
            } else {
                anyhow::anyhow!("{}", no_db_help(&cache))
            }
        });
    }
    match super::db::run_update(&args.update.options()?) {
        Ok(_) => Ok(Db::open_index(&index)?),
        Err(e) => match opened {
            Ok(db) => {
                super::note!(
                    "warning: the vulnerability database could not be updated ({e:#}); scanning with the one built {}",
                    db.info().built_at
                );
                Ok(db)
            }
            Err(_) => Err(e.context(no_db_help(&cache))),
        },
    }
}

pub fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    let mut example_file = None;
    if args.target.is_none() && args.inventory.is_none() {
        let (target, path) = example_target()?;
        super::note!("No image named: scanning the bundled example image (alpine 3.10 with Django 3.2, PyYAML 5.3 and lodash 4.17.15).");
        args.target = Some(target);
        example_file = Some(path);
    }
    let result = scan_and_report(&args, example_file.is_some());
    if let Some(path) = example_file {
        let _ = std::fs::remove_file(path);
    }
    result
}

fn scan_and_report(args: &Args, example: bool) -> anyhow::Result<ExitCode> {
    let vuln = args.scanners.contains(&ScannerKind::Vulnerability);
    // Policy files are read before anything is pulled: a broken one fails fast.
    let policy = match &args.policy {
        Some(path) => Some(super::policy::Judge::load(
            path,
            &args.exceptions,
            !args.severity.is_empty() || args.ignore_unfixed,
            args.policy_image.as_deref(),
        )?),
        None => None,
    };
    let mut checks = CheckOptions::default();
    if let Some(path) = &args.malware_hashes {
        checks.add_malware_hash_file(path)?;
    }
    // Rules are compiled before anything is read or pulled: a broken rule file fails fast.
    if !args.malware_rules.is_empty() {
        checks.load_malware_rules(&args.malware_rules)?;
    }
    // A named inventory file is read first: it is the cheapest input to get wrong.
    let from_file: Option<Inventory> = match &args.inventory {
        Some(path) => {
            let text = std::fs::read(path)
                .with_context(|| format!("cannot read inventory {}", path.display()))?;
            Some(serde_json::from_slice(&text).with_context(|| {
                format!(
                    "{}: not an inventory JSON (as printed by `imagewarden inventory`)",
                    path.display()
                )
            })?)
        }
        None => None,
    };
    let db = if !vuln {
        None
    } else if args.db.is_empty() && example {
        Some(Db::from_bytes(
            EXAMPLE_DB.to_vec(),
            "bundled example database",
        )?)
    } else if args.db.is_empty() {
        Some(cached_db(args)?)
    } else {
        Some(Db::load(&args.db).context("loading the vulnerability database")?)
    };
    if let Some(d) = db.as_ref().filter(|d| d.info().sample && !example) {
        super::note!(
            "warning: {} is a sample vulnerability database compiled from test records: it finds almost nothing in real images",
            d.origin()
        );
    }
    let source = match (from_file, &args.target) {
        (Some(inventory), _) => ScanSource::Inventory(inventory),
        (None, Some(target)) => ScanSource::Image(ImageRef::parse(target)?),
        (None, None) => anyhow::bail!("name an image to scan, or pass --inventory FILE"),
    };
    let mut filter = FindingFilter {
        severities: args.severity.clone(),
        ignore_unfixed: args.ignore_unfixed,
        ignore: Vec::new(),
    };
    filter.ignore = ignore_rules(args.ignore_file.as_deref())?;
    let mut pull = args.pull.pull_options();
    if example {
        pull.progress_label = Some("example image".into());
    }
    let opts = ScanOptions {
        scanners: args.scanners.clone(),
        checks,
        pull,
        filter,
    };
    let target = args.target.clone().unwrap_or_default();
    // The time limit covers reading and analysing the image, not the database update.
    let report = super::within(args.pull.timeout, move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the image reader runtime")?;
        match runtime.block_on(pipeline::scan(&source, db.as_ref(), &opts)) {
            Ok(report) => Ok(report),
            Err(ScanError::Source(e)) => {
                Err(anyhow::Error::new(e).context(format!("reading image {target}")))
            }
            Err(e) => Err(e.into()),
        }
    })?;
    let colour = args.format == Format::Table && args.output.is_none() && super::colour_on_stdout();
    let text = render_with(&report, args.format, colour)?;
    match &args.output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write report to {}", path.display()))?,
        None => print!("{text}"),
    }
    if let Some(policy) = &policy {
        let target = args.target.as_deref().unwrap_or_default();
        if let Some(code) = policy.judge(&report, target) {
            return Ok(code);
        }
    }
    if args.exit_code != 0 && report.has_findings_at_or_above(args.fail_on) {
        return Ok(ExitCode::from(args.exit_code));
    }
    Ok(ExitCode::SUCCESS)
}
