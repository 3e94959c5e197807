//! CUDA backend of muse. Placeholder until the CUDA issue lands: without the `cuda` feature the
//! [`Cuda`] type exists (so code and tests compile unchanged) but cannot be created.
#![deny(missing_docs)]

use muse_reference::bk_core::{BkCore, BkCoreArgs, BkCoreGrad};
use muse_reference::{Backend, Error, Precision, Result};
use ndarray::{Array2, ArrayView2};
use num_complex::Complex64;

/// Why the CUDA backend is missing from this build.
pub const NOT_COMPILED: &str = "CUDA backend unavailable: muse was built without the `cuda` feature (rebuild with `--features cuda`, see ci/cuda-setup.sh)";

/// The CUDA backend.
#[derive(Debug)]
pub struct Cuda {
    _private: (),
}

fn unavailable() -> Error {
    Error::Backend {
        backend: "cuda",
        message: NOT_COMPILED.into(),
    }
}

impl Cuda {
    /// Opens the first GPU. Fails with the reason when CUDA is not compiled in or not available.
    pub fn new() -> Result<Self> {
        Err(unavailable())
    }
}

impl BkCore for Cuda {
    fn bk_core(&self, _: &BkCoreArgs<'_>, _: Precision) -> Result<Array2<Complex64>> {
        Err(unavailable())
    }
    fn bk_core_grad(
        &self,
        _: &BkCoreArgs<'_>,
        _: ArrayView2<'_, Complex64>,
        _: Precision,
    ) -> Result<BkCoreGrad> {
        Err(unavailable())
    }
}

impl Backend for Cuda {
    const NAME: &'static str = "cuda";
    fn device(&self) -> String {
        "none".into()
    }
}
