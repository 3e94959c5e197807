//! BK-Core on the CPU reference: f32 and f64 forward and the f64 exact gradient at the original's
//! shapes, and the f64 forward over an N sweep (B = 1) with its scaling exponent. KPI: f64
//! forward at B16 N4096 within 5 ms on a 2-core machine (the original's PyTorch reference takes
//! 2.7 s for this on an H100).

use muse_reference::bk_core::{BkCore, BkCoreArgs};
use muse_reference::{Backend, Cpu, Precision};
use muse_verify::cases::{bk_core_inputs, Regime, BK_CORE_SHAPES, BK_CORE_SWEEP_N};
use muse_verify::plot::Series;
use muse_verify::report::Site;
use muse_verify::Target;
use ndarray::Array2;
use num_complex::Complex64;

use crate::records::{self, MAX_LINEAR_EXPONENT};
use crate::timing::time;
use crate::{CpuCtx, Plot, Result};

/// The CPU KPI: f64 forward at B16 N4096, in ms.
const CPU_KPI_MS: f64 = 5.0;

/// One timed quantity.
struct Job {
    kernel: &'static str,
    shape: (usize, usize),
    precision: Precision,
}

/// The jobs in record order: per shape f32 and f64 forward and the f64 gradient, then the sweep.
fn jobs() -> Vec<Job> {
    let mut jobs = Vec::new();
    for &shape in &BK_CORE_SHAPES {
        for precision in Precision::ALL {
            jobs.push(Job {
                kernel: "bk_core_forward",
                shape,
                precision,
            });
        }
        jobs.push(Job {
            kernel: "bk_core_forward_backward",
            shape,
            precision: Precision::F64,
        });
    }
    for &n in &BK_CORE_SWEEP_N {
        jobs.push(Job {
            kernel: "bk_core_forward_sweep",
            shape: (1, n),
            precision: Precision::F64,
        });
    }
    jobs
}

/// Times every job into `ctx.report`; returns the sweep's plot.
pub(super) fn run(ctx: &mut CpuCtx<'_>) -> Result<Plot> {
    let jobs = jobs();
    let bar = crate::progress(jobs.len());
    let mut sweep = Vec::new();
    for job in &jobs {
        let (batch, n) = job.shape;
        bar.set_message(format!("{} B{batch} N{n} {}", job.kernel, job.precision));
        let (a, b, c, z) = bk_core_inputs(Regime::Benchmark, batch, n, 42);
        let bk = BkCoreArgs::new(a.view(), b.view(), c.view(), z)?;
        let t = if job.kernel == "bk_core_forward_backward" {
            let w = Array2::from_elem((batch, n), Complex64::new(1.0, 0.5));
            time(ctx.budget, || {
                Cpu.bk_core_grad(&bk, w.view(), job.precision).map(|_| ())
            })
        } else {
            time(ctx.budget, || Cpu.bk_core(&bk, job.precision).map(|_| ()))
        };
        Cpu.bk_core(&bk, job.precision)?; // surface errors instead of timing them
        let kpi = (job.kernel == "bk_core_forward"
            && job.shape == (16, 4096)
            && job.precision == Precision::F64)
            .then_some(Target::AtMost(CPU_KPI_MS));
        let (case, shape) = (format!("B{batch}xN{n}"), [batch, n]);
        let site = Site {
            kernel: job.kernel,
            backend: Cpu::NAME,
            case: &case,
            shape: &shape,
            dtype: job.precision.name(),
        };
        ctx.report
            .records
            .extend(records::cpu_timing(&site, &t, kpi));
        let elements = (batch * n) as f64;
        ctx.report
            .records
            .push(records::throughput(&site, elements, t.median_ms * 1e3));
        if job.kernel == "bk_core_forward_sweep" {
            sweep.push((n as f64, t.median_ms));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let shape = [
        1,
        *BK_CORE_SWEEP_N.last().expect("invariant: non-empty sweep"),
    ];
    let site = Site {
        kernel: "bk_core_forward_sweep",
        backend: Cpu::NAME,
        case: "sweep_n256_n65536",
        shape: &shape,
        dtype: "f64",
    };
    ctx.report.records.push(site.record(
        "scaling_exponent",
        records::scaling_exponent(&sweep),
        "",
        Some(Target::AtMost(MAX_LINEAR_EXPONENT)),
    ));
    ctx.report
        .meta
        .insert("inputs".into(), super::INPUTS.into());
    ctx.report.meta.insert(
        "anchor".into(),
        "original PyTorch mode A (vmap) at B16 N4096 on an H100: 2694 ms; mode B (wrong results): 25.2 ms".into(),
    );
    Ok(Plot {
        title: "BK-Core forward on the CPU reference: time against N".into(),
        unit: "ms",
        series: vec![Series {
            label: "cpu f64 forward, B=1".into(),
            points: sweep,
        }],
    })
}
