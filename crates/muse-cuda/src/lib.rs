//! CUDA backend of muse: kernels in `kernels/*.cu`, compiled to sm_90 cubins by `build.rs` and
//! launched through `cust`, one typed launcher per kernel next to its `.cu` file.
//!
//! Without the `cuda` feature the same types exist (so code and tests compile unchanged), but
//! [`Cuda::new`] fails with the reason; the default build never links libcuda.
//!
//! ```no_run
//! use muse_cuda::Cuda;
//! use muse_reference::{bk_core::{BkCore, BkCoreArgs}, Precision};
//! let gpu = Cuda::new()?;
//! let (a, off) = (ndarray::Array2::from_elem((2, 8), 2.0), ndarray::Array2::<f64>::ones((2, 7)));
//! let args = BkCoreArgs::new(a.view(), off.view(), off.view(), num_complex::Complex64::new(0.0, 0.1))?;
//! let g = gpu.bk_core(&args, Precision::F32)?;
//! # Ok::<(), muse_reference::Error>(())
//! ```
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod ptxas;
mod source_hash;
pub use source_hash::kernel_sources_sha256;

/// The generated kernel tables (`build.rs`): per kernel file `CUBIN`, the kernel names, the
/// `#define` constants and `PTXAS` (the ptxas `-v` report; see [`ptxas`]), and `PTXAS_REPORTS`.
#[cfg(feature = "cuda")]
pub mod kernels {
    pub use crate::device::k::*;
}

#[cfg(feature = "cuda")]
pub mod bk_core;
#[cfg(feature = "cuda")]
pub mod bk_core_bwd;
#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
pub mod gemm;
#[cfg(feature = "cuda")]
pub mod hyp_attn;
#[cfg(feature = "cuda")]
pub mod hyp_attn_bwd;
#[cfg(feature = "cuda")]
pub mod hyp_attn_tc;
#[cfg(feature = "cuda")]
pub mod hyp_attn_tc_bwd;
#[cfg(feature = "cuda")]
pub mod hyp_dist;
#[cfg(feature = "cuda")]
pub mod hyp_int8;
#[cfg(feature = "cuda")]
pub mod hyp_ln;
#[cfg(feature = "cuda")]
pub mod hyp_ln_bwd;
#[cfg(feature = "cuda")]
pub mod kv4;
#[cfg(feature = "cuda")]
mod lazy;
#[cfg(feature = "cuda")]
pub mod lin_attn;
#[cfg(feature = "cuda")]
pub mod lin_attn_bwd;
#[cfg(feature = "cuda")]
pub mod model;
#[cfg(feature = "cuda")]
pub mod model_attn;
#[cfg(feature = "cuda")]
pub mod model_bwd;
#[cfg(feature = "cuda")]
pub mod model_side;
#[cfg(feature = "cuda")]
pub mod poincare;
#[cfg(feature = "cuda")]
pub mod pool;
#[cfg(feature = "cuda")]
pub mod sparse_attn;
#[cfg(feature = "cuda")]
pub mod timing;
#[cfg(feature = "cuda")]
pub mod train;
#[cfg(feature = "cuda")]
pub mod vram;
#[cfg(feature = "cuda")]
pub mod w4a8;

#[cfg(feature = "cuda")]
pub use device::{Buf, Cuda, DeviceInfo, Gpu, GpuFloat, View};

#[cfg(not(feature = "cuda"))]
mod dummy;
#[cfg(not(feature = "cuda"))]
pub use dummy::Cuda;

/// Why the CUDA backend is missing from this build.
pub const NOT_COMPILED: &str = "CUDA backend unavailable: muse was built without the `cuda` feature (rebuild with `--features cuda`, see ci/cuda-setup.sh)";

/// nvcc release the kernels were compiled with.
#[cfg(feature = "cuda")]
pub const NVCC_VERSION: &str = env!("MUSE_NVCC_VERSION");
/// GPU architecture the cubins target, e.g. `sm_90`.
#[cfg(feature = "cuda")]
pub const CUDA_ARCH: &str = env!("MUSE_CUDA_ARCH");
/// [`kernel_sources_sha256`] of the kernels compiled into this binary.
#[cfg(feature = "cuda")]
pub const KERNEL_SOURCES_SHA256: &str = env!("MUSE_KERNEL_SOURCES_SHA256");

/// Path of the kernel sources relative to the repository root, hashed into every GPU report.
pub const KERNELS_DIR: &str = "crates/muse-cuda/kernels";
