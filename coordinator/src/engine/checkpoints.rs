//! Checkpoints of the run: θ, momentum, round, roster and optimizer settings, written every
//! `checkpoint.every_rounds`, on request and at shutdown ([`crate::checkpoint`] does the
//! file), and the state a restart resumes from.

use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use super::roster::{Roster, Worker};
use super::round::Round;
use super::run_stats::RunStats;
use super::work_units::{DEFAULT_UNITS, WorkQueues};
use super::{Coordinator, lock};
use crate::checkpoint::{self, CheckpointMeta, Loaded, RosterEntry};
use crate::model::ModelLayout;
use crate::outer_optimizer::OuterOptimizer;
use crate::outer_state::OuterState;

/// What a checkpoint restores.
pub(super) struct Resumed {
    pub optimizer: OuterOptimizer,
    pub roster: Roster,
    pub round: Round,
    pub state: OuterState,
    pub work: WorkQueues,
    pub stats: RunStats,
}

/// The run as a checkpoint left it: its workers are registered again (as `restored`, so they
/// may register anew and are evicted if they never come back) and take part in its round.
pub(super) fn resume(loaded: Loaded, device: tch::Device, now: Instant) -> Resumed {
    let layout = Arc::new(loaded.layout);
    let mut roster = Roster::default();
    for entry in &loaded.meta.roster {
        let required = required_params(&layout, entry.slice.as_deref());
        let mut worker = Worker::new(Arc::new(required), now);
        worker.hostname = entry.hostname.clone();
        worker.output_dir = entry.output_dir.clone();
        worker.owner = entry.owner.clone();
        worker.restored = true;
        roster.insert(&entry.worker_id, worker);
    }
    let round = Round::new(loaded.meta.round, roster.workers.keys().cloned());
    info!(
        path = %loaded.path.display(),
        round = loaded.meta.round,
        workers = loaded.meta.roster.len(),
        "resumed from checkpoint"
    );
    let (work, skipped) = WorkQueues::restore(DEFAULT_UNITS, loaded.meta.work_queues);
    if !skipped.is_empty() {
        warn!(queues = ?skipped, "work queues with damaged bitmaps were not restored");
    }
    let stats = RunStats::restore(loaded.meta.stats);
    let state = OuterState::restore(
        layout,
        &loaded.theta,
        &loaded.momentum,
        loaded.momentum_ready,
        device,
    );
    Resumed {
        optimizer: loaded.meta.optimizer,
        roster,
        round,
        state,
        work,
        stats,
    }
}

/// The parameter indices named by `names` (all when `None`), skipping unknown names.
fn required_params(layout: &ModelLayout, names: Option<&[String]>) -> Vec<usize> {
    match names {
        None => (0..layout.params().len()).collect(),
        Some(names) => names.iter().filter_map(|n| layout.index_of(n)).collect(),
    }
}

impl Coordinator {
    /// Writes a checkpoint if a directory is configured; failures are logged and counted.
    pub(super) fn save_checkpoint(&self, state: &OuterState) -> Option<u64> {
        let dir = self.config.checkpoint.dir.as_ref()?;
        let meta = {
            let shared = lock(&self.shared);
            CheckpointMeta {
                round: shared.round.number,
                optimizer: shared.optimizer,
                roster: shared
                    .roster
                    .workers
                    .iter()
                    .map(|(id, w)| RosterEntry {
                        worker_id: id.clone(),
                        hostname: w.hostname.clone(),
                        output_dir: w.output_dir.clone(),
                        owner: w.owner.clone(),
                        slice: (w.required.len() != state.layout().params().len()).then(|| {
                            w.required
                                .iter()
                                .map(|p| state.layout().params()[*p].name.clone())
                                .collect()
                        }),
                    })
                    .collect(),
                work_queues: lock(&self.work).save(),
                stats: shared.stats.save(),
            }
        };
        let started = Instant::now();
        match checkpoint::save(dir, state, &meta, self.config.checkpoint.keep) {
            Ok(path) => {
                self.metrics.checkpoints_saved.inc();
                lock(&self.shared).last_checkpoint_round = Some(meta.round);
                info!(path = %path.display(), round = meta.round, seconds = started.elapsed().as_secs_f64(), "checkpoint saved");
                Some(meta.round)
            }
            Err(error) => {
                self.metrics.checkpoint_failures.inc();
                warn!(%error, "checkpoint failed");
                None
            }
        }
    }

    /// Saves a checkpoint now (shutdown, `/control/save_state`). Blocking.
    pub fn checkpoint_now(&self) -> Option<u64> {
        let tensors = lock(&self.tensors);
        self.save_checkpoint(tensors.as_ref()?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::Run;
    use super::*;
    use crate::identity::Caller;

    /// A checkpoint written when a round closes brings back θ, the round, the optimizer
    /// settings and the roster (owners included) after a restart; its workers are `restored`
    /// and may register again.
    #[tokio::test]
    async fn a_restart_resumes_the_checkpointed_round_roster_and_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let run = Run::with_settings(&["w0"], |config| {
            config.checkpoint.dir = Some(dir.path().to_path_buf());
            config.checkpoint.every_rounds = 1;
            config.training.outer_optimizer.lr = 0.5;
        });
        run.submit("w0", 0, 1.0).unwrap();
        let published = run.wait_for_round(1).await;
        assert_eq!(run.status().last_checkpoint_round, Some(1));

        let loaded = checkpoint::load_latest(dir.path()).unwrap().unwrap();
        let restarted = Run::resumed(run.config.clone(), loaded);
        let status = restarted.status();
        assert_eq!(status.sync_round, 1);
        assert_eq!(status.outer_lr, 0.5);
        assert!(status.workers["w0"].restored);
        let current = restarted.engine.current().unwrap();
        assert_eq!(restarted.theta_of(&current), run.theta_of(&published));
        let again = restarted
            .engine
            .register(
                super::super::test_support::registration("w0"),
                &Caller::worker_token(),
            )
            .await;
        assert!(
            again.is_ok(),
            "a restored worker registers again: {again:?}"
        );
        assert!(
            restarted
                .engine
                .register(
                    super::super::test_support::registration("w0"),
                    &Caller::admin_token()
                )
                .await
                .is_err(),
            "but only its owner"
        );
    }

    /// Without a checkpoint directory nothing is written and `save_state` reports it.
    #[test]
    fn without_a_directory_no_checkpoint_is_written() {
        let run = Run::with_workers(&["w0"]);
        assert_eq!(run.engine.checkpoint_now(), None);
    }
}
