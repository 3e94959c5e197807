//! Central finite differences in f64 (design §9: V 50, D 16, H 2, W 4, N 8, L 2, h = 1e-6)
//! against the analytic backward, entry by entry on a sample of every tensor.

use std::collections::BTreeMap;

use ndarray::{Array2, Array3};

use super::*;
use crate::model::{forward, Conv, ModelDims, ModelWeights, Numerics, Scan};
use crate::testing::{active_weights, uniform};

const DIMS: ModelDims = ModelDims {
    vocab: 50,
    d_model: 16,
    layers: 2,
    heads: 2,
    htt_rank: 4,
    n_seq: 8,
    window: 4,
    ssm_rank: 8,
    ssm_hidden: 4,
};

fn weights(seed: u64) -> ModelWeights<f64> {
    active_weights(&DIMS, seed)
}

fn ids(seed: u64, b: usize) -> Array2<usize> {
    let mut rng = uniform(seed);
    Array2::from_shape_fn((b, DIMS.n_seq), |_| ((rng() + 1.0) * 25.0) as usize % 50)
}

/// L = Σ R∘logits for a fixed R, so ∂L/∂logits = R.
fn weighted_logits(
    w: &ModelWeights<f64>,
    num: &Numerics,
    ids: &Array2<usize>,
    r: &Array3<f64>,
) -> f64 {
    let logits = forward(&DIMS, w, num, ids.view()).expect("forward");
    (&logits * r).sum()
}

/// Every tensor's sampled entries: (name, index within the traversal, analytic, numeric).
fn compare(
    w: &ModelWeights<f64>,
    g: &ModelWeights<f64>,
    loss: &dyn Fn(&ModelWeights<f64>) -> f64,
    per_tensor: usize,
) -> Vec<String> {
    let mut grads: Vec<(String, f64)> = Vec::new();
    for_each_param(&mut g.clone(), &mut |n, v| grads.push((n.to_string(), *v)));
    let mut scale: BTreeMap<String, f64> = BTreeMap::new();
    let mut positions: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, (n, v)) in grads.iter().enumerate() {
        let s = scale.entry(n.clone()).or_insert(0.0);
        *s = s.max(v.abs());
        positions.entry(n.clone()).or_default().push(i);
    }
    let h = 1e-6;
    let mut failures = Vec::new();
    for (name, pos) in &positions {
        let step = (pos.len() / per_tensor).max(1);
        for &i in pos.iter().step_by(step).take(per_tensor) {
            let at = |delta: f64| {
                let mut wp = w.clone();
                let mut k = 0;
                for_each_param(&mut wp, &mut |_, v| {
                    if k == i {
                        *v += delta;
                    }
                    k += 1;
                });
                loss(&wp)
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            let an = grads[i].1;
            let tol = 1e-6 * (an.abs() + scale[name]) + 1e-9;
            if (fd - an).abs() > tol || !an.is_finite() {
                failures.push(format!(
                    "{name}[{i}]: analytic {an:.10e}, central difference {fd:.10e}"
                ));
            }
        }
    }
    failures
}

#[test]
fn the_backward_matches_central_differences_on_the_logits() {
    let w = weights(1);
    let ids = ids(2, 2);
    let mut rng = uniform(3);
    let r = Array3::from_shape_fn((2, DIMS.n_seq, DIMS.vocab), |_| rng());
    for num in [
        Numerics::exact(),
        Numerics {
            scan: Scan::Pseudo { bs: 4 },
            conv: Conv::Centered,
            ..Numerics::exact()
        },
    ] {
        let g = backward(&DIMS, &w, &num, ids.view(), r.view()).expect("backward");
        let failures = compare(&w, &g, &|wp| weighted_logits(wp, &num, &ids, &r), 4);
        assert!(failures.is_empty(), "{num:?}: {failures:#?}");
    }
}

#[test]
fn the_cross_entropy_gradient_matches_central_differences() {
    let w = weights(4);
    let ids = ids(5, 1);
    let targets = ids.mapv(|t| (t * 7 + 3) % 50);
    let num = Numerics::exact();
    let (loss, g) = loss_and_grad(&DIMS, &w, &num, ids.view(), targets.view()).expect("grad");
    assert!(loss.is_finite() && loss > 0.0);
    let ce = |wp: &ModelWeights<f64>| {
        let logits = forward(&DIMS, wp, &num, ids.view()).expect("forward");
        cross_entropy(logits.view(), targets.view()).expect("ce").0
    };
    let failures = compare(&w, &g, &ce, 3);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn cross_entropy_is_the_mean_negative_log_likelihood() {
    // Two rows, V = 3: logits [0, ln 2, 0] → p = [1/4, 1/2, 1/4].
    let l2 = 2f64.ln();
    let logits = Array3::from_shape_vec((1, 2, 3), vec![0.0, l2, 0.0, 0.0, l2, 0.0]).unwrap();
    let targets = Array2::from_shape_vec((1, 2), vec![1, 0]).unwrap();
    let (loss, g) = cross_entropy(logits.view(), targets.view()).unwrap();
    assert!((loss - 0.5 * (2f64.ln() + 4f64.ln())).abs() < 1e-15);
    let want = [0.125, -0.25, 0.125, -0.375, 0.25, 0.125];
    for (a, b) in g.iter().zip(want) {
        assert!((a - b).abs() < 1e-15, "{a} vs {b}");
    }
    assert!(cross_entropy(logits.view(), Array2::from_elem((1, 2), 3).view()).is_err());
}

#[test]
fn the_potential_clamp_passes_no_gradient_where_it_is_active() {
    // v = v_proj(x) around 3: about half the positions clamped, the rest not.
    let mut w = weights(8);
    for b in &mut w.blocks {
        b.v_proj.b.as_mut().expect("bias")[0] = 3.0;
        b.v_proj.w.mapv_inplace(|v| 3.0 * v);
    }
    let ids = ids(9, 1);
    let mut rng = uniform(10);
    let r = Array3::from_shape_fn((1, DIMS.n_seq, DIMS.vocab), |_| rng());
    let num = Numerics::exact();
    let g = backward(&DIMS, &w, &num, ids.view(), r.view()).expect("backward");
    let failures = compare(&w, &g, &|wp| weighted_logits(wp, &num, &ids, &r), 6);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_compat_attention_has_no_backward() {
    let w = weights(6);
    let ids = ids(7, 1);
    let r = Array3::zeros((1, DIMS.n_seq, DIMS.vocab));
    assert!(backward(&DIMS, &w, &Numerics::bench_cpu(), ids.view(), r.view()).is_err());
}
