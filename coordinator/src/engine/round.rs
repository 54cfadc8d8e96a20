//! One sync round's membership and its barrier.
//!
//! A round's *participants* are the workers it waits for: everyone registered when it opened,
//! plus workers that register while it is still *open to joiners* (no upload folded yet, or
//! fewer than `min_workers` folded). Any registered worker may contribute; the round closes
//! when every live participant has contributed, or when the sync timeout has passed since its
//! first contribution — and in both cases only with at least `min_workers` contributions.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Membership and progress of the current round.
#[derive(Clone, Debug, Default)]
pub struct Round {
    /// Outer steps completed before this round (θ's version).
    pub number: u64,
    /// Workers this round waits for.
    pub participants: BTreeSet<String>,
    /// Workers whose upload has been folded in.
    pub contributed: BTreeSet<String>,
    /// When the first upload was folded in (the sync timeout counts from here).
    pub first_contribution: Option<Instant>,
}

impl Round {
    /// A round numbered `number` waiting for `participants`.
    pub fn new(number: u64, participants: impl IntoIterator<Item = String>) -> Self {
        Self {
            number,
            participants: participants.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Whether a worker registering now should be waited for in this round.
    pub fn open_to_joiners(&self, min_workers: usize) -> bool {
        self.contributed.is_empty() || self.contributed.len() < min_workers
    }

    /// Records a folded upload.
    pub fn record_contribution(&mut self, worker_id: &str, now: Instant) {
        self.contributed.insert(worker_id.to_string());
        self.first_contribution.get_or_insert(now);
    }

    /// A worker left (deregistered, evicted, kicked): stop waiting for it.
    pub fn forget(&mut self, worker_id: &str) {
        self.participants.remove(worker_id);
    }

    /// Participants that have not contributed yet.
    pub fn waiting_for(&self) -> impl Iterator<Item = &String> {
        self.participants.difference(&self.contributed)
    }

    /// Whether the round may close now.
    pub fn ready_to_close(&self, min_workers: usize, sync_timeout: Duration, now: Instant) -> bool {
        let Some(first) = self.first_contribution else {
            return false;
        };
        if self.contributed.len() < min_workers.max(1) {
            return false;
        }
        self.waiting_for().next().is_none() || now.duration_since(first) >= sync_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(60);

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn closes_when_every_participant_contributed() {
        let now = Instant::now();
        let mut round = Round::new(0, ids(&["a", "b"]));
        assert!(
            !round.ready_to_close(1, TIMEOUT, now),
            "nothing contributed yet"
        );
        round.record_contribution("a", now);
        assert!(
            !round.ready_to_close(1, TIMEOUT, now),
            "still waiting for b"
        );
        round.record_contribution("b", now);
        assert!(round.ready_to_close(1, TIMEOUT, now));
    }

    #[test]
    fn a_departed_participant_releases_the_barrier() {
        let now = Instant::now();
        let mut round = Round::new(3, ids(&["a", "b"]));
        round.record_contribution("a", now);
        round.forget("b");
        assert!(round.ready_to_close(1, TIMEOUT, now));
    }

    #[test]
    fn sync_timeout_closes_with_enough_contributions_only() {
        let start = Instant::now();
        let mut round = Round::new(0, ids(&["a", "b", "c"]));
        round.record_contribution("a", start);
        let later = start + TIMEOUT;
        assert!(
            !round.ready_to_close(2, TIMEOUT, later),
            "1 of min 2 after the timeout"
        );
        round.record_contribution("b", start);
        assert!(round.ready_to_close(2, TIMEOUT, later));
        assert!(!round.ready_to_close(2, TIMEOUT, start + TIMEOUT / 2));
    }

    #[test]
    fn min_workers_holds_the_round_open_for_joiners() {
        let now = Instant::now();
        let mut round = Round::new(0, ids(&["a"]));
        round.record_contribution("a", now);
        assert!(
            !round.ready_to_close(2, TIMEOUT, now),
            "all participants in, but below min"
        );
        assert!(round.open_to_joiners(2));
        assert!(
            !round.open_to_joiners(1),
            "a round with contributions is closed to joiners"
        );
        round.participants.insert("b".into());
        round.record_contribution("b", now);
        assert!(round.ready_to_close(2, TIMEOUT, now));
    }
}
