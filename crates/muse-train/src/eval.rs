//! Held-out perplexity of a trained model on the CPU (f32, profile `exact`), optionally with the
//! attention's K and V passed through a KV cache's codec ([`KvCodec`]): the measurement behind
//! "the 4-bit cache changes perplexity by < 1 %" (design hyperbolic.md §4.5), with the fp16 cache
//! as the baseline and the same windows for every codec.
//!
//! The same windows also measure the inference quantisations of design hyperbolic.md §8 ([`Quant`]:
//! W4A8 projections, INT8 attention logits) against the unquantised f32 perplexity
//! ([`numerics_with`], [`perplexity_with`]).
//!
//! The Phase 8 model is not causal (BK-Core's G_ii depends on the whole sequence), so decoding
//! recomputes every position; a KV cache's effect on it is exactly its codec applied to K and V,
//! which is what this evaluates (checked against a real `Kv4Cache` in the reference's tests).

use anyhow::{ensure, Result};
use indicatif::{ProgressBar, ProgressStyle};
use muse_model::{Model, Profile};
use muse_reference::model::{AttnPath, KvCodec, Numerics, Quant};
use ndarray::ArrayView2;

use crate::data::eval_batches;

/// The profile `exact` with the attention's K and V stored as `kv` (`None`: kept in f32).
///
/// ```
/// use muse_reference::model::{AttnPath, KvCodec};
/// let num = muse_train::eval::numerics(Some(KvCodec::Fp16));
/// assert_eq!(num.attention, AttnPath::ExactKv(KvCodec::Fp16));
/// assert_eq!(muse_train::eval::numerics(None).attention, AttnPath::Exact);
/// ```
pub fn numerics(kv: Option<KvCodec>) -> Numerics {
    let mut num = Profile::Exact.numerics();
    if let Some(codec) = kv {
        num.attention = AttnPath::ExactKv(codec);
    }
    num
}

/// [`numerics`] with the inference quantisation `quant` of the local attention.
///
/// ```
/// use muse_reference::model::Quant;
/// let q: Quant = "int8-logits".parse().unwrap();
/// let num = muse_train::eval::numerics_with(None, q);
/// assert_eq!((num.quant, num.attention), (q, muse_train::eval::numerics(None).attention));
/// ```
pub fn numerics_with(kv: Option<KvCodec>, quant: Quant) -> Numerics {
    Numerics {
        quant,
        ..numerics(kv)
    }
}

/// Mean cross-entropy (nats per token) of `targets` under the logits of `ids`.
pub fn cross_entropy(
    model: &Model,
    ids: ArrayView2<'_, usize>,
    targets: ArrayView2<'_, usize>,
    num: &Numerics,
) -> Result<f64> {
    let logits = model.forward_cpu_with::<f32>(ids, num)?;
    let (b, n, v) = logits.dim();
    let mut sum = 0.0;
    for bi in 0..b {
        for i in 0..n {
            let row = logits.slice(ndarray::s![bi, i, ..]);
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
            let lse = f64::from(m)
                + row
                    .iter()
                    .map(|&x| f64::from(x - m).exp())
                    .sum::<f64>()
                    .ln();
            let t = targets[[bi, i]];
            ensure!(t < v, "target id {t} is outside the vocabulary of {v}");
            sum += lse - f64::from(row[t]);
        }
    }
    ensure!(
        sum.is_finite(),
        "the model's logits are not finite on the held-out windows"
    );
    Ok(sum / (b * n) as f64)
}

/// The held-out loss and perplexity of one codec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perplexity {
    /// Mean cross-entropy in nats per token.
    pub loss: f64,
    /// exp(loss).
    pub ppl: f64,
    /// Tokens scored.
    pub tokens: usize,
}

/// Perplexity over the first `max_tokens` held-out tokens in non-overlapping windows of `seq`,
/// `batch` windows per forward, with a progress bar.
pub fn perplexity(
    model: &Model,
    tokens: &[u32],
    seq: usize,
    batch: usize,
    max_tokens: usize,
    kv: Option<KvCodec>,
) -> Result<Perplexity> {
    let label = kv.map_or("f32", KvCodec::name);
    perplexity_with(model, tokens, seq, batch, max_tokens, &numerics(kv), label)
}

/// [`perplexity`] under any numerics `num` (e.g. [`numerics_with`]), the progress bar showing
/// `label`; the same windows for every `num`.
pub fn perplexity_with(
    model: &Model,
    tokens: &[u32],
    seq: usize,
    batch: usize,
    max_tokens: usize,
    num: &Numerics,
    label: &str,
) -> Result<Perplexity> {
    ensure!(
        seq >= 1 && batch >= 1,
        "`--seq` and `--batch` must be at least 1"
    );
    let limit = tokens.len().min(max_tokens.max(seq + 1));
    ensure!(
        limit > seq,
        "the held-out split has {} tokens, fewer than one window of {} + 1",
        tokens.len(),
        seq
    );
    let batches = eval_batches(&tokens[..limit], batch, seq);
    let bar = ProgressBar::new(batches.len() as u64).with_style(
        ProgressStyle::with_template("eval {msg} [{bar:30}] {pos}/{len} batches, {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(label.to_string());
    let (mut sum, mut count) = (0.0, 0);
    for (ids, targets) in &batches {
        sum += cross_entropy(model, ids.view(), targets.view(), num)? * ids.len() as f64;
        count += ids.len();
        bar.inc(1);
    }
    bar.finish_and_clear();
    let loss = sum / count as f64;
    Ok(Perplexity {
        loss,
        ppl: loss.exp(),
        tokens: count,
    })
}
