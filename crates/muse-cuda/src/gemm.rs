//! The one GEMM op of the crate: row-major C = A·Wᵀ (+ β C) in f32 through cuBLAS, loaded at run
//! time by `cudarc` (nothing links at build time; toolchain-and-testing.md §8), on the GPU's stream.
//!
//! `COMPUTE_32F` (full fp32) is the default and what verification uses; TF32 tensor cores
//! (`COMPUTE_32F_FAST_TF32`, about 6e-4 relative error per dot at K = 512) are opt-in.

use std::ffi::c_void;
use std::sync::{Mutex, OnceLock};

use cudarc::cublas::{result as cublas, sys};
use muse_reference::{Error, Result};

use crate::device::{Buf, Gpu, View};

/// How a GEMM multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GemmMath {
    /// IEEE fp32 products and sums.
    #[default]
    Fp32,
    /// TF32 tensor cores (10-bit mantissa inputs, fp32 accumulation).
    Tf32,
    /// fp16 operands (rounded to nearest, ±inf past 65504), fp32 accumulation and output: the
    /// backward GEMMs of fp16 training, whose gradient operands are loss-scaled so that they
    /// neither underflow nor (at a sane scale) overflow.
    Fp16,
}

/// The 16-bit format of a mixed-precision model's GEMM operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HalfFormat {
    /// bfloat16 (8-bit exponent): no loss scaling needed.
    #[default]
    Bf16,
    /// IEEE fp16 (5-bit exponent): with dynamic loss scaling.
    Fp16,
}

impl HalfFormat {
    fn data_type(self) -> sys::cudaDataType {
        match self {
            HalfFormat::Bf16 => sys::cudaDataType::CUDA_R_16BF,
            HalfFormat::Fp16 => sys::cudaDataType::CUDA_R_16F,
        }
    }
}

/// Scratch for the fp16 copies of [`gemm`]'s operands under [`GemmMath::Fp16`], grown on demand.
static SCRATCH: Mutex<Option<(Buf<u16>, Buf<u16>)>> = Mutex::new(None);

/// The cuBLAS handle and the workspace it was given (kept alive with it).
struct Handle(sys::cublasHandle_t, #[allow(dead_code)] Buf<u8>);
// SAFETY: the handle is only used under the mutex below (one call at a time), always with the
// process-wide GPU's context current and its one stream; the workspace is only touched by cuBLAS.
unsafe impl Send for Handle {}

/// cuBLAS's workspace: given explicitly (rather than allocated by cuBLAS on first use) so that
/// GEMMs can be captured in a CUDA graph, and so that its bytes count in the allocation peak.
const WORKSPACE_BYTES: usize = 32 << 20;

static HANDLE: OnceLock<std::result::Result<Mutex<Handle>, String>> = OnceLock::new();

fn cublas_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Backend {
        backend: "cuda",
        message: format!("cuBLAS {what}: {e}"),
    }
}

fn handle(gpu: &'static Gpu) -> Result<&'static Mutex<Handle>> {
    HANDLE
        .get_or_init(|| {
            let h = std::panic::catch_unwind(cublas::create_handle)
                .map_err(|_| {
                    "libcublas.so could not be loaded (is the CUDA toolkit's cuBLAS installed?)"
                        .to_string()
                })?
                .map_err(|e| format!("creating a handle: {e}"))?;
            // SAFETY: `h` is a live handle and the stream outlives the process-wide GPU.
            unsafe { cublas::set_stream(h, gpu.stream.as_inner() as sys::cudaStream_t) }
                .map_err(|e| format!("binding the stream: {e}"))?;
            // The driver path: this lives as long as the process, not a pool block.
            let ws = gpu
                .alloc_driver::<u8>(WORKSPACE_BYTES)
                .map_err(|e| format!("allocating the workspace: {e}"))?;
            // SAFETY: `ws` is a live device allocation of WORKSPACE_BYTES that lives as long as the
            // handle (both are kept in the static below).
            let r = unsafe {
                sys::cublasSetWorkspace_v2(h, ws.ptr().as_raw() as *mut c_void, WORKSPACE_BYTES)
            };
            r.result()
                .map_err(|e| format!("setting the workspace: {e}"))?;
            Ok(Mutex::new(Handle(h, ws)))
        })
        .as_ref()
        .map_err(|m| cublas_err("unavailable", m))
}

/// Row-major `C[m, n] = A[m, k]·W[n, k]ᵀ` with A and W as bf16 bits (u16) and C in f32, fp32
/// sums (`COMPUTE_32F`): a bf16 tensor-core GEMM.
pub fn gemm_nt_bf16(
    gpu: &'static Gpu,
    dims: (usize, usize, usize),
    a: &Buf<u16>,
    w: &Buf<u16>,
    c: &Buf<f32>,
) -> Result<()> {
    gemm_nt_half(gpu, HalfFormat::Bf16, dims, a, w, c)
}

/// [`gemm_nt_bf16`] with the operands' 16-bit format chosen.
pub fn gemm_nt_half(
    gpu: &'static Gpu,
    fmt: HalfFormat,
    dims: (usize, usize, usize),
    a: &Buf<u16>,
    w: &Buf<u16>,
    c: &Buf<f32>,
) -> Result<()> {
    gemm_ex_any(
        gpu,
        dims,
        (a.ptr().as_raw(), a.len()),
        (w.ptr().as_raw(), w.len()),
        c,
        0.0,
        fmt.data_type(),
        sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
    )
}

/// [`gemm_nt_bf16`] on views: row-major `C[m, n] = A[m, k]·W[n, k]ᵀ`, A and W bf16 bits, C f32.
pub fn gemm_nt_bf16_views(
    gpu: &'static Gpu,
    dims: (usize, usize, usize),
    a: View<'_, u16>,
    w: View<'_, u16>,
    c: View<'_, f32>,
) -> Result<()> {
    gemm_nt_half_views(gpu, HalfFormat::Bf16, dims, a, w, c)
}

/// [`gemm_nt_bf16_views`] with the operands' 16-bit format chosen.
pub fn gemm_nt_half_views(
    gpu: &'static Gpu,
    fmt: HalfFormat,
    (m, n, k): (usize, usize, usize),
    a: View<'_, u16>,
    w: View<'_, u16>,
    c: View<'_, f32>,
) -> Result<()> {
    gemm_raw(
        gpu,
        (m, n, k),
        (
            sys::cublasOperation_t::CUBLAS_OP_T,
            sys::cublasOperation_t::CUBLAS_OP_N,
        ),
        (w.ptr().as_raw(), w.len(), k),
        (a.ptr().as_raw(), a.len(), k),
        (c.ptr().as_raw(), c.len()),
        0.0,
        (
            fmt.data_type(),
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        ),
    )
}

/// Row-major `C[m, n] = A[m, k]·W[n, k]ᵀ + beta·C` (W stored (out, in), as `nn.Linear`).
pub fn gemm_nt(
    gpu: &'static Gpu,
    dims: (usize, usize, usize),
    a: &Buf<f32>,
    w: &Buf<f32>,
    c: &Buf<f32>,
    beta: f32,
    math: GemmMath,
) -> Result<()> {
    let compute = match math {
        GemmMath::Fp32 | GemmMath::Fp16 => sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        GemmMath::Tf32 => sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
    };
    gemm_ex_any(
        gpu,
        dims,
        (a.ptr().as_raw(), a.len()),
        (w.ptr().as_raw(), w.len()),
        c,
        beta,
        sys::cudaDataType::CUDA_R_32F,
        compute,
    )
}

/// Row-major `C[m, n] = op(A)·op(B) + beta·C` on views, f32 in and out: `op(A)` is A (m, k), or
/// Aᵀ of A stored (k, m) when `ta`; `op(B)` is B (k, n), or Bᵀ of B stored (n, k) when `tb`. The
/// backward's GEMMs: ∂X = ∂Y·W (`ta = tb = false`) and ∂W += ∂Yᵀ·X (`ta`, `beta = 1`).
///
/// ```no_run
/// use muse_cuda::{gemm::{gemm, GemmMath}, Gpu};
/// let gpu = Gpu::get()?;
/// let (a, b, c) = (gpu.upload(&[1.0f32; 6])?, gpu.upload(&[1.0f32; 6])?, gpu.alloc::<f32>(4)?);
/// gemm(gpu, (false, false), (2, 2, 3), a.view(), b.view(), c.view(), 0.0, GemmMath::Fp32)?;
/// assert_eq!(c.to_vec()?, vec![3.0; 4]);
/// # Ok::<(), muse_reference::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    gpu: &'static Gpu,
    (ta, tb): (bool, bool),
    (m, n, k): (usize, usize, usize),
    a: View<'_, f32>,
    b: View<'_, f32>,
    c: View<'_, f32>,
    beta: f32,
    math: GemmMath,
) -> Result<()> {
    if math == GemmMath::Fp16 {
        return gemm_fp16_operands(gpu, (ta, tb), (m, n, k), a, b, c, beta);
    }
    let compute = match math {
        GemmMath::Fp32 | GemmMath::Fp16 => sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        GemmMath::Tf32 => sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
    };
    let op = |t: bool| {
        if t {
            sys::cublasOperation_t::CUBLAS_OP_T
        } else {
            sys::cublasOperation_t::CUBLAS_OP_N
        }
    };
    // Column-major Cᵀ (n × m) = op(B)ᵀ·op(A)ᵀ: B as stored is op(B)ᵀ (ld n) unless `tb` (then
    // transposed, ld k); A likewise (ld k, or m when `ta`).
    let (ldb, lda) = (if tb { k } else { n }, if ta { m } else { k });
    gemm_raw(
        gpu,
        (m, n, k),
        (op(tb), op(ta)),
        (b.ptr().as_raw(), b.len(), ldb),
        (a.ptr().as_raw(), a.len(), lda),
        (c.ptr().as_raw(), c.len()),
        beta,
        (sys::cudaDataType::CUDA_R_32F, compute),
    )
}

/// [`gemm`] with A and B rounded to fp16 first (into [`SCRATCH`]), fp32 sums and output.
#[allow(clippy::too_many_arguments)]
fn gemm_fp16_operands(
    gpu: &'static Gpu,
    (ta, tb): (bool, bool),
    (m, n, k): (usize, usize, usize),
    a: View<'_, f32>,
    b: View<'_, f32>,
    c: View<'_, f32>,
    beta: f32,
) -> Result<()> {
    let (na, nb) = (m * k, k * n);
    let mut scratch = SCRATCH
        .lock()
        .map_err(|_| cublas_err("gemm", "a previous call panicked"))?;
    let grow = match scratch.as_ref() {
        Some((x, y)) => x.len() < na || y.len() < nb,
        None => true,
    };
    if grow {
        // Synchronise first: queued GEMMs may still read the old scratch.
        gpu.sync("growing the fp16 GEMM scratch")?;
        // The driver path: a process-wide scratch, not a pool block of whoever grew it.
        *scratch = Some((
            gpu.alloc_driver::<u16>(na.max(1 << 20))?,
            gpu.alloc_driver::<u16>(nb.max(1 << 20))?,
        ));
    }
    let (a16, b16) = scratch.as_ref().expect("allocated above");
    crate::model::to_fp16(gpu, a, a16.view(), na)?;
    crate::model::to_fp16(gpu, b, b16.view(), nb)?;
    let op = |t: bool| {
        if t {
            sys::cublasOperation_t::CUBLAS_OP_T
        } else {
            sys::cublasOperation_t::CUBLAS_OP_N
        }
    };
    let (ldb, lda) = (if tb { k } else { n }, if ta { m } else { k });
    gemm_raw(
        gpu,
        (m, n, k),
        (op(tb), op(ta)),
        (b16.ptr().as_raw(), nb, ldb),
        (a16.ptr().as_raw(), na, lda),
        (c.ptr().as_raw(), c.len()),
        beta,
        (
            sys::cudaDataType::CUDA_R_16F,
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        ),
    )
}

/// The forward's C = A·Wᵀ: A and W (device pointer, length in elements) of `in_type`, C f32.
#[allow(clippy::too_many_arguments)]
fn gemm_ex_any(
    gpu: &'static Gpu,
    (m, n, k): (usize, usize, usize),
    (a, a_len): (u64, usize),
    (w, w_len): (u64, usize),
    c: &Buf<f32>,
    beta: f32,
    in_type: sys::cudaDataType,
    compute: sys::cublasComputeType_t,
) -> Result<()> {
    // Column-major: Cᵀ (n × m, ld n) = W (k × n col-major, ld k)ᵀ · Aᵀ (k × m, ld k).
    gemm_raw(
        gpu,
        (m, n, k),
        (
            sys::cublasOperation_t::CUBLAS_OP_T,
            sys::cublasOperation_t::CUBLAS_OP_N,
        ),
        (w, w_len, k),
        (a, a_len, k),
        (c.ptr().as_raw(), c.len()),
        beta,
        (in_type, compute),
    )
}

/// One column-major cuBLAS GEMM: Cᵀ (n × m, ld n) = op1(X) (n × k) · op2(Y) (k × m), X and Y
/// given as (device pointer, length, leading dimension) of `in_type`; every length is checked
/// against the shape before the call.
#[allow(clippy::too_many_arguments)]
fn gemm_raw(
    gpu: &'static Gpu,
    (m, n, k): (usize, usize, usize),
    (op1, op2): (sys::cublasOperation_t, sys::cublasOperation_t),
    (x, x_len, ldx): (u64, usize, usize),
    (y, y_len, ldy): (u64, usize, usize),
    (c, c_len): (u64, usize),
    beta: f32,
    (in_type, compute): (sys::cudaDataType, sys::cublasComputeType_t),
) -> Result<()> {
    if x_len < n * k || y_len < m * k || c_len < m * n {
        return Err(Error::Backend {
            backend: "cuda",
            message: format!("gemm: buffers too small for ({m}, {n}, {k})"),
        });
    }
    let int = |x: usize| {
        i32::try_from(x).map_err(|_| cublas_err("gemm", format!("dimension {x} exceeds i32")))
    };
    let (mi, ni, ki) = (int(m)?, int(n)?, int(k)?);
    let (ldx, ldy) = (int(ldx)?, int(ldy)?);
    let alpha = 1.0f32;
    let guard = handle(gpu)?
        .lock()
        .map_err(|_| cublas_err("gemm", "a previous call panicked"))?;
    // SAFETY: x and y are live device allocations of `in_type` elements and c of f32, each at
    // least as long as the shape needs (checked above, with leading dimensions that the callers
    // derive from the same shape); alpha and beta are host scalars that outlive the call; the
    // handle is bound to the GPU's stream and guarded.
    unsafe {
        cublas::gemm_ex(
            guard.0,
            op1,
            op2,
            ni,
            mi,
            ki,
            (&alpha as *const f32).cast::<c_void>(),
            x as *const c_void,
            in_type,
            ldx,
            y as *const c_void,
            in_type,
            ldy,
            (&beta as *const f32).cast::<c_void>(),
            c as *mut c_void,
            sys::cudaDataType::CUDA_R_32F,
            ni,
            compute,
            sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| cublas_err("gemm_ex", e))
}
