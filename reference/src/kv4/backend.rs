//! The op trait of the KV-cache family: build a cache, append a context, decode queries, and hand
//! back what the cache held, so a test or `muse verify` can check the decode against dense f64
//! attention on the backend's own stored K, V and the stored K, V against the codec.

use ndarray::{s, Array2, ArrayView4};

use super::{decode_stored, DecodeOut, Kv4Cache, Kv4Config, StoredKv};
use crate::hyp_attn::Mask;
use crate::quant::f16_round;
use crate::{Cpu, Error, Result};

/// What a cache stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvStorage {
    /// 4-bit codes per token with fp16 (s, m); ‖k‖ too when the config is `radial`.
    Int4,
    /// fp16 K and V: the baseline cache.
    Fp16,
}

/// One decode problem: a cache of `cfg` and `storage`, the context k, v [B, H, n, D] appended in
/// one go, and queries q [B, H, Nq, D] at the last Nq positions.
#[derive(Debug, Clone)]
pub struct Kv4DecodeArgs<'a> {
    /// The cache's shape and options.
    pub cfg: Kv4Config,
    /// What it stores.
    pub storage: KvStorage,
    /// Keys of the context.
    pub k: ArrayView4<'a, f64>,
    /// Values of the context.
    pub v: ArrayView4<'a, f64>,
    /// The queries.
    pub q: ArrayView4<'a, f64>,
    /// Curvature c > 0.
    pub c: f64,
    /// β.
    pub beta: f64,
    /// Which cached keys a query sees.
    pub mask: Mask,
}

/// A backend's decode and the K, V its cache held.
#[derive(Debug, Clone)]
pub struct Kv4Run {
    /// o and lse.
    pub out: DecodeOut,
    /// The dequantised K, V as the backend stored them.
    pub stored: StoredKv,
}

/// The KV-cache family, implemented by every backend.
pub trait Kv4 {
    /// Builds the cache, appends the context, decodes the queries.
    fn kv4_decode(&self, args: &Kv4DecodeArgs<'_>) -> Result<Kv4Run>;
}

/// fp16-rounded K, V of the positions a cache of `cfg` keeps after appending k, v [B, H, n, D].
pub fn fp16_stored(
    cfg: &Kv4Config,
    k: ArrayView4<'_, f64>,
    v: ArrayView4<'_, f64>,
) -> Result<StoredKv> {
    let (b, h, n, d) = k.dim();
    if v.dim() != k.dim() || (b, h, d) != (cfg.batch, cfg.heads, cfg.dim) {
        return Err(Error::Shape {
            op: "kv4",
            arg: "v",
            expected: format!("[B, H, n, D] = {:?}", k.shape()),
            got: v.shape().to_vec(),
        });
    }
    if !cfg.ring && n > cfg.capacity {
        return Err(Error::Domain {
            op: "kv4",
            arg: "k",
            rule: format!("{n} tokens exceed the capacity {}", cfg.capacity),
        });
    }
    let first = n.saturating_sub(cfg.capacity);
    let rows = |a: &ArrayView4<'_, f64>| -> Vec<Array2<f64>> {
        (0..b)
            .flat_map(|bi| (0..h).map(move |hi| (bi, hi)))
            .map(|(bi, hi)| a.slice(s![bi, hi, first.., ..]).mapv(f16_round))
            .collect()
    };
    Ok(StoredKv {
        dims: (b, h, d),
        capacity: cfg.capacity,
        len: vec![n; b],
        keys: rows(&k),
        values: rows(&v),
    })
}

impl Kv4 for Cpu {
    fn kv4_decode(&self, a: &Kv4DecodeArgs<'_>) -> Result<Kv4Run> {
        let stored = match a.storage {
            KvStorage::Int4 => {
                let mut cache = Kv4Cache::new(a.cfg)?;
                cache.append(a.k, a.v, &vec![0; a.cfg.batch])?;
                cache.stored()
            }
            KvStorage::Fp16 => fp16_stored(&a.cfg, a.k, a.v)?,
        };
        let out = decode_stored(a.q, &stored, a.c, a.beta, a.mask, usize::MAX)?;
        Ok(Kv4Run { out, stored })
    }
}
