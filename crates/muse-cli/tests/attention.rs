//! `muse attention` end to end: .npy round trips in f64 and f32 against the library, rows with no
//! visible key, and every refusal of the contract (exit code 2, the argument named).

mod common;

use std::path::Path;

use muse_reference::hyp_attn::{HypAttn, HypAttnArgs, Mask};
use muse_reference::{Cpu, Dtype};
use ndarray::{Array3, Array4};
use ndarray_npy::{read_npy, write_npy};

use common::{muse, stderr};

fn arr(shape: (usize, usize, usize, usize), seed: f64, scale: f64) -> Array4<f64> {
    Array4::from_shape_fn(shape, |(b, h, i, e)| {
        scale * (((b * 131 + h * 71 + i * 13 + e) as f64) * 0.37 + seed).sin()
    })
}

fn write_inputs(dir: &Path) -> (Array4<f64>, Array4<f64>, Array4<f64>) {
    let (q, k, v) = (
        arr((2, 3, 6, 5), 0.1, 0.4),
        arr((2, 3, 4, 5), 0.7, 0.4),
        arr((2, 3, 4, 3), 1.3, 1.0),
    );
    write_npy(dir.join("q.npy"), &q.mapv(|x| x as f32)).unwrap();
    write_npy(dir.join("k.npy"), &k).unwrap();
    write_npy(dir.join("v.npy"), &v).unwrap();
    (q.mapv(|x| f64::from(x as f32)), k, v)
}

const BASE: [&str; 10] = [
    "attention",
    "--q",
    "q.npy",
    "--k",
    "k.npy",
    "--v",
    "v.npy",
    "--out",
    "out",
    "--mask",
];

#[test]
fn attention_round_trips_f64_and_f32() {
    let dir = tempfile::tempdir().unwrap();
    let (q, k, v) = write_inputs(dir.path());
    let args = HypAttnArgs::new(q.view(), k.view(), v.view(), 0.693, 1.2, Mask::Causal).unwrap();
    for precision in ["f64", "f32"] {
        let mut cmd = BASE.to_vec();
        cmd.extend([
            "causal",
            "--curvature",
            "0.693",
            "--beta",
            "1.2",
            "--precision",
            precision,
        ]);
        let o = muse(&cmd, dir.path());
        assert!(o.status.success(), "{}", stderr(&o));
        let want = Cpu
            .hyp_attn(&args, precision.parse::<Dtype>().unwrap())
            .unwrap();
        let (got_o, got_l): (Array4<f64>, Array3<f64>) = if precision == "f64" {
            (
                read_npy(dir.path().join("out/o.npy")).unwrap(),
                read_npy(dir.path().join("out/lse.npy")).unwrap(),
            )
        } else {
            let o: Array4<f32> = read_npy(dir.path().join("out/o.npy")).unwrap();
            let l: Array3<f32> = read_npy(dir.path().join("out/lse.npy")).unwrap();
            (o.mapv(f64::from), l.mapv(f64::from))
        };
        assert_eq!(got_o.dim(), (2, 3, 6, 3));
        let tol = if precision == "f64" { 0.0 } else { 1e-6 };
        for (g, w) in got_o.iter().zip(want.o.iter()) {
            assert!(
                (g - w).abs() <= tol * w.abs().max(1.0),
                "{precision}: o {g} vs {w}"
            );
        }
        // N = 6 queries, M = 4 keys, bottom-right causal: rows 0 and 1 see no key.
        for b in 0..2 {
            for h in 0..3 {
                for i in 0..2 {
                    assert_eq!(got_l[[b, h, i]], f64::NEG_INFINITY);
                    assert!((0..3).all(|e| got_o[[b, h, i, e]] == 0.0));
                }
                assert!(got_l[[b, h, 2]].is_finite());
            }
        }
    }
}

/// Every refusal of the contract: exit code 2 and a message naming the argument.
#[test]
fn bad_input_exits_2_naming_the_argument() {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path());
    write_npy(
        dir.path().join("v_rank3.npy"),
        &Array3::<f64>::zeros((2, 3, 4)),
    )
    .unwrap();
    write_npy(
        dir.path().join("v_int.npy"),
        &Array4::<i64>::zeros((2, 3, 4, 3)),
    )
    .unwrap();
    write_npy(dir.path().join("k_d.npy"), &arr((2, 3, 4, 6), 0.2, 0.3)).unwrap();
    write_npy(dir.path().join("k_h.npy"), &arr((2, 2, 4, 5), 0.2, 0.3)).unwrap();
    write_npy(dir.path().join("v_m.npy"), &arr((2, 3, 5, 3), 0.2, 1.0)).unwrap();
    let mut qnan = arr((2, 3, 6, 5), 0.1, 0.4);
    qnan[[1, 2, 3, 4]] = f64::NAN;
    write_npy(dir.path().join("q_nan.npy"), &qnan).unwrap();
    let mut vinf = arr((2, 3, 4, 3), 0.1, 1.0);
    vinf[[0, 0, 1, 1]] = f64::INFINITY;
    write_npy(dir.path().join("v_inf.npy"), &vinf).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--curvature", "0", "--beta", "1"], "--curvature"),
        (&["--curvature", "-0.5", "--beta", "1"], "--curvature"),
        (&["--curvature", "nan", "--beta", "1"], "--curvature"),
        (&["--curvature", "inf", "--beta", "1"], "--curvature"),
        (&["--curvature", "1", "--beta", "nan"], "--beta"),
        (&["--curvature", "1", "--beta", "-inf"], "--beta"),
        (
            &["--curvature", "1", "--beta", "1", "--mask", "window:0"],
            "--mask",
        ),
        (
            &["--curvature", "1", "--beta", "1", "--mask", "window:2"],
            "--mask",
        ),
        (
            &["--curvature", "1", "--beta", "1", "--mask", "diagonal"],
            "--mask",
        ),
        (
            &["--curvature", "1", "--beta", "1", "--k", "k_d.npy"],
            "--k",
        ),
        (
            &["--curvature", "1", "--beta", "1", "--k", "k_h.npy"],
            "--k",
        ),
        (
            &["--curvature", "1", "--beta", "1", "--v", "v_m.npy"],
            "--v",
        ),
        (
            &["--curvature", "1", "--beta", "1", "--q", "q_nan.npy"],
            "--q",
        ),
        (
            &["--curvature", "1", "--beta", "1", "--v", "v_inf.npy"],
            "--v",
        ),
        (
            &["--curvature", "1", "--beta", "1", "--v", "v_rank3.npy"],
            "--v",
        ),
        (
            &["--curvature", "1", "--beta", "1", "--v", "v_int.npy"],
            "--v",
        ),
        (
            &["--curvature", "1", "--beta", "1", "--q", "missing.npy"],
            "--q",
        ),
        (
            &["--curvature", "1", "--beta", "1", "--precision", "f16"],
            "--precision",
        ),
    ];
    for (extra, named) in cases {
        // Later flags override the defaults (q.npy, k.npy, v.npy) by replacing them.
        let mut cmd: Vec<&str> = vec!["attention", "--out", "out"];
        for (flag, default) in [("--q", "q.npy"), ("--k", "k.npy"), ("--v", "v.npy")] {
            if !extra.contains(&flag) {
                cmd.extend([flag, default]);
            }
        }
        cmd.extend_from_slice(extra);
        let o = muse(&cmd, dir.path());
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(named), "{extra:?} must name {named}: {err}");
        assert!(!err.contains("panicked"), "{extra:?} panicked: {err}");
    }
}
