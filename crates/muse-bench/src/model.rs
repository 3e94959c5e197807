//! Language-model KPIs with the original's protocol (design model.md §6.1): eval forward, no
//! gradients, 5 warm-up and 20 timed forwards each bracketed by a device synchronisation and a
//! host clock, tokens/s = B·N / mean time, peak device memory = the allocation high-water mark
//! after a reset with the weights (and the cached activations) resident. Grid: the original's
//! (small at N 256/512/1024, medium at N 512) plus the Phase 2 checks (B1 N4096, B4 N512). Beside
//! each point: the PyTorch implementation of `ci/baselines/torch_model.py` (eager and
//! `torch.compile`) from the same run, and, at the target points, a per-stage time breakdown.
//!
//! Numerics of the speed rows: profile `exact`, f32 activations, TF32 tensor-core GEMMs (stated in
//! each record's dtype `f32+tf32`); the full-fp32 rows (`f32`) at the target points show the cost;
//! the `bf16` rows (every grid point) run every GEMM in bf16 with fp32 sums. At the target points a
//! CUDA-graph replay of the same forward (`…_graph`) shows the launch overhead. The workspaces
//! come from the device pool (the default): `peak_mib` counts its slabs, and `pool_peak_*_mib`
//! beside it give the pool's own peaks.

use muse_model::{init, Config, Model, Profile};
use muse_verify::report::Site;
use ndarray::Array2;

use crate::{CpuCtx, Family, Plot, Result};

/// Kernel name of the records (and of the PyTorch rows).
pub const KERNEL: &str = "model_forward";

/// (config, N, batches) of the original's grid, then the Phase 2 points.
pub const GRID: &[(&str, usize, &[usize])] = &[
    ("small", 256, &[1, 2, 4, 8]),
    ("small", 512, &[1, 2, 4]),
    ("small", 1024, &[1, 2]),
    ("medium", 512, &[1, 2, 4]),
    ("small", 4096, &[1]),
];

/// (config, N, B, tokens/s target) of the issue.
pub const TARGETS: &[(&str, usize, usize, f64)] = &[
    ("small", 256, 8, 2_500_000.0),
    ("medium", 512, 4, 500_000.0),
];

/// The original's peak memory (MiB) on an H200 at small B8 N256 (the issue), for the ratio.
pub const ORIGINAL_SMALL_B8_N256_MIB: f64 = 1770.0;

/// The model family.
#[derive(Debug, Clone, Copy)]
pub struct ModelFamily;

/// The config `name` at `n_seq` = `n`.
pub fn config(name: &str, n: usize) -> Config {
    Config {
        n_seq: n,
        ..Config::named(name).expect("a named config")
    }
}

/// Seeded ids (B, N) < V.
pub fn ids(b: usize, n: usize, vocab: usize) -> Array2<usize> {
    Array2::from_shape_fn((b, n), |(i, j)| (i * 7919 + j * 104_729 + 13) % vocab)
}

impl Family for ModelFamily {
    fn stem(&self) -> &'static str {
        "model"
    }

    fn cpu(&self, ctx: &mut CpuCtx<'_>) -> Result<Option<Plot>> {
        let cfg = Config::named("tiny").expect("tiny");
        let model = Model::new(init::init(&cfg, 0));
        let x = ids(2, 128, cfg.vocab_size);
        let site = Site {
            kernel: KERNEL,
            backend: "cpu",
            case: "tiny_B2xN128_exact",
            shape: &[2, 128, cfg.d_model],
            dtype: "f32",
        };
        crate::hyp_small::cpu_time(ctx, &site, || {
            model
                .forward_cpu::<f32>(x.view(), Profile::Exact)
                .map(|_| ())
                .map_err(|e| muse_reference::Error::Backend {
                    backend: "cpu",
                    message: format!("{e:#}"),
                })
        })?;
        Ok(None)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, ctx: &mut crate::CudaCtx<'_>) -> Result<Option<Plot>> {
        cuda::run(ctx)
    }
}

/// The device pool's readings beside a `peak_mib` (the driver allocations, the pool's slabs
/// among them), when the workspaces were pooled: the peak bytes of the live blocks and of the
/// slabs reserved, over the same window (`Gpu::reset_peak` restarts both).
#[cfg(feature = "cuda")]
pub(crate) fn pool_records(
    site: &Site<'_>,
    stats: Option<muse_pool::PoolStats>,
) -> Vec<muse_verify::report::Record> {
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    stats.map_or_else(Vec::new, |s| {
        vec![
            site.record(
                "pool_peak_in_use_mib",
                mib(s.peak_live_class_bytes),
                "MiB",
                None,
            ),
            site.record(
                "pool_peak_reserved_mib",
                mib(s.peak_reserved_bytes),
                "MiB",
                None,
            ),
        ]
    })
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::time::Instant;

    use muse_model::{init, Model, Profile};
    use muse_verify::report::Site;
    use muse_verify::Target;

    use super::{config, ids, pool_records, GRID, KERNEL, ORIGINAL_SMALL_B8_N256_MIB, TARGETS};
    use crate::{CudaCtx, Error, Plot, Result};

    fn model_err(e: anyhow::Error) -> Error {
        Error::Kernel(muse_reference::Error::Backend {
            backend: "cuda",
            message: format!("{e:#}"),
        })
    }

    /// Mean and median seconds of the timed forwards, and the peak MiB.
    struct Protocol {
        mean_s: f64,
        median_s: f64,
        std_s: f64,
        peak_mib: f64,
        weights_mib: f64,
        /// The pool's counters over the timed forwards, when the workspace is pooled.
        pool: Option<muse_pool::PoolStats>,
    }

    fn protocol(
        gpu: &'static muse_cuda::Gpu,
        m: &muse_cuda::model::forward::CudaModel,
        x: &ndarray::Array2<usize>,
        weights_bytes: usize,
        graph: bool,
    ) -> Result<Protocol> {
        let fwd = || {
            if graph {
                m.enqueue_graph(x.view())
            } else {
                m.enqueue(x.view())
            }
        };
        for _ in 0..5 {
            fwd()?;
        }
        gpu.sync("warm-up")?;
        gpu.reset_peak();
        let mut t = Vec::with_capacity(20);
        for _ in 0..20 {
            gpu.sync("before a timed forward")?;
            let t0 = Instant::now();
            fwd()?;
            gpu.sync("after a timed forward")?;
            t.push(t0.elapsed().as_secs_f64());
        }
        let mean = t.iter().sum::<f64>() / t.len() as f64;
        let var = t.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (t.len() - 1) as f64;
        t.sort_by(f64::total_cmp);
        Ok(Protocol {
            mean_s: mean,
            median_s: t[t.len() / 2],
            std_s: var.sqrt(),
            peak_mib: gpu.peak_bytes() as f64 / (1 << 20) as f64,
            weights_mib: weights_bytes as f64 / (1 << 20) as f64,
            pool: m.pooled().then(|| gpu.pool_stats()).flatten(),
        })
    }

    pub(super) fn run(ctx: &mut CudaCtx<'_>) -> Result<Option<Plot>> {
        let gpu = ctx.gpu;
        for row in ctx.torch.claim(KERNEL) {
            ctx.report.records.extend(row.records());
        }
        for &(name, n, batches) in GRID {
            let cfg = config(name, n);
            let model = Model::new(init::init(&cfg, 0));
            let is_target = |b: usize| TARGETS.iter().any(|t| t.0 == name && t.1 == n && t.2 == b);
            // (profile, tf32, bf16, dtype): the headline rows, full fp32 and the bench profile at
            // the target points, and bf16 GEMMs at every point of the grid.
            let variants: &[(Profile, bool, bool, &str)] = &[
                (Profile::Exact, true, false, "f32+tf32"),
                (Profile::Exact, false, false, "f32"),
                (Profile::Bench, true, false, "f32+tf32"),
                (Profile::Exact, false, true, "bf16"),
            ];
            for &(profile, tf32, bf16, dtype) in variants {
                let headline = profile == Profile::Exact && tf32;
                let everywhere = headline || bf16;
                if !everywhere && !batches.iter().any(|&b| is_target(b)) {
                    continue;
                }
                let before = gpu.live_bytes();
                let m = if bf16 {
                    model.cuda_bf16(profile)
                } else {
                    model.cuda(profile, tf32)
                }
                .map_err(model_err)?;
                let weights = gpu.live_bytes() - before;
                let mut m = m;
                for &b in batches {
                    if !everywhere && !is_target(b) {
                        continue;
                    }
                    let x = ids(b, n, cfg.vocab_size);
                    let p = protocol(gpu, &m, &x, weights, false)?;
                    let case = format!(
                        "{name}_B{b}xN{n}_{}{}",
                        profile.name(),
                        if bf16 { "_bf16" } else { "" }
                    );
                    let shape = [b, n, cfg.d_model];
                    let site = Site {
                        kernel: KERNEL,
                        backend: "cuda",
                        case: &case,
                        shape: &shape,
                        dtype,
                    };
                    let tps = (b * n) as f64 / p.mean_s;
                    let r = &mut ctx.report.records;
                    r.push(site.record("time_mean", p.mean_s * 1e3, "ms", None));
                    r.push(site.record("time_median", p.median_s * 1e3, "ms", None));
                    r.push(site.record("time_std", p.std_s * 1e3, "ms", None));
                    r.push(site.record("peak_mib", p.peak_mib, "MiB", None));
                    r.extend(pool_records(&site, p.pool));
                    r.push(site.record("weights_mib", p.weights_mib, "MiB", None));
                    if headline && m.pooled() {
                        // the same forward on driver allocations, in the same process: what the
                        // pool costs or saves
                        m.set_pooled(false);
                        let d = protocol(gpu, &m, &x, weights, false)?;
                        m.set_pooled(true);
                        r.push(site.record(
                            "tokens_per_s_driver_alloc",
                            (b * n) as f64 / d.mean_s,
                            "tok/s",
                            None,
                        ));
                        r.push(site.record("peak_mib_driver_alloc", d.peak_mib, "MiB", None));
                        r.push(site.record(
                            "pooled_over_driver_time",
                            p.median_s / d.median_s,
                            "x",
                            None,
                        ));
                    }
                    match TARGETS.iter().find(|t| t.0 == name && t.1 == n && t.2 == b) {
                        Some(t) if headline => {
                            r.push(site.goal("tokens_per_s", tps, "tok/s", Target::AtLeast(t.3)))
                        }
                        _ => r.push(site.record("tokens_per_s", tps, "tok/s", None)),
                    }
                    if name == "small" && n == 256 && b == 8 {
                        r.push(site.goal(
                            "peak_over_original",
                            p.peak_mib / ORIGINAL_SMALL_B8_N256_MIB,
                            "x",
                            Target::AtMost(0.5),
                        ));
                    }
                    if name == "small" && n == 4096 {
                        r.push(site.goal(
                            "peak_gib_phase2",
                            p.peak_mib / 1024.0,
                            "GiB",
                            Target::AtMost(8.0),
                        ));
                    }
                    if name == "medium" && b == 4 {
                        r.push(site.goal(
                            "tokens_per_s_phase2",
                            tps,
                            "tok/s",
                            Target::AtLeast(100.0),
                        ));
                    }
                    for (imp, metric) in [
                        ("torch_eager", "speedup_vs_torch_eager"),
                        ("torch_compile", "speedup_vs_torch_compile"),
                    ] {
                        if let Some(mean_ms) = ctx.torch.value(imp, KERNEL, &shape, "mean_ms") {
                            let v = mean_ms / (p.mean_s * 1e3);
                            if headline && imp == "torch_compile" {
                                r.push(site.goal(metric, v, "x", Target::AtLeast(1.0)));
                            } else {
                                r.push(site.record(metric, v, "x", None));
                            }
                        }
                        if let Some(peak) = ctx.torch.value(imp, KERNEL, &shape, "peak_mib") {
                            r.push(site.record(
                                &format!("peak_over_{imp}"),
                                p.peak_mib / peak,
                                "x",
                                None,
                            ));
                        }
                    }
                    if is_target(b) {
                        for (stage, us) in m.stage_times(x.view())? {
                            r.push(site.record(&format!("stage_us:{stage}"), us, "us", None));
                        }
                        // The same forward replayed as one CUDA graph (launch overhead removed).
                        let g = match protocol(gpu, &m, &x, weights, true) {
                            Ok(g) => g,
                            Err(e) => {
                                // A capture failure is a result, not an abort of the benchmark.
                                ctx.report.meta.insert(
                                    format!("model_graph_error:{case}"),
                                    e.to_string().into(),
                                );
                                continue;
                            }
                        };
                        let gcase = format!("{case}_graph");
                        let gsite = Site {
                            case: &gcase,
                            ..site
                        };
                        let gtps = (b * n) as f64 / g.mean_s;
                        r.push(gsite.record("time_mean", g.mean_s * 1e3, "ms", None));
                        r.push(gsite.record("time_median", g.median_s * 1e3, "ms", None));
                        r.push(gsite.record("peak_mib", g.peak_mib, "MiB", None));
                        r.extend(pool_records(&gsite, g.pool));
                        r.push(gsite.record(
                            "speedup_vs_eager_launches",
                            p.mean_s / g.mean_s,
                            "x",
                            None,
                        ));
                        match TARGETS.iter().find(|t| t.0 == name && t.1 == n && t.2 == b) {
                            Some(t) if headline => r.push(gsite.goal(
                                "tokens_per_s",
                                gtps,
                                "tok/s",
                                Target::AtLeast(t.3),
                            )),
                            _ => r.push(gsite.record("tokens_per_s", gtps, "tok/s", None)),
                        }
                    }
                }
                m.release_workspace();
            }
        }
        Ok(None)
    }
}
