//! `/control/<action>`: admin actions on a running coordinator.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use diloco_contract::api::{
    CommandQueued, CommandRequest, ControlReply, ControlRequest, NumWorkersUpdated,
    OptimizerUpdated, ReplyStatus, SavedState, ShuttingDown, UpdateOptimizerRequest, WorkerKicked,
};
use tracing::info;

use super::roster::PendingCommand;
use super::{Coordinator, Departure, EngineError, lock};

impl Coordinator {
    /// Runs a control action. Blocking (`save_state` writes a checkpoint).
    pub fn control(self: &Arc<Self>, request: ControlRequest) -> Result<ControlReply, EngineError> {
        info!(action = request.action().name(), "control action");
        let ok = ReplyStatus::Ok;
        Ok(match request {
            ControlRequest::SaveState => {
                let round = self.checkpoint_now().ok_or(EngineError::NoCheckpoint)?;
                ControlReply::SavedState(SavedState {
                    status: ok,
                    sync_round: round,
                })
            }
            ControlRequest::KickWorker(target) => {
                // The route already required an admin, who may remove anyone.
                if !self.remove_worker(&target.worker_id, Departure::Kicked, None)? {
                    return Err(EngineError::UnknownWorker(target.worker_id));
                }
                self.close_round_if_ready_in_background();
                ControlReply::WorkerKicked(WorkerKicked {
                    status: ok,
                    worker_id: target.worker_id,
                })
            }
            ControlRequest::UpdateOptimizer(update) => {
                ControlReply::OptimizerUpdated(self.update_optimizer(update)?)
            }
            ControlRequest::UpdateNumWorkers(update) => {
                let min = self.config.training.min_workers;
                if update.num_workers < min as u64 {
                    return Err(EngineError::BadRequest(format!(
                        "num_workers must be at least min_workers ({min})"
                    )));
                }
                lock(&self.shared).num_workers =
                    usize::try_from(update.num_workers).unwrap_or(usize::MAX);
                ControlReply::NumWorkersUpdated(NumWorkersUpdated {
                    status: ok,
                    num_workers: update.num_workers,
                })
            }
            ControlRequest::Command(command) => ControlReply::CommandQueued(self.queue(command)?),
            ControlRequest::UpdateTokenBudget(update) => {
                ControlReply::TokenBudgetUpdated(self.update_token_budget(update))
            }
            ControlRequest::Shutdown => {
                self.request_shutdown();
                ControlReply::ShuttingDown(ShuttingDown {
                    status: ok,
                    message: "Shutting down".into(),
                })
            }
        })
    }

    fn update_optimizer(
        &self,
        update: UpdateOptimizerRequest,
    ) -> Result<OptimizerUpdated, EngineError> {
        let UpdateOptimizerRequest { lr, momentum } = update;
        if lr.is_none() && momentum.is_none() {
            return Err(EngineError::BadRequest("give lr and/or momentum".into()));
        }
        if lr.is_some_and(|v| !(v.is_finite() && v >= 0.0))
            || momentum.is_some_and(|v| !(0.0..=1.0).contains(&v))
        {
            return Err(EngineError::BadRequest(
                "lr must be >= 0 and momentum within [0, 1]".into(),
            ));
        }
        let mut shared = lock(&self.shared);
        if let Some(lr) = lr {
            shared.optimizer.lr = lr;
        }
        if let Some(momentum) = momentum {
            shared.optimizer.momentum = momentum;
        }
        Ok(OptimizerUpdated {
            status: ReplyStatus::Ok,
            lr: shared.optimizer.lr,
            momentum: shared.optimizer.momentum,
        })
    }

    /// Queues a command for one worker or (no id, `""` or `"*"`) all; it replaces a command
    /// still pending for them, under a new id.
    fn queue(&self, request: CommandRequest) -> Result<CommandQueued, EngineError> {
        let target = request
            .worker_id
            .filter(|w| !w.is_empty() && w.as_str() != "*");
        let mut shared = lock(&self.shared);
        let ids: Vec<String> = match target {
            Some(id) if !shared.roster.workers.contains_key(&id) => {
                return Err(EngineError::UnknownWorker(id));
            }
            Some(id) => vec![id],
            None => shared.roster.workers.keys().cloned().collect(),
        };
        let pending = PendingCommand {
            id: self.next_command_id.fetch_add(1, Ordering::Relaxed),
            command: request.command,
        };
        for id in &ids {
            if let Some(worker) = shared.roster.workers.get_mut(id) {
                worker.command = Some(pending);
            }
        }
        Ok(CommandQueued {
            status: ReplyStatus::Ok,
            command: request.command,
            workers: ids,
        })
    }
}

#[cfg(test)]
mod tests {
    use diloco_contract::api::{RelayedCommand, UpdateNumWorkersRequest, WorkerRef};

    use super::super::test_support::Run;
    use super::*;

    /// A broadcast reaches every registered worker; an unknown target is refused.
    #[tokio::test]
    async fn a_command_goes_to_one_worker_or_all() {
        let run = Run::with_workers(&["w0", "w1"]);
        let all = run
            .engine
            .control(ControlRequest::Command(CommandRequest {
                command: RelayedCommand::SaveCheckpoint,
                worker_id: Some("*".into()),
            }))
            .unwrap();
        assert!(matches!(all, ControlReply::CommandQueued(q) if q.workers == ["w0", "w1"]));
        let unknown = run.engine.control(ControlRequest::Command(CommandRequest {
            command: RelayedCommand::Abort,
            worker_id: Some("ghost".into()),
        }));
        assert!(matches!(unknown, Err(EngineError::UnknownWorker(_))));
    }

    /// Optimizer and worker-count updates are bounded; a kick removes the worker.
    #[tokio::test]
    async fn control_actions_check_their_bounds() {
        let run = Run::with_workers(&["w0"]);
        let control = |request| run.engine.control(request);
        assert!(matches!(
            control(ControlRequest::UpdateOptimizer(
                UpdateOptimizerRequest::default()
            )),
            Err(EngineError::BadRequest(_))
        ));
        assert!(matches!(
            control(ControlRequest::UpdateOptimizer(UpdateOptimizerRequest {
                lr: None,
                momentum: Some(1.5)
            })),
            Err(EngineError::BadRequest(_))
        ));
        let updated = control(ControlRequest::UpdateOptimizer(UpdateOptimizerRequest {
            lr: Some(0.25),
            momentum: None,
        }))
        .unwrap();
        assert!(
            matches!(updated, ControlReply::OptimizerUpdated(u) if u.lr == 0.25 && u.momentum == 0.9)
        );
        assert!(matches!(
            control(ControlRequest::UpdateNumWorkers(UpdateNumWorkersRequest {
                num_workers: 0
            })),
            Err(EngineError::BadRequest(_))
        ));
        let kicked = control(ControlRequest::KickWorker(WorkerRef {
            worker_id: "w0".into(),
        }));
        assert!(matches!(kicked, Ok(ControlReply::WorkerKicked(_))));
        assert_eq!(run.status().num_registered, 0);
        assert!(matches!(
            control(ControlRequest::KickWorker(WorkerRef {
                worker_id: "w0".into()
            })),
            Err(EngineError::UnknownWorker(_))
        ));
        assert!(matches!(
            control(ControlRequest::SaveState),
            Err(EngineError::NoCheckpoint)
        ));
    }
}
