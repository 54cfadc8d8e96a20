//! JSON request bodies the coordinator parses (forgather's fields; unknown ones are ignored),
//! and the rule for worker ids. Shared so clients, the server and the fuzz targets agree.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `/register` request body.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RegisterRequest {
    /// Unique id of the worker.
    pub worker_id: String,
    /// Its hostname.
    pub hostname: Option<String>,
    /// Its output directory.
    pub output_dir: Option<String>,
    /// Anything else it wants recorded.
    pub extra: Option<serde_json::Value>,
    /// The parameters it holds, by name and shape (its slice; default all).
    pub param_shapes: Option<BTreeMap<String, Vec<usize>>>,
    /// Pipeline-parallel group membership (not supported yet).
    pub group: Option<serde_json::Value>,
}

/// `/heartbeat` request body.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct HeartbeatRequest {
    /// The worker.
    pub worker_id: String,
    /// Inner steps per second.
    pub steps_per_second: Option<f64>,
    /// Training statistics (whitelisted).
    pub stats: Option<serde_json::Value>,
}

/// `/deregister` and `/control/kick_worker` request body.
#[derive(Clone, Debug, Default, Deserialize)]
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
