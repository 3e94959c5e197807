//! The memory-optimised model of the original's VRAM study (design model.md §4), forward and
//! exact backward on the CPU: HTT embedding (no positions) → L pre-LN blocks
//! x += AR-SSM(LN₁ x); x += FFN(LN₂ x) → final LayerNorm → an untied low-rank head
//! output_up(output_down(x)). FFN is `LowRankFFN_p1`: Linear(D, f) → ReLU → Linear(f, 4D) → ReLU
//! → Linear(4D, f) → ReLU → Linear(f, D) (its dropouts are the identity here: eval mode, or a
//! training step's masks applied outside).
//!
//! ```
//! use muse_reference::memopt::{forward, MemOptWeights};
//! use muse_reference::model::{Conv, Scan};
//! let w = MemOptWeights::zeros(50, 16, 2, 4, 8, 8, 8);
//! let ids = ndarray::Array2::from_elem((1, 6), 3usize);
//! let logits = forward(&w, ids.view(), Scan::Cumsum, Conv::Causal);
//! assert_eq!(logits.dim(), (1, 6, 50));
//! ```

#[cfg(test)]
mod tests;

use ndarray::{Array1, Array2, Array3, ArrayView2, ArrayView3};

use crate::model::grad::params::{lin, norm, slice};
use crate::model::grad::{ar_ssm_vjp, htt_embed_vjp, layer_norm_vjp, linear_vjp};
use crate::model::{
    ar_ssm, htt_embed, htt_factors, layer_norm, linear, ArSsm, Conv, Htt, Linear, Norm, Scan,
};

/// One block's weights.
#[derive(Debug, Clone)]
pub struct MemOptBlock {
    /// LN₁, before the AR-SSM.
    pub ln1: Norm<f64>,
    /// The AR-SSM.
    pub ssm: ArSsm<f64>,
    /// LN₂, before the FFN.
    pub ln2: Norm<f64>,
    /// The FFN's four Linears (D→f, f→4D, 4D→f, f→D).
    pub ffn: [Linear<f64>; 4],
}

/// The model's weights.
#[derive(Debug, Clone)]
pub struct MemOptWeights {
    /// The HTT embedding's cores.
    pub htt: Htt<f64>,
    /// The blocks.
    pub blocks: Vec<MemOptBlock>,
    /// The final LayerNorm.
    pub final_norm: Norm<f64>,
    /// output_down: Linear(D, o).
    pub down: Linear<f64>,
    /// output_up: Linear(o, V).
    pub up: Linear<f64>,
}

impl MemOptWeights {
    /// Zero weights (unit LayerNorm gains) for V, D, L, HTT rank r, AR-SSM rank R, FFN width f
    /// and head width o.
    pub fn zeros(v: usize, d: usize, l: usize, r: usize, rank: usize, f: usize, o: usize) -> Self {
        let (v1, v2, d1, d2) = htt_factors(v, d);
        let g = (d / 4).max(4);
        let block = || MemOptBlock {
            ln1: Norm::unit(d),
            ssm: ArSsm {
                gate1: Linear::zeros(g, d, true),
                gate2: Linear::zeros(rank, g, true),
                u: Linear::zeros(rank, d, false),
                v: Linear::zeros(rank, d, false),
                conv: Array2::zeros((d, 3)),
                out: Linear::zeros(d, rank, true),
            },
            ln2: Norm::unit(d),
            ffn: [
                Linear::zeros(f, d, true),
                Linear::zeros(4 * d, f, true),
                Linear::zeros(f, 4 * d, true),
                Linear::zeros(d, f, true),
            ],
        };
        Self {
            htt: Htt {
                core1: Array3::zeros((v1, r, d1)),
                core2: Array3::zeros((v2, r, d2)),
                phase: Array1::zeros(r),
                bf16: false,
            },
            blocks: (0..l).map(|_| block()).collect(),
            final_norm: Norm::unit(d),
            down: Linear::zeros(o, d, true),
            up: Linear::zeros(v, o, true),
        }
    }

    /// Calls `f(name, value)` on every parameter, in a fixed order.
    pub fn for_each_param(&mut self, f: &mut dyn FnMut(&str, &mut f64)) {
        slice("htt.core1", self.htt.core1.iter_mut(), f);
        slice("htt.core2", self.htt.core2.iter_mut(), f);
        slice("htt.phase", self.htt.phase.iter_mut(), f);
        for (i, b) in self.blocks.iter_mut().enumerate() {
            norm(&format!("blocks.{i}.ln1"), &mut b.ln1, f);
            norm(&format!("blocks.{i}.ln2"), &mut b.ln2, f);
            let s = &mut b.ssm;
            for (n, l) in [
                ("gate1", &mut s.gate1),
                ("gate2", &mut s.gate2),
                ("u", &mut s.u),
                ("v", &mut s.v),
                ("out", &mut s.out),
            ] {
                lin(&format!("blocks.{i}.ssm.{n}"), l, f);
            }
            slice(&format!("blocks.{i}.ssm.conv"), s.conv.iter_mut(), f);
            for (k, l) in b.ffn.iter_mut().enumerate() {
                lin(&format!("blocks.{i}.ffn.{k}"), l, f);
            }
        }
        norm("final_norm", &mut self.final_norm, f);
        lin("down", &mut self.down, f);
        lin("up", &mut self.up, f);
    }
}

fn relu(x: Array3<f64>) -> Array3<f64> {
    x.mapv(|v| v.max(0.0))
}

fn ffn(f: &[Linear<f64>; 4], x: ArrayView3<'_, f64>) -> Array3<f64> {
    let h1 = relu(linear(&f[0], x));
    let h2 = relu(linear(&f[1], h1.view()));
    let h3 = relu(linear(&f[2], h2.view()));
    linear(&f[3], h3.view())
}

fn d_embed(w: &MemOptWeights) -> usize {
    w.final_norm.weight.len()
}

/// Logits (B, N, V) of ids (B, N) (every id < V, checked by the caller).
pub fn forward(
    w: &MemOptWeights,
    ids: ArrayView2<'_, usize>,
    scan: Scan,
    conv: Conv,
) -> Array3<f64> {
    let mut x = htt_embed(&w.htt, ids, d_embed(w));
    for b in &w.blocks {
        x = &x + &ar_ssm(&b.ssm, layer_norm(&b.ln1, x.view()).view(), scan, conv);
        x = &x + &ffn(&b.ffn, layer_norm(&b.ln2, x.view()).view());
    }
    let h = layer_norm(&w.final_norm, x.view());
    linear(&w.up, linear(&w.down, h.view()).view())
}

/// The VJP of a ReLU chain link: dy masked by y > 0.
fn relu_vjp(y: &Array3<f64>, dy: Array3<f64>) -> Array3<f64> {
    ndarray::Zip::from(&dy)
        .and(y)
        .map_collect(|&d, &v| if v > 0.0 { d } else { 0.0 })
}

fn ffn_vjp(
    f: &[Linear<f64>; 4],
    x: ArrayView3<'_, f64>,
    dy: ArrayView3<'_, f64>,
    g: &mut [Linear<f64>; 4],
) -> Array3<f64> {
    let h1 = relu(linear(&f[0], x));
    let h2 = relu(linear(&f[1], h1.view()));
    let h3 = relu(linear(&f[2], h2.view()));
    let [g0, g1, g2, g3] = g;
    let d3 = relu_vjp(&h3, linear_vjp(&f[3], h3.view(), dy, g3));
    let d2 = relu_vjp(&h2, linear_vjp(&f[2], h2.view(), d3.view(), g2));
    let d1 = relu_vjp(&h1, linear_vjp(&f[1], h1.view(), d2.view(), g1));
    linear_vjp(&f[0], x, d1.view(), g0)
}

/// The gradient of L with ∂L/∂logits = `dlogits` with respect to every weight (zeros where none).
pub fn backward(
    w: &MemOptWeights,
    ids: ArrayView2<'_, usize>,
    scan: Scan,
    conv: Conv,
    dlogits: ArrayView3<'_, f64>,
) -> MemOptWeights {
    let mut g = w.clone();
    g.for_each_param(&mut |_, v| *v = 0.0);
    // The forward, keeping each half-block's input (the checkpoints).
    let mut x = htt_embed(&w.htt, ids, d_embed(w));
    let mut saved = Vec::new();
    for b in &w.blocks {
        let x1 = &x + &ar_ssm(&b.ssm, layer_norm(&b.ln1, x.view()).view(), scan, conv);
        let x2 = &x1 + &ffn(&b.ffn, layer_norm(&b.ln2, x1.view()).view());
        saved.push((std::mem::replace(&mut x, x2), x1));
    }
    let h = layer_norm(&w.final_norm, x.view());
    let hd = linear(&w.down, h.view());
    let dhd = linear_vjp(&w.up, hd.view(), dlogits, &mut g.up);
    let dh = linear_vjp(&w.down, h.view(), dhd.view(), &mut g.down);
    let mut dx = layer_norm_vjp(&w.final_norm, x.view(), dh.view(), &mut g.final_norm);
    for (i, (x0, x1)) in saved.iter().enumerate().rev() {
        let (b, gb) = (&w.blocks[i], &mut g.blocks[i]);
        let n2 = layer_norm(&b.ln2, x1.view());
        let dn2 = ffn_vjp(&b.ffn, n2.view(), dx.view(), &mut gb.ffn);
        dx = &dx + &layer_norm_vjp(&b.ln2, x1.view(), dn2.view(), &mut gb.ln2);
        let n1 = layer_norm(&b.ln1, x0.view());
        let dn1 = ar_ssm_vjp(&b.ssm, n1.view(), scan, conv, dx.view(), &mut gb.ssm);
        dx = &dx + &layer_norm_vjp(&b.ln1, x0.view(), dn1.view(), &mut gb.ln1);
    }
    htt_embed_vjp(&w.htt, ids, dx.view(), &mut g.htt);
    g
}
