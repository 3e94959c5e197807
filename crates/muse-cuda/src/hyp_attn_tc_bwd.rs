//! Hyperbolic attention backward on the tensor cores (bf16 inputs, D = Dv ∈ {64, 128}, exact
//! form): the launchers of `../kernels/hyp_attn_tc_bwd.cu`. Recompute from q, k, v, o and lse;
//! deterministic (a query-major and a key-major kernel, per-CTA partials of dL/ds and dL/dβ summed
//! here in a fixed order); no N×M buffer.

use cust::launch;
use cust::memory::DevicePointer;
use muse_reference::hyp_attn::{HypAttnArgs, HypAttnGrad};
use muse_reference::Result;
use ndarray::ArrayView4;

use crate::device::{err, k, Buf, Gpu};
use crate::hyp_attn::{grid_y, lengths_ptr, mask_args, to_array4};
use crate::hyp_attn_tc::{bf16_bits, forward, ForwardWs, Problem};
use crate::poincare::as_i32;

/// The backward's upstream gradient (bf16), row terms, Δ, outputs (f32) and scalar partials.
pub struct BackwardWs {
    d_o: Buf<u16>,
    tq0: Buf<f32>,
    tq1: Buf<f32>,
    tk0: Buf<f32>,
    tk1: Buf<f32>,
    delta: Buf<f32>,
    /// ∂L/∂q, (B·H·N, D).
    pub dq: Buf<f32>,
    /// ∂L/∂k, (B·H·M, D).
    pub dk: Buf<f32>,
    /// ∂L/∂v, (B·H·M, D).
    pub dv: Buf<f32>,
    part_ds: Buf<f32>,
    part_db: Buf<f32>,
}

fn blocks(rows: usize) -> u32 {
    (rows as u32).div_ceil(k::hyp_attn_tc_bwd::BLOCK)
}

impl BackwardWs {
    /// Allocates the workspace of `p` and uploads ∂L/∂o rounded to bf16.
    pub fn new(gpu: &'static Gpu, p: &Problem, d_o: ArrayView4<'_, f64>) -> Result<Self> {
        let d = p.dims;
        let (rq, rk) = (d.bh() * d.n, d.bh() * d.m);
        let slots = blocks(d.n) as usize * d.bh();
        Ok(Self {
            d_o: gpu.upload(&bf16_bits(d_o))?,
            tq0: gpu.alloc(rq * 4)?,
            tq1: gpu.alloc(rq * 4)?,
            tk0: gpu.alloc(rk * 4)?,
            tk1: gpu.alloc(rk * 4)?,
            delta: gpu.alloc(rq)?,
            dq: gpu.alloc(rq * d.d)?,
            dk: gpu.alloc(rk * d.d)?,
            dv: gpu.alloc(rk * d.d)?,
            part_ds: gpu.alloc(slots)?,
            part_db: gpu.alloc(slots)?,
        })
    }
}

/// C: `hyp_attn_tc_bwd_prep(const bf16* x, const float* o, const bf16* d_o, float4* t0,
/// float4* t1, float* delta, int rows, int dim, float s, int is_q)`.
#[allow(clippy::too_many_arguments)]
fn launch_prep(
    gpu: &Gpu,
    x: &Buf<u16>,
    o: DevicePointer<f32>,
    d_o: DevicePointer<u16>,
    t0: &Buf<f32>,
    t1: &Buf<f32>,
    delta: DevicePointer<f32>,
    rows: usize,
    dim: usize,
    s: f32,
) -> Result<()> {
    let name = k::hyp_attn_tc_bwd::PREP;
    let func = gpu.function(&gpu.hyp_attn_tc_bwd, name)?;
    let stream = &gpu.stream;
    let (r, d) = (as_i32("rows", rows)?, as_i32("D", dim)?);
    let is_q = i32::from(!o.is_null());
    let warps = k::hyp_attn_tc_bwd::PREP_WARPS;
    let grid = (rows as u32).div_ceil(warps).max(1);
    // SAFETY: (1) ten arguments in C order (u16* as bf16*, float*, bf16*, two float4* as f32
    // buffers of 4 per row, float*, int, int, float, int); (2) x holds rows·D values, t0/t1 rows·4
    // floats, and for queries (is_q = 1) o, d_o hold rows·D and delta rows values; for keys o, d_o
    // and delta are null and never read; (3) buffers synchronise the stream before freeing.
    unsafe {
        launch!(func<<<grid, warps * 32, 0, stream>>>(
            x.ptr(), o, d_o, t0.ptr(), t1.ptr(), delta, r, d, s, is_q
        ))
    }
    .map_err(|e| err(&format!("launching {name}"), e))
}

/// Queues the backward (two pre-passes, the dq and the dk/dv kernels) after [`forward`] into
/// `fws`. No host wait.
pub fn backward(gpu: &Gpu, p: &Problem, fws: &ForwardWs, ws: &BackwardWs) -> Result<()> {
    let d = p.dims;
    let s = p.c.sqrt() as f32;
    launch_prep(
        gpu,
        &p.q,
        fws.o.ptr(),
        ws.d_o.ptr(),
        &ws.tq0,
        &ws.tq1,
        ws.delta.ptr(),
        d.bh() * d.n,
        d.d,
        s,
    )?;
    let null = DevicePointer::null();
    launch_prep(
        gpu,
        &p.k,
        null,
        DevicePointer::null(),
        &ws.tk0,
        &ws.tk1,
        null,
        d.bh() * d.m,
        d.d,
        s,
    )?;
    let (heads, n, m) = (as_i32("H", d.heads)?, as_i32("N", d.n)?, as_i32("M", d.m)?);
    let (mask, window) = mask_args(p.mask);
    let beta = p.beta as f32;
    let lengths = lengths_ptr(&p.lengths);
    let stream = &gpu.stream;
    let threads = k::hyp_attn_tc_bwd::THREADS;
    let (dq_name, dkdv_name) = if d.d == 64 {
        (k::hyp_attn_tc_bwd::DQ_D64, k::hyp_attn_tc_bwd::DKDV_D64)
    } else {
        (k::hyp_attn_tc_bwd::DQ_D128, k::hyp_attn_tc_bwd::DKDV_D128)
    };
    let func = gpu.function(&gpu.hyp_attn_tc_bwd, dq_name)?;
    let grid = (blocks(d.n), grid_y(&d)?, 1);
    // SAFETY: (1) twenty-one arguments in C order: four bf16* (u16), four float4* (f32, 4 per
    // row), two const float*, three int, two float, two int, one const int*, three float*;
    // (2) q, d_o hold B·H·N·D, k, v B·H·M·D values (Problem::upload with D = Dv ∈ {64, 128} as the
    // symbol expects), terms and delta from the pre-passes above, lse B·H·N (the forward's),
    // dq B·H·N·D, part_ds/part_db one slot per CTA of this grid (BackwardWs::new), lengths null or
    // B ints ≤ M; (3) buffers synchronise the stream before they are freed.
    unsafe {
        launch!(func<<<grid, threads, 0, stream>>>(
            p.q.ptr(), p.k.ptr(), p.v.ptr(), ws.d_o.ptr(), ws.tq0.ptr(), ws.tq1.ptr(), ws.tk0.ptr(),
            ws.tk1.ptr(), fws.lse.ptr(), ws.delta.ptr(), heads, n, m, s, beta, mask, window, lengths,
            ws.dq.ptr(), ws.part_ds.ptr(), ws.part_db.ptr()
        ))
    }
    .map_err(|e| err(&format!("launching {dq_name}"), e))?;
    let func = gpu.function(&gpu.hyp_attn_tc_bwd, dkdv_name)?;
    let grid = (blocks(d.m), grid_y(&d)?, 1);
    // SAFETY: (1) twenty arguments: the eighteen of the dq kernel, then dk and dv (float*); (2) dk
    // and dv hold B·H·M·D floats (BackwardWs::new), the rest as above; (3) as above.
    unsafe {
        launch!(func<<<grid, threads, 0, stream>>>(
            p.q.ptr(), p.k.ptr(), p.v.ptr(), ws.d_o.ptr(), ws.tq0.ptr(), ws.tq1.ptr(), ws.tk0.ptr(),
            ws.tk1.ptr(), fws.lse.ptr(), ws.delta.ptr(), heads, n, m, s, beta, mask, window, lengths,
            ws.dk.ptr(), ws.dv.ptr()
        ))
    }
    .map_err(|e| err(&format!("launching {dkdv_name}"), e))
}

/// The bf16 gradient through the tensor cores (forward recomputed), widened to f64.
pub(crate) fn grad_host(
    gpu: &'static Gpu,
    args: &HypAttnArgs<'_>,
    d_o: ArrayView4<'_, f64>,
) -> Result<HypAttnGrad> {
    let p = Problem::upload(gpu, args)?;
    let fws = ForwardWs::new(gpu, &p)?;
    forward(gpu, &p, &fws)?;
    let mut ws = BackwardWs::new(gpu, &p, d_o)?;
    for b in [&mut ws.dq, &mut ws.dk, &mut ws.dv] {
        b.poison()?;
    }
    backward(gpu, &p, &fws, &ws)?;
    let d = p.dims;
    let ds: f64 = ws.part_ds.to_vec()?.into_iter().map(f64::from).sum();
    let dbeta: f64 = ws.part_db.to_vec()?.into_iter().map(f64::from).sum();
    Ok(HypAttnGrad {
        dq: to_array4(&ws.dq, (d.batch, d.heads, d.n, d.d))?,
        dk: to_array4(&ws.dk, (d.batch, d.heads, d.m, d.d))?,
        dv: to_array4(&ws.dv, (d.batch, d.heads, d.m, d.dv))?,
        dc: ds / (2.0 * p.c.sqrt()),
        dbeta,
    })
}
