//! The 4-bit KV cache (design hyperbolic.md §4): the asymmetric 4-bit codec with fp16 metadata,
//! its compression ratios, the packed cache with bounds-checked appends and a ring buffer
//! ([`Kv4Cache`]), and decode attention over it in f64 ([`decode_attn`], with the FlashDecoding
//! split-K and LSE merge it stands for on the GPU).
//!
//! Codec, per group (one token's D channels, or one channel over G tokens): s = max((max − min)/15,
//! 1e-8), m = min, q = clip(rint((x − m)/s), 0, 15); the kernel stores fp16(s) and fp16(m) and reads
//! back x̂ = m₁₆ + q·s₁₆. |x − x̂| ≤ s/2 + |m − m₁₆| + 15·|s − s₁₆| ≤ s/2 + 2⁻¹¹(|m| + 15s) + 2⁻²¹ (fp16 subnormal spacing 2⁻²⁴: half of it for m, fifteen halves for s).
//!
//! ```
//! use muse_reference::kv4::{quantize_group, effective_ratio, payload_ratio};
//! let x = [0.0, 1.5, 3.0, 0.2];
//! let g = quantize_group("kv4", "k", &x)?;
//! assert_eq!(g.codes, vec![0, 8, 15, 1]); // 1.5/0.2 = 7.5 is a tie: to even
//! for (xi, yi) in x.iter().zip(g.dequantize()) {
//!     assert!((xi - yi).abs() <= g.bound());
//! }
//! assert_eq!(payload_ratio(), 4.0);
//! assert!((effective_ratio(64, 2) - 256.0 / 72.0).abs() < 1e-15); // 3.56 with fp16 metadata
//! # Ok::<(), muse_reference::Error>(())
//! ```

mod backend;
mod cache;
mod decode;
#[cfg(test)]
mod tests;

pub use backend::{fp16_stored, Kv4, Kv4DecodeArgs, Kv4Run, KvStorage};
pub use cache::{Kv4Cache, Kv4Config, KvLayout};
pub use decode::{
    decode_attn, decode_attn_split, decode_stored, evict_compat, DecodeOut, Partial, StoredKv,
};

use half::f16;

use crate::quant::{f16_from_f64, rint};
use crate::{Error, Result};

/// The floor of the step s (a constant group gets s = 1e-8 and all-zero codes).
pub const MIN_STEP: f64 = 1e-8;

/// One quantised group: its codes and metadata, unrounded and as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Group4 {
    /// Codes 0..=15, one per value, unpacked.
    pub codes: Vec<u8>,
    /// s = max((max − min)/15, 1e-8), before fp16 storage.
    pub step: f64,
    /// m = min, before fp16 storage.
    pub min: f64,
    /// fp16(s), what the cache stores.
    pub step16: f16,
    /// fp16(m), what the cache stores.
    pub min16: f16,
}

impl Group4 {
    /// x̂ = m₁₆ + q·s₁₆ in f64, the values a kernel reads back.
    pub fn dequantize(&self) -> Vec<f64> {
        dequantize_codes(&self.codes, self.step16, self.min16)
    }

    /// The group's error bound s/2 + |m − m₁₆| + 15·|s − s₁₆| (design §4.1), for every value.
    pub fn bound(&self) -> f64 {
        self.step / 2.0
            + (self.min - f64::from(self.min16)).abs()
            + 15.0 * (self.step - f64::from(self.step16)).abs()
    }
}

/// Quantises one group of finite values (design §4.1). Fails on an empty group, a non-finite
/// value, or metadata beyond fp16's range (|m| or s ≥ 65520), naming `op` and `arg`.
pub fn quantize_group(op: &'static str, arg: &'static str, x: &[f64]) -> Result<Group4> {
    if x.is_empty() {
        return Err(Error::Domain {
            op,
            arg,
            rule: "has an empty quantisation group".into(),
        });
    }
    crate::quant::check_finite_slice(op, arg, x)?;
    let (mn, mx) = x
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let step = ((mx - mn) / 15.0).max(MIN_STEP);
    let (step16, min16) = (f16_from_f64(step), f16_from_f64(mn));
    if !step16.is_finite() || !min16.is_finite() {
        return Err(Error::Domain {
            op,
            arg,
            rule: format!(
                "spans [{mn}, {mx}]: its fp16 metadata (min {mn}, step {step}) would overflow (|value| < 65520 needed)"
            ),
        });
    }
    let codes = x
        .iter()
        .map(|&v| rint((v - mn) / step).clamp(0.0, 15.0) as u8)
        .collect();
    Ok(Group4 {
        codes,
        step,
        min: mn,
        step16,
        min16,
    })
}

/// [`quantize_group`] in the GPU kernel's f32 arithmetic (`kernels/kv4.cu`): min and max in f32,
/// s = max((max − min)/15, 1e-8) and (x − min)/s in f32, rint, fp16 of the f32 s and min. The
/// CUDA codec must match it code for code and bit for bit; it differs from the f64 codec only
/// where (x − min)/s lies within f32 rounding of a tie.
///
/// ```
/// use muse_reference::kv4::{quantize_group, quantize_group_f32};
/// let x = [0.25f32, -1.5, 3.0, 0.125];
/// let wide: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
/// assert_eq!(quantize_group_f32(&x).codes, quantize_group("kv4", "x", &wide).unwrap().codes);
/// ```
pub fn quantize_group_f32(x: &[f32]) -> Group4 {
    let (mn, mx) = x
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let step = ((mx - mn) / 15.0f32).max(1e-8f32);
    let codes = x
        .iter()
        .map(|&v| ((v - mn) / step).round_ties_even().clamp(0.0, 15.0) as u8)
        .collect();
    Group4 {
        codes,
        step: f64::from(step),
        min: f64::from(mn),
        step16: f16::from_f32(step),
        min16: f16::from_f32(mn),
    }
}

/// x̂ = m + q·s for codes 0..=15 and fp16 metadata, in f64.
pub fn dequantize_codes(codes: &[u8], step: f16, min: f16) -> Vec<f64> {
    let (s, m) = (f64::from(step), f64::from(min));
    codes.iter().map(|&q| m + f64::from(q) * s).collect()
}

/// Per token and head, fp16 K + V take 4D bytes and the 4-bit payload D bytes: exactly 4.
pub fn payload_ratio() -> f64 {
    4.0
}

/// 4D/(D + 4b): the ratio with the four metadata values (s and m of K and V) of `meta_bytes`
/// bytes each (design §4.2): 3.56 (fp16) / 3.2 (fp32, the original's `4·hd/(hd+16)`) at D = 64.
pub fn effective_ratio(d: usize, meta_bytes: usize) -> f64 {
    (4 * d) as f64 / (d + 4 * meta_bytes) as f64
}

/// The ratio with fp16 metadata and the optional exact radial term ‖k‖ (4 more bytes per token
/// and head): 4D/(D + 12).
pub fn effective_ratio_radial(d: usize) -> f64 {
    (4 * d) as f64 / (d + 12) as f64
}
