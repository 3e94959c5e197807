//! Hyperbolic attention forward on the tensor cores (bf16 inputs, D = Dv ∈ {64, 128}, exact
//! form): the launchers of `../kernels/hyp_attn_tc.cu`. Other shapes and dtypes take the SIMT
//! kernels of `hyp_attn.rs`.

use cust::launch;
use muse_reference::hyp_attn::{Form, HypAttnArgs, HypAttnOut, Mask};
use muse_reference::Result;
use ndarray::ArrayView4;

use crate::device::{err, k, Buf, Gpu};
use crate::hyp_attn::{download_out, grid_y, lengths_ptr, mask_args, upload_lengths, Dims};
use crate::poincare::as_i32;

/// Whether the tensor-core kernel runs these arguments (exact form, D = Dv ∈ {64, 128}).
pub fn supports(args: &HypAttnArgs<'_>) -> bool {
    let d = Dims::of(args);
    args.form() == Form::Exact && d.d == d.dv && matches!(d.d, 64 | 128)
}

/// A bf16 problem on the device: q, k, v as bf16 bit patterns, row-major.
pub struct Problem {
    /// Shapes.
    pub dims: Dims,
    /// Curvature c.
    pub c: f64,
    /// β.
    pub beta: f64,
    /// The mask.
    pub mask: Mask,
    pub(crate) q: Buf<u16>,
    pub(crate) k: Buf<u16>,
    pub(crate) v: Buf<u16>,
    pub(crate) lengths: Option<Buf<i32>>,
}

pub(crate) fn bf16_bits(x: ArrayView4<'_, f64>) -> Vec<u16> {
    x.iter()
        .map(|&v| muse_reference::bf16_from_f64(v).to_bits())
        .collect()
}

impl Problem {
    /// Uploads checked arguments rounded to bf16. Fails unless [`supports`] holds.
    pub fn upload(gpu: &'static Gpu, args: &HypAttnArgs<'_>) -> Result<Self> {
        if !supports(args) {
            return Err(muse_reference::Error::Unsupported {
                op: "hyp_attn",
                backend: "cuda",
                what: "the tensor-core kernel needs the exact form and D = Dv in {64, 128}".into(),
            });
        }
        Ok(Self {
            dims: Dims::of(args),
            c: args.curvature().c(),
            beta: args.beta(),
            mask: args.mask(),
            q: gpu.upload(&bf16_bits(args.q()))?,
            k: gpu.upload(&bf16_bits(args.k()))?,
            v: gpu.upload(&bf16_bits(args.v()))?,
            lengths: upload_lengths(gpu, args)?,
        })
    }
}

/// Row terms (4 floats per row of q and of k) and the outputs o (f32) and lse.
pub struct ForwardWs {
    pub(crate) tq: Buf<f32>,
    pub(crate) tk: Buf<f32>,
    /// o, (B·H·N, D) f32.
    pub o: Buf<f32>,
    /// lse, B·H·N f32 (natural log).
    pub lse: Buf<f32>,
}

impl ForwardWs {
    /// Allocates the workspace of `p`: O((N + M)) terms beside the outputs.
    pub fn new(gpu: &'static Gpu, p: &Problem) -> Result<Self> {
        let d = p.dims;
        let (rq, rk) = (d.bh() * d.n, d.bh() * d.m);
        Ok(Self {
            tq: gpu.alloc(rq * 4)?,
            tk: gpu.alloc(rk * 4)?,
            o: gpu.alloc(rq * d.d)?,
            lse: gpu.alloc(rq)?,
        })
    }
}

/// C: `hyp_attn_tc_prep_{q,k}(const bf16* x, float4* terms, int rows, int dim, float s)`.
pub(crate) fn launch_prep(
    gpu: &Gpu,
    is_q: bool,
    x: &Buf<u16>,
    terms: &Buf<f32>,
    rows: usize,
    d: &Dims,
    s: f32,
) -> Result<()> {
    let name = if is_q {
        k::hyp_attn_tc::PREP_Q
    } else {
        k::hyp_attn_tc::PREP_K
    };
    let func = gpu.function(&gpu.hyp_attn_tc, name)?;
    let stream = &gpu.stream;
    let (r, dim) = (as_i32("rows", rows)?, as_i32("D", d.d)?);
    let warps = k::hyp_attn_tc::PREP_WARPS;
    let blocks = (rows as u32).div_ceil(warps).max(1);
    // SAFETY: (1) five arguments (u16* as bf16*, f32* as float4*, int, int, float) in C order;
    // (2) x holds rows·D bf16 values, terms rows·4 floats (ForwardWs::new), cudaMalloc alignment
    // covers float4; (3) buffers synchronise the stream before they are freed.
    unsafe { launch!(func<<<blocks, warps * 32, 0, stream>>>(x.ptr(), terms.ptr(), r, dim, s)) }
        .map_err(|e| err(&format!("launching {name}"), e))
}

/// Queues the pre-pass and the tensor-core forward. No host wait.
///
/// One schedule per D. A 128-register, 4-CTA-per-SM variant of the D = 64 kernel was measured on
/// the H200 (1.6–3.5 % faster at N ≥ 4096, 3 % slower at causal N = 1024) and dropped: it spilled
/// 128 bytes, and no shipped kernel spills.
pub fn forward(gpu: &Gpu, p: &Problem, ws: &ForwardWs) -> Result<()> {
    let d = p.dims;
    let s = p.c.sqrt();
    launch_prep(gpu, true, &p.q, &ws.tq, d.bh() * d.n, &d, s as f32)?;
    launch_prep(gpu, false, &p.k, &ws.tk, d.bh() * d.m, &d, s as f32)?;
    let name = match d.d {
        64 => k::hyp_attn_tc::FWD_D64,
        _ => k::hyp_attn_tc::FWD_D128,
    };
    let func = gpu.function(&gpu.hyp_attn_tc, name)?;
    let stream = &gpu.stream;
    let grid = ((d.n as u32).div_ceil(k::hyp_attn_tc::BM), grid_y(&d)?, 1);
    let (heads, n, m) = (as_i32("H", d.heads)?, as_i32("N", d.n)?, as_i32("M", d.m)?);
    let (mask, window) = mask_args(p.mask);
    let scale2 = (-p.beta / s) as f32;
    let lengths = lengths_ptr(&p.lengths);
    // SAFETY: (1) fourteen arguments in C order: three bf16* (u16 bit patterns), two float4*
    // (f32 buffers of 4 per row), two float*, three int, one float, two int, one const int*;
    // (2) q holds B·H·N·D, k and v B·H·M·D bf16 values (Problem::upload, D = Dv ∈ {64, 128} as the
    // symbol expects), terms and outputs as ForwardWs::new sized them, lengths null or B ints ≤ M;
    // (3) buffers synchronise the stream before they are freed.
    unsafe {
        launch!(func<<<grid, k::hyp_attn_tc::THREADS, 0, stream>>>(
            p.q.ptr(), p.k.ptr(), p.v.ptr(), ws.tq.ptr(), ws.tk.ptr(), ws.o.ptr(), ws.lse.ptr(),
            heads, n, m, scale2, mask, window, lengths
        ))
    }
    .map_err(|e| err(&format!("launching {name}"), e))
}

/// The bf16 forward through the tensor cores, results widened to f64.
pub(crate) fn forward_host(gpu: &'static Gpu, args: &HypAttnArgs<'_>) -> Result<HypAttnOut> {
    let p = Problem::upload(gpu, args)?;
    let mut ws = ForwardWs::new(gpu, &p)?;
    ws.o.poison()?;
    ws.lse.poison()?;
    forward(gpu, &p, &ws)?;
    download_out(&p.dims, &ws.o, &ws.lse)
}
