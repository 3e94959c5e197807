//! The Poincaré-ball family of the suite: every op of `muse_reference::poincare::BallOp` on the
//! golden fixtures (`fixtures/hyperbolic/`, gen.py: mpmath at 50 digits, VJPs by 120-digit
//! differences, cross-checked with geoopt), in f64 and f32 (design hyperbolic.md §16).

use muse_reference::poincare::{BallOp, Curvature, PoincareArgs, PoincareOut};
use muse_reference::{Backend, Precision};
use ndarray::{Array2, Axis, Ix1, Ix2};

use crate::fixtures::{FixtureCase, Manifest};
use crate::report::Site;
use crate::tolerance::tol;
use crate::{Record, Target};

/// What a Poincaré case runs: every op on one fixture.
#[derive(Debug, Clone)]
pub struct Spec(pub String);

/// One case per fixture of the family.
pub fn cases(manifest: &Manifest) -> Vec<(String, Spec)> {
    manifest
        .family("poincare")
        .map(|fx| (format!("poincare/{}", fx.name), Spec(fx.name.clone())))
        .collect()
}

/// Every case runs on every backend.
pub fn cpu_only(_: &Spec) -> bool {
    false
}

/// The fixture arrays an op reads (x, y) and the array holding its expected output.
fn io(op: BallOp) -> (&'static str, Option<&'static str>, &'static str) {
    match op {
        BallOp::Projx => ("p", None, "projx_p"),
        BallOp::Exp0 => ("u", None, "exp0_u"),
        BallOp::Log0 => ("x", None, "log0_x"),
        BallOp::ExpX => ("x", Some("u"), "expx_xu"),
        BallOp::LogX => ("x", Some("y"), "logx_xy"),
        BallOp::MobiusAdd => ("x", Some("y"), "mobius_xy"),
        BallOp::Lambda => ("x", None, "lambda_x"),
        BallOp::Dist => ("x", Some("y"), "dist_xy"),
        BallOp::Dist0 => ("x", None, "dist0_x"),
        BallOp::DistTangent => ("u", Some("w"), "dist_uw"),
        BallOp::Exp0Vjp => ("u", Some("g"), "exp0_vjp"),
        BallOp::Log0Vjp => ("x", Some("g"), "log0_vjp"),
        BallOp::DistTangentVjp => ("u", Some("w"), "dist_uw_du"),
    }
}

/// Worst row of `got` against `want`: max_k |Δ| / max(max_k |want|, floor), over `rows`.
fn row_rel(got: &Array2<f64>, want: &Array2<f64>, rows: &[bool], floor: f64) -> f64 {
    let mut worst = 0.0f64;
    for (r, (g, w)) in got
        .axis_iter(Axis(0))
        .zip(want.axis_iter(Axis(0)))
        .enumerate()
    {
        if !rows[r] {
            continue;
        }
        let scale = w.iter().fold(floor, |m, v| m.max(v.abs()));
        let d = g.iter().zip(w).fold(0.0f64, |m, (a, b)| {
            if a.is_finite() {
                m.max((a - b).abs())
            } else {
                f64::INFINITY
            }
        });
        worst = worst.max(d / scale);
    }
    worst
}

/// Row scale floor: f64 errors are relative to max(1, |want|) (the "≤ 1e-9 relative"),
/// f32 errors to the row's own magnitude.
fn floor(precision: Precision) -> f64 {
    match precision {
        Precision::F64 => 1.0,
        Precision::F32 => 1e-30,
    }
}

/// Runs every op of the fixture on `be` in f64 and f32.
pub fn run<B: Backend>(be: &B, spec: &Spec, m: &Manifest) -> crate::Result<Vec<Record>> {
    let fx = m.case(&spec.0)?;
    let c = Curvature::named("poincare", "c", fx.param_f64("c")?)?;
    let mut out = Vec::new();
    for op in BallOp::ALL {
        for precision in Precision::ALL {
            out.extend(one(be, m, fx, c, op, precision)?);
        }
    }
    Ok(out)
}

fn one<B: Backend>(
    be: &B,
    m: &Manifest,
    fx: &FixtureCase,
    c: Curvature,
    op: BallOp,
    precision: Precision,
) -> crate::Result<Vec<Record>> {
    let (xs, ys, want_name) = io(op);
    let x = m.array::<Ix2>(fx, xs)?;
    let y = ys.map(|n| m.array::<Ix2>(fx, n)).transpose()?;
    let delta = m.array::<Ix1>(fx, "delta")?;
    let g = delta.clone().insert_axis(Axis(1));
    let args = PoincareArgs::new(
        op,
        c,
        x.view(),
        y.as_ref().map(|y| y.view()),
        Some(g.view()),
    )?;
    let got = be.poincare(&args, precision)?;
    let want = if op.scalar_out() {
        m.array::<Ix1>(fx, want_name)?.insert_axis(Axis(1))
    } else {
        m.array::<Ix2>(fx, want_name)?
    };
    let kernel = format!("poincare_{}", op.name());
    let (rows_n, dim) = x.dim();
    let case = format!("poincare/{}", fx.name);
    let site = Site {
        kernel: &kernel,
        backend: B::NAME,
        case: &case,
        shape: &[rows_n, dim],
        dtype: precision.name(),
    };
    // f32 promises the §16 bound only away from the boundary: √c‖·‖ ≤ 0.99 for ball inputs.
    let s = c.s();
    let radius = |a: &Array2<f64>, r: usize| s * a.row(r).dot(&a.row(r)).sqrt();
    let ball_y = matches!(op, BallOp::LogX | BallOp::MobiusAdd | BallOp::Dist);
    // log_x(y) reads its artanh at w = (−x) ⊕ y, whose radius is tanh(√c·d(x, y)/2): the same
    // 0.99 applies to w (f32 error near 1e-5 there is the artanh's conditioning, not the code).
    let dist_xy = m.array::<Ix1>(fx, "dist_xy")?;
    let w_inside = |r: usize| op != BallOp::LogX || (s * dist_xy[r] / 2.0).tanh() <= 0.99;
    let interior: Vec<bool> = (0..rows_n)
        .map(|r| {
            (!op.x_in_ball() || radius(&x, r) <= 0.99)
                && (!ball_y || y.as_ref().is_none_or(|y| radius(y, r) <= 0.99))
                && w_inside(r)
        })
        .collect();
    let all = vec![true; rows_n];
    let mut out = Vec::new();
    let vjp = matches!(
        op,
        BallOp::Exp0Vjp | BallOp::Log0Vjp | BallOp::DistTangentVjp
    );
    let push = |out: &mut Vec<Record>, metric: &str, value: f64, bound: f64| {
        out.push(site.record(metric, value, "", Some(Target::AtMost(bound))));
    };
    match precision {
        Precision::F64 => push(
            &mut out,
            "err_rel_max",
            row_rel(&got.out, &want, &all, 1.0),
            tol::HYP_F64_REL,
        ),
        Precision::F32 if op == BallOp::DistTangent => {
            // rel ≤ 1e-5 where √c·d > 1e-3, else abs ≤ 1e-5/√c (design §16).
            let worst = got.out.iter().zip(want.iter()).fold(0.0f64, |w, (g, d)| {
                let allowed = if s * d > 1e-3 {
                    tol::DIST_F32 * d
                } else {
                    tol::DIST_F32 / s
                };
                w.max((g - d).abs() / allowed)
            });
            push(&mut out, "err_over_allowed", worst, 1.0);
        }
        Precision::F32 => {
            let bound = match op {
                _ if vjp => tol::POINCARE_GRAD_F32,
                BallOp::Dist => 1e-4, // ball-form distance in f32 (design §16: rel ≤ 1e-4 for a ≤ 3)
                _ => tol::POINCARE_F32,
            };
            push(
                &mut out,
                "err_rel_max_interior",
                row_rel(&got.out, &want, &interior, floor(precision)),
                bound,
            );
            let finite = got.out.iter().filter(|v| !v.is_finite()).count();
            push(&mut out, "nonfinite", finite as f64, 0.0);
            if matches!(
                op,
                BallOp::Exp0 | BallOp::ExpX | BallOp::MobiusAdd | BallOp::Projx
            ) {
                let outside = (0..rows_n)
                    .filter(|&r| {
                        radius(&got.out, r).partial_cmp(&1.0) != Some(std::cmp::Ordering::Less)
                    })
                    .count();
                push(&mut out, "rows_outside_ball", outside as f64, 0.0);
            }
        }
    }
    if op == BallOp::DistTangentVjp {
        out.extend(vjp_extra(m, fx, &args, &got, precision, &site)?);
    }
    Ok(out)
}

/// d/dw and d/dc of the distance VJP; dc judged against Σ_r |row contribution| (it is a sum).
fn vjp_extra(
    m: &Manifest,
    fx: &FixtureCase,
    args: &PoincareArgs<'_>,
    got: &PoincareOut,
    precision: Precision,
    site: &Site<'_>,
) -> crate::Result<Vec<Record>> {
    let want_dw = m.array::<Ix2>(fx, "dist_uw_dw")?;
    let want_dc = m.array::<Ix1>(fx, "dist_uw_dc")?[0];
    let got_dw = got.out2.as_ref().ok_or_else(|| crate::Error::Fixture {
        case: fx.name.clone(),
        message: "the backend returned no d/dw".into(),
    })?;
    let all = vec![true; want_dw.nrows()];
    // dc = Σ_r δ_r·∂d_r/∂c, each a difference of terms of size |δ_r|·d_r/(2c) that cancel exactly
    // when D = 1 (d = 2|u − w| whatever c is): judge it against the size of the terms.
    let (delta, dist) = (m.array::<Ix1>(fx, "delta")?, m.array::<Ix1>(fx, "dist_uw")?);
    let c = args.curvature().c();
    let scale: f64 = delta
        .iter()
        .zip(&dist)
        .map(|(g, d)| (g * d).abs() / (2.0 * c))
        .sum();
    let (bound_w, bound_c) = match precision {
        Precision::F64 => (tol::HYP_F64_REL, tol::HYP_F64_REL),
        Precision::F32 => (tol::POINCARE_GRAD_F32, tol::POINCARE_GRAD_F32),
    };
    let dc = got.dc.unwrap_or(f64::NAN);
    Ok(vec![
        site.record(
            "dw_err_rel_max",
            row_rel(got_dw, &want_dw, &all, floor(precision)),
            "",
            Some(Target::AtMost(bound_w)),
        ),
        site.record(
            "dc_err_rel_cond",
            (dc - want_dc).abs() / want_dc.abs().max(1e-3 * scale).max(1e-300),
            "",
            Some(Target::AtMost(bound_c)),
        ),
    ])
}
