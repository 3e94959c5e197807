//! Error statistics of a result against a reference, element by element.

use num_complex::Complex64;
use serde::{Deserialize, Serialize};

use crate::Tolerance;

/// How far `got` is from `want`. Complex values are compared by the modulus of their difference.
///
/// ```
/// use muse_verify::ErrorStats;
/// let s = ErrorStats::real(&[1.0, 2.5], &[1.0, 2.0]);
/// assert_eq!((s.max_abs, s.argmax), (0.5, 1));
/// assert_eq!(s.mse, 0.125);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ErrorStats {
    /// Number of elements compared.
    pub count: usize,
    /// max |got − want|.
    pub max_abs: f64,
    /// Flat index of `max_abs`.
    pub argmax: usize,
    /// max |got − want| / max(1, |want|): relative error floored at 1 (design §12).
    pub max_rel: f64,
    /// mean |got − want|.
    pub mean_abs: f64,
    /// Mean squared error over real components, i.e. over the original's (B, N, 2) features
    /// layout for complex data: Σ|Δ|² / (2·count).
    pub mse: f64,
    /// max |want|.
    pub max_ref: f64,
    /// Elements where exactly one side is non-finite, or both are but differ.
    pub nonfinite_mismatch: usize,
}

impl ErrorStats {
    /// Statistics of complex `got` against `want` (same length).
    pub fn complex(got: &[Complex64], want: &[Complex64]) -> Self {
        Self::from_pairs(got.iter().zip(want).map(|(g, w)| (*g, *w)), 2.0)
    }

    /// Statistics of real `got` against `want` (same length).
    pub fn real(got: &[f64], want: &[f64]) -> Self {
        Self::from_pairs(
            got.iter().zip(want).map(|(&g, &w)| (g.into(), w.into())),
            1.0,
        )
    }

    fn from_pairs(pairs: impl Iterator<Item = (Complex64, Complex64)>, components: f64) -> Self {
        let mut s = Self {
            count: 0,
            max_abs: 0.0,
            argmax: 0,
            max_rel: 0.0,
            mean_abs: 0.0,
            mse: 0.0,
            max_ref: 0.0,
            nonfinite_mismatch: 0,
        };
        let (mut sum_abs, mut sum_sq) = (0.0, 0.0);
        for (i, (g, w)) in pairs.enumerate() {
            s.count += 1;
            let (gf, wf) = (g.is_finite(), w.is_finite());
            if !(gf && wf) {
                if gf != wf || !same_nonfinite(g, w) {
                    s.nonfinite_mismatch += 1;
                }
                continue;
            }
            let d = (g - w).norm();
            let m = w.norm();
            s.max_ref = s.max_ref.max(m);
            if d > s.max_abs {
                (s.max_abs, s.argmax) = (d, i);
            }
            s.max_rel = s.max_rel.max(d / m.max(1.0));
            sum_abs += d;
            sum_sq += d * d;
        }
        if s.count > 0 {
            s.mean_abs = sum_abs / s.count as f64;
            s.mse = sum_sq / (components * s.count as f64);
        }
        s
    }

    /// Root of [`Self::mse`].
    pub fn rmse(&self) -> f64 {
        self.mse.sqrt()
    }
}

fn same_nonfinite(g: Complex64, w: Complex64) -> bool {
    let same = |x: f64, y: f64| (x.is_nan() && y.is_nan()) || x == y;
    same(g.re, w.re) && same(g.im, w.im)
}

/// Element-wise verdict of a comparison under a [`Tolerance`].
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Elements outside the tolerance (non-finite mismatches included).
    pub outside: usize,
    /// Elements compared.
    pub count: usize,
    /// Worst |Δ| as a multiple of what the tolerance allows at that element (≤ 1 passes).
    pub worst_ratio: f64,
    /// Flat index of the worst element.
    pub worst_index: usize,
    /// `got` and `want` at the worst element.
    pub worst: (Complex64, Complex64),
}

impl Verdict {
    /// Checks every element of complex `got` against `want`.
    ///
    /// ```
    /// use muse_verify::{stats::Verdict, Tolerance};
    /// use num_complex::Complex64 as C;
    /// let v = Verdict::complex(&[C::new(1.0, 0.0)], &[C::new(1.1, 0.0)], Tolerance::new(0.0, 0.2));
    /// assert!(v.passed());
    /// ```
    pub fn complex(got: &[Complex64], want: &[Complex64], tol: Tolerance) -> Self {
        let mut v = Self {
            outside: 0,
            count: got.len(),
            worst_ratio: 0.0,
            worst_index: 0,
            worst: Default::default(),
        };
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let ratio = tol.ratio(*g, *w);
            if ratio > 1.0 {
                v.outside += 1;
            }
            if ratio > v.worst_ratio || (i == 0 && v.outside == 0) {
                (v.worst_ratio, v.worst_index, v.worst) = (ratio, i, (*g, *w));
            }
        }
        v
    }

    /// Checks every element of real `got` against `want`.
    pub fn real(got: &[f64], want: &[f64], tol: Tolerance) -> Self {
        let g: Vec<Complex64> = got.iter().map(|&x| x.into()).collect();
        let w: Vec<Complex64> = want.iter().map(|&x| x.into()).collect();
        Self::complex(&g, &w, tol)
    }

    /// True when no element is outside the tolerance.
    pub fn passed(&self) -> bool {
        self.outside == 0
    }
}
