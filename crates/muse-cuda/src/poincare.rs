//! Poincaré-ball row ops on the GPU: the launcher of `../kernels/poincare.cu` and the [`Cuda`]
//! implementation of the [`Poincare`] op trait. One thread per row; the device functions it runs
//! (`kernels/include/poincare.cuh`) are the ones every hyperbolic kernel uses.

use cust::launch;
use cust::memory::DevicePointer;
use muse_reference::poincare::{BallOp, Poincare, PoincareArgs, PoincareOut, EPS_BALL};
use muse_reference::{Error, Precision, Result};
use ndarray::Array2;

use crate::bk_core::pick;
use crate::device::{err, k, Buf, Cuda, Gpu, GpuFloat};

/// Rows and columns as the kernel's `int`s, or an error naming the limit.
pub(crate) fn as_i32(what: &str, x: usize) -> Result<i32> {
    i32::try_from(x).map_err(|_| Error::Unsupported {
        op: "cuda",
        backend: "cuda",
        what: format!("{what} = {x} exceeds the kernels' 32-bit index range"),
    })
}

fn op_code(op: BallOp) -> i32 {
    BallOp::ALL
        .iter()
        .position(|&o| o == op)
        .expect("invariant: BallOp::ALL lists every op") as i32
}

/// C: `poincare_apply_<T>(int op, const T* x, const T* y, const T* g, T* out, T* out2,
/// T* dc_rows, int rows, int dim, T c, T eps)`.
#[allow(clippy::too_many_arguments)]
fn launch_apply<T: GpuFloat>(
    gpu: &Gpu,
    op: BallOp,
    x: &Buf<T>,
    y: DevicePointer<T>,
    g: DevicePointer<T>,
    out: &Buf<T>,
    out2: DevicePointer<T>,
    dc_rows: DevicePointer<T>,
    rows: usize,
    dim: usize,
    c: T,
) -> Result<()> {
    let name = pick::<T>(k::poincare::APPLY_F32, k::poincare::APPLY_F64);
    let func = gpu.function(&gpu.poincare, name)?;
    let stream = &gpu.stream;
    let (r, d) = (as_i32("rows", rows)?, as_i32("D", dim)?);
    let threads = k::poincare::THREADS;
    let blocks = (rows as u32).div_ceil(threads).max(1);
    let eps = T::of(EPS_BALL);
    // SAFETY: (1) eleven arguments in C order: i32 = int, DevicePointer<T> = T*, T = float/double
    // matching the `_f32`/`_f64` symbol from `pick`; (2) x and out hold rows·dim elements
    // (`apply_host`), y is null or rows·dim, g/dc_rows null or rows, out2 null or rows·dim, and the
    // kernel reads y/g/out2/dc_rows only for the ops that the host allocated them for; (3) every
    // `Buf` synchronises the stream before it is freed.
    unsafe {
        launch!(func<<<blocks, threads, 0, stream>>>(
            op_code(op), x.ptr(), y, g, out.ptr(), out2, dc_rows, r, d, c, eps
        ))
    }
    .map_err(|e| err(&format!("launching {name}"), e))
}

fn flat<T: GpuFloat>(x: ndarray::ArrayView2<'_, f64>) -> Vec<T> {
    x.iter().map(|&v| T::of(v)).collect()
}

fn apply_host<T: GpuFloat>(gpu: &'static Gpu, args: &PoincareArgs<'_>) -> Result<PoincareOut> {
    let op = args.op();
    let (rows, dim) = args.x().dim();
    let x = gpu.upload(&flat::<T>(args.x()))?;
    let y = args.y().map(|y| gpu.upload(&flat::<T>(y))).transpose()?;
    let g = args.g().map(|g| gpu.upload(&flat::<T>(g))).transpose()?;
    let width = if op.scalar_out() { 1 } else { dim };
    let mut out = gpu.alloc::<T>(rows * width)?;
    out.poison()?;
    let vjp = op == BallOp::DistTangentVjp;
    let mut out2 = vjp.then(|| gpu.alloc::<T>(rows * dim)).transpose()?;
    let mut dc_rows = vjp.then(|| gpu.alloc::<T>(rows)).transpose()?;
    for b in out2.iter_mut().chain(dc_rows.iter_mut()) {
        b.poison()?;
    }
    let ptr = |b: &Option<Buf<T>>| b.as_ref().map_or(DevicePointer::null(), Buf::ptr);
    launch_apply(
        gpu,
        op,
        &x,
        ptr(&y),
        ptr(&g),
        &out,
        ptr(&out2),
        ptr(&dc_rows),
        rows,
        dim,
        T::of(args.curvature().c()),
    )?;
    let widen = |v: Vec<T>, cols: usize| {
        Array2::from_shape_vec((rows, cols), v.into_iter().map(T::to_f64_exact).collect())
            .expect("invariant: the buffer holds rows × cols values")
    };
    Ok(PoincareOut {
        out: widen(out.to_vec()?, width),
        out2: out2
            .map(|b| b.to_vec().map(|v| widen(v, dim)))
            .transpose()?,
        dc: dc_rows
            .map(|b| b.to_vec().map(|v| v.into_iter().map(T::to_f64_exact).sum()))
            .transpose()?,
    })
}

impl Poincare for Cuda {
    fn poincare(&self, args: &PoincareArgs<'_>, precision: Precision) -> Result<PoincareOut> {
        match precision {
            Precision::F32 => apply_host::<f32>(self.gpu()?, args),
            Precision::F64 => apply_host::<f64>(self.gpu()?, args),
        }
    }
}
