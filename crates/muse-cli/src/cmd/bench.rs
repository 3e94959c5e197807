//! `muse bench`: KPI benchmarks of BK-Core. Times the original's shapes and an N sweep, writes
//! `<out>/kpi.json`, `<out>/kpi.md` and `<out>/kpi.svg` (time against N, log–log).

use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use muse_reference::bk_core::{BkCore, BkCoreArgs};
use muse_reference::{Backend, Cpu, Precision};
use muse_verify::cases::{bk_core_inputs, Regime, BK_CORE_SHAPES, BK_CORE_SWEEP_N};
use muse_verify::plot::{time_vs_n, Series};
use muse_verify::report::Site;
use muse_verify::{Report, Target};
use ndarray::Array2;
use num_complex::Complex64;

use crate::backends::BackendArg;
use crate::timing::{time, Timing};
use crate::Outcome;

/// The CPU KPI: f64 forward at B16 N4096 within 5 ms on a 2-core machine (the original's
/// PyTorch reference takes 2.7 s for this on an H100).
const CPU_KPI_MS: f64 = 5.0;
/// O(N): the fitted exponent of time against N over the sweep must stay below this.
const MAX_SCALING_EXPONENT: f64 = 1.15;

/// Arguments of `muse bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Backend to benchmark.
    #[arg(long, value_enum, default_value = "cpu")]
    pub(crate) backend: BackendArg,
    /// Directory for the KPI reports (kpi.* for the CPU, kpi-cuda.* for CUDA).
    #[arg(long, default_value = "reports")]
    pub(crate) out: PathBuf,
    /// Time budget per CPU measurement, in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub(crate) budget_ms: u64,
    /// Timed repeats per GPU measurement (after warm-up), at least 100.
    #[arg(long, default_value_t = 200)]
    pub(crate) runs: usize,
    /// JSON written by ci/baselines/torch_bk_core.py on the same GPU, for side-by-side ratios.
    #[arg(long)]
    pub(crate) torch_baseline: Option<PathBuf>,
    /// Directory with compute-sanitizer logs (memcheck.log, racecheck.log) to record.
    #[arg(long)]
    pub(crate) sanitizer_dir: Option<PathBuf>,
}

/// One timed quantity.
struct Job {
    kernel: &'static str,
    shape: (usize, usize),
    precision: Precision,
}

/// Runs `muse bench`.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    match args.backend {
        BackendArg::Cpu => bench_cpu(&args),
        BackendArg::Cuda => super::bench_cuda::run(&args),
    }
}

fn bench_cpu(args: &Args) -> anyhow::Result<Outcome> {
    if args.budget_ms == 0 {
        anyhow::bail!("`--budget-ms 0`: the budget must be at least 1 ms");
    }
    let budget = Duration::from_millis(args.budget_ms);
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
    let bar = ProgressBar::new(jobs.len() as u64).with_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {msg}")
            .expect("invariant: valid template"),
    );
    bar.set_prefix("bench");
    let mut report = Report::new(Cpu.device());
    let mut sweep = Vec::new();
    for job in &jobs {
        let (batch, n) = job.shape;
        bar.set_message(format!("{} B{batch} N{n} {}", job.kernel, job.precision));
        let (a, b, c, z) = bk_core_inputs(Regime::Benchmark, batch, n, 42);
        let bk = BkCoreArgs::new(a.view(), b.view(), c.view(), z)?;
        let t = if job.kernel == "bk_core_forward_backward" {
            let w = Array2::from_elem((batch, n), Complex64::new(1.0, 0.5));
            time(budget, || {
                Cpu.bk_core_grad(&bk, w.view(), job.precision).map(|_| ())
            })
        } else {
            time(budget, || Cpu.bk_core(&bk, job.precision).map(|_| ()))
        };
        Cpu.bk_core(&bk, job.precision)?; // surface errors instead of timing them
        let kpi = (job.kernel == "bk_core_forward"
            && job.shape == (16, 4096)
            && job.precision == Precision::F64)
            .then_some(Target::AtMost(CPU_KPI_MS));
        push_timing(&mut report, job, &t, kpi);
        if job.kernel == "bk_core_forward_sweep" {
            sweep.push((n as f64, t.median_ms));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let exponent = scaling_exponent(&sweep);
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
    report.records.push(site.record(
        "scaling_exponent",
        exponent,
        "",
        Some(Target::AtMost(MAX_SCALING_EXPONENT)),
    ));
    report.meta.insert("threads".into(), 1.into());
    report.meta.insert(
        "inputs".into(),
        "a, b, c ~ N(0,1) seed 42, z = 0.1+0.1i (the original's benchmark inputs)".into(),
    );
    report.meta.insert(
        "anchor".into(),
        "original PyTorch mode A (vmap) at B16 N4096 on an H100: 2694 ms; mode B (wrong results): 25.2 ms".into(),
    );
    report.meta.insert("plot".into(), "kpi.svg".into());
    std::fs::create_dir_all(&args.out)?;
    let svg = args.out.join("kpi.svg");
    let series = [Series {
        label: "cpu f64 forward, B=1".into(),
        points: sweep,
    }];
    time_vs_n(
        &svg,
        "BK-Core forward on the CPU reference: time against N",
        "ms",
        &series,
    )?;
    finish(&report, &args.out, "kpi", "muse KPI report (CPU)", &svg)
}

/// Writes `<out>/<stem>.{json,md}`, prints the targeted records and the written files, and maps
/// the report onto the exit outcome.
pub(crate) fn finish(
    report: &Report,
    out: &Path,
    stem: &str,
    title: &str,
    svg: &Path,
) -> anyhow::Result<Outcome> {
    let (json, md) = report.write(out, stem, title)?;
    print_targets(report);
    println!(
        "wrote {}, {} and {}",
        json.display(),
        md.display(),
        svg.display()
    );
    Ok(Outcome::of(report))
}

fn push_timing(report: &mut Report, job: &Job, t: &Timing, kpi: Option<Target>) {
    let (batch, n) = job.shape;
    let case = format!("B{batch}xN{n}");
    let shape = [batch, n];
    let site = Site {
        kernel: job.kernel,
        backend: Cpu::NAME,
        case: &case,
        shape: &shape,
        dtype: job.precision.name(),
    };
    let rec =
        |metric: &str, value: f64, unit: &str, target| site.record(metric, value, unit, target);
    report
        .records
        .push(rec("time_median", t.median_ms, "ms", kpi));
    report.records.push(rec("time_p20", t.p20_ms, "ms", None));
    report.records.push(rec("time_p80", t.p80_ms, "ms", None));
    report.records.push(rec("runs", t.runs as f64, "", None));
    report.records.push(rec(
        "throughput",
        (batch * n) as f64 / t.median_ms / 1e3,
        "Melem/s",
        None,
    ));
}

/// Least-squares slope of log(time) against log(N) over points with N ≥ 1024 (smaller N is
/// dominated by fixed costs).
pub(crate) fn scaling_exponent(points: &[(f64, f64)]) -> f64 {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.0 >= 1024.0)
        .map(|&(n, t)| (n.ln(), t.ln()))
        .collect();
    let k = pts.len() as f64;
    let (mx, my) = (
        pts.iter().map(|p| p.0).sum::<f64>() / k,
        pts.iter().map(|p| p.1).sum::<f64>() / k,
    );
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    sxy / sxx
}

/// Prints every record that carries a target or is a speedup, one line each, PASS/FAIL last.
pub(crate) fn print_targets(report: &Report) {
    let shown = report
        .records
        .iter()
        .filter(|r| r.target.is_some() || r.metric.starts_with("speedup"));
    for r in shown {
        println!(
            "{:<26} {:<10} {:<16} {:<4} {:<24} {:>12.4} {:<5} {}",
            r.kernel,
            r.backend,
            r.case,
            r.dtype,
            r.metric,
            r.value,
            r.unit,
            r.target.map_or(String::new(), |t| format!(
                "{t}: {}",
                if r.pass { "PASS" } else { "FAIL" }
            ))
        );
    }
}
