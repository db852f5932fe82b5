//! The version comparators against the reference implementations where this machine
//! has them: `dpkg --compare-versions` for Debian, Python `packaging` for PEP 440, rpm's
//! own `rpm.vercmp` (through `rpm --eval` and its Lua interpreter) for rpm.
//! Versions are the real ones in testdata/osv (or IMAGEWARDEN_OSV_DIR). A missing
//! reference tool skips its test.

use std::cmp::Ordering;
use std::path::PathBuf;
use std::process::Command;

use imagewarden_scanner::vulndb::version::{dpkg, pep440, rpm};

/// Every range bound of one ecosystem folder of testdata/osv, deduplicated.
fn versions(folder: &str) -> Vec<String> {
    let base = std::env::var_os("IMAGEWARDEN_OSV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/osv"));
    let dir = base.join(folder);
    let mut out = Vec::new();
    for f in std::fs::read_dir(dir).unwrap() {
        let path = f.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue; // LICENSE files
        }
        let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        for a in rec["affected"].as_array().into_iter().flatten() {
            for r in a["ranges"].as_array().into_iter().flatten() {
                if r["type"] != "ECOSYSTEM" {
                    continue;
                }
                for e in r["events"].as_array().into_iter().flatten() {
                    for v in e.as_object().unwrap().values() {
                        let v = v.as_str().unwrap();
                        if v != "0" && !out.iter().any(|x| x == v) {
                            out.push(v.to_string());
                        }
                    }
                }
            }
        }
    }
    out.sort();
    out
}

/// Pairs of neighbours and far-apart versions: sorted text order puts similar versions together.
fn pairs(vs: &[String]) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    for i in 0..vs.len() {
        for step in [1, 2, 7] {
            if let Some(b) = vs.get(i + step) {
                out.push((vs[i].as_str(), b.as_str()));
            }
        }
    }
    out
}

#[test]
fn dpkg_order_matches_dpkg_compare_versions() {
    if Command::new("dpkg").arg("--version").output().is_err() {
        println!("skipped: dpkg is not installed");
        return;
    }
    let vs = versions("Debian");
    let pairs = pairs(&vs);
    assert!(pairs.len() > 100);
    let mut wrong = Vec::new();
    for (a, b) in &pairs {
        let lt = Command::new("dpkg")
            .args(["--compare-versions", a, "lt", b])
            .status()
            .unwrap()
            .success();
        let eq = Command::new("dpkg")
            .args(["--compare-versions", a, "eq", b])
            .status()
            .unwrap()
            .success();
        let want = if lt {
            Ordering::Less
        } else if eq {
            Ordering::Equal
        } else {
            Ordering::Greater
        };
        if dpkg::compare(a, b) != want {
            wrong.push(format!("{a} vs {b}: dpkg says {want:?}"));
        }
    }
    println!("{} pairs compared", pairs.len());
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn pep440_order_matches_python_packaging() {
    let vs = versions("PyPI");
    // Versions `packaging` rejects (legacy, non-PEP 440) are answered with "?" and not compared.
    let script = "import sys\nfrom packaging.version import Version, InvalidVersion\nfor line in sys.stdin:\n    a, b = line.split()\n    try:\n        x, y = Version(a), Version(b)\n    except InvalidVersion:\n        print('?')\n        continue\n    print(-1 if x < y else (0 if x == y else 1))\n";
    let input: String = pairs(&vs)
        .iter()
        .map(|(a, b)| format!("{a} {b}\n"))
        .collect();
    let out = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input.as_bytes())?;
            child.wait_with_output()
        });
    let out = match out {
        Ok(o) if o.status.success() => o,
        _ => {
            println!("skipped: python3 with `packaging` is not available");
            return;
        }
    };
    let answers: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    let pairs = pairs(&vs);
    assert_eq!(answers.len(), pairs.len());
    assert!(pairs.len() > 100);
    let mut wrong = Vec::new();
    for ((a, b), want) in pairs.iter().zip(answers) {
        let want = match want {
            "-1" => Ordering::Less,
            "0" => Ordering::Equal,
            "1" => Ordering::Greater,
            _ => continue,
        };
        if pep440::compare(a, b) != want {
            wrong.push(format!("{a} vs {b}: packaging says {want:?}"));
        }
    }
    println!("{} pairs compared", pairs.len());
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn rpm_order_matches_rpm_vercmp_on_every_pair() {
    if Command::new("rpm").arg("--version").output().is_err() {
        println!("skipped: rpm is not installed");
        return;
    }
    let vs = versions("AlmaLinux");
    // Every pair, not only neighbours: rpm answers about a million pairs a second.
    let pairs: Vec<(&str, &str)> = vs
        .iter()
        .enumerate()
        .flat_map(|(i, a)| vs[i + 1..].iter().map(move |b| (a.as_str(), b.as_str())))
        .collect();
    assert!(pairs.len() > 1000, "{} pairs", pairs.len());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs");
    let text: String = pairs.iter().map(|(a, b)| format!("{a} {b}\n")).collect();
    std::fs::write(&input, text).unwrap();
    // rpm.vercmp parses `[epoch:]version-release` and compares as rpm itself does.
    let script = format!(
        "%{{lua: for l in io.lines(\"{}\") do local a, b = l:match(\"^(%S+) (%S+)$\"); io.write(rpm.vercmp(a, b), \"\\n\") end}}",
        input.display()
    );
    let out = Command::new("rpm")
        .args(["--eval", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<&str> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(answers.len(), pairs.len());
    let mut wrong = Vec::new();
    for ((a, b), want) in pairs.iter().zip(answers) {
        let want = match want {
            "-1" => Ordering::Less,
            "0" => Ordering::Equal,
            "1" => Ordering::Greater,
            other => panic!("rpm answered {other:?} for {a} {b}"),
        };
        if rpm::compare(a, b) != want {
            wrong.push(format!("{a} vs {b}: rpm says {want:?}"));
        }
    }
    println!("{} versions, {} pairs compared", vs.len(), pairs.len());
    assert!(
        wrong.is_empty(),
        "{} disagreements: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(20)]
    );
}
