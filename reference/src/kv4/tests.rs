use ndarray::{s, Array4};
use proptest::prelude::*;

use super::*;
use crate::hyp_attn::forward::forward;
use crate::hyp_attn::{Form, HypAttnArgs, Mask};
use crate::{splitmix64, Dtype};

/// Deterministic f32-representable normals-ish in [-scale, scale]·3 from a seed.
fn data(shape: (usize, usize, usize, usize), seed: u64, scale: f64) -> Array4<f64> {
    let mut state = seed;
    Array4::from_shape_fn(shape, |_| {
        let u: f64 = (0..3)
            .map(|_| {
                state = splitmix64(state);
                (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .sum();
        f64::from((2.0 * u * scale) as f32)
    })
}

fn cfg(layout: KvLayout, capacity: usize, radial: bool, ring: bool) -> Kv4Config {
    Kv4Config {
        batch: 2,
        heads: 3,
        dim: 8,
        capacity,
        layout,
        radial,
        ring,
    }
}

proptest! {
    #[test]
    fn codec_error_within_bound(
        x in proptest::collection::vec(-3000.0f64..3000.0, 1..80),
        offset in -100.0f64..100.0,
    ) {
        let x: Vec<f64> = x.iter().map(|v| f64::from((v * 1e-3 + offset) as f32)).collect();
        let g = quantize_group("t", "x", &x).unwrap();
        let analytic = g.step / 2.0 + 2f64.powi(-11) * (g.min.abs() + 15.0 * g.step) + 2f64.powi(-24);
        prop_assert!(g.bound() <= analytic * (1.0 + 1e-12));
        for (&xi, yi) in x.iter().zip(g.dequantize()) {
            prop_assert!((xi - yi).abs() <= g.bound() * (1.0 + 1e-12), "{} vs {}", xi, yi);
        }
        prop_assert!(g.codes.iter().all(|&q| q <= 15));
        prop_assert_eq!(*g.codes.iter().max().unwrap(), if g.step > MIN_STEP { 15 } else { 0 });
    }
}

#[test]
fn codec_ties_go_to_even_and_constant_groups_are_exact() {
    // step 1: (x − m)/s are exact halves
    let x = [0.0, 15.0, 0.5, 1.5, 2.5, 3.5, 14.5, 7.5];
    assert_eq!(
        quantize_group("t", "x", &x).unwrap().codes,
        vec![0, 15, 0, 2, 2, 4, 14, 8]
    );
    let g = quantize_group("t", "x", &[0.75; 6]).unwrap();
    assert_eq!((g.codes.clone(), g.step), (vec![0; 6], MIN_STEP));
    assert_eq!(g.dequantize(), vec![0.75; 6]); // 0.75 is an fp16 value; s₁₆ = fp16(1e-8) = 0
    assert!(quantize_group("t", "x", &[1.0, f64::NAN]).is_err());
    assert!(quantize_group("t", "x", &[]).is_err());
    let err = quantize_group("kv4", "k", &[70000.0, 70001.0])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`k`") && err.contains("fp16"), "{err}");
}

#[test]
fn ratios_are_exact() {
    assert_eq!(effective_ratio(64, 2), 256.0 / 72.0); // 3.5556
    assert_eq!(effective_ratio(128, 2), 512.0 / 136.0); // 3.7647
    assert_eq!(effective_ratio(64, 4), 3.2); // the original's fp32-metadata formula
    assert_eq!(effective_ratio_radial(64), 256.0 / 76.0);
    // the stored state of a full cache gives the same ratio: 4D bytes of fp16 K+V per token-head
    let c = Kv4Config {
        batch: 1,
        heads: 2,
        dim: 64,
        capacity: 16,
        layout: KvLayout::PerToken,
        radial: false,
        ring: false,
    };
    let cache = Kv4Cache::new(c).unwrap();
    let fp16 = 2 * 16 * 4 * 64;
    assert_eq!(
        fp16 as f64 / cache.state_bytes() as f64,
        effective_ratio(64, 2)
    );
}

#[test]
fn appends_are_bounds_checked() {
    let mut cache = Kv4Cache::new(cfg(KvLayout::PerToken, 5, false, false)).unwrap();
    let kv = data((2, 3, 3, 8), 1, 1.0);
    cache.append(kv.view(), kv.view(), &[0, 0]).unwrap();
    let err = cache
        .append(kv.view(), kv.view(), &[3, 3])
        .unwrap_err()
        .to_string();
    assert!(err.contains("capacity 5"), "{err}");
    let err = cache
        .append(
            kv.slice(s![.., .., ..1, ..]),
            kv.slice(s![.., .., ..1, ..]),
            &[3, 2],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("`start`") && err.contains("[1]"), "{err}");
    let bad = data((2, 3, 1, 6), 1, 1.0);
    assert!(cache.append(bad.view(), bad.view(), &[3, 3]).is_err());
    let mut nan = data((2, 3, 1, 8), 1, 1.0);
    nan[[1, 2, 0, 5]] = f64::NAN;
    let err = cache
        .append(nan.view(), kv.slice(s![.., .., ..1, ..]), &[3, 3])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`k`") && err.contains("[1, 2, 0, 5]"), "{err}");
    assert_eq!((cache.len(0), cache.len(1)), (3, 3)); // failed appends write nothing
    for bad in [
        Kv4Config {
            dim: 7,
            ..cfg(KvLayout::PerToken, 4, false, false)
        },
        Kv4Config {
            batch: 0,
            ..cfg(KvLayout::PerToken, 4, false, false)
        },
        cfg(KvLayout::PerChannelK { group: 3 }, 8, false, false),
        cfg(KvLayout::PerChannelK { group: 4 }, 8, false, true),
    ] {
        assert!(Kv4Cache::new(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn per_token_cache_holds_the_codec_of_each_token() {
    let mut cache = Kv4Cache::new(cfg(KvLayout::PerToken, 12, true, false)).unwrap();
    let k = data((2, 3, 7, 8), 2, 1.5);
    let v = data((2, 3, 7, 8), 3, 0.5);
    cache
        .append(
            k.slice(s![.., .., ..4, ..]),
            v.slice(s![.., .., ..4, ..]),
            &[0, 0],
        )
        .unwrap();
    cache
        .append(
            k.slice(s![.., .., 4.., ..]),
            v.slice(s![.., .., 4.., ..]),
            &[4, 4],
        )
        .unwrap();
    for (b, h) in [(0, 0), (1, 2)] {
        let (keys, vals) = (cache.keys(b, h), cache.values(b, h));
        for t in 0..7 {
            let kt = k.slice(s![b, h, t, ..]).to_vec();
            let gk = quantize_group("t", "k", &kt).unwrap();
            // radial: the codec's direction rescaled to the exact f32 norm
            let deq = gk.dequantize();
            let r = deq.iter().map(|x| x * x).sum::<f64>().sqrt();
            let rho = f64::from(kt.iter().map(|x| x * x).sum::<f64>().sqrt() as f32);
            for e in 0..8 {
                assert!((keys[[t, e]] - deq[e] * rho / r).abs() < 1e-12);
            }
            let vt = v.slice(s![b, h, t, ..]).to_vec();
            assert_eq!(
                vals.row(t).to_vec(),
                quantize_group("t", "v", &vt).unwrap().dequantize()
            );
        }
    }
}

#[test]
fn per_channel_groups_are_sealed_once_and_the_tail_stays_fp16() {
    let mut cache =
        Kv4Cache::new(cfg(KvLayout::PerChannelK { group: 4 }, 12, false, false)).unwrap();
    let k = data((2, 3, 10, 8), 4, 1.0);
    cache
        .append(
            k.slice(s![.., .., ..6, ..]),
            k.slice(s![.., .., ..6, ..]),
            &[0, 0],
        )
        .unwrap();
    let early = cache.keys(1, 1);
    // group 0 (tokens 0..4) is quantised per channel; tokens 4, 5 are fp16
    for ch in 0..8 {
        let col: Vec<f64> = (0..4)
            .map(|t| f64::from(half::f16::from_f64(k[[1, 1, t, ch]])))
            .collect();
        let g = quantize_group("t", "k", &col).unwrap().dequantize();
        for t in 0..4 {
            assert_eq!(early[[t, ch]], g[t]);
        }
        for t in 4..6 {
            assert_eq!(
                early[[t, ch]],
                f64::from(half::f16::from_f64(k[[1, 1, t, ch]]))
            );
        }
    }
    cache
        .append(
            k.slice(s![.., .., 6.., ..]),
            k.slice(s![.., .., 6.., ..]),
            &[6, 6],
        )
        .unwrap();
    let late = cache.keys(1, 1);
    // the original overwrote old scales on each append; here group 0 reads back unchanged
    assert_eq!(late.slice(s![..4, ..]), early.slice(s![..4, ..]));
    assert_ne!(late.slice(s![4..6, ..]), early.slice(s![4..6, ..])); // now sealed: codes
}

#[test]
fn ring_keeps_the_last_capacity_tokens() {
    let mut cache = Kv4Cache::new(cfg(KvLayout::PerToken, 4, false, true)).unwrap();
    let k = data((2, 3, 7, 8), 5, 1.0);
    for t in 0..7 {
        let one = k.slice(s![.., .., t..t + 1, ..]);
        cache.append(one, one, &[t, t]).unwrap();
    }
    assert_eq!(cache.positions(0), 3..7);
    let keys = cache.keys(0, 2);
    for (i, t) in (3..7).enumerate() {
        let want = quantize_group("t", "k", &k.slice(s![0, 2, t, ..]).to_vec())
            .unwrap()
            .dequantize();
        assert_eq!(keys.row(i).to_vec(), want);
    }
}

/// Decode attention on the cache = the dense f64 hyperbolic attention (an independent code path)
/// on the dequantised keys and values, for every mask; the split-K merge changes nothing.
#[test]
fn decode_matches_dense_attention_on_the_dequantised_cache() {
    let mut cache = Kv4Cache::new(cfg(KvLayout::PerToken, 40, false, false)).unwrap();
    let k = data((2, 3, 37, 8), 6, 1.0);
    let v = data((2, 3, 37, 8), 7, 1.0);
    cache.append(k.view(), v.view(), &[0, 0]).unwrap();
    let nq = 5;
    let q = data((2, 3, nq, 8), 8, 1.2);
    let mut kd = Array4::zeros((2, 3, 37, 8));
    let mut vd = Array4::zeros((2, 3, 37, 8));
    for b in 0..2 {
        for h in 0..3 {
            kd.slice_mut(s![b, h, .., ..]).assign(&cache.keys(b, h));
            vd.slice_mut(s![b, h, .., ..]).assign(&cache.values(b, h));
        }
    }
    for (c, beta) in [(0.693, 1.0), (2.0, 0.7)] {
        for mask in [Mask::None, Mask::Causal] {
            let got = decode_attn(q.view(), &cache, c, beta, mask).unwrap();
            let args = HypAttnArgs::new(q.view(), kd.view(), vd.view(), c, beta, mask)
                .unwrap()
                .with_form(Form::Exact);
            let want = forward::<f64>(&args, Dtype::F64);
            let err = (&got.o - &want.o)
                .iter()
                .fold(0.0f64, |a, x| a.max(x.abs()));
            assert!(err < 1e-13, "{mask:?}: {err}");
            let err = (&got.lse - &want.lse)
                .iter()
                .fold(0.0f64, |a, x| a.max(x.abs()));
            assert!(err < 1e-12, "{mask:?}: lse {err}");
            for chunk in [1, 3, 16] {
                let split = decode_attn_split(q.view(), &cache, c, beta, mask, chunk).unwrap();
                let err = (&split.o - &got.o)
                    .iter()
                    .fold(0.0f64, |a, x| a.max(x.abs()));
                assert!(err < 1e-13, "chunk {chunk}: {err}");
            }
        }
    }
}

#[test]
fn window_decode_sees_only_its_block() {
    // W = 4, 10 tokens: the last query (position 9) sees positions 8, 9 only
    let mut cache = Kv4Cache::new(cfg(KvLayout::PerToken, 4, false, true)).unwrap();
    let k = data((2, 3, 10, 8), 9, 1.0);
    for t in 0..10 {
        let one = k.slice(s![.., .., t..t + 1, ..]);
        cache.append(one, one, &[t, t]).unwrap();
    }
    let q = data((2, 3, 1, 8), 10, 1.0);
    let got = decode_attn(q.view(), &cache, 1.0, 1.0, Mask::Window(4)).unwrap();
    let mut small = Kv4Cache::new(cfg(KvLayout::PerToken, 4, false, false)).unwrap();
    small
        .append(
            k.slice(s![.., .., 8..10, ..]),
            k.slice(s![.., .., 8..10, ..]),
            &[0, 0],
        )
        .unwrap();
    let want = decode_attn(q.view(), &small, 1.0, 1.0, Mask::None).unwrap();
    assert_eq!(got.o, want.o);
    // two queries at 8 and 9 are fine; five would reach position 5, which the ring dropped
    let q5 = data((2, 3, 5, 8), 11, 1.0);
    let err = decode_attn(q5.view(), &cache, 1.0, 1.0, Mask::Causal)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no longer holds"), "{err}");
    assert!(decode_attn(q.view(), &cache, 0.0, 1.0, Mask::None).is_err());
}

/// The original's `test_phase8_kv.py`: d = 16, max 20; 5 keys at σ 0.01, 25 at norm 0.9, 10
/// recent → 20 kept; the first 5 kept norms < 0.2; the last 10 are the recent keys.
#[test]
fn compat_eviction_reproduces_the_original_test() {
    let mut norms = vec![0.01 * 4.0; 5]; // ‖k‖ of a σ 0.01 key in d = 16 is about 0.04
    norms.extend(vec![0.9; 25]);
    norms.extend((0..10).map(|i| 0.5 + 0.01 * i as f64));
    let kept = evict_compat(&norms, 20);
    assert_eq!(kept.len(), 20);
    assert!(kept[..5].iter().all(|&i| norms[i] < 0.2));
    assert_eq!(kept[10..], (30..40).collect::<Vec<_>>()[..]);
    assert_eq!(kept[..10], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]); // ties in ‖k‖: the older first
    assert_eq!(evict_compat(&norms, 7), (33..40).collect::<Vec<_>>());
    assert_eq!(evict_compat(&norms[..3], 20), vec![0, 1, 2]);
}
