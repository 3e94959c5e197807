//! Sparse hyperbolic attention (design hyperbolic.md §6), f64 reference: causal attention over a
//! selected key set, with the two selections the GPU kernels are driven by.
//!
//! - **Block skip**: per query block of `block` rows, a list of key blocks ([`BlockLists`]). The
//!   default selection ([`select_centroid`]) scores block pairs by −d between the blocks' mean
//!   tangent vectors and keeps the top k_b causal-admissible key blocks, always the diagonal. N
//!   need not be a multiple of the block: the last block is partial (padding, never an all-True
//!   mask).
//! - **LSH** ([`Lsh`], [`select_lsh`]): T tables of h-bit SimHash of the unit directions with
//!   seeded hyperplanes that the model stores; candidates are same-code keys j ≤ i in any table
//!   plus a local window, capped at K by exact score (ties: the lower index).
//!
//! Attention over a selection ([`attend_blocks`], [`attend_indices`]) is causal: key j ≤ i only.
//!
//! ```
//! use muse_reference::sparse_attn::{attend_blocks, select_centroid};
//! let q = ndarray::Array4::from_shape_fn((1, 1, 10, 4), |(_, _, i, d)| 0.1 * ((i * 4 + d) % 7) as f64);
//! let lists = select_centroid(q.view(), q.view(), 1.0, 4, 2)?;
//! assert_eq!(lists.blocks_of(0, 0, 2)[0], 2); // the diagonal first, then the best other block
//! assert_eq!(lists.blocks_of(0, 0, 2).len(), 2);
//! let out = attend_blocks(q.view(), q.view(), q.view(), 1.0, 1.0, &lists)?;
//! assert_eq!(out.o.dim(), (1, 1, 10, 4));
//! # Ok::<(), muse_reference::Error>(())
//! ```

mod select;
#[cfg(test)]
mod tests;

pub use select::{exact_topk, recall, select_centroid, select_lsh, BlockLists, Lsh};

use ndarray::{Array3, Array4, ArrayView4};

use crate::kv4::Partial;
use crate::poincare::maps::dist_tangent;
use crate::poincare::Curvature;
use crate::{Error, Result};

pub(crate) const OP: &str = "sparse_attn";

/// The outputs: o [B, H, N, Dv] and lse [B, H, N].
#[derive(Debug, Clone)]
pub struct SparseOut {
    /// o.
    pub o: Array4<f64>,
    /// log Σ exp(−β·d) over the keys attended (−inf if none).
    pub lse: Array3<f64>,
}

pub(crate) fn check_qkv(
    q: &ArrayView4<'_, f64>,
    k: &ArrayView4<'_, f64>,
    v: &ArrayView4<'_, f64>,
) -> Result<()> {
    crate::poincare::check_nonempty(OP, "q", &["B", "H", "N", "D"], q.shape())?;
    let (b, h, n, d) = q.dim();
    if k.dim() != (b, h, n, d) {
        return Err(Error::Shape {
            op: OP,
            arg: "k",
            expected: format!("[B, H, N, D] = {:?} (self-attention)", q.shape()),
            got: k.shape().to_vec(),
        });
    }
    let (vb, vh, vn, _) = v.dim();
    if (vb, vh, vn) != (b, h, n) || v.dim().3 == 0 {
        return Err(Error::Shape {
            op: OP,
            arg: "v",
            expected: format!("[B, H, N, Dv] = [{b}, {h}, {n}, Dv ≥ 1]"),
            got: v.shape().to_vec(),
        });
    }
    for (arg, a) in [("q", q), ("k", k), ("v", v)] {
        if let Some((i, x)) = a.indexed_iter().find(|(_, x)| !x.is_finite()) {
            return Err(Error::NonFinite {
                op: OP,
                arg,
                index: vec![i.0, i.1, i.2, i.3],
                value: *x,
            });
        }
    }
    Ok(())
}

/// Softmax(−β·d) attention of each query over `keys(b, h, i)` ∩ [0, i], in f64.
fn attend<F>(
    q: ArrayView4<'_, f64>,
    k: ArrayView4<'_, f64>,
    v: ArrayView4<'_, f64>,
    c: f64,
    beta: f64,
    keys: F,
) -> Result<SparseOut>
where
    F: Fn(usize, usize, usize) -> Vec<usize>,
{
    check_qkv(&q, &k, &v)?;
    let s = Curvature::named(OP, "c", c)?.s();
    if !beta.is_finite() {
        return Err(Error::Domain {
            op: OP,
            arg: "beta",
            rule: format!("must be finite, got {beta}"),
        });
    }
    let (b, h, n, _) = q.dim();
    let dv = v.dim().3;
    let (mut o, mut lse) = (Array4::zeros((b, h, n, dv)), Array3::zeros((b, h, n)));
    for bi in 0..b {
        for hi in 0..h {
            for i in 0..n {
                let qi = q.slice(ndarray::s![bi, hi, i, ..]).to_vec();
                let mut p = Partial::empty(dv);
                let mut js: Vec<usize> = keys(bi, hi, i).into_iter().filter(|&j| j <= i).collect();
                js.sort_unstable();
                js.dedup();
                let scores: Vec<f64> = js
                    .iter()
                    .map(|&j| {
                        -beta * dist_tangent(s, &qi, &k.slice(ndarray::s![bi, hi, j, ..]).to_vec())
                    })
                    .collect();
                p.m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                for (&j, sc) in js.iter().zip(&scores) {
                    let e = (sc - p.m).exp();
                    p.l += e;
                    for (a, x) in p.acc.iter_mut().zip(v.slice(ndarray::s![bi, hi, j, ..])) {
                        *a += e * x;
                    }
                }
                let (oi, l) = p.finish();
                o.slice_mut(ndarray::s![bi, hi, i, ..])
                    .assign(&ndarray::Array1::from(oi));
                lse[[bi, hi, i]] = l;
            }
        }
    }
    Ok(SparseOut { o, lse })
}

/// Attention over the key blocks of `lists` (causal inside the diagonal block).
pub fn attend_blocks(
    q: ArrayView4<'_, f64>,
    k: ArrayView4<'_, f64>,
    v: ArrayView4<'_, f64>,
    c: f64,
    beta: f64,
    lists: &BlockLists,
) -> Result<SparseOut> {
    lists.check_for(q.dim())?;
    let (bm, n) = (lists.block, q.dim().2);
    attend(q, k, v, c, beta, |b, h, i| {
        lists
            .blocks_of(b, h, i / bm)
            .iter()
            .flat_map(|&kb| (kb as usize * bm)..((kb as usize + 1) * bm).min(n))
            .collect()
    })
}

/// Attention over explicit key indices idx [B, H, N, K] (−1 = padding).
pub fn attend_indices(
    q: ArrayView4<'_, f64>,
    k: ArrayView4<'_, f64>,
    v: ArrayView4<'_, f64>,
    c: f64,
    beta: f64,
    idx: ArrayView4<'_, i32>,
) -> Result<SparseOut> {
    let (b, h, n, _) = q.dim();
    let (ib, ih, inn, _) = idx.dim();
    if (ib, ih, inn) != (b, h, n) {
        return Err(Error::Shape {
            op: OP,
            arg: "idx",
            expected: format!("[B, H, N, K] = [{b}, {h}, {n}, K]"),
            got: idx.shape().to_vec(),
        });
    }
    if let Some((i, &j)) = idx.indexed_iter().find(|(_, &j)| j < -1 || j >= n as i32) {
        return Err(Error::Domain {
            op: OP,
            arg: "idx",
            rule: format!("entries must be −1 (padding) or key indices < N = {n}; {j} at {i:?}"),
        });
    }
    attend(q, k, v, c, beta, |bi, hi, i| {
        idx.slice(ndarray::s![bi, hi, i, ..])
            .iter()
            .filter(|&&j| j >= 0)
            .map(|&j| j as usize)
            .collect()
    })
}
