//! Fused LayerNorm + hyperbolic projection KPIs (design hyperbolic.md §5): the GPU forward's
//! bytes moved per second against the device-to-device copy bandwidth measured by
//! `ci/baselines/torch_hyp.py` in the same run (goal ≥ 90 %, the issue), the backward's time, and
//! the eager PyTorch baseline beside them. Launchers: `crates/muse-cuda/src/hyp_ln{,_bwd}.rs`.

use muse_reference::hyp_ln::{HypLn, HypLnArgs, HypLnConfig};
use muse_reference::{Cpu, Dtype};
use muse_verify::report::Site;

use crate::hyp_small::{cpu_time, randn};
use crate::{CpuCtx, Family, Plot, Result};

/// Curvature of the benchmark inputs.
const C: f64 = 0.693;
/// Feature widths of the KPI shapes; R = 2^26 / D rows (256 MiB of f32 in, 256 MiB out).
pub const KPI_D: [usize; 3] = [64, 256, 1024];

/// The fused LayerNorm + projection family.
#[derive(Debug, Clone, Copy)]
pub struct HypLnFamily;

fn inputs(
    rows: usize,
    d: usize,
) -> (
    ndarray::Array2<f64>,
    ndarray::Array1<f64>,
    ndarray::Array1<f64>,
) {
    let x = randn((rows, d), 1.0, 3);
    // γ = 1/√D (design §5 pitfall: γ = 1 would put every row at the boundary).
    let gamma = ndarray::Array1::from_elem(d, 1.0 / (d as f64).sqrt());
    (x, gamma, ndarray::Array1::zeros(d))
}

impl Family for HypLnFamily {
    fn stem(&self) -> &'static str {
        "hyp_ln"
    }

    fn cpu(&self, ctx: &mut CpuCtx<'_>) -> Result<Option<Plot>> {
        for d in KPI_D {
            let rows = (1 << 16) / d;
            let (x, gamma, beta) = inputs(rows, d);
            let args = HypLnArgs::new(x.view(), gamma.view(), beta.view(), HypLnConfig::new(C))?;
            let (case, shape) = (format!("R{rows}xD{d}"), [rows, d]);
            let site = Site {
                kernel: "hyp_ln_fwd",
                backend: "cpu",
                case: &case,
                shape: &shape,
                dtype: "f32",
            };
            cpu_time(ctx, &site, || Cpu.hyp_ln(&args, Dtype::F32).map(|_| ()))?;
        }
        Ok(None)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, ctx: &mut crate::CudaCtx<'_>) -> Result<Option<Plot>> {
        use muse_cuda::{hyp_ln, hyp_ln_bwd};
        use muse_verify::Target;

        use crate::records::event_timing;
        use crate::timing::time_events;
        let gpu = ctx.gpu;
        let copy_gbs = ctx.torch.claim("d2d_copy").first().map(|r| {
            2.0 * (r.shape.get(2).copied().unwrap_or(0) * 4) as f64 / (r.median_ms * 1e-3) / 1e9
        });
        for row in ctx
            .torch
            .claim("d2d_copy")
            .into_iter()
            .chain(ctx.torch.claim("ln_exp0_fwd"))
            .chain(ctx.torch.claim("ln_exp0_fwd_bwd"))
        {
            ctx.report.records.extend(row.records());
        }
        for d in KPI_D {
            let rows = (1 << 26) / d;
            let (x, gamma, beta) = inputs(rows, d);
            let args = HypLnArgs::new(x.view(), gamma.view(), beta.view(), HypLnConfig::new(C))?;
            let p = hyp_ln::Problem::<f32>::upload(gpu, &args, Dtype::F32)?;
            let mut ws = hyp_ln::ForwardWs::new(gpu, &p, false)?;
            let t = time_events(gpu, 5, ctx.runs, || hyp_ln::forward(gpu, &p, &mut ws))?;
            let (case, shape) = (format!("R{rows}xD{d}"), [rows, d]);
            let site = Site {
                kernel: "hyp_ln_fwd",
                backend: "cuda",
                case: &case,
                shape: &shape,
                dtype: "f32",
            };
            ctx.report.records.extend(event_timing(&site, &t, None));
            let gbs = 2.0 * (rows * d * 4) as f64 / (t.median_us * 1e-6) / 1e9;
            ctx.report
                .records
                .push(site.record("gb_per_s", gbs, "GB/s", None));
            if let Some(copy) = copy_gbs {
                ctx.report.records.push(site.goal(
                    "copy_bandwidth_frac",
                    gbs / copy,
                    "",
                    Target::AtLeast(0.9),
                ));
            }
            if let Some(ms) = ctx
                .torch
                .median_ms("torch_ln_exp0", "ln_exp0_fwd", &[1, 1, rows, d])
            {
                ctx.report.records.push(site.record(
                    "speedup_vs_torch_eager",
                    ms * 1e3 / t.median_us,
                    "x",
                    None,
                ));
            }
            let g: Vec<f32> = randn(rows * d, 1.0, 4).iter().map(|&v| v as f32).collect();
            let mut bws = hyp_ln_bwd::BackwardWs::new(gpu, &p, &g)?;
            let tb = time_events(gpu, 5, ctx.runs, || hyp_ln_bwd::backward(gpu, &p, &mut bws))?;
            let bsite = Site {
                kernel: "hyp_ln_bwd",
                ..site
            };
            ctx.report.records.extend(event_timing(&bsite, &tb, None));
            let bgbs = 5.0 * (rows * d * 4) as f64 / (tb.median_us * 1e-6) / 1e9;
            ctx.report
                .records
                .push(bsite.record("gb_per_s", bgbs, "GB/s", None));
        }
        if let Some(copy) = copy_gbs {
            ctx.report.meta.insert(
                "hyp_ln_copy_bandwidth".into(),
                format!("{copy:.0} GB/s (torch dst.copy_(src) of 1 GiB, same run)").into(),
            );
        }
        Ok(None)
    }
}
