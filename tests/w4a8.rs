//! The W4A8 small-M GEMM on the GPU (`muse_cuda::w4a8`) against the reference (design
//! hyperbolic.md §8.3, §16 test (a)): the device's activation codes within half a step of x/s_x
//! (and equal to the reference quantiser's but for near-ties), and y equal to the reference's
//! integer arithmetic on the device's own codes within 1e-5 relative, for symmetric and
//! asymmetric weights. Run on the GPU machine (`--features cuda`).

#[cfg(feature = "cuda")]
mod gpu {
    use muse::reference::splitmix64;
    use muse::reference::w4a8::{
        gemm_exact, quantize_activations, quantize_weights, Int8Act, WeightCodec,
    };
    use muse_cuda::w4a8::{gemm_small, quant_x, Acts, DeviceWeights};
    use ndarray::Array2;

    fn mat(r: usize, c: usize, seed: u64, scale: f64) -> Array2<f64> {
        let mut st = seed;
        Array2::from_shape_fn((r, c), |_| {
            st = splitmix64(st);
            f64::from((((st >> 11) as f64 / (1u64 << 53) as f64 - 0.4) * scale) as f32)
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
            ] {
                let (x, w) = (mat(m, k, 1, 3.0), mat(n, k, 2, 0.2));
                let qw = quantize_weights(w.view(), g, codec).expect("weights");
                let dw = DeviceWeights::upload(gpu, &qw).expect("upload");
                let xd = gpu
                    .upload(&x.iter().map(|&v| v as f32).collect::<Vec<_>>())
                    .expect("x");
                let acts = Acts::new(gpu, m, k).expect("acts");
                quant_x(gpu, &xd, &acts).expect("quant");
                let y = gpu.alloc::<f32>(m * n).expect("y");
                gemm_small(gpu, &acts, &dw, &y).expect("gemm");
                let (codes, scale) = (
                    acts.xq.to_vec().expect("codes"),
                    acts.sx.to_vec().expect("scales"),
                );
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
                let got = y.to_vec().expect("y");
                for (a, b) in got.iter().zip(want.iter()) {
                    assert!(
                        (f64::from(*a) - b).abs() <= 1e-5 * b.abs().max(1e-2),
                        "{codec:?} ({m}, {n}, {k}): {a} vs {b}"
                    );
                }
            }
        }
    }
}
