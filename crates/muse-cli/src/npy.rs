//! Reading user `.npy` inputs (float64 or float32, rank 2) and writing outputs, with errors that
//! name the flag and the file.

use std::path::Path;

use anyhow::{bail, Context};
use ndarray::{Array, Array2, Dimension};
use ndarray_npy::{ReadNpyError, ReadNpyExt, WriteNpyExt};

/// The dtype an input file had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// `<f8`.
    F64,
    /// `<f4`.
    F32,
}

/// Reads a rank-2 float64 or float32 array given by `--{flag}`, widened to f64 (exact).
pub fn read_2d(flag: &str, path: &Path) -> anyhow::Result<(Array2<f64>, Dtype)> {
    let ctx = || format!("`--{flag} {}`", path.display());
    let bytes = std::fs::read(path).with_context(ctx)?;
    match Array2::<f64>::read_npy(bytes.as_slice()) {
        Ok(a) => return Ok((a, Dtype::F64)),
        Err(ReadNpyError::WrongDescriptor(_)) => {}
        Err(e) => return Err(explain(e)).with_context(ctx),
    }
    match Array2::<f32>::read_npy(bytes.as_slice()) {
        Ok(a) => Ok((a.mapv(f64::from), Dtype::F32)),
        Err(ReadNpyError::WrongDescriptor(d)) => Err(anyhow::anyhow!(
            "dtype {d} is not float64 or float32 (little-endian)"
        ))
        .with_context(ctx),
        Err(e) => Err(explain(e)).with_context(ctx),
    }
}

fn explain(e: ReadNpyError) -> anyhow::Error {
    explain_as(e, "a 2-D array (B, N)")
}

fn explain_as(e: ReadNpyError, want: &str) -> anyhow::Error {
    match e {
        ReadNpyError::WrongNdim(_, got) => anyhow::anyhow!("must be {want}, got {got}-D"),
        e => anyhow::anyhow!("not a valid .npy file: {e}"),
    }
}

/// Reads an array of the rank of `D` given by `--{flag}`, float64 or float32 (widened exactly);
/// `want` describes the expected shape for errors, e.g. `a 4-D array (B, H, N, D)`.
pub fn read_nd<D: Dimension>(
    flag: &str,
    path: &Path,
    want: &str,
) -> anyhow::Result<(Array<f64, D>, Dtype)> {
    let ctx = || format!("`--{flag} {}`", path.display());
    let bytes = std::fs::read(path).with_context(ctx)?;
    match Array::<f64, D>::read_npy(bytes.as_slice()) {
        Ok(a) => return Ok((a, Dtype::F64)),
        Err(ReadNpyError::WrongDescriptor(_)) => {}
        Err(e) => return Err(explain_as(e, want)).with_context(ctx),
    }
    match Array::<f32, D>::read_npy(bytes.as_slice()) {
        Ok(a) => Ok((a.mapv(f64::from), Dtype::F32)),
        Err(ReadNpyError::WrongDescriptor(d)) => Err(anyhow::anyhow!(
            "dtype {d} is not float64 or float32 (little-endian)"
        ))
        .with_context(ctx),
        Err(e) => Err(explain_as(e, want)).with_context(ctx),
    }
}

/// Writes `x` to `path` as float64, or rounded to float32 when `f32` is set.
pub fn write_nd<D: Dimension>(path: &Path, x: &Array<f64, D>, f32: bool) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let w = std::io::BufWriter::new(file);
    let r = if f32 {
        x.mapv(|v| v as f32).write_npy(w)
    } else {
        x.write_npy(w)
    };
    r.with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `x` to `path` as float64, or rounded to float32 when `f32` is set.
pub fn write_2d(path: &Path, x: &Array2<f64>, f32: bool) -> anyhow::Result<()> {
    write_nd(path, x, f32)
}

/// Fails unless `dir` exists or can be created.
pub fn ensure_dir(flag: &str, dir: &Path) -> anyhow::Result<()> {
    if dir.is_file() {
        bail!(
            "`--{flag} {}` is a file, expected a directory",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("`--{flag} {}`: cannot create directory", dir.display()))
}
