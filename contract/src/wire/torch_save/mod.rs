//! `torch.save` files of a flat `Dict[str, Tensor]`, read and written without Python or
//! libtorch: forgather's default wire codec (`fmt` absent or `"pickle"`).
//!
//! A `torch.save` file is a zip archive (`<folder>/data.pkl`, `<folder>/data/<key>` per
//! storage, `byteorder`, `version`) whose pickle describes each tensor as a strided view of a
//! storage. Reading it here is not unpickling: [`unpickler`] understands only the opcodes and
//! globals such a dict needs and refuses everything else by name (HTTP 415), so nothing in an
//! upload is ever executed. Every size in the archive or the pickle is checked against the
//! body and the caller's limits before anything is allocated for it.
//!
//! The result is described like a safetensors blob ([`safetensors_header`]), so the
//! coordinator checks and folds either format the same way.

mod dtype;
mod opcodes;
mod stream;
mod tensor;
mod unpickler;
mod writer;
mod zip_reader;
mod zip_writer;

#[cfg(test)]
mod tests;

pub use dtype::StorageDtype;
pub use stream::{StreamEvent, StreamReader};
pub use tensor::TensorBytes;
pub use writer::{ARCHIVE_FOLDER, TensorToWrite, encode, encode_into, from_safetensors, write};

use super::safetensors::{SafetensorsHeader, TensorEntry};

/// The first bytes of every `torch.save` file (a zip local header).
pub const MAGIC: &[u8; 4] = b"PK\x03\x04";

/// Why a `torch.save` archive was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TorchSaveError {
    /// An opcode a state dict never needs (415).
    #[error(
        "pickle opcode {opcode} at byte {position} of data.pkl is refused: a torch.save'd \
         Dict[str, Tensor] never needs it"
    )]
    RefusedOpcode { opcode: String, position: usize },
    /// A global outside the allowlist (415).
    #[error(
        "pickle global {0} is refused: only collections.OrderedDict, \
         torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and the typed \
         storages (torch.FloatStorage, …) are read"
    )]
    RefusedGlobal(String),
    /// The zip container is malformed or uses something torch.save does not (400).
    #[error("torch.save container: {0}")]
    Container(String),
    /// The pickle is malformed or does not hold a flat dict of tensors (400).
    #[error("torch.save pickle: {0}")]
    Pickle(String),
    /// A tensor's view or storage is inconsistent (400).
    #[error("tensor {name}: {problem}")]
    Tensor { name: String, problem: String },
    /// The tensors hold more bytes than allowed (413).
    #[error("the archive's tensors hold {declared} bytes, more than the limit of {limit} bytes")]
    TooLarge { declared: u64, limit: u64 },
}

impl TorchSaveError {
    /// Whether the archive was refused for *what* it asks for (an opcode or global outside
    /// the allowlist: HTTP 415) rather than for being malformed (400) or too large (413).
    pub fn is_refused_construct(&self) -> bool {
        matches!(
            self,
            TorchSaveError::RefusedOpcode { .. } | TorchSaveError::RefusedGlobal(_)
        )
    }
}

/// What a reader may be made to hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    /// Most bytes all tensors together may hold (for the coordinator:
    /// `limits.max_upload_bytes`). Broadcast views can claim far more than the archive holds,
    /// so this bounds what gathering may allocate.
    pub max_tensor_bytes: u64,
    /// Most entries in the zip archive.
    pub max_entries: usize,
    /// Largest `data.pkl` read.
    pub max_pickle_bytes: usize,
    /// Most objects, stack and memo entries the pickle reader holds at once (about ten per
    /// tensor are needed).
    pub max_pickle_values: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_tensor_bytes: 64 << 30,
            max_entries: 1 << 20,
            max_pickle_bytes: 256 << 20,
            max_pickle_values: 1 << 23,
        }
    }
}

/// One tensor read from an archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TorchSaveTensor {
    /// Its key in the dict.
    pub name: String,
    /// Element type.
    pub dtype: StorageDtype,
    /// Shape (empty for a 0-d tensor).
    pub shape: Vec<usize>,
    /// Its row-major little-endian bytes.
    pub data: TensorBytes,
}

impl TorchSaveTensor {
    /// The tensor's row-major bytes; `archive` is the buffer it was read from.
    pub fn bytes<'a>(&'a self, archive: &'a [u8]) -> &'a [u8] {
        match &self.data {
            TensorBytes::Archive(range) => &archive[range.clone()],
            TensorBytes::Gathered(bytes) => bytes,
        }
    }

    /// Bytes of data.
    pub fn byte_len(&self) -> usize {
        match &self.data {
            TensorBytes::Archive(range) => range.len(),
            TensorBytes::Gathered(bytes) => bytes.len(),
        }
    }
}

/// Reads the tensors of a `torch.save` archive, in the dict's order.
pub fn read(archive: &[u8], limits: &ReadLimits) -> Result<Vec<TorchSaveTensor>, TorchSaveError> {
    let zip = zip_reader::ZipArchive::parse(archive, limits.max_entries)?;
    if let Some(order) = zip.record("byteorder")
        && &archive[order] != b"little"
    {
        return Err(TorchSaveError::Container(
            "byteorder is not \"little\" (big-endian archives are not read)".into(),
        ));
    }
    let pickle = zip
        .record("data.pkl")
        .ok_or_else(|| TorchSaveError::Container("no data.pkl record".into()))?;
    if pickle.len() > limits.max_pickle_bytes {
        return Err(TorchSaveError::Container(format!(
            "data.pkl holds {} bytes, more than the limit of {}",
            pickle.len(),
            limits.max_pickle_bytes
        )));
    }
    let views = unpickler::unpickle(&archive[pickle], limits.max_pickle_values)?;
    // Every view is checked, and the total held against the limit, before any is gathered.
    let mut planned = Vec::with_capacity(views.len());
    let mut total = 0u64;
    for (name, view) in views {
        let record = zip
            .record(&format!("data/{}", view.storage.key))
            .ok_or_else(|| {
                TorchSaveError::Container(format!(
                    "tensor {name} refers to storage {}, which has no data/{} record",
                    view.storage.key, view.storage.key
                ))
            })?;
        let bytes = tensor::output_bytes(&name, &view, &record)?;
        tensor::count_against(&mut total, bytes, limits.max_tensor_bytes)?;
        planned.push((name, view, record, bytes));
    }
    planned
        .into_iter()
        .map(|(name, view, record, bytes)| {
            let data = tensor::materialize(&name, &view, &record, archive, bytes)?;
            // Dimensions fit in usize: their product's bytes were checked above.
            let shape = view.shape.iter().map(|d| *d as usize).collect();
            Ok(TorchSaveTensor {
                dtype: view.storage.dtype,
                name,
                shape,
                data,
            })
        })
        .collect()
}

/// The tensors described as a safetensors header whose data section is their bytes
/// concatenated in order: the coordinator validates both formats with the same code.
pub fn safetensors_header(tensors: &[TorchSaveTensor]) -> SafetensorsHeader {
    let mut offset = 0;
    let tensors = tensors
        .iter()
        .map(|t| {
            let start = offset;
            offset += t.byte_len();
            TensorEntry {
                name: t.name.clone(),
                dtype: t.dtype.safetensors_name().to_string(),
                shape: t.shape.clone(),
                data: start..offset,
            }
        })
        .collect();
    SafetensorsHeader {
        tensors,
        metadata: Default::default(),
        data_len: offset,
    }
}
