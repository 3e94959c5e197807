//! The Phase 8 ResNet-BK language model (design model.md): configs ([`Config`]), the original's
//! weight names ([`spec`]), safetensors weights ([`Weights`]), a seeded init ([`init`]) and the
//! forward pass under a numerics [`Profile`].
//!
//! ```
//! use muse_model::{Config, Model, Profile};
//! let cfg = Config::named("tiny").unwrap();
//! let model = Model::new(muse_model::init::init(&cfg, 1));
//! let ids = ndarray::Array2::from_shape_fn((1, 8), |(_, n)| n * 7);
//! let logits = model.forward_cpu::<f32>(ids.view(), Profile::Exact)?;
//! assert_eq!(logits.dim(), (1, 8, 1000));
//! # Ok::<(), anyhow::Error>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod config;
pub mod init;
pub mod spec;
pub mod vram;
mod weights;

pub use config::Config;
pub use weights::{named_tensors, Weights};

use anyhow::Result;
use ndarray::{Array3, ArrayView2};

use muse_reference::model::{forward, ModelWeights, Numerics};
use muse_reference::Elem;

/// The numerics of a forward pass (design §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// Exact hyperbolic attention, exact BK-Core, a causal AR-SSM with a true cumsum.
    #[default]
    Exact,
    /// Bug-compatible with the original's CUDA benchmark path at `1c8b31b` (what produced the
    /// published numbers): 'fast' approximate distance (TF32 dots), pseudo-cumsum, non-causal conv.
    Bench,
    /// The original's PyTorch path at the same commit (its CPU run): ball-form attention with
    /// its clamps, a true cumsum, non-causal conv.
    BenchCpu,
}

impl Profile {
    /// The CLI names.
    pub const NAMES: [&'static str; 3] = ["exact", "bench", "bench-cpu"];

    /// The name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Bench => "bench",
            Self::BenchCpu => "bench-cpu",
        }
    }

    /// The reference layers' numerics for this profile.
    pub fn numerics(self) -> Numerics {
        match self {
            Self::Exact => Numerics::exact(),
            Self::Bench => Numerics::bench(),
            Self::BenchCpu => Numerics::bench_cpu(),
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "exact" => Ok(Self::Exact),
            "bench" => Ok(Self::Bench),
            "bench-cpu" => Ok(Self::BenchCpu),
            _ => Err(format!(
                "unknown profile `{s}` (expected one of: {})",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// A model with its weights.
#[derive(Debug, Clone)]
pub struct Model {
    weights: Weights,
}

impl Model {
    /// Wraps validated weights.
    pub fn new(weights: Weights) -> Self {
        Self { weights }
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.weights.config
    }

    /// The weights.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// Logits (B, N, V) on the CPU in precision `F` (f32, or f64 as the oracle).
    pub fn forward_cpu<F: Elem>(
        &self,
        ids: ArrayView2<'_, usize>,
        profile: Profile,
    ) -> Result<Array3<F>> {
        self.forward_cpu_with::<F>(ids, &profile.numerics())
    }

    /// The model on the GPU under `profile` (weights uploaded, decoder table built). `tf32` runs
    /// the GEMMs on TF32 tensor cores (about 6e-4 relative error per dot); verification uses
    /// full fp32.
    #[cfg(feature = "cuda")]
    pub fn cuda(
        &self,
        profile: Profile,
        tf32: bool,
    ) -> Result<muse_cuda::model::forward::CudaModel> {
        let gpu = muse_cuda::Cuda::new()?.gpu()?;
        let math = if tf32 {
            muse_cuda::gemm::GemmMath::Tf32
        } else {
            muse_cuda::gemm::GemmMath::Fp32
        };
        Ok(muse_cuda::model::forward::CudaModel::new(
            gpu,
            self.config().dims(),
            &self.weights.model::<f32>(),
            profile.numerics(),
            math,
        )?)
    }

    /// The model on the GPU with every GEMM in bf16 (the numerics of [`Model::forward_cpu_bf16`]).
    #[cfg(feature = "cuda")]
    pub fn cuda_bf16(&self, profile: Profile) -> Result<muse_cuda::model::forward::CudaModel> {
        let gpu = muse_cuda::Cuda::new()?.gpu()?;
        let w = self.weights.model::<f32>().with_bf16_gemms();
        Ok(muse_cuda::model::forward::CudaModel::new(
            gpu,
            self.config().dims(),
            &w,
            profile.numerics(),
            muse_cuda::gemm::GemmMath::Fp32,
        )?)
    }

    /// The Phase 8 side branch on the GPU (HTT(ids) + fusion(HTT(ids)), discarded by the
    /// original); `None` when the config has no fusion module.
    #[cfg(feature = "cuda")]
    pub fn side_branch_cuda(&self, ids: ArrayView2<'_, usize>) -> Result<Option<Array3<f32>>> {
        let Some(fw) = self.weights.fusion::<f32>() else {
            return Ok(None);
        };
        let gpu = muse_cuda::Cuda::new()?.gpu()?;
        let side = muse_cuda::model_side::SideBranch::new(gpu, &fw)?;
        Ok(Some(
            self.cuda(Profile::Exact, false)?.side_branch(&side, ids)?,
        ))
    }

    /// Without the `cuda` feature: the reason the GPU path is missing.
    #[cfg(not(feature = "cuda"))]
    pub fn cuda(&self, _profile: Profile, _tf32: bool) -> Result<std::convert::Infallible> {
        anyhow::bail!("{}", muse_cuda::NOT_COMPILED)
    }

    /// Logits (B, N, V) from the GPU path ([`Model::cuda`], built once per call); without the
    /// `cuda` feature, the reason it is missing. The same signature in every build, so callers
    /// need no feature of their own.
    pub fn forward_cuda(
        &self,
        ids: ArrayView2<'_, usize>,
        profile: Profile,
        tf32: bool,
    ) -> Result<Array3<f32>> {
        #[cfg(feature = "cuda")]
        {
            Ok(self.cuda(profile, tf32)?.forward(ids)?)
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (ids, profile, tf32);
            anyhow::bail!("{}", muse_cuda::NOT_COMPILED)
        }
    }

    /// [`Model::forward_cuda`] with every GEMM in bf16 (`Model::cuda_bf16`, with the `cuda` feature).
    pub fn forward_cuda_bf16(
        &self,
        ids: ArrayView2<'_, usize>,
        profile: Profile,
    ) -> Result<Array3<f32>> {
        #[cfg(feature = "cuda")]
        {
            Ok(self.cuda_bf16(profile)?.forward(ids)?)
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (ids, profile);
            anyhow::bail!("{}", muse_cuda::NOT_COMPILED)
        }
    }

    /// The mean cross-entropy of predicting `targets` from `ids` and its exact gradient on the GPU
    /// (f32, fp32 GEMMs; `muse_cuda::model::train::CudaTrainer`), as weights of f64 (the
    /// gradient's f32 values, exact in f64); without the `cuda` feature, the reason it is missing.
    pub fn loss_and_grad_cuda(
        &self,
        ids: ArrayView2<'_, usize>,
        targets: ArrayView2<'_, usize>,
    ) -> Result<(f64, ModelWeights<f64>)> {
        #[cfg(feature = "cuda")]
        {
            use muse_reference::model::grad::{for_each_param, zeros_like};
            let gpu = muse_cuda::Cuda::new()?.gpu()?;
            let mut t = muse_cuda::model::train::CudaTrainer::new(
                gpu,
                self.config().dims(),
                &self.weights.model::<f32>(),
                muse_cuda::gemm::GemmMath::Fp32,
            )?;
            let loss = f64::from(t.loss_and_grad(ids, targets)?);
            let mut flat = t.grads()?.into_iter().flat_map(|(_, v)| v);
            let mut g = zeros_like(&self.weights.model::<f64>());
            let mut missing = false;
            for_each_param(&mut g, &mut |_, v| match flat.next() {
                Some(x) => *v = f64::from(x),
                None => missing = true,
            });
            anyhow::ensure!(
                !missing && flat.next().is_none(),
                "the device gradient does not match the parameter layout"
            );
            Ok((loss, g))
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (ids, targets);
            anyhow::bail!("{}", muse_cuda::NOT_COMPILED)
        }
    }

    /// The Phase 8 side branch on the CPU (design §2.2): HTT(ids) + fusion(HTT(ids)), (B, N, D).
    /// The original computes and discards it; it never changes the logits. `None` when the config
    /// has no fusion module.
    pub fn side_branch_cpu<F: Elem>(&self, ids: ArrayView2<'_, usize>) -> Option<Array3<F>> {
        let fw = self.weights.fusion::<F>()?;
        let htt = self.weights.model::<F>().htt;
        Some(muse_reference::model::side_branch(
            &htt,
            &fw,
            ids,
            self.config().d_model,
        ))
    }

    /// Logits on the CPU with every GEMM in bf16 (inputs rounded to bf16, fp32 sums; everything
    /// else in f32), the numerics of a bf16 tensor-core path.
    pub fn forward_cpu_bf16(
        &self,
        ids: ArrayView2<'_, usize>,
        profile: Profile,
    ) -> Result<Array3<f32>> {
        let w = self.weights.model::<f32>().with_bf16_gemms();
        Ok(forward(
            &self.config().dims(),
            &w,
            &profile.numerics(),
            ids,
        )?)
    }

    /// [`Model::forward_cpu`] with explicit numerics (e.g. a profile with a knob changed).
    pub fn forward_cpu_with<F: Elem>(
        &self,
        ids: ArrayView2<'_, usize>,
        num: &Numerics,
    ) -> Result<Array3<F>> {
        let w = self.weights.model::<F>();
        Ok(forward(&self.config().dims(), &w, num, ids)?)
    }
}
