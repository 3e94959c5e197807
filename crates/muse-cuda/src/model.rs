//! The language model on the GPU: launchers of `../kernels/model.cu` (this file; the windowed
//! attention's are in `model_attn.rs`) and the
//! device-resident forward ([`forward::CudaModel`], `model/forward.rs`). The GEMMs run through
//! [`crate::gemm`]; BK-Core through [`crate::bk_core`].

mod backward;
pub mod forward;
pub mod train;

use cust::launch;
use cust::memory::DevicePointer;
use muse_reference::Result;

use crate::device::{err, k, Buf, Gpu, View};
use crate::lazy::LazyModule;

pub(crate) static MODULE: LazyModule = LazyModule::new(k::model::CUBIN, "model");

const THREADS: u32 = k::model::THREADS;
const WARPS: u32 = k::model::WARPS;

fn blocks(n: usize) -> u32 {
    n.div_ceil(THREADS as usize) as u32
}

fn row_blocks(rows: usize) -> u32 {
    rows.div_ceil(WARPS as usize) as u32
}

/// The HTT shapes a launch needs: (r, d1, d2, v1, v2).
#[derive(Debug, Clone, Copy)]
pub struct HttShape {
    /// Rank.
    pub r: i32,
    /// d1.
    pub d1: i32,
    /// d2.
    pub d2: i32,
    /// v1.
    pub v1: i32,
    /// v2.
    pub v2: i32,
}

/// h = HTT(ids) + pos (or HTT(ids) alone when `pos` is `None`), (rows, dim).
#[allow(clippy::too_many_arguments)]
pub(crate) fn embed(
    gpu: &Gpu,
    ids: &Buf<i32>,
    (core1, core2, cos): (&Buf<f32>, &Buf<f32>, &Buf<f32>),
    pos: Option<&Buf<f32>>,
    h: &Buf<f32>,
    (rows, n, dim): (usize, usize, usize),
    s: HttShape,
) -> Result<()> {
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::model::EMBED)?;
    let stream = &gpu.stream;
    let (rows_i, n_i, dim_i) = (rows as i32, n as i32, dim as i32);
    let pos = pos.map_or(DevicePointer::null(), Buf::ptr);
    // SAFETY: 14 arguments in the C order of `model_embed`; ids holds rows ints < vocab, the
    // cores (v1·r·d1, v2·r·d2), cos (r), pos (null, or n_seq·dim ≥ n·dim) and h (rows·dim) are
    // live buffers of those sizes; every Buf synchronises the stream before it is freed.
    unsafe {
        launch!(f<<<blocks(rows * dim), THREADS, 0, stream>>>(
            ids.ptr(), core1.ptr(), core2.ptr(), cos.ptr(), pos, h.ptr(), rows_i, n_i, dim_i,
            s.r, s.d1, s.d2, s.v1, s.v2
        ))
    }
    .map_err(|e| err("launching model_embed", e))
}

/// The decoder's table (vpad, dim).
pub(crate) fn htt_table(
    gpu: &Gpu,
    (core1, core2, cos): (&Buf<f32>, &Buf<f32>, &Buf<f32>),
    table: &Buf<f32>,
    (vocab, vpad, dim): (usize, usize, usize),
    s: HttShape,
) -> Result<()> {
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::model::HTT_TABLE)?;
    let stream = &gpu.stream;
    let (v, vp, d) = (vocab as i32, vpad as i32, dim as i32);
    // SAFETY: 12 arguments in the C order of `model_htt_table`; table holds vpad·dim floats,
    // the cores and cos as in `embed`.
    unsafe {
        launch!(f<<<blocks(vpad * dim), THREADS, 0, stream>>>(
            core1.ptr(), core2.ptr(), cos.ptr(), table.ptr(), v, vp, d, s.r, s.d1, s.d2, s.v1, s.v2
        ))
    }
    .map_err(|e| err("launching model_htt_table", e))
}

/// y = LayerNorm(x)·g + b over rows of `dim`.
pub(crate) fn layer_norm(
    gpu: &Gpu,
    x: View<'_, f32>,
    (g, b): (View<'_, f32>, View<'_, f32>),
    y: View<'_, f32>,
    rows: usize,
    dim: usize,
) -> Result<()> {
    short(
        "layer_norm",
        &[("x", x.len(), rows * dim), ("y", y.len(), rows * dim)],
    )?;
    short("layer_norm", &[("g", g.len(), dim), ("b", b.len(), dim)])?;
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::model::LAYER_NORM)?;
    let stream = &gpu.stream;
    let (r, d) = (rows as i32, dim as i32);
    // SAFETY: 6 arguments in the C order of `model_layer_norm`; x and y hold rows·dim floats, g
    // and b dim (checked above); one warp per row, WARPS rows per CTA of THREADS.
    unsafe {
        launch!(f<<<row_blocks(rows), THREADS, 0, stream>>>(x.ptr(), g.ptr(), b.ptr(), y.ptr(), r, d))
    }
    .map_err(|e| err("launching model_layer_norm", e))
}

/// Refuses a view shorter than its launch needs, naming the launcher and the argument.
fn short(what: &str, lens: &[(&str, usize, usize)]) -> Result<()> {
    lens.iter()
        .try_for_each(|&(name, have, need)| crate::device::check_len(what, name, have, need))
}

/// BK-Core inputs a (batch, n), b and c (batch, n − 1) in T from the potential v (rows).
#[allow(clippy::too_many_arguments)]
pub(crate) fn bk_prep<T: crate::GpuFloat>(
    gpu: &Gpu,
    v: &Buf<f32>,
    vb: f32,
    h0: [&Buf<f64>; 3],
    (a, b, c): (&Buf<T>, &Buf<T>, &Buf<T>),
    (batch, n): (usize, usize),
    clamp: bool,
) -> Result<()> {
    let m = MODULE.get(gpu)?;
    let name = crate::bk_core::pick::<T>(k::model::BK_PREP_F32, k::model::BK_PREP_F64);
    let f = gpu.function(m, name)?;
    let stream = &gpu.stream;
    let (bi, ni, cl) = (batch as i32, n as i32, i32::from(clamp));
    // SAFETY: 11 arguments in the C order of `model_bk_prep_<T>` (T matching the symbol `pick`
    // chose); v holds batch·n floats, the H0 buffers n_seq ≥ n doubles (n_seq − 1 ≥ n − 1 for the
    // off-diagonals), a batch·n and b, c batch·(n − 1) elements of T (at least 1).
    unsafe {
        launch!(f<<<blocks(batch * n), THREADS, 0, stream>>>(
            v.ptr(), vb, h0[0].ptr(), h0[1].ptr(), h0[2].ptr(), a.ptr(), b.ptr(), c.ptr(), bi, ni, cl
        ))
    }
    .map_err(|e| err(&format!("launching {name}"), e))
}

/// gate = σ(gs·|Im G|) from G (2·rows, interleaved).
pub(crate) fn gate<T: crate::GpuFloat>(
    gpu: &Gpu,
    g: &Buf<T>,
    gs: f32,
    out: &Buf<f32>,
    rows: usize,
) -> Result<()> {
    let m = MODULE.get(gpu)?;
    let name = crate::bk_core::pick::<T>(k::model::GATE_F32, k::model::GATE_F64);
    let f = gpu.function(m, name)?;
    let stream = &gpu.stream;
    let r = rows as i32;
    // SAFETY: 4 arguments in the C order of `model_gate_<T>`; g holds 2·rows elements of T, out
    // rows floats.
    unsafe { launch!(f<<<blocks(rows), THREADS, 0, stream>>>(g.ptr(), gs, out.ptr(), r)) }
        .map_err(|e| err(&format!("launching {name}"), e))
}

/// The AR-SSM's depthwise conv: t (rows, dim) from x.
pub(crate) fn ssm_conv(
    gpu: &Gpu,
    x: &Buf<f32>,
    taps: &Buf<f32>,
    t: &Buf<f32>,
    (batch, n, dim): (usize, usize, usize),
    causal: bool,
) -> Result<()> {
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::model::SSM_CONV)?;
    let stream = &gpu.stream;
    let (b, ni, d, c) = (batch as i32, n as i32, dim as i32, i32::from(causal));
    // SAFETY: 7 arguments in the C order of `model_ssm_conv`; x and t hold batch·n·dim floats,
    // taps dim·3.
    unsafe {
        launch!(f<<<blocks(batch * n * dim), THREADS, 0, stream>>>(x.ptr(), taps.ptr(), t.ptr(), b, ni, d, c))
    }
    .map_err(|e| err("launching model_ssm_conv", e))
}

/// The activation of [`bias_act`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Act {
    None = 0,
    Relu = 1,
    Sigmoid = 2,
}

/// y = act(y + bias) (+ res), y (rows, cols).
pub(crate) fn bias_act(
    gpu: &Gpu,
    y: View<'_, f32>,
    bias: Option<View<'_, f32>>,
    res: Option<View<'_, f32>>,
    (rows, cols): (usize, usize),
    act: Act,
) -> Result<()> {
    let n = rows * cols;
    short("bias_act", &[("y", y.len(), n)])?;
    if let Some(b) = &bias {
        short("bias_act", &[("bias", b.len(), cols)])?;
    }
    if let Some(r) = &res {
        short("bias_act", &[("res", r.len(), n)])?;
    }
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::model::BIAS_ACT)?;
    let stream = &gpu.stream;
    let null = DevicePointer::<f32>::null();
    let (bp, rp) = (
        bias.map_or(null, |b| b.ptr()),
        res.map_or(null, |r| r.ptr()),
    );
    let (r, c, a) = (rows as i64, cols as i32, act as i32);
    // SAFETY: 6 arguments in the C order of `model_bias_act`; y (and res when non-null) hold
    // rows·cols floats, bias (when non-null) cols (checked above).
    unsafe { launch!(f<<<blocks(n), THREADS, 0, stream>>>(y.ptr(), bp, rp, r, c, a)) }
        .map_err(|e| err("launching model_bias_act", e))
}

/// ug, vg (rows, rank) from uv (rows, 2·rank) and the gates g (rows, rank).
pub(crate) fn ssm_gate_uv(
    gpu: &Gpu,
    uv: &Buf<f32>,
    g: &Buf<f32>,
    (ug, vg): (&Buf<f32>, &Buf<f32>),
    (rows, rank): (usize, usize),
) -> Result<()> {
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::model::SSM_GATE_UV)?;
    let stream = &gpu.stream;
    let (r, k_) = (rows as i64, rank as i32);
    // SAFETY: 6 arguments in the C order of `model_ssm_gate_uv`; uv holds rows·2·rank floats,
    // g, ug and vg rows·rank.
    unsafe {
        launch!(f<<<blocks(rows * rank), THREADS, 0, stream>>>(uv.ptr(), g.ptr(), ug.ptr(), vg.ptr(), r, k_))
    }
    .map_err(|e| err("launching model_ssm_gate_uv", e))
}

/// out = scan(ug)·vg along the sequence; `bs` = 0 for the cumsum, else the pseudo-cumsum block.
pub(crate) fn ssm_scan(
    gpu: &Gpu,
    (ug, vg): (&Buf<f32>, &Buf<f32>),
    out: &Buf<f32>,
    (batch, n, rank): (usize, usize, usize),
    bs: usize,
) -> Result<()> {
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::model::SSM_SCAN)?;
    let stream = &gpu.stream;
    // The cumsum runs one warp per (b, r), the pseudo-cumsum one thread per element.
    let threads = if bs == 0 {
        32 * batch * rank
    } else {
        batch * n * rank
    };
    let (b, ni, r, bsi) = (batch as i32, n as i32, rank as i32, bs as i32);
    // SAFETY: 7 arguments in the C order of `model_ssm_scan`; ug, vg and out hold batch·n·rank
    // floats; the grid covers one warp per (b, r) (cumsum; THREADS is a multiple of 32, so a warp
    // never straddles two CTAs) or one thread per element (pseudo).
    unsafe {
        launch!(f<<<blocks(threads), THREADS, 0, stream>>>(ug.ptr(), vg.ptr(), out.ptr(), b, ni, r, bsi))
    }
    .map_err(|e| err("launching model_ssm_scan", e))
}

/// y = the bf16 bits of x (round to nearest even), the first `n` elements.
pub(crate) fn to_bf16(gpu: &Gpu, x: View<'_, f32>, y: View<'_, u16>, n: usize) -> Result<()> {
    if x.len() < n || y.len() < n {
        return Err(muse_reference::Error::Backend {
            backend: "cuda",
            message: format!("to_bf16: {n} elements from {} into {}", x.len(), y.len()),
        });
    }
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::model::TO_BF16)?;
    let stream = &gpu.stream;
    let len = n as i64;
    // SAFETY: 3 arguments in the C order of `model_to_bf16`; x and y hold at least n elements
    // (checked above); u16 matches the kernel's unsigned short.
    unsafe { launch!(f<<<blocks(n), THREADS, 0, stream>>>(x.ptr(), y.ptr(), len)) }
        .map_err(|e| err("launching model_to_bf16", e))
}

/// y = the fp16 bits of x (n elements; overflow to ±inf).
pub(crate) fn to_fp16(gpu: &Gpu, x: View<'_, f32>, y: View<'_, u16>, n: usize) -> Result<()> {
    if x.len() < n || y.len() < n {
        return Err(muse_reference::Error::Backend {
            backend: "cuda",
            message: format!("to_fp16: {n} elements from {} into {}", x.len(), y.len()),
        });
    }
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::model::TO_FP16)?;
    let stream = &gpu.stream;
    let len = n as i64;
    // SAFETY: 3 arguments in the C order of `model_to_fp16`; x and y hold at least n elements
    // (checked above); u16 matches the kernel's unsigned short.
    unsafe { launch!(f<<<blocks(n), THREADS, 0, stream>>>(x.ptr(), y.ptr(), len)) }
        .map_err(|e| err("launching model_to_fp16", e))
}

/// The 16-bit copy of x in `fmt`.
pub(crate) fn to_half(
    gpu: &Gpu,
    fmt: crate::gemm::HalfFormat,
    x: View<'_, f32>,
    y: View<'_, u16>,
    n: usize,
) -> Result<()> {
    match fmt {
        crate::gemm::HalfFormat::Bf16 => to_bf16(gpu, x, y, n),
        crate::gemm::HalfFormat::Fp16 => to_fp16(gpu, x, y, n),
    }
}

/// h += LN(gate·local + (1 − gate)·global)·g + b, rows of `dim`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mix_ln_res(
    gpu: &Gpu,
    (local, global): (&Buf<f32>, &Buf<f32>),
    gate: &Buf<f32>,
    (g, b): (&Buf<f32>, &Buf<f32>),
    h: &Buf<f32>,
    rows: usize,
    dim: usize,
) -> Result<()> {
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::model::MIX_LN_RES)?;
    let stream = &gpu.stream;
    let (r, d) = (rows as i32, dim as i32);
    // SAFETY: 8 arguments in the C order of `model_mix_ln_res`; local, global and h hold rows·dim
    // floats, gate rows, g and b dim; one warp per row.
    unsafe {
        launch!(f<<<row_blocks(rows), THREADS, 0, stream>>>(
            local.ptr(), global.ptr(), gate.ptr(), g.ptr(), b.ptr(), h.ptr(), r, d
        ))
    }
    .map_err(|e| err("launching model_mix_ln_res", e))
}
