//! BK-Core: the diagonal of the resolvent of a batched tridiagonal matrix,
//! `G_ii = [(T − zI)⁻¹]_ii`, in O(N) per row (design: `shared/design/bk-core.md`).
//!
//! - [`exact`]: the stable ratio form (§3.2) and the exact O(N) gradient (§6.1); the default.
//! - [`compat`]: the original's two reference paths (mode A "vmap", mode B "parallel scan") and
//!   its input sanitation, opt-in, for explaining and reproducing its numbers (§5).
//! - [`hybrid`]: the original's heuristic "hybrid" gradient (§6.2), opt-in.
//!
//! Other faces of this family: `crates/muse-cuda/src/bk_core.rs` (CUDA launchers),
//! `crates/muse-cuda/kernels/bk_core.cu`, `tests/bk_core.rs`, `benches/bk_core.rs`,
//! `fixtures/bk_core/gen.py`.
//!
//! Layout: `a` (B, N) is the diagonal, `b` (B, N−1) the super-diagonal (`T[i, i+1] = b_i`),
//! `c` (B, N−1) the sub-diagonal (`T[i+1, i] = c_i`), and one complex shift `z` is shared by the batch.

pub mod compat;
pub mod exact;
pub mod hybrid;

use ndarray::{Array2, Array3, ArrayView2, Axis};
use num_complex::{Complex32, Complex64};

use crate::{Cpu, Elem, Error, Precision, Result};

const OP: &str = "bk_core";

/// Checked arguments of one BK-Core call. Every backend takes these, so all of them reject bad
/// input with the same message.
///
/// ```
/// use muse_reference::bk_core::BkCoreArgs;
/// use ndarray::Array2;
/// use num_complex::Complex64;
/// let (a, off) = (Array2::from_elem((2, 8), 2.0), Array2::<f64>::ones((2, 7)));
/// let args = BkCoreArgs::new(a.view(), off.view(), off.view(), Complex64::new(0.0, 0.1))?;
/// assert_eq!((args.batch(), args.n()), (2, 8));
/// # Ok::<(), muse_reference::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct BkCoreArgs<'a> {
    a: ArrayView2<'a, f64>,
    b: ArrayView2<'a, f64>,
    c: ArrayView2<'a, f64>,
    z: Complex64,
}

impl<'a> BkCoreArgs<'a> {
    /// Validates shapes (`a`: (B, N) with B, N ≥ 1; `b`, `c`: (B, N−1)), finiteness of every
    /// element, and finiteness of `z`.
    pub fn new(
        a: ArrayView2<'a, f64>,
        b: ArrayView2<'a, f64>,
        c: ArrayView2<'a, f64>,
        z: Complex64,
    ) -> Result<Self> {
        check_shapes(a.dim(), b.dim(), c.dim())?;
        for (arg, x) in [("a", &a), ("b", &b), ("c", &c)] {
            check_finite(arg, x)?;
        }
        if !(z.re.is_finite() && z.im.is_finite()) {
            return Err(Error::Domain {
                op: OP,
                arg: "z",
                rule: format!("must be finite, got {z}"),
            });
        }
        Ok(Self { a, b, c, z })
    }

    /// The diagonal, (B, N).
    pub fn a(&self) -> ArrayView2<'a, f64> {
        self.a
    }
    /// The super-diagonal, (B, N−1).
    pub fn b(&self) -> ArrayView2<'a, f64> {
        self.b
    }
    /// The sub-diagonal, (B, N−1).
    pub fn c(&self) -> ArrayView2<'a, f64> {
        self.c
    }
    /// The shift.
    pub fn z(&self) -> Complex64 {
        self.z
    }
    /// Batch size B.
    pub fn batch(&self) -> usize {
        self.a.nrows()
    }
    /// Sequence length N.
    pub fn n(&self) -> usize {
        self.a.ncols()
    }
    /// Rejects an upstream gradient whose shape is not (B, N) or that holds NaN/±inf.
    pub fn check_grad(&self, grad_g: &ArrayView2<'_, Complex64>) -> Result<()> {
        if grad_g.dim() != self.a.dim() {
            return Err(Error::Shape {
                op: OP,
                arg: "grad_g",
                expected: format!("[B, N] = [{}, {}]", self.batch(), self.n()),
                got: grad_g.shape().to_vec(),
            });
        }
        if let Some(((r, i), v)) = grad_g
            .indexed_iter()
            .find(|(_, v)| !(v.re.is_finite() && v.im.is_finite()))
        {
            let value = if v.re.is_finite() { v.im } else { v.re };
            return Err(Error::NonFinite {
                op: OP,
                arg: "grad_g",
                index: vec![r, i],
                value,
            });
        }
        Ok(())
    }
}

/// Checks `a` (B, N), `b` (B, N−1), `c` (B, N−1) with B, N ≥ 1.
pub fn check_shapes(a: (usize, usize), b: (usize, usize), c: (usize, usize)) -> Result<()> {
    let (batch, n) = a;
    for (dim, size) in [("B", batch), ("N", n)] {
        if size == 0 {
            return Err(Error::Empty {
                op: OP,
                arg: "a",
                dim,
                shape: vec![a.0, a.1],
            });
        }
    }
    for (arg, got) in [("b", b), ("c", c)] {
        if got != (batch, n - 1) {
            return Err(Error::Shape {
                op: OP,
                arg,
                expected: format!("[B, N-1] = [{batch}, {}]", n - 1),
                got: vec![got.0, got.1],
            });
        }
    }
    Ok(())
}

fn check_finite(arg: &'static str, x: &ArrayView2<'_, f64>) -> Result<()> {
    match x.indexed_iter().find(|(_, v)| !v.is_finite()) {
        Some(((r, i), v)) => Err(Error::NonFinite {
            op: OP,
            arg,
            index: vec![r, i],
            value: *v,
        }),
        None => Ok(()),
    }
}

/// Gradients of a real loss L with respect to every input of BK-Core.
#[derive(Debug, Clone, PartialEq)]
pub struct BkCoreGrad {
    /// dL/da, (B, N).
    pub a: Array2<f64>,
    /// dL/db, (B, N−1).
    pub b: Array2<f64>,
    /// dL/dc, (B, N−1).
    pub c: Array2<f64>,
    /// dL/dz in the PyTorch complex convention (∂L/∂Re z + i·∂L/∂Im z), summed over the batch
    /// because z is shared.
    pub z: Complex64,
}

/// BK-Core on a backend: exact forward and exact gradient at a chosen precision.
///
/// ```
/// use muse_reference::{bk_core::{BkCore, BkCoreArgs}, Cpu, Precision};
/// use ndarray::Array2;
/// use num_complex::Complex64;
/// let (a, off) = (Array2::from_elem((2, 8), 2.0), Array2::<f64>::ones((2, 7)));
/// let args = BkCoreArgs::new(a.view(), off.view(), off.view(), Complex64::new(0.0, 0.1))?;
/// let g = Cpu.bk_core(&args, Precision::F64)?;
/// assert_eq!(g.dim(), (2, 8));
/// # Ok::<(), muse_reference::Error>(())
/// ```
pub trait BkCore {
    /// `G_ii` for every row, computed in `precision`, returned widened to `Complex64`.
    fn bk_core(&self, args: &BkCoreArgs<'_>, precision: Precision) -> Result<Array2<Complex64>>;

    /// The exact gradient of L given the upstream `grad_g` = ∂L/∂Re G + i·∂L/∂Im G, (B, N).
    fn bk_core_grad(
        &self,
        args: &BkCoreArgs<'_>,
        grad_g: ArrayView2<'_, Complex64>,
        precision: Precision,
    ) -> Result<BkCoreGrad>;
}

impl BkCore for Cpu {
    fn bk_core(&self, args: &BkCoreArgs<'_>, precision: Precision) -> Result<Array2<Complex64>> {
        match precision {
            Precision::F64 => exact::forward::<f64>(args),
            Precision::F32 => exact::forward::<f32>(args).map(|g| g.mapv(widen)),
        }
    }

    fn bk_core_grad(
        &self,
        args: &BkCoreArgs<'_>,
        grad_g: ArrayView2<'_, Complex64>,
        precision: Precision,
    ) -> Result<BkCoreGrad> {
        match precision {
            Precision::F64 => exact::backward::<f64>(args, grad_g),
            Precision::F32 => exact::backward::<f32>(args, grad_g),
        }
    }
}

/// Widens a complex value computed in `F` to `Complex64` (exact).
pub fn widen<F: Elem>(x: num_complex::Complex<F>) -> Complex64 {
    Complex64::new(x.re.to_f64_exact(), x.im.to_f64_exact())
}

/// The original's (B, N, 2) float32 `[Re G, Im G]` features layout.
///
/// ```
/// use muse_reference::bk_core::features;
/// let g = ndarray::arr2(&[[num_complex::Complex64::new(1.0, -2.0)]]);
/// assert_eq!(features(&g.view())[[0, 0, 1]], -2.0);
/// ```
pub fn features(g: &ArrayView2<'_, Complex64>) -> Array3<f32> {
    let (batch, n) = g.dim();
    let mut out = Array3::zeros((batch, n, 2));
    for ((r, i), v) in g.indexed_iter() {
        out[[r, i, 0]] = v.re as f32;
        out[[r, i, 1]] = v.im as f32;
    }
    out
}

/// The original's complex64 output `G` from a wider result.
pub fn to_complex64(g: &ArrayView2<'_, Complex64>) -> Array2<Complex32> {
    g.mapv(|v| Complex32::new(v.re as f32, v.im as f32))
}

/// Iterates the rows of checked arguments as `(a, b, c)` lanes.
pub(crate) fn rows<'s>(
    args: &'s BkCoreArgs<'_>,
) -> impl Iterator<
    Item = (
        ndarray::ArrayView1<'s, f64>,
        ndarray::ArrayView1<'s, f64>,
        ndarray::ArrayView1<'s, f64>,
    ),
> + 's {
    args.a
        .axis_iter(Axis(0))
        .zip(args.b.axis_iter(Axis(0)))
        .zip(args.c.axis_iter(Axis(0)))
        .map(|((a, b), c)| (a, b, c))
}
