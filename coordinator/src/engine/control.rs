//! `/control/<action>`: operator actions on a running coordinator.

use std::sync::Arc;

use serde_json::{Value, json};
use tracing::info;

use super::{Coordinator, Departure, lock};
use crate::api_error::ApiError;

/// Commands that ride a worker's next heartbeat response.
const RELAYED_COMMANDS: &[&str] = &["save_checkpoint", "save_and_stop", "abort"];

/// The control actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

impl ControlAction {
    /// The action named in the path.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "save_state" => Self::SaveState,
            "kick_worker" => Self::KickWorker,
            "update_optimizer" => Self::UpdateOptimizer,
            "update_num_workers" => Self::UpdateNumWorkers,
            "command" => Self::Command,
            "shutdown" => Self::Shutdown,
            _ => return None,
        })
    }
}

impl ControlAction {
    /// The body fields recorded in the audit log for this action (forgather's per-action
    /// allowlist); anything else a caller sends is left out, so a control request cannot
    /// inflate the audit log.
    fn audited_fields(self) -> &'static [&'static str] {
        match self {
            Self::SaveState | Self::Shutdown => &[],
            Self::KickWorker => &["worker_id"],
            Self::UpdateOptimizer => &["lr", "momentum", "nesterov"],
            Self::UpdateNumWorkers => &["num_workers"],
            Self::Command => &["command", "worker_id"],
        }
    }

    /// What the audit log records of a control body: the allowlisted fields, strings cut to
    /// [`crate::audit::MAX_RECORDED_CHARS`], anything but a string, number, boolean or null
    /// replaced by its type.
    pub fn audit_summary(self, body: &Value) -> Value {
        let mut summary = serde_json::Map::new();
        for field in self.audited_fields() {
            let Some(value) = body.get(*field) else {
                continue;
            };
            let recorded = match value {
                Value::String(text) => Value::String(crate::audit::bounded(text)),
                Value::Array(_) => Value::String("<array>".into()),
                Value::Object(_) => Value::String("<object>".into()),
                scalar => scalar.clone(),
            };
            summary.insert((*field).to_string(), recorded);
        }
        Value::Object(summary)
    }
}

fn string_field<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body.get(key).and_then(Value::as_str)
}

impl Coordinator {
    /// Runs a control action. Blocking (`save_state` writes a checkpoint).
    pub fn control(
        self: &Arc<Self>,
        action: ControlAction,
        body: &Value,
    ) -> Result<Value, ApiError> {
        info!(?action, "control action");
        match action {
            ControlAction::SaveState => {
                let round = self.checkpoint_now().ok_or_else(|| {
                    ApiError::bad_request("no checkpoint written: checkpoint.dir is not configured, the model is not initialized, or the write failed (see logs)")
                })?;
                Ok(json!({"status": "ok", "sync_round": round}))
            }
            ControlAction::KickWorker => {
                let worker_id = string_field(body, "worker_id")
                    .ok_or_else(|| ApiError::bad_request("worker_id is required"))?;
                // The route already required an admin, who may remove anyone.
                if !self.remove_worker(worker_id, Departure::Kicked, None)? {
                    return Err(ApiError::unknown_worker(worker_id));
                }
                self.close_round_if_ready_in_background();
                Ok(json!({"status": "ok", "worker_id": worker_id}))
            }
            ControlAction::UpdateOptimizer => {
                let lr = body.get("lr").and_then(Value::as_f64);
                let momentum = body.get("momentum").and_then(Value::as_f64);
                if lr.is_none() && momentum.is_none() {
                    return Err(ApiError::bad_request("give lr and/or momentum"));
                }
                if lr.is_some_and(|v| !(v.is_finite() && v >= 0.0))
                    || momentum.is_some_and(|v| !(0.0..=1.0).contains(&v))
                {
                    return Err(ApiError::bad_request(
                        "lr must be >= 0 and momentum within [0, 1]",
                    ));
                }
                let mut shared = lock(&self.shared);
                if let Some(lr) = lr {
                    shared.optimizer.lr = lr;
                }
                if let Some(momentum) = momentum {
                    shared.optimizer.momentum = momentum;
                }
                Ok(
                    json!({"status": "ok", "lr": shared.optimizer.lr, "momentum": shared.optimizer.momentum}),
                )
            }
            ControlAction::UpdateNumWorkers => {
                let n = body
                    .get("num_workers")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| ApiError::bad_request("num_workers (an integer) is required"))?;
                let min = self.config.training.min_workers;
                if (n as usize) < min {
                    return Err(ApiError::bad_request(format!(
                        "num_workers must be at least min_workers ({min})"
                    )));
                }
                lock(&self.shared).num_workers = n as usize;
                Ok(json!({"status": "ok", "num_workers": n}))
            }
            ControlAction::Command => {
                let command = string_field(body, "command")
                    .ok_or_else(|| ApiError::bad_request("command is required"))?;
                if !RELAYED_COMMANDS.contains(&command) {
                    return Err(ApiError::bad_request(format!(
                        "unknown command {command}; one of {RELAYED_COMMANDS:?}"
                    )));
                }
                let target = string_field(body, "worker_id").filter(|w| !w.is_empty() && *w != "*");
                let mut shared = lock(&self.shared);
                let ids: Vec<String> = match target {
                    Some(id) if !shared.roster.workers.contains_key(id) => {
                        return Err(ApiError::unknown_worker(id));
                    }
                    Some(id) => vec![id.to_string()],
                    None => shared.roster.workers.keys().cloned().collect(),
                };
                for id in &ids {
                    if let Some(w) = shared.roster.workers.get_mut(id) {
                        w.command = Some(command.to_string());
                    }
                }
                Ok(json!({"status": "ok", "command": command, "workers": ids}))
            }
            ControlAction::Shutdown => {
                self.request_shutdown();
                Ok(json!({"status": "ok", "message": "Shutting down"}))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only forgather's allowlisted fields are recorded, bounded; unknown fields never are.
    #[test]
    fn control_bodies_are_audited_by_allowlist_and_bounded() {
        let summary = |action: &str, body: Value| {
            ControlAction::from_name(action)
                .unwrap()
                .audit_summary(&body)
        };
        assert_eq!(
            summary("save_state", json!({"x": "y".repeat(1000)})),
            json!({})
        );
        assert_eq!(summary("shutdown", json!({"reason": "bye"})), json!({}));
        assert_eq!(
            summary("kick_worker", json!({"worker_id": "w1", "note": "n"})),
            json!({"worker_id": "w1"})
        );
        assert_eq!(
            summary(
                "update_optimizer",
                json!({"lr": 0.5, "momentum": 0.8, "nesterov": false, "token": "t"})
            ),
            json!({"lr": 0.5, "momentum": 0.8, "nesterov": false})
        );
        assert_eq!(
            summary(
                "update_num_workers",
                json!({"num_workers": 4, "extra": [1]})
            ),
            json!({"num_workers": 4})
        );
        let long = summary(
            "command",
            json!({"command": "abort", "worker_id": "w".repeat(5000), "blob": "b"}),
        );
        assert_eq!(long["command"], "abort");
        let worker_id = long["worker_id"].as_str().unwrap();
        assert!(worker_id.ends_with(crate::audit::TRUNCATION_MARKER));
        assert!(worker_id.len() < 400, "{}", worker_id.len());
        assert_eq!(long.as_object().unwrap().len(), 2);
        assert_eq!(
            summary("kick_worker", json!({"worker_id": {"nested": ["deep"]}})),
            json!({"worker_id": "<object>"})
        );
    }
}
