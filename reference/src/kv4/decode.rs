//! Decode attention over a [`Kv4Cache`] in f64: logits −β·d(exp0 q, exp0 k̂) by the law of
//! cosines (design §2.3) on the dequantised keys, softmax, then the dequantised values in the
//! tangent space. [`decode_attn_split`] evaluates the same in key chunks merged by their
//! log-sum-exp (FlashDecoding), the schedule of the fused GPU kernel. [`evict_compat`] is the
//! original `HyperbolicKVCache`'s eviction rule.

use ndarray::{Array2, Array3, Array4, ArrayView4};

use super::Kv4Cache;
use crate::hyp_attn::Mask;
use crate::poincare::maps::dist_tangent;
use crate::poincare::Curvature;
use crate::{Error, Result};

const OP: &str = "kv4_decode";

/// Decode attention's outputs.
#[derive(Debug, Clone)]
pub struct DecodeOut {
    /// o [B, H, Nq, D].
    pub o: Array4<f64>,
    /// log Σ_j exp(−β·d_ij) [B, H, Nq] (−inf for a query that sees no key).
    pub lse: Array3<f64>,
}

/// One key chunk's softmax state: running max, Σ exp(s − m) and the unnormalised Σ exp(s − m)·v.
#[derive(Debug, Clone, PartialEq)]
pub struct Partial {
    /// m = max_j s_j (−inf for an empty chunk).
    pub m: f64,
    /// l = Σ_j exp(s_j − m).
    pub l: f64,
    /// Σ_j exp(s_j − m)·v_j.
    pub acc: Vec<f64>,
}

impl Partial {
    /// The empty state for values of width `dv`.
    pub fn empty(dv: usize) -> Self {
        Self {
            m: f64::NEG_INFINITY,
            l: 0.0,
            acc: vec![0.0; dv],
        }
    }

    /// Merges two chunk states by their log-sum-exp (exact in real arithmetic, order-free).
    pub fn merge(&self, other: &Self) -> Self {
        let m = self.m.max(other.m);
        if m == f64::NEG_INFINITY {
            return self.clone();
        }
        let (a, b) = ((self.m - m).exp(), (other.m - m).exp());
        Self {
            m,
            l: self.l * a + other.l * b,
            acc: self
                .acc
                .iter()
                .zip(&other.acc)
                .map(|(x, y)| x * a + y * b)
                .collect(),
        }
    }

    /// o = acc/l and lse = m + ln l (0 and −inf when empty).
    pub fn finish(&self) -> (Vec<f64>, f64) {
        if self.l == 0.0 {
            return (vec![0.0; self.acc.len()], f64::NEG_INFINITY);
        }
        (
            self.acc.iter().map(|a| a / self.l).collect(),
            self.m + self.l.ln(),
        )
    }
}

/// Decode attention for queries q [B, H, Nq, D] at the last Nq positions of each row: query i of
/// row b sits at position len(b) − Nq + i and sees the cached keys `mask` allows (`None`: all;
/// `Causal`: up to its position; `Window(W)`: the block [⌊p/W⌋·W, p], the LM's local attention).
///
/// ```
/// use muse_reference::hyp_attn::Mask;
/// use muse_reference::kv4::{decode_attn, Kv4Cache, Kv4Config, KvLayout};
/// let cfg = Kv4Config { batch: 1, heads: 1, dim: 2, capacity: 4, layout: KvLayout::PerToken,
///                       radial: false, ring: false };
/// let mut cache = Kv4Cache::new(cfg)?;
/// let kv = ndarray::Array4::from_shape_vec((1, 1, 2, 2), vec![0.1, 0.2, 0.3, -0.1]).unwrap();
/// cache.append(kv.view(), kv.view(), &[0])?;
/// let q = ndarray::Array4::from_elem((1, 1, 1, 2), 0.05);
/// let out = decode_attn(q.view(), &cache, 0.5, 1.0, Mask::Causal)?;
/// assert!(out.lse[[0, 0, 0]].is_finite());
/// # Ok::<(), muse_reference::Error>(())
/// ```
pub fn decode_attn(
    q: ArrayView4<'_, f64>,
    cache: &Kv4Cache,
    c: f64,
    beta: f64,
    mask: Mask,
) -> Result<DecodeOut> {
    decode_attn_split(q, cache, c, beta, mask, usize::MAX)
}

/// [`decode_attn`] evaluated in chunks of `chunk` visible keys, each reduced to a [`Partial`] and
/// merged in order: the split-K schedule. Any `chunk ≥ 1` gives the same result to rounding.
pub fn decode_attn_split(
    q: ArrayView4<'_, f64>,
    cache: &Kv4Cache,
    c: f64,
    beta: f64,
    mask: Mask,
    chunk: usize,
) -> Result<DecodeOut> {
    decode_stored(q, &cache.stored(), c, beta, mask, chunk)
}

/// The K and V a cache holds, dequantised (f64), with each row's length: what decode attention
/// reads, from a [`Kv4Cache`] ([`Kv4Cache::stored`]) or from a device cache's downloaded state.
#[derive(Debug, Clone)]
pub struct StoredKv {
    /// (B, H, D).
    pub dims: (usize, usize, usize),
    /// T_max: the slots per row (the ring's size).
    pub capacity: usize,
    /// Tokens appended per row b.
    pub len: Vec<usize>,
    /// Keys per row b·H + h: [n, D], the stored positions oldest first.
    pub keys: Vec<Array2<f64>>,
    /// Values, the same layout.
    pub values: Vec<Array2<f64>>,
}

impl StoredKv {
    /// The absolute positions row `b` holds, oldest first.
    pub fn positions(&self, b: usize) -> std::ops::Range<usize> {
        self.len[b].saturating_sub(self.capacity)..self.len[b]
    }
}

/// Decode attention over stored K, V ([`decode_attn_split`] without the cache).
pub fn decode_stored(
    q: ArrayView4<'_, f64>,
    kv: &StoredKv,
    c: f64,
    beta: f64,
    mask: Mask,
    chunk: usize,
) -> Result<DecodeOut> {
    let (cb, ch, cd) = kv.dims;
    let (b, h, nq, d) = q.dim();
    if (b, h, d) != (cb, ch, cd) || nq == 0 {
        return Err(Error::Shape {
            op: OP,
            arg: "q",
            expected: format!("[B, H, Nq ≥ 1, D] = [{}, {}, Nq, {}]", cb, ch, cd),
            got: q.shape().to_vec(),
        });
    }
    if chunk == 0 {
        return Err(Error::Domain {
            op: OP,
            arg: "chunk",
            rule: "must be at least 1".into(),
        });
    }
    if !beta.is_finite() {
        return Err(Error::Domain {
            op: OP,
            arg: "beta",
            rule: format!("must be finite, got {beta}"),
        });
    }
    if let Some((i, x)) = q.indexed_iter().find(|(_, x)| !x.is_finite()) {
        return Err(Error::NonFinite {
            op: OP,
            arg: "q",
            index: vec![i.0, i.1, i.2, i.3],
            value: *x,
        });
    }
    let s = Curvature::named(OP, "c", c)?.s();
    let mut o = Array4::zeros((b, h, nq, d));
    let mut lse = Array3::zeros((b, h, nq));
    for bi in 0..b {
        let (len, stored) = (kv.len[bi], kv.positions(bi));
        if len < nq {
            return Err(Error::Domain { op: OP, arg: "q", rule: format!("has {nq} queries but row {bi} holds only {len} tokens (the queries' own keys must be appended first)") });
        }
        for hi in 0..h {
            let keys: Vec<Vec<f64>> = kv.keys[bi * h + hi]
                .outer_iter()
                .map(|r| r.to_vec())
                .collect();
            let vals = &kv.values[bi * h + hi];
            for i in 0..nq {
                let pos = len - nq + i;
                let (lo, hi_pos) = match mask {
                    Mask::None => (0, len),
                    Mask::Causal => (0, pos + 1),
                    Mask::Window(w) => (pos / w.max(1) * w.max(1), pos + 1),
                };
                if lo < stored.start && matches!(mask, Mask::Window(_) | Mask::Causal) {
                    return Err(Error::Domain { op: OP, arg: "q", rule: format!("query at position {pos} sees position {lo}, which the ring no longer holds (it keeps {}..{})", stored.start, stored.end) });
                }
                let visible: Vec<usize> = (lo.max(stored.start)..hi_pos.min(stored.end))
                    .map(|p| p - stored.start)
                    .collect();
                let qi: Vec<f64> = (0..d).map(|e| q[[bi, hi, i, e]]).collect();
                let mut total = Partial::empty(d);
                for part in visible.chunks(chunk.min(visible.len().max(1))) {
                    let mut p = Partial::empty(d);
                    let scores: Vec<f64> = part
                        .iter()
                        .map(|&j| -beta * dist_tangent(s, &qi, &keys[j]))
                        .collect();
                    p.m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    for (&j, sc) in part.iter().zip(&scores) {
                        let e = (sc - p.m).exp();
                        p.l += e;
                        for (a, v) in p.acc.iter_mut().zip(vals.row(j)) {
                            *a += e * v;
                        }
                    }
                    total = total.merge(&p);
                }
                let (oi, l) = total.finish();
                for (e, x) in oi.into_iter().enumerate() {
                    o[[bi, hi, i, e]] = x;
                }
                lse[[bi, hi, i]] = l;
            }
        }
    }
    Ok(DecodeOut { o, lse })
}

/// The original `HyperbolicKVCache`'s eviction (compat): when more than `max` tokens are held,
/// keep the last 10 plus the `max − 10` older tokens of smallest ‖k‖ (ties: the older first),
/// re-sorted into time order; with `max ≤ 10`, the last `max`. Returns the kept indices.
///
/// ```
/// use muse_reference::kv4::evict_compat;
/// let norms = [0.9, 0.1, 0.9, 0.2, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5];
/// assert_eq!(evict_compat(&norms, 12), vec![1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
/// ```
pub fn evict_compat(norms: &[f64], max: usize) -> Vec<usize> {
    let n = norms.len();
    if n <= max {
        return (0..n).collect();
    }
    if max <= 10 {
        return (n - max..n).collect();
    }
    let recent = n - 10;
    let mut old: Vec<usize> = (0..recent).collect();
    old.sort_by(|&a, &b| norms[a].total_cmp(&norms[b]).then(a.cmp(&b)));
    let mut kept: Vec<usize> = old.into_iter().take(max - 10).collect();
    kept.sort_unstable();
    kept.extend(recent..n);
    kept
}
