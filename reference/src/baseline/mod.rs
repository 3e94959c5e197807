//! The VRAM study's baseline transformer (design model.md §6.3), forward and exact backward on the
//! CPU, exactly as the original built it: token embedding (no positions) → L post-LN
//! `nn.TransformerEncoderLayer`s (ReLU FFN, **no mask**) → a Linear head; no final norm; dropout
//! the identity (eval mode, or masks applied outside).
//! Per layer: x = LN₁(x + MHA(x)); x = LN₂(x + W₂·ReLU(W₁x + b₁) + b₂).
//!
//! ```
//! use muse_reference::baseline::{forward, BaselineWeights};
//! let w = BaselineWeights::zeros(50, 16, 2, 2, 32);
//! let logits = forward(&w, ndarray::Array2::from_elem((1, 5), 7usize).view());
//! assert_eq!(logits.dim(), (1, 5, 50));
//! ```

#[cfg(test)]
mod tests;

use ndarray::{s, Array2, Array3, Array4, ArrayView2, ArrayView3, Axis, Zip};

use crate::model::grad::params::{lin, norm, slice};
use crate::model::grad::{layer_norm_vjp, linear_vjp, merge_heads as merge, split_heads as split};
use crate::model::{layer_norm, linear, Linear, Norm};

/// One encoder layer.
#[derive(Debug, Clone)]
pub struct EncoderLayer {
    /// in_proj (3D, D) with bias: q, k, v stacked.
    pub in_proj: Linear<f64>,
    /// out_proj (D, D) with bias.
    pub out_proj: Linear<f64>,
    /// linear1 (F, D), linear2 (D, F).
    pub linear1: Linear<f64>,
    /// linear2.
    pub linear2: Linear<f64>,
    /// norm1 (after attention), norm2 (after the FFN).
    pub norm1: Norm<f64>,
    /// norm2.
    pub norm2: Norm<f64>,
}

/// The model's weights.
#[derive(Debug, Clone)]
pub struct BaselineWeights {
    /// (V, D).
    pub embedding: Array2<f64>,
    /// The layers.
    pub layers: Vec<EncoderLayer>,
    /// The attention heads.
    pub heads: usize,
    /// Linear(D, V) with bias.
    pub head: Linear<f64>,
}

impl BaselineWeights {
    /// Zero weights (unit norm gains) for V, D, L, heads and FFN width F.
    pub fn zeros(v: usize, d: usize, l: usize, heads: usize, f: usize) -> Self {
        let layer = || EncoderLayer {
            in_proj: Linear::zeros(3 * d, d, true),
            out_proj: Linear::zeros(d, d, true),
            linear1: Linear::zeros(f, d, true),
            linear2: Linear::zeros(d, f, true),
            norm1: Norm::unit(d),
            norm2: Norm::unit(d),
        };
        Self {
            embedding: Array2::zeros((v, d)),
            layers: (0..l).map(|_| layer()).collect(),
            heads,
            head: Linear::zeros(v, d, true),
        }
    }

    /// Calls `f(name, value)` on every parameter, in a fixed order.
    pub fn for_each_param(&mut self, f: &mut dyn FnMut(&str, &mut f64)) {
        slice("embedding", self.embedding.iter_mut(), f);
        for (i, l) in self.layers.iter_mut().enumerate() {
            for (n, p) in [
                ("in_proj", &mut l.in_proj),
                ("out_proj", &mut l.out_proj),
                ("linear1", &mut l.linear1),
                ("linear2", &mut l.linear2),
            ] {
                lin(&format!("layers.{i}.{n}"), p, f);
            }
            norm(&format!("layers.{i}.norm1"), &mut l.norm1, f);
            norm(&format!("layers.{i}.norm2"), &mut l.norm2, f);
        }
        lin("head", &mut self.head, f);
    }
}

/// Unmasked softmax attention per head: (o (B, H, N, dh), p (B, H, N, N)).
fn attention(q: &Array4<f64>, k: &Array4<f64>, v: &Array4<f64>) -> (Array4<f64>, Array4<f64>) {
    let (b, h, n, dh) = q.dim();
    let scale = 1.0 / (dh as f64).sqrt();
    let mut o = Array4::zeros((b, h, n, dh));
    let mut p = Array4::zeros((b, h, n, n));
    for bb in 0..b {
        for hh in 0..h {
            let (qs, ks, vs) = (
                q.slice(s![bb, hh, .., ..]),
                k.slice(s![bb, hh, .., ..]),
                v.slice(s![bb, hh, .., ..]),
            );
            let mut sc = qs.dot(&ks.t()) * scale;
            for mut row in sc.rows_mut() {
                let m = row.fold(f64::NEG_INFINITY, |a, &x| a.max(x));
                row.mapv_inplace(|x| (x - m).exp());
                let z = row.sum();
                row /= z;
            }
            o.slice_mut(s![bb, hh, .., ..]).assign(&sc.dot(&vs));
            p.slice_mut(s![bb, hh, .., ..]).assign(&sc);
        }
    }
    (o, p)
}

fn mha(
    l: &EncoderLayer,
    x: ArrayView3<'_, f64>,
    heads: usize,
) -> (Array3<f64>, [Array4<f64>; 4], Array3<f64>) {
    let d = x.dim().2;
    let qkv = linear(&l.in_proj, x);
    let part = |i: usize| split(&qkv.slice(s![.., .., i * d..(i + 1) * d]).to_owned(), heads);
    let (q, k, v) = (part(0), part(1), part(2));
    let (o, p) = attention(&q, &k, &v);
    let merged = merge(o.view());
    (linear(&l.out_proj, merged.view()), [q, k, v, p], merged)
}

fn layer(l: &EncoderLayer, x: ArrayView3<'_, f64>, heads: usize) -> Array3<f64> {
    let a = &x + &mha(l, x, heads).0;
    let y = layer_norm(&l.norm1, a.view());
    let f = linear(
        &l.linear2,
        linear(&l.linear1, y.view()).mapv(|v| v.max(0.0)).view(),
    );
    layer_norm(&l.norm2, (&y + &f).view())
}

/// Logits (B, N, V) of ids (B, N) (every id < V, checked by the caller).
pub fn forward(w: &BaselineWeights, ids: ArrayView2<'_, usize>) -> Array3<f64> {
    let d = w.embedding.ncols();
    let mut x = Array3::from_shape_fn((ids.nrows(), ids.ncols(), d), |(b, n, c)| {
        w.embedding[[ids[[b, n]], c]]
    });
    for l in &w.layers {
        x = layer(l, x.view(), w.heads);
    }
    linear(&w.head, x.view())
}

fn layer_vjp(
    l: &EncoderLayer,
    x: ArrayView3<'_, f64>,
    heads: usize,
    dout: ArrayView3<'_, f64>,
    g: &mut EncoderLayer,
) -> Array3<f64> {
    let (att, [q, k, v, p], merged) = mha(l, x, heads);
    let a = &x + &att;
    let y = layer_norm(&l.norm1, a.view());
    let pre = linear(&l.linear1, y.view());
    let hid = pre.mapv(|v| v.max(0.0));
    let f = linear(&l.linear2, hid.view());
    let dz = layer_norm_vjp(&l.norm2, (&y + &f).view(), dout, &mut g.norm2);
    let dhid = linear_vjp(&l.linear2, hid.view(), dz.view(), &mut g.linear2);
    let dpre = Zip::from(&dhid)
        .and(&pre)
        .map_collect(|&d, &v| if v > 0.0 { d } else { 0.0 });
    let dy = &dz + &linear_vjp(&l.linear1, y.view(), dpre.view(), &mut g.linear1);
    let da = layer_norm_vjp(&l.norm1, a.view(), dy.view(), &mut g.norm1);
    let dmerged = linear_vjp(&l.out_proj, merged.view(), da.view(), &mut g.out_proj);
    let d_o = split(&dmerged, heads);
    let dh = q.dim().3;
    let scale = 1.0 / (dh as f64).sqrt();
    let (mut dq, mut dk, mut dv) = (
        Array4::zeros(q.dim()),
        Array4::zeros(k.dim()),
        Array4::zeros(v.dim()),
    );
    for bb in 0..q.dim().0 {
        for hh in 0..heads {
            let (pp, doo) = (p.slice(s![bb, hh, .., ..]), d_o.slice(s![bb, hh, .., ..]));
            let (qs, ks, vs) = (
                q.slice(s![bb, hh, .., ..]),
                k.slice(s![bb, hh, .., ..]),
                v.slice(s![bb, hh, .., ..]),
            );
            let dp = doo.dot(&vs.t());
            let delta = (&dp * &pp).sum_axis(Axis(1)).insert_axis(Axis(1));
            let ds = &pp * &(&dp - &delta) * scale;
            dq.slice_mut(s![bb, hh, .., ..]).assign(&ds.dot(&ks));
            dk.slice_mut(s![bb, hh, .., ..]).assign(&ds.t().dot(&qs));
            dv.slice_mut(s![bb, hh, .., ..]).assign(&pp.t().dot(&doo));
        }
    }
    let dqkv = ndarray::concatenate(
        Axis(2),
        &[
            merge(dq.view()).view(),
            merge(dk.view()).view(),
            merge(dv.view()).view(),
        ],
    )
    .expect("(B, N, 3D)");
    &da + &linear_vjp(&l.in_proj, x, dqkv.view(), &mut g.in_proj)
}

/// The gradient of L with ∂L/∂logits = `dlogits` with respect to every weight.
pub fn backward(
    w: &BaselineWeights,
    ids: ArrayView2<'_, usize>,
    dlogits: ArrayView3<'_, f64>,
) -> BaselineWeights {
    let mut g = w.clone();
    g.for_each_param(&mut |_, v| *v = 0.0);
    let d = w.embedding.ncols();
    let mut x = Array3::from_shape_fn((ids.nrows(), ids.ncols(), d), |(b, n, c)| {
        w.embedding[[ids[[b, n]], c]]
    });
    let mut inputs = Vec::new();
    for l in &w.layers {
        let next = layer(l, x.view(), w.heads);
        inputs.push(std::mem::replace(&mut x, next));
    }
    let mut dx = linear_vjp(&w.head, x.view(), dlogits, &mut g.head);
    for (i, xin) in inputs.iter().enumerate().rev() {
        dx = layer_vjp(
            &w.layers[i],
            xin.view(),
            w.heads,
            dx.view(),
            &mut g.layers[i],
        );
    }
    Zip::from(&ids).and(dx.lanes(Axis(2))).for_each(|&t, row| {
        let mut dst = g.embedding.row_mut(t);
        dst += &row;
    });
    g
}
