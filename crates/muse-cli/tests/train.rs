//! `muse train` and `muse generate` end to end on the CPU: a few steps on a fixed text write the
//! run's files and a falling loss, generation is deterministic for a seed, and bad input exits 2
//! naming the argument.

mod common;

use std::path::PathBuf;

use common::{muse, stderr};

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/train")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn train_args<'a>(cfg: &'a str, data: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--config",
        cfg,
        "--data",
        data,
        "--steps",
        "8",
        "--out",
        out,
        "--batch",
        "2",
        "--seq",
        "16",
        "--lr",
        "0.03",
        "--warmup",
        "2",
        "--eval-every",
        "4",
        "--eval-tokens",
        "64",
        "--held-out",
        "0.15",
        "--seed",
        "3",
    ]
}

#[test]
fn train_then_generate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, data) = (fixture("nano-gpt2.json"), fixture("genesis-1.txt"));
    let out = dir.path().join("run").to_string_lossy().into_owned();
    let o = muse(&train_args(&cfg, &data, &out), dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let log = std::fs::read_to_string(dir.path().join("run/log.jsonl")).expect("log");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 8);
    let loss = |i: usize| lines[i]["loss"].as_f64().expect("loss");
    assert!(loss(7) < loss(0) - 0.3, "{} → {}", loss(0), loss(7));
    assert!(lines[7]["eval_ppl"]
        .as_f64()
        .is_some_and(|p| p.is_finite() && p > 1.0));
    assert!(dir.path().join("run/loss.svg").is_file());

    let weights = dir
        .path()
        .join("run/weights.safetensors")
        .to_string_lossy()
        .into_owned();
    let gen = |seed: &str| {
        let o = muse(
            &[
                "generate",
                "--weights",
                &weights,
                "--prompt",
                "And God said",
                "--max-new-tokens",
                "6",
                "--temperature",
                "0.9",
                "--top-k",
                "50",
                "--seed",
                seed,
            ],
            dir.path(),
        );
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let a = gen("1");
    assert!(a.starts_with("And God said"), "{a}");
    assert_eq!(a, gen("1"), "the same seed gives the same text");

    // Refusals: exit 2, the argument named.
    let bad = |args: Vec<&str>, what: &str| {
        let o = muse(&args, dir.path());
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(what), "{args:?}: {}", stderr(&o));
    };
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let empty = empty.to_string_lossy().into_owned();
    bad(train_args(&cfg, &empty, &out), "--data");
    bad(train_args(&cfg, "/nonexistent/kjv.txt", &out), "--data");
    bad(train_args("tiny", &data, &out), "vocab_size");
    let mut short = train_args(&cfg, &data, &out);
    short[12] = "64"; // --seq 64 > n_seq 32
    bad(short, "--seq");
    let mut prec = train_args(&cfg, &data, &out);
    prec.extend(["--precision", "bf16"]);
    bad(prec, "--precision");
    bad(
        vec!["generate", "--weights", &weights, "--prompt", ""],
        "--prompt",
    );
    bad(
        vec![
            "generate",
            "--weights",
            &weights,
            "--prompt",
            "x",
            "--top-k",
            "0",
        ],
        "--top-k",
    );
}
