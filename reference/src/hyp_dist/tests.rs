//! The distance matrix against explicit f64 forms written here: exp0 of both inputs, then the
//! Möbius form (2/√c)·artanh(√c‖(−x) ⊕ y‖) (tangent), and the plain acosh of the ball form
//! (design §16, "the three distance forms agree").

use ndarray::Array4;
use proptest::prelude::*;

use super::{forward, HypDistArgs, HypDistInput};
use crate::Dtype;

const CASES: u32 = 1000;
/// f64 vs the explicit forms (tol::HYP_ORACLE_F64).
const REL: f64 = 1e-9;

fn explicit_exp0(s: f64, u: &[f64]) -> Vec<f64> {
    let r: f64 = u.iter().map(|v| v * v).sum::<f64>().sqrt();
    let f = if r == 0.0 {
        1.0
    } else {
        (s * r).tanh() / (s * r)
    };
    u.iter().map(|v| f * v).collect()
}

fn explicit_ball(c: f64, x: &[f64], y: &[f64]) -> f64 {
    let (x2, y2): (f64, f64) = (x.iter().map(|v| v * v).sum(), y.iter().map(|v| v * v).sum());
    let diff2: f64 = x.iter().zip(y).map(|(a, b)| (a - b).powi(2)).sum();
    (1.0 + 2.0 * c * diff2 / ((1.0 - c * x2) * (1.0 - c * y2))).acosh() / c.sqrt()
}

fn explicit_mobius(c: f64, x: &[f64], y: &[f64]) -> f64 {
    // w = (−x) ⊕ y
    let xy: f64 = -x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>();
    let (x2, y2): (f64, f64) = (x.iter().map(|v| v * v).sum(), y.iter().map(|v| v * v).sum());
    let num_x = 1.0 + 2.0 * c * xy + c * y2;
    let num_y = 1.0 - c * x2;
    let den = 1.0 + 2.0 * c * xy + c * c * x2 * y2;
    let w2: f64 = x
        .iter()
        .zip(y)
        .map(|(a, b)| ((-a * num_x + b * num_y) / den).powi(2))
        .sum();
    2.0 / c.sqrt() * (c.sqrt() * w2.sqrt()).atanh()
}

type Problem = (Array4<f64>, Array4<f64>, f64);

/// (B, H, N, D) and (B, H, M, D) tangent inputs with s‖u‖ up to `max_t`; with probability ½
/// some rows of y repeat rows of x (coincident pairs).
fn problem(max_t: f64) -> impl Strategy<Value = Problem> {
    let c = prop::sample::select(vec![0.01, 0.5, 0.693, 1.0, 2.0, 10.0]);
    (
        1usize..=2,
        1usize..=2,
        1usize..=5,
        1usize..=5,
        1usize..=12,
        c,
        any::<bool>(),
    )
        .prop_flat_map(move |(b, h, n, m, d, c, repeat)| {
            let v = |len| proptest::collection::vec(-1.0f64..1.0, len);
            (
                v(b * h * n * d),
                v(b * h * m * d),
                proptest::collection::vec(0.0..max_t, b * h * (n + m)),
            )
                .prop_map(move |(x, y, t)| {
                    let s = f64::sqrt(c);
                    let scale = |rows: Vec<f64>, off: usize| -> Vec<f64> {
                        rows.chunks(d)
                            .enumerate()
                            .flat_map(|(r, row)| {
                                let nrm = row.iter().map(|e| e * e).sum::<f64>().sqrt().max(1e-12);
                                let f = t[off + r] / s / nrm;
                                row.iter().map(move |e| e * f).collect::<Vec<_>>()
                            })
                            .collect()
                    };
                    let xa = Array4::from_shape_vec((b, h, n, d), scale(x, 0)).expect("len");
                    let mut ya =
                        Array4::from_shape_vec((b, h, m, d), scale(y, b * h * n)).expect("len");
                    if repeat {
                        for bb in 0..b {
                            for hh in 0..h {
                                for j in (0..m.min(n)).step_by(2) {
                                    for k in 0..d {
                                        ya[[bb, hh, j, k]] = xa[[bb, hh, j, k]];
                                    }
                                }
                            }
                        }
                    }
                    (xa, ya, c)
                })
        })
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= REL * want.abs().max(1.0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    // s‖u‖ ≤ 3: the explicit Möbius form is itself ill-conditioned near the boundary (its
    // numerators cancel like (1 − c‖x‖²)²). Against mpmath at 50 digits its worst relative error
    // over 3000 random cases is 2.6e-12 at t ≤ 3 but 1.9e-10 at t ≤ 4, and 1.1e-9 on a collinear
    // pair at t ≈ 3.87 (CI found it). `collinear_pairs_far_out_are_exact` covers t up to 15
    // with an exact closed form instead.
    #[test]
    fn tangent_matches_exp0_then_mobius((x, y, c) in problem(3.0)) {
        let args = HypDistArgs::new(x.view(), y.view(), c, HypDistInput::Tangent).expect("valid");
        let got = forward::<f64>(&args, Dtype::F64);
        let s = c.sqrt();
        let (b, h, n, m) = args.out_dim();
        for (bb, hh, i, j) in itertools(b, h, n, m) {
            let u: Vec<f64> = row4(&x, bb, hh, i);
            let w: Vec<f64> = row4(&y, bb, hh, j);
            let want = if u == w { 0.0 } else { explicit_mobius(c, &explicit_exp0(s, &u), &explicit_exp0(s, &w)) };
            let g = got[[bb, hh, i, j]];
            prop_assert!(close(g, want), "d[{bb},{hh},{i},{j}] = {g}, explicit {want}");
            if u == w { prop_assert_eq!(g, 0.0); }
        }
    }

    #[test]
    fn ball_matches_plain_acosh((x, y, c) in problem(2.5)) {
        // Ball points: exp0 of the tangent rows (s|x| <= tanh 2.5 = 0.987).
        let s = c.sqrt();
        let map = |a: &Array4<f64>| {
            let mut o = a.clone();
            for mut row in o.rows_mut() {
                let v = explicit_exp0(s, &row.to_vec());
                row.assign(&ndarray::Array1::from(v));
            }
            o
        };
        let (xb, yb) = (map(&x), map(&y));
        let args = HypDistArgs::new(xb.view(), yb.view(), c, HypDistInput::Ball).expect("inside");
        let got = forward::<f64>(&args, Dtype::F64);
        let (b, h, n, m) = args.out_dim();
        for (bb, hh, i, j) in itertools(b, h, n, m) {
            let u: Vec<f64> = row4(&xb, bb, hh, i);
            let w: Vec<f64> = row4(&yb, bb, hh, j);
            let want = explicit_ball(c, &u, &w);
            let g = got[[bb, hh, i, j]];
            prop_assert!(close(g, want), "d[{bb},{hh},{i},{j}] = {g}, explicit {want}");
            if u == w { prop_assert_eq!(g, 0.0); }
        }
        // The tangent form on the tangent rows agrees with the ball form on their images.
        let tan = forward::<f64>(&HypDistArgs::new(x.view(), y.view(), c, HypDistInput::Tangent).expect("valid"), Dtype::F64);
        for (g, t) in got.iter().zip(tan.iter()) {
            prop_assert!((g - t).abs() <= 1e-8 * t.abs().max(1.0), "ball {g} vs tangent {t}");
        }
    }

    #[test]
    fn f32_self_distance_is_exactly_zero((x, _y, c) in problem(6.0)) {
        let args = HypDistArgs::new(x.view(), x.view(), c, HypDistInput::Tangent).expect("valid");
        let got = forward::<f32>(&args, Dtype::F32);
        let (b, h, n, _) = args.out_dim();
        for bb in 0..b { for hh in 0..h { for i in 0..n {
            prop_assert_eq!(got[[bb, hh, i, i]], 0.0);
        }}}
    }
}

fn row4(a: &Array4<f64>, b: usize, h: usize, i: usize) -> Vec<f64> {
    a.index_axis(ndarray::Axis(0), b)
        .index_axis_move(ndarray::Axis(0), h)
        .row(i)
        .to_vec()
}

fn itertools(
    b: usize,
    h: usize,
    n: usize,
    m: usize,
) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (0..b).flat_map(move |bb| {
        (0..h).flat_map(move |hh| (0..n).flat_map(move |i| (0..m).map(move |j| (bb, hh, i, j))))
    })
}

#[test]
fn every_dimension_counts() {
    // Two points that differ only in their last coordinate, at D = 1 … 300: the original used
    // only the first 32 dimensions and would return 0 beyond.
    for d in [1usize, 31, 32, 33, 64, 65, 200, 300] {
        let x = Array4::zeros((1, 1, 1, d));
        let mut y = Array4::zeros((1, 1, 1, d));
        y[[0, 0, 0, d - 1]] = 0.5;
        for input in [HypDistInput::Tangent, HypDistInput::Ball] {
            let args = HypDistArgs::new(x.view(), y.view(), 1.0, input).expect("valid");
            let got = forward::<f64>(&args, Dtype::F64)[[0, 0, 0, 0]];
            let want = match input {
                HypDistInput::Tangent => 1.0, // d(0, exp0 v) = 2|v|
                HypDistInput::Ball => 2.0 * 0.5f64.atanh(),
            };
            assert!(
                (got - want).abs() < 1e-14,
                "D = {d} {input:?}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn collinear_pairs_far_out_are_exact() {
    // For tangent vectors u = a·e and v = b·e with a, b ≥ 0, d_c(exp0 u, exp0 v) = 2|a − b|
    // exactly (both lie on one geodesic through 0 and d_c(0, exp0 v) = 2‖v‖). Far out the points
    // sit within 1e-13 of the boundary, where the ball form has lost every digit. e is an axis so
    // that the rounded inputs stay exactly collinear: far out, d is so sensitive to the angle
    // (∝ sinh 2a·sinh 2b·θ²) that a rounding-sized θ would move it by 1e-8, for every algorithm.
    let dir = [0.0, -1.0, 0.0];
    for c in [0.01, 1.0, 10.0] {
        let s = f64::sqrt(c);
        for (ta, tb) in [(3.865, 3.8846), (8.0, 8.5), (15.0, 14.2), (0.5, 15.0)] {
            let (a, b) = (ta / s, tb / s);
            let x = Array4::from_shape_fn((1, 1, 1, 3), |(.., k)| a * dir[k]);
            let y = Array4::from_shape_fn((1, 1, 1, 3), |(.., k)| b * dir[k]);
            let args =
                HypDistArgs::new(x.view(), y.view(), c, HypDistInput::Tangent).expect("valid");
            let got = forward::<f64>(&args, Dtype::F64)[[0, 0, 0, 0]];
            let want = 2.0 * (a - b).abs();
            assert!(
                (got - want).abs() <= REL * want.max(1.0),
                "c = {c}, t = ({ta}, {tb}): {got} vs {want}"
            );
        }
    }
}

#[test]
fn bad_arguments_are_typed_errors() {
    let x = Array4::<f64>::zeros((2, 3, 4, 5));
    let msg = |y: Array4<f64>, c: f64| {
        HypDistArgs::new(x.view(), y.view(), c, HypDistInput::Ball)
            .expect_err("rejected")
            .to_string()
    };
    assert_eq!(
        msg(Array4::zeros((2, 3, 4, 6)), 1.0),
        "hyp_dist: `y` must have shape [B, H, M, D] = [2, 3, M, 5] (as `x`), got [2, 3, 4, 6]"
    );
    assert_eq!(
        msg(Array4::zeros((2, 3, 0, 5)), 1.0),
        "hyp_dist: M must be at least 1 (`y` has shape [2, 3, 0, 5])"
    );
    assert!(msg(Array4::zeros((2, 3, 4, 5)), -1.0)
        .starts_with("hyp_dist: `c` (the curvature) must be finite and > 0"));
    let mut y = Array4::zeros((2, 3, 4, 5));
    y[[1, 2, 3, 0]] = 1.0; // s|y| = 1 at c = 1: on the boundary
    assert!(msg(y.clone(), 1.0).starts_with("hyp_dist: `y` row 23 is not inside the Poincaré ball"));
    y[[1, 2, 3, 0]] = f64::NAN;
    assert!(msg(y, 1.0).starts_with("hyp_dist: `y` is NaN at [1, 2, 3, 0]"));
    // Tangent inputs may be anywhere.
    let far = Array4::from_elem((2, 3, 4, 5), 1e3);
    assert!(HypDistArgs::new(x.view(), far.view(), 1.0, HypDistInput::Tangent).is_ok());
}
