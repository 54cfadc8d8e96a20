//! What `data.pkl` says: the dict's tensors in order, the storages they view, and how far
//! their data has gone out.

use std::collections::HashMap;

use bytes::Bytes;

use super::super::tensor::{self, TensorBytes};
use super::super::unpickler::{self, TensorView};
use super::super::zip_reader::zip;
use super::super::{ReadLimits, TorchSaveError};
use super::StreamEvent;
use crate::wire::safetensors::{SafetensorsHeader, TensorEntry};

/// The tensors the pickle describes and how far their data has gone out.
pub(super) struct Plan {
    pub(super) tensors: Vec<PlannedTensor>,
    pub(super) storages: HashMap<String, Storage>,
    /// The next tensor whose data goes out.
    pub(super) next: usize,
    /// Bytes of the data section handed out.
    pub(super) emitted: usize,
}

pub(super) struct PlannedTensor {
    pub(super) name: String,
    pub(super) view: TensorView,
    /// Its row-major bytes.
    pub(super) bytes: u64,
    /// Whether its storage record is exactly its bytes (a contiguous view of all of a storage
    /// no other tensor views): then it can pass straight through.
    pub(super) whole_storage: bool,
}

pub(super) struct Storage {
    /// Bytes its record must hold.
    pub(super) record_len: u64,
    /// Tensors viewing it whose data has not gone out yet.
    pub(super) views_left: usize,
    /// Its record, once complete (when it was held rather than passed through).
    pub(super) data: Option<Bytes>,
    /// Whether its record has arrived (passed through or held).
    pub(super) arrived: bool,
}

impl Plan {
    /// The plan `data.pkl` describes, every view checked against its storage and the total
    /// against the limit before anything is held, and the header that announces it.
    pub(super) fn read(
        pickle: &[u8],
        limits: &ReadLimits,
    ) -> Result<(Self, SafetensorsHeader), TorchSaveError> {
        let views = unpickler::unpickle(pickle, limits.max_pickle_values)?;
        let mut storages: HashMap<String, Storage> = HashMap::new();
        let mut tensors = Vec::with_capacity(views.len());
        let mut total = 0u64;
        for (name, view) in views {
            let record_len = view
                .storage
                .numel
                .checked_mul(view.storage.dtype.size() as u64)
                .ok_or_else(|| TorchSaveError::Tensor {
                    name: name.clone(),
                    problem: format!("storage of {} elements overflows", view.storage.numel),
                })?;
            let storage = storages.entry(view.storage.key.clone()).or_insert(Storage {
                record_len,
                views_left: 0,
                data: None,
                arrived: false,
            });
            storage.views_left += 1;
            let record =
                0..usize::try_from(storage.record_len).map_err(|_| TorchSaveError::TooLarge {
                    declared: storage.record_len,
                    limit: limits.max_tensor_bytes,
                })?;
            let bytes = tensor::output_bytes(&name, &view, &record)?;
            tensor::count_against(&mut total, bytes, limits.max_tensor_bytes)?;
            let whole_storage =
                view.offset == 0 && tensor::is_contiguous(&view) && bytes == record_len;
            tensors.push(PlannedTensor {
                name,
                view,
                bytes,
                whole_storage,
            });
        }
        for t in &mut tensors {
            t.whole_storage &= storages
                .get(&t.view.storage.key)
                .is_some_and(|s| s.views_left == 1);
        }
        let mut offset = 0;
        let header = SafetensorsHeader {
            tensors: tensors
                .iter()
                .map(|t| {
                    let start = offset;
                    offset += t.bytes as usize;
                    TensorEntry {
                        name: t.name.clone(),
                        dtype: t.view.storage.dtype.safetensors_name().to_string(),
                        // Dimensions fit in usize: their product's bytes were checked above.
                        shape: t.view.shape.iter().map(|d| *d as usize).collect(),
                        data: start..offset,
                    }
                })
                .collect(),
            metadata: Default::default(),
            data_len: offset,
        };
        let plan = Self {
            tensors,
            storages,
            next: 0,
            emitted: 0,
        };
        Ok((plan, header))
    }

    /// Places storage record `key`, which arrived before `data.pkl` (unreferenced ones are
    /// dropped).
    pub(super) fn place_early(&mut self, key: &str, bytes: Bytes) -> Result<(), TorchSaveError> {
        let Some(storage) = self.storages.get_mut(key) else {
            return Ok(());
        };
        if bytes.len() as u64 != storage.record_len {
            return Err(zip(format!(
                "record data/{key} holds {} bytes; the pickle's storage needs {}",
                bytes.len(),
                storage.record_len
            )));
        }
        storage.arrived = true;
        storage.data = Some(bytes);
        Ok(())
    }

    /// Hands out, in the dict's order, the data of every tensor whose storage is held; the
    /// bytes of held records no longer needed (released).
    pub(super) fn flush(&mut self, out: &mut Vec<StreamEvent>) -> Result<u64, TorchSaveError> {
        let plan = self;
        let mut released = 0u64;
        while let Some(t) = plan.tensors.get(plan.next) {
            let key = &t.view.storage.key;
            let Some(storage) = plan.storages.get_mut(key) else {
                break;
            };
            let Some(data) = storage.data.clone() else {
                break;
            };
            let record = 0..data.len();
            let bytes = match tensor::materialize(&t.name, &t.view, &record, &data, t.bytes)? {
                TensorBytes::Archive(range) => data.slice(range),
                TensorBytes::Gathered(gathered) => Bytes::from(gathered),
            };
            storage.views_left -= 1;
            if storage.views_left == 0 {
                storage.data = None;
                released += data.len() as u64;
            }
            let len = bytes.len();
            if len > 0 {
                out.push(StreamEvent::Data {
                    offset: plan.emitted,
                    bytes,
                });
            }
            plan.emitted += len;
            plan.next += 1;
        }
        Ok(released)
    }
}
