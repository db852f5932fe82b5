//! The `Deleted` condition of an ImageScanResult and when a deleted result is collected
//! (pure).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition type of a result whose image is gone.
pub const DELETED: &str = "Deleted";
/// Reason: the registry sent a delete event for the manifest.
pub const DELETED_IN_REGISTRY: &str = "DeletedInRegistry";
/// Reason: the rule's discovery no longer finds the digest in its scope.
pub const NOT_FOUND: &str = "NotFoundInScope";

/// How long a `Deleted` result is kept when its rule sets no `resultRetention`.
pub const DEFAULT_RESULT_RETENTION: Duration = Duration::from_secs(168 * 3600);
/// Longest retention accepted (ten years), so times stay representable.
const MAX_RESULT_RETENTION: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

/// Parses a `resultRetention` value (`168h`, `30m`, `7d`, `1h 30m`); the error says what
/// to write.
pub fn parse_retention(value: &str) -> Result<Duration, String> {
    let parsed = crate::config::parse_duration(value).map_err(|_| {
        format!("spec.resultRetention {value:?} is not a duration such as 168h, 30m or 7d")
    })?;
    if parsed > MAX_RESULT_RETENTION {
        return Err(format!(
            "spec.resultRetention {value:?} is longer than ten years"
        ));
    }
    Ok(parsed)
}

/// The retention of a rule's results: its `resultRetention`, or the default (an invalid
/// value, which the rule's `Ready` condition reports, counts as the default).
pub fn retention_of(value: Option<&str>) -> Duration {
    value
        .and_then(|v| parse_retention(v).ok())
        .unwrap_or(DEFAULT_RESULT_RETENTION)
}

/// Since when the result is `Deleted`, if it is.
pub fn deleted_since(conditions: &[Condition]) -> Option<&Time> {
    conditions
        .iter()
        .find(|c| c.type_ == DELETED && c.status == "True")
        .map(|c| &c.last_transition_time)
}

/// The conditions with `Deleted=True` at `now`, or `None` when the result is already
/// `Deleted` (the first time is kept: retention counts from it).
pub fn mark_deleted(
    conditions: &[Condition],
    reason: &str,
    message: &str,
    now: &Time,
) -> Option<Vec<Condition>> {
    if deleted_since(conditions).is_some() {
        return None;
    }
    let mut out: Vec<Condition> = conditions
        .iter()
        .filter(|c| c.type_ != DELETED)
        .cloned()
        .collect();
    out.push(Condition {
        type_: DELETED.into(),
        status: "True".into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: None,
        last_transition_time: now.clone(),
    });
    Some(out)
}

/// The conditions without `Deleted`, or `None` when the result was not `Deleted`: the
/// image was found again (re-pushed, or back in scope).
pub fn clear_deleted(conditions: &[Condition]) -> Option<Vec<Condition>> {
    conditions.iter().any(|c| c.type_ == DELETED).then(|| {
        conditions
            .iter()
            .filter(|c| c.type_ != DELETED)
            .cloned()
            .collect()
    })
}

/// When a result `Deleted` since `since` is collected, with `retention`.
pub fn collect_at(since: &Time, retention: Duration) -> Time {
    let retention = k8s_openapi::jiff::SignedDuration::try_from(retention)
        .unwrap_or(k8s_openapi::jiff::SignedDuration::MAX);
    Time(
        since
            .0
            .checked_add(retention)
            .unwrap_or(k8s_openapi::jiff::Timestamp::MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(second).unwrap())
    }

    #[test]
    fn retention_takes_durations_and_rejects_the_rest_clearly() {
        assert_eq!(parse_retention("168h"), Ok(Duration::from_secs(168 * 3600)));
        assert_eq!(parse_retention("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_retention("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_retention("1h 30m"), Ok(Duration::from_secs(5400)));
        let err = parse_retention("a week").unwrap_err();
        assert!(
            err.contains("spec.resultRetention") && err.contains("168h"),
            "{err}"
        );
        assert!(parse_retention("100000d")
            .unwrap_err()
            .contains("ten years"));
        assert_eq!(retention_of(None), DEFAULT_RESULT_RETENTION);
        assert_eq!(retention_of(Some("bogus")), DEFAULT_RESULT_RETENTION);
        assert_eq!(retention_of(Some("5s")), Duration::from_secs(5));
    }

    #[test]
    fn deleted_keeps_its_first_time_and_clears_when_found_again() {
        let scanned = Condition {
            type_: "Scanned".into(),
            status: "True".into(),
            reason: "Scanned".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: at(1),
        };
        let marked =
            mark_deleted(std::slice::from_ref(&scanned), NOT_FOUND, "gone", &at(100)).unwrap();
        assert_eq!(marked.len(), 2);
        assert_eq!(deleted_since(&marked), Some(&at(100)));
        assert_eq!(
            mark_deleted(&marked, DELETED_IN_REGISTRY, "x", &at(200)),
            None
        );
        assert_eq!(clear_deleted(&marked), Some(vec![scanned.clone()]));
        assert_eq!(clear_deleted(&[scanned]), None);
        assert_eq!(
            collect_at(&at(100), Duration::from_secs(60)),
            at(160),
            "collected once the retention after the deletion has passed"
        );
    }
}
