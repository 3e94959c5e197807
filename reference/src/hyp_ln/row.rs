//! The per-row maths of the fused LayerNorm + projection, generic over the element type `F`
//! (`crates/muse-cuda/kernels/hyp_ln.cu` mirrors it): the LayerNorm, the projection factor
//! (out = φ·y) and the projection's VJP in the form ḡ_y = φ·g + β·⟨y, g⟩·y.
//!
//! The row scalars of the projection (‖y‖², φ, β and the curvature term) are computed in f64 from
//! the rounded y in every precision (see the module docs of [`super`]).

use super::{HypLnArgs, HypLnMode, CLIP_MARGIN, CLIP_NORM_EPS};
use crate::poincare::scalar::{tanh_cap, tanh_over};
use crate::poincare::A_MAX;
use crate::{Dtype, Elem};

/// Below this t = √c‖y‖ the series forms of §2.2 and §2.5 are used.
const SERIES_BELOW: f64 = 1e-3;

/// The per-call parameters in `F`: γ and β_ln rounded to the dtype, eps, and the curvature
/// (kept in f64: the projection scalars are computed in f64).
#[derive(Debug, Clone)]
pub struct Params<F> {
    /// γ, (D).
    pub gamma: Vec<F>,
    /// β_ln, (D).
    pub beta: Vec<F>,
    /// LayerNorm epsilon in `F`.
    pub eps: F,
    /// c.
    pub c: f64,
    /// √c.
    pub s: f64,
    /// The mode.
    pub mode: HypLnMode,
    /// The exp0 tanh cap of `F`, 1 − 2ε, in f64.
    pub cap: f64,
}

impl<F: Elem> Params<F> {
    /// From checked arguments, rounding γ and β_ln to `dtype`.
    pub fn new(args: &HypLnArgs<'_>, dtype: Dtype) -> Self {
        let round = |v: ndarray::ArrayView1<'_, f64>| -> Vec<F> {
            v.iter().map(|&e| F::of(dtype.round(e))).collect()
        };
        Self {
            gamma: round(args.gamma()),
            beta: round(args.beta_ln()),
            eps: F::of(args.eps()),
            c: args.curvature().c(),
            s: args.curvature().s(),
            mode: args.mode(),
            cap: tanh_cap::<F>().to_f64_exact(),
        }
    }
}

/// The LayerNorm of one row: writes x̂ = (x − μ)·rstd and y = x̂·γ + β_ln, returns rstd. Two
/// passes (mean, then the mean squared deviation), biased variance.
pub fn layer_norm<F: Elem>(p: &Params<F>, x: &[F], xhat: &mut [F], y: &mut [F]) -> F {
    let n = F::of(x.len() as f64);
    let mean = x.iter().fold(F::zero(), |acc, &v| acc + v) / n;
    let var = x.iter().fold(F::zero(), |acc, &v| {
        let d = v - mean;
        acc + d * d
    }) / n;
    let rstd = F::one() / (var + p.eps).sqrt();
    for (((xh, yo), &v), (&g, &b)) in xhat
        .iter_mut()
        .zip(y.iter_mut())
        .zip(x)
        .zip(p.gamma.iter().zip(&p.beta))
    {
        *xh = (v - mean) * rstd;
        *yo = *xh * g + b;
    }
    rstd
}

/// ‖y‖² accumulated in f64.
pub fn norm2_wide<F: Elem>(y: &[F]) -> f64 {
    y.iter().fold(0.0, |acc, &v| {
        let w = v.to_f64_exact();
        acc + w * w
    })
}

/// The projection of one row from its ‖y‖²: out = φ·y, the VJP ḡ_y = φ·g + β·⟨y, g⟩·y and
/// ∂L/∂c = ⟨y, g⟩·`dc_coef`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Proj {
    /// The factor φ with out = φ·y.
    pub phi: f64,
    /// β = φ′(‖y‖)/‖y‖, the coefficient of ⟨y, g⟩·y in the VJP.
    pub bracket: f64,
    /// ∂φ/∂c: ∂L/∂c of the row is ⟨y, g⟩ times this.
    pub dc_coef: f64,
    /// a = min(√c‖y‖, A_MAX).
    pub a: f64,
}

impl Proj {
    /// The projection scalars of a row with ‖y‖² = `r2`, for mode, c, s = √c and the exp0 cap.
    ///
    /// ```
    /// use muse_reference::hyp_ln::{row::Proj, HypLnMode};
    /// let p = Proj::new(HypLnMode::Exp0, 1.0, 1.0, 1.0 - 2.0 * f64::EPSILON, 4.0);
    /// assert!((p.phi - 2.0_f64.tanh() / 2.0).abs() < 1e-16 && p.a == 2.0);
    /// ```
    pub fn new(mode: HypLnMode, c: f64, s: f64, cap: f64, r2: f64) -> Self {
        let r = r2.sqrt();
        let t = s * r;
        let a = t.min(A_MAX);
        match mode {
            HypLnMode::Exp0 => {
                let (phi, bracket) = if t < SERIES_BELOW {
                    let t2 = t * t;
                    (tanh_over(t), c * (-2.0 / 3.0 + 8.0 / 15.0 * t2))
                } else {
                    let th = t.tanh();
                    if th > cap {
                        // exp0 uses the capped factor cap/t here: differentiate what is computed.
                        (cap / t, -cap / (s * r * r2))
                    } else {
                        let ch = t.cosh();
                        (th / t, 1.0 / (ch * ch * r2) - th / (s * r * r2))
                    }
                };
                Self {
                    phi,
                    bracket,
                    dc_coef: bracket * r2 / (2.0 * c),
                    a,
                }
            }
            HypLnMode::Clip => {
                let radius = 1.0 / s - CLIP_MARGIN;
                let n = (r2 + CLIP_NORM_EPS).sqrt();
                if n > radius {
                    Self {
                        phi: radius / n,
                        bracket: -radius / (n * n * n),
                        dc_coef: -1.0 / (2.0 * c * s * n),
                        a,
                    }
                } else {
                    Self {
                        phi: 1.0,
                        bracket: 0.0,
                        dc_coef: 0.0,
                        a,
                    }
                }
            }
        }
    }
}

/// Projects one row y into the ball: writes out = φ·y and returns the row's [`Proj`].
pub fn project<F: Elem>(p: &Params<F>, y: &[F], out: &mut [F]) -> Proj {
    let proj = Proj::new(p.mode, p.c, p.s, p.cap, norm2_wide(y));
    let phi = F::of(proj.phi);
    for (o, &v) in out.iter_mut().zip(y) {
        *o = phi * v;
    }
    proj
}

/// Accumulated parameter gradients over rows.
#[derive(Debug, Clone)]
pub struct GradAcc<F> {
    /// Σ_rows ḡ_y ∘ x̂.
    pub dgamma: Vec<F>,
    /// Σ_rows ḡ_y.
    pub dbeta: Vec<F>,
    /// Σ_rows ∂L/∂c, in f64.
    pub dc: f64,
}

impl<F: Elem> GradAcc<F> {
    /// Zeros for rows of length `dim`.
    pub fn new(dim: usize) -> Self {
        Self {
            dgamma: vec![F::zero(); dim],
            dbeta: vec![F::zero(); dim],
            dc: 0.0,
        }
    }
}

/// The backward of one row given g = ∂L/∂out: writes ∂L/∂x to `dx` and adds the row's
/// contributions to `acc`.
pub fn backward<F: Elem>(p: &Params<F>, x: &[F], g: &[F], acc: &mut GradAcc<F>, dx: &mut [F]) {
    let dim = x.len();
    let (mut xh, mut y) = (vec![F::zero(); dim], vec![F::zero(); dim]);
    let rstd = layer_norm(p, x, &mut xh, &mut y);
    let proj = Proj::new(p.mode, p.c, p.s, p.cap, norm2_wide(&y));
    let yg = y.iter().zip(g).fold(F::zero(), |s, (&a, &b)| s + a * b);
    acc.dc += yg.to_f64_exact() * proj.dc_coef;
    let phi = F::of(proj.phi);
    let coef = F::of(proj.bracket * yg.to_f64_exact());
    let n = F::of(dim as f64);
    let (mut m1, mut m2) = (F::zero(), F::zero());
    // dx is the scratch for dx̂ = ḡ_y ∘ γ.
    for d in 0..dim {
        let gy = phi * g[d] + coef * y[d];
        acc.dgamma[d] += gy * xh[d];
        acc.dbeta[d] += gy;
        dx[d] = gy * p.gamma[d];
        m1 += dx[d];
        m2 += dx[d] * xh[d];
    }
    let (m1, m2) = (m1 / n, m2 / n);
    for d in 0..dim {
        dx[d] = rstd * (dx[d] - m1 - xh[d] * m2);
    }
}
