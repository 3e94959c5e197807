//! `muse attention`: hyperbolic attention on `.npy` inputs. Reads q (B,H,N,D), k (B,H,M,D) and
//! v (B,H,M,Dv) as float64 or float32; writes `<out>/o.npy` (B,H,N,Dv) and `<out>/lse.npy`
//! (B,H,N) in the requested precision. A row with no visible key gives o = 0 and lse = −inf.

use std::path::PathBuf;

use muse_reference::hyp_attn::{Form, HypAttn, HypAttnArgs, HypAttnOut, Mask};
use muse_reference::{Cpu, Dtype, Error, Precision};
use ndarray::Ix4;

use crate::backends::{open_cuda, BackendArg};
use crate::npy::{ensure_dir, read_nd, write_nd};
use crate::Outcome;

/// Arguments of `muse attention`.
#[derive(clap::Args)]
pub struct Args {
    /// Queries, tangent vectors (B, H, N, D), float64 or float32 .npy.
    #[arg(long)]
    q: PathBuf,
    /// Keys, tangent vectors (B, H, M, D).
    #[arg(long)]
    k: PathBuf,
    /// Values, tangent vectors (B, H, M, Dv).
    #[arg(long)]
    v: PathBuf,
    /// Curvature magnitude c > 0 (the ball has radius 1/sqrt(c)).
    #[arg(long, allow_hyphen_values = true)]
    curvature: f64,
    /// Inverse temperature: scores are -beta * d(exp0 q, exp0 k).
    #[arg(long, allow_hyphen_values = true)]
    beta: f64,
    /// Which keys each query sees: none, causal (bottom-right aligned) or window:W (N = M).
    #[arg(long, default_value = "none")]
    mask: Mask,
    /// Output directory for o.npy and lse.npy.
    #[arg(long)]
    out: PathBuf,
    /// Precision of the computation and of the outputs.
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Backend.
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendArg,
    /// Distance form: exact (default), or the original's fast_bench / flash (compat).
    #[arg(long, default_value = "exact")]
    form: Form,
}

/// The flag that feeds a reference argument, so errors name what the user typed.
fn flag(arg: &str) -> &str {
    match arg {
        "c" => "--curvature",
        "beta" => "--beta",
        "mask" => "--mask",
        "q" => "--q",
        "k" => "--k",
        "v" => "--v",
        other => other,
    }
}

/// Prefixes a reference error with the flag it concerns.
fn name_flag(e: Error) -> anyhow::Error {
    let arg = match &e {
        Error::Shape { arg, .. }
        | Error::Empty { arg, .. }
        | Error::NonFinite { arg, .. }
        | Error::Domain { arg, .. } => Some(*arg),
        _ => None,
    };
    match arg {
        Some(a) => anyhow::anyhow!("`{}`: {e}", flag(a)),
        None => e.into(),
    }
}

const SHAPE_Q: &str = "a 4-D array (B, H, N, D)";
const SHAPE_K: &str = "a 4-D array (B, H, M, D)";
const SHAPE_V: &str = "a 4-D array (B, H, M, Dv)";

/// Runs `muse attention`.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let (q, _) = read_nd::<Ix4>("q", &args.q, SHAPE_Q)?;
    let (k, _) = read_nd::<Ix4>("k", &args.k, SHAPE_K)?;
    let (v, _) = read_nd::<Ix4>("v", &args.v, SHAPE_V)?;
    let attn = HypAttnArgs::new(
        q.view(),
        k.view(),
        v.view(),
        args.curvature,
        args.beta,
        args.mask,
    )
    .map_err(name_flag)?
    .with_form(args.form);
    ensure_dir("out", &args.out)?;
    let dtype = Dtype::from(args.precision);
    let t0 = std::time::Instant::now();
    let out: HypAttnOut = match args.backend {
        BackendArg::Cpu => Cpu.hyp_attn(&attn, dtype)?,
        BackendArg::Cuda => open_cuda()
            .map_err(anyhow::Error::msg)?
            .hyp_attn(&attn, dtype)?,
    };
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    if let Some(bad) = out.o.iter().chain(out.lse.iter()).find(|x| x.is_nan()) {
        anyhow::bail!(
            "hyp_attn: the {:?} backend produced {bad}; this is a bug, please report it",
            args.backend
        );
    }
    let f32_out = args.precision == Precision::F32;
    write_nd(&args.out.join("o.npy"), &out.o, f32_out)?;
    write_nd(&args.out.join("lse.npy"), &out.lse, f32_out)?;
    let (b, h, n, m, d, dv) = attn.dims();
    let empty = out.lse.iter().filter(|x| x.is_infinite()).count();
    let max_o = out.o.iter().fold(0.0f64, |a, x| a.max(x.abs()));
    println!(
        "attention: B={b} H={h} N={n} M={m} D={d} Dv={dv} c={} beta={} mask={} form={} {} on {:?}: {ms:.2} ms (with transfers); max|o| = {max_o:.6}; {empty} row(s) without a visible key",
        args.curvature,
        args.beta,
        args.mask.name(),
        args.form.name(),
        args.precision,
        args.backend
    );
    println!(
        "wrote {} and {}",
        args.out.join("o.npy").display(),
        args.out.join("lse.npy").display()
    );
    Ok(Outcome::Passed)
}
