//! Shared test helpers: the per-backend test macro, the GPU accessor, dense oracles, assertions.
#![allow(dead_code)]

use muse::bk_core::BkCoreArgs;
use muse::verify::{stats::Verdict, ErrorStats, Tolerance};
use ndarray::{Array2, ArrayView2};
use num_complex::Complex64;

/// Expands `fn name(backend, args…)` into `name::cpu` and `name::cuda` rstest tests. The CUDA half
/// is ignored (with the reason) unless built with `--features cuda`; when built with it, a
/// missing GPU fails the test instead of passing it.
macro_rules! test_backends {
    ($(#[$case:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?);) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[rstest::rstest]
            $(#[$case])*
            fn cpu($(#[case] $arg: $ty),*) -> anyhow::Result<()> {
                super::$name(&muse::Cpu, $($arg),*)
            }
            #[rstest::rstest]
            $(#[$case])*
            #[cfg_attr(not(feature = "cuda"), ignore = "CUDA backend not compiled in: build with --features cuda and run on a GPU")]
            fn cuda($(#[case] $arg: $ty),*) -> anyhow::Result<()> {
                super::$name(crate::common::gpu()?, $($arg),*)
            }
        }
    };
}
pub(crate) use test_backends;

/// The process-wide CUDA backend, or the reason it is unavailable.
pub fn gpu() -> anyhow::Result<&'static muse::cuda::Cuda> {
    static GPU: std::sync::OnceLock<Result<muse::cuda::Cuda, String>> = std::sync::OnceLock::new();
    GPU.get_or_init(|| muse::cuda::Cuda::new().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Number of proptest cases for a backend: many on the CPU, fewer on the GPU (each case pays
/// transfers and launches).
pub fn cases<B: muse::Backend>(cpu: u32) -> u32 {
    if B::NAME == "cpu" {
        cpu
    } else {
        cpu.min(64)
    }
}

/// Dense complex128 diagonal of (T − zI)⁻¹ per row.
pub fn dense_diag(args: &BkCoreArgs<'_>) -> Array2<Complex64> {
    muse::reference::dense::diagonal(args).expect("test inputs are non-singular")
}

/// Flattens a 2-D array in row-major order.
pub fn flat<T: Clone>(x: &ArrayView2<'_, T>) -> Vec<T> {
    x.iter().cloned().collect()
}

/// Asserts element-wise closeness of complex arrays, printing the worst element and headroom.
pub fn assert_close(
    what: &str,
    got: &Array2<Complex64>,
    want: &Array2<Complex64>,
    tol: Tolerance,
) -> anyhow::Result<ErrorStats> {
    anyhow::ensure!(
        got.dim() == want.dim(),
        "{what}: shape {:?} vs {:?}",
        got.dim(),
        want.dim()
    );
    let (g, w) = (flat(&got.view()), flat(&want.view()));
    let v = Verdict::complex(&g, &w, tol);
    let stats = ErrorStats::complex(&g, &w);
    let n = want.ncols().max(1);
    anyhow::ensure!(
        v.passed(),
        "{what}: {}/{} outside ({tol}); worst [{}, {}]: got {} want {}, {:.3}x allowed; max_abs {:.3e}",
        v.outside, v.count, v.worst_index / n, v.worst_index % n, v.worst.0, v.worst.1, v.worst_ratio, stats.max_abs
    );
    Ok(stats)
}

/// Asserts `max|got − want| ≤ rel · max|want|` for real arrays (gradient rule of design §12).
pub fn assert_close_scaled(
    what: &str,
    got: &Array2<f64>,
    want: &Array2<f64>,
    rel: f64,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        got.dim() == want.dim(),
        "{what}: shape {:?} vs {:?}",
        got.dim(),
        want.dim()
    );
    let scale = want
        .iter()
        .fold(0.0f64, |m, x| m.max(x.abs()))
        .max(f64::MIN_POSITIVE);
    let s = ErrorStats::real(&flat(&got.view()), &flat(&want.view()));
    anyhow::ensure!(
        s.nonfinite_mismatch == 0 && s.max_abs <= rel * scale,
        "{what}: max |Δ| = {:.3e} at flat {} exceeds {rel:e} · max|want| = {:.3e} ({:.2}x allowed)",
        s.max_abs,
        s.argmax,
        rel * scale,
        s.max_abs / (rel * scale)
    );
    Ok(())
}

/// Runs the registered case `name` on `be`; every record must meet its target.
pub fn registered_case_passes<B: muse::Backend>(be: &B, name: &str) -> anyhow::Result<()> {
    let m = muse::verify::fixtures::Manifest::discover()?;
    let case = muse::verify::suite::registry(&m)
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| anyhow::anyhow!("case {name} is not registered"))?;
    let records = muse::verify::suite::run(be, &case, &m)?;
    anyhow::ensure!(!records.is_empty(), "{name}: no records");
    let failed: Vec<String> = records
        .iter()
        .filter(|r| !r.pass)
        .map(|r| {
            format!(
                "{} {} {}: {} (target {:?})",
                r.kernel, r.dtype, r.metric, r.value, r.target
            )
        })
        .collect();
    anyhow::ensure!(
        failed.is_empty(),
        "{name} on {}:\n  {}",
        B::NAME,
        failed.join("\n  ")
    );
    Ok(())
}
