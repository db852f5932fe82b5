//! Subcommands of the `imagewarden` CLI, one module each, and what they share: the
//! global flags (`--quiet`, `--no-progress`, `--no-color`), an environment variable for
//! every flag, the pull flags and the scan's time limit.

/// Prints an informational message or warning on standard error, unless `--quiet`.
macro_rules! note {
    ($($arg:tt)*) => {
        if !$crate::cli::quiet() {
            eprintln!($($arg)*);
        }
    };
}
pub(crate) use note;

pub mod db;
pub mod docs;
pub mod fix;
pub mod inventory;
pub mod policy;
pub mod scan;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use imagewarden_scanner::source::{Platform, PullOptions, RegistryCredentials};

/// Prefix of the environment variable of every flag: `--severity` is also
/// `IMAGEWARDEN_SEVERITY`.
pub const ENV_PREFIX: &str = "IMAGEWARDEN_";

/// Flags every subcommand takes.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct GlobalArgs {
    /// Print only the report and errors: no progress bars, no informational messages and
    /// no warnings.
    #[arg(short, long, global = true, help_heading = "Global Flags")]
    pub quiet: bool,
    /// Draw no progress bars (they are drawn only when standard error is a terminal).
    #[arg(long, global = true, help_heading = "Global Flags")]
    pub no_progress: bool,
    /// No colours in the table, even on a terminal. Colours are also off when the NO_COLOR
    /// environment variable is set (to anything but an empty string), when standard
    /// output is not a terminal, and in every format but the table.
    #[arg(long, global = true, help_heading = "Global Flags")]
    pub no_color: bool,
}

static GLOBAL: OnceLock<GlobalArgs> = OnceLock::new();

/// Records the global flags for the rest of the run.
pub fn set_global(args: GlobalArgs) {
    let _ = GLOBAL.set(args);
}

fn global() -> &'static GlobalArgs {
    GLOBAL.get_or_init(GlobalArgs::default)
}

/// `--quiet`: only the report and errors.
pub fn quiet() -> bool {
    global().quiet
}

/// Whether progress bars may be drawn (they still need a terminal on standard error).
pub fn progress() -> bool {
    !global().quiet && !global().no_progress
}

/// Whether the table on standard output is coloured: standard output is a terminal, and
/// neither `--no-color` nor `NO_COLOR` says otherwise.
pub fn colour_on_stdout() -> bool {
    let no_color_env = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !global().no_color && !no_color_env && std::io::stdout().is_terminal()
}

/// Gives every flag of `cmd` and its subcommands an environment variable,
/// `IMAGEWARDEN_<FLAG>` (`--ignore-file`: `IMAGEWARDEN_IGNORE_FILE`), unless it names one
/// itself. A flag on the command line wins over its variable, which wins over the
/// default. On/off flags take `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`.
pub fn with_env(cmd: clap::Command) -> clap::Command {
    use clap::ArgAction;
    cmd.mut_args(|arg| {
        if arg.is_positional()
            || arg.get_env().is_some()
            || matches!(
                arg.get_action(),
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
            )
        {
            return arg;
        }
        let name = format!(
            "{ENV_PREFIX}{}",
            arg.get_id().as_str().replace('-', "_").to_ascii_uppercase()
        );
        let arg = if matches!(arg.get_action(), ArgAction::SetTrue) {
            arg.value_parser(clap::builder::FalseyValueParser::new())
        } else {
            arg
        };
        // clap keeps variable names as `&'static str`; one per flag, once per run.
        arg.env(&*Box::leak(name.into_boxed_str()))
    })
    .mut_subcommands(with_env)
}

/// Runs `work` on its own thread and waits at most `limit` for it: past it, the error
/// names `--timeout` and the work is abandoned (the process ends with the error).
pub fn within<T: Send + 'static>(
    limit: Duration,
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    use std::sync::mpsc::{self, RecvTimeoutError};
    let (sender, result) = mpsc::channel();
    std::thread::Builder::new()
        .name("imagewarden-scan".into())
        .spawn(move || {
            let _ = sender.send(work());
        })?;
    match result.recv_timeout(limit) {
        Ok(result) => result,
        Err(RecvTimeoutError::Timeout) => anyhow::bail!(
            "the scan did not finish within {} (--timeout, IMAGEWARDEN_TIMEOUT): the registry \
             may be stalled, or the image too large for the limit; raise --timeout to wait longer",
            humantime::format_duration(limit)
        ),
        Err(RecvTimeoutError::Disconnected) => anyhow::bail!("the scan stopped without a result"),
    }
}

/// A duration: `90s`, `5m`, `1h30m`, `500ms`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let parsed = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("{e}; write a duration such as 30s, 5m or 1h"))?,
    };
    if parsed.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(parsed)
}

/// How to pull an image from a registry: the flags `inventory` and `scan` share.
#[derive(clap::Args)]
pub struct PullArgs {
    /// Longest the image may take to be read and analysed (the database update before it
    /// is not counted); every registry request is also given up when it gets no
    /// connection within 10 s or no data for 60 s (or this limit, when shorter).
    /// E.g. 30s, 5m, 1h.
    #[arg(long, default_value = "5m", value_parser = parse_duration, help_heading = "Scan Flags")]
    pub timeout: Duration,
    /// Platform to take from a multi-platform image (os/arch[/variant]).
    #[arg(long, default_value = "linux/amd64", help_heading = "Scan Flags")]
    pub platform: Platform,
    /// Registry user name (basic authentication).
    #[arg(long, env = "IMAGEWARDEN_USERNAME", help_heading = "Registry Flags")]
    pub username: Option<String>,
    /// Registry password.
    #[arg(
        long,
        env = "IMAGEWARDEN_PASSWORD",
        hide_env_values = true,
        help_heading = "Registry Flags"
    )]
    pub password: Option<String>,
    /// Registry bearer token.
    #[arg(
        long,
        env = "IMAGEWARDEN_REGISTRY_TOKEN",
        hide_env_values = true,
        help_heading = "Registry Flags"
    )]
    pub registry_token: Option<String>,
    /// Docker config.json (or the directory holding it) to take registry credentials from.
    #[arg(long, help_heading = "Registry Flags")]
    pub registry_config: Option<PathBuf>,
    /// PEM file with CA certificates to trust for the registry.
    #[arg(long, help_heading = "Registry Flags")]
    pub ca_file: Option<PathBuf>,
    /// Talk plain HTTP to the registry.
    #[arg(long, help_heading = "Registry Flags")]
    pub insecure: bool,
    /// Layers pulled and analyzed at once from a registry (1: one after another). Each
    /// layer in flight may hold its own largest file in memory (--max-file-bytes).
    #[arg(long, env = "IMAGEWARDEN_LAYER_CONCURRENCY",
          default_value_t = imagewarden_scanner::source::DEFAULT_LAYER_CONCURRENCY,
          value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u16).range(1..=64), usize::from),
          help_heading = "Scan Flags")]
    pub layer_concurrency: usize,
    #[command(flatten, next_help_heading = "Scan Flags")]
    pub budgets: imagewarden_scanner::budget::BudgetArgs,
}

impl PullArgs {
    /// The scanner's pull options, with progress bars when stderr is a terminal (and
    /// neither `--quiet` nor `--no-progress`).
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
            progress: progress(),
            progress_label: None,
            request_timeout: Some(self.timeout),
            // A user's own machine, against registries the user names: any address.
            egress: None,
            budgets: self.budgets.budgets(),
            layer_concurrency: self.layer_concurrency,
        }
    }
}
