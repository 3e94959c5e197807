//! The BK-Core family of the suite: exact forward and gradient cases (golden fixtures and
//! generated inputs, here) and the original's compat modes (`compat.rs`, CPU only). Fixtures:
//! `fixtures/bk_core/` (gen.py); shapes and inputs: `crate::cases`; targets: `checks.rs`.

use crate::cases::{bk_core_inputs, Regime};
use crate::fixtures::{FixtureCase, Manifest};
use crate::Record;
use muse_reference::bk_core::{BkCore, BkCoreArgs, BkCoreGrad};
use muse_reference::{dense, Backend, Cpu, Precision};
use ndarray::{Array2, Ix1, Ix2};
use num_complex::Complex64;

use super::checks::{self, Class, Row};
use super::compat;

/// What a BK-Core case runs.
#[derive(Debug, Clone)]
pub enum Spec {
    /// Exact forward (and gradient, where the fixture has one) against a golden fixture.
    Fixture(String),
    /// Exact forward and gradient on generated inputs against the CPU f64 reference (and the dense
    /// inverse for small N).
    Synthetic(Synthetic),
    /// The original's compat modes against the fixture's independent emulation (CPU only).
    Compat(String),
}

/// The BK-Core cases: fixtures with an exact output, the generated cases, then the compat
/// checks of the fixtures that carry compat outputs (named `compat/<fixture>`).
pub fn cases(manifest: &Manifest) -> Vec<(String, Spec)> {
    let exact = manifest
        .family("bk_core")
        .filter(|fx| fx.has("g_re"))
        .map(|fx| (fx.name.clone(), Spec::Fixture(fx.name.clone())));
    let synthetic = synthetic_cases()
        .into_iter()
        .map(|s| (s.name(), Spec::Synthetic(s)));
    let compat = manifest
        .family("bk_core")
        .filter(|fx| compat::has_compat(fx))
        .map(|fx| (format!("compat/{}", fx.name), Spec::Compat(fx.name.clone())));
    exact.chain(synthetic).chain(compat).collect()
}

/// Runs one BK-Core case on `be` (compat cases on the CPU reference, whatever `be` is).
pub fn run<B: Backend>(be: &B, spec: &Spec, manifest: &Manifest) -> crate::Result<Vec<Record>> {
    match spec {
        Spec::Fixture(name) => fixture(be, manifest, manifest.case(name)?),
        Spec::Synthetic(s) => synthetic(be, s),
        Spec::Compat(name) => compat::run(manifest, manifest.case(name)?),
    }
}

/// Whether only the CPU reference implements the case: the compat modes.
pub fn cpu_only(spec: &Spec) -> bool {
    matches!(spec, Spec::Compat(_))
}

/// Generated inputs checked against the dense inverse (`dense`) or the CPU f64 reference.
#[derive(Debug, Clone, Copy)]
pub struct Synthetic {
    /// Input regime.
    pub regime: Regime,
    /// Batch size.
    pub batch: usize,
    /// Sequence length.
    pub n: usize,
    /// RNG seed.
    pub seed: u64,
    /// Use the dense O(N³) oracle (small N) instead of the CPU f64 reference.
    pub dense: bool,
    /// Also check the gradient.
    pub grad: bool,
}

impl Synthetic {
    /// Case id, e.g. `dense/benchmark_b4_n256` or `long/laplacian_b1_n1000000`.
    pub fn name(&self) -> String {
        let kind = if self.dense { "dense" } else { "long" };
        format!("{kind}/{}_b{}_n{}", self.regime.name(), self.batch, self.n)
    }

    fn class(&self) -> Class {
        match self.regime {
            Regime::Benchmark => Class::Random,
            Regime::Laplacian | Regime::Symmetric => Class::Model,
        }
    }
}

/// The generated cases: small ones against the dense inverse, the original's KPI shape with its
/// benchmark inputs, and long rows up to N = 1,000,000 (no overflow).
pub fn synthetic_cases() -> Vec<Synthetic> {
    let s = |regime, batch, n, dense, grad| Synthetic {
        regime,
        batch,
        n,
        seed: 42,
        dense,
        grad,
    };
    vec![
        s(Regime::Benchmark, 4, 256, true, true),
        s(Regime::Laplacian, 4, 256, true, true),
        s(Regime::Symmetric, 4, 256, true, true),
        s(Regime::Benchmark, 16, 4096, false, true),
        s(Regime::Laplacian, 16, 4096, false, true),
        s(Regime::Benchmark, 1, 65536, false, true),
        s(Regime::Symmetric, 1, 65536, false, true),
        s(Regime::Laplacian, 1, 1_000_000, false, false),
        s(Regime::Symmetric, 1, 1_000_000, false, false),
    ]
}

fn complex(re: &Array2<f64>, im: &Array2<f64>) -> Array2<Complex64> {
    ndarray::Zip::from(re)
        .and(im)
        .map_collect(|&r, &i| Complex64::new(r, i))
}

/// Class of a fixture from its data: symmetric couplings with |Im z| ≥ 0.05 are the model
/// regimes; z within 0.05 of the real axis is near the spectrum; the rest are random couplings.
fn fixture_class(args: &BkCoreArgs<'_>, want: &Array2<Complex64>) -> Class {
    match (args.b() == args.c(), args.z().im.abs() >= 0.05) {
        (_, false) => Class::NearSpectrum {
            kappa: condition_estimate(args, want),
        },
        (true, true) => Class::Model,
        (false, true) => Class::Random,
    }
}

/// κ ≈ max|G|·‖T − zI‖∞ (max|G_ii| ≤ ‖(T − zI)⁻¹‖, so this underestimates the true κ∞).
fn condition_estimate(args: &BkCoreArgs<'_>, g: &Array2<Complex64>) -> f64 {
    let (a, b, c, n) = (args.a(), args.b(), args.c(), args.n());
    let row_sum = |r: usize, i: usize| {
        let up = if i + 1 < n { b[[r, i]].abs() } else { 0.0 };
        let down = if i > 0 { c[[r, i - 1]].abs() } else { 0.0 };
        (a[[r, i]] - args.z()).norm() + up + down
    };
    let norm = (0..args.batch())
        .flat_map(|r| (0..n).map(move |i| (r, i)))
        .map(|(r, i)| row_sum(r, i))
        .fold(0.0, f64::max);
    g.iter().map(|v| v.norm()).fold(0.0, f64::max) * norm
}

/// A golden fixture: forward in both precisions, and the gradient where the fixture has one.
pub fn fixture<B: Backend>(be: &B, m: &Manifest, fx: &FixtureCase) -> crate::Result<Vec<Record>> {
    let load = |stem: &str| m.array::<Ix2>(fx, stem);
    let (a, b, c) = (load("a")?, load("b")?, load("c")?);
    let z = Complex64::new(fx.z[0], fx.z[1]);
    let args = BkCoreArgs::new(a.view(), b.view(), c.view(), z)?;
    let want = complex(&load("g_re")?, &load("g_im")?);
    let class = fixture_class(&args, &want);
    let grad = if fx.has("grad_a") {
        let w = complex(&load("w_re")?, &load("w_im")?);
        let gz = m.array::<Ix1>(fx, "grad_z")?;
        let want = BkCoreGrad {
            a: load("grad_a")?,
            b: load("grad_b")?,
            c: load("grad_c")?,
            z: Complex64::new(gz[0], gz[1]),
        };
        Some((w, want))
    } else {
        None
    };
    let grad = grad.as_ref().map(|(w, g)| (w, g));
    check_case(be, &args, &fx.name, &want, grad, class, &Precision::ALL)
}

/// Forward (and, with an upstream gradient and its oracle, gradient) records of one case in
/// each of `precisions`.
fn check_case<B: Backend>(
    be: &B,
    args: &BkCoreArgs<'_>,
    case: &str,
    want: &Array2<Complex64>,
    grad: Option<(&Array2<Complex64>, &BkCoreGrad)>,
    class: Class,
    precisions: &[Precision],
) -> crate::Result<Vec<Record>> {
    let shape = [args.batch(), args.n()];
    let mut out = Vec::new();
    for &precision in precisions {
        let row = Row {
            kernel: "bk_core_forward",
            backend: B::NAME,
            case,
            shape: &shape,
            precision,
        };
        out.extend(forward_rows(be, args, &row, want, class)?);
        if let Some((w, want)) = grad {
            let row = Row {
                kernel: "bk_core_grad",
                ..row
            };
            let got = be.bk_core_grad(args, w.view(), precision)?;
            out.extend(checks::gradient(
                &row,
                &got,
                want,
                grad_bound(precision, class),
            ));
        }
    }
    Ok(out)
}

/// Forward records of one run: agreement with the oracle and, for a GPU f32 run, the control
/// ratio against the CPU's own f32 result.
fn forward_rows<B: Backend>(
    be: &B,
    args: &BkCoreArgs<'_>,
    row: &Row<'_>,
    want: &Array2<Complex64>,
    class: Class,
) -> crate::Result<Vec<Record>> {
    let got = be.bk_core(args, row.precision)?;
    let mut out = checks::forward(row, &got, want, class);
    if B::NAME != Cpu::NAME && row.precision == Precision::F32 {
        out.push(checks::control(
            row,
            &got,
            want,
            &Cpu.bk_core(args, Precision::F32)?,
            class,
        ));
    }
    Ok(out)
}

/// Gradient bound by precision and class: f32 gradients of random couplings and near-spectrum
/// shifts inherit the conditioning of G and are reported without a bound.
fn grad_bound(precision: Precision, class: Class) -> Option<f64> {
    match (precision, class) {
        (Precision::F64, _) | (Precision::F32, Class::Model) => Some(checks::grad_bound(precision)),
        _ => None,
    }
}

/// A generated case. The oracle is the dense inverse for small N, else the CPU f64 reference
/// (equal to the dense inverse to 1e-12 at N = 4096, design §12), whose own f64 row is skipped.
pub fn synthetic<B: Backend>(be: &B, s: &Synthetic) -> crate::Result<Vec<Record>> {
    let (a, b, c, z) = bk_core_inputs(s.regime, s.batch, s.n, s.seed);
    let args = BkCoreArgs::new(a.view(), b.view(), c.view(), z)?;
    let w = Array2::from_shape_fn((s.batch, s.n), |(r, i)| {
        let t = (r * s.n + i) as f64;
        Complex64::new((0.37 * t).sin(), (0.11 * t).cos())
    });
    let (want, want_grad) = if s.dense {
        let singular = || crate::Error::Fixture {
            case: s.name(),
            message: "dense oracle: singular input".into(),
        };
        let g = dense::diagonal(&args).ok_or_else(singular)?;
        let gr = dense::gradient(&args, w.view()).ok_or_else(singular)?;
        (g, Some(gr))
    } else {
        let gr = s
            .grad
            .then(|| Cpu.bk_core_grad(&args, w.view(), Precision::F64))
            .transpose()?;
        (Cpu.bk_core(&args, Precision::F64)?, gr)
    };
    // The CPU's own f64 row would compare the oracle with itself.
    let precisions: Vec<Precision> = Precision::ALL
        .into_iter()
        .filter(|&p| s.dense || B::NAME != Cpu::NAME || p != Precision::F64)
        .collect();
    let grad = want_grad.as_ref().filter(|_| s.grad).map(|g| (&w, g));
    check_case(be, &args, &s.name(), &want, grad, s.class(), &precisions)
}
