//! Pairwise distance matrix (design hyperbolic.md §7) on every backend: f64 against the CPU
//! reference for every D (no truncation) and N, M not multiples of the tile; f32 and bf16 against
//! f64 on the same rounded inputs (§16: rel ≤ 1e-5 where √c·d > 1e-3, else abs ≤ 1e-5/√c);
//! d(x, x) = 0 exactly and near-coincident points within the absolute bound; symmetry; typed
//! errors for ball points outside the ball.

use muse::reference::hyp_dist::{self, HypDistArgs, HypDistInput};
use muse::reference::Dtype;
use muse::verify::tolerance::tol;
use muse::{Backend, Error};
use ndarray::Array4;

use crate::common::test_backends;
use crate::hyp_common::{assert_dist, assert_mse, assert_tol, randn};

/// Tangent rows (B, H, L, D) with s‖u‖ spread over [0, `max_a`], or their exp0 images (ball).
fn points(
    shape: (usize, usize, usize, usize),
    seed: u64,
    c: f64,
    max_a: f64,
    input: HypDistInput,
) -> Array4<f64> {
    let (b, h, l, d) = shape;
    let v = randn(b * h * l * d, seed, 1.0);
    let s = c.sqrt();
    let mut out = Array4::zeros(shape);
    for (r, mut row) in out.rows_mut().into_iter().enumerate() {
        let src = &v[r * d..(r + 1) * d];
        let norm = src.iter().map(|e| e * e).sum::<f64>().sqrt().max(1e-300);
        let a = max_a * ((r * 7919 % 97) as f64 / 96.0);
        let factor = match input {
            HypDistInput::Tangent => a / s / norm,
            HypDistInput::Ball => a.tanh() / s / norm,
        };
        for (o, e) in row.iter_mut().zip(src) {
            *o = e * factor;
        }
    }
    out
}

fn flat(a: &Array4<f64>) -> Vec<f64> {
    a.iter().copied().collect()
}

fn input_of(name: &str) -> HypDistInput {
    name.parse().expect("test inputs are valid")
}

/// f64 on the backend against the CPU reference (exact differences everywhere).
fn hyp_dist_f64_matches_reference<B: Backend>(
    be: &B,
    input: &str,
    shape: (usize, usize, usize, usize, usize),
    c: f64,
) -> anyhow::Result<()> {
    let (b, h, n, m, d) = shape;
    let input = input_of(input);
    let x = points((b, h, n, d), 1, c, 3.0, input);
    let mut y = points((b, h, m, d), 2, c, 3.0, input);
    // Some coincident pairs: y_0 = x_0 in every head.
    for bb in 0..b {
        for hh in 0..h {
            for k in 0..d {
                y[[bb, hh, 0, k]] = x[[bb, hh, 0, k]];
            }
        }
    }
    let args = HypDistArgs::new(x.view(), y.view(), c, input)?;
    let got = be.hyp_dist(&args, Dtype::F64)?;
    let want = hyp_dist::forward::<f64>(&args, Dtype::F64);
    assert_tol(
        &format!("{input:?} D{d} f64"),
        &flat(&got),
        &flat(&want),
        tol::HYP_F64_CROSS,
    )?;
    for bb in 0..b {
        for hh in 0..h {
            anyhow::ensure!(
                got[[bb, hh, 0, 0]] == 0.0,
                "d(x, x) = {} at [{bb}, {hh}]",
                got[[bb, hh, 0, 0]]
            );
        }
    }
    Ok(())
}
test_backends! {
    #[case::tangent_d1("tangent", (1, 2, 5, 7, 1), 0.693)]
    #[case::tangent_d3("tangent", (2, 1, 9, 4, 3), 2.0)]
    #[case::tangent_d63("tangent", (1, 1, 33, 17, 63), 0.01)]
    #[case::tangent_d65("tangent", (1, 2, 129, 65, 65), 1.0)]
    #[case::tangent_d96("tangent", (1, 1, 130, 131, 96), 0.693)]
    #[case::tangent_d128("tangent", (1, 1, 64, 200, 128), 10.0)]
    #[case::tangent_d256("tangent", (1, 1, 20, 30, 256), 0.693)]
    #[case::ball_d1("ball", (1, 1, 6, 3, 1), 0.693)]
    #[case::ball_d3("ball", (2, 2, 37, 41, 3), 0.693)]
    #[case::ball_d200("ball", (1, 1, 70, 66, 200), 0.693)]
    #[case::ball_d64("ball", (1, 3, 129, 127, 64), 2.0)]
    fn hyp_dist_f64_matches_reference(input: &str, shape: (usize, usize, usize, usize, usize), c: f64);
}

/// f32 and bf16 against f64 on the same rounded inputs, by the distance rule of §16.
fn hyp_dist_f32_matches_f64<B: Backend>(
    be: &B,
    dtype: Dtype,
    input: &str,
    shape: (usize, usize, usize, usize, usize),
    max_a: f64,
) -> anyhow::Result<()> {
    let (b, h, n, m, d) = shape;
    let input = input_of(input);
    for c in [0.01, 0.693, 2.0] {
        let x = points((b, h, n, d), 3, c, max_a, input);
        let mut y = points((b, h, m, d), 4, c, max_a, input);
        // Near-coincident pairs: y_1 = x_1 (1 + 1e-6 · noise).
        let noise = randn(d, 9, 1e-6);
        for bb in 0..b {
            for hh in 0..h {
                for k in 0..d {
                    y[[bb, hh, 1, k]] = x[[bb, hh, 1, k]] * (1.0 + noise[k]);
                }
            }
        }
        let args = HypDistArgs::new(x.view(), y.view(), c, input)?;
        let got = be.hyp_dist(&args, dtype)?;
        let want = hyp_dist::forward::<f64>(&args, dtype);
        let what = format!("{input:?} D{d} {dtype} c={c}");
        assert_dist(
            &what,
            &flat(&got),
            &flat(&want),
            c.sqrt(),
            tol::HYP_DIST_F32,
        )?;
        assert_mse(&what, &flat(&got), &flat(&want))?;
    }
    Ok(())
}
test_backends! {
    #[case::tangent_d64(Dtype::F32, "tangent", (1, 2, 150, 140, 64), 5.0)]
    #[case::tangent_d128(Dtype::F32, "tangent", (1, 1, 130, 129, 128), 3.0)]
    #[case::tangent_d256_large_a(Dtype::F32, "tangent", (1, 1, 40, 50, 256), 12.0)]
    #[case::tangent_d1(Dtype::F32, "tangent", (2, 1, 20, 20, 1), 3.0)]
    #[case::tangent_d5(Dtype::F32, "tangent", (1, 1, 33, 35, 5), 3.0)]
    #[case::ball_d64(Dtype::F32, "ball", (1, 2, 129, 131, 64), 1.4)]
    #[case::ball_d3(Dtype::F32, "ball", (1, 1, 60, 61, 3), 1.4)]
    #[case::bf16_tangent_d96(Dtype::Bf16, "tangent", (1, 1, 64, 70, 96), 3.0)]
    #[case::bf16_ball_d32(Dtype::Bf16, "ball", (1, 1, 50, 40, 32), 1.4)]
    fn hyp_dist_f32_matches_f64(dtype: Dtype, input: &str, shape: (usize, usize, usize, usize, usize), max_a: f64);
}

/// y = x: the diagonal is exactly 0 in every precision; d(x, y) and d(y, x) agree.
fn hyp_dist_self_distance_is_zero_and_symmetric<B: Backend>(
    be: &B,
    input: &str,
    d: usize,
) -> anyhow::Result<()> {
    let input = input_of(input);
    let c = 0.693;
    let x = points((1, 2, 150, d), 5, c, 4.0, input);
    let y = points((1, 2, 70, d), 6, c, 4.0, input);
    for dtype in [Dtype::F64, Dtype::F32] {
        let args = HypDistArgs::new(x.view(), x.view(), c, input)?;
        let got = be.hyp_dist(&args, dtype)?;
        for hh in 0..2 {
            for i in 0..150 {
                let v = got[[0, hh, i, i]];
                anyhow::ensure!(v == 0.0, "{dtype} d(x_{i}, x_{i}) = {v} (head {hh})");
            }
        }
        let xy = be.hyp_dist(&HypDistArgs::new(x.view(), y.view(), c, input)?, dtype)?;
        let yx = be.hyp_dist(&HypDistArgs::new(y.view(), x.view(), c, input)?, dtype)?;
        let yx_t = yx.permuted_axes([0, 1, 3, 2]);
        let t = if dtype == Dtype::F64 {
            tol::F64
        } else {
            tol::F32
        };
        assert_tol(
            &format!("symmetry {dtype}"),
            &flat(&xy),
            &yx_t.iter().copied().collect::<Vec<_>>(),
            t,
        )?;
    }
    Ok(())
}
test_backends! {
    #[case::tangent_d64("tangent", 64)]
    #[case::tangent_d7("tangent", 7)]
    #[case::ball_d64("ball", 64)]
    #[case::ball_d130("ball", 130)]
    fn hyp_dist_self_distance_is_zero_and_symmetric(input: &str, d: usize);
}

/// Ball points outside the ball, also only after rounding to f32, are `Error::OutOfBall`.
fn hyp_dist_out_of_ball_is_a_typed_error<B: Backend>(be: &B) -> anyhow::Result<()> {
    let x = Array4::from_elem((1, 1, 2, 1), 0.5);
    let edge = Array4::from_elem((1, 1, 3, 1), 1.0 - 1e-12);
    let args = HypDistArgs::new(x.view(), edge.view(), 1.0, HypDistInput::Ball)?;
    be.hyp_dist(&args, Dtype::F64)?;
    let e = be
        .hyp_dist(&args, Dtype::F32)
        .expect_err("1 - 1e-12 rounds to 1 in f32");
    anyhow::ensure!(
        matches!(
            e,
            Error::OutOfBall {
                arg: "y",
                row: 0,
                ..
            }
        ),
        "{e}"
    );
    let outside = Array4::from_elem((1, 1, 3, 1), 1.5);
    let e =
        HypDistArgs::new(outside.view(), x.view(), 1.0, HypDistInput::Ball).expect_err("outside");
    anyhow::ensure!(matches!(e, Error::OutOfBall { arg: "x", .. }), "{e}");
    Ok(())
}
test_backends! { fn hyp_dist_out_of_ball_is_a_typed_error(); }

/// Random shapes (any N, M, D, both inputs, f64 and f32) against the CPU reference: catches tile
/// edges and k-loop remainders (64 cases on the GPU).
fn hyp_dist_random_shapes_match_reference<B: Backend>(be: &B) -> anyhow::Result<()> {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new(Config {
        cases: crate::common::cases::<B>(128),
        ..Config::default()
    });
    let shape = (
        1usize..=2,
        1usize..=2,
        1usize..=140,
        1usize..=140,
        1usize..=70,
        any::<bool>(),
        0u64..1000,
    );
    runner
        .run(&shape, |(b, h, n, m, d, ball, seed)| {
            let input = if ball {
                HypDistInput::Ball
            } else {
                HypDistInput::Tangent
            };
            let c = 0.693;
            let x = points((b, h, n, d), seed, c, 2.0, input);
            let y = points((b, h, m, d), seed + 1, c, 2.0, input);
            let check = || -> anyhow::Result<()> {
                let args = HypDistArgs::new(x.view(), y.view(), c, input)?;
                let got = be.hyp_dist(&args, Dtype::F64)?;
                assert_tol(
                    "f64",
                    &flat(&got),
                    &flat(&hyp_dist::forward::<f64>(&args, Dtype::F64)),
                    tol::HYP_F64_CROSS,
                )?;
                let got = be.hyp_dist(&args, Dtype::F32)?;
                let want = hyp_dist::forward::<f64>(&args, Dtype::F32);
                assert_dist(
                    "f32",
                    &flat(&got),
                    &flat(&want),
                    c.sqrt(),
                    tol::HYP_DIST_F32,
                )
            };
            check().map_err(|e| {
                TestCaseError::fail(format!("{input:?} ({b}, {h}, {n}, {m}, {d}): {e}"))
            })
        })
        .map_err(|e| anyhow::anyhow!("{e}"))
}
test_backends! { fn hyp_dist_random_shapes_match_reference(); }
