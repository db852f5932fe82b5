//! When to try a delivery again, and how long to wait. Pure functions.

use std::time::Duration;

use k8s_openapi::jiff::{fmt::rfc2822, Timestamp};

/// Bounds on the attempts made for one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included. At least 1.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles for each further attempt.
    pub initial_backoff: Duration,
    /// Longest wait between two attempts computed by backoff.
    pub max_backoff: Duration,
    /// Longest wait a `Retry-After` header is honoured for; longer values are cut to it.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

/// What one attempt's response means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The target accepted the notification.
    Delivered,
    /// A transient failure: try again, after `retry_after` when the target said so.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// A failure that another attempt will not fix.
    Fail { reason: String },
}

/// Classifies an HTTP response: 2xx delivers; 429 and 5xx are retried (429 after its
/// `Retry-After`); any other status fails at once, quoting the (already shortened) body.
pub fn classify_status(status: u16, retry_after: Option<Duration>, body: &str) -> AttemptOutcome {
    let quoted = if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    };
    match status {
        200..=299 => AttemptOutcome::Delivered,
        429 => AttemptOutcome::Retry {
            reason: format!("HTTP 429 Too Many Requests{quoted}"),
            retry_after,
        },
        500..=599 => AttemptOutcome::Retry {
            reason: format!("HTTP {status}{quoted}"),
            retry_after,
        },
        _ => AttemptOutcome::Fail {
            reason: format!("HTTP {status}{quoted}"),
        },
    }
}

/// Wait after failed attempt number `attempt` (1-based): exponential from
/// `initial_backoff`, capped at `max_backoff`, with "equal jitter" (a uniformly random
/// point in the upper half) so that many operators do not retry in lockstep.
/// `jitter` is a number in `[0, 1)`.
pub fn backoff(policy: &RetryPolicy, attempt: u32, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let full = policy
        .initial_backoff
        .saturating_mul(1u32 << exp)
        .min(policy.max_backoff);
    let half = full / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// Wait before the next attempt: what the target asked for (capped), else backoff.
pub fn next_delay(
    policy: &RetryPolicy,
    attempt: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    match retry_after {
        Some(d) => d.min(policy.max_retry_after),
        None => backoff(policy, attempt, jitter),
    }
}

/// Parses a `Retry-After` value: delay seconds, or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = rfc2822::parse(value).ok()?.timestamp();
    let wait = at.as_millisecond() - now.as_millisecond();
    Some(Duration::from_millis(wait.max(0) as u64))
}

/// A number in `[0, 1)` that differs between calls, for backoff jitter.
pub fn random_jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_as_documented() {
        assert_eq!(classify_status(204, None, ""), AttemptOutcome::Delivered);
        assert!(matches!(
            classify_status(503, None, "busy"),
            AttemptOutcome::Retry {
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(
            classify_status(429, Some(Duration::from_secs(1)), ""),
            AttemptOutcome::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(1)
        ));
        assert_eq!(
            classify_status(401, None, "bad token"),
            AttemptOutcome::Fail {
                reason: "HTTP 401: bad token".into()
            }
        );
        assert!(matches!(
            classify_status(302, None, ""),
            AttemptOutcome::Fail { .. }
        ));
    }

    #[test]
    fn backoff_doubles_stays_in_the_upper_half_and_is_capped() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            ..Default::default()
        };
        assert_eq!(backoff(&p, 1, 0.0), Duration::from_millis(500));
        assert!(backoff(&p, 1, 0.999_999) < Duration::from_secs(1));
        assert_eq!(backoff(&p, 3, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(&p, 30, 1.0), Duration::from_secs(10));
        for attempt in 1..10 {
            let d = backoff(&p, attempt, random_jitter());
            assert!(d <= Duration::from_secs(10), "{d:?}");
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(
            next_delay(&p, 1, Some(Duration::from_secs(1)), 0.5),
            Duration::from_secs(1)
        );
        assert_eq!(
            next_delay(&p, 1, Some(Duration::from_secs(3600)), 0.5),
            p.max_retry_after
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        let now: Timestamp = "2026-11-27T10:00:00Z".parse().unwrap();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
