//! Tensor element types on the wire and their conversions to and from the fp32 master copy.

use serde::{Deserialize, Serialize};

/// Precision of tensors on the wire (`/info` announces the server's choice).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireDtype {
    /// bfloat16: 2 bytes per element, fp32's range with an 8-bit mantissa.
    Bf16,
    /// IEEE float32: 4 bytes per element.
    Fp32,
}

impl WireDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            WireDtype::Bf16 => 2,
            WireDtype::Fp32 => 4,
        }
    }

    /// The dtype's name in a safetensors header.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            WireDtype::Bf16 => "BF16",
            WireDtype::Fp32 => "F32",
        }
    }

    /// The dtype named in a safetensors header, if it is one we exchange.
    pub fn from_safetensors_name(name: &str) -> Option<Self> {
        match name {
            "BF16" => Some(WireDtype::Bf16),
            "F32" => Some(WireDtype::Fp32),
            _ => None,
        }
    }

    /// The name used in configuration and `/info` (`bf16`, `fp32`).
    pub fn as_str(self) -> &'static str {
        match self {
            WireDtype::Bf16 => "bf16",
            WireDtype::Fp32 => "fp32",
        }
    }

    /// Whether every element of `bytes` (little-endian, whole elements) is finite.
    pub fn all_finite(self, bytes: &[u8]) -> bool {
        match self {
            // An exponent of all ones is Inf or NaN in both formats.
            WireDtype::Bf16 => bytes.chunks_exact(2).fold(true, |ok, e| {
                ok & (u16::from_le_bytes([e[0], e[1]]) & 0x7f80 != 0x7f80)
            }),
            WireDtype::Fp32 => bytes.chunks_exact(4).fold(true, |ok, e| {
                ok & (u32::from_le_bytes([e[0], e[1], e[2], e[3]]) & 0x7f80_0000 != 0x7f80_0000)
            }),
        }
    }
}

/// bf16 bits to f32: the bf16 bits are the top half of the f32.
#[inline]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// f32 to bf16 bits with round-to-nearest-even, as `tensor.to(torch.bfloat16)` does.
#[inline]
pub fn f32_to_bf16(value: f32) -> u16 {
    let bits = value.to_bits();
    if value.is_nan() {
        // A quiet NaN that keeps the sign.
        return ((bits >> 16) as u16) | 0x0040;
    }
    let rounding_bias = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(rounding_bias) >> 16) as u16
}

/// Elements from which [`encode_f32s`] spreads the work over the CPU's threads.
const PARALLEL_ELEMENTS: usize = 1 << 20;

/// Appends `values` to `out` in the wire dtype, little-endian. Large inputs (a model's
/// parameters, encoded once per round for every worker's download) are split over threads.
pub fn encode_f32s(values: &[f32], dtype: WireDtype, out: &mut Vec<u8>) {
    let size = dtype.size();
    let (start, len) = (out.len(), values.len() * size);
    out.reserve(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    let threads = if values.len() >= PARALLEL_ELEMENTS {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        1
    };
    if threads <= 1 {
        encode_into(values, dtype, spare);
    } else {
        let per_thread = values.len().div_ceil(threads);
        std::thread::scope(|scope| {
            for (values, spare) in values
                .chunks(per_thread)
                .zip(spare.chunks_mut(per_thread * size))
            {
                scope.spawn(move || encode_into(values, dtype, spare));
            }
        });
    }
    // SAFETY: `encode_into` wrote all `len` bytes after `start` (`size` per value).
    unsafe { out.set_len(start + len) };
}

/// Writes `values` into `out` (exactly `size` bytes per value), with AVX2 when the CPU has it.
fn encode_into(values: &[f32], dtype: WireDtype, out: &mut [std::mem::MaybeUninit<u8>]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { encode_into_avx2(values, dtype, out) };
        return;
    }
    encode_into_portable(values, dtype, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn encode_into_avx2(values: &[f32], dtype: WireDtype, out: &mut [std::mem::MaybeUninit<u8>]) {
    encode_into_portable(values, dtype, out);
}

#[inline(always)]
fn encode_into_portable(values: &[f32], dtype: WireDtype, out: &mut [std::mem::MaybeUninit<u8>]) {
    match dtype {
        WireDtype::Fp32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(values) {
                for (o, b) in o.iter_mut().zip(v.to_le_bytes()) {
                    o.write(b);
                }
            }
        }
        WireDtype::Bf16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(values) {
                let [lo, hi] = f32_to_bf16(*v).to_le_bytes();
                o[0].write(lo);
                o[1].write(hi);
            }
        }
    }
}

/// Decodes whole little-endian elements of `bytes` into `out` (which has one slot per element).
pub fn decode_into(bytes: &[u8], dtype: WireDtype, out: &mut [f32]) {
    match dtype {
        WireDtype::Fp32 => {
            for (o, e) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            }
        }
        WireDtype::Bf16 => {
            for (o, e) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16_to_f32(u16::from_le_bytes([e[0], e[1]]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Split over threads or not, the bytes are those of encoding value by value.
    #[test]
    fn large_inputs_encode_like_small_ones() {
        let values: Vec<f32> = (0..PARALLEL_ELEMENTS + 12_345)
            .map(|i| match i % 1000 {
                0 => f32::NAN,
                1 => -0.0,
                _ => (i as f32).sin() * 1e3,
            })
            .collect();
        for dtype in [WireDtype::Bf16, WireDtype::Fp32] {
            let mut bytes = vec![9u8, 9];
            encode_f32s(&values, dtype, &mut bytes);
            let mut expected = vec![9u8, 9];
            for v in &values {
                match dtype {
                    WireDtype::Bf16 => expected.extend_from_slice(&f32_to_bf16(*v).to_le_bytes()),
                    WireDtype::Fp32 => expected.extend_from_slice(&v.to_le_bytes()),
                }
            }
            assert!(bytes == expected, "{dtype:?}");
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is exactly between two bf16 values: ties go to the even one (1.0).
        assert_eq!(f32_to_bf16(1.0 + 2f32.powi(-8)), 0x3f80);
        // 1 + 3·2^-8 is between 1+2^-7 (odd) and 1+2^-6 (even): ties to even again.
        assert_eq!(f32_to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        assert_eq!(f32_to_bf16(-2.5), 0xc020);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
        assert_eq!(bf16_to_f32(f32_to_bf16(f32::INFINITY)), f32::INFINITY);
        // The largest finite f32 rounds up to bf16 infinity, as in torch.
        assert_eq!(f32_to_bf16(f32::MAX), 0x7f80);
    }

    #[test]
    fn finiteness_check_catches_nan_and_inf_anywhere() {
        let mut bytes = Vec::new();
        encode_f32s(&[1.0, -2.0, 3.5, 0.0], WireDtype::Bf16, &mut bytes);
        assert!(WireDtype::Bf16.all_finite(&bytes));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for dtype in [WireDtype::Bf16, WireDtype::Fp32] {
                let mut bytes = Vec::new();
                encode_f32s(&[1.0, bad, 2.0], dtype, &mut bytes);
                assert!(!dtype.all_finite(&bytes), "{bad} in {dtype:?}");
            }
        }
    }

    #[test]
    fn decode_inverts_encode() {
        let values = [0.5f32, -1.25, 3.0e-3, 1.0e30];
        for dtype in [WireDtype::Bf16, WireDtype::Fp32] {
            let mut bytes = Vec::new();
            encode_f32s(&values, dtype, &mut bytes);
            let mut back = [0f32; 4];
            decode_into(&bytes, dtype, &mut back);
            for (v, b) in values.iter().zip(back) {
                let expected = if dtype == WireDtype::Bf16 {
                    bf16_to_f32(f32_to_bf16(*v))
                } else {
                    *v
                };
                assert_eq!(b, expected);
            }
        }
    }
}
