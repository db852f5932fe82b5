//! What Trivy and Grype users type without thinking: `-q`, `--no-progress`, `--timeout`,
//! `-f`/`-s`/`-o`, `IMAGEWARDEN_*` variables, `.imagewardenignore`, colours on a terminal
//! only, the grouped `--help`, and `docs/cli.md` generated from the definitions. Each runs
//! the real binary; the colour tests give it a real pseudo-terminal through `script`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_imagewarden");

/// A command with no `IMAGEWARDEN_*` or `NO_COLOR` variable inherited from the caller.
fn imagewarden() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("IMAGEWARDEN_") || key == "NO_COLOR" {
            cmd.env_remove(&*key);
        }
    }
    cmd
}

fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let out: Output = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A real index of `scanner/testdata/osv` and an inventory of a Debian 9 image with an old
/// OpenSSL, lodash and PyYAML.
struct Fixture {
    dir: tempfile::TempDir,
    index: PathBuf,
    inventory: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("osv.iwdb");
    let osv = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/osv");
    let (code, _, err) = run(imagewarden()
        .args(["db", "build", "--source"])
        .arg(&osv)
        .arg("--out")
        .arg(&index));
    assert_eq!(code, Some(0), "{err}");
    let inventory = dir.path().join("inventory.json");
    std::fs::write(
        &inventory,
        r#"{"target": "registry.example/app:1.0", "os": {"family": "debian", "version": "9.13"},
  "packages": [
    {"ecosystem": "Debian", "name": "libssl1.1", "version": "1.1.0f-3+deb9u2", "sourceName": "openssl",
     "purl": "pkg:deb/debian/libssl1.1@1.1.0f-3%2Bdeb9u2?arch=amd64&upstream=openssl&distro=debian-9",
     "path": "/var/lib/dpkg/status"},
    {"ecosystem": "npm", "name": "lodash", "version": "4.17.15", "purl": "pkg:npm/lodash@4.17.15",
     "path": "/app/node_modules/lodash/package.json"},
    {"ecosystem": "PyPI", "name": "pyyaml", "version": "5.3", "purl": "pkg:pypi/pyyaml@5.3",
     "path": "/usr/lib/python3/dist-packages/PyYAML-5.3.dist-info/METADATA"}
  ]}"#,
    )
    .unwrap();
    Fixture {
        dir,
        index,
        inventory,
    }
}

impl Fixture {
    /// `imagewarden scan --inventory … --db …` run in the fixture's directory.
    fn scan(&self) -> Command {
        let mut cmd = imagewarden();
        cmd.current_dir(self.dir.path())
            .arg("scan")
            .arg("--inventory")
            .arg(&self.inventory)
            .arg("--db")
            .arg(&self.index);
        cmd
    }
}

fn ids(json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(json).expect(json);
    v["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

fn severities(json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(json).expect(json);
    v["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["severity"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn short_flags_and_environment_variables_set_every_flag() {
    let f = fixture();
    let (code, all, err) = run(f.scan().args(["-f", "json"]));
    assert_eq!(code, Some(0), "{err}");
    let all_severities = severities(&all);
    assert!(all_severities.iter().any(|s| s == "medium"), "{all}");
    assert!(all_severities.iter().any(|s| s != "medium"), "{all}");

    // -s and -o as Trivy has them.
    let out = f.dir.path().join("report.json");
    let (code, stdout, err) = run(f
        .scan()
        .args(["-f", "json", "-s", "medium", "-o"])
        .arg(&out));
    assert_eq!(code, Some(0), "{err}");
    assert!(stdout.is_empty(), "{stdout}");
    let written = std::fs::read_to_string(&out).unwrap();
    assert!(severities(&written).iter().all(|s| s == "medium"));
    assert!(!severities(&written).is_empty());

    // The same through the environment.
    let (code, env_only, err) = run(f
        .scan()
        .env("IMAGEWARDEN_FORMAT", "json")
        .env("IMAGEWARDEN_SEVERITY", "medium"));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(ids(&env_only), ids(&written));

    // A flag wins over its variable.
    let (code, table, _) = run(f
        .scan()
        .env("IMAGEWARDEN_FORMAT", "json")
        .args(["--format", "table"]));
    assert_eq!(code, Some(0));
    assert!(
        table.starts_with("registry.example/app:1.0 (debian 9.13)"),
        "{table}"
    );

    // On/off flags read 1/0 and true/false; an exit code through the environment too.
    let (code, _, _) = run(f
        .scan()
        .env("IMAGEWARDEN_EXIT_CODE", "7")
        .env("IMAGEWARDEN_IGNORE_UNFIXED", "1"));
    assert_eq!(code, Some(7));
    let (code, _, _) = run(f.scan().env("IMAGEWARDEN_EXIT_CODE", "0"));
    assert_eq!(code, Some(0));

    // A bad value in a variable is refused, naming the flag.
    let (code, _, err) = run(f.scan().env("IMAGEWARDEN_SEVERITY", "catastrophic"));
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--severity") && err.contains("catastrophic"),
        "{err}"
    );
}

/// The report with the example image's temporary file name made the same for every run.
fn without_pid(report: &str) -> String {
    regex::Regex::new(r"imagewarden-example-[0-9]+")
        .unwrap()
        .replace_all(report, "imagewarden-example-N")
        .into_owned()
}

#[test]
fn quiet_leaves_only_the_report_and_errors() {
    // The bundled example announces itself on standard error; --quiet leaves it out.
    let (code, report, err) = run(imagewarden().arg("scan"));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("No image named"), "{err}");
    assert!(report.contains("Total: "), "{report}");
    for quiet in [&["-q", "scan"][..], &["scan", "--quiet"], &["scan"]] {
        let mut cmd = imagewarden();
        cmd.args(quiet);
        if quiet == ["scan"] {
            cmd.env("IMAGEWARDEN_QUIET", "true");
        }
        let (code, quiet_report, err) = run(&mut cmd);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(err, "", "{quiet:?}");
        assert_eq!(without_pid(&quiet_report), without_pid(&report));
    }
    // Informational messages of db build go too; errors stay.
    let dir = tempfile::tempdir().unwrap();
    let osv = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/osv");
    let index = dir.path().join("osv.iwdb");
    let (code, _, err) = run(imagewarden()
        .args(["db", "build", "-q", "--source"])
        .arg(&osv)
        .arg("--out")
        .arg(&index));
    assert_eq!(code, Some(0));
    assert_eq!(err, "");
    let (code, _, err) =
        run(imagewarden().args(["scan", "-q", "--inventory", "/nonexistent.json"]));
    assert_eq!(code, Some(2));
    assert!(
        err.contains("cannot read inventory /nonexistent.json"),
        "{err}"
    );
}

/// Runs `args` on a pseudo-terminal (util-linux `script`); everything the terminal
/// received, standard output and standard error alike.
fn on_terminal(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let quoted: Vec<String> = std::iter::once(BIN)
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let mut cmd = Command::new("script");
    cmd.current_dir(dir)
        .args(["-q", "-e", "-c", &quoted.join(" "), "/dev/null"]);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("IMAGEWARDEN_") || key == "NO_COLOR" {
            cmd.env_remove(&*key);
        }
    }
    cmd.env("TERM", "xterm");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, Some(0), "{out}{err}");
    out
}

#[test]
fn severities_are_coloured_only_on_a_terminal() {
    let f = fixture();
    let (inv, db) = (f.inventory.to_str().unwrap(), f.index.to_str().unwrap());
    let scan = ["scan", "--inventory", inv, "--db", db];
    let coloured = on_terminal(f.dir.path(), &scan, &[]);
    assert!(coloured.contains("\x1b[33mMEDIUM\x1b[0m"), "{coloured:?}");
    assert!(coloured.contains("\x1b[90mUNKNOWN\x1b[0m"), "{coloured:?}");
    // The same report, only without colours, when standard output is not a terminal.
    let (code, plain, _) = run(&mut f.scan());
    assert_eq!(code, Some(0));
    assert!(!plain.contains('\x1b'), "{plain:?}");
    assert!(plain.contains("MEDIUM"));
    assert_eq!(
        coloured
            .replace("\x1b[1;31m", "")
            .replace("\x1b[31m", "")
            .replace("\x1b[33m", "")
            .replace("\x1b[34m", "")
            .replace("\x1b[90m", "")
            .replace("\x1b[0m", "")
            .replace("\r\n", "\n"),
        plain
    );
    // NO_COLOR, --no-color and its variable switch them off on a terminal.
    for (args, env) in [
        (&scan[..], &[("NO_COLOR", "1")][..]),
        (&[&scan[..], &["--no-color"]].concat()[..], &[]),
        (&scan[..], &[("IMAGEWARDEN_NO_COLOR", "true")][..]),
    ] {
        let out = on_terminal(f.dir.path(), args, env);
        assert!(
            out.contains("MEDIUM") && !out.contains('\x1b'),
            "{args:?} {env:?}: {out:?}"
        );
    }
    // An empty NO_COLOR does not count (no-color.org).
    let out = on_terminal(f.dir.path(), &scan, &[("NO_COLOR", "")]);
    assert!(out.contains("\x1b[33mMEDIUM"), "{out:?}");
    // Machine-readable formats never carry colours.
    for format in ["json", "sarif", "cyclonedx"] {
        let out = on_terminal(f.dir.path(), &[&scan[..], &["-f", format]].concat(), &[]);
        assert!(!out.contains('\x1b'), "{format}: {out:?}");
    }
}

#[test]
fn progress_bars_name_the_image_and_go_with_quiet_or_no_progress() {
    let dir = tempfile::tempdir().unwrap();
    // The bundled example, on a terminal: the bar is labelled with the image, not the
    // temporary file it is unpacked to.
    let out = on_terminal(dir.path(), &["scan", "--scanners", "vuln"], &[]);
    assert!(out.contains("example image archive"), "{out:?}");
    assert!(!out.contains("reading /"), "{out:?}");
    for args in [&["scan", "-q"][..], &["scan", "--no-progress"]] {
        let out = on_terminal(dir.path(), args, &[]);
        assert!(!out.contains("example image archive"), "{args:?}: {out:?}");
        assert!(out.contains("Total: "), "{out:?}");
    }
}

#[test]
fn the_working_directorys_imagewardenignore_applies_unless_a_file_is_named() {
    let f = fixture();
    let (_, all, _) = run(f.scan().args(["-f", "json"]));
    assert!(ids(&all).contains(&"DLA-3008-1".to_string()), "{all}");
    assert!(ids(&all).contains(&"NSWG-ECO-516".to_string()), "{all}");

    // No .imagewardenignore: nothing ignored, no error.
    std::fs::write(
        f.dir.path().join(".imagewardenignore"),
        "# accepted\nDLA-3008-1\n",
    )
    .unwrap();
    let (code, json, err) = run(f.scan().args(["-f", "json"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(!ids(&json).contains(&"DLA-3008-1".to_string()));
    assert!(ids(&json).contains(&"NSWG-ECO-516".to_string()));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["ignored"], serde_json::json!(["DLA-3008-1"]));

    // A named file wins over the default one (Trivy's --ignorefile spelling works too).
    let named = f.dir.path().join("other-ignore");
    std::fs::write(&named, "NSWG-ECO-516\n").unwrap();
    for flag in ["--ignore-file", "--ignorefile"] {
        let (code, json, err) = run(f.scan().args(["-f", "json", flag]).arg(&named));
        assert_eq!(code, Some(0), "{err}");
        assert!(ids(&json).contains(&"DLA-3008-1".to_string()));
        assert!(!ids(&json).contains(&"NSWG-ECO-516".to_string()));
    }
    // A named file that is missing is an error; so is a broken default one.
    let (code, _, err) = run(f.scan().args(["--ignore-file", "missing-ignore"]));
    assert_eq!(code, Some(2));
    assert!(
        err.contains("cannot read ignore file missing-ignore"),
        "{err}"
    );
    std::fs::write(
        f.dir.path().join(".imagewardenignore"),
        "DLA-3008-1 nonsense\n",
    )
    .unwrap();
    let (code, _, err) = run(&mut f.scan());
    assert_eq!(code, Some(2));
    assert!(err.contains(".imagewardenignore"), "{err}");
}

/// A registry that accepts connections and never answers.
fn stalled_registry() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    (listener, host)
}

#[test]
fn a_stalled_registry_ends_the_scan_at_the_timeout() {
    let (_listener, host) = stalled_registry();
    let image = format!("{host}/team/app:v1");
    let dir = tempfile::tempdir().unwrap();
    // Plain HTTP (the request goes out, no reply comes) and TLS (the handshake stalls).
    for tls in [false, true] {
        for command in ["inventory", "scan"] {
            let mut cmd = imagewarden();
            cmd.current_dir(dir.path())
                .args([command, &image, "--timeout", "2s"])
                .env("DOCKER_CONFIG", dir.path());
            if command == "scan" {
                cmd.args(["--scanners", "baseline"]);
            }
            if !tls {
                cmd.arg("--insecure");
            }
            let started = Instant::now();
            let (code, _, err) = run(&mut cmd);
            let took = started.elapsed();
            assert_eq!(code, Some(2), "{command} tls={tls}: {err}");
            assert!(
                err.contains("within 2s (--timeout"),
                "{command} tls={tls}: {err}"
            );
            assert!(took < Duration::from_secs(30), "{command} took {took:?}");
        }
    }
    // The limit is also read from IMAGEWARDEN_TIMEOUT; a bad one is refused.
    let (code, _, err) = run(imagewarden()
        .args(["inventory", &image, "--insecure"])
        .env("IMAGEWARDEN_TIMEOUT", "1s"));
    assert_eq!(code, Some(2));
    assert!(err.contains("within 1s (--timeout"), "{err}");
    let (code, _, err) = run(imagewarden().args(["inventory", &image, "--timeout", "soon"]));
    assert_eq!(code, Some(2));
    assert!(err.contains("--timeout") && err.contains("30s"), "{err}");
}

#[test]
fn help_is_grouped_like_trivys() {
    let (code, help, _) = run(imagewarden().args(["scan", "--help"]));
    assert_eq!(code, Some(0));
    let positions: Vec<usize> = [
        "Scan Flags:",
        "Database Flags:",
        "Report Flags:",
        "Registry Flags:",
        "Checks Flags:",
        "Global Flags:",
    ]
    .iter()
    .map(|h| {
        help.find(h)
            .unwrap_or_else(|| panic!("{h} missing: {help}"))
    })
    .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{help}");
    // Every flag but --help has a group.
    let options = help
        .split("\nOptions:\n")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap();
    assert_eq!(
        options.trim(),
        "-h, --help\n          Print help (see a summary with '-h')",
        "{help}"
    );
    for line in [
        "-f, --format",
        "-s, --severity",
        "-o, --output",
        "-q, --quiet",
        "--no-progress",
        "--timeout",
    ] {
        assert!(help.contains(line), "{line}: {help}");
    }
    assert!(help.contains("[env: IMAGEWARDEN_SEVERITY=]"), "{help}");
}

#[test]
fn docs_cli_md_is_generated_from_the_definitions() {
    let (code, generated, err) = run(imagewarden().args(["docs", "cli"]));
    assert_eq!(code, Some(0), "{err}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/cli.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/cli.md is stale: run `cargo run -p imagewarden-scanner --bin imagewarden -- docs cli > docs/cli.md`"
    );
    // Every flag of scan is in it, with its variable.
    let (_, help, _) = run(imagewarden().args(["scan", "--help"]));
    for flag in help
        .split_whitespace()
        .filter(|w| w.starts_with("--") && *w != "--help")
    {
        let flag = flag.trim_end_matches([',', ']']);
        assert!(
            generated.contains(&format!("`{flag}")) || generated.contains(&format!(" {flag}")),
            "{flag}"
        );
    }
    assert!(generated.contains("environment `IMAGEWARDEN_IGNORE_FILE`"));
}

#[tokio::test]
async fn every_registry_request_has_a_time_limit() {
    // Without an overall limit, a registry that never answers still ends the pull: the
    // request gives up after the silence the options allow, naming it.
    let (_listener, host) = stalled_registry();
    let target =
        imagewarden_scanner::source::ImageRef::parse(&format!("{host}/team/app:v1")).unwrap();
    let opts = imagewarden_scanner::source::PullOptions {
        insecure: true,
        request_timeout: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let started = Instant::now();
    let err = imagewarden_scanner::source::read(&target, &opts, Vec::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.contains("timed out (no connection within 1s or no data for 1s)"),
        "{err}"
    );
}
