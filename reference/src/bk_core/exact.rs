//! Exact BK-Core in the stable ratio form (design §3.2) and its exact O(N) gradient (§6.1).
//!
//! Forward ratios `r_i = θ_{i+1}/θ_i` and backward ratios `s_i` never overflow (raw minors do
//! after ~120 steps in f32), and `G_ii = 1/(α_i − k_{i−1}/r_{i−1} − k_i/s_{i+1})`, which avoids the
//! cancellation of the equivalent `1/(r_i + s_i − α_i)`.

use ndarray::{Array2, ArrayView2};
use num_complex::{Complex, Complex64};

use super::{rows, BkCoreArgs, BkCoreGrad, OP};
use crate::{Elem, Error, Result};

/// Per-row state of the forward pass: everything the exact gradient needs.
#[derive(Debug, Clone)]
pub struct RowSweeps<F: Elem> {
    /// α_i = a_i − z.
    pub alpha: Vec<Complex<F>>,
    /// k_i = b_i·c_i, length N−1.
    pub k: Vec<F>,
    /// Forward ratios r_i = θ_{i+1}/θ_i.
    pub r: Vec<Complex<F>>,
    /// Backward ratios s_i = det M[i:, i:]/det M[i+1:, i+1:].
    pub s: Vec<Complex<F>>,
    /// G_ii.
    pub g: Vec<Complex<F>>,
}

impl<F: Elem> RowSweeps<F> {
    /// Runs both sweeps on one row, in precision `F` (inputs are rounded to `F` first).
    ///
    /// ```
    /// use muse_reference::bk_core::exact::RowSweeps;
    /// use num_complex::Complex64;
    /// // A diagonal matrix: G = 1/(a − z).
    /// let z = Complex64::new(0.0, 1.0);
    /// let row = RowSweeps::<f64>::new(&[2.0, 3.0], &[0.0], &[0.0], z);
    /// assert!((row.g[1] - (3.0 - z).inv()).norm() < 1e-15);
    /// ```
    pub fn new(a: &[f64], b: &[f64], c: &[f64], z: Complex64) -> Self {
        let n = a.len();
        let z = Complex::new(F::of(z.re), F::of(z.im));
        let alpha: Vec<Complex<F>> = a.iter().map(|&x| Complex::from(F::of(x)) - z).collect();
        let k: Vec<F> = b
            .iter()
            .zip(c)
            .map(|(&b, &c)| F::of(b) * F::of(c))
            .collect();
        let mut r = alpha.clone();
        for i in 1..n {
            r[i] = alpha[i] - r[i - 1].inv() * k[i - 1];
        }
        let mut s = alpha.clone();
        for i in (0..n.saturating_sub(1)).rev() {
            s[i] = alpha[i] - s[i + 1].inv() * k[i];
        }
        let g = (0..n)
            .map(|i| {
                let mut d = alpha[i];
                if i > 0 {
                    d -= r[i - 1].inv() * k[i - 1];
                }
                if i + 1 < n {
                    d -= s[i + 1].inv() * k[i];
                }
                d.inv()
            })
            .collect();
        Self { alpha, k, r, s, g }
    }

    /// The first position whose `G` is not finite, if any.
    pub fn first_non_finite(&self) -> Option<usize> {
        self.g
            .iter()
            .position(|v| !(v.re.is_finite() && v.im.is_finite()))
    }
}

fn sweep_row<F: Elem>(
    row: usize,
    (a, b, c): (&[f64], &[f64], &[f64]),
    z: Complex64,
) -> Result<RowSweeps<F>> {
    let sweeps = RowSweeps::<F>::new(a, b, c, z);
    match sweeps.first_non_finite() {
        Some(index) => Err(Error::Singular {
            op: OP,
            row,
            index,
            z_re: z.re,
            z_im: z.im,
        }),
        None => Ok(sweeps),
    }
}

/// Exact forward in precision `F`: `G_ii` for every row, (B, N).
///
/// Returns [`Error::Singular`] when a value is not finite (real `z` on the spectrum, or a
/// vanished pivot), instead of passing NaN on.
pub fn forward<F: Elem>(args: &BkCoreArgs<'_>) -> Result<Array2<Complex<F>>> {
    let mut out = Array2::zeros((args.batch(), args.n()));
    for (row, ((a, b, c), mut dst)) in rows(args).zip(out.rows_mut()).enumerate() {
        let sweeps = sweep_row::<F>(row, (&a.to_vec(), &b.to_vec(), &c.to_vec()), args.z())?;
        dst.iter_mut().zip(sweeps.g).for_each(|(d, g)| *d = g);
    }
    Ok(out)
}

/// Exact gradient in precision `F` of a loss L with upstream `grad_g` = ∂L/∂Re G + i·∂L/∂Im G.
///
/// Two linear sweeps (§6.1): `A_j = (A_{j−1} + x_{j−1})·k_{j−1}/r_{j−1}²` forward and
/// `C_j = (C_{j+1} + x_{j+1})·k_j/s_{j+1}²` backward, with `x = conj(g)`; then
/// `Q_j = G_jj²·(A_j + x_j + C_j)` is `Σ_i conj(g_i)·G_ij·G_ji`.
pub fn backward<F: Elem>(
    args: &BkCoreArgs<'_>,
    grad_g: ArrayView2<'_, Complex64>,
) -> Result<BkCoreGrad> {
    args.check_grad(&grad_g)?;
    let (batch, n) = (args.batch(), args.n());
    let mut grad = BkCoreGrad {
        a: Array2::zeros((batch, n)),
        b: Array2::zeros((batch, n - 1)),
        c: Array2::zeros((batch, n - 1)),
        z: Complex64::new(0.0, 0.0),
    };
    for (row, (a, b, c)) in rows(args).enumerate() {
        let (bv, cv) = (b.to_vec(), c.to_vec());
        let sw = sweep_row::<F>(row, (&a.to_vec(), &bv, &cv), args.z())?;
        let x: Vec<Complex<F>> = grad_g
            .row(row)
            .iter()
            .map(|g| Complex::new(F::of(g.re), -F::of(g.im)))
            .collect();
        let zero = Complex::new(F::zero(), F::zero());
        let mut acc_a = vec![zero; n];
        for j in 1..n {
            let r = sw.r[j - 1];
            acc_a[j] = (acc_a[j - 1] + x[j - 1]) * sw.k[j - 1] / (r * r);
        }
        let mut acc_c = vec![zero; n];
        for j in (0..n.saturating_sub(1)).rev() {
            let s = sw.s[j + 1];
            acc_c[j] = (acc_c[j + 1] + x[j + 1]) * sw.k[j] / (s * s);
        }
        let mut q_sum = zero;
        for j in 0..n {
            let q = sw.g[j] * sw.g[j] * (acc_a[j] + x[j] + acc_c[j]);
            grad.a[[row, j]] = -q.re.to_f64_exact();
            q_sum += q;
        }
        for j in 0..n.saturating_sub(1) {
            let p = (acc_a[j] + x[j]) / sw.r[j] + (x[j + 1] + acc_c[j + 1]) / sw.s[j + 1];
            let gg = sw.g[j] * sw.g[j + 1] * p;
            grad.b[[row, j]] = (gg * F::of(cv[j])).re.to_f64_exact();
            grad.c[[row, j]] = (gg * F::of(bv[j])).re.to_f64_exact();
        }
        grad.z += Complex64::new(q_sum.re.to_f64_exact(), -q_sum.im.to_f64_exact());
    }
    for (arg, g) in [
        ("grad.a", &grad.a),
        ("grad.b", &grad.b),
        ("grad.c", &grad.c),
    ] {
        if let Some(((row, index), _)) = g.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(Error::Domain {
                op: OP,
                arg,
                rule: format!(
                    "overflowed at [{row}, {index}] in {}; use f64",
                    F::PRECISION
                ),
            });
        }
    }
    Ok(grad)
}
