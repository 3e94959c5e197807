//! `muse bench`: the KPI benchmarks of every kernel family (`muse_bench`). Writes
//! `<out>/kpi.{json,md,svg}` (CPU) or `<out>/kpi-cuda.{json,md,svg}` (CUDA), prints the records
//! that carry a target or a speedup, and exits 1 if a KPI misses its target.

use std::path::PathBuf;

use muse_bench::{CpuOptions, CudaOptions, Output};
use muse_verify::plot::time_vs_n;
use muse_verify::Report;

use crate::backends::BackendArg;
use crate::Outcome;

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
    /// JSON written by a ci/baselines/torch_*.py script on the same GPU, for side-by-side ratios
    /// (repeat the flag for several files).
    #[arg(long)]
    pub(crate) torch_baseline: Vec<PathBuf>,
    /// Directory with compute-sanitizer logs (memcheck.log, racecheck.log) to record.
    #[arg(long)]
    pub(crate) sanitizer_dir: Option<PathBuf>,
    /// Only these kernel families (comma-separated stems, e.g. `hyp_attn`); default all.
    #[arg(long, value_delimiter = ',')]
    pub(crate) family: Vec<String>,
}

/// Runs `muse bench`.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let output = match args.backend {
        BackendArg::Cpu => muse_bench::run_cpu(&CpuOptions {
            budget_ms: args.budget_ms,
            families: args.family.clone(),
        })?,
        BackendArg::Cuda => muse_bench::run_cuda(&CudaOptions {
            runs: args.runs,
            torch_baseline: args.torch_baseline,
            sanitizer_dir: args.sanitizer_dir,
            families: args.family.clone(),
        })?,
    };
    write(&output, &args.out)
}

/// Writes the plots, `<out>/<stem>.{json,md}` and the original's benchmark files it answers
/// (`<out>/original/`, `muse_bench::original`), prints the targeted records and the written
/// files, and maps the report onto the exit outcome.
fn write(output: &Output, out: &std::path::Path) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(out)?;
    let mut svgs = Vec::new();
    for (file, plot) in &output.plots {
        let svg = out.join(file);
        time_vs_n(&svg, &plot.title, plot.unit, &plot.series)?;
        svgs.push(svg.display().to_string());
    }
    let report = &output.report;
    let (json, md) = report.write(out, output.stem, output.title)?;
    print_targets(report);
    let mut files = vec![json.display().to_string(), md.display().to_string()];
    files.extend(svgs);
    // The original's benchmark files this run answers (quantisation, memory profile, long context).
    let sections =
        muse_bench::original::write_sections(report, &out.join("original"), output.stem)?;
    files.extend(sections.iter().map(|p| p.display().to_string()));
    let last = files.pop().expect("invariant: json and md were written");
    println!("wrote {} and {last}", files.join(", "));
    Ok(Outcome::of(report))
}

/// Prints every record that carries a target or is a speedup, one line each, PASS/FAIL last.
fn print_targets(report: &Report) {
    let shown = report
        .records
        .iter()
        .filter(|r| r.target.is_some() || r.goal.is_some() || r.metric.starts_with("speedup"));
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
            match (r.target, r.goal) {
                (Some(t), _) => format!("{t}: {}", if r.pass { "PASS" } else { "FAIL" }),
                (None, Some(g)) => format!(
                    "goal {g}: {}",
                    if r.goal_met() == Some(true) {
                        "met"
                    } else {
                        "missed"
                    }
                ),
                (None, None) => String::new(),
            }
        );
    }
}
