//! Status conditions as Kubernetes does them: one per type, and `lastTransitionTime`
//! moves only when the status changes, so a status rewritten with the same meaning stays
//! byte-for-byte the same.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// A condition of `type_` (`True` when `ok`), keeping the transition time of the
/// condition of the same type in `previous` when its status is the same.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    previous: &[Condition],
) -> Condition {
    let mut new = Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: crate::now(),
    };
    if let Some(old) = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == new.status)
    {
        new.last_transition_time = old.last_transition_time.clone();
    }
    new
}

/// Sets `condition` in `conditions`, keeping `lastTransitionTime` when the status did
/// not change. Returns whether anything changed.
pub fn set_condition(conditions: &mut Vec<Condition>, mut condition: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => {
            if existing.status == condition.status {
                condition.last_transition_time = existing.last_transition_time.clone();
            }
            if *existing == condition {
                return false;
            }
            *existing = condition;
            true
        }
        None => {
            conditions.push(condition);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(second: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(second).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let mut old = condition("Ready", true, "Ok", "fine", Some(1), &[]);
        old.last_transition_time = at(1000);
        let same = condition("Ready", true, "Other", "reworded", Some(2), &[old.clone()]);
        assert_eq!(same.last_transition_time, at(1000));
        let flipped = condition("Ready", false, "Down", "broken", Some(2), &[old.clone()]);
        assert_ne!(flipped.last_transition_time, at(1000));

        let mut list = vec![old.clone()];
        assert!(!set_condition(&mut list, old.clone()));
        assert!(set_condition(&mut list, same.clone()));
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].reason, "Other");
        assert_eq!(list[0].last_transition_time, at(1000));
    }
}
