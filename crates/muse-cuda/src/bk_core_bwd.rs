//! BK-Core exact gradient on the GPU: launchers (kernels: `../kernels/bk_core_bwd.cu`).
//!
//! A row of up to one chunk is one launch; longer rows take five: Möbius chunk aggregates and
//! seeds (shared with the forward pass), affine chunk aggregates, affine seeds, then the
//! gradient kernel with all seeds.

use cust::launch;
use cust::memory::DevicePointer;
use muse_reference::bk_core::{BkCoreArgs, BkCoreGrad};
use muse_reference::Result;
use ndarray::{Array2, ArrayView2};
use num_complex::Complex64;

use crate::bk_core::{pick, Plan, Problem, Seeds};
use crate::device::{err, k, Buf, Gpu, GpuFloat};

/// The backward pass's upstream gradient, workspace and outputs.
pub struct BackwardWs<T: GpuFloat> {
    /// The plan.
    pub plan: Plan,
    /// Upstream gradient ∂L/∂Re G + i·∂L/∂Im G, 2·B·N values interleaved.
    pub up: Buf<T>,
    seeds: Option<Seeds<T>>,
    affine: Option<AffineSeeds<T>>,
    /// dL/da, B·N.
    pub grad_a: Buf<T>,
    /// dL/db, B·(N−1).
    pub grad_b: Buf<T>,
    /// dL/dc, B·(N−1).
    pub grad_c: Buf<T>,
    /// Per-CTA partial sums of Q (dL/dz = conj of their total), 2 per (row, chunk).
    pub dz_part: Buf<T>,
}

struct AffineSeeds<T: GpuFloat> {
    agg_d: Buf<T>,
    agg_e: Buf<T>,
    seed_d: Buf<T>,
    seed_e: Buf<T>,
}

impl<T: GpuFloat> BackwardWs<T> {
    /// Allocates the workspace for `p` and uploads the upstream gradient (B·N complex values).
    pub fn new(gpu: &'static Gpu, p: &Problem<T>, up: &[T]) -> Result<Self> {
        let plan = Plan::new(p.batch, p.n, T::BWD_ELEMS, T::BWD_THREADS)?;
        let slots = plan.slots();
        let affine = if plan.chunks > 1 {
            Some(AffineSeeds {
                agg_d: gpu.alloc(slots * 4)?,
                agg_e: gpu.alloc(slots * 4)?,
                seed_d: gpu.alloc(slots * 2)?,
                seed_e: gpu.alloc(slots * 2)?,
            })
        } else {
            None
        };
        let off = p.batch * (p.n - 1);
        Ok(Self {
            plan,
            up: gpu.upload(up)?,
            seeds: Seeds::new(gpu, &plan)?,
            affine,
            grad_a: gpu.alloc(p.batch * p.n)?,
            grad_b: gpu.alloc(off)?,
            grad_c: gpu.alloc(off)?,
            dz_part: gpu.alloc(slots * 2)?,
        })
    }
}

/// Queues the gradient (1 launch, or 5 for rows longer than one chunk). No host wait.
pub fn backward<T: GpuFloat>(gpu: &Gpu, p: &Problem<T>, ws: &mut BackwardWs<T>) -> Result<()> {
    if let Some(seeds) = &ws.seeds {
        seeds.compute(gpu, p, &ws.plan)?;
    }
    let (seed_f, seed_b) = Seeds::ptrs(&ws.seeds);
    let (seed_d, seed_e) = match &ws.affine {
        Some(a) => {
            bwd_agg(gpu, p, ws, seed_f, seed_b, &a.agg_d, &a.agg_e)?;
            affine_seeds(gpu, &ws.plan, a)?;
            (a.seed_d.ptr(), a.seed_e.ptr())
        }
        None => (DevicePointer::null(), DevicePointer::null()),
    };
    launch_backward(gpu, p, ws, [seed_f, seed_b, seed_d, seed_e])
}

/// C: `bk_core_bwd_backward_<T>(const T* a, const T* b, const T* c, const T* g_up, long long n,
/// int chunk_len, T z_re, T z_im, const T* seed_f, const T* seed_b, const T* seed_d,
/// const T* seed_e, T* grad_a, T* grad_b, T* grad_c, T* dz_part)`.
fn launch_backward<T: GpuFloat>(
    gpu: &Gpu,
    p: &Problem<T>,
    ws: &BackwardWs<T>,
    seeds: [DevicePointer<T>; 4],
) -> Result<()> {
    let name = pick::<T>(k::bk_core_bwd::BACKWARD_F32, k::bk_core_bwd::BACKWARD_F64);
    let func = gpu.function(&gpu.bk_core_bwd, name)?;
    let stream = &gpu.stream;
    let plan = &ws.plan;
    let (z_re, z_im) = p.z();
    let (n, chunk_len) = (plan.n as i64, plan.chunk_len as i32);
    let [seed_f, seed_b, seed_d, seed_e] = seeds;
    // SAFETY: (1) sixteen arguments in C order, i64 = long long, i32 = int, T matching the symbol;
    // (2) a, g_up, grad_a hold B·N (g_up 2·B·N), b, c, grad_b, grad_c B·(N−1), dz_part
    // `slots × 2`, seeds null or `slots × 4` / `slots × 2` (BackwardWs::new) for this plan;
    // (3) buffers synchronise `stream` before they are freed.
    unsafe {
        launch!(func<<<plan.grid(), plan.block(), 0, stream>>>(
            p.a.ptr(), p.b.ptr(), p.c.ptr(), ws.up.ptr(), n, chunk_len, z_re, z_im, seed_f, seed_b,
            seed_d, seed_e, ws.grad_a.ptr(), ws.grad_b.ptr(), ws.grad_c.ptr(), ws.dz_part.ptr()
        ))
    }
    .map_err(|e| err(&format!("launching {name}"), e))
}

/// C: `bk_core_bwd_agg_<T>(const T* a, const T* b, const T* c, const T* g_up, long long n,
/// int chunk_len, T z_re, T z_im, const T* seed_f, const T* seed_b, T* agg_d, T* agg_e)`.
fn bwd_agg<T: GpuFloat>(
    gpu: &Gpu,
    p: &Problem<T>,
    ws: &BackwardWs<T>,
    seed_f: DevicePointer<T>,
    seed_b: DevicePointer<T>,
    agg_d: &Buf<T>,
    agg_e: &Buf<T>,
) -> Result<()> {
    let name = pick::<T>(k::bk_core_bwd::AGG_F32, k::bk_core_bwd::AGG_F64);
    let func = gpu.function(&gpu.bk_core_bwd, name)?;
    let stream = &gpu.stream;
    let plan = &ws.plan;
    let (z_re, z_im) = p.z();
    let (n, chunk_len) = (plan.n as i64, plan.chunk_len as i32);
    // SAFETY: (1) twelve arguments in C order with the widths of `launch_backward`; (2) agg_d
    // and agg_e hold `slots × 4` elements for this plan, other buffers as in `launch_backward`;
    // (3) buffers synchronise `stream` before they are freed.
    unsafe {
        launch!(func<<<plan.grid(), plan.block(), 0, stream>>>(
            p.a.ptr(), p.b.ptr(), p.c.ptr(), ws.up.ptr(), n, chunk_len, z_re, z_im, seed_f, seed_b,
            agg_d.ptr(), agg_e.ptr()
        ))
    }
    .map_err(|e| err(&format!("launching {name}"), e))
}

/// C: `bk_core_bwd_affine_seeds_<T>(const T* agg_d, const T* agg_e, int chunks, T* seed_d,
/// T* seed_e)`, one CTA per row.
fn affine_seeds<T: GpuFloat>(gpu: &Gpu, plan: &Plan, a: &AffineSeeds<T>) -> Result<()> {
    let name = pick::<T>(
        k::bk_core_bwd::AFFINE_SEEDS_F32,
        k::bk_core_bwd::AFFINE_SEEDS_F64,
    );
    let func = gpu.function(&gpu.bk_core_bwd, name)?;
    let stream = &gpu.stream;
    let chunks = plan.chunks as i32;
    // SAFETY: (1) five arguments in C order, i32 = int; (2) aggregates hold `slots × 4`, seeds
    // `slots × 2` elements for this plan, one CTA per row touches only its row's slots;
    // (3) buffers synchronise `stream` before they are freed.
    unsafe {
        launch!(func<<<plan.rows, k::bk_core_bwd::SEED_THREADS, 0, stream>>>(
            a.agg_d.ptr(), a.agg_e.ptr(), chunks, a.seed_d.ptr(), a.seed_e.ptr()
        ))
    }
    .map_err(|e| err(&format!("launching {name}"), e))
}

/// Interleaves a (B, N) complex upstream gradient as `T` values.
pub fn interleave<T: GpuFloat>(g: ArrayView2<'_, Complex64>) -> Vec<T> {
    g.iter().flat_map(|v| [T::of(v.re), T::of(v.im)]).collect()
}

pub(crate) fn backward_host<T: GpuFloat>(
    gpu: &'static Gpu,
    args: &BkCoreArgs<'_>,
    grad_g: ArrayView2<'_, Complex64>,
) -> Result<BkCoreGrad> {
    let p = Problem::<T>::upload(gpu, args)?;
    let mut ws = BackwardWs::new(gpu, &p, &interleave::<T>(grad_g))?;
    for buf in [
        &mut ws.grad_a,
        &mut ws.grad_b,
        &mut ws.grad_c,
        &mut ws.dz_part,
    ] {
        buf.poison()?;
    }
    backward(gpu, &p, &mut ws)?;
    let (n, off) = (p.n, p.n - 1);
    let widen = |v: Vec<T>, cols: usize| -> Array2<f64> {
        Array2::from_shape_fn((p.batch, cols), |(r, i)| v[r * cols + i].to_f64_exact())
    };
    let grad_a = widen(ws.grad_a.to_vec()?, n);
    let (grad_b, grad_c) = if off == 0 {
        (Array2::zeros((p.batch, 0)), Array2::zeros((p.batch, 0)))
    } else {
        (
            widen(ws.grad_b.to_vec()?, off),
            widen(ws.grad_c.to_vec()?, off),
        )
    };
    let parts = ws.dz_part.to_vec()?;
    let q: Complex64 = parts
        .chunks_exact(2)
        .take(ws.plan.slots())
        .map(|c| Complex64::new(c[0].to_f64_exact(), c[1].to_f64_exact()))
        .sum();
    Ok(BkCoreGrad {
        a: grad_a,
        b: grad_b,
        c: grad_c,
        z: q.conj(),
    })
}
