//! The VRAM study (issue 9; design model.md §6.3, the original's `verify_95_with_fp16.py`
//! protocol) on muse's own GPU models (`muse_cuda::vram`): the baseline transformer and the
//! memory-optimised model at V 10K, D 512, L 6, train mode, ids < 1000 at (2, 512), L = Σ logits,
//! backward, no optimiser; the peak is the allocation high-water mark of the second of two steps
//! after a reset, with the weights and gradients resident. Each point records its peak and its
//! split (weights, gradients, activations + workspace) and the reduction against muse's baseline
//! FP32 of the same run; the PyTorch side of the same protocol is `torch_train_bench.py vram`
//! (rendered beside these rows by `ci/vram_report.py`).

use muse_model::vram::{baseline_transformer, memory_optimized, total, VramDims};
use muse_verify::report::Site;

use crate::{CpuCtx, Family, Plot, Result};

/// The study's batch and sequence (the original's (2, 512)).
pub const SHAPE: (usize, usize) = (2, 512);

/// Ids are drawn below this (the original's `randint(0, 1000)`).
pub const ID_RANGE: usize = 1000;

/// The VRAM study family.
#[derive(Debug, Clone, Copy)]
pub struct VramFamily;

impl Family for VramFamily {
    fn stem(&self) -> &'static str {
        "vram"
    }

    fn cpu(&self, ctx: &mut CpuCtx<'_>) -> Result<Option<Plot>> {
        // The models' sizes (their exact counts are integer tests in muse-model and the reference).
        for (model, specs) in [
            ("baseline", baseline_transformer(&VramDims::STUDY)),
            ("memopt", memory_optimized(&VramDims::STUDY)),
        ] {
            let kernel = format!("vram_{model}");
            let site = Site {
                kernel: &kernel,
                backend: "cpu",
                case: "study_V10000_D512_L6",
                shape: &[SHAPE.0, SHAPE.1],
                dtype: "f32",
            };
            ctx.report
                .records
                .push(site.record("params", total(&specs) as f64, "count", None));
        }
        Ok(None)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, ctx: &mut crate::CudaCtx<'_>) -> Result<Option<Plot>> {
        cuda::run(ctx)
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use muse_cuda::gemm::{gemm, GemmMath};
    use muse_cuda::vram::baseline::BaselineGpu;
    use muse_cuda::vram::memopt::MemOptGpu;
    use muse_cuda::vram::study::{measure, StepPeak, FFN_ROWS, HEAD_ROWS};
    use muse_cuda::vram::{Store, Walk};
    use muse_model::vram::VramDims;
    use muse_reference::baseline::BaselineWeights;
    use muse_reference::memopt::MemOptWeights;
    use muse_reference::model::Conv;
    use muse_verify::report::Site;
    use muse_verify::Target;
    use ndarray::Array2;

    use super::{ID_RANGE, SHAPE};
    use crate::{CudaCtx, Plot, Result};

    const MIB: f64 = (1u64 << 20) as f64;

    /// Small random weights (the peak does not depend on their values; the loss must be finite).
    fn fill(walk: Walk<'_>, seed: u64) {
        let mut s = seed;
        walk(&mut |name, v| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            *v = if name.contains("norm") && name.ends_with("weight")
                || name.contains(".ln") && name.ends_with("weight")
            {
                1.0
            } else {
                0.04 * u
            };
        });
    }

    fn ids() -> Array2<usize> {
        Array2::from_shape_fn(SHAPE, |(b, n)| (b * 7919 + n * 104_729 + 13) % ID_RANGE)
    }

    struct Point {
        model: &'static str,
        store: Store,
        peak: StepPeak,
        params: usize,
    }

    fn push(ctx: &mut CudaCtx<'_>, p: &Point, base: Option<f64>) {
        let kernel = format!("vram_{}", p.model);
        let case = format!("{}_B{}xN{}_{}", p.model, SHAPE.0, SHAPE.1, p.store.name());
        let site = Site {
            kernel: &kernel,
            backend: "cuda",
            case: &case,
            shape: &[SHAPE.0, SHAPE.1],
            dtype: p.store.name(),
        };
        let pk = p.peak.peak_bytes as f64 / MIB;
        let w = p.peak.param_bytes as f64 / MIB;
        let r = &mut ctx.report.records;
        r.push(site.record("peak_mib", pk, "MiB", None));
        r.push(site.record("weights_mib", w, "MiB", None));
        r.push(site.record("grads_mib", w, "MiB", None));
        r.push(site.record("activations_workspace_mib", pk - 2.0 * w, "MiB", None));
        r.push(site.record("params", p.params as f64, "count", None));
        r.push(site.record("step_ms", p.peak.seconds * 1e3, "ms", None));
        r.push(site.record("loss", p.peak.loss, "sum", None));
        if let Some(b) = base {
            let red = 100.0 * (1.0 - pk / b);
            r.push(if p.model == "memopt" {
                site.goal(
                    "reduction_vs_baseline_f32_pct",
                    red,
                    "%",
                    Target::AtLeast(90.0),
                )
            } else {
                site.record("reduction_vs_baseline_f32_pct", red, "%", None)
            });
        }
    }

    pub(super) fn run(ctx: &mut CudaCtx<'_>) -> Result<Option<Plot>> {
        let gpu = ctx.gpu;
        // cuBLAS's handle and its workspace exist before `before` is read (process-wide, 32 MiB,
        // outside every point's peak).
        let one = gpu.upload(&[1.0f32])?;
        gemm(
            gpu,
            (false, false),
            (1, 1, 1),
            one.view(),
            one.view(),
            one.view(),
            0.0,
            GemmMath::Fp32,
        )?;
        gpu.sync("cuBLAS warm-up")?;
        drop(one);
        let d = VramDims::STUDY;
        let x = ids();
        let mut points = Vec::new();
        {
            let mut w = BaselineWeights::zeros(d.vocab, d.d_model, d.layers, d.heads, d.ffn);
            fill(&mut |f| w.for_each_param(f), 1);
            for store in [Store::F32, Store::Fp16] {
                let before = gpu.live_bytes();
                let m = BaselineGpu::new(gpu, &w, GemmMath::Fp32)?;
                let peak = measure(gpu, before, m.param_bytes(), || m.step(x.view(), store))?;
                points.push(Point {
                    model: "baseline",
                    store,
                    peak,
                    params: m.num_params(),
                });
            }
        }
        {
            let mut w = MemOptWeights::zeros(
                d.vocab,
                d.d_model,
                d.layers,
                d.htt_rank,
                d.ssm_rank,
                d.ffn_rank,
                d.head_rank,
            );
            fill(&mut |f| w.for_each_param(f), 2);
            for store in [Store::F32, Store::Fp16, Store::Bf16] {
                let before = gpu.live_bytes();
                let m = MemOptGpu::new(gpu, &w, Conv::Causal, GemmMath::Fp32)?;
                let peak = measure(gpu, before, m.param_bytes(), || m.step(x.view(), store))?;
                points.push(Point {
                    model: "memopt",
                    store,
                    peak,
                    params: m.num_params(),
                });
            }
        }
        let base = points
            .iter()
            .find(|p| p.model == "baseline" && p.store == Store::F32)
            .map(|p| p.peak.peak_bytes as f64 / MIB);
        for p in &points {
            push(ctx, p, base);
        }
        ctx.report.meta.insert(
            "vram_method".into(),
            format!(
                "muse_cuda::vram, the original's protocol (design model.md §6.3): (B, N) = {SHAPE:?}, ids < {ID_RANGE}, L = Σ logits, one backward, no optimiser; peak = muse's allocation high-water mark of the second step above what was live before the upload (weights and gradients resident; cuBLAS's 32 MiB process-wide workspace outside it). Dropout is the identity. Baseline: no checkpointing, keeps per layer x, q, k, v, merged heads, LN inputs, FFN hidden; attention probabilities recomputed per head in the backward. Memory-optimised: block inputs kept, blocks recomputed one sequence at a time, FFN by {FFN_ROWS} rows, logits by {HEAD_ROWS} rows for both models. Store fp16/bf16 = the kept activations rounded to 16 bits (f32 weights, gradients and compute)."
            )
            .into(),
        );
        Ok(None)
    }
}
