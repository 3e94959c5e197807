//! Ten whole training steps (exact gradient, global-norm clipping, warm-up + cosine, AdamW) from
//! the oracle weights against the same steps in PyTorch (the repo's PyTorch model with PyTorch's
//! own AdamW, clip_grad_norm_ and LambdaLR; `ci/baselines/torch_train.py --fixture
//! fixtures/model/train`, float64): the loss and the gradient norm of every step.

use std::path::PathBuf;

use muse_model::{Config, Model, Profile, Weights};
use muse_reference::model::grad::{for_each_param, loss_and_grad};
use muse_train::checkpoint::{flatten, unflatten};
use muse_train::optim::{clip_grad_norm, cosine_lr, AdamState, AdamW};
use ndarray::{s, Array3};
use ndarray_npy::read_npy;

#[test]
fn ten_steps_match_pytorch() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/model");
    let dir = fixtures.join("train");
    let f: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("losses.json")).expect("losses"))
            .expect("json");
    let num = |k: &str| f[k].as_f64().expect(k);
    let ids: Array3<i64> = read_npy(dir.join("ids.npy")).expect("ids");
    let targets: Array3<i64> = read_npy(dir.join("targets.npy")).expect("targets");
    let oracle = fixtures.join("oracle");
    let cfg = Config::resolve(&oracle.join("config.json").to_string_lossy()).expect("config");
    let m = Model::new(Weights::load(&cfg, &oracle.join("weights.safetensors")).expect("weights"));
    let dims = m.config().dims();
    let mut w = m.weights().model::<f64>();
    let opt = AdamW {
        lr: num("peak"),
        weight_decay: num("weight_decay"),
        ..AdamW::default()
    };
    let steps = num("steps") as u64;
    let mut state = AdamState::new(flatten(&w).len());
    let mut count = 0;
    for_each_param(&mut w.clone(), &mut |_, _| count += 1);
    assert_eq!(count, state.m.len());
    for s in 0..steps as usize {
        let x = ids.slice(s![s, .., ..]).mapv(|t| t as usize);
        let y = targets.slice(s![s, .., ..]).mapv(|t| t as usize);
        let (loss, g) =
            loss_and_grad(&dims, &w, &Profile::Exact.numerics(), x.view(), y.view()).expect("grad");
        let want = f["losses"][s].as_f64().expect("loss");
        assert!(
            (loss - want).abs() <= 1e-11 * want,
            "step {s}: loss {loss} vs torch {want}"
        );
        let mut gf = flatten(&g);
        let norm = clip_grad_norm(&mut gf, num("clip"));
        let want_norm = f["grad_norms"][s].as_f64().expect("norm");
        assert!(
            (norm - want_norm).abs() <= 1e-10 * want_norm,
            "step {s}: norm {norm} vs {want_norm}"
        );
        let lr = cosine_lr(
            s as u64,
            opt.lr,
            num("warmup") as u64,
            steps,
            num("min_ratio"),
        );
        let mut p = flatten(&w);
        opt.step(&mut p, &gf, &mut state, lr);
        unflatten(&mut w, &p);
    }
}
