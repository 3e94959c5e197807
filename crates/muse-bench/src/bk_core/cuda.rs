//! BK-Core on the GPU: forward, backward and forward+backward at the original's shapes in f32
//! and f64 and over an N sweep to 2M (f32, B = 1), timed with CUDA events; measured allocation
//! peaks; agreement with the CPU f64 reference at the benchmark shapes; the CPU reference and
//! the PyTorch baselines (`ci/baselines/torch_bk_core.py`) side by side with the speedups.

use std::collections::BTreeMap;
use std::time::Duration;

use muse_cuda::bk_core::{forward, ForwardWs, Problem};
use muse_cuda::bk_core_bwd::{backward, interleave, BackwardWs};
use muse_cuda::GpuFloat;
use muse_reference::bk_core::{BkCore, BkCoreArgs};
use muse_reference::{Cpu, Precision};
use muse_verify::cases::{bk_core_inputs, Regime, BK_CORE_SHAPES, BK_CORE_SWEEP_N_GPU};
use muse_verify::plot::Series;
use muse_verify::report::Site;
use muse_verify::suite::checks::{self, Class, Row};
use muse_verify::Target;
use ndarray::Array2;
use num_complex::Complex64;

use crate::records::{self, MAX_LINEAR_EXPONENT};
use crate::timing::{time, time_events};
use crate::{CudaCtx, Plot, Result};

/// Forward at B16 N4096 (f32) on an H100: the target, in µs.
const FWD_KPI_US: f64 = 20.0;
/// Forward + backward at B16 N4096 (f32), in µs.
const FWD_BWD_KPI_US: f64 = 50.0;
/// Allocation peak at most this multiple of inputs plus outputs.
const MEM_FACTOR: f64 = 2.0;
/// Launches between one event pair for the batched figure.
const BATCH: usize = 20;
/// Warm-up calls before each timing.
const WARMUP: usize = 10;

/// Measures every shape and the sweep into `ctx.report`; returns the sweep's plot.
pub(super) fn run(ctx: &mut CudaCtx<'_>) -> Result<Plot> {
    ctx.report
        .meta
        .insert("inputs".into(), super::INPUTS.into());
    ctx.report.meta.insert(
        "anchor".into(),
        "original on an H100 at B16 N4096: mode A (its correct path) 2694 ms, mode B (default, wrong results) 25.2 ms".into(),
    );
    let bar = crate::progress(BK_CORE_SHAPES.len() * 2 + BK_CORE_SWEEP_N_GPU.len());
    let mut fwd_f32 = BTreeMap::new();
    for &(batch, n) in &BK_CORE_SHAPES {
        bar.set_message(format!("B{batch} N{n}"));
        let (fwd_us, _) = measure::<f32>(ctx, batch, n, true)?;
        fwd_f32.insert(vec![batch, n], fwd_us);
        bar.inc(1);
        measure::<f64>(ctx, batch, n, true)?;
        bar.inc(1);
        cpu_side_by_side(ctx, batch, n, fwd_us)?;
    }
    let (mut sweep_fwd, mut sweep_fb) = (Vec::new(), Vec::new());
    for &n in &BK_CORE_SWEEP_N_GPU {
        bar.set_message(format!("sweep N{n}"));
        let (f, fb) = measure::<f32>(ctx, 1, n, false)?;
        sweep_fwd.push((n as f64, f));
        sweep_fb.push((n as f64, fb));
        bar.inc(1);
    }
    bar.finish_and_clear();
    // From N = 65536 up: below that, launch overhead dominates.
    let exponent = records::scaling_exponent(&sweep_fwd[2..]);
    let top = [
        1,
        *BK_CORE_SWEEP_N_GPU
            .last()
            .expect("invariant: non-empty sweep"),
    ];
    let site = Site {
        kernel: "bk_core_forward_sweep",
        backend: "cuda",
        case: "sweep_n65536_up",
        shape: &top,
        dtype: "f32",
    };
    ctx.report.records.push(site.record(
        "scaling_exponent",
        exponent,
        "",
        Some(Target::AtMost(MAX_LINEAR_EXPONENT)),
    ));
    torch_side_by_side(ctx, &fwd_f32);
    Ok(Plot {
        title: format!("BK-Core on {}: time against N", ctx.gpu.info().name),
        unit: "us",
        series: vec![
            Series {
                label: "cuda f32 forward, B=1".into(),
                points: sweep_fwd,
            },
            Series {
                label: "cuda f32 forward+backward, B=1".into(),
                points: sweep_fb,
            },
        ],
    })
}

/// Times forward, backward and forward+backward of one shape in precision `T`; at the
/// benchmark shapes (`full`) also records memory peaks, agreement with the CPU f64 reference, the
/// backward alone, the batched figure and the throughput. Returns the forward and fwd+bwd
/// medians (µs).
fn measure<T: GpuFloat>(
    ctx: &mut CudaCtx<'_>,
    batch: usize,
    n: usize,
    full: bool,
) -> Result<(f64, f64)> {
    let gpu = ctx.gpu;
    let (a, b, c, z) = bk_core_inputs(Regime::Benchmark, batch, n, 42);
    let args = BkCoreArgs::new(a.view(), b.view(), c.view(), z)?;
    let w = Array2::from_shape_fn((batch, n), |(r, i)| {
        Complex64::new(((r * n + i) as f64 * 0.37).sin(), 0.5)
    });
    let dtype = T::PRECISION.name();
    let case = if full {
        format!("B{batch}xN{n}")
    } else {
        format!("sweep_N{n}")
    };
    let shape = [batch, n];
    let site = |kernel| Site {
        kernel,
        backend: "cuda",
        case: &case,
        shape: &shape,
        dtype,
    };
    let size = std::mem::size_of::<T>() as f64;
    let (bn, off) = ((batch * n) as f64, (batch * (n - 1)) as f64);

    // Allocation peaks: everything this shape allocates, measured by the tracking allocator,
    // and the driver's view (free memory before and after, 2 MiB granular).
    let base = gpu.live_bytes();
    gpu.reset_peak();
    let (free0, _) = gpu.mem_info()?;
    let p = Problem::<T>::upload(gpu, &args)?;
    let mut fws = ForwardWs::new(gpu, &p)?;
    forward(gpu, &p, &mut fws)?;
    gpu.sync("forward")?;
    let fwd_peak = (gpu.peak_bytes() - base) as f64;
    let fwd_io = size * (bn + 2.0 * off + 2.0 * bn);
    let mut bws = BackwardWs::new(gpu, &p, &interleave::<T>(w.view()))?;
    backward(gpu, &p, &mut bws)?;
    gpu.sync("backward")?;
    let (free1, _) = gpu.mem_info()?;
    let fb_peak = (gpu.peak_bytes() - base) as f64;
    let fb_io = fwd_io + size * (2.0 * bn + bn + 2.0 * off);
    let mut recs = Vec::new();
    if full {
        for (kernel, peak, io) in [
            ("bk_core_forward", fwd_peak, fwd_io),
            ("bk_core_forward_backward", fb_peak, fb_io),
        ] {
            let at = site(kernel);
            recs.push(at.record("alloc_peak", peak, "bytes", None));
            recs.push(at.record("inputs_outputs", io, "bytes", None));
            let ratio = Some(Target::AtMost(MEM_FACTOR));
            recs.push(at.record("alloc_peak_over_io", peak / io, "", ratio));
        }
        let fb = site("bk_core_forward_backward");
        recs.push(fb.record(
            "driver_mem_delta",
            free0.saturating_sub(free1) as f64,
            "bytes",
            None,
        ));
        // Agreement at the benchmark shape, against the CPU f64 reference.
        let g = fws.g.to_vec()?;
        let got = Array2::from_shape_fn((batch, n), |(r, i)| {
            Complex64::new(
                g[2 * (r * n + i)].to_f64_exact(),
                g[2 * (r * n + i) + 1].to_f64_exact(),
            )
        });
        let want = Cpu.bk_core(&args, Precision::F64)?;
        let row = Row {
            kernel: "bk_core_forward",
            backend: "cuda",
            case: &case,
            shape: &shape,
            precision: T::PRECISION,
        };
        recs.extend(checks::forward(&row, &got, &want, Class::Random));
    }
    let kpi = |target: f64| {
        (full && T::PRECISION == Precision::F32 && (batch, n) == (16, 4096))
            .then_some(Target::AtMost(target))
    };
    let runs = ctx.runs;
    let t_f = time_events(gpu, WARMUP, runs, || forward(gpu, &p, &mut fws))?;
    recs.extend(records::event_timing(
        &site("bk_core_forward"),
        &t_f,
        kpi(FWD_KPI_US),
    ));
    let t_fb = time_events(gpu, WARMUP, runs, || {
        forward(gpu, &p, &mut fws)?;
        backward(gpu, &p, &mut bws)
    })?;
    recs.extend(records::event_timing(
        &site("bk_core_forward_backward"),
        &t_fb,
        kpi(FWD_BWD_KPI_US),
    ));
    if full {
        let t_b = time_events(gpu, WARMUP, runs, || backward(gpu, &p, &mut bws))?;
        recs.extend(records::event_timing(&site("bk_core_backward"), &t_b, None));
        let t_batch = time_events(gpu, 3, runs, || {
            (0..BATCH).try_for_each(|_| forward(gpu, &p, &mut fws))
        })?;
        recs.push(site("bk_core_forward").record(
            &format!("time_per_call_batched{BATCH}"),
            t_batch.median_us / BATCH as f64,
            "us",
            None,
        ));
        recs.push(records::throughput(
            &site("bk_core_forward"),
            bn,
            t_f.median_us,
        ));
    }
    ctx.report.records.extend(recs);
    Ok((t_f.median_us, t_fb.median_us))
}

/// The CPU reference (f64, one thread) at the same shape in the same process, and the speedup
/// of the f32 forward kernel (`fwd_us`) over it.
fn cpu_side_by_side(ctx: &mut CudaCtx<'_>, batch: usize, n: usize, fwd_us: f64) -> Result<()> {
    let (a, b, c, z) = bk_core_inputs(Regime::Benchmark, batch, n, 42);
    let args = BkCoreArgs::new(a.view(), b.view(), c.view(), z)?;
    let t = time(Duration::from_millis(500), || {
        Cpu.bk_core(&args, Precision::F64).map(|_| ())
    });
    let (case, shape) = (format!("B{batch}xN{n}"), [batch, n]);
    let cpu = Site {
        kernel: "bk_core_forward",
        backend: "cpu",
        case: &case,
        shape: &shape,
        dtype: "f64",
    };
    let cpu_us = t.median_ms * 1e3;
    ctx.report
        .records
        .push(cpu.record("time_median", cpu_us, "us", None));
    let gpu = Site {
        backend: "cuda",
        dtype: "f32",
        ..cpu
    };
    ctx.report.records.push(records::speedup(
        &gpu,
        "speedup_vs_cpu_reference_f64",
        cpu_us,
        fwd_us,
    ));
    Ok(())
}

/// Records the PyTorch baseline rows of BK-Core forward and the speedup of the f32 forward
/// kernel (medians by shape in `fwd_f32`, µs) over each.
fn torch_side_by_side(ctx: &mut CudaCtx<'_>, fwd_f32: &BTreeMap<Vec<usize>, f64>) {
    for row in ctx.torch.claim(super::TORCH_KERNEL) {
        ctx.report.records.extend(row.records());
        if let Some(&us) = fwd_f32.get(&row.shape) {
            let site = Site {
                kernel: &row.kernel,
                backend: "cuda",
                case: &row.case,
                shape: &row.shape,
                dtype: "f32",
            };
            ctx.report.records.push(records::speedup(
                &site,
                &format!("speedup_vs_torch_{}", row.imp),
                row.median_ms * 1e3,
                us,
            ));
        }
    }
}
