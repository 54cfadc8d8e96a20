//! Hand-built uploads for tests: valid frames, and every way of getting one wrong.

use diloco_client::wire::frame::{FrameHeader, PayloadFormat, frame_prefix};

/// A tensor as it goes on the wire.
pub struct RawTensor<'a> {
    /// Name.
    pub name: &'a str,
    /// safetensors dtype (`BF16`, `F32`, …).
    pub dtype: &'a str,
    /// Shape.
    pub shape: &'a [usize],
    /// Little-endian data.
    pub data: Vec<u8>,
}

/// bf16 bytes of `values` (truncating: exact for the values tests use).
pub fn bf16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
        .collect()
}

/// A safetensors blob of `tensors`.
pub fn safetensors_blob(tensors: &[RawTensor<'_>]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for t in tensors {
        header.insert(
            t.name.to_string(),
            serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, offset + t.data.len()]}),
        );
        offset += t.data.len();
    }
    let json = serde_json::Value::Object(header).to_string();
    let mut blob = (json.len() as u64).to_le_bytes().to_vec();
    blob.extend_from_slice(json.as_bytes());
    for t in tensors {
        blob.extend_from_slice(&t.data);
    }
    blob
}

/// A submit frame from `worker_id` carrying `tensors` as safetensors.
pub fn frame(worker_id: &str, tensors: &[RawTensor<'_>]) -> Vec<u8> {
    frame_with_blob(worker_id, &safetensors_blob(tensors))
}

/// A submit frame from `worker_id` carrying an already encoded safetensors `blob`.
pub fn frame_with_blob(worker_id: &str, blob: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        worker_id: worker_id.to_string(),
        fragment_id: None,
        fmt: PayloadFormat::Safetensors,
        round: None,
    };
    let mut frame = frame_prefix(&header);
    frame.extend_from_slice(blob);
    frame
}
