//! Pairwise Poincaré distance matrix on the GPU: launchers (kernels: `../kernels/hyp_dist.cu`)
//! and the [`Cuda`] implementation of the [`HypDist`] op trait.
//!
//! Three launches: the row terms of x and of y (one warp per row, norms in double), then the
//! register-tiled pair kernel (f32: 128×128 tiles, 8×8 outputs per thread; f64: 64×64, 4×4),
//! which forms the Gram matrix with an FFMA loop over D in slices of 8 and evaluates the distance
//! per pair. Near-coincident pairs (1 − C < 1/4 for tangent inputs, ‖x − y‖² < (‖x‖² + ‖y‖²)/4
//! for ball points), where ‖x‖² + ‖y‖² − 2⟨x, y⟩ cancels, are recomputed from the rows by
//! differences, so d(x, x) = 0 exactly and the Gram form's rounding is amplified at most 4×.

use cust::function::GridSize;
use cust::launch;
use muse_reference::hyp_dist::{HypDist, HypDistArgs, HypDistInput};
use muse_reference::{Dtype, Error, Result};
use ndarray::Array4;

use crate::device::{err, k, Buf, Cuda, Gpu, GpuFloat};
use crate::hyp_ln::rounded;
use crate::lazy::LazyModule;

static MODULE: LazyModule = LazyModule::new(k::hyp_dist::CUBIN, "hyp_dist");

/// A distance-matrix problem resident on the device: x (B·H·N, D) and y (B·H·M, D) in `T`.
pub struct Problem<T: GpuFloat> {
    /// B·H.
    pub heads: usize,
    /// N.
    pub n: usize,
    /// M.
    pub m: usize,
    /// D.
    pub dim: usize,
    /// Curvature c.
    pub c: f64,
    /// Tangent vectors or ball points.
    pub input: HypDistInput,
    pub(crate) x: Buf<T>,
    pub(crate) y: Buf<T>,
}

impl<T: GpuFloat> Problem<T> {
    /// Uploads checked arguments, rounded to `dtype` (then to `T`). Ball inputs must still be
    /// inside the ball after rounding ([`HypDistArgs::check_rounded`]).
    pub fn upload(gpu: &'static Gpu, args: &HypDistArgs<'_>, dtype: Dtype) -> Result<Self> {
        args.check_rounded(dtype)?;
        let (b, h, n, m) = args.out_dim();
        Ok(Self {
            heads: b * h,
            n,
            m,
            dim: args.dim(),
            c: args.curvature().c(),
            input: args.input(),
            x: gpu.upload(&rounded::<T>(args.x().iter(), dtype))?,
            y: gpu.upload(&rounded::<T>(args.y().iter(), dtype))?,
        })
    }
}

/// Row terms of x and y, and the output d (B·H·N·M).
pub struct Workspace<T: GpuFloat> {
    sx: Buf<T>,
    sy: Buf<T>,
    /// The distances, (B, H, N, M) row-major.
    pub d: Buf<T>,
}

impl<T: GpuFloat> Workspace<T> {
    /// Allocates the workspace and output for `p`.
    pub fn new(gpu: &'static Gpu, p: &Problem<T>) -> Result<Self> {
        let stats = k::hyp_dist::STATS as usize;
        Ok(Self {
            sx: gpu.alloc(p.heads * p.n * stats)?,
            sy: gpu.alloc(p.heads * p.m * stats)?,
            d: gpu.alloc(p.heads * p.n * p.m)?,
        })
    }
}

fn tile<T: GpuFloat>() -> u32 {
    16 * if T::SUFFIX == "f32" {
        k::hyp_dist::TM_F32
    } else {
        k::hyp_dist::TM_F64
    }
}

fn too_big(what: String) -> Error {
    Error::Unsupported {
        op: "hyp_dist",
        backend: "cuda",
        what,
    }
}

fn int(v: usize, name: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| too_big(format!("{name} = {v} does not fit a 32-bit int")))
}

fn input_i32(input: HypDistInput) -> i32 {
    match input {
        HypDistInput::Tangent => 0,
        HypDistInput::Ball => 1,
    }
}

/// Queues the distance matrix (three launches, no host wait).
pub fn forward<T: GpuFloat>(gpu: &Gpu, p: &Problem<T>, ws: &mut Workspace<T>) -> Result<()> {
    launch_rows(gpu, p, &p.x, p.heads * p.n, &ws.sx)?;
    launch_rows(gpu, p, &p.y, p.heads * p.m, &ws.sy)?;
    launch_pairs(gpu, p, ws)
}

/// C: `hyp_dist_rows_<T>(const T* x, long long rows, int dim, double c, double s, int input,
/// T* stats)`, one warp per row.
fn launch_rows<T: GpuFloat>(
    gpu: &Gpu,
    p: &Problem<T>,
    x: &Buf<T>,
    rows: usize,
    stats: &Buf<T>,
) -> Result<()> {
    let name = if T::SUFFIX == "f32" {
        k::hyp_dist::ROWS_F32
    } else {
        k::hyp_dist::ROWS_F64
    };
    let func = gpu.function(MODULE.get(gpu)?, name)?;
    let stream = &gpu.stream;
    let warps = u64::from(k::hyp_dist::ROW_WARPS);
    let grid = u32::try_from((rows as u64).div_ceil(warps))
        .map_err(|_| too_big(format!("{rows} rows exceed the grid")))?;
    let (rows, dim) = (rows as i64, int(p.dim, "D")?);
    let (c, s, input) = (p.c, p.c.sqrt(), input_i32(p.input));
    // SAFETY: (1) seven arguments in C order: pointer to T, i64 = long long, i32 = int,
    // f64 = double, f64, i32, pointer to T, for the symbol of T; (2) x holds `rows`·D elements and
    // stats `rows`·STATS (Workspace::new), one warp per row within `rows`; (3) buffers
    // synchronise `stream` before they are freed.
    unsafe {
        launch!(func<<<grid, k::hyp_dist::THREADS, 0, stream>>>(
            x.ptr(), rows, dim, c, s, input, stats.ptr()
        ))
    }
    .map_err(|e| err(&format!("launching {name}"), e))
}

/// C: `hyp_dist_pairs_<T>(const T* x, const T* y, const T* sx, const T* sy, T* d, int n, int m,
/// int dim, int vec, T c, T s, T inv_s, int input)`, grid (⌈M/BM⌉, ⌈N/BM⌉, B·H).
fn launch_pairs<T: GpuFloat>(gpu: &Gpu, p: &Problem<T>, ws: &Workspace<T>) -> Result<()> {
    let name = if T::SUFFIX == "f32" {
        k::hyp_dist::PAIRS_F32
    } else {
        k::hyp_dist::PAIRS_F64
    };
    let func = gpu.function(MODULE.get(gpu)?, name)?;
    let stream = &gpu.stream;
    let bm = tile::<T>() as usize;
    let (gx, gy) = (p.m.div_ceil(bm), p.n.div_ceil(bm));
    if gy > 65_535 || p.heads > 65_535 {
        return Err(too_big(format!(
            "N = {} (at most {}) and B·H = {} (at most 65535) exceed the grid",
            p.n,
            65_535 * bm,
            p.heads
        )));
    }
    let grid = GridSize::xyz(
        u32::try_from(gx).map_err(|_| too_big(format!("M = {} exceeds the grid", p.m)))?,
        gy as u32,
        p.heads as u32,
    );
    let (n, m, dim) = (int(p.n, "N")?, int(p.m, "M")?, int(p.dim, "D")?);
    let vec = i32::from(p.dim % (16 / std::mem::size_of::<T>()) == 0);
    let (c, s, inv_s) = (T::of(p.c), T::of(p.c).sqrt(), T::of(1.0 / p.c.sqrt()));
    let input = input_i32(p.input);
    // SAFETY: (1) thirteen arguments in C order: five pointers to T, i32 = int ×4, T ×3, i32, for
    // the symbol of T; (2) x holds B·H·N·D, y B·H·M·D, sx and sy B·H·N resp. B·H·M times STATS,
    // d B·H·N·M elements (Problem::upload, Workspace::new) for this (B·H, N, M, D); the grid covers
    // them and the kernel bounds-checks every row, column and k; `vec` only when D is a multiple
    // of the 16-byte vector width, so vector loads stay aligned in cuMemAlloc'd buffers;
    // (3) buffers synchronise `stream` before they are freed.
    unsafe {
        launch!(func<<<grid, k::hyp_dist::THREADS, 0, stream>>>(
            p.x.ptr(), p.y.ptr(), ws.sx.ptr(), ws.sy.ptr(), ws.d.ptr(), n, m, dim, vec, c, s,
            inv_s, input
        ))
    }
    .map_err(|e| err(&format!("launching {name}"), e))
}

fn forward_host<T: GpuFloat>(
    gpu: &'static Gpu,
    args: &HypDistArgs<'_>,
    dtype: Dtype,
) -> Result<Array4<f64>> {
    let p = Problem::<T>::upload(gpu, args, dtype)?;
    let mut ws = Workspace::new(gpu, &p)?;
    ws.d.poison()?;
    forward(gpu, &p, &mut ws)?;
    gpu.sync("hyp_dist")?;
    let d = ws.d.to_vec()?;
    Array4::from_shape_vec(args.out_dim(), d.iter().map(|v| v.to_f64_exact()).collect()).map_err(
        |e| Error::Backend {
            backend: "cuda",
            message: format!("hyp_dist: output shape: {e}"),
        },
    )
}

impl HypDist for Cuda {
    fn hyp_dist(&self, args: &HypDistArgs<'_>, dtype: Dtype) -> Result<Array4<f64>> {
        match dtype {
            Dtype::F64 => forward_host::<f64>(self.gpu()?, args, dtype),
            Dtype::F32 | Dtype::Bf16 => forward_host::<f32>(self.gpu()?, args, dtype),
        }
    }
}
