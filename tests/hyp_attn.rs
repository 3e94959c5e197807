//! Hyperbolic attention on every backend: the registered verification cases (golden fixtures of
//! `fixtures/hyperbolic/gen.py`, generated tensor-core shapes, mask claims), random small shapes
//! against the CPU f64 reference, and typed errors for bad input.

use muse::reference::hyp_attn::{HypAttn, HypAttnArgs, Mask};
use muse::reference::{Dtype, Error};
use muse::verify::cases::hyp_attn_inputs;
use muse::Backend;
use proptest::prelude::*;

use crate::common::{registered_case_passes, test_backends};

test_backends! {
    #[case::n1_d1("n1_d1")]
    #[case::small_causal("small_causal")]
    #[case::d96_causal_not_truncated("d96_causal")]
    #[case::d256_dv64("d256_dv64")]
    #[case::window16_dv48("window16_dv48")]
    #[case::lm_window64("lm_window64")]
    #[case::decode_n1_m513("decode_n1_m513")]
    #[case::decode_n3_m513("decode_n3_m513")]
    #[case::large_norm_c0693("large_norm_c0.693")]
    #[case::large_norm_c001("large_norm_c0.01")]
    #[case::masked_rows("masked_rows")]
    #[case::c2_none_m_ne_n("c2_none_m_ne_n")]
    #[case::fast_bench_causal("fast_bench_causal")]
    #[case::flash_causal("flash_causal")]
    #[case::flash_large_norm("flash_large_norm")]
    #[case::gen_causal_d64("gen/causal_b2h2_n300_m300_d64_dv64")]
    #[case::gen_none_d128("gen/none_b1h2_n200_m333_d128_dv128")]
    #[case::gen_window64("gen/window64_b4h2_n256_m256_d64_dv64")]
    #[case::gen_decode_lengths("gen/causal_b2h2_n3_m1000_d64_dv64_lengths")]
    #[case::gen_odd_dims("gen/causal_b1h1_n130_m130_d200_dv72")]
    #[case::mask_causal("mask/causal")]
    #[case::mask_window("mask/window16")]
    fn registered_case_passes(name: &str);
}

fn forward_matches_cpu_f64<B: Backend>(be: &B) -> anyhow::Result<()> {
    let cases = crate::common::cases::<B>(256);
    let strategy = (
        1usize..=2,
        1usize..=2,
        1usize..=40,
        1usize..=40,
        1usize..=70,
        1usize..=20,
        0usize..3,
        1usize..=9,
        0u64..1000,
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases));
    runner
        .run(&strategy, |(b, h, n, m, d, dv, mk, w, seed)| {
            let mask = [Mask::None, Mask::Causal, Mask::Window(w)][mk];
            let m = if mk == 2 { n } else { m };
            let (q, k, v, _) = hyp_attn_inputs((b, h, n, m, d, dv), 0.693, seed);
            let args =
                HypAttnArgs::new(q.view(), k.view(), v.view(), 0.693, 1.1, mask).expect("valid");
            let want = muse::Cpu.hyp_attn(&args, Dtype::F64).expect("cpu");
            let got = be.hyp_attn(&args, Dtype::F32).expect("backend");
            let worst = got
                .o
                .iter()
                .zip(want.o.iter())
                .map(|(g, w)| (g - w).abs())
                .fold(0.0, f64::max);
            let scale = want.o.iter().fold(1.0f64, |a, x| a.max(x.abs()));
            prop_assert!(
                worst <= muse::verify::tolerance::tol::HYP_ATTN_F32_MAX * scale,
                "max|Δo| {}",
                worst
            );
            for (g, w) in got.lse.iter().zip(want.lse.iter()) {
                prop_assert!(
                    g == w || (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                    "lse {} vs {}",
                    g,
                    w
                );
            }
            Ok(())
        })
        .map_err(|e| anyhow::anyhow!("{e}"))
}

test_backends! {
    fn forward_matches_cpu_f64();
}

fn bad_input_is_a_typed_error_naming_the_argument<B: Backend>(be: &B) -> anyhow::Result<()> {
    let (q, k, v, _) = hyp_attn_inputs((1, 2, 4, 4, 8, 3), 1.0, 1);
    let arg = |e: Error| match e {
        Error::Domain { arg, .. }
        | Error::Shape { arg, .. }
        | Error::NonFinite { arg, .. }
        | Error::Empty { arg, .. } => arg,
        other => panic!("unexpected error {other}"),
    };
    let new =
        |c: f64, beta: f64, mask| HypAttnArgs::new(q.view(), k.view(), v.view(), c, beta, mask);
    assert_eq!(arg(new(0.0, 1.0, Mask::None).unwrap_err()), "c");
    assert_eq!(arg(new(-1.0, 1.0, Mask::None).unwrap_err()), "c");
    assert_eq!(arg(new(f64::INFINITY, 1.0, Mask::None).unwrap_err()), "c");
    assert_eq!(arg(new(1.0, f64::NAN, Mask::None).unwrap_err()), "beta");
    assert_eq!(arg(new(1.0, 1.0, Mask::Window(0)).unwrap_err()), "mask");
    let k5 = hyp_attn_inputs((1, 2, 4, 5, 8, 3), 1.0, 1).1;
    let v5 = hyp_attn_inputs((1, 2, 4, 5, 8, 3), 1.0, 1).2;
    assert_eq!(
        arg(
            HypAttnArgs::new(q.view(), k5.view(), v5.view(), 1.0, 1.0, Mask::Window(2))
                .unwrap_err()
        ),
        "mask"
    );
    let k_d = hyp_attn_inputs((1, 2, 4, 4, 7, 3), 1.0, 1).1;
    assert_eq!(
        arg(HypAttnArgs::new(q.view(), k_d.view(), v.view(), 1.0, 1.0, Mask::None).unwrap_err()),
        "k"
    );
    let v_m = hyp_attn_inputs((1, 2, 4, 6, 8, 3), 1.0, 1).2;
    assert_eq!(
        arg(HypAttnArgs::new(q.view(), k.view(), v_m.view(), 1.0, 1.0, Mask::None).unwrap_err()),
        "v"
    );
    let mut qn = q.clone();
    qn[[0, 1, 2, 3]] = f64::NAN;
    assert_eq!(
        arg(HypAttnArgs::new(qn.view(), k.view(), v.view(), 1.0, 1.0, Mask::None).unwrap_err()),
        "q"
    );
    // A valid call still works on this backend after the refusals.
    let ok = new(1.0, 1.0, Mask::Causal)?;
    anyhow::ensure!(be
        .hyp_attn(&ok, Dtype::F32)?
        .o
        .iter()
        .all(|x| x.is_finite()));
    Ok(())
}

test_backends! {
    fn bad_input_is_a_typed_error_naming_the_argument();
}
