//! Whether a rule's registry answers: `GET /v2/` with the rule's credentials, through the
//! egress policy and the registry client's timeouts. A rule's registry is probed when its
//! spec changes (a new generation) and then at most every [`PROBE_INTERVAL`]; between
//! probes its `Ready` condition repeats the last answer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::ResourceExt;

use crate::crd::ScanRule;
use crate::registry::RegistryClient;

/// Time between two probes of an unchanged rule's registry.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// Time one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Characters of a failure kept in the condition message.
const MESSAGE_CHARS: usize = 400;

/// What a probe found: `Ok(message)` or `Err((reason, message))`, as the `Ready`
/// condition says it.
pub type ProbeOutcome = Result<String, (&'static str, String)>;

/// The last probe of one rule.
#[derive(Clone, Debug)]
pub struct Probe {
    pub generation: Option<i64>,
    pub at: Instant,
    pub outcome: ProbeOutcome,
}

/// True when the rule at `generation` needs a new probe (pure): never probed, its spec
/// changed since, or the last probe is [`PROBE_INTERVAL`] old.
pub fn due(last: Option<&Probe>, generation: Option<i64>, now: Instant) -> bool {
    match last {
        None => true,
        Some(p) => p.generation != generation || now.duration_since(p.at) >= PROBE_INTERVAL,
    }
}

/// The last probe of each rule (by uid).
#[derive(Default)]
pub struct RegistryProbes {
    last: Mutex<HashMap<String, Probe>>,
}

impl RegistryProbes {
    fn get(&self, uid: &str) -> Option<Probe> {
        self.last.lock().expect("probes lock").get(uid).cloned()
    }

    fn put(&self, uid: String, probe: Probe) {
        let mut last = self.last.lock().expect("probes lock");
        // Rules deleted since are forgotten once their probe is long stale.
        last.retain(|_, p| p.at.elapsed() < PROBE_INTERVAL * 4);
        last.insert(uid, probe);
    }
}

/// Whether the rule's registry answers, probing it when [`due`].
pub async fn registry_ready(
    probes: &RegistryProbes,
    client: &kube::Client,
    egress: std::sync::Arc<imagewarden_scanner::egress::EgressPolicy>,
    rule: &ScanRule,
) -> ProbeOutcome {
    let uid = rule.uid().unwrap_or_else(|| rule.name_any());
    let generation = rule.metadata.generation;
    let last = probes.get(&uid);
    if !due(last.as_ref(), generation, Instant::now()) {
        if let Some(last) = last {
            return last.outcome;
        }
    }
    let outcome = probe(client, egress, rule).await;
    probes.put(
        uid,
        Probe {
            generation,
            at: Instant::now(),
            outcome: outcome.clone(),
        },
    );
    outcome
}

fn bounded(message: String) -> String {
    message.chars().take(MESSAGE_CHARS).collect()
}

async fn probe(
    client: &kube::Client,
    egress: std::sync::Arc<imagewarden_scanner::egress::EgressPolicy>,
    rule: &ScanRule,
) -> ProbeOutcome {
    let ns = rule.namespace().unwrap_or_default();
    let access = crate::access::registry_access(client, &ns, &rule.spec.registry, egress)
        .await
        .map_err(|e| ("RegistryAccess", bounded(e.to_string())))?;
    let client = RegistryClient::with_timeout(&access, PROBE_TIMEOUT)
        .map_err(|e| ("RegistryUnreachable", bounded(e.to_string())))?;
    client
        .ping()
        .await
        .map_err(|e| ("RegistryUnreachable", bounded(e.to_string())))?;
    let credentials = if access.credentials.is_some() {
        "with the rule's credentials"
    } else {
        "anonymously"
    };
    Ok(format!(
        "the rule is valid; registry {} answered /v2/ {credentials}",
        access.host
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_is_probed_on_spec_change_and_then_rarely() {
        let start = Instant::now();
        let last = Probe {
            generation: Some(1),
            at: start,
            outcome: Ok("ok".into()),
        };
        assert!(due(None, Some(1), start));
        assert!(!due(Some(&last), Some(1), start + Duration::from_secs(300)));
        assert!(due(Some(&last), Some(2), start + Duration::from_secs(1)));
        assert!(due(Some(&last), Some(1), start + PROBE_INTERVAL));
    }
}
