//! Element tolerances, burn-style: `|x − y| ≤ max(rtol·max(|x|, |y|), atol)`, with NaN only
//! equal to NaN and ±inf only to the same ±inf. Named per dtype and per family, each with its
//! origin; tests and reports use the names, never literals.

use num_complex::Complex64;
use serde::{Deserialize, Serialize};

/// A relative/absolute tolerance.
///
/// ```
/// use muse_verify::Tolerance;
/// let t = Tolerance::new(1e-3, 1e-9);
/// assert!(t.close(1000.0, 1000.5));
/// assert!(!t.close(1e-6, 2e-6));
/// assert!(t.close(f64::NAN, f64::NAN) && !t.close(f64::NAN, 1.0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tolerance {
    /// Relative part, against the larger magnitude.
    pub rtol: f64,
    /// Absolute floor.
    pub atol: f64,
}

impl Tolerance {
    /// A tolerance with these parts.
    pub const fn new(rtol: f64, atol: f64) -> Self {
        Self { rtol, atol }
    }

    /// |x − y| as a multiple of what is allowed (≤ 1 is close); 0 for identical non-finite
    /// values and infinity for mismatched ones.
    pub fn ratio(&self, x: Complex64, y: Complex64) -> f64 {
        if !(x.is_finite() && y.is_finite()) {
            let same = |a: f64, b: f64| (a.is_nan() && b.is_nan()) || a == b;
            return if same(x.re, y.re) && same(x.im, y.im) {
                0.0
            } else {
                f64::INFINITY
            };
        }
        let d = (x - y).norm();
        let allowed = (self.rtol * x.norm().max(y.norm())).max(self.atol);
        if d == 0.0 {
            0.0
        } else {
            d / allowed
        }
    }

    /// True when the two reals are close.
    pub fn close(&self, x: f64, y: f64) -> bool {
        self.ratio(x.into(), y.into()) <= 1.0
    }
}

impl std::fmt::Display for Tolerance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rtol {:e}, atol {:e}", self.rtol, self.atol)
    }
}

/// Named tolerances.
pub mod tol {
    use super::{DistTolerance, Tolerance};

    /// f64 results of the same maths by different O(N) algorithms: a few hundred ulps.
    pub const F64: Tolerance = Tolerance::new(1e-12, 1e-300);
    /// f32 results of the same maths: a few hundred f32 ulps.
    pub const F32: Tolerance = Tolerance::new(1e-5, 1e-37);
    /// BK-Core f64 vs the dense complex128 oracle: `|ΔG| ≤ 1e-10·max(1, |G|)` (design §12; the
    /// issue asks max abs ≤ 1e-10·max|G|, which this implies where |G| ≥ 1).
    pub const BK_CORE_F64: Tolerance = Tolerance::new(1e-10, 1e-10);
    /// BK-Core f32 vs the f64 oracle in the model regimes (b = c, Im z ≥ 0.05):
    /// `|ΔG| ≤ 1e-5·max(1, |G|)` (design §12).
    pub const BK_CORE_F32: Tolerance = Tolerance::new(1e-5, 1e-5);
    /// BK-Core f32 vs the f64 oracle with random non-symmetric couplings, where pivots come
    /// close to 0 and amplify rounding: `|ΔG| ≤ 1e-4·max(1, |G|)` (design §12).
    pub const BK_CORE_F32_RANDOM: Tolerance = Tolerance::new(1e-4, 1e-4);
    /// Exact gradient f64 vs the dense formula, relative to max|grad| (design §12): applied
    /// as an absolute bound after scaling by max|grad|.
    pub const BK_CORE_GRAD_F64: f64 = 1e-10;
    /// Exact gradient f32 vs f64, relative to max|grad| (design §12).
    pub const BK_CORE_GRAD_F32: f64 = 1e-4;
    /// Compat modes (complex64 outputs) vs an independent emulation: `≤ 1e-6·max(1, |G|)`
    /// (design §12: complex64 rounding, observed 4e-7).
    pub const BK_CORE_COMPAT: Tolerance = Tolerance::new(1e-6, 1e-6);
    /// Hybrid gradient vs an independent float32 emulation, in f32 unit roundoffs (2⁻²⁴) of the
    /// blended terms' magnitude (`hybrid::term_scale`) plus the result's: the result is a
    /// difference of terms up to |g|·|G|² ≈ 2500·|g| that cancel, and last-ulp differences of the
    /// complex products (numpy's SIMD loops vs scalar code) survive the cancellation.
    pub const BK_CORE_HYBRID_ULPS: f64 = 8.0;
    /// The project's agreement rule: MSE below this against the f64 truth.
    pub const MSE_MAX: f64 = 1e-6;

    /// Hyperbolic families, f64 CUDA against the f64 CPU reference element by element:
    /// `|Δ| ≤ max(1e-12·|x|, 1e-14)`. The outputs are O(1) (LayerNorm outputs, averages of v rows,
    /// distances), and an element that cancels to 1e-7 keeps the absolute rounding of its O(1)
    /// terms (a few ulps, observed ≤ 4.4e-16 on the H200), which a pure 1e-12 relative bound
    /// ([`F64`]) cannot allow for.
    pub const HYP_F64_CROSS: Tolerance = Tolerance::new(1e-12, 1e-14);
    /// Hyperbolic families (`hyp_ln`, `lin_attn`, `hyp_dist`), f64 CPU and f64 CUDA vs the
    /// fixtures' numpy/mpmath oracle: `|Δ| ≤ 1e-9·max(1, |want|)` (the project's brief, design
    /// hyperbolic.md §16: the f64 path must match the oracle before it serves as the truth).
    pub const HYP_ORACLE_F64: Tolerance = Tolerance::new(1e-9, 1e-9);
    /// Quantised families (`kv4`, `hyp_int8`, `w4a8`, `acosh_lut`), the f64 arithmetic on the same
    /// codes vs the numpy/mpmath oracle (design §16 test (a)): `|Δ| ≤ max(1e-12·|x|, 1e-14)`. Codes,
    /// zero points and fp16 bit patterns are compared exactly, never with a tolerance.
    pub const QUANT_F64: Tolerance = Tolerance::new(1e-12, 1e-14);
    /// Hyperbolic families, f64 backward vs central finite differences of the f64 forward
    /// (h = 1e-6), relative to max(1, max|fd|) (design hyperbolic.md §16).
    pub const HYP_GRAD_FD_F64: f64 = 1e-6;
    /// Fused LN + projection, f32 (and bf16 inputs, computed in f32) vs f64 on the same rounded
    /// inputs: `|Δ| ≤ 1e-5·max(1, |want|)` for y and out (design hyperbolic.md §16, "fused
    /// LN + proj, f32: rel ≤ 1e-5"); MSE < [`MSE_MAX`] and √c‖out‖ < 1 are gated too.
    pub const HYP_LN_F32: Tolerance = Tolerance::new(1e-5, 1e-5);
    /// Fused LN + projection backward, f32 vs f64 on the same rounded inputs: max|Δ| ≤ 1e-4 ·
    /// max|want| per gradient (dx, dγ, dβ_ln; dc relative to max(1, |dc|)). §16 states no f32
    /// bound for this backward; this is the attention backward's (design §16, "attention bwd,
    /// f32: rel ≤ 1e-4"), applied as BK-Core's scaled rule.
    pub const HYP_LN_GRAD_F32: f64 = 1e-4;
    /// Linear attention, the chunked f32 result vs the recurrent form:
    /// `|Δ| ≤ 1e-5·max(1, |want|)` (design hyperbolic.md §16, "chunked vs recurrent rel ≤ 1e-5";
    /// the floor 1 because o is an average of v rows, of magnitude max|v|).
    pub const LIN_ATTN_CHUNKED_F32: Tolerance = Tolerance::new(1e-5, 1e-5);
    /// Linear attention backward, f32 vs f64: max|Δ| ≤ 1e-4·(the largest |element| of dq, dk and
    /// dv) per gradient (the attention backward's f32 bound, design hyperbolic.md §16; one joint
    /// scale because dq vanishes identically at N = 1 or d = 1); MSE < [`MSE_MAX`] too.
    pub const LIN_ATTN_GRAD_F32: f64 = 1e-4;
    /// Pairwise distances, f32 vs f64 (design hyperbolic.md §16, "distance, law of cosines,
    /// f32"): rel ≤ 1e-5 where √c·d > 1e-3, else abs ≤ 1e-5/√c. The ball form is held to the same
    /// bound for points with √c‖x‖ ≤ 0.9 (a ≤ 1.5; §16 allows 1e-4 for a ≤ 3).
    pub const HYP_DIST_F32: DistTolerance = DistTolerance {
        rel: 1e-5,
        abs_times_s: 1e-5,
        small_sd: 1e-3,
    };
    /// Hyperbolic families, f64 (CPU and CUDA) against the float64/mpmath oracle: the issue's
    /// "≤ 1e-9 relative" (outputs relative to max(1, max|want|), gradients to max|grad|).
    pub const HYP_F64_REL: f64 = 1e-9;
    /// Hyperbolic attention f32: max|Δo| ≤ 1e-4·max(1, max|o|) (the issue; design §16 observed
    /// MSE ≤ 2e-10).
    pub const HYP_ATTN_F32_MAX: f64 = 1e-4;
    /// Hyperbolic attention f32 log-sum-exp: |Δ| ≤ 1e-5·max(1, |lse|) (design §16).
    pub const HYP_ATTN_LSE_F32: f64 = 1e-5;
    /// Hyperbolic attention with bf16 inputs against f64 on the same rounded inputs:
    /// max|Δo| ≤ 1e-2·max|v| (design §16, observed 2.3e-3; P rounded to bf16 for P·V).
    pub const HYP_ATTN_BF16_MAX: f64 = 1e-2;
    /// Hyperbolic attention f32 gradients: relative L2 ≤ 1e-4 per gradient (design §16; the
    /// issue's "stated relative bound" for the GPU gradients).
    pub const HYP_ATTN_GRAD_F32: f64 = 1e-4;
    /// Hyperbolic attention gradients with bf16 inputs against f64 on the same rounded inputs:
    /// relative L2 ≤ 2e-2 (design §16; P and the gradient coefficients enter the tensor cores as
    /// bf16, 2⁻⁹ relative each).
    pub const HYP_ATTN_GRAD_BF16: f64 = 2e-2;
    /// dc and dβ with bf16 inputs: sums of per-pair f32 terms (no bf16 rounding enters them), held
    /// to 1e-3 of the condition-scaled value.
    pub const HYP_ATTN_SCALAR_BF16: f64 = 1e-3;
    /// dc and dβ in f32: |Δ| ≤ 1e-4·|want| (design §16).
    pub const HYP_ATTN_SCALAR_F32: f64 = 1e-4;
    /// Poincaré ops in f32, row-relative (max|Δ| ≤ 1e-5·max|want| of the row) for points with
    /// √c‖x‖ ≤ 0.99 (design §16); nearer the boundary f32 only promises finite, in-ball results.
    pub const POINCARE_F32: f64 = 1e-5;
    /// Poincaré VJPs in f32, row-relative (design §16 gradient tolerance).
    pub const POINCARE_GRAD_F32: f64 = 1e-4;
    /// Law-of-cosines distance in f32: rel ≤ 1e-5 where √c·d > 1e-3, else abs ≤ 1e-5/√c (design §16).
    pub const DIST_F32: f64 = 1e-5;
}

/// The distance rule of design hyperbolic.md §16: relative where the distance is not small,
/// absolute (in units of 1/√c) where it is.
///
/// ```
/// use muse_verify::tolerance::tol;
/// let s = 2.0; // √c
/// assert!(tol::HYP_DIST_F32.ratio(1.000005, 1.0, s) <= 1.0);
/// assert!(tol::HYP_DIST_F32.ratio(4e-6, 0.0, s) <= 1.0 && tol::HYP_DIST_F32.ratio(6e-6, 0.0, s) > 1.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DistTolerance {
    /// Relative bound where √c·d > `small_sd`.
    pub rel: f64,
    /// Absolute bound times √c where √c·d ≤ `small_sd`.
    pub abs_times_s: f64,
    /// The threshold on √c·d (of `want`).
    pub small_sd: f64,
}

impl DistTolerance {
    /// |got − want| as a multiple of what is allowed at curvature √c = `s` (≤ 1 passes;
    /// infinity when either side is not finite).
    pub fn ratio(&self, got: f64, want: f64, s: f64) -> f64 {
        if !(got.is_finite() && want.is_finite()) {
            return f64::INFINITY;
        }
        let d = (got - want).abs();
        let allowed = if s * want.abs() > self.small_sd {
            self.rel * want.abs()
        } else {
            self.abs_times_s / s
        };
        if d == 0.0 {
            0.0
        } else {
            d / allowed
        }
    }
}

impl std::fmt::Display for DistTolerance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rel {:e} where sqrt(c)*d > {:e}, else abs {:e}/sqrt(c)",
            self.rel, self.small_sd, self.abs_times_s
        )
    }
}
