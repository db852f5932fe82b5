//! Pushes reported by registries: the event, which rules it concerns, and the coalescer
//! that turns a burst of pushes into one batch per rule.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::access::{registry_host, same_registry};
use super::discovery::{Scope, TagFilter};
use crate::crd::ScanRuleSpec;

/// One manifest pushed under a tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PushEvent {
    /// `host[:port]` the image was pushed to, as the registry saw it.
    pub registry_host: String,
    pub repository: String,
    pub tag: String,
    /// `sha256:...` of the pushed manifest.
    pub digest: String,
}

/// True when `event` is a push the rule scans: the rule triggers on push, and the event's
/// registry, repository and tag are in the rule's registry, scope and tag filter. An
/// invalid registry URL or tag filter matches nothing (the rule's condition says why).
pub fn rule_matches_push(spec: &ScanRuleSpec, event: &PushEvent) -> bool {
    if !spec.triggers.on_push {
        return false;
    }
    let Ok(rule_host) = registry_host(&spec.registry.url, spec.registry.insecure) else {
        return false;
    };
    // The event's host comes from the push request's Host header: normalize it the same
    // way (a default port is dropped), trying both schemes since the header has none.
    let event_host = registry_host(&event.registry_host, spec.registry.insecure)
        .unwrap_or_else(|_| event.registry_host.to_ascii_lowercase());
    if !same_registry(&rule_host, &event_host) {
        return false;
    }
    if !Scope::from(&spec.scope).contains(&event.repository) {
        return false;
    }
    TagFilter::new(&spec.tag_filter).is_ok_and(|f| f.matches(&event.tag))
}

/// The pushes one rule received within one window, one per repository:tag (the last
/// digest pushed wins), in order of their first arrival.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushBatch<K> {
    pub rule: K,
    pub events: Vec<PushEvent>,
}

struct Pending {
    events: Vec<PushEvent>,
    /// Position in `events` of each repository:tag, so a repeated push replaces in O(1).
    positions: HashMap<(String, String), usize>,
}

/// Collects pushes per rule and releases them as one batch per rule once the window that
/// the rule's first push opened has passed. The window is fixed, not sliding, so a steady
/// stream of pushes still yields a batch every window. Pure: the caller supplies time.
///
/// Every operation is linear in what it adds or releases: a push is recorded in O(1)
/// (repeats replace by key), and windows are released from a queue in opening order
/// (the window length is fixed, so that is also the order they fall due).
pub struct PushCoalescer<K> {
    window: Duration,
    pending: HashMap<K, Pending>,
    /// Rules with an open window, with its end, earliest first.
    due: VecDeque<(Instant, K)>,
}

impl<K: Clone + Eq + Hash> PushCoalescer<K> {
    /// A coalescer with the given window (e.g. 3 s).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            pending: HashMap::new(),
            due: VecDeque::new(),
        }
    }

    /// Records `event` for `rule` at time `now` (times passed in do not go backwards).
    pub fn add(&mut self, rule: K, event: PushEvent, now: Instant) {
        let pending = match self.pending.entry(rule) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                // A later `now` than any queued window's opening: the queue stays sorted.
                let due = self.due.back().map_or(now + self.window, |(last, _)| {
                    (*last).max(now + self.window)
                });
                self.due.push_back((due, e.key().clone()));
                e.insert(Pending {
                    events: Vec::new(),
                    positions: HashMap::new(),
                })
            }
        };
        let key = (event.repository.clone(), event.tag.clone());
        match pending.positions.entry(key) {
            Entry::Occupied(slot) => pending.events[*slot.get()] = event,
            Entry::Vacant(slot) => {
                slot.insert(pending.events.len());
                pending.events.push(event);
            }
        }
    }

    /// When the next batch is due, if any push is pending.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.front().map(|(due, _)| *due)
    }

    /// Removes and returns the batches due at `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<PushBatch<K>> {
        let mut out = Vec::new();
        while self.due.front().is_some_and(|(due, _)| *due <= now) {
            let (_, rule) = self.due.pop_front().expect("checked");
            if let Some(pending) = self.pending.remove(&rule) {
                out.push(PushBatch {
                    rule,
                    events: pending.events,
                });
            }
        }
        out
    }

    /// Removes and returns every pending batch (on shutdown).
    pub fn take_all(&mut self) -> Vec<PushBatch<K>> {
        self.due
            .drain(..)
            .filter_map(|(_, rule)| {
                let pending = self.pending.remove(&rule)?;
                Some(PushBatch {
                    rule,
                    events: pending.events,
                })
            })
            .collect()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Reads pushes from `events`, asks `route` which rules each concerns (e.g. the rules in
/// a reflector store for which [`rule_matches_push`] holds), and sends one [`PushBatch`]
/// per rule per `window` to `batches`. Returns when `events` closes (after flushing) or
/// when `batches` is closed.
pub async fn coalesce_pushes<K, F>(
    mut events: mpsc::Receiver<PushEvent>,
    window: Duration,
    mut route: F,
    batches: mpsc::Sender<PushBatch<K>>,
) where
    K: Clone + Eq + Hash,
    F: FnMut(&PushEvent) -> Vec<K>,
{
    let mut coalescer = PushCoalescer::new(window);
    loop {
        let next_due = coalescer.next_due();
        let received = match next_due {
            Some(due) => tokio::select! {
                event = events.recv() => Some(event),
                () = tokio::time::sleep_until(due) => None,
            },
            None => Some(events.recv().await),
        };
        match received {
            Some(Some(event)) => {
                let now = Instant::now();
                for rule in route(&event) {
                    coalescer.add(rule, event.clone(), now);
                }
            }
            Some(None) => {
                for batch in coalescer.take_all() {
                    if batches.send(batch).await.is_err() {
                        return;
                    }
                }
                return;
            }
            None => {}
        }
        for batch in coalescer.take_due(Instant::now()) {
            if batches.send(batch).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(host: &str, repository: &str, tag: &str) -> PushEvent {
        PushEvent {
            registry_host: host.into(),
            repository: repository.into(),
            tag: tag.into(),
            digest: format!("sha256:{}", "0".repeat(64)),
        }
    }

    fn spec(url: &str, scope_type: &str, name: &str, filter: &str, on_push: bool) -> ScanRuleSpec {
        serde_json::from_value(serde_json::json!({
            "registry": {"url": url},
            "scope": {"type": scope_type, "name": name},
            "tagFilter": filter,
            "triggers": {"onPush": on_push},
        }))
        .unwrap()
    }

    #[test]
    fn push_in_scope_with_matching_tag_matches() {
        let rule = spec(
            "https://registry.example:443",
            "Namespace",
            "team-a",
            "^v",
            true,
        );
        assert!(rule_matches_push(
            &rule,
            &push("registry.example", "team-a/api", "v1")
        ));
        assert!(rule_matches_push(
            &rule,
            &push("REGISTRY.example:443", "team-a/api", "v1")
        ));
    }

    #[test]
    fn push_elsewhere_does_not_match() {
        let rule = spec("registry.example", "Namespace", "team-a", "^v", true);
        assert!(!rule_matches_push(
            &rule,
            &push("other.example", "team-a/api", "v1")
        ));
        assert!(!rule_matches_push(
            &rule,
            &push("registry.example:5000", "team-a/api", "v1")
        ));
        assert!(!rule_matches_push(
            &rule,
            &push("registry.example", "team-b/api", "v1")
        ));
        assert!(!rule_matches_push(
            &rule,
            &push("registry.example", "team-a/x/api", "v1")
        ));
        assert!(!rule_matches_push(
            &rule,
            &push("registry.example", "team-a/api", "latest")
        ));
    }

    #[test]
    fn repository_scope_and_on_push_switch() {
        let rule = spec("registry.example", "Repository", "team-a/api", ".*", true);
        assert!(rule_matches_push(
            &rule,
            &push("registry.example", "team-a/api", "x")
        ));
        assert!(!rule_matches_push(
            &rule,
            &push("registry.example", "team-a/web", "x")
        ));
        let off = spec("registry.example", "Repository", "team-a/api", ".*", false);
        assert!(!rule_matches_push(
            &off,
            &push("registry.example", "team-a/api", "x")
        ));
        let bad_regex = spec("registry.example", "Repository", "team-a/api", "(", true);
        assert!(!rule_matches_push(
            &bad_regex,
            &push("registry.example", "team-a/api", "x")
        ));
    }

    #[test]
    fn docker_hub_names_are_one_registry() {
        let rule = spec("docker.io", "Namespace", "library", ".*", true);
        assert!(rule_matches_push(
            &rule,
            &push("index.docker.io", "library/nginx", "1")
        ));
    }

    #[test]
    fn coalescer_releases_one_batch_per_rule_after_the_window() {
        let start = Instant::now();
        let mut c = PushCoalescer::new(Duration::from_secs(3));
        for i in 0..10 {
            let at = start + Duration::from_millis(100 * i);
            c.add("rule-a", push("r", "team-a/api", &format!("v{i}")), at);
            c.add("rule-b", push("r", "team-a/api", &format!("v{i}")), at);
        }
        assert_eq!(c.next_due(), Some(start + Duration::from_secs(3)));
        assert!(c.take_due(start + Duration::from_millis(2999)).is_empty());
        let mut batches = c.take_due(start + Duration::from_secs(3));
        batches.sort_by_key(|b| b.rule);
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].rule, "rule-a");
        assert_eq!(batches[0].events.len(), 10);
        assert_eq!(batches[0].events[0].tag, "v0");
        assert!(c.is_empty());
    }

    #[test]
    fn coalescer_keeps_the_last_digest_of_a_repeated_tag() {
        let now = Instant::now();
        let mut c = PushCoalescer::new(Duration::from_secs(1));
        let mut first = push("r", "a/b", "latest");
        first.digest = "sha256:first".into();
        let mut second = first.clone();
        second.digest = "sha256:second".into();
        c.add(1, first, now);
        c.add(1, second, now);
        let batches = c.take_due(now + Duration::from_secs(1));
        assert_eq!(batches[0].events.len(), 1);
        assert_eq!(batches[0].events[0].digest, "sha256:second");
    }

    #[test]
    fn many_pending_pushes_cost_linear_time() {
        // 50 000 tags pending for one rule, then 50 000 rules whose windows open one after
        // the other and are released one at a time. A coalescer that compared each push
        // with every pending one, or looked at every rule for each release, would take
        // billions of steps here.
        const N: usize = 50_000;
        let start = Instant::now();
        let clock = std::time::Instant::now();
        let mut c = PushCoalescer::new(Duration::from_secs(1));
        for i in 0..N {
            c.add(0, push("r", "a/b", &format!("t{i}")), start);
        }
        for i in 1..=N {
            let at = start + Duration::from_micros(i as u64);
            c.add(i, push("r", "a/b", "v1"), at);
        }
        let mut batches = 0;
        let mut events = 0;
        while let Some(due) = c.next_due() {
            for batch in c.take_due(due) {
                batches += 1;
                events += batch.events.len();
            }
        }
        assert_eq!((batches, events), (N + 1, 2 * N));
        assert!(c.is_empty());
        let elapsed = clock.elapsed();
        assert!(
            elapsed < Duration::from_secs(5),
            "{N} pushes took {elapsed:?}"
        );
    }

    #[tokio::test]
    async fn coalesce_pushes_turns_a_burst_into_one_batch() {
        let (event_tx, event_rx) = mpsc::channel(64);
        let (batch_tx, mut batch_rx) = mpsc::channel(8);
        let task = tokio::spawn(coalesce_pushes(
            event_rx,
            Duration::from_millis(300),
            |e: &PushEvent| {
                if e.repository.starts_with("team-a/") {
                    vec!["rule-a"]
                } else {
                    vec![]
                }
            },
            batch_tx,
        ));
        for i in 0..10 {
            event_tx
                .send(push("r", "team-a/api", &format!("v{i}")))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        event_tx.send(push("r", "team-b/api", "v1")).await.unwrap();
        let batch = batch_rx.recv().await.unwrap();
        assert_eq!(batch.rule, "rule-a");
        assert_eq!(batch.events.len(), 10);
        drop(event_tx);
        assert!(batch_rx.recv().await.is_none());
        task.await.unwrap();
    }
}
