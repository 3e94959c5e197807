//! The CPU reference passes over all rows, generic over the element type.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};

use super::{row, HypLnArgs, HypLnGrad, HypLnOut};
use crate::{Dtype, Elem};

/// The row `r` of `x` rounded to `dtype`, in `F`.
fn rounded<F: Elem>(x: ArrayView1<'_, f64>, dtype: Dtype) -> Vec<F> {
    x.iter().map(|&v| F::of(dtype.round(v))).collect()
}

/// The reference forward pass in `F` (inputs rounded to `dtype` first).
pub fn forward<F: Elem>(args: &HypLnArgs<'_>, dtype: Dtype) -> HypLnOut {
    let (rows, dim) = args.x.dim();
    let p = row::Params::<F>::new(args, dtype);
    let mut y = Array2::zeros((rows, dim));
    let mut out = Array2::zeros((rows, dim));
    let mut a = Array1::zeros(rows);
    let (mut xh, mut yr, mut o) = (
        vec![F::zero(); dim],
        vec![F::zero(); dim],
        vec![F::zero(); dim],
    );
    for (r, xr) in args.x.axis_iter(Axis(0)).enumerate() {
        let x = rounded::<F>(xr, dtype);
        row::layer_norm(&p, &x, &mut xh, &mut yr);
        let proj = row::project(&p, &yr, &mut o);
        a[r] = proj.a;
        for d in 0..dim {
            y[[r, d]] = yr[d].to_f64_exact();
            out[[r, d]] = o[d].to_f64_exact();
        }
    }
    HypLnOut { y, out, a }
}

/// The reference backward pass in `F` (inputs and `g` rounded to `dtype` first).
pub fn backward<F: Elem>(args: &HypLnArgs<'_>, g: ArrayView2<'_, f64>, dtype: Dtype) -> HypLnGrad {
    let (rows, dim) = args.x.dim();
    let p = row::Params::<F>::new(args, dtype);
    let mut acc = row::GradAcc::<F>::new(dim);
    let mut dx = Array2::zeros((rows, dim));
    let mut dxr = vec![F::zero(); dim];
    for r in 0..rows {
        let x = rounded::<F>(args.x.row(r), dtype);
        let gr = rounded::<F>(g.row(r), dtype);
        row::backward(&p, &x, &gr, &mut acc, &mut dxr);
        for d in 0..dim {
            dx[[r, d]] = dxr[d].to_f64_exact();
        }
    }
    HypLnGrad {
        dx,
        dgamma: acc.dgamma.iter().map(|v| v.to_f64_exact()).collect(),
        dbeta_ln: acc.dbeta.iter().map(|v| v.to_f64_exact()).collect(),
        dc: acc.dc,
    }
}
