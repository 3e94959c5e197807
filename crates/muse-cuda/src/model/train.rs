//! Training on the device (issue 9): [`CudaTrainer`] holds the model's weights (the f32 masters,
//! in the forward's own buffers), one flat gradient buffer and AdamW's moments in the order of
//! `muse_reference::model::grad::for_each_param` (the CPU trainer's and the checkpoints' order),
//! and a pointer table from that flat order to the weights. A step is: forward keeping each
//! block's input, fused cross-entropy, the exact backward (`backward.rs`), the global norm, AdamW
//! with the clip fused in, then one small copy to the host of the loss and the scalar parameters
//! (the launches take them by value).
//!
//! ```no_run
//! use muse_cuda::{model::train::CudaTrainer, train::AdamStep, Gpu, gemm::GemmMath};
//! use muse_reference::model::{ModelDims, ModelWeights};
//! let d = ModelDims { vocab: 50, d_model: 16, layers: 2, heads: 2, htt_rank: 4, n_seq: 8,
//!                     window: 4, ssm_rank: 8, ssm_hidden: 4 };
//! let w = ModelWeights::<f32>::zeros(&d);
//! let mut t = CudaTrainer::new(Gpu::get()?, d, &w, GemmMath::Fp32)?;
//! let ids = ndarray::Array2::from_elem((1, 8), 3usize);
//! let loss = t.loss_and_grad(ids.view(), ids.view())?;
//! assert!((loss - 50f32.ln()).abs() < 1e-5); // zero weights: uniform logits
//! # Ok::<(), muse_reference::Error>(())
//! ```

use muse_reference::model::{ModelDims, ModelWeights, Numerics};
use muse_reference::{Error, Result};
use ndarray::ArrayView2;

use super::backward::{self, TrainWs};
use super::forward::{CudaModel, RawScalars};
use crate::device::{Buf, Gpu};
use crate::gemm::GemmMath;
use crate::model as kern;
use crate::train::{self as kt, AdamStep, ParamTable};

mod layout;
mod pooling;

pub use layout::param_layout;
use layout::{grad_slots, param_views, Layout};
pub(crate) use layout::{BlockSlots, Slots};

const OP: &str = "cuda training";

/// The model, its gradient and AdamW's state on the device.
pub struct CudaTrainer {
    model: CudaModel,
    layout: Layout,
    grads: Buf<f32>,
    m: Buf<f32>,
    v: Buf<f32>,
    /// The blocks' raw scalars (7 per block, [`RawScalars::to_array`] order) and the HTT phases:
    /// the masters of the parameters the launches take by value.
    scal: Buf<f32>,
    phase: Buf<f32>,
    sin: Buf<f32>,
    sumsq: Buf<f32>,
    sum_part: Buf<f32>,
    table: ParamTable,
    tws: Option<TrainWs>,
    step: u64,
    /// Whether the last [`CudaTrainer::step`] updated the weights (a loss-scaled step whose
    /// gradient held inf/NaN is skipped).
    applied: bool,
}

impl CudaTrainer {
    /// Uploads `w` (exact numerics: only the exact maths has a backward); `math` picks fp32 or
    /// TF32 GEMMs for the forward and the backward.
    pub fn new(
        gpu: &'static Gpu,
        dims: ModelDims,
        w: &ModelWeights<f32>,
        math: GemmMath,
    ) -> Result<Self> {
        Self::build(gpu, dims, w, math, false)
    }

    /// [`CudaTrainer::new`] with bf16 mixed precision, autocast-style: the forward's GEMMs
    /// (each block's, and the decoder's logits) read bf16 copies of their inputs and of the
    /// weights (refreshed from the f32 masters after every step) with fp32 sums; everything else,
    /// the backward's GEMMs (`math`, on the f32 activations and masters), the optimiser and its
    /// moments stay f32.
    pub fn new_bf16(
        gpu: &'static Gpu,
        dims: ModelDims,
        w: &ModelWeights<f32>,
        math: GemmMath,
    ) -> Result<Self> {
        Self::build(gpu, dims, w, math, true)
    }

    /// fp16 mixed precision with loss scaling: the forward's GEMMs read fp16 copies of their
    /// inputs and weights (as [`CudaTrainer::new_bf16`], in IEEE fp16), the cross-entropy's
    /// gradient is multiplied by S ([`CudaTrainer::set_loss_scale`]), the backward's GEMMs read
    /// fp16 copies of their operands (the scaled gradients among them) with fp32 sums, and AdamW
    /// unscales by 1/S; a step whose gradient holds inf/NaN updates nothing
    /// ([`CudaTrainer::last_step_applied`]), for the caller's scaler to back off. Masters, moments
    /// and every other op stay f32.
    pub fn new_fp16(gpu: &'static Gpu, dims: ModelDims, w: &ModelWeights<f32>) -> Result<Self> {
        let mut t = Self::build(gpu, dims, w, GemmMath::Fp16, true)?;
        t.model.half = crate::gemm::HalfFormat::Fp16;
        t.refresh()?; // rewrites every 16-bit copy in fp16
        Ok(t)
    }

    /// S: the factor the loss's gradient is multiplied by (1 by default; fp16 training sets it
    /// from its dynamic scaler before each step). Must be finite and > 0.
    pub fn set_loss_scale(&mut self, s: f32) -> Result<()> {
        if !(s.is_finite() && s > 0.0) {
            return Err(Error::Domain {
                op: OP,
                arg: "loss_scale",
                rule: format!("must be finite and > 0, got {s}"),
            });
        }
        self.model.loss_scale = s;
        Ok(())
    }

    /// Whether the last step updated the weights (false: its scaled gradient was not finite).
    pub fn last_step_applied(&self) -> bool {
        self.applied
    }

    fn build(
        gpu: &'static Gpu,
        dims: ModelDims,
        w: &ModelWeights<f32>,
        math: GemmMath,
        bf16: bool,
    ) -> Result<Self> {
        if w.htt.bf16 {
            return Err(Error::Unsupported {
                op: OP,
                backend: "cuda",
                what: "weights flagged for bf16 GEMMs (pass f32 weights; CudaTrainer::new_bf16 keeps the bf16 copies)".into(),
            });
        }
        let w16;
        let w = if bf16 {
            w16 = w.clone().with_bf16_gemms();
            &w16
        } else {
            w
        };
        let mut model = CudaModel::new(gpu, dims, w, Numerics::exact(), math)?;
        // The trainer's decoder runs by chunks: no whole (B, N, V) logits in its workspaces.
        model.train = true;
        let layout = Layout::new(&dims);
        let total = layout.total();
        let scal_host: Vec<f32> = model.blocks.iter().flat_map(|b| b.raw.to_array()).collect();
        let scal = gpu.upload(&scal_host)?;
        let phase = gpu.upload(&w.htt.phase.to_vec())?;
        let sin = gpu.upload(&w.htt.phase.iter().map(|t| t.sin()).collect::<Vec<_>>())?;
        let table = ParamTable::new(gpu, &param_views(&model, &layout, &scal, &phase)?)?;
        if table.total() != total {
            return Err(Error::Backend {
                backend: "cuda",
                message: format!(
                    "training: the parameter table covers {} values, the layout {total}",
                    table.total()
                ),
            });
        }
        let zeros = vec![0.0f32; total];
        Ok(Self {
            grads: gpu.upload(&zeros)?,
            m: gpu.upload(&zeros)?,
            v: gpu.upload(&zeros)?,
            sumsq: gpu.alloc(1)?,
            sum_part: gpu.alloc(kt::SUM_PARTS)?,
            model,
            layout,
            scal,
            phase,
            sin,
            table,
            tws: None,
            step: 0,
            applied: false,
        })
    }

    /// The model (for evaluation forwards).
    pub fn model(&self) -> &CudaModel {
        &self.model
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.layout.total()
    }

    /// Steps taken.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// The mean cross-entropy of predicting `targets` (B, N) from `ids` (B, N) and its gradient,
    /// left on the device (see [`CudaTrainer::grads`]). One host wait, for the loss.
    pub fn loss_and_grad(
        &mut self,
        ids: ArrayView2<'_, usize>,
        targets: ArrayView2<'_, usize>,
    ) -> Result<f32> {
        self.queue(ids, targets, true)?;
        let tws = self.tws.as_ref().expect("queued");
        Ok(tws.loss.to_vec()?[0])
    }

    /// The mean cross-entropy alone (an evaluation: forward and loss, no gradient).
    pub fn loss(
        &mut self,
        ids: ArrayView2<'_, usize>,
        targets: ArrayView2<'_, usize>,
    ) -> Result<f32> {
        self.queue(ids, targets, false)?;
        let tws = self.tws.as_ref().expect("queued");
        Ok(tws.loss.to_vec()?[0])
    }

    fn queue(
        &mut self,
        ids: ArrayView2<'_, usize>,
        targets: ArrayView2<'_, usize>,
        with_grad: bool,
    ) -> Result<()> {
        if targets.dim() != ids.dim() {
            return Err(Error::Shape {
                op: OP,
                arg: "targets",
                expected: format!("{:?} like the ids", ids.dim()),
                got: targets.shape().to_vec(),
            });
        }
        let vocab = self.model.dims.vocab;
        let tgt: Vec<i32> = targets
            .iter()
            .map(|&t| {
                if t < vocab {
                    Ok(t as i32)
                } else {
                    Err(Error::Domain {
                        op: OP,
                        arg: "targets",
                        rule: format!("must be < vocab_size = {vocab}, got {t}"),
                    })
                }
            })
            .collect::<Result<_>>()?;
        let host_ids: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
        let m = &self.model;
        let mut guard = m.workspace_for(&ids)?;
        let ws = guard.as_mut().expect("workspace_for made it");
        if self
            .tws
            .as_ref()
            .is_none_or(|t| t.row_loss.len() != ws.batch * ws.n)
        {
            self.tws = None;
            m.trim_pool();
            self.tws = Some(m.routed(|| TrainWs::new(m, ws))?);
        }
        let tws = self.tws.as_mut().expect("just set");
        let ntok = tws.set_batch(&host_ids, &tgt)?;
        backward::forward_saving(m, ws, tws)?;
        backward::cross_entropy(m, ws, tws, with_grad)?;
        if !with_grad {
            return Ok(());
        }
        self.grads.fill_async(0)?;
        let slots = grad_slots(m, &self.layout, &self.grads, &self.sin)?;
        backward::backward(m, ws, tws, &slots, ntok)
    }

    /// The gradient of the last [`CudaTrainer::loss_and_grad`], per tensor in `for_each_param`
    /// order (name, values).
    pub fn grads(&self) -> Result<Vec<(String, Vec<f32>)>> {
        let flat = self.grads.to_vec()?;
        Ok(self
            .layout
            .entries
            .iter()
            .map(|(n, o, l)| (n.clone(), flat[*o..*o + *l].to_vec()))
            .collect())
    }

    /// One training step: loss and gradient, then AdamW (`h` without its bias corrections, which
    /// come from the step count) with the gradient clipped to `max_norm` (≤ 0: no clip). Returns
    /// the loss before the update.
    pub fn step(
        &mut self,
        ids: ArrayView2<'_, usize>,
        targets: ArrayView2<'_, usize>,
        h: AdamStep,
        max_norm: f32,
    ) -> Result<f32> {
        self.queue(ids, targets, true)?;
        let g = self.model.gpu;
        kt::sum(
            g,
            self.grads.view(),
            true,
            self.sum_part.view(),
            (1.0, self.sumsq.view(), false),
        )?;
        let scale = self.model.loss_scale;
        if scale != 1.0 {
            // A loss-scaled step: skip it when the scaled gradient overflowed (one host read).
            let sumsq = self.sumsq.to_vec()?[0];
            if !sumsq.is_finite() {
                self.applied = false;
                let loss = self.tws.as_ref().expect("queued").loss.to_vec()?[0];
                return Ok(loss);
            }
        }
        self.step += 1;
        let t = self.step as i32;
        let h = AdamStep {
            c1: (1.0 - f64::from(h.b1).powi(t)) as f32,
            c2: (1.0 - f64::from(h.b2).powi(t)) as f32,
            ..h
        };
        self.table.adamw(
            g,
            (self.grads.view(), self.m.view(), self.v.view()),
            self.sumsq.view(),
            (max_norm, 1.0 / scale),
            h,
        )?;
        self.applied = true;
        let loss = self.tws.as_ref().expect("queued").loss.to_vec()?[0];
        self.refresh()?;
        Ok(loss)
    }

    /// The global L2 norm of the last gradient (before clipping, unscaled by 1/S).
    pub fn grad_norm(&self) -> Result<f32> {
        Ok(self.sumsq.to_vec()?[0].sqrt() / self.model.loss_scale)
    }

    /// Re-derives the launches' scalars, cos θ and the decoder table from the masters.
    fn refresh(&mut self) -> Result<()> {
        let scal = self.scal.to_vec()?;
        for (b, raw) in self.model.blocks.iter_mut().zip(scal.chunks_exact(7)) {
            let a: [f32; 7] = raw.try_into().expect("chunks of 7");
            b.set_raw(RawScalars::from_array(a));
        }
        let phase = self.phase.to_vec()?;
        self.model
            .cos
            .copy_from_host(&phase.iter().map(|t| t.cos()).collect::<Vec<_>>())?;
        self.sin
            .copy_from_host(&phase.iter().map(|t| t.sin()).collect::<Vec<_>>())?;
        let m = &self.model;
        kern::htt_table(
            m.gpu,
            (&m.core1, &m.core2, &m.cos),
            &m.table,
            (m.dims.vocab, m.vpad, m.dims.d_model),
            m.shape,
        )?;
        // bf16 mode: the forward's bf16 copies of the updated masters.
        if let Some(t16) = &m.table16 {
            kern::to_half(m.gpu, m.half, m.table.view(), t16.view(), m.table.len())?;
        }
        for b in &m.blocks {
            if let Some(h) = &b.h16 {
                for (src, dst) in [
                    (&b.v_w, &h.v_w),
                    (&b.wqkv, &h.wqkv),
                    (&b.wo, &h.wo),
                    (&b.g1.w, &h.g1),
                    (&b.g2.w, &h.g2),
                    (&b.uv, &h.uv),
                    (&b.out.w, &h.out),
                ] {
                    kern::to_half(m.gpu, m.half, src.view(), dst.view(), src.len())?;
                }
            }
        }
        Ok(())
    }

    /// Every parameter, flat in `for_each_param` order.
    pub fn params_flat(&self) -> Result<Vec<f32>> {
        let flat = self.model.gpu.alloc::<f32>(self.layout.total())?;
        self.table.gather(self.model.gpu, flat.view(), true)?;
        flat.to_vec()
    }

    /// AdamW's moments (m, v), flat, and the step count.
    pub fn moments(&self) -> Result<(Vec<f32>, Vec<f32>, u64)> {
        Ok((self.m.to_vec()?, self.v.to_vec()?, self.step))
    }

    /// Overwrites every parameter and the moments (a resumed checkpoint), each flat in
    /// `for_each_param` order.
    pub fn load_state(&mut self, params: &[f32], m: &[f32], v: &[f32], step: u64) -> Result<()> {
        let n = self.layout.total();
        for (name, len) in [("params", params.len()), ("m", m.len()), ("v", v.len())] {
            if len != n {
                return Err(Error::Shape {
                    op: OP,
                    arg: if name == "params" {
                        "params"
                    } else {
                        "moments"
                    },
                    expected: format!("{n} values (this config's parameter count)"),
                    got: vec![len],
                });
            }
        }
        let g = self.model.gpu;
        let flat = g.upload(params)?;
        self.table.gather(g, flat.view(), false)?;
        self.m.copy_from_host(m)?;
        self.v.copy_from_host(v)?;
        self.step = step;
        self.refresh()
    }
}
