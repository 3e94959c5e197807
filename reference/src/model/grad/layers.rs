//! VJPs of the dense building blocks: Linear, LayerNorm and the HTT embedding and tied decoder.

use ndarray::{s, Array1, Array2, Array3, ArrayView2, ArrayView3, Axis, Zip};

use crate::model::{htt_table, Htt, Linear, Norm};

/// The VJP of y = x·Wᵀ over the last axis: returns ∂L/∂x and adds ∂L/∂W into `gw`.
pub fn proj_vjp(
    w: &Array2<f64>,
    x: ArrayView3<'_, f64>,
    dy: ArrayView3<'_, f64>,
    gw: &mut Array2<f64>,
) -> Array3<f64> {
    let (b, n, i) = x.dim();
    let o = w.nrows();
    let xf = x.to_shape((b * n, i)).expect("(B, N, in) flattens");
    let dyf = dy.to_shape((b * n, o)).expect("(B, N, out) flattens");
    *gw += &dyf.t().dot(&xf);
    let dx = dyf.dot(w);
    let dx = if dx.is_standard_layout() {
        dx
    } else {
        dx.as_standard_layout().into_owned()
    };
    dx.into_shape_with_order((b, n, i))
        .expect("(B·N, in) reshapes")
}

/// The VJP of y = x·Wᵀ + b over the last axis: returns ∂L/∂x and adds ∂L/∂W, ∂L/∂b into `g`.
pub fn linear_vjp(
    l: &Linear<f64>,
    x: ArrayView3<'_, f64>,
    dy: ArrayView3<'_, f64>,
    g: &mut Linear<f64>,
) -> Array3<f64> {
    if let Some(gb) = g.b.as_mut() {
        *gb += &dy.sum_axis(Axis(0)).sum_axis(Axis(0));
    }
    proj_vjp(&l.w, x, dy, &mut g.w)
}

/// The VJP of LayerNorm (eps 1e-5, biased variance): returns ∂L/∂x, adds ∂L/∂γ, ∂L/∂β into `g`.
pub fn layer_norm_vjp(
    norm: &Norm<f64>,
    x: ArrayView3<'_, f64>,
    dy: ArrayView3<'_, f64>,
    g: &mut Norm<f64>,
) -> Array3<f64> {
    let d = x.dim().2 as f64;
    let mut dx = Array3::zeros(x.dim());
    Zip::from(dx.lanes_mut(Axis(2)))
        .and(x.lanes(Axis(2)))
        .and(dy.lanes(Axis(2)))
        .for_each(|mut dxr, xr, dyr| {
            let mean = xr.sum() / d;
            let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d;
            let inv = 1.0 / (var + 1e-5).sqrt();
            let xhat: Array1<f64> = xr.mapv(|v| (v - mean) * inv);
            let dxhat = &dyr * &norm.weight;
            g.weight += &(&dyr * &xhat);
            g.bias += &dyr;
            let m1 = dxhat.sum() / d;
            let m2 = (&dxhat * &xhat).sum() / d;
            Zip::from(&mut dxr)
                .and(&dxhat)
                .and(&xhat)
                .for_each(|o, &dh, &xh| *o = inv * (dh - m1 - xh * m2));
        });
    dx
}

/// Adds into `g` the gradient of the HTT entries E[t, 0..len) (len ≤ d1·d2) given ∂L/∂E[t, ·]:
/// E[t, a·d2 + c] = Σ_ρ cos θ_ρ·core1[i1, ρ, a]·core2[i2, ρ, c].
fn htt_entry_vjp(htt: &Htt<f64>, t: usize, de: &[f64], g: &mut Htt<f64>) {
    let (v1, r, d1) = htt.core1.dim();
    let (v2, _, d2) = htt.core2.dim();
    let (i1, i2) = ((t / v2).min(v1 - 1), t % v2);
    for rho in 0..r {
        let (cs, sn) = (htt.phase[rho].cos(), htt.phase[rho].sin());
        let mut dphase = 0.0;
        for a in 0..d1 {
            let c1 = htt.core1[[i1, rho, a]];
            let mut dc1 = 0.0;
            for c in 0..d2 {
                let f = a * d2 + c;
                if f >= de.len() {
                    break;
                }
                let c2 = htt.core2[[i2, rho, c]];
                dc1 += de[f] * c2;
                g.core2[[i2, rho, c]] += de[f] * cs * c1;
                dphase += de[f] * c1 * c2;
            }
            g.core1[[i1, rho, a]] += cs * dc1;
        }
        g.phase[rho] -= sn * dphase;
    }
}

/// The VJP of [`crate::model::htt_embed`]: adds ∂L/∂(core1, core2, θ) for ∂L/∂E (B, N, D).
pub fn htt_embed_vjp(
    htt: &Htt<f64>,
    ids: ArrayView2<'_, usize>,
    de: ArrayView3<'_, f64>,
    g: &mut Htt<f64>,
) {
    Zip::from(&ids)
        .and(de.lanes(Axis(2)))
        .for_each(|&t, row| htt_entry_vjp(htt, t, &row.to_vec(), g));
}

/// The VJP of [`crate::model::htt_decode`] (f64, no bf16): returns ∂L/∂h (B, N, D) and adds the
/// cores' and θ's gradients through the (V, D) table into `g`.
pub fn htt_decode_vjp(
    htt: &Htt<f64>,
    h: ArrayView3<'_, f64>,
    vocab: usize,
    dlogits: ArrayView3<'_, f64>,
    g: &mut Htt<f64>,
) -> Array3<f64> {
    let (b, n, d) = h.dim();
    let full = htt_table(htt, vocab);
    let table = full.slice(s![.., ..d]);
    let hf = h.to_shape((b * n, d)).expect("(B, N, D) flattens");
    let dlf = dlogits
        .to_shape((b * n, vocab))
        .expect("(B, N, V) flattens");
    let dh = dlf.dot(&table);
    let dtable: Array2<f64> = dlf.t().dot(&hf);
    for (t, row) in dtable.outer_iter().enumerate() {
        htt_entry_vjp(htt, t, &row.to_vec(), g);
    }
    dh.into_shape_with_order((b, n, d))
        .expect("(B·N, D) reshapes")
}
