//! Every trainable scalar of a [`ModelWeights`], by name: what an optimiser steps and what the
//! finite-difference tests perturb. The H0 buffers are not parameters.

use ndarray::Array1;

use crate::model::{Linear, ModelWeights, Norm};

/// `f(name, v)` on every scalar of one tensor.
pub(crate) fn slice<'a>(
    name: &str,
    a: impl Iterator<Item = &'a mut f64>,
    f: &mut dyn FnMut(&str, &mut f64),
) {
    for v in a {
        f(name, v);
    }
}

/// A Linear's `name.weight` then `name.bias`.
pub(crate) fn lin(name: &str, l: &mut Linear<f64>, f: &mut dyn FnMut(&str, &mut f64)) {
    slice(&format!("{name}.weight"), l.w.iter_mut(), f);
    if let Some(b) = l.b.as_mut() {
        slice(&format!("{name}.bias"), b.iter_mut(), f);
    }
}

/// A LayerNorm's `name.weight` then `name.bias`.
pub(crate) fn norm(name: &str, n: &mut Norm<f64>, f: &mut dyn FnMut(&str, &mut f64)) {
    slice(&format!("{name}.weight"), n.weight.iter_mut(), f);
    slice(&format!("{name}.bias"), n.bias.iter_mut(), f);
}

/// Calls `f(tensor name, value)` on every trainable scalar, in a fixed order.
///
/// ```
/// use muse_reference::model::{grad, ModelDims, ModelWeights};
/// let d = ModelDims { vocab: 50, d_model: 16, layers: 1, heads: 2, htt_rank: 4, n_seq: 8,
///                     window: 4, ssm_rank: 8, ssm_hidden: 4 };
/// let mut w = ModelWeights::<f64>::zeros(&d);
/// let mut count = 0;
/// grad::for_each_param(&mut w, &mut |_, _| count += 1);
/// assert!(count > 1000);
/// ```
pub fn for_each_param(w: &mut ModelWeights<f64>, f: &mut dyn FnMut(&str, &mut f64)) {
    slice("htt.core1", w.htt.core1.iter_mut(), f);
    slice("htt.core2", w.htt.core2.iter_mut(), f);
    slice("htt.phase", w.htt.phase.iter_mut(), f);
    slice("pos", w.pos.iter_mut(), f);
    for (i, b) in w.blocks.iter_mut().enumerate() {
        let p = |s: &str| format!("blocks.{i}.{s}");
        norm(&p("norm"), &mut b.norm, f);
        lin(&p("v_proj"), &mut b.v_proj, f);
        f(&p("epsilon"), &mut b.epsilon);
        f(&p("gamma"), &mut b.gamma);
        f(&p("gate_sensitivity"), &mut b.gate_sensitivity);
        let a = &mut b.attn;
        for (n, m) in [
            ("wq", &mut a.wq),
            ("wk", &mut a.wk),
            ("wv", &mut a.wv),
            ("wo", &mut a.wo),
        ] {
            slice(&p(&format!("attn.{n}")), m.iter_mut(), f);
        }
        f(&p("attn.log_c"), &mut a.log_c);
        f(&p("attn.beta"), &mut a.beta);
        f(&p("attn.bias"), &mut a.bias);
        let s = &mut b.ssm;
        lin(&p("ssm.gate1"), &mut s.gate1, f);
        lin(&p("ssm.gate2"), &mut s.gate2, f);
        lin(&p("ssm.u"), &mut s.u, f);
        lin(&p("ssm.v"), &mut s.v, f);
        slice(&p("ssm.conv"), s.conv.iter_mut(), f);
        lin(&p("ssm.out"), &mut s.out, f);
        norm(&p("out_norm"), &mut b.out_norm, f);
    }
    norm("final_norm", &mut w.final_norm, f);
}

/// Weights of the same shapes with every parameter 0 (a gradient accumulator); H0 is zeroed too.
pub fn zeros_like(w: &ModelWeights<f64>) -> ModelWeights<f64> {
    let mut g = w.clone();
    for_each_param(&mut g, &mut |_, v| *v = 0.0);
    for b in &mut g.blocks {
        b.h0 = [
            Array1::zeros(b.h0[0].len()),
            Array1::zeros(b.h0[1].len()),
            Array1::zeros(b.h0[2].len()),
        ];
    }
    g.htt.bf16 = false;
    g
}
