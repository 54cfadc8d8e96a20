//! Receiving an upload: body chunks go in, a fully validated [`StagedUpload`] comes out, or an
//! error that says what was wrong. Nothing here touches the coordinator's state, so a
//! truncated, malformed or non-finite upload changes nothing.
//!
//! The body is checked as it streams: the frame header first (so an unknown worker is refused
//! before its tensors are read), then the safetensors header against the model (names, shapes,
//! dtype), then every element for finiteness. A `torch.save` payload (`fmt` absent or
//! `"pickle"`, forgather's default) streams through the contract's restricted reader: once its
//! `data.pkl` has arrived, its tensors take the same checks and their bytes flow on as they
//! arrive; its central directory, at the very end, must then agree with what streamed by
//! (else the upload is refused like a truncated one). Validated data goes to the receiver's
//! [`DataSink`]: a staging buffer, or (for the round's first upload) straight to the caller,
//! which stores it into the accumulator as it arrives.

use std::sync::Arc;

use bytes::Bytes;

use crate::model::ModelLayout;
use crate::staging::StagingBuffer;
use crate::wire::dtype::WireDtype;
use crate::wire::frame::{FrameError, FrameHeader, PayloadFormat, parse_frame_header};
use crate::wire::safetensors::{
    SafetensorsError, SafetensorsHeader, TensorEntry, header_length, parse_header,
};
use crate::wire::torch_save::{self, ReadLimits, StreamEvent, StreamReader, TorchSaveError};

/// What the upload must contain.
#[derive(Clone, Debug)]
pub enum Expectation {
    /// A pseudo-gradient: tensors of the model, in the announced upload dtype, covering at
    /// least the `required` parameters (indices into the layout).
    PseudoGradient {
        layout: Arc<ModelLayout>,
        dtype: WireDtype,
        required: Arc<Vec<usize>>,
    },
    /// Initial parameters: any set of float tensors (one dtype), which defines the model.
    InitialParameters,
}

/// Why an upload was refused. Each maps to an HTTP status in the server.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
    #[error(transparent)]
    TorchSave(#[from] TorchSaveError),
    #[error(
        "the frame says fmt \"safetensors\" but the payload is a torch.save zip archive; send \
         it with fmt \"pickle\" (or no fmt)"
    )]
    FormatMismatch,
    #[error("unknown tensor name {0}: the model has no such parameter")]
    UnknownTensor(String),
    #[error("tensor {name} has shape {got:?}, the model's is {expected:?}")]
    WrongShape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("tensor {name} has dtype {got}, expected {expected} (upload_dtype in /info)")]
    WrongDtype {
        name: String,
        expected: &'static str,
        got: String,
    },
    #[error("tensors have different dtypes ({0} and {1}); send one dtype")]
    MixedDtypes(String, String),
    #[error("missing tensors: {0}")]
    MissingTensors(String),
    #[error("upload holds no tensors")]
    Empty,
    #[error("tensor {0} contains NaN or Inf")]
    NotFinite(String),
    #[error("body ended after {received} of {expected} bytes of tensor data")]
    Truncated { received: usize, expected: usize },
    #[error("body has bytes after the tensor data")]
    TrailingBytes,
    #[error(
        "the safetensors header declares {declared} bytes of tensor data, more than \
         limits.max_upload_bytes ({limit} bytes)"
    )]
    TooLarge { declared: usize, limit: u64 },
    #[error("the coordinator cannot allocate {0} bytes to receive this upload")]
    OutOfMemory(usize),
}

/// One tensor of a staged upload, in data order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedTensor {
    /// Index of the parameter in the layout.
    pub param: usize,
    /// Index of its first element in the data stream.
    pub first_element: usize,
    /// Elements in it.
    pub elements: usize,
}

/// Where validated tensor data goes.
#[derive(Debug)]
pub enum DataSink {
    /// Kept in a buffer, to be folded once the whole upload has arrived and passed.
    Stage(StagingBuffer),
    /// Handed back piece by piece ([`UploadReceiver::take_validated`]) as it passes.
    Stream,
}

/// A complete, validated upload, ready to fold.
#[derive(Debug)]
pub struct StagedUpload {
    /// The frame header (who sent it).
    pub frame: FrameHeader,
    /// Element type of all tensors.
    pub dtype: WireDtype,
    /// Tensors in data order.
    pub tensors: Vec<StagedTensor>,
    /// The data section (empty when it was streamed).
    pub data: StagingBuffer,
    /// Bytes of tensor data received.
    pub data_len: usize,
    /// The model these tensors define (initial parameters only).
    pub layout: Option<ModelLayout>,
}

enum Stage {
    Frame,
    HeaderLength,
    Header {
        length: usize,
    },
    /// A `torch.save` archive, read as it streams: its tensors' data flows on as it arrives.
    TorchSave(Box<StreamReader>),
    Data,
}

/// Consumes an upload body chunk by chunk.
pub struct UploadReceiver {
    expectation: Option<Expectation>,
    /// Most bytes of tensor data a header may declare (`limits.max_upload_bytes`): checked
    /// before anything is allocated for them.
    max_data_bytes: u64,
    /// Chunks that arrived after the frame header but before the expectation was known.
    held: Vec<Bytes>,
    stage: Stage,
    /// Bytes of the current header that have arrived but are not parsed yet.
    pending: Vec<u8>,
    frame: Option<FrameHeader>,
    dtype: Option<WireDtype>,
    tensors: Vec<StagedTensor>,
    entries: Vec<TensorEntry>,
    layout: Option<ModelLayout>,
    sink: DataSink,
    /// Streamed data that passed validation: (offset in the data section, bytes).
    validated: Vec<(usize, Bytes)>,
    data_len: usize,
    received: usize,
    /// Bytes of an element split across two chunks.
    carry: Vec<u8>,
}

impl UploadReceiver {
    /// A receiver for an upload that must meet `expectation` and declare at most
    /// `max_data_bytes` of tensor data, keeping its data in a buffer of its own.
    pub fn new(expectation: Expectation, max_data_bytes: u64) -> Self {
        let mut receiver = Self::awaiting_expectation(max_data_bytes);
        receiver.expectation = Some(expectation);
        receiver
    }

    /// A receiver whose expectation depends on who sends the upload: once [`Self::frame`]
    /// names the worker, call [`Self::set_expectation`]. Until then later bytes are held.
    pub fn awaiting_expectation(max_data_bytes: u64) -> Self {
        Self {
            expectation: None,
            max_data_bytes,
            held: Vec::new(),
            stage: Stage::Frame,
            pending: Vec::new(),
            frame: None,
            dtype: None,
            tensors: Vec::new(),
            entries: Vec::new(),
            layout: None,
            sink: DataSink::Stage(StagingBuffer::owned()),
            validated: Vec::new(),
            data_len: 0,
            received: 0,
            carry: Vec::new(),
        }
    }

    /// The frame header, once it has arrived.
    pub fn frame(&self) -> Option<&FrameHeader> {
        self.frame.as_ref()
    }

    /// Sets what the upload must contain and where its data goes, then processes the bytes
    /// held until now.
    pub fn set_expectation(
        &mut self,
        expectation: Expectation,
        sink: DataSink,
    ) -> Result<(), UploadError> {
        self.expectation = Some(expectation);
        self.sink = sink;
        for chunk in std::mem::take(&mut self.held) {
            self.push(chunk)?;
        }
        Ok(())
    }

    /// Feeds the next chunk of the body.
    pub fn push(&mut self, mut chunk: Bytes) -> Result<(), UploadError> {
        while !chunk.is_empty() {
            if self.frame.is_some() && self.expectation.is_none() {
                self.held.push(chunk);
                return Ok(());
            }
            match self.stage {
                Stage::Frame => {
                    let parsed = self.take_header_bytes(&mut chunk, |pending| {
                        Ok(parse_frame_header(pending)?)
                    })?;
                    if let Some(frame) = parsed {
                        self.stage = match frame.fmt {
                            PayloadFormat::Pickle => {
                                Stage::TorchSave(Box::new(StreamReader::new(ReadLimits {
                                    max_tensor_bytes: self.max_data_bytes,
                                    ..ReadLimits::default()
                                })))
                            }
                            PayloadFormat::Safetensors => Stage::HeaderLength,
                        };
                        self.frame = Some(frame);
                    }
                }
                Stage::HeaderLength => {
                    let parsed = self.take_header_bytes(&mut chunk, |pending| {
                        // torch.save writes a zip archive: refuse it by its magic number when
                        // the frame claims safetensors, rather than misread its bytes.
                        if pending.starts_with(torch_save::MAGIC) {
                            return Err(UploadError::FormatMismatch);
                        }
                        Ok(header_length(pending)?.map(|length| (length, 8)))
                    })?;
                    if let Some(length) = parsed {
                        self.stage = Stage::Header { length };
                    }
                }
                Stage::Header { length } => {
                    let parsed = self.take_header_bytes(&mut chunk, |pending| {
                        match pending.get(..length) {
                            None => Ok(None),
                            Some(json) => Ok(Some((parse_header(json)?, length))),
                        }
                    })?;
                    if let Some(header) = parsed {
                        self.plan(header)?;
                        self.stage = Stage::Data;
                    }
                }
                Stage::TorchSave(_) => {
                    self.read_torch_save(std::mem::take(&mut chunk))?;
                }
                Stage::Data => {
                    if self.received + chunk.len() > self.data_len {
                        return Err(UploadError::TrailingBytes);
                    }
                    self.check_finite(&chunk)?;
                    let offset = self.received;
                    self.received += chunk.len();
                    let data = std::mem::take(&mut chunk);
                    match &mut self.sink {
                        DataSink::Stage(buffer) => buffer.extend(&data),
                        DataSink::Stream => self.validated.push((offset, data)),
                    }
                }
            }
        }
        Ok(())
    }

    /// Feeds a chunk of a `torch.save` archive to the contract's restricted streaming reader:
    /// its plan takes the same checks as a safetensors header, its tensors' bytes the same
    /// finiteness check, as they arrive.
    fn read_torch_save(&mut self, chunk: Bytes) -> Result<(), UploadError> {
        let Stage::TorchSave(reader) = &mut self.stage else {
            return Ok(());
        };
        let mut events = Vec::new();
        reader.push(chunk, &mut events)?;
        for event in events {
            match event {
                StreamEvent::Planned(header) => self.plan(header)?,
                StreamEvent::Data { offset, bytes } => {
                    debug_assert_eq!(offset, self.received, "the reader hands data in order");
                    self.check_finite(&bytes)?;
                    self.received += bytes.len();
                    match &mut self.sink {
                        DataSink::Stage(buffer) => buffer.extend(&bytes),
                        DataSink::Stream => self.validated.push((offset, bytes)),
                    }
                }
            }
        }
        Ok(())
    }

    /// Buffers `chunk` behind the header bytes already pending and tries to parse the header.
    /// `parse` returns the value and how many pending bytes it used; the rest of the chunk
    /// (the bytes after the header) is left in `chunk`.
    fn take_header_bytes<T>(
        &mut self,
        chunk: &mut Bytes,
        parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, UploadError>,
    ) -> Result<Option<T>, UploadError> {
        let before = self.pending.len();
        self.pending.extend_from_slice(chunk);
        match parse(&self.pending)? {
            None => {
                *chunk = Bytes::new();
                Ok(None)
            }
            Some((value, used)) => {
                *chunk = chunk.slice(used - before..);
                self.pending.clear();
                Ok(Some(value))
            }
        }
    }

    /// Checks the tensors the header announces against what is expected, before their data.
    fn plan(&mut self, header: SafetensorsHeader) -> Result<(), UploadError> {
        if header.tensors.is_empty() {
            return Err(UploadError::Empty);
        }
        let first = &header.tensors[0].dtype;
        let mut element = 0;
        let Some(expectation) = &self.expectation else {
            return Err(UploadError::Empty);
        };
        match expectation {
            Expectation::PseudoGradient {
                layout,
                dtype,
                required,
            } => {
                let mut present = vec![false; layout.params().len()];
                for t in &header.tensors {
                    let param = layout
                        .index_of(&t.name)
                        .ok_or_else(|| UploadError::UnknownTensor(t.name.clone()))?;
                    let info = &layout.params()[param];
                    if t.shape != info.shape {
                        return Err(UploadError::WrongShape {
                            name: t.name.clone(),
                            expected: info.shape.clone(),
                            got: t.shape.clone(),
                        });
                    }
                    if t.dtype != dtype.safetensors_name() {
                        return Err(UploadError::WrongDtype {
                            name: t.name.clone(),
                            expected: dtype.safetensors_name(),
                            got: t.dtype.clone(),
                        });
                    }
                    present[param] = true;
                    self.tensors.push(StagedTensor {
                        param,
                        first_element: element,
                        elements: info.numel,
                    });
                    element += info.numel;
                }
                let missing: Vec<_> = required
                    .iter()
                    .filter(|p| !present[**p])
                    .map(|p| layout.params()[*p].name.as_str())
                    .collect();
                if !missing.is_empty() {
                    let shown: Vec<_> = missing.iter().take(5).copied().collect();
                    let more = missing.len().saturating_sub(5);
                    let suffix = if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    };
                    return Err(UploadError::MissingTensors(format!(
                        "{}{suffix}",
                        shown.join(", ")
                    )));
                }
                self.dtype = Some(*dtype);
            }
            Expectation::InitialParameters => {
                if let Some(other) = header.tensors.iter().find(|t| &t.dtype != first) {
                    return Err(UploadError::MixedDtypes(first.clone(), other.dtype.clone()));
                }
                let dtype = WireDtype::from_safetensors_name(first).ok_or_else(|| {
                    UploadError::WrongDtype {
                        name: header.tensors[0].name.clone(),
                        expected: "F32 or BF16",
                        got: first.clone(),
                    }
                })?;
                let layout = ModelLayout::new(
                    header
                        .tensors
                        .iter()
                        .map(|t| (t.name.clone(), t.shape.clone()))
                        .collect(),
                )
                .map_err(UploadError::UnknownTensor)?;
                for t in &header.tensors {
                    let param = layout.index_of(&t.name).unwrap_or_default();
                    let elements = layout.params()[param].numel;
                    self.tensors.push(StagedTensor {
                        param,
                        first_element: element,
                        elements,
                    });
                    element += elements;
                }
                self.layout = Some(layout);
                self.dtype = Some(dtype);
            }
        }
        // The declared size is the client's word: held against the limit before any of it is
        // allocated, and allocated fallibly, so a header claiming petabytes is a 413, not an
        // abort of the whole process.
        if header.data_len as u64 > self.max_data_bytes {
            return Err(UploadError::TooLarge {
                declared: header.data_len,
                limit: self.max_data_bytes,
            });
        }
        self.entries = header.tensors;
        self.data_len = header.data_len;
        if let DataSink::Stage(buffer) = &mut self.sink {
            buffer
                .reserve_total(self.data_len)
                .map_err(|_| UploadError::OutOfMemory(self.data_len))?;
        }
        Ok(())
    }

    fn check_finite(&mut self, chunk: &[u8]) -> Result<(), UploadError> {
        let Some(dtype) = self.dtype else {
            return Ok(());
        };
        let size = dtype.size();
        let mut body = chunk;
        if !self.carry.is_empty() {
            let need = (size - self.carry.len()).min(body.len());
            self.carry.extend_from_slice(&body[..need]);
            body = &body[need..];
            if self.carry.len() == size {
                if !dtype.all_finite(&self.carry) {
                    return Err(self.not_finite_at(self.received));
                }
                self.carry.clear();
            }
        }
        let whole = body.len() / size * size;
        if !dtype.all_finite(&body[..whole]) {
            let offset = self.received + (chunk.len() - body.len());
            let position = body[..whole]
                .chunks_exact(size)
                .position(|e| !dtype.all_finite(e))
                .unwrap_or_default();
            return Err(self.not_finite_at(offset + position * size));
        }
        self.carry.extend_from_slice(&body[whole..]);
        Ok(())
    }

    fn not_finite_at(&self, data_offset: usize) -> UploadError {
        let name = self
            .entries
            .iter()
            .find(|t| t.data.contains(&data_offset))
            .map(|t| t.name.clone())
            .unwrap_or_default();
        UploadError::NotFinite(name)
    }

    /// Element type and tensors (in data order) once the safetensors header has been checked.
    pub fn plan_so_far(&self) -> Option<(WireDtype, &[StagedTensor])> {
        self.dtype.map(|dtype| (dtype, self.tensors.as_slice()))
    }

    /// Streamed data validated since the last call, in order.
    pub fn take_validated(&mut self) -> Vec<(usize, Bytes)> {
        std::mem::take(&mut self.validated)
    }

    /// Ends the body: the upload, if it arrived whole.
    pub fn finish(mut self) -> Result<StagedUpload, UploadError> {
        if let Stage::TorchSave(reader) = std::mem::replace(&mut self.stage, Stage::Data) {
            // The archive's central directory must describe exactly what streamed by.
            reader.finish()?;
            if self.dtype.is_none() {
                return Err(TorchSaveError::Container("no data.pkl record".into()).into());
            }
        }
        let complete = matches!(self.stage, Stage::Data) && self.received == self.data_len;
        if !complete {
            if self.frame.is_none() {
                return Err(FrameError::Truncated.into());
            }
            return Err(UploadError::Truncated {
                received: self.received,
                expected: self.data_len,
            });
        }
        Ok(StagedUpload {
            frame: self.frame.ok_or(FrameError::Truncated)?,
            dtype: self.dtype.unwrap_or(WireDtype::Fp32),
            tensors: self.tensors,
            data: match self.sink {
                DataSink::Stage(buffer) => buffer,
                DataSink::Stream => StagingBuffer::owned(),
            },
            data_len: self.data_len,
            layout: self.layout,
        })
    }
}

#[cfg(test)]
mod torch_save_tests;
