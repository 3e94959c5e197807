//! The original's heuristic "hybrid" gradient (design §6.2), opt-in. It is not the derivative:
//! a blend of `−Re(conj(g)·G²)` (the exact gradient only when all couplings are 0) and
//! `−Re(conj(g)/G²)`, clamped to ±100, for `a` only. Computed in float32 like the original.

use ndarray::{Array2, ArrayView2, ArrayView3};
use num_complex::Complex32;

use crate::{Error, Result};

/// The original's default blend β (`GRAD_BLEND`).
pub const DEFAULT_BLEND: f32 = 0.5;

/// Hybrid dL/da from the saved output `g_saved` (complex64, after the original's clip), the
/// upstream `grad_features` (B, N, 2) and an optional upstream `grad_g` (B, N).
///
/// ```
/// use muse_reference::bk_core::hybrid::hybrid_grad_a;
/// use num_complex::Complex32;
/// let g = ndarray::arr2(&[[Complex32::new(0.0, 1.0)]]);
/// let gf = ndarray::Array3::from_shape_vec((1, 1, 2), vec![1.0f32, 0.0]).unwrap();
/// // G² = −1: the terms are 1 and 1/(1 − 1e-6) (the original's ε), so the blend is ≈ 1.
/// let grad = hybrid_grad_a(g.view(), gf.view(), None, 0.5)?;
/// assert!((grad[[0, 0]] - 1.0000005).abs() < 1e-7);
/// # Ok::<(), muse_reference::Error>(())
/// ```
pub fn hybrid_grad_a(
    g_saved: ArrayView2<'_, Complex32>,
    grad_features: ArrayView3<'_, f32>,
    grad_g: Option<ArrayView2<'_, Complex32>>,
    blend: f32,
) -> Result<Array2<f32>> {
    let (batch, n) = g_saved.dim();
    if grad_features.dim() != (batch, n, 2) {
        return Err(Error::Shape {
            op: "bk_core_hybrid_grad",
            arg: "grad_features",
            expected: format!("[B, N, 2] = [{batch}, {n}, 2]"),
            got: grad_features.shape().to_vec(),
        });
    }
    if let Some(gg) = &grad_g {
        if gg.dim() != (batch, n) {
            return Err(Error::Shape {
                op: "bk_core_hybrid_grad",
                arg: "grad_g",
                expected: format!("[B, N] = [{batch}, {n}]"),
                got: gg.shape().to_vec(),
            });
        }
    }
    let clean = |x: f32| match x {
        x if x.is_nan() => 0.0,
        x if x.is_infinite() => x.signum() * f32::MAX,
        x => x,
    };
    Ok(Array2::from_shape_fn((batch, n), |(r, i)| {
        let mut g = Complex32::new(
            clean(grad_features[[r, i, 0]]),
            clean(grad_features[[r, i, 1]]),
        );
        if let Some(gg) = &grad_g {
            g += gg[[r, i]];
        }
        let gs = g_saved[[r, i]];
        let g2 = gs * gs;
        let m = g2.norm();
        let denom = if m < 1e-4 { g2 / (m + 1e-9) * 1e-4 } else { g2 };
        let theoretical = -(g.conj() * g2).re;
        let hypothesis = -smith_div(g.conj(), denom + 1e-6).re;
        let grad = (1.0 - blend) * theoretical + blend * hypothesis;
        let grad = match grad {
            x if x.is_nan() => 0.0,
            x => x,
        };
        grad.clamp(-100.0, 100.0)
    }))
}

/// Magnitude of the two blended terms before they cancel, `(1−β)·|g|·|G|² + β·|g|/|D|`: the
/// f32 rounding error of [`hybrid_grad_a`] is a few ulps of this, not of the (possibly much
/// smaller) result. Same arguments as [`hybrid_grad_a`] (`grad_g` taken as 0).
pub fn term_scale(
    g_saved: ArrayView2<'_, Complex32>,
    grad_features: ArrayView3<'_, f32>,
    blend: f32,
) -> Array2<f32> {
    Array2::from_shape_fn(g_saved.dim(), |(r, i)| {
        let g = Complex32::new(grad_features[[r, i, 0]], grad_features[[r, i, 1]]).norm();
        let g2 = g_saved[[r, i]].norm_sqr();
        (1.0 - blend) * g * g2 + blend * g / g2.max(1e-4)
    })
}

/// Complex division by Smith's algorithm, as numpy and PyTorch's scalar `c10::complex` divide.
/// It differs from the textbook `x·conj(y)/|y|²` in rounding and, near overflow, in whether the
/// result is finite, which the original's clamps then turn into ±100 or 0.
fn smith_div(x: Complex32, y: Complex32) -> Complex32 {
    if y.re.abs() >= y.im.abs() {
        if y.re == 0.0 && y.im == 0.0 {
            return Complex32::new(x.re / y.re.abs(), x.im / y.im.abs());
        }
        let rat = y.im / y.re;
        let scl = 1.0 / (y.re + y.im * rat);
        Complex32::new((x.re + x.im * rat) * scl, (x.im - x.re * rat) * scl)
    } else {
        let rat = y.re / y.im;
        let scl = 1.0 / (y.im + y.re * rat);
        Complex32::new((x.re * rat + x.im) * scl, (x.im * rat - x.re) * scl)
    }
}
