//! `muse model info|init|run` end to end: parameter counts as the original's, init → run round
//! trips (B = 1 included), the parity fixture reproduced through the CLI, and every refusal of the
//! issue's contract (exit code 2, the argument or tensor named).

mod common;

use std::path::{Path, PathBuf};

use ndarray::{Array2, Array3};
use ndarray_npy::{read_npy, write_npy};

use common::{muse, stderr};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/model/parity")
}

fn init_tiny(dir: &Path) {
    let o = muse(
        &[
            "model",
            "init",
            "--config",
            "tiny",
            "--seed",
            "5",
            "--out",
            "w.safetensors",
        ],
        dir,
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `muse model run --config C --weights W --ids I --out O <extra…>` in `dir`.
fn model_run(
    dir: &Path,
    [config, weights, ids, out]: [&str; 4],
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "model",
        "run",
        "--config",
        config,
        "--weights",
        weights,
        "--ids",
        ids,
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    muse(&args, dir)
}

#[test]
fn info_prints_the_originals_totals() {
    let dir = tempfile::tempdir().unwrap();
    for (cfg, total) in [("small", "10619295"), ("medium", "77902839")] {
        let o = muse(&["model", "info", "--config", cfg], dir.path());
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        let line = out
            .lines()
            .find(|l| l.starts_with("total"))
            .expect("a total line");
        assert!(line.ends_with(total), "{cfg}: {line}");
    }
    // A JSON config with the original's keys (the small shape at n_seq 512).
    std::fs::write(
        dir.path().join("c.json"),
        r#"{"vocab_size": 50257, "d_model": 512, "n_layers": 8, "num_heads": 8, "htt_rank": 16, "n_seq": 512,
            "use_triton_kernel": true, "triton_kernel_version": "fast"}"#,
    )
    .unwrap();
    let o = muse(&["model", "info", "--config", "c.json"], dir.path());
    assert!(
        stdout(&o)
            .lines()
            .any(|l| l.starts_with("total") && l.ends_with("10750367")),
        "{}",
        stdout(&o)
    );
    std::fs::write(
        dir.path().join("bad.json"),
        r#"{"vocab_size": 5, "d_model": 4, "n_layers": 1, "n_seq": 4, "n_head": 2}"#,
    )
    .unwrap();
    let o = muse(&["model", "info", "--config", "bad.json"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown field `n_head`"),
        "{}",
        stderr(&o)
    );
    let o = muse(&["model", "info", "--config", "huge"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("`--config huge`"), "{}", stderr(&o));
}

#[test]
fn init_then_run_writes_finite_logits_at_b1() {
    let dir = tempfile::tempdir().unwrap();
    init_tiny(dir.path());
    let ids = Array2::from_shape_fn((1, 100), |(_, n)| (n * 37 % 1000) as i32);
    write_npy(dir.path().join("ids.npy"), &ids).unwrap();
    for (profile, precision) in [
        ("exact", "f32"),
        ("bench", "f32"),
        ("bench-cpu", "f32"),
        ("exact", "bf16"),
    ] {
        let out = format!("{profile}-{precision}");
        let o = model_run(
            dir.path(),
            ["tiny", "w.safetensors", "ids.npy", &out],
            &["--profile", profile, "--precision", precision],
        );
        assert!(o.status.success(), "{profile}: {}", stderr(&o));
        assert!(
            stdout(&o).contains("next token (argmax at position 99) of sequence 0:"),
            "{}",
            stdout(&o)
        );
        let logits: Array3<f32> = read_npy(dir.path().join(&out).join("logits.npy")).unwrap();
        assert_eq!(logits.dim(), (1, 100, 1000));
        assert!(logits.iter().all(|v| v.is_finite()));
        // Not degenerate: the logits vary over the vocabulary.
        let row = logits.slice(ndarray::s![0, 99, ..]);
        let (lo, hi) = row
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        assert!(hi - lo > 1e-3, "{profile}: {lo} .. {hi}");
    }
}

#[test]
fn run_reproduces_the_originals_logits_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let w = fixtures().join("weights.safetensors");
    let ids = fixtures().join("ids.npy");
    let o = model_run(
        dir.path(),
        ["tiny", w.to_str().unwrap(), ids.to_str().unwrap(), "o"],
        &["--profile", "bench-cpu"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let got: Array3<f32> = read_npy(dir.path().join("o/logits.npy")).unwrap();
    let want: Array3<f32> = read_npy(fixtures().join("logits_cpu.npy")).unwrap();
    let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
    let err = got
        .iter()
        .zip(&want)
        .fold(0f32, |a, (g, w)| a.max((g - w).abs()));
    assert!(err <= 1e-4 * scale, "{err} vs {scale}");
}

#[test]
fn bad_input_exits_2_naming_the_argument() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init_tiny(d);
    write_npy(d.join("ok.npy"), &Array2::<i64>::zeros((2, 8))).unwrap();
    write_npy(d.join("big.npy"), &Array2::<i64>::from_elem((1, 4), 1000)).unwrap();
    write_npy(d.join("neg.npy"), &Array2::<i64>::from_elem((1, 4), -1)).unwrap();
    write_npy(d.join("long.npy"), &Array2::<i64>::zeros((1, 129))).unwrap();
    write_npy(d.join("rank3.npy"), &Array3::<i64>::zeros((1, 2, 3))).unwrap();
    write_npy(d.join("float.npy"), &Array2::<f32>::zeros((1, 4))).unwrap();
    let run = |ids: &str, extra: &[&str]| {
        let o = model_run(d, ["tiny", "w.safetensors", ids, "o"], extra);
        assert_eq!(o.status.code(), Some(2), "{ids} {extra:?}: {}", stderr(&o));
        stderr(&o)
    };
    assert!(run("big.npy", &[])
        .contains("`--ids big.npy`: id 1000 at [0, 0] is not < vocab_size = 1000"));
    assert!(run("neg.npy", &[]).contains("ids must be >= 0"));
    assert!(run("long.npy", &[]).contains("N = 129 exceeds the config's n_seq = 128"));
    assert!(run("rank3.npy", &[]).contains("must be a 2-D array (B, N), got 3-D"));
    assert!(run("float.npy", &[]).contains("is not int32 or int64"));
    assert!(run("missing.npy", &[]).contains("`--ids missing.npy`"));
    assert!(run("ok.npy", &["--profile", "fast"]).contains("unknown profile `fast`"));
    assert!(run("ok.npy", &["--tf32"]).contains("`--tf32` needs `--backend cuda`"));
    assert!(run("ok.npy", &["--precision", "f16"]).contains("`--precision f16`"));
    // Weights of another config: the first tensor that does not fit is named.
    std::fs::write(d.join("c.json"), r#"{"vocab_size": 1000, "d_model": 64, "n_layers": 3, "num_heads": 2, "htt_rank": 8, "n_seq": 128}"#).unwrap();
    let o = model_run(d, ["c.json", "w.safetensors", "ok.npy", "o"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("`--weights w.safetensors`")
            && stderr(&o)
                .contains("tensor `phase7_model.model.blocks.2.layer_norm.weight` is missing"),
        "{}",
        stderr(&o)
    );
    let o = model_run(d, ["tiny", "nope.safetensors", "ok.npy", "o"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("`--weights`: cannot read nope.safetensors"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn side_branch_runs_and_leaves_the_logits_alone() {
    let dir = tempfile::tempdir().unwrap();
    init_tiny(dir.path());
    write_npy(
        dir.path().join("ids.npy"),
        &Array2::from_shape_fn((2, 64), |(b, n)| ((b * 64 + n) * 13 % 1000) as i64),
    )
    .unwrap();
    let files = ["tiny", "w.safetensors", "ids.npy"];
    let plain = model_run(dir.path(), [files[0], files[1], files[2], "a"], &[]);
    let side = model_run(
        dir.path(),
        [files[0], files[1], files[2], "b"],
        &["--side-branch"],
    );
    assert!(
        plain.status.success() && side.status.success(),
        "{}",
        stderr(&side)
    );
    assert!(
        stdout(&side).contains("side branch (discarded, as in the original)"),
        "{}",
        stdout(&side)
    );
    let (a, b): (Array3<f32>, Array3<f32>) = (
        read_npy(dir.path().join("a/logits.npy")).unwrap(),
        read_npy(dir.path().join("b/logits.npy")).unwrap(),
    );
    assert_eq!(a, b);
}
