//! Closing a round: the barrier (every live participant contributed, or the sync timeout
//! passed with at least `min_workers`), the outer step, publishing the new θ, opening the next
//! round, and the submitters waiting for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::round::Round;
use super::{Coordinator, EngineError, Published, Shared, lock};
use crate::audit::AuditRecord;
use crate::outer_state::OuterState;

impl Coordinator {
    pub(super) fn ready_to_close(&self, shared: &Shared, now: Instant) -> bool {
        !shared.closing
            && shared.round.ready_to_close(
                self.config.training.min_workers,
                self.sync_timeout(),
                now,
            )
    }

    /// Runs the outer step, publishes θ and opens the next round. Needs the tensors lock.
    pub(super) fn close_round(&self, state: &mut OuterState) -> Result<(), EngineError> {
        let (optimizer, round, contributors) = {
            let mut shared = lock(&self.shared);
            shared.closing = true;
            (
                shared.optimizer,
                shared.round.number,
                shared.round.contributed.len(),
            )
        };
        let started = Instant::now();
        let report = state.step(&optimizer).map_err(|e| {
            lock(&self.shared).closing = false;
            EngineError::OuterStep(e)
        })?;
        let step_seconds = started.elapsed().as_secs_f64();
        let started = Instant::now();
        self.publish(state, round + 1);
        let publish_seconds = started.elapsed().as_secs_f64();
        let due = {
            let mut shared = lock(&self.shared);
            let participants = shared.roster.workers.keys().cloned().collect::<Vec<_>>();
            shared.round = Round::new(round + 1, participants);
            shared.closing = false;
            shared.last_outer_step_seconds = Some(step_seconds);
            shared.last_publish_seconds = Some(publish_seconds);
            self.update_gauges(&shared);
            let every = self.config.checkpoint.every_rounds;
            every > 0 && (round + 1) % every == 0
        };
        self.metrics.outer_steps.inc();
        self.metrics.outer_step_seconds.observe(step_seconds);
        self.audit(
            AuditRecord::new("outer_step")
                .round(round + 1)
                .details(serde_json::json!({
                    "contributors": contributors,
                    "seconds": step_seconds,
                    "publish_seconds": publish_seconds,
                    "parameters_without_contribution": report.missing.len(),
                })),
        );
        if report.missing.is_empty() {
            info!(round = round + 1, contributors, step_seconds, "outer step");
        } else {
            warn!(round = round + 1, contributors, missing = ?report.missing, "outer step with parameters nobody sent");
        }
        if due {
            self.save_checkpoint(state);
        }
        Ok(())
    }

    /// Closes the round if its barrier is met. Blocking (it may run the outer step).
    pub fn close_round_if_ready(&self) -> Result<(), EngineError> {
        let mut tensors = lock(&self.tensors);
        let Some(state) = tensors.as_mut() else {
            return Ok(());
        };
        let ready = self.ready_to_close(&lock(&self.shared), Instant::now());
        if ready {
            self.close_round(state)
        } else {
            Ok(())
        }
    }

    pub(super) fn close_round_if_ready_in_background(self: &Arc<Self>) {
        let ready = self.ready_to_close(&lock(&self.shared), Instant::now());
        if ready {
            let this = self.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(error) = this.close_round_if_ready() {
                    warn!(%error, "closing the round failed");
                }
            });
        }
    }

    /// Waits until a round after `round` has been published.
    pub async fn await_round_after(
        &self,
        round: u64,
        timeout: Duration,
    ) -> Result<Arc<Published>, EngineError> {
        let mut receiver = self.published.subscribe();
        let mut shutdown = self.shutdown.subscribe();
        let newer = receiver.wait_for(|p| p.as_ref().is_some_and(|p| p.round > round));
        tokio::select! {
            result = tokio::time::timeout(timeout, newer) => match result {
                Ok(Ok(published)) => published.clone().ok_or(EngineError::Uninitialized),
                Ok(Err(_)) => Err(EngineError::Stopped),
                Err(_) => Err(EngineError::RoundTimeout { round, waited: timeout }),
            },
            _ = shutdown.wait_for(|stop| *stop) => Err(EngineError::ShuttingDown),
        }
    }

    /// How long a submitter waits for its round before a 504.
    pub fn round_wait_timeout(&self) -> Duration {
        self.sync_timeout() + self.heartbeat_timeout() + Duration::from_secs(60)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::Run;
    use super::*;

    /// With `min_workers` contributions the round closes at the sync timeout without the
    /// missing worker; before it, it waits.
    #[tokio::test]
    async fn a_round_closes_at_the_sync_timeout_with_min_workers() {
        let run = Run::with_settings(&["w0", "w1"], |config| {
            config.training.sync_timeout_seconds = 1;
        });
        run.submit("w0", 0, 0.5).unwrap();
        run.engine.close_round_if_ready().unwrap();
        assert_eq!(run.status().sync_round, 0, "w1 may still come");
        std::thread::sleep(Duration::from_millis(1100));
        run.engine.close_round_if_ready().unwrap();
        assert_eq!(run.status().sync_round, 1);
        assert_eq!(
            run.status().waiting_for,
            vec!["w0", "w1"],
            "both are in the next round"
        );
    }

    /// A waiting submitter is released by a shutdown (to retry after the restart) and by its
    /// timeout, with the round it waited for.
    #[tokio::test]
    async fn waiting_for_a_round_ends_at_shutdown_or_timeout() {
        let run = Run::with_workers(&["w0"]);
        let timed_out = run
            .engine
            .await_round_after(0, Duration::from_millis(50))
            .await;
        assert!(matches!(
            timed_out,
            Err(EngineError::RoundTimeout { round: 0, .. })
        ));
        let engine = run.engine.clone();
        let waiting =
            tokio::spawn(async move { engine.await_round_after(0, Duration::from_secs(60)).await });
        run.engine.request_shutdown();
        assert!(matches!(
            waiting.await.unwrap(),
            Err(EngineError::ShuttingDown)
        ));
    }

    /// A failed outer step would leave `closing` set and the round stuck; a step that ran
    /// advances the round and records its duration.
    #[tokio::test]
    async fn closing_a_round_opens_the_next_and_records_the_step() {
        let run = Run::with_workers(&["w0"]);
        run.submit("w0", 0, 0.5).unwrap();
        run.wait_for_round(1).await;
        let status = run.status();
        assert_eq!(status.sync_round, 1);
        assert!(status.last_outer_step_seconds.is_some());
        assert!(status.pending_submissions.is_empty());
    }
}
