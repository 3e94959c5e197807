//! The model's weights on the device: every tensor uploaded once (bf16 copies of the GEMM weights
//! in bf16 mode) and the decoder table built on the GPU.

use std::sync::Mutex;

use muse_reference::model::{htt_factors, softplus, AttnPath, ModelDims, ModelWeights, Numerics};
use muse_reference::{Error, Result};

use super::{CudaModel, OP};
use crate::device::{Buf, Gpu};
use crate::gemm::GemmMath;
use crate::model::{self as kern, HttShape};
use crate::model_attn::{AttnScalars, MAX_HEAD_DIM};

pub(crate) struct Lin {
    pub(crate) w: Buf<f32>,
    pub(crate) b: Option<Buf<f32>>,
}

/// bf16 copies of one block's GEMM weights (bf16 mode only).
pub(crate) struct BlockBf16 {
    pub(crate) v_w: Buf<u16>,
    pub(crate) wqkv: Buf<u16>,
    pub(crate) wo: Buf<u16>,
    pub(crate) g1: Buf<u16>,
    pub(crate) g2: Buf<u16>,
    pub(crate) uv: Buf<u16>,
    pub(crate) out: Buf<u16>,
}

/// A block's trainable scalars as the weights hold them (before softplus): what the device
/// launches derive their arguments from, and what the optimiser steps (`model/train.rs`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RawScalars {
    pub(crate) v_b: f32,
    pub(crate) epsilon: f32,
    pub(crate) gamma: f32,
    pub(crate) gs: f32,
    pub(crate) log_c: f32,
    pub(crate) beta: f32,
    pub(crate) bias: f32,
}

impl RawScalars {
    /// The scalars in the order of `for_each_param` (v_proj.bias, ε, γ, γ_gate, log c, β, bias).
    pub(crate) fn to_array(self) -> [f32; 7] {
        [
            self.v_b,
            self.epsilon,
            self.gamma,
            self.gs,
            self.log_c,
            self.beta,
            self.bias,
        ]
    }
    /// The inverse of [`RawScalars::to_array`].
    pub(crate) fn from_array(a: [f32; 7]) -> Self {
        let [v_b, epsilon, gamma, gs, log_c, beta, bias] = a;
        Self {
            v_b,
            epsilon,
            gamma,
            gs,
            log_c,
            beta,
            bias,
        }
    }
}

impl BlockDev {
    /// Sets the raw scalars and every launch argument derived from them.
    pub(crate) fn set_raw(&mut self, raw: RawScalars) {
        self.raw = raw;
        self.v_b = raw.v_b;
        self.z_im = f64::from(softplus(raw.epsilon) + 1e-6f32 + raw.gamma);
        self.gs = raw.gs;
        self.attn.c = softplus(raw.log_c);
        self.attn.beta = softplus(raw.beta);
        self.attn.bias = raw.bias;
    }
}

pub(crate) struct BlockDev {
    pub(crate) raw: RawScalars,
    pub(crate) h16: Option<BlockBf16>,
    pub(crate) norm: (Buf<f32>, Buf<f32>),
    pub(crate) v_w: Buf<f32>,
    pub(crate) v_b: f32,
    pub(crate) h0: [Buf<f64>; 3],
    pub(crate) z_im: f64,
    pub(crate) gs: f32,
    pub(crate) wqkv: Buf<f32>,
    pub(crate) wo: Buf<f32>,
    pub(crate) attn: AttnScalars,
    pub(crate) g1: Lin,
    pub(crate) g2: Lin,
    pub(crate) uv: Buf<f32>,
    pub(crate) taps: Buf<f32>,
    pub(crate) out: Lin,
    pub(crate) out_norm: (Buf<f32>, Buf<f32>),
}

fn up(gpu: &'static Gpu, a: impl IntoIterator<Item = f32>) -> Result<Buf<f32>> {
    gpu.upload(&a.into_iter().collect::<Vec<_>>())
}

/// The bf16 bits (round to nearest even) of `a`, uploaded.
fn up16(gpu: &'static Gpu, a: impl IntoIterator<Item = f32>) -> Result<Buf<u16>> {
    gpu.upload(
        &a.into_iter()
            .map(|v| half::bf16::from_f32(v).to_bits())
            .collect::<Vec<_>>(),
    )
}

fn form_of(path: AttnPath) -> Result<i32> {
    Ok(match path {
        AttnPath::Exact => 0,
        AttnPath::FastBench { tf32: false } => 1,
        AttnPath::FastBench { tf32: true } => 2,
        AttnPath::TorchBall => 3,
        AttnPath::ExactKv(codec) => {
            return Err(muse_reference::Error::Unsupported {
                op: "model",
                backend: "cuda",
                what: format!(
                    "the {} KV-cache codec in the model (the CPU reference has it)",
                    codec.name()
                ),
            })
        }
    })
}

impl CudaModel {
    /// Uploads `w` and builds the decoder table. `math` picks fp32 or TF32 GEMMs. The weights
    /// are driver allocations; the workspaces of the forward come from the GPU's pool unless
    /// [`CudaModel::set_pooled`] turns that off.
    pub fn new(
        gpu: &'static Gpu,
        dims: ModelDims,
        w: &ModelWeights<f32>,
        num: Numerics,
        math: GemmMath,
    ) -> Result<Self> {
        if !num.quant.is_none() {
            return Err(Error::Unsupported {
                op: OP,
                backend: "cuda",
                what: format!(
                    "the {} quantisation in the model (the CPU reference has it: `muse eval --quant`)",
                    num.quant.name()
                ),
            });
        }
        // bf16 GEMMs when the weights say so (ModelWeights::with_bf16_gemms), all or none.
        let bf16 = w.htt.bf16;
        if w.blocks
            .iter()
            .any(|b| b.attn.bf16 != bf16 || b.v_proj.bf16 != bf16 || b.ssm.out.bf16 != bf16)
        {
            return Err(Error::Unsupported {
                op: OP,
                backend: "cuda",
                what: "bf16 GEMMs for some layers only (all or none)".into(),
            });
        }
        let dh = dims.d_model / dims.heads;
        if dh > MAX_HEAD_DIM || dims.window > 1024 {
            return Err(Error::Unsupported {
                op: OP,
                backend: "cuda",
                what: format!(
                    "head width {dh} (at most {MAX_HEAD_DIM}) or window {} (at most 1024)",
                    dims.window
                ),
            });
        }
        let (v1, v2, d1, d2) = htt_factors(dims.vocab, dims.d_model);
        let shape = HttShape {
            r: dims.htt_rank as i32,
            d1: d1 as i32,
            d2: d2 as i32,
            v1: v1 as i32,
            v2: v2 as i32,
        };
        let lin = |l: &muse_reference::model::Linear<f32>| -> Result<Lin> {
            Ok(Lin {
                w: up(gpu, l.w.iter().copied())?,
                b: l.b
                    .as_ref()
                    .map(|b| up(gpu, b.iter().copied()))
                    .transpose()?,
            })
        };
        let norm = |n: &muse_reference::model::Norm<f32>| -> Result<(Buf<f32>, Buf<f32>)> {
            Ok((
                up(gpu, n.weight.iter().copied())?,
                up(gpu, n.bias.iter().copied())?,
            ))
        };
        let mut blocks = Vec::with_capacity(w.blocks.len());
        for b in &w.blocks {
            let im = softplus(b.epsilon) + 1e-6f32 + b.gamma;
            let z_im = f64::from(im);
            let a = &b.attn;
            let h16 = if bf16 {
                Some(BlockBf16 {
                    v_w: up16(gpu, b.v_proj.w.iter().copied())?,
                    wqkv: up16(
                        gpu,
                        a.wq.iter().chain(a.wk.iter()).chain(a.wv.iter()).copied(),
                    )?,
                    wo: up16(gpu, a.wo.iter().copied())?,
                    g1: up16(gpu, b.ssm.gate1.w.iter().copied())?,
                    g2: up16(gpu, b.ssm.gate2.w.iter().copied())?,
                    uv: up16(gpu, b.ssm.u.w.iter().chain(b.ssm.v.w.iter()).copied())?,
                    out: up16(gpu, b.ssm.out.w.iter().copied())?,
                })
            } else {
                None
            };
            blocks.push(BlockDev {
                raw: RawScalars {
                    v_b: b.v_proj.b.as_ref().map_or(0.0, |v| v[0]),
                    epsilon: b.epsilon,
                    gamma: b.gamma,
                    gs: b.gate_sensitivity,
                    log_c: a.log_c,
                    beta: a.beta,
                    bias: a.bias,
                },
                h16,
                norm: norm(&b.norm)?,
                v_w: up(gpu, b.v_proj.w.iter().copied())?,
                v_b: b.v_proj.b.as_ref().map_or(0.0, |v| v[0]),
                h0: [
                    gpu.upload(b.h0[0].as_slice().expect("contiguous"))?,
                    gpu.upload(b.h0[1].as_slice().expect("contiguous"))?,
                    gpu.upload(b.h0[2].as_slice().expect("contiguous"))?,
                ],
                z_im,
                gs: b.gate_sensitivity,
                wqkv: up(
                    gpu,
                    a.wq.iter().chain(a.wk.iter()).chain(a.wv.iter()).copied(),
                )?,
                wo: up(gpu, a.wo.iter().copied())?,
                attn: AttnScalars {
                    c: softplus(a.log_c),
                    beta: softplus(a.beta),
                    bias: a.bias,
                    form: form_of(num.attention)?,
                },
                g1: lin(&b.ssm.gate1)?,
                g2: lin(&b.ssm.gate2)?,
                uv: up(gpu, b.ssm.u.w.iter().chain(b.ssm.v.w.iter()).copied())?,
                taps: up(gpu, b.ssm.conv.iter().copied())?,
                out: lin(&b.ssm.out)?,
                out_norm: norm(&b.out_norm)?,
            });
        }
        let vpad = dims.vocab.next_multiple_of(64);
        let core1 = up(gpu, w.htt.core1.iter().copied())?;
        let core2 = up(gpu, w.htt.core2.iter().copied())?;
        let cos = up(gpu, w.htt.phase.iter().map(|t| t.cos()))?;
        let table = gpu.alloc::<f32>(vpad * dims.d_model)?;
        kern::htt_table(
            gpu,
            (&core1, &core2, &cos),
            &table,
            (dims.vocab, vpad, dims.d_model),
            shape,
        )?;
        let table16 = if bf16 {
            let t = gpu.alloc::<u16>(vpad * dims.d_model)?;
            kern::to_bf16(gpu, table.view(), t.view(), vpad * dims.d_model)?;
            Some(t)
        } else {
            None
        };
        Ok(Self {
            gpu,
            dims,
            num,
            math,
            shape,
            core1,
            core2,
            cos,
            table,
            table16,
            vpad,
            pos: up(gpu, w.pos.iter().copied())?,
            blocks,
            final_norm: norm(&w.final_norm)?,
            ws: Mutex::new(None),
            train: false,
            half: crate::gemm::HalfFormat::Bf16,
            loss_scale: 1.0,
            pooled: true,
        })
    }
}
