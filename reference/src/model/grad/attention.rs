//! The VJP of the exact windowed local attention (design model.md §3.5–3.6): the projections,
//! the head split and merge, and [`crate::hyp_attn`]'s exact backward with `Mask::Window(W)`.

use ndarray::{Array3, Array4, ArrayView3, ArrayView4};

use super::layers::proj_vjp;
use crate::hyp_attn::{backward, HypAttnArgs, Mask};
use crate::model::{linear, softplus, Linear, LocalAttn};
use crate::{Dtype, Result};

/// (B, N, D) → (B, H, N, D/H).
pub fn split_heads(x: &Array3<f64>, h: usize) -> Array4<f64> {
    let (b, n, d) = x.dim();
    x.to_shape((b, n, h, d / h))
        .expect("D = H·dh")
        .permuted_axes([0, 2, 1, 3])
        .as_standard_layout()
        .into_owned()
}

/// (B, H, N, dh) → (B, N, H·dh).
pub fn merge_heads(x: ArrayView4<'_, f64>) -> Array3<f64> {
    let (b, h, n, dh) = x.dim();
    x.permuted_axes([0, 2, 1, 3])
        .as_standard_layout()
        .into_shape_with_order((b, n, h * dh))
        .expect("heads merge")
        .to_owned()
}

fn plain(w: &ndarray::Array2<f64>) -> Linear<f64> {
    Linear {
        w: w.clone(),
        b: None,
        bf16: false,
    }
}

/// d softplus(x)/dx = σ(x) (1 where the forward returns x itself, x > 20).
pub(super) fn softplus_grad(x: f64) -> f64 {
    if x > 20.0 {
        1.0
    } else {
        1.0 / (1.0 + (-x).exp())
    }
}

/// The exact attention's heads and merged output, kept by [`attention_saved`].
pub(crate) struct AttnSaved {
    qh: Array4<f64>,
    kh: Array4<f64>,
    vh: Array4<f64>,
    merged: Array3<f64>,
}

/// The exact `window_attention` on x (B, N, D) (the same operations) and what its VJP needs.
pub(crate) fn attention_saved(
    w: &LocalAttn<f64>,
    x: ArrayView3<'_, f64>,
    n_heads: usize,
    window: usize,
) -> Result<(Array3<f64>, AttnSaved)> {
    let (q, k, v) = (
        linear(&plain(&w.wq), x),
        linear(&plain(&w.wk), x),
        linear(&plain(&w.wv), x),
    );
    let (qh, kh, vh) = (
        split_heads(&q, n_heads),
        split_heads(&k, n_heads),
        split_heads(&v, n_heads),
    );
    let (c, beta) = (softplus(w.log_c), softplus(w.beta));
    let args = HypAttnArgs::new(
        qh.view(),
        kh.view(),
        vh.view(),
        c,
        beta,
        Mask::Window(window),
    )?;
    let o = crate::hyp_attn::forward::forward::<f64>(&args, Dtype::F64).o;
    let merged = merge_heads(o.view());
    let y = linear(&plain(&w.wo), merged.view());
    Ok((y, AttnSaved { qh, kh, vh, merged }))
}

/// The VJP of the exact `window_attention` on x (B, N, D): returns ∂L/∂x and adds the
/// gradients of W_q, W_k, W_v, W_o, log c and β into `g` (its forward recomputed;
/// `attention_vjp_from` takes it saved).
pub fn window_attention_vjp(
    w: &LocalAttn<f64>,
    x: ArrayView3<'_, f64>,
    n_heads: usize,
    window: usize,
    dy: ArrayView3<'_, f64>,
    g: &mut LocalAttn<f64>,
) -> Result<Array3<f64>> {
    let (_, s) = attention_saved(w, x, n_heads, window)?;
    attention_vjp_from(w, x, &s, (n_heads, window), dy, g)
}

/// [`window_attention_vjp`] from [`attention_saved`]'s intermediates on the same x.
pub(crate) fn attention_vjp_from(
    w: &LocalAttn<f64>,
    x: ArrayView3<'_, f64>,
    s: &AttnSaved,
    (n_heads, window): (usize, usize),
    dy: ArrayView3<'_, f64>,
    g: &mut LocalAttn<f64>,
) -> Result<Array3<f64>> {
    let (c, beta) = (softplus(w.log_c), softplus(w.beta));
    let args = HypAttnArgs::new(
        s.qh.view(),
        s.kh.view(),
        s.vh.view(),
        c,
        beta,
        Mask::Window(window),
    )?;
    let dmerged = proj_vjp(&w.wo, s.merged.view(), dy, &mut g.wo);
    let d_o = split_heads(&dmerged, n_heads);
    let ga = backward::backward::<f64>(&args, d_o.view(), Dtype::F64);
    g.log_c += ga.dc * softplus_grad(w.log_c);
    g.beta += ga.dbeta * softplus_grad(w.beta);
    let mut dx = proj_vjp(&w.wq, x, merge_heads(ga.dq.view()).view(), &mut g.wq);
    dx += &proj_vjp(&w.wk, x, merge_heads(ga.dk.view()).view(), &mut g.wk);
    dx += &proj_vjp(&w.wv, x, merge_heads(ga.dv.view()).view(), &mut g.wv);
    Ok(dx)
}
