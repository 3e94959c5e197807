//! Tangent-space linear attention KPIs (design hyperbolic.md §9): causal, B1 H8 d64 dv64,
//! N = 1k … 64k on the GPU: times, the fitted exponent of time against N (goal ≤ 1.1), and the
//! speedup over the chunked PyTorch implementation of the same maths at N = 16384 (goal ≥ 5×,
//! the issue), from `ci/baselines/torch_hyp.py` in the same run. Launchers:
//! `crates/muse-cuda/src/lin_attn{,_bwd}.rs`.

use muse_reference::lin_attn::{LinAttn, LinAttnArgs, LinAttnConfig};
use muse_reference::{Cpu, Dtype};
use muse_verify::report::Site;

use crate::hyp_small::{cpu_time, randn};
use crate::{CpuCtx, Family, Plot, Result};

/// Sequence lengths of the GPU sweep.
pub const SWEEP_N: [usize; 4] = [1024, 4096, 16384, 65536];

/// The linear attention family.
#[derive(Debug, Clone, Copy)]
pub struct LinAttnFamily;

type Qkv = (
    ndarray::Array4<f64>,
    ndarray::Array4<f64>,
    ndarray::Array4<f64>,
);

fn inputs(n: usize) -> Qkv {
    (
        randn((1, 8, n, 64), 0.125, 5),
        randn((1, 8, n, 64), 0.125, 6),
        randn((1, 8, n, 64), 1.0, 7),
    )
}

impl Family for LinAttnFamily {
    fn stem(&self) -> &'static str {
        "lin_attn"
    }

    fn cpu(&self, ctx: &mut CpuCtx<'_>) -> Result<Option<Plot>> {
        for n in [1024, 4096] {
            let (q, k, v) = inputs(n);
            let args = LinAttnArgs::new(q.view(), k.view(), v.view(), LinAttnConfig::default())?;
            let (case, shape) = (format!("causal_B1xH8xN{n}xD64"), [1, 8, n, 64, 64]);
            let site = Site {
                kernel: "lin_attn_fwd",
                backend: "cpu",
                case: &case,
                shape: &shape,
                dtype: "f32",
            };
            cpu_time(ctx, &site, || Cpu.lin_attn(&args, Dtype::F32).map(|_| ()))?;
        }
        Ok(None)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, ctx: &mut crate::CudaCtx<'_>) -> Result<Option<Plot>> {
        use muse_cuda::{lin_attn, lin_attn_bwd};
        use muse_verify::Target;

        use crate::records::{event_timing, scaling_exponent};
        use crate::timing::time_events;
        let gpu = ctx.gpu;
        for k in ["lin_attn_fwd", "lin_attn_fwd_bwd"] {
            for row in ctx.torch.claim(k) {
                ctx.report.records.extend(row.records());
            }
        }
        let (mut fwd, mut fb) = (Vec::new(), Vec::new());
        for n in SWEEP_N {
            let (q, k, v) = inputs(n);
            let args = LinAttnArgs::new(q.view(), k.view(), v.view(), LinAttnConfig::default())?;
            let p = lin_attn::Problem::<f32>::upload(gpu, &args, Dtype::F32)?;
            let mut ws = lin_attn::ForwardWs::new(gpu, &p)?;
            let t = time_events(gpu, 5, ctx.runs, || lin_attn::forward(gpu, &p, &mut ws))?;
            let d_o: Vec<f32> = randn(8 * n * 64, 1.0, 8)
                .iter()
                .map(|&x| x as f32)
                .collect();
            let mut bws = lin_attn_bwd::BackwardWs::new(gpu, &p, &d_o)?;
            let tb = time_events(gpu, 5, ctx.runs, || {
                lin_attn_bwd::backward(gpu, &p, &mut ws, &mut bws)
            })?;
            let (case, shape) = (format!("causal_B1xH8xN{n}xD64"), [1, 8, n, n, 64, 64]);
            let site = Site {
                kernel: "lin_attn_fwd",
                backend: "cuda",
                case: &case,
                shape: &shape,
                dtype: "f32",
            };
            ctx.report.records.extend(event_timing(&site, &t, None));
            let fbs = Site {
                kernel: "lin_attn_fwd_bwd",
                ..site
            };
            ctx.report.records.extend(event_timing(&fbs, &tb, None));
            for (s, kernel, us) in [
                (&site, "lin_attn_fwd", t.median_us),
                (&fbs, "lin_attn_fwd_bwd", tb.median_us),
            ] {
                if let Some(ms) = ctx
                    .torch
                    .median_ms("torch_lin_attn_chunked", kernel, &shape)
                {
                    let x = ms * 1e3 / us;
                    ctx.report.records.push(match n {
                        16384 => s.goal("speedup_vs_torch_chunked", x, "x", Target::AtLeast(5.0)),
                        _ => s.record("speedup_vs_torch_chunked", x, "x", None),
                    });
                }
            }
            fwd.push((n as f64, t.median_us));
            fb.push((n as f64, tb.median_us));
        }
        let top = [1, 8, SWEEP_N[3], SWEEP_N[3], 64, 64];
        for (kernel, pts) in [("lin_attn_fwd", &fwd), ("lin_attn_fwd_bwd", &fb)] {
            let site = Site {
                kernel,
                backend: "cuda",
                case: "sweep_n1024_n65536",
                shape: &top,
                dtype: "f32",
            };
            ctx.report.records.push(site.goal(
                "scaling_exponent",
                scaling_exponent(pts),
                "",
                Target::AtMost(1.1),
            ));
        }
        Ok(Some(Plot {
            title: format!(
                "Linear attention on {}: time against N (B1 H8 d64)",
                gpu.info().name
            ),
            unit: "us",
            series: vec![
                muse_verify::plot::Series {
                    label: "cuda f32 forward".into(),
                    points: fwd,
                },
                muse_verify::plot::Series {
                    label: "cuda f32 forward+backward".into(),
                    points: fb,
                },
            ],
        }))
    }
}
