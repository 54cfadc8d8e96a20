//! Folding a validated upload into the round's fp32 accumulator, straight from the chunks it
//! arrived in: `acc[p] += upload[p]` for every tensor it carries, in fp32 as
//! `accumulator += upload.float()` does in PyTorch. A parameter's first contribution of a round
//! is stored instead of added, so the accumulator never needs zeroing.

use bytes::Bytes;

use crate::model::ModelLayout;
use crate::upload::StagedUpload;
use crate::wire::dtype::{WireDtype, bf16_to_f32};

/// Folds `upload` into `acc` (laid out by `layout`). `first[p]` says parameter `p` has no
/// contribution yet this round. Work is split over `threads` threads.
pub fn fold_upload(
    acc: &mut [f32],
    first: &[bool],
    layout: &ModelLayout,
    upload: &StagedUpload,
    threads: usize,
) {
    let mut per_param = split_by_param(acc, layout);
    let size = upload.dtype.size();
    let total: usize = upload.tensors.iter().map(|t| t.elements).sum();
    let threads = threads.clamp(1, total.div_ceil(1 << 16).max(1));

    // Cut the element stream into one contiguous share per thread, splitting tensors (and
    // their destination slices) at the share boundaries.
    let bounds: Vec<usize> = (0..=threads).map(|s| s * total / threads).collect();
    let mut shares: Vec<Vec<Job>> = (0..threads).map(|_| Vec::new()).collect();
    for t in &upload.tensors {
        let Some(mut dst) = per_param[t.param].take() else {
            continue;
        };
        let mut element = t.first_element;
        while !dst.is_empty() {
            // bounds[share] <= element < bounds[share + 1], so every piece is non-empty.
            let share = bounds.partition_point(|b| *b <= element) - 1;
            let (here, rest) = dst.split_at_mut((bounds[share + 1] - element).min(dst.len()));
            let len = here.len();
            shares[share].push(Job {
                first_element: element,
                dst: here,
                store: first[t.param],
            });
            element += len;
            dst = rest;
        }
    }
    let chunks = ChunkIndex::new(&upload.data);
    std::thread::scope(|scope| {
        for jobs in shares {
            let chunks = &chunks;
            let dtype = upload.dtype;
            scope.spawn(move || {
                for job in jobs {
                    fold_job(job, chunks, dtype, size);
                }
            });
        }
    });
}

struct Job<'a> {
    first_element: usize,
    dst: &'a mut [f32],
    store: bool,
}

fn split_by_param<'a>(acc: &'a mut [f32], layout: &ModelLayout) -> Vec<Option<&'a mut [f32]>> {
    let mut rest = acc;
    let mut out = Vec::with_capacity(layout.params().len());
    for p in layout.params() {
        let (here, tail) = rest.split_at_mut(p.numel);
        out.push(Some(here));
        rest = tail;
    }
    out
}

/// Finds which received chunk holds a byte of the data stream.
struct ChunkIndex<'a> {
    chunks: &'a [Bytes],
    starts: Vec<usize>,
}

impl<'a> ChunkIndex<'a> {
    fn new(chunks: &'a [Bytes]) -> Self {
        let mut starts = Vec::with_capacity(chunks.len());
        let mut at = 0;
        for c in chunks {
            starts.push(at);
            at += c.len();
        }
        Self { chunks, starts }
    }

    /// Calls `f` with consecutive slices covering `len` bytes from byte `from`.
    fn for_each_slice(&self, from: usize, len: usize, mut f: impl FnMut(&[u8])) {
        let mut chunk = self
            .starts
            .partition_point(|s| *s <= from)
            .saturating_sub(1);
        let mut offset = from - self.starts.get(chunk).copied().unwrap_or(0);
        let mut left = len;
        while left > 0 {
            let Some(data) = self.chunks.get(chunk) else {
                return;
            };
            let take = (data.len() - offset).min(left);
            f(&data[offset..offset + take]);
            left -= take;
            chunk += 1;
            offset = 0;
        }
    }
}

fn fold_job(job: Job<'_>, chunks: &ChunkIndex<'_>, dtype: WireDtype, size: usize) {
    let Job {
        first_element,
        dst,
        store,
    } = job;
    let mut written = 0;
    // Bytes of an element split between two chunks.
    let mut carry = [0u8; 4];
    let mut carried = 0;
    chunks.for_each_slice(first_element * size, dst.len() * size, |mut bytes| {
        if carried > 0 {
            let need = (size - carried).min(bytes.len());
            carry[carried..carried + need].copy_from_slice(&bytes[..need]);
            carried += need;
            bytes = &bytes[need..];
            if carried < size {
                return;
            }
            fold_run(&mut dst[written..written + 1], &carry[..size], dtype, store);
            written += 1;
            carried = 0;
        }
        let whole = bytes.len() / size;
        fold_run(
            &mut dst[written..written + whole],
            &bytes[..whole * size],
            dtype,
            store,
        );
        written += whole;
        carried = bytes.len() - whole * size;
        carry[..carried].copy_from_slice(&bytes[whole * size..]);
    });
}

/// `dst += elements` (or `dst = elements + 0.0` when storing: `+ 0.0` turns `-0.0` into
/// `+0.0`, exactly as adding to a zero-filled accumulator would).
fn fold_run(dst: &mut [f32], bytes: &[u8], dtype: WireDtype, store: bool) {
    match (dtype, store) {
        (WireDtype::Bf16, false) => {
            for (d, e) in dst.iter_mut().zip(bytes.chunks_exact(2)) {
                *d += bf16_to_f32(u16::from_le_bytes([e[0], e[1]]));
            }
        }
        (WireDtype::Bf16, true) => {
            for (d, e) in dst.iter_mut().zip(bytes.chunks_exact(2)) {
                *d = bf16_to_f32(u16::from_le_bytes([e[0], e[1]])) + 0.0;
            }
        }
        (WireDtype::Fp32, false) => {
            for (d, e) in dst.iter_mut().zip(bytes.chunks_exact(4)) {
                *d += f32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            }
        }
        (WireDtype::Fp32, true) => {
            for (d, e) in dst.iter_mut().zip(bytes.chunks_exact(4)) {
                *d = f32::from_le_bytes([e[0], e[1], e[2], e[3]]) + 0.0;
            }
        }
    }
}
