//! INT8 attention logits (design hyperbolic.md §8.1, "Attention"): the scores −β·d of
//! [`crate::hyp_attn`] with d = [`super::dist_int8`] of the tangent-mode INT8 codes of q and k
//! (dynamic per-row scales, exact radial terms), and the softmax, P·V and lse of the reference
//! forward unchanged (the same code, through its distance hook).

use ndarray::Array2;

use super::{quantize_dirs, z_from_terms, Int8Dirs};
use crate::hyp_attn::forward::{forward_with, PairDist};
use crate::hyp_attn::{Form, HypAttnArgs, HypAttnOut};
use crate::poincare::acosh1p;
use crate::poincare::maps::TangentRow;
use crate::{Dtype, Elem, Error, Result};

/// One (b, h) slice's q and k codes with the radial terms of every row, computed once.
pub(crate) struct Int8Pairs {
    s: f64,
    q: Int8Dirs,
    k: Int8Dirs,
    tq: Vec<TangentRow<f64>>,
    tk: Vec<TangentRow<f64>>,
}

fn to_f64<F: Elem>(rows: &[Vec<F>]) -> Array2<f64> {
    let d = rows.first().map_or(0, Vec::len);
    Array2::from_shape_fn((rows.len(), d), |(i, e)| rows[i][e].to_f64_exact())
}

impl Int8Pairs {
    /// Codes and radial terms of the q and k rows of one slice at s = √c.
    pub(crate) fn new<F: Elem>(s: f64, q: &[Vec<F>], k: &[Vec<F>]) -> Result<Self> {
        let (q, k) = (
            quantize_dirs(to_f64(q).view())?,
            quantize_dirs(to_f64(k).view())?,
        );
        let tq = (0..q.len()).map(|i| q.radial(s, i)).collect();
        let tk = (0..k.len()).map(|j| k.radial(s, j)).collect();
        Ok(Self { s, q, k, tq, tk })
    }
}

impl<F: Elem> PairDist<F> for Int8Pairs {
    /// [`super::dist_int8`] of query i and key j (the same operations), rounded to `F`.
    fn dist(&self, i: usize, j: usize) -> F {
        let z = z_from_terms(&self.tq[i], &self.tk[j], self.q.c_hat(i, &self.k, j));
        F::of(acosh1p(z) / self.s)
    }
}

/// Hyperbolic attention with INT8 logits: q and k (rounded to `dtype`) quantised per (b, h) slice
/// and row in tangent mode ([`quantize_dirs`]), the distances from the codes with exact radial
/// terms (f64, as [`super::dist_int8`]), then the scores, softmax and P·V of
/// [`crate::hyp_attn::forward::forward`] in f64 (`Dtype::F64`) or f32. Only the exact form
/// ([`Form::Exact`]) has an INT8 variant.
///
/// ```
/// use muse_reference::hyp_attn::{HypAttn, HypAttnArgs, Mask};
/// use muse_reference::{hyp_int8, Cpu, Dtype};
/// let q = ndarray::Array4::from_shape_fn((1, 1, 4, 8), |(_, _, i, e)| {
///     0.1 * ((i * 3 + e) % 5) as f64 - 0.2
/// });
/// let v = ndarray::Array4::from_shape_fn((1, 1, 4, 2), |(_, _, j, e)| (j + e) as f64);
/// let args = HypAttnArgs::new(q.view(), q.view(), v.view(), 0.693, 1.0, Mask::Causal)?;
/// let int8 = hyp_int8::attention(&args, Dtype::F64)?;
/// let exact = Cpu.hyp_attn(&args, Dtype::F64)?;
/// let err = (&int8.o - &exact.o).iter().fold(0.0f64, |m, e| m.max(e.abs()));
/// assert!(err < 1e-2);
/// # Ok::<(), muse_reference::Error>(())
/// ```
pub fn attention(args: &HypAttnArgs<'_>, dtype: Dtype) -> Result<HypAttnOut> {
    if args.form() != Form::Exact {
        return Err(Error::Unsupported {
            op: super::OP,
            backend: "cpu",
            what: format!(
                "INT8 logits for the compat form `{}` (only the exact form has them)",
                args.form().name()
            ),
        });
    }
    let s = args.curvature().s();
    match dtype {
        Dtype::F64 => forward_with::<f64, _, Error>(args, dtype, |q, k| Int8Pairs::new(s, &q, &k)),
        Dtype::F32 | Dtype::Bf16 => {
            forward_with::<f32, _, Error>(args, dtype, |q, k| Int8Pairs::new(s, &q, &k))
        }
    }
}
