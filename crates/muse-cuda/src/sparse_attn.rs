//! Block-skip sparse hyperbolic attention on the GPU (design hyperbolic.md §6; kernels:
//! `../kernels/sparse_attn.cu` for the block-centroid selection, `hyp_attn_tc_fwd_d64_sparse` in
//! `../kernels/hyp_attn_tc.cu` for the attention; reference: `muse_reference::sparse_attn`). The
//! bf16 tensor-core forward (D = 64, causal) visits only the listed 64-key blocks of each
//! 64-query block: the diagonal and the k_b − 1 earlier blocks whose centroids score highest.
//! The LSH selection (per query: same-code keys in any of T tables plus a window, capped at
//! k_cap by exact score) and the attention over its index lists: [`select_lsh`],
//! [`forward_indexed`].
//!
//! ```no_run
//! use muse_cuda::{hyp_attn_tc::{ForwardWs, Problem}, sparse_attn::{forward_sparse, select_centroid}};
//! use muse_reference::hyp_attn::{HypAttnArgs, Mask};
//! let gpu = muse_cuda::Cuda::new()?.gpu()?;
//! let x = ndarray::Array4::from_elem((1, 8, 4096, 64), 0.01);
//! let args = HypAttnArgs::new(x.view(), x.view(), x.view(), 0.693, 1.0, Mask::Causal)?;
//! let p = Problem::upload(gpu, &args)?;
//! let ws = ForwardWs::new(gpu, &p)?;
//! let lists = select_centroid(gpu, &p, 7)?; // 90 % sparse at N = 4096 (64 blocks)
//! forward_sparse(gpu, &p, &ws, &lists)?;
//! # Ok::<(), muse_reference::Error>(())
//! ```

use cust::launch;
use muse_reference::hyp_attn::Mask;
use muse_reference::{Error, Result};

use crate::device::{err, k, Buf, Gpu};
use crate::hyp_attn::{grid_y, lengths_ptr, mask_args};
use crate::hyp_attn_tc::{launch_prep, ForwardWs, Problem};
use crate::lazy::LazyModule;
use crate::poincare::as_i32;

mod lsh;

pub use lsh::{forward_indexed, select_lsh, select_lsh_into, DeviceIdx, IndexedWs};

static MODULE: LazyModule = LazyModule::new(k::sparse_attn::CUBIN, "sparse_attn");

const OP: &str = "sparse_attn";

/// Key-block lists on the device: lists [B·H, nb, k_b] (−1 padded), counts [B·H, nb].
pub struct DeviceLists {
    /// Blocks per (b, h): ⌈N/64⌉.
    pub nb: usize,
    /// k_b, the list width.
    pub kb: usize,
    /// The lists.
    pub lists: Buf<i32>,
    /// The counts.
    pub counts: Buf<i32>,
    /// The q centroids [B·H, nb, D] then the normalised k centroids transposed [B·H, D, nb].
    cent: Buf<f32>,
    /// Per block a float4 of norms and sinh terms, q then k: [2, B·H, nb, 4].
    stat: Buf<f32>,
}

fn check(p: &Problem) -> Result<()> {
    let d = p.dims;
    if d.d != 64 || d.dv != 64 || d.n != d.m || p.mask != Mask::Causal || p.lengths.is_some() {
        return Err(Error::Unsupported { op: OP, backend: "cuda", what: "block-skip attention needs D = Dv = 64, N = M, the causal mask and no per-batch lengths".into() });
    }
    Ok(())
}

/// Block-centroid selection of `k_blocks` key blocks (the diagonal included) per query block.
pub fn select_centroid(gpu: &'static Gpu, p: &Problem, k_blocks: usize) -> Result<DeviceLists> {
    check(p)?;
    let max = k::sparse_attn::MAX_KB as usize;
    if k_blocks == 0 || k_blocks > max {
        return Err(Error::Domain {
            op: OP,
            arg: "k_blocks",
            rule: format!("must be in 1..={max}, got {k_blocks}"),
        });
    }
    let d = p.dims;
    let block = k::sparse_attn::BLOCK as usize;
    let nb = d.n.div_ceil(block);
    let out = DeviceLists {
        nb,
        kb: k_blocks,
        lists: gpu.alloc(d.bh() * nb * k_blocks)?,
        counts: gpu.alloc(d.bh() * nb)?,
        cent: gpu.alloc(2 * d.bh() * nb * d.d)?,
        stat: gpu.alloc(2 * d.bh() * nb * 4)?,
    };
    select_into(gpu, p, &out)?;
    Ok(out)
}

/// Re-runs the selection into existing lists (the timed path: no allocation): one launch for the
/// q and k centroids, one for the lists.
pub fn select_into(gpu: &'static Gpu, p: &Problem, out: &DeviceLists) -> Result<()> {
    check(p)?; // D = 64 ≤ MAX_D
    let d = p.dims;
    if out.nb != d.n.div_ceil(k::sparse_attn::BLOCK as usize)
        || out.cent.len() != 2 * d.bh() * out.nb * d.d
        || out.lists.len() != d.bh() * out.nb * out.kb
    {
        return Err(Error::Shape {
            op: OP,
            arg: "out",
            expected: format!(
                "lists from select_centroid for B·H = {}, N = {}",
                d.bh(),
                d.n
            ),
            got: vec![out.nb, out.kb],
        });
    }
    let (n, dim, nb, kb) = (
        as_i32("N", d.n)?,
        as_i32("D", d.d)?,
        as_i32("nb", out.nb)?,
        as_i32("k_blocks", out.kb)?,
    );
    let bh = as_i32("B·H", d.bh())?;
    let s = p.c.sqrt() as f32;
    let stream = &gpu.stream;
    let cent = gpu.function(MODULE.get(gpu)?, k::sparse_attn::CENTROIDS)?;
    let grid = (out.nb as u32, grid_y(&d)?, 2);
    // SAFETY: (1) nine arguments in C order: two u16 pointers (bf16 bits), four i32, an f32, two
    // f32 pointers (the second read as float4: 16-byte aligned allocations); (2) q and k hold
    // B·H·N·D values (Problem::upload), cent 2·B·H·nb·D floats and stat 2·B·H·nb float4
    // (select_centroid, checked above); the kernel reads rows < N of block < nb, D ≤ MAX_D;
    // (3) buffers synchronise `stream` before they are freed.
    unsafe {
        launch!(cent<<<grid, k::sparse_attn::CENT_THREADS, 0, stream>>>(
            p.q.ptr(), p.k.ptr(), bh, n, dim, nb, s, out.cent.ptr(), out.stat.ptr()
        ))
    }
    .map_err(|e| err("launching sparse_attn_centroids", e))?;
    let sel = gpu.function(MODULE.get(gpu)?, k::sparse_attn::SELECT)?;
    let warps = k::sparse_attn::SEL_WARPS;
    let blocks = u32::try_from(d.bh() * out.nb)
        .map_err(|_| Error::Unsupported {
            op: OP,
            backend: "cuda",
            what: "B·H·⌈N/64⌉ query blocks exceed the grid".into(),
        })?
        .div_ceil(warps);
    // SAFETY: (1) nine arguments in C order: two f32 pointers (the second read as float4), three
    // i32, an f32, an i32, two i32 pointers; (2) cent and stat as the launch above sized and
    // wrote them (same stream, so in order), lists B·H·nb·k_b and counts B·H·nb ints; one warp per
    // (b·h, block) < B·H·nb, k_b ≤ MAX_KB (checked), D ≤ MAX_D; (3) buffers synchronise `stream`
    // before they are freed.
    unsafe {
        launch!(sel<<<blocks, warps * 32, 0, stream>>>(
            out.cent.ptr(), out.stat.ptr(), bh, nb, dim, s, kb, out.lists.ptr(), out.counts.ptr()
        ))
    }
    .map_err(|e| err("launching sparse_attn_select", e))
}

/// The block-skip forward over `lists` (prep + sparse tensor-core kernel), results in `ws`.
pub fn forward_sparse(
    gpu: &'static Gpu,
    p: &Problem,
    ws: &ForwardWs,
    lists: &DeviceLists,
) -> Result<()> {
    check(p)?;
    let d = p.dims;
    if lists.nb != d.n.div_ceil(k::hyp_attn_tc::BM as usize)
        || lists.lists.len() != d.bh() * lists.nb * lists.kb
    {
        return Err(Error::Shape {
            op: OP,
            arg: "lists",
            expected: format!("[B·H, ⌈N/64⌉, k_b] for N = {}", d.n),
            got: vec![lists.nb, lists.kb],
        });
    }
    let s = p.c.sqrt();
    launch_prep(gpu, true, &p.q, &ws.tq, d.bh() * d.n, &d, s as f32)?;
    launch_prep(gpu, false, &p.k, &ws.tk, d.bh() * d.m, &d, s as f32)?;
    let func = gpu.function(&gpu.hyp_attn_tc, k::hyp_attn_tc::FWD_D64_SPARSE)?;
    let stream = &gpu.stream;
    let grid = ((d.n as u32).div_ceil(k::hyp_attn_tc::BM), grid_y(&d)?, 1);
    let (heads, n, m) = (as_i32("H", d.heads)?, as_i32("N", d.n)?, as_i32("M", d.m)?);
    let (mask, window) = mask_args(p.mask);
    let scale2 = (-p.beta / s) as f32;
    let lengths = lengths_ptr(&p.lengths);
    let kmax = as_i32("k_blocks", lists.kb)?;
    // SAFETY: (1) seventeen arguments in C order: the fourteen of hyp_attn_tc_fwd_d64 (see
    // hyp_attn_tc::forward) then two i32 pointers and an i32; (2) as there, plus lists
    // B·H·nb·k_b block indices < nb (select_into writes them, the diagonal first, counts ≤ k_b);
    // (3) buffers synchronise the stream before they are freed.
    unsafe {
        launch!(func<<<grid, k::hyp_attn_tc::THREADS, 0, stream>>>(
            p.q.ptr(), p.k.ptr(), p.v.ptr(), ws.tq.ptr(), ws.tk.ptr(), ws.o.ptr(), ws.lse.ptr(),
            heads, n, m, scale2, mask, window, lengths, lists.lists.ptr(), lists.counts.ptr(), kmax
        ))
    }
    .map_err(|e| err("launching hyp_attn_tc_fwd_d64_sparse", e))
}
