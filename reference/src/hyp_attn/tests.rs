//! The reference forward against an explicit dense oracle (ball-form distances of the exp0
//! images, materialised masked softmax), the backward against central finite differences, and
//! the structural claims: causality and windows are exact, no head dim is dropped, rows with no
//! visible key give o = 0 and lse = −∞.

use ndarray::{Array4, ArrayView4, Axis};
use proptest::prelude::*;

use super::{backward, forward, Form, HypAttnArgs, Mask};
use crate::poincare::maps::{dist_ball, exp0};
use crate::Dtype;

/// Dense f64 oracle: d from the ball form of exp0 q, exp0 k; explicit visibility rule.
fn dense(
    q: &Array4<f64>,
    k: &Array4<f64>,
    v: &Array4<f64>,
    c: f64,
    beta: f64,
    mask: Mask,
) -> (Array4<f64>, Vec<f64>) {
    let (nb, nh, n, _) = q.dim();
    let (m, dv) = (k.dim().2, v.dim().3);
    let s = c.sqrt();
    let mut o = Array4::zeros((nb, nh, n, dv));
    let mut lse = Vec::new();
    let map = |x: ndarray::ArrayView1<'_, f64>| {
        let mut out = vec![0.0; x.len()];
        exp0(s, &x.to_vec(), &mut out);
        out
    };
    for b in 0..nb {
        for h in 0..nh {
            for i in 0..n {
                let visible = |j: usize| match mask {
                    Mask::None => true,
                    Mask::Causal => j as i64 <= i as i64 + m as i64 - n as i64,
                    Mask::Window(w) => j >= (i / w) * w && j <= i,
                };
                let row = |a: &Array4<f64>, r: usize| {
                    a.index_axis(Axis(0), b)
                        .index_axis_move(Axis(0), h)
                        .index_axis_move(Axis(0), r)
                        .to_owned()
                };
                let x = map(row(q, i).view());
                let t: Vec<Option<f64>> = (0..m)
                    .map(|j| visible(j).then(|| -beta * dist_ball(c, &x, &map(row(k, j).view()))))
                    .collect();
                let mx = t.iter().flatten().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
                let z: f64 = t.iter().flatten().map(|&x| (x - mx).exp()).sum();
                lse.push(if z > 0.0 {
                    mx + z.ln()
                } else {
                    f64::NEG_INFINITY
                });
                for (j, tj) in t.iter().enumerate() {
                    if let Some(tj) = tj {
                        let p = (tj - mx).exp() / z;
                        for e in 0..dv {
                            o[[b, h, i, e]] += p * v[[b, h, j, e]];
                        }
                    }
                }
            }
        }
    }
    (o, lse)
}

#[derive(Debug, Clone)]
struct Case {
    q: Array4<f64>,
    k: Array4<f64>,
    v: Array4<f64>,
    c: f64,
    beta: f64,
    mask: Mask,
}

fn arr(shape: (usize, usize, usize, usize), scale: f64) -> impl Strategy<Value = Array4<f64>> {
    let len = shape.0 * shape.1 * shape.2 * shape.3;
    proptest::collection::vec(-1.0f64..1.0, len).prop_map(move |x| {
        Array4::from_shape_vec(shape, x)
            .expect("length matches")
            .mapv(|e| e * scale)
    })
}

fn case(max_n: usize, max_d: usize) -> impl Strategy<Value = Case> {
    (
        1usize..=2,
        1usize..=2,
        1..=max_n,
        1..=max_n,
        1..=max_d,
        1usize..=4,
        0usize..3,
        1usize..=4,
    )
        .prop_flat_map(move |(b, h, n, m, d, dv, mk, w)| {
            let mask = match mk {
                0 => Mask::None,
                1 => Mask::Causal,
                _ => Mask::Window(w),
            };
            let m = if matches!(mask, Mask::Window(_)) {
                n
            } else {
                m
            };
            (
                arr((b, h, n, d), 1.5),
                arr((b, h, m, d), 1.5),
                arr((b, h, m, dv), 1.0),
                prop::sample::select(vec![0.01, 0.693, 2.0]),
                0.3f64..2.5,
                Just(mask),
            )
        })
        .prop_map(|(q, k, v, c, beta, mask)| Case {
            q,
            k,
            v,
            c,
            beta,
            mask,
        })
}

fn args(c: &Case) -> HypAttnArgs<'_> {
    HypAttnArgs::new(c.q.view(), c.k.view(), c.v.view(), c.c, c.beta, c.mask).expect("valid case")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn forward_matches_the_dense_oracle(c in case(7, 6)) {
        let got = forward::forward::<f64>(&args(&c), Dtype::F64);
        let (o, lse) = dense(&c.q, &c.k, &c.v, c.c, c.beta, c.mask);
        for (g, w) in got.o.iter().zip(o.iter()) {
            prop_assert!((g - w).abs() <= 1e-11 * (1.0 + w.abs()), "o {} vs {}", g, w);
        }
        for (g, w) in got.lse.iter().zip(&lse) {
            prop_assert!(g == w || (g - w).abs() <= 1e-11 * (1.0 + w.abs()), "lse {} vs {}", g, w);
        }
    }

    #[test]
    fn f32_forward_is_within_the_f32_tolerance(c in case(7, 6)) {
        let a = args(&c);
        let want = forward::forward::<f64>(&a, Dtype::F32);
        let got = forward::forward::<f32>(&a, Dtype::F32);
        let mse = got.o.iter().zip(want.o.iter()).map(|(g, w)| (g - w).powi(2)).sum::<f64>() / want.o.len() as f64;
        prop_assert!(mse < 1e-10, "mse {}", mse);
    }

    #[test]
    fn gradients_match_central_differences(c in case(4, 3), seed in 0u64..1000) {
        let a = args(&c);
        let d_o = Array4::from_shape_fn((c.q.dim().0, c.q.dim().1, c.q.dim().2, c.v.dim().3), |(b, h, i, e)| {
            (((b * 7 + h * 5 + i * 3 + e) as f64) * 0.7 + seed as f64).sin()
        });
        let g = backward::backward::<f64>(&a, d_o.view(), Dtype::F64);
        let loss = |q: ArrayView4<'_, f64>, k: ArrayView4<'_, f64>, v: ArrayView4<'_, f64>, cc: f64, beta: f64| {
            let a = HypAttnArgs::new(q, k, v, cc, beta, c.mask).expect("valid");
            let o = forward::forward::<f64>(&a, Dtype::F64).o;
            o.iter().zip(d_o.iter()).map(|(x, y)| x * y).sum::<f64>()
        };
        let h = 1e-6;
        let scale = |x: &Array4<f64>| x.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (name, base, grad) in [("q", &c.q, &g.dq), ("k", &c.k, &g.dk), ("v", &c.v, &g.dv)] {
            let sc = scale(grad);
            for idx in 0..base.len() {
                let bump = |delta: f64| {
                    let mut x = base.clone();
                    *x.iter_mut().nth(idx).expect("in range") += delta;
                    match name {
                        "q" => loss(x.view(), c.k.view(), c.v.view(), c.c, c.beta),
                        "k" => loss(c.q.view(), x.view(), c.v.view(), c.c, c.beta),
                        _ => loss(c.q.view(), c.k.view(), x.view(), c.c, c.beta),
                    }
                };
                let fd = (bump(h) - bump(-h)) / (2.0 * h);
                let an = *grad.iter().nth(idx).expect("in range");
                prop_assert!((an - fd).abs() <= 2e-6 * sc, "d{}[{}]: {} vs fd {}", name, idx, an, fd);
            }
        }
        let hc = 1e-6 * c.c;
        let fd_c = (loss(c.q.view(), c.k.view(), c.v.view(), c.c + hc, c.beta)
            - loss(c.q.view(), c.k.view(), c.v.view(), c.c - hc, c.beta)) / (2.0 * hc);
        prop_assert!((g.dc - fd_c).abs() <= 1e-5 * (1.0 + fd_c.abs()), "dc {} vs {}", g.dc, fd_c);
        let fd_b = (loss(c.q.view(), c.k.view(), c.v.view(), c.c, c.beta + h)
            - loss(c.q.view(), c.k.view(), c.v.view(), c.c, c.beta - h)) / (2.0 * h);
        prop_assert!((g.dbeta - fd_b).abs() <= 1e-5 * (1.0 + fd_b.abs()), "dbeta {} vs {}", g.dbeta, fd_b);
    }
}

fn randn(shape: (usize, usize, usize, usize), seed: u64, scale: f64) -> Array4<f64> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    Array4::from_shape_simple_fn(shape, || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 2.0 * scale
    })
}

#[test]
fn keys_outside_the_mask_do_not_touch_the_output() {
    for mask in [Mask::Causal, Mask::Window(5)] {
        let (q, mut k, mut v) = (
            randn((1, 2, 17, 6), 1, 1.0),
            randn((1, 2, 17, 6), 2, 1.0),
            randn((1, 2, 17, 3), 3, 1.0),
        );
        let a = HypAttnArgs::new(q.view(), k.view(), v.view(), 0.693, 1.0, mask).expect("valid");
        let before = forward::forward::<f32>(&a, Dtype::F32);
        // Perturb key/value 11: queries that cannot see it must be bit-identical.
        for e in 0..6 {
            k[[0, 1, 11, e]] += 0.5;
        }
        for e in 0..3 {
            v[[0, 1, 11, e]] -= 2.0;
        }
        let a = HypAttnArgs::new(q.view(), k.view(), v.view(), 0.693, 1.0, mask).expect("valid");
        let after = forward::forward::<f32>(&a, Dtype::F32);
        for i in 0..17 {
            let (lo, hi) = a.visible(0, i);
            let sees = (lo..hi).contains(&11);
            let same =
                (0..3).all(|e| before.o[[0, 1, i, e]].to_bits() == after.o[[0, 1, i, e]].to_bits());
            assert_eq!(same, !sees, "{mask:?} row {i}");
        }
    }
}

#[test]
fn head_dim_96_is_not_truncated() {
    let (q, mut k, v) = (
        randn((1, 1, 8, 96), 4, 0.3),
        randn((1, 1, 8, 96), 5, 0.3),
        randn((1, 1, 8, 96), 6, 1.0),
    );
    let a = HypAttnArgs::new(q.view(), k.view(), v.view(), 2.0, 1.3, Mask::None).expect("valid");
    let before = forward::forward::<f64>(&a, Dtype::F64);
    for j in 0..8 {
        k[[0, 0, j, 95]] += 0.2 * (j as f64 - 3.5);
    }
    let a = HypAttnArgs::new(q.view(), k.view(), v.view(), 2.0, 1.3, Mask::None).expect("valid");
    let after = forward::forward::<f64>(&a, Dtype::F64);
    let diff = before
        .o
        .iter()
        .zip(after.o.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(
        diff > 1e-4,
        "the last head dim must matter: max change {diff}"
    );
    assert_eq!(before.o.dim().3, 96, "Dv 96 written");
}

#[test]
fn rows_without_keys_are_zero_with_minus_infinite_lse() {
    let (q, k, v) = (
        randn((2, 1, 8, 4), 7, 1.0),
        randn((2, 1, 8, 4), 8, 1.0),
        randn((2, 1, 8, 4), 9, 1.0),
    );
    let a = HypAttnArgs::new(q.view(), k.view(), v.view(), 0.693, 1.0, Mask::Causal)
        .expect("valid")
        .with_lengths(vec![5, 0])
        .expect("valid lengths");
    let out = forward::forward::<f64>(&a, Dtype::F64);
    for (b, i) in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 7)] {
        assert_eq!(out.lse[[b, 0, i]], f64::NEG_INFINITY);
        assert!((0..4).all(|e| out.o[[b, 0, i, e]] == 0.0));
    }
    assert!(out.lse[[0, 0, 3]].is_finite(), "row 3 sees key 0");
    let g = backward::backward::<f64>(&a, v.view(), Dtype::F64);
    assert!(g
        .dq
        .iter()
        .chain(g.dk.iter())
        .chain(g.dv.iter())
        .all(|x| x.is_finite()));
    assert!((0..4).all(|e| g.dq[[1, 0, 3, e]] == 0.0 && g.dk[[0, 0, 6, e]] == 0.0));
}

#[test]
fn compat_forms_reproduce_the_originals_self_distance() {
    // flash: d(x, x) ≈ 1.73e-3/√c (design §2.4); fast_bench: √1e-8·√(1 + 2c|q|²).
    let q = randn((1, 1, 1, 8), 10, 0.3);
    let v = Array4::ones((1, 1, 1, 1));
    for (form, want) in [(Form::Flash, None), (Form::FastBench, None)] {
        let a = HypAttnArgs::new(q.view(), q.view(), v.view(), 0.693, 1.0, Mask::None)
            .expect("valid")
            .with_form(form);
        let slice = || {
            forward::rows(
                q.index_axis(Axis(0), 0).index_axis_move(Axis(0), 0),
                Dtype::F64,
            )
        };
        let prep = forward::Prepared::<f64>::new(form, 0.693, slice(), slice());
        let d = prep.dist(0, 0);
        let expected: f64 = want.unwrap_or(match form {
            Form::Flash => {
                // X clamps to 1 + 1e-6: ln(X + √(X² − 1 + 1e-6)) / s.
                let x = 1.0 + 1e-6_f64;
                (x + (x * x - 1.0 + 1e-6).sqrt()).ln() / 0.693_f64.sqrt()
            }
            _ => {
                let n2: f64 = q.iter().map(|e| e * e).sum();
                1e-4 * (1.0 + 0.693 * 2.0 * n2).sqrt()
            }
        });
        assert!(
            (d - expected).abs() < 1e-12 * expected.max(1.0),
            "{form:?}: {d} vs {expected}"
        );
        assert!(d > 1e-4, "{form:?} does not give d(x, x) = 0");
        let _ = a;
    }
}

#[test]
fn an_empty_dimension_is_named() {
    let (q0, k, v) = (
        Array4::<f64>::zeros((1, 2, 0, 4)),
        Array4::<f64>::zeros((1, 2, 3, 4)),
        Array4::<f64>::zeros((1, 2, 3, 5)),
    );
    let e = HypAttnArgs::new(q0.view(), k.view(), v.view(), 1.0, 1.0, Mask::None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "hyp_attn: N must be at least 1 (`q` has shape [1, 2, 0, 4])"
    );
}
