//! The VJPs of one block (design model.md §3.3–3.5): the BK-Core gate, the mix + LayerNorm +
//! residual, and the block as a whole (its intermediates recomputed from its input).

use ndarray::{Array2, Array3, ArrayView2, ArrayView3, Axis, Zip};
use num_complex::Complex64;

use super::ar_ssm::{ar_ssm_saved, ar_ssm_vjp_from};
use super::attention::{attention_saved, attention_vjp_from, softplus_grad};
use super::layers::{layer_norm_vjp, linear_vjp};
use crate::bk_core::{exact, BkCoreArgs};
use crate::model::{layer_norm, linear, softplus, BlockWeights, ModelDims, Numerics};
use crate::Result;

/// The gate's intermediates, kept by [`bk_gate_saved`] for [`bk_gate_vjp_from`].
pub(crate) struct GateSaved {
    pre: Array2<f64>,
    a: Array2<f64>,
    sup: Array2<f64>,
    sub: Array2<f64>,
    im_g: Array2<f64>,
}

/// [`bk_gate`](crate::model::bk_gate) in the exact numerics (the same operations) and what its VJP needs.
pub(crate) fn bk_gate_saved(
    w: &BlockWeights<f64>,
    x: ArrayView3<'_, f64>,
) -> Result<(Array2<f64>, GateSaved)> {
    let (b, n, _) = x.dim();
    let pre = linear(&w.v_proj, x).index_axis_move(Axis(2), 0);
    let v = pre.mapv(|e| e.clamp(-3.0, 3.0));
    let [h_diag, h_sup, h_sub] = &w.h0;
    let a = Array2::from_shape_fn((b, n), |(i, t)| h_diag[t] + v[[i, t]]);
    let sup = Array2::from_shape_fn((b, n - 1), |(_, t)| h_sup[t]);
    let sub = Array2::from_shape_fn((b, n - 1), |(_, t)| h_sub[t]);
    let im = softplus(w.epsilon) + 1e-6 + w.gamma;
    let args = BkCoreArgs::new(a.view(), sup.view(), sub.view(), Complex64::new(0.0, im))?;
    let im_g = exact::forward::<f64>(&args)?.mapv(|z| z.im);
    let gs = w.gate_sensitivity;
    let gate = im_g.mapv(|g| 1.0 / (1.0 + (-(g.abs() * gs)).exp()));
    let saved = GateSaved {
        pre,
        a,
        sup,
        sub,
        im_g,
    };
    Ok((gate, saved))
}

/// The VJP of [`bk_gate`](crate::model::bk_gate) (exact numerics) for ∂L/∂g (B, N): returns ∂L/∂x (B, N, D) and adds
/// the gradients of v_proj, ε, γ and γ_gate into `g`. The clamp of v to ±3 passes no gradient
/// where it is active. Its forward is recomputed; `bk_gate_vjp_from` takes it saved.
pub fn bk_gate_vjp(
    w: &BlockWeights<f64>,
    x: ArrayView3<'_, f64>,
    dgate: ArrayView2<'_, f64>,
    g: &mut BlockWeights<f64>,
) -> Result<Array3<f64>> {
    let (_, s) = bk_gate_saved(w, x)?;
    bk_gate_vjp_from(w, x, &s, dgate, g)
}

/// [`bk_gate_vjp`] from [`bk_gate_saved`]'s intermediates on the same x.
pub(crate) fn bk_gate_vjp_from(
    w: &BlockWeights<f64>,
    x: ArrayView3<'_, f64>,
    s: &GateSaved,
    dgate: ArrayView2<'_, f64>,
    g: &mut BlockWeights<f64>,
) -> Result<Array3<f64>> {
    let (b, n, _) = x.dim();
    let (pre, im_g) = (&s.pre, &s.im_g);
    let im = softplus(w.epsilon) + 1e-6 + w.gamma;
    let args = BkCoreArgs::new(
        s.a.view(),
        s.sup.view(),
        s.sub.view(),
        Complex64::new(0.0, im),
    )?;
    let gs = w.gate_sensitivity;
    // g = σ(e), e = γ_gate·|Im G|.
    let mut grad_g = Array2::zeros((b, n));
    let mut dgs = 0.0;
    Zip::from(&mut grad_g)
        .and(im_g)
        .and(&dgate)
        .for_each(|dst: &mut Complex64, &ig, &dg| {
            let s = 1.0 / (1.0 + (-(ig.abs() * gs)).exp());
            let de = dg * s * (1.0 - s);
            dgs += de * ig.abs();
            *dst = Complex64::new(0.0, de * gs * ig.signum());
        });
    g.gate_sensitivity += dgs;
    let bk = exact::backward::<f64>(&args, grad_g.view())?;
    g.epsilon += bk.z.im * softplus_grad(w.epsilon);
    g.gamma += bk.z.im;
    let dpre = Zip::from(&bk.a)
        .and(pre)
        .map_collect(|&da, &p| if p.abs() < 3.0 { da } else { 0.0 })
        .insert_axis(Axis(2));
    Ok(linear_vjp(&w.v_proj, x, dpre.view(), &mut g.v_proj))
}

/// The VJP of h + LN_out(g⊙local + (1 − g)⊙global) for ∂L/∂out: returns (∂L/∂local,
/// ∂L/∂global, ∂L/∂g); ∂L/∂h is ∂L/∂out itself. Adds LN_out's gradients into `g`.
pub fn mix_norm_residual_vjp(
    w: &BlockWeights<f64>,
    local: ArrayView3<'_, f64>,
    global: ArrayView3<'_, f64>,
    gate: ArrayView2<'_, f64>,
    dout: ArrayView3<'_, f64>,
    g: &mut BlockWeights<f64>,
) -> (Array3<f64>, Array3<f64>, Array2<f64>) {
    let gate3 = gate.insert_axis(Axis(2));
    let m = &local * &gate3 + &global * &gate3.mapv(|s| 1.0 - s);
    let dm = layer_norm_vjp(&w.out_norm, m.view(), dout, &mut g.out_norm);
    let dlocal = &dm * &gate3;
    let dglobal = &dm * &gate3.mapv(|s| 1.0 - s);
    let dgate = (&dm * &(&local - &global)).sum_axis(Axis(2));
    (dlocal, dglobal, dgate)
}

/// The VJP of one block on its input h (B, N, D) for ∂L/∂out: returns ∂L/∂h and adds every
/// parameter's gradient into `g` (exact numerics; the scan and the conv may be either form).
pub fn block_vjp(
    d: &ModelDims,
    w: &BlockWeights<f64>,
    h: ArrayView3<'_, f64>,
    num: &Numerics,
    dout: ArrayView3<'_, f64>,
    g: &mut BlockWeights<f64>,
) -> Result<Array3<f64>> {
    let x = layer_norm(&w.norm, h);
    // One forward of each path, its intermediates kept for the VJPs below.
    let (gate, gsv) = bk_gate_saved(w, x.view())?;
    let (local, asv) = attention_saved(&w.attn, x.view(), d.heads, d.window)?;
    let (global, ssv) = ar_ssm_saved(&w.ssm, x.view(), num.scan, num.conv);
    let (dlocal, dglobal, dgate) =
        mix_norm_residual_vjp(w, local.view(), global.view(), gate.view(), dout, g);
    let mut dx = attention_vjp_from(
        &w.attn,
        x.view(),
        &asv,
        (d.heads, d.window),
        dlocal.view(),
        &mut g.attn,
    )?;
    dx += &ar_ssm_vjp_from(
        &w.ssm,
        x.view(),
        &ssv,
        (num.scan, num.conv),
        dglobal.view(),
        &mut g.ssm,
    );
    dx += &bk_gate_vjp_from(w, x.view(), &gsv, dgate.view(), g)?;
    Ok(&layer_norm_vjp(&w.norm, h, dx.view(), &mut g.norm) + &dout)
}
