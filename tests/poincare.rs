//! The Poincaré-ball core on every backend: every op and VJP on the golden fixtures of
//! `fixtures/hyperbolic/gen.py` (mpmath, geoopt), and the typed error for out-of-ball input.

use muse::reference::poincare::{BallOp, Curvature, PoincareArgs};
use muse::reference::{Error, Precision};
use muse::Backend;
use ndarray::Array2;

use crate::common::{registered_case_passes, test_backends};

test_backends! {
    #[case::c001_d3("poincare/ball_c0.01_d3")]
    #[case::c0693_d1("poincare/ball_c0.693_d1")]
    #[case::c0693_d64("poincare/ball_c0.693_d64")]
    #[case::c2_d96("poincare/ball_c2_d96")]
    #[case::c0693_d256("poincare/ball_c0.693_d256")]
    fn registered_case_passes(name: &str);
}

fn out_of_ball_input_is_a_typed_error<B: Backend>(be: &B) -> anyhow::Result<()> {
    let c = Curvature::new(4.0)?;
    // √c‖x‖ = 2·0.5 = 1: on the boundary, not inside.
    let x = Array2::from_shape_vec((2, 2), vec![0.1, 0.1, 0.5, 0.0])?;
    for op in [BallOp::Log0, BallOp::Dist0, BallOp::Lambda, BallOp::Log0Vjp] {
        let y = (op == BallOp::Log0Vjp).then(|| x.clone());
        match PoincareArgs::new(op, c, x.view(), y.as_ref().map(|y| y.view()), None) {
            Err(Error::OutOfBall {
                arg, row, radius, ..
            }) => {
                anyhow::ensure!(
                    arg == "x" && row == 1 && (radius - 1.0).abs() < 1e-15,
                    "{op:?}: {arg} {row} {radius}"
                );
            }
            other => anyhow::bail!("{op:?}: expected OutOfBall, got {other:?}"),
        }
    }
    // Tangent-input ops accept any finite vector; exp0 maps it inside.
    let args = PoincareArgs::new(BallOp::Exp0, c, x.view(), None, None)?;
    let out = be.poincare(&args, Precision::F32)?.out;
    for r in 0..2 {
        let n = out.row(r).dot(&out.row(r)).sqrt();
        anyhow::ensure!(2.0 * n < 1.0, "exp0 row {r} at radius {n}");
    }
    Ok(())
}

test_backends! {
    fn out_of_ball_input_is_a_typed_error();
}

fn self_distance_is_exactly_zero<B: Backend>(be: &B) -> anyhow::Result<()> {
    let u = Array2::from_shape_fn((5, 33), |(r, k)| {
        ((r * 33 + k) as f64 * 0.37).sin() * (r as f64 + 0.5)
    });
    let c = Curvature::new(0.693)?;
    for precision in Precision::ALL {
        let t = be.poincare(
            &PoincareArgs::new(BallOp::DistTangent, c, u.view(), Some(u.view()), None)?,
            precision,
        )?;
        anyhow::ensure!(
            t.out.iter().all(|&d| d == 0.0),
            "tangent d(x, x) {precision}: {:?}",
            t.out
        );
        let x = be
            .poincare(
                &PoincareArgs::new(BallOp::Exp0, c, u.view(), None, None)?,
                Precision::F64,
            )?
            .out;
        let b = be.poincare(
            &PoincareArgs::new(BallOp::Dist, c, x.view(), Some(x.view()), None)?,
            precision,
        )?;
        anyhow::ensure!(
            b.out.iter().all(|&d| d == 0.0),
            "ball d(x, x) {precision}: {:?}",
            b.out
        );
    }
    Ok(())
}

test_backends! {
    fn self_distance_is_exactly_zero();
}
