//! Weights in safetensors with the original's `state_dict()` names (one
//! `safetensors.torch.save_file(model.state_dict(), …)` converts a PyTorch checkpoint; tied
//! aliases may be present, then they must equal their tensor, or absent).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use ndarray::{Array1, Array2, Array3};
use safetensors::{Dtype, SafeTensors};

use crate::spec::{state_dict, StoredDtype, CORE};
use crate::Config;
use muse_reference::model::{
    ArSsm, BlockWeights, FusionWeights, Htt, Linear, LocalAttn, ModelWeights, Norm,
};
use muse_reference::Elem;

/// Every tensor of one model, by its original name, as f32 (complex tensors as interleaved
/// re, im pairs).
#[derive(Debug, Clone)]
pub struct Weights {
    /// The config the tensors fit.
    pub config: Config,
    /// name → (shape, data); aliases of tied tensors are not stored.
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

fn dtype_name(d: Dtype) -> String {
    format!("{d:?}")
}

impl Weights {
    /// Reads and validates a safetensors file against `config`: refuses a missing or unexpected
    /// tensor, a wrong shape or dtype, a non-finite value, or a tied alias that differs from its
    /// tensor, naming the tensor.
    pub fn load(config: &Config, path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("`--weights`: cannot read {}", path.display()))?;
        Self::from_bytes(config, &bytes).with_context(|| format!("`--weights {}`", path.display()))
    }

    /// [`Weights::load`] on the bytes of a safetensors file.
    pub fn from_bytes(config: &Config, bytes: &[u8]) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).context("not a safetensors file")?;
        let mut found: HashMap<String, safetensors::tensor::TensorView<'_>> =
            st.tensors().into_iter().collect();
        let mut tensors = BTreeMap::new();
        let specs = state_dict(config);
        for spec in &specs {
            // A tied tensor may be stored under any of its names (`safetensors.torch.save_model`
            // keeps one of them); the canonical name is the embedding's.
            let stored = std::iter::once(&spec.name)
                .chain(
                    specs
                        .iter()
                        .filter(|s| {
                            spec.alias_of.is_none() && s.alias_of.as_ref() == Some(&spec.name)
                        })
                        .map(|s| &s.name),
                )
                .find(|n| found.contains_key(*n))
                .cloned();
            let Some(view) = stored.and_then(|n| found.remove(&n)) else {
                if spec.alias_of.is_some() {
                    continue;
                }
                bail!(
                    "tensor `{}` is missing (expected shape {:?}, {}; the file does not fit this config)",
                    spec.name,
                    spec.shape,
                    spec.dtype.torch_name()
                );
            };
            let want = match spec.dtype {
                StoredDtype::F32 => Dtype::F32,
                StoredDtype::C64 => Dtype::C64,
            };
            if view.dtype() != want {
                bail!(
                    "tensor `{}` has dtype {}, expected {}",
                    spec.name,
                    dtype_name(view.dtype()),
                    dtype_name(want)
                );
            }
            if view.shape() != spec.shape.as_slice() {
                bail!(
                    "tensor `{}` has shape {:?}, expected {:?} for this config",
                    spec.name,
                    view.shape(),
                    spec.shape
                );
            }
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                bail!("tensor `{}` holds {} at flat index {i}", spec.name, data[i]);
            }
            if let Some(primary) = &spec.alias_of {
                let (_, p): &(Vec<usize>, Vec<f32>) = &tensors[primary];
                if *p != data {
                    bail!(
                        "tensor `{}` is tied to `{primary}` in the original but differs from it",
                        spec.name
                    );
                }
                continue;
            }
            tensors.insert(spec.name.clone(), (spec.shape.clone(), data));
        }
        if let Some(extra) = found.keys().min() {
            bail!(
                "unexpected tensor `{extra}` ({} unexpected in all): the file does not fit this config",
                found.len()
            );
        }
        Ok(Self {
            config: config.clone(),
            tensors,
        })
    }

    /// Writes every `state_dict()` entry, tied aliases included (as `state_dict()` lists them),
    /// with the config and `metadata` in the header.
    pub fn save(&self, path: &Path, metadata: &[(&str, String)]) -> Result<()> {
        let mut bufs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for spec in state_dict(&self.config) {
            let key = spec.alias_of.as_ref().unwrap_or(&spec.name);
            let (shape, data) = &self.tensors[key];
            let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            let dt = match spec.dtype {
                StoredDtype::F32 => Dtype::F32,
                StoredDtype::C64 => Dtype::C64,
            };
            bufs.push((spec.name.clone(), dt, shape.clone(), bytes));
        }
        let views = bufs
            .iter()
            .map(|(n, dt, s, b)| {
                Ok((
                    n.clone(),
                    safetensors::tensor::TensorView::new(*dt, s.clone(), b)?,
                ))
            })
            .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
        let mut info: HashMap<String, String> = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        info.insert("config".into(), self.config.to_json());
        let bytes = safetensors::serialize(views, Some(info))?;
        std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
    }

    fn get(&self, name: &str) -> &(Vec<usize>, Vec<f32>) {
        &self.tensors[name]
    }

    fn vec<F: Elem>(&self, name: &str) -> Array1<F> {
        self.get(name)
            .1
            .iter()
            .map(|&v| F::of(f64::from(v)))
            .collect()
    }

    fn scalar<F: Elem>(&self, name: &str) -> F {
        F::of(f64::from(self.get(name).1[0]))
    }

    fn mat<F: Elem>(&self, name: &str) -> Array2<F> {
        let (shape, data) = self.get(name);
        let rows = shape[0];
        Array2::from_shape_vec(
            (rows, data.len() / rows),
            data.iter().map(|&v| F::of(f64::from(v))).collect(),
        )
        .expect("validated shape")
    }

    fn linear<F: Elem>(&self, name: &str, bias: bool) -> Linear<F> {
        Linear {
            w: self.mat(&format!("{name}.weight")),
            b: bias.then(|| self.vec(&format!("{name}.bias"))),
            bf16: false,
        }
    }

    fn norm<F: Elem>(&self, name: &str) -> Norm<F> {
        Norm {
            weight: self.vec(&format!("{name}.weight")),
            bias: self.vec(&format!("{name}.bias")),
        }
    }

    /// The Phase 8 fusion's tensors (side branch), when the config has it.
    pub fn fusion<F: Elem>(&self) -> Option<FusionWeights<F>> {
        if !self.config.use_ar_ssm_fusion {
            return None;
        }
        let f = "ar_ssm_fusion";
        Some(FusionWeights {
            l1: self.linear(&format!("{f}.rank_gating.rank_predictor.0"), true),
            l2: self.linear(&format!("{f}.rank_gating.rank_predictor.2"), true),
            a_low: self.mat(&format!("{f}.ssm.A_low")),
            a_high: self.mat(&format!("{f}.ssm.A_high")),
            b: self.linear(&format!("{f}.ssm.B"), true),
            c: self.linear(&format!("{f}.ssm.C"), true),
            d: self.vec(&format!("{f}.ssm.D")),
        })
    }

    /// Writes `m` (e.g. trained weights) back into the tensors it came from ([`Weights::model`]'s
    /// inverse), rounded to f32; the other tensors (the side branch's, the H0 buffers) stay.
    ///
    /// ```
    /// use muse_model::{init, Config};
    /// let cfg = Config::named("tiny").unwrap();
    /// let mut w = init::init(&cfg, 1);
    /// let mut m = w.model::<f64>();
    /// m.final_norm.bias.fill(0.5);
    /// w.set_model(&m);
    /// assert_eq!(w.model::<f64>().final_norm.bias[3], 0.5);
    /// ```
    pub fn set_model(&mut self, m: &ModelWeights<f64>) {
        for (name, values) in named_tensors(m) {
            let slot = self
                .tensors
                .get_mut(&name)
                .expect("a core tensor of this config");
            assert_eq!(
                slot.1.len(),
                values.len(),
                "{name}: same size as the config's"
            );
            slot.1 = values.into_iter().map(|v| v as f32).collect();
        }
    }

    /// The tensors the logits depend on, converted to `F` and split per layer.
    pub fn model<F: Elem>(&self) -> ModelWeights<F> {
        let emb = format!("{CORE}token_embedding");
        let core = |part: &str| {
            let (s, d) = self.get(&format!("{emb}.{part}"));
            let (a, r, c) = if part == "core1" {
                (s[0], s[2], s[3])
            } else {
                (s[0], s[1], s[3])
            };
            Array3::from_shape_vec((a, r, c), d.iter().map(|&v| F::of(f64::from(v))).collect())
                .expect("validated shape")
        };
        let blocks = (0..self.config.n_layers)
            .map(|i| {
                let blk = format!("{CORE}blocks.{i}");
                let bk = format!("{blk}.bk_layer");
                let ha = format!("{bk}.hybrid_attn");
                let (la, ga) = (format!("{ha}.local_attn"), format!("{ha}.global_attn"));
                let h0 = |n: &str| -> Array1<f64> {
                    self.get(&format!("{bk}.{n}"))
                        .1
                        .iter()
                        .map(|&v| f64::from(v))
                        .collect()
                };
                let conv = {
                    let (s, d) = self.get(&format!("{ga}.T_conv.weight"));
                    Array2::from_shape_vec(
                        (s[0], 3),
                        d.iter().map(|&v| F::of(f64::from(v))).collect(),
                    )
                    .expect("validated shape")
                };
                BlockWeights {
                    norm: self.norm(&format!("{blk}.layer_norm")),
                    v_proj: self.linear(&format!("{bk}.v_proj"), true),
                    epsilon: self.scalar(&format!("{bk}.epsilon_param")),
                    gamma: self.scalar(&format!("{bk}.gamma")),
                    h0: [h0("h0_diag_base"), h0("h0_super_base"), h0("h0_sub_base")],
                    gate_sensitivity: self.scalar(&format!("{ha}.gate_sensitivity")),
                    attn: LocalAttn {
                        wq: self.mat(&format!("{la}.W_q.weight")),
                        wk: self.mat(&format!("{la}.W_k.weight")),
                        wv: self.mat(&format!("{la}.W_v.weight")),
                        wo: self.mat(&format!("{la}.W_o.weight")),
                        log_c: self.scalar(&format!("{la}.log_c")),
                        beta: self.scalar(&format!("{la}.attention.beta")),
                        bias: self.scalar(&format!("{la}.attention.attention_bias")),
                        bf16: false,
                    },
                    ssm: ArSsm {
                        gate1: self.linear(&format!("{ga}.complexity_gate.0"), true),
                        gate2: self.linear(&format!("{ga}.complexity_gate.2"), true),
                        u: self.linear(&format!("{ga}.U_proj"), false),
                        v: self.linear(&format!("{ga}.V_proj"), false),
                        conv,
                        out: self.linear(&format!("{ga}.output_proj"), true),
                    },
                    out_norm: self.norm(&format!("{ha}.layer_norm")),
                }
            })
            .collect();
        ModelWeights {
            htt: Htt {
                core1: core("core1"),
                core2: core("core2"),
                phase: self.vec(&format!("{emb}.phase_shift")),
                bf16: false,
            },
            pos: self.mat(&format!("{CORE}position_embedding.weight")),
            blocks,
            final_norm: self.norm(&format!("{CORE}layer_norm_final")),
        }
    }
}

/// Every core tensor of `m` (weights or their gradients) under the original's name, flattened in
/// its stored order: [`Weights::set_model`]'s map, and how gradients are named.
pub fn named_tensors(m: &ModelWeights<f64>) -> Vec<(String, Vec<f64>)> {
    let mut out: Vec<(String, Vec<f64>)> = Vec::new();
    let all = |a: ndarray::ArrayViewD<'_, f64>| a.iter().copied().collect::<Vec<f64>>();
    let lin = |out: &mut Vec<(String, Vec<f64>)>, name: String, l: &Linear<f64>| {
        out.push((format!("{name}.weight"), all(l.w.view().into_dyn())));
        if let Some(b) = &l.b {
            out.push((format!("{name}.bias"), b.to_vec()));
        }
    };
    let norm = |out: &mut Vec<(String, Vec<f64>)>, name: String, n: &Norm<f64>| {
        out.push((format!("{name}.weight"), n.weight.to_vec()));
        out.push((format!("{name}.bias"), n.bias.to_vec()));
    };
    let emb = format!("{CORE}token_embedding");
    out.push((format!("{emb}.core1"), all(m.htt.core1.view().into_dyn())));
    out.push((format!("{emb}.core2"), all(m.htt.core2.view().into_dyn())));
    out.push((format!("{emb}.phase_shift"), m.htt.phase.to_vec()));
    out.push((
        format!("{CORE}position_embedding.weight"),
        all(m.pos.view().into_dyn()),
    ));
    for (i, b) in m.blocks.iter().enumerate() {
        let blk = format!("{CORE}blocks.{i}");
        let bk = format!("{blk}.bk_layer");
        let ha = format!("{bk}.hybrid_attn");
        let (la, ga) = (format!("{ha}.local_attn"), format!("{ha}.global_attn"));
        norm(&mut out, format!("{blk}.layer_norm"), &b.norm);
        lin(&mut out, format!("{bk}.v_proj"), &b.v_proj);
        out.push((format!("{bk}.epsilon_param"), vec![b.epsilon]));
        out.push((format!("{bk}.gamma"), vec![b.gamma]));
        out.push((format!("{ha}.gate_sensitivity"), vec![b.gate_sensitivity]));
        let a = &b.attn;
        for (n, w) in [
            ("W_q", &a.wq),
            ("W_k", &a.wk),
            ("W_v", &a.wv),
            ("W_o", &a.wo),
        ] {
            out.push((format!("{la}.{n}.weight"), all(w.view().into_dyn())));
        }
        out.push((format!("{la}.log_c"), vec![a.log_c]));
        out.push((format!("{la}.attention.beta"), vec![a.beta]));
        out.push((format!("{la}.attention.attention_bias"), vec![a.bias]));
        lin(&mut out, format!("{ga}.complexity_gate.0"), &b.ssm.gate1);
        lin(&mut out, format!("{ga}.complexity_gate.2"), &b.ssm.gate2);
        lin(&mut out, format!("{ga}.U_proj"), &b.ssm.u);
        lin(&mut out, format!("{ga}.V_proj"), &b.ssm.v);
        out.push((
            format!("{ga}.T_conv.weight"),
            all(b.ssm.conv.view().into_dyn()),
        ));
        lin(&mut out, format!("{ga}.output_proj"), &b.ssm.out);
        norm(&mut out, format!("{ha}.layer_norm"), &b.out_norm);
    }
    norm(&mut out, format!("{CORE}layer_norm_final"), &m.final_norm);
    out
}
