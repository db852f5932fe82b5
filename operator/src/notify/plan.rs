//! Which targets to notify for an event, given what the task's status already records,
//! and how the status changes. Pure functions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{NotificationDelivery, NotificationEvent, NotificationTarget, Severity};

/// State of one delivery, as written to `ScanTask.status.notifications[].state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    /// Intent recorded before sending; a restart re-sends it with the same key.
    Pending,
    /// The target accepted the notification.
    Delivered,
    /// Every attempt failed, or the target is misconfigured.
    Failed,
    /// The target's filters did not select this event.
    Skipped,
}

impl DeliveryState {
    /// The spelling used in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Delivered => "Delivered",
            Self::Failed => "Failed",
            Self::Skipped => "Skipped",
        }
    }

    /// Parses the status spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Pending" => Self::Pending,
            "Delivered" => Self::Delivered,
            "Failed" => Self::Failed,
            "Skipped" => Self::Skipped,
            _ => return None,
        })
    }
}

/// Spelling of an event in the status and in headers.
pub fn event_name(event: NotificationEvent) -> &'static str {
    match event {
        NotificationEvent::ScanCompleted => "ScanCompleted",
        NotificationEvent::ScanFailed => "ScanFailed",
        NotificationEvent::NewFindings => "NewFindings",
        NotificationEvent::ExceptionExpired => "ExceptionExpired",
        NotificationEvent::PolicyViolation => "PolicyViolation",
        NotificationEvent::FixCompleted => "FixCompleted",
        NotificationEvent::FixFailed => "FixFailed",
    }
}

/// What to do for one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Planned<'a> {
    /// Send; `previous_attempts` counts attempts of an earlier, unconfirmed send.
    Send {
        target: &'a NotificationTarget,
        previous_attempts: u32,
    },
    /// Record as skipped, with the reason.
    Skip {
        target: &'a NotificationTarget,
        reason: String,
    },
}

impl Planned<'_> {
    /// The target this is about.
    pub fn target(&self) -> &NotificationTarget {
        match self {
            Planned::Send { target, .. } | Planned::Skip { target, .. } => target,
        }
    }
}

/// The entry for `(target, event)`, if the status has one.
pub fn find<'a>(
    deliveries: &'a [NotificationDelivery],
    target: &str,
    event: NotificationEvent,
) -> Option<&'a NotificationDelivery> {
    deliveries
        .iter()
        .find(|d| d.target == target && d.event == event_name(event))
}

/// Decides, for each target of the rule, what `event` calls for:
/// - targets whose `events` do not include it are left alone (nothing recorded);
/// - an entry already `Delivered`, `Failed` or `Skipped` is final: nothing is sent again;
/// - a `Pending` entry (intent recorded, outcome not) is sent again, with the same key;
/// - otherwise the target is sent to, or skipped when its `minSeverity` is not reached
///   (`worst` is the most severe finding the notification is about).
pub fn plan<'a>(
    targets: &'a [NotificationTarget],
    deliveries: &[NotificationDelivery],
    event: NotificationEvent,
    worst: Option<Severity>,
) -> Vec<Planned<'a>> {
    let mut out = Vec::new();
    for target in targets {
        if !target.events.is_empty() && !target.events.contains(&event) {
            continue;
        }
        match find(deliveries, &target.name, event)
            .map(|d| (DeliveryState::parse(&d.state), d.attempts))
        {
            Some((Some(DeliveryState::Pending), attempts)) => out.push(Planned::Send {
                target,
                previous_attempts: attempts,
            }),
            Some(_) => {}
            None => match target.min_severity {
                // `Severity` orders from Critical (least) to Unknown (greatest).
                Some(min) if worst.is_none_or(|w| w > min) => out.push(Planned::Skip {
                    target,
                    reason: format!("no findings of severity {min:?} or higher"),
                }),
                _ => out.push(Planned::Send {
                    target,
                    previous_attempts: 0,
                }),
            },
        }
    }
    out
}

/// Inserts or replaces the entry for `entry`'s target and event. Keeps
/// `lastTransitionTime` when the state did not change. Returns whether anything changed.
pub fn upsert(deliveries: &mut Vec<NotificationDelivery>, mut entry: NotificationDelivery) -> bool {
    match deliveries
        .iter_mut()
        .find(|d| d.target == entry.target && d.event == entry.event)
    {
        Some(existing) => {
            if existing.state == entry.state {
                entry.last_transition_time = existing.last_transition_time.clone();
            }
            if *existing == entry {
                return false;
            }
            *existing = entry;
            true
        }
        None => {
            deliveries.push(entry);
            true
        }
    }
}

/// Condition type set when a notification could not be delivered.
pub const CONDITION_NOTIFICATION_FAILED: &str = "NotificationFailed";

/// The `NotificationFailed` condition the deliveries call for: `True` when any failed,
/// `False` when there are deliveries and none failed, none when there are none.
pub fn notification_condition(
    deliveries: &[NotificationDelivery],
    observed_generation: Option<i64>,
    now: Time,
) -> Option<Condition> {
    if deliveries.is_empty() {
        return None;
    }
    let failed: Vec<String> = deliveries
        .iter()
        .filter(|d| d.state == DeliveryState::Failed.as_str())
        .map(|d| match &d.message {
            Some(m) => format!("{} ({}): {m}", d.target, d.event),
            None => format!("{} ({})", d.target, d.event),
        })
        .collect();
    let (status, reason, message) = if failed.is_empty() {
        let pending = deliveries
            .iter()
            .any(|d| d.state == DeliveryState::Pending.as_str());
        (
            "False",
            if pending {
                "DeliveryPending"
            } else {
                "AllDelivered"
            },
            if pending {
                "notifications are being delivered".to_string()
            } else {
                "every notification was delivered or skipped".to_string()
            },
        )
    } else {
        (
            "True",
            "DeliveryFailed",
            super::redact::truncate(&format!("delivery failed: {}", failed.join("; ")), 2000),
        )
    };
    Some(Condition {
        type_: CONDITION_NOTIFICATION_FAILED.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation,
        last_transition_time: now,
    })
}

pub use crate::conditions::set_condition;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::NotificationType;

    fn target(name: &str) -> NotificationTarget {
        NotificationTarget {
            name: name.into(),
            target_type: NotificationType::HTTP,
            url: Some("http://127.0.0.1/hook".into()),
            url_secret_ref: None,
            signing_secret_ref: None,
            headers_secret_ref: None,
            ca_secret_ref: None,
            insecure_skip_verify: false,
            events: vec![],
            min_severity: None,
        }
    }

    fn entry(target: &str, state: DeliveryState, attempts: u32) -> NotificationDelivery {
        NotificationDelivery {
            target: target.into(),
            event: "ScanCompleted".into(),
            state: state.as_str().into(),
            attempts,
            last_transition_time: None,
            message: None,
        }
    }

    #[test]
    fn recorded_outcomes_are_final_and_pending_ones_are_sent_again() {
        let targets = vec![target("a"), target("b"), target("c"), target("d")];
        let existing = vec![
            entry("a", DeliveryState::Delivered, 1),
            entry("b", DeliveryState::Pending, 2),
            entry("c", DeliveryState::Failed, 5),
        ];
        let planned = plan(
            &targets,
            &existing,
            NotificationEvent::ScanCompleted,
            Some(Severity::Low),
        );
        assert_eq!(
            planned,
            vec![
                Planned::Send {
                    target: &targets[1],
                    previous_attempts: 2
                },
                Planned::Send {
                    target: &targets[3],
                    previous_attempts: 0
                },
            ]
        );
        // Another event of the same task is independent.
        let planned = plan(&targets, &existing, NotificationEvent::NewFindings, None);
        assert_eq!(planned.len(), 4);
    }

    #[test]
    fn filters_select_events_and_minimum_severity() {
        let mut only_failed = target("only-failed");
        only_failed.events = vec![NotificationEvent::ScanFailed];
        let mut high = target("high");
        high.min_severity = Some(Severity::High);
        let targets = vec![only_failed, high];

        let planned = plan(
            &targets,
            &[],
            NotificationEvent::ScanCompleted,
            Some(Severity::Medium),
        );
        assert_eq!(
            planned,
            vec![Planned::Skip {
                target: &targets[1],
                reason: "no findings of severity High or higher".into()
            }]
        );
        let planned = plan(&targets, &[], NotificationEvent::ScanCompleted, None);
        assert!(matches!(planned[..], [Planned::Skip { .. }]));
        for worst in [Severity::Critical, Severity::High] {
            let planned = plan(&targets, &[], NotificationEvent::ScanCompleted, Some(worst));
            assert!(matches!(planned[..], [Planned::Send { .. }]), "{worst:?}");
        }
        let planned = plan(
            &targets,
            &[],
            NotificationEvent::ScanFailed,
            Some(Severity::Critical),
        );
        assert_eq!(planned.len(), 2);
    }

    #[test]
    fn upsert_replaces_and_keeps_transition_time_of_unchanged_state() {
        let t0 = Time("2026-01-01T00:00:00Z".parse().unwrap());
        let t1 = Time("2026-01-02T00:00:00Z".parse().unwrap());
        let mut list = vec![NotificationDelivery {
            last_transition_time: Some(t0.clone()),
            ..entry("a", DeliveryState::Pending, 0)
        }];
        let mut same = entry("a", DeliveryState::Pending, 0);
        same.last_transition_time = Some(t1.clone());
        assert!(!upsert(&mut list, same));
        let mut done = entry("a", DeliveryState::Delivered, 1);
        done.last_transition_time = Some(t1.clone());
        assert!(upsert(&mut list, done));
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].state, "Delivered");
        assert_eq!(list[0].last_transition_time, Some(t1));
    }

    #[test]
    fn condition_reports_failed_targets() {
        let now = Time("2026-01-01T00:00:00Z".parse().unwrap());
        assert!(notification_condition(&[], Some(1), now.clone()).is_none());
        let mut failed = entry("hook", DeliveryState::Failed, 5);
        failed.message = Some("HTTP 503".into());
        let c = notification_condition(
            &[entry("a", DeliveryState::Delivered, 1), failed],
            Some(1),
            now.clone(),
        )
        .unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "DeliveryFailed")
        );
        assert_eq!(c.message, "delivery failed: hook (ScanCompleted): HTTP 503");
        let ok =
            notification_condition(&[entry("a", DeliveryState::Skipped, 0)], None, now).unwrap();
        assert_eq!(
            (ok.status.as_str(), ok.reason.as_str()),
            ("False", "AllDelivered")
        );
    }
}
