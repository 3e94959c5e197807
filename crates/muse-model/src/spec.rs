//! Every tensor of the original's `state_dict()` for a config, in its order, with shape, dtype and
//! whether it is a parameter or a buffer (design/original-state-dict.json is the ground truth this
//! is tested against), and the parameter counts per component.

use crate::Config;
use muse_reference::model::htt_factors;

/// The dtype a tensor is stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredDtype {
    /// float32.
    F32,
    /// complex64 (`bk_hyperbolic.z` only).
    C64,
}

impl StoredDtype {
    /// The name `state_dict()` dumps use: `float32` / `complex64`.
    pub fn torch_name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::C64 => "complex64",
        }
    }
}

/// One `state_dict()` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// The original's name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its dtype.
    pub dtype: StoredDtype,
    /// A trainable parameter (else a buffer).
    pub param: bool,
    /// For a tied alias (the decoder's and `htt_embedding`'s view of the embedding cores): the
    /// name of the tensor it shares storage with. Aliases do not count as parameters.
    pub alias_of: Option<String>,
    /// The component it belongs to, for [`parameter_counts`].
    pub component: &'static str,
}

impl TensorSpec {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The prefix of the core model's names.
pub const CORE: &str = "phase7_model.model.";

struct Builder(Vec<TensorSpec>);

impl Builder {
    fn push(&mut self, component: &'static str, name: String, shape: &[usize], param: bool) {
        self.0.push(TensorSpec {
            name,
            shape: shape.to_vec(),
            dtype: StoredDtype::F32,
            param,
            alias_of: None,
            component,
        });
    }
    fn p(&mut self, component: &'static str, name: String, shape: &[usize]) {
        self.push(component, name, shape, true);
    }
    fn linear(&mut self, component: &'static str, name: &str, out: usize, inp: usize, bias: bool) {
        self.p(component, format!("{name}.weight"), &[out, inp]);
        if bias {
            self.p(component, format!("{name}.bias"), &[out]);
        }
    }
    fn htt(&mut self, cfg: &Config, prefix: &str, alias: Option<&str>) {
        let (v1, v2, d1, d2) = htt_factors(cfg.vocab_size, cfg.d_model);
        let r = cfg.htt_rank;
        for (part, shape) in [
            ("core1", vec![v1, 1, r, d1]),
            ("core2", vec![v2, r, 1, d2]),
            ("phase_shift", vec![r]),
        ] {
            self.0.push(TensorSpec {
                name: format!("{prefix}.{part}"),
                shape,
                dtype: StoredDtype::F32,
                param: alias.is_none(),
                alias_of: alias.map(|a| format!("{a}.{part}")),
                component: "htt",
            });
        }
    }
}

/// Every `state_dict()` entry of the model for `cfg`, in the original's order.
pub fn state_dict(cfg: &Config) -> Vec<TensorSpec> {
    let (d, n, r) = (cfg.d_model, cfg.n_seq, cfg.ar_ssm_max_rank);
    let g = cfg.ssm_hidden();
    let mut b = Builder(Vec::new());
    let emb = format!("{CORE}token_embedding");
    b.htt(cfg, &emb, None);
    b.p(
        "positions",
        format!("{CORE}position_embedding.weight"),
        &[n, d],
    );
    for i in 0..cfg.n_layers {
        let blk = format!("{CORE}blocks.{i}");
        let (bk, ha) = (
            format!("{blk}.bk_layer"),
            format!("{blk}.bk_layer.hybrid_attn"),
        );
        let (la, ga) = (format!("{ha}.local_attn"), format!("{ha}.global_attn"));
        b.p("norms", format!("{blk}.layer_norm.weight"), &[d]);
        b.p("norms", format!("{blk}.layer_norm.bias"), &[d]);
        b.p("bk_layer", format!("{bk}.bk_scale"), &[d]);
        b.p("bk_layer", format!("{bk}.gamma"), &[]);
        b.p("bk_layer", format!("{bk}.epsilon_param"), &[]);
        b.push("h0", format!("{bk}.h0_diag_base"), &[1, n], false);
        b.push("h0", format!("{bk}.h0_sub_base"), &[1, n - 1], false);
        b.push("h0", format!("{bk}.h0_super_base"), &[1, n - 1], false);
        b.p("bk_layer", format!("{ha}.gate_sensitivity"), &[]);
        b.p("attention", format!("{la}.log_c"), &[]);
        for w in ["W_q", "W_k", "W_v"] {
            b.linear("attention", &format!("{la}.{w}"), d, d, false);
        }
        b.p("attention", format!("{la}.attention.beta"), &[]);
        b.p("attention", format!("{la}.attention.attention_bias"), &[]);
        b.linear("attention", &format!("{la}.W_o"), d, d, false);
        b.linear("ar_ssm", &format!("{ga}.complexity_gate.0"), g, d, true);
        b.linear("ar_ssm", &format!("{ga}.complexity_gate.2"), r, g, true);
        b.linear("ar_ssm", &format!("{ga}.U_proj"), r, d, false);
        b.linear("ar_ssm", &format!("{ga}.V_proj"), r, d, false);
        b.p("ar_ssm", format!("{ga}.T_conv.weight"), &[d, 1, 3]);
        b.linear("ar_ssm", &format!("{ga}.output_proj"), d, r, true);
        b.p("norms", format!("{ha}.layer_norm.weight"), &[d]);
        b.p("norms", format!("{ha}.layer_norm.bias"), &[d]);
        b.linear("bk_layer", &format!("{bk}.v_proj"), 1, d, true);
        b.linear("bk_layer", &format!("{bk}.output_proj"), d, 2, true);
    }
    b.p("final_norm", format!("{CORE}layer_norm_final.weight"), &[d]);
    b.p("final_norm", format!("{CORE}layer_norm_final.bias"), &[d]);
    b.htt(cfg, &format!("{CORE}lm_head.embedding"), Some(&emb));
    b.htt(cfg, "phase7_model.htt_embedding", Some(&emb));
    if cfg.use_bk_hyperbolic {
        b.0.push(TensorSpec {
            name: "bk_hyperbolic.z".into(),
            shape: vec![],
            dtype: StoredDtype::C64,
            param: false,
            alias_of: None,
            component: "bk_hyperbolic",
        });
        for p in ["he_diag_proj", "h0_super_proj", "h0_sub_proj"] {
            b.linear("bk_hyperbolic", &format!("bk_hyperbolic.{p}"), d, d, true);
        }
        b.linear(
            "bk_hyperbolic",
            "bk_hyperbolic.scattering_gate.gate_proj",
            1,
            2,
            true,
        );
    }
    if cfg.use_ar_ssm_fusion {
        let s = cfg.fusion_state();
        let f = "ar_ssm_fusion";
        b.linear(f, "ar_ssm_fusion.rank_gating.rank_predictor.0", 32, 1, true);
        b.linear(f, "ar_ssm_fusion.rank_gating.rank_predictor.2", 1, 32, true);
        b.linear(f, "ar_ssm_fusion.physics_gating.gate_proj", 1, 2, true);
        b.p(f, "ar_ssm_fusion.ssm.A_low".into(), &[s, r]);
        b.p(f, "ar_ssm_fusion.ssm.A_high".into(), &[r, s]);
        b.p(f, "ar_ssm_fusion.ssm.D".into(), &[d]);
        b.linear(f, "ar_ssm_fusion.ssm.B", s, d, true);
        b.linear(f, "ar_ssm_fusion.ssm.C", d, s, true);
    }
    b.0
}

/// Trainable parameter counts per component, in a fixed order, and their total (tied tensors
/// once, buffers excluded), as `sum(p.numel() for p in model.parameters())` counts them.
///
/// ```
/// let small = muse_model::Config::named("small").unwrap();
/// let (_, total) = muse_model::spec::parameter_counts(&small);
/// assert_eq!(total, 10_619_295);
/// ```
pub fn parameter_counts(cfg: &Config) -> (Vec<(&'static str, usize)>, usize) {
    let order = [
        "htt",
        "positions",
        "attention",
        "ar_ssm",
        "bk_layer",
        "norms",
        "final_norm",
        "bk_hyperbolic",
        "ar_ssm_fusion",
    ];
    let specs = state_dict(cfg);
    let rows: Vec<(&'static str, usize)> = order
        .iter()
        .map(|&c| {
            let n = specs
                .iter()
                .filter(|s| s.param && s.component == c)
                .map(TensorSpec::numel)
                .sum();
            (c, n)
        })
        .filter(|&(c, n)| n > 0 || !matches!(c, "bk_hyperbolic" | "ar_ssm_fusion"))
        .collect();
    let total = rows.iter().map(|r| r.1).sum();
    (rows, total)
}
