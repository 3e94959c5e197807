//! The CUDA backend of a build without the `cuda` feature: same API, every call fails.

use muse_reference::bk_core::{BkCore, BkCoreArgs, BkCoreGrad};
use muse_reference::hyp_dist::{HypDist, HypDistArgs};
use muse_reference::hyp_ln::{HypLn, HypLnArgs, HypLnGrad, HypLnOut};
use muse_reference::kv4::{Kv4, Kv4DecodeArgs, Kv4Run};
use muse_reference::lin_attn::{LinAttn, LinAttnArgs, LinAttnGrad};
use muse_reference::{Backend, Dtype, Error, Precision, Result};
use ndarray::{Array2, Array4, ArrayView2, ArrayView4};
use num_complex::Complex64;

use crate::NOT_COMPILED;

/// The CUDA backend (not compiled in).
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
    /// Always fails: this build has no CUDA support.
    pub fn new() -> Result<Self> {
        Err(unavailable())
    }

    /// Device and build provenance for reports (none: there is no device).
    pub fn provenance(&self) -> Vec<(&'static str, String)> {
        Vec::new()
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

impl HypLn for Cuda {
    fn hyp_ln(&self, _: &HypLnArgs<'_>, _: Dtype) -> Result<HypLnOut> {
        Err(unavailable())
    }
    fn hyp_ln_grad(
        &self,
        _: &HypLnArgs<'_>,
        _: ArrayView2<'_, f64>,
        _: Dtype,
    ) -> Result<HypLnGrad> {
        Err(unavailable())
    }
}

impl Kv4 for Cuda {
    fn kv4_decode(&self, _: &Kv4DecodeArgs<'_>) -> Result<Kv4Run> {
        Err(unavailable())
    }
}

impl HypDist for Cuda {
    fn hyp_dist(&self, _: &HypDistArgs<'_>, _: Dtype) -> Result<Array4<f64>> {
        Err(unavailable())
    }
}

impl LinAttn for Cuda {
    fn lin_attn(&self, _: &LinAttnArgs<'_>, _: Dtype) -> Result<Array4<f64>> {
        Err(unavailable())
    }
    fn lin_attn_grad(
        &self,
        _: &LinAttnArgs<'_>,
        _: ArrayView4<'_, f64>,
        _: Dtype,
    ) -> Result<LinAttnGrad> {
        Err(unavailable())
    }
}

impl Backend for Cuda {
    const NAME: &'static str = "cuda";
    fn device(&self) -> String {
        "none".into()
    }
}

impl muse_reference::poincare::Poincare for Cuda {
    fn poincare(
        &self,
        _: &muse_reference::poincare::PoincareArgs<'_>,
        _: Precision,
    ) -> Result<muse_reference::poincare::PoincareOut> {
        Err(unavailable())
    }
}

impl muse_reference::hyp_attn::HypAttn for Cuda {
    fn hyp_attn(
        &self,
        _: &muse_reference::hyp_attn::HypAttnArgs<'_>,
        _: muse_reference::Dtype,
    ) -> Result<muse_reference::hyp_attn::HypAttnOut> {
        Err(unavailable())
    }
    fn hyp_attn_grad(
        &self,
        _: &muse_reference::hyp_attn::HypAttnArgs<'_>,
        _: ndarray::ArrayView4<'_, f64>,
        _: muse_reference::Dtype,
    ) -> Result<muse_reference::hyp_attn::HypAttnGrad> {
        Err(unavailable())
    }
}
