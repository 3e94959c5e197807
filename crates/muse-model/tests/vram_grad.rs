//! The VRAM study's baseline transformer (`muse_reference::baseline`) against PyTorch's own
//! nn.TransformerEncoderLayer stack (`ci/baselines/torch_vram.py --fixture fixtures/vram/baseline`,
//! float64, eval mode): the logits and the autograd gradient of every tensor of the mean
//! cross-entropy, with PyTorch's weights.

mod common;

use std::collections::BTreeMap;

use muse_reference::baseline::{backward, forward, BaselineWeights};
use muse_reference::model::grad::cross_entropy;
use ndarray::{Array2, Array3};
use ndarray_npy::read_npy;
use safetensors::SafeTensors;

fn tensors(bytes: &[u8]) -> BTreeMap<String, (Vec<usize>, Vec<f64>)> {
    SafeTensors::deserialize(bytes)
        .expect("safetensors")
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            let v = t
                .data()
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect();
            (n, (t.shape().to_vec(), v))
        })
        .collect()
}

/// The torch names of the baseline's tensors, in `BaselineWeights::for_each_param` order.
fn torch_names(layers: usize) -> Vec<String> {
    let mut out = vec!["embedding.weight".to_string()];
    for i in 0..layers {
        let l = format!("transformer.layers.{i}");
        for n in [
            "self_attn.in_proj_weight",
            "self_attn.in_proj_bias",
            "self_attn.out_proj.weight",
            "self_attn.out_proj.bias",
            "linear1.weight",
            "linear1.bias",
            "linear2.weight",
            "linear2.bias",
            "norm1.weight",
            "norm1.bias",
            "norm2.weight",
            "norm2.bias",
        ] {
            out.push(format!("{l}.{n}"));
        }
    }
    out.extend(["output.weight".to_string(), "output.bias".to_string()]);
    out
}

/// Fills `w` tensor by tensor from `src` (for_each_param visits tensors in `torch_names` order).
fn fill(w: &mut BaselineWeights, src: &BTreeMap<String, (Vec<usize>, Vec<f64>)>, layers: usize) {
    let flat: Vec<f64> = torch_names(layers)
        .iter()
        .flat_map(|n| src[n].1.iter().copied())
        .collect();
    let mut i = 0;
    w.for_each_param(&mut |_, v| {
        *v = flat[i];
        i += 1;
    });
    assert_eq!(i, flat.len());
}

#[test]
fn the_baseline_matches_pytorch_modules_and_autograd() {
    let dir = common::fixtures("../vram/baseline");
    let wt = tensors(&std::fs::read(dir.join("weights.safetensors")).expect("weights"));
    let gt = tensors(&std::fs::read(dir.join("grads.safetensors")).expect("grads"));
    let (v, d, layers, heads, ffn) = (50, 16, 2, 2, 32);
    let mut w = BaselineWeights::zeros(v, d, layers, heads, ffn);
    fill(&mut w, &wt, layers);
    let ids: Array2<i64> = read_npy(dir.join("ids.npy")).expect("ids");
    let targets: Array2<i64> = read_npy(dir.join("targets.npy")).expect("targets");
    let (ids, targets) = (ids.mapv(|t| t as usize), targets.mapv(|t| t as usize));
    let want: Array3<f64> = read_npy(dir.join("logits.npy")).expect("logits");
    let logits = forward(&w, ids.view());
    let scale = want.iter().fold(0f64, |a, x| a.max(x.abs()));
    let err = (&logits - &want).iter().fold(0f64, |a, x| a.max(x.abs())) / scale;
    assert!(err <= 1e-12, "logits {err:.3e}");
    let (_, dl) = cross_entropy(logits.view(), targets.view()).expect("ce");
    let g = backward(&w, ids.view(), dl.view());
    let mut want_g = BaselineWeights::zeros(v, d, layers, heads, ffn);
    fill(&mut want_g, &gt, layers);
    let (mut got, mut exp): (Vec<(String, f64)>, Vec<f64>) = (Vec::new(), Vec::new());
    g.clone()
        .for_each_param(&mut |n, x| got.push((n.to_string(), *x)));
    want_g.for_each_param(&mut |_, x| exp.push(*x));
    let mut worst: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for ((n, a), b) in got.iter().zip(&exp) {
        let e = worst.entry(n.clone()).or_insert((0.0, 0.0));
        e.0 = e.0.max((a - b).abs());
        e.1 = e.1.max(b.abs());
    }
    let bad: Vec<String> = worst
        .iter()
        .map(|(n, (d, s))| (n, d / s.max(1e-300)))
        .inspect(|(n, r)| eprintln!("{n}: {r:.2e}"))
        .filter(|(_, r)| r.is_nan() || *r > 1e-9)
        .map(|(n, r)| format!("{n}: {r:.3e}"))
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}
