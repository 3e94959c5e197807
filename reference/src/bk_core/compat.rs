//! The original's behaviour, opt-in (design §5). None of this is the exact resolvent:
//!
//! - [`sanitize`]: the clamps every original path applies to its inputs (§5.1).
//! - [`vmap`] (mode A): the original's per-row complex128 reference with a 1e-3 "mass" pushed onto
//!   every pivot, tanh soft clamps of log magnitudes, the φ index quirk (couples through `k_i`
//!   instead of `k_{i+1}`), NaN → 0 and a magnitude clip at 50. About 1e-2 off the exact inverse
//!   with randn diagonals; equal to it only where the quirks are invisible. `VmapOptions::bench()`
//!   is the Nov-2025 variant without mass and soft clamps.
//! - [`parallel_head`] (mode B): the original's default Hillis–Steele scan at HEAD. Wrong: shifted
//!   coupling index, `M_0` applied twice, φ includes row i, no overflow protection (NaN for
//!   N ≳ 1400 in the model's regime). For a diagonal T it returns `α_{N−1}` for interior entries.
//!
//! Outputs are complex64, as the original returns them.

use ndarray::{Array2, ArrayView1, ArrayView2, Axis};
use num_complex::{Complex32, Complex64};

use super::{check_shapes, BkCoreArgs};
use crate::Result;

/// Inputs after the original's sanitation: owned arrays that [`BkCoreArgs::new`] accepts.
#[derive(Debug, Clone)]
pub struct Sanitized {
    /// The diagonal.
    pub a: Array2<f64>,
    /// The super-diagonal.
    pub b: Array2<f64>,
    /// The sub-diagonal.
    pub c: Array2<f64>,
}

/// The original's input sanitation (§5.1): clamp a to [−100, 100] and b, c to [−10, 10] (NaN
/// survives the clamp, ±inf maps to the bounds); then, only if `a` still holds a NaN, a: NaN → 0
/// and b, c: NaN → 1.0. Only shapes are checked, since non-finite values are the point.
///
/// ```
/// use muse_reference::bk_core::compat::sanitize;
/// let s = sanitize(ndarray::arr2(&[[f64::NAN, 1e9]]).view(), ndarray::arr2(&[[f64::NAN]]).view(),
///     ndarray::arr2(&[[-f64::INFINITY]]).view())?;
/// assert_eq!((s.a[[0, 0]], s.a[[0, 1]], s.b[[0, 0]], s.c[[0, 0]]), (0.0, 100.0, 1.0, -10.0));
/// # Ok::<(), muse_reference::Error>(())
/// ```
pub fn sanitize(
    a: ArrayView2<'_, f64>,
    b: ArrayView2<'_, f64>,
    c: ArrayView2<'_, f64>,
) -> Result<Sanitized> {
    check_shapes(a.dim(), b.dim(), c.dim())?;
    // `f64::clamp` keeps NaN, as torch.clamp does.
    let mut a = a.mapv(|x| x.clamp(-100.0, 100.0));
    let mut b = b.mapv(|x| x.clamp(-10.0, 10.0));
    let mut c = c.mapv(|x| x.clamp(-10.0, 10.0));
    if a.iter().any(|x| !x.is_finite()) {
        a.mapv_inplace(|x| if x.is_nan() { 0.0 } else { x });
        b.mapv_inplace(|x| if x.is_nan() { 1.0 } else { x });
        c.mapv_inplace(|x| if x.is_nan() { 1.0 } else { x });
    }
    Ok(Sanitized { a, b, c })
}

/// Options of mode A.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmapOptions {
    /// Push every pivot 1e-3 outward along its phase (HEAD since Dec 2025).
    pub mass: bool,
    /// `88·tanh(x/88)` on log-magnitude differences (HEAD since Dec 2025).
    pub soft_clamp: bool,
}

impl VmapOptions {
    /// HEAD (`cff86b6`): mass and soft clamps on.
    pub fn head() -> Self {
        Self {
            mass: true,
            soft_clamp: true,
        }
    }
    /// BENCH era (`1c8b31b`): normalised sweeps without mass or soft clamps.
    pub fn bench() -> Self {
        Self {
            mass: false,
            soft_clamp: false,
        }
    }
}

impl Default for VmapOptions {
    fn default() -> Self {
        Self::head()
    }
}

const WALL: f64 = 88.0;

fn soft(x: f64, on: bool) -> f64 {
    if on {
        WALL * (x / WALL).tanh()
    } else {
        x
    }
}

/// The original's final guards: the magnitude clip at 50 (phase kept), then complex64.
fn clip50(g: Complex64) -> Complex32 {
    let m = g.norm();
    let g = if m > 50.0 { g * (50.0 / (m + 1e-9)) } else { g };
    Complex32::new(g.re as f32, g.im as f32)
}

/// Mode A (§5.2): the original's "vmap" reference, per row in complex128.
pub fn vmap(args: &BkCoreArgs<'_>, opts: VmapOptions) -> Array2<Complex32> {
    map_rows(args, |a, b, c| vmap_row(a, b, c, args.z(), opts))
}

fn map_rows(
    args: &BkCoreArgs<'_>,
    f: impl Fn(ArrayView1<'_, f64>, ArrayView1<'_, f64>, ArrayView1<'_, f64>) -> Vec<Complex32>,
) -> Array2<Complex32> {
    let mut out = Array2::zeros((args.batch(), args.n()));
    for ((a, b, c), mut dst) in super::rows(args).zip(out.axis_iter_mut(Axis(0))) {
        dst.iter_mut().zip(f(a, b, c)).for_each(|(d, g)| *d = g);
    }
    out
}

fn normalise(v: Complex64) -> (Complex64, f64) {
    let sigma = v.norm() + 1e-20;
    (v / sigma, sigma.ln())
}

fn vmap_row(
    a: ArrayView1<'_, f64>,
    b: ArrayView1<'_, f64>,
    c: ArrayView1<'_, f64>,
    z: Complex64,
    opts: VmapOptions,
) -> Vec<Complex32> {
    let n = a.len();
    let alpha: Vec<Complex64> = a
        .iter()
        .map(|&x| {
            let al = Complex64::from(x) - z;
            match (opts.mass, al.norm()) {
                (false, _) => al,
                (true, m) if m < 1e-12 => al + 1e-3,
                (true, m) => al + al * (1e-3 / (m + 1e-12)),
            }
        })
        .collect();
    let k: Vec<f64> = b.iter().zip(c).map(|(b, c)| b * c).collect();
    let one = Complex64::new(1.0, 0.0);
    let wall = |d: f64| soft(d, opts.soft_clamp).exp();

    // θ sweep: θ_i = t_i·e^{l_i}, i = 0..N.
    let (mut t, mut l) = (vec![one; n + 1], vec![0.0; n + 1]);
    (t[1], l[1]) = normalise(alpha[0]);
    for i in 1..n {
        let w = wall(l[i - 1] - l[i]);
        let (ti, li) = normalise(alpha[i] * t[i] - t[i - 1] * (k[i - 1] * w));
        (t[i + 1], l[i + 1]) = (ti, l[i] + li);
    }
    // φ sweep with the original's k_i (not k_{i+1}) coupling.
    let (mut tp, mut lp) = (vec![one; n], vec![0.0; n]);
    if n > 1 {
        (tp[n - 2], lp[n - 2]) = normalise(alpha[n - 1]);
    }
    for i in (0..n.saturating_sub(2)).rev() {
        let w = wall(lp[i + 2] - lp[i + 1]);
        let (ti, li) = normalise(alpha[i + 1] * tp[i + 1] - tp[i + 2] * (k[i] * w));
        (tp[i], lp[i]) = (ti, lp[i + 1] + li);
    }
    (0..n)
        .map(|i| {
            let lam = soft(l[i] + lp[i] - l[n], opts.soft_clamp);
            let g = t[i] * tp[i] / (t[n] + 1e-18) * lam.exp();
            let g = if g.re.is_finite() && g.im.is_finite() {
                g
            } else {
                Complex64::new(0.0, 0.0)
            };
            clip50(g)
        })
        .collect()
}

type Mat2 = [[Complex64; 2]; 2];

fn matmul(x: &Mat2, y: &Mat2) -> Mat2 {
    let e = |i: usize, j: usize| x[i][0] * y[0][j] + x[i][1] * y[1][j];
    [[e(0, 0), e(0, 1)], [e(1, 0), e(1, 1)]]
}

/// θ̂ of mode B (§5.3 steps 1–4), length N+1, as the original computes it.
fn theta_head(alpha: &[Complex64], k: &[f64]) -> Vec<Complex64> {
    let n = alpha.len();
    let (zero, one) = (Complex64::new(0.0, 0.0), Complex64::new(1.0, 0.0));
    let mut p: Vec<Mat2> = (0..n)
        .map(|i| {
            let ki = if i + 1 < n {
                Complex64::from(-k[i])
            } else {
                zero
            };
            [[alpha[i], ki], [one, zero]]
        })
        .collect();
    let mut stride = 1;
    while stride < n {
        let prev = p.clone();
        for i in stride..n {
            p[i] = matmul(&prev[i], &prev[i - stride]);
        }
        stride *= 2;
    }
    let mut theta = vec![one; n + 1];
    theta[1] = alpha[0];
    for i in 1..n {
        theta[i + 1] = p[i][0][0] * alpha[0] + p[i][0][1];
    }
    theta
}

/// Mode B (§5.3): the original's HEAD default parallel scan, reproduced bug for bug.
pub fn parallel_head(args: &BkCoreArgs<'_>) -> Array2<Complex32> {
    map_rows(args, |a, b, c| {
        let n = a.len();
        let alpha: Vec<Complex64> = a.iter().map(|&x| Complex64::from(x) - args.z()).collect();
        let k: Vec<f64> = b.iter().zip(c).map(|(b, c)| b * c).collect();
        let mut theta = theta_head(&alpha, &k);
        let rev_alpha: Vec<Complex64> = alpha.iter().rev().copied().collect();
        let rev_k: Vec<f64> = k.iter().rev().copied().collect();
        let theta_rev = theta_head(&rev_alpha, &rev_k);
        if theta[n].norm() < 1e-10 {
            theta[n] = Complex64::new(1e-10, 0.0);
        }
        (0..n)
            .map(|i| clip50(theta[i] * theta_rev[n - i] / theta[n]))
            .collect()
    })
}
