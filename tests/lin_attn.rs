//! Tangent-space linear attention (design hyperbolic.md §9) on every backend: f64 against the
//! CPU reference (forward and backward); f32 and bf16 chunked against the recurrent form in f64 on
//! the same rounded inputs (§16: rel ≤ 1e-5) and MSE < 1e-6 against the explicit masked f64 form;
//! N not a multiple of 64, N = 1, d = 1, d and dv over one 64-wide tile; the backward against
//! central differences; causality bit for bit; typed errors.

use muse::reference::lin_attn::{self, LinAttnArgs, LinAttnConfig, LinAttnSchedule};
use muse::reference::Dtype;
use muse::verify::tolerance::tol;
use muse::{Backend, Error};
use ndarray::Array4;

use crate::common::test_backends;
use crate::hyp_common::{assert_mse, assert_scaled, assert_tol, randn};

type Shape = (usize, usize, usize, usize, usize);

/// q, k (B, H, N, d), v and an upstream d_o (B, H, N, dv), seeded normal values.
fn inputs((b, h, n, d, dv): Shape, seed: u64) -> [Array4<f64>; 4] {
    let a =
        |len, s, scale, shape| Array4::from_shape_vec(shape, randn(len, s, scale)).expect("len");
    [
        a(b * h * n * d, seed, 0.7, (b, h, n, d)),
        a(b * h * n * d, seed + 1, 0.7, (b, h, n, d)),
        a(b * h * n * dv, seed + 2, 1.0, (b, h, n, dv)),
        a(b * h * n * dv, seed + 3, 1.0, (b, h, n, dv)),
    ]
}

fn flat(a: &Array4<f64>) -> Vec<f64> {
    a.iter().copied().collect()
}

fn config(causal: bool) -> LinAttnConfig {
    if causal {
        LinAttnConfig::default()
    } else {
        LinAttnConfig::non_causal()
    }
}

/// The explicit O(N²) masked form in f64, written here.
fn explicit(q: &Array4<f64>, k: &Array4<f64>, v: &Array4<f64>, cfg: LinAttnConfig) -> Array4<f64> {
    let phi = |x: f64| if x > 0.0 { x + 1.0 } else { x.exp() };
    let (b, h, n, d) = q.dim();
    let dv = v.dim().3;
    let mut o = Array4::zeros((b, h, n, dv));
    for bb in 0..b {
        for hh in 0..h {
            let fk: Vec<f64> = (0..n * d).map(|t| phi(k[[bb, hh, t / d, t % d]])).collect();
            for i in 0..n {
                let fq: Vec<f64> = (0..d).map(|t| phi(q[[bb, hh, i, t]])).collect();
                let (mut den, mut num) = (0.0, vec![0.0; dv]);
                for j in (0..n).filter(|&j| !cfg.causal || j <= i) {
                    let w: f64 = (0..d).map(|t| fq[t] * fk[j * d + t]).sum();
                    den += w;
                    for (e, x) in num.iter_mut().enumerate() {
                        *x += w * v[[bb, hh, j, e]];
                    }
                }
                for (e, x) in num.iter().enumerate() {
                    o[[bb, hh, i, e]] = x / den.max(cfg.eps);
                }
            }
        }
    }
    o
}

/// f64 on the backend against the CPU reference, forward and backward.
fn lin_attn_f64_matches_reference<B: Backend>(
    be: &B,
    shape: Shape,
    causal: bool,
) -> anyhow::Result<()> {
    let [q, k, v, up] = inputs(shape, 7);
    let args = LinAttnArgs::new(q.view(), k.view(), v.view(), config(causal))?;
    let got = be.lin_attn(&args, Dtype::F64)?;
    let want = lin_attn::forward::<f64>(&args, Dtype::F64, LinAttnSchedule::Chunked);
    assert_tol("o f64", &flat(&got), &flat(&want), tol::HYP_F64_CROSS)?;
    let gg = be.lin_attn_grad(&args, up.view(), Dtype::F64)?;
    let gw = lin_attn::backward::<f64>(&args, up.view(), Dtype::F64, LinAttnSchedule::Chunked);
    for (name, g, w) in [
        ("dq", &gg.dq, &gw.dq),
        ("dk", &gg.dk, &gw.dk),
        ("dv", &gg.dv, &gw.dv),
    ] {
        assert_scaled(
            &format!("{name} f64"),
            &flat(g),
            &flat(w),
            tol::F64.rtol,
            1.0,
        )?;
    }
    Ok(())
}
test_backends! {
    #[case::n1_d1((1, 1, 1, 1, 1), true)]
    #[case::b2h2_n37_d16_dv24((2, 2, 37, 16, 24), true)]
    #[case::n64_exact_chunk((1, 1, 64, 8, 8), true)]
    #[case::n130_d64((1, 2, 130, 64, 64), true)]
    #[case::dv70_two_column_tiles((1, 1, 65, 3, 70), true)]
    #[case::d80_two_contraction_tiles((1, 3, 200, 80, 5), true)]
    #[case::d1_n300((1, 1, 300, 1, 2), true)]
    #[case::noncausal_n20_d8((1, 1, 20, 8, 8), false)]
    #[case::noncausal_n150((1, 2, 150, 16, 16), false)]
    fn lin_attn_f64_matches_reference(shape: Shape, causal: bool);
}

/// f32 (and bf16 inputs) chunked against the recurrent form in f64 on the same rounded inputs,
/// and MSE < 1e-6 against the explicit masked form in f64.
fn lin_attn_f32_matches_recurrent_and_explicit<B: Backend>(
    be: &B,
    dtype: Dtype,
    shape: Shape,
    causal: bool,
) -> anyhow::Result<()> {
    let [q, k, v, up] = inputs(shape, 11);
    let cfg = config(causal);
    let args = LinAttnArgs::new(q.view(), k.view(), v.view(), cfg)?;
    let got = be.lin_attn(&args, dtype)?;
    let rec = lin_attn::forward::<f64>(&args, dtype, LinAttnSchedule::Recurrent);
    assert_tol(
        &format!("o {dtype} vs recurrent"),
        &flat(&got),
        &flat(&rec),
        tol::LIN_ATTN_CHUNKED_F32,
    )?;
    if dtype == Dtype::F32 {
        assert_mse(
            "o f32 vs explicit",
            &flat(&got),
            &flat(&explicit(&q, &k, &v, cfg)),
        )?;
    }
    let gg = be.lin_attn_grad(&args, up.view(), dtype)?;
    let gw = lin_attn::backward::<f64>(&args, up.view(), dtype, LinAttnSchedule::Recurrent);
    // Relative to the largest of the three gradients: dq vanishes identically at N = 1 and d = 1
    // (o does not depend on q there), where only rounding is left.
    let scale = [&gw.dq, &gw.dk, &gw.dv]
        .iter()
        .flat_map(|a| a.iter())
        .fold(0.0f64, |m, x| m.max(x.abs()));
    for (name, g, w) in [
        ("dq", &gg.dq, &gw.dq),
        ("dk", &gg.dk, &gw.dk),
        ("dv", &gg.dv, &gw.dv),
    ] {
        let what = format!("{name} {dtype}");
        assert_scaled(&what, &flat(g), &flat(w), tol::LIN_ATTN_GRAD_F32, scale)?;
        assert_mse(&what, &flat(g), &flat(w))?;
    }
    Ok(())
}
test_backends! {
    #[case::f32_b1h2_n1024_d64(Dtype::F32, (1, 2, 1024, 64, 64), true)]
    #[case::f32_n1000_not_a_chunk_multiple(Dtype::F32, (1, 1, 1000, 32, 48), true)]
    #[case::f32_n1(Dtype::F32, (2, 1, 1, 16, 8), true)]
    #[case::f32_d1(Dtype::F32, (1, 1, 257, 1, 4), true)]
    #[case::f32_noncausal(Dtype::F32, (1, 2, 300, 16, 16), false)]
    #[case::bf16_n500(Dtype::Bf16, (1, 1, 500, 64, 32), true)]
    fn lin_attn_f32_matches_recurrent_and_explicit(dtype: Dtype, shape: Shape, causal: bool);
}

/// The f64 backward against central differences of the CPU reference forward (design §16).
fn lin_attn_grad_matches_central_differences<B: Backend>(
    be: &B,
    shape: Shape,
    causal: bool,
) -> anyhow::Result<()> {
    let [q, k, v, up] = inputs(shape, 3);
    let cfg = config(causal);
    let args = LinAttnArgs::new(q.view(), k.view(), v.view(), cfg)?;
    let got = be.lin_attn_grad(&args, up.view(), Dtype::F64)?;
    let loss = |x: &[Array4<f64>; 3]| -> anyhow::Result<f64> {
        let a = LinAttnArgs::new(x[0].view(), x[1].view(), x[2].view(), cfg)?;
        Ok((&lin_attn::forward::<f64>(&a, Dtype::F64, LinAttnSchedule::Recurrent) * &up).sum())
    };
    let h = 1e-6;
    for (which, name, g) in [(0, "dq", &got.dq), (1, "dk", &got.dk), (2, "dv", &got.dv)] {
        let mut fd = Vec::new();
        for t in 0..[&q, &k, &v][which].len() {
            let shifted = |e: f64| {
                let mut x = [q.clone(), k.clone(), v.clone()];
                x[which].as_slice_mut().expect("standard")[t] += e;
                loss(&x)
            };
            fd.push((shifted(h)? - shifted(-h)?) / (2.0 * h));
        }
        assert_scaled(
            &format!("{name} vs FD"),
            &flat(g),
            &fd,
            tol::HYP_GRAD_FD_F64,
            1.0,
        )?;
    }
    Ok(())
}
test_backends! {
    #[case::causal_n70((1, 1, 70, 3, 2), true)]
    #[case::noncausal_n9((1, 2, 9, 2, 3), false)]
    fn lin_attn_grad_matches_central_differences(shape: Shape, causal: bool);
}

/// Perturbing the keys and values j > i leaves o_i bit-identical (design §16, causality).
fn lin_attn_is_causal_bit_for_bit<B: Backend>(be: &B) -> anyhow::Result<()> {
    let [q, k, v, _] = inputs((1, 2, 200, 16, 8), 5);
    let args = LinAttnArgs::new(q.view(), k.view(), v.view(), LinAttnConfig::default())?;
    let base = be.lin_attn(&args, Dtype::F32)?;
    let cut = 100; // inside chunk 1 (rows 64..128)
    let (mut k2, mut v2) = (k.clone(), v.clone());
    for j in cut + 1..200 {
        for hh in 0..2 {
            k2.slice_mut(ndarray::s![0, hh, j, ..])
                .mapv_inplace(|x| -3.0 * x + 1.0);
            v2.slice_mut(ndarray::s![0, hh, j, ..])
                .mapv_inplace(|x| 7.0 * x);
        }
    }
    let args2 = LinAttnArgs::new(q.view(), k2.view(), v2.view(), LinAttnConfig::default())?;
    let pert = be.lin_attn(&args2, Dtype::F32)?;
    for hh in 0..2 {
        for i in 0..=cut {
            for e in 0..8 {
                let (a, b) = (base[[0, hh, i, e]], pert[[0, hh, i, e]]);
                anyhow::ensure!(
                    a.to_bits() == b.to_bits(),
                    "o[{hh}, {i}, {e}] changed: {a} -> {b}"
                );
            }
        }
    }
    Ok(())
}
test_backends! { fn lin_attn_is_causal_bit_for_bit(); }

/// A wrong upstream shape and inputs that overflow f32 are typed errors naming the argument.
fn lin_attn_errors_name_the_argument<B: Backend>(be: &B) -> anyhow::Result<()> {
    let [q, k, v, _] = inputs((1, 1, 5, 3, 2), 1);
    let args = LinAttnArgs::new(q.view(), k.view(), v.view(), LinAttnConfig::default())?;
    let e = be
        .lin_attn_grad(&args, q.view(), Dtype::F32)
        .expect_err("d_o shaped like q");
    anyhow::ensure!(matches!(e, Error::Shape { arg: "d_o", .. }), "{e}");
    let huge = q.mapv(|x| 1e20 * x.abs());
    let args = LinAttnArgs::new(huge.view(), huge.view(), v.view(), LinAttnConfig::default())?;
    be.lin_attn(&args, Dtype::F64)?;
    let e = be.lin_attn(&args, Dtype::F32).expect_err("f32 overflow");
    anyhow::ensure!(
        e.to_string()
            .starts_with("lin_attn: `q` (with `k`, `v`) overflows f32"),
        "{e}"
    );
    Ok(())
}
test_backends! { fn lin_attn_errors_name_the_argument(); }

/// Random shapes (any N, d, dv, causal or not) against the CPU reference in f64, forward and
/// backward: catches chunk, tile and contraction remainders (64 cases on the GPU).
fn lin_attn_random_shapes_match_reference<B: Backend>(be: &B) -> anyhow::Result<()> {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new(Config {
        cases: crate::common::cases::<B>(96),
        ..Config::default()
    });
    let shape = (
        1usize..=2,
        1usize..=2,
        1usize..=200,
        1usize..=80,
        1usize..=80,
        any::<bool>(),
        0u64..1000,
    );
    runner
        .run(&shape, |(b, h, n, d, dv, causal, seed)| {
            let [q, k, v, up] = inputs((b, h, n, d, dv), seed);
            let check = || -> anyhow::Result<()> {
                let args = LinAttnArgs::new(q.view(), k.view(), v.view(), config(causal))?;
                let got = be.lin_attn(&args, Dtype::F64)?;
                let want = lin_attn::forward::<f64>(&args, Dtype::F64, LinAttnSchedule::Chunked);
                assert_tol("o", &flat(&got), &flat(&want), tol::HYP_F64_CROSS)?;
                let gg = be.lin_attn_grad(&args, up.view(), Dtype::F64)?;
                let gw = lin_attn::backward::<f64>(
                    &args,
                    up.view(),
                    Dtype::F64,
                    LinAttnSchedule::Chunked,
                );
                for (name, g, w) in [
                    ("dq", &gg.dq, &gw.dq),
                    ("dk", &gg.dk, &gw.dk),
                    ("dv", &gg.dv, &gw.dv),
                ] {
                    assert_scaled(name, &flat(g), &flat(w), tol::F64.rtol, 1.0)?;
                }
                Ok(())
            };
            check().map_err(|e| {
                TestCaseError::fail(format!("({b}, {h}, {n}, {d}, {dv}) causal {causal}: {e}"))
            })
        })
        .map_err(|e| anyhow::anyhow!("{e}"))
}
test_backends! { fn lin_attn_random_shapes_match_reference(); }
