//! BK-Core KPIs (`G_ii = [(T − zI)⁻¹]_ii` for a batch of tridiagonal T, design bk-core.md §9–§10)
//! at the original's shapes and over an N sweep: on the CPU reference (`cpu.rs`) and on the CUDA
//! kernels (`cuda.rs`; launchers in `crates/muse-cuda/src/bk_core.rs`, `bk_core_bwd.rs`). Shapes
//! and inputs come from `muse_verify::cases`, shared with the tests and `muse verify`.
//!
//! The records' kernel, case and metric names are the keys the CI gate compares with the
//! committed `reports/baselines/kpi-cuda.json`: rename nothing without a new baseline.

mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use crate::{CpuCtx, Family, Plot, Result};

/// Kernel of the PyTorch baseline rows without a `kernel` field: `ci/baselines/torch_bk_core.py`
/// times BK-Core forward implementations only.
pub const TORCH_KERNEL: &str = "bk_core_forward";

/// How the benchmark inputs are drawn (report meta `inputs`).
const INPUTS: &str = "a, b, c ~ N(0,1) seed 42, z = 0.1+0.1i (the original's benchmark inputs)";

/// The BK-Core family.
#[derive(Debug, Clone, Copy)]
pub struct BkCore;

impl Family for BkCore {
    fn stem(&self) -> &'static str {
        "bk_core"
    }

    /// `kpi.svg` and `kpi-cuda.svg`: the names from before there were families.
    fn plot_file(&self, report_stem: &str) -> String {
        format!("{report_stem}.svg")
    }

    fn cpu(&self, ctx: &mut CpuCtx<'_>) -> Result<Option<Plot>> {
        cpu::run(ctx).map(Some)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, ctx: &mut crate::CudaCtx<'_>) -> Result<Option<Plot>> {
        cuda::run(ctx).map(Some)
    }
}
