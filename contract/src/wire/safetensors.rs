//! The safetensors format: an 8-byte little-endian header length, a JSON header mapping each
//! tensor name to `{dtype, shape, data_offsets}`, then the raw little-endian data. It carries
//! no code, so unlike pickle nothing in an upload is ever executed.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::dtype::{WireDtype, encode_f32s};
use super::layout::ModelLayout;

/// Largest JSON header accepted (the safetensors library's own limit).
pub const MAX_HEADER_BYTES: usize = 100_000_000;

/// One tensor as the header describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    /// Name in the state dict.
    pub name: String,
    /// dtype name as written (`BF16`, `F32`, …).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Byte range within the data section.
    pub data: std::ops::Range<usize>,
}

/// A parsed header: the tensors in data order and the size of the data section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafetensorsHeader {
    /// Tensors sorted by their position in the data section.
    pub tensors: Vec<TensorEntry>,
    /// `__metadata__`, if any.
    pub metadata: BTreeMap<String, String>,
    /// Bytes of tensor data that follow the header.
    pub data_len: usize,
}

/// Why a safetensors blob was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SafetensorsError {
    #[error("safetensors header length {0} exceeds the limit of {MAX_HEADER_BYTES} bytes")]
    HeaderTooLarge(u64),
    #[error("safetensors header is not valid JSON: {0}")]
    HeaderNotJson(String),
    #[error("tensor {name}: {problem}")]
    BadTensor { name: String, problem: String },
    #[error("tensor data is not contiguous: {0}")]
    NotContiguous(String),
}

#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

fn element_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// Reads the 8-byte header length; `None` until 8 bytes are available.
pub fn header_length(prefix: &[u8]) -> Result<Option<usize>, SafetensorsError> {
    let Some(bytes) = prefix.get(..8) else {
        return Ok(None);
    };
    let mut length = [0u8; 8];
    length.copy_from_slice(bytes);
    let length = u64::from_le_bytes(length);
    if length > MAX_HEADER_BYTES as u64 {
        return Err(SafetensorsError::HeaderTooLarge(length));
    }
    Ok(Some(length as usize))
}

/// Parses the JSON header. Checks that sizes match shapes and dtypes and that the tensors tile
/// the data section exactly (no gaps, no overlaps), as the format requires.
pub fn parse_header(json: &[u8]) -> Result<SafetensorsHeader, SafetensorsError> {
    let raw: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(json).map_err(|e| SafetensorsError::HeaderNotJson(e.to_string()))?;
    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        if name == "__metadata__" {
            metadata = serde_json::from_value(value)
                .map_err(|e| SafetensorsError::HeaderNotJson(format!("__metadata__: {e}")))?;
            continue;
        }
        let bad = |problem: String| SafetensorsError::BadTensor {
            name: name.clone(),
            problem,
        };
        let entry: RawEntry = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        let (begin, end) = entry.data_offsets;
        let size = element_size(&entry.dtype)
            .ok_or_else(|| bad(format!("unknown dtype {}", entry.dtype)))?;
        let expected = entry
            .shape
            .iter()
            .try_fold(size, |n, d| n.checked_mul(*d))
            .ok_or_else(|| bad("shape overflows".into()))?;
        if end < begin || end - begin != expected {
            return Err(bad(format!(
                "data_offsets [{begin}, {end}) hold {} bytes but shape {:?} of {} needs {expected}",
                end.saturating_sub(begin),
                entry.shape,
                entry.dtype
            )));
        }
        tensors.push(TensorEntry {
            name,
            dtype: entry.dtype,
            shape: entry.shape,
            data: begin..end,
        });
    }
    tensors.sort_by_key(|t| (t.data.start, t.data.end));
    let mut cursor = 0;
    for t in &tensors {
        if t.data.start != cursor {
            return Err(SafetensorsError::NotContiguous(format!(
                "{} starts at byte {} but the previous tensor ends at {cursor}",
                t.name, t.data.start
            )));
        }
        cursor = t.data.end;
    }
    Ok(SafetensorsHeader {
        tensors,
        metadata,
        data_len: cursor,
    })
}

/// Encodes the flat fp32 `values` laid out by `layout` as a safetensors blob in `dtype`.
pub fn encode(
    layout: &ModelLayout,
    values: &[f32],
    dtype: WireDtype,
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(layout, values, dtype, metadata, &mut out);
    out
}

/// [`encode`] into `out` (cleared first), reusing its allocation.
pub fn encode_into(
    layout: &ModelLayout,
    values: &[f32],
    dtype: WireDtype,
    metadata: &BTreeMap<String, String>,
    out: &mut Vec<u8>,
) {
    let header = header_json(layout, dtype, metadata);
    let data_len = layout.total_elements() * dtype.size();
    out.clear();
    out.reserve(8 + header.len() + data_len);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    encode_f32s(values, dtype, out);
}

/// The JSON header for `layout` in `dtype`, padded with spaces to a multiple of 8 bytes so the
/// data section is aligned (as the safetensors library writes it).
pub fn header_json(
    layout: &ModelLayout,
    dtype: WireDtype,
    metadata: &BTreeMap<String, String>,
) -> String {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::json!(metadata));
    }
    for p in layout.params() {
        let begin = p.offset * dtype.size();
        header.insert(
            p.name.clone(),
            serde_json::json!({
                "dtype": dtype.safetensors_name(),
                "shape": p.shape,
                "data_offsets": [begin, begin + p.numel * dtype.size()],
            }),
        );
    }
    let mut json = serde_json::Value::Object(header).to_string();
    pad_header(&mut json);
    json
}

/// Pads a safetensors JSON header with spaces so the data section starts 8-byte aligned
/// (the 8-byte length prefix plus the header is a multiple of 8), as the format recommends.
pub fn pad_header(json: &mut String) {
    while !(8 + json.len()).is_multiple_of(8) {
        json.push(' ');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> ModelLayout {
        ModelLayout::new(vec![("w".into(), vec![2, 2]), ("b".into(), vec![3])]).unwrap()
    }

    #[test]
    fn encoded_blob_parses_back_with_the_layouts_offsets() {
        let values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
        let blob = encode(&layout(), &values, WireDtype::Bf16, &BTreeMap::new());
        let n = header_length(&blob).unwrap().unwrap();
        assert_eq!((8 + n) % 8, 0, "data section aligned");
        let header = parse_header(&blob[8..8 + n]).unwrap();
        assert_eq!(header.data_len, 14);
        assert_eq!(blob.len(), 8 + n + 14);
        let names: Vec<_> = header.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["b", "w"]);
        assert_eq!(header.tensors[1].shape, vec![2, 2]);
        assert_eq!(header.tensors[1].data, 6..14);
    }

    #[test]
    fn sizes_that_disagree_with_the_shape_are_refused() {
        let json = br#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}"#;
        assert!(matches!(
            parse_header(json),
            Err(SafetensorsError::BadTensor { .. })
        ));
    }

    #[test]
    fn gaps_and_overlaps_are_refused() {
        let gap = br#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
                       "b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
        assert!(matches!(
            parse_header(gap),
            Err(SafetensorsError::NotContiguous(_))
        ));
        let overlap = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                           "b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
        assert!(matches!(
            parse_header(overlap),
            Err(SafetensorsError::NotContiguous(_))
        ));
    }

    #[test]
    fn huge_header_lengths_are_refused_before_reading_them() {
        let prefix = u64::MAX.to_le_bytes();
        assert!(matches!(
            header_length(&prefix),
            Err(SafetensorsError::HeaderTooLarge(_))
        ));
        assert_eq!(header_length(&[1, 2, 3]), Ok(None));
    }
}
