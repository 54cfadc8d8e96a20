//! Writes a flat `Dict[str, Tensor]` as `torch.save` does: a protocol 2 pickle naming only
//! `torch._utils._rebuild_tensor_v2`, `collections.OrderedDict` and the typed storage classes
//! (so `torch.load(weights_only=True)` accepts it), one storage record per tensor, and the
//! `byteorder` and `version` records.

use crate::wire::dtype::{WireDtype, encode_f32s};
use crate::wire::layout::ModelLayout;

use super::dtype::StorageDtype;
use super::opcodes as op;
use super::zip_writer::ZipWriter;

/// The folder every record lives in, as `torch.save` names it for an in-memory buffer.
pub const ARCHIVE_FOLDER: &str = "archive";
/// The serialization version `torch.save` writes today.
const FORMAT_VERSION: &[u8] = b"3\n";

/// One tensor to write: row-major little-endian bytes of `shape` in `dtype`.
#[derive(Clone, Copy, Debug)]
pub struct TensorToWrite<'a> {
    /// Its key in the dict.
    pub name: &'a str,
    /// Element type.
    pub dtype: StorageDtype,
    /// Shape (empty for a 0-d tensor).
    pub shape: &'a [usize],
    /// Exactly `numel * dtype.size()` bytes.
    pub data: &'a [u8],
}

/// A `torch.save` archive of `tensors`, in their order.
pub fn write(tensors: &[TensorToWrite<'_>]) -> Vec<u8> {
    let described: Vec<_> = tensors.iter().map(|t| (t.name, t.dtype, t.shape)).collect();
    let mut out = Vec::new();
    write_with(&described, &mut out, |i, buffer| {
        buffer.extend_from_slice(tensors[i].data)
    });
    out
}

/// The tensors of a safetensors blob written as a `torch.save` archive (same names, dtypes,
/// shapes and bytes): how a response already encoded in safetensors is served as pickle.
pub fn from_safetensors(blob: &[u8]) -> Result<Vec<u8>, String> {
    use crate::wire::safetensors::{header_length, parse_header};
    let n = header_length(blob)
        .map_err(|e| e.to_string())?
        .ok_or("truncated safetensors header length")?;
    let json = blob.get(8..8 + n).ok_or("truncated safetensors header")?;
    let header = parse_header(json).map_err(|e| e.to_string())?;
    let data = &blob[8 + n..];
    let tensors = header
        .tensors
        .iter()
        .map(|t| {
            let dtype = StorageDtype::ALL
                .into_iter()
                .find(|d| d.safetensors_name() == t.dtype)
                .ok_or_else(|| format!("dtype {} has no torch.save storage here", t.dtype))?;
            let bytes = data
                .get(t.data.clone())
                .ok_or_else(|| format!("tensor {} is truncated", t.name))?;
            Ok(TensorToWrite {
                name: &t.name,
                dtype,
                shape: &t.shape,
                data: bytes,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(write(&tensors))
}

/// Encodes the flat fp32 `values` laid out by `layout` as a `torch.save` archive in `dtype`
/// (the pickle twin of [`crate::wire::safetensors::encode`]).
pub fn encode(layout: &ModelLayout, values: &[f32], dtype: WireDtype) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(layout, values, dtype, &mut out);
    out
}

/// [`encode`] into `out` (cleared first), reusing its allocation.
pub fn encode_into(layout: &ModelLayout, values: &[f32], dtype: WireDtype, out: &mut Vec<u8>) {
    let described: Vec<_> = layout
        .params()
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                StorageDtype::from(dtype),
                p.shape.as_slice(),
            )
        })
        .collect();
    out.clear();
    out.reserve(layout.total_elements() * dtype.size() + layout.params().len() * 256 + 1024);
    write_with(&described, out, |i, buffer| {
        let range = layout.params()[i].range();
        encode_f32s(&values[range], dtype, buffer);
    });
}

/// Writes the archive; `data(i, buffer)` appends tensor `i`'s bytes.
fn write_with(
    tensors: &[(&str, StorageDtype, &[usize])],
    out: &mut Vec<u8>,
    mut data: impl FnMut(usize, &mut Vec<u8>),
) {
    let pickle = pickle(tensors);
    let mut zip = ZipWriter::new(out);
    let record = |name: &str| format!("{ARCHIVE_FOLDER}/{name}");
    zip.entry(&record("data.pkl"), &pickle);
    zip.entry(&record(".format_version"), b"1");
    zip.entry(&record(".storage_alignment"), b"64");
    zip.entry(&record("byteorder"), b"little");
    for (i, (_, dtype, shape)) in tensors.iter().enumerate() {
        let bytes = shape.iter().product::<usize>() * dtype.size();
        zip.start(&record(&format!("data/{i}")), bytes as u64);
        data(i, zip.buffer());
        zip.finish();
    }
    zip.entry(&record("version"), FORMAT_VERSION);
    zip.close();
}

/// The protocol 2 pickle `torch.save` writes for these tensors, each with its own storage
/// (key = its index), offset 0 and row-major strides.
fn pickle(tensors: &[(&str, StorageDtype, &[usize])]) -> Vec<u8> {
    let mut p = Pickle(Vec::with_capacity(64 + tensors.len() * 160));
    p.0.extend_from_slice(&[op::PROTO, 2, op::EMPTY_DICT]);
    // Every global once, memoized, recalled for each tensor (as Python's pickler does).
    const REBUILD: u8 = 0;
    const ORDERED_DICT: u8 = 1;
    p.0.push(op::MARK);
    let mut storage_memo: Vec<(StorageDtype, u32)> = Vec::new();
    let mut next_memo = 2u32;
    for (i, (name, dtype, shape)) in tensors.iter().enumerate() {
        p.string(name);
        if i == 0 {
            p.global("torch._utils", "_rebuild_tensor_v2");
            p.0.extend_from_slice(&[op::BINPUT, REBUILD]);
        } else {
            p.0.extend_from_slice(&[op::BINGET, REBUILD]);
        }
        p.0.push(op::MARK);
        p.0.push(op::MARK);
        p.string("storage");
        match storage_memo.iter().find(|(d, _)| d == dtype) {
            Some((_, index)) => p.get(*index),
            None => {
                p.global("torch", dtype.storage_class());
                p.put(next_memo);
                storage_memo.push((*dtype, next_memo));
                next_memo += 1;
            }
        }
        p.string(&i.to_string());
        p.string("cpu");
        let numel: usize = shape.iter().product();
        p.int(numel as u64);
        p.0.push(op::TUPLE);
        p.0.push(op::BINPERSID);
        p.int(0);
        p.tuple(shape.iter().map(|d| *d as u64));
        let mut strides = vec![0u64; shape.len()];
        let mut running = 1u64;
        for (s, d) in strides.iter_mut().zip(shape.iter()).rev() {
            *s = running;
            running *= *d as u64;
        }
        p.tuple(strides.into_iter());
        p.0.push(op::NEWFALSE);
        if i == 0 {
            p.global("collections", "OrderedDict");
            p.0.extend_from_slice(&[op::BINPUT, ORDERED_DICT]);
        } else {
            p.0.extend_from_slice(&[op::BINGET, ORDERED_DICT]);
        }
        p.0.push(op::EMPTY_TUPLE);
        p.0.push(op::REDUCE);
        p.0.push(op::TUPLE);
        p.0.push(op::REDUCE);
    }
    p.0.push(op::SETITEMS);
    p.0.push(op::STOP);
    p.0
}

struct Pickle(Vec<u8>);

impl Pickle {
    fn string(&mut self, s: &str) {
        self.0.push(op::BINUNICODE);
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn global(&mut self, module: &str, name: &str) {
        self.0.push(op::GLOBAL);
        for part in [module, name] {
            self.0.extend_from_slice(part.as_bytes());
            self.0.push(b'\n');
        }
    }

    fn put(&mut self, index: u32) {
        self.0.push(op::LONG_BINPUT);
        self.0.extend_from_slice(&index.to_le_bytes());
    }

    fn get(&mut self, index: u32) {
        self.0.push(op::LONG_BINGET);
        self.0.extend_from_slice(&index.to_le_bytes());
    }

    /// A non-negative integer in the shortest form Python's pickler uses.
    fn int(&mut self, v: u64) {
        if v < 0x100 {
            self.0.extend_from_slice(&[op::BININT1, v as u8]);
        } else if v < 0x1_0000 {
            self.0.push(op::BININT2);
            self.0.extend_from_slice(&(v as u16).to_le_bytes());
        } else if v < 0x8000_0000 {
            self.0.push(op::BININT);
            self.0.extend_from_slice(&(v as u32).to_le_bytes());
        } else {
            // LONG1: little-endian two's complement, with a zero byte when the top bit is set.
            let bytes = v.to_le_bytes();
            let mut len = 8 - (v.leading_zeros() / 8) as usize;
            if bytes[len - 1] & 0x80 != 0 {
                len += 1;
            }
            self.0.extend_from_slice(&[op::LONG1, len as u8]);
            self.0.extend_from_slice(&bytes[..len.min(8)]);
            if len == 9 {
                self.0.push(0);
            }
        }
    }

    fn tuple(&mut self, items: impl ExactSizeIterator<Item = u64>) {
        let n = items.len();
        if n == 0 {
            self.0.push(op::EMPTY_TUPLE);
            return;
        }
        if n > 3 {
            self.0.push(op::MARK);
        }
        for v in items {
            self.int(v);
        }
        self.0.push(match n {
            1 => op::TUPLE1,
            2 => op::TUPLE2,
            3 => op::TUPLE3,
            _ => op::TUPLE,
        });
    }
}
