//! Linear attention against the explicit masked form written here in f64 (o_i = Σ_j w_ij v_j /
//! max(Σ_j w_ij, eps), w_ij = φ(q_i)·φ(k_j) for the visible j), in both schedules; the backward
//! against central differences of that form (design §16).

use ndarray::Array4;
use proptest::prelude::*;

use super::{backward, forward, LinAttnArgs, LinAttnConfig, LinAttnSchedule};
use crate::Dtype;

const CASES: u32 = 1000;
/// f64 vs the explicit form (tol::F64).
const REL: f64 = 1e-12;
/// f64 backward vs central differences (tol::HYP_GRAD_FD_F64).
const FD_REL: f64 = 1e-6;
/// f32 chunked vs f64 recurrent (tol::LIN_ATTN_CHUNKED_F32).
const F32_REL: f64 = 1e-5;

fn phi(x: f64) -> f64 {
    if x > 0.0 {
        x + 1.0
    } else {
        x.exp()
    }
}

/// The explicit O(N²) masked form.
fn explicit(q: &Array4<f64>, k: &Array4<f64>, v: &Array4<f64>, cfg: LinAttnConfig) -> Array4<f64> {
    let (b, h, n, d) = q.dim();
    let dv = v.dim().3;
    let mut o = Array4::zeros((b, h, n, dv));
    for bb in 0..b {
        for hh in 0..h {
            for i in 0..n {
                let mut den = 0.0;
                let mut num = vec![0.0; dv];
                for j in (0..n).filter(|&j| !cfg.causal || j <= i) {
                    let w: f64 = (0..d)
                        .map(|t| phi(q[[bb, hh, i, t]]) * phi(k[[bb, hh, j, t]]))
                        .sum();
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

type Problem = (
    Array4<f64>,
    Array4<f64>,
    Array4<f64>,
    Array4<f64>,
    LinAttnConfig,
);

fn problem(max_n: usize) -> impl Strategy<Value = Problem> {
    (
        1usize..=2,
        1usize..=2,
        1usize..=max_n,
        1usize..=6,
        1usize..=5,
        any::<bool>(),
    )
        .prop_flat_map(|(b, h, n, d, dv, causal)| {
            let v = |len| proptest::collection::vec(-2.0f64..2.0, len);
            (
                v(b * h * n * d),
                v(b * h * n * d),
                v(b * h * n * dv),
                v(b * h * n * dv),
            )
                .prop_map(move |(q, k, vv, up)| {
                    let cfg = if causal {
                        LinAttnConfig::default()
                    } else {
                        LinAttnConfig::non_causal()
                    };
                    (
                        Array4::from_shape_vec((b, h, n, d), q).expect("len"),
                        Array4::from_shape_vec((b, h, n, d), k).expect("len"),
                        Array4::from_shape_vec((b, h, n, dv), vv).expect("len"),
                        Array4::from_shape_vec((b, h, n, dv), up).expect("len"),
                        cfg,
                    )
                })
        })
}

fn close(got: &Array4<f64>, want: &Array4<f64>, rel: f64) -> Result<(), TestCaseError> {
    for ((idx, g), w) in got.indexed_iter().zip(want.iter()) {
        prop_assert!(
            (g - w).abs() <= rel * w.abs().max(1.0),
            "{:?}: {} vs {}",
            idx,
            g,
            w
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn both_schedules_match_the_explicit_form((q, k, v, _up, cfg) in problem(150)) {
        let args = LinAttnArgs::new(q.view(), k.view(), v.view(), cfg).expect("valid");
        let want = explicit(&q, &k, &v, cfg);
        close(&forward::<f64>(&args, Dtype::F64, LinAttnSchedule::Chunked), &want, REL)?;
        close(&forward::<f64>(&args, Dtype::F64, LinAttnSchedule::Recurrent), &want, REL)?;
    }

    #[test]
    fn f32_chunked_matches_the_recurrent_form((q, k, v, _up, cfg) in problem(150)) {
        let args = LinAttnArgs::new(q.view(), k.view(), v.view(), cfg).expect("valid");
        let want = forward::<f64>(&args, Dtype::F32, LinAttnSchedule::Recurrent);
        close(&forward::<f32>(&args, Dtype::F32, LinAttnSchedule::Chunked), &want, F32_REL)?;
    }

    #[test]
    fn backward_matches_central_differences((q, k, v, up, cfg) in problem(20)) {
        let args = LinAttnArgs::new(q.view(), k.view(), v.view(), cfg).expect("valid");
        let loss = |q: &Array4<f64>, k: &Array4<f64>, v: &Array4<f64>| (&explicit(q, k, v, cfg) * &up).sum();
        let h = 1e-6;
        for sched in [LinAttnSchedule::Chunked, LinAttnSchedule::Recurrent] {
            let got = backward::<f64>(&args, up.view(), Dtype::F64, sched);
            for (name, which, g) in [("dq", 0, &got.dq), ("dk", 1, &got.dk), ("dv", 2, &got.dv)] {
                let base = [&q, &k, &v][which];
                let mut fd = Vec::with_capacity(base.len());
                for t in 0..base.len() {
                    let shift = |e: f64| {
                        let mut x = [q.clone(), k.clone(), v.clone()];
                        x[which].as_slice_mut().expect("standard")[t] += e;
                        loss(&x[0], &x[1], &x[2])
                    };
                    fd.push((shift(h) - shift(-h)) / (2.0 * h));
                }
                let scale = fd.iter().fold(1.0f64, |m, x| m.max(x.abs()));
                for (t, (a, b)) in g.iter().zip(&fd).enumerate() {
                    prop_assert!((a - b).abs() <= FD_REL * scale, "{name}[{t}] ({sched:?}): {a} vs FD {b}");
                }
            }
        }
    }
}

/// Rows whose φ(q)·z falls below eps are divided by eps (the floor of design §9), and their
/// normaliser gradient vanishes.
#[test]
fn the_floor_applies_below_eps() {
    let q = Array4::from_elem((1, 1, 3, 2), -30.0); // φ = e^-30: φq·φk ≈ 1.7e-26
    let v = Array4::from_elem((1, 1, 3, 1), 1.0);
    let cfg = LinAttnConfig::default();
    let args = LinAttnArgs::new(q.view(), q.view(), v.view(), cfg).expect("valid");
    let o = forward::<f64>(&args, Dtype::F64, LinAttnSchedule::Chunked);
    let w = 2.0 * (-60.0f64).exp();
    assert!(
        (o[[0, 0, 2, 0]] - 3.0 * w / 1e-6).abs() < 1e-30,
        "{}",
        o[[0, 0, 2, 0]]
    );
}

#[test]
fn bad_arguments_are_typed_errors() {
    let q = Array4::<f64>::zeros((1, 2, 3, 4));
    let v = Array4::<f64>::zeros((1, 2, 3, 5));
    let msg = |k: &Array4<f64>, v: &Array4<f64>, cfg| {
        LinAttnArgs::new(q.view(), k.view(), v.view(), cfg)
            .expect_err("rejected")
            .to_string()
    };
    let cfg = LinAttnConfig::default();
    assert_eq!(
        msg(&Array4::zeros((1, 2, 3, 3)), &v, cfg),
        "lin_attn: `k` must have shape [B, H, N, d] = [1, 2, 3, 4] (as `q`), got [1, 2, 3, 3]"
    );
    assert_eq!(
        msg(&q, &Array4::zeros((1, 2, 3, 0)), cfg),
        "lin_attn: dv must be at least 1 (`v` has shape [1, 2, 3, 0])"
    );
    assert!(msg(&q, &v, cfg.eps(0.0)).starts_with("lin_attn: `eps` must be finite and > 0"));
    let mut bad = v.clone();
    bad[[0, 1, 2, 4]] = f64::INFINITY;
    assert!(msg(&q, &bad, cfg).starts_with("lin_attn: `v` is inf at [0, 1, 2, 4]"));
    let args = LinAttnArgs::new(q.view(), q.view(), v.view(), cfg).expect("valid");
    let e = args
        .check_grad(&q.view())
        .expect_err("d_o must look like v");
    assert_eq!(
        e.to_string(),
        "lin_attn: `d_o` must have shape [B, H, N, dv] = [1, 2, 3, 5] (as `v`), got [1, 2, 3, 4]"
    );
}
