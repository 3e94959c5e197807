//! Central differences in f64 against the baseline transformer's backward.

use ndarray::{Array2, Array3};

use super::*;
use crate::testing::{check_gradient, uniform};

#[test]
fn the_backward_matches_central_differences() {
    let mut w = BaselineWeights::zeros(50, 16, 2, 2, 32);
    let mut r = uniform(21);
    w.for_each_param(&mut |name, v| {
        let u = r();
        *v = if name.contains("norm") && name.ends_with("weight") {
            1.0 + 0.2 * u
        } else {
            0.5 * u
        };
    });
    let ids = Array2::from_shape_fn((2, 5), |(b, n)| (b * 13 + n * 9) % 50);
    let mut r = uniform(22);
    let dl = Array3::from_shape_fn((2, 5, 50), |_| r());
    let loss = |wp: &BaselineWeights| (&forward(wp, ids.view()) * &dl).sum();
    let g = backward(&w, ids.view(), dl.view());
    let failures = check_gradient(&w, &g, BaselineWeights::for_each_param, loss, 300);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn the_study_baseline_has_the_designs_parameter_count() {
    // V 10000, D 512, L 6, 8 heads, FFN 2048 (design §6.3: 29,164,304).
    let mut w = BaselineWeights::zeros(10_000, 512, 6, 8, 2048);
    let mut n = 0usize;
    w.for_each_param(&mut |_, _| n += 1);
    assert_eq!(n, 29_164_304);
}
