//! Fused LayerNorm + hyperbolic projection on the GPU, forward: launchers (kernels:
//! `../kernels/hyp_ln.cu`) and the [`Cuda`] implementation of the [`HypLn`] op trait (backward:
//! `hyp_ln_bwd.rs`).
//!
//! Rows of D ≤ 32·CAP (CAP ≤ 32 in f32, ≤ 16 in f64) run one warp per row with the row in
//! registers and 8- or 16-byte vector accesses where D allows; wider rows run one CTA per row.

use cust::launch;
use muse_reference::hyp_ln::{HypLn, HypLnArgs, HypLnGrad, HypLnMode, HypLnOut};
use muse_reference::{Dtype, Error, Result};
use ndarray::{Array1, Array2, ArrayView2};

use crate::device::{err, k, Buf, Cuda, Gpu, GpuFloat};
use crate::lazy::LazyModule;

pub(crate) static MODULE: LazyModule = LazyModule::new(k::hyp_ln::CUBIN, "hyp_ln");

/// How the rows of a problem map onto kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Elements per lane of the warp-per-row kernels, or `None` for the CTA-per-row kernels.
    pub cap: Option<u32>,
    /// Whether rows are read and written with vector accesses (D a multiple of the width).
    pub vec: bool,
    /// R.
    pub rows: u64,
    /// D.
    pub dim: u32,
}

impl Plan {
    /// The plan for (R, D) rows of `T`.
    ///
    /// ```no_run
    /// let plan = muse_cuda::hyp_ln::Plan::new::<f32>(1 << 20, 256)?;
    /// assert_eq!((plan.cap, plan.vec), (Some(8), true));
    /// # Ok::<(), muse_reference::Error>(())
    /// ```
    pub fn new<T: GpuFloat>(rows: usize, dim: usize) -> Result<Self> {
        let dim = u32::try_from(dim)
            .ok()
            .filter(|&d| d <= i32::MAX as u32)
            .ok_or_else(|| Error::Unsupported {
                op: "hyp_ln",
                backend: "cuda",
                what: format!("D = {dim} does not fit a 32-bit int"),
            })?;
        let max_cap = if T::SUFFIX == "f32" { 32 } else { 16 };
        let cap = (0..=5)
            .map(|p| 1u32 << p)
            .find(|&c| 32 * c >= dim)
            .filter(|&c| c <= max_cap);
        let width = |c: u32| {
            let per = 16 / std::mem::size_of::<T>() as u32;
            if c >= per {
                per
            } else {
                c
            }
        };
        Ok(Self {
            cap,
            vec: cap.is_some_and(|c| dim % width(c) == 0),
            rows: rows as u64,
            dim,
        })
    }

    /// Rows one warp of the forward kernel handles: max(1, ROW_ELEMS/CAP) (the kernel's
    /// `RowsPerWarp`).
    pub fn rows_per_warp(&self) -> u32 {
        self.cap.map_or(1, |c| {
            (k::hyp_ln::ROW_ELEMS / c.min(k::hyp_ln::ROW_ELEMS)).max(1)
        })
    }

    /// CTAs of the forward launch.
    pub(crate) fn forward_grid(&self) -> Result<u32> {
        let per = if self.cap.is_some() {
            u64::from(k::hyp_ln::WARPS * self.rows_per_warp())
        } else {
            1
        };
        let ctas = self.rows.div_ceil(per);
        Ok(if self.cap.is_some() {
            u32::try_from(ctas).map_err(|_| Error::Unsupported {
                op: "hyp_ln",
                backend: "cuda",
                what: format!("R = {} rows exceed the grid", self.rows),
            })?
        } else {
            ctas.min(65_535) as u32
        })
    }
}

/// A fused LN + projection problem resident on the device: x (R, D), γ and β_ln (D) in `T`.
pub struct Problem<T: GpuFloat> {
    /// R.
    pub rows: usize,
    /// D.
    pub dim: usize,
    /// LayerNorm epsilon.
    pub eps: f64,
    /// Curvature c.
    pub c: f64,
    /// Projection mode.
    pub mode: HypLnMode,
    pub(crate) x: Buf<T>,
    pub(crate) gamma: Buf<T>,
    pub(crate) beta: Buf<T>,
}

/// The values of `v` rounded to `dtype`, then to `T`.
pub(crate) fn rounded<'a, T: GpuFloat>(v: impl Iterator<Item = &'a f64>, dtype: Dtype) -> Vec<T> {
    v.map(|&e| T::of(dtype.round(e))).collect()
}

impl<T: GpuFloat> Problem<T> {
    /// Uploads checked arguments, rounded to `dtype` (then to `T`: f64 for [`Dtype::F64`], f32
    /// for f32 and bf16).
    pub fn upload(gpu: &'static Gpu, args: &HypLnArgs<'_>, dtype: Dtype) -> Result<Self> {
        Ok(Self {
            rows: args.rows(),
            dim: args.dim(),
            eps: args.eps(),
            c: args.curvature().c(),
            mode: args.mode(),
            x: gpu.upload(&rounded::<T>(args.x().iter(), dtype))?,
            gamma: gpu.upload(&rounded::<T>(args.gamma().iter(), dtype))?,
            beta: gpu.upload(&rounded::<T>(args.beta_ln().iter(), dtype))?,
        })
    }

    pub(crate) fn mode_i32(&self) -> i32 {
        match self.mode {
            HypLnMode::Exp0 => 0,
            HypLnMode::Clip => 1,
        }
    }
}

/// The forward outputs: `out` (R·D), and `y` (R·D) and `a` (R) when requested.
pub struct ForwardWs<T: GpuFloat> {
    /// The plan.
    pub plan: Plan,
    /// The ball points, R·D.
    pub out: Buf<T>,
    /// y, R·D (when requested).
    pub y: Option<Buf<T>>,
    /// a = min(√c‖y‖, A_MAX), R (when requested).
    pub a: Option<Buf<T>>,
}

impl<T: GpuFloat> ForwardWs<T> {
    /// Allocates the outputs for `p`; `with_y_a` adds y and a (one more write of R·D; the
    /// bandwidth KPI measures the forward without them).
    pub fn new(gpu: &'static Gpu, p: &Problem<T>, with_y_a: bool) -> Result<Self> {
        let n = p.rows * p.dim;
        Ok(Self {
            plan: Plan::new::<T>(p.rows, p.dim)?,
            out: gpu.alloc(n)?,
            y: if with_y_a { Some(gpu.alloc(n)?) } else { None },
            a: if with_y_a {
                Some(gpu.alloc(p.rows)?)
            } else {
                None
            },
        })
    }
}

fn forward_name<T: GpuFloat>(cap: Option<u32>) -> &'static str {
    use k::hyp_ln as m;
    let f32 = T::SUFFIX == "f32";
    match (cap, f32) {
        (Some(1), true) => m::FORWARD_C1_F32,
        (Some(2), true) => m::FORWARD_C2_F32,
        (Some(4), true) => m::FORWARD_C4_F32,
        (Some(8), true) => m::FORWARD_C8_F32,
        (Some(16), true) => m::FORWARD_C16_F32,
        (Some(32), true) => m::FORWARD_C32_F32,
        (Some(1), false) => m::FORWARD_C1_F64,
        (Some(2), false) => m::FORWARD_C2_F64,
        (Some(4), false) => m::FORWARD_C4_F64,
        (Some(8), false) => m::FORWARD_C8_F64,
        (Some(16), false) => m::FORWARD_C16_F64,
        (_, true) => m::FORWARD_ROWS_F32,
        (_, false) => m::FORWARD_ROWS_F64,
    }
}

/// Queues the forward pass (one launch, no host wait).
///
/// C: `hyp_ln_forward_<c CAP | rows>_<T>(const T* x, const T* gamma, const T* beta, T* y, T* out,
/// T* a, long long rows, int dim, int vec, T eps, double c, double s, int mode)`.
pub fn forward<T: GpuFloat>(gpu: &Gpu, p: &Problem<T>, ws: &mut ForwardWs<T>) -> Result<()> {
    let name = forward_name::<T>(ws.plan.cap);
    let func = gpu.function(MODULE.get(gpu)?, name)?;
    let stream = &gpu.stream;
    let grid = ws.plan.forward_grid()?;
    let null = cust::memory::DevicePointer::<T>::null();
    let y = ws.y.as_ref().map_or(null, Buf::ptr);
    let a = ws.a.as_ref().map_or(null, Buf::ptr);
    let (rows, dim, vec) = (
        ws.plan.rows as i64,
        ws.plan.dim as i32,
        i32::from(ws.plan.vec),
    );
    let (eps, c, s, mode) = (T::of(p.eps), p.c, p.c.sqrt(), p.mode_i32());
    // SAFETY: (1) thirteen arguments in C order: six pointers to T (the `_f32`/`_f64` symbol
    // `forward_name` picked for T), i64 = long long, i32 = int, T, f64 = double, f64, i32;
    // (2) x, y, out hold R·D elements, gamma and beta D, a R (y and a may be null) for the
    // (R, D) the plan was made from, and `vec` is set only when D is a multiple of the vector
    // width (rows stay aligned in cuMemAlloc'd buffers); the warp kernels' D ≤ 32·CAP by Plan::new;
    // (3) every `Buf` synchronises `stream` before it is freed.
    unsafe {
        launch!(func<<<grid, k::hyp_ln::THREADS, 0, stream>>>(
            p.x.ptr(), p.gamma.ptr(), p.beta.ptr(), y, ws.out.ptr(), a, rows, dim, vec, eps, c, s, mode
        ))
    }
    .map_err(|e| err(&format!("launching {name}"), e))
}

/// Reads a (R, D) device buffer into an f64 array.
pub(crate) fn to_array2<T: GpuFloat>(buf: &Buf<T>, rows: usize, dim: usize) -> Result<Array2<f64>> {
    let v = buf.to_vec()?;
    Ok(Array2::from_shape_fn((rows, dim), |(r, d)| {
        v[r * dim + d].to_f64_exact()
    }))
}

fn forward_host<T: GpuFloat>(
    gpu: &'static Gpu,
    args: &HypLnArgs<'_>,
    dtype: Dtype,
) -> Result<HypLnOut> {
    let p = Problem::<T>::upload(gpu, args, dtype)?;
    let mut ws = ForwardWs::new(gpu, &p, true)?;
    ws.out.poison()?;
    for b in ws.y.iter_mut().chain(ws.a.iter_mut()) {
        b.poison()?;
    }
    forward(gpu, &p, &mut ws)?;
    gpu.sync("hyp_ln forward")?;
    let missing = || Error::Backend {
        backend: "cuda",
        message: "hyp_ln: y and a were requested".into(),
    };
    let a = ws.a.as_ref().ok_or_else(missing)?.to_vec()?;
    let out = HypLnOut {
        y: to_array2(ws.y.as_ref().ok_or_else(missing)?, p.rows, p.dim)?,
        out: to_array2(&ws.out, p.rows, p.dim)?,
        a: Array1::from_iter(a.iter().map(|v| v.to_f64_exact())),
    };
    out.check(dtype)?;
    Ok(out)
}

impl HypLn for Cuda {
    fn hyp_ln(&self, args: &HypLnArgs<'_>, dtype: Dtype) -> Result<HypLnOut> {
        match dtype {
            Dtype::F64 => forward_host::<f64>(self.gpu()?, args, dtype),
            Dtype::F32 | Dtype::Bf16 => forward_host::<f32>(self.gpu()?, args, dtype),
        }
    }

    fn hyp_ln_grad(
        &self,
        args: &HypLnArgs<'_>,
        g: ArrayView2<'_, f64>,
        dtype: Dtype,
    ) -> Result<HypLnGrad> {
        args.check_grad(&g)?;
        let grad = match dtype {
            Dtype::F64 => crate::hyp_ln_bwd::backward_host::<f64>(self.gpu()?, args, g, dtype),
            Dtype::F32 | Dtype::Bf16 => {
                crate::hyp_ln_bwd::backward_host::<f32>(self.gpu()?, args, g, dtype)
            }
        }?;
        grad.check(dtype)?;
        Ok(grad)
    }
}
