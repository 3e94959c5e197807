//! The original's compat modes (design §5) and hybrid gradient (§6.2), CPU only: against the
//! fixtures' independent numpy emulations, and against the closed forms the design derived by
//! running the original code.

use muse::bk_core::compat::{self, VmapOptions};
use muse::bk_core::hybrid::{hybrid_grad_a, term_scale};
use muse::bk_core::{BkCore, BkCoreArgs};
use muse::verify::fixtures::Manifest;
use muse::verify::suite;
use muse::{Cpu, Precision};
use ndarray::{Array2, Array3};
use num_complex::{Complex32, Complex64};
use rstest::rstest;

#[rstest]
#[case::well_conditioned("compat/well_conditioned")]
#[case::hopping("compat/hopping")]
#[case::random_sign("compat/random_sign")]
#[case::n1("compat/n1")]
#[case::n2("compat/n2")]
#[case::head_layer("compat/head_layer")]
#[case::sanitize("compat/sanitize")]
fn compat_modes_match_the_emulation(#[case] name: &str) -> anyhow::Result<()> {
    let m = Manifest::discover()?;
    let case = suite::registry(&m)
        .into_iter()
        .find(|c| c.name == name)
        .expect("registered");
    let records = suite::run(&Cpu, &case, &m)?;
    anyhow::ensure!(records.len() >= 3, "{name}: too few records");
    if let Some(r) = records.iter().find(|r| !r.pass) {
        anyhow::bail!(
            "{name}: {} {} = {} (target {:?})",
            r.kernel,
            r.metric,
            r.value,
            r.target
        );
    }
    Ok(())
}

fn diagonal_args(a: &Array2<f64>, z: Complex64) -> (Array2<f64>, Array2<f64>, Complex64) {
    (a.clone(), Array2::zeros((a.nrows(), a.ncols() - 1)), z)
}

/// Mode B on a diagonal T (design §5.3, checked on the original): G_0 = G_1 = α_{N−1}/α_0,
/// G_i = α_{N−1} for 2 ≤ i ≤ N−2, G_{N−1} = 1. The HEAD layer at N = 512 gives
/// 0.9972 − 1.3134i everywhere inside, against the true ≈ 0.367 + 0.482i.
#[rstest]
#[case(8)]
#[case(512)]
fn parallel_head_is_wrong_in_the_documented_way(#[case] n: usize) -> anyhow::Result<()> {
    let a = Array2::from_shape_fn((1, n), |(_, i)| 1.0 + 0.001 * (i as f64).cos());
    let (a, off, z) = diagonal_args(&a, Complex64::new(0.0, 1.3134));
    let g = compat::parallel_head(&BkCoreArgs::new(a.view(), off.view(), off.view(), z)?);
    let alpha = |i: usize| Complex64::from(a[[0, i]]) - z;
    let c64 = |v: Complex32| Complex64::new(v.re.into(), v.im.into());
    let close = |x: Complex64, y: Complex64| (x - y).norm() <= 1e-6 * y.norm().max(1.0);
    let ratio = alpha(n - 1) / alpha(0);
    anyhow::ensure!(
        close(c64(g[[0, 0]]), ratio) && close(c64(g[[0, 1]]), ratio),
        "G_0, G_1"
    );
    for i in 2..n - 1 {
        anyhow::ensure!(
            close(c64(g[[0, i]]), alpha(n - 1)),
            "G_{i} = {} want {}",
            g[[0, i]],
            alpha(n - 1)
        );
    }
    anyhow::ensure!(
        close(c64(g[[0, n - 1]]), Complex64::new(1.0, 0.0)),
        "G_last"
    );
    Ok(())
}

/// Mode A on a diagonal T (design §5.2): the mass makes the pivot α̃ = α + 1e-3·α/|α| and the
/// soft clamp bends the log-magnitude, so G = e^{i·arg(1/α̃)}·exp(88·tanh(−ln|α̃|/88)), about
/// 1e-3 relative off the exact 1/α; the BENCH variant (no mass, no clamp) is exact there.
#[test]
fn vmap_mass_shifts_every_pivot() -> anyhow::Result<()> {
    let a = Array2::from_shape_fn((2, 16), |(r, i)| 0.5 + 0.1 * (r * 16 + i) as f64);
    let (a, off, z) = diagonal_args(&a, Complex64::new(0.1, 0.4));
    let args = BkCoreArgs::new(a.view(), off.view(), off.view(), z)?;
    let exact = Cpu.bk_core(&args, Precision::F64)?;
    let (head, bench) = (
        compat::vmap(&args, VmapOptions::head()),
        compat::vmap(&args, VmapOptions::bench()),
    );
    for ((r, i), want) in exact.indexed_iter() {
        let alpha = Complex64::from(a[[r, i]]) - z;
        let pivot = alpha + alpha * (1e-3 / alpha.norm());
        let massive = Complex64::from_polar(
            (88.0 * (-pivot.norm().ln() / 88.0).tanh()).exp(),
            -pivot.arg(),
        );
        let (h, b) = (head[[r, i]], bench[[r, i]]);
        anyhow::ensure!(
            (Complex64::new(h.re.into(), h.im.into()) - massive).norm() < 1e-6 * massive.norm(),
            "head [{r},{i}]"
        );
        anyhow::ensure!(
            (Complex64::new(b.re.into(), b.im.into()) - want).norm() < 1e-6 * want.norm(),
            "bench [{r},{i}]"
        );
    }
    Ok(())
}

/// With zero couplings and blend 0 the hybrid gradient is the "theoretical" term, which is
/// then the exact gradient (design §6.1).
#[test]
fn hybrid_with_blend_zero_is_exact_for_diagonal_t() -> anyhow::Result<()> {
    let a = Array2::from_shape_fn((2, 32), |(r, i)| 1.0 + 0.05 * (r * 32 + i) as f64);
    let (a, off, z) = diagonal_args(&a, Complex64::new(0.0, 1.3134));
    let args = BkCoreArgs::new(a.view(), off.view(), off.view(), z)?;
    let w = Array2::from_shape_fn((2, 32), |(r, i)| {
        Complex64::new((r + i) as f64 * 0.1 - 1.0, 0.3)
    });
    let exact = Cpu.bk_core_grad(&args, w.view(), Precision::F64)?;
    let g = Cpu
        .bk_core(&args, Precision::F64)?
        .mapv(|v| Complex32::new(v.re as f32, v.im as f32));
    let gf = Array3::from_shape_fn((2, 32, 2), |(r, i, k)| {
        if k == 0 {
            w[[r, i]].re as f32
        } else {
            w[[r, i]].im as f32
        }
    });
    let hybrid = hybrid_grad_a(g.view(), gf.view(), None, 0.0)?;
    // f32 rounding of |g|·|G|²-sized terms that cancel: a few unit roundoffs of the term scale.
    let scale = term_scale(g.view(), gf.view(), 0.0);
    let u = f64::from(f32::EPSILON) / 2.0;
    for ((h, e), s) in hybrid.iter().zip(&exact.a).zip(&scale) {
        anyhow::ensure!(
            (f64::from(*h) - e).abs() <= 8.0 * u * (f64::from(*s) + e.abs()),
            "hybrid {h} vs exact {e}"
        );
    }
    Ok(())
}

/// Sanitation maps NaN and ±inf as the original does (§5.1); afterwards the inputs are accepted.
#[test]
fn sanitize_makes_inputs_acceptable() -> anyhow::Result<()> {
    let a = ndarray::arr2(&[[f64::NAN, f64::INFINITY, -1e9, 3.0]]);
    let b = ndarray::arr2(&[[f64::NAN, -f64::INFINITY, 11.0]]);
    let s = compat::sanitize(a.view(), b.view(), b.view())?;
    assert_eq!(s.a, ndarray::arr2(&[[0.0, 100.0, -100.0, 3.0]]));
    assert_eq!(s.b, ndarray::arr2(&[[1.0, -10.0, 10.0]]));
    BkCoreArgs::new(s.a.view(), s.b.view(), s.c.view(), Complex64::new(0.1, 0.1))?;
    Ok(())
}
