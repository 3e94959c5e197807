//! The VRAM study's two models on the GPU (`muse_cuda::vram`) against the CPU reference's exact
//! backward (float64; the baseline's is pinned to PyTorch autograd by `vram_grad.rs`, the
//! memory-optimised model's to central differences in its unit tests): the gradient of L = Σ
//! logits (the study's loss) of every tensor, on tiny configs whose sequences are longer than the
//! device's row chunks (FFN_ROWS, HEAD_ROWS), so every chunk boundary is crossed. Run on the GPU
//! machine with `--features cuda`.
//!
//! Bounds: f32 compute against f64: max|Δ| ≤ RTOL·max|g| + ATOL·G per tensor (G the largest |g| of
//! the whole gradient), RTOL 1e-4, ATOL 1e-6; the loss within 1e-5 of Σ|logits|. With 16-bit kept
//! activations the forward continues from rounded values: fp16 (11-bit significand) within 1e-2,
//! bf16 (8-bit) within 6e-2 of each tensor's largest entry — loose, but a wrong conversion is O(1).
#![cfg(feature = "cuda")]

use std::collections::BTreeMap;

use muse_cuda::gemm::GemmMath;
use muse_cuda::vram::baseline::BaselineGpu;
use muse_cuda::vram::memopt::MemOptGpu;
use muse_cuda::vram::study::{FFN_ROWS, HEAD_ROWS};
use muse_cuda::vram::Store;
use muse_reference::baseline::{self, BaselineWeights};
use muse_reference::memopt::{self, MemOptWeights};
use muse_reference::model::{Conv, Scan};
use ndarray::{Array2, Array3};

fn gpu() -> &'static muse_cuda::Gpu {
    muse_cuda::Cuda::new()
        .and_then(|c| c.gpu())
        .expect("a GPU (these tests run on the GPU machine)")
}

/// Uniform in [-1, 1) from a seed (splitmix64).
fn uniform(seed: u64) -> impl FnMut() -> f64 {
    let mut s = seed;
    move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// Per-tensor (max|Δ|, max|want|) of two parameter walks.
fn compare(got: Vec<(String, f64)>, want: Vec<f64>) -> BTreeMap<String, (f64, f64)> {
    assert_eq!(got.len(), want.len(), "one gradient per parameter");
    let mut worst: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for ((n, a), b) in got.iter().zip(&want) {
        let e = worst.entry(n.clone()).or_insert((0.0, 0.0));
        e.0 = e.0.max((a - b).abs());
        if a.is_nan() {
            e.0 = f64::NAN;
        }
        e.1 = e.1.max(b.abs());
    }
    worst
}

fn check(worst: &BTreeMap<String, (f64, f64)>, rtol: f64, atol: f64, what: &str) {
    let big = worst.values().fold(0f64, |m, (_, s)| m.max(*s));
    assert!(big > 0.0, "{what}: an all-zero gradient proves nothing");
    let bad: Vec<String> = worst
        .iter()
        .inspect(|(n, (d, s))| eprintln!("{what} {n}: {:.2e} of {s:.2e}", d / s.max(1e-300)))
        .filter(|(_, (d, s))| d.is_nan() || *d > rtol * s + atol * big)
        .map(|(n, (d, s))| format!("{n}: |Δ| {d:.3e} against max|g| {s:.3e}"))
        .collect();
    assert!(bad.is_empty(), "{what}: {bad:#?}");
}

/// Every (name, value) of a parameter walk, in its order.
fn walk(each: muse_cuda::vram::Walk<'_>) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    each(&mut |n, x| out.push((n.to_string(), *x)));
    out
}

/// The device's loss within 1e-5 of Σ|logits| (f32 kept activations) or `rtol` (16-bit), then
/// every gradient tensor against the reference's ([`check`]).
fn judge(
    what: &str,
    (store, rtol): (Store, f64),
    (loss, logits): (f64, &Array3<f64>),
    got: Vec<(String, f64)>,
    want: Vec<(String, f64)>,
) {
    let (want_loss, scale) = (logits.sum(), logits.mapv(f64::abs).sum());
    let tol = if store == Store::F32 { 1e-5 } else { rtol };
    let lrel = (loss - want_loss).abs() / scale;
    assert!(
        lrel <= tol,
        "{what}: loss {loss} against {want_loss} ({lrel:.2e} of Σ|logits|)"
    );
    let want = want.into_iter().map(|(_, x)| x).collect();
    check(&compare(got, want), rtol, 1e-6, what);
}

fn memopt_weights(seed: u64) -> MemOptWeights {
    let mut w = MemOptWeights::zeros(50, 16, 2, 4, 8, 8, 8);
    let mut r = uniform(seed);
    w.for_each_param(&mut |name, v| {
        let u = r();
        *v = if name.contains("ln") || name.starts_with("final_norm.weight") {
            1.0 + 0.2 * u
        } else {
            0.5 * u
        };
    });
    w
}

fn memopt_case(w: &MemOptWeights, ids: &Array2<usize>, conv: Conv, store: Store, rtol: f64) {
    let m = MemOptGpu::new(gpu(), w, conv, GemmMath::Fp32).expect("upload");
    let loss = m.step(ids.view(), store).expect("step");
    let (b, n) = ids.dim();
    let ones = Array3::<f64>::ones((b, n, 50));
    let logits = memopt::forward(w, ids.view(), Scan::Cumsum, conv);
    let mut want = memopt::backward(w, ids.view(), Scan::Cumsum, conv, ones.view());
    let mut got = m.grads(w).expect("grads");
    let what = format!("memopt {conv:?} {store:?} B{b} N{n}");
    judge(
        &what,
        (store, rtol),
        (loss, &logits),
        walk(&mut |f| got.for_each_param(f)),
        walk(&mut |f| want.for_each_param(f)),
    );
}

#[test]
fn the_memory_optimised_model_matches_the_reference_gradient() {
    let w = memopt_weights(21);
    // N > FFN_ROWS and B·N > HEAD_ROWS: every chunk loop runs more than once, with a tail.
    let n = FFN_ROWS + 22;
    assert!(2 * n > 2 * HEAD_ROWS);
    let ids = Array2::from_shape_fn((2, n), |(b, t)| (b * 17 + t * 7) % 50);
    for conv in [Conv::Causal, Conv::Centered] {
        memopt_case(&w, &ids, conv, Store::F32, 1e-4);
    }
}

#[test]
fn absent_tokens_leave_their_htt_rows_without_gradient() {
    // ids < 9 use only the first two of the HTT's 8 row groups (v2 = 7 at V 50): the device
    // forms the embedding's gradient for those groups only; the reference sums over all of them.
    let w = memopt_weights(22);
    let ids = Array2::from_shape_fn((2, 19), |(b, t)| (b * 5 + t * 3) % 9);
    memopt_case(&w, &ids, Conv::Causal, Store::F32, 1e-4);
}

#[test]
fn sixteen_bit_block_inputs_stay_near_the_exact_gradient() {
    let w = memopt_weights(23);
    let ids = Array2::from_shape_fn((2, 40), |(b, t)| (b * 11 + t * 13) % 50);
    memopt_case(&w, &ids, Conv::Causal, Store::Fp16, 1e-2);
    memopt_case(&w, &ids, Conv::Causal, Store::Bf16, 6e-2);
}

fn baseline_weights(seed: u64) -> BaselineWeights {
    let mut w = BaselineWeights::zeros(50, 16, 2, 2, 32);
    let mut r = uniform(seed);
    w.for_each_param(&mut |name, v| {
        let u = r();
        *v = if name.contains("norm") && name.ends_with("weight") {
            1.0 + 0.2 * u
        } else {
            0.5 * u
        };
    });
    w
}

fn baseline_case(w: &BaselineWeights, ids: &Array2<usize>, store: Store, rtol: f64) {
    let m = BaselineGpu::new(gpu(), w, GemmMath::Fp32).expect("upload");
    let loss = m.step(ids.view(), store).expect("step");
    let (b, n) = ids.dim();
    let ones = Array3::<f64>::ones((b, n, 50));
    let logits = baseline::forward(w, ids.view());
    let mut want = baseline::backward(w, ids.view(), ones.view());
    let mut got = m.grads(w).expect("grads");
    let what = format!("baseline {store:?} B{b} N{n}");
    judge(
        &what,
        (store, rtol),
        (loss, &logits),
        walk(&mut |f| got.for_each_param(f)),
        walk(&mut |f| want.for_each_param(f)),
    );
}

#[test]
fn the_baseline_matches_the_reference_gradient() {
    let w = baseline_weights(31);
    let ids = Array2::from_shape_fn((2, HEAD_ROWS + 9), |(b, t)| (b * 19 + t * 3) % 50);
    baseline_case(&w, &ids, Store::F32, 1e-4);
    baseline_case(&w, &ids, Store::Fp16, 1e-2);
}

#[test]
fn ids_outside_the_vocabulary_are_refused_by_name() {
    let w = memopt_weights(24);
    let m = MemOptGpu::new(gpu(), &w, Conv::Causal, GemmMath::Fp32).expect("upload");
    let e = m
        .step(Array2::from_elem((1, 4), 50usize).view(), Store::F32)
        .unwrap_err();
    assert!(e.to_string().contains("ids"), "{e}");
    let b = BaselineGpu::new(gpu(), &baseline_weights(32), GemmMath::Fp32).expect("upload");
    let e = b
        .step(Array2::from_elem((0, 4), 1usize).view(), Store::F32)
        .unwrap_err();
    assert!(e.to_string().contains("ids"), "{e}");
}
