//! The W4A8 small-M GEMM on the GPU (`muse_cuda::w4a8`) against the reference (design
//! hyperbolic.md §8.3, §16 test (a)): the device's activation codes within half a step of x/s_x
//! (and equal to the reference quantiser's but for near-ties), the same from the fused and the
//! two-launch paths, and y equal to the reference's integer arithmetic on the device's own codes
//! to f32 rounding: |y − y_ref| ≤ (P + 10)·2⁻²⁴·s_x·Σ_g |s_w,g·T_g| with P the kernel's f32
//! partials (K/128, or K/32 when G % 128 ≠ 0), for symmetric and asymmetric weights. Run on the
//! GPU machine (`--features cuda`).

#[cfg(feature = "cuda")]
mod gpu {
    use muse::reference::splitmix64;
    use muse::reference::w4a8::{
        gemm_exact, quantize_activations, quantize_weights, Int4Weights, Int8Act, WeightCodec,
    };
    use muse_cuda::w4a8::{fuses, gemm_small, linear, quant_x, Acts, DeviceWeights};
    use ndarray::Array2;

    fn mat(r: usize, c: usize, seed: u64, scale: f64) -> Array2<f64> {
        let mut st = seed;
        Array2::from_shape_fn((r, c), |_| {
            st = splitmix64(st);
            f64::from((((st >> 11) as f64 / (1u64 << 53) as f64 - 0.4) * scale) as f32)
        })
    }

    /// s_x·Σ_g |s_w,g·Σ_{k∈g} q_x (q_w − z_w)| per (m, n): the scale of f32 rounding in y.
    fn magnitude(x: &Int8Act, w: &Int4Weights) -> Array2<f64> {
        let (gpr, k) = (w.k / w.group, w.k);
        Array2::from_shape_fn((x.scale.len(), w.rows()), |(i, j)| {
            let sum: f64 = (0..gpr)
                .map(|g| {
                    let t: i64 = (g * w.group..(g + 1) * w.group)
                        .map(|kk| {
                            i64::from(x.codes[i * k + kk])
                                * (i64::from(w.codes[j * k + kk]) - i64::from(w.zero[j * gpr + g]))
                        })
                        .sum();
                    (f64::from(w.scale[j * gpr + g]) * t as f64).abs()
                })
                .sum();
            f64::from(x.scale[i]) * sum
        })
    }

    #[test]
    fn cuda_w4a8_matches_the_integer_reference_on_its_codes() {
        let gpu = crate::common::gpu().expect("GPU").gpu().expect("GPU");
        for codec in [WeightCodec::Symmetric, WeightCodec::Asymmetric] {
            for (m, n, k, g) in [
                (1, 1536, 512, 128),
                (4, 512, 512, 128),
                (16, 96, 1024, 64),
                (7, 33, 96, 32),
                (16, 4096, 512, 128),
                (5, 200, 1536, 96),
                (16, 64, 4096, 128),
            ] {
                let (x, w) = (mat(m, k, 1, 3.0), mat(n, k, 2, 0.2));
                let qw = quantize_weights(w.view(), g, codec).expect("weights");
                let dw = DeviceWeights::upload(gpu, &qw).expect("upload");
                let xd = gpu
                    .upload(&x.iter().map(|&v| v as f32).collect::<Vec<_>>())
                    .expect("x");
                let (two, one) = (
                    Acts::new(gpu, m, k).expect("acts"),
                    Acts::new(gpu, m, k).expect("acts"),
                );
                let (y2, y1) = (
                    gpu.alloc::<f32>(m * n).expect("y"),
                    gpu.alloc::<f32>(m * n).expect("y"),
                );
                quant_x(gpu, &xd, &two).expect("quant");
                gemm_small(gpu, &two, &dw, &y2).expect("gemm");
                linear(gpu, &xd, &one, &dw, &y1).expect("linear");
                let (codes, scale) = (two.codes().expect("codes"), two.scales().expect("scales"));
                let path = if fuses(m, k) { "fused" } else { "2-launch" };
                assert_eq!(codes, one.codes().expect("codes"), "{codec:?} {path} codes");
                assert_eq!(scale, one.scales().expect("scales"), "{codec:?} {path} s_x");
                for (i, (&q, &xv)) in codes.iter().zip(x.iter()).enumerate() {
                    let off = (f64::from(q) - xv / f64::from(scale[i / k])).abs();
                    assert!(
                        off <= 0.5 + 1e-4,
                        "{codec:?} code {i}: {q} for {xv}/{}",
                        scale[i / k]
                    );
                }
                let reference = quantize_activations(x.view()).expect("acts");
                let differ = codes
                    .iter()
                    .zip(&reference.codes)
                    .filter(|(a, b)| a != b)
                    .count();
                assert!(
                    differ <= codes.len() / 1000,
                    "{differ} activation codes differ from the reference quantiser's"
                );
                let own = Int8Act { k, codes, scale };
                let want = gemm_exact(&own, &qw).expect("reference");
                let mag = magnitude(&own, &qw);
                let partials = if g % 128 == 0 { k / 128 } else { k / 32 };
                let tol = (partials + 10) as f64 * 2f64.powi(-24);
                for (y, name) in [(&y2, "2-launch"), (&y1, path)] {
                    let got = y.to_vec().expect("y");
                    for ((a, b), s) in got.iter().zip(want.iter()).zip(mag.iter()) {
                        assert!(
                            (f64::from(*a) - b).abs() <= tol * s + 1e-30,
                            "{codec:?} {name} ({m}, {n}, {k}, G{g}): {a} vs {b} (scale {s})"
                        );
                    }
                }
            }
        }
    }
}
