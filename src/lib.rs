//! muse: verified O(N) kernels of the ResNet-BK language model, a CPU reference beside each
//! CUDA kernel. This facade re-exports the member crates; see the README for the layout.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub use muse_cuda as cuda;
pub use muse_reference as reference;
pub use muse_reference::{bk_core, Backend, Cpu, Error, Precision, Result};
pub use muse_verify as verify;
