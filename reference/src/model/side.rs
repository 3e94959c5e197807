//! The Phase 8 side branch (design model.md §2.2, §3.9), computed and discarded by the original:
//! x = HTT(ids) (a second call, no positions), then x + ARSSMHyperbolicFusion(x, G = None). It
//! never reaches the logits; muse runs it only for FLOP (and time) parity with the original.
//! BK-hyperbolic is parameters only (it never runs in the original either).
//!
//! Fusion (BENCH classes, c = 1, threshold 0.7, S = D/4): rank weights
//! w = σ(L₂(ReLU(L₁(d/(0.7 + 1e-6))))) from d = (2/√c)·artanh(min(√c·min(‖x‖, 1/√c − 1e-6),
//! 1 − 1e-6)); then the sequential recurrence h_n = A·h_{n−1} + w_n·B(x_n) with A = A_low·A_high,
//! y_n = C(h_n) + D ⊙ x_n.

use ndarray::{Array1, Array2, Array3, ArrayView2, ArrayView3, Axis};

use super::{htt_embed, linear, Htt, Linear};
use crate::Elem;

/// The fusion's tensors (`ar_ssm_fusion.*`).
#[derive(Debug, Clone)]
pub struct FusionWeights<F> {
    /// rank_predictor.0: Linear(1, 32).
    pub l1: Linear<F>,
    /// rank_predictor.2: Linear(32, 1).
    pub l2: Linear<F>,
    /// A_low (S, R).
    pub a_low: Array2<F>,
    /// A_high (R, S).
    pub a_high: Array2<F>,
    /// B: Linear(D, S).
    pub b: Linear<F>,
    /// C: Linear(S, D).
    pub c: Linear<F>,
    /// D (the skip), (D).
    pub d: Array1<F>,
}

/// The rank weights w (B, N) of x (B, N, D) at curvature 1.
pub fn rank_gating<F: Elem>(w: &FusionWeights<F>, x: ArrayView3<'_, F>) -> Array2<F> {
    let (b, n, _) = x.dim();
    let eps = F::of(1e-6);
    let (one, two) = (F::one(), F::of(2.0));
    // c = 1 (√c = 1): ρ = min(‖x‖, 1/√c − ε), arg = min(√c·ρ, 1 − ε), d = (2/√c)·artanh(arg).
    let dist = x.map_axis(Axis(2), |row| {
        let rho = row
            .iter()
            .fold(F::zero(), |a, &v| a + v * v)
            .sqrt()
            .min(one - eps);
        two * rho.min(one - eps).atanh()
    });
    let dn = dist.mapv(|d| d / (F::of(0.7) + eps));
    let dn3 = dn.into_shape_with_order((b, n, 1)).expect("(B, N, 1)");
    let hidden = linear(&w.l1, dn3.view()).mapv(|v| v.max(F::zero()));
    linear(&w.l2, hidden.view())
        .mapv(|v| one / (one + (-v).exp()))
        .into_shape_with_order((b, n))
        .expect("(B, N)")
}

/// The fusion's output y (B, N, D) for x (B, N, D).
pub fn fusion<F: Elem>(w: &FusionWeights<F>, x: ArrayView3<'_, F>) -> Array3<F> {
    let (b, n, d) = x.dim();
    let rw = rank_gating(w, x);
    let a = w.a_low.dot(&w.a_high);
    let u = linear(&w.b, x);
    let s = a.nrows();
    let mut y = Array3::zeros((b, n, d));
    for bb in 0..b {
        let mut h = Array1::<F>::zeros(s);
        for t in 0..n {
            h = h.dot(&a.t()) + &u.slice(ndarray::s![bb, t, ..]).mapv(|v| v * rw[[bb, t]]);
            let h3 = h
                .view()
                .into_shape_with_order((1, 1, s))
                .expect("(1, 1, S)");
            let ct = linear(&w.c, h3);
            for e in 0..d {
                y[[bb, t, e]] = ct[[0, 0, e]] + w.d[e] * x[[bb, t, e]];
            }
        }
    }
    y
}

/// The whole side branch: HTT(ids) + fusion(HTT(ids)), (B, N, D).
pub fn side_branch<F: Elem>(
    htt: &Htt<F>,
    w: &FusionWeights<F>,
    ids: ArrayView2<'_, usize>,
    d_model: usize,
) -> Array3<F> {
    let x = htt_embed(htt, ids, d_model);
    &x + &fusion(w, x.view())
}
