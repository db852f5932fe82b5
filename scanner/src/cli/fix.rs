//! `imagewarden fix`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use imagewarden_scanner::finding::Severity;
use imagewarden_scanner::fix::plan::Selection;
use imagewarden_scanner::fix::{self, FixOptions, FixOutcome, FixReport, FixTarget};
use imagewarden_scanner::vulndb::Db;

/// Output formats of `imagewarden fix`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FixFormat {
    Table,
    Json,
}

/// Arguments of `imagewarden fix`.
#[derive(clap::Args)]
pub struct Args {
    /// The image to fix: a registry reference (`host/repository:tag` or `@digest`). The
    /// fixed image is pushed to the same registry.
    pub image: String,
    /// The vulnerability database: an index file from `imagewarden db build`, or OSV
    /// directories / all.zip files / http(s) base URLs. Repeatable.
    #[arg(
        long,
        env = "IMAGEWARDEN_DB",
        value_delimiter = ',',
        required = true,
        help_heading = "Database Flags"
    )]
    pub db: Vec<String>,
    /// Fix only this vulnerability (id or alias). Repeatable; without it, every fixable
    /// system vulnerability (at or above --min-severity).
    #[arg(long = "vuln", value_name = "ID", help_heading = "Fix Flags")]
    pub vulns: Vec<String>,
    /// Leave vulnerabilities below this severity alone.
    #[arg(long, value_parser = fix::parse_severity, help_heading = "Fix Flags")]
    pub min_severity: Option<Severity>,
    /// Push the fixed image as this reference (same registry) instead of `<tag>_fixd`.
    #[arg(long, value_name = "REF", conflicts_with_all = ["tag_suffix", "overwrite"], help_heading = "Fix Flags")]
    pub to: Option<String>,
    /// Suffix of the fixed image's tag.
    #[arg(long, default_value = fix::DEFAULT_TAG_SUFFIX, conflicts_with = "overwrite", help_heading = "Fix Flags")]
    pub tag_suffix: String,
    /// Move the image's tag to the fixed image; the original stays as `<tag>_orig`.
    #[arg(long, help_heading = "Fix Flags")]
    pub overwrite: bool,
    /// A package source: apt's `URL SUITE COMPONENT...` (a sources.list line, without
    /// `deb`) or an apk repository URL (a line of /etc/apk/repositories). Repeatable;
    /// without it, the image's own /etc/apt/sources.list(.d) or /etc/apk/repositories.
    #[arg(
        long = "source",
        value_name = "URL [SUITE COMPONENT...]",
        help_heading = "Fix Flags"
    )]
    pub sources: Vec<String>,
    /// A keyring the package indexes must be signed with: for apt, an OpenPGP keyring
    /// (binary or armored) for InRelease; for apk, an RSA public key named `*.rsa.pub`
    /// for APKINDEX. Repeatable; given, used instead of the image's own (/etc/apt/trusted.gpg.d,
    /// /usr/share/keyrings, /etc/apk/keys).
    #[arg(long = "keyring", value_name = "FILE", help_heading = "Fix Flags")]
    pub keyrings: Vec<PathBuf>,
    /// Accept an InRelease past its Valid-Until (an archive kept on purpose, as apt's
    /// Acquire::Check-Valid-Until=false).
    #[arg(long, help_heading = "Fix Flags")]
    pub ignore_valid_until: bool,
    /// Only print the plan: nothing is downloaded past the indexes, nothing is pushed.
    #[arg(long, help_heading = "Fix Flags")]
    pub plan_only: bool,
    /// Output format.
    #[arg(
        long,
        short,
        value_enum,
        default_value = "table",
        help_heading = "Report Flags"
    )]
    pub format: FixFormat,
    #[command(flatten)]
    pub pull: super::PullArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let db = Db::load(&args.db).context("loading the vulnerability database")?;
    let sources = args
        .sources
        .iter()
        .map(|s| fix::PackageSource::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let mut keyrings = Vec::new();
    for path in &args.keyrings {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        keyrings.push((path.display().to_string(), data));
    }
    let target = match (&args.to, args.overwrite) {
        (Some(to), _) => FixTarget::Reference(to.clone()),
        (None, true) => FixTarget::Overwrite,
        (None, false) => FixTarget::TagSuffix(args.tag_suffix.clone()),
    };
    let spinner = super::progress().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let progress: Option<fix::ProgressFn> = match &spinner {
        Some(bar) => {
            let bar = bar.clone();
            Some(Arc::new(move |step: &str| {
                bar.set_message(step.to_string())
            }))
        }
        None => None,
    };
    let opts = FixOptions {
        selection: Selection {
            ids: args.vulns.clone(),
            min_severity: args.min_severity,
        },
        target,
        sources,
        keyrings,
        check_valid_until: !args.ignore_valid_until,
        plan_only: args.plan_only,
        pull: args.pull.pull_options(),
        progress,
    };
    let image = args.image.clone();
    let limit = args.pull.timeout;
    let report = super::within(limit, move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        Ok(runtime.block_on(fix::fix(&image, &db, &opts))?)
    });
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    let report = report?;
    match args.format {
        FixFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        FixFormat::Table => print!("{}", table(&report)),
    }
    for w in &report.warnings {
        super::note!("warning: {w}");
    }
    // 1: something asked for stays vulnerable (unfixable, or still found after the push).
    let remaining = report
        .verification
        .as_ref()
        .is_some_and(|v| !v.remaining.is_empty());
    Ok(
        if remaining || (!args.vulns.is_empty() && !report.plan.unfixable.is_empty()) {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// The plan, the unfixable ids and the outcome as text tables.
fn table(report: &FixReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "{} ({})", report.image, report.digest);
    if report.plan.upgrades.is_empty() {
        let _ = writeln!(out, "\nNo package to upgrade.");
    } else {
        let rows: Vec<[String; 4]> = report
            .plan
            .upgrades
            .iter()
            .map(|u| {
                [
                    u.package.clone(),
                    u.from.clone(),
                    u.to.clone(),
                    if u.fixes.is_empty() {
                        "(dependency)".into()
                    } else {
                        u.fixes.join(" ")
                    },
                ]
            })
            .collect();
        let _ = writeln!(out, "\nUpgrades");
        write_rows(&mut out, ["PACKAGE", "FROM", "TO", "FIXES"], &rows);
    }
    if !report.plan.unfixable.is_empty() {
        let rows: Vec<[String; 3]> = report
            .plan
            .unfixable
            .iter()
            .map(|u| [u.id.clone(), u.package.clone(), u.reason.clone()])
            .collect();
        let _ = writeln!(out, "\nNot fixable");
        write_rows(&mut out, ["ID", "PACKAGE", "REASON"], &rows);
    }
    let _ = writeln!(out);
    match report.outcome {
        FixOutcome::NothingToFix => {
            let _ = writeln!(out, "Nothing to fix.");
        }
        FixOutcome::Planned => {
            let _ = writeln!(out, "Planned only (--plan-only): nothing was pushed.");
        }
        FixOutcome::Completed => {
            if let Some(p) = &report.pushed {
                let _ = writeln!(out, "Pushed {p}");
            }
            if let Some(o) = &report.original {
                let _ = writeln!(out, "Original kept as {o}");
            }
            if let Some(v) = &report.verification {
                let _ = writeln!(
                    out,
                    "Verified: {} fixed, {} remaining{}",
                    v.fixed.len(),
                    v.remaining.len(),
                    if v.remaining.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", v.remaining.join(" "))
                    }
                );
            }
        }
    }
    out
}

fn write_rows<const N: usize>(out: &mut String, head: [&str; N], rows: &[[String; N]]) {
    use std::fmt::Write as _;
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let _ = writeln!(out, "{}", line(head.to_vec()));
    for row in rows {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
}
