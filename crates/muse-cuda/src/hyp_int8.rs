//! INT8 hyperbolic distance matrix on the GPU (kernels: `../kernels/hyp_int8.cu`; reference:
//! `muse_reference::hyp_int8`): per-row INT8 unit directions with exact int32 dot products (dp4a)
//! and f32 radial terms in the law of cosines. Two launches: the rows of x and of y, then the
//! 64 × 64-tiled pair kernel.
//!
//! ```no_run
//! use muse_cuda::hyp_int8::{forward_host, Codes};
//! let gpu = muse_cuda::Cuda::new()?.gpu()?;
//! let x = ndarray::Array4::from_elem((1, 1, 8, 64), 0.1);
//! let (d, codes_x, codes_y): (ndarray::Array4<f64>, Codes, Codes) = forward_host(gpu, x.view(), x.view(), 0.693)?;
//! assert_eq!(d.dim(), (1, 1, 8, 8));
//! # Ok::<(), muse_reference::Error>(())
//! ```

use cust::function::GridSize;
use cust::launch;
use muse_reference::{Error, Result};
use ndarray::{Array4, ArrayView4};

use crate::device::{err, k, Buf, Gpu};
use crate::lazy::LazyModule;

static MODULE: LazyModule = LazyModule::new(k::hyp_int8::CUBIN, "hyp_int8");

const OP: &str = "hyp_int8";

fn unsupported(what: String) -> Error {
    Error::Unsupported {
        op: OP,
        backend: "cuda",
        what,
    }
}

fn int(v: usize, name: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| unsupported(format!("{name} = {v} does not fit a 32-bit int")))
}

/// One side's INT8 rows on the device: codes packed four to a 32-bit word and the row stats.
pub struct DeviceRows {
    /// Rows (B·H·N).
    pub rows: usize,
    /// D.
    pub dim: usize,
    /// 32-bit words per row: ⌈D/4⌉.
    pub words: usize,
    pub(crate) codes: Buf<i32>,
    pub(crate) stats: Buf<f32>,
}

/// A side's codes and scales read back, for tests: codes [rows, D] and σ per row.
#[derive(Debug, Clone)]
pub struct Codes {
    /// q, row-major [rows, D].
    pub codes: Vec<i8>,
    /// σ per row.
    pub sigma: Vec<f32>,
}

/// Quantises tangent rows x (rows, D) f32 on the device into new buffers.
pub fn quantise(
    gpu: &'static Gpu,
    x: &Buf<f32>,
    rows: usize,
    dim: usize,
    s: f32,
) -> Result<DeviceRows> {
    let out = DeviceRows::new(gpu, rows, dim)?;
    quantise_into(gpu, x, s, &out)?;
    Ok(out)
}

impl DeviceRows {
    /// Buffers for `rows` rows of D values.
    pub fn new(gpu: &'static Gpu, rows: usize, dim: usize) -> Result<Self> {
        if dim == 0 || rows == 0 {
            return Err(Error::Domain {
                op: OP,
                arg: "x",
                rule: format!("needs rows ≥ 1 and D ≥ 1, got {rows} × {dim}"),
            });
        }
        let words = dim.div_ceil(4);
        Ok(Self {
            rows,
            dim,
            words,
            codes: gpu.alloc(rows * words)?,
            stats: gpu.alloc(rows * k::hyp_int8::STATS as usize)?,
        })
    }
}

/// Quantises x (rows, D) into `out` (no allocation: the timed path).
pub fn quantise_into(gpu: &'static Gpu, x: &Buf<f32>, s: f32, out: &DeviceRows) -> Result<()> {
    let (rows, dim, words) = (out.rows, out.dim, out.words);
    if x.len() != rows * dim {
        return Err(Error::Shape {
            op: OP,
            arg: "x",
            expected: format!("[rows, D] = [{rows}, {dim}]"),
            got: vec![x.len()],
        });
    }
    let func = gpu.function(MODULE.get(gpu)?, k::hyp_int8::ROWS)?;
    let warps = k::hyp_int8::ROW_WARPS as usize;
    let grid = u32::try_from(rows.div_ceil(warps))
        .map_err(|_| unsupported(format!("{rows} rows exceed the grid")))?;
    let (r, d, w) = (rows as i64, int(dim, "D")?, int(words, "words")?);
    let stream = &gpu.stream;
    // SAFETY: (1) seven arguments in C order: an f32 pointer, i64, two i32, f32, an i8 pointer
    // (the i32 buffer's bytes), an f32 pointer; (2) x holds rows·D floats (checked), codes
    // rows·words words = rows·4·words bytes, stats rows·STATS floats (new); one warp per row
    // < rows; (3) buffers synchronise `stream` before they are freed.
    unsafe {
        launch!(func<<<grid, k::hyp_int8::THREADS, 0, stream>>>(
            x.ptr(), r, d, w, s, out.codes.ptr(), out.stats.ptr()
        ))
    }
    .map_err(|e| err("launching hyp_int8_rows", e))
}

/// d (B·H·N·M, row-major) from the quantised rows of x (B·H·N) and y (B·H·M), `heads` = B·H.
pub fn pairs(
    gpu: &'static Gpu,
    x: &DeviceRows,
    y: &DeviceRows,
    heads: usize,
    s: f32,
    d: &Buf<f32>,
) -> Result<()> {
    if x.words != y.words || x.rows % heads != 0 || y.rows % heads != 0 {
        return Err(Error::Shape {
            op: OP,
            arg: "y",
            expected: format!("rows of the same D and B·H = {heads}"),
            got: vec![y.rows, y.words],
        });
    }
    let (n, m) = (x.rows / heads, y.rows / heads);
    if d.len() != heads * n * m {
        return Err(Error::Shape {
            op: OP,
            arg: "d",
            expected: format!("[B·H, N, M] = [{heads}, {n}, {m}]"),
            got: vec![d.len()],
        });
    }
    let bm = k::hyp_int8::BM as usize;
    if heads > 65_535 || n.div_ceil(bm) > 65_535 {
        return Err(unsupported(format!(
            "B·H = {heads} and N = {n} exceed the grid"
        )));
    }
    let grid = GridSize::xyz(
        u32::try_from(m.div_ceil(bm))
            .map_err(|_| unsupported(format!("M = {m} exceeds the grid")))?,
        n.div_ceil(bm) as u32,
        heads as u32,
    );
    let func = gpu.function(MODULE.get(gpu)?, k::hyp_int8::PAIRS)?;
    let (ni, mi, w) = (int(n, "N")?, int(m, "M")?, int(x.words, "words")?);
    let stream = &gpu.stream;
    // SAFETY: (1) nine arguments in C order: two i32 pointers, three f32 pointers, three i32, an
    // f32; (2) the codes hold rows·words words and the stats rows·STATS floats (quantise), d
    // B·H·N·M floats (checked); the kernel bounds-checks every row, column and word;
    // (3) buffers synchronise `stream` before they are freed.
    unsafe {
        launch!(func<<<grid, k::hyp_int8::THREADS, 0, stream>>>(
            x.codes.ptr(), y.codes.ptr(), x.stats.ptr(), y.stats.ptr(), d.ptr(), ni, mi, w, 1.0 / s
        ))
    }
    .map_err(|e| err("launching hyp_int8_pairs", e))
}

impl DeviceRows {
    /// The codes and σ, read back (unpacked to D per row).
    pub fn download(&self) -> Result<Codes> {
        let dim = self.dim;
        let words = self.codes.to_vec()?;
        let bytes: Vec<i8> = words
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .map(|b| b as i8)
            .collect();
        let codes = (0..self.rows)
            .flat_map(|r| bytes[r * self.words * 4..r * self.words * 4 + dim].to_vec())
            .collect();
        let stats = self.stats.to_vec()?;
        let stride = k::hyp_int8::STATS as usize;
        Ok(Codes {
            codes,
            sigma: (0..self.rows).map(|r| stats[r * stride]).collect(),
        })
    }
}

/// The distance matrix of host arrays x (B, H, N, D), y (B, H, M, D) (rounded to f32, finite),
/// and both sides' codes.
pub fn forward_host(
    gpu: &'static Gpu,
    x: ArrayView4<'_, f64>,
    y: ArrayView4<'_, f64>,
    c: f64,
) -> Result<(Array4<f64>, Codes, Codes)> {
    let s = muse_reference::poincare::Curvature::named(OP, "c", c)?.s();
    let (b, h, n, dim) = x.dim();
    let (yb, yh, m, yd) = y.dim();
    if (yb, yh, yd) != (b, h, dim) || n == 0 || m == 0 || dim == 0 {
        return Err(Error::Shape {
            op: OP,
            arg: "y",
            expected: format!("[B, H, M ≥ 1, D] = [{b}, {h}, M, {dim}]"),
            got: y.shape().to_vec(),
        });
    }
    for (arg, a) in [("x", &x), ("y", &y)] {
        if let Some((i, v)) = a.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFinite {
                op: OP,
                arg,
                index: vec![i.0, i.1, i.2, i.3],
                value: *v,
            });
        }
    }
    let up = |a: &ArrayView4<'_, f64>| gpu.upload(&a.iter().map(|&v| v as f32).collect::<Vec<_>>());
    let (xd, ydv) = (up(&x)?, up(&y)?);
    let qx = quantise(gpu, &xd, b * h * n, dim, s as f32)?;
    let qy = quantise(gpu, &ydv, b * h * m, dim, s as f32)?;
    let d = gpu.alloc::<f32>(b * h * n * m)?;
    pairs(gpu, &qx, &qy, b * h, s as f32, &d)?;
    gpu.sync(OP)?;
    let out = Array4::from_shape_vec(
        (b, h, n, m),
        d.to_vec()?.into_iter().map(f64::from).collect(),
    )
    .map_err(|e| unsupported(e.to_string()))?;
    Ok((out, qx.download()?, qy.download()?))
}
