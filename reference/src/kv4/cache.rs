//! The packed cache (design §4.3): k/v codes [B,H,T,D/2] u8, per-token fp16 metadata, the
//! optional exact radial term ‖k‖ (f32), per-row lengths, bounds-checked appends, and a ring buffer
//! for windowed attention. `PerChannelK` quantises K per channel over groups of G tokens once a group
//! is complete (its scales are written once, never changed); until then the group's keys stay fp16.

use half::f16;
use ndarray::{Array2, ArrayView4};

use super::{dequantize_codes, quantize_group};
use crate::quant::{f16_from_f64, pack_nibbles, unpack_nibbles};
use crate::{Error, Result};

const OP: &str = "kv4";

/// How K is grouped; V is always per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvLayout {
    /// One group per token and head: D channels (the default, the original's actual layout).
    PerToken,
    /// K per channel over `group` tokens (KIVI-style, what the original's docs describe).
    PerChannelK {
        /// G, tokens per group (64 or 128 in practice).
        group: usize,
    },
}

/// The cache's shape and options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kv4Config {
    /// B.
    pub batch: usize,
    /// H.
    pub heads: usize,
    /// D (even).
    pub dim: usize,
    /// T_max: token slots per row (the window W when `ring`).
    pub capacity: usize,
    /// K grouping.
    pub layout: KvLayout,
    /// Keep ρ = ‖k‖ (f32) as the exact radial term.
    pub radial: bool,
    /// Ring buffer: position t lives in slot t mod T_max and the oldest token is overwritten.
    pub ring: bool,
}

/// A 4-bit KV cache (per-token or per-channel K), f64 reference of the GPU layout.
///
/// ```
/// use muse_reference::kv4::{Kv4Cache, Kv4Config, KvLayout};
/// let cfg = Kv4Config { batch: 1, heads: 1, dim: 4, capacity: 8, layout: KvLayout::PerToken,
///                       radial: false, ring: false };
/// let mut cache = Kv4Cache::new(cfg)?;
/// let k = ndarray::Array4::from_shape_fn((1, 1, 3, 4), |(_, _, t, d)| (t * 4 + d) as f64 * 0.1);
/// cache.append(k.view(), k.view(), &[0])?;
/// assert_eq!(cache.len(0), 3);
/// assert!(cache.append(k.view(), k.view(), &[0]).is_err()); // start must be 3
/// let keys = cache.keys(0, 0);
/// assert!((keys[[2, 3]] - 1.1).abs() <= 0.3 / 15.0 / 2.0 + 1e-3);
/// # Ok::<(), muse_reference::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Kv4Cache {
    cfg: Kv4Config,
    k_codes: Vec<u8>,
    v_codes: Vec<u8>,
    /// (s, m) per (b, h, slot); for `PerChannelK`, per (b, h, group, channel) instead.
    k_meta: Vec<[f16; 2]>,
    v_meta: Vec<[f16; 2]>,
    /// `PerChannelK`: the incomplete group's keys in fp16, [B, H, G, D].
    k_tail: Vec<f16>,
    k_norm: Vec<f32>,
    len: Vec<usize>,
}

impl Kv4Cache {
    /// An empty cache. Fails on a zero or odd dimension, or on a `PerChannelK` layout whose group
    /// does not divide T_max or that is combined with `ring`.
    pub fn new(cfg: Kv4Config) -> Result<Self> {
        let rule = |arg: &'static str, rule: String| Err(Error::Domain { op: OP, arg, rule });
        for (arg, v) in [
            ("batch", cfg.batch),
            ("heads", cfg.heads),
            ("capacity", cfg.capacity),
        ] {
            if v == 0 {
                return rule(arg, "must be at least 1".into());
            }
        }
        if cfg.dim == 0 || cfg.dim % 2 != 0 {
            return rule(
                "dim",
                format!(
                    "(D) must be even and ≥ 2 (two codes a byte), got {}",
                    cfg.dim
                ),
            );
        }
        if let KvLayout::PerChannelK { group } = cfg.layout {
            if group == 0 || cfg.capacity % group != 0 {
                return rule(
                    "layout",
                    format!(
                        "PerChannelK group {group} must divide capacity {}",
                        cfg.capacity
                    ),
                );
            }
            if cfg.ring {
                return rule(
                    "layout",
                    "PerChannelK needs a full-context cache (its groups never move); use PerToken with ring".into(),
                );
            }
        }
        let rows = cfg.batch * cfg.heads;
        let slots = rows * cfg.capacity;
        let (k_meta, k_tail) = match cfg.layout {
            KvLayout::PerToken => (slots, 0),
            KvLayout::PerChannelK { group } => (
                rows * cfg.capacity / group * cfg.dim,
                rows * group * cfg.dim,
            ),
        };
        Ok(Self {
            cfg,
            k_codes: vec![0; slots * cfg.dim / 2],
            v_codes: vec![0; slots * cfg.dim / 2],
            k_meta: vec![[f16::ZERO; 2]; k_meta],
            v_meta: vec![[f16::ZERO; 2]; slots],
            k_tail: vec![f16::ZERO; k_tail],
            k_norm: vec![0.0; if cfg.radial { slots } else { 0 }],
            len: vec![0; cfg.batch],
        })
    }

    /// The configuration.
    pub fn config(&self) -> Kv4Config {
        self.cfg
    }

    /// Tokens appended to row `b` so far (the ring keeps the last T_max of them).
    pub fn len(&self, b: usize) -> usize {
        self.len[b]
    }

    /// Whether row `b` holds no token.
    pub fn is_empty(&self, b: usize) -> bool {
        self.len[b] == 0
    }

    /// Absolute positions of the tokens row `b` holds, oldest first.
    pub fn positions(&self, b: usize) -> std::ops::Range<usize> {
        let n = self.len[b];
        n.saturating_sub(self.cfg.capacity)..n
    }

    /// Bytes of the stored state: codes, metadata, fp16 tail and radial terms (not `len`).
    pub fn state_bytes(&self) -> usize {
        self.k_codes.len()
            + self.v_codes.len()
            + 4 * (self.k_meta.len() + self.v_meta.len())
            + 2 * self.k_tail.len()
            + 4 * self.k_norm.len()
    }

    /// Quantises and writes k, v [B, H, L, D] at positions `start[b]..` of each row. `start[b]` must
    /// equal `len(b)` (appends are contiguous); without `ring`, len + L must fit T_max.
    pub fn append(
        &mut self,
        k: ArrayView4<'_, f64>,
        v: ArrayView4<'_, f64>,
        start: &[usize],
    ) -> Result<()> {
        let c = self.cfg;
        let (b, h, l, d) = k.dim();
        let want = format!("[B, H, L, D] = [{}, {}, L, {}]", c.batch, c.heads, c.dim);
        for (arg, shape) in [("k", k.shape()), ("v", v.shape())] {
            if shape[0] != c.batch || shape[1] != c.heads || shape[3] != c.dim || shape[2] != l {
                return Err(Error::Shape {
                    op: OP,
                    arg,
                    expected: want,
                    got: shape.to_vec(),
                });
            }
        }
        if start.len() != b {
            return Err(Error::Shape {
                op: OP,
                arg: "start",
                expected: format!("[B] = [{b}]"),
                got: vec![start.len()],
            });
        }
        for (bi, (&s, &n)) in start.iter().zip(&self.len).enumerate() {
            if s != n {
                return Err(Error::Domain {
                    op: OP,
                    arg: "start",
                    rule: format!(
                        "[{bi}] must equal the row's length {n} (appends are contiguous), got {s}"
                    ),
                });
            }
            if !c.ring && n + l > c.capacity {
                return Err(Error::Domain { op: OP, arg: "k", rule: format!("row {bi} holds {n} tokens; {l} more exceed the capacity {} (use a ring buffer for windows)", c.capacity) });
            }
        }
        for (arg, a) in [("k", &k), ("v", &v)] {
            if let Some((i, x)) = a.indexed_iter().find(|(_, x)| !x.is_finite()) {
                return Err(Error::NonFinite {
                    op: OP,
                    arg,
                    index: vec![i.0, i.1, i.2, i.3],
                    value: *x,
                });
            }
        }
        for bi in 0..b {
            for hi in 0..h {
                for t in 0..l {
                    let pos = start[bi] + t;
                    let row = |a: &ArrayView4<'_, f64>| {
                        (0..d).map(|e| a[[bi, hi, t, e]]).collect::<Vec<_>>()
                    };
                    self.write_token(bi, hi, pos, &row(&k), &row(&v))?;
                }
            }
        }
        for (n, _) in self.len.iter_mut().zip(start) {
            *n += l;
        }
        Ok(())
    }

    fn slot(&self, b: usize, h: usize, pos: usize) -> usize {
        (b * self.cfg.heads + h) * self.cfg.capacity + pos % self.cfg.capacity
    }

    fn write_token(&mut self, b: usize, h: usize, pos: usize, k: &[f64], v: &[f64]) -> Result<()> {
        let (d, slot) = (self.cfg.dim, self.slot(b, h, pos));
        let gv = quantize_group(OP, "v", v)?;
        self.v_codes[slot * d / 2..(slot + 1) * d / 2].copy_from_slice(&pack_nibbles(&gv.codes)?);
        self.v_meta[slot] = [gv.step16, gv.min16];
        if self.cfg.radial {
            self.k_norm[slot] = k.iter().map(|x| x * x).sum::<f64>().sqrt() as f32;
        }
        match self.cfg.layout {
            KvLayout::PerToken => {
                let gk = quantize_group(OP, "k", k)?;
                self.k_codes[slot * d / 2..(slot + 1) * d / 2]
                    .copy_from_slice(&pack_nibbles(&gk.codes)?);
                self.k_meta[slot] = [gk.step16, gk.min16];
            }
            KvLayout::PerChannelK { group } => {
                let row = b * self.cfg.heads + h;
                let tail = (row * group + pos % group) * d;
                for (dst, &x) in self.k_tail[tail..tail + d].iter_mut().zip(k) {
                    *dst = f16_from_f64(x);
                }
                if pos % group == group - 1 {
                    self.seal_group(row, pos / group, group)?;
                }
            }
        }
        Ok(())
    }

    /// Quantises a complete group of G fp16 keys channel by channel.
    fn seal_group(&mut self, row: usize, g: usize, group: usize) -> Result<()> {
        let d = self.cfg.dim;
        let mut codes = vec![0u8; group * d];
        for ch in 0..d {
            let col: Vec<f64> = (0..group)
                .map(|t| f64::from(self.k_tail[(row * group + t) * d + ch]))
                .collect();
            let q = quantize_group(OP, "k", &col)?;
            for (t, &c) in q.codes.iter().enumerate() {
                codes[t * d + ch] = c;
            }
            self.k_meta[(row * (self.cfg.capacity / group) + g) * d + ch] = [q.step16, q.min16];
        }
        let first = row * self.cfg.capacity + g * group;
        for t in 0..group {
            let dst = (first + t) * d / 2;
            self.k_codes[dst..dst + d / 2]
                .copy_from_slice(&pack_nibbles(&codes[t * d..(t + 1) * d])?);
        }
        Ok(())
    }

    /// The dequantised keys row (b, h) holds, oldest first: [n, D]. With `radial`, each key is
    /// rescaled to its exact norm (direction from the codes, a zero vector if the codes give 0).
    pub fn keys(&self, b: usize, h: usize) -> Array2<f64> {
        let (d, pos) = (self.cfg.dim, self.positions(b));
        let mut out = Array2::zeros((pos.len(), d));
        for (i, p) in pos.enumerate() {
            let slot = self.slot(b, h, p);
            let mut k = match self.cfg.layout {
                KvLayout::PerToken => {
                    let [s, m] = self.k_meta[slot];
                    dequantize_codes(
                        &unpack_nibbles(&self.k_codes[slot * d / 2..(slot + 1) * d / 2]),
                        s,
                        m,
                    )
                }
                KvLayout::PerChannelK { group } => {
                    self.key_per_channel(b * self.cfg.heads + h, p, group)
                }
            };
            if self.cfg.radial {
                let r = k.iter().map(|x| x * x).sum::<f64>().sqrt();
                let scale = if r > 0.0 {
                    f64::from(self.k_norm[slot]) / r
                } else {
                    0.0
                };
                k.iter_mut().for_each(|x| *x *= scale);
            }
            out.row_mut(i).assign(&ndarray::Array1::from(k));
        }
        out
    }

    fn key_per_channel(&self, row: usize, p: usize, group: usize) -> Vec<f64> {
        let d = self.cfg.dim;
        if p / group == self.len[row / self.cfg.heads] / group {
            let t = (row * group + p % group) * d;
            return self.k_tail[t..t + d]
                .iter()
                .map(|&x| f64::from(x))
                .collect();
        }
        let slot = row * self.cfg.capacity + p;
        let codes = unpack_nibbles(&self.k_codes[slot * d / 2..(slot + 1) * d / 2]);
        let meta = (row * (self.cfg.capacity / group) + p / group) * d;
        codes
            .iter()
            .enumerate()
            .map(|(ch, &q)| {
                let [s, m] = self.k_meta[meta + ch];
                f64::from(m) + f64::from(q) * f64::from(s)
            })
            .collect()
    }

    /// Everything decode attention reads: the dequantised K, V of every row and the lengths.
    pub fn stored(&self) -> super::StoredKv {
        let c = self.cfg;
        let rows = (0..c.batch).flat_map(|b| (0..c.heads).map(move |h| (b, h)));
        super::StoredKv {
            dims: (c.batch, c.heads, c.dim),
            capacity: c.capacity,
            len: self.len.clone(),
            keys: rows.clone().map(|(b, h)| self.keys(b, h)).collect(),
            values: rows.map(|(b, h)| self.values(b, h)).collect(),
        }
    }

    /// The dequantised values row (b, h) holds, oldest first: [n, D].
    pub fn values(&self, b: usize, h: usize) -> Array2<f64> {
        let (d, pos) = (self.cfg.dim, self.positions(b));
        let mut out = Array2::zeros((pos.len(), d));
        for (i, p) in pos.enumerate() {
            let slot = self.slot(b, h, p);
            let [s, m] = self.v_meta[slot];
            let v = dequantize_codes(
                &unpack_nibbles(&self.v_codes[slot * d / 2..(slot + 1) * d / 2]),
                s,
                m,
            );
            out.row_mut(i).assign(&ndarray::Array1::from(v));
        }
        out
    }
}
