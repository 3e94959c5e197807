//! `muse verify`: every registered case on every available backend; writes
//! `<out>/verification.json` and `<out>/verification.md`; exit 1 if any case fails.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use muse_cuda::Cuda;
use muse_reference::{Backend, Cpu};
use muse_verify::{fixtures::Manifest, Record, Report};

use crate::backends::{open_cuda, BackendArg};
use crate::Outcome;
use muse_verify::suite::{self, Case};

/// Arguments of `muse verify`.
#[derive(clap::Args)]
pub struct Args {
    /// Backend to run; repeat for several. Default: every available backend.
    #[arg(long, value_enum)]
    backend: Vec<BackendArg>,
    /// Directory for verification.json and verification.md.
    #[arg(long, default_value = "reports")]
    out: PathBuf,
    /// Fail (exit 2) when CUDA is unavailable instead of skipping it.
    #[arg(long)]
    require_cuda: bool,
    /// Only run cases whose name contains one of these comma-separated texts.
    #[arg(long)]
    filter: Option<String>,
}

enum Be {
    Cpu(Cpu),
    Cuda(Cuda),
}

impl Be {
    fn name(&self) -> &'static str {
        match self {
            Be::Cpu(_) => Cpu::NAME,
            Be::Cuda(_) => Cuda::NAME,
        }
    }
    fn device(&self) -> String {
        match self {
            Be::Cpu(b) => b.device(),
            Be::Cuda(b) => b.device(),
        }
    }
    fn run(&self, case: &Case, m: &Manifest) -> anyhow::Result<Vec<Record>> {
        match self {
            Be::Cpu(b) => Ok(suite::run(b, case, m)?),
            Be::Cuda(b) => Ok(suite::run(b, case, m)?),
        }
    }
}

/// Runs `muse verify`.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let manifest = Manifest::discover()?;
    let wanted = |b| args.backend.is_empty() || args.backend.contains(&b);
    let mut backends = Vec::new();
    let mut meta = BTreeMap::new();
    if wanted(BackendArg::Cpu) {
        backends.push(Be::Cpu(Cpu));
    }
    if wanted(BackendArg::Cuda) {
        match open_cuda() {
            Ok(gpu) => {
                for (k, v) in gpu.provenance() {
                    meta.insert(k.to_string(), v.into());
                }
                backends.push(Be::Cuda(gpu));
            }
            Err(why) if args.require_cuda || !args.backend.is_empty() => bail!("{why}"),
            Err(why) => {
                eprintln!("CUDA skipped: {why}");
                meta.insert("cuda".to_string(), format!("skipped: {why}").into());
            }
        }
    }
    let cases: Vec<Case> = suite::registry(&manifest)
        .into_iter()
        .filter(|c| {
            args.filter
                .as_ref()
                .is_none_or(|f| f.split(',').any(|part| c.name.contains(part)))
        })
        .collect();
    if cases.is_empty() {
        bail!(
            "`--filter {}` matches no registered case",
            args.filter.as_deref().unwrap_or_default()
        );
    }
    let jobs: Vec<(&Be, &Case)> = backends
        .iter()
        .flat_map(|be| {
            cases
                .iter()
                .filter(move |c| be.name() == Cpu::NAME || !c.cpu_only())
                .map(move |c| (be, c))
        })
        .collect();
    let bar = ProgressBar::new(jobs.len() as u64).with_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {msg}")
            .expect("invariant: valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix("verify");
    let device = backends
        .iter()
        .map(|b| format!("{}: {}", b.name(), b.device()))
        .collect::<Vec<_>>()
        .join("; ");
    let mut report = Report::new(device);
    let mut errors = Vec::new();
    for (be, case) in jobs {
        bar.set_message(format!("{} {}", be.name(), case.name));
        match be.run(case, &manifest) {
            Ok(records) => report.records.extend(records),
            Err(e) => {
                bar.println(format!("error: {} {}: {e:#}", be.name(), case.name));
                errors.push(format!("{} {}: {e:#}", be.name(), case.name));
                report
                    .records
                    .push(suite::error_record(be.name(), case, &[]));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    meta.insert("cases".into(), cases.len().into());
    if !errors.is_empty() {
        meta.insert("errors".into(), errors.into());
    }
    report.meta = meta;
    // A CUDA-only run gets its own report, so it never overwrites the CPU one.
    let stem = match backends.as_slice() {
        [Be::Cuda(_)] => "verification-cuda",
        _ => "verification",
    };
    let (json, md) = report.write(&args.out, stem, "muse verification report")?;
    print_summary(&report);
    println!("wrote {} and {}", json.display(), md.display());
    Ok(Outcome::of(&report))
}

fn print_summary(report: &Report) {
    let mut groups: BTreeMap<(String, String, String), (usize, usize)> = BTreeMap::new();
    for r in &report.records {
        let e = groups
            .entry((r.backend.clone(), r.kernel.clone(), r.dtype.clone()))
            .or_default();
        e.0 += 1;
        e.1 += usize::from(!r.pass);
    }
    println!(
        "{:<6} {:<30} {:<5} {:>8} {:>7}",
        "backend", "kernel", "dtype", "records", "failed"
    );
    for ((backend, kernel, dtype), (n, failed)) in &groups {
        println!("{backend:<6} {kernel:<30} {dtype:<5} {n:>8} {failed:>7}");
    }
    for r in report.failures() {
        println!(
            "FAIL {} {} {} {} {}: {} (target {})",
            r.backend,
            r.kernel,
            r.case,
            r.dtype,
            r.metric,
            r.value,
            r.target.map_or_else(|| "-".into(), |t| t.to_string())
        );
    }
    let failed = report.failures().count();
    println!("{} records, {} failed", report.records.len(), failed);
}
