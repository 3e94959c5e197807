//! AdamW with decoupled weight decay, global-norm gradient clipping and the warm-up + cosine
//! learning-rate schedule, on flat parameter vectors (float64, the reference's precision).

use serde::{Deserialize, Serialize};

/// AdamW's hyper-parameters (PyTorch's defaults except the learning rate).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamW {
    /// Peak learning rate.
    pub lr: f64,
    /// β₁, β₂.
    pub betas: (f64, f64),
    /// ε added to √v̂.
    pub eps: f64,
    /// Decoupled weight decay λ: θ ← θ − lr·λ·θ before the Adam step.
    pub weight_decay: f64,
}

impl Default for AdamW {
    fn default() -> Self {
        Self {
            lr: 3e-4,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// Adam's moments and step count (what a checkpoint stores to resume exactly).
#[derive(Debug, Clone, PartialEq)]
pub struct AdamState {
    /// First moments.
    pub m: Vec<f64>,
    /// Second moments.
    pub v: Vec<f64>,
    /// Steps taken.
    pub step: u64,
}

impl AdamState {
    /// Zero moments for `n` parameters.
    pub fn new(n: usize) -> Self {
        Self {
            m: vec![0.0; n],
            v: vec![0.0; n],
            step: 0,
        }
    }
}

impl AdamW {
    /// One step at learning rate `lr` (the schedule's value):
    /// θ ← θ − lr·(λθ + m̂/(√v̂ + ε)), with bias-corrected moments.
    ///
    /// ```
    /// use muse_train::optim::{AdamState, AdamW};
    /// let opt = AdamW { lr: 0.1, weight_decay: 0.0, ..AdamW::default() };
    /// let (mut p, mut s) = (vec![1.0], AdamState::new(1));
    /// opt.step(&mut p, &[2.0], &mut s, 0.1);
    /// // The first step moves by lr·sign(g) (m̂ = g, v̂ = g²).
    /// assert!((p[0] - 0.9).abs() < 1e-9);
    /// ```
    pub fn step(&self, params: &mut [f64], grads: &[f64], s: &mut AdamState, lr: f64) {
        assert_eq!(params.len(), grads.len(), "one gradient per parameter");
        assert_eq!(params.len(), s.m.len(), "the state fits the parameters");
        s.step += 1;
        let (b1, b2) = self.betas;
        let c1 = 1.0 - b1.powi(s.step as i32);
        let c2 = 1.0 - b2.powi(s.step as i32);
        for (((p, &g), m), v) in params.iter_mut().zip(grads).zip(&mut s.m).zip(&mut s.v) {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= lr * self.weight_decay * *p;
            *p -= lr * (*m / c1) / ((*v / c2).sqrt() + self.eps);
        }
    }
}

/// Scales `grads` so their global L2 norm is at most `max_norm`, as PyTorch's
/// `clip_grad_norm_` does (factor max_norm / (norm + 1e-6) when below 1); returns the norm before.
///
/// ```
/// let mut g = vec![3.0, 4.0];
/// assert_eq!(muse_train::optim::clip_grad_norm(&mut g, 1.0), 5.0);
/// assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
/// ```
pub fn clip_grad_norm(grads: &mut [f64], max_norm: f64) -> f64 {
    let norm = grads.iter().map(|g| g * g).sum::<f64>().sqrt();
    let s = max_norm / (norm + 1e-6);
    if s < 1.0 {
        grads.iter_mut().for_each(|g| *g *= s);
    }
    norm
}

/// Linear warm-up from 0 to `peak` over `warmup` steps, then a cosine to `min_ratio·peak` at
/// `total` steps (step counts from 0).
///
/// ```
/// use muse_train::optim::cosine_lr;
/// assert_eq!(cosine_lr(0, 1.0, 10, 110, 0.1), 0.1);
/// assert_eq!(cosine_lr(9, 1.0, 10, 110, 0.1), 1.0);
/// assert!((cosine_lr(60, 1.0, 10, 110, 0.1) - 0.55).abs() < 0.01);
/// assert!((cosine_lr(110, 1.0, 10, 110, 0.1) - 0.1).abs() < 1e-12);
/// ```
pub fn cosine_lr(step: u64, peak: f64, warmup: u64, total: u64, min_ratio: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let t = ((step - warmup) as f64 / span).min(1.0);
    let min = min_ratio * peak;
    min + (peak - min) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adamw_matches_a_hand_computed_two_steps() {
        // PyTorch's AdamW algorithm written out for one scalar, lr 0.01, λ 0.1, g = 0.5 then −1.
        let opt = AdamW {
            lr: 0.01,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let (mut p, mut s) = (vec![2.0], AdamState::new(1));
        opt.step(&mut p, &[0.5], &mut s, 0.01);
        let mut want = 2.0 - 0.01 * 0.1 * 2.0;
        want -= 0.01 * 0.5 / (0.5 + 1e-8);
        assert!((p[0] - want).abs() < 1e-15, "{} vs {want}", p[0]);
        opt.step(&mut p, &[-1.0], &mut s, 0.01);
        let (m, v) = (0.9 * 0.05 - 0.1, 0.999 * 0.00025 + 0.001);
        let (mh, vh) = (m / (1.0 - 0.81), v / (1.0 - 0.999f64.powi(2)));
        want -= 0.01 * 0.1 * want;
        want -= 0.01 * mh / (vh.sqrt() + 1e-8);
        assert!((p[0] - want).abs() < 1e-15, "{} vs {want}", p[0]);
        assert_eq!(s.step, 2);
    }

    #[test]
    fn clipping_leaves_a_small_gradient_alone() {
        let mut g = vec![0.3, 0.4];
        assert!((clip_grad_norm(&mut g, 1.0) - 0.5).abs() < 1e-15);
        assert_eq!(g, vec![0.3, 0.4]);
    }
}
