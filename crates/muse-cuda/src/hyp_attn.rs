//! Hyperbolic attention forward on the GPU: device-resident problems, the launchers of
//! `../kernels/hyp_attn.cu` (SIMT path: any D and Dv, f32 and f64, every form) and the [`Cuda`]
//! implementation of the [`HypAttn`] op trait (backward: `hyp_attn_bwd.rs`; bf16 tensor-core
//! forward: `hyp_attn_tc.rs`).

use cust::launch;
use cust::memory::DevicePointer;
use muse_reference::hyp_attn::{Form, HypAttn, HypAttnArgs, HypAttnGrad, HypAttnOut, Mask};
use muse_reference::{Dtype, Result};
use ndarray::{Array3, Array4, ArrayView4};

use crate::bk_core::pick;
use crate::device::{err, k, Buf, Cuda, Gpu, GpuFloat};
use crate::poincare::as_i32;

/// Per-row terms the pre-pass writes (`TERMS` in `hyp_attn_common.cuh`).
pub const TERMS: usize = 6;

/// Shapes and scalars of a device-resident problem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dims {
    /// B.
    pub batch: usize,
    /// H.
    pub heads: usize,
    /// N queries.
    pub n: usize,
    /// M keys.
    pub m: usize,
    /// Head dim D.
    pub d: usize,
    /// Value dim Dv.
    pub dv: usize,
}

impl Dims {
    /// The dims of checked arguments.
    pub fn of(args: &HypAttnArgs<'_>) -> Self {
        let (batch, heads, n, m, d, dv) = args.dims();
        Self {
            batch,
            heads,
            n,
            m,
            d,
            dv,
        }
    }
    /// B·H.
    pub fn bh(&self) -> usize {
        self.batch * self.heads
    }
}

/// A hyperbolic attention problem on the device in precision `T`: q, k, v row-major as
/// (B·H·N, D), (B·H·M, D), (B·H·M, Dv), the optional per-batch key lengths, and the scalars.
pub struct Problem<T: GpuFloat> {
    /// Shapes.
    pub dims: Dims,
    /// Curvature c.
    pub c: f64,
    /// β.
    pub beta: f64,
    /// The mask.
    pub mask: Mask,
    /// The distance form.
    pub form: Form,
    pub(crate) q: Buf<T>,
    pub(crate) k: Buf<T>,
    pub(crate) v: Buf<T>,
    pub(crate) lengths: Option<Buf<i32>>,
}

/// Values rounded to `dtype` and converted to `T`, row-major.
pub(crate) fn flat<T: GpuFloat>(x: ArrayView4<'_, f64>, dtype: Dtype) -> Vec<T> {
    x.iter().map(|&v| T::of(dtype.round(v))).collect()
}

impl<T: GpuFloat> Problem<T> {
    /// Uploads checked arguments with the inputs rounded to `dtype` (bf16 values travel as f32).
    pub fn upload(gpu: &'static Gpu, args: &HypAttnArgs<'_>, dtype: Dtype) -> Result<Self> {
        Ok(Self {
            dims: Dims::of(args),
            c: args.curvature().c(),
            beta: args.beta(),
            mask: args.mask(),
            form: args.form(),
            q: gpu.upload(&flat::<T>(args.q(), dtype))?,
            k: gpu.upload(&flat::<T>(args.k(), dtype))?,
            v: gpu.upload(&flat::<T>(args.v(), dtype))?,
            lengths: upload_lengths(gpu, args)?,
        })
    }
}

/// The per-batch key lengths of `args` as device ints (`None` when every key is valid).
pub(crate) fn upload_lengths(
    gpu: &'static Gpu,
    args: &HypAttnArgs<'_>,
) -> Result<Option<Buf<i32>>> {
    args.lengths()
        .map(|l| {
            let l: Result<Vec<i32>> = l.iter().map(|&x| as_i32("lengths", x)).collect();
            gpu.upload(&l?)
        })
        .transpose()
}

/// The kernels' `lengths` argument: null when every key is valid.
pub(crate) fn lengths_ptr(lengths: &Option<Buf<i32>>) -> DevicePointer<i32> {
    lengths.as_ref().map_or(DevicePointer::null(), Buf::ptr)
}

/// The kernels' (mask, window) integers.
pub(crate) fn mask_args(mask: Mask) -> (i32, i32) {
    match mask {
        Mask::None => (0, 0),
        Mask::Causal => (1, 0),
        Mask::Window(w) => (2, w.min(i32::MAX as usize) as i32),
    }
}

/// The forward's workspace: the pre-pass rows and terms of q and k, and the outputs.
pub struct ForwardWs<T: GpuFloat> {
    pub(crate) vq: Buf<T>,
    pub(crate) tq: Buf<T>,
    pub(crate) vk: Buf<T>,
    pub(crate) tk: Buf<T>,
    /// o, (B·H·N, Dv).
    pub o: Buf<T>,
    /// lse, B·H·N.
    pub lse: Buf<T>,
}

impl<T: GpuFloat> ForwardWs<T> {
    /// Allocates the workspace of `p`: O((N + M)·D) beside the outputs, nothing of size N×M.
    pub fn new(gpu: &'static Gpu, p: &Problem<T>) -> Result<Self> {
        let d = p.dims;
        let (rq, rk) = (d.bh() * d.n, d.bh() * d.m);
        Ok(Self {
            vq: gpu.alloc(rq * d.d)?,
            tq: gpu.alloc(rq * TERMS)?,
            vk: gpu.alloc(rk * d.d)?,
            tk: gpu.alloc(rk * TERMS)?,
            o: gpu.alloc(rq * d.dv)?,
            lse: gpu.alloc(rq)?,
        })
    }
}

fn prep_name<T: GpuFloat>(form: Form) -> &'static str {
    match form {
        Form::Exact => pick::<T>(k::hyp_attn::PREP_EXACT_F32, k::hyp_attn::PREP_EXACT_F64),
        Form::FastBench => pick::<T>(
            k::hyp_attn::PREP_FAST_BENCH_F32,
            k::hyp_attn::PREP_FAST_BENCH_F64,
        ),
        Form::Flash => pick::<T>(k::hyp_attn::PREP_FLASH_F32, k::hyp_attn::PREP_FLASH_F64),
    }
}

fn fwd_name<T: GpuFloat>(form: Form) -> &'static str {
    match form {
        Form::Exact => pick::<T>(k::hyp_attn::FWD_EXACT_F32, k::hyp_attn::FWD_EXACT_F64),
        Form::FastBench => pick::<T>(
            k::hyp_attn::FWD_FAST_BENCH_F32,
            k::hyp_attn::FWD_FAST_BENCH_F64,
        ),
        Form::Flash => pick::<T>(k::hyp_attn::FWD_FLASH_F32, k::hyp_attn::FWD_FLASH_F64),
    }
}

/// C: `hyp_attn_prep_<form>_<T>(const T* x, T* vec, T* terms, int rows, int dim, T s)`, one warp
/// per row.
#[allow(clippy::too_many_arguments)]
pub(crate) fn launch_prep<T: GpuFloat>(
    gpu: &Gpu,
    form: Form,
    x: &Buf<T>,
    vec: &Buf<T>,
    terms: &Buf<T>,
    rows: usize,
    dim: usize,
    s: f64,
) -> Result<()> {
    let name = prep_name::<T>(form);
    let func = gpu.function(&gpu.hyp_attn, name)?;
    let stream = &gpu.stream;
    let (r, d) = (as_i32("rows", rows)?, as_i32("D", dim)?);
    let warps = k::hyp_attn::PREP_WARPS;
    let blocks = (rows as u32).div_ceil(warps).max(1);
    // SAFETY: (1) six arguments in C order (T*, T*, T*, int, int, T) with T matching the symbol;
    // (2) x and vec hold rows·dim, terms rows·TERMS elements (ForwardWs::new, Problem::upload);
    // (3) buffers synchronise the stream before they are freed.
    unsafe {
        launch!(func<<<blocks, warps * 32, 0, stream>>>(
            x.ptr(), vec.ptr(), terms.ptr(), r, d, T::of(s)
        ))
    }
    .map_err(|e| err(&format!("launching {name}"), e))
}

/// Queues the pre-pass of q and k (one launch each): rows the forward and backward read.
pub fn prep<T: GpuFloat>(gpu: &Gpu, p: &Problem<T>, ws: &ForwardWs<T>) -> Result<()> {
    let d = p.dims;
    let s = p.c.sqrt();
    launch_prep(gpu, p.form, &p.q, &ws.vq, &ws.tq, d.bh() * d.n, d.d, s)?;
    launch_prep(gpu, p.form, &p.k, &ws.vk, &ws.tk, d.bh() * d.m, d.d, s)
}

/// B·H as the grid's y dimension (at most 65535).
pub(crate) fn grid_y(d: &Dims) -> Result<u32> {
    u32::try_from(d.bh())
        .ok()
        .filter(|&x| x <= 65_535)
        .ok_or_else(|| muse_reference::Error::Unsupported {
            op: "hyp_attn",
            backend: "cuda",
            what: format!("B·H = {} exceeds the grid's 65535", d.bh()),
        })
}

/// The grid of the SIMT forward for `T`: (query blocks, B·H, value-column chunks).
fn fwd_grid<T: GpuFloat>(d: &Dims) -> Result<(u32, u32, u32)> {
    let vc = if T::SUFFIX == "f32" {
        k::hyp_attn::VC_F32
    } else {
        k::hyp_attn::VC_F64
    } as usize;
    let bh = grid_y(d)?;
    Ok((
        (d.n as u32).div_ceil(k::hyp_attn::BM),
        bh,
        d.dv.div_ceil(vc) as u32,
    ))
}

/// Queues the SIMT forward (after [`prep`]): o and lse. No host wait.
pub fn forward_simt<T: GpuFloat>(gpu: &Gpu, p: &Problem<T>, ws: &ForwardWs<T>) -> Result<()> {
    let name = fwd_name::<T>(p.form);
    let func = gpu.function(&gpu.hyp_attn, name)?;
    let stream = &gpu.stream;
    let d = p.dims;
    let grid = fwd_grid::<T>(&d)?;
    let (heads, n, m, dim, dv) = (
        as_i32("H", d.heads)?,
        as_i32("N", d.n)?,
        as_i32("M", d.m)?,
        as_i32("D", d.d)?,
        as_i32("Dv", d.dv)?,
    );
    let (mask, window) = mask_args(p.mask);
    let (s, c, beta) = (T::of(p.c.sqrt()), T::of(p.c), T::of(p.beta));
    let lengths = lengths_ptr(&p.lengths);
    // SAFETY: (1) eighteen arguments in C order: seven T*, five int, three T, two int, one int*,
    // T matching the symbol; (2) vq/vk hold B·H·N·D and B·H·M·D, tq/tk rows·TERMS, v B·H·M·Dv,
    // o B·H·N·Dv, lse B·H·N elements (ForwardWs::new for these dims), lengths null or B ints each
    // ≤ M (HypAttnArgs::with_lengths); (3) buffers synchronise the stream before they are freed.
    unsafe {
        launch!(func<<<grid, k::hyp_attn::BM, 0, stream>>>(
            ws.vq.ptr(), ws.tq.ptr(), ws.vk.ptr(), ws.tk.ptr(), p.v.ptr(), ws.o.ptr(), ws.lse.ptr(),
            heads, n, m, dim, dv, s, c, beta, mask, window, lengths
        ))
    }
    .map_err(|e| err(&format!("launching {name}"), e))
}

/// Queues the whole SIMT forward: pre-pass and attention.
pub fn forward<T: GpuFloat>(gpu: &Gpu, p: &Problem<T>, ws: &ForwardWs<T>) -> Result<()> {
    prep(gpu, p, ws)?;
    forward_simt(gpu, p, ws)
}

/// Copies o and lse back as (B, H, N, Dv) and (B, H, N).
pub fn download<T: GpuFloat>(p: &Problem<T>, ws: &ForwardWs<T>) -> Result<HypAttnOut> {
    download_out(&p.dims, &ws.o, &ws.lse)
}

/// o (B·H·N·Dv values) and lse (B·H·N) of either forward path, widened to f64.
pub(crate) fn download_out<T: GpuFloat>(d: &Dims, o: &Buf<T>, lse: &Buf<T>) -> Result<HypAttnOut> {
    let lse = lse.to_vec()?;
    Ok(HypAttnOut {
        o: to_array4(o, (d.batch, d.heads, d.n, d.dv))?,
        lse: Array3::from_shape_vec(
            (d.batch, d.heads, d.n),
            lse.into_iter().map(T::to_f64_exact).collect(),
        )
        .expect("invariant: lse holds B·H·N values"),
    })
}

/// A device buffer of `shape`'s element count as an f64 array.
pub(crate) fn to_array4<T: GpuFloat>(
    b: &Buf<T>,
    shape: (usize, usize, usize, usize),
) -> Result<Array4<f64>> {
    let v = b.to_vec()?;
    Ok(
        Array4::from_shape_vec(shape, v.into_iter().map(T::to_f64_exact).collect())
            .expect("invariant: the buffer holds the shape's element count"),
    )
}

fn forward_host<T: GpuFloat>(
    gpu: &'static Gpu,
    args: &HypAttnArgs<'_>,
    dtype: Dtype,
) -> Result<HypAttnOut> {
    let p = Problem::<T>::upload(gpu, args, dtype)?;
    let mut ws = ForwardWs::new(gpu, &p)?;
    ws.o.poison()?;
    ws.lse.poison()?;
    forward(gpu, &p, &ws)?;
    download(&p, &ws)
}

impl HypAttn for Cuda {
    fn hyp_attn(&self, args: &HypAttnArgs<'_>, dtype: Dtype) -> Result<HypAttnOut> {
        let gpu = self.gpu()?;
        match dtype {
            Dtype::F64 => forward_host::<f64>(gpu, args, dtype),
            Dtype::F32 => forward_host::<f32>(gpu, args, dtype),
            Dtype::Bf16 => match crate::hyp_attn_tc::supports(args) {
                true => crate::hyp_attn_tc::forward_host(gpu, args),
                false => forward_host::<f32>(gpu, args, dtype),
            },
        }
    }

    fn hyp_attn_grad(
        &self,
        args: &HypAttnArgs<'_>,
        d_o: ArrayView4<'_, f64>,
        dtype: Dtype,
    ) -> Result<HypAttnGrad> {
        args.check_d_o(&d_o)?;
        if dtype == Dtype::Bf16 && crate::hyp_attn_tc::supports(args) {
            return crate::hyp_attn_tc_bwd::grad_host(self.gpu()?, args, d_o);
        }
        crate::hyp_attn_bwd::grad_host(self.gpu()?, args, d_o, dtype)
    }
}
