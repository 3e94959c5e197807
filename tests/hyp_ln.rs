//! Fused LayerNorm + projection (design hyperbolic.md §5) on every backend: f64 against the CPU
//! reference, f32 and bf16 against f64 on the same rounded inputs (§16: rel ≤ 1e-5, MSE < 1e-6,
//! √c‖out‖ < 1), the backward against the f64 reference and central differences, determinism,
//! and typed errors. Every D path of the CUDA kernels is covered: vectorised and scalar warp
//! rows (D ≤ 1024 in f32, ≤ 512 in f64) and CTA-per-row rows beyond.

use muse::reference::hyp_ln::{self, HypLnArgs, HypLnConfig, HypLnMode};
use muse::reference::Dtype;
use muse::verify::tolerance::tol;
use muse::{Backend, Error};
use ndarray::{Array1, Array2};

use crate::common::test_backends;
use crate::hyp_common::{assert_mse, assert_scaled, assert_tol, randn};

/// x (R, D) with row offsets and scales, γ ≈ 1/√D (design §5 pitfall) or 1 (`saturated`),
/// β_ln, and an upstream g.
fn inputs(
    rows: usize,
    dim: usize,
    seed: u64,
    saturated: bool,
) -> (Array2<f64>, Array1<f64>, Array1<f64>, Array2<f64>) {
    let noise = randn(rows * dim, seed, 1.0);
    let x = Array2::from_shape_fn((rows, dim), |(r, d)| {
        (1.0 + (r % 5) as f64) * noise[r * dim + d] + (r % 3) as f64 - 1.0
    });
    let g0 = randn(dim, seed + 1, 0.1);
    let gamma = if saturated {
        Array1::ones(dim)
    } else {
        Array1::from_shape_fn(dim, |d| (1.0 + g0[d]) / (dim as f64).sqrt())
    };
    let beta = Array1::from(randn(dim, seed + 2, 0.05));
    let up = Array2::from_shape_vec((rows, dim), randn(rows * dim, seed + 3, 1.0)).expect("len");
    (x, gamma, beta, up)
}

fn flat(a: &Array2<f64>) -> Vec<f64> {
    a.iter().copied().collect()
}

fn mode_of(name: &str) -> HypLnMode {
    name.parse().expect("test modes are valid")
}

/// f64 on the backend equals the CPU reference to a few hundred ulps, forward and backward.
fn hyp_ln_f64_matches_reference<B: Backend>(
    be: &B,
    rows: usize,
    dim: usize,
    mode: &str,
) -> anyhow::Result<()> {
    let (x, gamma, beta, up) = inputs(rows, dim, 11, false);
    let cfg = HypLnConfig::new(0.693).mode(mode_of(mode));
    let args = HypLnArgs::new(x.view(), gamma.view(), beta.view(), cfg)?;
    let got = be.hyp_ln(&args, Dtype::F64)?;
    let want = hyp_ln::forward::<f64>(&args, Dtype::F64);
    assert_tol("y f64", &flat(&got.y), &flat(&want.y), tol::HYP_F64_CROSS)?;
    assert_tol(
        "out f64",
        &flat(&got.out),
        &flat(&want.out),
        tol::HYP_F64_CROSS,
    )?;
    assert_tol(
        "a f64",
        &got.a.to_vec(),
        &want.a.to_vec(),
        tol::HYP_F64_CROSS,
    )?;
    let gg = be.hyp_ln_grad(&args, up.view(), Dtype::F64)?;
    let gw = hyp_ln::backward::<f64>(&args, up.view(), Dtype::F64);
    assert_scaled("dx f64", &flat(&gg.dx), &flat(&gw.dx), tol::F64.rtol, 0.0)?;
    assert_scaled(
        "dgamma f64",
        &gg.dgamma.to_vec(),
        &gw.dgamma.to_vec(),
        tol::F64.rtol,
        0.0,
    )?;
    assert_scaled(
        "dbeta_ln f64",
        &gg.dbeta_ln.to_vec(),
        &gw.dbeta_ln.to_vec(),
        tol::F64.rtol,
        0.0,
    )?;
    assert_scaled("dc f64", &[gg.dc], &[gw.dc], tol::F64.rtol, 1.0)?;
    Ok(())
}
test_backends! {
    #[case::r1_d1(1, 1, "exp0")]
    #[case::r5_d1_clip(5, 1, "clip")]
    #[case::r7_d3(7, 3, "exp0")]
    #[case::r16_d32(16, 32, "exp0")]
    #[case::r9_d64(9, 64, "clip")]
    #[case::r3_d100_scalar_path(3, 100, "exp0")]
    #[case::r33_d256(33, 256, "exp0")]
    #[case::r4_d1000(4, 1000, "clip")]
    #[case::r2_d1025_rows_path(2, 1025, "exp0")]
    #[case::r3_d4099_rows_path(3, 4099, "clip")]
    #[case::r2000_d64_many_ctas(2000, 64, "exp0")]
    fn hyp_ln_f64_matches_reference(rows: usize, dim: usize, mode: &str);
}

/// f32 and bf16 inputs computed in f32 against f64 on the same rounded inputs: rel ≤ 1e-5,
/// MSE < 1e-6 and every image strictly inside the ball (also when saturated, γ = 1).
fn hyp_ln_f32_matches_f64<B: Backend>(
    be: &B,
    dtype: Dtype,
    rows: usize,
    dim: usize,
    mode: &str,
    saturated: bool,
) -> anyhow::Result<()> {
    let (x, gamma, beta, up) = inputs(rows, dim, 23, saturated);
    for c in [0.01, 0.693, 2.0] {
        let cfg = HypLnConfig::new(c).mode(mode_of(mode));
        let args = HypLnArgs::new(x.view(), gamma.view(), beta.view(), cfg)?;
        let got = be.hyp_ln(&args, dtype)?;
        let want = hyp_ln::forward::<f64>(&args, dtype);
        let what = |v: &str| format!("{v} {dtype} c={c}");
        assert_tol(&what("y"), &flat(&got.y), &flat(&want.y), tol::HYP_LN_F32)?;
        assert_tol(
            &what("out"),
            &flat(&got.out),
            &flat(&want.out),
            tol::HYP_LN_F32,
        )?;
        assert_mse(&what("out"), &flat(&got.out), &flat(&want.out))?;
        for (r, o) in got.out.rows().into_iter().enumerate() {
            let radius = c.sqrt() * o.dot(&o).sqrt();
            anyhow::ensure!(
                radius < 1.0,
                "{}: row {r} at sqrt(c)|out| = {radius}",
                what("out")
            );
        }
        let gg = be.hyp_ln_grad(&args, up.view(), dtype)?;
        let gw = hyp_ln::backward::<f64>(&args, up.view(), dtype);
        let rel = tol::HYP_LN_GRAD_F32;
        assert_scaled(&what("dx"), &flat(&gg.dx), &flat(&gw.dx), rel, 0.0)?;
        assert_mse(&what("dx"), &flat(&gg.dx), &flat(&gw.dx))?;
        assert_scaled(
            &what("dgamma"),
            &gg.dgamma.to_vec(),
            &gw.dgamma.to_vec(),
            rel,
            0.0,
        )?;
        assert_scaled(
            &what("dbeta_ln"),
            &gg.dbeta_ln.to_vec(),
            &gw.dbeta_ln.to_vec(),
            rel,
            0.0,
        )?;
        assert_scaled(&what("dc"), &[gg.dc], &[gw.dc], rel, 1.0)?;
    }
    Ok(())
}
test_backends! {
    #[case::f32_d64(Dtype::F32, 300, 64, "exp0", false)]
    #[case::f32_d256(Dtype::F32, 128, 256, "exp0", false)]
    #[case::f32_d1024(Dtype::F32, 40, 1024, "exp0", false)]
    #[case::f32_d1024_saturated(Dtype::F32, 40, 1024, "exp0", true)]
    #[case::f32_d64_saturated(Dtype::F32, 128, 64, "exp0", true)]
    #[case::f32_d77_clip(Dtype::F32, 50, 77, "clip", true)]
    #[case::f32_d2000_rows_path(Dtype::F32, 6, 2000, "exp0", false)]
    #[case::f32_d1(Dtype::F32, 5, 1, "exp0", false)]
    #[case::bf16_d256(Dtype::Bf16, 64, 256, "exp0", false)]
    #[case::bf16_d128_clip(Dtype::Bf16, 64, 128, "clip", true)]
    fn hyp_ln_f32_matches_f64(dtype: Dtype, rows: usize, dim: usize, mode: &str, saturated: bool);
}

/// The f64 backward against central differences of the f64 reference forward (design §16).
fn hyp_ln_grad_matches_central_differences<B: Backend>(
    be: &B,
    rows: usize,
    dim: usize,
    mode: &str,
) -> anyhow::Result<()> {
    let (x, gamma, beta, up) = inputs(rows, dim, 5, false);
    let cfg = HypLnConfig::new(0.693).mode(mode_of(mode));
    let loss =
        |x: &Array2<f64>, gamma: &Array1<f64>, beta: &Array1<f64>, c: f64| -> anyhow::Result<f64> {
            let args = HypLnArgs::new(
                x.view(),
                gamma.view(),
                beta.view(),
                HypLnConfig { c, ..cfg },
            )?;
            Ok((&hyp_ln::forward::<f64>(&args, Dtype::F64).out * &up).sum())
        };
    let args = HypLnArgs::new(x.view(), gamma.view(), beta.view(), cfg)?;
    let got = be.hyp_ln_grad(&args, up.view(), Dtype::F64)?;
    let h = 1e-6;
    let mut fd_x = Vec::new();
    for k in 0..x.len() {
        let (mut p, mut m) = (x.clone(), x.clone());
        p.as_slice_mut().expect("standard")[k] += h;
        m.as_slice_mut().expect("standard")[k] -= h;
        fd_x.push((loss(&p, &gamma, &beta, cfg.c)? - loss(&m, &gamma, &beta, cfg.c)?) / (2.0 * h));
    }
    assert_scaled("dx vs FD", &flat(&got.dx), &fd_x, tol::HYP_GRAD_FD_F64, 1.0)?;
    let (mut fd_g, mut fd_b) = (Vec::new(), Vec::new());
    for d in 0..dim {
        let (mut p, mut m) = (gamma.clone(), gamma.clone());
        p[d] += h;
        m[d] -= h;
        fd_g.push((loss(&x, &p, &beta, cfg.c)? - loss(&x, &m, &beta, cfg.c)?) / (2.0 * h));
        let (mut p, mut m) = (beta.clone(), beta.clone());
        p[d] += h;
        m[d] -= h;
        fd_b.push((loss(&x, &gamma, &p, cfg.c)? - loss(&x, &gamma, &m, cfg.c)?) / (2.0 * h));
    }
    assert_scaled(
        "dgamma vs FD",
        &got.dgamma.to_vec(),
        &fd_g,
        tol::HYP_GRAD_FD_F64,
        1.0,
    )?;
    assert_scaled(
        "dbeta_ln vs FD",
        &got.dbeta_ln.to_vec(),
        &fd_b,
        tol::HYP_GRAD_FD_F64,
        1.0,
    )?;
    let hc = h * cfg.c;
    let fd_c =
        (loss(&x, &gamma, &beta, cfg.c + hc)? - loss(&x, &gamma, &beta, cfg.c - hc)?) / (2.0 * hc);
    assert_scaled("dc vs FD", &[got.dc], &[fd_c], tol::HYP_GRAD_FD_F64, 1.0)
}
test_backends! {
    #[case::exp0_r3_d5(3, 5, "exp0")]
    #[case::exp0_r2_d40(2, 40, "exp0")]
    #[case::clip_r4_d6(4, 6, "clip")]
    fn hyp_ln_grad_matches_central_differences(rows: usize, dim: usize, mode: &str);
}

/// The backward reduces dγ, dβ_ln and dc in a fixed order: two runs agree bit for bit.
fn hyp_ln_backward_is_deterministic<B: Backend>(be: &B) -> anyhow::Result<()> {
    let (x, gamma, beta, up) = inputs(20_000, 64, 3, false);
    let args = HypLnArgs::new(x.view(), gamma.view(), beta.view(), HypLnConfig::new(1.0))?;
    let (a, b) = (
        be.hyp_ln_grad(&args, up.view(), Dtype::F32)?,
        be.hyp_ln_grad(&args, up.view(), Dtype::F32)?,
    );
    anyhow::ensure!(a == b, "two f32 backward runs differ");
    Ok(())
}
test_backends! { fn hyp_ln_backward_is_deterministic(); }

/// Bad upstream gradients and inputs that overflow f32 are typed errors naming the argument.
fn hyp_ln_errors_name_the_argument<B: Backend>(be: &B) -> anyhow::Result<()> {
    let (x, gamma, beta, up) = inputs(3, 8, 1, false);
    let args = HypLnArgs::new(x.view(), gamma.view(), beta.view(), HypLnConfig::new(1.0))?;
    let e = be
        .hyp_ln_grad(&args, up.t(), Dtype::F32)
        .expect_err("wrong shape");
    anyhow::ensure!(matches!(e, Error::Shape { arg: "g", .. }), "{e}");
    let mut bad = up.clone();
    bad[[2, 5]] = f64::NEG_INFINITY;
    let e = be
        .hyp_ln_grad(&args, bad.view(), Dtype::F64)
        .expect_err("non-finite g");
    anyhow::ensure!(
        e.to_string().starts_with("hyp_ln: `g` is -inf at [2, 5]"),
        "{e}"
    );
    let mut huge = x.clone();
    huge.row_mut(1).fill(3e38);
    huge[[1, 0]] = -3e38;
    let args = HypLnArgs::new(
        huge.view(),
        gamma.view(),
        beta.view(),
        HypLnConfig::new(1.0),
    )?;
    be.hyp_ln(&args, Dtype::F64)?;
    let e = be.hyp_ln(&args, Dtype::F32).expect_err("f32 overflow");
    anyhow::ensure!(
        e.to_string().starts_with("hyp_ln: `x` overflows f32"),
        "{e}"
    );
    Ok(())
}
test_backends! { fn hyp_ln_errors_name_the_argument(); }

/// Random shapes (any R, D, both modes) against the CPU reference in f64, forward and backward,
/// and in f32 against f64 on the rounded inputs (64 cases on the GPU).
fn hyp_ln_random_shapes_match_reference<B: Backend>(be: &B) -> anyhow::Result<()> {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new(Config {
        cases: crate::common::cases::<B>(128),
        ..Config::default()
    });
    let shape = (1usize..=300, 1usize..=1200, any::<bool>(), 0u64..1000);
    runner
        .run(&shape, |(rows, dim, clip, seed)| {
            let (x, gamma, beta, up) = inputs(rows, dim, seed, false);
            let mode = if clip {
                HypLnMode::Clip
            } else {
                HypLnMode::Exp0
            };
            let check = || -> anyhow::Result<()> {
                let args = HypLnArgs::new(
                    x.view(),
                    gamma.view(),
                    beta.view(),
                    HypLnConfig::new(0.693).mode(mode),
                )?;
                let got = be.hyp_ln(&args, Dtype::F64)?;
                let want = hyp_ln::forward::<f64>(&args, Dtype::F64);
                assert_tol(
                    "out f64",
                    &flat(&got.out),
                    &flat(&want.out),
                    tol::HYP_F64_CROSS,
                )?;
                let gg = be.hyp_ln_grad(&args, up.view(), Dtype::F64)?;
                let gw = hyp_ln::backward::<f64>(&args, up.view(), Dtype::F64);
                assert_scaled("dx f64", &flat(&gg.dx), &flat(&gw.dx), tol::F64.rtol, 0.0)?;
                assert_scaled(
                    "dgamma f64",
                    &gg.dgamma.to_vec(),
                    &gw.dgamma.to_vec(),
                    tol::F64.rtol,
                    0.0,
                )?;
                let got = be.hyp_ln(&args, Dtype::F32)?;
                let want = hyp_ln::forward::<f64>(&args, Dtype::F32);
                assert_tol(
                    "out f32",
                    &flat(&got.out),
                    &flat(&want.out),
                    tol::HYP_LN_F32,
                )
                .map(|_| ())
            };
            check().map_err(|e| TestCaseError::fail(format!("{mode:?} ({rows}, {dim}): {e}")))
        })
        .map_err(|e| anyhow::anyhow!("{e}"))
}
test_backends! { fn hyp_ln_random_shapes_match_reference(); }
