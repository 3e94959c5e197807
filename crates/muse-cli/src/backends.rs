//! Which backends this build and machine can run, and why one is missing.

use muse_cuda::Cuda;

/// A backend named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    /// The CPU reference.
    Cpu,
    /// The CUDA kernels (needs `--features cuda` and a GPU).
    Cuda,
}

/// Opens the CUDA backend, or returns the reason it is unavailable.
pub fn open_cuda() -> Result<Cuda, String> {
    Cuda::new().map_err(|e| e.to_string())
}
