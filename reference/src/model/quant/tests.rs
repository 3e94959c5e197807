use ndarray::{Array2, Array3};

use super::*;
use crate::model::{
    forward, window_attention, window_attention_with, AttnPath, LocalAttn, ModelDims, ModelWeights,
    Numerics,
};
use crate::testing::{active_weights, uniform};
use crate::w4a8::error_bound;

fn mat(r: usize, c: usize, seed: u64, scale: f64) -> Array2<f64> {
    let mut rng = uniform(seed);
    Array2::from_shape_fn((r, c), |_| scale * rng())
}

/// The projection is `gemm_exact` of the codes of x (per token) and W (per row and group), bit for
/// bit, at the design's G = 128 and at a width G does not divide (K = 32: groups of 32); against
/// the float product it stays within `w4a8::error_bound`.
#[test]
fn w4a8_projection_is_gemm_exact_of_the_codes() {
    for (k, out, g, codec) in [
        (256, 24, 128, WeightCodec::Symmetric),
        (32, 32, 32, WeightCodec::Symmetric),
        (96, 8, 32, WeightCodec::Asymmetric),
    ] {
        let proj = W4a8Proj {
            group: if k == 96 { 32 } else { 128 },
            codec,
        };
        assert_eq!(proj.group_for(k).unwrap(), g);
        let (b, n) = (2, 5);
        let w = mat(out, k, 1, 0.3);
        let x =
            Array3::from_shape_vec((b, n, k), mat(b * n, k, 2, 2.0).into_raw_vec_and_offset().0)
                .unwrap();
        let got = w4a8_linear(&w, x.view(), proj).unwrap();
        let x2 = x.to_shape((b * n, k)).unwrap().to_owned();
        let (qx, qw) = (
            quantize_activations(x2.view()).unwrap(),
            quantize_weights(w.view(), g, codec).unwrap(),
        );
        let want = gemm_exact(&qx, &qw).unwrap();
        let got2 = got.to_shape((b * n, out)).unwrap().to_owned();
        assert_eq!(got2, want, "K = {k}");
        let bound = error_bound(x2.view(), w.view(), &qx, &qw);
        let float = x2.dot(&w.t());
        let mut worst = 0.0f64;
        for ((a, f), e) in got2.iter().zip(&float).zip(&bound) {
            assert!(
                (a - f).abs() <= e * (1.0 + 1e-9),
                "K = {k}: {a} vs {f}, bound {e}"
            );
            worst = worst.max((a - f).abs());
        }
        assert!(worst > 0.0, "K = {k}: the 4-bit weights changed nothing");
        // in f32 the same values, rounded once
        let got32 = w4a8_linear(&w.mapv(|v| v as f32), x.mapv(|v| v as f32).view(), proj);
        let got32 = got32.unwrap().to_shape((b * n, out)).unwrap().to_owned();
        let x32 = x2.mapv(|v| f64::from(v as f32));
        let w32 = w.mapv(|v| f64::from(v as f32));
        let want32 = gemm_exact(
            &quantize_activations(x32.view()).unwrap(),
            &quantize_weights(w32.view(), g, codec).unwrap(),
        )
        .unwrap();
        assert_eq!(got32, want32.mapv(|v| v as f32));
    }
    let odd = W4a8Proj::DEFAULT.group_for(33).unwrap_err().to_string();
    assert!(odd.contains("`group`") && odd.contains("33"), "{odd}");
}

#[test]
fn quant_names_round_trip_and_bad_names_are_rejected() {
    let asym = W4a8Proj {
        group: 64,
        codec: WeightCodec::Asymmetric,
    };
    for q in [
        Quant::NONE,
        Quant {
            w4a8: Some(W4a8Proj::DEFAULT),
            int8_logits: false,
        },
        Quant {
            w4a8: None,
            int8_logits: true,
        },
        Quant {
            w4a8: Some(W4a8Proj::DEFAULT),
            int8_logits: true,
        },
        Quant {
            w4a8: Some(asym),
            int8_logits: true,
        },
    ] {
        assert_eq!(q.name().parse::<Quant>(), Ok(q), "{}", q.name());
    }
    assert_eq!(
        "int8-logits+w4a8".parse::<Quant>().map(Quant::name),
        Ok("w4a8+int8-logits".to_string())
    );
    assert_eq!(
        "w4a8:g64:asym+int8-logits".parse::<Quant>().unwrap().w4a8,
        Some(asym)
    );
    for bad in [
        "",
        "int8",
        "w4a8+w4a8",
        "w4a8:g3",
        "w4a8:fp8",
        "int8-logits+int8-logits",
    ] {
        assert!(bad.parse::<Quant>().is_err(), "`{bad}` parsed");
    }
}

const DIMS: ModelDims = ModelDims {
    vocab: 50,
    d_model: 16,
    layers: 2,
    heads: 2,
    htt_rank: 4,
    n_seq: 12,
    window: 4,
    ssm_rank: 8,
    ssm_hidden: 4,
};

fn weights(seed: u64) -> ModelWeights<f64> {
    active_weights(&DIMS, seed)
}

/// Every quantisation moves the tiny model's logits by a small, non-zero amount, all finite, in
/// f64 and f32; `Quant::NONE` is the exact path bit for bit; compat paths and the backward refuse
/// a quantisation.
#[test]
fn quantised_logits_differ_slightly_and_are_finite() {
    let w = weights(7);
    let mut rng = uniform(8);
    let ids = Array2::from_shape_fn((2, DIMS.n_seq), |_| ((rng() + 1.0) * 25.0) as usize % 50);
    let exact = forward(&DIMS, &w, &Numerics::exact(), ids.view()).unwrap();
    let scale = exact.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (name, tol) in [
        ("int8-logits", 1e-2),
        ("w4a8", 0.2),
        ("w4a8+int8-logits", 0.2),
    ] {
        let num = Numerics {
            quant: name.parse().unwrap(),
            ..Numerics::exact()
        };
        let got = forward(&DIMS, &w, &num, ids.view()).unwrap();
        assert!(got.iter().all(|v| v.is_finite()), "{name}");
        let diff = (&got - &exact).iter().fold(0.0f64, |m, e| m.max(e.abs()));
        assert!(
            diff > 1e-9 * scale && diff < tol * scale,
            "{name}: max |Δlogit| {diff} of {scale}"
        );
        let r = Array3::zeros(exact.dim());
        assert!(crate::model::grad::backward(&DIMS, &w, &num, ids.view(), r.view()).is_err());
    }
    let none = Numerics {
        quant: Quant::NONE,
        ..Numerics::exact()
    };
    assert_eq!(forward(&DIMS, &w, &none, ids.view()).unwrap(), exact);

    let b0: &LocalAttn<f64> = &w.blocks[0].attn;
    let x = Array3::from_shape_vec((1, 12, 16), mat(12, 16, 9, 1.5).into_raw_vec_and_offset().0)
        .unwrap();
    let plain = window_attention(b0, x.view(), 2, 4, AttnPath::Exact).unwrap();
    let with = window_attention_with(b0, x.view(), 2, 4, AttnPath::Exact, Quant::NONE).unwrap();
    assert_eq!(plain, with);
    let int8: Quant = "int8-logits".parse().unwrap();
    for path in [AttnPath::TorchBall, AttnPath::FastBench { tf32: false }] {
        let err = window_attention_with(b0, x.view(), 2, 4, path, int8)
            .unwrap_err()
            .to_string();
        assert!(err.contains("int8-logits"), "{err}");
    }
    // a KV codec composes with the quantisations
    let kv = AttnPath::ExactKv(KvCodec::Fp16);
    assert!(window_attention_with(b0, x.view(), 2, 4, kv, int8).is_ok());
    // f32 (the evaluation's type): finite, small and non-zero changes too
    let f = |m: &Array2<f64>| m.mapv(|v| v as f32);
    let b32 = LocalAttn {
        wq: f(&b0.wq),
        wk: f(&b0.wk),
        wv: f(&b0.wv),
        wo: f(&b0.wo),
        log_c: b0.log_c as f32,
        beta: b0.beta as f32,
        bias: 0.0,
        bf16: false,
    };
    let x32 = x.mapv(|v| v as f32);
    let exact32 = window_attention(&b32, x32.view(), 2, 4, AttnPath::Exact).unwrap();
    let scale32 = exact32.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for name in ["int8-logits", "w4a8", "w4a8+int8-logits"] {
        let q: Quant = name.parse().unwrap();
        let got = window_attention_with(&b32, x32.view(), 2, 4, AttnPath::Exact, q).unwrap();
        let diff = (&got - &exact32).iter().fold(0.0f32, |m, e| m.max(e.abs()));
        assert!(
            got.iter().all(|v| v.is_finite()) && diff > 0.0 && diff < 0.2 * scale32,
            "{name} f32: {diff} of {scale32}"
        );
    }
}
