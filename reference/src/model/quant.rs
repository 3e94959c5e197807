//! How the evaluation-only numerics change the local attention's operands: a KV cache's storage
//! ([`KvCodec`], design hyperbolic.md §4) and the inference quantisations of §8 ([`Quant`]: W4A8
//! Q/K/V/O projections through [`crate::w4a8`], INT8 attention logits through
//! [`crate::hyp_int8::attention`]).

use ndarray::{Array2, Array3, ArrayView3};

use crate::w4a8::{gemm_exact, quantize_activations, quantize_weights, WeightCodec};
use crate::{Elem, Error, Result};

/// The storage of a KV cache, as it changes the attention's K and V.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvCodec {
    /// fp16 K and V (round to nearest even): the baseline cache.
    Fp16,
    /// The 4-bit per-token codec with fp16 metadata ([`crate::kv4`]); `radial` keeps the exact
    /// ‖k‖ (f32) and takes only the direction from the codes.
    Int4 {
        /// Keep ρ = ‖k‖ exactly.
        radial: bool,
    },
}

impl KvCodec {
    /// `fp16`, `int4` or `int4-radial`, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            KvCodec::Fp16 => "fp16",
            KvCodec::Int4 { radial: false } => "int4",
            KvCodec::Int4 { radial: true } => "int4-radial",
        }
    }

    /// One row of K (`key`) or V stored and read back.
    pub fn roundtrip(self, row: &mut [f64], key: bool) -> crate::Result<()> {
        match self {
            KvCodec::Fp16 => row
                .iter_mut()
                .for_each(|x| *x = crate::quant::f16_round(*x)),
            KvCodec::Int4 { radial } => {
                let g = crate::kv4::quantize_group("kv4", if key { "k" } else { "v" }, row)?;
                let mut back = g.dequantize();
                if radial && key {
                    let rho = f64::from(row.iter().map(|x| x * x).sum::<f64>().sqrt() as f32);
                    let r = back.iter().map(|x| x * x).sum::<f64>().sqrt();
                    let scale = if r > 0.0 { rho / r } else { 0.0 };
                    back.iter_mut().for_each(|x| *x *= scale);
                }
                row.copy_from_slice(&back);
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for KvCodec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fp16" => Ok(KvCodec::Fp16),
            "int4" => Ok(KvCodec::Int4 { radial: false }),
            "int4-radial" => Ok(KvCodec::Int4 { radial: true }),
            _ => Err(format!(
                "unknown KV cache `{s}`: expected `fp16`, `int4` or `int4-radial`"
            )),
        }
    }
}

/// The W4A8 projection (design hyperbolic.md §8.3): activations per token symmetric int8, weights
/// 4-bit per output row and group of inputs, the product by [`gemm_exact`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct W4a8Proj {
    /// The design's G: 128. A width K that G does not divide uses the largest even divisor of K
    /// below G ([`W4a8Proj::group_for`]).
    pub group: usize,
    /// The weight codec ([`WeightCodec::Symmetric`] by default).
    pub codec: WeightCodec,
}

impl W4a8Proj {
    /// G = 128, symmetric 4-bit weights.
    pub const DEFAULT: W4a8Proj = W4a8Proj {
        group: 128,
        codec: WeightCodec::Symmetric,
    };

    /// The group used for K inputs: the largest even divisor of K that is at most G (G itself
    /// when it divides K). Fails for an odd K or G < 2.
    ///
    /// ```
    /// use muse_reference::model::W4a8Proj;
    /// let p = W4a8Proj::DEFAULT;
    /// assert_eq!((p.group_for(768)?, p.group_for(32)?, p.group_for(1000)?), (128, 32, 100));
    /// assert!(p.group_for(33).is_err());
    /// # Ok::<(), muse_reference::Error>(())
    /// ```
    pub fn group_for(self, k: usize) -> Result<usize> {
        (2..=self.group.min(k))
            .rev()
            .find(|g| g % 2 == 0 && k % g == 0)
            .ok_or_else(|| Error::Domain {
                op: "w4a8",
                arg: "group",
                rule: format!(
                    "needs an even group (G = {}) that divides the width K = {k}",
                    self.group
                ),
            })
    }
}

impl Default for W4a8Proj {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The inference quantisations of the local attention (design hyperbolic.md §8), each opt-in;
/// they apply to the exact attention paths ([`super::AttnPath::Exact`] and `ExactKv`).
///
/// ```
/// use muse_reference::model::Quant;
/// let q: Quant = "w4a8+int8-logits".parse().unwrap();
/// assert!(q.int8_logits && q.w4a8.is_some());
/// assert_eq!(q.name(), "w4a8+int8-logits");
/// assert_eq!("none".parse::<Quant>(), Ok(Quant::NONE));
/// assert!("int4-logits".parse::<Quant>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quant {
    /// W4A8 Q/K/V/O projections (`None`: the float GEMMs, bf16 or not as the weights say).
    pub w4a8: Option<W4a8Proj>,
    /// The attention's scores from the tangent-mode INT8 codes of q and k with exact radial terms
    /// ([`crate::hyp_int8::attention`]); softmax and P·V as the exact path.
    pub int8_logits: bool,
}

impl Quant {
    /// No quantisation: the exact path unchanged.
    pub const NONE: Quant = Quant {
        w4a8: None,
        int8_logits: false,
    };

    /// Whether nothing is quantised.
    pub fn is_none(self) -> bool {
        self == Self::NONE
    }

    /// `none`, `int8-logits`, `w4a8` or `w4a8+int8-logits`, as [`Quant::from_str`] reads them; a
    /// W4A8 part other than the default is written `w4a8:g<G>` with `:asym` for asymmetric weights.
    ///
    /// [`Quant::from_str`]: std::str::FromStr::from_str
    pub fn name(self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = self.w4a8 {
            let mut s = String::from("w4a8");
            if p.group != W4a8Proj::DEFAULT.group {
                s += &format!(":g{}", p.group);
            }
            if p.codec == WeightCodec::Asymmetric {
                s += ":asym";
            }
            parts.push(s);
        }
        if self.int8_logits {
            parts.push("int8-logits".into());
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join("+")
        }
    }
}

fn parse_w4a8(part: &str) -> std::result::Result<W4a8Proj, String> {
    let mut p = W4a8Proj::DEFAULT;
    for opt in part.split(':').skip(1) {
        match opt {
            "sym" => p.codec = WeightCodec::Symmetric,
            "asym" => p.codec = WeightCodec::Asymmetric,
            _ => match opt.strip_prefix('g').and_then(|g| g.parse::<usize>().ok()) {
                Some(g) if g >= 2 && g % 2 == 0 => p.group = g,
                _ => {
                    return Err(format!(
                    "`{part}`: unknown W4A8 option `{opt}` (expected `g<even G>`, `sym` or `asym`)"
                ))
                }
            },
        }
    }
    Ok(p)
}

impl std::str::FromStr for Quant {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "none" {
            return Ok(Quant::NONE);
        }
        let mut q = Quant::NONE;
        for part in s.split('+').map(str::trim) {
            let repeated = match part {
                "int8-logits" => std::mem::replace(&mut q.int8_logits, true),
                p if p == "w4a8" || p.starts_with("w4a8:") => {
                    q.w4a8.replace(parse_w4a8(p)?).is_some()
                }
                _ => {
                    return Err(format!(
                        "unknown quantisation `{part}` in `{s}`: expected `w4a8`, `int8-logits` \
                         or `w4a8+int8-logits`"
                    ))
                }
            };
            if repeated {
                return Err(format!("quantisation `{s}` names `{part}` twice"));
            }
        }
        Ok(q)
    }
}

/// y = x·Wᵀ by the W4A8 GEMM: x (B, N, K) quantised per token ([`quantize_activations`]), W
/// (out, K) per output row and group of [`W4a8Proj::group_for`]`(K)` inputs
/// ([`quantize_weights`]), the product of the codes by [`gemm_exact`] (f64), rounded to `F`.
///
/// ```
/// use muse_reference::model::{w4a8_linear, W4a8Proj};
/// let w = ndarray::Array2::from_shape_fn((3, 4), |(o, i)| 0.1 * (o + i) as f64 - 0.2);
/// let x = ndarray::Array3::from_shape_fn((1, 2, 4), |(_, t, i)| (t + i) as f64 - 1.5);
/// let y = w4a8_linear(&w, x.view(), W4a8Proj::DEFAULT)?; // K = 4: groups of 4
/// let exact = x.index_axis(ndarray::Axis(0), 0).dot(&w.t());
/// assert!((y.index_axis(ndarray::Axis(0), 0).to_owned() - exact).iter().all(|e| e.abs() < 0.05));
/// # Ok::<(), muse_reference::Error>(())
/// ```
pub fn w4a8_linear<F: Elem>(
    w: &Array2<F>,
    x: ArrayView3<'_, F>,
    proj: W4a8Proj,
) -> Result<Array3<F>> {
    let (b, n, k) = x.dim();
    let x2 = Array2::from_shape_fn((b * n, k), |(r, e)| x[[r / n, r % n, e]].to_f64_exact());
    let qx = quantize_activations(x2.view())?;
    let qw = quantize_weights(
        w.mapv(|v| v.to_f64_exact()).view(),
        proj.group_for(k)?,
        proj.codec,
    )?;
    let y = gemm_exact(&qx, &qw)?;
    Ok(Array3::from_shape_fn((b, n, w.nrows()), |(i, t, o)| {
        F::of(y[[i * n + t, o]])
    }))
}

#[cfg(test)]
mod tests;
