//! The W4A8 GEMM's KPIs (design hyperbolic.md §8.5; seed 000 task 30.4/32.2, the original's
//! quantization benchmark): the small-M (decode) path `muse_cuda::w4a8::linear`, activation
//! quantisation included (one fused launch where `fuses(M, K)`, else quant_x + gemm_small),
//! against cuBLAS's fp16 GEMM (fp16 operands, fp32 sums) on the same shapes in the same process:
//! goal ≥ 3× at M ≤ 16 and ≥ 1.5× at M ≥ 1024 (the tiled `gemm_large`, after quant_x; its time
//! on codes already quantised is `w4a8_gemm_large_codes_only`). Where the fused launch is taken,
//! the two-launch path is timed too (`w4a8_gemm_2launch`, for tuning `FUSE_MAX`). Shapes: the
//! model's fused Q/K/V projection of `small` (N = 1536, K = 512) and a 4096 × 4096 projection,
//! M ∈ {1, 4, 16, 1024, 4096}, G = 128, symmetric weights. `launch_floor` and `speedup_ceiling_vs_cublas_fp16` say how far any single launch
//! could go under the protocol (crate::records::launch_floor).

use crate::{CpuCtx, Family, Plot, Result};

/// The w4a8 family.
pub struct W4a8Family;

impl Family for W4a8Family {
    fn stem(&self) -> &'static str {
        "w4a8"
    }

    /// No CPU rows: the reference is the oracle, not a competitor.
    fn cpu(&self, _: &mut CpuCtx<'_>) -> Result<Option<Plot>> {
        Ok(None)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, ctx: &mut crate::CudaCtx<'_>) -> Result<Option<Plot>> {
        use muse_cuda::gemm::{gemm_nt_half, HalfFormat};
        use muse_cuda::w4a8::{
            fuses, gemm_large, gemm_small, linear, quant_x, Acts, DeviceWeights,
        };
        use muse_reference::w4a8::{quantize_weights, WeightCodec};
        use muse_verify::report::Site;
        use muse_verify::Target;

        use crate::records::{event_timing, speedup};
        use crate::timing::time_events;
        let gpu = ctx.gpu;
        let (floor, floor_recs) = crate::records::launch_floor(gpu, ctx.runs, "w4a8")?;
        ctx.report.records.extend(floor_recs);
        for (n, k) in [(1536usize, 512usize), (4096, 4096)] {
            let w = ndarray::Array2::from_shape_fn((n, k), |(i, j)| {
                (((i * 7919 + j * 31) % 1000) as f64 / 1000.0 - 0.5) * 0.1
            });
            let dw = DeviceWeights::upload(
                gpu,
                &quantize_weights(w.view(), 128, WeightCodec::Symmetric)?,
            )?;
            let w16 = gpu.upload(
                &w.iter()
                    .map(|&v| half::f16::from_f64(v).to_bits())
                    .collect::<Vec<_>>(),
            )?;
            for m in [1usize, 4, 16, 1024, 4096] {
                let x: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 2_654_435_761) % 1000) as f32 / 500.0 - 1.0)
                    .collect();
                let xd = gpu.upload(&x)?;
                let x16 = gpu.upload(
                    &x.iter()
                        .map(|&v| half::f16::from_f32(v).to_bits())
                        .collect::<Vec<_>>(),
                )?;
                let (acts, y, y16) = (
                    Acts::new(gpu, m, k)?,
                    gpu.alloc::<f32>(m * n)?,
                    gpu.alloc::<f32>(m * n)?,
                );
                let t4 = time_events(gpu, 5, ctx.runs, || linear(gpu, &xd, &acts, &dw, &y))?;
                let tf = time_events(gpu, 5, ctx.runs, || {
                    gemm_nt_half(gpu, HalfFormat::Fp16, (m, n, k), &x16, &w16, &y16)
                })?;
                let case = format!("benchmark_quantization/M{m}_N{n}_K{k}_G128");
                let shape = [m, n, k];
                let site = Site {
                    kernel: "w4a8_gemm",
                    backend: "cuda",
                    case: &case,
                    shape: &shape,
                    dtype: "w4a8",
                };
                ctx.report.records.extend(event_timing(&site, &t4, None));
                if m > 16 {
                    // the tiled kernel alone, on codes already quantised (quant_x's share apart)
                    quant_x(gpu, &xd, &acts)?;
                    let tg = time_events(gpu, 5, ctx.runs, || gemm_large(gpu, &acts, &dw, &y))?;
                    let codes = Site {
                        kernel: "w4a8_gemm_large_codes_only",
                        ..site
                    };
                    ctx.report.records.extend(event_timing(&codes, &tg, None));
                }
                if fuses(m, k) {
                    let t2 = time_events(gpu, 5, ctx.runs, || {
                        quant_x(gpu, &xd, &acts)?;
                        gemm_small(gpu, &acts, &dw, &y)
                    })?;
                    let two = Site {
                        kernel: "w4a8_gemm_2launch",
                        ..site
                    };
                    ctx.report.records.extend(event_timing(&two, &t2, None));
                }
                let r = speedup(&site, "speedup_vs_cublas_fp16", tf.median_us, t4.median_us);
                ctx.report.records.push(site.goal(
                    "speedup_vs_cublas_fp16",
                    r.value,
                    "x",
                    Target::AtLeast(if m <= 16 { 3.0 } else { 1.5 }),
                ));
                if m <= 16 {
                    // the most any launch could reach here: cuBLAS's time over the floor
                    ctx.report.records.push(speedup(
                        &site,
                        "speedup_ceiling_vs_cublas_fp16",
                        tf.median_us,
                        floor.median_us,
                    ));
                }
                let base = Site {
                    kernel: "w4a8_baseline_cublas_fp16",
                    dtype: "fp16",
                    ..site
                };
                ctx.report.records.extend(event_timing(&base, &tf, None));
            }
        }
        Ok(None)
    }
}
