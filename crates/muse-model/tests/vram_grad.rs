//! The VRAM study's two models against PyTorch (`ci/baselines/torch_vram.py --fixture`, float64,
//! eval mode): the logits and the autograd gradient of every tensor of the mean cross-entropy,
//! with PyTorch's weights. The baseline transformer (`muse_reference::baseline`) against PyTorch's
//! own nn.TransformerEncoderLayer stack (fixtures/vram/baseline); the memory-optimised model
//! (`muse_reference::memopt`, causal conv, true cumsum) against its PyTorch port `MemOpt` in
//! ci/baselines/torch_train_models.py (fixtures/vram/memopt, `--model memopt`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use muse_reference::baseline::{self, BaselineWeights};
use muse_reference::memopt::{self, MemOptWeights};
use muse_reference::model::grad::cross_entropy;
use muse_reference::model::{Conv, Scan};
use ndarray::{Array2, Array3};
use ndarray_npy::read_npy;
use safetensors::SafeTensors;

type Tensors = BTreeMap<String, (Vec<usize>, Vec<f64>)>;

/// A visit of every parameter in a fixed order (`for_each_param` of one model's weights).
type Visit<'a> = &'a mut dyn FnMut(&mut dyn FnMut(&str, &mut f64));

fn tensors(bytes: &[u8]) -> Tensors {
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

/// The torch names of `MemOpt`'s tensors, in `MemOptWeights::for_each_param` order. The HTT
/// cores keep their unit axes in torch ((v1, 1, r, d1), (v2, r, 1, d2)) and T_conv is (D, 1, 3):
/// the same row-major order as the reference's (v1, r, d1), (v2, r, d2) and (D, 3).
fn memopt_torch_names(layers: usize) -> Vec<String> {
    let mut out: Vec<String> = ["core1", "core2", "phase_shift"]
        .iter()
        .map(|n| format!("embedding.{n}"))
        .collect();
    for i in 0..layers {
        for n in [
            "ln1.weight",
            "ln1.bias",
            "ln2.weight",
            "ln2.bias",
            "ar_ssm.complexity_gate.0.weight",
            "ar_ssm.complexity_gate.0.bias",
            "ar_ssm.complexity_gate.2.weight",
            "ar_ssm.complexity_gate.2.bias",
            "ar_ssm.U_proj.weight",
            "ar_ssm.V_proj.weight",
            "ar_ssm.output_proj.weight",
            "ar_ssm.output_proj.bias",
            "ar_ssm.T_conv.weight",
            "ffn.net.0.weight",
            "ffn.net.0.bias",
            "ffn.net.3.weight",
            "ffn.net.3.bias",
            "ffn.net.6.weight",
            "ffn.net.6.bias",
            "ffn.net.9.weight",
            "ffn.net.9.bias",
        ] {
            out.push(format!("blocks.{i}.{n}"));
        }
    }
    for n in ["final_norm", "output_down", "output_up"] {
        out.extend([format!("{n}.weight"), format!("{n}.bias")]);
    }
    out
}

/// Fills the weights `visit` walks tensor by tensor from `src` (`visit` meets the tensors in
/// `names` order), checking that the i-th tensor it meets has as many values as `src[names[i]]`.
fn fill(visit: Visit<'_>, src: &Tensors, names: &[String]) {
    let mut runs: Vec<(String, usize)> = Vec::new();
    visit(&mut |n, _| match runs.last_mut() {
        Some((m, k)) if m == n => *k += 1,
        _ => runs.push((n.to_string(), 1)),
    });
    let sizes: Vec<(String, usize)> = names.iter().map(|n| (n.clone(), src[n].1.len())).collect();
    assert_eq!(runs.len(), sizes.len(), "{runs:?}\nvs torch {sizes:?}");
    for ((r, k), (t, m)) in runs.iter().zip(&sizes) {
        assert_eq!(k, m, "{r} ({k} values) vs torch {t} {:?}", src[t].0);
    }
    let mut flat = names.iter().flat_map(|n| src[n].1.iter().copied());
    visit(&mut |_, v| *v = flat.next().expect("as many values as the tensors"));
    assert!(flat.next().is_none());
}

/// The fixture in `dir`: weights, gradients, ids, targets and logits.
struct Fixture {
    weights: Tensors,
    grads: Tensors,
    ids: Array2<usize>,
    targets: Array2<usize>,
    logits: Array3<f64>,
}

fn fixture(dir: &Path) -> Fixture {
    let ids: Array2<i64> = read_npy(dir.join("ids.npy")).expect("ids");
    let targets: Array2<i64> = read_npy(dir.join("targets.npy")).expect("targets");
    Fixture {
        weights: tensors(&std::fs::read(dir.join("weights.safetensors")).expect("weights")),
        grads: tensors(&std::fs::read(dir.join("grads.safetensors")).expect("grads")),
        ids: ids.mapv(|t| t as usize),
        targets: targets.mapv(|t| t as usize),
        logits: read_npy(dir.join("logits.npy")).expect("logits"),
    }
}

/// max |logits − want| / max |want|, asserted ≤ 1e-12.
fn check_logits(logits: &Array3<f64>, want: &Array3<f64>) {
    assert_eq!(logits.dim(), want.dim());
    let scale = want.iter().fold(0f64, |a, x| a.max(x.abs()));
    let err = (logits - want).iter().fold(0f64, |a, x| a.max(x.abs())) / scale;
    eprintln!("logits: {err:.2e}");
    assert!(err <= 1e-12, "logits {err:.3e}");
}

/// Per tensor (the reference's names), max |got − want| / max |want|, printed, each asserted
/// ≤ 1e-9.
fn check_grads(got: Visit<'_>, want: Visit<'_>) {
    let (mut g, mut w): (Vec<(String, f64)>, Vec<f64>) = (Vec::new(), Vec::new());
    got(&mut |n, x| g.push((n.to_string(), *x)));
    want(&mut |_, x| w.push(*x));
    assert_eq!(g.len(), w.len());
    let mut worst: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for ((n, a), b) in g.iter().zip(&w) {
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

#[test]
fn the_baseline_matches_pytorch_modules_and_autograd() {
    let fx = fixture(&common::fixtures("../vram/baseline"));
    let (v, d, layers, heads, ffn) = (50, 16, 2, 2, 32);
    let names = torch_names(layers);
    let mut w = BaselineWeights::zeros(v, d, layers, heads, ffn);
    fill(&mut |f| w.for_each_param(f), &fx.weights, &names);
    let logits = baseline::forward(&w, fx.ids.view());
    check_logits(&logits, &fx.logits);
    let (_, dl) = cross_entropy(logits.view(), fx.targets.view()).expect("ce");
    let mut g = baseline::backward(&w, fx.ids.view(), dl.view());
    let mut want = BaselineWeights::zeros(v, d, layers, heads, ffn);
    fill(&mut |f| want.for_each_param(f), &fx.grads, &names);
    check_grads(&mut |f| g.for_each_param(f), &mut |f| {
        want.for_each_param(f)
    });
}

#[test]
fn the_memory_optimised_model_matches_pytorch_modules_and_autograd() {
    let dir = common::fixtures("../vram/memopt");
    let fx = fixture(&dir);
    // reference::memopt's unit-test shapes: V, D, L, HTT rank r, AR-SSM rank R, FFN f, head o.
    let (v, d, layers, r, rank, f, o) = (50, 16, 2, 4, 8, 8, 8);
    let (scan, conv) = (Scan::Cumsum, Conv::Causal); // MemOpt(causal=True): torch.cumsum
    let names = memopt_torch_names(layers);
    assert_eq!(
        names.iter().collect::<std::collections::BTreeSet<_>>(),
        fx.weights.keys().collect(),
        "every torch tensor is mapped, once"
    );
    let mut w = MemOptWeights::zeros(v, d, layers, r, rank, f, o);
    fill(&mut |f| w.for_each_param(f), &fx.weights, &names);
    let logits = memopt::forward(&w, fx.ids.view(), scan, conv);
    check_logits(&logits, &fx.logits);
    let (loss, dl) = cross_entropy(logits.view(), fx.targets.view()).expect("ce");
    let bytes = std::fs::read(dir.join("grads.safetensors")).expect("grads");
    let (_, meta) = SafeTensors::read_metadata(&bytes).expect("header");
    let want_loss: f64 = meta.metadata().as_ref().expect("metadata")["loss"]
        .parse()
        .expect("a float");
    eprintln!("loss {loss:.17} vs torch {want_loss:.17}");
    assert!((loss - want_loss).abs() <= 1e-12 * want_loss.abs());
    let mut g = memopt::backward(&w, fx.ids.view(), scan, conv, dl.view());
    let mut want = MemOptWeights::zeros(v, d, layers, r, rank, f, o);
    fill(&mut |f| want.for_each_param(f), &fx.grads, &names);
    let mut nonzero = BTreeMap::new();
    want.for_each_param(&mut |n, x| *nonzero.entry(n.to_string()).or_insert(false) |= *x != 0.0);
    assert!(nonzero.values().all(|&b| b), "a zero gradient: {nonzero:?}");
    check_grads(&mut |f| g.for_each_param(f), &mut |f| {
        want.for_each_param(f)
    });
}
