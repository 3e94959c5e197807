//! The INT8 distance matrix's KPIs (design hyperbolic.md §8.5; seed 000 task 32.2, the original's
//! quantization benchmark): time of the INT8 kernel (both sides' quantisation included) against
//! the f32 distance-matrix kernel (`hyp_dist`) on the same tangent inputs in the same process,
//! B·H = 8, N = M = 4096, D ∈ {64, 128, 256}. The design expects a gain only where the kernel is
//! matmul-bound (large D); the rows carry the ratio without a target.

use crate::{CpuCtx, Family, Plot, Result};

/// The hyp_int8 family.
pub struct HypInt8Family;

/// The original's benchmark, so a reader can map the rows.
#[cfg(feature = "cuda")]
const ORIGINAL: &str = "benchmark_quantization";

impl Family for HypInt8Family {
    fn stem(&self) -> &'static str {
        "hyp_int8"
    }

    /// No CPU rows: the reference is the oracle, not a competitor.
    fn cpu(&self, _: &mut CpuCtx<'_>) -> Result<Option<Plot>> {
        Ok(None)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, ctx: &mut crate::CudaCtx<'_>) -> Result<Option<Plot>> {
        use muse_cuda::{hyp_dist, hyp_int8};
        use muse_reference::hyp_dist::{HypDistArgs, HypDistInput};
        use muse_reference::Dtype;
        use muse_verify::report::Site;

        use crate::records::{event_timing, speedup};
        use crate::timing::time_events;
        let gpu = ctx.gpu;
        let (c, heads, n) = (0.693f64, 8usize, 4096usize);
        for d in [64usize, 128, 256] {
            let x = ndarray::Array4::from_shape_fn((1, heads, n, d), |(_, h, i, e)| {
                (((h * 7919 + i * 104_729 + e * 31) % 2000) as f64 / 2000.0 - 0.5) * 0.3
            });
            let args = HypDistArgs::new(x.view(), x.view(), c, HypDistInput::Tangent)?;
            let p = hyp_dist::Problem::<f32>::upload(gpu, &args, Dtype::F32)?;
            let mut ws = hyp_dist::Workspace::new(gpu, &p)?;
            let t32 = time_events(gpu, 3, ctx.runs, || hyp_dist::forward(gpu, &p, &mut ws))?;
            let xd = gpu.upload(&x.iter().map(|&v| v as f32).collect::<Vec<_>>())?;
            let out = gpu.alloc::<f32>(heads * n * n)?;
            let s = c.sqrt() as f32;
            let (qx, qy) = (
                hyp_int8::DeviceRows::new(gpu, heads * n, d)?,
                hyp_int8::DeviceRows::new(gpu, heads * n, d)?,
            );
            let t8 = time_events(gpu, 3, ctx.runs, || {
                hyp_int8::quantise_into(gpu, &xd, s, &qx)?;
                hyp_int8::quantise_into(gpu, &xd, s, &qy)?;
                hyp_int8::pairs(gpu, &qx, &qy, heads, s, &out)
            })?;
            let case = format!("{ORIGINAL}/tangent_B1xH{heads}xN{n}xD{d}");
            let shape = [1, heads, n, n, d];
            let site = Site {
                kernel: "hyp_int8",
                backend: "cuda",
                case: &case,
                shape: &shape,
                dtype: "int8",
            };
            ctx.report.records.extend(event_timing(&site, &t8, None));
            ctx.report.records.push(speedup(
                &site,
                "speedup_vs_f32_hyp_dist",
                t32.median_us,
                t8.median_us,
            ));
            let f32_site = Site {
                kernel: "hyp_int8_baseline_hyp_dist",
                dtype: "f32",
                ..site
            };
            ctx.report
                .records
                .extend(event_timing(&f32_site, &t32, None));
        }
        Ok(None)
    }
}
