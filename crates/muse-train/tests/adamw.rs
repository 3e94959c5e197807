//! muse's AdamW, clipping and schedule against PyTorch's own (`torch.optim.AdamW`,
//! `clip_grad_norm_`, a warm-up + cosine `LambdaLR`; fixtures/train/adamw.json written by
//! `ci/baselines/torch_adamw.py --fixture fixtures/train`), step by step in float64.

use muse_train::optim::{clip_grad_norm, cosine_lr, AdamState, AdamW};
use serde_json::Value;

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

#[test]
fn twelve_steps_match_pytorch() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/train/adamw.json"
    );
    let f: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    let num = |k: &str| f[k].as_f64().expect(k);
    let betas = floats(&f["betas"]);
    let opt = AdamW {
        lr: num("peak"),
        betas: (betas[0], betas[1]),
        eps: num("eps"),
        weight_decay: num("weight_decay"),
    };
    let (warmup, steps) = (num("warmup") as u64, num("steps") as u64);
    let mut p = floats(&f["params0"]);
    let mut state = AdamState::new(p.len());
    for (s, rec) in f["record"].as_array().expect("record").iter().enumerate() {
        let mut g = floats(&rec["grad"]);
        let lr = cosine_lr(s as u64, opt.lr, warmup, steps, num("min_ratio"));
        let want_lr = rec["lr"].as_f64().expect("lr");
        assert!(
            (lr - want_lr).abs() <= 1e-15 * want_lr,
            "step {s}: lr {lr} vs {want_lr}"
        );
        let norm = clip_grad_norm(&mut g, num("clip"));
        let want_norm = rec["norm"].as_f64().expect("norm");
        assert!(
            (norm - want_norm).abs() <= 1e-14 * want_norm,
            "step {s}: norm {norm} vs {want_norm}"
        );
        opt.step(&mut p, &g, &mut state, lr);
        let want = floats(&rec["params"]);
        let err = p
            .iter()
            .zip(&want)
            .fold(0f64, |a, (x, y)| a.max((x - y).abs()));
        assert!(err <= 1e-13, "step {s}: parameters differ by {err:.3e}");
    }
}
