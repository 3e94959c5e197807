//! Vector–Jacobian products of the Poincaré maps (design hyperbolic.md §2.5): exp0, log0 and the
//! law-of-cosines distance, including its derivative with respect to the curvature.

use super::maps::{law_of_cosines_z, TangentRow};
use super::scalar::{acosh1p, acosh1p_prime, artanh_over, dot, norm, tanh_cap};
use crate::Elem;

/// ḡ = J_exp0(v)ᵀ g, written without cancellation as φ·(g − ⟨û,g⟩û) + sech²(t)·⟨û,g⟩û: J is
/// φ(r) = tanh(sr)/(sr) across the radius and d/dr[r·φ(r)] = sech²(sr) along it. (The plain form
/// φg + (φ′/r)⟨v,g⟩v subtracts two terms of size 1/t to get sech² t ≈ 1e-9 at t = 11.) Along
/// the radius this is the true derivative even where exp0 caps its tanh factor in `F`: a radius
/// frozen by rounding must not zero the gradient.
pub fn exp0_vjp<F: Elem>(s: F, v: &[F], g: &[F], out: &mut [F]) {
    let r = norm(v);
    let t = s * r;
    let ch = t.cosh();
    let phi = crate::poincare::maps::capped_tanh_over(t);
    radial_split(phi, F::one() / (ch * ch), r, v, g, out);
}

/// φ·g_⊥ + ρ·g_∥ for the split of `g` along û = v/‖v‖ (all of g is "across" at v = 0).
fn radial_split<F: Elem>(across: F, along: F, r: F, v: &[F], g: &[F], out: &mut [F]) {
    if v.len() == 1 && r > F::zero() {
        // In one dimension every vector is radial; (v/r)² = 1 only up to rounding, and φ·(1 − u²)
        // would swamp sech² t at large t.
        out[0] = along * g[0];
        return;
    }
    if r == F::zero() {
        for (o, &gi) in out.iter_mut().zip(g) {
            *o = across * gi;
        }
        return;
    }
    let par = dot(v, g) / r;
    for ((o, &gi), &vi) in out.iter_mut().zip(g).zip(v) {
        let u = vi / r;
        *o = across * (gi - par * u) + along * par * u;
    }
}

/// ḡ = J_log0(x)ᵀ g = ψ·(g − ⟨x̂,g⟩x̂) + ⟨x̂,g⟩x̂/(1 − t²), with ψ = artanh(t)/t, t = s‖x‖ < 1
/// (d/dr[r·ψ] = 1/(1 − t²) along the radius).
pub fn log0_vjp<F: Elem>(s: F, x: &[F], g: &[F], out: &mut [F]) {
    let r = norm(x);
    let t = (s * r).min(tanh_cap());
    radial_split(artanh_over(t), F::one() / (F::one() - t * t), r, x, g, out);
}

/// Partial derivatives of z (law of cosines) with respect to a, b and C.
#[derive(Debug, Clone, Copy)]
pub struct ZPartials<F> {
    /// ∂z/∂a.
    pub da: F,
    /// ∂z/∂b.
    pub db: F,
    /// ∂z/∂C = −sinh 2a·sinh 2b.
    pub dc: F,
    /// 1 − C.
    pub one_minus_c: F,
}

/// ∂z/∂a = 2 sinh 2(a−b) + 2 cosh 2a·sinh 2b·(1−C); ∂z/∂b = −2 sinh 2(a−b) + 2 sinh 2a·cosh 2b·(1−C).
pub fn z_partials<F: Elem>(u: &TangentRow<F>, w: &TangentRow<F>) -> ZPartials<F> {
    let omc = super::maps::one_minus_cos(u, w);
    let two = F::of(2.0);
    let sh2 = (two * (u.a - w.a)).sinh();
    ZPartials {
        da: two * sh2 + two * u.cosh2a * w.sinh2a * omc,
        db: -two * sh2 + two * u.sinh2a * w.cosh2a * omc,
        dc: -u.sinh2a * w.sinh2a,
        one_minus_c: omc,
    }
}

/// Gradient of δ·d(exp0 u, exp0 w) with respect to u, w (written to `du`, `dw`) and s = √c
/// (returned). d = 0 (coincident points) has the subgradient 0 for u and w.
pub fn dist_tangent_vjp<F: Elem>(
    s: F,
    u: &[F],
    w: &[F],
    delta: F,
    du: &mut [F],
    dw: &mut [F],
) -> F {
    du.fill(F::zero());
    dw.fill(F::zero());
    let (tu, tw) = (TangentRow::new(s, u), TangentRow::new(s, w));
    pair_vjp(s, &tu, &tw, delta, du, dw)
}

/// The law-of-cosines VJP of one pair from precomputed rows: adds δ·∂d/∂u to `du` and δ·∂d/∂w to
/// `dw`, and returns δ·∂d/∂s. Used by the attention backward for every (query, key) pair.
pub fn pair_vjp<F: Elem>(
    s: F,
    tu: &TangentRow<F>,
    tw: &TangentRow<F>,
    delta: F,
    du: &mut [F],
    dw: &mut [F],
) -> F {
    let z = law_of_cosines_z(tu, tw);
    let d = acosh1p(z) / s;
    let k = delta * acosh1p_prime(z) / s;
    let p = z_partials(tu, tw);
    let cos = F::one() - p.one_minus_c;
    let ga = if tu.capped { F::zero() } else { k * p.da * s };
    let gb = if tw.capped { F::zero() } else { k * p.db * s };
    // (I − ûûᵀ)ŵ = ŵ − Cû, scaled by ∂z/∂C·(1/r) = −sinh 2b·(sinh 2a/r).
    let ang_u = -k * tw.sinh2a * tu.sinh2a_over_r;
    let ang_w = -k * tu.sinh2a * tw.sinh2a_over_r;
    for i in 0..du.len() {
        let (ui, wi) = (tu.unit[i], tw.unit[i]);
        du[i] = du[i] + ga * ui + ang_u * (wi - cos * ui);
        dw[i] = dw[i] + gb * wi + ang_w * (ui - cos * wi);
    }
    let ra = if tu.capped { F::zero() } else { tu.r };
    let rb = if tw.capped { F::zero() } else { tw.r };
    -delta * d / s + k * (p.da * ra + p.db * rb)
}
