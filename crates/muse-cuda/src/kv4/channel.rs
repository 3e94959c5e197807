//! Per-channel K on the device (kernels: `include/kv4_channel.cuh`; reference: `Kv4Cache` with
//! `KvLayout::PerChannelK`): the append that seals the groups it completes and keeps the open
//! group in an fp16 tail, and the host reconstruction of a per-channel key for `stored`.

use cust::launch;
use muse_reference::kv4::{Kv4Config, KvLayout};
use muse_reference::Result;

use super::{int, unsupported, CacheState, DeviceKvCache, Storage, MODULE};
use crate::device::{err, k, Buf, Gpu};

impl DeviceKvCache {
    /// G when K is stored per channel (4-bit storage with the `PerChannelK` layout).
    pub fn channel_group(&self) -> Option<usize> {
        match (self.storage, self.cfg.layout) {
            (Storage::Int4, KvLayout::PerChannelK { group }) => Some(group),
            _ => None,
        }
    }

    /// The per-channel append: V (and ‖k‖) per token, then the groups this append completes
    /// sealed from the tail and k, then the tail (fp16, slot p mod G) from k's last G tokens, in
    /// that order on the stream (the seal reads tail slots the write replaces).
    pub(super) fn append_channels(
        &mut self,
        gpu: &'static Gpu,
        k: &Buf<f32>,
        v: &Buf<f32>,
        l: usize,
        start: &Buf<i32>,
    ) -> Result<()> {
        let (c, g) = (self.cfg, self.channel_group().unwrap_or(1));
        let rows = c.batch * c.heads * l;
        let grid = u32::try_from(rows.div_ceil(k::kv4::WARPS as usize))
            .map_err(|_| unsupported(format!("{rows} rows exceed the grid")))?;
        let threads = 32 * k::kv4::WARPS;
        let (b, h, li, d, t, gi) = (
            int(c.batch, "B")?,
            int(c.heads, "H")?,
            int(l, "L")?,
            int(c.dim, "D")?,
            int(c.capacity, "T")?,
            int(g, "G")?,
        );
        let stream = &gpu.stream;
        let none_u8 = cust::memory::DevicePointer::<u8>::null();
        let none_u16 = cust::memory::DevicePointer::<u16>::null();
        let func = gpu.function(MODULE.get(gpu)?, k::kv4::APPEND)?;
        let norm = self.k_norm_ptr();
        // SAFETY: (1) thirteen arguments as in `append` (null K codes and meta, which the kernel
        // tests: V and ‖k‖ only); (2) k, v hold B·H·L·D elements (checked by `append`), the V codes
        // B·H·T·D/2, the V meta B·H·T·2, the norms B·H·T, start B; (3) buffers synchronise
        // `stream` before they are freed.
        unsafe {
            launch!(func<<<grid, threads, 0, stream>>>(
                k.ptr(), v.ptr(), none_u8, self.v_codes.ptr(), none_u16, self.v_meta.ptr(), norm,
                start.ptr(), b, h, li, d, t
            ))
        }
        .map_err(|e| err("launching kv4_append", e))?;
        let groups = self
            .len
            .iter()
            .map(|&n| (n + l) / g - n / g)
            .max()
            .unwrap_or(0);
        if groups > 0 {
            let func = gpu.function(MODULE.get(gpu)?, k::kv4::SEAL_CHANNELS)?;
            let seal = cust::function::GridSize::xy((c.batch * c.heads) as u32, groups as u32);
            // SAFETY: (1) ten arguments in C order: an f32, a u16, a u8, a u16 and an i32 pointer,
            // five i32; (2) k holds B·H·L·D, the tail B·H·G·D, the codes B·H·T·D/2, the per-channel
            // meta B·H·(T/G)·D·2 (new), start B; CTA (row, y) writes group start/G + y only when
            // it ends within len + L ≤ T (checked by `append`: no ring here); (3) as above.
            unsafe {
                launch!(func<<<seal, k::kv4::SEAL_THREADS, 0, stream>>>(
                    k.ptr(), self.k_tail.ptr(), self.k_codes.ptr(), self.k_meta.ptr(), start.ptr(),
                    h, li, d, t, gi
                ))
            }
            .map_err(|e| err("launching kv4_seal_channels", e))?;
        }
        let func = gpu.function(MODULE.get(gpu)?, k::kv4::APPEND_FP16)?;
        // SAFETY: (1) ten arguments as in `append`'s fp16 launch, with the tail as k16, a null v16
        // (the kernel tests it) and T = G: slots (start + t) mod G of the B·H·G·D tail; (2) k holds
        // B·H·L·D; (3) as above.
        unsafe {
            launch!(func<<<grid, threads, 0, stream>>>(
                k.ptr(), k.ptr(), self.k_tail.ptr(), none_u16, start.ptr(), b, h, li, d, gi
            ))
        }
        .map_err(|e| err("launching kv4_append_fp16 (tail)", e))
    }
}

/// Key p of row `row` (of n tokens) of a per-channel cache: the fp16 tail in the incomplete group,
/// else the codes with their group's per-channel (s, m).
pub(super) fn channel_key(
    st: &CacheState,
    c: Kv4Config,
    row: usize,
    n: usize,
    p: usize,
) -> Vec<f64> {
    let g = match c.layout {
        KvLayout::PerChannelK { group } => group,
        KvLayout::PerToken => 1,
    };
    let f16 = |b: u16| f64::from(half::f16::from_bits(b));
    let d = c.dim;
    if p / g == n / g {
        let t = (row * g + p % g) * d;
        return st.k_tail[t..t + d].iter().map(|&b| f16(b)).collect();
    }
    let slot = row * c.capacity + p;
    let codes =
        muse_reference::quant::unpack_nibbles(&st.k_codes[slot * d / 2..(slot + 1) * d / 2]);
    let meta = (row * (c.capacity / g) + p / g) * d;
    codes
        .iter()
        .enumerate()
        .map(|(ch, &q)| {
            let (s, m) = (st.k_meta[2 * (meta + ch)], st.k_meta[2 * (meta + ch) + 1]);
            f16(m) + f64::from(q) * f16(s)
        })
        .collect()
}
