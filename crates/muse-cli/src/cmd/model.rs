//! `muse model info|init|run`: the Phase 8 language model on the user's own ids and weights.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use muse_model::spec::parameter_counts;
use muse_model::{init, Config, Model, Profile, Weights};
use ndarray::{Array2, Array3, Axis};
use ndarray_npy::{ReadNpyError, ReadNpyExt, WriteNpyExt};

use crate::backends::BackendArg;
use crate::npy::ensure_dir;
use crate::Outcome;

/// Arguments of `muse model`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Print the parameter count per component and in total.
    Info {
        /// A config name (tiny, small, medium, large) or a JSON file of Phase8Config keys.
        #[arg(long)]
        config: String,
    },
    /// Write a seeded initialisation (the original's benchmark-tree inits) as safetensors.
    Init {
        /// A config name or JSON file.
        #[arg(long)]
        config: String,
        /// RNG seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output .safetensors file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Compute logits for token ids; write DIR/logits.npy (float32, (B, N, V)).
    Run(RunArgs),
}

/// Arguments of `muse model run`.
#[derive(clap::Args)]
struct RunArgs {
    /// A config name or JSON file.
    #[arg(long)]
    config: String,
    /// Weights (.safetensors with the original's state_dict names).
    #[arg(long)]
    weights: PathBuf,
    /// Token ids, int32 or int64 .npy of shape (B, N), N <= n_seq, every id < vocab_size.
    #[arg(long)]
    ids: PathBuf,
    /// Output directory for logits.npy.
    #[arg(long)]
    out: PathBuf,
    /// Numerics: exact (default), bench (the original's CUDA benchmark path) or bench-cpu (its
    /// PyTorch path).
    #[arg(long, default_value = "exact")]
    profile: Profile,
    /// Backend.
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendArg,
    /// Precision of the computation: f32 (default), or bf16 (every GEMM's inputs in bf16 with fp32
    /// sums; CPU only for now).
    #[arg(long, default_value = "f32")]
    precision: String,
    /// With `--backend cuda`: run the GEMMs on TF32 tensor cores (about 6e-4 relative error per
    /// dot product; the default is full fp32).
    #[arg(long)]
    tf32: bool,
    /// Also compute the Phase 8 side branch (second HTT call + AR-SSM fusion), which the original
    /// computes and discards: for FLOP and time parity only, it never changes the logits.
    #[arg(long)]
    side_branch: bool,
}

/// Runs `muse model`.
pub fn run(args: Args) -> Result<Outcome> {
    match args.cmd {
        Sub::Info { config } => info(&config),
        Sub::Init { config, seed, out } => init_cmd(&config, seed, &out),
        Sub::Run(a) => run_cmd(a),
    }
}

fn info(spec: &str) -> Result<Outcome> {
    let cfg = Config::resolve(spec)?;
    let (rows, total) = parameter_counts(&cfg);
    println!(
        "model {spec}: V={} D={} L={} H={} (dh {}) r={} n_seq={} W={} R={}",
        cfg.vocab_size,
        cfg.d_model,
        cfg.n_layers,
        cfg.num_heads,
        cfg.d_model / cfg.num_heads,
        cfg.htt_rank,
        cfg.n_seq,
        cfg.hyperbolic_window_size,
        cfg.ar_ssm_max_rank
    );
    println!("{:<16} {:>14}", "component", "parameters");
    for (name, n) in &rows {
        println!("{name:<16} {n:>14}");
    }
    let side: usize = rows
        .iter()
        .filter(|r| matches!(r.0, "bk_hyperbolic" | "ar_ssm_fusion"))
        .map(|r| r.1)
        .sum();
    println!("{:<16} {:>14}", "core (logits)", total - side);
    println!("{:<16} {:>14}", "total", total);
    Ok(Outcome::Passed)
}

fn init_cmd(spec: &str, seed: u64, out: &Path) -> Result<Outcome> {
    let cfg = Config::resolve(spec)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("`--out {}`: cannot create its directory", out.display()))?;
    }
    let w = init::init(&cfg, seed);
    w.save(
        out,
        &[
            ("seed", seed.to_string()),
            ("init", "muse bench-tree init (design model.md §3.3)".into()),
        ],
    )
    .with_context(|| format!("`--out {}`", out.display()))?;
    let (_, total) = parameter_counts(&cfg);
    println!("wrote {} ({total} parameters, seed {seed})", out.display());
    Ok(Outcome::Passed)
}

/// Reads int32 or int64 ids (B, N), all ≥ 0.
fn read_ids(path: &Path) -> Result<Array2<usize>> {
    let ctx = || format!("`--ids {}`", path.display());
    let bytes = std::fs::read(path).with_context(ctx)?;
    let explain = |e: ReadNpyError| match e {
        ReadNpyError::WrongNdim(_, got) => {
            anyhow::anyhow!("must be a 2-D array (B, N), got {got}-D")
        }
        ReadNpyError::WrongDescriptor(d) => anyhow::anyhow!("dtype {d} is not int32 or int64"),
        e => anyhow::anyhow!("not a valid .npy file: {e}"),
    };
    let ids: Array2<i64> = match Array2::<i64>::read_npy(bytes.as_slice()) {
        Ok(a) => a,
        Err(ReadNpyError::WrongDescriptor(_)) => Array2::<i32>::read_npy(bytes.as_slice())
            .map_err(explain)
            .with_context(ctx)?
            .mapv(i64::from),
        Err(e) => return Err(explain(e)).with_context(ctx),
    };
    if let Some(((b, n), &t)) = ids.indexed_iter().find(|(_, &t)| t < 0) {
        bail!(
            "`--ids {}`: ids must be >= 0, got {t} at [{b}, {n}]",
            path.display()
        );
    }
    Ok(ids.mapv(|t| t as usize))
}

fn run_cmd(a: RunArgs) -> Result<Outcome> {
    let cfg = Config::resolve(&a.config)?;
    let ids = read_ids(&a.ids)?;
    let (b, n) = ids.dim();
    if b == 0 || n == 0 {
        bail!(
            "`--ids {}`: needs B >= 1 and N >= 1, got ({b}, {n})",
            a.ids.display()
        );
    }
    if n > cfg.n_seq {
        bail!(
            "`--ids {}`: N = {n} exceeds the config's n_seq = {}",
            a.ids.display(),
            cfg.n_seq
        );
    }
    if let Some(((i, j), &t)) = ids.indexed_iter().find(|(_, &t)| t >= cfg.vocab_size) {
        bail!(
            "`--ids {}`: id {t} at [{i}, {j}] is not < vocab_size = {}",
            a.ids.display(),
            cfg.vocab_size
        );
    }
    match (a.backend, a.precision.as_str()) {
        (_, "f32" | "bf16") => {}
        (_, p) => bail!("`--precision {p}`: expected f32 or bf16"),
    }
    if a.precision == "bf16" && a.tf32 {
        bail!("`--tf32` and `--precision bf16` exclude each other (bf16 GEMMs already run on tensor cores)");
    }
    if a.tf32 && a.backend != BackendArg::Cuda {
        bail!("`--tf32` needs `--backend cuda`");
    }
    if a.side_branch && !cfg.use_ar_ssm_fusion {
        bail!("`--side-branch`: the config has no AR-SSM fusion module (`use_ar_ssm_fusion` is false)");
    }
    ensure_dir("out", &a.out)?;
    let weights = Weights::load(&cfg, &a.weights)?;
    let model = Model::new(weights);
    let t0 = std::time::Instant::now();
    let logits: Array3<f32> = match a.backend {
        BackendArg::Cpu if a.precision == "bf16" => {
            model.forward_cpu_bf16(ids.view(), a.profile)?
        }
        BackendArg::Cpu => model.forward_cpu::<f32>(ids.view(), a.profile)?,
        BackendArg::Cuda => cuda_forward(&model, &ids, &a)?,
    };
    let secs = t0.elapsed().as_secs_f64();
    if a.side_branch {
        let t1 = std::time::Instant::now();
        let side = match a.backend {
            BackendArg::Cpu => model.side_branch_cpu::<f32>(ids.view()),
            BackendArg::Cuda => side_branch_cuda(&model, &ids)?,
        }
        .context("the side branch")?;
        let norm = side
            .iter()
            .map(|v| f64::from(*v).powi(2))
            .sum::<f64>()
            .sqrt();
        println!(
            "side branch (discarded, as in the original): {:.1} ms, |x + fusion(x)| = {norm:.6}",
            t1.elapsed().as_secs_f64() * 1e3
        );
    }
    let path = a.out.join("logits.npy");
    let file = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    logits
        .write_npy(std::io::BufWriter::new(file))
        .with_context(|| format!("cannot write {}", path.display()))?;
    print_stats(&logits, secs, &a);
    println!("wrote {}", path.display());
    Ok(Outcome::Passed)
}

fn cuda_forward(model: &Model, ids: &Array2<usize>, a: &RunArgs) -> Result<Array3<f32>> {
    if a.precision == "bf16" {
        model.forward_cuda_bf16(ids.view(), a.profile)
    } else {
        model.forward_cuda(ids.view(), a.profile, a.tf32)
    }
}

#[cfg(feature = "cuda")]
fn side_branch_cuda(model: &Model, ids: &Array2<usize>) -> Result<Option<Array3<f32>>> {
    model.side_branch_cuda(ids.view())
}

#[cfg(not(feature = "cuda"))]
fn side_branch_cuda(model: &Model, ids: &Array2<usize>) -> Result<Option<Array3<f32>>> {
    let _ = (model, ids);
    bail!("{}", muse_cuda::NOT_COMPILED)
}

fn print_stats(logits: &Array3<f32>, secs: f64, a: &RunArgs) {
    let (b, n, v) = logits.dim();
    let count = logits.len() as f64;
    let mean = logits.iter().map(|&x| f64::from(x)).sum::<f64>() / count;
    let var = logits
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / count;
    let (lo, hi) = logits
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &x| {
            (l.min(x), h.max(x))
        });
    println!(
        "model run: B={b} N={n} V={v} profile={} backend={:?} precision={}{}: {:.1} ms (with the upload), {:.0} tokens/s",
        a.profile.name(),
        a.backend,
        a.precision,
        if a.tf32 { " (TF32 GEMMs)" } else { "" },
        secs * 1e3,
        (b * n) as f64 / secs
    );
    println!(
        "logits: min {lo:.6} max {hi:.6} mean {mean:.6} std {:.6} (all finite)",
        var.sqrt()
    );
    for (row, last) in logits.index_axis(Axis(1), n - 1).outer_iter().enumerate() {
        let (arg, best) =
            last.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(ai, av), (i, &x)| {
                    if x > av {
                        (i, x)
                    } else {
                        (ai, av)
                    }
                });
        println!(
            "next token (argmax at position {}) of sequence {row}: {arg} (logit {best:.6})",
            n - 1
        );
    }
}
