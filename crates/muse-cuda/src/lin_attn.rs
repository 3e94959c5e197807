//! Tangent-space linear attention on the GPU: launchers (kernels: `../kernels/lin_attn.cu`) and
//! the [`Cuda`] implementation of the [`LinAttn`] op trait.
//!
//! One masked product P(A, B, C) = Σ_{j∈mask(i)} (A_i·B_j)·C_j is three launches, each parallel
//! over (chunk of 64 rows, head): per-chunk states, a prefix over chunks, per-chunk outputs. The
//! forward pass is one product (o and the normaliser den); the backward (`lin_attn_bwd.rs`)
//! recomputes it, forms G = \[dO/m, −⟨dO, o⟩/m\] and runs three more (`muse_reference::lin_attn`
//! derives them).

use cust::function::GridSize;
use cust::launch;
use cust::memory::DevicePointer;
use muse_reference::lin_attn::product::Direction;
use muse_reference::lin_attn::{self, LinAttn, LinAttnArgs, LinAttnGrad};
use muse_reference::{Dtype, Error, Result};
use ndarray::{Array4, ArrayView4};

use crate::device::{err, k, Buf, Cuda, Gpu, GpuFloat};
use crate::hyp_ln::rounded;
use crate::lazy::LazyModule;

static MODULE: LazyModule = LazyModule::new(k::lin_attn::CUBIN, "lin_attn");

/// An operand of the masked product as the kernels take it: rows at `stride`, `width` columns,
/// flags φ and ones-column (`LIN_ATTN_PHI`, `LIN_ATTN_AUG`).
#[derive(Clone, Copy)]
pub(crate) struct Operand<T: GpuFloat> {
    pub(crate) ptr: DevicePointer<T>,
    pub(crate) stride: i32,
    pub(crate) width: i32,
    pub(crate) flags: i32,
}

impl<T: GpuFloat> Operand<T> {
    pub(crate) fn plain(buf: &Buf<T>, width: usize) -> Self {
        Self {
            ptr: buf.ptr(),
            stride: width as i32,
            width: width as i32,
            flags: 0,
        }
    }
    pub(crate) fn phi(self) -> Self {
        Self {
            flags: self.flags | k::lin_attn::PHI as i32,
            ..self
        }
    }
    pub(crate) fn aug(self) -> Self {
        Self {
            flags: self.flags | k::lin_attn::AUG as i32,
            ..self
        }
    }
    fn wide(&self) -> u32 {
        self.width as u32 + u32::from(self.flags & k::lin_attn::AUG as i32 != 0)
    }
}

/// A linear-attention problem resident on the device: q, k (B·H·N·d), v (B·H·N·dv) in `T`.
pub struct Problem<T: GpuFloat> {
    /// B·H.
    pub heads: usize,
    /// N.
    pub n: usize,
    /// d.
    pub d: usize,
    /// dv.
    pub dv: usize,
    /// Causal (j ≤ i) or full sums.
    pub dir: Direction,
    /// The normaliser floor.
    pub eps: f64,
    pub(crate) q: Buf<T>,
    pub(crate) k: Buf<T>,
    pub(crate) v: Buf<T>,
}

pub(crate) fn too_big(what: String) -> Error {
    Error::Unsupported {
        op: "lin_attn",
        backend: "cuda",
        what,
    }
}

impl<T: GpuFloat> Problem<T> {
    /// Uploads checked arguments, rounded to `dtype` (then to `T`).
    pub fn upload(gpu: &'static Gpu, args: &LinAttnArgs<'_>, dtype: Dtype) -> Result<Self> {
        let chunks = args.n().div_ceil(k::lin_attn::CHUNK as usize);
        if chunks > 65_535 || args.heads() > 65_535 {
            return Err(too_big(format!(
                "N = {} (at most {} chunks of {}) and B·H = {} (at most 65535) exceed the grid",
                args.n(),
                65_535,
                k::lin_attn::CHUNK,
                args.heads()
            )));
        }
        for (name, v) in [("d", args.d()), ("dv", args.dv())] {
            if v >= i32::MAX as usize / 2 {
                return Err(too_big(format!("{name} = {v} does not fit a 32-bit int")));
            }
        }
        Ok(Self {
            heads: args.heads(),
            n: args.n(),
            d: args.d(),
            dv: args.dv(),
            dir: args.direction(),
            eps: args.config().eps,
            q: gpu.upload(&rounded::<T>(args.q().iter(), dtype))?,
            k: gpu.upload(&rounded::<T>(args.k().iter(), dtype))?,
            v: gpu.upload(&rounded::<T>(args.v().iter(), dtype))?,
        })
    }

    /// Chunks of 64 rows per head.
    pub fn chunks(&self) -> usize {
        self.n.div_ceil(k::lin_attn::CHUNK as usize)
    }
}

/// The forward outputs o (B·H·N·dv) and den (B·H·N), and the chunk states (scratch).
pub struct ForwardWs<T: GpuFloat> {
    pub(crate) state: Buf<T>,
    /// The attention output, (B, H, N, dv) row-major.
    pub o: Buf<T>,
    /// The normaliser φ(q_i)·z_i per row (before the eps floor).
    pub den: Buf<T>,
}

impl<T: GpuFloat> ForwardWs<T> {
    /// Allocates the outputs and the states for `p` (heads × chunks × d·(dv + 1) values, enough
    /// for the backward's products too).
    pub fn new(gpu: &'static Gpu, p: &Problem<T>) -> Result<Self> {
        Ok(Self {
            state: gpu.alloc(p.heads * p.chunks() * p.d * (p.dv + 1))?,
            o: gpu.alloc(p.heads * p.n * p.dv)?,
            den: gpu.alloc(p.heads * p.n)?,
        })
    }
}

/// Queues the forward pass (three launches, no host wait).
pub fn forward<T: GpuFloat>(gpu: &Gpu, p: &Problem<T>, ws: &mut ForwardWs<T>) -> Result<()> {
    let (q, kk, v) = (
        Operand::plain(&p.q, p.d).phi(),
        Operand::plain(&p.k, p.d).phi(),
        Operand::plain(&p.v, p.dv).aug(),
    );
    let out = (ws.o.ptr(), p.dv as i32);
    product(
        gpu,
        p,
        &ws.state,
        [q, kk, v],
        p.dir,
        out,
        None,
        Some(ws.den.ptr()),
    )
}

pub(crate) fn pick<T: GpuFloat>(f32_name: &'static str, f64_name: &'static str) -> &'static str {
    if T::SUFFIX == "f32" {
        f32_name
    } else {
        f64_name
    }
}

/// Queues P(A, B, C) with direction `dir` into `out` (pointer, row stride): states, prefix,
/// outputs. `mul`: multiply by φ′ of that (pointer, stride) array; `den`: the normaliser output
/// (C must have the ones column).
#[allow(clippy::too_many_arguments)]
pub(crate) fn product<T: GpuFloat>(
    gpu: &Gpu,
    p: &Problem<T>,
    state: &Buf<T>,
    [a, b, c]: [Operand<T>; 3],
    dir: Direction,
    out: (DevicePointer<T>, i32),
    mul: Option<(DevicePointer<T>, i32)>,
    den: Option<DevicePointer<T>>,
) -> Result<()> {
    let module = MODULE.get(gpu)?;
    let stream = &gpu.stream;
    let tile = k::lin_attn::TILE;
    let threads = k::lin_attn::THREADS;
    let (da, dc) = (b.wide(), c.wide());
    let (chunks, heads) = (p.chunks() as u32, p.heads as u32);
    let n = p.n as i64;
    let size = da * dc;
    debug_assert!(
        (heads as usize) * (chunks as usize) * size as usize <= state.len(),
        "state buffer"
    );

    let name = pick::<T>(k::lin_attn::STATES_F32, k::lin_attn::STATES_F64);
    let func = gpu.function(module, name)?;
    let (wb, wc) = (b.width as u32, c.width as u32);
    let grid = GridSize::xyz(wb.div_ceil(tile) * wc.div_ceil(tile), chunks, heads);
    // SAFETY: (1) ten arguments in C order: pointer, i32 ×3, pointer, i32 ×3, pointer,
    // i64 = long long, T matching the symbol; (2) b and c point to heads·N rows of their stride
    // (Problem::upload, BackwardWs::new), read only at columns < width; the state holds at least
    // heads·chunks·da·dc values (ForwardWs::new sizes it for d·(dv+1), the largest da·dc of the
    // four products); the grid is (⌈b.width/64⌉·⌈c.width/64⌉, chunks, heads) as the kernel
    // expects;
    // (3) buffers synchronise `stream` before they are freed.
    unsafe {
        launch!(func<<<grid, threads, 0, stream>>>(
            b.ptr, b.stride, b.width, b.flags, c.ptr, c.stride, c.width, c.flags, state.ptr(), n
        ))
    }
    .map_err(|e| err(&format!("launching {name}"), e))?;

    let name = pick::<T>(k::lin_attn::PREFIX_F32, k::lin_attn::PREFIX_F64);
    let func = gpu.function(module, name)?;
    let grid = GridSize::xy(size.div_ceil(threads), heads);
    let (chunks_i, size_i, dir_i) = (chunks as i32, size as i32, dir.code());
    // SAFETY: (1) four arguments in C order: pointer to T, i32 = int ×3; (2) the state holds
    // heads·chunks·size values for this (da, dc); the grid is (⌈size/256⌉, heads);
    // (3) buffers synchronise `stream` before they are freed.
    unsafe { launch!(func<<<grid, threads, 0, stream>>>(state.ptr(), chunks_i, size_i, dir_i)) }
        .map_err(|e| err(&format!("launching {name}"), e))?;

    let name = pick::<T>(k::lin_attn::OUTPUT_F32, k::lin_attn::OUTPUT_F64);
    let func = gpu.function(module, name)?;
    let grid = GridSize::xyz((c.width as u32).div_ceil(tile), chunks, heads);
    let null = DevicePointer::<T>::null();
    let (mul_ptr, mul_stride) = mul.unwrap_or((null, 0));
    let den_ptr = den.unwrap_or(null);
    let eps = T::of(p.eps);
    // SAFETY: (1) twenty-one arguments in C order: three operands (pointer, i32 ×3 each), state
    // pointer, out pointer, i32, mul pointer, i32, den pointer, T, i64 = long long, i32, with
    // T matching the symbol; (2) operands as in the states launch and a with the same contraction
    // width as b; out and mul hold heads·N rows of their strides with c.width ≤ stride columns
    // written resp. read; den (non-null only when c has the ones column) holds heads·N values;
    // the grid is (⌈c.width/64⌉, chunks, heads); (3) buffers synchronise `stream` before they are
    // freed.
    unsafe {
        launch!(func<<<grid, threads, 0, stream>>>(
            a.ptr, a.stride, a.width, a.flags, b.ptr, b.stride, b.width, b.flags,
            c.ptr, c.stride, c.width, c.flags, state.ptr(), out.0, out.1, mul_ptr, mul_stride,
            den_ptr, eps, n, dir_i
        ))
    }
    .map_err(|e| err(&format!("launching {name}"), e))
}

pub(crate) fn to_array4<T: GpuFloat>(
    buf: &Buf<T>,
    dim: (usize, usize, usize, usize),
) -> Result<Array4<f64>> {
    let v = buf.to_vec()?;
    Array4::from_shape_vec(dim, v.iter().map(|x| x.to_f64_exact()).collect()).map_err(|e| {
        Error::Backend {
            backend: "cuda",
            message: format!("lin_attn: output shape: {e}"),
        }
    })
}

fn forward_host<T: GpuFloat>(
    gpu: &'static Gpu,
    args: &LinAttnArgs<'_>,
    dtype: Dtype,
) -> Result<Array4<f64>> {
    let p = Problem::<T>::upload(gpu, args, dtype)?;
    let mut ws = ForwardWs::new(gpu, &p)?;
    ws.o.poison()?;
    forward(gpu, &p, &mut ws)?;
    gpu.sync("lin_attn forward")?;
    let o = to_array4(&ws.o, args.v().dim())?;
    lin_attn::check_result("o", &o, dtype)?;
    Ok(o)
}

impl LinAttn for Cuda {
    fn lin_attn(&self, args: &LinAttnArgs<'_>, dtype: Dtype) -> Result<Array4<f64>> {
        match dtype {
            Dtype::F64 => forward_host::<f64>(self.gpu()?, args, dtype),
            Dtype::F32 | Dtype::Bf16 => forward_host::<f32>(self.gpu()?, args, dtype),
        }
    }

    fn lin_attn_grad(
        &self,
        args: &LinAttnArgs<'_>,
        d_o: ArrayView4<'_, f64>,
        dtype: Dtype,
    ) -> Result<LinAttnGrad> {
        args.check_grad(&d_o)?;
        match dtype {
            Dtype::F64 => crate::lin_attn_bwd::backward_host::<f64>(self.gpu()?, args, d_o, dtype),
            Dtype::F32 | Dtype::Bf16 => {
                crate::lin_attn_bwd::backward_host::<f32>(self.gpu()?, args, d_o, dtype)
            }
        }
    }
}
