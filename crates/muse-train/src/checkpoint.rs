//! A run's checkpoint: `state.safetensors` holds the float64 master parameters and Adam's
//! moments (what resumes bit for bit) with the step, config and options in its header;
//! `weights.safetensors` holds the same weights as f32 under the original's names (for `muse
//! model run` and `muse generate`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use muse_model::{Config, Weights};
use muse_reference::model::{grad::for_each_param, ModelWeights};
use safetensors::{Dtype, SafeTensors};

use crate::optim::AdamState;

/// The file names inside a run directory.
pub const STATE: &str = "state.safetensors";
/// The f32 weights with the original's names.
pub const WEIGHTS: &str = "weights.safetensors";

/// Every trainable scalar of `w`, in [`for_each_param`] order.
pub fn flatten(w: &ModelWeights<f64>) -> Vec<f64> {
    into_flat(w.clone())
}

/// [`flatten`] of weights (or gradients) no longer needed, without a copy.
pub fn into_flat(mut w: ModelWeights<f64>) -> Vec<f64> {
    let mut out = Vec::new();
    for_each_param(&mut w, &mut |_, v| out.push(*v));
    out
}

/// Writes `flat` back into `w` (the inverse of [`flatten`]).
pub fn unflatten(w: &mut ModelWeights<f64>, flat: &[f64]) {
    let mut i = 0;
    for_each_param(w, &mut |_, v| {
        *v = flat[i];
        i += 1;
    });
    assert_eq!(i, flat.len(), "one value per parameter");
}

/// What a checkpoint restores.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The master parameters (f64, [`flatten`] order).
    pub params: Vec<f64>,
    /// Adam's moments and step.
    pub adam: AdamState,
    /// The config's JSON.
    pub config: String,
    /// The run's options (JSON), for the record.
    pub options: String,
    /// The dynamic loss scaler of an fp16 run (header key `loss_scaler`, JSON).
    pub loss_scaler: Option<crate::scaler::LossScaler>,
}

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes `RUN/state.safetensors` and `RUN/weights.safetensors` (through temporary files, so an
/// interrupted save leaves the previous checkpoint whole).
pub fn save(dir: &Path, ck: &Checkpoint, weights: &Weights) -> Result<()> {
    let n = ck.params.len();
    let bufs = [
        ("params", f64_bytes(&ck.params)),
        ("adam.m", f64_bytes(&ck.adam.m)),
        ("adam.v", f64_bytes(&ck.adam.v)),
    ];
    let views = bufs
        .iter()
        .map(|(name, b)| {
            Ok((
                name.to_string(),
                safetensors::tensor::TensorView::new(Dtype::F64, vec![n], b)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let mut meta: HashMap<String, String> = [
        ("step".to_string(), ck.adam.step.to_string()),
        ("config".to_string(), ck.config.clone()),
        ("options".to_string(), ck.options.clone()),
    ]
    .into();
    if let Some(s) = &ck.loss_scaler {
        meta.insert("loss_scaler".to_string(), serde_json::to_string(s)?);
    }
    let tmp = dir.join(format!("{STATE}.tmp"));
    std::fs::write(&tmp, safetensors::serialize(views, Some(meta))?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    let wtmp = dir.join(format!("{WEIGHTS}.tmp"));
    weights.save(&wtmp, &[("step", ck.adam.step.to_string())])?;
    std::fs::rename(&tmp, dir.join(STATE))?;
    std::fs::rename(&wtmp, dir.join(WEIGHTS))?;
    Ok(())
}

/// Reads `RUN/state.safetensors`; refuses a checkpoint of another config than `config`.
pub fn load(dir: &Path, config: &Config) -> Result<Checkpoint> {
    let path = dir.join(STATE);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "`--resume {}`: cannot read {}",
            dir.display(),
            path.display()
        )
    })?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("`--resume`: {} is not a safetensors file", path.display()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let get = |k: &str| {
        meta.get(k)
            .cloned()
            .with_context(|| format!("`--resume`: {} has no `{k}` in its header", path.display()))
    };
    let stored = get("config")?;
    let want: serde_json::Value = serde_json::from_str(&config.to_json())?;
    let got: serde_json::Value = serde_json::from_str(&stored)
        .with_context(|| format!("`--resume`: the config in {} is not JSON", path.display()))?;
    if got != want {
        bail!(
            "`--resume {}`: the checkpoint is of another config ({stored}) than `--config` ({})",
            dir.display(),
            config.to_json()
        );
    }
    let st = SafeTensors::deserialize(&bytes)?;
    let read = |name: &str| -> Result<Vec<f64>> {
        let t = st
            .tensor(name)
            .with_context(|| format!("`--resume`: {} has no tensor `{name}`", path.display()))?;
        if t.dtype() != Dtype::F64 {
            bail!(
                "`--resume`: tensor `{name}` of {} is not F64",
                path.display()
            );
        }
        Ok(t.data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect())
    };
    let step = get("step")?
        .parse()
        .with_context(|| format!("`--resume`: the step in {} is not a number", path.display()))?;
    Ok(Checkpoint {
        params: read("params")?,
        adam: AdamState {
            m: read("adam.m")?,
            v: read("adam.v")?,
            step,
        },
        config: stored,
        options: get("options")?,
        loss_scaler: match meta.get("loss_scaler") {
            Some(j) => Some(serde_json::from_str(j).with_context(|| {
                format!(
                    "`--resume`: the loss scaler in {} is not valid",
                    path.display()
                )
            })?),
            None => None,
        },
    })
}
