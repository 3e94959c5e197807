//! The GPU side of [`run_cuda`](crate::run_cuda): opens the device, stamps the provenance, runs
//! every family's GPU benchmarks, then the rows of the PyTorch baseline no family claimed and the
//! compute-sanitizer counts.

use muse_cuda::{Cuda, Gpu};
use muse_reference::Backend;
use muse_verify::Report;

use crate::records::{sanitizer, torch::TorchBaseline};
use crate::{bk_core, CudaOptions, Error, Output, Result};

/// Report stem of the GPU KPIs.
const STEM: &str = "kpi-cuda";

/// Kernel of the compute-sanitizer records: the key of the committed baselines (named when
/// BK-Core was the only family; the logs cover every kernel the sanitized `muse verify` ran).
const SANITIZER_KERNEL: &str = "bk_core_all_kernels";

/// What a family's GPU benchmarks get.
pub struct CudaCtx<'a> {
    /// The device.
    pub gpu: &'static Gpu,
    /// The report the records go into.
    pub report: &'a mut Report,
    /// Timed repeats per measurement (`muse_cuda::timing::time_events`).
    pub runs: usize,
    /// The PyTorch baseline rows (empty without `--torch-baseline`): each family claims its
    /// kernels' rows and records them beside its speedups.
    pub torch: &'a mut TorchBaseline,
}

/// Runs the GPU KPIs of every family.
pub(crate) fn run(opts: &CudaOptions) -> Result<Output> {
    if opts.runs < 100 {
        return Err(Error::Option {
            flag: format!("--runs {}", opts.runs),
            rule: "use at least 100 timed repeats",
        });
    }
    let cuda = Cuda::new()?;
    let gpu = cuda.gpu()?;
    let mut torch = TorchBaseline::default();
    for path in &opts.torch_baseline {
        torch.merge(TorchBaseline::load(path, bk_core::TORCH_KERNEL)?);
    }
    let mut report = Report::new(cuda.device());
    let timing = format!(
        "CUDA events; 10 warm-up calls; L2 ({} MB) flushed before each of {} repeats; median, p20, p80",
        gpu.info().l2_bytes >> 20,
        opts.runs
    );
    for (k, v) in cuda.provenance().into_iter().chain([("timing", timing)]) {
        report.meta.insert(k.into(), v.into());
    }
    if let Some(v) = &torch.torch {
        report.meta.insert("torch".into(), v.clone());
    }
    if !torch.errors.is_empty() {
        report
            .meta
            .insert("torch_errors".into(), torch.errors.clone().into());
    }
    let mut plots = Vec::new();
    for family in crate::select(&opts.families)? {
        let mut ctx = CudaCtx {
            gpu,
            report: &mut report,
            runs: opts.runs,
            torch: &mut torch,
        };
        if let Some(plot) = family.cuda(&mut ctx)? {
            plots.push((family.plot_file(STEM), plot));
        }
    }
    for row in torch.unclaimed() {
        report.records.extend(row.records());
    }
    if let Some(dir) = &opts.sanitizer_dir {
        sanitizer::records(&mut report, dir, SANITIZER_KERNEL);
    }
    Ok(crate::finish(report, STEM, "muse KPI report (CUDA)", plots))
}
