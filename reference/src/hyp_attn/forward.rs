//! The reference forward: for every (b, h) the per-row terms of queries and keys once, then for
//! every query its visible key range, the scores −β·d, a max-shifted softmax, o and the lse.
//!
//! The pair distance is a `PairDist`: `Prepared` (the [`Form`]s) for [`forward`], or another
//! distance through `forward_with` (the INT8 logits of [`crate::hyp_int8::attention`]), with the
//! softmax and the P·V aggregation shared.

use ndarray::{Array3, Array4, ArrayView2, Axis};

use super::{Form, HypAttnArgs, HypAttnOut};
use crate::poincare::maps::{law_of_cosines_z, TangentRow};
use crate::poincare::scalar::{acosh1p, dot, norm2};
use crate::{Dtype, Elem};

/// One (b, h) slice's rows in the compute type, prepared for the distance form.
pub(crate) struct Prepared<F> {
    form: Form,
    s: F,
    c: F,
    /// Exact: the law-of-cosines terms of q and k.
    tq: Vec<TangentRow<F>>,
    tk: Vec<TangentRow<F>>,
    /// Compat forms: the (mapped) rows and their squared norms.
    xq: Vec<Vec<F>>,
    xk: Vec<Vec<F>>,
    nq: Vec<F>,
    nk: Vec<F>,
}

/// Rows of a 2-D view, rounded to `dtype` and converted to `F`.
pub(crate) fn rows<F: Elem>(x: ArrayView2<'_, f64>, dtype: Dtype) -> Vec<Vec<F>> {
    x.axis_iter(Axis(0))
        .map(|r| r.iter().map(|&v| F::of(dtype.round(v))).collect())
        .collect()
}

/// The flash kernel's exp0 with its ε (design §3.5, compat).
fn flash_exp0<F: Elem>(s: F, q: &[F]) -> Vec<F> {
    let qn = (norm2(q) + F::of(1e-6)).sqrt();
    let scale = (s * qn).min(F::of(15.0)).tanh() / (s * qn + F::of(1e-6));
    q.iter().map(|&e| e * scale).collect()
}

impl<F: Elem> Prepared<F> {
    pub(crate) fn new(form: Form, c: f64, q: Vec<Vec<F>>, k: Vec<Vec<F>>) -> Self {
        let (c, s) = (F::of(c), F::of(c.sqrt()));
        let mut p = Self {
            form,
            s,
            c,
            tq: Vec::new(),
            tk: Vec::new(),
            xq: Vec::new(),
            xk: Vec::new(),
            nq: Vec::new(),
            nk: Vec::new(),
        };
        match form {
            Form::Exact => {
                p.tq = q.iter().map(|r| TangentRow::new(s, r)).collect();
                p.tk = k.iter().map(|r| TangentRow::new(s, r)).collect();
            }
            Form::FastBench => {
                p.xq = q;
                p.xk = k;
            }
            Form::Flash => {
                p.xq = q.iter().map(|r| flash_exp0(s, r)).collect();
                p.xk = k.iter().map(|r| flash_exp0(s, r)).collect();
            }
        }
        p.nq = p.xq.iter().map(|r| norm2(r)).collect();
        p.nk = p.xk.iter().map(|r| norm2(r)).collect();
        p
    }

    /// Law-of-cosines terms of query i and key j (exact form only).
    pub(crate) fn terms(&self, i: usize, j: usize) -> (&TangentRow<F>, &TangentRow<F>) {
        (&self.tq[i], &self.tk[j])
    }

    /// The distance (or the compat form's stand-in) of query i and key j.
    pub(crate) fn dist(&self, i: usize, j: usize) -> F {
        let (one, two) = (F::one(), F::of(2.0));
        match self.form {
            Form::Exact => acosh1p(law_of_cosines_z(&self.tq[i], &self.tk[j])) / self.s,
            Form::FastBench => {
                let (nq, nk) = (self.nq[i], self.nk[j]);
                let diff2 = (nq - two * dot(&self.xq[i], &self.xk[j]) + nk).max(F::zero());
                (diff2 + F::of(1e-8)).sqrt() * (one + self.c * (nq + nk)).sqrt()
            }
            Form::Flash => {
                let (nq, nk, c) = (self.nq[i], self.nk[j], self.c);
                let diff2 = (nq - two * dot(&self.xq[i], &self.xk[j]) + nk).max(F::zero());
                let den = ((one - c * nq) * (one - c * nk)).max(F::of(1e-6));
                let x = (one + two * c * diff2 / den).max(F::of(1.0 + 1e-6));
                (x + (x * x - one + F::of(1e-6)).sqrt()).ln() / self.s
            }
        }
    }
}

/// The distance of query i and key j of one (b, h) slice, as the scores −β·d read it.
pub(crate) trait PairDist<F> {
    /// d(q_i, k_j) (or a compat form's stand-in).
    fn dist(&self, i: usize, j: usize) -> F;
}

impl<F: Elem> PairDist<F> for Prepared<F> {
    fn dist(&self, i: usize, j: usize) -> F {
        Prepared::dist(self, i, j)
    }
}

/// One row's softmax over its visible keys: the scores' max-shifted exponentials and the lse.
pub(crate) struct RowSoftmax<F> {
    /// exp(t_j − m) for j in the visible range, in order.
    pub p: Vec<F>,
    /// Σ p.
    pub l: F,
    /// ln Σ exp(t_j) = m + ln l (−∞ when nothing is visible).
    pub lse: F,
}

pub(crate) fn row_softmax<F: Elem, P: PairDist<F>>(
    prep: &P,
    beta: F,
    i: usize,
    (lo, hi): (usize, usize),
) -> RowSoftmax<F> {
    let t: Vec<F> = (lo..hi).map(|j| -beta * prep.dist(i, j)).collect();
    let m = t.iter().copied().fold(F::neg_infinity(), F::max);
    let p: Vec<F> = t.iter().map(|&x| (x - m).exp()).collect();
    let l = p.iter().copied().fold(F::zero(), |a, b| a + b);
    let lse = if p.is_empty() {
        F::neg_infinity()
    } else {
        m + l.ln()
    };
    RowSoftmax { p, l, lse }
}

/// The forward pass in `F` on inputs rounded to `dtype`.
pub fn forward<F: Elem>(args: &HypAttnArgs<'_>, dtype: Dtype) -> HypAttnOut {
    let (form, c) = (args.form(), args.curvature().c());
    let out = forward_with::<F, _, std::convert::Infallible>(args, dtype, |q, k| {
        Ok(Prepared::new(form, c, q, k))
    });
    match out {
        Ok(o) => o,
        Err(never) => match never {},
    }
}

/// The forward pass with the pair distances of each (b, h) slice from `prepare(q rows, k rows)`
/// (rows rounded to `dtype`, in `F`); the scores, softmax, o and lse as [`forward`].
pub(crate) fn forward_with<F: Elem, P: PairDist<F>, E>(
    args: &HypAttnArgs<'_>,
    dtype: Dtype,
    mut prepare: impl FnMut(Vec<Vec<F>>, Vec<Vec<F>>) -> Result<P, E>,
) -> Result<HypAttnOut, E> {
    let (nb, nh, n, _, _, dv) = args.dims();
    let mut o = Array4::zeros((nb, nh, n, dv));
    let mut lse = Array3::zeros((nb, nh, n));
    let beta = F::of(args.beta());
    for b in 0..nb {
        for h in 0..nh {
            let sl = |x: ndarray::ArrayView4<'_, f64>| {
                rows::<F>(x.index_axis(Axis(0), b).index_axis_move(Axis(0), h), dtype)
            };
            let prep = prepare(sl(args.q()), sl(args.k()))?;
            let v = sl(args.v());
            for i in 0..n {
                let range = args.visible(b, i);
                let sm = row_softmax(&prep, beta, i, range);
                lse[[b, h, i]] = sm.lse.to_f64_exact();
                if sm.p.is_empty() {
                    continue;
                }
                let mut acc = vec![F::zero(); dv];
                for (pj, vj) in sm.p.iter().zip(&v[range.0..range.1]) {
                    for (a, &x) in acc.iter_mut().zip(vj) {
                        *a += *pj * x;
                    }
                }
                for (e, a) in acc.iter().enumerate() {
                    o[[b, h, i, e]] = (*a / sm.l).to_f64_exact();
                }
            }
        }
    }
    Ok(HypAttnOut { o, lse })
}
