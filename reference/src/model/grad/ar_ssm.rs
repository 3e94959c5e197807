//! The VJP of the AR-SSM global path (design model.md §3.7), both scans and both convs: the
//! transposes of the prefix sums and of the depthwise conv, then the gates and projections.

use ndarray::{Array2, Array3, ArrayView3, Axis};

use super::layers::linear_vjp;
use crate::model::ar_ssm::{cumsum, depthwise_conv};
use crate::model::{linear, pseudo_cumsum, ArSsm, Conv, Scan};

/// The tap offsets relative to the output position.
fn offsets(conv: Conv) -> [isize; 3] {
    match conv {
        Conv::Causal => [-2, -1, 0],
        Conv::Centered => [-1, 0, 1],
    }
}

/// The transpose of the scan along axis 1: suffix sums for the cumsum; for the pseudo-cumsum,
/// every dy_t goes back to the x_{t − stride} it summed.
fn scan_transpose(dy: ArrayView3<'_, f64>, scan: Scan) -> Array3<f64> {
    let n = dy.dim().1;
    let mut dx = dy.to_owned();
    match scan {
        Scan::Cumsum => {
            for t in (0..n.saturating_sub(1)).rev() {
                let next = dx.index_axis(Axis(1), t + 1).to_owned();
                let mut dst = dx.index_axis_mut(Axis(1), t);
                dst += &next;
            }
        }
        Scan::Pseudo { bs } => {
            for t in 0..n {
                let start = t - t % bs;
                let mut stride = 1;
                while stride < bs {
                    if t >= start + stride {
                        let src = dy.index_axis(Axis(1), t).to_owned();
                        let mut dst = dx.index_axis_mut(Axis(1), t - stride);
                        dst += &src;
                    }
                    stride *= 2;
                }
            }
        }
    }
    dx
}

/// The AR-SSM's forward intermediates, kept by [`ar_ssm_saved`] for [`ar_ssm_vjp_from`].
pub(crate) struct SsmSaved {
    pre1: Array3<f64>,
    hidden: Array3<f64>,
    gate: Array3<f64>,
    ux: Array3<f64>,
    vx: Array3<f64>,
    k: Array3<f64>,
    vg: Array3<f64>,
    z: Array3<f64>,
}

/// The AR-SSM's output (the same operations as [`crate::model::ar_ssm`]) and the intermediates
/// its VJP needs.
pub(crate) fn ar_ssm_saved(
    w: &ArSsm<f64>,
    x: ArrayView3<'_, f64>,
    scan: Scan,
    conv: Conv,
) -> (Array3<f64>, SsmSaved) {
    let t = depthwise_conv(&w.conv, x, conv);
    let pre1 = linear(&w.gate1, x);
    let hidden = pre1.mapv(|v| v.max(0.0));
    let gate = linear(&w.gate2, hidden.view()).mapv(|v| 1.0 / (1.0 + (-v).exp()));
    let ux = linear(&w.u, x);
    let vx = linear(&w.v, x);
    let ug = &ux * &gate;
    let vg = &vx * &gate;
    let k = match scan {
        Scan::Cumsum => cumsum(ug.view()),
        Scan::Pseudo { bs } => pseudo_cumsum(ug.view(), bs),
    };
    let z = &k * &vg;
    let y = t + linear(&w.out, z.view());
    let saved = SsmSaved {
        pre1,
        hidden,
        gate,
        ux,
        vx,
        k,
        vg,
        z,
    };
    (y, saved)
}

/// The AR-SSM's VJP: returns ∂L/∂x and adds the parameters' gradients into `g` (its
/// intermediates recomputed; `ar_ssm_vjp_from` takes them saved).
pub fn ar_ssm_vjp(
    w: &ArSsm<f64>,
    x: ArrayView3<'_, f64>,
    scan: Scan,
    conv: Conv,
    dy: ArrayView3<'_, f64>,
    g: &mut ArSsm<f64>,
) -> Array3<f64> {
    let (_, s) = ar_ssm_saved(w, x, scan, conv);
    ar_ssm_vjp_from(w, x, &s, (scan, conv), dy, g)
}

/// [`ar_ssm_vjp`] from the intermediates of [`ar_ssm_saved`] on the same x.
pub(crate) fn ar_ssm_vjp_from(
    w: &ArSsm<f64>,
    x: ArrayView3<'_, f64>,
    s: &SsmSaved,
    (scan, conv): (Scan, Conv),
    dy: ArrayView3<'_, f64>,
    g: &mut ArSsm<f64>,
) -> Array3<f64> {
    let (b, n, d) = x.dim();
    let SsmSaved {
        pre1,
        hidden,
        gate,
        ux,
        vx,
        k,
        vg,
        z,
    } = s;
    // The conv: y_t += taps[ch, j]·x[t + off_j, ch].
    let mut dx = Array3::zeros((b, n, d));
    let mut dtaps = Array2::zeros((d, 3));
    for (j, &o) in offsets(conv).iter().enumerate() {
        for bb in 0..b {
            for t in 0..n {
                let src = t as isize + o;
                if src < 0 || src >= n as isize {
                    continue;
                }
                for ch in 0..d {
                    dtaps[[ch, j]] += dy[[bb, t, ch]] * x[[bb, src as usize, ch]];
                    dx[[bb, src as usize, ch]] += w.conv[[ch, j]] * dy[[bb, t, ch]];
                }
            }
        }
    }
    g.conv += &dtaps;
    let dz = linear_vjp(&w.out, z.view(), dy, &mut g.out);
    let dk = &dz * vg;
    let dvg = &dz * k;
    let dug = scan_transpose(dk.view(), scan);
    let dux = &dug * gate;
    let dvx = &dvg * gate;
    let dgate = &dug * ux + &dvg * vx;
    let dpre2 = &dgate * &gate.mapv(|s| s * (1.0 - s));
    let dhidden = linear_vjp(&w.gate2, hidden.view(), dpre2.view(), &mut g.gate2);
    let dpre1 = ndarray::Zip::from(&dhidden)
        .and(pre1)
        .map_collect(|&dh, &p| if p > 0.0 { dh } else { 0.0 });
    dx += &linear_vjp(&w.gate1, x, dpre1.view(), &mut g.gate1);
    dx += &linear_vjp(&w.u, x, dux.view(), &mut g.u);
    dx += &linear_vjp(&w.v, x, dvx.view(), &mut g.v);
    dx
}
