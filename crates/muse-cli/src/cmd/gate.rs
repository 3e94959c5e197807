//! `muse gate`: the CI regression gate. Fails (exit 1) on any failing record in the current
//! report, any baseline record missing for a backend that ran, (with `--max-slowdown`) a KPI slower
//! than the baseline by more than the given fraction, or (with `--kernel-sources`) a GPU report
//! that measured other kernel sources than those in the tree. With `--kernel-sources`, compiler
//! records of CUDA functions no longer in the sources are not comparable (not missing), and so
//! are the records of each `--retire METRIC|KEY_PREFIX`.

use std::path::PathBuf;

use muse_verify::{gate, Report};

use crate::Outcome;

/// Arguments of `muse gate`.
#[derive(clap::Args)]
pub struct Args {
    /// The committed baseline report (JSON).
    #[arg(long)]
    baseline: PathBuf,
    /// The fresh report (JSON).
    #[arg(long)]
    current: PathBuf,
    /// Also fail when a KPI (a time record with a target) is slower than the baseline by more
    /// than this fraction (e.g. 0.1 for 10 %).
    #[arg(long)]
    max_slowdown: Option<f64>,
    /// Also fail unless the current report measured the kernel sources in this directory (GPU
    /// reports record their hash).
    #[arg(long)]
    kernel_sources: Option<PathBuf>,
    /// A metric, or a record-key prefix (`kernel/backend/case`), retired on purpose (repeatable):
    /// its baseline records are reported as not comparable instead of missing.
    #[arg(long = "retire", value_name = "METRIC|KEY_PREFIX")]
    retire: Vec<String>,
}

/// Runs `muse gate`.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    if let Some(x) = args.max_slowdown.filter(|x| !(x.is_finite() && *x >= 0.0)) {
        anyhow::bail!("`--max-slowdown {x}` must be a non-negative fraction, e.g. 0.1");
    }
    let mut baseline = Report::load(&args.baseline)?;
    let current = Report::load(&args.current)?;
    let mut retired = match &args.kernel_sources {
        Some(dir) => gate::retire_removed_kernels(&mut baseline, &kernel_text(dir)?),
        None => Vec::new(),
    };
    retired.extend(gate::retire_metrics(&mut baseline, &args.retire));
    let mut out = gate::check(&baseline, &current, args.max_slowdown);
    out.not_comparable.extend(retired);
    if let Some(dir) = &args.kernel_sources {
        let now = muse_cuda::kernel_sources_sha256(dir)
            .map_err(|e| anyhow::anyhow!("`--kernel-sources {}`: {e}", dir.display()))?;
        out.regressions.extend(gate::check_sources(&current, &now));
    }
    for line in &out.not_comparable {
        println!("not comparable: {line}");
    }
    if !out.new.is_empty() {
        println!("{} new record(s) not in the baseline", out.new.len());
    }
    for line in &out.regressions {
        println!("REGRESSION: {line}");
    }
    println!(
        "gate: {} ({} records now, {} in the baseline {})",
        if out.passed() { "passed" } else { "FAILED" },
        current.records.len(),
        baseline.records.len(),
        args.baseline.display()
    );
    Ok(Outcome::from_pass(out.passed()))
}

/// The text of every `.cu` / `.cuh` file under `dir` (where the gate looks up kernel names).
fn kernel_text(dir: &std::path::Path) -> anyhow::Result<String> {
    let mut text = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d)
            .map_err(|e| anyhow::anyhow!("`--kernel-sources {}`: {e}", d.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "cu" || e == "cuh") {
                text.push_str(&std::fs::read_to_string(&path)?);
                text.push('\n');
            }
        }
    }
    Ok(text)
}
