//! Fused LayerNorm + hyperbolic projection on the GPU, backward: launchers (kernels:
//! `../kernels/hyp_ln_bwd.cu`). Two launches: the row kernel (dx, and per-CTA partials of dγ,
//! dβ_ln and dc), then a fixed-order reduction of the partials. No atomics: deterministic.

use cust::launch;
use muse_reference::hyp_ln::{HypLnArgs, HypLnGrad};
use muse_reference::{Dtype, Result};
use ndarray::{Array1, ArrayView2};

use crate::device::{err, k, Buf, Gpu, GpuFloat};
use crate::hyp_ln::{rounded, to_array2, Plan, Problem};
use crate::lazy::LazyModule;

static MODULE: LazyModule = LazyModule::new(k::hyp_ln_bwd::CUBIN, "hyp_ln_bwd");

/// The backward pass's upstream gradient, partials and outputs.
pub struct BackwardWs<T: GpuFloat> {
    /// The plan (shared with the forward pass).
    pub plan: Plan,
    /// CTAs of the row kernel, = partial rows.
    pub parts: u32,
    /// Upstream ∂L/∂out, R·D.
    pub g: Buf<T>,
    /// ∂L/∂x, R·D.
    pub dx: Buf<T>,
    dgamma_part: Buf<T>,
    dbeta_part: Buf<T>,
    dc_part: Buf<f64>,
    /// ∂L/∂γ, D.
    pub dgamma: Buf<T>,
    /// ∂L/∂β_ln, D.
    pub dbeta: Buf<T>,
    /// ∂L/∂c, one double.
    pub dc: Buf<f64>,
}

impl<T: GpuFloat> BackwardWs<T> {
    /// Allocates the workspace for `p` and uploads the upstream gradient (R·D values of `T`).
    pub fn new(gpu: &'static Gpu, p: &Problem<T>, g: &[T]) -> Result<Self> {
        let plan = Plan::new::<T>(p.rows, p.dim)?;
        let per = if plan.cap.is_some() {
            u64::from(k::hyp_ln::WARPS)
        } else {
            1
        };
        let parts = plan
            .rows
            .div_ceil(per)
            .clamp(1, u64::from(k::hyp_ln_bwd::MAX_PARTS)) as u32;
        let n = p.rows * p.dim;
        let slots = parts as usize * p.dim;
        Ok(Self {
            plan,
            parts,
            g: gpu.upload(g)?,
            dx: gpu.alloc(n)?,
            dgamma_part: gpu.alloc(slots)?,
            dbeta_part: gpu.alloc(slots)?,
            dc_part: gpu.alloc(parts as usize)?,
            dgamma: gpu.alloc(p.dim)?,
            dbeta: gpu.alloc(p.dim)?,
            dc: gpu.alloc(1)?,
        })
    }
}

fn backward_name<T: GpuFloat>(cap: Option<u32>) -> &'static str {
    use k::hyp_ln_bwd as m;
    let f32 = T::SUFFIX == "f32";
    match (cap, f32) {
        (Some(1), true) => m::BACKWARD_C1_F32,
        (Some(2), true) => m::BACKWARD_C2_F32,
        (Some(4), true) => m::BACKWARD_C4_F32,
        (Some(8), true) => m::BACKWARD_C8_F32,
        (Some(16), true) => m::BACKWARD_C16_F32,
        (Some(32), true) => m::BACKWARD_C32_F32,
        (Some(1), false) => m::BACKWARD_C1_F64,
        (Some(2), false) => m::BACKWARD_C2_F64,
        (Some(4), false) => m::BACKWARD_C4_F64,
        (Some(8), false) => m::BACKWARD_C8_F64,
        (Some(16), false) => m::BACKWARD_C16_F64,
        (_, true) => m::BACKWARD_ROWS_F32,
        (_, false) => m::BACKWARD_ROWS_F64,
    }
}

/// Queues the backward pass (two launches, no host wait).
pub fn backward<T: GpuFloat>(gpu: &Gpu, p: &Problem<T>, ws: &mut BackwardWs<T>) -> Result<()> {
    launch_rows(gpu, p, ws)?;
    launch_reduce(gpu, ws)
}

/// C: `hyp_ln_bwd_backward_<c CAP | rows>_<T>(const T* x, const T* gamma, const T* beta,
/// const T* g, T* dx, T* dgamma_part, T* dbeta_part, double* dc_part, long long rows, int dim,
/// int vec, T eps, double c, double s, int mode)`.
fn launch_rows<T: GpuFloat>(gpu: &Gpu, p: &Problem<T>, ws: &BackwardWs<T>) -> Result<()> {
    let name = backward_name::<T>(ws.plan.cap);
    let func = gpu.function(MODULE.get(gpu)?, name)?;
    let stream = &gpu.stream;
    let (rows, dim, vec) = (
        ws.plan.rows as i64,
        ws.plan.dim as i32,
        i32::from(ws.plan.vec),
    );
    let (eps, c, s, mode) = (T::of(p.eps), p.c, p.c.sqrt(), p.mode_i32());
    // SAFETY: (1) fifteen arguments in C order: seven pointers to T and one to f64 = double,
    // i64 = long long, i32 = int, i32, T, f64, f64, i32, for the symbol of T; (2) x, g, dx hold
    // R·D elements, gamma and beta D, the partials `parts`·D and `parts` with
    // `parts` = the grid (BackwardWs::new), `vec` only when D is a multiple of the vector width,
    // D ≤ 32·CAP for the warp kernels (Plan::new); (3) buffers synchronise `stream` before they
    // are freed.
    unsafe {
        launch!(func<<<ws.parts, k::hyp_ln::THREADS, 0, stream>>>(
            p.x.ptr(), p.gamma.ptr(), p.beta.ptr(), ws.g.ptr(), ws.dx.ptr(), ws.dgamma_part.ptr(),
            ws.dbeta_part.ptr(), ws.dc_part.ptr(), rows, dim, vec, eps, c, s, mode
        ))
    }
    .map_err(|e| err(&format!("launching {name}"), e))
}

/// C: `hyp_ln_bwd_reduce_<T>(const T* dgamma_part, const T* dbeta_part, const double* dc_part,
/// int parts, int dim, T* dgamma, T* dbeta, double* dc)`.
fn launch_reduce<T: GpuFloat>(gpu: &Gpu, ws: &BackwardWs<T>) -> Result<()> {
    let name = if T::SUFFIX == "f32" {
        k::hyp_ln_bwd::REDUCE_F32
    } else {
        k::hyp_ln_bwd::REDUCE_F64
    };
    let func = gpu.function(MODULE.get(gpu)?, name)?;
    let stream = &gpu.stream;
    let threads = k::hyp_ln_bwd::REDUCE_THREADS;
    let grid = ws.plan.dim.div_ceil(threads).max(1);
    let (parts, dim) = (ws.parts as i32, ws.plan.dim as i32);
    // SAFETY: (1) eight arguments in C order: two pointers to T, one to double, i32 = int, i32,
    // two pointers to T, one to double; (2) the partials hold `parts`·D and `parts` elements, the
    // outputs D, D and 1 (BackwardWs::new); the grid covers D columns; (3) buffers synchronise
    // `stream` before they are freed.
    unsafe {
        launch!(func<<<grid, threads, 0, stream>>>(
            ws.dgamma_part.ptr(), ws.dbeta_part.ptr(), ws.dc_part.ptr(), parts, dim,
            ws.dgamma.ptr(), ws.dbeta.ptr(), ws.dc.ptr()
        ))
    }
    .map_err(|e| err(&format!("launching {name}"), e))
}

pub(crate) fn backward_host<T: GpuFloat>(
    gpu: &'static Gpu,
    args: &HypLnArgs<'_>,
    g: ArrayView2<'_, f64>,
    dtype: Dtype,
) -> Result<HypLnGrad> {
    let p = Problem::<T>::upload(gpu, args, dtype)?;
    let mut ws = BackwardWs::new(gpu, &p, &rounded::<T>(g.iter(), dtype))?;
    ws.dx.poison()?;
    ws.dgamma.poison()?;
    ws.dbeta.poison()?;
    ws.dc.poison()?;
    backward(gpu, &p, &mut ws)?;
    gpu.sync("hyp_ln backward")?;
    let vec1 = |b: &Buf<T>| -> Result<Array1<f64>> {
        Ok(b.to_vec()?.iter().map(|v| v.to_f64_exact()).collect())
    };
    Ok(HypLnGrad {
        dx: to_array2(&ws.dx, p.rows, p.dim)?,
        dgamma: vec1(&ws.dgamma)?,
        dbeta_ln: vec1(&ws.dbeta)?,
        dc: ws.dc.to_vec()?[0],
    })
}
