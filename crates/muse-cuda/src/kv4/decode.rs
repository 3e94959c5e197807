//! Fused split-K decode attention from the device cache (`kv4_decode64_*` at D = 64, one key
//! per lane; `kv4_decode_split_*` otherwise); the last CTA of each query row merges the splits by
//! log-sum-exp inside the same launch.

use cust::function::{BlockSize, GridSize};
use cust::launch;
use muse_reference::hyp_attn::Mask;
use muse_reference::{Error, Result};

use super::{int, unsupported, DeviceKvCache, Storage, MODULE, OP};
use crate::device::{err, k, Buf, Gpu};

/// Keys one decode CTA scores (the split size; FlashDecoding's chunk) on the warp-per-key path.
pub const DECODE_CHUNK: usize = 256;

/// The split size of the D = 64 one-key-per-lane path: enough splits for one wave of `wave`
/// CTAs (SMs × resident CTAs per SM) over all query rows, at least two keys per lane
/// (2·32·`DEC_WARPS`: more splits cost more in the merge than they gain, H200), at most 16.
///
/// ```
/// use muse_cuda::kv4::decode_chunk64;
/// assert_eq!(decode_chunk64(8192, 4 * 8, 396), 640); // B4 H8, 132 SMs × 3: 13 splits
/// assert_eq!(decode_chunk64(8192, 8, 528), 256); // B1 H8, 132 SMs × 4: 32 splits, not 64
/// assert_eq!(decode_chunk64(1 << 20, 1, 396), 2048); // capped at 16 keys per lane
/// ```
pub fn decode_chunk64(max_visible: usize, rows: usize, wave: usize) -> usize {
    let lanes = 32 * k::kv4::DEC_WARPS as usize;
    let want_splits = wave.max(1).div_ceil(rows.max(1));
    max_visible
        .div_ceil(want_splits)
        .next_multiple_of(lanes)
        .clamp(2 * lanes, 16 * lanes)
}

/// Decode outputs and split partials for a fixed number of query rows.
pub struct DecodeWs {
    rows: usize,
    dim: usize,
    splits: usize,
    part_m: Buf<f32>,
    part_l: Buf<f32>,
    part_acc: Buf<f32>,
    /// Splits counted in per query row; zero between launches (the merging CTA resets it).
    done: Buf<u32>,
    prefetch: Option<bool>,
    /// The D = 64 kernel last launched and its wave (SMs × resident CTAs): the occupancy is
    /// read from the driver once per kernel, not on every decoded token.
    wave: Option<(&'static str, usize)>,
    /// o [B, H, Nq, D].
    pub o: Buf<f32>,
    /// lse [B, H, Nq].
    pub lse: Buf<f32>,
}

impl DecodeWs {
    /// Outputs for `nq` queries per row of `cache`; the partials grow with the context.
    pub fn new(gpu: &'static Gpu, cache: &DeviceKvCache, nq: usize) -> Result<Self> {
        let c = cache.config();
        let rows = c.batch * c.heads * nq;
        Ok(Self {
            rows,
            dim: c.dim,
            splits: 1,
            part_m: gpu.alloc(rows)?,
            part_l: gpu.alloc(rows)?,
            part_acc: gpu.alloc(rows * c.dim)?,
            done: gpu.upload(&vec![0u32; rows])?,
            prefetch: None,
            wave: None,
            o: gpu.alloc(rows * c.dim)?,
            lse: gpu.alloc(rows)?,
        })
    }

    /// Whether the D = 64 path issues the next key's loads before scoring the current one.
    /// By default the fp16 cache does and the 4-bit cache does not: on the H200 the prefetch's
    /// registers (168 against 128) cost the 4-bit kernel a resident CTA per SM and 20 % at B4
    /// N 8k–16k, while the fp16 kernel gains 12–28 % (`muse bench --family kv4` measures both).
    /// The results are the same up to f32 rounding order either way.
    pub fn with_prefetch(mut self, on: bool) -> Self {
        self.prefetch = Some(on);
        self
    }

    /// The schedule a decode of `storage` uses ([`DecodeWs::with_prefetch`]).
    pub fn prefetch(&self, storage: Storage) -> bool {
        self.prefetch
            .unwrap_or_else(|| Self::default_prefetch(storage))
    }

    /// The default schedule of `storage`: prefetch for fp16 only.
    ///
    /// ```
    /// use muse_cuda::kv4::{DecodeWs, Storage};
    /// assert!(DecodeWs::default_prefetch(Storage::Fp16) && !DecodeWs::default_prefetch(Storage::Int4));
    /// ```
    pub fn default_prefetch(storage: Storage) -> bool {
        storage == Storage::Fp16
    }

    fn ensure(&mut self, gpu: &'static Gpu, splits: usize) -> Result<()> {
        if splits > self.splits {
            self.part_m = gpu.alloc(self.rows * splits)?;
            self.part_l = gpu.alloc(self.rows * splits)?;
            self.part_acc = gpu.alloc(self.rows * splits * self.dim)?;
            self.splits = splits;
        }
        Ok(())
    }
}

impl DeviceKvCache {
    /// Decode attention for q [B, H, Nq, D] (f32, device) at each row's last Nq positions, as
    /// `muse_reference::kv4::decode_attn`: results in `ws.o` [B, H, Nq, D] and `ws.lse`.
    #[allow(clippy::too_many_arguments)]
    pub fn decode(
        &self,
        gpu: &'static Gpu,
        q: &Buf<f32>,
        nq: usize,
        c: f64,
        beta: f64,
        mask: Mask,
        ws: &mut DecodeWs,
    ) -> Result<()> {
        let cfg = self.cfg;
        let rows = cfg.batch * cfg.heads * nq;
        if q.len() != rows * cfg.dim || nq == 0 {
            return Err(Error::Shape {
                op: OP,
                arg: "q",
                expected: format!(
                    "[B, H, Nq ≥ 1, D] = [{}, {}, {nq}, {}]",
                    cfg.batch, cfg.heads, cfg.dim
                ),
                got: vec![q.len()],
            });
        }
        if ws.rows != rows || ws.dim != cfg.dim {
            return Err(Error::Shape {
                op: OP,
                arg: "ws",
                expected: format!("a workspace for {rows} query rows of D = {}", cfg.dim),
                got: vec![ws.rows, ws.dim],
            });
        }
        let s = muse_reference::poincare::Curvature::named(OP, "c", c)?.s();
        if !beta.is_finite() {
            return Err(Error::Domain {
                op: OP,
                arg: "beta",
                rule: format!("must be finite, got {beta}"),
            });
        }
        let (mask_id, window) = match mask {
            Mask::None => (0, 1),
            Mask::Causal => (1, 1),
            Mask::Window(w) if w >= 1 => (2, w),
            Mask::Window(_) => {
                return Err(Error::Domain {
                    op: OP,
                    arg: "mask",
                    rule: "window W must be at least 1".into(),
                })
            }
        };
        let mut max_visible = 0;
        for (b, &n) in self.len.iter().enumerate() {
            if n < nq {
                return Err(Error::Domain { op: OP, arg: "q", rule: format!("has {nq} queries but row {b} holds only {n} tokens (append the queries' own keys first)") });
            }
            let stored = n.saturating_sub(cfg.capacity);
            let lo = match mask {
                Mask::None => stored,
                Mask::Causal => 0,
                Mask::Window(w) => (n - nq) / w * w,
            };
            if lo < stored {
                return Err(Error::Domain { op: OP, arg: "q", rule: format!("the first query of row {b} sees position {lo}, which the ring no longer holds (it keeps {stored}..{n})") });
            }
            max_visible = max_visible.max(n - lo);
        }
        let group = self.channel_group();
        let lanes64 = cfg.dim == 64 && group.is_none();
        let threads = 32 * k::kv4::DEC_WARPS;
        let name = match (self.storage, lanes64, ws.prefetch(self.storage)) {
            (Storage::Int4, true, true) => k::kv4::DECODE64_INT4,
            (Storage::Int4, true, false) => k::kv4::DECODE64_INT4_NOPF,
            (Storage::Fp16, true, true) => k::kv4::DECODE64_FP16,
            (Storage::Fp16, true, false) => k::kv4::DECODE64_FP16_NOPF,
            (Storage::Int4, false, _) if group.is_some() => k::kv4::DECODE_SPLIT_INT4CH,
            (Storage::Int4, false, _) => k::kv4::DECODE_SPLIT_INT4,
            (Storage::Fp16, false, _) => k::kv4::DECODE_SPLIT_FP16,
        };
        let func = gpu.function(MODULE.get(gpu)?, name)?;
        let chunk = if lanes64 {
            let wave = match ws.wave {
                Some((kernel, wave)) if kernel == name => wave,
                _ => {
                    let resident = func
                        .max_active_blocks_per_multiprocessor(BlockSize::x(threads), 0)
                        .map_err(|e| err("reading the decode kernel's occupancy", e))?;
                    let wave = gpu.info().sms as usize * resident.max(1) as usize;
                    ws.wave = Some((name, wave));
                    wave
                }
            };
            decode_chunk64(max_visible, rows, wave)
        } else {
            DECODE_CHUNK
        };
        let splits = max_visible.div_ceil(chunk).max(1);
        ws.ensure(gpu, splits)?;
        let grid = GridSize::xy(
            u32::try_from(rows)
                .map_err(|_| unsupported(format!("{rows} query rows exceed the grid")))?,
            splits as u32,
        );
        let (h, nqi, d, t) = (
            int(cfg.heads, "H")?,
            int(nq, "Nq")?,
            int(cfg.dim, "D")?,
            int(cfg.capacity, "T")?,
        );
        let (w, chunk) = (int(window, "W")?, int(chunk, "chunk")?);
        let (s32, beta32) = (s as f32, beta as f32);
        let stream = &gpu.stream;
        let (out_m, out_l, out_acc) = (ws.part_m.ptr(), ws.part_l.ptr(), ws.part_acc.ptr());
        let (done, o, lse) = (ws.done.ptr(), ws.o.ptr(), ws.lse.ptr());
        match (self.storage, lanes64) {
            (Storage::Int4, true) => {
                let norm = self.k_norm_ptr();
                // SAFETY: (1) twenty arguments in C order: an f32 pointer, two u8, two u16, an f32
                // (nullable) and an i32 pointer, five i32, two f32, an i32, three f32 pointers, a
                // u32 and two f32 pointers; (2) as the warp-per-key launch below, with D = 64
                // (checked): codes 32 B and meta one 4-byte word per slot, read as 16-byte / 4-byte
                // words at slot offsets (cudaMalloc bases are 256-byte aligned); (3) buffers
                // synchronise `stream` before they are freed.
                unsafe {
                    launch!(func<<<grid, threads, 0, stream>>>(
                        q.ptr(), self.k_codes.ptr(), self.v_codes.ptr(), self.k_meta.ptr(), self.v_meta.ptr(),
                        norm, self.len_dev.ptr(), h, nqi, t, mask_id, w, s32, beta32, chunk,
                        out_m, out_l, out_acc, done, o, lse
                    ))
                }
                .map_err(|e| err("launching kv4_decode64_int4", e))
            }
            (Storage::Fp16, true) => {
                // SAFETY: (1) seventeen arguments in C order: an f32 pointer, two u16, an i32
                // pointer, five i32, two f32, an i32, three f32 pointers, a u32 and two f32
                // pointers; (2) k16, v16 hold B·H·T·64 (D = 64 checked), read as 16-byte words of
                // 128-byte rows, len B, the partials rows·splits (·64), done, lse rows, o rows·64;
                // (3) buffers synchronise `stream` before they are freed.
                unsafe {
                    launch!(func<<<grid, threads, 0, stream>>>(
                        q.ptr(), self.k16.ptr(), self.v16.ptr(), self.len_dev.ptr(), h, nqi, t, mask_id,
                        w, s32, beta32, chunk, out_m, out_l, out_acc, done, o, lse
                    ))
                }
                .map_err(|e| err("launching kv4_decode64_fp16", e))
            }
            (Storage::Int4, false) if group.is_some() => {
                let g = int(group.unwrap_or(1), "G")?;
                let norm = self.k_norm_ptr();
                // SAFETY: (1) twenty-three arguments in C order: an f32 pointer, two u8, two u16
                // (per-channel meta, tail), a u16, an f32 (nullable) and an i32 pointer, seven i32,
                // two f32, an i32, three f32 pointers, a u32 and two f32 pointers; (2) as below, with
                // the per-channel meta B·H·(T/G)·D·2 read as 4-byte words and the tail B·H·G·D
                // (DeviceKvCache::new); (3) buffers synchronise `stream` before they are freed.
                unsafe {
                    launch!(func<<<grid, threads, 0, stream>>>(
                        q.ptr(), self.k_codes.ptr(), self.v_codes.ptr(), self.k_meta.ptr(), self.k_tail.ptr(),
                        self.v_meta.ptr(), norm, self.len_dev.ptr(), h, nqi, d, t, g, mask_id, w, s32, beta32,
                        chunk, out_m, out_l, out_acc, done, o, lse
                    ))
                }
                .map_err(|e| err("launching kv4_decode_split_int4ch", e))
            }
            (Storage::Int4, false) => {
                let norm = self.k_norm_ptr();
                // SAFETY: (1) twenty-one arguments in C order: an f32 pointer, two u8, two u16, an
                // f32 (nullable) and an i32 pointer, six i32, two f32, an i32, three f32 pointers,
                // a u32 and two f32 pointers; (2) q holds rows·D elements (checked), the cache
                // B·H·T slots (new), len B, the partials rows·splits (·D) (ensure), done and lse
                // rows, o rows·D (DecodeWs); the kernel reads slots j mod T of the visible
                // positions j < len only; (3) buffers synchronise `stream` before they are freed.
                unsafe {
                    launch!(func<<<grid, threads, 0, stream>>>(
                        q.ptr(), self.k_codes.ptr(), self.v_codes.ptr(), self.k_meta.ptr(), self.v_meta.ptr(),
                        norm, self.len_dev.ptr(), h, nqi, d, t, mask_id, w, s32, beta32, chunk,
                        out_m, out_l, out_acc, done, o, lse
                    ))
                }
                .map_err(|e| err("launching kv4_decode_split_int4", e))
            }
            (Storage::Fp16, false) => {
                // SAFETY: as above with the fp16 K, V (B·H·T·D each) in place of codes and meta.
                unsafe {
                    launch!(func<<<grid, threads, 0, stream>>>(
                        q.ptr(), self.k16.ptr(), self.v16.ptr(), self.len_dev.ptr(), h, nqi, d, t, mask_id,
                        w, s32, beta32, chunk, out_m, out_l, out_acc, done, o, lse
                    ))
                }
                .map_err(|e| err("launching kv4_decode_split_fp16", e))
            }
        }
    }
}
