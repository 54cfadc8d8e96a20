//! Converting between tch tensors and safetensors bytes.

use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

use crate::wire::dtype::WireDtype;
use crate::wire::frame::{FrameHeader, PayloadFormat, frame_prefix};
use crate::wire::safetensors::{header_length, parse_header};

/// A named tensor.
pub type Named = (String, Tensor);

/// Problems decoding or encoding tensors.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    #[error("invalid safetensors: {0}")]
    Format(String),
    #[error("tensor operation failed: {0}")]
    Torch(#[from] tch::TchError),
}

fn kind_of(dtype: WireDtype) -> Kind {
    match dtype {
        WireDtype::Bf16 => Kind::BFloat16,
        WireDtype::Fp32 => Kind::Float,
    }
}

/// A complete submit frame: frame header, then the tensors as safetensors in `dtype`,
/// written straight into one buffer (the only full copy made of the pseudo-gradient).
pub fn encode_frame(
    header: &FrameHeader,
    tensors: &[Named],
    dtype: WireDtype,
) -> Result<Vec<u8>, TensorError> {
    let mut out = frame_prefix(header);
    append_safetensors(&mut out, tensors, dtype)?;
    Ok(out)
}

/// A frame for `worker_id` (fmt safetensors) carrying `tensors` from round `round`.
pub fn submission_frame(
    worker_id: &str,
    round: Option<u64>,
    tensors: &[Named],
    dtype: WireDtype,
) -> Result<Vec<u8>, TensorError> {
    let header = FrameHeader {
        worker_id: worker_id.to_string(),
        fragment_id: None,
        fmt: PayloadFormat::Safetensors,
        round,
    };
    encode_frame(&header, tensors, dtype)
}

/// Appends `tensors` (cast to `dtype`, on the CPU) to `out` as a safetensors blob.
pub fn append_safetensors(
    out: &mut Vec<u8>,
    tensors: &[Named],
    dtype: WireDtype,
) -> Result<(), TensorError> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, tensor) in tensors {
        let bytes = tensor.numel() * dtype.size();
        let shape: Vec<i64> = tensor.size();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype.safetensors_name(), "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut json = serde_json::Value::Object(header).to_string();
    crate::wire::safetensors::pad_header(&mut json);
    out.reserve(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(json.as_bytes());
    for (_, tensor) in tensors {
        let cast = tensor
            .f_to_kind(kind_of(dtype))?
            .f_to_device(Device::Cpu)?
            .f_contiguous()?;
        let start = out.len();
        let bytes = cast.numel() * dtype.size();
        out.resize(start + bytes, 0);
        cast.f_copy_data_u8(&mut out[start..], cast.numel())?;
    }
    Ok(())
}

/// Decodes a safetensors blob into fp32 CPU tensors, keyed by name.
pub fn decode_safetensors(bytes: &[u8]) -> Result<BTreeMap<String, Tensor>, TensorError> {
    let format = |e: String| TensorError::Format(e);
    let n = header_length(bytes)
        .map_err(|e| format(e.to_string()))?
        .ok_or_else(|| format("too short".into()))?;
    let json = bytes
        .get(8..8 + n)
        .ok_or_else(|| format("header cut short".into()))?;
    let header = parse_header(json).map_err(|e| format(e.to_string()))?;
    let data = &bytes[8 + n..];
    if data.len() != header.data_len {
        return Err(format(format!(
            "{} bytes of data, header says {}",
            data.len(),
            header.data_len
        )));
    }
    let mut out = BTreeMap::new();
    for t in header.tensors {
        let dtype = WireDtype::from_safetensors_name(&t.dtype)
            .ok_or_else(|| format(format!("{}: dtype {} is not F32 or BF16", t.name, t.dtype)))?;
        let shape: Vec<i64> = t.shape.iter().map(|d| *d as i64).collect();
        let tensor = Tensor::f_from_data_size(&data[t.data], &shape, kind_of(dtype))?
            .f_to_kind(Kind::Float)?;
        out.insert(t.name, tensor);
    }
    Ok(out)
}
