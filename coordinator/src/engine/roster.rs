//! Who is registered, what they reported, and who ever was (forgather's `known_workers`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diloco_contract::api::RelayedCommand;
use jiff::Timestamp;

/// A worker's `sync_state` keys kept (finite numbers only), as forgather whitelists them.
pub const SYNC_STATE_KEYS: &[&str] = &[
    "sync_count",
    "last_sync_time",
    "total_sync_time",
    "last_send_mb",
    "last_recv_mb",
    "sync_every",
];

/// Worker-reported statistics kept (finite numbers only), as forgather whitelists them.
pub const STAT_KEYS: &[&str] = &[
    "tokens_total",
    "flos_total",
    "step_total",
    "tokens_window",
    "loss",
    "grad_norm",
    "tok_per_sec",
    "mfu",
    "peak_mem",
    "eval_loss",
    "eval_step",
];

/// Most entries kept in the known-workers history.
const KNOWN_WORKERS_CAP: usize = 10_000;

/// A relayed command and its id (what the worker acknowledges).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingCommand {
    /// Unique and growing, also across restarts.
    pub id: u64,
    /// The command.
    pub command: RelayedCommand,
}

/// A registered worker.
#[derive(Clone, Debug)]
pub struct Worker {
    /// Hostname it reported.
    pub hostname: Option<String>,
    /// Its output directory, as reported.
    pub output_dir: Option<String>,
    /// Free-form `extra` from its registration.
    pub extra: Option<serde_json::Value>,
    /// When it registered.
    pub registered_at: Timestamp,
    /// When it last sent a heartbeat.
    pub last_heartbeat: Timestamp,
    /// When it was last heard from (any request): the eviction clock.
    pub last_seen: Instant,
    /// Inner steps per second it reported.
    pub steps_per_second: Option<f64>,
    /// Latest whitelisted statistics.
    pub stats: BTreeMap<String, f64>,
    /// Latest whitelisted synchronisation bookkeeping.
    pub sync_state: BTreeMap<String, f64>,
    /// Parameters its uploads must carry (its slice; all of them by default).
    pub required: Arc<Vec<usize>>,
    /// Round of its last folded upload.
    pub last_sync_round: Option<u64>,
    /// A command waiting to ride its heartbeat replies until it is acknowledged.
    pub command: Option<PendingCommand>,
    /// Restored from a checkpoint and not heard from since the restart.
    pub restored: bool,
    /// The identity that registered it (`worker-token`, `cert:<CN>`, …); only it may act for
    /// the worker. `None` for a worker restored from a checkpoint written before owners were
    /// recorded: its next registration claims it.
    pub owner: Option<String>,
}

impl Worker {
    /// A worker registering now.
    pub fn new(required: Arc<Vec<usize>>, now: Instant) -> Self {
        let at = Timestamp::now();
        Self {
            hostname: None,
            output_dir: None,
            extra: None,
            registered_at: at,
            last_heartbeat: at,
            last_seen: now,
            steps_per_second: None,
            stats: BTreeMap::new(),
            sync_state: BTreeMap::new(),
            required,
            last_sync_round: None,
            command: None,
            restored: false,
            owner: None,
        }
    }

    /// Notes that the worker was heard from.
    pub fn touch(&mut self, now: Instant) {
        self.last_seen = now;
        self.restored = false;
    }

    /// Keeps the whitelisted, finite numbers of a stats object.
    pub fn record_stats(&mut self, stats: &serde_json::Value) {
        keep_finite(&mut self.stats, stats, STAT_KEYS);
    }

    /// Keeps the whitelisted, finite numbers of a `sync_state` object.
    pub fn record_sync_state(&mut self, sync_state: &serde_json::Value) {
        keep_finite(&mut self.sync_state, sync_state, SYNC_STATE_KEYS);
    }
}

/// Copies `keys`' finite numbers from the object `reported` into `kept`; anything else
/// (other keys, strings, booleans, NaN, a non-object) is dropped.
fn keep_finite(kept: &mut BTreeMap<String, f64>, reported: &serde_json::Value, keys: &[&str]) {
    let Some(map) = reported.as_object() else {
        return;
    };
    for key in keys {
        if let Some(v) = map
            .get(*key)
            .filter(|v| v.is_number())
            .and_then(serde_json::Value::as_f64)
            .filter(|v| v.is_finite())
        {
            kept.insert((*key).to_string(), v);
        }
    }
}

/// An entry of the known-workers history.
#[derive(Clone, Debug, PartialEq)]
pub struct KnownWorker {
    /// Its output directory.
    pub output_dir: Option<String>,
    /// When it last registered.
    pub last_registered: Timestamp,
    /// Registered right now.
    pub running: bool,
}

/// Registered workers and the history of every worker seen.
#[derive(Clone, Debug, Default)]
pub struct Roster {
    /// Registered workers by id.
    pub workers: BTreeMap<String, Worker>,
    /// Every worker ever registered (bounded), for `/known_workers`.
    pub known: BTreeMap<String, KnownWorker>,
}

impl Roster {
    /// Adds (or replaces) a registered worker.
    pub fn insert(&mut self, worker_id: &str, worker: Worker) {
        if self.known.len() >= KNOWN_WORKERS_CAP
            && !self.known.contains_key(worker_id)
            && let Some(oldest) = self
                .known
                .iter()
                .filter(|(_, k)| !k.running)
                .min_by_key(|(_, k)| k.last_registered)
                .map(|(id, _)| id.clone())
        {
            self.known.remove(&oldest);
        }
        self.known.insert(
            worker_id.to_string(),
            KnownWorker {
                output_dir: worker.output_dir.clone(),
                last_registered: worker.registered_at,
                running: true,
            },
        );
        self.workers.insert(worker_id.to_string(), worker);
    }

    /// Removes a worker; returns whether it was registered.
    pub fn remove(&mut self, worker_id: &str) -> bool {
        if let Some(known) = self.known.get_mut(worker_id) {
            known.running = false;
        }
        self.workers.remove(worker_id).is_some()
    }

    /// Workers not heard from within `timeout`.
    pub fn stale(&self, timeout: Duration, now: Instant) -> Vec<String> {
        self.workers
            .iter()
            .filter(|(_, w)| now.duration_since(w.last_seen) >= timeout)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_workers_are_found_by_last_seen() {
        let start = Instant::now();
        let mut roster = Roster::default();
        roster.insert("a", Worker::new(Arc::new(vec![]), start));
        roster.insert(
            "b",
            Worker::new(Arc::new(vec![]), start + Duration::from_secs(5)),
        );
        assert_eq!(
            roster.stale(Duration::from_secs(10), start + Duration::from_secs(12)),
            ["a"]
        );
    }

    #[test]
    fn removed_workers_stay_known_but_not_running() {
        let mut roster = Roster::default();
        roster.insert("a", Worker::new(Arc::new(vec![]), Instant::now()));
        assert!(roster.remove("a"));
        assert!(!roster.remove("a"));
        assert!(!roster.known["a"].running);
    }

    #[test]
    fn only_whitelisted_finite_stats_are_kept() {
        let mut worker = Worker::new(Arc::new(vec![]), Instant::now());
        worker.record_stats(
            &serde_json::json!({"loss": 1.5, "grad_norm": "x", "secret": 3, "mfu": 0.3}),
        );
        assert_eq!(worker.stats.len(), 2);
        assert_eq!(worker.stats["loss"], 1.5);
    }
}
