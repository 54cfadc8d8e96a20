//! `/stats_history`: the run's aggregate statistics over time, one record per advance of the
//! total step count, as forgather streams them (reference §2.4).

use serde::{Deserialize, Serialize};

/// `GET /stats_history?max_points=N`.
pub const STATS_HISTORY: &str = "/stats_history";
/// `max_points` when the query has none.
pub const DEFAULT_MAX_POINTS: usize = 2000;
/// The largest `max_points` honoured (larger values are clamped, as are values below 1).
pub const MAX_MAX_POINTS: usize = 20_000;

/// One point of the history: the aggregate statistics when the total step count advanced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsRecord {
    /// When (RFC 3339, UTC).
    pub ts: String,
    /// The coordinator's round then.
    pub sync_round: u64,
    /// Tokens trained by every worker of the run, departed ones included.
    pub total_tokens: f64,
    /// FLOPs likewise.
    pub total_flos: f64,
    /// Inner steps likewise.
    pub total_steps: f64,
    /// Sum of the live workers' tokens per second.
    pub tok_per_sec: f64,
    /// Mean training loss of the live workers that reported one.
    pub train_loss: Option<f64>,
    /// Mean evaluation loss likewise.
    pub eval_loss: Option<f64>,
    /// Live workers that reported statistics.
    pub num_reporting: usize,
}

/// `/stats_history` reply.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsHistoryReply {
    /// Oldest first; the newest record is always the last.
    pub records: Vec<StatsRecord>,
    /// `records.len()`.
    pub count: usize,
    /// Records were skipped (by stride) to stay within `max_points`, here or when the
    /// coordinator thinned its bounded history.
    pub downsampled: bool,
}
