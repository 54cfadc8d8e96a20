//! From a view the pickle describes to a tensor's bytes: the storage record is found and its
//! size checked, the view is held inside it, and a non-contiguous view is gathered into
//! row-major order. All sizes are checked before anything is allocated.

use std::ops::Range;

use super::TorchSaveError;
use super::unpickler::TensorView;

/// Where a tensor's row-major bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TensorBytes {
    /// A byte range of the archive itself (a contiguous view): nothing was copied.
    Archive(Range<usize>),
    /// Gathered from a strided view (transposed, sliced with steps, broadcast).
    Gathered(Vec<u8>),
}

/// Elements of `shape`, or `None` on overflow.
pub fn numel(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |n, d| n.checked_mul(*d))
}

/// Checks `view` against its storage record (`record`, a byte range of the archive) and
/// returns the bytes it would need, without allocating.
pub fn output_bytes(
    name: &str,
    view: &TensorView,
    record: &Range<usize>,
) -> Result<u64, TorchSaveError> {
    let bad = |problem: String| TorchSaveError::Tensor {
        name: name.to_string(),
        problem,
    };
    let size = view.storage.dtype.size() as u64;
    let storage_bytes = view.storage.numel.checked_mul(size).ok_or_else(|| {
        bad(format!(
            "storage of {} elements overflows",
            view.storage.numel
        ))
    })?;
    if storage_bytes != record.len() as u64 {
        return Err(bad(format!(
            "storage {} claims {} elements ({storage_bytes} bytes) but its record holds {} bytes",
            view.storage.key,
            view.storage.numel,
            record.len()
        )));
    }
    let elements = numel(&view.shape).ok_or_else(|| bad("shape overflows".into()))?;
    if elements == 0 {
        if view.offset > view.storage.numel {
            return Err(bad("storage offset past the storage".into()));
        }
        return Ok(0);
    }
    // The last element the view touches (strides are non-negative: the pickle reader refuses
    // negative ones).
    let last = view
        .shape
        .iter()
        .zip(&view.stride)
        .try_fold(view.offset, |at, (d, s)| {
            (d - 1).checked_mul(*s).and_then(|x| at.checked_add(x))
        })
        .ok_or_else(|| bad("view overflows".into()))?;
    if last >= view.storage.numel {
        return Err(bad(format!(
            "view (offset {}, shape {:?}, stride {:?}) reaches element {last} of a storage of {}",
            view.offset, view.shape, view.stride, view.storage.numel
        )));
    }
    elements
        .checked_mul(size)
        .ok_or_else(|| bad("size overflows".into()))
}

/// Adds a tensor's `bytes` to the `total` of an archive's tensors, refusing a total past
/// `limit` (checked for every tensor before any is gathered or held).
pub fn count_against(total: &mut u64, bytes: u64, limit: u64) -> Result<(), TorchSaveError> {
    *total = total.saturating_add(bytes);
    if *total > limit {
        return Err(TorchSaveError::TooLarge {
            declared: *total,
            limit,
        });
    }
    Ok(())
}

/// Whether the view is row-major contiguous (strides of size-1 dimensions do not matter,
/// as in `Tensor.is_contiguous`).
pub fn is_contiguous(view: &TensorView) -> bool {
    let mut expected = 1u64;
    for (d, s) in view.shape.iter().zip(&view.stride).rev() {
        if *d != 1 && *s != expected {
            return false;
        }
        expected = expected.saturating_mul(*d);
    }
    true
}

/// The view's bytes in row-major order. `output_bytes` must have passed for it.
pub fn materialize(
    name: &str,
    view: &TensorView,
    record: &Range<usize>,
    archive: &[u8],
    bytes: u64,
) -> Result<TensorBytes, TorchSaveError> {
    let size = view.storage.dtype.size();
    let bytes = usize::try_from(bytes).map_err(|_| TorchSaveError::TooLarge {
        declared: bytes,
        limit: usize::MAX as u64,
    })?;
    // Checked in output_bytes: the view lies inside the record, so these cannot overflow.
    let start = record.start + view.offset as usize * size;
    if is_contiguous(view) {
        return Ok(TensorBytes::Archive(start..start + bytes));
    }
    let storage = &archive[record.clone()];
    let mut out = Vec::new();
    out.try_reserve_exact(bytes)
        .map_err(|_| TorchSaveError::Tensor {
            name: name.to_string(),
            problem: format!("cannot allocate {bytes} bytes"),
        })?;
    let shape: Vec<usize> = view.shape.iter().map(|d| *d as usize).collect();
    let stride: Vec<usize> = view.stride.iter().map(|s| *s as usize).collect();
    let mut index = vec![0usize; shape.len()];
    let elements = bytes / size;
    let mut at = view.offset as usize;
    for _ in 0..elements {
        out.extend_from_slice(&storage[at * size..(at + 1) * size]);
        // Odometer: advance the last dimension, carrying into the ones before it.
        for dim in (0..shape.len()).rev() {
            index[dim] += 1;
            at += stride[dim];
            if index[dim] < shape[dim] {
                break;
            }
            at -= stride[dim] * shape[dim];
            index[dim] = 0;
        }
    }
    Ok(TensorBytes::Gathered(out))
}
