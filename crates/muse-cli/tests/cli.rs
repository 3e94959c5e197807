//! The `muse` binary end to end: `bk-core` round-trips .npy data and refuses bad input with a
//! clear message and exit code 2; `gate` fails on a regression.

mod common;

use std::path::Path;

use muse_reference::bk_core::{BkCore, BkCoreArgs};
use muse_reference::{Cpu, Precision};
use ndarray::{Array2, Array3};
use ndarray_npy::{read_npy, write_npy};

use common::{muse, stderr};
use num_complex::Complex64;

fn inputs() -> (Array2<f64>, Array2<f64>, Array2<f64>) {
    let a = Array2::from_shape_fn((3, 17), |(r, i)| ((r * 17 + i) as f64 * 0.7).sin());
    let b = Array2::from_shape_fn((3, 16), |(r, i)| 0.5 + ((r + i) as f64 * 0.3).cos());
    let c = Array2::from_shape_fn((3, 16), |(r, i)| -0.2 + ((r * i) as f64 * 0.1).sin());
    (a, b, c)
}

fn write_inputs(dir: &Path, f32: bool) {
    let (a, b, c) = inputs();
    for (name, x) in [("a", a), ("b", b), ("c", c)] {
        let path = dir.join(format!("{name}.npy"));
        if f32 {
            write_npy(&path, &x.mapv(|v| v as f32)).unwrap();
        } else {
            write_npy(&path, &x).unwrap();
        }
    }
}

const Z: [&str; 4] = ["--z-re", "-0.3", "--z-im", "0.2"];

#[test]
fn bk_core_round_trips_f64_and_f32() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = inputs();
    let args = BkCoreArgs::new(a.view(), b.view(), c.view(), Complex64::new(-0.3, 0.2)).unwrap();
    for (precision, f32_in) in [("f64", false), ("f32", true)] {
        write_inputs(dir.path(), f32_in);
        let mut cmd = vec![
            "bk-core",
            "--a",
            "a.npy",
            "--b",
            "b.npy",
            "--c",
            "c.npy",
            "--out",
            "out",
            "--precision",
            precision,
        ];
        cmd.extend(Z);
        let o = muse(&cmd, dir.path());
        assert!(o.status.success(), "{}", stderr(&o));
        let out = dir.path().join("out");
        let want = Cpu
            .bk_core(&args, precision.parse::<Precision>().unwrap())
            .unwrap();
        let (re, im): (Array2<f64>, Array2<f64>) = if precision == "f64" {
            (
                read_npy(out.join("g_re.npy")).unwrap(),
                read_npy(out.join("g_im.npy")).unwrap(),
            )
        } else {
            let re: Array2<f32> = read_npy(out.join("g_re.npy")).unwrap();
            let im: Array2<f32> = read_npy(out.join("g_im.npy")).unwrap();
            (re.mapv(f64::from), im.mapv(f64::from))
        };
        for ((i, w), (r, m)) in want.indexed_iter().zip(re.iter().zip(im.iter())) {
            assert_eq!((w.re, w.im), (*r, *m), "{precision} at {i:?}");
        }
        let features: Array3<f32> = read_npy(out.join("features.npy")).unwrap();
        assert_eq!(features.dim(), (3, 17, 2));
        assert_eq!(features[[1, 4, 1]], want[[1, 4]].im as f32);
    }
}

#[test]
fn bad_input_is_refused_with_a_message_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), false);
    write_npy(dir.path().join("ints.npy"), &Array2::<i64>::zeros((3, 17))).unwrap();
    write_npy(dir.path().join("short.npy"), &Array2::<f64>::zeros((3, 15))).unwrap();
    write_npy(
        dir.path().join("rank1.npy"),
        &ndarray::Array1::<f64>::zeros(17),
    )
    .unwrap();
    let mut nan = inputs().0;
    nan[[2, 5]] = f64::NAN;
    write_npy(dir.path().join("nan.npy"), &nan).unwrap();
    let cases: [(&[&str], &str); 6] = [
        (
            &["--a", "missing.npy", "--b", "b.npy", "--c", "c.npy"],
            "`--a missing.npy`",
        ),
        (
            &["--a", "ints.npy", "--b", "b.npy", "--c", "c.npy"],
            "is not float64 or float32",
        ),
        (
            &["--a", "a.npy", "--b", "short.npy", "--c", "c.npy"],
            "`b` must have shape [B, N-1] = [3, 16], got [3, 15]",
        ),
        (
            &["--a", "rank1.npy", "--b", "b.npy", "--c", "c.npy"],
            "must be a 2-D array (B, N), got 1-D",
        ),
        (
            &["--a", "nan.npy", "--b", "b.npy", "--c", "c.npy"],
            "`a` is NaN at [2, 5]",
        ),
        (
            &[
                "--a",
                "a.npy",
                "--b",
                "b.npy",
                "--c",
                "c.npy",
                "--backend",
                "cuda",
            ],
            "CUDA backend unavailable",
        ),
    ];
    for (files, msg) in cases {
        let mut cmd = vec!["bk-core", "--out", "out"];
        cmd.extend(files);
        cmd.extend(Z);
        let o = muse(&cmd, dir.path());
        assert_eq!(o.status.code(), Some(2), "{cmd:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(msg),
            "{cmd:?}: expected `{msg}` in:\n{}",
            stderr(&o)
        );
    }
}

#[test]
fn gate_fails_on_a_failed_record() {
    let dir = tempfile::tempdir().unwrap();
    let report = |value: f64| {
        format!(
            r#"{{"commit":"x","device":"d","created":"t","records":[{{"kernel":"k","backend":"cpu","case":"c","shape":[1],"dtype":"f64","metric":"err","value":{value},"unit":"","target":"<= 1","pass":{}}}]}}"#,
            value <= 1.0
        )
    };
    std::fs::write(dir.path().join("base.json"), report(0.5)).unwrap();
    std::fs::write(dir.path().join("good.json"), report(0.7)).unwrap();
    std::fs::write(dir.path().join("bad.json"), report(3.0)).unwrap();
    let gate = |current: &str| {
        muse(
            &["gate", "--baseline", "base.json", "--current", current],
            dir.path(),
        )
        .status
        .code()
    };
    assert_eq!(gate("good.json"), Some(0));
    assert_eq!(gate("bad.json"), Some(1));
    assert_eq!(gate("absent.json"), Some(2));
}
