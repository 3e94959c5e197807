//! Fused split-K decode attention from the device cache (`kv4_decode64_*` at D = 64, one key
//! per lane; `kv4_decode_split_*` otherwise) and the log-sum-exp merge of the splits.

use cust::function::GridSize;
use cust::launch;
use muse_reference::hyp_attn::Mask;
use muse_reference::{Error, Result};

use super::{int, unsupported, DeviceKvCache, Storage, MODULE, OP};
use crate::device::{err, k, Buf, Gpu};

/// Keys one decode CTA scores (the split size; FlashDecoding's chunk) on the warp-per-key path.
pub const DECODE_CHUNK: usize = 256;

/// The split size of the D = 64 one-key-per-lane path: enough splits for one wave of three CTAs
/// per SM of an H100/H200 (132 SMs; the kernel's registers fit three) over all query rows, at
/// least one key per lane (32·`DEC_WARPS`), at most 16 per lane.
///
/// ```
/// use muse_cuda::kv4::decode_chunk64;
/// assert_eq!(decode_chunk64(8192, 4 * 8), 640); // B4 H8: 13 splits
/// assert_eq!(decode_chunk64(8192, 8), 256); // B1 H8: 32 splits
/// assert_eq!(decode_chunk64(1 << 20, 1), 2048); // capped at 16 keys per lane
/// ```
pub fn decode_chunk64(max_visible: usize, rows: usize) -> usize {
    let lanes = 32 * k::kv4::DEC_WARPS as usize;
    let want_splits = (3 * 132usize).div_ceil(rows.max(1));
    max_visible
        .div_ceil(want_splits)
        .next_multiple_of(lanes)
        .clamp(lanes, 16 * lanes)
}

/// Decode outputs and split partials for a fixed number of query rows.
pub struct DecodeWs {
    rows: usize,
    dim: usize,
    splits: usize,
    part_m: Buf<f32>,
    part_l: Buf<f32>,
    part_acc: Buf<f32>,
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
            o: gpu.alloc(rows * c.dim)?,
            lse: gpu.alloc(rows)?,
        })
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
        let lanes64 = cfg.dim == 64;
        let chunk = if lanes64 {
            decode_chunk64(max_visible, rows)
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
        let threads = 32 * k::kv4::DEC_WARPS;
        let (h, nqi, d, t) = (
            int(cfg.heads, "H")?,
            int(nq, "Nq")?,
            int(cfg.dim, "D")?,
            int(cfg.capacity, "T")?,
        );
        let (w, chunk) = (int(window, "W")?, int(chunk, "chunk")?);
        let (s32, beta32) = (s as f32, beta as f32);
        let stream = &gpu.stream;
        match (self.storage, lanes64) {
            (Storage::Int4, true) => {
                let func = gpu.function(MODULE.get(gpu)?, k::kv4::DECODE64_INT4)?;
                let norm = self.k_norm_ptr();
                // SAFETY: (1) seventeen arguments in C order: an f32 pointer, two u8, two u16, an
                // f32 (nullable) and an i32 pointer, five i32, two f32, an i32, three f32 pointers;
                // (2) as the warp-per-key launch below, with D = 64 (checked): codes 32 B and meta
                // 2 u16 per slot, read as 16-byte / 2-byte words at slot offsets (cudaMalloc bases
                // are 256-byte aligned); (3) buffers synchronise `stream` before they are freed.
                unsafe {
                    launch!(func<<<grid, threads, 0, stream>>>(
                        q.ptr(), self.k_codes.ptr(), self.v_codes.ptr(), self.k_meta.ptr(), self.v_meta.ptr(),
                        norm, self.len_dev.ptr(), h, nqi, t, mask_id, w, s32, beta32, chunk,
                        ws.part_m.ptr(), ws.part_l.ptr(), ws.part_acc.ptr()
                    ))
                }
                .map_err(|e| err("launching kv4_decode64_int4", e))?;
            }
            (Storage::Fp16, true) => {
                let func = gpu.function(MODULE.get(gpu)?, k::kv4::DECODE64_FP16)?;
                // SAFETY: (1) fourteen arguments in C order: an f32 pointer, two u16, an i32
                // pointer, five i32, two f32, an i32, three f32 pointers; (2) k16, v16 hold
                // B·H·T·64 (D = 64 checked), read as 16-byte words of 128-byte rows, len B, the
                // partials rows·splits (·64); (3) buffers synchronise `stream` before they are freed.
                unsafe {
                    launch!(func<<<grid, threads, 0, stream>>>(
                        q.ptr(), self.k16.ptr(), self.v16.ptr(), self.len_dev.ptr(), h, nqi, t, mask_id,
                        w, s32, beta32, chunk, ws.part_m.ptr(), ws.part_l.ptr(), ws.part_acc.ptr()
                    ))
                }
                .map_err(|e| err("launching kv4_decode64_fp16", e))?;
            }
            (Storage::Int4, false) => {
                let func = gpu.function(MODULE.get(gpu)?, k::kv4::DECODE_SPLIT_INT4)?;
                let norm = self.k_norm_ptr();
                // SAFETY: (1) eighteen arguments in C order: an f32 pointer, two u8, two u16, an f32
                // (nullable) and an i32 pointer, six i32, two f32, an i32, three f32 pointers;
                // (2) q holds rows·D elements (checked), the cache B·H·T slots (new), len B, the
                // partials rows·splits (·D) (ensure); the kernel reads slots j mod T of the visible
                // positions j < len only; (3) buffers synchronise `stream` before they are freed.
                unsafe {
                    launch!(func<<<grid, threads, 0, stream>>>(
                        q.ptr(), self.k_codes.ptr(), self.v_codes.ptr(), self.k_meta.ptr(), self.v_meta.ptr(),
                        norm, self.len_dev.ptr(), h, nqi, d, t, mask_id, w, s32, beta32, chunk,
                        ws.part_m.ptr(), ws.part_l.ptr(), ws.part_acc.ptr()
                    ))
                }
                .map_err(|e| err("launching kv4_decode_split_int4", e))?;
            }
            (Storage::Fp16, false) => {
                let func = gpu.function(MODULE.get(gpu)?, k::kv4::DECODE_SPLIT_FP16)?;
                // SAFETY: as above with the fp16 K, V (B·H·T·D each) in place of codes and meta.
                unsafe {
                    launch!(func<<<grid, threads, 0, stream>>>(
                        q.ptr(), self.k16.ptr(), self.v16.ptr(), self.len_dev.ptr(), h, nqi, d, t, mask_id,
                        w, s32, beta32, chunk, ws.part_m.ptr(), ws.part_l.ptr(), ws.part_acc.ptr()
                    ))
                }
                .map_err(|e| err("launching kv4_decode_split_fp16", e))?;
            }
        }
        let func = gpu.function(MODULE.get(gpu)?, k::kv4::DECODE_MERGE)?;
        let sp = splits as i32;
        // SAFETY: (1) seven arguments in C order: three f32 pointers, two i32, two f32 pointers;
        // (2) the partials hold rows·splits (·D), o rows·D and lse rows (DecodeWs); one CTA per
        // query row; (3) buffers synchronise `stream` before they are freed.
        unsafe {
            launch!(func<<<rows as u32, 32, 0, stream>>>(
                ws.part_m.ptr(), ws.part_l.ptr(), ws.part_acc.ptr(), sp, d, ws.o.ptr(), ws.lse.ptr()
            ))
        }
        .map_err(|e| err("launching kv4_decode_merge", e))
    }
}
