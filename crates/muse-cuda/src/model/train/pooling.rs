//! The training step's workspaces on the GPU's pool (design `hyperbolic.md` §10): the forward's
//! (through the model, `model/forward/pooling.rs`) and the backward's `TrainWs`, built inside a
//! pooled scope in `CudaTrainer::queue`. Weights, gradients and moments stay driver allocations.

use super::CudaTrainer;

impl CudaTrainer {
    /// Whether the step's workspaces (the forward's and the backward's) are blocks of the GPU's
    /// pool; true unless [`CudaTrainer::set_pooled`] turned it off.
    ///
    /// ```no_run
    /// # use muse_cuda::{model::train::CudaTrainer, Gpu, gemm::GemmMath};
    /// # use muse_reference::model::{ModelDims, ModelWeights};
    /// # let d = ModelDims { vocab: 50, d_model: 16, layers: 2, heads: 2, htt_rank: 4, n_seq: 8,
    /// #                     window: 4, ssm_rank: 8, ssm_hidden: 4 };
    /// let t = CudaTrainer::new(Gpu::get()?, d, &ModelWeights::<f32>::zeros(&d), GemmMath::Fp32)?;
    /// assert!(t.pooled());
    /// # Ok::<(), muse_reference::Error>(())
    /// ```
    pub fn pooled(&self) -> bool {
        self.model.pooled()
    }

    /// Takes the step's workspaces from the pool (`true`, the default) or from the driver, one
    /// allocation per buffer (`false`; see
    /// [`CudaModel::set_pooled`](crate::model::forward::CudaModel::set_pooled)); the next step
    /// rebuilds them.
    ///
    /// ```no_run
    /// # use muse_cuda::{model::train::CudaTrainer, Gpu, gemm::GemmMath};
    /// # use muse_reference::model::{ModelDims, ModelWeights};
    /// # let d = ModelDims { vocab: 50, d_model: 16, layers: 2, heads: 2, htt_rank: 4, n_seq: 8,
    /// #                     window: 4, ssm_rank: 8, ssm_hidden: 4 };
    /// let mut t = CudaTrainer::new(Gpu::get()?, d, &ModelWeights::<f32>::zeros(&d), GemmMath::Fp32)?;
    /// t.set_pooled(false);
    /// assert!(!t.pooled() && !t.model().pooled());
    /// # Ok::<(), muse_reference::Error>(())
    /// ```
    pub fn set_pooled(&mut self, on: bool) {
        if on != self.pooled() {
            self.tws = None;
            self.model.set_pooled(on);
        }
    }
}

impl Drop for CudaTrainer {
    fn drop(&mut self) {
        // The backward's blocks go back before the model drops: its `Drop` then trims the pool,
        // so a dropped trainer leaves no idle slabs in the next measurement.
        self.tws = None;
    }
}
