//! Dense building blocks: Linear, LayerNorm, softplus, and the HTT embedding and tied decoder
//! (design model.md §3.1–3.2, BENCH form: no clamps, no normalisation, no 1/√r).

use ndarray::{s, Array2, Array3, ArrayView2, ArrayView3, Axis, Zip};

use super::{Htt, Linear, Norm};
use crate::Elem;

/// x·Wᵀ + b over the last axis of a (B, N, in) array.
///
/// ```
/// use muse_reference::model::{linear, Linear};
/// let l = Linear { w: ndarray::array![[1.0, 2.0], [0.0, -1.0]], b: Some(ndarray::array![0.5, 0.0]), bf16: false };
/// let y = linear(&l, ndarray::Array3::from_elem((1, 1, 2), 1.0).view());
/// assert_eq!(y.into_raw_vec_and_offset().0, vec![3.5, -1.0]);
/// ```
pub fn linear<F: Elem>(l: &Linear<F>, x: ArrayView3<'_, F>) -> Array3<F> {
    let (b, n, i) = x.dim();
    let flat = x.to_shape((b * n, i)).expect("a (B, N, in) array flattens");
    let mut y = if l.bf16 {
        flat.mapv(bf16_round).dot(&l.w.mapv(bf16_round).t())
    } else {
        flat.dot(&l.w.t())
    };
    if let Some(bias) = &l.b {
        y += bias;
    }
    let o = l.w.nrows();
    // A GEMM with a unit dimension may come back column-major.
    let y = if y.is_standard_layout() {
        y
    } else {
        y.as_standard_layout().into_owned()
    };
    y.into_shape_with_order((b, n, o))
        .expect("(B·N, out) reshapes")
}

/// Rounds to the nearest bf16 (ties to even), as a GEMM's bf16 inputs are.
///
/// ```
/// assert_eq!(muse_reference::model::bf16_round(1.0f32 + 1.0 / 512.0), 1.0);
/// ```
pub fn bf16_round<F: Elem>(x: F) -> F {
    F::of(crate::bf16_from_f64(x.to_f64_exact()).to_f64())
}

/// LayerNorm over the last axis with eps 1e-5 (biased variance, as `nn.LayerNorm`).
pub fn layer_norm<F: Elem>(norm: &Norm<F>, x: ArrayView3<'_, F>) -> Array3<F> {
    let d = F::of(x.dim().2 as f64);
    let eps = F::of(1e-5);
    let mut y = x.to_owned();
    for mut row in y.lanes_mut(Axis(2)) {
        let mean = row.iter().fold(F::zero(), |a, &v| a + v) / d;
        let var = row
            .iter()
            .fold(F::zero(), |a, &v| a + (v - mean) * (v - mean))
            / d;
        let inv = F::one() / (var + eps).sqrt();
        Zip::from(&mut row)
            .and(&norm.weight)
            .and(&norm.bias)
            .for_each(|v, &g, &b| *v = (*v - mean) * inv * g + b);
    }
    y
}

/// softplus(x) = ln(1 + eˣ) (x for x > 20, as PyTorch).
///
/// ```
/// use muse_reference::model::softplus;
/// assert_eq!(softplus(0.0_f32), std::f32::consts::LN_2);
/// ```
pub fn softplus<F: Elem>(x: F) -> F {
    if x > F::of(20.0) {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// The HTT factorisation (v1, v2, d1, d2): v1 = ⌈√V⌉, v2 = ⌈V/v1⌉, d1 = ⌈√D⌉, d2 = ⌈D/d1⌉.
///
/// ```
/// assert_eq!(muse_reference::model::htt_factors(50257, 512), (225, 224, 23, 23));
/// ```
pub fn htt_factors(vocab: usize, d_model: usize) -> (usize, usize, usize, usize) {
    let ceil_sqrt = |x: usize| {
        let mut r = (x as f64).sqrt() as usize;
        while r * r < x {
            r += 1;
        }
        while r > 1 && (r - 1) * (r - 1) >= x {
            r -= 1;
        }
        r
    };
    let (v1, d1) = (ceil_sqrt(vocab), ceil_sqrt(d_model));
    (v1, vocab.div_ceil(v1), d1, d_model.div_ceil(d1))
}

/// cos θ_ρ·core1[i, ρ, a], the decoder's and embedding's phase-scaled first core.
fn phased_core1<F: Elem>(htt: &Htt<F>) -> Array3<F> {
    let mut c1 = htt.core1.clone();
    for (mut slab, &t) in c1.axis_iter_mut(Axis(1)).zip(&htt.phase) {
        slab.mapv_inplace(|v| v * t.cos());
    }
    c1
}

/// Token embeddings E[t, a·d2 + c] = Σ_ρ cos θ_ρ·core1[i1, ρ, a]·core2[i2, ρ, c], cropped to D,
/// with i1 = min(t / v2, v1 − 1) and i2 = t mod v2. `ids` must be < V (checked by the caller).
pub fn htt_embed<F: Elem>(htt: &Htt<F>, ids: ArrayView2<'_, usize>, d_model: usize) -> Array3<F> {
    let (v1, r, d1) = htt.core1.dim();
    let (v2, _, d2) = htt.core2.dim();
    let c1 = phased_core1(htt);
    let (b, n) = ids.dim();
    let mut out = Array3::zeros((b, n, d_model));
    Zip::from(out.lanes_mut(Axis(2)))
        .and(&ids)
        .for_each(|mut row, &t| {
            let (i1, i2) = ((t / v2).min(v1 - 1), t % v2);
            for a in 0..d1 {
                for c in 0..d2 {
                    let f = a * d2 + c;
                    if f >= d_model {
                        break;
                    }
                    row[f] = (0..r).fold(F::zero(), |acc, rho| {
                        acc + c1[[i1, rho, a]] * htt.core2[[i2, rho, c]]
                    });
                }
            }
        });
    out
}

/// The tied decoder: logits[b, n, i·v2 + u] = Σ_{a,c,ρ} h[a·d2 + c]·cos θ_ρ·core1[i, ρ, a]·
/// core2[u, ρ, c] (h zero-padded to d1·d2), cropped to `vocab`. Materialises the (V, d1·d2) table
/// once (batch-independent), then one GEMM.
pub fn htt_decode<F: Elem>(htt: &Htt<F>, h: ArrayView3<'_, F>, vocab: usize) -> Array3<F> {
    let table = htt_table(htt, vocab);
    let (b, n, d) = h.dim();
    let flat = h.to_shape((b * n, d)).expect("(B, N, D) flattens");
    let table = table.slice(s![.., ..d]);
    let logits = if htt.bf16 {
        flat.mapv(bf16_round).dot(&table.mapv(bf16_round).t())
    } else {
        flat.dot(&table.t())
    };
    logits
        .into_shape_with_order((b, n, vocab))
        .expect("(B·N, V) reshapes")
}

/// E_full[t, a·d2 + c] for t < vocab: every token's embedding before the crop to D.
pub fn htt_table<F: Elem>(htt: &Htt<F>, vocab: usize) -> Array2<F> {
    let (v1, r, d1) = htt.core1.dim();
    let (v2, _, d2) = htt.core2.dim();
    let c1 = phased_core1(htt);
    let mut table = Array2::zeros((vocab, d1 * d2));
    for (t, mut row) in table.outer_iter_mut().enumerate() {
        let (i1, i2) = ((t / v2).min(v1 - 1), t % v2);
        for a in 0..d1 {
            for c in 0..d2 {
                row[a * d2 + c] = (0..r).fold(F::zero(), |acc, rho| {
                    acc + c1[[i1, rho, a]] * htt.core2[[i2, rho, c]]
                });
            }
        }
    }
    table
}
