//! `POST /control/<action>`: admin actions on a running coordinator, their request bodies
//! and replies (forgather's, reference §2.5). An empty body counts as `{}`.

use serde::{Deserialize, Serialize};

use super::workers::{RelayedCommand, ReplyStatus, WorkerRef};

/// The control actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControlAction {
    /// Write a checkpoint now.
    SaveState,
    /// Remove a worker as if it had died.
    KickWorker,
    /// Change the outer learning rate and/or momentum.
    UpdateOptimizer,
    /// Change forgather's informational worker count.
    UpdateNumWorkers,
    /// Queue a command for one worker or all.
    Command,
    /// Stop the coordinator (after a checkpoint).
    Shutdown,
    /// Change the token budget (forgather #224).
    UpdateTokenBudget,
}

impl ControlAction {
    /// Every action.
    pub const ALL: [ControlAction; 7] = [
        ControlAction::SaveState,
        ControlAction::KickWorker,
        ControlAction::UpdateOptimizer,
        ControlAction::UpdateNumWorkers,
        ControlAction::Command,
        ControlAction::Shutdown,
        ControlAction::UpdateTokenBudget,
    ];

    /// Its name in the path.
    pub fn name(self) -> &'static str {
        match self {
            Self::SaveState => "save_state",
            Self::KickWorker => "kick_worker",
            Self::UpdateOptimizer => "update_optimizer",
            Self::UpdateNumWorkers => "update_num_workers",
            Self::Command => "command",
            Self::Shutdown => "shutdown",
            Self::UpdateTokenBudget => "update_token_budget",
        }
    }

    /// The action named in the path.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// `/control/<name>`.
    pub fn path(self) -> String {
        format!("{}{}", super::CONTROL_PREFIX, self.name())
    }
}

/// `/control/update_optimizer` body: at least one of the two.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateOptimizerRequest {
    /// New learning rate (≥ 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// New momentum (within [0, 1]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
}

/// `/control/update_num_workers` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateNumWorkersRequest {
    /// New count (at least `training.min_workers`).
    pub num_workers: u64,
}

/// `/control/update_token_budget` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateTokenBudgetRequest {
    /// New budget in tokens; 0 disables it.
    pub token_budget: u64,
}

/// `/control/command` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRequest {
    /// What to relay.
    pub command: RelayedCommand,
    /// The worker; absent, `""` or `"*"`: every registered worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
}

/// A control request, parsed from its action and body.
#[derive(Clone, Debug, PartialEq)]
pub enum ControlRequest {
    /// `save_state` (no body).
    SaveState,
    /// `kick_worker`.
    KickWorker(WorkerRef),
    /// `update_optimizer`.
    UpdateOptimizer(UpdateOptimizerRequest),
    /// `update_num_workers`.
    UpdateNumWorkers(UpdateNumWorkersRequest),
    /// `command`.
    Command(CommandRequest),
    /// `shutdown` (no body).
    Shutdown,
    /// `update_token_budget`.
    UpdateTokenBudget(UpdateTokenBudgetRequest),
}

impl ControlRequest {
    /// The request `body` makes for `action`; fields the action does not use are ignored.
    pub fn parse(action: ControlAction, body: serde_json::Value) -> serde_json::Result<Self> {
        use serde_json::from_value;
        Ok(match action {
            ControlAction::SaveState => Self::SaveState,
            ControlAction::KickWorker => Self::KickWorker(from_value(body)?),
            ControlAction::UpdateOptimizer => Self::UpdateOptimizer(from_value(body)?),
            ControlAction::UpdateNumWorkers => Self::UpdateNumWorkers(from_value(body)?),
            ControlAction::Command => Self::Command(from_value(body)?),
            ControlAction::Shutdown => Self::Shutdown,
            ControlAction::UpdateTokenBudget => Self::UpdateTokenBudget(from_value(body)?),
        })
    }

    /// Its action.
    pub fn action(&self) -> ControlAction {
        match self {
            Self::SaveState => ControlAction::SaveState,
            Self::KickWorker(_) => ControlAction::KickWorker,
            Self::UpdateOptimizer(_) => ControlAction::UpdateOptimizer,
            Self::UpdateNumWorkers(_) => ControlAction::UpdateNumWorkers,
            Self::Command(_) => ControlAction::Command,
            Self::Shutdown => ControlAction::Shutdown,
            Self::UpdateTokenBudget(_) => ControlAction::UpdateTokenBudget,
        }
    }
}

/// `save_state` reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    /// Always `ok`.
    pub status: ReplyStatus,
    /// The round the checkpoint holds.
    pub sync_round: u64,
}

/// `kick_worker` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerKicked {
    /// Always `ok`.
    pub status: ReplyStatus,
    /// The worker removed.
    pub worker_id: String,
}

/// `update_optimizer` reply: the settings now in force.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerUpdated {
    /// Always `ok`.
    pub status: ReplyStatus,
    /// Learning rate now.
    pub lr: f64,
    /// Momentum now.
    pub momentum: f64,
}

/// `update_num_workers` reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumWorkersUpdated {
    /// Always `ok`.
    pub status: ReplyStatus,
    /// The count now.
    pub num_workers: u64,
}

/// `command` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandQueued {
    /// Always `ok`.
    pub status: ReplyStatus,
    /// The command queued.
    pub command: RelayedCommand,
    /// The workers it was queued for.
    pub workers: Vec<String>,
}

/// `shutdown` reply (sent before the coordinator stops).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShuttingDown {
    /// Always `ok`.
    pub status: ReplyStatus,
    /// `Shutting down`.
    pub message: String,
}

/// `update_token_budget` reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBudgetUpdated {
    /// Always `ok`.
    pub status: ReplyStatus,
    /// The budget now (0: none).
    pub token_budget: u64,
    /// `save_and_stop` was sent to every worker because the run reached the budget.
    pub budget_stop_sent: bool,
}

/// Any control reply (each action has its own shape).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ControlReply {
    SavedState(SavedState),
    WorkerKicked(WorkerKicked),
    OptimizerUpdated(OptimizerUpdated),
    NumWorkersUpdated(NumWorkersUpdated),
    CommandQueued(CommandQueued),
    ShuttingDown(ShuttingDown),
    TokenBudgetUpdated(TokenBudgetUpdated),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn actions_round_trip_through_their_names() {
        for action in ControlAction::ALL {
            assert_eq!(ControlAction::from_name(action.name()), Some(action));
        }
        assert_eq!(ControlAction::Command.path(), "/control/command");
        assert_eq!(ControlAction::from_name("update_tokens"), None);
    }

    /// Bodies are typed per action; what an action does not use (or an empty body for the
    /// actions without one) is fine, a wrong type or an unknown command is not.
    #[test]
    fn control_bodies_parse_per_action() {
        let parse = |action, body| ControlRequest::parse(action, body);
        assert_eq!(
            parse(ControlAction::SaveState, json!({"x": 1})).unwrap(),
            ControlRequest::SaveState
        );
        assert_eq!(
            parse(
                ControlAction::Command,
                json!({"command": "abort", "worker_id": "w1", "note": "n"})
            )
            .unwrap(),
            ControlRequest::Command(CommandRequest {
                command: RelayedCommand::Abort,
                worker_id: Some("w1".into())
            })
        );
        assert!(parse(ControlAction::Command, json!({"command": "reboot"})).is_err());
        assert!(parse(ControlAction::UpdateNumWorkers, json!({"num_workers": -1})).is_err());
        assert_eq!(
            parse(ControlAction::UpdateOptimizer, json!({"lr": 0.5})).unwrap(),
            ControlRequest::UpdateOptimizer(UpdateOptimizerRequest {
                lr: Some(0.5),
                momentum: None
            })
        );
    }

    /// Each reply serializes as forgather's flat object.
    #[test]
    fn control_replies_are_flat_objects() {
        let reply = ControlReply::CommandQueued(CommandQueued {
            status: ReplyStatus::Ok,
            command: RelayedCommand::SaveCheckpoint,
            workers: vec!["w0".into()],
        });
        assert_eq!(
            serde_json::to_value(reply).unwrap(),
            json!({"status": "ok", "command": "save_checkpoint", "workers": ["w0"]})
        );
    }
}
