//! A text corpus as GPT-2 BPE tokens (`tiktoken-rs`'s r50k_base, V = 50257, the vocabulary ships
//! inside the crate), split into training and held-out tokens, and deterministic batches.

use std::path::Path;

use anyhow::{bail, Context, Result};
use ndarray::Array2;

/// The GPT-2 vocabulary size.
pub const GPT2_VOCAB: usize = 50257;

/// The GPT-2 BPE tokenizer.
pub fn tokenizer() -> Result<tiktoken_rs::CoreBPE> {
    tiktoken_rs::r50k_base().map_err(|e| anyhow::anyhow!("the GPT-2 BPE tables: {e}"))
}

/// A tokenised corpus: the first `1 − held_out` of the tokens train, the rest evaluate.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// Training tokens.
    pub train: Vec<u32>,
    /// Held-out tokens.
    pub eval: Vec<u32>,
}

impl Corpus {
    /// Reads and tokenises `path`; both splits must hold at least one sequence of `seq` + 1
    /// tokens (inputs and shifted targets).
    pub fn load(path: &Path, seq: usize, held_out: f64) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("`--data {}`: cannot read it as UTF-8 text", path.display())
        })?;
        Self::from_text(&text, seq, held_out)
            .with_context(|| format!("`--data {}`", path.display()))
    }

    /// [`Corpus::load`] on text already read.
    ///
    /// ```
    /// let text = "In the beginning God created the heaven and the earth. ".repeat(20);
    /// let c = muse_train::data::Corpus::from_text(&text, 16, 0.1)?;
    /// assert!(c.train.len() >= 8 * c.eval.len()); // 90 % / 10 % of the tokens
    /// assert!(muse_train::data::Corpus::from_text("", 16, 0.1).is_err());
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn from_text(text: &str, seq: usize, held_out: f64) -> Result<Self> {
        if text.trim().is_empty() {
            bail!("the file is empty");
        }
        if !(held_out > 0.0 && held_out < 1.0) {
            bail!("the held-out fraction must be in (0, 1), got {held_out}");
        }
        let tokens = tokenizer()?.encode_ordinary(text);
        let cut = ((1.0 - held_out) * tokens.len() as f64) as usize;
        let (train, eval) = tokens.split_at(cut);
        for (name, part) in [("training", train), ("held-out", eval)] {
            if part.len() < seq + 1 {
                bail!(
                    "the text is too short: {} tokens in all, its {name} split has {} but one sequence needs {} (--seq {seq} + 1)",
                    tokens.len(),
                    part.len(),
                    seq + 1
                );
            }
        }
        Ok(Self {
            train: train.to_vec(),
            eval: eval.to_vec(),
        })
    }
}

/// splitmix64 (`muse_reference::splitmix64`): the batch positions of step `s` come from the
/// seed and `s` alone, so a resumed run draws the same batches without saving a generator state.
pub use muse_reference::splitmix64 as mix;

/// The batch of training step `step`: `batch` random windows of `seq` + 1 tokens; returns
/// (ids, targets), each (batch, seq), targets the ids shifted by one.
pub fn train_batch(
    tokens: &[u32],
    batch: usize,
    seq: usize,
    seed: u64,
    step: u64,
) -> (Array2<usize>, Array2<usize>) {
    let span = (tokens.len() - seq) as u64;
    let starts: Vec<usize> = (0..batch)
        .map(|i| (mix(seed ^ mix(step.wrapping_mul(1_000_003) + i as u64)) % span) as usize)
        .collect();
    windows(tokens, &starts, seq)
}

/// Every non-overlapping window of the held-out tokens, in order, `batch` at a time.
pub fn eval_batches(
    tokens: &[u32],
    batch: usize,
    seq: usize,
) -> Vec<(Array2<usize>, Array2<usize>)> {
    let starts: Vec<usize> = (0..(tokens.len() - 1) / seq).map(|i| i * seq).collect();
    starts
        .chunks(batch)
        .map(|c| windows(tokens, c, seq))
        .collect()
}

fn windows(tokens: &[u32], starts: &[usize], seq: usize) -> (Array2<usize>, Array2<usize>) {
    let ids = Array2::from_shape_fn((starts.len(), seq), |(b, n)| tokens[starts[b] + n] as usize);
    let targets = Array2::from_shape_fn((starts.len(), seq), |(b, n)| {
        tokens[starts[b] + n + 1] as usize
    });
    (ids, targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_ids_of_a_known_sentence() {
        // GPT-2's own ids for this sentence (openai/gpt-2 encoder.json): "In"=818, " the"=262.
        let t = tokenizer()
            .unwrap()
            .encode_ordinary("In the beginning God created the heaven");
        assert_eq!(t, vec![818, 262, 3726, 1793, 2727, 262, 9538]);
    }

    #[test]
    fn batches_are_shifted_windows_and_depend_only_on_seed_and_step() {
        let tokens: Vec<u32> = (0..1000).collect();
        let (ids, targets) = train_batch(&tokens, 4, 8, 7, 3);
        assert_eq!(ids.dim(), (4, 8));
        assert!(ids.iter().zip(targets.iter()).all(|(&i, &t)| t == i + 1));
        assert_eq!(train_batch(&tokens, 4, 8, 7, 3), (ids.clone(), targets));
        assert_ne!(train_batch(&tokens, 4, 8, 7, 4).0, ids);
        let eval = eval_batches(&tokens, 3, 10);
        assert_eq!(eval.iter().map(|(i, _)| i.nrows()).sum::<usize>(), 99);
    }

    #[test]
    fn a_short_text_is_refused_with_its_token_count() {
        let e = Corpus::from_text("a few words", 16, 0.1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("too short"), "{e}");
    }
}
