//! Row maps of the Poincaré ball B_c = {x : c‖x‖² < 1} (design hyperbolic.md §2.1, λ₀ = 2
//! convention of geoopt): exp/log maps at the origin and at a point, Möbius addition, the
//! conformal factor, the distance in ball form and from tangent vectors (§2.3), and projx.
//! Slices are one row of D elements; `s` is √c.

use super::scalar::{
    acosh1p, artanh, artanh_over, dist2, dot, norm, norm2, sinhc, tanh_cap, tanh_over,
};
use crate::Elem;

/// Cap on s‖u‖ in tangent-space distances (design §2.3, `A_MAX`): sinh²30 fits f32.
pub const A_MAX: f64 = 15.0;
/// Default projx margin ε_B (design §2.4).
pub const EPS_BALL: f64 = 1e-5;
/// Guard on the Möbius denominator, which is ≥ (1 − s‖x‖·s‖y‖)² > 0 inside the ball.
const MOBIUS_DEN_MIN: f64 = 1e-15;

/// exp0(v) = tanh(s‖v‖)/(s‖v‖)·v, with the tanh factor capped at [`tanh_cap`] so the image stays
/// inside the ball in `F`.
pub fn exp0<F: Elem>(s: F, v: &[F], out: &mut [F]) {
    let scale = capped_tanh_over(s * norm(v));
    for (o, &x) in out.iter_mut().zip(v) {
        *o = scale * x;
    }
}

/// tanh(t)/t with tanh capped at [`tanh_cap`] (series form near 0).
pub fn capped_tanh_over<F: Elem>(t: F) -> F {
    if t < F::of(1e-3) {
        tanh_over(t)
    } else {
        t.tanh().min(tanh_cap()) / t
    }
}

/// log0(x) = artanh(s‖x‖)/(s‖x‖)·x. The caller guarantees s‖x‖ < 1 (checked in f64); a point
/// that rounding in `F` pushed onto the boundary is read at the largest radius below it.
pub fn log0<F: Elem>(s: F, x: &[F], out: &mut [F]) {
    let scale = artanh_over((s * norm(x)).min(tanh_cap()));
    for (o, &v) in out.iter_mut().zip(x) {
        *o = scale * v;
    }
}

/// Möbius addition x ⊕ y.
pub fn mobius_add<F: Elem>(c: F, x: &[F], y: &[F], out: &mut [F]) {
    let (xy, x2, y2) = (dot(x, y), norm2(x), norm2(y));
    let two = F::of(2.0);
    let a = F::one() + two * c * xy + c * y2;
    let b = F::one() - c * x2;
    let den = (F::one() + two * c * xy + c * c * x2 * y2).max(F::of(MOBIUS_DEN_MIN));
    for ((o, &xi), &yi) in out.iter_mut().zip(x).zip(y) {
        *o = (a * xi + b * yi) / den;
    }
    keep_inside(c.sqrt(), out);
}

/// Pulls a point that rounding left on or outside the boundary back to radius [`tanh_cap`]/s
/// (inert in f64 unless s‖x‖ > 1 − 4.4e-16): results near the boundary stay finite and inside.
pub fn keep_inside<F: Elem>(s: F, x: &mut [F]) {
    let t = s * norm(x);
    if t > tanh_cap() {
        let scale = tanh_cap::<F>() / t;
        for e in x.iter_mut() {
            *e *= scale;
        }
    }
}

/// The conformal factor λ_x = 2/(1 − c‖x‖²).
pub fn lambda<F: Elem>(c: F, x: &[F]) -> F {
    F::of(2.0) / (F::one() - c * norm2(x))
}

/// exp_x(v) = x ⊕ [tanh(s λ_x‖v‖/2)·v/(s‖v‖)].
pub fn expx<F: Elem>(c: F, x: &[F], v: &[F], out: &mut [F]) {
    let s = c.sqrt();
    let lam = lambda(c, x);
    let half = lam / F::of(2.0);
    let scale = half * capped_tanh_over(s * half * norm(v));
    let step: Vec<F> = v.iter().map(|&e| scale * e).collect();
    mobius_add(c, x, &step, out);
}

/// log_x(y) = (2/(s λ_x))·artanh(s‖w‖)·w/‖w‖ with w = (−x) ⊕ y, the Möbius numerator written as
/// (1 − c‖x‖²)(y − x) − c‖x − y‖²·x (it equals −(1 − 2c⟨x,y⟩ + c‖y‖²)x + (1 − c‖x‖²)y): exactly 0
/// at y = x whatever the rounding, and without cancellation for nearby points.
pub fn logx<F: Elem>(c: F, x: &[F], y: &[F], out: &mut [F]) {
    let s = c.sqrt();
    let (xy, x2, y2) = (dot(x, y), norm2(x), norm2(y));
    let b = F::one() - c * x2;
    let d2 = dist2(x, y);
    let den = (F::one() - F::of(2.0) * c * xy + c * c * x2 * y2).max(F::of(MOBIUS_DEN_MIN));
    let w: Vec<F> = x
        .iter()
        .zip(y)
        .map(|(&xi, &yi)| (b * (yi - xi) - c * d2 * xi) / den)
        .collect();
    let scale = F::of(2.0) / lambda(c, x) * artanh_over((s * norm(&w)).min(tanh_cap()));
    for (o, &e) in out.iter_mut().zip(&w) {
        *o = scale * e;
    }
}

/// projx(p) = p·min(1, (1 − ε_B)/(s‖p‖)): the radial projection into the ball.
pub fn projx<F: Elem>(s: F, eps: F, p: &[F], out: &mut [F]) {
    let t = s * norm(p);
    let limit = F::one() - eps;
    let scale = if t > limit { limit / t } else { F::one() };
    for (o, &e) in out.iter_mut().zip(p) {
        *o = scale * e;
    }
}

/// Distance of two ball points in the acosh form: acosh1p(2c‖x − y‖²/((1 − c‖x‖²)(1 − c‖y‖²)))/s,
/// exactly 0 for x = y.
pub fn dist_ball<F: Elem>(c: F, x: &[F], y: &[F]) -> F {
    let s = c.sqrt();
    let den = (F::one() - c * norm2(x)) * (F::one() - c * norm2(y));
    acosh1p(F::of(2.0) * c * dist2(x, y) / den) / s
}

/// Distance of two ball points in the Möbius form (2/s)·artanh(s‖(−x) ⊕ y‖): the second form the
/// property tests compare with [`dist_ball`].
pub fn dist_mobius<F: Elem>(c: F, x: &[F], y: &[F]) -> F {
    let s = c.sqrt();
    let neg: Vec<F> = x.iter().map(|&e| -e).collect();
    let mut w = vec![F::zero(); x.len()];
    mobius_add(c, &neg, y, &mut w);
    F::of(2.0) * artanh((s * norm(&w)).min(F::one() - F::epsilon())) / s
}

/// Distance from the origin, d(0, x) = (2/s)·artanh(s‖x‖).
pub fn dist0<F: Elem>(s: F, x: &[F]) -> F {
    F::of(2.0) * artanh(s * norm(x)) / s
}

/// One tangent vector's radial terms for the law of cosines (design §2.3).
#[derive(Debug, Clone)]
pub struct TangentRow<F> {
    /// ‖u‖.
    pub r: F,
    /// a = min(s‖u‖, A_MAX).
    pub a: F,
    /// Whether the cap A_MAX is active (then ∂a/∂u = 0).
    pub capped: bool,
    /// û = u/‖u‖ (zero for u = 0).
    pub unit: Vec<F>,
    /// sinh(2a).
    pub sinh2a: F,
    /// cosh(2a).
    pub cosh2a: F,
    /// sinh(2a)/‖u‖, with its limit 2s at u = 0 (the radial part of the angular gradient).
    pub sinh2a_over_r: F,
}

impl<F: Elem> TangentRow<F> {
    /// The terms of `u` at s = √c.
    pub fn new(s: F, u: &[F]) -> Self {
        let r = norm(u);
        let raw = s * r;
        let cap = F::of(A_MAX);
        let (a, capped) = if raw > cap { (cap, true) } else { (raw, false) };
        let unit = if r > F::zero() {
            u.iter().map(|&e| e / r).collect()
        } else {
            vec![F::zero(); u.len()]
        };
        let two_a = F::of(2.0) * a;
        let sinh2a_over_r = if capped {
            two_a.sinh() / r
        } else {
            F::of(2.0) * s * sinhc(two_a)
        };
        Self {
            r,
            a,
            capped,
            unit,
            sinh2a: two_a.sinh(),
            cosh2a: two_a.cosh(),
            sinh2a_over_r,
        }
    }
}

/// 1 − C = ½‖û − ŵ‖² for the unit directions: exactly 0 for equal directions, no cancellation for
/// close ones, and 1 when either vector is zero (C = 0).
pub fn one_minus_cos<F: Elem>(u: &TangentRow<F>, w: &TangentRow<F>) -> F {
    if u.r == F::zero() || w.r == F::zero() {
        return F::one();
    }
    F::of(0.5) * dist2(&u.unit, &w.unit)
}

/// z of the law of cosines: 2·sinh²(a − b) + sinh(2a)·sinh(2b)·(1 − C), so that
/// cosh(s·d) = 1 + z with d = d(exp0 u, exp0 w).
pub fn law_of_cosines_z<F: Elem>(u: &TangentRow<F>, w: &TangentRow<F>) -> F {
    let sh = (u.a - w.a).sinh();
    F::of(2.0) * sh * sh + u.sinh2a * w.sinh2a * one_minus_cos(u, w)
}

/// d(exp0 u, exp0 w) from the tangent vectors, without forming 1 − c‖x‖² (design §2.3).
pub fn dist_tangent<F: Elem>(s: F, u: &[F], w: &[F]) -> F {
    let (tu, tw) = (TangentRow::new(s, u), TangentRow::new(s, w));
    acosh1p(law_of_cosines_z(&tu, &tw)) / s
}
