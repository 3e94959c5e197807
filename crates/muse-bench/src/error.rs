//! The error type of muse-bench: bad options, unreadable baselines, a missing CUDA backend, or a
//! failure of the kernels or the report machinery underneath (passed through unchanged).

use std::path::PathBuf;

/// Why a benchmark run failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An option is out of range, e.g. ``  `--runs 5`: use at least 100 timed repeats ``.
    #[error("`{flag}`: {rule}")]
    Option {
        /// The flag and the value given, e.g. `--runs 5`.
        flag: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// The PyTorch baseline JSON cannot be read or has a malformed record.
    #[error("`--torch-baseline {}`: {message}", path.display())]
    Baseline {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// GPU benchmarks asked of a build without the `cuda` feature.
    #[error("{}", muse_cuda::NOT_COMPILED)]
    NotCompiledWithCuda,
    /// A kernel or the backend failed.
    #[error(transparent)]
    Kernel(#[from] muse_reference::Error),
    /// The memory pool failed on the benchmark workload.
    #[error("memory pool: {0}")]
    Pool(#[from] muse_pool::PoolError),
    /// Verification machinery (checks, plots, reports) failed.
    #[error(transparent)]
    Verify(#[from] muse_verify::Error),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
