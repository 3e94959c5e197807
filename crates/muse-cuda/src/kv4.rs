//! The KV cache on the GPU (kernels: `../kernels/kv4.cu`; reference: `muse_reference::kv4`):
//! a device-resident cache of 4-bit codes with fp16 metadata (optionally the exact ‖k‖) or of
//! fp16 K/V (the baseline), bounds-checked appends with a ring for windows, and fused split-K
//! decode attention merged by log-sum-exp. The 4-bit path never writes dequantised K/V.
//!
//! ```no_run
//! use muse_cuda::kv4::{DecodeWs, DeviceKvCache, Storage};
//! use muse_reference::hyp_attn::Mask;
//! use muse_reference::kv4::{Kv4, Kv4Config, Kv4DecodeArgs, Kv4Run, KvLayout, StoredKv};
//! let gpu = muse_cuda::Cuda::new()?.gpu()?;
//! let cfg = Kv4Config { batch: 1, heads: 8, dim: 64, capacity: 8192, layout: KvLayout::PerToken,
//!                       radial: false, ring: false };
//! let mut cache = DeviceKvCache::new(gpu, cfg, Storage::Int4)?;
//! let kv = ndarray::Array4::from_elem((1, 8, 16, 64), 0.1);
//! cache.append_host(gpu, kv.view(), kv.view())?;
//! let q = gpu.upload(&vec![0.05f32; 8 * 64])?;
//! let mut ws = DecodeWs::new(gpu, &cache, 1)?;
//! cache.decode(gpu, &q, 1, 0.693, 1.0, Mask::Causal, &mut ws)?;
//! let o = ws.o.to_vec()?; // [B, H, Nq, D]
//! # Ok::<(), muse_reference::Error>(())
//! ```

use cust::launch;
use muse_reference::kv4::{Kv4, Kv4Config, Kv4DecodeArgs, Kv4Run, KvLayout, StoredKv};
use muse_reference::{Error, Result};
use ndarray::ArrayView4;

use crate::device::{err, k, Buf, Gpu};
use crate::lazy::LazyModule;

mod channel;
mod decode;
pub use decode::{decode_chunk64, DecodeWs, DECODE_CHUNK};

static MODULE: LazyModule = LazyModule::new(k::kv4::CUBIN, "kv4");

const OP: &str = "kv4";

pub use muse_reference::kv4::KvStorage as Storage;

/// A KV cache resident on the device (per-token or per-channel K; V per token).
pub struct DeviceKvCache {
    cfg: Kv4Config,
    storage: Storage,
    len: Vec<usize>,
    len_dev: Buf<i32>,
    k_codes: Buf<u8>,
    v_codes: Buf<u8>,
    /// (s, m) per slot; per-channel K: per (row, group, channel).
    k_meta: Buf<u16>,
    v_meta: Buf<u16>,
    k_norm: Option<Buf<f32>>,
    /// Per-channel K: the incomplete group's fp16 keys [B·H, G, D].
    k_tail: Buf<u16>,
    k16: Buf<u16>,
    v16: Buf<u16>,
}

fn unsupported(what: String) -> Error {
    Error::Unsupported {
        op: OP,
        backend: "cuda",
        what,
    }
}

fn int(v: usize, name: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| unsupported(format!("{name} = {v} does not fit a 32-bit int")))
}

impl DeviceKvCache {
    /// An empty cache on `gpu`. D must be even and at most 32·`CAP` (256). The fp16 storage
    /// ignores the layout (as the reference's `fp16_stored` does).
    pub fn new(gpu: &'static Gpu, cfg: Kv4Config, storage: Storage) -> Result<Self> {
        muse_reference::kv4::Kv4Cache::new(cfg)?; // the reference's argument checks
        let cap = 32 * k::kv4::CAP as usize;
        if cfg.dim > cap {
            return Err(unsupported(format!(
                "D = {} (the decode kernel holds D ≤ {cap} in registers)",
                cfg.dim
            )));
        }
        if storage == Storage::Fp16 && cfg.radial {
            return Err(Error::Domain {
                op: OP,
                arg: "radial",
                rule: "applies to the 4-bit storage only".into(),
            });
        }
        let rows = cfg.batch * cfg.heads;
        let slots = rows * cfg.capacity;
        let (int4, fp16) = match storage {
            Storage::Int4 => (slots, 0),
            Storage::Fp16 => (0, slots),
        };
        let (k_meta, k_tail) = match (storage, cfg.layout) {
            (Storage::Int4, KvLayout::PerChannelK { group }) => (
                rows * cfg.capacity / group * cfg.dim * 2,
                rows * group * cfg.dim,
            ),
            _ => (int4 * 2, 0),
        };
        Ok(Self {
            cfg,
            storage,
            len: vec![0; cfg.batch],
            len_dev: gpu.upload(&vec![0i32; cfg.batch])?,
            k_codes: gpu.alloc(int4 * cfg.dim / 2)?,
            v_codes: gpu.alloc(int4 * cfg.dim / 2)?,
            k_meta: gpu.alloc(k_meta)?,
            v_meta: gpu.alloc(int4 * 2)?,
            k_norm: if cfg.radial {
                Some(gpu.alloc(slots)?)
            } else {
                None
            },
            k_tail: gpu.alloc(k_tail)?,
            k16: gpu.alloc(fp16 * cfg.dim)?,
            v16: gpu.alloc(fp16 * cfg.dim)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> Kv4Config {
        self.cfg
    }

    /// The storage.
    pub fn storage(&self) -> Storage {
        self.storage
    }

    /// Tokens appended to row `b`.
    pub fn len(&self, b: usize) -> usize {
        self.len[b]
    }

    /// Whether row `b` holds no token.
    pub fn is_empty(&self, b: usize) -> bool {
        self.len[b] == 0
    }

    /// The radial terms' device pointer for a launch: null when the cache has none (the kernels
    /// test it).
    pub(crate) fn k_norm_ptr(&self) -> cust::memory::DevicePointer<f32> {
        self.k_norm
            .as_ref()
            .map_or(cust::memory::DevicePointer::null(), |n| n.ptr())
    }

    /// Bytes of the stored state (codes, metadata, radial terms; or fp16 K and V).
    pub fn state_bytes(&self) -> usize {
        self.k_codes.len()
            + self.v_codes.len()
            + 2 * (self.k_meta.len() + self.v_meta.len())
            + self.k_norm.as_ref().map_or(0, |n| 4 * n.len())
            + 2 * self.k_tail.len() * usize::from(self.channel_group().is_some())
            + 2 * (self.k16.len() + self.v16.len())
    }

    /// Appends L tokens k, v [B, H, L, D] (f32, on the device) to every row at its current length.
    /// Without `ring`, every row must keep len + L ≤ T_max.
    pub fn append(
        &mut self,
        gpu: &'static Gpu,
        k: &Buf<f32>,
        v: &Buf<f32>,
        l: usize,
    ) -> Result<()> {
        let c = self.cfg;
        let want = c.batch * c.heads * l * c.dim;
        for (arg, buf) in [("k", k), ("v", v)] {
            if buf.len() != want || l == 0 {
                return Err(Error::Shape {
                    op: OP,
                    arg,
                    expected: format!(
                        "[B, H, L ≥ 1, D] = [{}, {}, {l}, {}] ({want} elements)",
                        c.batch, c.heads, c.dim
                    ),
                    got: vec![buf.len()],
                });
            }
        }
        for (b, &n) in self.len.iter().enumerate() {
            if !c.ring && n + l > c.capacity {
                return Err(Error::Domain { op: OP, arg: "k", rule: format!("row {b} holds {n} tokens; {l} more exceed the capacity {} (use a ring buffer for windows)", c.capacity) });
            }
        }
        let start: Vec<i32> = self
            .len
            .iter()
            .map(|&n| int(n, "len"))
            .collect::<Result<_>>()?;
        let start = gpu.upload(&start)?;
        let rows = c.batch * c.heads * l;
        let warps = k::kv4::WARPS as usize;
        let grid = u32::try_from(rows.div_ceil(warps))
            .map_err(|_| unsupported(format!("{rows} rows exceed the grid")))?;
        let threads = 32 * k::kv4::WARPS;
        let (b, h, li, d, t) = (
            int(c.batch, "B")?,
            int(c.heads, "H")?,
            int(l, "L")?,
            int(c.dim, "D")?,
            int(c.capacity, "T")?,
        );
        let stream = &gpu.stream;
        match self.storage {
            Storage::Int4 if self.channel_group().is_some() => {
                self.append_channels(gpu, k, v, l, &start)?
            }
            Storage::Int4 => {
                let func = gpu.function(MODULE.get(gpu)?, k::kv4::APPEND)?;
                let norm = self.k_norm_ptr();
                // SAFETY: (1) thirteen arguments in C order: two f32 pointers, two u8, two u16, an f32
                // pointer (null when not radial, which the kernel tests), an i32 pointer, five i32;
                // (2) k and v hold B·H·L·D elements (checked above), the codes B·H·T·D/2, the meta
                // B·H·T·2, the norms B·H·T (new), start B; one warp per (b, h, t) row within
                // B·H·L, slots (start + t) mod T < T; (3) buffers synchronise `stream` before free.
                unsafe {
                    launch!(func<<<grid, threads, 0, stream>>>(
                        k.ptr(), v.ptr(), self.k_codes.ptr(), self.v_codes.ptr(), self.k_meta.ptr(),
                        self.v_meta.ptr(), norm, start.ptr(), b, h, li, d, t
                    ))
                }
                .map_err(|e| err("launching kv4_append", e))?;
            }
            Storage::Fp16 => {
                let func = gpu.function(MODULE.get(gpu)?, k::kv4::APPEND_FP16)?;
                // SAFETY: (1) ten arguments in C order: two f32 pointers, two u16, an i32 pointer,
                // five i32; (2) k, v hold B·H·L·D elements, k16, v16 B·H·T·D, start B; slots < T;
                // (3) buffers synchronise `stream` before they are freed.
                unsafe {
                    launch!(func<<<grid, threads, 0, stream>>>(
                        k.ptr(), v.ptr(), self.k16.ptr(), self.v16.ptr(), start.ptr(), b, h, li, d, t
                    ))
                }
                .map_err(|e| err("launching kv4_append_fp16", e))?;
            }
        }
        gpu.sync("kv4_append")?; // `start` is freed on return
        self.len.iter_mut().for_each(|n| *n += l);
        let lens: Vec<i32> = self
            .len
            .iter()
            .map(|&n| int(n, "len"))
            .collect::<Result<_>>()?;
        self.len_dev = gpu.upload(&lens)?;
        Ok(())
    }

    /// [`DeviceKvCache::append`] from host arrays (rounded to f32), with the reference's shape and
    /// finiteness checks.
    pub fn append_host(
        &mut self,
        gpu: &'static Gpu,
        k: ArrayView4<'_, f64>,
        v: ArrayView4<'_, f64>,
    ) -> Result<()> {
        let c = self.cfg;
        let l = k.dim().2;
        for (arg, a) in [("k", &k), ("v", &v)] {
            if a.dim() != (c.batch, c.heads, l, c.dim) {
                return Err(Error::Shape {
                    op: OP,
                    arg,
                    expected: format!("[B, H, L, D] = [{}, {}, {l}, {}]", c.batch, c.heads, c.dim),
                    got: a.shape().to_vec(),
                });
            }
            if let Some((i, x)) = a.indexed_iter().find(|(_, x)| !x.is_finite()) {
                return Err(Error::NonFinite {
                    op: OP,
                    arg,
                    index: vec![i.0, i.1, i.2, i.3],
                    value: *x,
                });
            }
        }
        let up =
            |a: &ArrayView4<'_, f64>| gpu.upload(&a.iter().map(|&x| x as f32).collect::<Vec<_>>());
        let (kd, vd) = (up(&k)?, up(&v)?);
        self.append(gpu, &kd, &vd, l)
    }

    /// The stored state, for tests (the buffers of the other storage are empty).
    pub fn download(&self) -> Result<CacheState> {
        Ok(CacheState {
            k_codes: self.k_codes.to_vec()?,
            v_codes: self.v_codes.to_vec()?,
            k_meta: self.k_meta.to_vec()?,
            v_meta: self.v_meta.to_vec()?,
            k_norm: match &self.k_norm {
                Some(n) => n.to_vec()?,
                None => Vec::new(),
            },
            k_tail: self.k_tail.to_vec()?,
            k16: self.k16.to_vec()?,
            v16: self.v16.to_vec()?,
        })
    }
}

/// A cache's stored state on the host ([`DeviceKvCache::download`]), slot-major [B, H, T].
#[derive(Debug, Clone)]
pub struct CacheState {
    /// 4-bit K codes, D/2 bytes per slot.
    pub k_codes: Vec<u8>,
    /// 4-bit V codes.
    pub v_codes: Vec<u8>,
    /// (s, m) fp16 bits per slot, K; per-channel K: per (row, group, channel) [B·H, T/G, D, 2].
    pub k_meta: Vec<u16>,
    /// (s, m) fp16 bits per slot, V.
    pub v_meta: Vec<u16>,
    /// ‖k‖ per slot (radial caches only).
    pub k_norm: Vec<f32>,
    /// Per-channel K: the incomplete group's fp16 keys [B·H, G, D] (slot p mod G).
    pub k_tail: Vec<u16>,
    /// fp16 K bits (fp16 storage).
    pub k16: Vec<u16>,
    /// fp16 V bits.
    pub v16: Vec<u16>,
}

impl DeviceKvCache {
    /// The dequantised K, V the device holds (f64), as the reference's [`StoredKv`].
    pub fn stored(&self) -> Result<StoredKv> {
        let c = self.cfg;
        let st = self.download()?;
        let f16 = |b: u16| f64::from(half::f16::from_bits(b));
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        for row in 0..c.batch * c.heads {
            let n = self.len[row / c.heads];
            let first = n.saturating_sub(c.capacity);
            let take = |codes: &[u8], meta: &[u16], bits: &[u16], key: bool| {
                let mut out = ndarray::Array2::zeros((n - first, c.dim));
                for (i, p) in (first..n).enumerate() {
                    let slot = row * c.capacity + p % c.capacity;
                    let mut x: Vec<f64> = match self.storage {
                        Storage::Fp16 => bits[slot * c.dim..(slot + 1) * c.dim]
                            .iter()
                            .map(|&b| f16(b))
                            .collect(),
                        Storage::Int4 if key && self.channel_group().is_some() => {
                            channel::channel_key(&st, c, row, n, p)
                        }
                        Storage::Int4 => {
                            let q = muse_reference::quant::unpack_nibbles(
                                &codes[slot * c.dim / 2..(slot + 1) * c.dim / 2],
                            );
                            q.iter()
                                .map(|&q| {
                                    f16(meta[2 * slot + 1]) + f64::from(q) * f16(meta[2 * slot])
                                })
                                .collect()
                        }
                    };
                    if key && c.radial {
                        let r = x.iter().map(|v| v * v).sum::<f64>().sqrt();
                        let scale = if r > 0.0 {
                            f64::from(st.k_norm[slot]) / r
                        } else {
                            0.0
                        };
                        x.iter_mut().for_each(|v| *v *= scale);
                    }
                    out.row_mut(i).assign(&ndarray::Array1::from(x));
                }
                out
            };
            keys.push(take(&st.k_codes, &st.k_meta, &st.k16, true));
            values.push(take(&st.v_codes, &st.v_meta, &st.v16, false));
        }
        Ok(StoredKv {
            dims: (c.batch, c.heads, c.dim),
            capacity: c.capacity,
            len: self.len.clone(),
            keys,
            values,
        })
    }
}

impl Kv4 for crate::Cuda {
    fn kv4_decode(&self, a: &Kv4DecodeArgs<'_>) -> Result<Kv4Run> {
        let gpu = self.gpu()?;
        let mut cache = DeviceKvCache::new(gpu, a.cfg, a.storage)?;
        cache.append_host(gpu, a.k, a.v)?;
        let nq = a.q.dim().2;
        let (b, h, _, d) = a.q.dim();
        if (b, h, d) != (a.cfg.batch, a.cfg.heads, a.cfg.dim) {
            return Err(Error::Shape {
                op: OP,
                arg: "q",
                expected: format!(
                    "[B, H, Nq, D] = [{}, {}, Nq, {}]",
                    a.cfg.batch, a.cfg.heads, a.cfg.dim
                ),
                got: a.q.shape().to_vec(),
            });
        }
        let q = gpu.upload(&a.q.iter().map(|&x| x as f32).collect::<Vec<_>>())?;
        let mut ws = DecodeWs::new(gpu, &cache, nq)?;
        cache.decode(gpu, &q, nq, a.c, a.beta, a.mask, &mut ws)?;
        gpu.sync("kv4_decode")?;
        let (o, lse) = (ws.o.to_vec()?, ws.lse.to_vec()?);
        let out = muse_reference::kv4::DecodeOut {
            o: ndarray::Array4::from_shape_vec(
                (b, h, nq, d),
                o.into_iter().map(f64::from).collect(),
            )
            .map_err(|e| unsupported(e.to_string()))?,
            lse: ndarray::Array3::from_shape_vec(
                (b, h, nq),
                lse.into_iter().map(f64::from).collect(),
            )
            .map_err(|e| unsupported(e.to_string()))?,
        };
        Ok(Kv4Run {
            out,
            stored: cache.stored()?,
        })
    }
}
