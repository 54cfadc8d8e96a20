//! Work-unit dispatch (forgather's dataset partitioning, reference §1.10), pure bookkeeping:
//! one queue per `(dataset_id, shuffle_seed)`, K units each, issued one way.
//!
//! Issuance never takes a unit back. A unit handed to a worker that then dies is lost for the
//! epoch (at most one per worker) rather than handed out again, because the coordinator cannot
//! know whether the dead worker's training of it already reached θ through an upload; handing
//! it out again could train its rows twice, which is the one thing dispatch promises never to
//! do. The lost units stay visible (issued, not completed) in `/work/queue`.
//!
//! A completion of a unit the queue never issued (a checkpoint older than the issue, after a
//! crash) marks it issued as well, so it is not handed out again.
//!
//! Memory is bounded: at most [`MAX_QUEUES`] queues of at most [`MAX_UNITS`] units, and at
//! most [`MAX_WORKERS_PER_QUEUE`] per-worker counters per queue.

use std::collections::BTreeMap;

use diloco_contract::api::{
    DatasetHint, WorkQueueDetail, WorkQueueSummary, WorkRequestReply, WorkerUnits,
};

use crate::checkpoint::SavedQueue;

/// Units per queue when the configuration says nothing (forgather's `--default-work-units`).
pub const DEFAULT_UNITS: u64 = 1024;
/// Most units a queue may have (128 KiB per bitmap).
pub const MAX_UNITS: u64 = 1 << 20;
/// Most queues kept; registering another is refused.
pub const MAX_QUEUES: usize = 256;
/// Most workers counted per queue; units of workers beyond it are issued but not attributed.
pub const MAX_WORKERS_PER_QUEUE: usize = 4096;
/// Longest `dataset_id`.
pub const MAX_DATASET_ID_CHARS: usize = 256;
/// Longest hint label (`path`, `name`, `split`, `revision`) and serialized `data_files`.
pub const MAX_LABEL_BYTES: usize = 4096;

/// Why a work-unit request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WorkError {
    /// A missing or malformed field.
    #[error("{0}")]
    Invalid(String),
    /// The dataset was registered with another length.
    #[error(
        "dataset {dataset_id} (shuffle_seed {shuffle_seed}) was registered with length \
         {registered}, not {offered}: the workers do not agree on the dataset"
    )]
    LengthMismatch {
        dataset_id: String,
        shuffle_seed: i64,
        registered: u64,
        offered: u64,
    },
    /// No such queue.
    #[error(
        "no work queue for dataset {dataset_id} with shuffle_seed {shuffle_seed}: POST \
         /datasets/register first"
    )]
    NoQueue {
        dataset_id: String,
        shuffle_seed: i64,
    },
    /// The unit id is not in the queue.
    #[error("unit_id {unit_id} is out of range: the queue has {total_units} units")]
    UnitOutOfRange { unit_id: u64, total_units: u64 },
    /// [`MAX_QUEUES`] reached.
    #[error("the coordinator already keeps {MAX_QUEUES} work queues")]
    TooManyQueues,
}

/// A fixed-size bit set, least significant bit first within each byte (forgather's layout).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Bitmap {
    bytes: Vec<u8>,
    bits: u64,
}

impl Bitmap {
    fn new(bits: u64) -> Self {
        Self {
            bytes: vec![0; bits.div_ceil(8) as usize],
            bits,
        }
    }

    fn from_bytes(bytes: Vec<u8>, bits: u64) -> Option<Self> {
        (bytes.len() as u64 == bits.div_ceil(8)).then_some(Self { bytes, bits })
    }

    fn get(&self, bit: u64) -> bool {
        self.bytes
            .get((bit / 8) as usize)
            .is_some_and(|b| b & (1 << (bit % 8)) != 0)
    }

    /// Sets `bit`; returns whether it was unset.
    fn set(&mut self, bit: u64) -> bool {
        match self.bytes.get_mut((bit / 8) as usize) {
            Some(byte) if *byte & (1 << (bit % 8)) == 0 => {
                *byte |= 1 << (bit % 8);
                true
            }
            _ => false,
        }
    }

    fn count(&self) -> u64 {
        self.bytes.iter().map(|b| u64::from(b.count_ones())).sum()
    }

    /// The lowest unset bit at or after `from`.
    fn first_unset(&self, from: u64) -> Option<u64> {
        (from..self.bits).find(|bit| !self.get(*bit))
    }
}

/// One `(dataset_id, shuffle_seed)` queue.
#[derive(Clone, Debug, PartialEq)]
struct Queue {
    total_units: u64,
    issued: Bitmap,
    completed: Bitmap,
    hint: DatasetHint,
    by_worker: BTreeMap<String, WorkerUnits>,
    /// Every unit below it was issued: the search for the next unit starts here.
    cursor: u64,
}

impl Queue {
    fn summary(&self, dataset_id: &str, shuffle_seed: i64) -> WorkQueueSummary {
        WorkQueueSummary {
            dataset_id: dataset_id.to_string(),
            shuffle_seed,
            total_units: self.total_units,
            issued_count: self.issued.count(),
            completed_count: self.completed.count(),
            hint: self.hint.clone(),
        }
    }

    fn counters(&mut self, worker_id: &str) -> Option<&mut WorkerUnits> {
        if !self.by_worker.contains_key(worker_id) && self.by_worker.len() >= MAX_WORKERS_PER_QUEUE
        {
            return None;
        }
        Some(self.by_worker.entry(worker_id.to_string()).or_default())
    }
}

/// Every queue of the run.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkQueues {
    units_per_queue: u64,
    queues: BTreeMap<(String, i64), Queue>,
}

impl Default for WorkQueues {
    fn default() -> Self {
        Self::new(DEFAULT_UNITS)
    }
}

impl WorkQueues {
    /// No queues; new ones get `units_per_queue` units (clamped to 1..=[`MAX_UNITS`]).
    pub fn new(units_per_queue: u64) -> Self {
        Self {
            units_per_queue: units_per_queue.clamp(1, MAX_UNITS),
            queues: BTreeMap::new(),
        }
    }

    /// Registers a queue (idempotent: the first registrant's labels and unit count stay).
    pub fn register(
        &mut self,
        dataset_id: &str,
        shuffle_seed: i64,
        hint: DatasetHint,
    ) -> Result<u64, WorkError> {
        check_dataset_id(dataset_id)?;
        check_hint(&hint)?;
        let key = (dataset_id.to_string(), shuffle_seed);
        if let Some(queue) = self.queues.get(&key) {
            if queue.hint.length != hint.length {
                return Err(WorkError::LengthMismatch {
                    dataset_id: dataset_id.to_string(),
                    shuffle_seed,
                    registered: queue.hint.length,
                    offered: hint.length,
                });
            }
            return Ok(queue.total_units);
        }
        if self.queues.len() >= MAX_QUEUES {
            return Err(WorkError::TooManyQueues);
        }
        let total_units = self.units_per_queue;
        self.queues.insert(
            key,
            Queue {
                total_units,
                issued: Bitmap::new(total_units),
                completed: Bitmap::new(total_units),
                hint,
                by_worker: BTreeMap::new(),
                cursor: 0,
            },
        );
        Ok(total_units)
    }

    fn queue_mut(&mut self, dataset_id: &str, shuffle_seed: i64) -> Result<&mut Queue, WorkError> {
        self.queues
            .get_mut(&(dataset_id.to_string(), shuffle_seed))
            .ok_or_else(|| WorkError::NoQueue {
                dataset_id: dataset_id.to_string(),
                shuffle_seed,
            })
    }

    /// Issues the lowest unit never issued to `worker_id`, or says the queue is exhausted.
    pub fn request(
        &mut self,
        worker_id: &str,
        dataset_id: &str,
        shuffle_seed: i64,
    ) -> Result<WorkRequestReply, WorkError> {
        let queue = self.queue_mut(dataset_id, shuffle_seed)?;
        let Some(unit_id) = queue.issued.first_unset(queue.cursor) else {
            queue.cursor = queue.total_units;
            return Ok(WorkRequestReply::Exhausted { exhausted: true });
        };
        queue.issued.set(unit_id);
        queue.cursor = unit_id + 1;
        if let Some(counters) = queue.counters(worker_id) {
            counters.units_issued += 1;
        }
        Ok(WorkRequestReply::Unit { unit_id })
    }

    /// Records `unit_id` as trained (idempotent).
    pub fn complete(
        &mut self,
        worker_id: &str,
        dataset_id: &str,
        shuffle_seed: i64,
        unit_id: u64,
    ) -> Result<(), WorkError> {
        let queue = self.queue_mut(dataset_id, shuffle_seed)?;
        if unit_id >= queue.total_units {
            return Err(WorkError::UnitOutOfRange {
                unit_id,
                total_units: queue.total_units,
            });
        }
        queue.issued.set(unit_id);
        if queue.completed.set(unit_id)
            && let Some(counters) = queue.counters(worker_id)
        {
            counters.units_completed += 1;
        }
        Ok(())
    }

    /// Every queue, without bitmaps, by dataset then seed.
    pub fn summaries(&self) -> Vec<WorkQueueSummary> {
        self.queues
            .iter()
            .map(|((id, seed), q)| q.summary(id, *seed))
            .collect()
    }

    /// One queue with its bitmaps.
    pub fn detail(
        &self,
        dataset_id: &str,
        shuffle_seed: i64,
    ) -> Result<WorkQueueDetail, WorkError> {
        let queue = self
            .queues
            .get(&(dataset_id.to_string(), shuffle_seed))
            .ok_or_else(|| WorkError::NoQueue {
                dataset_id: dataset_id.to_string(),
                shuffle_seed,
            })?;
        Ok(WorkQueueDetail {
            summary: queue.summary(dataset_id, shuffle_seed),
            issued_bitmap_b64: base64(&queue.issued.bytes),
            completed_bitmap_b64: base64(&queue.completed.bytes),
            by_worker: queue.by_worker.clone(),
        })
    }

    /// The queues as a checkpoint keeps them.
    pub fn save(&self) -> Vec<SavedQueue> {
        self.queues
            .iter()
            .map(|((id, seed), q)| SavedQueue {
                dataset_id: id.clone(),
                shuffle_seed: *seed,
                total_units: q.total_units,
                issued: q.issued.bytes.clone(),
                completed: q.completed.bytes.clone(),
                hint: q.hint.clone(),
                by_worker: q.by_worker.clone(),
            })
            .collect()
    }

    /// Queues from a checkpoint; a saved queue whose bitmaps do not fit its unit count is
    /// skipped (and named in the returned list) rather than trusted.
    pub fn restore(units_per_queue: u64, saved: Vec<SavedQueue>) -> (Self, Vec<String>) {
        let mut queues = Self::new(units_per_queue);
        let mut skipped = Vec::new();
        for s in saved.into_iter().take(MAX_QUEUES) {
            let total = s.total_units;
            let bitmaps = (1..=MAX_UNITS).contains(&total).then(|| {
                Bitmap::from_bytes(s.issued, total).zip(Bitmap::from_bytes(s.completed, total))
            });
            let Some(Some((issued, completed))) = bitmaps else {
                skipped.push(format!("{}|{}", s.dataset_id, s.shuffle_seed));
                continue;
            };
            let cursor = issued.first_unset(0).unwrap_or(total);
            queues.queues.insert(
                (s.dataset_id, s.shuffle_seed),
                Queue {
                    total_units: total,
                    issued,
                    completed,
                    hint: s.hint,
                    by_worker: s
                        .by_worker
                        .into_iter()
                        .take(MAX_WORKERS_PER_QUEUE)
                        .collect(),
                    cursor,
                },
            );
        }
        (queues, skipped)
    }
}

fn check_dataset_id(dataset_id: &str) -> Result<(), WorkError> {
    if dataset_id.is_empty()
        || dataset_id.chars().count() > MAX_DATASET_ID_CHARS
        || dataset_id.chars().any(char::is_control)
    {
        return Err(WorkError::Invalid(format!(
            "dataset_id must be 1-{MAX_DATASET_ID_CHARS} printable characters"
        )));
    }
    Ok(())
}

fn check_hint(hint: &DatasetHint) -> Result<(), WorkError> {
    if hint.length == 0 {
        return Err(WorkError::Invalid("hint.length must be at least 1".into()));
    }
    let labels = [&hint.path, &hint.name, &hint.split, &hint.revision];
    let data_files = hint.data_files.as_ref().map_or(0, |v| v.to_string().len());
    if labels
        .iter()
        .flat_map(|l| l.as_deref())
        .any(|l| l.len() > MAX_LABEL_BYTES)
        || data_files > MAX_LABEL_BYTES
    {
        return Err(WorkError::Invalid(format!(
            "hint labels (path, name, split, revision, data_files) must each be at most \
             {MAX_LABEL_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Standard base64 with padding (RFC 4648 §4), as Python's `base64.b64decode` reads it.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
