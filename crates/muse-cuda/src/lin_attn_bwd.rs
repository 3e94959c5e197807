//! Tangent-space linear attention on the GPU, backward: launchers (kernels:
//! `../kernels/lin_attn_bwd.cu` for G, `../kernels/lin_attn.cu` for the products). The forward
//! pass again, G = \[dO/m, −⟨dO, o⟩/m·𝟙(den > eps)\], then dq = φ′(q)∘P(G, v′, φk),
//! dk = φ′(k)∘Pᵀ(v′, G, φq) and dv = Pᵀ(φk, φq, G\[:, :dv\]).

use cust::launch;
use muse_reference::lin_attn::LinAttnArgs;
use muse_reference::lin_attn::LinAttnGrad;
use muse_reference::{Dtype, Result};
use ndarray::ArrayView4;

use crate::device::{err, k, Buf, Gpu, GpuFloat};
use crate::hyp_ln::rounded;
use crate::lazy::LazyModule;
use crate::lin_attn::{forward, pick, product, to_array4, too_big, ForwardWs, Operand, Problem};

static MODULE: LazyModule = LazyModule::new(k::lin_attn_bwd::CUBIN, "lin_attn_bwd");

/// The backward pass's upstream gradient, G and outputs.
pub struct BackwardWs<T: GpuFloat> {
    /// Upstream dL/do, (B, H, N, dv).
    pub d_o: Buf<T>,
    g: Buf<T>,
    /// dL/dq, (B, H, N, d).
    pub dq: Buf<T>,
    /// dL/dk, (B, H, N, d).
    pub dk: Buf<T>,
    /// dL/dv, (B, H, N, dv).
    pub dv: Buf<T>,
}

impl<T: GpuFloat> BackwardWs<T> {
    /// Allocates the workspace for `p` and uploads the upstream gradient (B·H·N·dv values).
    pub fn new(gpu: &'static Gpu, p: &Problem<T>, d_o: &[T]) -> Result<Self> {
        let rows = p.heads * p.n;
        Ok(Self {
            d_o: gpu.upload(d_o)?,
            g: gpu.alloc(rows * (p.dv + 1))?,
            dq: gpu.alloc(rows * p.d)?,
            dk: gpu.alloc(rows * p.d)?,
            dv: gpu.alloc(rows * p.dv)?,
        })
    }
}

/// Queues the backward pass: the forward pass again (into `fws`), G, then dq, dk and dv
/// (13 launches, no host wait).
pub fn backward<T: GpuFloat>(
    gpu: &Gpu,
    p: &Problem<T>,
    fws: &mut ForwardWs<T>,
    bws: &mut BackwardWs<T>,
) -> Result<()> {
    forward(gpu, p, fws)?;
    grad_prep(gpu, p, fws, bws)?;
    let (qp, kp, vp) = (
        Operand::plain(&p.q, p.d).phi(),
        Operand::plain(&p.k, p.d).phi(),
        Operand::plain(&p.v, p.dv).aug(),
    );
    let g_all = Operand::plain(&bws.g, p.dv + 1);
    let g_num = Operand {
        width: p.dv as i32,
        ..g_all
    };
    let (d, dv) = (p.d as i32, p.dv as i32);
    let tdir = p.dir.transposed();
    let (q_mul, k_mul) = (Some((p.q.ptr(), d)), Some((p.k.ptr(), d)));
    product(
        gpu,
        p,
        &fws.state,
        [g_all, vp, kp],
        p.dir,
        (bws.dq.ptr(), d),
        q_mul,
        None,
    )?;
    product(
        gpu,
        p,
        &fws.state,
        [vp, g_all, qp],
        tdir,
        (bws.dk.ptr(), d),
        k_mul,
        None,
    )?;
    product(
        gpu,
        p,
        &fws.state,
        [kp, qp, g_num],
        tdir,
        (bws.dv.ptr(), dv),
        None,
        None,
    )
}

/// C: `lin_attn_bwd_grad_prep_<T>(const T* d_o, const T* o, const T* den, T* g, long long rows,
/// int dv, T eps)`, one warp per row.
fn grad_prep<T: GpuFloat>(
    gpu: &Gpu,
    p: &Problem<T>,
    fws: &ForwardWs<T>,
    bws: &BackwardWs<T>,
) -> Result<()> {
    let name = pick::<T>(
        k::lin_attn_bwd::GRAD_PREP_F32,
        k::lin_attn_bwd::GRAD_PREP_F64,
    );
    let func = gpu.function(MODULE.get(gpu)?, name)?;
    let stream = &gpu.stream;
    let rows = (p.heads * p.n) as u64;
    let grid = u32::try_from(rows.div_ceil(u64::from(k::lin_attn_bwd::WARPS)))
        .map_err(|_| too_big(format!("{rows} rows exceed the grid")))?;
    let (rows, dv, eps) = (rows as i64, p.dv as i32, T::of(p.eps));
    // SAFETY: (1) seven arguments in C order: four pointers to T, i64 = long long, i32 = int, T;
    // (2) d_o and o hold rows·dv values, den rows, g rows·(dv + 1) (ForwardWs::new,
    // BackwardWs::new), one warp per row within `rows`; (3) buffers synchronise `stream` before
    // they are freed.
    unsafe {
        launch!(func<<<grid, k::lin_attn_bwd::THREADS, 0, stream>>>(
            bws.d_o.ptr(), fws.o.ptr(), fws.den.ptr(), bws.g.ptr(), rows, dv, eps
        ))
    }
    .map_err(|e| err(&format!("launching {name}"), e))
}

pub(crate) fn backward_host<T: GpuFloat>(
    gpu: &'static Gpu,
    args: &LinAttnArgs<'_>,
    d_o: ArrayView4<'_, f64>,
    dtype: Dtype,
) -> Result<LinAttnGrad> {
    let p = Problem::<T>::upload(gpu, args, dtype)?;
    let mut fws = ForwardWs::new(gpu, &p)?;
    let mut bws = BackwardWs::new(gpu, &p, &rounded::<T>(d_o.iter(), dtype))?;
    for b in [&mut bws.dq, &mut bws.dk, &mut bws.dv] {
        b.poison()?;
    }
    backward(gpu, &p, &mut fws, &mut bws)?;
    gpu.sync("lin_attn backward")?;
    let g = LinAttnGrad {
        dq: to_array4(&bws.dq, args.q().dim())?,
        dk: to_array4(&bws.dk, args.k().dim())?,
        dv: to_array4(&bws.dv, args.v().dim())?,
    };
    g.check(dtype)?;
    Ok(g)
}
