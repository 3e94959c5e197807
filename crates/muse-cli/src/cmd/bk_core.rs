//! `muse bk-core`: BK-Core on `.npy` inputs. Reads a (B,N), b (B,N−1), c (B,N−1) as float64 or
//! float32; writes `<out>/g_re.npy`, `<out>/g_im.npy` (B,N) in the requested precision and
//! `<out>/features.npy` (B,N,2) float32, the original's layout.

use std::path::PathBuf;

use anyhow::Context;
use muse_reference::bk_core::compat::{self, VmapOptions};
use muse_reference::bk_core::{features, BkCore, BkCoreArgs};
use muse_reference::{Cpu, Precision};
use ndarray::Array2;
use ndarray_npy::WriteNpyExt;
use num_complex::Complex64;

use crate::backends::{open_cuda, BackendArg};
use crate::npy::{ensure_dir, read_2d, write_2d};
use crate::Outcome;

/// Which BK-Core to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The exact resolvent diagonal (default).
    Exact,
    /// The original's mode A at HEAD: 1e-3 mass, soft clamps, φ index quirk, clip at 50.
    CompatVmap,
    /// The original's mode A as of Nov 2025: no mass, no soft clamps.
    CompatVmapBench,
    /// The original's mode B (HEAD default parallel scan): wrong, reproduced bug for bug.
    CompatParallelHead,
}

/// Arguments of `muse bk-core`.
#[derive(clap::Args)]
pub struct Args {
    /// Diagonal, (B, N), float64 or float32 .npy.
    #[arg(long)]
    a: PathBuf,
    /// Super-diagonal T[i, i+1], (B, N-1).
    #[arg(long)]
    b: PathBuf,
    /// Sub-diagonal T[i+1, i], (B, N-1).
    #[arg(long)]
    c: PathBuf,
    /// Real part of the shift z.
    #[arg(long, allow_hyphen_values = true)]
    z_re: f64,
    /// Imaginary part of the shift z.
    #[arg(long, allow_hyphen_values = true)]
    z_im: f64,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Precision of the computation and of g_re/g_im.
    #[arg(long, default_value = "f64")]
    precision: Precision,
    /// Backend (exact mode only for cuda).
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendArg,
    /// What to compute.
    #[arg(long, value_enum, default_value = "exact")]
    mode: Mode,
    /// Apply the original's input clamps first (a to ±100, b and c to ±10, NaN replaced).
    #[arg(long)]
    sanitize: bool,
}

/// Runs `muse bk-core`.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let (mut a, _) = read_2d("a", &args.a)?;
    let (mut b, _) = read_2d("b", &args.b)?;
    let (mut c, _) = read_2d("c", &args.c)?;
    if args.sanitize {
        let s = compat::sanitize(a.view(), b.view(), c.view())?;
        (a, b, c) = (s.a, s.b, s.c);
    }
    let z = Complex64::new(args.z_re, args.z_im);
    let bk = BkCoreArgs::new(a.view(), b.view(), c.view(), z)?;
    ensure_dir("out", &args.out)?;
    let g: Array2<Complex64> = match (args.mode, args.backend) {
        (Mode::Exact, BackendArg::Cpu) => Cpu.bk_core(&bk, args.precision)?,
        (Mode::Exact, BackendArg::Cuda) => open_cuda()
            .map_err(anyhow::Error::msg)?
            .bk_core(&bk, args.precision)?,
        (_, BackendArg::Cuda) => anyhow::bail!(
            "`--mode {:?}` runs on the CPU only; use `--backend cpu`",
            args.mode
        ),
        (mode, BackendArg::Cpu) => {
            let g = match mode {
                Mode::CompatVmap => compat::vmap(&bk, VmapOptions::head()),
                Mode::CompatVmapBench => compat::vmap(&bk, VmapOptions::bench()),
                _ => compat::parallel_head(&bk),
            };
            g.mapv(|v| Complex64::new(v.re.into(), v.im.into()))
        }
    };
    let f32_out = args.precision == Precision::F32;
    write_2d(&args.out.join("g_re.npy"), &g.mapv(|v| v.re), f32_out)?;
    write_2d(&args.out.join("g_im.npy"), &g.mapv(|v| v.im), f32_out)?;
    let fpath = args.out.join("features.npy");
    let file = std::fs::File::create(&fpath)
        .with_context(|| format!("cannot create {}", fpath.display()))?;
    features(&g.view())
        .write_npy(std::io::BufWriter::new(file))
        .with_context(|| format!("cannot write {}", fpath.display()))?;
    eprintln!(
        "bk-core: B={} N={} z={z} {:?} {} on {:?}: wrote g_re.npy, g_im.npy, features.npy to {}",
        bk.batch(),
        bk.n(),
        args.mode,
        args.precision,
        args.backend,
        args.out.display()
    );
    Ok(Outcome::Passed)
}
