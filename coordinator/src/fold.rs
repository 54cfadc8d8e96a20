//! Folding uploads into the round's fp32 accumulator: `acc[p] += upload[p]` for every tensor
//! an upload carries, in fp32 as `accumulator += upload.float()` does in PyTorch. A
//! parameter's first contribution of a round is stored instead of added, so the accumulator
//! never needs zeroing.
//!
//! Two ways in: [`fold_upload`] adds a complete, validated upload from its staging buffer,
//! over several threads; [`StreamStore`] stores the round's first upload piece by piece as
//! it arrives (storing into parameters nobody has contributed to yet needs no undo if the
//! upload later fails: their contributor count stays 0, so the values are never read).

use crate::model::ModelLayout;
use crate::upload::StagedTensor;
use crate::wire::dtype::{WireDtype, bf16_to_f32};

/// Elements per unit of work handed to a thread.
const PIECE: usize = 1 << 18;

/// Folds the complete `data` section of an upload of `tensors` (in data order) into `acc`
/// (laid out by `layout`). `first[p]` says parameter `p` has no contribution yet this round.
pub fn fold_upload(
    acc: &mut [f32],
    first: &[bool],
    layout: &ModelLayout,
    tensors: &[StagedTensor],
    data: &[u8],
    dtype: WireDtype,
    threads: usize,
) {
    let size = dtype.size();
    let mut per_param = split_by_param(acc, layout);
    let mut shares: Vec<Vec<Piece<'_>>> = Vec::new();
    shares.resize_with(threads.max(1), Vec::new);
    let mut next = 0;
    for t in tensors {
        let Some(dst) = per_param[t.param].take() else {
            continue;
        };
        let src = &data[t.first_element * size..(t.first_element + t.elements) * size];
        for (dst, src) in dst.chunks_mut(PIECE).zip(src.chunks(PIECE * size)) {
            let share = next % shares.len();
            shares[share].push((dst, src, first[t.param]));
            next += 1;
        }
    }
    std::thread::scope(|scope| {
        for share in shares.into_iter().filter(|s| !s.is_empty()) {
            scope.spawn(move || {
                for (dst, src, store) in share {
                    fold_run(dst, src, dtype, store);
                }
            });
        }
    });
}

/// Destination, source bytes, and whether to store (first contribution) or add.
type Piece<'a> = (&'a mut [f32], &'a [u8], bool);

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

/// Stores an upload into the accumulator as its validated pieces arrive, in order.
#[derive(Debug)]
pub struct StreamStore {
    tensors: Vec<StagedTensor>,
    dtype: WireDtype,
    /// Data-section bytes consumed so far.
    consumed: usize,
    /// Bytes of an element split between two pieces.
    carry: [u8; 4],
    carried: usize,
}

impl StreamStore {
    /// A store for an upload of `tensors` (in data order) in `dtype`.
    pub fn new(tensors: Vec<StagedTensor>, dtype: WireDtype) -> Self {
        Self {
            tensors,
            dtype,
            consumed: 0,
            carry: [0; 4],
            carried: 0,
        }
    }

    /// Stores the next piece (`offset` must be where the previous one ended).
    pub fn store(
        &mut self,
        acc: &mut [f32],
        layout: &ModelLayout,
        offset: usize,
        mut bytes: &[u8],
    ) {
        debug_assert_eq!(offset, self.consumed, "pieces arrive in order");
        let size = self.dtype.size();
        self.consumed += bytes.len();
        if self.carried > 0 {
            let need = (size - self.carried).min(bytes.len());
            self.carry[self.carried..self.carried + need].copy_from_slice(&bytes[..need]);
            self.carried += need;
            bytes = &bytes[need..];
            if self.carried < size {
                return;
            }
            let element = (self.consumed - bytes.len()) / size - 1;
            let carry = self.carry;
            self.store_elements(acc, layout, element, &carry[..size]);
            self.carried = 0;
        }
        let whole = bytes.len() / size * size;
        let element = (self.consumed - bytes.len()) / size;
        self.store_elements(acc, layout, element, &bytes[..whole]);
        self.carried = bytes.len() - whole;
        self.carry[..self.carried].copy_from_slice(&bytes[whole..]);
    }

    /// Stores whole elements starting at data-stream element `element`.
    fn store_elements(&self, acc: &mut [f32], layout: &ModelLayout, element: usize, bytes: &[u8]) {
        let size = self.dtype.size();
        let mut element = element;
        let mut bytes = bytes;
        let mut index = self
            .tensors
            .partition_point(|t| t.first_element + t.elements <= element);
        while !bytes.is_empty() {
            let Some(t) = self.tensors.get(index) else {
                return;
            };
            let within = element - t.first_element;
            let n = (t.elements - within).min(bytes.len() / size);
            let start = layout.params()[t.param].offset + within;
            fold_run(
                &mut acc[start..start + n],
                &bytes[..n * size],
                self.dtype,
                true,
            );
            bytes = &bytes[n * size..];
            element += n;
            index += 1;
        }
    }
}

/// `dst += elements` (or `dst = elements + 0.0` when storing: `+ 0.0` turns `-0.0` into
/// `+0.0`, exactly as adding to a zero-filled accumulator would). Picks an AVX2 build at run
/// time when the CPU has it.
fn fold_run(dst: &mut [f32], bytes: &[u8], dtype: WireDtype, store: bool) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { fold_run_avx2(dst, bytes, dtype, store) };
        return;
    }
    fold_run_portable(dst, bytes, dtype, store);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn fold_run_avx2(dst: &mut [f32], bytes: &[u8], dtype: WireDtype, store: bool) {
    if store {
        store_run_streaming(dst, bytes, dtype);
    } else {
        fold_run_portable(dst, bytes, dtype, false);
    }
}

/// The storing half of [`fold_run`] with non-temporal stores: the accumulator is far larger
/// than the caches and is not read again until the next upload or the outer step, so writing
/// around the cache saves the read of every destination line a normal store makes first
/// (a third less memory traffic for the round's first upload).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn store_run_streaming(dst: &mut [f32], bytes: &[u8], dtype: WireDtype) {
    use std::arch::x86_64::{
        __m128i, _mm_loadu_si128, _mm_sfence, _mm256_add_ps, _mm256_castsi256_ps,
        _mm256_cvtepu16_epi32, _mm256_loadu_ps, _mm256_setzero_ps, _mm256_slli_epi32,
        _mm256_stream_ps,
    };
    const LANES: usize = 8;
    // Streaming stores need 32-byte aligned destinations: the unaligned head goes the
    // ordinary way.
    let head = dst.as_ptr().align_offset(32).min(dst.len());
    let size = dtype.size();
    let (dst_head, dst_body) = dst.split_at_mut(head);
    fold_run_portable(dst_head, &bytes[..head * size], dtype, true);
    let bytes = &bytes[head * size..];
    let vectors = dst_body.len() / LANES;
    let zero = _mm256_setzero_ps();
    for i in 0..vectors {
        let out = dst_body[i * LANES..].as_mut_ptr();
        // SAFETY: `bytes` holds `size` bytes per destination element (the caller's contract,
        // as in `fold_run_portable`), so both loads stay in bounds; `out` is 32-byte aligned
        // (the head was split off) with at least 8 elements after it.
        unsafe {
            let values = match dtype {
                WireDtype::Bf16 => {
                    let raw = _mm_loadu_si128(bytes.as_ptr().add(i * LANES * 2).cast::<__m128i>());
                    _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16))
                }
                WireDtype::Fp32 => _mm256_loadu_ps(bytes.as_ptr().add(i * LANES * 4).cast()),
            };
            // `+ 0.0` turns -0.0 into +0.0, as in `fold_run_portable`.
            _mm256_stream_ps(out, _mm256_add_ps(values, zero));
        }
    }
    let done = vectors * LANES;
    fold_run_portable(&mut dst_body[done..], &bytes[done * size..], dtype, true);
    // Streaming stores are weakly ordered: make them visible before the caller publishes
    // the accumulator to another thread.
    _mm_sfence();
}

#[inline(always)]
fn fold_run_portable(dst: &mut [f32], bytes: &[u8], dtype: WireDtype, store: bool) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::dtype::f32_to_bf16;

    fn layout() -> ModelLayout {
        ModelLayout::new(vec![("a".into(), vec![3, 5]), ("b".into(), vec![7])]).unwrap()
    }

    fn bf16(values: &[f32]) -> Vec<u8> {
        values
            .iter()
            .flat_map(|v| f32_to_bf16(*v).to_le_bytes())
            .collect()
    }

    #[test]
    fn streamed_pieces_of_any_size_store_what_a_staged_fold_stores() {
        let layout = layout();
        let values: Vec<f32> = (0..22).map(|i| i as f32 * 0.5 - 3.0).collect();
        let data = bf16(&values);
        // Data order b then a, the reverse of the layout's.
        let tensors = vec![
            StagedTensor {
                param: 1,
                first_element: 0,
                elements: 7,
            },
            StagedTensor {
                param: 0,
                first_element: 7,
                elements: 15,
            },
        ];
        let mut staged = vec![f32::NAN; 22];
        let first = [true, true];
        fold_upload(
            &mut staged,
            &first,
            &layout,
            &tensors,
            &data,
            WireDtype::Bf16,
            3,
        );
        for piece in [1, 3, 4, 7, 44] {
            let mut streamed = vec![f32::NAN; 22];
            let mut store = StreamStore::new(tensors.clone(), WireDtype::Bf16);
            for (i, chunk) in data.chunks(piece).enumerate() {
                store.store(&mut streamed, &layout, i * piece, chunk);
            }
            assert_eq!(
                streamed.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                staged.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "pieces of {piece} bytes"
            );
        }
        // b is stored at the layout's offset of b (after a's 15 elements).
        assert_eq!(staged[15], values[0]);
        assert_eq!(staged[0], values[7]);
    }

    /// The AVX2 store (non-temporal, aligned body) stores exactly what the plain loop does,
    /// whatever the destination's alignment and length, -0.0 included.
    #[test]
    fn vector_store_matches_the_plain_store_at_every_alignment() {
        let values: Vec<f32> = (0..203)
            .map(|i| {
                if i % 17 == 0 {
                    -0.0
                } else {
                    (i as f32 - 90.0) * 0.37
                }
            })
            .collect();
        for dtype in [WireDtype::Bf16, WireDtype::Fp32] {
            let data: Vec<u8> = match dtype {
                WireDtype::Bf16 => bf16(&values),
                WireDtype::Fp32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            };
            for start in 0..9 {
                for len in [0, 1, 7, 8, 9, 64, 150, 203 - start] {
                    let src = &data[start * dtype.size()..(start + len) * dtype.size()];
                    let mut expected = vec![f32::NAN; 212];
                    fold_run_portable(&mut expected[start..start + len], src, dtype, true);
                    let mut got = vec![f32::NAN; 212];
                    fold_run(&mut got[start..start + len], src, dtype, true);
                    assert_eq!(
                        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        expected.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{dtype:?}, start {start}, {len} elements"
                    );
                }
            }
        }
    }

    #[test]
    fn a_second_contribution_adds_and_negative_zero_is_stored_as_positive() {
        let layout = ModelLayout::new(vec![("w".into(), vec![4])]).unwrap();
        let tensors = vec![StagedTensor {
            param: 0,
            first_element: 0,
            elements: 4,
        }];
        let mut acc = vec![0.0; 4];
        let first = bf16(&[-0.0, 1.0, 2.0, 3.0]);
        fold_upload(
            &mut acc,
            &[true],
            &layout,
            &tensors,
            &first,
            WireDtype::Bf16,
            1,
        );
        assert_eq!(acc[0].to_bits(), 0.0f32.to_bits());
        fold_upload(
            &mut acc,
            &[false],
            &layout,
            &tensors,
            &first,
            WireDtype::Bf16,
            2,
        );
        assert_eq!(acc, vec![0.0, 2.0, 4.0, 6.0]);
    }
}
