//! `muse train` and `muse generate`: the Phase 8 model trained on a text file (GPT-2 BPE, exact
//! gradients, AdamW) and decoded from a prompt.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use muse_model::{Config, Model, Weights};
use muse_reference::model::KvCodec;
use muse_train::generate::{generate, GenerateOptions};
use muse_train::optim::AdamW;
use muse_train::{train, Device, TrainOptions};

use crate::Outcome;

/// Arguments of `muse train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// A config name or JSON file of Phase8Config keys; vocab_size must be 50257 (GPT-2 BPE).
    #[arg(long)]
    config: String,
    /// The training text (UTF-8); its last `--held-out` fraction is the evaluation split.
    #[arg(long)]
    data: PathBuf,
    /// Total optimiser steps.
    #[arg(long)]
    steps: u64,
    /// The run directory: log.jsonl, state.safetensors, weights.safetensors, loss.svg.
    #[arg(long)]
    out: PathBuf,
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Tokens per sequence (at most the config's n_seq; default n_seq).
    #[arg(long)]
    seq: Option<usize>,
    /// Peak learning rate (warm-up, then cosine to a tenth of it).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Warm-up steps.
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Clip the gradient's global norm to this.
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// Seed of the initialisation and of the batches.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Evaluate the held-out perplexity every this many steps (and at the end).
    #[arg(long, default_value_t = 100)]
    eval_every: u64,
    /// Held-out tokens per evaluation (the split's first ones).
    #[arg(long, default_value_t = 16384)]
    eval_tokens: usize,
    /// The held-out fraction of the text (its end).
    #[arg(long, default_value_t = 0.1)]
    held_out: f64,
    /// Checkpoint every this many steps (and at the end).
    #[arg(long, default_value_t = 100)]
    save_every: u64,
    /// Where the steps run: `cpu` (the float64 reference) or `cuda` (the GPU, f32).
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Arithmetic: `f64` on the CPU (the default there); on CUDA `f32` (the default there: f32
    /// masters, moments and activations) or `bf16` (the forward's GEMMs on bf16 copies, f32
    /// masters and backward).
    #[arg(long)]
    precision: Option<String>,
    /// CUDA only: TF32 tensor cores for the GEMMs (fp32 storage and sums, 10-bit products).
    #[arg(long)]
    tf32: bool,
    /// Per-block recomputation in the backward. Both backwards always recompute each block
    /// from its saved input (one (B, N, D) array per block is kept), so this is accepted and is
    /// what they do anyway.
    #[arg(long)]
    checkpointing: bool,
    /// Continue the run in this directory (same config; bit-for-bit the same losses).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Stop after this step with a checkpoint (the schedule still spans --steps).
    #[arg(long)]
    stop_at: Option<u64>,
    /// Also write the GPT-2 BPE ids of the split to DIR/train.npy and DIR/heldout.npy (int32),
    /// so that another implementation can train on exactly the same tokens (with `--steps 0`,
    /// only that).
    #[arg(long)]
    export_tokens: Option<PathBuf>,
}

/// Runs `muse train`.
pub fn run_train(a: TrainArgs) -> Result<Outcome> {
    let device = match (a.backend.as_str(), a.precision.as_deref()) {
        ("cpu", None | Some("f64")) if !a.tf32 => Device::Cpu,
        ("cpu", _) if a.tf32 => bail!("`--tf32`: TF32 GEMMs need `--backend cuda`"),
        ("cpu", Some(p)) => bail!(
            "`--precision {p}`: the CPU trains the float64 reference only (`--precision f64`); f32 needs `--backend cuda`"
        ),
        ("cuda", None | Some("f32")) => Device::Cuda {
            tf32: a.tf32,
            bf16: false,
            fp16: false,
        },
        ("cuda", Some("bf16")) => Device::Cuda {
            tf32: a.tf32,
            bf16: true,
            fp16: false,
        },
        ("cuda", Some("fp16")) if a.tf32 => bail!("`--tf32` and `--precision fp16` exclude each other (fp16 GEMMs already run on tensor cores)"),
        ("cuda", Some("fp16")) => Device::Cuda {
            tf32: false,
            bf16: false,
            fp16: true,
        },
        ("cuda", Some(p)) => bail!(
            "`--precision {p}`: CUDA trains in `f32` (optionally `--tf32`), `bf16` (forward GEMMs in bf16, f32 masters) or `fp16` (fp16 GEMMs forward and backward, dynamic loss scaling, f32 masters)"
        ),
        (b, _) => bail!("`--backend {b}`: must be `cpu` or `cuda`"),
    };
    let config = Config::resolve(&a.config)?;
    let seq = a.seq.unwrap_or(config.n_seq);
    if let Some(dir) = &a.export_tokens {
        export_tokens(dir, &a.data, seq, a.held_out)?;
        if a.steps == 0 {
            return Ok(Outcome::Passed); // `--steps 0 --export-tokens DIR`: the export alone
        }
    }
    let o = TrainOptions {
        seq,
        data: a.data,
        steps: a.steps,
        out: a.out,
        batch: a.batch,
        adam: AdamW {
            lr: a.lr,
            weight_decay: a.weight_decay,
            ..AdamW::default()
        },
        warmup: a.warmup,
        min_lr_ratio: 0.1,
        clip: a.clip,
        seed: a.seed,
        eval_every: a.eval_every,
        eval_tokens: a.eval_tokens,
        held_out: a.held_out,
        save_every: a.save_every,
        resume: a.resume,
        stop_at: a.stop_at,
        device,
        progress: true,
        config,
    };
    let _ = a.checkpointing;
    let on = match device {
        Device::Cpu => "CPU, float64 reference".to_string(),
        Device::Cuda { tf32, bf16, fp16 } => format!(
            "CUDA, f32 masters{}{}{}",
            if bf16 { ", bf16 forward GEMMs" } else { "" },
            if fp16 {
                ", fp16 GEMMs with dynamic loss scaling"
            } else {
                ""
            },
            if tf32 { ", TF32 GEMMs" } else { "" }
        ),
    };
    println!(
        "train: {} steps of B={} N={} on {} ({on}, exact gradients)",
        o.steps,
        o.batch,
        o.seq,
        o.data.display()
    );
    let s = train(&o)?;
    if let Some(l) = s.log.last() {
        println!(
            "step {}: loss {:.4}, held-out perplexity {:.2}, {:.0} tokens/s",
            l.step, l.loss, s.eval_ppl, l.tokens_per_s
        );
    }
    println!(
        "wrote {0}/log.jsonl, {0}/state.safetensors, {0}/weights.safetensors and {0}/loss.svg",
        o.out.display()
    );
    Ok(Outcome::Passed)
}

/// Writes the corpus split's ids as int32 .npy files.
fn export_tokens(
    dir: &std::path::Path,
    data: &std::path::Path,
    seq: usize,
    held_out: f64,
) -> Result<()> {
    crate::npy::ensure_dir("--export-tokens", dir)?;
    let c = muse_train::data::Corpus::load(data, seq, held_out)?;
    for (name, ids) in [("train.npy", &c.train), ("heldout.npy", &c.eval)] {
        let a = ndarray::Array1::from_iter(ids.iter().map(|&t| t as i32));
        let path = dir.join(name);
        ndarray_npy::write_npy(&path, &a)
            .with_context(|| format!("`--export-tokens`: cannot write {}", path.display()))?;
    }
    println!(
        "exported {} training and {} held-out tokens to {}",
        c.train.len(),
        c.eval.len(),
        dir.display()
    );
    Ok(())
}

/// Arguments of `muse generate`.
#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Weights (.safetensors); the config comes from its header (as `muse train` and `muse
    /// model init` write it) unless `--config` is given.
    #[arg(long)]
    weights: PathBuf,
    /// The prompt text.
    #[arg(long)]
    prompt: String,
    /// A config name or JSON file, for weights without a config in their header.
    #[arg(long)]
    config: Option<String>,
    /// Tokens to generate.
    #[arg(long, default_value_t = 50)]
    max_new_tokens: usize,
    /// 0 for greedy decoding; otherwise the sampling temperature.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Sample among the k most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How the attention's K and V are stored: `f32` (kept as computed), `fp16`, `int4` (the
    /// 4-bit per-token cache with fp16 metadata) or `int4-radial` (plus the exact ‖k‖). The model
    /// is not causal (BK-Core), so each token recomputes the context with K and V in this storage.
    #[arg(long, default_value = "f32")]
    kv_cache: String,
}

fn header_config(path: &std::path::Path) -> Result<Config> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("`--weights`: cannot read {}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("`--weights {}`: not a safetensors file", path.display()))?;
    let Some(json) = meta.metadata().as_ref().and_then(|m| m.get("config")) else {
        bail!(
            "`--weights {}`: no config in its header; pass `--config`",
            path.display()
        );
    };
    Config::from_json(json)
        .with_context(|| format!("`--weights {}`: the config in its header", path.display()))
}

/// The config of `--weights`: `--config` when given, else the one in the file's header.
pub fn weights_config(weights: &std::path::Path, config: Option<&str>) -> Result<Config> {
    match config {
        Some(c) => Config::resolve(c),
        None => header_config(weights),
    }
}

/// Runs `muse generate`.
pub fn run_generate(a: GenerateArgs) -> Result<Outcome> {
    let config = weights_config(&a.weights, a.config.as_deref())?;
    let kv_cache = match a.kv_cache.as_str() {
        "f32" | "none" => None,
        other => Some(
            other
                .parse::<KvCodec>()
                .map_err(|e| anyhow::anyhow!("`--kv-cache`: {e} (or `f32`)"))?,
        ),
    };
    let model = Model::new(Weights::load(&config, &a.weights)?);
    let o = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        top_k: a.top_k,
        seed: a.seed,
        kv_cache,
    };
    let (tokens, text) = generate(&model, &a.prompt, &o)?;
    println!("{}{}", a.prompt, text);
    eprintln!(
        "generate: {} prompt + {} new tokens ({})",
        tokens.len() - a.max_new_tokens,
        a.max_new_tokens,
        if a.temperature == 0.0 {
            "greedy".to_string()
        } else {
            format!(
                "temperature {}, top-k {:?}, seed {}",
                a.temperature, a.top_k, a.seed
            )
        }
    );
    Ok(Outcome::Passed)
}
