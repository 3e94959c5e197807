//! Tensor comparisons of the hyperbolic families turned into records, with the tolerances of
//! design hyperbolic.md §16 and the issue (named in `tolerance::tol`).

use crate::report::Site;
use crate::tolerance::tol;
use crate::{ErrorStats, Record, Target};

/// How one output tensor is judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// f64 against the oracle: max|Δ|/max(1, max|want|) ≤ `tol::HYP_F64_REL`.
    F64,
    /// f64 gradient: max|Δ|/max|want| ≤ `tol::HYP_F64_REL` (relative to the tensor's scale).
    F64Grad,
    /// f32 output: MSE < 1e-6 and max|Δ| ≤ `tol::HYP_ATTN_F32_MAX`·max(1, max|want|).
    F32,
    /// f32 log-sum-exp: max|Δ| ≤ `tol::HYP_ATTN_LSE_F32`·max(1, |lse|).
    F32Lse,
    /// bf16 inputs: MSE < 1e-6 and max|Δ| ≤ `tol::HYP_ATTN_BF16_MAX`·`scale` (max|v|).
    Bf16 {
        /// max|v|.
        scale: f64,
    },
    /// A documented failure of the original's maths in f32: errors recorded without a target.
    Report,
    /// Element rule of a [`Tolerance`](crate::Tolerance) (worst element's multiple of the allowed
    /// error ≤ 1) and MSE < 1e-6.
    Elem(crate::Tolerance),
    /// max|Δ| ≤ `bound`·max(`floor`, max|want|) and MSE < 1e-6.
    Scaled {
        /// The relative bound.
        bound: f64,
        /// Floor of the scale.
        floor: f64,
    },
    /// f32 (or bf16) gradient: relative L2 ≤ `bound` and MSE < 1e-6.
    Grad {
        /// The relative-L2 bound.
        bound: f64,
    },
}

/// Records of `got` against `want` under `rule`, metrics prefixed by `name` (e.g. `o`, `dq`).
pub fn tensor(site: &Site<'_>, name: &str, got: &[f64], want: &[f64], rule: Rule) -> Vec<Record> {
    let s = ErrorStats::real(got, want);
    let rec = |metric: &str, value: f64, target| {
        site.record(&format!("{name}_{metric}"), value, "", target)
    };
    let mut out = vec![rec(
        "nonfinite_mismatch",
        s.nonfinite_mismatch as f64,
        Some(Target::AtMost(0.0)),
    )];
    let rel = |floor: f64| s.max_abs / s.max_ref.max(floor);
    match rule {
        Rule::F64 => out.push(rec(
            "err_rel_max",
            rel(1.0),
            Some(Target::AtMost(tol::HYP_F64_REL)),
        )),
        Rule::F64Grad => out.push(rec(
            "err_rel_max",
            rel(f64::MIN_POSITIVE),
            Some(Target::AtMost(tol::HYP_F64_REL)),
        )),
        Rule::F32 => {
            out.push(rec("mse", s.mse, Some(Target::Below(tol::MSE_MAX))));
            out.push(rec(
                "err_rel_max",
                rel(1.0),
                Some(Target::AtMost(tol::HYP_ATTN_F32_MAX)),
            ));
        }
        Rule::F32Lse => {
            let worst = got
                .iter()
                .zip(want)
                .filter(|(g, w)| g.is_finite() && w.is_finite())
                .map(|(g, w)| (g - w).abs() / w.abs().max(1.0))
                .fold(0.0, f64::max);
            out.push(rec(
                "err_rel_max",
                worst,
                Some(Target::AtMost(tol::HYP_ATTN_LSE_F32)),
            ));
        }
        Rule::Bf16 { scale } => {
            out.push(rec("mse", s.mse, Some(Target::Below(tol::MSE_MAX))));
            out.push(rec(
                "err_over_max_v",
                s.max_abs / scale.max(f64::MIN_POSITIVE),
                Some(Target::AtMost(tol::HYP_ATTN_BF16_MAX)),
            ));
        }
        Rule::Elem(t) => {
            let v = crate::stats::Verdict::real(got, want, t);
            out.push(rec("mse", s.mse, Some(Target::Below(tol::MSE_MAX))));
            out.push(rec(
                "err_over_tol",
                v.worst_ratio,
                Some(Target::AtMost(1.0)),
            ));
        }
        Rule::Scaled { bound, floor } => {
            out.push(rec("mse", s.mse, Some(Target::Below(tol::MSE_MAX))));
            out.push(rec("err_rel_max", rel(floor), Some(Target::AtMost(bound))));
        }
        Rule::Report => {
            out.clear();
            out.push(rec("mse", s.mse, None));
            out.push(rec("err_rel_max", rel(1.0), None));
        }
        Rule::Grad { bound } => {
            out.push(rec("mse", s.mse, Some(Target::Below(tol::MSE_MAX))));
            out.push(rec(
                "rel_l2",
                rel_l2(got, want),
                Some(Target::AtMost(bound)),
            ));
        }
    }
    out
}

/// ‖got − want‖₂ / ‖want‖₂ (0 when both vanish).
pub fn rel_l2(got: &[f64], want: &[f64]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(g, w)| (g - w).powi(2)).sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    if num == 0.0 {
        0.0
    } else {
        (num / den.max(f64::MIN_POSITIVE)).sqrt()
    }
}

/// A scalar gradient (dc, dβ), a sum over every visible pair: |Δ|/max(|want|, 1e-3·`scale`) ≤
/// `bound`, where `scale` = Σ|per-pair contribution|. This is the relative error unless the sum
/// cancels by more than 1000×; then f32 cannot promise digits of the small total, and the error
/// is measured against a thousandth of the terms' size instead.
pub fn scalar(site: &Site<'_>, name: &str, got: f64, want: f64, scale: f64, bound: f64) -> Record {
    let value = if got.is_finite() {
        (got - want).abs() / want.abs().max(1e-3 * scale).max(1e-300)
    } else {
        f64::INFINITY
    };
    site.record(
        &format!("{name}_err_rel_cond"),
        value,
        "",
        Some(Target::AtMost(bound)),
    )
}
