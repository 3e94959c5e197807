//! The exact O(N) gradient (design §6.1) against the dense formula of §12 and against central
//! finite differences of the forward pass.

use muse::bk_core::{BkCore, BkCoreArgs, BkCoreGrad};
use muse::verify::cases::{bk_core_inputs, Regime};
use muse::verify::tolerance::tol;
use muse::{Backend, Cpu, Precision};
use ndarray::Array2;
use num_complex::Complex64;
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::common::{assert_close_scaled, test_backends};

/// A random complex upstream gradient w (L = Re Σ conj(w)·G, so ∂L/∂G in PyTorch's convention is w).
fn upstream(batch: usize, n: usize, seed: u64) -> Array2<Complex64> {
    let mut rng = StdRng::seed_from_u64(seed);
    Array2::from_shape_simple_fn((batch, n), || {
        Complex64::new(rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0))
    })
}

/// The dense gradient oracle of design §12, from the full inverse: dG_ii/dT_pq = −G_ip·G_qi.
fn dense_grad(args: &BkCoreArgs<'_>, w: &Array2<Complex64>) -> BkCoreGrad {
    muse::reference::dense::gradient(args, w.view()).expect("test inputs are non-singular")
}

fn assert_grad_close(
    what: &str,
    got: &BkCoreGrad,
    want: &BkCoreGrad,
    rel: f64,
) -> anyhow::Result<()> {
    assert_close_scaled(&format!("{what} grad a"), &got.a, &want.a, rel)?;
    assert_close_scaled(&format!("{what} grad b"), &got.b, &want.b, rel)?;
    assert_close_scaled(&format!("{what} grad c"), &got.c, &want.c, rel)?;
    let scale = want.z.norm().max(f64::MIN_POSITIVE);
    anyhow::ensure!(
        (got.z - want.z).norm() <= rel * scale,
        "{what} grad z: {} vs {}",
        got.z,
        want.z
    );
    Ok(())
}

fn bk_core_grad_matches_dense_formula<B: Backend>(
    be: &B,
    regime: Regime,
    n: usize,
) -> anyhow::Result<()> {
    for seed in 0..8 {
        let (a, b, c, z) = bk_core_inputs(regime, 2, n, 100 + seed);
        let args = BkCoreArgs::new(a.view(), b.view(), c.view(), z)?;
        let w = upstream(2, n, seed);
        let got = be.bk_core_grad(&args, w.view(), Precision::F64)?;
        assert_grad_close(
            "f64 vs dense",
            &got,
            &dense_grad(&args, &w),
            tol::BK_CORE_GRAD_F64,
        )?;
    }
    Ok(())
}
test_backends! {
    #[case::benchmark_n1(Regime::Benchmark, 1)]
    #[case::benchmark_n2(Regime::Benchmark, 2)]
    #[case::benchmark_n48(Regime::Benchmark, 48)]
    #[case::laplacian_n64(Regime::Laplacian, 64)]
    #[case::symmetric_n33(Regime::Symmetric, 33)]
    fn bk_core_grad_matches_dense_formula(regime: Regime, n: usize);
}

/// L(x) = Re Σ conj(w)·G(x) by the f64 forward pass.
fn loss(
    a: &Array2<f64>,
    b: &Array2<f64>,
    c: &Array2<f64>,
    z: Complex64,
    w: &Array2<Complex64>,
) -> anyhow::Result<f64> {
    let g = Cpu.bk_core(
        &BkCoreArgs::new(a.view(), b.view(), c.view(), z)?,
        Precision::F64,
    )?;
    Ok(g.iter().zip(w).map(|(g, w)| (w.conj() * g).re).sum())
}

/// Central differences (h = 1e-6) on every input: the gradient is the derivative of the forward
/// pass, within 1e-7 of max|grad| (design §12).
#[test]
fn bk_core_grad_matches_finite_differences() -> anyhow::Result<()> {
    const H: f64 = 1e-6;
    let (a, b, c, z) = bk_core_inputs(Regime::Benchmark, 2, 24, 5);
    let w = upstream(2, 24, 9);
    let got = Cpu.bk_core_grad(
        &BkCoreArgs::new(a.view(), b.view(), c.view(), z)?,
        w.view(),
        Precision::F64,
    )?;
    let fd = |f: &dyn Fn(f64) -> anyhow::Result<f64>| -> anyhow::Result<f64> {
        Ok((f(H)? - f(-H)?) / (2.0 * H))
    };
    let mut want = got.clone();
    for ((r, j), v) in want.a.indexed_iter_mut() {
        *v = fd(&|h| {
            let mut x = a.clone();
            x[[r, j]] += h;
            loss(&x, &b, &c, z, &w)
        })?;
    }
    for ((r, j), v) in want.b.indexed_iter_mut() {
        *v = fd(&|h| {
            let mut x = b.clone();
            x[[r, j]] += h;
            loss(&a, &x, &c, z, &w)
        })?;
    }
    for ((r, j), v) in want.c.indexed_iter_mut() {
        *v = fd(&|h| {
            let mut x = c.clone();
            x[[r, j]] += h;
            loss(&a, &b, &x, z, &w)
        })?;
    }
    let dre = fd(&|h| loss(&a, &b, &c, z + h, &w))?;
    let dim = fd(&|h| loss(&a, &b, &c, z + Complex64::new(0.0, h), &w))?;
    want.z = Complex64::new(dre, dim);
    assert_grad_close("f64 vs finite differences", &got, &want, 1e-7)
}

/// f32 gradient within 1e-4 of max|grad| of the f64 one (design §12).
fn bk_core_grad_f32_matches_f64<B: Backend>(
    be: &B,
    regime: Regime,
    n: usize,
) -> anyhow::Result<()> {
    let (a, b, c, z) = bk_core_inputs(regime, 4, n, 21);
    let args = BkCoreArgs::new(a.view(), b.view(), c.view(), z)?;
    let w = upstream(4, n, 3);
    let ref64 = Cpu.bk_core_grad(&args, w.view(), Precision::F64)?;
    let got = be.bk_core_grad(&args, w.view(), Precision::F32)?;
    assert_grad_close("f32 vs f64", &got, &ref64, tol::BK_CORE_GRAD_F32)
}
test_backends! {
    #[case::laplacian_4096(Regime::Laplacian, 4096)]
    #[case::symmetric_4096(Regime::Symmetric, 4096)]
    fn bk_core_grad_f32_matches_f64(regime: Regime, n: usize);
}

/// All couplings 0: the exact gradient is −Re(conj(g)·G²) (design §6.1).
fn bk_core_grad_diagonal_closed_form<B: Backend>(be: &B) -> anyhow::Result<()> {
    let a = Array2::from_shape_fn((2, 64), |(r, i)| 1.0 + 0.01 * (r * 64 + i) as f64);
    let off = Array2::zeros((2, 63));
    let z = Complex64::new(0.0, 1.3134);
    let w = upstream(2, 64, 1);
    let got = be.bk_core_grad(
        &BkCoreArgs::new(a.view(), off.view(), off.view(), z)?,
        w.view(),
        Precision::F64,
    )?;
    let want = Array2::from_shape_fn((2, 64), |(r, i)| {
        let g = (a[[r, i]] - z).inv();
        -(w[[r, i]].conj() * g * g).re
    });
    assert_close_scaled("diagonal grad a", &got.a, &want, 1e-14)?;
    // dL/db = Re(c·…) and dL/dc = Re(b·…) vanish with b = c = 0.
    anyhow::ensure!(
        got.b.iter().chain(&got.c).all(|&x| x == 0.0),
        "b/c grads must be 0"
    );
    Ok(())
}
test_backends! { fn bk_core_grad_diagonal_closed_form(); }
