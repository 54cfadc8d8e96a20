//! Work-unit dispatch (forgather's dataset partitioning, reference §1.10): a worker registers
//! a train dataset, then asks for units of it and reports them done. Each `(dataset_id,
//! shuffle_seed)` queue hands out every unit at most once, so no row is trained twice per
//! epoch; an epoch is a queue, and the next epoch is a new `shuffle_seed`.
//!
//! Bodies and replies are forgather's, field for field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Register a dataset's queue ([`DatasetRegisterRequest`] → [`DatasetRegisterReply`]).
pub const DATASETS_REGISTER: &str = "/datasets/register";
/// Take the next unit ([`WorkRequest`] → [`WorkRequestReply`]).
pub const WORK_REQUEST: &str = "/work/request";
/// Report a unit done ([`WorkCompleteRequest`] → [`WorkCompleteReply`]).
pub const WORK_COMPLETE: &str = "/work/complete";
/// Every queue, without bitmaps (a JSON list of [`WorkQueueSummary`]).
pub const WORK_QUEUES: &str = "/work/queues";
/// One queue with its bitmaps (`?dataset_id=&shuffle_seed=` → [`WorkQueueDetail`]).
pub const WORK_QUEUE: &str = "/work/queue";

/// What a worker knows of a dataset: its length (rows) and, for people, where it came from.
/// The first registrant's label fields are kept.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasetHint {
    /// Rows in the dataset (≥ 1). Every registration of the queue must agree.
    pub length: u64,
    /// Dataset path or hub name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Configuration name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Split (`train`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// Revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Data files, as the worker's loader took them (a string, a list or a mapping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_files: Option<serde_json::Value>,
}

/// `/datasets/register` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetRegisterRequest {
    /// The registering worker.
    pub worker_id: String,
    /// The worker-computed hash of the dataset's identity and slice bounds.
    pub dataset_id: String,
    /// The epoch's shuffle seed; each seed is its own queue.
    pub shuffle_seed: i64,
    /// The dataset's length and labels.
    pub hint: DatasetHint,
}

/// `/datasets/register` reply (the same for every registration of a queue).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetRegisterReply {
    /// Units in the queue (K): unit `u` covers rows `u·L/K ..< (u+1)·L/K`.
    pub total_units: u64,
}

/// `/work/request` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkRequest {
    /// The asking worker.
    pub worker_id: String,
    /// The queue's dataset.
    pub dataset_id: String,
    /// The queue's seed.
    pub shuffle_seed: i64,
}

/// `/work/request` reply: the lowest unit never issued, or `{"exhausted": true}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WorkRequestReply {
    /// Train this unit.
    Unit {
        /// The unit.
        unit_id: u64,
    },
    /// Every unit of the queue was issued: the epoch is over for this queue.
    Exhausted {
        /// Always true.
        exhausted: bool,
    },
}

/// `/work/complete` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkCompleteRequest {
    /// The reporting worker.
    pub worker_id: String,
    /// The queue's dataset.
    pub dataset_id: String,
    /// The queue's seed.
    pub shuffle_seed: i64,
    /// The unit trained.
    pub unit_id: u64,
}

/// `/work/complete` reply (also for a unit already reported).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkCompleteReply {
    /// Always true.
    pub ack: bool,
}

/// A queue in `/work/queues` (and the head of [`WorkQueueDetail`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkQueueSummary {
    /// The dataset.
    pub dataset_id: String,
    /// The seed.
    pub shuffle_seed: i64,
    /// Units in the queue.
    pub total_units: u64,
    /// Units handed out.
    pub issued_count: u64,
    /// Units reported done.
    pub completed_count: u64,
    /// The first registrant's hint.
    pub hint: DatasetHint,
}

/// A worker's share of a queue, in [`WorkQueueDetail::by_worker`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerUnits {
    /// Units it was given.
    pub units_issued: u64,
    /// Units it reported done.
    pub units_completed: u64,
}

/// `/work/queue` reply: the summary plus both bitmaps (K bits, least significant bit first
/// within each byte, base64) and the per-worker counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkQueueDetail {
    /// The summary.
    #[serde(flatten)]
    pub summary: WorkQueueSummary,
    /// Bit `u` set: unit `u` was issued.
    pub issued_bitmap_b64: String,
    /// Bit `u` set: unit `u` was reported done.
    pub completed_bitmap_b64: String,
    /// Units issued and completed, per worker id.
    pub by_worker: BTreeMap<String, WorkerUnits>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two replies of `/work/request` are forgather's two shapes, and parse back.
    #[test]
    fn a_work_request_reply_is_a_unit_or_exhausted() {
        let unit = serde_json::to_value(WorkRequestReply::Unit { unit_id: 7 }).unwrap();
        assert_eq!(unit, serde_json::json!({"unit_id": 7}));
        let done = serde_json::to_value(WorkRequestReply::Exhausted { exhausted: true }).unwrap();
        assert_eq!(done, serde_json::json!({"exhausted": true}));
        let parsed: WorkRequestReply = serde_json::from_value(done).unwrap();
        assert_eq!(parsed, WorkRequestReply::Exhausted { exhausted: true });
    }

    /// A hint with only a length stays minimal on the wire.
    #[test]
    fn a_minimal_hint_serializes_only_its_length() {
        let hint = DatasetHint {
            length: 10,
            ..DatasetHint::default()
        };
        assert_eq!(
            serde_json::to_value(hint).unwrap(),
            serde_json::json!({"length": 10})
        );
    }
}
