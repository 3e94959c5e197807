//! Comparisons turned into records, with the targets of design §12 and the issue.

use crate::report::Site;
use crate::stats::Verdict;
use crate::tolerance::tol;
use crate::{ErrorStats, Record, Target, Tolerance};
use muse_reference::bk_core::BkCoreGrad;
use muse_reference::Precision;
use ndarray::Array2;
use num_complex::Complex64;

/// How demanding the f32 bound is for an input class (design §12).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Class {
    /// Symmetric couplings and Im z ≥ 0.05: |ΔG| ≤ 1e-5·max(1, |G|) on every element.
    Model,
    /// Random non-symmetric couplings: |ΔG| ≤ 1e-4·max(1, |G|) on ≥ 99.9 % of elements (pivots
    /// can come arbitrarily close to 0 and amplify f32 rounding).
    Random,
    /// z within 0.05 of the real axis, near an eigenvalue: f32 rounding of the inputs alone moves
    /// G by about u·κ relative to max|G| (u = 2⁻²⁴, κ ≈ max|G|·‖T − zI‖∞), so that is the bound,
    /// and the MSE is gated relative to max|G|².
    NearSpectrum {
        /// The condition estimate κ.
        kappa: f64,
    },
}

/// Where the records of one comparison go.
pub struct Row<'a> {
    /// Kernel, e.g. `bk_core_forward`.
    pub kernel: &'a str,
    /// Backend name.
    pub backend: &'a str,
    /// Case id.
    pub case: &'a str,
    /// (B, N).
    pub shape: &'a [usize],
    /// Precision of the kernel run.
    pub precision: Precision,
}

impl Row<'_> {
    /// A unitless record of this row.
    pub fn record(&self, metric: &str, value: f64, target: Option<Target>) -> Record {
        let site = Site {
            kernel: self.kernel,
            backend: self.backend,
            case: self.case,
            shape: self.shape,
            dtype: self.precision.name(),
        };
        site.record(metric, value, "", target)
    }
}

fn flat(x: &Array2<Complex64>) -> Vec<Complex64> {
    x.iter().copied().collect()
}

/// Forward result `got` against the oracle `want`.
pub fn forward(
    row: &Row<'_>,
    got: &Array2<Complex64>,
    want: &Array2<Complex64>,
    class: Class,
) -> Vec<Record> {
    let (g, w) = (flat(got), flat(want));
    let s = ErrorStats::complex(&g, &w);
    let max_g = s.max_ref.max(f64::MIN_POSITIVE);
    let mut out = vec![
        row.record(
            "nonfinite_mismatch",
            s.nonfinite_mismatch as f64,
            Some(Target::AtMost(0.0)),
        ),
        row.record("max_abs_err", s.max_abs, None),
    ];
    match row.precision {
        Precision::F64 => {
            out.push(row.record(
                "max_err_rel_max_g",
                s.max_abs / max_g,
                Some(Target::AtMost(1e-10)),
            ));
            out.push(row.record(
                "max_rel_err",
                s.max_rel,
                Some(Target::AtMost(tol::BK_CORE_F64.rtol)),
            ));
        }
        Precision::F32 => {
            let mse_target = (!matches!(class, Class::NearSpectrum { .. }))
                .then_some(Target::Below(tol::MSE_MAX));
            out.push(row.record("mse", s.mse, mse_target));
            match class {
                Class::Model => {
                    out.push(row.record(
                        "max_rel_err",
                        s.max_rel,
                        Some(Target::AtMost(tol::BK_CORE_F32.rtol)),
                    ));
                }
                Class::Random => {
                    let v = Verdict::complex(&g, &w, tol::BK_CORE_F32_RANDOM);
                    out.push(row.record("max_rel_err", s.max_rel, None));
                    out.push(row.record(
                        "frac_outside_1e-4",
                        v.outside as f64 / v.count as f64,
                        Some(Target::AtMost(1e-3)),
                    ));
                }
                Class::NearSpectrum { kappa } => {
                    let bound = f64::from(f32::EPSILON) / 2.0 * kappa;
                    out.push(row.record("kappa", kappa, None));
                    out.push(row.record(
                        "max_err_rel_max_g",
                        s.max_abs / max_g,
                        Some(Target::AtMost(bound)),
                    ));
                    out.push(row.record(
                        "mse_rel_max_g2",
                        s.mse / (max_g * max_g),
                        Some(Target::Below(tol::MSE_MAX)),
                    ));
                }
            }
        }
    }
    out
}

/// The control rule of flash-attention's tests (design toolchain §4): a GPU f32 result may be at
/// most 3× as far from the f64 truth as the CPU's own f32 result (3 because the scan reorders the
/// arithmetic), with a floor of one f32 ulp of max|G|. Gated for the model regimes; reported for
/// random couplings and near-spectrum shifts, where near-breakdown pivots amplify whichever
/// rounding a path happens to make.
pub fn control(
    row: &Row<'_>,
    got: &Array2<Complex64>,
    want: &Array2<Complex64>,
    cpu32: &Array2<Complex64>,
    class: Class,
) -> Record {
    let (g, c) = (
        ErrorStats::complex(&flat(got), &flat(want)),
        ErrorStats::complex(&flat(cpu32), &flat(want)),
    );
    let floor = f64::from(f32::EPSILON) * g.max_ref;
    let ratio = g.max_abs / c.max_abs.max(floor).max(f64::MIN_POSITIVE);
    let target = (class == Class::Model).then_some(Target::AtMost(3.0));
    row.record("err_ratio_vs_cpu_f32", ratio, target)
}

/// Tolerance used by [`gradient`] in each precision (relative to max|grad|, design §12).
pub fn grad_bound(precision: Precision) -> f64 {
    match precision {
        Precision::F64 => tol::BK_CORE_GRAD_F64,
        Precision::F32 => tol::BK_CORE_GRAD_F32,
    }
}

/// Gradient `got` against `want`: max|Δ| relative to max|want| for each input.
pub fn gradient(
    row: &Row<'_>,
    got: &BkCoreGrad,
    want: &BkCoreGrad,
    bound: Option<f64>,
) -> Vec<Record> {
    let rel = |g: &Array2<f64>, w: &Array2<f64>| {
        let s = ErrorStats::real(
            &g.iter().copied().collect::<Vec<_>>(),
            &w.iter().copied().collect::<Vec<_>>(),
        );
        if s.nonfinite_mismatch > 0 {
            f64::INFINITY
        } else {
            s.max_abs / s.max_ref.max(f64::MIN_POSITIVE)
        }
    };
    let t = bound.map(Target::AtMost);
    let mut out = Vec::new();
    if !want.a.is_empty() {
        out.push(row.record("grad_a_err_rel_max", rel(&got.a, &want.a), t));
    }
    if !want.b.is_empty() {
        out.push(row.record("grad_b_err_rel_max", rel(&got.b, &want.b), t));
        out.push(row.record("grad_c_err_rel_max", rel(&got.c, &want.c), t));
    }
    let dz = (got.z - want.z).norm() / want.z.norm().max(f64::MIN_POSITIVE);
    out.push(row.record("grad_z_err_rel", dz, t));
    out
}

/// A plain tolerance check as one record: the worst element's multiple of the allowed error.
pub fn within(
    row: &Row<'_>,
    metric: &str,
    got: &[Complex64],
    want: &[Complex64],
    t: Tolerance,
) -> Record {
    let v = Verdict::complex(got, want, t);
    row.record(metric, v.worst_ratio, Some(Target::AtMost(1.0)))
}
