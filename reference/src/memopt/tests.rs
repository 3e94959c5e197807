//! Central differences in f64 against the memory-optimised model's backward.

use ndarray::{Array2, Array3};

use super::*;
use crate::testing::{check_gradient, uniform};

#[test]
fn the_backward_matches_central_differences() {
    let mut w = MemOptWeights::zeros(50, 16, 2, 4, 8, 8, 8);
    let mut r = uniform(11);
    w.for_each_param(&mut |name, v| {
        let u = r();
        *v = if name.contains("ln") || name.starts_with("final_norm.weight") {
            1.0 + 0.2 * u
        } else {
            0.5 * u
        };
    });
    let ids = Array2::from_shape_fn((2, 6), |(b, n)| (b * 17 + n * 7) % 50);
    let mut r = uniform(12);
    let dl = Array3::from_shape_fn((2, 6, 50), |_| r());
    for (scan, conv) in [
        (Scan::Cumsum, Conv::Causal),
        (Scan::Pseudo { bs: 4 }, Conv::Centered),
    ] {
        let loss = |wp: &MemOptWeights| (&forward(wp, ids.view(), scan, conv) * &dl).sum();
        let g = backward(&w, ids.view(), scan, conv, dl.view());
        let failures = check_gradient(&w, &g, MemOptWeights::for_each_param, loss, 300);
        assert!(failures.is_empty(), "{scan:?} {conv:?}: {failures:#?}");
    }
}

#[test]
fn the_study_model_has_the_designs_parameter_count() {
    // V 10000, D 512, L 6, r 16, R 32, f 64, o 128 (design §4: 4,150,752).
    let mut w = MemOptWeights::zeros(10_000, 512, 6, 16, 32, 64, 128);
    let mut n = 0usize;
    w.for_each_param(&mut |_, _| n += 1);
    assert_eq!(n, 4_150_752);
}
