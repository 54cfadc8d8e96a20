//! `model.initial_parameters`: the parameters a run starts from when it has no checkpoint yet —
//! one safetensors file, or a sharded checkpoint directory as Hugging Face writes them
//! (`model.safetensors.index.json` with a `weight_map` from tensor name to shard file).
//!
//! Every source goes through the same [`UploadReceiver`] as a worker's `/init_params`, so a
//! file gets exactly the checks an upload gets (one float dtype, finite values, a header that
//! tiles its data). A sharded checkpoint is streamed as one safetensors blob: a header made from
//! the shards' headers, then each shard's data section read in bounded chunks, so start-up holds
//! the parameters once, not once more per shard.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use serde::Deserialize;

use crate::upload::{Expectation, StagedUpload, UploadReceiver};
use crate::wire::frame::{FrameHeader, PayloadFormat, frame_prefix};
use crate::wire::safetensors::{SafetensorsHeader, header_length, pad_header, parse_header};

/// The index file of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The file of an unsharded checkpoint directory.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Bytes read from a shard at a time.
const CHUNK: usize = 8 << 20;

/// Reads the initial parameters at `path`: a safetensors file, or a directory holding
/// [`INDEX_FILE`] and its shards, or [`SINGLE_FILE`].
pub fn read(path: &Path) -> anyhow::Result<StagedUpload> {
    let files = if path.is_dir() {
        if path.join(INDEX_FILE).is_file() {
            shards_of(path)?
        } else if path.join(SINGLE_FILE).is_file() {
            vec![path.join(SINGLE_FILE)]
        } else {
            bail!(
                "{} is a directory without {INDEX_FILE} or {SINGLE_FILE}",
                path.display()
            );
        }
    } else {
        vec![path.to_path_buf()]
    };
    stream(&files)
        .with_context(|| format!("{} is not usable as initial parameters", path.display()))
}

#[derive(Deserialize)]
struct Index {
    weight_map: BTreeMap<String, String>,
}

/// The shard files `dir`'s index names, each checked to hold exactly the tensors the index
/// maps to it.
fn shards_of(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let index_path = dir.join(INDEX_FILE);
    let index: Index = serde_json::from_slice(
        &std::fs::read(&index_path)
            .with_context(|| format!("failed to read {}", index_path.display()))?,
    )
    .with_context(|| format!("{} is not a safetensors index", index_path.display()))?;
    ensure!(!index.weight_map.is_empty(), "{INDEX_FILE} maps no tensor");
    let mut expected: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (tensor, shard) in &index.weight_map {
        // A shard is a file beside the index, never a path elsewhere.
        let plain = Path::new(shard)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
            && !shard.contains('/');
        ensure!(
            plain,
            "{INDEX_FILE}: shard {shard:?} is not a file name in the directory"
        );
        expected.entry(shard).or_default().insert(tensor);
    }
    let mut files = Vec::with_capacity(expected.len());
    for (shard, tensors) in expected {
        let path = dir.join(shard);
        let (header, _) = read_header(&path)?;
        let held: BTreeSet<&str> = header.tensors.iter().map(|t| t.name.as_str()).collect();
        if held != tensors {
            let missing: Vec<_> = tensors.difference(&held).take(3).collect();
            let extra: Vec<_> = held.difference(&tensors).take(3).collect();
            bail!(
                "shard {shard} does not hold what {INDEX_FILE} says: missing {missing:?}, not in the index {extra:?}"
            );
        }
        files.push(path);
    }
    Ok(files)
}

/// The parsed header of the safetensors file at `path` and where its data section starts.
fn read_header(path: &Path) -> anyhow::Result<(SafetensorsHeader, u64)> {
    let mut file =
        File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    let mut prefix = [0u8; 8];
    file.read_exact(&mut prefix)
        .with_context(|| format!("{}: shorter than a safetensors header", path.display()))?;
    let length = header_length(&prefix)?.unwrap_or_default();
    let mut json = vec![0u8; length];
    file.read_exact(&mut json)
        .with_context(|| format!("{}: truncated safetensors header", path.display()))?;
    let header = parse_header(&json)
        .with_context(|| format!("{}: bad safetensors header", path.display()))?;
    let data_start = 8 + length as u64;
    let size = file.metadata()?.len();
    ensure!(
        size == data_start + header.data_len as u64,
        "{}: {size} bytes, but its header describes {}",
        path.display(),
        data_start + header.data_len as u64
    );
    Ok((header, data_start))
}

/// Feeds `files` to one receiver as a single safetensors blob.
fn stream(files: &[PathBuf]) -> anyhow::Result<StagedUpload> {
    let mut headers = Vec::with_capacity(files.len());
    let mut combined = serde_json::Map::new();
    let mut offset = 0usize;
    for path in files {
        let (header, data_start) = read_header(path)?;
        for t in &header.tensors {
            let begin = offset + t.data.start;
            let entry = serde_json::json!({
                "dtype": t.dtype,
                "shape": t.shape,
                "data_offsets": [begin, offset + t.data.end],
            });
            ensure!(
                combined.insert(t.name.clone(), entry).is_none(),
                "tensor {} is in more than one file",
                t.name
            );
        }
        offset += header.data_len;
        headers.push((path, data_start, header.data_len));
    }
    let mut json = serde_json::Value::Object(combined).to_string();
    pad_header(&mut json);

    // The files hold the data, so they bound what the header may declare.
    let mut receiver = UploadReceiver::new(Expectation::InitialParameters, offset as u64);
    let frame = FrameHeader {
        worker_id: "model.initial_parameters".into(),
        fragment_id: None,
        fmt: PayloadFormat::Safetensors,
        round: None,
    };
    receiver.push(Bytes::from(frame_prefix(&frame)))?;
    let mut prefix = (json.len() as u64).to_le_bytes().to_vec();
    prefix.extend_from_slice(json.as_bytes());
    receiver.push(Bytes::from(prefix))?;
    for (path, data_start, data_len) in headers {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(data_start))?;
        let mut left = data_len;
        while left > 0 {
            let mut chunk = vec![0u8; left.min(CHUNK)];
            file.read_exact(&mut chunk)
                .with_context(|| format!("{}: truncated data", path.display()))?;
            left -= chunk.len();
            receiver.push(Bytes::from(chunk))?;
        }
    }
    Ok(receiver.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelLayout;
    use crate::wire::dtype::{WireDtype, decode_into};
    use crate::wire::safetensors::encode;

    fn safetensors(tensors: &[(&str, Vec<usize>, f32)]) -> Vec<u8> {
        let layout = ModelLayout::new(
            tensors
                .iter()
                .map(|(name, shape, _)| (name.to_string(), shape.clone()))
                .collect(),
        )
        .unwrap();
        let values: Vec<f32> = layout
            .params()
            .iter()
            .flat_map(|p| {
                let fill = tensors.iter().find(|t| t.0 == p.name).unwrap().2;
                std::iter::repeat_n(fill, p.numel)
            })
            .collect();
        encode(&layout, &values, WireDtype::Fp32, &BTreeMap::new())
    }

    /// Each tensor's name and values, in name order.
    fn names_and_values(upload: &StagedUpload) -> Vec<(String, Vec<f32>)> {
        let layout = upload.layout.as_ref().unwrap();
        let size = upload.dtype.size();
        let mut all: Vec<_> = upload
            .tensors
            .iter()
            .map(|t| {
                let bytes = &upload.data[t.first_element * size..][..t.elements * size];
                let mut values = vec![0f32; t.elements];
                decode_into(bytes, upload.dtype, &mut values);
                (layout.params()[t.param].name.clone(), values)
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn sharded(dir: &Path, index: serde_json::Value) {
        std::fs::write(
            dir.join("model-00001-of-00002.safetensors"),
            safetensors(&[("a.weight", vec![2, 2], 1.0), ("b.bias", vec![3], 2.0)]),
        )
        .unwrap();
        std::fs::write(
            dir.join("model-00002-of-00002.safetensors"),
            safetensors(&[("c.weight", vec![2], 3.0)]),
        )
        .unwrap();
        std::fs::write(dir.join(INDEX_FILE), index.to_string()).unwrap();
    }

    fn index() -> serde_json::Value {
        serde_json::json!({
            "metadata": {"total_size": 36},
            "weight_map": {
                "a.weight": "model-00001-of-00002.safetensors",
                "b.bias": "model-00001-of-00002.safetensors",
                "c.weight": "model-00002-of-00002.safetensors",
            }
        })
    }

    #[test]
    fn a_sharded_checkpoint_reads_as_one_model() {
        let dir = tempfile::tempdir().unwrap();
        sharded(dir.path(), index());
        let upload = read(dir.path()).unwrap();
        assert_eq!(
            names_and_values(&upload),
            [
                ("a.weight".to_string(), vec![1.0; 4]),
                ("b.bias".to_string(), vec![2.0; 3]),
                ("c.weight".to_string(), vec![3.0; 2]),
            ]
        );
    }

    #[test]
    fn a_single_file_and_a_directory_with_model_safetensors_read_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = safetensors(&[("w", vec![3], 0.5)]);
        std::fs::write(dir.path().join(SINGLE_FILE), &bytes).unwrap();
        let from_dir = names_and_values(&read(dir.path()).unwrap());
        let from_file = names_and_values(&read(&dir.path().join(SINGLE_FILE)).unwrap());
        assert_eq!(from_dir, from_file);
        assert_eq!(from_dir, [("w".to_string(), vec![0.5; 3])]);
    }

    #[test]
    fn an_index_that_disagrees_with_its_shards_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut wrong = index();
        wrong["weight_map"]["c.weight"] = "model-00001-of-00002.safetensors".into();
        sharded(dir.path(), wrong);
        let error = format!("{:#}", read(dir.path()).unwrap_err());
        assert!(error.contains("does not hold what"), "{error}");

        let dir = tempfile::tempdir().unwrap();
        let mut escaping = index();
        escaping["weight_map"]["c.weight"] = "../elsewhere.safetensors".into();
        sharded(dir.path(), escaping);
        let error = format!("{:#}", read(dir.path()).unwrap_err());
        assert!(error.contains("not a file name"), "{error}");
    }

    #[test]
    fn a_truncated_shard_and_a_tensor_in_two_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        sharded(dir.path(), index());
        let shard = dir.path().join("model-00002-of-00002.safetensors");
        let bytes = std::fs::read(&shard).unwrap();
        std::fs::write(&shard, &bytes[..bytes.len() - 1]).unwrap();
        let error = format!("{:#}", read(dir.path()).unwrap_err());
        assert!(error.contains("bytes, but its header describes"), "{error}");

        let a = dir.path().join("a.safetensors");
        let b = dir.path().join("b.safetensors");
        std::fs::write(&a, safetensors(&[("w", vec![1], 1.0)])).unwrap();
        std::fs::write(&b, safetensors(&[("w", vec![1], 2.0)])).unwrap();
        let error = format!("{:#}", stream(&[a, b]).unwrap_err());
        assert!(error.contains("more than one file"), "{error}");
    }

    #[test]
    fn a_directory_without_a_checkpoint_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let error = format!("{:#}", read(dir.path()).unwrap_err());
        assert!(error.contains(INDEX_FILE), "{error}");
    }
}
