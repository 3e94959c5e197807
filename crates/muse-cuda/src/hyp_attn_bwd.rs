//! Hyperbolic attention backward on the GPU: launchers of `../kernels/hyp_attn_bwd.cu`. Recompute
//! from q, k, v, o and lse (design §3.4) with the deterministic schedule: Δ = rowsum(dO∘o), a
//! query-major kernel for dQ with per-CTA partials of dL/ds and dL/dβ (summed here in a fixed
//! order), and a key-major kernel for dK and dV. No N×M buffer, no atomics.

use cust::launch;
use muse_reference::hyp_attn::{Form, HypAttnArgs, HypAttnGrad};
use muse_reference::{Dtype, Error, Result};
use ndarray::ArrayView4;

use crate::bk_core::pick;
use crate::device::{err, k, Buf, Gpu, GpuFloat};
use crate::hyp_attn::{
    flat, forward, grid_y, lengths_ptr, mask_args, to_array4, Dims, ForwardWs, Problem,
};
use crate::poincare::as_i32;

/// The backward's upstream gradient, workspace and outputs.
pub struct BackwardWs<T: GpuFloat> {
    /// ∂L/∂o, (B·H·N, Dv).
    pub d_o: Buf<T>,
    pub(crate) delta: Buf<T>,
    /// ∂L/∂q, (B·H·N, D).
    pub dq: Buf<T>,
    /// ∂L/∂k, (B·H·M, D).
    pub dk: Buf<T>,
    /// ∂L/∂v, (B·H·M, Dv).
    pub dv: Buf<T>,
    pub(crate) part_ds: Buf<T>,
    pub(crate) part_dbeta: Buf<T>,
}

fn dq_grid(d: &Dims) -> Result<(u32, u32, u32)> {
    Ok((
        (d.n as u32).div_ceil(k::hyp_attn_bwd::BM),
        grid_y(d)?,
        (d.d as u32).div_ceil(k::hyp_attn_bwd::VC),
    ))
}

impl<T: GpuFloat> BackwardWs<T> {
    /// Allocates the workspace of `p` and uploads ∂L/∂o (rounded to `dtype`).
    pub fn new(
        gpu: &'static Gpu,
        p: &Problem<T>,
        d_o: ArrayView4<'_, f64>,
        dtype: Dtype,
    ) -> Result<Self> {
        let d = p.dims;
        let (rq, rk) = (d.bh() * d.n, d.bh() * d.m);
        let (gx, gy, _) = dq_grid(&d)?;
        let slots = (gx * gy) as usize;
        Ok(Self {
            d_o: gpu.upload(&flat::<T>(d_o, dtype))?,
            delta: gpu.alloc(rq)?,
            dq: gpu.alloc(rq * d.d)?,
            dk: gpu.alloc(rk * d.d)?,
            dv: gpu.alloc(rk * d.dv)?,
            part_ds: gpu.alloc(slots)?,
            part_dbeta: gpu.alloc(slots)?,
        })
    }
}

/// Queues the backward (three launches) after a forward into `fws`. No host wait.
pub fn backward<T: GpuFloat>(
    gpu: &Gpu,
    p: &Problem<T>,
    fws: &ForwardWs<T>,
    ws: &BackwardWs<T>,
) -> Result<()> {
    if p.form != Form::Exact {
        return Err(Error::Unsupported {
            op: "hyp_attn",
            backend: "cuda",
            what: format!("the backward of the compat form `{}`", p.form.name()),
        });
    }
    let d = p.dims;
    let stream = &gpu.stream;
    let (rows, dv) = (as_i32("rows", d.bh() * d.n)?, as_i32("Dv", d.dv)?);
    let name = pick::<T>(k::hyp_attn_bwd::DELTA_F32, k::hyp_attn_bwd::DELTA_F64);
    let func = gpu.function(&gpu.hyp_attn_bwd, name)?;
    let blocks = (rows as u32).div_ceil(8).max(1);
    // SAFETY: (1) five arguments (T*, T*, T*, int, int) in C order, T matching the symbol; (2) d_o
    // and o hold rows·Dv, delta rows elements; (3) buffers synchronise the stream before freeing.
    unsafe {
        launch!(func<<<blocks, 256, 0, stream>>>(ws.d_o.ptr(), fws.o.ptr(), ws.delta.ptr(), rows, dv))
    }
    .map_err(|e| err(&format!("launching {name}"), e))?;
    let (heads, n, m, dim) = (
        as_i32("H", d.heads)?,
        as_i32("N", d.n)?,
        as_i32("M", d.m)?,
        as_i32("D", d.d)?,
    );
    let (mask, window) = mask_args(p.mask);
    let (s, beta) = (T::of(p.c.sqrt()), T::of(p.beta));
    let lengths = lengths_ptr(&p.lengths);
    let name = pick::<T>(k::hyp_attn_bwd::DQ_F32, k::hyp_attn_bwd::DQ_F64);
    let func = gpu.function(&gpu.hyp_attn_bwd, name)?;
    let grid = dq_grid(&d)?;
    // SAFETY: (1) twenty-one arguments in C order: eight const T*, five int, two T, two int, one
    // const int*, three T*; (2) the rows and terms of ForwardWs (same dims), v B·H·M·Dv, d_o and
    // dq B·H·N·(Dv | D), lse and delta B·H·N, part_ds/part_dbeta one slot per CTA of this grid
    // (BackwardWs::new); lengths null or B ints ≤ M; (3) buffers synchronise before freeing.
    unsafe {
        launch!(func<<<grid, k::hyp_attn_bwd::BM, 0, stream>>>(
            fws.vq.ptr(), fws.tq.ptr(), fws.vk.ptr(), fws.tk.ptr(), p.v.ptr(), ws.d_o.ptr(),
            fws.lse.ptr(), ws.delta.ptr(), heads, n, m, dim, dv, s, beta, mask, window, lengths,
            ws.dq.ptr(), ws.part_ds.ptr(), ws.part_dbeta.ptr()
        ))
    }
    .map_err(|e| err(&format!("launching {name}"), e))?;
    let name = pick::<T>(k::hyp_attn_bwd::DKDV_F32, k::hyp_attn_bwd::DKDV_F64);
    let func = gpu.function(&gpu.hyp_attn_bwd, name)?;
    let vc = k::hyp_attn_bwd::VC;
    let grid = (
        (d.m as u32).div_ceil(k::hyp_attn_bwd::BK),
        grid_y(&d)?,
        (d.d as u32).div_ceil(vc) + (d.dv as u32).div_ceil(vc),
    );
    // SAFETY: (1) twenty arguments in C order: the eighteen shared with the dq kernel, then dk
    // and dv (T*); (2) dk holds B·H·M·D and dv B·H·M·Dv elements (BackwardWs::new), the rest as
    // above; (3) buffers synchronise the stream before they are freed.
    unsafe {
        launch!(func<<<grid, k::hyp_attn_bwd::BK, 0, stream>>>(
            fws.vq.ptr(), fws.tq.ptr(), fws.vk.ptr(), fws.tk.ptr(), p.v.ptr(), ws.d_o.ptr(),
            fws.lse.ptr(), ws.delta.ptr(), heads, n, m, dim, dv, s, beta, mask, window, lengths,
            ws.dk.ptr(), ws.dv.ptr()
        ))
    }
    .map_err(|e| err(&format!("launching {name}"), e))
}

/// dL/dc and dL/dβ: the per-CTA partials summed in f64 in a fixed order.
pub fn scalar_grads<T: GpuFloat>(p: &Problem<T>, ws: &BackwardWs<T>) -> Result<(f64, f64)> {
    let ds: f64 = ws.part_ds.to_vec()?.into_iter().map(T::to_f64_exact).sum();
    let db: f64 = ws
        .part_dbeta
        .to_vec()?
        .into_iter()
        .map(T::to_f64_exact)
        .sum();
    Ok((ds / (2.0 * p.c.sqrt()), db))
}

fn run<T: GpuFloat>(
    gpu: &'static Gpu,
    args: &HypAttnArgs<'_>,
    d_o: ArrayView4<'_, f64>,
    dtype: Dtype,
) -> Result<HypAttnGrad> {
    let p = Problem::<T>::upload(gpu, args, dtype)?;
    let fws = ForwardWs::new(gpu, &p)?;
    forward(gpu, &p, &fws)?;
    let mut ws = BackwardWs::new(gpu, &p, d_o, dtype)?;
    for b in [&mut ws.dq, &mut ws.dk, &mut ws.dv] {
        b.poison()?;
    }
    backward(gpu, &p, &fws, &ws)?;
    let d = p.dims;
    let (dc, dbeta) = scalar_grads(&p, &ws)?;
    Ok(HypAttnGrad {
        dq: to_array4(&ws.dq, (d.batch, d.heads, d.n, d.d))?,
        dk: to_array4(&ws.dk, (d.batch, d.heads, d.m, d.d))?,
        dv: to_array4(&ws.dv, (d.batch, d.heads, d.m, d.dv))?,
        dc,
        dbeta,
    })
}

/// The [`muse_reference::hyp_attn::HypAttn`] gradient on the GPU: f64 kernels for `F64`, f32
/// kernels (on bf16-rounded values for `Bf16`) otherwise.
pub(crate) fn grad_host(
    gpu: &'static Gpu,
    args: &HypAttnArgs<'_>,
    d_o: ArrayView4<'_, f64>,
    dtype: Dtype,
) -> Result<HypAttnGrad> {
    match dtype {
        Dtype::F64 => run::<f64>(gpu, args, d_o, dtype),
        Dtype::F32 | Dtype::Bf16 => run::<f32>(gpu, args, d_o, dtype),
    }
}
