//! Dynamic loss scaling for fp16 training, PyTorch's `GradScaler` rule: the loss (so every
//! gradient) is multiplied by S before the backward so that small gradients survive fp16; a step
//! whose gradient holds inf/NaN is skipped and S is multiplied by the backoff factor; after
//! `interval` consecutive finite steps S is multiplied by the growth factor (unless that would
//! overflow f32). Checked step by step against PyTorch's own scaler (`fixtures/train/grad_scaler.json`).
//!
//! ```
//! use muse_train::scaler::{LossScaler, StepOutcome};
//! let mut s = LossScaler::new(8.0, 2.0, 0.5, 2)?;
//! assert_eq!(s.update(false), StepOutcome::Skipped); // inf in the gradient: halve
//! assert_eq!(s.scale(), 4.0);
//! assert_eq!((s.update(true), s.update(true)), (StepOutcome::Applied, StepOutcome::Applied));
//! assert_eq!(s.scale(), 8.0); // two finite steps: double
//! # Ok::<(), anyhow::Error>(())
//! ```

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

/// Whether the optimiser step of a gradient ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// The gradient was finite: unscale it and step.
    Applied,
    /// It held inf/NaN: no step, the scale backs off.
    Skipped,
}

/// The scaler's state (what a checkpoint stores to resume exactly).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    scale: f64,
    growth: f64,
    backoff: f64,
    interval: u32,
    good: u32,
}

impl Default for LossScaler {
    /// PyTorch's defaults: S = 2¹⁶, growth 2, backoff 0.5, interval 2000.
    fn default() -> Self {
        Self {
            scale: 65536.0,
            growth: 2.0,
            backoff: 0.5,
            interval: 2000,
            good: 0,
        }
    }
}

impl LossScaler {
    /// A scaler starting at `init`; growth > 1, 0 < backoff < 1, interval ≥ 1.
    pub fn new(init: f64, growth: f64, backoff: f64, interval: u32) -> Result<Self> {
        ensure!(
            init.is_finite() && init > 0.0,
            "the initial loss scale must be finite and > 0, got {init}"
        );
        ensure!(
            growth > 1.0 && growth.is_finite(),
            "the growth factor must be > 1, got {growth}"
        );
        ensure!(
            backoff > 0.0 && backoff < 1.0,
            "the backoff factor must be in (0, 1), got {backoff}"
        );
        ensure!(interval >= 1, "the growth interval must be at least 1 step");
        Ok(Self {
            scale: init,
            growth,
            backoff,
            interval,
            good: 0,
        })
    }

    /// S, the factor the loss is multiplied by.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Consecutive finite steps since the last growth or backoff.
    pub fn good_steps(&self) -> u32 {
        self.good
    }

    /// Records one gradient (`finite`: no inf/NaN in it) and updates S.
    pub fn update(&mut self, finite: bool) -> StepOutcome {
        if !finite {
            self.scale *= self.backoff;
            self.good = 0;
            return StepOutcome::Skipped;
        }
        self.good += 1;
        if self.good == self.interval {
            let grown = self.scale * self.growth;
            if (grown as f32).is_finite() {
                self.scale = grown;
            }
            self.good = 0;
        }
        StepOutcome::Applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every step of PyTorch's own `torch.amp.GradScaler` (ci/baselines/torch_grad_scaler.py):
    /// whether the optimizer stepped and the scale after the update.
    #[test]
    fn matches_pytorch_grad_scaler_step_by_step() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/train/grad_scaler.json");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
        let cases = doc["cases"].as_object().expect("cases");
        assert_eq!(cases.len(), 3);
        for (name, c) in cases {
            let f = |k: &str| c[k].as_f64().expect(k);
            let mut s = LossScaler::new(f("init"), f("growth"), f("backoff"), f("interval") as u32)
                .expect("scaler");
            let bad: Vec<u64> = c["non_finite_steps"]
                .as_array()
                .expect("bad")
                .iter()
                .map(|v| v.as_u64().expect("step"))
                .collect();
            let (applied, scales) = (
                c["applied"].as_array().expect("applied"),
                c["scale_after"].as_array().expect("scales"),
            );
            assert_eq!(applied.len() as f64, f("steps"));
            for (t, (a, want)) in applied.iter().zip(scales).enumerate() {
                let out = s.update(!bad.contains(&(t as u64)));
                assert_eq!(
                    out == StepOutcome::Applied,
                    a.as_bool().expect("bool"),
                    "{name} step {t}"
                );
                assert_eq!(s.scale(), want.as_f64().expect("scale"), "{name} step {t}");
            }
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(LossScaler::new(0.0, 2.0, 0.5, 10).is_err());
        assert!(LossScaler::new(1.0, 1.0, 0.5, 10).is_err());
        assert!(LossScaler::new(1.0, 2.0, 1.0, 10).is_err());
        assert!(LossScaler::new(1.0, 2.0, 0.5, 0).is_err());
        assert_eq!(LossScaler::default().scale(), 65536.0);
    }
}
