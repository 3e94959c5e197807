//! Model configurations: the named ones of design model.md §5 and any other shape, given as a JSON
//! file with the original's Phase8Config keys.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use muse_reference::model::ModelDims;

/// A model configuration (the original's Phase8Config, restricted to what shapes the model).
///
/// ```
/// use muse_model::Config;
/// let small = Config::named("small").unwrap();
/// assert_eq!((small.vocab_size, small.d_model, small.n_layers, small.n_seq), (50257, 512, 8, 256));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// V.
    pub vocab_size: usize,
    /// D.
    pub d_model: usize,
    /// L.
    pub n_layers: usize,
    /// H (D must be a multiple of H).
    pub num_heads: usize,
    /// The HTT rank r.
    pub htt_rank: usize,
    /// The longest sequence: rows of the position table and of the H0 buffers.
    pub n_seq: usize,
    /// The local attention window W (64).
    pub hyperbolic_window_size: usize,
    /// The AR-SSM rank R (32).
    pub ar_ssm_max_rank: usize,
    /// R_min (4): the AR-SSM gate's hidden width is max(D/4, R_min).
    pub ar_ssm_min_rank: usize,
    /// Build the Phase 8 BK-hyperbolic side module (parameters only; never runs).
    pub use_bk_hyperbolic: bool,
    /// Build the Phase 8 AR-SSM fusion side module (its output never reaches the logits).
    pub use_ar_ssm_fusion: bool,
}

/// The JSON form: the original's Phase8Config keys. Keys that change nothing muse computes are
/// accepted and ignored; keys that would change the logits in a way muse does not implement must
/// be false; anything else is an error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // the ignored keys are parsed (so they are known) but never read
struct ConfigFile {
    vocab_size: Option<usize>,
    d_model: Option<usize>,
    n_layers: Option<usize>,
    num_heads: Option<usize>,
    htt_rank: Option<usize>,
    n_seq: Option<usize>,
    hyperbolic_window_size: Option<usize>,
    ar_ssm_max_rank: Option<usize>,
    ar_ssm_min_rank: Option<usize>,
    use_bk_hyperbolic: Option<bool>,
    use_ar_ssm_fusion: Option<bool>,
    // Accepted and ignored: they select the original's kernels or training knobs, which muse's
    // profiles replace (design §2.3).
    use_triton_kernel: Option<bool>,
    triton_kernel_version: Option<String>,
    use_gradient_checkpointing: Option<bool>,
    use_mixed_precision: Option<bool>,
    use_hybrid_attention: Option<bool>,
    enable_entailment_cones: Option<bool>,
    enable_persistent_homology: Option<bool>,
    enable_sheaf_attention: Option<bool>,
    low_rank_ffn: Option<bool>,
    low_rank_embedding: Option<bool>,
    // Must be false (muse does not implement these variants).
    quantized_htt: Option<bool>,
    adaptive_rank_quantization: Option<bool>,
    use_resonant_htt: Option<bool>,
    low_rank_attention: Option<bool>,
    use_bitnet: Option<bool>,
    use_symplectic: Option<bool>,
    use_birman_schwinger: Option<bool>,
}

impl Config {
    /// The names [`Config::named`] knows.
    pub const NAMES: [&'static str; 4] = ["tiny", "small", "medium", "large"];

    fn base(vocab: usize, d: usize, l: usize, h: usize, r: usize, n_seq: usize) -> Self {
        Self {
            vocab_size: vocab,
            d_model: d,
            n_layers: l,
            num_heads: h,
            htt_rank: r,
            n_seq,
            hyperbolic_window_size: 64,
            ar_ssm_max_rank: 32,
            ar_ssm_min_rank: 4,
            use_bk_hyperbolic: true,
            use_ar_ssm_fusion: true,
        }
    }

    /// `tiny` (the parity fixture's shape: V 1000, D 64, L 2, H 2, r 8, n_seq 128), `small`,
    /// `medium` and `large` (design §5; large at n_seq 512).
    pub fn named(name: &str) -> Option<Self> {
        Some(match name {
            "tiny" => Self::base(1000, 64, 2, 2, 8, 128),
            "small" => Self::base(50257, 512, 8, 8, 16, 256),
            "medium" => Self::base(50257, 1024, 16, 16, 32, 512),
            "large" => Self::base(50257, 2048, 24, 16, 64, 512),
            _ => return None,
        })
    }

    /// A name, or a path to a JSON file of Phase8Config keys (missing keys take the original's
    /// defaults: window 64, ranks 32/4, heads 8, htt_rank 16, side modules on; vocab_size,
    /// d_model, n_layers and n_seq are required).
    pub fn resolve(spec: &str) -> Result<Self> {
        if let Some(c) = Self::named(spec) {
            return Ok(c);
        }
        let path = Path::new(spec);
        if !path.exists() {
            bail!(
                "`--config {spec}`: not a config name ({}) and no such file",
                Self::NAMES.join(", ")
            );
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("`--config`: cannot read {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("`--config {}`", path.display()))
    }

    /// Parses the JSON form (see [`Config::resolve`]).
    pub fn from_json(text: &str) -> Result<Self> {
        let f: ConfigFile = serde_json::from_str(text).context("not a valid Phase8Config JSON")?;
        for (key, v) in [
            ("quantized_htt", f.quantized_htt),
            ("adaptive_rank_quantization", f.adaptive_rank_quantization),
            ("use_resonant_htt", f.use_resonant_htt),
            ("low_rank_attention", f.low_rank_attention),
            ("use_bitnet", f.use_bitnet),
            ("use_symplectic", f.use_symplectic),
            ("use_birman_schwinger", f.use_birman_schwinger),
        ] {
            if v == Some(true) {
                bail!("`{key}`: true is not supported (muse builds the benchmark configuration, where it is false)");
            }
        }
        if f.use_hybrid_attention == Some(false) {
            bail!(
                "`use_hybrid_attention`: false is not supported (the Phase 7/8 model forces it on)"
            );
        }
        let need = |key: &str, v: Option<usize>| v.with_context(|| format!("missing key `{key}`"));
        let mut c = Self::base(
            need("vocab_size", f.vocab_size)?,
            need("d_model", f.d_model)?,
            need("n_layers", f.n_layers)?,
            f.num_heads.unwrap_or(8),
            f.htt_rank.unwrap_or(16),
            need("n_seq", f.n_seq)?,
        );
        c.hyperbolic_window_size = f.hyperbolic_window_size.unwrap_or(64);
        c.ar_ssm_max_rank = f.ar_ssm_max_rank.unwrap_or(32);
        c.ar_ssm_min_rank = f.ar_ssm_min_rank.unwrap_or(4);
        c.use_bk_hyperbolic = f.use_bk_hyperbolic.unwrap_or(true);
        c.use_ar_ssm_fusion = f.use_ar_ssm_fusion.unwrap_or(true);
        c.validate()?;
        Ok(c)
    }

    /// Checks every size is usable.
    pub fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("n_layers", self.n_layers),
            ("num_heads", self.num_heads),
            ("htt_rank", self.htt_rank),
            ("hyperbolic_window_size", self.hyperbolic_window_size),
            ("ar_ssm_max_rank", self.ar_ssm_max_rank),
            ("ar_ssm_min_rank", self.ar_ssm_min_rank),
        ] {
            if v == 0 {
                bail!("`{key}` must be at least 1");
            }
        }
        if self.n_seq < 2 {
            bail!("`n_seq` must be at least 2, got {}", self.n_seq);
        }
        if self.d_model % self.num_heads != 0 {
            bail!(
                "`d_model` = {} must be a multiple of `num_heads` = {}",
                self.d_model,
                self.num_heads
            );
        }
        if self.ar_ssm_min_rank > self.ar_ssm_max_rank {
            bail!("`ar_ssm_min_rank` must not exceed `ar_ssm_max_rank`");
        }
        Ok(())
    }

    /// G = max(D/4, R_min), the AR-SSM gate's hidden width.
    pub fn ssm_hidden(&self) -> usize {
        (self.d_model / 4).max(self.ar_ssm_min_rank)
    }

    /// S = D/4, the fusion's state size.
    pub fn fusion_state(&self) -> usize {
        self.d_model / 4
    }

    /// The sizes the reference layers take.
    pub fn dims(&self) -> ModelDims {
        ModelDims {
            vocab: self.vocab_size,
            d_model: self.d_model,
            layers: self.n_layers,
            heads: self.num_heads,
            htt_rank: self.htt_rank,
            n_seq: self.n_seq,
            window: self.hyperbolic_window_size,
            ssm_rank: self.ar_ssm_max_rank,
            ssm_hidden: self.ssm_hidden(),
        }
    }

    /// The JSON form (the original's keys), e.g. for safetensors metadata.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "vocab_size": self.vocab_size, "d_model": self.d_model, "n_layers": self.n_layers,
            "num_heads": self.num_heads, "htt_rank": self.htt_rank, "n_seq": self.n_seq,
            "hyperbolic_window_size": self.hyperbolic_window_size,
            "ar_ssm_max_rank": self.ar_ssm_max_rank, "ar_ssm_min_rank": self.ar_ssm_min_rank,
            "use_bk_hyperbolic": self.use_bk_hyperbolic, "use_ar_ssm_fusion": self.use_ar_ssm_fusion,
        })
        .to_string()
    }
}
