//! KPI benchmarks of muse (`muse bench`): every kernel family's CPU and GPU measurements, turned
//! into report records. Design: toolchain-and-testing §5 (benchmarking), style §2.9.
//!
//! [`run_cpu`] and [`run_cuda`] run every family of [`FAMILIES`] into one [`Report`] and return
//! it with the plots to draw ([`Output`]); the CLI only writes the files. Shared pieces:
//! [`timing`] (CPU wall clock; GPU CUDA events from `muse_cuda::timing`) and [`records`]
//! (timing, speedup and scaling records, compute-sanitizer logs, PyTorch baselines).
//!
//! # Adding a family
//!
//! For a family with stem `hyp_attn` (the shapes and inputs it shares with the tests live in
//! `muse_verify::cases`):
//!
//! 1. write `src/hyp_attn.rs` (or `src/hyp_attn/{mod,cpu,cuda}.rs` past ~400 lines): a unit
//!    struct implementing [`Family`], whose `cpu` pushes the CPU KPI records into the report and
//!    whose `cuda` (behind `#[cfg(feature = "cuda")]`) pushes the GPU ones, each returning the
//!    family's time-against-N plot; PyTorch baseline rows of its kernels are taken with
//!    [`records::torch::TorchBaseline::claim`];
//! 2. declare it (`pub mod hyp_attn;`) and add `&hyp_attn::HypAttn` to [`FAMILIES`].
//!
//! Its plot is written as `kpi-hyp_attn.svg` (`kpi-cuda-hyp_attn.svg`); meta keys it adds start
//! with its stem.
//!
//! ```no_run
//! let out = muse_bench::run_cpu(&muse_bench::CpuOptions { budget_ms: 300, families: vec![] })?;
//! assert_eq!(out.stem, "kpi");
//! # Ok::<(), muse_bench::Error>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod bk_core;
#[cfg(feature = "cuda")]
mod cuda;
mod error;
pub mod hyp_attn;
pub mod hyp_dist;
pub mod hyp_int8;
pub mod hyp_ln;
mod hyp_small;
pub mod kv4;
pub mod lin_attn;
pub mod model;
pub mod original;
pub mod pool;
pub mod records;
pub mod sparse_attn;
pub mod timing;
pub mod train;
pub mod vram;
pub mod w4a8;

use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use muse_reference::{Backend, Cpu};
use muse_verify::plot::Series;
use muse_verify::Report;

#[cfg(feature = "cuda")]
pub use cuda::CudaCtx;
pub use error::{Error, Result};

/// Every family with KPI benchmarks, in report order. A new family adds one line here.
pub const FAMILIES: &[&dyn Family] = &[
    &bk_core::BkCore,
    &hyp_attn::HypAttnFamily,
    &hyp_ln::HypLnFamily,
    &lin_attn::LinAttnFamily,
    &hyp_dist::HypDistFamily,
    &model::ModelFamily,
    &train::TrainFamily,
    &pool::PoolFamily,
    &kv4::Kv4Family,
    &hyp_int8::HypInt8Family,
    &w4a8::W4a8Family,
    &sparse_attn::SparseAttnFamily,
    &vram::VramFamily,
];

/// One kernel family's KPI benchmarks.
pub trait Family: Sync {
    /// The family's stem (`bk_core`): names its plot file and its meta keys.
    fn stem(&self) -> &'static str;

    /// File name of the family's plot in a report `<stem>` (`kpi`, `kpi-cuda`).
    fn plot_file(&self, report_stem: &str) -> String {
        format!("{report_stem}-{}.svg", self.stem())
    }

    /// Measures the CPU KPIs into `ctx.report`; returns the plot to draw, if any.
    fn cpu(&self, ctx: &mut CpuCtx<'_>) -> Result<Option<Plot>>;

    /// Measures the GPU KPIs into `ctx.report`; returns the plot to draw, if any.
    #[cfg(feature = "cuda")]
    fn cuda(&self, ctx: &mut CudaCtx<'_>) -> Result<Option<Plot>>;
}

/// What a family's CPU benchmarks get: the report to fill and the time budget.
pub struct CpuCtx<'a> {
    /// The report the records go into.
    pub report: &'a mut Report,
    /// Time budget per measurement ([`timing::time`]).
    pub budget: Duration,
}

/// Options of [`run_cpu`] (the CPU flags of `muse bench`).
#[derive(Debug, Clone)]
pub struct CpuOptions {
    /// Time budget per measurement, in milliseconds (`--budget-ms`, at least 1).
    pub budget_ms: u64,
    /// Only these family stems (`--family`); every family when empty.
    pub families: Vec<String>,
}

/// The families selected by `names` (all when empty); an unknown name is an error listing the
/// known ones.
pub fn select(names: &[String]) -> Result<Vec<&'static dyn Family>> {
    if let Some(bad) = names
        .iter()
        .find(|n| FAMILIES.iter().all(|f| f.stem() != n.as_str()))
    {
        return Err(Error::Option {
            flag: format!("--family {bad}"),
            rule: "unknown family; known: bk_core, hyp_attn, hyp_ln, lin_attn, hyp_dist, model, train, pool, kv4, hyp_int8, w4a8, sparse_attn, vram",
        });
    }
    Ok(FAMILIES
        .iter()
        .copied()
        .filter(|f| names.is_empty() || names.iter().any(|n| n == f.stem()))
        .collect())
}

/// Options of [`run_cuda`] (the CUDA flags of `muse bench`).
#[derive(Debug, Clone)]
pub struct CudaOptions {
    /// Timed repeats per measurement after warm-up (`--runs`, at least 100).
    pub runs: usize,
    /// JSON files written by the PyTorch baseline scripts on the same GPU (`--torch-baseline`,
    /// repeatable), see [`records::torch`].
    pub torch_baseline: Vec<PathBuf>,
    /// Directory with compute-sanitizer logs `memcheck.log`, `racecheck.log`
    /// (`--sanitizer-dir`), see [`records::sanitizer`].
    pub sanitizer_dir: Option<PathBuf>,
    /// Only these family stems (`--family`); every family when empty.
    pub families: Vec<String>,
}

/// A time-against-N plot (log–log), drawn by `muse_verify::plot::time_vs_n`.
#[derive(Debug, Clone)]
pub struct Plot {
    /// Title.
    pub title: String,
    /// Unit of the time axis (`ms`, `us`).
    pub unit: &'static str,
    /// The lines.
    pub series: Vec<Series>,
}

/// What a benchmark run produced: the report and the plots to write beside it.
#[derive(Debug, Clone)]
pub struct Output {
    /// The records and provenance.
    pub report: Report,
    /// File stem of the report: `kpi` (CPU) or `kpi-cuda`.
    pub stem: &'static str,
    /// Title of the Markdown rendering.
    pub title: &'static str,
    /// Each plot with its file name in the output directory (the first is `meta.plot`).
    pub plots: Vec<(String, Plot)>,
}

/// Report stem of the CPU KPIs.
const CPU_STEM: &str = "kpi";

/// Runs the CPU KPIs of every family (the reference, one thread).
///
/// Fails on a zero budget and when a kernel errors on the benchmark inputs.
pub fn run_cpu(opts: &CpuOptions) -> Result<Output> {
    if opts.budget_ms == 0 {
        return Err(Error::Option {
            flag: "--budget-ms 0".into(),
            rule: "the budget must be at least 1 ms",
        });
    }
    let mut report = Report::new(Cpu.device());
    report.meta.insert("threads".into(), 1.into());
    let mut plots = Vec::new();
    for family in select(&opts.families)? {
        let mut ctx = CpuCtx {
            report: &mut report,
            budget: Duration::from_millis(opts.budget_ms),
        };
        if let Some(plot) = family.cpu(&mut ctx)? {
            plots.push((family.plot_file(CPU_STEM), plot));
        }
    }
    Ok(finish(report, CPU_STEM, "muse KPI report (CPU)", plots))
}

/// Runs the GPU KPIs of every family: CUDA events, L2 flushed before every repeat, the CPU
/// reference and the PyTorch baselines side by side, compute-sanitizer counts.
///
/// Without the `cuda` feature this fails with [`Error::NotCompiledWithCuda`]; with it, on fewer
/// than 100 runs, an unreadable baseline, a missing GPU or a failed launch.
pub fn run_cuda(opts: &CudaOptions) -> Result<Output> {
    #[cfg(feature = "cuda")]
    {
        cuda::run(opts)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = opts;
        Err(Error::NotCompiledWithCuda)
    }
}

/// Points the report's `plot` meta at the first plot and bundles the output.
fn finish(
    mut report: Report,
    stem: &'static str,
    title: &'static str,
    plots: Vec<(String, Plot)>,
) -> Output {
    if let Some((file, _)) = plots.first() {
        report.meta.insert("plot".into(), file.clone().into());
    }
    Output {
        report,
        stem,
        title,
        plots,
    }
}

/// A progress bar on stderr for `len` measurements.
pub(crate) fn progress(len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {msg}")
            .expect("invariant: valid template"),
    );
    bar.set_prefix("bench");
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_budget_is_refused_before_any_work() {
        let err = run_cpu(&CpuOptions {
            budget_ms: 0,
            families: vec![],
        })
        .expect_err("refused");
        assert_eq!(
            err.to_string(),
            "`--budget-ms 0`: the budget must be at least 1 ms"
        );
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn run_cuda_without_the_feature_names_the_fix() {
        let opts = CudaOptions {
            runs: 200,
            torch_baseline: Vec::new(),
            families: Vec::new(),
            sanitizer_dir: None,
        };
        let err = run_cuda(&opts).expect_err("not compiled");
        assert_eq!(err.to_string(), muse_cuda::NOT_COMPILED);
    }

    #[test]
    fn bk_core_keeps_the_historical_plot_names() {
        assert_eq!(bk_core::BkCore.plot_file("kpi"), "kpi.svg");
        assert_eq!(bk_core::BkCore.plot_file("kpi-cuda"), "kpi-cuda.svg");
        assert_eq!(FAMILIES[0].stem(), "bk_core");
    }
}
