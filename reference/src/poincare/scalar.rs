//! Stable scalar forms of the Poincaré-ball maps (design hyperbolic.md §2.2), generic over the
//! float type. Every kernel of the hyperbolic family (CPU and, mirrored in
//! `crates/muse-cuda/kernels/include/poincare.cuh`, GPU) evaluates through these.

use crate::Elem;

/// Below this argument the series forms of `tanh t / t` and `artanh t / t` are used.
const SERIES_BELOW: f64 = 1e-3;

/// `tanh(t)/t` for t ≥ 0, without 0/0 at t = 0.
///
/// ```
/// use muse_reference::poincare::tanh_over;
/// assert_eq!(tanh_over(0.0_f64), 1.0);
/// assert!((tanh_over(2.0_f64) - 2.0_f64.tanh() / 2.0).abs() < 1e-16);
/// ```
pub fn tanh_over<F: Elem>(t: F) -> F {
    if t < F::of(SERIES_BELOW) {
        let t2 = t * t;
        F::one() - t2 / F::of(3.0) + F::of(2.0 / 15.0) * t2 * t2
    } else {
        t.tanh() / t
    }
}

/// `artanh(t)/t` for 0 ≤ t < 1, without 0/0 at t = 0.
///
/// ```
/// use muse_reference::poincare::artanh_over;
/// assert_eq!(artanh_over(0.0_f64), 1.0);
/// assert!((artanh_over(0.5_f64) - 0.5_f64.atanh() / 0.5).abs() < 1e-15);
/// ```
pub fn artanh_over<F: Elem>(t: F) -> F {
    if t < F::of(SERIES_BELOW) {
        let t2 = t * t;
        F::one() + t2 / F::of(3.0) + t2 * t2 / F::of(5.0)
    } else {
        artanh(t) / t
    }
}

/// `artanh(t) = ½·log1p(2t/(1 − t))`, accurate near t = 1 (|t| < 1).
///
/// ```
/// use muse_reference::poincare::artanh;
/// assert!((artanh(0.9999_f64) - 0.9999_f64.atanh()).abs() < 1e-12);
/// ```
pub fn artanh<F: Elem>(t: F) -> F {
    F::of(0.5) * (F::of(2.0) * t / (F::one() - t)).ln_1p()
}

/// `acosh(1 + z) = log1p(z + √(z(z + 2)))`, with z clamped at 0, so acosh1p(0) = 0 exactly; for
/// z > 1e18 (where z² overflows f32) `ln 2 + log1p(z)`.
///
/// ```
/// use muse_reference::poincare::acosh1p;
/// assert_eq!(acosh1p(0.0_f64), 0.0);
/// // acosh(1 + z) = 2·asinh(√(z/2)), another cancellation-free form:
/// assert!((acosh1p(1e-10_f64) - 2.0 * (5e-11_f64).sqrt().asinh()).abs() < 1e-19);
/// assert!((acosh1p(3.0_f64) - 4.0_f64.acosh()).abs() < 1e-15);
/// ```
pub fn acosh1p<F: Elem>(z: F) -> F {
    let z = z.max(F::zero());
    if z > F::of(1e18) {
        F::of(std::f64::consts::LN_2) + z.ln_1p()
    } else {
        (z + (z * (z + F::of(2.0))).sqrt()).ln_1p()
    }
}

/// d acosh1p / dz = 1/√(z(z + 2)) as used by every backward: 1/√max(z(z + 2), 1e-12), and 0 at
/// z = 0 (the subgradient at coincident points, design §2.2).
///
/// ```
/// use muse_reference::poincare::acosh1p_prime;
/// assert_eq!(acosh1p_prime(0.0_f64), 0.0);
/// assert!((acosh1p_prime(3.0_f64) - 1.0 / 15.0_f64.sqrt()).abs() < 1e-16);
/// ```
pub fn acosh1p_prime<F: Elem>(z: F) -> F {
    if z <= F::zero() {
        F::zero()
    } else {
        F::one() / (z * (z + F::of(2.0))).max(F::of(1e-12)).sqrt()
    }
}

/// `sinh(x)/x`, 1 at x = 0.
pub fn sinhc<F: Elem>(x: F) -> F {
    if x.abs() < F::of(SERIES_BELOW) {
        F::one() + x * x / F::of(6.0)
    } else {
        x.sinh() / x
    }
}

/// The largest tanh factor an exp map may produce in `F`: 1 − 2ε, so that the rounded image
/// keeps √c‖x‖ < 1 even when tanh(t) rounds to 1 (f32 from t ≈ 9). Invisible in f64 for
/// t ≤ 18.
pub fn tanh_cap<F: Elem>() -> F {
    F::one() - F::of(2.0) * F::epsilon()
}

/// Dot product.
pub fn dot<F: Elem>(x: &[F], y: &[F]) -> F {
    x.iter().zip(y).fold(F::zero(), |acc, (&a, &b)| acc + a * b)
}

/// Squared Euclidean norm.
pub fn norm2<F: Elem>(x: &[F]) -> F {
    dot(x, x)
}

/// Euclidean norm.
pub fn norm<F: Elem>(x: &[F]) -> F {
    norm2(x).sqrt()
}

/// Squared Euclidean distance, computed from the differences (exactly 0 for equal inputs).
pub fn dist2<F: Elem>(x: &[F], y: &[F]) -> F {
    x.iter().zip(y).fold(F::zero(), |acc, (&a, &b)| {
        let d = a - b;
        acc + d * d
    })
}
