//! Admission counts of each ImagePolicy: every replica counts what it decided and adds
//! its counts to the policy's status every few seconds, with the status's
//! resourceVersion as precondition so that replicas never overwrite each other.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::api::{Api, PostParams};
use kube::Client;

use super::admission::{Decision, Judgement};
use super::Action;
use crate::crd::{ImagePolicy, ImagePolicyStatus, PolicyDenial};

/// Violations kept in `status.lastDenials`.
pub const LAST_DENIALS: usize = 10;
/// How often counts are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(2);

/// Counts not yet written, for one policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PendingCounts {
    pub admitted: u64,
    pub denied: u64,
    pub warned: u64,
    pub audited: u64,
    /// Newest last.
    pub denials: Vec<PolicyDenial>,
}

impl PendingCounts {
    /// Adds these counts to a status (pure).
    pub fn add_to(&self, status: &mut ImagePolicyStatus) {
        status.admitted += self.admitted;
        status.denied += self.denied;
        status.warned += self.warned;
        status.audited += self.audited;
        let mut denials: Vec<PolicyDenial> = self.denials.iter().rev().cloned().collect();
        denials.extend(std::mem::take(&mut status.last_denials));
        denials.truncate(LAST_DENIALS);
        status.last_denials = denials;
    }
}

/// For each policy that judged a request, its strongest judgement (deny over warn over
/// audit over admit) on any image of the request: what the request counts as.
pub fn strongest(decision: &Decision) -> BTreeMap<&str, &Judgement> {
    let rank = |a: Action| match a {
        Action::Admit => 0,
        Action::Audit => 1,
        Action::Warn => 2,
        Action::Deny => 3,
    };
    let mut out: BTreeMap<&str, &Judgement> = BTreeMap::new();
    for j in &decision.judgements {
        let entry = out.entry(&j.policy).or_insert(j);
        if rank(j.action) > rank(entry.action) {
            *entry = j;
        }
    }
    out
}

/// Counts of this replica's admission decisions, per policy.
#[derive(Default)]
pub struct AdmissionStats {
    pending: Mutex<BTreeMap<String, PendingCounts>>,
}

impl AdmissionStats {
    /// Counts one request's decision: for each policy, the strongest action it took on
    /// any image of the request.
    pub fn record(&self, kind: &str, namespace: &str, name: &str, decision: &Decision) {
        let strongest = strongest(decision);
        if strongest.is_empty() {
            return;
        }
        let mut pending = self.pending.lock().expect("stats lock");
        for (policy, j) in strongest {
            let (action, image, reasons) = (j.action, &j.image, &j.reasons);
            let counts = pending.entry(policy.to_string()).or_default();
            let label = match action {
                Action::Admit => {
                    counts.admitted += 1;
                    continue;
                }
                Action::Deny => {
                    counts.denied += 1;
                    "Denied"
                }
                Action::Warn => {
                    counts.warned += 1;
                    "Warned"
                }
                Action::Audit => {
                    counts.audited += 1;
                    "Audited"
                }
            };
            counts.denials.push(PolicyDenial {
                time: Some(crate::now()),
                action: label.into(),
                object: format!("{kind} {namespace}/{name}"),
                image: image.chars().take(256).collect(),
                message: reasons
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
                    .chars()
                    .take(512)
                    .collect(),
            });
            if counts.denials.len() > LAST_DENIALS {
                counts.denials.remove(0);
            }
        }
    }

    fn take(&self) -> BTreeMap<String, PendingCounts> {
        std::mem::take(&mut *self.pending.lock().expect("stats lock"))
    }

    fn give_back(&self, policy: String, counts: PendingCounts) {
        let mut pending = self.pending.lock().expect("stats lock");
        let entry = pending.entry(policy).or_default();
        entry.admitted += counts.admitted;
        entry.denied += counts.denied;
        entry.warned += counts.warned;
        entry.audited += counts.audited;
        let mut denials = counts.denials;
        denials.append(&mut entry.denials);
        let cut = denials.len().saturating_sub(LAST_DENIALS);
        entry.denials = denials.split_off(cut);
    }

    /// Writes the pending counts of every policy; counts that could not be written are
    /// kept for the next flush.
    pub async fn flush(&self, client: &Client) {
        let api: Api<ImagePolicy> = Api::all(client.clone());
        for (policy, counts) in self.take() {
            if let Err(e) = add_counts(&api, &policy, &counts).await {
                tracing::debug!(policy, error = %e, "writing admission counts; kept for the next flush");
                self.give_back(policy, counts);
            }
        }
    }

    /// Flushes every [`FLUSH_INTERVAL`], for ever.
    pub async fn run(&self, client: Client) {
        let mut ticker = tokio::time::interval(FLUSH_INTERVAL);
        loop {
            ticker.tick().await;
            self.flush(&client).await;
        }
    }
}

async fn add_counts(
    api: &Api<ImagePolicy>,
    name: &str,
    counts: &PendingCounts,
) -> Result<(), kube::Error> {
    for _ in 0..5 {
        let Some(mut policy) = api.get_opt(name).await? else {
            return Ok(()); // deleted: nothing to count on
        };
        let mut status = policy.status.take().unwrap_or_default();
        counts.add_to(&mut status);
        policy.status = Some(status);
        // replace_status carries the resourceVersion: a concurrent writer makes it 409.
        match api
            .replace_status(name, &PostParams::default(), &policy)
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Err(kube::Error::Api(
        kube::core::Status::failure("status kept changing", "Conflict")
            .with_code(409)
            .boxed(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judgement(policy: &str, image: &str, action: Action) -> Judgement {
        Judgement {
            policy: policy.into(),
            image: image.into(),
            action,
            reasons: vec![format!("reason for {image}")],
            scan_wanted: false,
        }
    }

    #[test]
    fn a_request_counts_once_per_policy_by_its_strongest_action() {
        let stats = AdmissionStats::default();
        let decision = Decision {
            judgements: vec![
                judgement("p", "a", Action::Admit),
                judgement("p", "b", Action::Deny),
                judgement("q", "a", Action::Audit),
                judgement("r", "a", Action::Admit),
            ],
            invalid: None,
        };
        stats.record("Pod", "team-a", "web", &decision);
        let pending = stats.take();
        assert_eq!((pending["p"].denied, pending["p"].admitted), (1, 0));
        assert_eq!(pending["p"].denials[0].image, "b");
        assert_eq!(pending["p"].denials[0].object, "Pod team-a/web");
        assert_eq!(pending["q"].audited, 1);
        assert_eq!(pending["q"].denials[0].action, "Audited");
        assert_eq!((pending["r"].admitted, pending["r"].denials.len()), (1, 0));
    }

    #[test]
    fn counts_add_up_and_the_newest_denials_come_first() {
        let mut status = ImagePolicyStatus {
            denied: 3,
            last_denials: (0..LAST_DENIALS)
                .map(|i| PolicyDenial {
                    action: "Denied".into(),
                    image: format!("old-{i}"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let counts = PendingCounts {
            denied: 2,
            warned: 1,
            denials: vec![
                PolicyDenial {
                    image: "new-1".into(),
                    ..Default::default()
                },
                PolicyDenial {
                    image: "new-2".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        counts.add_to(&mut status);
        assert_eq!((status.denied, status.warned), (5, 1));
        let images: Vec<&str> = status
            .last_denials
            .iter()
            .map(|d| d.image.as_str())
            .collect();
        assert_eq!(images.len(), LAST_DENIALS);
        assert_eq!(&images[..3], ["new-2", "new-1", "old-0"]);
    }
}
