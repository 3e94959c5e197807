//! The W4A8 GEMM on the GPU (`muse_cuda::w4a8`: the small-M kernels and, for M > 16, the tiled
//! `gemm_large`) against the reference (design hyperbolic.md §8.3, §16 test (a)): the device's
//! activation codes within half a step of x/s_x (and equal to the reference quantiser's but for
//! near-ties), the same from every path, and y equal to the reference's integer arithmetic on the
//! device's own codes to f32 rounding: |y − y_ref| ≤ (P + 10)·2⁻²⁴·s_x·Σ_g |s_w,g·T_g| with P the
//! kernel's f32 partials (K/128, or K/32 when G % 128 ≠ 0), for symmetric and asymmetric weights.
//! Run on the GPU machine (`--features cuda`).

#[cfg(feature = "cuda")]
mod gpu {
    use muse::reference::splitmix64;
    use muse::reference::w4a8::{
        gemm_exact, quantize_activations, quantize_weights, Int4Weights, Int8Act, WeightCodec,
    };
    use muse::Error;
    use muse_cuda::w4a8::{fuses, gemm_large, gemm_small, linear, quant_x, Acts, DeviceWeights};
    use muse_cuda::{Buf, Gpu};
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

    /// Asserts the device's codes lie within half a step of x/s_x and differ from the reference
    /// quantiser's in at most 1 in 1000 (near-ties); returns them as the reference's type.
    fn checked_codes(acts: &Acts, x: &Array2<f64>, what: &str) -> Int8Act {
        let k = acts.k;
        let (codes, scale) = (acts.codes().expect("codes"), acts.scales().expect("scales"));
        for (i, (&q, &xv)) in codes.iter().zip(x.iter()).enumerate() {
            let off = (f64::from(q) - xv / f64::from(scale[i / k])).abs();
            assert!(
                off <= 0.5 + 1e-4,
                "{what} code {i}: {q} for {xv}/{}",
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
            "{what}: {differ} activation codes differ from the reference quantiser's"
        );
        Int8Act { k, codes, scale }
    }

    /// One shape's operands on the device: x, its weights quantised and uploaded, and an
    /// activation buffer and an output for each of the two paths a test compares.
    struct Case {
        x: Array2<f64>,
        qw: Int4Weights,
        dw: DeviceWeights,
        xd: Buf<f32>,
        two: Acts,
        one: Acts,
        y2: Buf<f32>,
        y1: Buf<f32>,
    }

    impl Case {
        fn new(gpu: &'static Gpu, (m, n, k, g): Shape, codec: WeightCodec, seed: u64) -> Self {
            let (x, w) = (mat(m, k, seed, 3.0), mat(n, k, seed + 1, 0.2));
            let qw = quantize_weights(w.view(), g, codec).expect("weights");
            let xd = gpu
                .upload(&x.iter().map(|&v| v as f32).collect::<Vec<_>>())
                .expect("x");
            Self {
                dw: DeviceWeights::upload(gpu, &qw).expect("upload"),
                two: Acts::new(gpu, m, k).expect("acts"),
                one: Acts::new(gpu, m, k).expect("acts"),
                y2: gpu.alloc::<f32>(m * n).expect("y"),
                y1: gpu.alloc::<f32>(m * n).expect("y"),
                x,
                qw,
                xd,
            }
        }

        /// The reference product on the device's codes in `two` (checked, and equal to those
        /// in `one`), and its f32 rounding scale.
        fn reference(&self, what: &str) -> (Array2<f64>, Array2<f64>) {
            let own = checked_codes(&self.two, &self.x, what);
            assert_eq!(own.codes, self.one.codes().expect("codes"), "{what} codes");
            assert_eq!(own.scale, self.one.scales().expect("scales"), "{what} s_x");
            (
                gemm_exact(&own, &self.qw).expect("reference"),
                magnitude(&own, &self.qw),
            )
        }
    }

    /// (M, N, K, G).
    type Shape = (usize, usize, usize, usize);

    /// Asserts |y − want| ≤ (P + 10)·2⁻²⁴·magnitude for every output (module comment).
    fn assert_close(
        y: &[f32],
        want: &Array2<f64>,
        mag: &Array2<f64>,
        k: usize,
        g: usize,
        what: &str,
    ) {
        let partials = if g % 128 == 0 { k / 128 } else { k / 32 };
        let tol = (partials + 10) as f64 * 2f64.powi(-24);
        assert_eq!(y.len(), want.len(), "{what}: y length");
        for (i, ((a, b), s)) in y.iter().zip(want.iter()).zip(mag.iter()).enumerate() {
            assert!(
                (f64::from(*a) - b).abs() <= tol * s + 1e-30,
                "{what} output {i}: {a} vs {b} (scale {s})"
            );
        }
    }

    #[test]
    fn cuda_w4a8_large_m_matches_the_integer_reference() {
        let gpu = crate::common::gpu().expect("GPU").gpu().expect("GPU");
        for codec in [WeightCodec::Symmetric, WeightCodec::Asymmetric] {
            for (m, n, k, g) in [
                (17, 40, 96, 32),
                (100, 200, 384, 128),
                (129, 1536, 512, 128),
                (1024, 1536, 512, 128),
                (300, 72, 1024, 64),
            ] {
                let c = Case::new(gpu, (m, n, k, g), codec, 3);
                quant_x(gpu, &c.xd, &c.two).expect("quant");
                gemm_large(gpu, &c.two, &c.dw, &c.y2).expect("gemm_large");
                linear(gpu, &c.xd, &c.one, &c.dw, &c.y1).expect("linear");
                assert!(!fuses(m, k), "M = {m} > 16 never fuses");
                assert!(
                    matches!(
                        gemm_small(gpu, &c.two, &c.dw, &c.y2),
                        Err(Error::Domain { arg: "x", .. })
                    ),
                    "gemm_small must refuse M = {m} > 16"
                );
                let what = format!("{codec:?} ({m}, {n}, {k}, G{g})");
                let (want, mag) = c.reference(&format!("{what} linear's"));
                let (got2, got1) = (c.y2.to_vec().expect("y"), c.y1.to_vec().expect("y"));
                assert_close(&got2, &want, &mag, k, g, &format!("{what} gemm_large"));
                assert_close(&got1, &want, &mag, k, g, &format!("{what} linear"));
                assert_eq!(
                    got1, got2,
                    "{what}: linear and quant_x + gemm_large agree bitwise"
                );
            }
        }
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
                let c = Case::new(gpu, (m, n, k, g), codec, 1);
                quant_x(gpu, &c.xd, &c.two).expect("quant");
                gemm_small(gpu, &c.two, &c.dw, &c.y2).expect("gemm");
                linear(gpu, &c.xd, &c.one, &c.dw, &c.y1).expect("linear");
                let path = if fuses(m, k) { "fused" } else { "2-launch" };
                let what = format!("{codec:?} ({m}, {n}, {k}, G{g})");
                let (want, mag) = c.reference(&format!("{what} {path}"));
                for (y, name) in [(&c.y2, "2-launch"), (&c.y1, path)] {
                    let got = y.to_vec().expect("y");
                    assert_close(&got, &want, &mag, k, g, &format!("{what} {name}"));
                }
            }
        }
    }
}
