//! Scan requests and their reports, in memory: at most `max_entries` at once, finished
//! reports kept for `ttl` and at most `max_bytes` of them; the oldest finished ones make
//! room for new requests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::api::Produces;

/// The reports of one finished scan, as served (JSON bytes).
#[derive(Debug, Clone, Default)]
pub struct Reports {
    pub vulnerability: Option<Vec<u8>>,
    pub sbom: Option<Vec<u8>>,
}

impl Reports {
    fn bytes(&self) -> u64 {
        (self.vulnerability.as_ref().map_or(0, Vec::len) + self.sbom.as_ref().map_or(0, Vec::len))
            as u64
    }
}

/// Where a scan is.
#[derive(Debug, Clone)]
pub enum State {
    /// Waiting for a worker, or being scanned.
    Pending,
    Done(std::sync::Arc<Reports>),
    /// The message served with status 500.
    Failed(String),
}

#[derive(Debug)]
struct Entry {
    state: State,
    produces: Produces,
    /// When the scan finished (the TTL counts from here).
    finished: Option<Instant>,
    bytes: u64,
}

/// Why a request was not stored.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

/// The scans the server knows of.
#[derive(Debug)]
pub struct Store {
    entries: Mutex<HashMap<String, Entry>>,
    ttl: Duration,
    max_entries: usize,
    max_bytes: u64,
}

impl Store {
    pub fn new(ttl: Duration, max_entries: usize, max_bytes: u64) -> Self {
        Store {
            entries: Mutex::new(HashMap::new()),
            ttl,
            max_entries: max_entries.max(1),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops expired reports, then the oldest finished ones while there are more than
    /// `max_entries - room` entries or more than `max_bytes` bytes.
    fn evict(&self, entries: &mut HashMap<String, Entry>, room: usize) {
        let now = Instant::now();
        entries.retain(|_, e| {
            e.finished
                .is_none_or(|at| now.duration_since(at) < self.ttl)
        });
        let mut bytes: u64 = entries.values().map(|e| e.bytes).sum();
        while entries.len() + room > self.max_entries || bytes > self.max_bytes {
            let oldest = entries
                .iter()
                .filter_map(|(id, e)| e.finished.map(|at| (at, id.clone())))
                .min();
            let Some((_, id)) = oldest else { break };
            if let Some(e) = entries.remove(&id) {
                bytes -= e.bytes;
            }
        }
    }

    /// Records a new pending scan; [`Full`] when `max_entries` scans are pending.
    pub fn insert(&self, id: &str, produces: Produces) -> Result<(), Full> {
        let mut entries = self.lock();
        self.evict(&mut entries, 1);
        if entries.len() >= self.max_entries {
            return Err(Full);
        }
        entries.insert(
            id.to_string(),
            Entry {
                state: State::Pending,
                produces,
                finished: None,
                bytes: 0,
            },
        );
        Ok(())
    }

    /// Forgets a scan (one that could not be queued).
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Records the reports of a finished scan. Reports larger than `max_bytes` together
    /// are not kept: the scan fails with a message saying so.
    pub fn finish(&self, id: &str, result: Result<Reports, String>) {
        let state = match result {
            Ok(reports) if reports.bytes() > self.max_bytes => State::Failed(format!(
                "the report has {} bytes, more than the server keeps (--max-report-bytes {})",
                reports.bytes(),
                self.max_bytes
            )),
            Ok(reports) => State::Done(std::sync::Arc::new(reports)),
            Err(message) => State::Failed(message),
        };
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(id) else {
            return;
        };
        entry.bytes = match &state {
            State::Done(r) => r.bytes(),
            State::Failed(m) => m.len() as u64,
            State::Pending => 0,
        };
        entry.state = state;
        entry.finished = Some(Instant::now());
        // Room for this report is made by dropping older ones (never this one: it is the
        // newest finished, and alone within max_bytes).
        self.evict(&mut entries, 0);
    }

    /// The state of a scan and what it was asked to produce; `None` for an unknown (or
    /// expired) id.
    pub fn get(&self, id: &str) -> Option<(State, Produces)> {
        let mut entries = self.lock();
        self.evict(&mut entries, 0);
        entries.get(id).map(|e| (e.state.clone(), e.produces))
    }

    /// Scans pending and finished reports kept.
    pub fn counts(&self) -> (usize, usize) {
        let entries = self.lock();
        let pending = entries.values().filter(|e| e.finished.is_none()).count();
        (pending, entries.len() - pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: Produces = Produces {
        vulnerability: true,
        sbom: true,
    };

    fn done(n: usize) -> Result<Reports, String> {
        Ok(Reports {
            vulnerability: Some(vec![b'x'; n]),
            sbom: None,
        })
    }

    #[test]
    fn the_oldest_finished_reports_make_room() {
        let store = Store::new(Duration::from_secs(60), 2, 1000);
        store.insert("a", BOTH).unwrap();
        store.insert("b", BOTH).unwrap();
        assert_eq!(store.insert("c", BOTH), Err(Full), "two pending fill it");
        store.finish("a", done(10));
        store.insert("c", BOTH).unwrap();
        assert!(store.get("a").is_none(), "the finished one gave way");
        assert!(matches!(store.get("b"), Some((State::Pending, _))));
    }

    #[test]
    fn bytes_are_bounded_and_an_oversized_report_fails() {
        let store = Store::new(Duration::from_secs(60), 10, 100);
        for id in ["a", "b", "c"] {
            store.insert(id, BOTH).unwrap();
        }
        store.finish("a", done(60));
        store.finish("b", done(60));
        assert!(store.get("a").is_none(), "a made room for b");
        assert!(matches!(store.get("b"), Some((State::Done(_), _))));
        store.finish("c", done(101));
        match store.get("c") {
            Some((State::Failed(m), _)) => assert!(m.contains("--max-report-bytes"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reports_expire() {
        let store = Store::new(Duration::from_millis(0), 10, 100);
        store.insert("a", BOTH).unwrap();
        store.finish("a", done(1));
        assert!(store.get("a").is_none());
        assert_eq!(store.counts(), (0, 0));
    }
}
