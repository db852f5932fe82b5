//! Leader election with a `coordination.k8s.io/v1` Lease, so that only one replica acts.
//!
//! The holder renews the Lease every `lease_duration / 3`; a candidate takes it over when
//! the holder has not renewed within `lease_duration`. Updates carry the Lease's
//! resourceVersion, so two candidates cannot both win the same round.

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use tokio::sync::watch;
use tracing::{info, warn};

/// Name of the Lease.
pub const LEASE_NAME: &str = "imagewarden-operator";

/// Leader election settings.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub identity: String,
    pub lease_duration: Duration,
}

/// Whether `lease` may be taken by `identity` at `now` (pure).
pub fn can_acquire(lease: &LeaseSpec, identity: &str, now: chrono::DateTime<Utc>) -> bool {
    match lease.holder_identity.as_deref() {
        None | Some("") => true,
        Some(holder) if holder == identity => true,
        Some(_) => {
            let duration = lease.lease_duration_seconds.unwrap_or(15) as i64;
            match lease.renew_time.as_ref().or(lease.acquire_time.as_ref()) {
                Some(t) => now.timestamp() > t.0.as_second() + duration,
                None => true,
            }
        }
    }
}

async fn try_acquire(api: &Api<Lease>, s: &LeaseSettings) -> Result<bool, kube::Error> {
    let now = Utc::now();
    let micro = || {
        MicroTime(
            k8s_openapi::jiff::Timestamp::from_second(now.timestamp())
                .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        )
    };
    let spec_for = |acquire: Option<MicroTime>, transitions: i32| LeaseSpec {
        holder_identity: Some(s.identity.clone()),
        lease_duration_seconds: Some(s.lease_duration.as_secs() as i32),
        acquire_time: acquire.or_else(|| Some(micro())),
        renew_time: Some(micro()),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    match api.get_opt(LEASE_NAME).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    ..Default::default()
                },
                spec: Some(spec_for(None, 0)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            if !can_acquire(&spec, &s.identity, now) {
                return Ok(false);
            }
            let same = spec.holder_identity.as_deref() == Some(s.identity.as_str());
            let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!same);
            lease.spec = Some(spec_for(
                if same { spec.acquire_time } else { None },
                transitions,
            ));
            match api
                .replace(LEASE_NAME, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Runs the election forever; the watch channel says whether this replica leads now.
pub fn spawn(client: Client, settings: LeaseSettings) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
        let retry = settings.lease_duration / 3;
        let mut last_renew = std::time::Instant::now();
        loop {
            let leading = *tx.borrow();
            match try_acquire(&api, &settings).await {
                Ok(true) => {
                    last_renew = std::time::Instant::now();
                    if !leading {
                        info!(identity = %settings.identity, "acquired the leader Lease");
                        let _ = tx.send(true);
                    }
                }
                Ok(false) => {
                    if leading {
                        warn!(identity = %settings.identity, "lost the leader Lease");
                        let _ = tx.send(false);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "leader election");
                    // Step down when the Lease could not be renewed in time.
                    if leading && last_renew.elapsed() > settings.lease_duration {
                        let _ = tx.send(false);
                    }
                }
            }
            tokio::time::sleep(retry).await;
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_taken_only_when_free_expired_or_own() {
        let now = Utc::now();
        let held = |by: &str, renewed_secs_ago: i64| LeaseSpec {
            holder_identity: Some(by.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(
                k8s_openapi::jiff::Timestamp::from_second(now.timestamp() - renewed_secs_ago)
                    .unwrap(),
            )),
            ..Default::default()
        };
        assert!(can_acquire(&LeaseSpec::default(), "a", now));
        assert!(can_acquire(&held("a", 5), "a", now));
        assert!(!can_acquire(&held("b", 5), "a", now));
        assert!(can_acquire(&held("b", 20), "a", now));
    }
}
