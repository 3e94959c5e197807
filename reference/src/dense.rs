//! Dense O(N³) oracle: the diagonal of `(T − zI)⁻¹` by Gaussian elimination with partial
//! pivoting in complex f64. Independent of the O(N) recursions; use it for N ≲ 512.

use ndarray::{Array2, ArrayView1};
use num_complex::Complex64;

/// Builds the dense complex matrix `T − zI` of one row.
///
/// ```
/// use muse_reference::dense::shifted_matrix;
/// use num_complex::Complex64;
/// let m = shifted_matrix(ndarray::arr1(&[1.0, 2.0]).view(), ndarray::arr1(&[3.0]).view(),
///     ndarray::arr1(&[4.0]).view(), Complex64::new(0.0, 1.0));
/// assert_eq!(m[[0, 1]], Complex64::new(3.0, 0.0));
/// assert_eq!(m[[1, 0]], Complex64::new(4.0, 0.0));
/// ```
pub fn shifted_matrix(
    a: ArrayView1<'_, f64>,
    b: ArrayView1<'_, f64>,
    c: ArrayView1<'_, f64>,
    z: Complex64,
) -> Array2<Complex64> {
    let n = a.len();
    let mut m = Array2::zeros((n, n));
    for i in 0..n {
        m[[i, i]] = Complex64::from(a[i]) - z;
        if i + 1 < n {
            m[[i, i + 1]] = b[i].into();
            m[[i + 1, i]] = c[i].into();
        }
    }
    m
}

/// The full inverse of a square complex matrix, or `None` when a pivot is exactly zero.
pub fn inverse(m: &Array2<Complex64>) -> Option<Array2<Complex64>> {
    let n = m.nrows();
    let mut lhs = m.clone();
    let mut inv = Array2::from_diag_elem(n, Complex64::new(1.0, 0.0));
    for col in 0..n {
        let pivot =
            (col..n).max_by(|&x, &y| lhs[[x, col]].norm().total_cmp(&lhs[[y, col]].norm()))?;
        if lhs[[pivot, col]].norm() == 0.0 {
            return None;
        }
        for j in 0..n {
            lhs.swap([col, j], [pivot, j]);
            inv.swap([col, j], [pivot, j]);
        }
        let p = lhs[[col, col]].inv();
        for j in 0..n {
            lhs[[col, j]] *= p;
            inv[[col, j]] *= p;
        }
        for row in (0..n).filter(|&r| r != col) {
            let f = lhs[[row, col]];
            if f.norm() == 0.0 {
                continue;
            }
            for j in 0..n {
                let (l, v) = (lhs[[col, j]], inv[[col, j]]);
                lhs[[row, j]] -= f * l;
                inv[[row, j]] -= f * v;
            }
        }
    }
    Some(inv)
}

/// Dense diagonal of `(T − zI)⁻¹` for every row, or `None` when a row is singular.
pub fn diagonal(args: &crate::bk_core::BkCoreArgs<'_>) -> Option<Array2<Complex64>> {
    let mut out = Array2::zeros((args.batch(), args.n()));
    for r in 0..args.batch() {
        let inv = row_inverse(args, r)?;
        for i in 0..args.n() {
            out[[r, i]] = inv[[i, i]];
        }
    }
    Some(out)
}

/// Dense inverse of row `r`'s `T − zI`.
pub fn row_inverse(args: &crate::bk_core::BkCoreArgs<'_>, r: usize) -> Option<Array2<Complex64>> {
    inverse(&shifted_matrix(
        args.a().row(r),
        args.b().row(r),
        args.c().row(r),
        args.z(),
    ))
}

/// Dense gradient of `L` with upstream `grad_g` (design §12): `dL/dT_pq = −Re Σ_i conj(g_i)·G_ip·G_qi`
/// from the full inverse, and `dL/dz = conj(Σ_ij conj(g_i)·G_ij·G_ji)`. O(N³) per row.
pub fn gradient(
    args: &crate::bk_core::BkCoreArgs<'_>,
    grad_g: ndarray::ArrayView2<'_, Complex64>,
) -> Option<crate::bk_core::BkCoreGrad> {
    let (batch, n) = (args.batch(), args.n());
    let mut grad = crate::bk_core::BkCoreGrad {
        a: Array2::zeros((batch, n)),
        b: Array2::zeros((batch, n - 1)),
        c: Array2::zeros((batch, n - 1)),
        z: Complex64::new(0.0, 0.0),
    };
    for r in 0..batch {
        let g = row_inverse(args, r)?;
        let x = |i: usize| grad_g[[r, i]].conj();
        let dt = |p: usize, q: usize| {
            (0..n)
                .map(|i| x(i) * g[[i, p]] * g[[q, i]])
                .sum::<Complex64>()
        };
        for j in 0..n {
            let d = dt(j, j);
            grad.a[[r, j]] = -d.re;
            grad.z += d.conj();
        }
        for j in 0..n - 1 {
            grad.b[[r, j]] = -dt(j, j + 1).re;
            grad.c[[r, j]] = -dt(j + 1, j).re;
        }
    }
    Some(grad)
}
