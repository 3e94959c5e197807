//! muse's exact backward (the CPU reference, float64) against PyTorch autograd through the repo's
//! own PyTorch model (`ci/baselines/torch_model.py --grad-fixture fixtures/model/grad`, float64 on
//! the CPU): the mean cross-entropy and the gradient of every core tensor, on the oracle weights.

mod common;

use muse_model::{named_tensors, Profile};
use muse_reference::model::grad::loss_and_grad;

#[test]
fn gradients_match_pytorch_autograd() {
    let m = common::oracle_model();
    let common::TorchGrad {
        ids,
        targets,
        loss: want_loss,
        tensors: torch,
    } = common::torch_grad();

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
