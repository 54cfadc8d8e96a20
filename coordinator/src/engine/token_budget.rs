//! The token budget (forgather #224, reference §1.11): once the run's `total_tokens` reaches
//! it, every registered worker is told `save_and_stop`, once. The guard is not saved, so a
//! coordinator restarted over budget tells them again (as forgather does). 0 disables it;
//! raising it above the total clears the guard; lowering it to or below the total stops now.
//!
//! Unlike forgather, the coordinator does not then drain and exit: it keeps serving, so the
//! workers' final checkpoints and deregistrations still reach it.

use std::sync::atomic::Ordering;
use std::time::Instant;

use diloco_contract::api::{
    RelayedCommand, ReplyStatus, TokenBudgetUpdated, TokenProgress, UpdateTokenBudgetRequest,
};
use serde_json::json;
use tracing::info;

use super::roster::PendingCommand;
use super::run_stats::RATE_WINDOW;
use super::{Coordinator, Shared, lock};
use crate::audit::AuditRecord;

impl Coordinator {
    /// Tells every worker `save_and_stop` if the run just reached its budget.
    pub(super) fn check_token_budget(&self, shared: &mut Shared) {
        let tokens = shared.stats.totals().tokens;
        let budget = shared.token_budget;
        if budget == 0 || shared.budget_stop_sent || tokens < budget as f64 {
            return;
        }
        shared.budget_stop_sent = true;
        let pending = PendingCommand {
            id: self.next_command_id.fetch_add(1, Ordering::Relaxed),
            command: RelayedCommand::SaveAndStop,
        };
        let mut told = Vec::new();
        for (id, worker) in &mut shared.roster.workers {
            worker.command = Some(pending);
            told.push(id.clone());
        }
        info!(
            tokens,
            budget,
            workers = told.len(),
            "token budget reached: save_and_stop sent"
        );
        self.audit(
            AuditRecord::new("token_budget_reached")
                .round(shared.round.number)
                .details(json!({"total_tokens": tokens, "token_budget": budget, "workers": told})),
        );
    }

    /// `/control/update_token_budget`.
    pub(super) fn update_token_budget(
        &self,
        request: UpdateTokenBudgetRequest,
    ) -> TokenBudgetUpdated {
        let mut shared = lock(&self.shared);
        shared.token_budget = request.token_budget;
        if request.token_budget == 0 || shared.stats.totals().tokens < request.token_budget as f64 {
            shared.budget_stop_sent = false;
        }
        self.check_token_budget(&mut shared);
        TokenBudgetUpdated {
            status: ReplyStatus::Ok,
            token_budget: shared.token_budget,
            budget_stop_sent: shared.budget_stop_sent,
        }
    }

    /// `/status`'s `token_progress`, when there is a budget.
    pub(super) fn token_progress(&self, shared: &Shared) -> Option<TokenProgress> {
        let budget = shared.token_budget;
        if budget == 0 {
            return None;
        }
        let tokens = shared.stats.totals().tokens;
        let rate = shared.stats.tokens_per_second(Instant::now());
        let remaining = (budget as f64 - tokens).max(0.0);
        Some(TokenProgress {
            tokens_completed: tokens,
            token_budget: budget,
            fraction: (tokens / budget as f64).min(1.0),
            rate_window_seconds: RATE_WINDOW.as_secs_f64(),
            tokens_per_second: rate,
            eta_seconds: rate.filter(|r| *r > 0.0).map(|r| remaining / r),
            budget_stop_sent: shared.budget_stop_sent,
        })
    }
}

#[cfg(test)]
mod tests {
    use diloco_contract::api::{ControlReply, ControlRequest, HeartbeatRequest};

    use super::super::test_support::Run;
    use super::*;
    use crate::identity::Caller;

    fn beat(run: &Run, worker_id: &str, tokens: u64) -> Option<RelayedCommand> {
        let request = HeartbeatRequest {
            worker_id: worker_id.into(),
            stats: Some(json!({"tokens_total": tokens})),
            ..HeartbeatRequest::default()
        };
        run.engine
            .heartbeat(request, &Caller::worker_token())
            .unwrap()
            .command
    }

    fn set(run: &Run, budget: u64) -> TokenBudgetUpdated {
        let reply = run
            .engine
            .control(ControlRequest::UpdateTokenBudget(
                UpdateTokenBudgetRequest {
                    token_budget: budget,
                },
            ))
            .unwrap();
        match reply {
            ControlReply::TokenBudgetUpdated(updated) => updated,
            other => panic!("{other:?}"),
        }
    }

    /// Reaching the budget (from heartbeat statistics) relays `save_and_stop` to every worker
    /// on its next heartbeat, exactly once.
    #[tokio::test]
    async fn reaching_the_budget_stops_every_worker_once() {
        let run = Run::with_settings(&["a", "b"], |c| c.training.token_budget = 1000);
        assert_eq!(beat(&run, "a", 600), None);
        assert_eq!(beat(&run, "b", 300), None);
        assert_eq!(
            beat(&run, "a", 700),
            None,
            "the stop rides the next heartbeat"
        );
        assert_eq!(beat(&run, "a", 800), Some(RelayedCommand::SaveAndStop));
        assert_eq!(beat(&run, "b", 400), Some(RelayedCommand::SaveAndStop));
        assert_eq!(beat(&run, "a", 900), None, "once");
        let progress = run.status().token_progress.unwrap();
        assert_eq!(progress.fraction, 1.0, "clamped");
        assert!(progress.budget_stop_sent);
    }

    /// Lowering the budget below the total stops now; 0 disables; raising it clears the guard.
    #[tokio::test]
    async fn the_budget_changes_at_run_time() {
        let run = Run::with_workers(&["a"]);
        assert_eq!(run.status().token_progress, None, "no budget, no gauge");
        beat(&run, "a", 500);
        assert!(set(&run, 400).budget_stop_sent, "below the total: stop now");
        assert_eq!(beat(&run, "a", 500), Some(RelayedCommand::SaveAndStop));
        let disabled = set(&run, 0);
        assert!(!disabled.budget_stop_sent);
        assert_eq!(run.status().token_progress, None);
        let raised = set(&run, 2000);
        assert!(!raised.budget_stop_sent);
        let progress = run.status().token_progress.unwrap();
        assert_eq!(progress.fraction, 0.25);
        assert_eq!(progress.tokens_per_second, None, "only the catch-up so far");
        assert_eq!(progress.eta_seconds, None);
        beat(&run, "a", 2000);
        assert_eq!(beat(&run, "a", 2000), Some(RelayedCommand::SaveAndStop));
    }
}
