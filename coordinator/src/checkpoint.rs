//! Checkpoints: θ, momentum, round, roster and optimizer settings in one safetensors file
//! (`checkpoint-<round>.safetensors`), readable by any safetensors tool.
//!
//! Written atomically: a temp file in the same directory, fsync, rename, fsync of the
//! directory. The metadata carries a SHA-256 of the data, so a damaged file is detected and
//! stops start-up instead of silently training from scratch.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use diloco_contract::api::{DatasetHint, StatsRecord, WorkerUnits};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::ModelLayout;
use crate::outer_optimizer::OuterOptimizer;
use crate::outer_state::OuterState;
use crate::wire::safetensors::{header_length, parse_header};

const FORMAT: &str = "diloco-checkpoint-v1";
const PREFIX: &str = "checkpoint-";
const SUFFIX: &str = ".safetensors";

/// A registered worker as saved in a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RosterEntry {
    /// Its id.
    pub worker_id: String,
    /// Hostname it reported.
    pub hostname: Option<String>,
    /// Output directory it reported.
    pub output_dir: Option<String>,
    /// Names of the parameters its uploads must carry (none: all).
    pub slice: Option<Vec<String>>,
    /// The identity that registered it; absent in checkpoints written before owners were
    /// recorded (such a worker is claimed by its next registration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// Everything besides the tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Outer steps completed.
    pub round: u64,
    /// Workers registered when it was taken.
    pub roster: Vec<RosterEntry>,
    /// Optimizer settings in force (control actions may have changed them).
    pub optimizer: OuterOptimizer,
    /// Work-unit queues, so that no unit issued before the checkpoint is issued again after a
    /// restart (absent in older checkpoints).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub work_queues: Vec<SavedQueue>,
    /// Run statistics: totals, per-worker baselines and the bounded history.
    #[serde(default)]
    pub stats: SavedStats,
}

/// A work-unit queue as a checkpoint keeps it (`engine::work_units`; bitmaps as bytes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedQueue {
    /// The dataset.
    pub dataset_id: String,
    /// The seed.
    pub shuffle_seed: i64,
    /// Units.
    pub total_units: u64,
    /// Issued bitmap.
    pub issued: Vec<u8>,
    /// Completed bitmap.
    pub completed: Vec<u8>,
    /// The first registrant's hint.
    pub hint: DatasetHint,
    /// Per-worker counts.
    #[serde(default)]
    pub by_worker: BTreeMap<String, WorkerUnits>,
}

/// The run statistics as a checkpoint keeps them (`engine::run_stats`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedStats {
    /// Tokens trained over the run.
    pub total_tokens: f64,
    /// FLOPs.
    pub total_flos: f64,
    /// Inner steps.
    pub total_steps: f64,
    /// Each worker's last cumulative counts.
    pub baselines: BTreeMap<String, BTreeMap<String, f64>>,
    /// The history, oldest first.
    pub history: Vec<StatsRecord>,
    /// Advances per kept record (a power of two).
    pub stride: u64,
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct Loaded {
    /// Where it was read from.
    pub path: PathBuf,
    /// Round, roster and optimizer.
    pub meta: CheckpointMeta,
    /// The model.
    pub layout: ModelLayout,
    /// θ, flat in layout order.
    pub theta: Vec<f32>,
    /// Momentum, flat in layout order (zeros where not ready).
    pub momentum: Vec<f32>,
    /// Per parameter: a momentum buffer exists.
    pub momentum_ready: Vec<bool>,
}

/// A checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "checkpoint {path} is corrupt ({reason}); refusing to start from scratch. Move it \
         aside to resume from an older checkpoint, or empty the directory to start over"
    )]
    Corrupt { path: PathBuf, reason: String },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError {
    let path = path.to_path_buf();
    move |source| CheckpointError::Io {
        action,
        path,
        source,
    }
}

/// Writes a checkpoint of `state` into `dir` and keeps only the newest `keep`.
pub fn save(
    dir: &Path,
    state: &OuterState,
    meta: &CheckpointMeta,
    keep: usize,
) -> Result<PathBuf, CheckpointError> {
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let layout = state.layout();
    let path = dir.join(format!("{PREFIX}{:010}{SUFFIX}", meta.round));
    let temp = dir.join(format!(".{PREFIX}{:010}.tmp", meta.round));
    state.with_theta_on_cpu(|theta| {
        state.with_momentum_on_cpu(|momentum, ready| {
            // Tensors in data order: θ of every parameter, then momentum where it exists.
            let mut tensors: Vec<(String, &[usize], &[f32])> = Vec::new();
            for p in layout.params() {
                tensors.push((format!("theta/{}", p.name), &p.shape, &theta[p.range()]));
            }
            for (i, p) in layout.params().iter().enumerate() {
                if ready[i] {
                    tensors.push((
                        format!("momentum/{}", p.name),
                        &p.shape,
                        &momentum[p.range()],
                    ));
                }
            }
            let mut hasher = Sha256::new();
            for (_, _, values) in &tensors {
                for_each_le_block(values, |bytes| hasher.update(bytes));
            }
            let digest: String = hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let metadata = BTreeMap::from([
                ("format".to_string(), FORMAT.to_string()),
                ("sha256".to_string(), digest),
                (
                    "meta".to_string(),
                    serde_json::to_string(meta).unwrap_or_default(),
                ),
            ]);
            write_file(&temp, &tensors, &metadata)
        })
    })?;
    std::fs::rename(&temp, &path).map_err(io("rename", &temp))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync", dir))?;
    prune(dir, keep)?;
    Ok(path)
}

/// Calls `f` with the little-endian bytes of `values`, a block at a time.
fn for_each_le_block(values: &[f32], mut f: impl FnMut(&[u8])) {
    let mut block = Vec::with_capacity(1 << 20);
    for chunk in values.chunks(1 << 18) {
        block.clear();
        for v in chunk {
            block.extend_from_slice(&v.to_le_bytes());
        }
        f(&block);
    }
}

fn write_file(
    path: &Path,
    tensors: &[(String, &[usize], &[f32])],
    metadata: &BTreeMap<String, String>,
) -> Result<(), CheckpointError> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!(metadata));
    let mut offset = 0;
    for (name, shape, values) in tensors {
        let len = values.len() * 4;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let mut json = serde_json::Value::Object(header).to_string();
    crate::wire::safetensors::pad_header(&mut json);
    let file = File::create(path).map_err(io("create", path))?;
    let mut out = BufWriter::with_capacity(4 << 20, file);
    let mut result = out
        .write_all(&(json.len() as u64).to_le_bytes())
        .and_then(|()| out.write_all(json.as_bytes()));
    for (_, _, values) in tensors {
        for_each_le_block(values, |bytes| {
            if result.is_ok() {
                result = out.write_all(bytes);
            }
        });
    }
    result.map_err(io("write", path))?;
    let file = out
        .into_inner()
        .map_err(|e| e.into_error())
        .map_err(io("write", path))?;
    file.sync_all().map_err(io("sync", path))
}

fn checkpoint_round(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()
}

/// Checkpoint files in `dir`, oldest first.
fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("list", dir)(e)),
    };
    let mut found: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter_map(|p| checkpoint_round(&p).map(|r| (r, p)))
        .collect();
    found.sort();
    Ok(found)
}

fn prune(dir: &Path, keep: usize) -> Result<(), CheckpointError> {
    let found = list(dir)?;
    for (_, path) in found.iter().take(found.len().saturating_sub(keep)) {
        std::fs::remove_file(path).map_err(io("remove", path))?;
    }
    Ok(())
}

/// Reads the newest checkpoint in `dir`, if there is one.
pub fn load_latest(dir: &Path) -> Result<Option<Loaded>, CheckpointError> {
    match list(dir)?.pop() {
        Some((_, path)) => load(&path).map(Some),
        None => Ok(None),
    }
}

/// Reads one checkpoint file, checking its digest and structure.
pub fn load(path: &Path) -> Result<Loaded, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(io("open", path))?;
    let file_len = file.metadata().map_err(io("stat", path))?.len() as usize;
    let mut reader = BufReader::with_capacity(4 << 20, file);
    let mut prefix = [0u8; 8];
    reader
        .read_exact(&mut prefix)
        .map_err(|e| corrupt(format!("cannot read header length: {e}")))?;
    let header_len = header_length(&prefix)
        .map_err(|e| corrupt(e.to_string()))?
        .unwrap_or_default();
    let mut json = vec![0u8; header_len];
    reader
        .read_exact(&mut json)
        .map_err(|e| corrupt(format!("cannot read header: {e}")))?;
    let header = parse_header(&json).map_err(|e| corrupt(e.to_string()))?;
    if 8 + header_len + header.data_len != file_len {
        return Err(corrupt(format!(
            "file is {file_len} bytes but its header describes {}",
            8 + header_len + header.data_len
        )));
    }
    if header.metadata.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(corrupt(format!("not a {FORMAT} file")));
    }
    let meta: CheckpointMeta =
        serde_json::from_str(header.metadata.get("meta").map_or("", String::as_str))
            .map_err(|e| corrupt(format!("metadata: {e}")))?;
    let mut shapes = Vec::new();
    for t in &header.tensors {
        if t.dtype != "F32" {
            return Err(corrupt(format!("{} is {}, not F32", t.name, t.dtype)));
        }
        if let Some(name) = t.name.strip_prefix("theta/") {
            shapes.push((name.to_string(), t.shape.clone()));
        }
    }
    let layout = ModelLayout::new(shapes).map_err(corrupt)?;
    let mut theta = vec![0f32; layout.total_elements()];
    let mut momentum = vec![0f32; layout.total_elements()];
    let mut momentum_ready = vec![false; layout.params().len()];
    let mut hasher = Sha256::new();
    let mut buffer = Vec::new();
    for t in &header.tensors {
        let (target, name) = if let Some(name) = t.name.strip_prefix("theta/") {
            (&mut theta, name)
        } else if let Some(name) = t.name.strip_prefix("momentum/") {
            (&mut momentum, name)
        } else {
            return Err(corrupt(format!("unexpected tensor {}", t.name)));
        };
        let index = layout
            .index_of(name)
            .ok_or_else(|| corrupt(format!("momentum for unknown {name}")))?;
        let info = &layout.params()[index];
        if t.shape != info.shape {
            return Err(corrupt(format!(
                "{} has shape {:?}, θ has {:?}",
                t.name, t.shape, info.shape
            )));
        }
        if t.name.starts_with("momentum/") {
            momentum_ready[index] = true;
        }
        buffer.resize(t.data.len(), 0);
        reader
            .read_exact(&mut buffer)
            .map_err(|e| corrupt(format!("reading {}: {e}", t.name)))?;
        hasher.update(&buffer);
        for (v, b) in target[info.range()].iter_mut().zip(buffer.chunks_exact(4)) {
            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
    }
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if header.metadata.get("sha256") != Some(&digest) {
        return Err(corrupt(
            "SHA-256 of the data does not match the one recorded".into(),
        ));
    }
    Ok(Loaded {
        path: path.to_path_buf(),
        meta,
        layout,
        theta,
        momentum,
        momentum_ready,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn state() -> OuterState {
        let layout = Arc::new(
            ModelLayout::new(vec![("a".into(), vec![3]), ("b".into(), vec![2, 2])]).unwrap(),
        );
        let theta: Vec<f32> = (0..7).map(|i| i as f32 * 0.5).collect();
        let momentum: Vec<f32> = (0..7).map(|i| -(i as f32)).collect();
        OuterState::restore(
            layout,
            &theta,
            &momentum,
            vec![true, false],
            tch::Device::Cpu,
        )
    }

    fn meta(round: u64) -> CheckpointMeta {
        CheckpointMeta {
            round,
            roster: vec![RosterEntry {
                worker_id: "w1".into(),
                hostname: Some("h".into()),
                output_dir: None,
                slice: None,
                owner: Some("cert:w1".into()),
            }],
            optimizer: OuterOptimizer::default(),
            work_queues: Vec::new(),
            stats: SavedStats::default(),
        }
    }

    /// A checkpoint written before roster entries had owners still loads: its workers have
    /// none (and are claimed by their next registration).
    #[test]
    fn roster_entries_without_an_owner_still_load() {
        let old = r#"{"round": 12, "optimizer": {"lr": 0.7, "momentum": 0.9, "nesterov": true},
            "roster": [{"worker_id": "w1", "hostname": "h", "output_dir": null, "slice": null}]}"#;
        let meta: CheckpointMeta = serde_json::from_str(old).unwrap();
        assert_eq!(meta.round, 12);
        assert_eq!(meta.roster[0].worker_id, "w1");
        assert_eq!(meta.roster[0].owner, None);
        let mut current = meta.clone();
        current.roster[0].owner = Some("worker-token".into());
        let text = serde_json::to_string(&current).unwrap();
        assert!(text.contains(r#""owner":"worker-token""#), "{text}");
        assert_eq!(
            serde_json::from_str::<CheckpointMeta>(&text).unwrap(),
            current
        );
    }

    #[test]
    fn a_checkpoint_round_trips_exactly() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &state(), &meta(7), 3).unwrap();
        let loaded = load_latest(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.meta, meta(7));
        assert_eq!(loaded.theta, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]);
        assert_eq!(loaded.momentum_ready, [true, false]);
        assert_eq!(&loaded.momentum[..3], [0.0, -1.0, -2.0]);
        assert_eq!(&loaded.momentum[3..], [0.0; 4], "no buffer, no values");
    }

    #[test]
    fn only_the_newest_are_kept_and_the_newest_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        for round in [1, 2, 3, 4] {
            save(dir.path(), &state(), &meta(round), 2).unwrap();
        }
        let rounds: Vec<u64> = list(dir.path())
            .unwrap()
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        assert_eq!(rounds, [3, 4]);
        assert_eq!(load_latest(dir.path()).unwrap().unwrap().meta.round, 4);
    }

    #[test]
    fn damaged_files_are_reported_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = save(dir.path(), &state(), &meta(5), 3).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let error = load_latest(dir.path()).unwrap_err().to_string();
        assert!(error.contains("SHA-256"), "{error}");
        assert!(error.contains("refusing to start from scratch"), "{error}");

        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let error = load_latest(dir.path()).unwrap_err().to_string();
        assert!(error.contains("corrupt"), "{error}");
    }

    #[test]
    fn an_empty_or_missing_directory_has_no_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_latest(dir.path()).unwrap().is_none());
        assert!(load_latest(&dir.path().join("absent")).unwrap().is_none());
    }
}
