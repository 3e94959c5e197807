//! muse's exact backward (the CPU reference, float64) against PyTorch autograd through the repo's
//! own PyTorch model (`ci/baselines/torch_model.py --grad-fixture fixtures/model/grad`, float64 on
//! the CPU): the mean cross-entropy and the gradient of every core tensor, on the oracle weights.

mod common;

use std::collections::BTreeMap;

use muse_model::{named_tensors, Profile};
use muse_reference::model::grad::loss_and_grad;
use ndarray::Array2;
use ndarray_npy::read_npy;
use safetensors::{Dtype, SafeTensors};

#[test]
fn gradients_match_pytorch_autograd() {
    let dir = common::fixtures("grad");
    let m = common::oracle_model();
    let ids: Array2<i64> = read_npy(dir.join("ids.npy")).expect("ids");
    let targets: Array2<i64> = read_npy(dir.join("targets.npy")).expect("targets");
    let (ids, targets) = (ids.mapv(|t| t as usize), targets.mapv(|t| t as usize));
    let bytes = std::fs::read(dir.join("grads.safetensors")).expect("grads");
    let (_, header) = SafeTensors::read_metadata(&bytes).expect("header");
    let want_loss: f64 = header.metadata().as_ref().expect("metadata")["loss"]
        .parse()
        .expect("loss");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let torch: BTreeMap<String, Vec<f64>> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            assert_eq!(t.dtype(), Dtype::F64, "{n}");
            let v = t
                .data()
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect();
            (n, v)
        })
        .collect();

    let w = m.weights().model::<f64>();
    let dims = m.config().dims();
    let (loss, g) = loss_and_grad(
        &dims,
        &w,
        &Profile::Exact.numerics(),
        ids.view(),
        targets.view(),
    )
    .expect("backward");
    assert!(
        (loss - want_loss).abs() <= 1e-12 * want_loss,
        "loss {loss} vs torch {want_loss}"
    );
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, got) in named_tensors(&g) {
        let Some(want) = torch.get(&name) else {
            // attention_bias feeds only the compat path: no autograd gradient in the exact one.
            assert!(
                got.iter().all(|&v| v == 0.0),
                "{name}: muse has a gradient, torch none"
            );
            continue;
        };
        let scale = want.iter().fold(0f64, |a, v| a.max(v.abs())).max(1e-12);
        let err = got
            .iter()
            .zip(want)
            .fold(0f64, |a, (x, y)| a.max((x - y).abs()))
            / scale;
        eprintln!("{name}: max|Δ|/max|g| {err:.2e}");
        if err.is_nan() || err > 1e-9 {
            failures.push(format!("{name}: {err:.3e}"));
        }
        checked += 1;
    }
    assert_eq!(checked, torch.len(), "every torch gradient compared");
    assert!(failures.is_empty(), "{failures:#?}");
}
