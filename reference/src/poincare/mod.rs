//! Poincaré-ball core with curvature c > 0 (design: `shared/design/hyperbolic.md` §2): projx,
//! exp0/log0, exp_x/log_x, Möbius addition, the conformal factor, the distance in ball form and
//! from tangent vectors (law of cosines, §2.3), with the stable scalar forms of §2.2 (d(x, x) = 0
//! exactly) and the VJPs of §2.5.
//!
//! - [`scalar`]: tanh t/t, artanh t/t, acosh1p and its derivative, norms;
//! - [`maps`]: the row maps and distances;
//! - [`grad`]: the VJPs.
//!
//! Other faces of this family: `crates/muse-cuda/src/poincare.rs` (launchers),
//! `crates/muse-cuda/kernels/poincare.cu` and `kernels/include/poincare.cuh` (the device functions
//! every hyperbolic kernel uses), `tests/poincare.rs`, `fixtures/hyperbolic/gen.py`.

pub mod grad;
pub mod maps;
pub mod scalar;

pub use maps::{A_MAX, EPS_BALL};
pub use scalar::{acosh1p, acosh1p_prime, artanh, artanh_over, tanh_over};

use ndarray::{Array2, ArrayView2, Axis};

use crate::{Cpu, Elem, Error, Precision, Result};

const OP: &str = "poincare";

/// A checked curvature magnitude c > 0 (finite), with s = √c.
///
/// ```
/// use muse_reference::poincare::Curvature;
/// assert_eq!(Curvature::new(4.0)?.s(), 2.0);
/// assert!(Curvature::new(0.0).is_err() && Curvature::new(f64::NAN).is_err());
/// # Ok::<(), muse_reference::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Curvature(f64);

impl Curvature {
    /// Accepts finite c > 0.
    pub fn new(c: f64) -> Result<Self> {
        Self::named(OP, "c", c)
    }
    /// As [`Curvature::new`], naming the op and argument in the error.
    pub fn named(op: &'static str, arg: &'static str, c: f64) -> Result<Self> {
        if c.is_finite() && c > 0.0 {
            Ok(Self(c))
        } else {
            Err(Error::Domain {
                op,
                arg,
                rule: format!("(the curvature) must be finite and > 0, got {c}"),
            })
        }
    }
    /// c.
    pub fn c(self) -> f64 {
        self.0
    }
    /// s = √c.
    pub fn s(self) -> f64 {
        self.0.sqrt()
    }
}

/// Fails unless every row of `x` satisfies c‖x‖² < 1.
pub fn check_in_ball(
    op: &'static str,
    arg: &'static str,
    c: Curvature,
    x: &ArrayView2<'_, f64>,
) -> Result<()> {
    for (row, v) in x.axis_iter(Axis(0)).enumerate() {
        let radius = c.s() * v.dot(&v).sqrt();
        if radius.is_nan() || radius >= 1.0 {
            return Err(Error::OutOfBall {
                op,
                arg,
                row,
                radius,
                c: c.c(),
            });
        }
    }
    Ok(())
}

/// Fails on the first size-0 dimension of `shape`, naming it by `dims` (in order).
pub fn check_nonempty(
    op: &'static str,
    arg: &'static str,
    dims: &[&'static str],
    shape: &[usize],
) -> Result<()> {
    match dims.iter().zip(shape).find(|(_, &size)| size == 0) {
        Some((&dim, _)) => Err(Error::Empty {
            op,
            arg,
            dim,
            shape: shape.to_vec(),
        }),
        None => Ok(()),
    }
}

/// Fails on the first NaN/±inf of `x`, naming its index.
pub fn check_finite<D: ndarray::Dimension>(
    op: &'static str,
    arg: &'static str,
    x: &ndarray::ArrayView<'_, f64, D>,
) -> Result<()> {
    match x.indexed_iter().find(|(_, v)| !v.is_finite()) {
        Some((ix, v)) => Err(Error::NonFinite {
            op,
            arg,
            index: ndarray::IntoDimension::into_dimension(ix).slice().to_vec(),
            value: *v,
        }),
        None => Ok(()),
    }
}

/// One Poincaré-ball operation applied row by row to (R, D) arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BallOp {
    /// projx(x), x any point → (R, D).
    Projx,
    /// exp0(x), x tangent → (R, D).
    Exp0,
    /// log0(x), x in the ball → (R, D).
    Log0,
    /// exp_x(y), x in the ball, y tangent at x → (R, D).
    ExpX,
    /// log_x(y), x, y in the ball → (R, D).
    LogX,
    /// x ⊕ y, x, y in the ball → (R, D).
    MobiusAdd,
    /// λ_x, x in the ball → (R, 1).
    Lambda,
    /// d(x, y) in ball form, x, y in the ball → (R, 1).
    Dist,
    /// d(0, x), x in the ball → (R, 1).
    Dist0,
    /// d(exp0 x, exp0 y) from tangent x, y (law of cosines) → (R, 1).
    DistTangent,
    /// J_exp0(x)ᵀ y (x tangent, y upstream) → (R, D).
    Exp0Vjp,
    /// J_log0(x)ᵀ y (x in the ball, y upstream) → (R, D).
    Log0Vjp,
    /// Gradient of Σ_r g_r·d(exp0 x_r, exp0 y_r): `out` = d/dx, `out2` = d/dy, `dc` = d/dc.
    DistTangentVjp,
}

impl BallOp {
    /// Every op.
    pub const ALL: [BallOp; 13] = [
        BallOp::Projx,
        BallOp::Exp0,
        BallOp::Log0,
        BallOp::ExpX,
        BallOp::LogX,
        BallOp::MobiusAdd,
        BallOp::Lambda,
        BallOp::Dist,
        BallOp::Dist0,
        BallOp::DistTangent,
        BallOp::Exp0Vjp,
        BallOp::Log0Vjp,
        BallOp::DistTangentVjp,
    ];
    /// Name in reports and kernel symbols, e.g. `exp0`.
    pub fn name(self) -> &'static str {
        match self {
            BallOp::Projx => "projx",
            BallOp::Exp0 => "exp0",
            BallOp::Log0 => "log0",
            BallOp::ExpX => "expx",
            BallOp::LogX => "logx",
            BallOp::MobiusAdd => "mobius_add",
            BallOp::Lambda => "lambda",
            BallOp::Dist => "dist",
            BallOp::Dist0 => "dist0",
            BallOp::DistTangent => "dist_tangent",
            BallOp::Exp0Vjp => "exp0_vjp",
            BallOp::Log0Vjp => "log0_vjp",
            BallOp::DistTangentVjp => "dist_tangent_vjp",
        }
    }
    /// Whether `x` must lie in the ball.
    pub fn x_in_ball(self) -> bool {
        matches!(
            self,
            BallOp::Log0
                | BallOp::ExpX
                | BallOp::LogX
                | BallOp::MobiusAdd
                | BallOp::Lambda
                | BallOp::Dist
                | BallOp::Dist0
                | BallOp::Log0Vjp
        )
    }
    /// Whether `y` is used, and whether it must lie in the ball.
    pub fn y_use(self) -> (bool, bool) {
        match self {
            BallOp::LogX | BallOp::MobiusAdd | BallOp::Dist => (true, true),
            BallOp::ExpX
            | BallOp::DistTangent
            | BallOp::Exp0Vjp
            | BallOp::Log0Vjp
            | BallOp::DistTangentVjp => (true, false),
            _ => (false, false),
        }
    }
    /// Whether the op returns one value per row.
    pub fn scalar_out(self) -> bool {
        matches!(
            self,
            BallOp::Lambda | BallOp::Dist | BallOp::Dist0 | BallOp::DistTangent
        )
    }
}

/// Checked arguments of one row-wise ball op.
///
/// ```
/// use muse_reference::poincare::{BallOp, Curvature, PoincareArgs};
/// let x = ndarray::Array2::from_elem((2, 3), 0.1);
/// let args = PoincareArgs::new(BallOp::Log0, Curvature::new(0.693)?, x.view(), None, None)?;
/// assert_eq!(args.x().dim(), (2, 3));
/// let outside = ndarray::Array2::from_elem((1, 3), 2.0);
/// assert!(PoincareArgs::new(BallOp::Log0, Curvature::new(1.0)?, outside.view(), None, None).is_err());
/// # Ok::<(), muse_reference::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct PoincareArgs<'a> {
    op: BallOp,
    c: Curvature,
    x: ArrayView2<'a, f64>,
    y: Option<ArrayView2<'a, f64>>,
    g: Option<ArrayView2<'a, f64>>,
}

impl<'a> PoincareArgs<'a> {
    /// Validates shapes ((R, D) with D ≥ 1; `y` as `x`; `g` (R, 1) for
    /// [`BallOp::DistTangentVjp`]), finiteness, and ball membership where the op needs it.
    pub fn new(
        op: BallOp,
        c: Curvature,
        x: ArrayView2<'a, f64>,
        y: Option<ArrayView2<'a, f64>>,
        g: Option<ArrayView2<'a, f64>>,
    ) -> Result<Self> {
        if x.ncols() == 0 {
            return Err(Error::Empty {
                op: OP,
                arg: "x",
                dim: "D",
                shape: x.shape().to_vec(),
            });
        }
        check_finite(OP, "x", &x)?;
        let (needs_y, y_ball) = op.y_use();
        match (needs_y, y) {
            (true, None) => {
                return Err(Error::Domain {
                    op: OP,
                    arg: "y",
                    rule: format!("is required by `{}`", op.name()),
                })
            }
            (true, Some(y)) => {
                if y.dim() != x.dim() {
                    return Err(Error::Shape {
                        op: OP,
                        arg: "y",
                        expected: format!("[R, D] = {:?} (as `x`)", x.shape()),
                        got: y.shape().to_vec(),
                    });
                }
                check_finite(OP, "y", &y)?;
                if y_ball {
                    check_in_ball(OP, "y", c, &y)?;
                }
            }
            _ => {}
        }
        if op.x_in_ball() {
            check_in_ball(OP, "x", c, &x)?;
        }
        if op == BallOp::DistTangentVjp {
            let g = g.ok_or(Error::Domain {
                op: OP,
                arg: "g",
                rule: "is required by `dist_tangent_vjp`".into(),
            })?;
            if g.dim() != (x.nrows(), 1) {
                return Err(Error::Shape {
                    op: OP,
                    arg: "g",
                    expected: format!("[R, 1] = [{}, 1]", x.nrows()),
                    got: g.shape().to_vec(),
                });
            }
            check_finite(OP, "g", &g)?;
        }
        Ok(Self { op, c, x, y, g })
    }
    /// The op.
    pub fn op(&self) -> BallOp {
        self.op
    }
    /// The curvature.
    pub fn curvature(&self) -> Curvature {
        self.c
    }
    /// First input, (R, D).
    pub fn x(&self) -> ArrayView2<'a, f64> {
        self.x
    }
    /// Second input, (R, D), where the op has one.
    pub fn y(&self) -> Option<ArrayView2<'a, f64>> {
        self.y
    }
    /// Upstream weights (R, 1) of [`BallOp::DistTangentVjp`].
    pub fn g(&self) -> Option<ArrayView2<'a, f64>> {
        self.g
    }
}

/// What a ball op returns: `out` ((R, D) or (R, 1)); `out2` and `dc` only for
/// [`BallOp::DistTangentVjp`].
#[derive(Debug, Clone, PartialEq)]
pub struct PoincareOut {
    /// The main result.
    pub out: Array2<f64>,
    /// d/dy of [`BallOp::DistTangentVjp`].
    pub out2: Option<Array2<f64>>,
    /// d/dc of [`BallOp::DistTangentVjp`].
    pub dc: Option<f64>,
}

/// The Poincaré-ball core on a backend.
///
/// ```
/// use muse_reference::poincare::{BallOp, Curvature, Poincare, PoincareArgs};
/// use muse_reference::{Cpu, Precision};
/// let u = ndarray::Array2::from_elem((1, 4), 0.5);
/// let args = PoincareArgs::new(BallOp::DistTangent, Curvature::new(1.0)?, u.view(), Some(u.view()), None)?;
/// assert_eq!(Cpu.poincare(&args, Precision::F64)?.out[[0, 0]], 0.0); // d(x, x) = 0 exactly
/// # Ok::<(), muse_reference::Error>(())
/// ```
pub trait Poincare {
    /// Applies the op to every row in `precision`; results widened to f64.
    fn poincare(&self, args: &PoincareArgs<'_>, precision: Precision) -> Result<PoincareOut>;
}

impl Poincare for Cpu {
    fn poincare(&self, args: &PoincareArgs<'_>, precision: Precision) -> Result<PoincareOut> {
        Ok(match precision {
            Precision::F64 => apply::<f64>(args),
            Precision::F32 => apply::<f32>(args),
        })
    }
}

fn row<F: Elem>(x: ndarray::ArrayView1<'_, f64>) -> Vec<F> {
    x.iter().map(|&v| F::of(v)).collect()
}

fn apply<F: Elem>(args: &PoincareArgs<'_>) -> PoincareOut {
    let (rows, dim) = args.x.dim();
    let c = F::of(args.c.c());
    let s = c.sqrt();
    let width = if args.op.scalar_out() { 1 } else { dim };
    let mut out = Array2::zeros((rows, width));
    let mut out2 = (args.op == BallOp::DistTangentVjp).then(|| Array2::zeros((rows, dim)));
    let mut dc = F::zero();
    let (mut buf, mut buf2) = (vec![F::zero(); dim], vec![F::zero(); dim]);
    for r in 0..rows {
        let x = row::<F>(args.x.row(r));
        let y = args.y.map(|y| row::<F>(y.row(r))).unwrap_or_default();
        let scalar = match args.op {
            BallOp::Projx => {
                maps::projx(s, F::of(EPS_BALL), &x, &mut buf);
                None
            }
            BallOp::Exp0 => {
                maps::exp0(s, &x, &mut buf);
                None
            }
            BallOp::Log0 => {
                maps::log0(s, &x, &mut buf);
                None
            }
            BallOp::ExpX => {
                maps::expx(c, &x, &y, &mut buf);
                None
            }
            BallOp::LogX => {
                maps::logx(c, &x, &y, &mut buf);
                None
            }
            BallOp::MobiusAdd => {
                maps::mobius_add(c, &x, &y, &mut buf);
                None
            }
            BallOp::Exp0Vjp => {
                grad::exp0_vjp(s, &x, &y, &mut buf);
                None
            }
            BallOp::Log0Vjp => {
                grad::log0_vjp(s, &x, &y, &mut buf);
                None
            }
            BallOp::DistTangentVjp => {
                let delta = F::of(args.g.map_or(0.0, |g| g[[r, 0]]));
                let ds = grad::dist_tangent_vjp(s, &x, &y, delta, &mut buf, &mut buf2);
                dc += ds / (F::of(2.0) * s);
                None
            }
            BallOp::Lambda => Some(maps::lambda(c, &x)),
            BallOp::Dist => Some(maps::dist_ball(c, &x, &y)),
            BallOp::Dist0 => Some(maps::dist0(s, &x)),
            BallOp::DistTangent => Some(maps::dist_tangent(s, &x, &y)),
        };
        match scalar {
            Some(v) => out[[r, 0]] = v.to_f64_exact(),
            None => {
                for (o, v) in out.row_mut(r).iter_mut().zip(&buf) {
                    *o = v.to_f64_exact();
                }
            }
        }
        if let Some(o2) = out2.as_mut() {
            for (o, v) in o2.row_mut(r).iter_mut().zip(&buf2) {
                *o = v.to_f64_exact();
            }
        }
    }
    PoincareOut {
        out,
        dc: out2.is_some().then(|| dc.to_f64_exact()),
        out2,
    }
}

#[cfg(test)]
mod tests;
