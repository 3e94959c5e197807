//! Launchers of `../kernels/model_bwd.cu`: the VJPs of the model's non-GEMM layers (the schedule
//! that runs them is `model/backward.rs`). Every launcher takes [`View`]s, checks their lengths
//! against the shape it is given, and queues one kernel on the GPU's stream (no host wait).

use cust::launch;
use cust::memory::DevicePointer;
use muse_reference::{Error, Result};

use crate::device::{err, k, Gpu, View};
use crate::lazy::LazyModule;

mod embed;

pub use embed::{embed, htt, pos, TokenRows};

static MODULE: LazyModule = LazyModule::new(k::model_bwd::CUBIN, "model_bwd");

const THREADS: u32 = k::model_bwd::THREADS;
const WARPS: u32 = k::model_bwd::WARPS;

fn blocks(n: usize) -> u32 {
    n.div_ceil(THREADS as usize).max(1) as u32
}

/// Refuses a view shorter than `need` elements, naming it.
fn need(what: &str, v: &View<'_, f32>, need: usize) -> Result<()> {
    crate::device::check_len("model backward", what, v.len(), need)
}

fn null() -> DevicePointer<f32> {
    DevicePointer::null()
}

/// The input of a LayerNorm backward: the normalised rows themselves, or the block's mix
/// gate·local + (1 − gate)·global.
#[derive(Clone, Copy)]
pub enum LnInput<'a> {
    /// x (rows, dim).
    Rows(View<'a, f32>),
    /// (local, global, gate): the mix of the block's two paths.
    Mix(View<'a, f32>, View<'a, f32>, View<'a, f32>),
}

/// Where a LayerNorm backward writes ∂L/∂input.
#[derive(Clone, Copy)]
pub enum LnGrad<'a> {
    /// dx = dm (+ res).
    Rows {
        /// ∂L/∂x (rows, dim).
        dx: View<'a, f32>,
        /// Added to dx (the residual's gradient), or none.
        res: Option<View<'a, f32>>,
    },
    /// dlocal, dglobal (rows, dim) and dgate (rows).
    Mix(View<'a, f32>, View<'a, f32>, View<'a, f32>),
}

/// The VJP of y = LN(input)·g + b for ∂L/∂y `dy` (rows, dim): ∂L/∂input into `out`, and
/// x̂∘dy (rows, dim) into `xhat_dy` (its column sums are ∂L/∂g; those of dy are ∂L/∂b).
#[allow(clippy::too_many_arguments)]
pub fn layer_norm(
    gpu: &Gpu,
    input: LnInput<'_>,
    g: View<'_, f32>,
    dy: View<'_, f32>,
    out: LnGrad<'_>,
    xhat_dy: View<'_, f32>,
    (rows, dim): (usize, usize),
) -> Result<()> {
    let n = rows * dim;
    for (name, v, len) in [("g", &g, dim), ("dy", &dy, n), ("xhat_dy", &xhat_dy, n)] {
        need(name, v, len)?;
    }
    let (x, local, global, gate, mix) = match input {
        LnInput::Rows(x) => {
            need("x", &x, n)?;
            (x.ptr(), null(), null(), null(), 0)
        }
        LnInput::Mix(l, gl, ga) => {
            need("local", &l, n)?;
            need("global", &gl, n)?;
            need("gate", &ga, rows)?;
            (null(), l.ptr(), gl.ptr(), ga.ptr(), 1)
        }
    };
    let (dx, res, dl, dg, dgate) = match out {
        LnGrad::Rows { dx, res } => {
            need("dx", &dx, n)?;
            if let Some(r) = &res {
                need("res", r, n)?;
            }
            (
                dx.ptr(),
                res.map_or(null(), |r| r.ptr()),
                null(),
                null(),
                null(),
            )
        }
        LnGrad::Mix(dl, dg, dgate) => {
            need("dlocal", &dl, n)?;
            need("dglobal", &dg, n)?;
            need("dgate", &dgate, rows)?;
            (null(), null(), dl.ptr(), dg.ptr(), dgate.ptr())
        }
    };
    if (mix == 1) != matches!(out, LnGrad::Mix(..)) {
        return Err(Error::Backend {
            backend: "cuda",
            message: "model backward: a mix input needs a mix gradient and rows need rows".into(),
        });
    }
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::model_bwd::LN)?;
    let stream = &gpu.stream;
    let (r, d) = (rows as i32, dim as i32);
    let grid = (rows as u32).div_ceil(WARPS).max(1);
    // SAFETY: 15 arguments in the C order of `model_bwd_ln`; every non-null pointer was checked
    // above to hold rows·dim (gate and dgate rows, g dim) floats, the null ones are the inputs and
    // outputs the mode does not touch; one warp per row.
    unsafe {
        launch!(f<<<grid, THREADS, 0, stream>>>(
            x, local, global, gate, g.ptr(), dy.ptr(), res, dx, dl, dg, dgate, xhat_dy.ptr(), r, d, mix
        ))
    }
    .map_err(|e| err("launching model_bwd_ln", e))
}

/// The gate's VJP: from G (2·rows interleaved) and ∂L/∂gate (rows), BK-Core's upstream gradient
/// `up` (2·rows) and the per-row terms of ∂L/∂gs (rows).
pub fn gate(
    gpu: &Gpu,
    g: View<'_, f32>,
    dgate: View<'_, f32>,
    gs: f32,
    (up, dgs_row): (View<'_, f32>, View<'_, f32>),
    rows: usize,
) -> Result<()> {
    for (name, v, len) in [
        ("G", &g, 2 * rows),
        ("dgate", &dgate, rows),
        ("up", &up, 2 * rows),
        ("dgs_row", &dgs_row, rows),
    ] {
        need(name, v, len)?;
    }
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::model_bwd::GATE)?;
    let stream = &gpu.stream;
    let r = rows as i32;
    // SAFETY: 6 arguments in the C order of `model_bwd_gate`; lengths checked above.
    unsafe {
        launch!(f<<<blocks(rows), THREADS, 0, stream>>>(
            g.ptr(), dgate.ptr(), gs, up.ptr(), dgs_row.ptr(), r
        ))
    }
    .map_err(|e| err("launching model_bwd_gate", e))
}

/// ∂L/∂(v_proj output) (rows) from BK-Core's ∂L/∂a: zero where the clamp to ±3 is active.
pub fn potential(
    gpu: &Gpu,
    grad_a: View<'_, f32>,
    v: View<'_, f32>,
    vb: f32,
    dpre: View<'_, f32>,
    rows: usize,
) -> Result<()> {
    for (name, b) in [("grad_a", &grad_a), ("v", &v), ("dpre", &dpre)] {
        need(name, b, rows)?;
    }
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::model_bwd::POTENTIAL)?;
    let stream = &gpu.stream;
    let r = rows as i32;
    // SAFETY: 5 arguments in the C order of `model_bwd_potential`; lengths checked above.
    unsafe {
        launch!(f<<<blocks(rows), THREADS, 0, stream>>>(grad_a.ptr(), v.ptr(), vb, dpre.ptr(), r))
    }
    .map_err(|e| err("launching model_bwd_potential", e))
}

/// d ← d·act'(y) for the activation of `crate::model::Act` (1 ReLU, 2 sigmoid), n elements.
pub fn act(gpu: &Gpu, y: View<'_, f32>, d: View<'_, f32>, n: usize, act: i32) -> Result<()> {
    need("y", &y, n)?;
    need("d", &d, n)?;
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::model_bwd::ACT)?;
    let stream = &gpu.stream;
    let len = n as i64;
    // SAFETY: 4 arguments in the C order of `model_bwd_act`; y and d hold n floats.
    unsafe { launch!(f<<<blocks(n), THREADS, 0, stream>>>(y.ptr(), d.ptr(), len, act)) }
        .map_err(|e| err("launching model_bwd_act", e))
}

/// The VJP of ug = u∘g, vg = v∘g: duv (rows, 2·rank) and dg (rows, rank).
#[allow(clippy::too_many_arguments)]
pub fn gate_uv(
    gpu: &Gpu,
    uv: View<'_, f32>,
    g: View<'_, f32>,
    (dug, dvg): (View<'_, f32>, View<'_, f32>),
    (duv, dg): (View<'_, f32>, View<'_, f32>),
    (rows, rank): (usize, usize),
) -> Result<()> {
    let n = rows * rank;
    for (name, v, len) in [
        ("uv", &uv, 2 * n),
        ("g", &g, n),
        ("dug", &dug, n),
        ("dvg", &dvg, n),
        ("duv", &duv, 2 * n),
        ("dg", &dg, n),
    ] {
        need(name, v, len)?;
    }
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::model_bwd::GATE_UV)?;
    let stream = &gpu.stream;
    let (r, k_) = (rows as i64, rank as i32);
    // SAFETY: 8 arguments in the C order of `model_bwd_gate_uv`; lengths checked above.
    unsafe {
        launch!(f<<<blocks(n), THREADS, 0, stream>>>(
            uv.ptr(), g.ptr(), dug.ptr(), dvg.ptr(), duv.ptr(), dg.ptr(), r, k_
        ))
    }
    .map_err(|e| err("launching model_bwd_gate_uv", e))
}

/// The VJP of kv = cumsum(ug)∘vg along the sequence: dug and dvg (batch·n·rank).
#[allow(clippy::too_many_arguments)]
pub fn scan(
    gpu: &Gpu,
    (ug, vg): (View<'_, f32>, View<'_, f32>),
    dkv: View<'_, f32>,
    (dug, dvg): (View<'_, f32>, View<'_, f32>),
    (batch, n, rank): (usize, usize, usize),
) -> Result<()> {
    let len = batch * n * rank;
    for (name, v) in [
        ("ug", &ug),
        ("vg", &vg),
        ("dkv", &dkv),
        ("dug", &dug),
        ("dvg", &dvg),
    ] {
        need(name, v, len)?;
    }
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::model_bwd::SCAN)?;
    let stream = &gpu.stream;
    let (b, ni, r) = (batch as i32, n as i32, rank as i32);
    // SAFETY: 8 arguments in the C order of `model_bwd_scan`; lengths checked above; one warp per
    // (b, r) (THREADS is a multiple of 32, so a warp never straddles two CTAs).
    unsafe {
        launch!(f<<<blocks(32 * batch * rank), THREADS, 0, stream>>>(
            ug.ptr(), vg.ptr(), dkv.ptr(), dug.ptr(), dvg.ptr(), b, ni, r
        ))
    }
    .map_err(|e| err("launching model_bwd_scan", e))
}

/// The depthwise conv's VJP: dx += convᵀ(dt) and the per-row tap terms (rows, 3·dim).
#[allow(clippy::too_many_arguments)]
pub fn conv(
    gpu: &Gpu,
    dt: View<'_, f32>,
    x: View<'_, f32>,
    taps: View<'_, f32>,
    (dx, dtaps_row): (View<'_, f32>, View<'_, f32>),
    (batch, n, dim): (usize, usize, usize),
    causal: bool,
) -> Result<()> {
    let len = batch * n * dim;
    for (name, v, l) in [
        ("dt", &dt, len),
        ("x", &x, len),
        ("taps", &taps, 3 * dim),
        ("dx", &dx, len),
        ("dtaps_row", &dtaps_row, 3 * len),
    ] {
        need(name, v, l)?;
    }
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::model_bwd::CONV)?;
    let stream = &gpu.stream;
    let (b, ni, d, c) = (batch as i32, n as i32, dim as i32, i32::from(causal));
    // SAFETY: 9 arguments in the C order of `model_bwd_conv`; lengths checked above.
    unsafe {
        launch!(f<<<blocks(len), THREADS, 0, stream>>>(
            dt.ptr(), x.ptr(), taps.ptr(), dx.ptr(), dtaps_row.ptr(), b, ni, d, c
        ))
    }
    .map_err(|e| err("launching model_bwd_conv", e))
}

/// Moves heads between the row layout (batch·n, row_stride), columns col_off + h·dh + e, and the
/// head layout (batch, heads, n, dh): `to_heads` copies rows → heads, else heads → rows.
#[allow(clippy::too_many_arguments)]
pub fn head_perm(
    gpu: &Gpu,
    src: View<'_, f32>,
    dst: View<'_, f32>,
    (batch, n, heads, dh): (usize, usize, usize, usize),
    (row_stride, col_off): (usize, usize),
    to_heads: bool,
) -> Result<()> {
    let len = batch * n * heads * dh;
    let rows_len = batch * n * row_stride;
    if col_off + heads * dh > row_stride {
        return Err(Error::Backend {
            backend: "cuda",
            message: format!(
                "head_perm: columns {col_off} + {heads}·{dh} exceed the row stride {row_stride}"
            ),
        });
    }
    let (sl, dl) = if to_heads {
        (rows_len, len)
    } else {
        (len, rows_len)
    };
    need("src", &src, sl)?;
    need("dst", &dst, dl)?;
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::model_bwd::MODEL_HEAD_PERM)?;
    let stream = &gpu.stream;
    let (b, ni, h, d, rs, co, th) = (
        batch as i32,
        n as i32,
        heads as i32,
        dh as i32,
        row_stride as i32,
        col_off as i32,
        i32::from(to_heads),
    );
    // SAFETY: 9 arguments in the C order of `model_head_perm`; src and dst hold the row layout's
    // batch·n·row_stride and the head layout's batch·heads·n·dh floats (checked above, in the
    // direction of the copy), every column index < row_stride.
    unsafe {
        launch!(f<<<blocks(len), THREADS, 0, stream>>>(src.ptr(), dst.ptr(), b, ni, h, d, rs, co, th))
    }
    .map_err(|e| err("launching model_head_perm", e))
}
