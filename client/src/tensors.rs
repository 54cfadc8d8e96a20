//! Converting between tch tensors and safetensors bytes.

use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

use crate::wire::dtype::WireDtype;
use crate::wire::frame::{FrameHeader, frame_prefix};
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

/// The submit frame of the pseudo-gradient `snapshot − live` in `dtype`, computed straight
/// into the frame: one `torch.sub(old, live, out=view)` per tensor, where `view` is the
/// tensor's place in the frame buffer. No fp32 Δ and no per-tensor cast is materialised, so
/// the frame (2 bytes per parameter in bf16) is the only full copy the upload needs. `live`
/// may be on any device and in any float dtype; `snapshot` is the fp32 CPU copy the round
/// started from, in the same order.
pub fn pseudo_gradient_frame(
    header: &FrameHeader,
    snapshot: &[Named],
    live: &[Named],
    dtype: WireDtype,
) -> Result<Vec<u8>, TensorError> {
    if snapshot.len() != live.len() {
        return Err(TensorError::Format(format!(
            "{} live tensors for a snapshot of {}",
            live.len(),
            snapshot.len()
        )));
    }
    let mut prefix = frame_prefix(header);
    // JSON allows trailing spaces: pad the frame header so what follows starts 8-byte
    // aligned, and with it (the safetensors header is padded too) every tensor's data.
    while !prefix.len().is_multiple_of(8) {
        prefix.push(b' ');
    }
    let header_length = (prefix.len() - 4) as u32;
    prefix[..4].copy_from_slice(&header_length.to_be_bytes());
    let (json, data_len) = safetensors_header_json(snapshot, dtype);
    let data_start = prefix.len() + 8 + json.len();
    // Zeroed by the allocator (fresh pages), then overwritten once by the subtraction.
    let mut out = vec![0u8; data_start + data_len];
    out[..prefix.len()].copy_from_slice(&prefix);
    out[prefix.len()..prefix.len() + 8].copy_from_slice(&(json.len() as u64).to_le_bytes());
    out[prefix.len() + 8..data_start].copy_from_slice(json.as_bytes());
    let mut offset = data_start;
    for ((name, old), (_, current)) in snapshot.iter().zip(live) {
        if old.size() != current.size() {
            return Err(TensorError::Format(format!(
                "{name}: live shape {:?}, snapshot shape {:?}",
                current.size(),
                old.size()
            )));
        }
        let bytes = old.numel() * dtype.size();
        let current = current.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?;
        let shape = old.size();
        let region = &mut out[offset..offset + bytes];
        // SAFETY: `region` is exactly `numel` elements of `dtype`, 8-byte aligned (see the
        // padding above), exclusively borrowed for as long as `view` lives (to the end of
        // this iteration), and the subtraction writes it without resizing (same shape).
        let view = unsafe {
            Tensor::f_from_blob(
                region.as_mut_ptr(),
                &shape,
                &contiguous_strides(&shape),
                kind_of(dtype),
                Device::Cpu,
            )?
        };
        let _written = tch::no_grad(|| old.f_sub_out(&view, &current))?;
        offset += bytes;
    }
    Ok(out)
}

fn contiguous_strides(shape: &[i64]) -> Vec<i64> {
    let mut strides = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// The padded safetensors header for `tensors` in `dtype`, and the data section's length.
fn safetensors_header_json(tensors: &[Named], dtype: WireDtype) -> (String, usize) {
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
    (json, offset)
}

/// Appends `tensors` (cast to `dtype`, on the CPU) to `out` as a safetensors blob.
pub fn append_safetensors(
    out: &mut Vec<u8>,
    tensors: &[Named],
    dtype: WireDtype,
) -> Result<(), TensorError> {
    let (json, data_len) = safetensors_header_json(tensors, dtype);
    out.reserve(8 + json.len() + data_len);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::PayloadFormat;

    fn named(values: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(values).reshape(shape)
    }

    /// The frame computed in place carries the same tensors, to the bit, as encoding an
    /// explicit fp32 Δ, for both wire dtypes and a worker id that leaves the frame header at
    /// an odd length; its data section is 8-byte aligned.
    #[test]
    fn pseudo_gradient_frame_matches_the_frame_of_an_explicit_delta() {
        let old_a: Vec<f32> = (0..12).map(|i| i as f32 * 0.31 - 1.7).collect();
        let new_a: Vec<f32> = (0..12).map(|i| i as f32 * 0.29 + 0.05).collect();
        let snapshot = vec![
            ("a".to_string(), named(&old_a, &[3, 4])),
            ("b".to_string(), named(&[1.0, -2.5, 3.25], &[3])),
        ];
        let live = vec![
            ("a".to_string(), named(&new_a, &[3, 4])),
            ("b".to_string(), named(&[1.0, 2.5, -3.0], &[3])),
        ];
        let delta: Vec<Named> = snapshot
            .iter()
            .zip(&live)
            .map(|((name, old), (_, new))| (name.clone(), old - new))
            .collect();
        let header = FrameHeader {
            worker_id: "odd-w".into(),
            fragment_id: None,
            fmt: PayloadFormat::Safetensors,
            round: Some(7),
        };
        for dtype in [WireDtype::Bf16, WireDtype::Fp32] {
            let frame = pseudo_gradient_frame(&header, &snapshot, &live, dtype).unwrap();
            let (parsed, used) = crate::wire::frame::parse_frame_header(&frame)
                .unwrap()
                .unwrap();
            assert_eq!(parsed, header);
            assert_eq!(used % 8, 0, "safetensors part starts aligned");
            let got = decode_safetensors(&frame[used..]).unwrap();
            let expected = encode_frame(&header, &delta, dtype).unwrap();
            let (_, expected_used) = crate::wire::frame::parse_frame_header(&expected)
                .unwrap()
                .unwrap();
            let expected = decode_safetensors(&expected[expected_used..]).unwrap();
            for (name, tensor) in &expected {
                let bits = |t: &Tensor| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
                assert_eq!(bits(&got[name]), bits(tensor), "{name} in {dtype:?}");
                assert_eq!(got[name].size(), tensor.size());
            }
        }
    }

    #[test]
    fn pseudo_gradient_frame_refuses_a_shape_change() {
        let snapshot = vec![("a".to_string(), named(&[1.0, 2.0], &[2]))];
        let live = vec![("a".to_string(), named(&[1.0, 2.0], &[1, 2]))];
        let header = FrameHeader {
            worker_id: "w".into(),
            fragment_id: None,
            fmt: PayloadFormat::Safetensors,
            round: None,
        };
        let error = pseudo_gradient_frame(&header, &snapshot, &live, WireDtype::Bf16).unwrap_err();
        assert!(error.to_string().contains("shape"), "{error}");
    }
}
