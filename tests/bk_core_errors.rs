//! Bad input returns a typed error that names the argument: never a panic, never a NaN.

use muse::bk_core::BkCoreArgs;
use muse::{Backend, Error, Precision};
use ndarray::Array2;
use num_complex::Complex64;
use rstest::rstest;

use crate::common::test_backends;

const Z: Complex64 = Complex64::new(0.1, 0.1);

fn args_err(a: Array2<f64>, b: Array2<f64>, c: Array2<f64>, z: Complex64) -> Error {
    BkCoreArgs::new(a.view(), b.view(), c.view(), z).expect_err("bad input must be rejected")
}

#[rstest]
#[case::b_too_long(Array2::zeros((2, 4)), Array2::zeros((2, 4)), Array2::zeros((2, 3)), "`b` must have shape [B, N-1] = [2, 3], got [2, 4]")]
#[case::c_batch_mismatch(Array2::zeros((2, 4)), Array2::zeros((2, 3)), Array2::zeros((3, 3)), "`c` must have shape [B, N-1] = [2, 3], got [3, 3]")]
#[case::n_zero(Array2::zeros((2, 0)), Array2::zeros((2, 0)), Array2::zeros((2, 0)), "N must be at least 1 (`a` has shape [2, 0])")]
#[case::b_zero(Array2::zeros((0, 4)), Array2::zeros((0, 3)), Array2::zeros((0, 3)), "B must be at least 1 (`a` has shape [0, 4])")]
fn shape_errors_name_the_argument(
    #[case] a: Array2<f64>,
    #[case] b: Array2<f64>,
    #[case] c: Array2<f64>,
    #[case] msg: &str,
) {
    let e = args_err(a, b, c, Z);
    assert!(
        matches!(e, Error::Shape { .. } | Error::Empty { .. }),
        "{e:?}"
    );
    assert_eq!(e.to_string(), format!("bk_core: {msg}"));
}

#[rstest]
#[case::a_nan("a", [1, 2], f64::NAN)]
#[case::a_inf("a", [0, 0], f64::INFINITY)]
#[case::b_neg_inf("b", [1, 0], f64::NEG_INFINITY)]
#[case::c_nan("c", [0, 2], f64::NAN)]
fn non_finite_inputs_are_rejected(#[case] arg: &str, #[case] at: [usize; 2], #[case] value: f64) {
    let (mut a, mut b, mut c) = (
        Array2::ones((2, 4)),
        Array2::ones((2, 3)),
        Array2::ones((2, 3)),
    );
    match arg {
        "a" => a[at] = value,
        "b" => b[at] = value,
        _ => c[at] = value,
    }
    let e = args_err(a, b, c, Z);
    match &e {
        Error::NonFinite {
            arg: got, index, ..
        } => assert_eq!((*got, index.as_slice()), (arg, &at[..])),
        other => panic!("expected NonFinite, got {other:?}"),
    }
    assert!(
        e.to_string().starts_with(&format!(
            "bk_core: `{arg}` is {value} at [{}, {}]",
            at[0], at[1]
        )),
        "{e}"
    );
}

#[rstest]
#[case::nan_re(Complex64::new(f64::NAN, 0.1))]
#[case::inf_im(Complex64::new(0.0, f64::INFINITY))]
fn non_finite_z_is_rejected(#[case] z: Complex64) {
    let e = args_err(
        Array2::ones((1, 3)),
        Array2::ones((1, 2)),
        Array2::ones((1, 2)),
        z,
    );
    assert!(
        e.to_string().starts_with("bk_core: `z` must be finite"),
        "{e}"
    );
}

/// Real z on the spectrum makes T − zI singular: a typed error, not NaN or inf.
fn singular_shift_is_an_error<B: Backend>(be: &B, precision: Precision) -> anyhow::Result<()> {
    // Diagonal [1, 2, 3] with z = 2: the second pivot is exactly zero.
    let a = ndarray::arr2(&[[0.5, 0.5, 0.5], [1.0, 2.0, 3.0]]);
    let off = Array2::zeros((2, 2));
    let args = BkCoreArgs::new(a.view(), off.view(), off.view(), Complex64::new(2.0, 0.0))?;
    for result in [
        be.bk_core(&args, precision).map(|_| ()),
        be.bk_core_grad(&args, Array2::zeros((2, 3)).view(), precision)
            .map(|_| ()),
    ] {
        match result {
            Err(Error::Singular { row: 1, .. }) => {}
            other => anyhow::bail!("expected Singular in row 1, got {other:?}"),
        }
    }
    // A symmetric matrix with z = an eigenvalue: [[0, 1], [1, 0]] has eigenvalues ±1.
    let (a, off) = (Array2::zeros((1, 2)), Array2::ones((1, 1)));
    let args = BkCoreArgs::new(a.view(), off.view(), off.view(), Complex64::new(1.0, 0.0))?;
    anyhow::ensure!(
        matches!(be.bk_core(&args, precision), Err(Error::Singular { .. })),
        "z = eigenvalue must be singular"
    );
    Ok(())
}
test_backends! {
    #[case::f64(Precision::F64)]
    #[case::f32(Precision::F32)]
    fn singular_shift_is_an_error(precision: Precision);
}

/// A malformed upstream gradient is rejected with its name.
fn bad_upstream_gradient_is_rejected<B: Backend>(be: &B) -> anyhow::Result<()> {
    let (a, off) = (Array2::ones((2, 4)), Array2::ones((2, 3)));
    let args = BkCoreArgs::new(a.view(), off.view(), off.view(), Z)?;
    let e = be
        .bk_core_grad(&args, Array2::zeros((2, 5)).view(), Precision::F64)
        .expect_err("wrong shape");
    anyhow::ensure!(
        e.to_string() == "bk_core: `grad_g` must have shape [B, N] = [2, 4], got [2, 5]",
        "{e}"
    );
    let mut g = Array2::zeros((2, 4));
    g[[1, 1]] = Complex64::new(0.0, f64::NAN);
    let e = be
        .bk_core_grad(&args, g.view(), Precision::F64)
        .expect_err("NaN");
    anyhow::ensure!(matches!(e, Error::NonFinite { arg: "grad_g", .. }), "{e:?}");
    Ok(())
}
test_backends! { fn bad_upstream_gradient_is_rejected(); }
