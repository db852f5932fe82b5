//! The test cluster stays on this machine: while it runs, nothing from its Pod or Service
//! ranges is forwarded to any interface but the cluster's own bridge. Checked read-only
//! against the kernel's rules (`cluster.sh confinement-check`, `iptables -C`), and the
//! same rules' effect proven in scratch network namespaces (`cluster.sh
//! confinement-selftest`); no traffic leaves the machine to prove it.

use std::process::Command;

use anyhow::{ensure, Context, Result};
use imagewarden_tests::cluster::Cluster;
use imagewarden_tests::repo_root;

#[test]
fn pod_and_service_traffic_is_only_forwarded_to_the_cluster_bridge() -> Result<()> {
    Cluster::get()?;
    let script = repo_root().join("tests/scripts/cluster.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("confinement-check")
        .output()
        .context("running cluster.sh confinement-check")?;
    ensure!(
        out.status.success(),
        "confinement rules missing while the cluster runs:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The chain is hooked into FORWARD and drops, for each range, whatever leaves by
    // another interface than the bridge.
    let rules = Command::new("iptables")
        .args(["-w", "-t", "mangle", "-S", "IMAGEWARDEN-CONFINE"])
        .output()
        .context("running iptables -S")?;
    let text = String::from_utf8(rules.stdout)?;
    let drops: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("-A IMAGEWARDEN-CONFINE") && l.ends_with("-j DROP"))
        .collect();
    ensure!(drops.len() == 2, "expected two DROP rules:\n{text}");
    for rule in drops {
        ensure!(rule.contains("! -o iw-cni0"), "{rule}");
    }
    Ok(())
}

#[test]
fn the_rules_drop_forwarded_pod_traffic_in_scratch_namespaces() -> Result<()> {
    let script = repo_root().join("tests/scripts/cluster.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("confinement-selftest")
        .output()
        .context("running cluster.sh confinement-selftest")?;
    ensure!(
        out.status.success(),
        "confinement self-test failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(String::from_utf8(out.stdout)?.contains("self-test passed"));
    Ok(())
}
