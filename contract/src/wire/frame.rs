//! The submit frame of forgather's protocol: a 4-byte big-endian header length, a UTF-8 JSON
//! header `{worker_id, fragment_id?, fmt?}`, then the serialized tensors.

use serde::{Deserialize, Serialize};

/// Largest frame header accepted; real headers are a few dozen bytes.
pub const MAX_FRAME_HEADER_BYTES: usize = 64 * 1024;

/// Tensor serialization: named in a frame header (`fmt`), announced in `/info`
/// (`wire_format`) and requested with the `wire_format` query parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// safetensors: no code, dense tensors (our default).
    #[default]
    Safetensors,
    /// `torch.save` (a zip holding a pickle): forgather's default, read by the restricted
    /// reader in [`crate::wire::torch_save`], never unpickled.
    Pickle,
}

impl PayloadFormat {
    /// Its name on the wire (`safetensors`, `pickle`).
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadFormat::Safetensors => "safetensors",
            PayloadFormat::Pickle => "pickle",
        }
    }

    /// The format named `name`, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "safetensors" => Some(PayloadFormat::Safetensors),
            "pickle" => Some(PayloadFormat::Pickle),
            _ => None,
        }
    }
}

/// The JSON header of a submit frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameHeader {
    /// The submitting worker.
    pub worker_id: String,
    /// Fragment index (streaming DiLoCo); absent for whole-model submissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fragment_id: Option<u32>,
    /// Payload format; forgather treats an absent `fmt` as pickle.
    #[serde(default = "default_format")]
    pub fmt: PayloadFormat,
    /// The round of the parameters this pseudo-gradient was computed from. Optional (forgather
    /// does not send it); when present, the coordinator refuses a mismatch with 409
    /// `stale_round` instead of folding a gradient against parameters it no longer holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u64>,
}

fn default_format() -> PayloadFormat {
    PayloadFormat::Pickle
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame header length {0} exceeds the limit of {MAX_FRAME_HEADER_BYTES} bytes")]
    HeaderTooLarge(usize),
    #[error("frame header is not valid JSON: {0}")]
    HeaderNotJson(String),
    #[error("body ended inside the frame header")]
    Truncated,
}

/// Parses the frame header from the start of a body. `Ok(None)` means more bytes are needed;
/// otherwise returns the header and how many bytes it took.
pub fn parse_frame_header(prefix: &[u8]) -> Result<Option<(FrameHeader, usize)>, FrameError> {
    let Some(length) = prefix.get(..4) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
    if length > MAX_FRAME_HEADER_BYTES {
        return Err(FrameError::HeaderTooLarge(length));
    }
    let Some(json) = prefix.get(4..4 + length) else {
        return Ok(None);
    };
    let header =
        serde_json::from_slice(json).map_err(|e| FrameError::HeaderNotJson(e.to_string()))?;
    Ok(Some((header, 4 + length)))
}

/// Builds a frame around an already serialized payload (used by clients and tests).
pub fn encode_frame(header: &FrameHeader, payload: &[u8]) -> Vec<u8> {
    let mut frame = frame_prefix(header);
    frame.extend_from_slice(payload);
    frame
}

/// The length and JSON header that precede the payload.
pub fn frame_prefix(header: &FrameHeader) -> Vec<u8> {
    // A struct of strings and integers always serialises.
    let json = serde_json::to_vec(header).unwrap_or_default();
    let mut prefix = Vec::with_capacity(4 + json.len());
    prefix.extend_from_slice(&(json.len() as u32).to_be_bytes());
    prefix.extend_from_slice(&json);
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trips_and_reports_its_length() {
        let header = FrameHeader {
            worker_id: "w1".into(),
            fragment_id: None,
            fmt: PayloadFormat::Safetensors,
            round: Some(3),
        };
        let frame = encode_frame(&header, b"payload");
        let (parsed, used) = parse_frame_header(&frame).unwrap().unwrap();
        assert_eq!(parsed, header);
        assert_eq!(&frame[used..], b"payload");
    }

    #[test]
    fn partial_prefixes_ask_for_more() {
        let frame = encode_frame(
            &FrameHeader {
                worker_id: "w".into(),
                fragment_id: None,
                fmt: PayloadFormat::Safetensors,
                round: None,
            },
            b"",
        );
        for cut in 0..frame.len() {
            assert_eq!(parse_frame_header(&frame[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn absent_fmt_means_pickle_as_in_forgather() {
        let mut frame = 20u32.to_be_bytes().to_vec();
        frame.extend_from_slice(br#"{"worker_id":"w9"}  "#);
        let (header, _) = parse_frame_header(&frame).unwrap().unwrap();
        assert_eq!(header.fmt, PayloadFormat::Pickle);
    }

    #[test]
    fn garbage_headers_are_refused() {
        let mut frame = 5u32.to_be_bytes().to_vec();
        frame.extend_from_slice(b"nope!");
        assert!(matches!(
            parse_frame_header(&frame),
            Err(FrameError::HeaderNotJson(_))
        ));
        assert!(matches!(
            parse_frame_header(&u32::MAX.to_be_bytes()),
            Err(FrameError::HeaderTooLarge(_))
        ));
    }
}
