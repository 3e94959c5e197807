//! The training loop (on the CPU reference in float64 or on the GPU in f32, `engine.rs`): AdamW
//! with the warm-up + cosine schedule and gradient clipping, a JSONL log, held-out perplexity,
//! checkpoints that resume bit for bit, and a loss-curve SVG.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use muse_model::{init, Config, Weights};
use muse_reference::model::{ModelDims, ModelWeights};
use serde::Serialize;

use crate::checkpoint::{self, unflatten, Checkpoint};
use crate::data::{eval_batches, train_batch, Corpus, GPT2_VOCAB};
use crate::engine::{self, check_loss, Device, Engine};
use crate::optim::{cosine_lr, AdamW};

/// What `muse train` was asked to do.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOptions {
    /// The model's config (its vocabulary must be GPT-2's, 50257).
    #[serde(skip)]
    pub config: Config,
    /// The text corpus.
    pub data: PathBuf,
    /// Total optimiser steps (a resumed run continues up to this count).
    pub steps: u64,
    /// The run directory (log, checkpoints, curve).
    pub out: PathBuf,
    /// Sequences per step.
    pub batch: usize,
    /// Tokens per sequence (≤ the config's n_seq).
    pub seq: usize,
    /// AdamW's hyper-parameters (its `lr` is the schedule's peak).
    pub adam: AdamW,
    /// Warm-up steps of the schedule.
    pub warmup: u64,
    /// The schedule's floor, as a fraction of the peak.
    pub min_lr_ratio: f64,
    /// Global gradient-norm clip.
    pub clip: f64,
    /// Seed of the initialisation and of the batches.
    pub seed: u64,
    /// Evaluate every this many steps (and at the end).
    pub eval_every: u64,
    /// At most this many held-out tokens per evaluation (the first ones, in order).
    pub eval_tokens: usize,
    /// The held-out fraction of the corpus (its tail).
    pub held_out: f64,
    /// Checkpoint every this many steps (and at the end).
    pub save_every: u64,
    /// A run directory to continue.
    pub resume: Option<PathBuf>,
    /// Stop (with a checkpoint) after this step; the schedule still spans `steps` (a run split
    /// into parts, e.g. by a time limit).
    pub stop_at: Option<u64>,
    /// Where the steps run.
    pub device: Device,
    /// Draw a progress bar.
    #[serde(skip)]
    pub progress: bool,
}

/// One line of `RUN/log.jsonl`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct LogLine {
    /// The step just taken (1-based).
    pub step: u64,
    /// Training cross-entropy of its batch (nats per token).
    pub loss: f64,
    /// Its learning rate.
    pub lr: f64,
    /// The gradient's global norm before clipping.
    pub grad_norm: f64,
    /// Held-out cross-entropy and perplexity, on evaluation steps.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval_loss: Option<f64>,
    /// exp(eval_loss).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval_ppl: Option<f64>,
    /// Training tokens per second of this step (wall clock).
    pub tokens_per_s: f64,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Every log line of the run (a resumed run's earlier lines included).
    pub log: Vec<LogLine>,
    /// The last held-out perplexity.
    pub eval_ppl: f64,
}

fn check(o: &TrainOptions) -> Result<ModelDims> {
    if o.config.vocab_size != GPT2_VOCAB {
        bail!(
            "`--config`: vocab_size is {}, but training uses the GPT-2 BPE vocabulary ({GPT2_VOCAB}); use a config with \"vocab_size\": {GPT2_VOCAB}",
            o.config.vocab_size
        );
    }
    if o.seq == 0 || o.seq > o.config.n_seq {
        bail!(
            "`--seq {}`: must be in 1..={} (the config's n_seq)",
            o.seq,
            o.config.n_seq
        );
    }
    if o.batch == 0 {
        bail!("`--batch 0`: must be at least 1");
    }
    if o.steps == 0 {
        bail!("`--steps 0`: must be at least 1");
    }
    if !(o.adam.lr > 0.0 && o.adam.lr.is_finite()) {
        bail!("`--lr {}`: must be a positive number", o.adam.lr);
    }
    Ok(o.config.dims())
}

/// Mean held-out cross-entropy over at most `max_tokens` tokens.
fn evaluate(
    e: &mut dyn Engine,
    tokens: &[u32],
    batch: usize,
    seq: usize,
    max_tokens: usize,
) -> Result<f64> {
    let limit = tokens.len().min(max_tokens.max(seq + 1));
    let (mut sum, mut count) = (0.0, 0usize);
    for (ids, targets) in eval_batches(&tokens[..limit], batch, seq) {
        sum += e.eval(ids.view(), targets.view())? * ids.len() as f64;
        count += ids.len();
    }
    Ok(sum / count as f64)
}

/// Trains, writing `RUN/log.jsonl`, `RUN/state.safetensors`, `RUN/weights.safetensors` and
/// `RUN/loss.svg`.
pub fn train(o: &TrainOptions) -> Result<Summary> {
    let d = check(o)?;
    let corpus = Corpus::load(&o.data, o.seq, o.held_out)?;
    std::fs::create_dir_all(&o.out)
        .with_context(|| format!("`--out {}`: cannot create it", o.out.display()))?;
    let mut weights: Weights = init::init(&o.config, o.seed);
    let mut w = weights.model::<f64>();
    let mut log: Vec<LogLine> = Vec::new();
    let mut adam = None;
    let mut scaler = None;
    if let Some(dir) = &o.resume {
        let ck = checkpoint::load(dir, &o.config)?;
        let n = crate::checkpoint::flatten(&w).len();
        if ck.params.len() != n {
            bail!(
                "`--resume {}`: {} parameters, the config has {n}",
                dir.display(),
                ck.params.len(),
            );
        }
        unflatten(&mut w, &ck.params);
        weights.set_model(&w);
        log = read_log(&dir.join("log.jsonl"))?
            .into_iter()
            .filter(|l| l.step <= ck.adam.step)
            .collect();
        adam = Some(ck.adam);
        scaler = ck.loss_scaler;
    }
    let template = w.clone();
    let mut e = engine::make(o.device, d, (w, &weights), adam, o.adam, scaler)?;
    let log_path = o.out.join("log.jsonl");
    let mut log_file = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot write {}", log_path.display()))?;
    for l in &log {
        writeln!(log_file, "{}", serde_json::to_string(l)?)?;
    }
    let bar = progress_bar(o, e.steps_taken());
    let options = serde_json::to_string(o)?;
    let mut eval_ppl = log
        .iter()
        .rev()
        .find_map(|l| l.eval_ppl)
        .unwrap_or(f64::NAN);
    let end = o.stop_at.map_or(o.steps, |s| s.min(o.steps));
    while e.steps_taken() < end {
        let t0 = Instant::now();
        let step = e.steps_taken();
        let (ids, targets) = train_batch(&corpus.train, o.batch, o.seq, o.seed, step);
        let lr = cosine_lr(step, o.adam.lr, o.warmup, o.steps, o.min_lr_ratio);
        let (loss, grad_norm) = e.step(ids.view(), targets.view(), lr, o.clip)?;
        check_loss(loss, grad_norm, step + 1)?;
        let mut line = LogLine {
            step: step + 1,
            loss,
            lr,
            grad_norm,
            eval_loss: None,
            eval_ppl: None,
            tokens_per_s: (o.batch * o.seq) as f64 / t0.elapsed().as_secs_f64(),
        };
        let last = line.step == end;
        if last || line.step % o.eval_every.max(1) == 0 {
            let ev = evaluate(e.as_mut(), &corpus.eval, o.batch, o.seq, o.eval_tokens)?;
            line.eval_loss = Some(ev);
            line.eval_ppl = Some(ev.exp());
            eval_ppl = ev.exp();
        }
        writeln!(log_file, "{}", serde_json::to_string(&line)?)?;
        bar.set_message(format!("loss {loss:.4}, {:.0} tok/s", line.tokens_per_s));
        bar.inc(1);
        let save = last || line.step % o.save_every.max(1) == 0;
        log.push(line);
        if save {
            let (params, adam) = e.snapshot()?;
            let mut wm: ModelWeights<f64> = template.clone();
            unflatten(&mut wm, &params);
            weights.set_model(&wm);
            let ck = Checkpoint {
                params,
                adam,
                config: o.config.to_json(),
                options: options.clone(),
                loss_scaler: e.loss_scaler(),
            };
            checkpoint::save(&o.out, &ck, &weights)?;
        }
    }
    bar.finish_and_clear();
    plot(&o.out.join("loss.svg"), &log)?;
    Ok(Summary { log, eval_ppl })
}

fn progress_bar(o: &TrainOptions, start: u64) -> indicatif::ProgressBar {
    if !o.progress {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(o.steps);
    bar.set_position(start);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} step {pos}/{len} [{bar:30}] {msg} ({eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The lines of a run's `log.jsonl`.
pub fn read_log(path: &Path) -> Result<Vec<LogLine>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the run's log {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).with_context(|| format!("{}: a bad line `{l}`", path.display()))
        })
        .collect()
}

fn plot(path: &Path, log: &[LogLine]) -> Result<()> {
    use muse_verify::plot::{curves, Series};
    let train = Series {
        label: "training loss (batch)".into(),
        points: log.iter().map(|l| (l.step as f64, l.loss)).collect(),
    };
    let eval = Series {
        label: "held-out loss".into(),
        points: log
            .iter()
            .filter_map(|l| l.eval_loss.map(|e| (l.step as f64, e)))
            .collect(),
    };
    curves(
        path,
        "muse train: cross-entropy (nats/token)",
        "step",
        "loss",
        &[train, eval],
    )?;
    Ok(())
}
