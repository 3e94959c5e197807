//! Training KPIs (issue 9): one training step (forward keeping the block inputs, fused
//! cross-entropy, exact backward, global norm, AdamW with the clip fused) of the Phase 8 model on
//! the GPU, 3 warm-up and 20 timed steps each bracketed by a device synchronisation and a host
//! clock; tokens/s = B·N / mean step time; peak = the allocation high-water mark over the timed
//! steps with the weights, gradients, moments and workspaces resident. Points: small B8 N256 (the
//! issue's KPI) in bf16 (the forward's GEMMs on bf16 copies, f32 masters; the KPI's goals), in f32
//! with TF32 GEMMs and in full fp32, and the O(N) sweep N = 256 … 8192 at
//! B·N = 8192 tokens. Beside each point: the PyTorch rows of `ci/baselines/torch_train_bench.py`
//! (kernel `model_train_step`) from the same run. The step's workspaces come from the device pool
//! (the default): `peak_mib` counts its slabs, `pool_peak_*_mib` give the pool's own peaks.

use muse_model::{init, Config};
use muse_verify::report::Site;

use crate::{CpuCtx, Family, Plot, Result};

/// Kernel name of the records (and of the PyTorch rows).
pub const KERNEL: &str = "model_train_step";

/// The sweep's tokens per step (B·N).
pub const SWEEP_TOKENS: usize = 8192;

/// The sweep's sequence lengths.
pub const SWEEP_N: &[usize] = &[256, 512, 1024, 2048, 4096, 8192];

/// The training family.
#[derive(Debug, Clone, Copy)]
pub struct TrainFamily;

impl Family for TrainFamily {
    fn stem(&self) -> &'static str {
        "train"
    }

    fn cpu(&self, ctx: &mut CpuCtx<'_>) -> Result<Option<Plot>> {
        use muse_reference::model::{grad, Numerics};
        let cfg = Config::named("tiny").expect("tiny");
        let w = init::init(&cfg, 0).model::<f64>();
        let d = cfg.dims();
        let x = crate::model::ids(1, 64, cfg.vocab_size);
        let site = Site {
            kernel: KERNEL,
            backend: "cpu",
            case: "tiny_B1xN64_exact_f64",
            shape: &[1, 64, cfg.d_model],
            dtype: "f64",
        };
        crate::hyp_small::cpu_time(ctx, &site, || {
            grad::loss_and_grad(&d, &w, &Numerics::exact(), x.view(), x.view()).map(|_| ())
        })?;
        Ok(None)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, ctx: &mut crate::CudaCtx<'_>) -> Result<Option<Plot>> {
        cuda::run(ctx)
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::time::Instant;

    use muse_cuda::gemm::GemmMath;
    use muse_cuda::model::train::CudaTrainer;
    use muse_cuda::train::AdamStep;
    use muse_model::init;
    use muse_verify::report::Site;
    use muse_verify::Target;

    use super::{KERNEL, SWEEP_N, SWEEP_TOKENS};
    use crate::model::{config, ids, pool_records};
    use crate::{CudaCtx, Plot, Result};

    const ADAM: AdamStep = AdamStep {
        lr: 1e-4,
        weight_decay: 0.01,
        b1: 0.9,
        b2: 0.999,
        eps: 1e-8,
        c1: 0.0,
        c2: 0.0,
    };

    /// The PyTorch rows a point is compared with (`torch_train_bench.py`'s impl names).
    const TORCH_IMPLS: [&str; 8] = [
        "torch_eager_bf16",
        "torch_compile_bf16",
        "torch_eager_f32",
        "torch_compile_f32",
        "torch_eager_bf16_ckpt",
        "torch_compile_bf16_ckpt",
        "torch_eager_f32_ckpt",
        "torch_compile_f32_ckpt",
    ];

    /// One point: (config, B, N, GEMM math, dtype label, bf16 forward GEMMs); `headline` carries
    /// the KPI goals.
    fn point(
        ctx: &mut CudaCtx<'_>,
        (name, b, n): (&str, usize, usize),
        math: GemmMath,
        (dtype, headline, bf16): (&str, bool, bool),
    ) -> Result<()> {
        let gpu = ctx.gpu;
        let cfg = config(name, n);
        let w = init::init(&cfg, 0).model::<f32>();
        let before = gpu.live_bytes();
        let mut t = if dtype == "fp16" {
            // fp16 GEMMs both ways at a fixed loss scale (the dynamic scaler's default start)
            let mut t = CudaTrainer::new_fp16(gpu, cfg.dims(), &w)?;
            t.set_loss_scale(65536.0)?;
            t
        } else if bf16 {
            CudaTrainer::new_bf16(gpu, cfg.dims(), &w, math)?
        } else {
            CudaTrainer::new(gpu, cfg.dims(), &w, math)?
        };
        let x = ids(b, n, cfg.vocab_size);
        let y = ids(b, n, cfg.vocab_size).mapv(|v| (v * 31 + 7) % cfg.vocab_size);
        for _ in 0..3 {
            t.step(x.view(), y.view(), ADAM, 1.0)?;
        }
        gpu.sync("warm-up")?;
        gpu.reset_peak();
        let mut times = Vec::with_capacity(20);
        for _ in 0..20 {
            gpu.sync("before a timed step")?;
            let t0 = Instant::now();
            t.step(x.view(), y.view(), ADAM, 1.0)?;
            gpu.sync("after a timed step")?;
            times.push(t0.elapsed().as_secs_f64());
        }
        let peak_mib = (gpu.peak_bytes() - before.min(gpu.peak_bytes())) as f64 / (1 << 20) as f64;
        let pool = t.pooled().then(|| gpu.pool_stats()).flatten();
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let case = format!("{name}_B{b}xN{n}_exact_{dtype}");
        let shape = [b, n, cfg.d_model];
        let site = Site {
            kernel: KERNEL,
            backend: "cuda",
            case: &case,
            shape: &shape,
            dtype,
        };
        let tps = (b * n) as f64 / mean;
        let r = &mut ctx.report.records;
        r.push(site.record("time_mean", mean * 1e3, "ms", None));
        r.push(site.record("time_median", median * 1e3, "ms", None));
        r.push(site.record("tokens_per_s", tps, "tok/s", None));
        r.push(site.record("peak_mib", peak_mib, "MiB", None));
        r.extend(pool_records(&site, pool));
        r.push(site.record("params", t.num_params() as f64, "count", None));
        // The KPI (small B8 N256 against PyTorch's bf16 autocast step): ≥ 3× eager,
        // faster than torch.compile, at most half of PyTorch's peak with checkpointing.
        let kpi = name == "small" && b == 8 && n == 256 && headline;
        for imp in TORCH_IMPLS {
            let goal = |metric: &str| match (kpi, imp, metric) {
                (true, "torch_eager_bf16", "speedup") => Some(Target::AtLeast(3.0)),
                (true, "torch_compile_bf16", "speedup") => Some(Target::AtLeast(1.0)),
                (true, "torch_eager_bf16_ckpt", "peak") => Some(Target::AtMost(0.5)),
                _ => None,
            };
            if let Some(ms) = ctx.torch.value(imp, KERNEL, &shape, "mean_ms") {
                let (m, v) = (format!("speedup_vs_{imp}"), ms / (mean * 1e3));
                r.push(match goal("speedup") {
                    Some(t) => site.goal(&m, v, "x", t),
                    None => site.record(&m, v, "x", None),
                });
            }
            if let Some(peak) = ctx.torch.value(imp, KERNEL, &shape, "peak_mib") {
                let (m, v) = (format!("peak_over_{imp}"), peak_mib / peak);
                r.push(match goal("peak") {
                    Some(t) => site.goal(&m, v, "x", t),
                    None => site.record(&m, v, "x", None),
                });
            }
        }
        drop(t);
        Ok(())
    }

    pub(super) fn run(ctx: &mut CudaCtx<'_>) -> Result<Option<Plot>> {
        for kernel in [KERNEL, "gpt_train_step"] {
            for row in ctx.torch.claim(kernel) {
                ctx.report.records.extend(row.records());
            }
        }
        // The KPI's precision: bf16 forward GEMMs (TF32 backward GEMMs, f32 masters).
        point(ctx, ("small", 8, 256), GemmMath::Tf32, ("bf16", true, true))?;
        point(
            ctx,
            ("small", 8, 256),
            GemmMath::Tf32,
            ("f32+tf32", false, false),
        )?;
        point(
            ctx,
            ("small", 8, 256),
            GemmMath::Fp32,
            ("f32", false, false),
        )?;
        point(
            ctx,
            ("small", 8, 256),
            GemmMath::Fp16,
            ("fp16", false, false),
        )?;
        for &n in SWEEP_N {
            let b = (SWEEP_TOKENS / n).max(1);
            if (b, n) != (8, 256) {
                point(
                    ctx,
                    ("small", b, n),
                    GemmMath::Tf32,
                    ("f32+tf32", false, false),
                )?;
            }
        }
        Ok(None)
    }
}
