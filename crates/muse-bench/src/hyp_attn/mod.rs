//! Hyperbolic attention KPIs (design hyperbolic.md §3.3, §3.7, §15): on the CPU reference
//! (informational) and on the GPU (`cuda.rs`): the bf16 tensor-core forward and the f32 SIMT
//! forward and backward at the shapes (causal, B8 H8, D ∈ {64, 128}, N ∈ {1024, 4096,
//! 16384}), pairs/s and the share of the special-function (MUFU) roofline, measured allocation
//! peaks against N, the language model's windowed shape (W = 64) in tokens/s, each beside the
//! PyTorch baselines of `ci/baselines/torch_hyp.py` from the same run.

#[cfg(feature = "cuda")]
mod cuda;

use muse_reference::hyp_attn::{HypAttn, HypAttnArgs, Mask};
use muse_reference::{Cpu, Dtype};
use muse_verify::cases::hyp_attn_inputs;
use muse_verify::plot::Series;
use muse_verify::report::Site;

use crate::records::cpu_timing;
use crate::timing::time;
use crate::{CpuCtx, Family, Plot, Result};

/// Curvature and β of every benchmark input (the layer's init, softplus(0)).
pub const C: f64 = 0.693;
/// β.
pub const BETA: f64 = 0.693;

/// The hyperbolic attention family.
#[derive(Debug, Clone, Copy)]
pub struct HypAttnFamily;

/// B, H of the attention KPI shapes.
pub const KPI_BH: (usize, usize) = (8, 8);
/// Head dims of the KPI shapes.
pub const KPI_D: [usize; 2] = [64, 128];
/// Sequence lengths of the KPI shapes.
pub const KPI_N: [usize; 3] = [1024, 4096, 16384];
/// Sequence lengths of the language model's windowed shape (W = 64, B8 H8 D64).
pub const WINDOW_N: [usize; 3] = [256, 1024, 4096];

impl Family for HypAttnFamily {
    fn stem(&self) -> &'static str {
        "hyp_attn"
    }

    fn cpu(&self, ctx: &mut CpuCtx<'_>) -> Result<Option<Plot>> {
        let mut points = Vec::new();
        for n in [128, 256, 512, 1024] {
            let (q, k, v, _) = hyp_attn_inputs((1, 2, n, n, 64, 64), C, 3);
            let args = HypAttnArgs::new(q.view(), k.view(), v.view(), C, BETA, Mask::Causal)?;
            for dtype in [Dtype::F64, Dtype::F32] {
                Cpu.hyp_attn(&args, dtype)?;
                let t = time(ctx.budget, || Cpu.hyp_attn(&args, dtype).map(|_| ()));
                let (case, shape) = (format!("causal_B1xH2xN{n}xD64"), [1, 2, n, n, 64, 64]);
                let site = Site {
                    kernel: "hyp_attn_fwd",
                    backend: "cpu",
                    case: &case,
                    shape: &shape,
                    dtype: dtype.name(),
                };
                ctx.report.records.extend(cpu_timing(&site, &t, None));
                if dtype == Dtype::F64 {
                    points.push((n as f64, t.median_ms));
                }
            }
        }
        Ok(Some(Plot {
            title: "Hyperbolic attention on the CPU reference (f64, causal, B1 H2 D64)".into(),
            unit: "ms",
            series: vec![Series {
                label: "cpu f64 forward".into(),
                points,
            }],
        }))
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, ctx: &mut crate::CudaCtx<'_>) -> Result<Option<Plot>> {
        cuda::run(ctx).map(Some)
    }
}

/// Visible (query, key) pairs of a causal N×N problem per (b, h): N(N+1)/2.
pub fn causal_pairs(n: usize) -> f64 {
    (n as f64) * (n as f64 + 1.0) / 2.0
}
