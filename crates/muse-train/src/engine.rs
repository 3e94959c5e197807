//! Where a training step runs: the CPU reference (float64 masters and moments, exact gradients)
//! or the device (`muse_cuda::model::train::CudaTrainer`: f32 masters, fused CUDA kernels). The
//! loop in `train.rs` is the same for both; checkpoints hold float64 either way (f32 values are
//! exact in f64, so a GPU run resumes bit for bit too).

use anyhow::{bail, Result};
use muse_reference::model::{forward, grad, ModelDims, ModelWeights, Numerics};
use ndarray::ArrayView2;
use serde::Serialize;

use crate::checkpoint::{flatten, into_flat, unflatten};
use crate::optim::{clip_grad_norm, AdamState, AdamW};
use crate::scaler::LossScaler;

/// The device of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Device {
    /// The CPU reference in float64.
    Cpu,
    /// The GPU in f32 (masters, moments, activations); `tf32` lets the GEMMs use TF32 tensor
    /// cores, `bf16` runs the forward's GEMMs on bf16 copies (mixed precision, f32 masters).
    Cuda {
        /// TF32 GEMMs.
        tf32: bool,
        /// bf16 forward GEMMs (`CudaTrainer::new_bf16`).
        bf16: bool,
        /// fp16 forward and backward GEMMs with dynamic loss scaling (`CudaTrainer::new_fp16`).
        fp16: bool,
    },
}

/// One run's optimiser state and step, on its device.
pub(crate) trait Engine {
    /// One step at learning rate `lr`: (batch loss, gradient norm before clipping).
    fn step(
        &mut self,
        ids: ArrayView2<'_, usize>,
        targets: ArrayView2<'_, usize>,
        lr: f64,
        clip: f64,
    ) -> Result<(f64, f64)>;
    /// Mean cross-entropy of a batch, no gradient.
    fn eval(&mut self, ids: ArrayView2<'_, usize>, targets: ArrayView2<'_, usize>) -> Result<f64>;
    /// Steps taken.
    fn steps_taken(&self) -> u64;
    /// The parameters (flat, `for_each_param` order) and Adam's state, in float64.
    fn snapshot(&self) -> Result<(Vec<f64>, AdamState)>;
    /// The dynamic loss scaler's state (fp16 runs only), for the checkpoint.
    fn loss_scaler(&self) -> Option<LossScaler> {
        None
    }
}

/// The CPU reference's step.
pub(crate) struct CpuEngine {
    d: ModelDims,
    w: ModelWeights<f64>,
    p: Vec<f64>,
    adam: AdamState,
    opt: AdamW,
}

impl CpuEngine {
    pub(crate) fn new(
        d: ModelDims,
        w: ModelWeights<f64>,
        adam: Option<AdamState>,
        opt: AdamW,
    ) -> Self {
        let p = flatten(&w);
        let adam = adam.unwrap_or_else(|| AdamState::new(p.len()));
        Self { d, w, p, adam, opt }
    }
}

impl Engine for CpuEngine {
    fn step(
        &mut self,
        ids: ArrayView2<'_, usize>,
        targets: ArrayView2<'_, usize>,
        lr: f64,
        clip: f64,
    ) -> Result<(f64, f64)> {
        let (loss, g) = grad::loss_and_grad(&self.d, &self.w, &Numerics::exact(), ids, targets)?;
        let mut gflat = into_flat(g);
        let norm = clip_grad_norm(&mut gflat, clip);
        self.opt.step(&mut self.p, &gflat, &mut self.adam, lr);
        unflatten(&mut self.w, &self.p);
        Ok((loss, norm))
    }
    fn eval(&mut self, ids: ArrayView2<'_, usize>, targets: ArrayView2<'_, usize>) -> Result<f64> {
        let logits = forward(&self.d, &self.w, &Numerics::exact(), ids)?;
        Ok(grad::cross_entropy(logits.view(), targets)?.0)
    }
    fn steps_taken(&self) -> u64 {
        self.adam.step
    }
    fn snapshot(&self) -> Result<(Vec<f64>, AdamState)> {
        Ok((self.p.clone(), self.adam.clone()))
    }
}

/// The device's step.
#[cfg(feature = "cuda")]
pub(crate) struct CudaEngine {
    t: muse_cuda::model::train::CudaTrainer,
    opt: AdamW,
    scaler: Option<LossScaler>,
}

#[cfg(feature = "cuda")]
impl CudaEngine {
    pub(crate) fn new(
        d: ModelDims,
        w: &ModelWeights<f64>,
        w32: &ModelWeights<f32>,
        adam: Option<&AdamState>,
        opt: AdamW,
        (tf32, bf16, fp16): (bool, bool, bool),
        scaler: Option<LossScaler>,
    ) -> Result<Self> {
        use muse_cuda::gemm::GemmMath;
        use muse_cuda::model::train::CudaTrainer;
        let gpu = muse_cuda::Cuda::new()?.gpu()?;
        let math = if tf32 { GemmMath::Tf32 } else { GemmMath::Fp32 };
        let mut t = if fp16 {
            CudaTrainer::new_fp16(gpu, d, w32)?
        } else if bf16 {
            CudaTrainer::new_bf16(gpu, d, w32, math)?
        } else {
            CudaTrainer::new(gpu, d, w32, math)?
        };
        if let Some(a) = adam {
            // The checkpoint's f64 values were f32 on the device: exact both ways.
            let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
            t.load_state(&f(&flatten(w)), &f(&a.m), &f(&a.v), a.step)?;
        }
        let scaler = if fp16 {
            Some(scaler.unwrap_or_default())
        } else {
            None
        };
        Ok(Self { t, opt, scaler })
    }
}

#[cfg(feature = "cuda")]
impl Engine for CudaEngine {
    fn step(
        &mut self,
        ids: ArrayView2<'_, usize>,
        targets: ArrayView2<'_, usize>,
        lr: f64,
        clip: f64,
    ) -> Result<(f64, f64)> {
        let (b1, b2) = self.opt.betas;
        let h = muse_cuda::train::AdamStep {
            lr: lr as f32,
            weight_decay: self.opt.weight_decay as f32,
            b1: b1 as f32,
            b2: b2 as f32,
            eps: self.opt.eps as f32,
            c1: 0.0,
            c2: 0.0,
        };
        let Some(scaler) = self.scaler.as_mut() else {
            let loss = self.t.step(ids, targets, h, clip as f32)?;
            return Ok((f64::from(loss), f64::from(self.t.grad_norm()?)));
        };
        // fp16: retry the batch at a backed-off scale until its scaled gradient is finite.
        for _ in 0..64 {
            self.t.set_loss_scale(scaler.scale() as f32)?;
            let loss = self.t.step(ids, targets, h, clip as f32)?;
            if scaler.update(self.t.last_step_applied()) == crate::scaler::StepOutcome::Applied {
                return Ok((f64::from(loss), f64::from(self.t.grad_norm()?)));
            }
            if !loss.is_finite() {
                bail!("fp16: the forward overflowed (loss {loss}); train in bf16 or f32");
            }
        }
        bail!(
            "fp16: the gradient stayed non-finite through 64 loss-scale backoffs (scale now {:e})",
            scaler.scale()
        )
    }
    fn loss_scaler(&self) -> Option<LossScaler> {
        self.scaler
    }
    fn eval(&mut self, ids: ArrayView2<'_, usize>, targets: ArrayView2<'_, usize>) -> Result<f64> {
        Ok(f64::from(self.t.loss(ids, targets)?))
    }
    fn steps_taken(&self) -> u64 {
        self.t.steps_taken()
    }
    fn snapshot(&self) -> Result<(Vec<f64>, AdamState)> {
        let widen = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<f64>>();
        let p = widen(self.t.params_flat()?);
        let (m, v, step) = self.t.moments()?;
        Ok((
            p,
            AdamState {
                m: widen(m),
                v: widen(v),
                step,
            },
        ))
    }
}

/// The engine of `device` for the weights (`weights`, already holding `w`) and a resumed Adam
/// state.
pub(crate) fn make(
    device: Device,
    d: ModelDims,
    (w, weights): (ModelWeights<f64>, &muse_model::Weights),
    adam: Option<AdamState>,
    opt: AdamW,
    scaler: Option<LossScaler>,
) -> Result<Box<dyn Engine>> {
    match device {
        Device::Cpu => Ok(Box::new(CpuEngine::new(d, w, adam, opt))),
        #[cfg(feature = "cuda")]
        Device::Cuda { tf32, bf16, fp16 } => Ok(Box::new(CudaEngine::new(
            d,
            &w,
            &weights.model::<f32>(),
            adam.as_ref(),
            opt,
            (tf32, bf16, fp16),
            scaler,
        )?)),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda { .. } => {
            let _ = (d, w, weights, adam, opt, scaler);
            bail!("`--backend cuda`: {}", muse_cuda::NOT_COMPILED)
        }
    }
}

/// Refuses a non-finite loss or gradient norm, naming the step: the run stops there and its last
/// checkpoint (saved before this step) stays whole.
pub(crate) fn check_loss(loss: f64, grad_norm: f64, step: u64) -> Result<()> {
    if !loss.is_finite() {
        bail!("the training loss is {loss} at step {step} (lower `--lr`?)");
    }
    if !grad_norm.is_finite() {
        bail!("the gradient norm is {grad_norm} at step {step} (the loss was {loss}); the run stops before it spreads into the weights' checkpoint");
    }
    Ok(())
}
