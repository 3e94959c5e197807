//! The two models of the original's VRAM study (design model.md §4 and §6.3), as tensor lists
//! with exact parameter counts: the memory-optimised model (HTT embedding, L pre-LN blocks of
//! AR-SSM + low-rank FFN, final LN, an untied low-rank head) and the baseline transformer it is
//! compared with (embedding, L post-LN `nn.TransformerEncoderLayer`s, a Linear head; no
//! positions, no mask). The names follow the modules' PyTorch attribute names; the original's
//! exact prefixes of these two models are not in original-state-dict.json.

use crate::spec::{StoredDtype, TensorSpec};
use muse_reference::model::htt_factors;

/// The VRAM study's shapes: V 10000, D 512, L 6 (HTT rank 16, AR-SSM rank 32, FFN rank
/// max(D/16, 64), head rank max(D/8, 128), 8 heads, FFN 2048).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VramDims {
    /// V.
    pub vocab: usize,
    /// D.
    pub d_model: usize,
    /// L.
    pub layers: usize,
    /// The HTT rank r.
    pub htt_rank: usize,
    /// The AR-SSM rank R (its gate width G is max(D/4, 4)).
    pub ssm_rank: usize,
    /// The low-rank FFN's width f.
    pub ffn_rank: usize,
    /// The low-rank head's width o.
    pub head_rank: usize,
    /// The baseline's attention heads.
    pub heads: usize,
    /// The baseline's FFN width.
    pub ffn: usize,
}

impl VramDims {
    /// The study's configuration "V = 10K, D = 512, L = 6" (the VRAM tree's o = 128).
    pub const STUDY: Self = Self {
        vocab: 10_000,
        d_model: 512,
        layers: 6,
        htt_rank: 16,
        ssm_rank: 32,
        ffn_rank: 64,
        head_rank: 128,
        heads: 8,
        ffn: 2048,
    };
}

fn t(name: String, shape: &[usize], component: &'static str) -> TensorSpec {
    TensorSpec {
        name,
        shape: shape.to_vec(),
        dtype: StoredDtype::F32,
        param: true,
        alias_of: None,
        component,
    }
}

fn linear(out: &mut Vec<TensorSpec>, name: &str, o: usize, i: usize, bias: bool, c: &'static str) {
    out.push(t(format!("{name}.weight"), &[o, i], c));
    if bias {
        out.push(t(format!("{name}.bias"), &[o], c));
    }
}

fn norm(out: &mut Vec<TensorSpec>, name: &str, d: usize, c: &'static str) {
    out.push(t(format!("{name}.weight"), &[d], c));
    out.push(t(format!("{name}.bias"), &[d], c));
}

/// The memory-optimised model's parameters (design §4).
///
/// ```
/// use muse_model::vram::{memory_optimized, total, VramDims};
/// assert_eq!(total(&memory_optimized(&VramDims::STUDY)), 4_150_752);
/// ```
pub fn memory_optimized(d: &VramDims) -> Vec<TensorSpec> {
    let (v1, v2, d1, d2) = htt_factors(d.vocab, d.d_model);
    let (dm, r, f) = (d.d_model, d.ssm_rank, d.ffn_rank);
    let g = (dm / 4).max(4);
    let mut out = vec![
        t("embedding.core1".into(), &[v1, 1, d.htt_rank, d1], "htt"),
        t("embedding.core2".into(), &[v2, d.htt_rank, 1, d2], "htt"),
        t("embedding.phase_shift".into(), &[d.htt_rank], "htt"),
    ];
    for i in 0..d.layers {
        let b = format!("blocks.{i}");
        norm(&mut out, &format!("{b}.ln1"), dm, "norms");
        let s = format!("{b}.ar_ssm");
        linear(
            &mut out,
            &format!("{s}.complexity_gate.0"),
            g,
            dm,
            true,
            "ar_ssm",
        );
        linear(
            &mut out,
            &format!("{s}.complexity_gate.2"),
            r,
            g,
            true,
            "ar_ssm",
        );
        linear(&mut out, &format!("{s}.U_proj"), r, dm, false, "ar_ssm");
        linear(&mut out, &format!("{s}.V_proj"), r, dm, false, "ar_ssm");
        out.push(t(format!("{s}.T_conv.weight"), &[dm, 1, 3], "ar_ssm"));
        linear(&mut out, &format!("{s}.output_proj"), dm, r, true, "ar_ssm");
        norm(&mut out, &format!("{b}.ln2"), dm, "norms");
        let n = format!("{b}.ffn.net");
        linear(&mut out, &format!("{n}.0"), f, dm, true, "ffn");
        linear(&mut out, &format!("{n}.3"), 4 * dm, f, true, "ffn");
        linear(&mut out, &format!("{n}.6"), f, 4 * dm, true, "ffn");
        linear(&mut out, &format!("{n}.9"), dm, f, true, "ffn");
    }
    norm(&mut out, "final_norm", dm, "final_norm");
    linear(&mut out, "output_down", d.head_rank, dm, true, "head");
    linear(&mut out, "output_up", d.vocab, d.head_rank, true, "head");
    out
}

/// The baseline transformer's parameters (design §6.3).
///
/// ```
/// use muse_model::vram::{baseline_transformer, total, VramDims};
/// assert_eq!(total(&baseline_transformer(&VramDims::STUDY)), 29_164_304);
/// ```
pub fn baseline_transformer(d: &VramDims) -> Vec<TensorSpec> {
    let dm = d.d_model;
    let mut out = vec![t("embedding.weight".into(), &[d.vocab, dm], "embedding")];
    for i in 0..d.layers {
        let l = format!("transformer.layers.{i}");
        out.push(t(
            format!("{l}.self_attn.in_proj_weight"),
            &[3 * dm, dm],
            "layers",
        ));
        out.push(t(
            format!("{l}.self_attn.in_proj_bias"),
            &[3 * dm],
            "layers",
        ));
        linear(
            &mut out,
            &format!("{l}.self_attn.out_proj"),
            dm,
            dm,
            true,
            "layers",
        );
        linear(&mut out, &format!("{l}.linear1"), d.ffn, dm, true, "layers");
        linear(&mut out, &format!("{l}.linear2"), dm, d.ffn, true, "layers");
        norm(&mut out, &format!("{l}.norm1"), dm, "layers");
        norm(&mut out, &format!("{l}.norm2"), dm, "layers");
    }
    linear(&mut out, "output", d.vocab, dm, true, "head");
    out
}

/// The number of parameters in `specs`.
pub fn total(specs: &[TensorSpec]) -> usize {
    specs
        .iter()
        .filter(|s| s.param)
        .map(TensorSpec::numel)
        .sum()
}

/// The parameters of one component.
pub fn component(specs: &[TensorSpec], c: &str) -> usize {
    specs
        .iter()
        .filter(|s| s.param && s.component == c)
        .map(TensorSpec::numel)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_optimised_model_counts_as_the_design_table() {
        let s = memory_optimized(&VramDims::STUDY);
        assert_eq!(component(&s, "htt"), 73_616);
        assert_eq!(component(&s, "ar_ssm"), 6 * 120_992);
        assert_eq!(component(&s, "ffn"), 6 * 330_368);
        assert_eq!(component(&s, "norms"), 6 * 2_048);
        assert_eq!(component(&s, "final_norm"), 1_024);
        assert_eq!(component(&s, "head"), 1_355_664);
        assert_eq!(total(&s), 4_150_752);
        // The HEAD tree's head width o = max(D/32, 32) = 32: 3,141,504 in all.
        assert_eq!(
            total(&memory_optimized(&VramDims {
                head_rank: 32,
                ..VramDims::STUDY
            })),
            3_141_504
        );
    }

    #[test]
    fn the_baseline_transformer_counts_as_the_design_table() {
        let s = baseline_transformer(&VramDims::STUDY);
        assert_eq!(component(&s, "embedding"), 5_120_000);
        assert_eq!(component(&s, "layers"), 18_914_304);
        assert_eq!(component(&s, "head"), 5_130_000);
        assert_eq!(total(&s), 29_164_304);
    }
}
