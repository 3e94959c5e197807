//! The KV cache on the GPU (`muse_cuda::kv4`) against the reference (`muse_reference::kv4`): the
//! CUDA codec equals the f32-arithmetic reference codec code for code and bit for bit; decode
//! attention equals dense f64 hyperbolic attention on the cache's own dequantised K and V (design
//! §16: MSE < 1e-6); split-K at long contexts, the ring and the window; refusals by name. The
//! GPU tests run on the GPU machine (`--features cuda`).

use crate::common::{registered_case_passes, test_backends};

test_backends! {
    #[case::int4_b2h3d64_n30_q4_causal("kv4/int4_B2H3D64_n30_q4_causal")]
    #[case::int4_b1h2d2_n12_q2_none("kv4/int4_B1H2D2_n12_q2_none")]
    #[case::int4_b1h4d256_n40_q1_causal("kv4/int4_B1H4D256_n40_q1_causal")]
    #[case::int4_b1h8d64_ring64_n138_window64("kv4/int4_B1H8D64_ring64_n138_window64")]
    #[case::int4_b1h2d64_n8192_q1_causal("kv4/int4_B1H2D64_n8192_q1_causal")]
    #[case::fp16_b2h3d64_n30_q4_causal("kv4/fp16_B2H3D64_n30_q4_causal")]
    #[case::fp16_b1h2d2_n12_q2_none("kv4/fp16_B1H2D2_n12_q2_none")]
    #[case::fp16_b1h4d256_n40_q1_causal("kv4/fp16_B1H4D256_n40_q1_causal")]
    #[case::fp16_b1h8d64_ring64_n138_window64("kv4/fp16_B1H8D64_ring64_n138_window64")]
    #[case::fp16_b1h2d64_n8192_q1_causal("kv4/fp16_B1H2D64_n8192_q1_causal")]
    #[case::int4_radial_b2h2d64_n299_q2_causal("kv4/int4_radial_B2H2D64_n299_q2_causal")]
    #[case::int4_perchannel_b2h2d64_g32_n150_q3_causal("kv4/int4_perchannel_B2H2D64_G32_n150_q3_causal")]
    #[case::int4_perchannel_b1h2d6_g32_n64_q1_window8("kv4/int4_perchannel_B1H2D6_G32_n64_q1_window8")]
    fn registered_case_passes(name: &str);
}

#[cfg(feature = "cuda")]
mod gpu {
    use muse::reference::hyp_attn::forward::forward;
    use muse::reference::hyp_attn::{Form, HypAttnArgs, Mask};
    use muse::reference::kv4::{quantize_group_f32, Kv4Config, KvLayout};
    use muse::reference::quant::unpack_nibbles;
    use muse::reference::Dtype;
    use muse::verify::suite::kv4::data;
    use muse_cuda::kv4::{DecodeWs, DeviceKvCache, Storage};
    use ndarray::{s, Array4};

    fn gpu() -> &'static muse_cuda::Gpu {
        crate::common::gpu().expect("GPU").gpu().expect("GPU")
    }

    fn cfg(b: usize, h: usize, d: usize, t: usize, radial: bool, ring: bool) -> Kv4Config {
        Kv4Config {
            batch: b,
            heads: h,
            dim: d,
            capacity: t,
            layout: KvLayout::PerToken,
            radial,
            ring,
        }
    }

    /// The dequantised K, V (f64) of every slot as the device stores them, [B·H·T, D].
    fn dequantised(cache: &DeviceKvCache) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let c = cache.config();
        let st = cache.download().expect("download");
        let (kc, vc, km, vm, kn, k16, v16) = (
            st.k_codes, st.v_codes, st.k_meta, st.v_meta, st.k_norm, st.k16, st.v16,
        );
        let slots = c.batch * c.heads * c.capacity;
        let f16 = |b: u16| f64::from(half::f16::from_bits(b));
        let rows = |codes: &[u8], meta: &[u16], bits: &[u16], key: bool| -> Vec<Vec<f64>> {
            (0..slots)
                .map(|i| match cache.storage() {
                    Storage::Fp16 => bits[i * c.dim..(i + 1) * c.dim]
                        .iter()
                        .map(|&b| f16(b))
                        .collect(),
                    // per-channel K: filled in below from its groups' metadata
                    Storage::Int4 if key && c.layout != KvLayout::PerToken => vec![0.0; c.dim],
                    Storage::Int4 => {
                        let q = unpack_nibbles(&codes[i * c.dim / 2..(i + 1) * c.dim / 2]);
                        let mut x: Vec<f64> = q
                            .iter()
                            .map(|&q| f16(meta[2 * i + 1]) + f64::from(q) * f16(meta[2 * i]))
                            .collect();
                        if key && c.radial {
                            let r = x.iter().map(|v| v * v).sum::<f64>().sqrt();
                            let scale = if r > 0.0 { f64::from(kn[i]) / r } else { 0.0 };
                            x.iter_mut().for_each(|v| *v *= scale);
                        }
                        x
                    }
                })
                .collect()
        };
        let mut keys = rows(&kc, &km, &k16, true);
        if let KvLayout::PerChannelK { group: g } = c.layout {
            // sealed groups: codes with their group's per-channel (s, m); the open group: fp16
            for (i, key) in keys.iter_mut().enumerate() {
                let (row, p) = (i / c.capacity, i % c.capacity);
                let n = cache.len(row / c.heads);
                let mut x: Vec<f64> = if p >= n {
                    vec![0.0; c.dim]
                } else if p / g == n / g {
                    let t = (row * g + p % g) * c.dim;
                    st.k_tail[t..t + c.dim].iter().map(|&b| f16(b)).collect()
                } else {
                    let q = unpack_nibbles(&kc[i * c.dim / 2..(i + 1) * c.dim / 2]);
                    let meta = (row * (c.capacity / g) + p / g) * c.dim;
                    (0..c.dim)
                        .map(|e| {
                            f16(km[2 * (meta + e) + 1]) + f64::from(q[e]) * f16(km[2 * (meta + e)])
                        })
                        .collect()
                };
                if c.radial && p < n {
                    let r = x.iter().map(|v| v * v).sum::<f64>().sqrt();
                    let scale = if r > 0.0 { f64::from(kn[i]) / r } else { 0.0 };
                    x.iter_mut().for_each(|v| *v *= scale);
                }
                *key = x;
            }
        }
        (keys, rows(&vc, &vm, &v16, false))
    }

    #[test]
    fn cuda_per_channel_codec_matches_the_f32_reference_bit_for_bit() {
        let gpu = gpu();
        for (d, g, radial) in [(64, 32, false), (6, 16, true), (130, 32, false)] {
            let c = Kv4Config {
                layout: KvLayout::PerChannelK { group: g },
                ..cfg(2, 2, d, 5 * g, radial, false)
            };
            let mut cache = DeviceKvCache::new(gpu, c, Storage::Int4).expect("cache");
            // appends that end inside a group, complete one begun earlier, and span several
            let n = 4 * g + 3;
            let (k, v) = (data((2, 2, n, d), 3, 1.0), data((2, 2, n, d), 4, 0.5));
            let cuts = [0, 10, g + 5, 3 * g + 1, n];
            for w in cuts.windows(2) {
                cache
                    .append_host(
                        gpu,
                        k.slice(s![.., .., w[0]..w[1], ..]),
                        v.slice(s![.., .., w[0]..w[1], ..]),
                    )
                    .expect("append");
            }
            let st = cache.download().expect("download");
            let f16 = |x: f64| half::f16::from_f32(x as f32);
            let mut bad = 0;
            for bh in 0..4 {
                let (b, h) = (bh / 2, bh % 2);
                for grp in 0..n / g {
                    for ch in 0..d {
                        let col: Vec<f32> = (0..g)
                            .map(|t| f16(k[[b, h, grp * g + t, ch]]).to_f32())
                            .collect();
                        let q = quantize_group_f32(&col);
                        let meta = 2 * ((bh * 5 + grp) * d + ch);
                        bad += usize::from(
                            st.k_meta[meta] != q.step16.to_bits()
                                || st.k_meta[meta + 1] != q.min16.to_bits(),
                        );
                        for (t, &code) in q.codes.iter().enumerate() {
                            let slot = bh * c.capacity + grp * g + t;
                            let held =
                                unpack_nibbles(&st.k_codes[slot * d / 2..(slot + 1) * d / 2]);
                            bad += usize::from(held[ch] != code);
                        }
                    }
                }
                for p in n / g * g..n {
                    for ch in 0..d {
                        let bits = st.k_tail[(bh * g + p % g) * d + ch];
                        bad += usize::from(bits != f16(k[[b, h, p, ch]]).to_bits());
                    }
                }
                for p in 0..n {
                    let row: Vec<f32> =
                        v.slice(s![b, h, p, ..]).iter().map(|&x| x as f32).collect();
                    let q = quantize_group_f32(&row);
                    let slot = bh * c.capacity + p;
                    bad += usize::from(
                        unpack_nibbles(&st.v_codes[slot * d / 2..(slot + 1) * d / 2]) != q.codes
                            || st.v_meta[2 * slot] != q.step16.to_bits()
                            || st.v_meta[2 * slot + 1] != q.min16.to_bits(),
                    );
                    if radial {
                        let r = k
                            .slice(s![b, h, p, ..])
                            .iter()
                            .map(|x| x * x)
                            .sum::<f64>()
                            .sqrt();
                        assert!(
                            (f64::from(st.k_norm[slot]) - r).abs() <= 1e-6 * r,
                            "norm at {slot}"
                        );
                    }
                }
            }
            assert_eq!(
                bad, 0,
                "D {d} G {g}: per-channel codes, metadata or tail differ from the f32 reference"
            );
        }
    }

    #[test]
    fn cuda_codec_matches_the_f32_reference_bit_for_bit() {
        let gpu = gpu();
        for (d, radial) in [
            (64, false),
            (64, true),
            (2, false),
            (130, true),
            (256, false),
        ] {
            let c = cfg(2, 3, d, 24, radial, false);
            let mut cache = DeviceKvCache::new(gpu, c, Storage::Int4).expect("cache");
            let (k, v) = (data((2, 3, 20, d), 1, 1.0), data((2, 3, 20, d), 2, 0.5));
            cache
                .append_host(
                    gpu,
                    k.slice(s![.., .., ..7, ..]),
                    v.slice(s![.., .., ..7, ..]),
                )
                .expect("append");
            cache
                .append_host(
                    gpu,
                    k.slice(s![.., .., 7.., ..]),
                    v.slice(s![.., .., 7.., ..]),
                )
                .expect("append");
            let st = cache.download().expect("download");
            let (kc, vc, km, vm, kn) = (st.k_codes, st.v_codes, st.k_meta, st.v_meta, st.k_norm);
            let mut bad = 0;
            for (bh, t) in (0..6).flat_map(|bh| (0..20).map(move |t| (bh, t))) {
                let slot = bh * 24 + t;
                for (src, codes, meta) in [(&k, &kc, &km), (&v, &vc, &vm)] {
                    let row: Vec<f32> = src
                        .slice(s![bh / 3, bh % 3, t, ..])
                        .iter()
                        .map(|&x| x as f32)
                        .collect();
                    let g = quantize_group_f32(&row);
                    bad += usize::from(
                        unpack_nibbles(&codes[slot * d / 2..(slot + 1) * d / 2]) != g.codes,
                    );
                    bad += usize::from(
                        meta[2 * slot] != g.step16.to_bits()
                            || meta[2 * slot + 1] != g.min16.to_bits(),
                    );
                }
                if radial {
                    let r: f64 = k
                        .slice(s![bh / 3, bh % 3, t, ..])
                        .iter()
                        .map(|x| x * x)
                        .sum::<f64>()
                        .sqrt();
                    assert!(
                        (f64::from(kn[slot]) - r).abs() <= 1e-6 * r,
                        "norm at {slot}"
                    );
                }
            }
            assert_eq!(
                bad, 0,
                "D {d}: rows whose codes or metadata differ from the f32 reference"
            );
        }
    }

    /// o against dense f64 attention over the device's own dequantised K, V for the last `nq`
    /// positions: MSE < 1e-6, max|Δ| ≤ 1e-4·max|v|, lse within 1e-5·max(1, |lse|).
    fn check_decode(
        storage: Storage,
        c: Kv4Config,
        appends: &[usize],
        nq: usize,
        mask: Mask,
        seed: u64,
    ) {
        let gpu = gpu();
        let mut cache = DeviceKvCache::new(gpu, c, storage).expect("cache");
        let total: usize = appends.iter().sum();
        let (k, v) = (
            data((c.batch, c.heads, total, c.dim), seed, 1.0),
            data((c.batch, c.heads, total, c.dim), seed + 1, 1.0),
        );
        let mut at = 0;
        for &l in appends {
            cache
                .append_host(
                    gpu,
                    k.slice(s![.., .., at..at + l, ..]),
                    v.slice(s![.., .., at..at + l, ..]),
                )
                .expect("append");
            at += l;
        }
        let q = data((c.batch, c.heads, nq, c.dim), seed + 2, 0.7);
        let qd = gpu
            .upload(&q.iter().map(|&x| x as f32).collect::<Vec<_>>())
            .expect("q");
        let (cc, beta) = (0.693, 1.3);
        let (kd, vd) = dequantised(&cache);
        for prefetch in [true, false] {
            let mut ws = DecodeWs::new(gpu, &cache, nq)
                .expect("ws")
                .with_prefetch(prefetch);
            cache
                .decode(gpu, &qd, nq, cc, beta, mask, &mut ws)
                .expect("decode");
            let first = ws.o.to_vec().expect("o");
            // The merging CTA re-arms its row's split counter: a second launch on the same
            // workspace must write every output again (poisoned to NaN in between).
            ws.o.poison().expect("poison o");
            ws.lse.poison().expect("poison lse");
            cache
                .decode(gpu, &qd, nq, cc, beta, mask, &mut ws)
                .expect("decode again");
            let (o, lse) = (ws.o.to_vec().expect("o"), ws.lse.to_vec().expect("lse"));
            assert!(
                o.iter()
                    .zip(&first)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{storage:?} prefetch {prefetch}: a second decode on the same workspace differs"
            );
            check_outputs(
                storage,
                c,
                &q,
                &kd,
                &vd,
                (&o, &lse),
                total,
                nq,
                mask,
                prefetch,
            );
        }
    }

    /// The comparison of [`check_decode`] for one set of outputs.
    #[allow(clippy::too_many_arguments)]
    fn check_outputs(
        storage: Storage,
        c: Kv4Config,
        q: &Array4<f64>,
        kd: &[Vec<f64>],
        vd: &[Vec<f64>],
        (o, lse): (&[f32], &[f32]),
        total: usize,
        nq: usize,
        mask: Mask,
        prefetch: bool,
    ) {
        let (cc, beta) = (0.693, 1.3);
        let (mut sq, mut count, mut worst, mut vmax, mut lse_bad) =
            (0.0, 0usize, 0.0f64, 0.0f64, 0.0f64);
        for b in 0..c.batch {
            for h in 0..c.heads {
                for i in 0..nq {
                    let pos = total - nq + i;
                    let stored = total.saturating_sub(c.capacity);
                    let lo = match mask {
                        Mask::None => stored,
                        Mask::Causal => 0,
                        Mask::Window(w) => pos / w * w,
                    };
                    let hi = if mask == Mask::None { total } else { pos + 1 };
                    let m = hi - lo;
                    let slot = |j: usize| (b * c.heads + h) * c.capacity + j % c.capacity;
                    let kk =
                        Array4::from_shape_fn((1, 1, m, c.dim), |(_, _, j, e)| kd[slot(lo + j)][e]);
                    let vv =
                        Array4::from_shape_fn((1, 1, m, c.dim), |(_, _, j, e)| vd[slot(lo + j)][e]);
                    let qq = q
                        .slice(s![b..b + 1, h..h + 1, i..i + 1, ..])
                        .mapv(|x| f64::from(x as f32));
                    let args =
                        HypAttnArgs::new(qq.view(), kk.view(), vv.view(), cc, beta, Mask::None)
                            .expect("args")
                            .with_form(Form::Exact);
                    let want = forward::<f64>(&args, Dtype::F64);
                    let row = ((b * c.heads + h) * nq + i) * c.dim;
                    for e in 0..c.dim {
                        let dlt = f64::from(o[row + e]) - want.o[[0, 0, 0, e]];
                        sq += dlt * dlt;
                        count += 1;
                        worst = worst.max(dlt.abs());
                    }
                    vmax = vv.iter().fold(vmax, |a, x| a.max(x.abs()));
                    let l = want.lse[[0, 0, 0]];
                    lse_bad =
                        lse_bad.max((f64::from(lse[row / c.dim]) - l).abs() / l.abs().max(1.0));
                }
            }
        }
        let mse = sq / count as f64;
        assert!(mse < 1e-6 && worst <= 1e-4 * vmax && lse_bad <= 1e-5, "{storage:?} prefetch {prefetch} {mask:?} len {total}: mse {mse:.2e}, max {worst:.2e} (max|v| {vmax:.2}), lse {lse_bad:.2e}");
    }

    #[test]
    fn cuda_decode_matches_dense_attention_on_its_cache() {
        for storage in [Storage::Int4, Storage::Fp16] {
            check_decode(
                storage,
                cfg(2, 3, 64, 64, false, false),
                &[20, 1, 9],
                1,
                Mask::None,
                1,
            );
            check_decode(
                storage,
                cfg(2, 3, 64, 64, false, false),
                &[30],
                4,
                Mask::Causal,
                2,
            );
            check_decode(
                storage,
                cfg(1, 2, 2, 16, false, false),
                &[9, 3],
                2,
                Mask::Causal,
                3,
            );
            check_decode(
                storage,
                cfg(1, 2, 256, 32, false, false),
                &[31],
                1,
                Mask::None,
                4,
            );
            // ring of W slots, the LM's block-causal window
            check_decode(
                storage,
                cfg(1, 8, 64, 64, false, true),
                &[64, 64, 10],
                1,
                Mask::Window(64),
                5,
            );
            // long context, D = 64 (one key per lane): 79 splits of decode_chunk64(10 000, 2) =
            // 128 keys merged by log-sum-exp
            check_decode(
                storage,
                cfg(1, 2, 64, 10_000, false, false),
                &[10_000],
                1,
                Mask::Causal,
                6,
            );
            // long context, D = 128 (a warp per key): 12 splits of DECODE_CHUNK
            check_decode(
                storage,
                cfg(1, 2, 128, 3000, false, false),
                &[3000],
                1,
                Mask::Causal,
                8,
            );
        }
        check_decode(
            Storage::Int4,
            cfg(2, 2, 64, 300, true, false),
            &[299],
            2,
            Mask::Causal,
            7,
        );
        // per-channel K (warp-per-key path): sealed groups and the fp16 tail, long and short
        for (c, appends, nq, mask) in [
            (
                cfg(2, 2, 64, 320, false, false),
                vec![100, 90],
                3,
                Mask::Causal,
            ),
            (
                cfg(1, 2, 64, 4096, true, false),
                vec![4000],
                1,
                Mask::Causal,
            ),
            (
                cfg(1, 3, 6, 64, false, false),
                vec![16, 16],
                2,
                Mask::Window(8),
            ),
        ] {
            let c = Kv4Config {
                layout: KvLayout::PerChannelK { group: 32 },
                ..c
            };
            check_decode(Storage::Int4, c, &appends, nq, mask, 9);
        }
    }

    #[test]
    fn cuda_refusals_name_the_argument() {
        let gpu = gpu();
        let mut cache =
            DeviceKvCache::new(gpu, cfg(1, 1, 8, 4, false, false), Storage::Int4).expect("cache");
        let kv = data((1, 1, 3, 8), 1, 1.0);
        cache
            .append_host(gpu, kv.view(), kv.view())
            .expect("append");
        let err = cache
            .append_host(gpu, kv.view(), kv.view())
            .unwrap_err()
            .to_string();
        assert!(err.contains("capacity 4"), "{err}");
        let bad = data((1, 1, 3, 6), 1, 1.0);
        assert!(cache
            .append_host(gpu, bad.view(), bad.view())
            .unwrap_err()
            .to_string()
            .contains("`k`"));
        // per-channel K: G must divide T, and its groups never move (no ring)
        let mut per_channel = cfg(1, 1, 8, 10, false, false);
        per_channel.layout = KvLayout::PerChannelK { group: 4 };
        let err = DeviceKvCache::new(gpu, per_channel, Storage::Int4)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("must divide capacity 10"), "{err}");
        let mut ring = cfg(1, 1, 8, 8, false, true);
        ring.layout = KvLayout::PerChannelK { group: 4 };
        let err = DeviceKvCache::new(gpu, ring, Storage::Int4)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("PerChannelK needs a full-context cache"),
            "{err}"
        );
        assert!(DeviceKvCache::new(gpu, cfg(1, 1, 8, 8, true, false), Storage::Fp16).is_err());
        let q = gpu.upload(&[0.1f32; 8 * 4]).expect("q");
        let mut ws = DecodeWs::new(gpu, &cache, 4).expect("ws");
        let err = cache
            .decode(gpu, &q, 4, 1.0, 1.0, Mask::Causal, &mut ws)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`q`"), "{err}");
    }
}
