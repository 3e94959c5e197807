//! The AR-SSM global path (design model.md §3.7): y_n = T(x)_n + W_o(vg_n ⊙ k_n) + b_o, with
//! gates g = σ(W₂·ReLU(W₁x + b₁) + b₂), ug = U(x)⊙g, vg = V(x)⊙g and k = scan(ug).

use ndarray::{Array3, ArrayView3, Axis};

use super::{linear, ArSsm, Conv, Scan};
use crate::Elem;

/// The original's pseudo-cumsum along axis 1 of a (B, N, R) array: for each n,
/// x_n + Σ_{stride = 1, 2, 4, … < bs} x_{n − stride}, where n − stride stays in n's block of `bs`.
///
/// ```
/// let x = ndarray::Array3::from_shape_fn((1, 5, 1), |(_, n, _)| (n + 1) as f64);
/// let y = muse_reference::model::pseudo_cumsum(x.view(), 128);
/// assert_eq!(y.into_raw_vec_and_offset().0, vec![1.0, 3.0, 6.0, 9.0, 13.0]);
/// ```
pub fn pseudo_cumsum<F: Elem>(x: ArrayView3<'_, F>, bs: usize) -> Array3<F> {
    let mut y = x.to_owned();
    let n = x.dim().1;
    for t in 0..n {
        let start = t - t % bs;
        let mut stride = 1;
        while stride < bs {
            if t >= start + stride {
                let mut dst = y.index_axis_mut(Axis(1), t);
                dst += &x.index_axis(Axis(1), t - stride);
            }
            stride *= 2;
        }
    }
    y
}

pub(crate) fn cumsum<F: Elem>(x: ArrayView3<'_, F>) -> Array3<F> {
    let mut y = x.to_owned();
    for t in 1..x.dim().1 {
        let prev = y.index_axis(Axis(1), t - 1).to_owned();
        let mut dst = y.index_axis_mut(Axis(1), t);
        dst += &prev;
    }
    y
}

pub(crate) fn depthwise_conv<F: Elem>(
    taps: &ndarray::Array2<F>,
    x: ArrayView3<'_, F>,
    conv: Conv,
) -> Array3<F> {
    let (b, n, d) = x.dim();
    // Offsets of taps 0, 1, 2 relative to the output position.
    let offs: [isize; 3] = match conv {
        Conv::Causal => [-2, -1, 0],
        Conv::Centered => [-1, 0, 1],
    };
    let mut y = Array3::zeros((b, n, d));
    for bb in 0..b {
        for t in 0..n {
            for (k, &o) in offs.iter().enumerate() {
                let src = t as isize + o;
                if src < 0 || src >= n as isize {
                    continue;
                }
                for ch in 0..d {
                    y[[bb, t, ch]] += taps[[ch, k]] * x[[bb, src as usize, ch]];
                }
            }
        }
    }
    y
}

/// The AR-SSM on x (B, N, D).
pub fn ar_ssm<F: Elem>(w: &ArSsm<F>, x: ArrayView3<'_, F>, scan: Scan, conv: Conv) -> Array3<F> {
    let t = depthwise_conv(&w.conv, x, conv);
    let hidden = linear(&w.gate1, x).mapv(|v| v.max(F::zero()));
    let g = linear(&w.gate2, hidden.view()).mapv(|v| F::one() / (F::one() + (-v).exp()));
    let ug = linear(&w.u, x) * &g;
    let vg = linear(&w.v, x) * &g;
    let k = match scan {
        Scan::Cumsum => cumsum(ug.view()),
        Scan::Pseudo { bs } => pseudo_cumsum(ug.view(), bs),
    };
    t + linear(&w.out, (k * vg).view())
}
