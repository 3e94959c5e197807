//! Decoding from a prompt: greedy (temperature 0) or sampled with temperature and top-k, on the
//! CPU (f32, exact profile), deterministic for a seed. The context is the last n_seq tokens.

use anyhow::{bail, Result};
use muse_model::Model;
use muse_reference::model::KvCodec;
use ndarray::{s, Array2};

use crate::data::{mix, tokenizer, GPT2_VOCAB};

/// How to decode.
#[derive(Debug, Clone, Copy)]
pub struct GenerateOptions {
    /// Tokens to append.
    pub max_new_tokens: usize,
    /// 0 for greedy (argmax); otherwise the softmax temperature.
    pub temperature: f64,
    /// Sample among the k most likely tokens only.
    pub top_k: Option<usize>,
    /// Seed of the sampling.
    pub seed: u64,
    /// The KV cache's storage (`None`: K and V stay f32). The model is not causal, so each step
    /// recomputes the context; the cache's effect is its codec on K and V ([`crate::eval`]).
    pub kv_cache: Option<KvCodec>,
}

/// The prompt's tokens followed by the generated ones, and the decoded text of the new ones.
pub fn generate(model: &Model, prompt: &str, o: &GenerateOptions) -> Result<(Vec<u32>, String)> {
    let cfg = model.config();
    if cfg.vocab_size != GPT2_VOCAB {
        bail!(
            "`--weights`: the model's vocab_size is {}, the GPT-2 BPE tokenizer needs {GPT2_VOCAB}",
            cfg.vocab_size
        );
    }
    if !(o.temperature >= 0.0 && o.temperature.is_finite()) {
        bail!(
            "`--temperature {}`: must be a finite number ≥ 0",
            o.temperature
        );
    }
    if o.top_k == Some(0) {
        bail!("`--top-k 0`: must be at least 1");
    }
    let bpe = tokenizer()?;
    let mut tokens = bpe.encode_ordinary(prompt);
    if tokens.is_empty() {
        bail!("`--prompt`: the prompt is empty");
    }
    let start = tokens.len();
    let num = crate::eval::numerics(o.kv_cache);
    for i in 0..o.max_new_tokens {
        let ctx = &tokens[tokens.len().saturating_sub(cfg.n_seq)..];
        let ids = Array2::from_shape_fn((1, ctx.len()), |(_, n)| ctx[n] as usize);
        let logits = model.forward_cpu_with::<f32>(ids.view(), &num)?;
        let last = logits.slice(s![0, ctx.len() - 1, ..]);
        let next = if o.temperature == 0.0 {
            argmax(last.iter().copied())
        } else {
            sample(last.iter().copied(), o, mix(o.seed ^ mix(i as u64)))
        };
        tokens.push(next as u32);
    }
    let text = bpe
        .decode(&tokens[start..])
        .map_err(|e| anyhow::anyhow!("decoding the generated tokens: {e}"))?;
    Ok((tokens, text))
}

fn argmax(v: impl Iterator<Item = f32>) -> usize {
    v.enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, x)| {
            if x > best.1 {
                (i, x)
            } else {
                best
            }
        })
        .0
}

/// Draws from softmax(logits / T) over the top k, with a uniform from `bits`.
fn sample(logits: impl Iterator<Item = f32>, o: &GenerateOptions, bits: u64) -> usize {
    let mut v: Vec<(usize, f64)> = logits
        .enumerate()
        .map(|(i, x)| (i, f64::from(x) / o.temperature))
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.truncate(o.top_k.unwrap_or(v.len()));
    let m = v[0].1;
    let w: Vec<f64> = v.iter().map(|&(_, x)| (x - m).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut u = (bits >> 11) as f64 / (1u64 << 53) as f64 * total;
    for (&(i, _), &p) in v.iter().zip(&w) {
        if u < p {
            return i;
        }
        u -= p;
    }
    v[v.len() - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_1_sampling_is_greedy_and_sampling_follows_the_weights() {
        let logits = [0.0f32, 3.0, 1.0];
        let o = GenerateOptions {
            max_new_tokens: 1,
            temperature: 1.0,
            top_k: Some(1),
            seed: 0,
            kv_cache: None,
        };
        assert_eq!(sample(logits.iter().copied(), &o, 12345), 1);
        assert_eq!(argmax(logits.iter().copied()), 1);
        // Frequencies over many draws approach softmax([0, 3, 1]) = [0.042, 0.844, 0.114].
        let o = GenerateOptions { top_k: None, ..o };
        let mut counts = [0usize; 3];
        for i in 0..20000 {
            counts[sample(logits.iter().copied(), &o, mix(i))] += 1;
        }
        let p1 = counts[1] as f64 / 20000.0;
        assert!((p1 - 0.8438).abs() < 0.01, "{counts:?}");
    }
}
