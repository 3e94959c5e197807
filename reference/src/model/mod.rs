//! The Phase 8 language model core (design model.md §2–3) on the CPU, generic over the float type:
//! HTT embedding + learned positions → L pre-LN ResNet-BK blocks (potential → BK-Core G_ii → gate
//! σ(γ·|Im G|) mixing windowed hyperbolic attention and the AR-SSM → LayerNorm) → final LayerNorm
//! → the tied HTT decoder.
//!
//! The structure is defined once here; [`Numerics`] selects the maths of one profile (`exact`, or
//! the original's benchmark arithmetic). Weight *names* and files are `muse-model`'s business: this
//! module takes the tensors already split per layer ([`ModelWeights`]).
//!
//! ```
//! use muse_reference::model::{ModelDims, ModelWeights, Numerics, forward};
//! let dims = ModelDims { vocab: 50, d_model: 16, layers: 1, heads: 2, htt_rank: 4, n_seq: 8,
//!                        window: 4, ssm_rank: 8, ssm_hidden: 4 };
//! let w = ModelWeights::<f64>::zeros(&dims);
//! let ids = ndarray::Array2::from_elem((1, 8), 3usize);
//! let logits = forward(&dims, &w, &Numerics::exact(), ids.view())?;
//! assert_eq!(logits.dim(), (1, 8, 50));
//! # Ok::<(), muse_reference::Error>(())
//! ```

mod ar_ssm;
mod attention;
mod block;
pub mod grad;
mod layers;
mod quant;
mod side;
pub mod structure;

pub use ar_ssm::{ar_ssm, pseudo_cumsum};
pub use attention::{window_attention, window_attention_with};
pub use block::{bk_gate, block, forward, mix_norm_residual};
pub use layers::{
    bf16_round, htt_decode, htt_embed, htt_factors, htt_table, layer_norm, linear, softplus,
};
pub use quant::{w4a8_linear, KvCodec, Quant, W4a8Proj};
pub use side::{fusion, rank_gating, side_branch, FusionWeights};

use ndarray::{Array1, Array2, Array3};

use crate::Elem;

/// The sizes of one model (the original's Phase8Config, reduced to what shapes the core).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelDims {
    /// V, the vocabulary size.
    pub vocab: usize,
    /// D, the model width.
    pub d_model: usize,
    /// L, the number of blocks.
    pub layers: usize,
    /// H, attention heads (D must be a multiple of H).
    pub heads: usize,
    /// r, the HTT rank.
    pub htt_rank: usize,
    /// The longest sequence (rows of the position table and of the H0 buffers).
    pub n_seq: usize,
    /// W, the local attention window (64 in every shipped config).
    pub window: usize,
    /// R, the AR-SSM rank (32).
    pub ssm_rank: usize,
    /// G, the AR-SSM gate's hidden width: max(D/4, R_min).
    pub ssm_hidden: usize,
}

/// How the local attention scores its windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnPath {
    /// −β·d_c(exp0 q, exp0 k) by the law of cosines, o = softmax·v (no maps): the exact maths.
    Exact,
    /// The original's Triton 'fast' kernel at `1c8b31b` on raw q, k, then logmap0 of the tangent
    /// average with the original's clamps (design §3.6). `tf32` truncates the operands of its two
    /// dot products to TF32 (10-bit mantissa), as `tl.dot` does on fp32 inputs on Ampere and later.
    FastBench {
        /// Emulate the TF32 tensor-core dots.
        tf32: bool,
    },
    /// The original's PyTorch path (`use_triton_kernel=False`): exp0 q, k with ‖·‖ ≥ 1e-5, the ball
    /// form with the denominator ≥ 1e-5 and acosh(max(X, 1 + 1e-5)), −β·d − bias, then
    /// logmap0(expmap0(softmax·v)).
    TorchBall,
    /// [`AttnPath::Exact`] with K and V passed through a KV cache's codec first, per (b, h, token)
    /// row of dh values: the numerics of decoding from that cache (design hyperbolic.md §4).
    /// Evaluation only (no backward).
    ExactKv(KvCodec),
}

/// The AR-SSM's prefix sum over the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The inclusive cumsum (the intended maths).
    Cumsum,
    /// The original's Triton "scan" (design §3.7): x_n + Σ_{2^j < bs, n − 2^j ≥ block start}
    /// x_{n−2^j}, restarting every `bs` positions. Not a cumsum.
    Pseudo {
        /// The autotuned block size (128, 256, 512 or 1024 in the original).
        bs: usize,
    },
}

/// The AR-SSM's depthwise conv (kernel 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conv {
    /// Taps on n−2, n−1, n (left padding 2): causal.
    Causal,
    /// The original's taps on n−1, n, n+1 (padding 1): position n sees n+1.
    Centered,
}

/// The arithmetic of one profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numerics {
    /// The local attention.
    pub attention: AttnPath,
    /// The AR-SSM prefix sum.
    pub scan: Scan,
    /// The AR-SSM conv.
    pub conv: Conv,
    /// Round z to complex64 before BK-Core and G to complex64 after it, and clamp the BK-Core
    /// inputs (he to ±100, the off-diagonals to ±10), as the original does.
    pub complex64: bool,
    /// Inference quantisation of the local attention (W4A8 projections, INT8 logits), with the
    /// exact attention paths only; [`Quant::NONE`] in every profile. Evaluation only (no backward).
    pub quant: Quant,
}

impl Numerics {
    /// Profile `exact`: the design's maths.
    pub fn exact() -> Self {
        Self {
            attention: AttnPath::Exact,
            scan: Scan::Cumsum,
            conv: Conv::Causal,
            complex64: false,
            quant: Quant::NONE,
        }
    }

    /// Profile `bench`: the original's CUDA benchmark path at `1c8b31b` ('fast' kernel with TF32
    /// dots, the pseudo-cumsum with block 128, the centred conv, complex64 G).
    pub fn bench() -> Self {
        Self {
            attention: AttnPath::FastBench { tf32: true },
            scan: Scan::Pseudo { bs: 128 },
            conv: Conv::Centered,
            complex64: true,
            quant: Quant::NONE,
        }
    }

    /// Profile `bench-cpu`: the original's PyTorch path at the same commit (ball-form attention,
    /// a true cumsum, the centred conv).
    pub fn bench_cpu() -> Self {
        Self {
            attention: AttnPath::TorchBall,
            scan: Scan::Cumsum,
            ..Self::bench()
        }
    }
}

/// y = x·Wᵀ + b with W stored (out, in), as `nn.Linear`.
#[derive(Debug, Clone)]
pub struct Linear<F> {
    /// (out, in).
    pub w: Array2<F>,
    /// (out), if the layer has a bias.
    pub b: Option<Array1<F>>,
    /// Round x and W to bf16 before the product (sums and the bias stay in `F`): the numerics of
    /// a bf16 GEMM with fp32 accumulation.
    pub bf16: bool,
}

/// LayerNorm's affine parameters (eps 1e-5).
#[derive(Debug, Clone)]
pub struct Norm<F> {
    /// γ, (D).
    pub weight: Array1<F>,
    /// β, (D).
    pub bias: Array1<F>,
}

/// The HTT cores shared by the embedding and the decoder (design §3.1).
#[derive(Debug, Clone)]
pub struct Htt<F> {
    /// (v1, r, d1): `core1` without its unit axis.
    pub core1: Array3<F>,
    /// (v2, r, d2): `core2` without its unit axis.
    pub core2: Array3<F>,
    /// θ, (r).
    pub phase: Array1<F>,
    /// A bf16 decoder GEMM (the table and the hidden states rounded; see [`Linear::bf16`]).
    pub bf16: bool,
}

/// One block's AR-SSM (design §3.7).
#[derive(Debug, Clone)]
pub struct ArSsm<F> {
    /// complexity_gate.0: Linear(D, G).
    pub gate1: Linear<F>,
    /// complexity_gate.2: Linear(G, R).
    pub gate2: Linear<F>,
    /// U_proj: Linear(D, R), no bias.
    pub u: Linear<F>,
    /// V_proj: Linear(D, R), no bias.
    pub v: Linear<F>,
    /// T_conv taps, (D, 3).
    pub conv: Array2<F>,
    /// output_proj: Linear(R, D).
    pub out: Linear<F>,
}

/// One block's local attention (design §3.6).
#[derive(Debug, Clone)]
pub struct LocalAttn<F> {
    /// W_q, W_k, W_v, W_o: (D, D), no bias.
    pub wq: Array2<F>,
    /// W_k.
    pub wk: Array2<F>,
    /// W_v.
    pub wv: Array2<F>,
    /// W_o.
    pub wo: Array2<F>,
    /// c = softplus(log_c).
    pub log_c: F,
    /// β = softplus(beta).
    pub beta: F,
    /// Subtracted from every score (used by the PyTorch path only).
    pub bias: F,
    /// bf16 GEMMs for the four projections (see [`Linear::bf16`]).
    pub bf16: bool,
}

/// One ResNet-BK block.
#[derive(Debug, Clone)]
pub struct BlockWeights<F> {
    /// The pre-LN.
    pub norm: Norm<F>,
    /// v_proj: Linear(D, 1), the potential.
    pub v_proj: Linear<F>,
    /// ε_param: Im z = softplus(ε) + 1e-6 + γ.
    pub epsilon: F,
    /// γ.
    pub gamma: F,
    /// H0 diagonal, super- and sub-diagonal (n_seq, n_seq − 1, n_seq − 1), as stored.
    pub h0: [Array1<f64>; 3],
    /// The gate sensitivity γ_gate.
    pub gate_sensitivity: F,
    /// The windowed hyperbolic attention.
    pub attn: LocalAttn<F>,
    /// The AR-SSM.
    pub ssm: ArSsm<F>,
    /// The hybrid attention's LayerNorm.
    pub out_norm: Norm<F>,
}

/// Everything the core's logits depend on.
#[derive(Debug, Clone)]
pub struct ModelWeights<F> {
    /// The HTT cores (embedding and tied decoder).
    pub htt: Htt<F>,
    /// Learned positions, (n_seq, D).
    pub pos: Array2<F>,
    /// The blocks.
    pub blocks: Vec<BlockWeights<F>>,
    /// The final LayerNorm.
    pub final_norm: Norm<F>,
}

impl<F: Elem> Linear<F> {
    /// A zero (out, in) Linear, with a zero bias when `bias`.
    pub fn zeros(out: usize, inp: usize, bias: bool) -> Self {
        Self {
            w: Array2::zeros((out, inp)),
            b: bias.then(|| Array1::zeros(out)),
            bf16: false,
        }
    }
}

impl<F: Elem> Norm<F> {
    /// γ = 1, β = 0 over `d` features.
    pub fn unit(d: usize) -> Self {
        Self {
            weight: Array1::ones(d),
            bias: Array1::zeros(d),
        }
    }
}

impl<F: Elem> ModelWeights<F> {
    /// The same weights with every GEMM in bf16 (inputs rounded, fp32 sums): the projections,
    /// the potential, the AR-SSM's linears and the decoder. LayerNorm, BK-Core, the attention's
    /// geometry and the scans stay in `F`.
    pub fn with_bf16_gemms(mut self) -> Self {
        self.htt.bf16 = true;
        for b in &mut self.blocks {
            b.v_proj.bf16 = true;
            b.attn.bf16 = true;
            for l in [
                &mut b.ssm.gate1,
                &mut b.ssm.gate2,
                &mut b.ssm.u,
                &mut b.ssm.v,
                &mut b.ssm.out,
            ] {
                l.bf16 = true;
            }
        }
        self
    }

    /// All-zero weights with unit LayerNorm gains and the Laplacian H0 (for shape tests).
    pub fn zeros(d: &ModelDims) -> Self {
        let (v1, v2, d1, d2) = htt_factors(d.vocab, d.d_model);
        let lin = |o, i, bias: bool| Linear {
            w: Array2::zeros((o, i)),
            b: bias.then(|| Array1::zeros(o)),
            bf16: false,
        };
        let norm = || Norm {
            weight: Array1::ones(d.d_model),
            bias: Array1::zeros(d.d_model),
        };
        let dm = d.d_model;
        let block = || BlockWeights {
            norm: norm(),
            v_proj: lin(1, dm, true),
            epsilon: F::one(),
            gamma: F::zero(),
            h0: [
                Array1::from_elem(d.n_seq, -2.0),
                Array1::ones(d.n_seq - 1),
                Array1::ones(d.n_seq - 1),
            ],
            gate_sensitivity: F::one(),
            attn: LocalAttn {
                wq: Array2::zeros((dm, dm)),
                wk: Array2::zeros((dm, dm)),
                wv: Array2::zeros((dm, dm)),
                wo: Array2::zeros((dm, dm)),
                log_c: F::zero(),
                beta: F::zero(),
                bias: F::zero(),
                bf16: false,
            },
            ssm: ArSsm {
                gate1: lin(d.ssm_hidden, dm, true),
                gate2: lin(d.ssm_rank, d.ssm_hidden, true),
                u: lin(d.ssm_rank, dm, false),
                v: lin(d.ssm_rank, dm, false),
                conv: Array2::zeros((dm, 3)),
                out: lin(dm, d.ssm_rank, true),
            },
            out_norm: norm(),
        };
        Self {
            htt: Htt {
                core1: Array3::zeros((v1, d.htt_rank, d1)),
                core2: Array3::zeros((v2, d.htt_rank, d2)),
                phase: Array1::zeros(d.htt_rank),
                bf16: false,
            },
            pos: Array2::zeros((d.n_seq, dm)),
            blocks: (0..d.layers).map(|_| block()).collect(),
            final_norm: norm(),
        }
    }
}
