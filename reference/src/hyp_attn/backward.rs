//! The exact backward of hyperbolic attention (design §3.4), pair by pair: P recomputed from the
//! scores, dP = dO·vᵀ, dS = P∘(dP − Δ) with Δ_i = ⟨dO_i, o_i⟩, dV += Pᵀ·dO, dβ = −Σ dS∘d, and the
//! law-of-cosines VJP (§2.5) of δ = −β·dS for q, k and the curvature.

use ndarray::{Array4, ArrayView4, Axis};

use super::forward::{row_softmax, rows, Prepared};
use super::{HypAttnArgs, HypAttnGrad};
use crate::poincare::grad::pair_vjp;
use crate::poincare::scalar::dot;
use crate::{Dtype, Elem};

/// Gradients of L = Σ d_o∘o in `F` on inputs rounded to `dtype` (exact form).
pub fn backward<F: Elem>(
    args: &HypAttnArgs<'_>,
    d_o: ArrayView4<'_, f64>,
    dtype: Dtype,
) -> HypAttnGrad {
    backward_with_scales::<F>(args, d_o, dtype).0
}

/// The condition scales of the two scalar gradients, Σ|per-pair contribution| of dL/dc and of
/// dL/dβ (f64): dc and dβ are sums over every visible pair and can cancel by orders of
/// magnitude, so their f32 error is judged against these (`muse_verify::suite::hyp_attn`).
pub fn scalar_scales(args: &HypAttnArgs<'_>, d_o: ArrayView4<'_, f64>) -> (f64, f64) {
    let (_, sc, sb) = backward_with_scales::<f64>(args, d_o, Dtype::F64);
    (sc, sb)
}

fn backward_with_scales<F: Elem>(
    args: &HypAttnArgs<'_>,
    d_o: ArrayView4<'_, f64>,
    dtype: Dtype,
) -> (HypAttnGrad, f64, f64) {
    let (nb, nh, n, m, d, dv) = args.dims();
    let mut g = HypAttnGrad {
        dq: Array4::zeros((nb, nh, n, d)),
        dk: Array4::zeros((nb, nh, m, d)),
        dv: Array4::zeros((nb, nh, m, dv)),
        dc: 0.0,
        dbeta: 0.0,
    };
    let beta = F::of(args.beta());
    let s = F::of(args.curvature().s());
    let (mut ds, mut dbeta) = (F::zero(), F::zero());
    let (mut abs_ds, mut abs_db) = (0.0f64, 0.0f64);
    for b in 0..nb {
        for h in 0..nh {
            let sl = |x: ArrayView4<'_, f64>| {
                rows::<F>(x.index_axis(Axis(0), b).index_axis_move(Axis(0), h), dtype)
            };
            let prep = Prepared::new(
                args.form(),
                args.curvature().c(),
                sl(args.q()),
                sl(args.k()),
            );
            let (v, dout) = (sl(args.v()), sl(d_o));
            let mut dq = vec![vec![F::zero(); d]; n];
            let mut dk = vec![vec![F::zero(); d]; m];
            let mut dvv = vec![vec![F::zero(); dv]; m];
            for i in 0..n {
                let (lo, hi) = args.visible(b, i);
                let sm = row_softmax(&prep, beta, i, (lo, hi));
                if sm.p.is_empty() {
                    continue;
                }
                let p: Vec<F> = sm.p.iter().map(|&x| x / sm.l).collect();
                let mut o = vec![F::zero(); dv];
                for (pj, vj) in p.iter().zip(&v[lo..hi]) {
                    for (a, &x) in o.iter_mut().zip(vj) {
                        *a += *pj * x;
                    }
                }
                let delta_i = dot(&dout[i], &o);
                for (jj, &pij) in p.iter().enumerate() {
                    let j = lo + jj;
                    let ds_ij = pij * (dot(&dout[i], &v[j]) - delta_i);
                    for (a, &x) in dvv[j].iter_mut().zip(&dout[i]) {
                        *a += pij * x;
                    }
                    let d_ij = prep.dist(i, j);
                    let db_ij = ds_ij * d_ij;
                    dbeta -= db_ij;
                    let (tq, tk) = prep.terms(i, j);
                    let ds_pair = pair_vjp(s, tq, tk, -beta * ds_ij, &mut dq[i], &mut dk[j]);
                    ds += ds_pair;
                    // Both terms of δ·∂d/∂s (−δd/s and the radial part) count: they can cancel
                    // exactly (D = 1), so the scale is the size of the terms, not of their sum.
                    let dist_term = beta * ds_ij * d_ij / s;
                    abs_ds +=
                        dist_term.to_f64_exact().abs() + (ds_pair - dist_term).to_f64_exact().abs();
                    abs_db += db_ij.to_f64_exact().abs();
                }
            }
            let put = |dst: &mut Array4<f64>, src: &[Vec<F>]| {
                for (r, row) in src.iter().enumerate() {
                    for (e, x) in row.iter().enumerate() {
                        dst[[b, h, r, e]] = x.to_f64_exact();
                    }
                }
            };
            put(&mut g.dq, &dq);
            put(&mut g.dk, &dk);
            put(&mut g.dv, &dvv);
        }
    }
    g.dc = (ds / (F::of(2.0) * s)).to_f64_exact();
    g.dbeta = dbeta.to_f64_exact();
    let two_s = 2.0 * args.curvature().s();
    (g, abs_ds / two_s, abs_db)
}
