//! acosh lookup tables (design hyperbolic.md §8.2). The GPU keeps a LUT only if it beats the direct
//! log1p/sqrt form; this is the reference both are checked against.
//!
//! **Default**: g(u) = acosh(1 + u²) at n uniform knots on [0, U], linear interpolation in u = √z,
//! and ln(2(1 + z)) beyond U. g is smooth in u (unlike acosh(1 + z) in z at 0), with
//! max|g″| = 2/3^{3/2} at u = 1, so the error is ≤ 0.385·h²/8 (h = U/(n − 1)): 1.9e-4 for
//! n = 256, U = 16. **Compat** (`src/models/phase8/quantization.py`): 256 samples of acosh on
//! linspace(1, 10), index ⌊(clip(x, 1, 10) − 1)/9·255⌋ (truncation, no interpolation): −0.141 at
//! x = 1.01, saturating at acosh 10.
//!
//! ```
//! use muse_reference::acosh_lut::{AcoshLut, CompatLut};
//! use muse_reference::poincare::acosh1p;
//! let lut = AcoshLut::new(256, 16.0)?;
//! for z in [0.0, 1e-3, 0.5, 3.0, 100.0, 255.9, 1e4] {
//!     assert!((lut.eval(z) - acosh1p(z)).abs() <= lut.error_bound() + 1e-6);
//! }
//! let compat = CompatLut::new();
//! assert!((compat.eval(1.01) - 1.01f64.acosh() + 0.141).abs() < 1e-3);
//! # Ok::<(), muse_reference::Error>(())
//! ```

use crate::poincare::acosh1p;
use crate::{Error, Result};

/// max|g″| of g(u) = acosh(1 + u²), attained at u = 1: 2/3^{3/2}.
pub const MAX_CURVATURE: f64 = 0.384_900_179_459_750_5;

/// The default LUT: knots of acosh(1 + u²) in u = √z.
#[derive(Debug, Clone)]
pub struct AcoshLut {
    table: Vec<f64>,
    u_max: f64,
}

impl AcoshLut {
    /// `n ≥ 2` knots on [0, U], U > 0 finite. Knot values in f64 (the GPU stores them in f32).
    pub fn new(n: usize, u_max: f64) -> Result<Self> {
        if n < 2 {
            return Err(Error::Domain {
                op: "acosh_lut",
                arg: "n",
                rule: format!("must be at least 2 knots, got {n}"),
            });
        }
        if !(u_max.is_finite() && u_max > 0.0) {
            return Err(Error::Domain {
                op: "acosh_lut",
                arg: "u_max",
                rule: format!("must be finite and > 0, got {u_max}"),
            });
        }
        let h = u_max / (n - 1) as f64;
        let table = (0..n)
            .map(|i| {
                let u = i as f64 * h;
                acosh1p(u * u)
            })
            .collect();
        Ok(Self { table, u_max })
    }

    /// The knot values g(u_i).
    pub fn table(&self) -> &[f64] {
        &self.table
    }

    /// The knot spacing h = U/(n − 1).
    pub fn step(&self) -> f64 {
        self.u_max / (self.table.len() - 1) as f64
    }

    /// acosh(1 + z) for z ≥ 0 (negative z clamps to 0): interpolated below U², ln(2(1 + z)) above.
    pub fn eval(&self, z: f64) -> f64 {
        let u = z.max(0.0).sqrt();
        if u >= self.u_max {
            return (2.0 * (1.0 + z)).ln();
        }
        let t = u / self.step();
        let i = (t.floor() as usize).min(self.table.len() - 2);
        let f = t - i as f64;
        self.table[i] + f * (self.table[i + 1] - self.table[i])
    }

    /// max(0.385·h²/8, the tail error at z = U²): the LUT's documented error. The tail
    /// ln(2(1 + z)) − acosh(1 + z) ≈ 1/(4(1 + z)²) is 3.8e-6 at U = 16.
    pub fn error_bound(&self) -> f64 {
        let h = self.step();
        let z = self.u_max * self.u_max;
        (MAX_CURVATURE * h * h / 8.0).max((2.0 * (1.0 + z)).ln() - acosh1p(z))
    }
}

/// The original's compat LUT over x = 1 + z ∈ [1, 10].
#[derive(Debug, Clone)]
pub struct CompatLut {
    table: Vec<f64>,
}

impl Default for CompatLut {
    fn default() -> Self {
        Self::new()
    }
}

impl CompatLut {
    /// torch.linspace(1, 10, 256) of acosh, as the original builds it.
    pub fn new() -> Self {
        let table = (0..256)
            .map(|i| (1.0 + 9.0 * i as f64 / 255.0).acosh())
            .collect();
        Self { table }
    }

    /// table[⌊(clip(x, 1, 10) − 1)/9·255⌋], the original's truncating lookup of acosh(x).
    pub fn eval(&self, x: f64) -> f64 {
        let xc = x.clamp(1.0, 10.0);
        let i = (((xc - 1.0) / 9.0 * 255.0).floor() as usize).min(255);
        self.table[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_error_is_within_its_bound_and_not_loose() {
        for (n, bound) in [(256, 1.9e-4), (1024, 1.2e-5)] {
            let lut = AcoshLut::new(n, 16.0).unwrap();
            assert!(
                (lut.error_bound() - bound).abs() < 0.05 * bound,
                "{n}: {}",
                lut.error_bound()
            );
            let mut worst = 0.0f64;
            for k in 0..200_000 {
                let u = 17.0 * k as f64 / 200_000.0;
                let err = (lut.eval(u * u) - acosh1p(u * u)).abs();
                assert!(err <= lut.error_bound() + 1e-12, "n {n}, u {u}: {err}");
                worst = worst.max(err);
            }
            assert!(
                worst > 0.5 * lut.error_bound(),
                "n {n}: the bound is loose ({worst})"
            );
        }
        assert!(AcoshLut::new(1, 16.0).is_err() && AcoshLut::new(8, f64::NAN).is_err());
    }

    #[test]
    fn compat_reproduces_the_original_errors() {
        let lut = CompatLut::new();
        let err = |x: f64| lut.eval(x) - x.acosh();
        assert!((err(1.01) + 0.141).abs() < 1e-3, "{}", err(1.01));
        let (mut worst, mut at) = (0.0f64, 0.0);
        for k in 0..900_000 {
            let x = 1.0 + 9.0 * k as f64 / 900_000.0;
            if err(x) < worst {
                (worst, at) = (err(x), x);
            }
        }
        assert!(
            (worst + 0.2649).abs() < 1e-4 && (at - 1.0353).abs() < 1e-3,
            "{worst} at {at}"
        );
        assert!((err(12.0) + 0.18).abs() < 0.01); // saturates at acosh 10 = 2.993
    }
}
