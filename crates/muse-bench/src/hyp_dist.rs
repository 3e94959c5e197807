//! Pairwise distance-matrix KPIs (design hyperbolic.md §7): the tangent-input kernel at the
//! `torch.cdist` shapes of `ci/baselines/torch_hyp.py` (goal: within 1.5× of cdist, the issue),
//! the PyTorch law-of-cosines matrix beside it, and the ptxas resources of every kernel file
//! (spills of the distance kernels gated at 0). Launcher: `crates/muse-cuda/src/hyp_dist.rs`.

use muse_reference::hyp_dist::{HypDist, HypDistArgs, HypDistInput};
use muse_reference::{Cpu, Dtype};
use muse_verify::report::Site;

use crate::hyp_small::{cpu_time, randn};
use crate::{CpuCtx, Family, Plot, Result};

/// Curvature of the benchmark inputs.
const C: f64 = 0.693;
/// (B, H, N = M, D) of the GPU shapes.
pub const KPI: [(usize, usize, usize, usize); 3] =
    [(8, 8, 1024, 64), (1, 8, 4096, 64), (1, 8, 4096, 128)];

/// The distance-matrix family.
#[derive(Debug, Clone, Copy)]
pub struct HypDistFamily;

fn inputs(
    (b, h, n, d): (usize, usize, usize, usize),
) -> (ndarray::Array4<f64>, ndarray::Array4<f64>) {
    let s = 1.0 / (C.sqrt() * (d as f64).sqrt());
    (randn((b, h, n, d), s, 9), randn((b, h, n, d), s, 10))
}

impl Family for HypDistFamily {
    fn stem(&self) -> &'static str {
        "hyp_dist"
    }

    fn cpu(&self, ctx: &mut CpuCtx<'_>) -> Result<Option<Plot>> {
        let dims = (1, 1, 512, 64);
        let (x, y) = inputs(dims);
        let args = HypDistArgs::new(x.view(), y.view(), C, HypDistInput::Tangent)?;
        let site = Site {
            kernel: "hyp_dist",
            backend: "cpu",
            case: "tangent_B1xH1xN512xD64",
            shape: &[1, 1, 512, 512, 64],
            dtype: "f32",
        };
        cpu_time(ctx, &site, || Cpu.hyp_dist(&args, Dtype::F32).map(|_| ()))?;
        Ok(None)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, ctx: &mut crate::CudaCtx<'_>) -> Result<Option<Plot>> {
        use muse_cuda::hyp_dist;
        use muse_verify::Target;

        use crate::records::event_timing;
        use crate::timing::time_events;
        let gpu = ctx.gpu;
        for k in ["cdist", "hyp_dist"] {
            for row in ctx.torch.claim(k) {
                ctx.report.records.extend(row.records());
            }
        }
        for dims in KPI {
            let (b, h, n, d) = dims;
            let (x, y) = inputs(dims);
            let args = HypDistArgs::new(x.view(), y.view(), C, HypDistInput::Tangent)?;
            let p = hyp_dist::Problem::<f32>::upload(gpu, &args, Dtype::F32)?;
            let mut ws = hyp_dist::Workspace::new(gpu, &p)?;
            let t = time_events(gpu, 5, ctx.runs, || hyp_dist::forward(gpu, &p, &mut ws))?;
            let (case, shape) = (format!("tangent_B{b}xH{h}xN{n}xD{d}"), [b, h, n, n, d]);
            let site = Site {
                kernel: "hyp_dist",
                backend: "cuda",
                case: &case,
                shape: &shape,
                dtype: "f32",
            };
            ctx.report.records.extend(event_timing(&site, &t, None));
            let out_gbs = (b * h * n * n * 4) as f64 / (t.median_us * 1e-6) / 1e9;
            ctx.report
                .records
                .push(site.record("output_gb_per_s", out_gbs, "GB/s", None));
            if let Some(ms) = ctx
                .torch
                .median_ms("torch_cdist", "cdist", &[b, h, n, n, d])
            {
                ctx.report.records.push(site.goal(
                    "time_over_torch_cdist",
                    t.median_us / (ms * 1e3),
                    "x",
                    Target::AtMost(1.5),
                ));
            }
            if let Some(ms) =
                ctx.torch
                    .median_ms("torch_dense_hyp_dist", "hyp_dist", &[b, h, n, n, d])
            {
                ctx.report.records.push(site.record(
                    "speedup_vs_torch_hyp_dist",
                    ms * 1e3 / t.median_us,
                    "x",
                    None,
                ));
            }
        }
        crate::records::ptxas::push(ctx);
        Ok(None)
    }
}
