//! The model's workspaces on the GPU's pool (design `hyperbolic.md` §10): they are built inside
//! a [`Pooled`](crate::pool::Pooled) scope, so the unchanged `gpu.alloc` calls of the forward's
//! workspace, a trainer's `TrainWs` and the launchers' workspaces they make take pool blocks.
//! On by default; [`CudaModel::set_pooled`] turns it off (driver allocations, as before).
//! The weights stay driver allocations either way.

use std::sync::PoisonError;

use super::CudaModel;

impl CudaModel {
    /// Whether the forward's workspaces (and those of a trainer owning the model) are blocks of
    /// the GPU's pool ([`Gpu::pool`](crate::Gpu::pool)); true unless turned off.
    ///
    /// ```no_run
    /// use muse_cuda::{gemm::GemmMath, model::forward::CudaModel, Gpu};
    /// use muse_reference::model::{ModelDims, ModelWeights, Numerics};
    /// let d = ModelDims { vocab: 50, d_model: 16, layers: 1, heads: 2, htt_rank: 4, n_seq: 8,
    ///                     window: 4, ssm_rank: 8, ssm_hidden: 4 };
    /// let w = ModelWeights::<f32>::zeros(&d);
    /// let m = CudaModel::new(Gpu::get()?, d, &w, Numerics::exact(), GemmMath::Fp32)?;
    /// assert!(m.pooled());
    /// # Ok::<(), muse_reference::Error>(())
    /// ```
    pub fn pooled(&self) -> bool {
        self.pooled
    }

    /// Takes the workspaces from the pool (`true`) or from the driver, one allocation per
    /// buffer (`false`: what the memory figures measured before the pool). Drops the cached
    /// workspace, so the next forward builds one on the chosen path.
    ///
    /// ```no_run
    /// use muse_cuda::{gemm::GemmMath, model::forward::CudaModel, Gpu};
    /// use muse_reference::model::{ModelDims, ModelWeights, Numerics};
    /// let d = ModelDims { vocab: 50, d_model: 16, layers: 1, heads: 2, htt_rank: 4, n_seq: 8,
    ///                     window: 4, ssm_rank: 8, ssm_hidden: 4 };
    /// let gpu = Gpu::get()?;
    /// let mut m = CudaModel::new(gpu, d, &ModelWeights::<f32>::zeros(&d), Numerics::exact(), GemmMath::Fp32)?;
    /// m.set_pooled(false);
    /// let ids = ndarray::Array2::from_elem((1, 8), 3usize);
    /// let before = gpu.live_bytes();
    /// m.enqueue(ids.view())?; // the workspace: one cuMemAlloc per buffer
    /// assert!(gpu.live_bytes() > before);
    /// # Ok::<(), muse_reference::Error>(())
    /// ```
    pub fn set_pooled(&mut self, on: bool) {
        if on == self.pooled {
            return;
        }
        *self.ws.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
        self.trim_pool();
        self.pooled = on;
    }

    /// Runs `f` (which builds a workspace) inside a pooled scope when pooling is on.
    pub(crate) fn routed<R>(&self, f: impl FnOnce() -> R) -> R {
        let _scope = self.pooled.then(|| self.gpu.pooled());
        f()
    }

    /// Gives the pool's wholly free slabs back to the driver (when pooled), so that a dropped
    /// workspace leaves the allocation peak as it does on the driver path, rather than idling
    /// in the pool into the next measurement.
    pub(crate) fn trim_pool(&self) {
        if self.pooled {
            self.gpu.pool().trim();
        }
    }
}

impl Drop for CudaModel {
    fn drop(&mut self) {
        // The workspace's blocks go back first, then their slabs to the driver.
        *self.ws.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
        self.trim_pool();
    }
}
