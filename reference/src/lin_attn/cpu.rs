//! The CPU reference passes, per (b, h) head, generic over the element type: the forward pass and
//! the exact backward, both as masked products ([`super::product`]).

use ndarray::{Array4, ArrayView4, Axis};

use super::product::{chunked, phi_prime, recurrent, Direction, Operand};
use super::{LinAttnArgs, LinAttnGrad, LinAttnSchedule, CHUNK};
use crate::{Dtype, Elem};

/// Head `bh` of a (B, H, N, w) array as N·w row-major values rounded to `dtype`, in `F`.
fn head<F: Elem>(a: &ArrayView4<'_, f64>, bh: usize, dtype: Dtype) -> Vec<F> {
    let h = a.dim().1;
    a.index_axis(Axis(0), bh / h)
        .index_axis_move(Axis(0), bh % h)
        .iter()
        .map(|&v| F::of(dtype.round(v)))
        .collect()
}

fn product<F: Elem>(
    sched: LinAttnSchedule,
    a: &Operand<'_, F>,
    b: &Operand<'_, F>,
    c: &Operand<'_, F>,
    n: usize,
    dir: Direction,
) -> Vec<F> {
    match sched {
        LinAttnSchedule::Chunked => chunked(a, b, c, n, dir, CHUNK),
        LinAttnSchedule::Recurrent => recurrent(a, b, c, n, dir),
    }
}

/// One head's forward results: o (N·dv) and the normaliser φ(q_i)·z_i (N).
struct HeadForward<F> {
    o: Vec<F>,
    den: Vec<F>,
}

fn head_forward<F: Elem>(
    args: &LinAttnArgs<'_>,
    (q, k, v): (&[F], &[F], &[F]),
    sched: LinAttnSchedule,
) -> HeadForward<F> {
    let (n, d, dv) = (args.n(), args.d(), args.dv());
    let eps = F::of(args.config().eps);
    let nd = product(
        sched,
        &Operand::plain(q, d).phi(),
        &Operand::plain(k, d).phi(),
        &Operand::plain(v, dv).aug(),
        n,
        args.direction(),
    );
    let mut o = vec![F::zero(); n * dv];
    let mut den = vec![F::zero(); n];
    for i in 0..n {
        den[i] = nd[i * (dv + 1) + dv];
        let m = den[i].max(eps);
        for e in 0..dv {
            o[i * dv + e] = nd[i * (dv + 1) + e] / m;
        }
    }
    HeadForward { o, den }
}

fn store<F: Elem>(out: &mut Array4<f64>, bh: usize, values: &[F]) {
    let h = out.dim().1;
    let mut o = out.index_axis_mut(Axis(0), bh / h);
    for (dst, src) in o.index_axis_mut(Axis(0), bh % h).iter_mut().zip(values) {
        *dst = src.to_f64_exact();
    }
}

/// The reference forward pass in `F` (inputs rounded to `dtype` first) with `sched`.
pub fn forward<F: Elem>(
    args: &LinAttnArgs<'_>,
    dtype: Dtype,
    sched: LinAttnSchedule,
) -> Array4<f64> {
    let mut out = Array4::zeros(args.v().dim());
    for bh in 0..args.heads() {
        let (q, k, v) = (
            head::<F>(&args.q(), bh, dtype),
            head::<F>(&args.k(), bh, dtype),
            head::<F>(&args.v(), bh, dtype),
        );
        store(&mut out, bh, &head_forward(args, (&q, &k, &v), sched).o);
    }
    out
}

/// The reference backward pass in `F` (inputs and `d_o` rounded to `dtype` first) with `sched`.
pub fn backward<F: Elem>(
    args: &LinAttnArgs<'_>,
    d_o: ArrayView4<'_, f64>,
    dtype: Dtype,
    sched: LinAttnSchedule,
) -> LinAttnGrad {
    let (n, d, dv) = (args.n(), args.d(), args.dv());
    let eps = F::of(args.config().eps);
    let (dir, tdir) = (args.direction(), args.direction().transposed());
    let mut grad = LinAttnGrad {
        dq: Array4::zeros(args.q().dim()),
        dk: Array4::zeros(args.k().dim()),
        dv: Array4::zeros(args.v().dim()),
    };
    for bh in 0..args.heads() {
        let (q, k, v) = (
            head::<F>(&args.q(), bh, dtype),
            head::<F>(&args.k(), bh, dtype),
            head::<F>(&args.v(), bh, dtype),
        );
        let up = head::<F>(&d_o, bh, dtype);
        let fwd = head_forward(args, (&q, &k, &v), sched);
        // G = [dO/m, −⟨dO, o⟩/m·[den > eps]], the upstream gradient of [num, den].
        let mut g = vec![F::zero(); n * (dv + 1)];
        for i in 0..n {
            let m = fwd.den[i].max(eps);
            let mut dot = F::zero();
            for e in 0..dv {
                g[i * (dv + 1) + e] = up[i * dv + e] / m;
                dot += up[i * dv + e] * fwd.o[i * dv + e];
            }
            g[i * (dv + 1) + dv] = if fwd.den[i] > eps {
                -dot / m
            } else {
                F::zero()
            };
        }
        let g_all = Operand::plain(&g, dv + 1);
        let g_num = Operand { width: dv, ..g_all };
        let (qp, kp, vp) = (
            Operand::plain(&q, d).phi(),
            Operand::plain(&k, d).phi(),
            Operand::plain(&v, dv).aug(),
        );
        let mut dq = product(sched, &g_all, &vp, &kp, n, dir);
        let mut dk = product(sched, &vp, &g_all, &qp, n, tdir);
        let dvv = product(sched, &kp, &qp, &g_num, n, tdir);
        for ((&xq, &xk), (gq, gk)) in q.iter().zip(&k).zip(dq.iter_mut().zip(dk.iter_mut())) {
            *gq *= phi_prime(xq);
            *gk *= phi_prime(xk);
        }
        store(&mut grad.dq, bh, &dq);
        store(&mut grad.dk, bh, &dk);
        store(&mut grad.dv, bh, &dvv);
    }
    grad
}
