//! What a worker sends and gets back outside the tensor transfers: `/register`,
//! `/heartbeat` (which relays commands) and `/deregister`, and the rule for worker ids.
//!
//! Request bodies follow forgather's fields; unknown ones are ignored, so a forgather worker's
//! extra fields do no harm.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `"status": "ok"` of forgather's simple replies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplyStatus {
    /// The request was carried out.
    #[default]
    #[serde(rename = "ok")]
    Ok,
}

/// `{"status": "ok"}`: the reply of `/health` and `/deregister`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OkReply {
    /// Always `ok`.
    pub status: ReplyStatus,
}

/// `/register` request body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// Unique id of the worker ([`valid_worker_id`]).
    pub worker_id: String,
    /// Its hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Its output directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_dir: Option<String>,
    /// Anything else it wants recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
    /// The parameters it holds, by name and shape (its slice; default all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param_shapes: Option<BTreeMap<String, Vec<usize>>>,
    /// Pipeline-parallel group membership (not supported yet: refused when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<serde_json::Value>,
}

/// `/heartbeat` request body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// The worker.
    pub worker_id: String,
    /// Inner steps per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_per_second: Option<f64>,
    /// Training statistics (`loss`, `tokens_total`, …; the coordinator keeps a whitelist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<serde_json::Value>,
    /// The [`HeartbeatReply::command_id`] of the newest relayed command this worker has
    /// received, `0` when none yet. A worker that sends it gets each command until it
    /// acknowledges it, so a command is never lost with a heartbeat reply; without it (forgather's
    /// workers) a command is delivered once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_ack: Option<u64>,
    /// The worker's synchronisation bookkeeping (`sync_count`, `last_sync_time`,
    /// `total_sync_time`, `last_send_mb`, `last_recv_mb`, `sync_every`; the coordinator keeps
    /// those, finite numbers only), shown in `/status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_state: Option<serde_json::Value>,
}

/// `/heartbeat` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// Always `ok`.
    pub status: ReplyStatus,
    /// Outer steps completed.
    pub sync_round: u64,
    /// forgather's (mutable, informational) worker count.
    pub num_workers: usize,
    /// Workers registered now.
    pub num_registered: usize,
    /// A command queued with `/control/command` for this worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<RelayedCommand>,
    /// Its id, to acknowledge in [`HeartbeatRequest::command_ack`]; ids only grow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<u64>,
}

/// A command an admin queued for workers (`/control/command`); it rides their next heartbeat
/// reply. What a worker does with it is up to its training loop; forgather's mapping:
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayedCommand {
    /// Save a checkpoint, keep training.
    SaveCheckpoint,
    /// Save a checkpoint, then stop (leave the run).
    SaveAndStop,
    /// Stop now, without saving.
    Abort,
}

impl RelayedCommand {
    /// Every command, as the coordinator accepts them.
    pub const ALL: [RelayedCommand; 3] = [
        RelayedCommand::SaveCheckpoint,
        RelayedCommand::SaveAndStop,
        RelayedCommand::Abort,
    ];

    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayedCommand::SaveCheckpoint => "save_checkpoint",
            RelayedCommand::SaveAndStop => "save_and_stop",
            RelayedCommand::Abort => "abort",
        }
    }

    /// The command named `name`, if it is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl std::fmt::Display for RelayedCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `/deregister` and `/control/kick_worker` request body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRef {
    /// The worker.
    pub worker_id: String,
}

/// Worker ids are 1–253 characters of letters, digits and `- _ . : @` (they end up in file
/// names, log lines and metrics labels).
pub fn valid_worker_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 253
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// forgather's heartbeat reply carries `command` as a plain string; ours too.
    #[test]
    fn a_heartbeat_reply_relays_a_command_by_name_with_its_id() {
        let reply = HeartbeatReply {
            status: ReplyStatus::Ok,
            sync_round: 3,
            num_workers: 2,
            num_registered: 2,
            command: Some(RelayedCommand::SaveAndStop),
            command_id: Some(7),
        };
        assert_eq!(
            serde_json::to_value(&reply).unwrap(),
            serde_json::json!({"status": "ok", "sync_round": 3, "num_workers": 2,
                "num_registered": 2, "command": "save_and_stop", "command_id": 7})
        );
        let quiet: HeartbeatReply = serde_json::from_str(
            r#"{"status": "ok", "sync_round": 0, "num_workers": 1, "num_registered": 1}"#,
        )
        .unwrap();
        assert_eq!((quiet.command, quiet.command_id), (None, None));
    }

    /// A forgather worker's body (no `command_ack`, extra fields) is still a heartbeat.
    #[test]
    fn request_bodies_ignore_unknown_fields_and_default_the_optional_ones() {
        let beat: HeartbeatRequest =
            serde_json::from_str(r#"{"worker_id": "w0", "sync_state": {"x": 1}}"#).unwrap();
        assert_eq!(beat.worker_id, "w0");
        assert_eq!(beat.command_ack, None);
        assert_eq!(beat.sync_state, Some(serde_json::json!({"x": 1})));
        assert!(serde_json::from_str::<RegisterRequest>(r#"{"hostname": "h"}"#).is_err());
    }

    #[test]
    fn worker_ids_are_bounded_and_plain() {
        assert!(valid_worker_id("site-a.rank_0:1@x"));
        assert!(!valid_worker_id(""));
        assert!(!valid_worker_id("a/b"));
        assert!(!valid_worker_id(&"w".repeat(254)));
        for command in RelayedCommand::ALL {
            assert_eq!(RelayedCommand::from_name(command.as_str()), Some(command));
        }
    }
}
