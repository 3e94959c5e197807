//! The exact backward of the Phase 8 core (design model.md §3, issue 9) on the CPU in float64:
//! the oracle the CUDA backward and training are checked against. Every layer has a VJP; the
//! model's backward recomputes each block's intermediates from its input (the forward keeps one
//! (B, N, D) array per block), which is also the gradient-checkpointing schedule.
//!
//! Gradients come back in a [`ModelWeights`] of the same shape as the weights (the H0 buffers
//! and the bf16 flags carry no gradient). Only the exact attention is differentiable; the scan
//! and the conv may be either form.
//!
//! ```
//! use muse_reference::model::{grad, ModelDims, ModelWeights, Numerics};
//! let d = ModelDims { vocab: 50, d_model: 16, layers: 1, heads: 2, htt_rank: 4, n_seq: 8,
//!                     window: 4, ssm_rank: 8, ssm_hidden: 4 };
//! let w = ModelWeights::<f64>::zeros(&d);
//! let ids = ndarray::Array2::from_elem((1, 8), 3usize);
//! let (loss, g) = grad::loss_and_grad(&d, &w, &Numerics::exact(), ids.view(), ids.view())?;
//! assert!((loss - 50f64.ln()).abs() < 1e-12); // zero weights: uniform logits
//! assert_eq!(g.pos.dim(), (8, 16));
//! # Ok::<(), muse_reference::Error>(())
//! ```

mod ar_ssm;
mod attention;
mod blocks;
mod layers;
pub(crate) mod params;
#[cfg(test)]
mod tests;

pub use ar_ssm::ar_ssm_vjp;
pub use attention::{merge_heads, split_heads, window_attention_vjp};
pub use blocks::{bk_gate_vjp, block_vjp, mix_norm_residual_vjp};
pub use layers::{htt_decode_vjp, htt_embed_vjp, layer_norm_vjp, linear_vjp, proj_vjp};
pub use params::{for_each_param, zeros_like};

use ndarray::{s, Array3, ArrayView2, ArrayView3, Axis, Zip};

use super::block::{check_ids, check_logits};
use super::{
    block, htt_decode, htt_embed, layer_norm, AttnPath, ModelDims, ModelWeights, Numerics,
};
use crate::{Error, Result};

const OP: &str = "model backward";

/// Mean cross-entropy of logits (B, N, V) against `targets` (B, N) and its gradient, computed row
/// by row (log-sum-exp with the max subtracted; one (B, N, V) array, the gradient, is allocated).
pub fn cross_entropy(
    logits: ArrayView3<'_, f64>,
    targets: ArrayView2<'_, usize>,
) -> Result<(f64, Array3<f64>)> {
    let (b, n, v) = logits.dim();
    if targets.dim() != (b, n) {
        return Err(Error::Shape {
            op: OP,
            arg: "targets",
            expected: format!("(B, N) = ({b}, {n}) like the logits"),
            got: targets.shape().to_vec(),
        });
    }
    if let Some(((i, j), &t)) = targets.indexed_iter().find(|(_, &t)| t >= v) {
        return Err(Error::Domain {
            op: OP,
            arg: "targets",
            rule: format!("must be < vocab_size = {v}, got {t} at [{i}, {j}]"),
        });
    }
    let rows = (b * n) as f64;
    let mut grad = Array3::zeros((b, n, v));
    let mut loss = 0.0;
    Zip::from(grad.lanes_mut(Axis(2)))
        .and(logits.lanes(Axis(2)))
        .and(&targets)
        .for_each(|mut gr, lr, &t| {
            let m = lr.fold(f64::NEG_INFINITY, |a, &x| a.max(x));
            let z: f64 = lr.iter().map(|&x| (x - m).exp()).sum();
            let lse = m + z.ln();
            loss += lse - lr[t];
            Zip::from(&mut gr)
                .and(&lr)
                .for_each(|g, &x| *g = (x - lse).exp() / rows);
            gr[t] -= 1.0 / rows;
        });
    Ok((loss / rows, grad))
}

/// The gradient of a loss L with ∂L/∂logits = `dlogits` (B, N, V) with respect to every weight,
/// for token ids (B, N) (f64, exact attention).
pub fn backward(
    d: &ModelDims,
    w: &ModelWeights<f64>,
    num: &Numerics,
    ids: ArrayView2<'_, usize>,
    dlogits: ArrayView3<'_, f64>,
) -> Result<ModelWeights<f64>> {
    check_exact(num)?;
    let saved = forward_saving(d, w, num, ids)?;
    backward_from(d, w, num, ids, &saved, dlogits)
}

/// Only the exact maths has a backward.
fn check_exact(num: &Numerics) -> Result<()> {
    if num.attention != AttnPath::Exact || num.complex64 || !num.quant.is_none() {
        return Err(Error::Unsupported {
            op: OP,
            backend: "cpu",
            what: "a compat profile's attention, complex64 BK-Core or an inference quantisation (only the exact maths has a backward)".into(),
        });
    }
    Ok(())
}

/// The forward's block inputs and final hidden state: what the backward recomputes each block
/// from (the checkpoints).
struct Saved {
    inputs: Vec<Array3<f64>>,
    last: Array3<f64>,
}

/// The forward of [`super::forward`] (same checks), keeping each block's input.
fn forward_saving(
    d: &ModelDims,
    w: &ModelWeights<f64>,
    num: &Numerics,
    ids: ArrayView2<'_, usize>,
) -> Result<Saved> {
    check_ids(d, &ids)?;
    let mut h = htt_embed(&w.htt, ids, d.d_model);
    h += &w.pos.slice(s![..ids.ncols(), ..]);
    let mut inputs = Vec::with_capacity(w.blocks.len());
    for bw in &w.blocks {
        let next = block(d, bw, h.view(), num)?;
        inputs.push(std::mem::replace(&mut h, next));
    }
    Ok(Saved { inputs, last: h })
}

fn backward_from(
    d: &ModelDims,
    w: &ModelWeights<f64>,
    num: &Numerics,
    ids: ArrayView2<'_, usize>,
    saved: &Saved,
    dlogits: ArrayView3<'_, f64>,
) -> Result<ModelWeights<f64>> {
    let mut g = zeros_like(w);
    let h = &saved.last;
    let xf = layer_norm(&w.final_norm, h.view());
    let dxf = htt_decode_vjp(&w.htt, xf.view(), d.vocab, dlogits, &mut g.htt);
    let mut dh = layer_norm_vjp(&w.final_norm, h.view(), dxf.view(), &mut g.final_norm);
    for (l, hin) in saved.inputs.iter().enumerate().rev() {
        dh = block_vjp(
            d,
            &w.blocks[l],
            hin.view(),
            num,
            dh.view(),
            &mut g.blocks[l],
        )?;
    }
    let mut dpos = g.pos.slice_mut(s![..ids.ncols(), ..]);
    dpos += &dh.sum_axis(Axis(0));
    htt_embed_vjp(&w.htt, ids, dh.view(), &mut g.htt);
    Ok(g)
}

/// The mean cross-entropy of predicting `targets` from `ids` and its gradient (one forward, one
/// backward).
pub fn loss_and_grad(
    d: &ModelDims,
    w: &ModelWeights<f64>,
    num: &Numerics,
    ids: ArrayView2<'_, usize>,
    targets: ArrayView2<'_, usize>,
) -> Result<(f64, ModelWeights<f64>)> {
    check_exact(num)?;
    // One forward: its block inputs serve the logits and the backward.
    let saved = forward_saving(d, w, num, ids)?;
    let logits = htt_decode(
        &w.htt,
        layer_norm(&w.final_norm, saved.last.view()).view(),
        d.vocab,
    );
    check_logits(&logits)?;
    let (loss, dlogits) = cross_entropy(logits.view(), targets)?;
    Ok((loss, backward_from(d, w, num, ids, &saved, dlogits.view())?))
}
