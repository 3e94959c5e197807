//! Central differences in f64 against the memory-optimised model's backward.

use ndarray::{Array2, Array3};

use super::*;

fn rng(seed: u64) -> impl FnMut() -> f64 {
    let mut s = seed;
    move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

#[test]
fn the_backward_matches_central_differences() {
    let mut w = MemOptWeights::zeros(50, 16, 2, 4, 8, 8, 8);
    let mut r = rng(11);
    w.for_each_param(&mut |name, v| {
        let u = r();
        *v = if name.contains("ln") || name.starts_with("final_norm.weight") {
            1.0 + 0.2 * u
        } else {
            0.5 * u
        };
    });
    let ids = Array2::from_shape_fn((2, 6), |(b, n)| (b * 17 + n * 7) % 50);
    let mut r = rng(12);
    let dl = Array3::from_shape_fn((2, 6, 50), |_| r());
    for (scan, conv) in [
        (Scan::Cumsum, Conv::Causal),
        (Scan::Pseudo { bs: 4 }, Conv::Centered),
    ] {
        let loss = |wp: &MemOptWeights| (&forward(wp, ids.view(), scan, conv) * &dl).sum();
        let g = backward(&w, ids.view(), scan, conv, dl.view());
        let mut grads = Vec::new();
        g.clone()
            .for_each_param(&mut |n, v| grads.push((n.to_string(), *v)));
        let scale = grads.iter().fold(0f64, |a, (_, v)| a.max(v.abs()));
        let mut failures = Vec::new();
        for i in (0..grads.len()).step_by(grads.len() / 300 + 1) {
            let at = |delta: f64| {
                let mut wp = w.clone();
                let mut k = 0;
                wp.for_each_param(&mut |_, v| {
                    if k == i {
                        *v += delta;
                    }
                    k += 1;
                });
                loss(&wp)
            };
            let fd = (at(1e-6) - at(-1e-6)) / 2e-6;
            let (name, an) = &grads[i];
            if (fd - an).abs() > 1e-6 * (an.abs() + 1e-3 * scale) + 1e-9 {
                failures.push(format!(
                    "{name}[{i}]: analytic {an:.10e}, central {fd:.10e}"
                ));
            }
        }
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
