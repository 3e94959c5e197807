//! The local path of the hybrid attention (design model.md §3.5–3.6): heads of width D/H attend
//! causally inside non-overlapping windows of W positions, with no context across windows.
//!
//! The exact path runs [`crate::hyp_attn`] with `Mask::Window(W)` (the verified kernel reference);
//! the two compat paths are written out per window, in the original's order of operations. The
//! exact path takes the inference quantisations of [`Quant`] ([`window_attention_with`]).

use ndarray::{s, Array2, Array3, Array4, ArrayView1, ArrayView3, Axis};

use super::{linear, softplus, w4a8_linear, AttnPath, Linear, LocalAttn, Quant};
use crate::hyp_attn::{HypAttn, HypAttnArgs, Mask};
use crate::{hyp_int8, Cpu, Dtype, Elem, Error, Result};

/// Rounds to TF32 as the tensor cores read an fp32 operand: the low 13 mantissa bits dropped.
fn tf32<F: Elem>(x: F) -> F {
    let bits = (x.to_f64_exact() as f32).to_bits() & !0x1FFF;
    F::of(f64::from(f32::from_bits(bits)))
}

fn norm<F: Elem>(x: ArrayView1<'_, F>) -> F {
    x.iter().fold(F::zero(), |a, &v| a + v * v).sqrt()
}

/// The original's logmap0 (design §3.6 step 3): (1/√c)·atanh(√c·min(‖y‖, 1/√c − 1e-5))·y/‖y‖,
/// with ‖y‖ ≥ 1e-5, in its order of operations (the clamp makes the result depend on the last
/// bit of √c·(1/√c − 1e-5)).
fn log0_orig<F: Elem>(y: &mut [F], c: F) {
    let (eps, sc) = (F::of(1e-5), c.sqrt());
    let yn = y.iter().fold(F::zero(), |a, &v| a + v * v).sqrt().max(eps);
    let arg = sc * yn.min(F::one() / sc - eps);
    let f = F::one() / sc * arg.atanh();
    y.iter_mut().for_each(|v| *v = f * (*v / yn));
}

/// The original's expmap0: (1/√c)·tanh(√c‖v‖)·v/‖v‖ with ‖v‖ ≥ 1e-5.
fn exp0_orig<F: Elem>(v: ArrayView1<'_, F>, c: F) -> Vec<F> {
    let sc = c.sqrt();
    let r = norm(v).max(F::of(1e-5));
    let f = F::one() / sc * (sc * r).tanh();
    v.iter().map(|&e| f * (e / r)).collect()
}

/// One window's compat attention for one head: rows `q` (W', dh), `k`, `v`; returns (W', dh).
fn compat_window<F: Elem>(
    q: ArrayView3<'_, F>,
    k: ArrayView3<'_, F>,
    v: ArrayView3<'_, F>,
    (c, beta, bias): (F, F, F),
    path: AttnPath,
) -> Array3<F> {
    // q, k, v: (1, W', dh) views of one head.
    let (q, k, v) = (
        q.index_axis(Axis(0), 0),
        k.index_axis(Axis(0), 0),
        v.index_axis(Axis(0), 0),
    );
    let (w, dh) = q.dim();
    let two = F::of(2.0);
    let (xq, xk): (Array2<F>, Array2<F>) = match path {
        AttnPath::TorchBall => {
            let map = |m: ndarray::ArrayView2<'_, F>| {
                let flat = m.outer_iter().flat_map(|r| exp0_orig(r, c)).collect();
                Array2::from_shape_vec(m.dim(), flat).expect("rows of dh")
            };
            (map(q), map(k))
        }
        _ => (q.to_owned(), k.to_owned()),
    };
    let tf = matches!(path, AttnPath::FastBench { tf32: true });
    let round = |x: F| if tf { tf32(x) } else { x };
    let nq: Vec<F> = xq.outer_iter().map(|r| r.dot(&r)).collect();
    let nk: Vec<F> = xk.outer_iter().map(|r| r.dot(&r)).collect();
    let mut out = Array3::zeros((1, w, dh));
    for i in 0..w {
        let scores: Vec<F> = (0..=i)
            .map(|j| {
                let dot = (0..dh).fold(F::zero(), |a, e| a + round(xq[[i, e]]) * round(xk[[j, e]]));
                let diff2 = nq[i] - two * dot + nk[j];
                match path {
                    AttnPath::TorchBall => {
                        let one = F::one();
                        let den = ((one - c * nq[i]) * (one - c * nk[j])).max(F::of(1e-5));
                        let x = (one + two * c * diff2 / den).max(F::of(1.0 + 1e-5));
                        -beta * (F::one() / c.sqrt() * x.acosh()) - bias
                    }
                    _ => {
                        let d = (diff2.max(F::zero()) + F::of(1e-8)).sqrt()
                            * (F::one() + c * (nq[i] + nk[j])).sqrt();
                        -beta * d
                    }
                }
            })
            .collect();
        let m = scores.iter().fold(F::neg_infinity(), |a, &s| a.max(s));
        let p: Vec<F> = scores.iter().map(|&s| (s - m).exp()).collect();
        let l = p.iter().fold(F::zero(), |a, &x| a + x);
        let mut o: Vec<F> = (0..dh)
            .map(|e| (0..=i).fold(F::zero(), |a, j| a + round(p[j]) * round(v[[j, e]])) / l)
            .collect();
        if path == AttnPath::TorchBall {
            o = exp0_orig(ArrayView1::from(&o), c);
        }
        log0_orig(&mut o, c);
        out.slice_mut(s![0, i, ..]).assign(&ArrayView1::from(&o));
    }
    out
}

/// Splits (B, N, D) into heads (B, H, N, D/H).
fn heads<F: Elem>(x: &Array3<F>, h: usize) -> Array4<F> {
    let (b, n, d) = x.dim();
    x.to_shape((b, n, h, d / h))
        .expect("D = H·dh")
        .permuted_axes([0, 2, 1, 3])
        .to_owned()
}

/// The windowed local attention on x (B, N, D): (B, N, D). N need not be a multiple of W (the
/// last window is shorter, as the original's zero padding leaves it).
pub fn window_attention<F: Elem>(
    w: &LocalAttn<F>,
    x: ArrayView3<'_, F>,
    n_heads: usize,
    window: usize,
    path: AttnPath,
) -> Result<Array3<F>> {
    window_attention_with(w, x, n_heads, window, path, Quant::NONE)
}

/// [`window_attention`] with the inference quantisations of `quant` (exact paths only): the
/// Q/K/V/O projections by [`w4a8_linear`] when `quant.w4a8` is set (instead of the float or bf16
/// GEMM), and the scores from INT8 codes of q and k ([`hyp_int8::attention`]) when
/// `quant.int8_logits` is. With [`Quant::NONE`] it is [`window_attention`], bit for bit.
///
/// ```
/// use muse_reference::model::{window_attention, window_attention_with};
/// use muse_reference::model::{AttnPath, LocalAttn, Quant};
/// let m = ndarray::Array2::from_shape_fn((4, 4), |(i, j)| 0.3 * ((i * 4 + j) % 3) as f64 - 0.2);
/// let w = LocalAttn { wq: m.clone(), wk: m.t().to_owned(), wv: m.clone(), wo: m,
///                     log_c: 0.0, beta: 0.5, bias: 0.0, bf16: false };
/// let x = ndarray::Array3::from_shape_fn((1, 6, 4), |(_, t, e)| 0.2 * (t + e) as f64 - 0.5);
/// let exact = window_attention(&w, x.view(), 2, 4, AttnPath::Exact)?;
/// let quant: Quant = "w4a8+int8-logits".parse().unwrap();
/// let q = window_attention_with(&w, x.view(), 2, 4, AttnPath::Exact, quant)?;
/// assert!((&q - &exact).iter().all(|e| e.abs() < 0.1));
/// assert!(window_attention_with(&w, x.view(), 2, 4, AttnPath::TorchBall, quant).is_err());
/// # Ok::<(), muse_reference::Error>(())
/// ```
pub fn window_attention_with<F: Elem>(
    w: &LocalAttn<F>,
    x: ArrayView3<'_, F>,
    n_heads: usize,
    window: usize,
    path: AttnPath,
    quant: Quant,
) -> Result<Array3<F>> {
    if !quant.is_none() && !matches!(path, AttnPath::Exact | AttnPath::ExactKv(_)) {
        return Err(Error::Unsupported {
            op: "model",
            backend: "cpu",
            what: format!(
                "the `{}` quantisation with a compat attention path (only the exact paths have it)",
                quant.name()
            ),
        });
    }
    let (b, n, d) = x.dim();
    let proj = |m: &Array2<F>, x: ArrayView3<'_, F>| match quant.w4a8 {
        Some(p) => w4a8_linear(m, x, p),
        None => Ok(linear(
            &Linear {
                w: m.clone(),
                b: None,
                bf16: w.bf16,
            },
            x,
        )),
    };
    let (q, k, v) = (
        heads(&proj(&w.wq, x)?, n_heads),
        heads(&proj(&w.wk, x)?, n_heads),
        heads(&proj(&w.wv, x)?, n_heads),
    );
    let c = softplus(w.log_c);
    let beta = softplus(w.beta);
    let o: Array4<F> = match path {
        AttnPath::Exact | AttnPath::ExactKv(_) => {
            let f64s = |a: &Array4<F>| a.mapv(|v| v.to_f64_exact());
            let (q64, mut k64, mut v64) = (f64s(&q), f64s(&k), f64s(&v));
            if let AttnPath::ExactKv(codec) = path {
                for (a, key) in [(&mut k64, true), (&mut v64, false)] {
                    for mut row in a.rows_mut() {
                        let mut r = row.to_vec();
                        codec.roundtrip(&mut r, key)?;
                        row.assign(&ndarray::ArrayView1::from(&r));
                    }
                }
            }
            let args = HypAttnArgs::new(
                q64.view(),
                k64.view(),
                v64.view(),
                c.to_f64_exact(),
                beta.to_f64_exact(),
                Mask::Window(window),
            )?;
            let dtype = Dtype::from(F::PRECISION);
            let out = if quant.int8_logits {
                hyp_int8::attention(&args, dtype)?
            } else {
                Cpu.hyp_attn(&args, dtype)?
            };
            out.o.mapv(F::of)
        }
        _ => {
            let mut o = Array4::zeros(q.dim());
            for bb in 0..b {
                for hh in 0..n_heads {
                    for start in (0..n).step_by(window) {
                        let r = s![bb..=bb, hh, start..(start + window).min(n), ..];
                        let win = compat_window(
                            q.slice(r),
                            k.slice(r),
                            v.slice(r),
                            (c, beta, w.bias),
                            path,
                        );
                        o.slice_mut(r).assign(&win);
                    }
                }
            }
            o
        }
    };
    let merged = o
        .permuted_axes([0, 2, 1, 3])
        .as_standard_layout()
        .into_shape_with_order((b, n, d))
        .expect("heads merge")
        .to_owned();
    proj(&w.wo, merged.view())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv4::{decode_attn, Kv4Cache, Kv4Config, KvLayout};
    use crate::model::KvCodec;
    use crate::splitmix64;

    fn mat(r: usize, c: usize, seed: u64, scale: f64) -> Array2<f64> {
        let mut st = seed;
        Array2::from_shape_fn((r, c), |_| {
            st = splitmix64(st);
            ((st >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * scale
        })
    }

    /// The model's attention with K, V through the 4-bit codec equals decoding token by token from
    /// a real [`Kv4Cache`] (codes, fp16 metadata, ring of W slots, block-causal window): the
    /// codec path is what a cache-backed decoder computes. fp16 stays within 1e-3 of exact.
    #[test]
    fn codec_attention_is_decoding_from_the_cache() {
        let (b, n, d, h, win) = (2, 11, 8, 2, 4);
        let w = LocalAttn {
            wq: mat(d, d, 1, 0.8),
            wk: mat(d, d, 2, 0.8),
            wv: mat(d, d, 3, 0.8),
            wo: mat(d, d, 4, 0.8),
            log_c: 0.3,
            beta: 0.5,
            bias: 0.0,
            bf16: false,
        };
        let x =
            Array3::from_shape_vec((b, n, d), mat(b * n, d, 5, 2.0).into_raw_vec_and_offset().0)
                .unwrap();
        for radial in [false, true] {
            let codec = KvCodec::Int4 { radial };
            let got = window_attention(&w, x.view(), h, win, AttnPath::ExactKv(codec)).unwrap();
            let proj = |m: &Array2<f64>| {
                heads(
                    &linear(
                        &Linear {
                            w: m.clone(),
                            b: None,
                            bf16: false,
                        },
                        x.view(),
                    ),
                    h,
                )
            };
            let (q, k, v) = (proj(&w.wq), proj(&w.wk), proj(&w.wv));
            let cfg = Kv4Config {
                batch: b,
                heads: h,
                dim: d / h,
                capacity: win,
                layout: KvLayout::PerToken,
                radial,
                ring: true,
            };
            let mut cache = Kv4Cache::new(cfg).unwrap();
            let mut o = Array4::zeros((b, h, n, d / h));
            for t in 0..n {
                let r = s![.., .., t..t + 1, ..];
                cache.append(k.slice(r), v.slice(r), &vec![t; b]).unwrap();
                let out = decode_attn(
                    q.slice(r),
                    &cache,
                    softplus(w.log_c),
                    softplus(w.beta),
                    Mask::Window(win),
                )
                .unwrap();
                o.slice_mut(r).assign(&out.o);
            }
            let merged = o
                .permuted_axes([0, 2, 1, 3])
                .as_standard_layout()
                .into_shape_with_order((b, n, d))
                .unwrap()
                .to_owned();
            let want = linear(
                &Linear {
                    w: w.wo.clone(),
                    b: None,
                    bf16: false,
                },
                merged.view(),
            );
            let err = (&got - &want).iter().fold(0.0f64, |a, e| a.max(e.abs()));
            assert!(err < 1e-12, "radial {radial}: {err}");
        }
        let exact = window_attention(&w, x.view(), h, win, AttnPath::Exact).unwrap();
        let fp16 =
            window_attention(&w, x.view(), h, win, AttnPath::ExactKv(KvCodec::Fp16)).unwrap();
        let int4 = window_attention(
            &w,
            x.view(),
            h,
            win,
            AttnPath::ExactKv(KvCodec::Int4 { radial: false }),
        )
        .unwrap();
        let diff = |a: &Array3<f64>| (a - &exact).iter().fold(0.0f64, |m, e| m.max(e.abs()));
        assert!(
            diff(&fp16) > 0.0 && diff(&fp16) < 1e-3,
            "fp16 {}",
            diff(&fp16)
        );
        assert!(
            diff(&int4) > diff(&fp16),
            "int4 {} vs fp16 {}",
            diff(&int4),
            diff(&fp16)
        );
        assert_eq!(
            "int4-radial".parse::<KvCodec>(),
            Ok(KvCodec::Int4 { radial: true })
        );
        assert!("int8".parse::<KvCodec>().is_err());
    }
}
