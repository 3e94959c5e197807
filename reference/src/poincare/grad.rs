//! Vector–Jacobian products of the Poincaré maps (design hyperbolic.md §2.5): exp0, log0 and the
//! law-of-cosines distance, including its derivative with respect to the curvature.

use super::maps::{law_of_cosines_z, TangentRow};
use super::scalar::{acosh1p, acosh1p_prime, artanh, artanh_over, dot, norm, tanh_cap, tanh_over};
use crate::Elem;

/// ḡ = J_exp0(v)ᵀ g = φ·g + (φ′(r)/r)·⟨v, g⟩·v with φ(r) = tanh(sr)/(sr), r = ‖v‖.
pub fn exp0_vjp<F: Elem>(s: F, v: &[F], g: &[F], out: &mut [F]) {
    let r = norm(v);
    let t = s * r;
    let (phi, bracket) = if t < F::of(1e-3) {
        let t2 = t * t;
        (
            tanh_over(t),
            s * s * (F::of(-2.0 / 3.0) + F::of(8.0 / 15.0) * t2),
        )
    } else if t.tanh() > tanh_cap() {
        // exp0 uses the capped factor cap/t here: differentiate what is computed.
        let cap = tanh_cap::<F>();
        (cap / t, -cap / (s * r * r * r))
    } else {
        let (th, ch) = (t.tanh(), t.cosh());
        (th / t, F::one() / (ch * ch * r * r) - th / (s * r * r * r))
    };
    let vg = dot(v, g);
    for ((o, &gi), &vi) in out.iter_mut().zip(g).zip(v) {
        *o = phi * gi + bracket * vg * vi;
    }
}

/// ḡ = J_log0(x)ᵀ g = ψ·g + (ψ′(r)/r)·⟨x, g⟩·x with ψ(r) = artanh(sr)/(sr), r = ‖x‖ < 1/s.
pub fn log0_vjp<F: Elem>(s: F, x: &[F], g: &[F], out: &mut [F]) {
    let r = norm(x);
    let t = s * r;
    let bracket = if t < F::of(1e-3) {
        s * s * (F::of(2.0 / 3.0) + F::of(4.0 / 5.0) * t * t)
    } else {
        F::one() / ((F::one() - t * t) * r * r) - artanh(t) / (s * r * r * r)
    };
    let psi = artanh_over(t);
    let xg = dot(x, g);
    for ((o, &gi), &xi) in out.iter_mut().zip(g).zip(x) {
        *o = psi * gi + bracket * xg * xi;
    }
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
