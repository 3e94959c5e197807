//! Pairwise Poincaré distance matrix (design hyperbolic.md §7): x (B, H, N, D) and
//! y (B, H, M, D) give d (B, H, N, M) with d_ij = d_c(x_i, y_j), from tangent vectors
//! ([`HypDistInput::Tangent`], the default: d(exp0 x_i, exp0 y_j) by the law of cosines, §2.3) or
//! from ball points ([`HypDistInput::Ball`]: acosh1p(2c‖x − y‖²/((1 − c‖x‖²)(1 − c‖y‖²)))/√c).
//! Every D ≥ 1 counts (the original used only the first 32 dimensions) and 1/√c is never omitted.
//!
//! d(x, x) is exactly 0: the reference forms 1 − C = ½‖x̂ − ŷ‖² (tangent, [`tangent_z`]) and
//! ‖x − y‖² (ball) from differences. The GPU kernel takes the Gram matrix from a register-tiled product and
//! recomputes exactly those difference forms for near-coincident pairs (see
//! `crates/muse-cuda/src/hyp_dist.rs`).
//!
//! Other faces of this family: `crates/muse-cuda/src/hyp_dist.rs`,
//! `crates/muse-cuda/kernels/hyp_dist.cu`, `tests/hyp_dist.rs`, `fixtures/hyperbolic/`
//! (cases `tangent_*`, `ball_*`).

use ndarray::{Array4, ArrayView2, ArrayView4, Axis};

use crate::poincare::maps::TangentRow;
use crate::poincare::scalar::{acosh1p, dist2};
use crate::poincare::{check_finite, check_in_ball, check_nonempty, Curvature};
use crate::{Cpu, Dtype, Elem, Error, Result};

const OP: &str = "hyp_dist";

/// What the rows of x and y are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HypDistInput {
    /// Tangent vectors at the origin; d(exp0 x, exp0 y) by the law of cosines (the default).
    #[default]
    Tangent,
    /// Points of the ball (c‖x‖² < 1); the acosh form with exact row norms.
    Ball,
}

impl HypDistInput {
    /// `"tangent"` or `"ball"`, as in the fixtures' `input` parameter.
    pub fn name(self) -> &'static str {
        match self {
            HypDistInput::Tangent => "tangent",
            HypDistInput::Ball => "ball",
        }
    }
}

impl std::str::FromStr for HypDistInput {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tangent" | "Tangent" => Ok(HypDistInput::Tangent),
            "ball" | "Ball" => Ok(HypDistInput::Ball),
            other => Err(Error::Domain {
                op: OP,
                arg: "input",
                rule: format!("must be `tangent` or `ball`, got `{other}`"),
            }),
        }
    }
}

/// Checked arguments of one distance-matrix call.
///
/// ```
/// use muse_reference::hyp_dist::{HypDistArgs, HypDistInput};
/// use ndarray::Array4;
/// let (x, y) = (Array4::from_elem((1, 2, 3, 4), 0.1), Array4::from_elem((1, 2, 5, 4), 0.2));
/// let args = HypDistArgs::new(x.view(), y.view(), 0.693, HypDistInput::Ball)?;
/// assert_eq!(args.out_dim(), (1, 2, 3, 5));
/// let far = Array4::from_elem((1, 2, 5, 4), 2.0);
/// let e = HypDistArgs::new(x.view(), far.view(), 0.693, HypDistInput::Ball).unwrap_err();
/// assert!(e.to_string().starts_with("hyp_dist: `y` row 0 is not inside the Poincaré ball"));
/// # Ok::<(), muse_reference::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HypDistArgs<'a> {
    x: ArrayView4<'a, f64>,
    y: ArrayView4<'a, f64>,
    c: Curvature,
    input: HypDistInput,
}

/// The (rows, D) view of a (B, H, L, D) array in standard layout, or its copy otherwise.
fn rows_of(a: &ArrayView4<'_, f64>) -> ndarray::Array2<f64> {
    let (b, h, l, d) = a.dim();
    a.to_shape((b * h * l, d))
        .map(|v| v.to_owned())
        .unwrap_or_else(|_| {
            ndarray::Array2::from_shape_vec((b * h * l, d), a.iter().copied().collect())
                .expect("invariant: element count of a (B, H, L, D) array")
        })
}

impl<'a> HypDistArgs<'a> {
    /// Validates shapes (x (B, H, N, D), y (B, H, M, D), every size ≥ 1), finiteness, the
    /// curvature, and for [`HypDistInput::Ball`] that every row lies inside the ball
    /// ([`Error::OutOfBall`], with the flat row index over B·H·N resp. B·H·M).
    pub fn new(
        x: ArrayView4<'a, f64>,
        y: ArrayView4<'a, f64>,
        c: f64,
        input: HypDistInput,
    ) -> Result<Self> {
        check_nonempty(OP, "x", &["B", "H", "N", "D"], x.shape())?;
        check_nonempty(OP, "y", &["B", "H", "M", "D"], y.shape())?;
        let (b, h, _, d) = x.dim();
        let (yb, yh, _, yd) = y.dim();
        if (yb, yh, yd) != (b, h, d) {
            return Err(Error::Shape {
                op: OP,
                arg: "y",
                expected: format!("[B, H, M, D] = [{b}, {h}, M, {d}] (as `x`)"),
                got: y.shape().to_vec(),
            });
        }
        check_finite(OP, "x", &x)?;
        check_finite(OP, "y", &y)?;
        let c = Curvature::named(OP, "c", c)?;
        if input == HypDistInput::Ball {
            check_in_ball(OP, "x", c, &rows_of(&x).view())?;
            check_in_ball(OP, "y", c, &rows_of(&y).view())?;
        }
        Ok(Self { x, y, c, input })
    }

    /// The first input, (B, H, N, D).
    pub fn x(&self) -> ArrayView4<'a, f64> {
        self.x
    }
    /// The second input, (B, H, M, D).
    pub fn y(&self) -> ArrayView4<'a, f64> {
        self.y
    }
    /// The curvature.
    pub fn curvature(&self) -> Curvature {
        self.c
    }
    /// Tangent vectors or ball points.
    pub fn input(&self) -> HypDistInput {
        self.input
    }
    /// The output shape (B, H, N, M).
    pub fn out_dim(&self) -> (usize, usize, usize, usize) {
        let (b, h, n, _) = self.x.dim();
        (b, h, n, self.y.dim().2)
    }
    /// D.
    pub fn dim(&self) -> usize {
        self.x.dim().3
    }

    /// Ball inputs rounded to `dtype` must still lie inside the ball (checked in f64 on the
    /// rounded values): rounding can carry a point within one ulp of the boundary across it.
    pub fn check_rounded(&self, dtype: Dtype) -> Result<()> {
        if self.input != HypDistInput::Ball || dtype == Dtype::F64 {
            return Ok(());
        }
        for (arg, a) in [("x", &self.x), ("y", &self.y)] {
            let rounded = rows_of(a).mapv(|v| dtype.round(v));
            check_in_ball(OP, arg, self.c, &rounded.view())?;
        }
        Ok(())
    }
}

/// The pairwise distance matrix on a backend.
///
/// ```
/// use muse_reference::hyp_dist::{HypDist, HypDistArgs, HypDistInput};
/// use muse_reference::{Cpu, Dtype};
/// use ndarray::Array4;
/// let x = Array4::from_shape_fn((1, 1, 3, 2), |(_, _, i, k)| 0.1 * (i + k) as f64);
/// let args = HypDistArgs::new(x.view(), x.view(), 1.0, HypDistInput::Tangent)?;
/// let d = Cpu.hyp_dist(&args, Dtype::F64)?;
/// assert_eq!(d[[0, 0, 1, 1]], 0.0); // d(x, x) = 0 exactly
/// assert!((d[[0, 0, 0, 1]] - d[[0, 0, 1, 0]]).abs() < 1e-15);
/// # Ok::<(), muse_reference::Error>(())
/// ```
pub trait HypDist {
    /// d (B, H, N, M), computed in `dtype` (bf16: inputs rounded to bf16, computed in f32).
    fn hyp_dist(&self, args: &HypDistArgs<'_>, dtype: Dtype) -> Result<Array4<f64>>;
}

impl HypDist for Cpu {
    fn hyp_dist(&self, args: &HypDistArgs<'_>, dtype: Dtype) -> Result<Array4<f64>> {
        args.check_rounded(dtype)?;
        Ok(match dtype {
            Dtype::F64 => forward::<f64>(args, dtype),
            Dtype::F32 | Dtype::Bf16 => forward::<f32>(args, dtype),
        })
    }
}

fn rows_f<F: Elem>(a: ArrayView2<'_, f64>, dtype: Dtype) -> Vec<Vec<F>> {
    a.axis_iter(Axis(0))
        .map(|r| r.iter().map(|&v| F::of(dtype.round(v))).collect())
        .collect()
}

/// The reference distance matrix in `F` (inputs rounded to `dtype` first): the law of cosines
/// with 1 − C = ½‖x̂ − ŷ‖², or the acosh form with ‖x − y‖² and (1 − c‖x‖²) from the rows.
pub fn forward<F: Elem>(args: &HypDistArgs<'_>, dtype: Dtype) -> Array4<f64> {
    let (b, h, n, m) = args.out_dim();
    let c = F::of(args.c.c());
    let s = c.sqrt();
    let xs = rows_of(&args.x);
    let ys = rows_of(&args.y);
    let mut out = Array4::zeros((b, h, n, m));
    for bh in 0..b * h {
        let xr = rows_f::<F>(
            xs.slice_axis(Axis(0), ndarray::Slice::from(bh * n..(bh + 1) * n)),
            dtype,
        );
        let yr = rows_f::<F>(
            ys.slice_axis(Axis(0), ndarray::Slice::from(bh * m..(bh + 1) * m)),
            dtype,
        );
        let mut o = out.index_axis_mut(Axis(0), bh / h);
        let mut o = o.index_axis_mut(Axis(0), bh % h);
        match args.input {
            HypDistInput::Tangent => {
                let tx: Vec<TangentRow<F>> = xr.iter().map(|v| TangentRow::new(s, v)).collect();
                let ty: Vec<TangentRow<F>> = yr.iter().map(|v| TangentRow::new(s, v)).collect();
                for (i, (u, tu)) in xr.iter().zip(&tx).enumerate() {
                    for (j, (w, tw)) in yr.iter().zip(&ty).enumerate() {
                        let z = tangent_z(s, u, w, tu, tw);
                        o[[i, j]] = (acosh1p(z) / s).to_f64_exact();
                    }
                }
            }
            HypDistInput::Ball => {
                // Exact row factors 1 − c‖x‖², from f64 sums of the rounded rows.
                let den = |v: &Vec<F>| F::of(1.0 - args.c.c() * norm2_wide(v));
                let (dx, dy): (Vec<F>, Vec<F>) =
                    (xr.iter().map(den).collect(), yr.iter().map(den).collect());
                for (i, u) in xr.iter().enumerate() {
                    for (j, w) in yr.iter().enumerate() {
                        let z = F::of(2.0) * c * dist2(u, w) / (dx[i] * dy[j]);
                        o[[i, j]] = (acosh1p(z) / s).to_f64_exact();
                    }
                }
            }
        }
    }
    out
}

/// z of the law of cosines (design §2.3) for the tangent rows u, w with their radial terms,
/// with 1 − C and a − b formed from the differences of the rows, so that near-coincident pairs
/// keep their relative accuracy in f32 (the unit vectors' rounding would otherwise dominate):
///
/// - with t = w − u and δ = ‖w‖ − ‖u‖ = ⟨t, w + u⟩/(‖u‖ + ‖w‖), the vector e = t − û·δ has
///   ‖e‖ = ‖w‖·‖ŵ − û‖, so 1 − C = ½‖û − ŵ‖² = ½(‖e‖/‖w‖)², exactly 0 for u = w and with an error
///   of second order in the rounding when the difference is radial;
/// - a − b = −√c·δ unless a cap A_MAX is active.
///
/// A zero vector has C = 0 (as [`crate::poincare::maps::one_minus_cos`]).
///
/// ```
/// use muse_reference::hyp_dist::tangent_z;
/// use muse_reference::poincare::maps::{law_of_cosines_z, TangentRow};
/// let (s, u, w) = (0.8_f64, [0.3, -1.2, 0.5], [0.31, -1.19, 0.52]);
/// let (tu, tw) = (TangentRow::new(s, &u), TangentRow::new(s, &w));
/// let z = tangent_z(s, &u, &w, &tu, &tw);
/// assert!((z - law_of_cosines_z(&tu, &tw)).abs() < 1e-14 * z);
/// assert_eq!(tangent_z(s, &u, &u, &tu, &tu), 0.0);
/// ```
pub fn tangent_z<F: Elem>(s: F, u: &[F], w: &[F], tu: &TangentRow<F>, tw: &TangentRow<F>) -> F {
    let (omc, ad) = if tu.r == F::zero() || tw.r == F::zero() {
        (F::one(), tu.a - tw.a)
    } else {
        let pp = u
            .iter()
            .zip(w)
            .fold(F::zero(), |acc, (&a, &b)| acc + (b - a) * (b + a));
        let delta = pp / (tu.r + tw.r);
        let ee = u
            .iter()
            .zip(w)
            .zip(&tu.unit)
            .fold(F::zero(), |acc, ((&a, &b), &h)| {
                let e = (b - a) - h * delta;
                acc + e * e
            });
        let ad = if tu.capped || tw.capped {
            tu.a - tw.a
        } else {
            -s * delta
        };
        // ‖ŵ − û‖ = ‖e‖/‖w‖, without forming ‖w‖² (which underflows for tiny rows).
        let rel = ee.sqrt() / tw.r;
        (F::of(0.5) * rel * rel, ad)
    };
    let sh = ad.sinh();
    F::of(2.0) * sh * sh + tu.sinh2a * tw.sinh2a * omc
}

/// ‖v‖² accumulated in f64 (the ball factors 1 − c‖x‖² lose everything near the boundary when
/// formed from an f32 sum).
fn norm2_wide<F: Elem>(v: &[F]) -> f64 {
    v.iter().fold(0.0, |acc, &e| {
        let w = e.to_f64_exact();
        acc + w * w
    })
}

#[cfg(test)]
mod tests;
