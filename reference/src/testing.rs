//! What the gradient tests share: a seeded uniform generator, random model weights and a
//! central-difference check.

/// splitmix64 → uniforms in [−1, 1), deterministic for `seed`.
pub fn uniform(seed: u64) -> impl FnMut() -> f64 {
    let mut s = seed;
    move || {
        let z = crate::splitmix64(s);
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// Random weights at the scales that keep every path active: v = v_proj(x) well inside ±3,
/// LayerNorm gains near 1, logits of order 1 (the model's gradient and quantisation tests).
pub fn active_weights(
    dims: &crate::model::ModelDims,
    seed: u64,
) -> crate::model::ModelWeights<f64> {
    let mut w = crate::model::ModelWeights::<f64>::zeros(dims);
    let mut rng = uniform(seed);
    crate::model::grad::params::for_each_param(&mut w, &mut |name, v| {
        let u = rng();
        *v = if name.ends_with("norm.weight") {
            1.0 + 0.2 * u
        } else if name.contains("v_proj") {
            0.1 * u
        } else if name.starts_with("htt.core") {
            0.7 * u
        } else if name.ends_with("epsilon") || name.ends_with("gate_sensitivity") {
            0.5 + 0.3 * u
        } else if name.ends_with("log_c") || name.ends_with("beta") {
            0.3 * u
        } else {
            0.4 * u
        };
    });
    w
}

/// Central differences (h = 1e-6) of `loss_at(i, δ)` (the loss with scalar i moved by δ) against
/// `analytic[i]` = (tensor name, ∂L/∂θ_i), on about `samples` scalars spread over all of them;
/// the bound is 1e-6·(|analytic| + 1e-3·max|analytic|). Returns one line per failure.
pub fn central_difference_failures(
    analytic: &[(String, f64)],
    samples: usize,
    loss_at: impl Fn(usize, f64) -> f64,
) -> Vec<String> {
    let scale = analytic.iter().fold(0f64, |a, (_, v)| a.max(v.abs()));
    let h = 1e-6;
    (0..analytic.len())
        .step_by(analytic.len() / samples.max(1) + 1)
        .filter_map(|i| {
            let fd = (loss_at(i, h) - loss_at(i, -h)) / (2.0 * h);
            let (name, an) = &analytic[i];
            let err = (fd - an).abs();
            let bad = err.is_nan() || err > 1e-6 * (an.abs() + 1e-3 * scale) + 1e-9;
            bad.then(|| format!("{name}[{i}]: analytic {an:.10e}, central {fd:.10e}"))
        })
        .collect()
}

/// A parameter visitor, e.g. `MemOptWeights::for_each_param`.
pub type Visit<W> = fn(&mut W, &mut dyn FnMut(&str, &mut f64));

/// [`central_difference_failures`] of `loss` at `w` against the gradient `g` (same type), both
/// walked by `visit`.
pub fn check_gradient<W: Clone>(
    w: &W,
    g: &W,
    visit: Visit<W>,
    loss: impl Fn(&W) -> f64,
    samples: usize,
) -> Vec<String> {
    let mut analytic = Vec::new();
    visit(&mut g.clone(), &mut |n, v| {
        analytic.push((n.to_string(), *v))
    });
    central_difference_failures(&analytic, samples, |i, delta| {
        let mut wp = w.clone();
        let mut k = 0;
        visit(&mut wp, &mut |_, v| {
            if k == i {
                *v += delta;
            }
            k += 1;
        });
        loss(&wp)
    })
}
