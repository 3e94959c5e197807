//! LSH key selection and attention over index lists on the GPU (design hyperbolic.md §6,
//! selection B; kernels: `sparse_attn_lsh_*` and `sparse_attn_indexed_fwd` in
//! `../kernels/sparse_attn.cu`; reference: `muse_reference::sparse_attn::{select_lsh,
//! attend_indices}`). T tables × h-bit SimHash codes of every q and k row with the model's seeded
//! hyperplanes, a counting sort of the keys by code per table, then per query the keys j ≤ i that
//! share its code in any table plus the local window, capped at k_cap by the exact score −d
//! (f32, law of cosines; ties to the lower index): idx [B·H·N, k_cap], ascending, −1 padded.
//!
//! ```no_run
//! use muse_cuda::hyp_attn_tc::Problem;
//! use muse_cuda::sparse_attn::{forward_indexed, select_lsh, IndexedWs};
//! use muse_reference::hyp_attn::{HypAttnArgs, Mask};
//! use muse_reference::sparse_attn::Lsh;
//! let gpu = muse_cuda::Cuda::new()?.gpu()?;
//! let x = ndarray::Array4::from_elem((1, 8, 4096, 64), 0.01);
//! let args = HypAttnArgs::new(x.view(), x.view(), x.view(), 0.693, 1.0, Mask::Causal)?;
//! let p = Problem::upload(gpu, &args)?;
//! let lsh = Lsh::new(7, 4, 8, 64)?; // 4 tables of 8 bits, stored with the model
//! let sel = select_lsh(gpu, &p, &lsh, 192, 64)?;
//! let ws = IndexedWs::new(gpu, &p)?;
//! forward_indexed(gpu, &p, &ws, &sel.idx, sel.k_cap)?;
//! let o = ws.o.to_vec()?; // [B·H·N, Dv]
//! # Ok::<(), muse_reference::Error>(())
//! ```

use cust::launch;
use cust::memory::DevicePointer;
use muse_reference::hyp_attn::Mask;
use muse_reference::sparse_attn::Lsh;
use muse_reference::{Error, Result};

use super::{MODULE, OP};
use crate::device::{err, k, Buf, Gpu};
use crate::hyp_attn::grid_y;
use crate::hyp_attn_tc::Problem;
use crate::poincare::as_i32;

/// An LSH selection on the device and what made it: the hyperplanes (f32), the codes, the row
/// terms and the buckets, kept so that [`select_lsh_into`] reruns it without allocating.
pub struct DeviceIdx {
    /// k_cap, the list width.
    pub k_cap: usize,
    /// The local window (keys i − window < j ≤ i are always candidates).
    pub window: usize,
    /// T, the tables.
    pub tables: usize,
    /// h, the bits per table.
    pub bits: usize,
    /// idx [B·H·N, k_cap]: each query's keys ascending, −1 padded.
    pub idx: Buf<i32>,
    /// The codes [2, B·H·N, T], q rows then k rows (bit b of table t: ⟨plane_{t,b}, x⟩ ≥ 0).
    pub codes: Buf<u32>,
    planes: Buf<f32>,
    terms: Buf<f32>,
    offsets: Buf<i32>,
    order: Buf<i32>,
    rows: usize,
}

/// The workspace of [`forward_indexed`]: the row terms and the outputs.
pub struct IndexedWs {
    terms: Buf<f32>,
    /// o, [B·H·N, Dv] f32.
    pub o: Buf<f32>,
    /// lse, [B·H·N] f32 (natural log; −inf for a query with no key).
    pub lse: Buf<f32>,
}

impl IndexedWs {
    /// Allocates the workspace of `p` (causal self-attention, no per-batch lengths).
    ///
    /// ```no_run
    /// # use muse_cuda::hyp_attn_tc::Problem;
    /// # use muse_reference::hyp_attn::{HypAttnArgs, Mask};
    /// # let gpu = muse_cuda::Cuda::new()?.gpu()?;
    /// # let x = ndarray::Array4::from_elem((1, 2, 100, 64), 0.01);
    /// # let args = HypAttnArgs::new(x.view(), x.view(), x.view(), 0.693, 1.0, Mask::Causal)?;
    /// # let p = Problem::upload(gpu, &args)?;
    /// let ws = muse_cuda::sparse_attn::IndexedWs::new(gpu, &p)?;
    /// assert_eq!(ws.lse.len(), 2 * 100);
    /// # Ok::<(), muse_reference::Error>(())
    /// ```
    pub fn new(gpu: &'static Gpu, p: &Problem) -> Result<Self> {
        check(p)?;
        let d = p.dims;
        let rows = d.bh() * d.n;
        Ok(Self {
            terms: gpu.alloc(2 * rows * 4)?,
            o: gpu.alloc(rows * d.dv)?,
            lse: gpu.alloc(rows)?,
        })
    }
}

fn check(p: &Problem) -> Result<()> {
    let d = p.dims;
    let max = k::sparse_attn::MAX_D as usize;
    if d.n != d.m || d.d != d.dv || d.d > max || p.mask != Mask::Causal || p.lengths.is_some() {
        return Err(Error::Unsupported {
            op: OP,
            backend: "cuda",
            what: format!("index attention needs N = M, D = Dv ≤ {max}, the causal mask and no per-batch lengths"),
        });
    }
    Ok(())
}

fn blocks(rows: usize) -> Result<u32> {
    u32::try_from(rows.div_ceil(k::sparse_attn::LSH_WARPS as usize)).map_err(|_| {
        Error::Unsupported {
            op: OP,
            backend: "cuda",
            what: format!("B·H·N = {rows} rows exceed the grid"),
        }
    })
}

/// Queues the codes kernel: row terms of q and k into `terms` and, for `tables` > 0, the codes.
#[allow(clippy::too_many_arguments)]
fn launch_codes(
    gpu: &Gpu,
    p: &Problem,
    rows: usize,
    tables: usize,
    bits: usize,
    planes: DevicePointer<f32>,
    codes: DevicePointer<u32>,
    terms: &Buf<f32>,
) -> Result<()> {
    let func = gpu.function(MODULE.get(gpu)?, k::sparse_attn::LSH_CODES)?;
    let stream = &gpu.stream;
    let grid = (blocks(rows)?, 2, 1);
    let (r, dim) = (as_i32("B·H·N", rows)?, as_i32("D", p.dims.d)?);
    let (t, h) = (as_i32("tables", tables)?, as_i32("bits", bits)?);
    let s = p.c.sqrt() as f32;
    // SAFETY: (1) ten arguments in C order: two u16 pointers (bf16 bits), four i32, an f32
    // pointer, an f32, a u32 pointer and an f32 pointer read as float4 (16-byte aligned
    // allocations); (2) q and k hold rows·D values (Problem::upload, D ≤ MAX_D by `check`),
    // terms 2·rows·4 floats; for T > 0 planes T·h·D floats (T·h ≤ MAX_PLANES) and codes 2·rows·T
    // words (the callers size them), for T = 0 neither is read (null); one warp per row < rows;
    // (3) buffers synchronise `stream` before they are freed.
    unsafe {
        launch!(func<<<grid, k::sparse_attn::LSH_WARPS * 32, 0, stream>>>(
            p.q.ptr(), p.k.ptr(), r, dim, t, h, planes, s, codes, terms.ptr()
        ))
    }
    .map_err(|e| err("launching sparse_attn_lsh_codes", e))
}

/// LSH selection of at most `k_cap` keys per query (the window's and the same-code keys, best
/// −d first): allocates the lists and the workspace, then runs [`select_lsh_into`]. Errors name
/// the argument: `lsh` (D must match; T ≤ 16, h ≤ 12, T·h ≤ 128, finite planes), `k_cap` (1..=256).
///
/// ```no_run
/// # use muse_cuda::hyp_attn_tc::Problem;
/// # use muse_reference::hyp_attn::{HypAttnArgs, Mask};
/// # let gpu = muse_cuda::Cuda::new()?.gpu()?;
/// # let x = ndarray::Array4::from_elem((1, 2, 300, 64), 0.01);
/// # let args = HypAttnArgs::new(x.view(), x.view(), x.view(), 0.693, 1.0, Mask::Causal)?;
/// # let p = Problem::upload(gpu, &args)?;
/// let lsh = muse_reference::sparse_attn::Lsh::new(1, 4, 8, 64)?;
/// let sel = muse_cuda::sparse_attn::select_lsh(gpu, &p, &lsh, 32, 16)?;
/// let idx = sel.idx.to_vec()?; // [2·300, 32]
/// assert_eq!(idx[0], 0); // query 0 sees key 0 (its window)
/// # Ok::<(), muse_reference::Error>(())
/// ```
pub fn select_lsh(
    gpu: &'static Gpu,
    p: &Problem,
    lsh: &Lsh,
    k_cap: usize,
    window: usize,
) -> Result<DeviceIdx> {
    check(p)?;
    let d = p.dims;
    let (tables, bits, dim) = lsh.planes.dim();
    if dim != d.d {
        return Err(Error::Shape {
            op: OP,
            arg: "lsh",
            expected: format!("hyperplanes [T, h, D] with D = {}", d.d),
            got: lsh.planes.shape().to_vec(),
        });
    }
    let (max_t, max_h) = (
        k::sparse_attn::LSH_MAX_TABLES as usize,
        k::sparse_attn::LSH_MAX_BITS as usize,
    );
    let max_p = k::sparse_attn::LSH_MAX_PLANES as usize;
    if !(1..=max_t).contains(&tables) || !(1..=max_h).contains(&bits) || tables * bits > max_p {
        return Err(Error::Domain {
            op: OP,
            arg: "lsh",
            rule: format!("the kernels take 1 ≤ T ≤ {max_t} tables of 1 ≤ h ≤ {max_h} bits, T·h ≤ {max_p}; got T = {tables}, h = {bits}"),
        });
    }
    if let Some(x) = lsh.planes.iter().find(|x| !x.is_finite()) {
        return Err(Error::Domain {
            op: OP,
            arg: "lsh",
            rule: format!("hyperplanes must be finite, got {x}"),
        });
    }
    let max_k = k::sparse_attn::LSH_MAX_KCAP as usize;
    if k_cap == 0 || k_cap > max_k {
        return Err(Error::Domain {
            op: OP,
            arg: "k_cap",
            rule: format!("must be in 1..={max_k}, got {k_cap}"),
        });
    }
    let rows = d.bh() * d.n;
    let planes: Vec<f32> = lsh.planes.iter().map(|&x| x as f32).collect();
    let out = DeviceIdx {
        k_cap,
        window: window.min(d.n),
        tables,
        bits,
        idx: gpu.alloc(rows * k_cap)?,
        codes: gpu.alloc(2 * rows * tables)?,
        planes: gpu.upload(&planes)?,
        terms: gpu.alloc(2 * rows * 4)?,
        offsets: gpu.alloc(d.bh() * tables * ((1 << bits) + 1))?,
        order: gpu.alloc(d.bh() * tables * d.n)?,
        rows,
    };
    select_lsh_into(gpu, p, &out)?;
    Ok(out)
}

/// Reruns the selection of `out` on `p` (the timed path: no allocation): the codes and row terms
/// of q and k, the counting sort of the keys by code per table, then the lists.
///
/// ```no_run
/// # use muse_cuda::hyp_attn_tc::Problem;
/// # use muse_reference::hyp_attn::{HypAttnArgs, Mask};
/// # let gpu = muse_cuda::Cuda::new()?.gpu()?;
/// # let x = ndarray::Array4::from_elem((1, 2, 300, 64), 0.01);
/// # let args = HypAttnArgs::new(x.view(), x.view(), x.view(), 0.693, 1.0, Mask::Causal)?;
/// # let p = Problem::upload(gpu, &args)?;
/// # let lsh = muse_reference::sparse_attn::Lsh::new(1, 4, 8, 64)?;
/// let sel = muse_cuda::sparse_attn::select_lsh(gpu, &p, &lsh, 32, 16)?;
/// muse_cuda::sparse_attn::select_lsh_into(gpu, &p, &sel)?; // the same lists again
/// # Ok::<(), muse_reference::Error>(())
/// ```
pub fn select_lsh_into(gpu: &'static Gpu, p: &Problem, out: &DeviceIdx) -> Result<()> {
    check(p)?;
    let d = p.dims;
    let rows = d.bh() * d.n;
    if out.rows != rows
        || out.order.len() != d.bh() * out.tables * d.n
        || out.planes.len() != out.tables * out.bits * d.d
    {
        return Err(Error::Shape {
            op: OP,
            arg: "out",
            expected: format!(
                "a selection from select_lsh for B·H = {}, N = {}, D = {}",
                d.bh(),
                d.n,
                d.d
            ),
            got: vec![out.rows, out.tables, out.bits],
        });
    }
    launch_codes(
        gpu,
        p,
        rows,
        out.tables,
        out.bits,
        out.planes.ptr(),
        out.codes.ptr(),
        &out.terms,
    )?;
    let stream = &gpu.stream;
    let (n, dim) = (as_i32("N", d.n)?, as_i32("D", d.d)?);
    let (t, h) = (as_i32("tables", out.tables)?, as_i32("bits", out.bits)?);
    let bh = as_i32("B·H", d.bh())?;
    let buckets = gpu.function(MODULE.get(gpu)?, k::sparse_attn::LSH_BUCKETS)?;
    let grid = (out.tables as u32, grid_y(&d)?, 1);
    let kcodes = out.codes.ptr().wrapping_add(rows * out.tables);
    // SAFETY: (1) six arguments in C order: a u32 pointer, three i32, two i32 pointers; (2)
    // kcodes = the k half of codes (rows·T words past its start, written by the launch above on
    // the same stream), codes < 2^h (h ≤ MAX_BITS, the shared histogram's size); offsets
    // B·H·T·(2^h + 1) and order B·H·T·N ints (select_lsh, checked above); one CTA per (t, b·h);
    // (3) buffers synchronise `stream` before they are freed.
    unsafe {
        launch!(buckets<<<grid, k::sparse_attn::LSH_BUCKET_THREADS, 0, stream>>>(
            kcodes, n, t, h, out.offsets.ptr(), out.order.ptr()
        ))
    }
    .map_err(|e| err("launching sparse_attn_lsh_buckets", e))?;
    let select = gpu.function(MODULE.get(gpu)?, k::sparse_attn::LSH_SELECT)?;
    let (kc, win) = (as_i32("k_cap", out.k_cap)?, as_i32("window", out.window)?);
    // SAFETY: (1) fourteen arguments in C order: two u16 pointers, an f32 pointer read as float4,
    // a u32 pointer, two i32 pointers, seven i32 and an i32 pointer; (2) q, k rows·D bf16, terms
    // 2·rows float4 and codes 2·rows·T (the codes launch), offsets and order as the buckets
    // launch wrote them (same stream); bucket entries are key positions < N; idx rows·k_cap ints,
    // k_cap ≤ MAX_KCAP, T ≤ MAX_TABLES (select_lsh); one warp per row < B·H·N; (3) buffers
    // synchronise `stream` before they are freed.
    unsafe {
        launch!(select<<<blocks(rows)?, k::sparse_attn::LSH_WARPS * 32, 0, stream>>>(
            p.q.ptr(), p.k.ptr(), out.terms.ptr(), out.codes.ptr(), out.offsets.ptr(),
            out.order.ptr(), bh, n, dim, t, h, kc, win, out.idx.ptr()
        ))
    }
    .map_err(|e| err("launching sparse_attn_lsh_select", e))
}

/// Causal attention of each query i over its list `idx` [B·H·N, width] (entries −1 or outside
/// [0, i] are skipped; a key listed twice counts twice, so pass sets, as [`select_lsh`] writes):
/// softmax(−β·d) in f32 over the bf16 rows, o and lse into `ws`. The score is the dense kernels':
/// d = acosh(1 + z)/√c with the law of cosines' z.
///
/// ```no_run
/// # use muse_cuda::hyp_attn_tc::Problem;
/// # use muse_reference::hyp_attn::{HypAttnArgs, Mask};
/// # let gpu = muse_cuda::Cuda::new()?.gpu()?;
/// # let x = ndarray::Array4::from_elem((1, 1, 4, 64), 0.01);
/// # let args = HypAttnArgs::new(x.view(), x.view(), x.view(), 0.693, 1.0, Mask::Causal)?;
/// # let p = Problem::upload(gpu, &args)?;
/// let ws = muse_cuda::sparse_attn::IndexedWs::new(gpu, &p)?;
/// let idx = gpu.upload(&[0, -1, 0, 1, 1, 2, 0, 3])?; // 4 queries × 2 keys
/// muse_cuda::sparse_attn::forward_indexed(gpu, &p, &ws, &idx, 2)?;
/// # Ok::<(), muse_reference::Error>(())
/// ```
pub fn forward_indexed(
    gpu: &'static Gpu,
    p: &Problem,
    ws: &IndexedWs,
    idx: &Buf<i32>,
    width: usize,
) -> Result<()> {
    check(p)?;
    let d = p.dims;
    let rows = d.bh() * d.n;
    if width == 0 || idx.len() != rows * width {
        return Err(Error::Shape {
            op: OP,
            arg: "idx",
            expected: format!("[B·H·N, K] = [{rows}, {width}] with K ≥ 1"),
            got: vec![idx.len()],
        });
    }
    if ws.o.len() != rows * d.dv || ws.terms.len() != 2 * rows * 4 {
        return Err(Error::Shape {
            op: OP,
            arg: "ws",
            expected: format!("IndexedWs::new for B·H·N = {rows}, Dv = {}", d.dv),
            got: vec![ws.o.len()],
        });
    }
    launch_codes(
        gpu,
        p,
        rows,
        0,
        0,
        DevicePointer::null(),
        DevicePointer::null(),
        &ws.terms,
    )?;
    let func = gpu.function(MODULE.get(gpu)?, k::sparse_attn::INDEXED_FWD)?;
    let stream = &gpu.stream;
    let (bh, n, dim, dv) = (
        as_i32("B·H", d.bh())?,
        as_i32("N", d.n)?,
        as_i32("D", d.d)?,
        as_i32("Dv", d.dv)?,
    );
    let kk = as_i32("width", width)?;
    let s = p.c.sqrt();
    let (sf, scale) = (s as f32, (-p.beta / s) as f32);
    // SAFETY: (1) fourteen arguments in C order: three u16 pointers, an f32 pointer read as
    // float4, an i32 pointer, five i32, two f32, two f32 pointers; (2) q, k, v rows·D bf16
    // (Problem::upload, D = Dv ≤ MAX_D by `check`), terms 2·rows float4 (the codes launch, same
    // stream), idx rows·width ints (checked; the kernel reads only entries in [0, i] < N), o
    // rows·Dv and lse rows floats (checked); one warp per row < B·H·N; (3) buffers synchronise
    // `stream` before they are freed.
    unsafe {
        launch!(func<<<blocks(rows)?, k::sparse_attn::LSH_WARPS * 32, 0, stream>>>(
            p.q.ptr(), p.k.ptr(), p.v.ptr(), ws.terms.ptr(), idx.ptr(), bh, n, dim, dv, kk, sf,
            scale, ws.o.ptr(), ws.lse.ptr()
        ))
    }
    .map_err(|e| err("launching sparse_attn_indexed_fwd", e))
}
