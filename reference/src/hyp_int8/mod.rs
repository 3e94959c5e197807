//! INT8 hyperbolic distance (design hyperbolic.md §8.1), f64 reference of the integer kernels.
//!
//! **Tangent mode** (default): per-row symmetric INT8 of the unit directions, σ = max|û_k|/127,
//! q = clip(rint(û/σ), ±127); the angular term C ≈ σ_iσ_j·Σq_iq_j with an exact integer
//! accumulation, and the radial terms a, b from exact norms, into the law of cosines (§2.3).
//! **Ball mode** (the original's storage): asymmetric u8 codes per row, x ≈ s_x(q − z_x), with the
//! zero points folded into the integer dot product,
//! ⟨x,y⟩ ≈ s_x s_y[Σq_xq_y − z_yΣq_x − z_xΣq_y + D z_x z_y], and exact norms in the acosh form.
//! The §8.1 error bounds are functions here ([`bound_c`], [`bound_d`], [`attention_bound`]) so
//! tests check every pair against them. [`attention`] is hyperbolic attention with INT8 logits
//! (tangent mode), the rest as [`crate::hyp_attn`]'s reference forward.
//!
//! ```
//! use muse_reference::hyp_int8::{dist_int8, quantize_dirs};
//! let u = ndarray::arr2(&[[0.3, -0.2, 0.1], [0.0, 0.0, 0.0]]);
//! let q = quantize_dirs(u.view())?;
//! assert_eq!(q.codes[0], 127); // the largest |û_k| maps to ±127
//! assert_eq!(q.dot(0, &q, 0), 127 * 127 + 85 * 85 + 42 * 42);
//! let d = dist_int8(1.0, &q, 0, &q, 0);
//! assert!(d.abs() < 1e-3); // d(x, x) up to the INT8 angle error
//! assert_eq!(dist_int8(1.0, &q, 1, &q, 1), 0.0); // zero rows: exact
//! # Ok::<(), muse_reference::Error>(())
//! ```

mod attn;
#[cfg(test)]
mod tests;

pub use attn::attention;

use ndarray::{ArrayView2, Axis};

use crate::poincare::acosh1p;
use crate::poincare::maps::TangentRow;
use crate::quant::rint;
use crate::{Error, Result};

const OP: &str = "hyp_int8";

/// Rows quantised in tangent mode: INT8 unit directions, their scales, and the exact radial terms.
#[derive(Debug, Clone)]
pub struct Int8Dirs {
    /// D.
    pub dim: usize,
    /// q [n, D] row-major, in −127..=127.
    pub codes: Vec<i8>,
    /// σ per row (1 for a zero row, whose codes are 0).
    pub sigma: Vec<f64>,
    /// ‖û‖₁ per row (in the bound B_C).
    pub unit_l1: Vec<f64>,
    /// The exact radial terms (a, sinh 2a, …) of each row at s = 1; see [`Int8Dirs::radial`].
    rows: Vec<Vec<f64>>,
}

fn check_rows(arg: &'static str, u: &ArrayView2<'_, f64>) -> Result<()> {
    crate::poincare::check_nonempty(OP, arg, &["N", "D"], u.shape())?;
    crate::poincare::check_finite(OP, arg, u)
}

/// Quantises the unit directions of tangent rows u [n, D] (every value finite).
pub fn quantize_dirs(u: ArrayView2<'_, f64>) -> Result<Int8Dirs> {
    check_rows("u", &u)?;
    let dim = u.ncols();
    let mut out = Int8Dirs {
        dim,
        codes: Vec::with_capacity(u.len()),
        sigma: Vec::new(),
        unit_l1: Vec::new(),
        rows: Vec::new(),
    };
    for row in u.axis_iter(Axis(0)) {
        let r = row.dot(&row).sqrt();
        let unit: Vec<f64> = row
            .iter()
            .map(|&x| if r > 0.0 { x / r } else { 0.0 })
            .collect();
        let amax = unit.iter().fold(0.0f64, |a, x| a.max(x.abs()));
        let sigma = if amax > 0.0 { amax / 127.0 } else { 1.0 };
        out.codes.extend(
            unit.iter()
                .map(|&x| rint(x / sigma).clamp(-127.0, 127.0) as i8),
        );
        out.sigma.push(sigma);
        out.unit_l1.push(unit.iter().map(|x| x.abs()).sum());
        out.rows.push(row.to_vec());
    }
    Ok(out)
}

impl Int8Dirs {
    /// Rows held.
    pub fn len(&self) -> usize {
        self.sigma.len()
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.sigma.is_empty()
    }

    /// Row `i`'s codes.
    pub fn row(&self, i: usize) -> &[i8] {
        &self.codes[i * self.dim..(i + 1) * self.dim]
    }

    /// Σ_k q_ik·q'_jk, exact (|Σ| ≤ 127²·D fits i32 for D ≤ 133 000; kept in i64 here).
    pub fn dot(&self, i: usize, other: &Int8Dirs, j: usize) -> i64 {
        self.row(i)
            .iter()
            .zip(other.row(j))
            .map(|(&a, &b)| i64::from(a) * i64::from(b))
            .sum()
    }

    /// Ĉ = σ_iσ_j·Σq_iq_j (0 when either row is zero).
    pub fn c_hat(&self, i: usize, other: &Int8Dirs, j: usize) -> f64 {
        self.sigma[i] * other.sigma[j] * self.dot(i, other, j) as f64
    }

    /// The exact radial terms of row `i` at s = √c.
    pub fn radial(&self, s: f64, i: usize) -> TangentRow<f64> {
        TangentRow::new(s, &self.rows[i])
    }
}

/// d(exp0 u_i, exp0 w_j) by the law of cosines with the INT8 angle Ĉ and exact radial terms:
/// z = 2 sinh²(a − b) + sinh 2a·sinh 2b·(1 − Ĉ), d = acosh1p(z)/s.
pub fn dist_int8(s: f64, u: &Int8Dirs, i: usize, w: &Int8Dirs, j: usize) -> f64 {
    acosh1p(z_int8(s, u, i, w, j)) / s
}

/// z of [`dist_int8`].
pub fn z_int8(s: f64, u: &Int8Dirs, i: usize, w: &Int8Dirs, j: usize) -> f64 {
    z_from_terms(&u.radial(s, i), &w.radial(s, j), u.c_hat(i, w, j))
}

/// z = 2 sinh²(a − b) + sinh 2a·sinh 2b·(1 − Ĉ) from the exact radial terms of two rows and the
/// INT8 angle Ĉ ([`Int8Dirs::c_hat`]): what [`z_int8`] evaluates, for callers that keep the
/// radial terms of each row instead of recomputing them per pair.
///
/// ```
/// use muse_reference::hyp_int8::{quantize_dirs, z_from_terms, z_int8};
/// let u = ndarray::arr2(&[[0.3, -0.2, 0.1], [0.0, 0.5, 0.0]]);
/// let q = quantize_dirs(u.view())?;
/// let s = 0.693f64.sqrt();
/// let z = z_from_terms(&q.radial(s, 0), &q.radial(s, 1), q.c_hat(0, &q, 1));
/// assert_eq!(z, z_int8(s, &q, 0, &q, 1));
/// # Ok::<(), muse_reference::Error>(())
/// ```
pub fn z_from_terms(a: &TangentRow<f64>, b: &TangentRow<f64>, c_hat: f64) -> f64 {
    let sh = (a.a - b.a).sinh();
    2.0 * sh * sh + a.sinh2a * b.sinh2a * (1.0 - c_hat)
}

/// B_C = ‖û_i‖₁σ_j/2 + ‖ŵ_j‖₁σ_i/2 + Dσ_iσ_j/4 ≥ |Ĉ − C| (design §8.1).
pub fn bound_c(u: &Int8Dirs, i: usize, w: &Int8Dirs, j: usize) -> f64 {
    u.unit_l1[i] * w.sigma[j] / 2.0
        + w.unit_l1[j] * u.sigma[i] / 2.0
        + u.dim as f64 * u.sigma[i] * w.sigma[j] / 4.0
}

/// |Δd| ≤ (1/s)·min(acosh1p(Δ), Δ/√(ζ(ζ+2))) with Δ = sinh 2a·sinh 2b·B_C the bound on |Δz| and
/// ζ = max(z − Δ, 0), z the exact z (acosh1p is concave and subadditive).
pub fn bound_d(s: f64, z: f64, delta: f64) -> f64 {
    let zeta = (z - delta).max(0.0);
    let slope = if zeta > 0.0 {
        delta / (zeta * (zeta + 2.0)).sqrt()
    } else {
        f64::INFINITY
    };
    acosh1p(delta).min(slope) / s
}

/// The per-pair distance bound of [`dist_int8`] against the exact distance.
pub fn pair_bound(s: f64, u: &Int8Dirs, i: usize, w: &Int8Dirs, j: usize, z_exact: f64) -> f64 {
    let (a, b) = (u.radial(s, i), w.radial(s, j));
    bound_d(s, z_exact, a.sinh2a * b.sinh2a * bound_c(u, i, w, j))
}

/// Per attention row with δ = β·max_j|Δd_ij|: ‖ΔP‖₁ ≤ e^{2δ} − 1 and
/// ‖Δo‖_∞ ≤ (e^{2δ} − 1)·max_j‖v_j‖_∞. Returns (the P bound, the o bound).
pub fn attention_bound(beta: f64, max_dd: f64, max_v: f64) -> (f64, f64) {
    let p = (2.0 * beta.abs() * max_dd).exp_m1();
    (p, p * max_v)
}

/// Rows quantised in ball mode: asymmetric u8 per row over [min(x, 0), max(x, 0)].
#[derive(Debug, Clone)]
pub struct U8Rows {
    /// D.
    pub dim: usize,
    /// q [n, D] row-major.
    pub codes: Vec<u8>,
    /// s_x per row ((max − min)/255; 1 for an all-zero row).
    pub scale: Vec<f64>,
    /// z_x per row, 0..=255.
    pub zero: Vec<i64>,
    /// Σ_k q_k per row.
    pub rowsum: Vec<i64>,
    /// ‖x‖² per row, exact.
    pub norm2: Vec<f64>,
}

/// Quantises ball points x [n, D] (finite) to asymmetric u8 codes per row.
pub fn quantize_ball(x: ArrayView2<'_, f64>) -> Result<U8Rows> {
    check_rows("x", &x)?;
    let dim = x.ncols();
    let mut out = U8Rows {
        dim,
        codes: Vec::new(),
        scale: Vec::new(),
        zero: Vec::new(),
        rowsum: Vec::new(),
        norm2: Vec::new(),
    };
    for row in x.axis_iter(Axis(0)) {
        let mn = row.iter().fold(0.0f64, |a, &v| a.min(v));
        let mx = row.iter().fold(0.0f64, |a, &v| a.max(v));
        let scale = if mx > mn { (mx - mn) / 255.0 } else { 1.0 };
        let zero = rint(-mn / scale).clamp(0.0, 255.0);
        let codes: Vec<u8> = row
            .iter()
            .map(|&v| (rint(v / scale) + zero).clamp(0.0, 255.0) as u8)
            .collect();
        out.rowsum.push(codes.iter().map(|&q| i64::from(q)).sum());
        out.codes.extend(codes);
        out.scale.push(scale);
        out.zero.push(zero as i64);
        out.norm2.push(row.dot(&row));
    }
    Ok(out)
}

impl U8Rows {
    /// Row `i`'s codes.
    pub fn row(&self, i: usize) -> &[u8] {
        &self.codes[i * self.dim..(i + 1) * self.dim]
    }

    /// Σq_xq_y − z_yΣq_x − z_xΣq_y + D z_x z_y = Σ(q_x − z_x)(q_y − z_y), from the integer dot
    /// and the precomputed row sums.
    pub fn folded_dot(&self, i: usize, other: &U8Rows, j: usize) -> i64 {
        let raw: i64 = self
            .row(i)
            .iter()
            .zip(other.row(j))
            .map(|(&a, &b)| i64::from(a) * i64::from(b))
            .sum();
        let (zx, zy) = (self.zero[i], other.zero[j]);
        raw - zy * self.rowsum[i] - zx * other.rowsum[j] + self.dim as i64 * zx * zy
    }

    /// ⟨x_i, y_j⟩ ≈ s_x s_y·folded_dot.
    pub fn ip_hat(&self, i: usize, other: &U8Rows, j: usize) -> f64 {
        self.scale[i] * other.scale[j] * self.folded_dot(i, other, j) as f64
    }
}

/// The ball-form distance with the INT8 inner product and exact norms:
/// z = 2c·max(‖x‖² + ‖y‖² − 2⟨x,y⟩̂, 0)/((1 − c‖x‖²)(1 − c‖y‖²)), d = acosh1p(z)/√c.
/// Fails if a point is not inside the ball (c‖x‖² ≥ 1).
pub fn dist_ball_int8(c: f64, x: &U8Rows, i: usize, y: &U8Rows, j: usize) -> Result<f64> {
    let (a, b) = (x.norm2[i], y.norm2[j]);
    if c * a >= 1.0 || c * b >= 1.0 {
        return Err(Error::Domain {
            op: OP,
            arg: "x",
            rule: format!(
                "rows must lie inside the ball (c‖x‖² < 1), got c‖x‖² = {} and c‖y‖² = {}",
                c * a,
                c * b
            ),
        });
    }
    let num = (a + b - 2.0 * x.ip_hat(i, y, j)).max(0.0);
    Ok(acosh1p(2.0 * c * num / ((1.0 - c * a) * (1.0 - c * b))) / c.sqrt())
}
