//! The Phase 8 model is not causal (README, "Phase 8 inference kernels"): BK-Core's
//! G_ii = [(H − zI)⁻¹]_ii couples every position of the sequence, so the logits at position i
//! move when a later token changes, by less the farther away it is. This is why decoding
//! recomputes the context and a KV cache acts only through its codec.

mod common;

use muse_model::Profile;

#[test]
fn logits_depend_on_later_tokens_through_bk_core() {
    let m = common::oracle_model();
    let (n, v) = (m.config().n_seq.min(12), m.config().vocab_size);
    let ids = ndarray::Array2::from_shape_fn((1, n), |(_, i)| (i * 7 + 3) % v);
    let base = m
        .forward_cpu::<f64>(ids.view(), Profile::Exact)
        .expect("forward");
    let mut later = ids.clone();
    later[[0, n - 1]] = (later[[0, n - 1]] + 11) % v;
    let moved = m
        .forward_cpu::<f64>(later.view(), Profile::Exact)
        .expect("forward");
    let delta = |i: usize| {
        (0..v)
            .map(|t| (moved[[0, i, t]] - base[[0, i, t]]).abs())
            .fold(0.0f64, f64::max)
    };
    // the previous position sees the change clearly, the first one barely: the coupling decays
    assert!(
        delta(n - 2) > 1e-4,
        "position {} moved by {:e}",
        n - 2,
        delta(n - 2)
    );
    assert!(
        delta(0) > 0.0 && delta(0) < 1e-3 * delta(n - 2),
        "position 0 moved by {:e}",
        delta(0)
    );
}
