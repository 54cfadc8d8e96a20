//! `GET /audit?limit=N`: the newest records of the audit log, for an admin (the console's
//! "recent audit records"). Ours; forgather has no such endpoint.

use serde::{Deserialize, Serialize};

/// The path.
pub const AUDIT: &str = "/audit";
/// `limit` when the query has none.
pub const DEFAULT_AUDIT_LIMIT: usize = 100;
/// The largest `limit` honoured (larger values are clamped, as are values below 1).
pub const MAX_AUDIT_LIMIT: usize = 1000;

/// The newest records, oldest first, each exactly as the log holds it (one JSON object per
/// line of `audit.jsonl`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditTail {
    pub records: Vec<serde_json::Value>,
}
