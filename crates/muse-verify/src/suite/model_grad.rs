//! The model's exact gradient on every backend against PyTorch autograd through the repo's own
//! PyTorch model (`fixtures/model/grad`: `ci/baselines/torch_model.py --grad-fixture`, f64, the
//! oracle weights): one record per tensor, max|Δ| against an allclose bound. The CPU reference
//! (f64) at 1e-9 of the tensor's largest entry; CUDA (f32, fp32 GEMMs) at 1e-4 of it plus 1e-6 of
//! the whole gradient's largest entry (the f32 floor of near-cancelling scalar sums; see
//! crates/muse-model/tests/cuda_train.rs).

use std::collections::BTreeMap;

use muse_model::{named_tensors, Profile};
use muse_reference::model::grad::loss_and_grad;
use muse_reference::Backend;
use ndarray::Array2;

use super::model::{fail, load, read_ids};
use crate::fixtures::Manifest;
use crate::report::Site;
use crate::{Record, Target};

/// The case's name.
pub const CASE: &str = "model/grad/torch_autograd";

fn tensors(case: &str, bytes: &[u8]) -> crate::Result<(f64, BTreeMap<String, Vec<f64>>)> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| fail(case, e))?;
    let loss = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("loss"))
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| fail(case, "grads.safetensors has no `loss` in its header"))?;
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| fail(case, e))?;
    let out = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            let v = t
                .data()
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("chunks of 8")))
                .collect();
            (n, v)
        })
        .collect();
    Ok((loss, out))
}

/// Runs the case on `B`.
pub(super) fn run<B: Backend>(_be: &B, m: &Manifest) -> crate::Result<Vec<Record>> {
    let root = m.root.join("model");
    let dir = root.join("grad");
    let model = load(CASE, &root.join("oracle"), {
        let p = root.join("oracle").join("config.json");
        muse_model::Config::resolve(&p.to_string_lossy()).map_err(|e| fail(CASE, e))?
    })?;
    let ids: Array2<usize> = read_ids(dir.join("ids.npy"))?;
    let targets: Array2<usize> = read_ids(dir.join("targets.npy"))?;
    let bytes = std::fs::read(dir.join("grads.safetensors")).map_err(|e| fail(CASE, e))?;
    let (want_loss, torch) = tensors(CASE, &bytes)?;
    let (loss, g, dtype, (rtol, atol)) = if B::NAME == "cuda" {
        let (l, g) = model
            .loss_and_grad_cuda(ids.view(), targets.view())
            .map_err(|e| fail(CASE, e))?;
        (l, g, "f32", (1e-4, 1e-6))
    } else {
        let w = model.weights().model::<f64>();
        let d = model.config().dims();
        let num = Profile::Exact.numerics();
        let (l, g) =
            loss_and_grad(&d, &w, &num, ids.view(), targets.view()).map_err(|e| fail(CASE, e))?;
        (l, g, "f64", (1e-9, 0.0))
    };
    let global = torch.values().flatten().fold(0f64, |a, v| a.max(v.abs()));
    let shape = [ids.nrows(), ids.ncols()];
    let mut out = Vec::new();
    let record = |kernel: &str, metric: &str, value: f64, bound: f64| {
        Site {
            kernel,
            backend: B::NAME,
            case: CASE,
            shape: &shape,
            dtype,
        }
        .record(metric, value, "", Some(Target::AtMost(bound)))
    };
    let loss_bound = if dtype == "f32" { 1e-5 } else { 1e-12 };
    out.push(record(
        "model/grad/loss",
        "rel_err",
        (loss - want_loss).abs() / want_loss.abs(),
        loss_bound,
    ));
    for (name, got) in named_tensors(&g) {
        let Some(want) = torch.get(&name) else {
            continue; // attention_bias: no autograd gradient in the exact path
        };
        let scale = want.iter().fold(0f64, |a, v| a.max(v.abs()));
        let err = got
            .iter()
            .zip(want)
            .fold(0f64, |a, (x, y)| a.max((x - y).abs()));
        let bound = rtol * scale + atol * global;
        out.push(record(
            &format!("model/grad/{name}"),
            "max_abs_err",
            err,
            bound,
        ));
    }
    Ok(out)
}
