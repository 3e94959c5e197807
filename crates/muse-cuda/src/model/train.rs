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

use muse_reference::model::{grad, ModelDims, ModelWeights, Numerics};
use muse_reference::{Error, Result};
use ndarray::ArrayView2;

use super::backward::{self, TrainWs};
use super::forward::{CudaModel, RawScalars};
use crate::device::{Buf, Gpu, View};
use crate::gemm::GemmMath;
use crate::model as kern;
use crate::train::{self as kt, AdamStep, ParamTable};

const OP: &str = "cuda training";

/// Every parameter tensor's name and length, in `for_each_param` order.
pub fn param_layout(d: &ModelDims) -> Vec<(String, usize)> {
    let mut w = ModelWeights::<f64>::zeros(d);
    let mut out: Vec<(String, usize)> = Vec::new();
    grad::for_each_param(&mut w, &mut |name, _| match out.last_mut() {
        Some((n, len)) if n == name => *len += 1,
        _ => out.push((name.to_string(), 1)),
    });
    out
}

/// The gradient views of one block's parameters.
pub(crate) struct BlockSlots<'a> {
    pub(crate) norm: (View<'a, f32>, View<'a, f32>),
    pub(crate) v_w: View<'a, f32>,
    pub(crate) v_b: View<'a, f32>,
    pub(crate) epsilon: View<'a, f32>,
    pub(crate) gamma: View<'a, f32>,
    pub(crate) gs: View<'a, f32>,
    pub(crate) wqkv: View<'a, f32>,
    pub(crate) wo: View<'a, f32>,
    pub(crate) log_c: View<'a, f32>,
    pub(crate) beta: View<'a, f32>,
    pub(crate) g1_w: View<'a, f32>,
    pub(crate) g1_b: View<'a, f32>,
    pub(crate) g2_w: View<'a, f32>,
    pub(crate) g2_b: View<'a, f32>,
    pub(crate) uv: View<'a, f32>,
    pub(crate) conv: View<'a, f32>,
    pub(crate) out_w: View<'a, f32>,
    pub(crate) out_b: View<'a, f32>,
    pub(crate) out_norm: (View<'a, f32>, View<'a, f32>),
}

/// The gradient views of every parameter (and sin θ for the phases' gradient).
pub(crate) struct Slots<'a> {
    pub(crate) core1: View<'a, f32>,
    pub(crate) core2: View<'a, f32>,
    pub(crate) phase: View<'a, f32>,
    pub(crate) sin: View<'a, f32>,
    pub(crate) pos: View<'a, f32>,
    pub(crate) blocks: Vec<BlockSlots<'a>>,
    pub(crate) final_norm: (View<'a, f32>, View<'a, f32>),
}

/// Flat offsets of the layout by name.
struct Layout {
    entries: Vec<(String, usize, usize)>,
}

impl Layout {
    fn new(d: &ModelDims) -> Self {
        let mut off = 0;
        let entries = param_layout(d)
            .into_iter()
            .map(|(n, len)| {
                let e = (n, off, len);
                off += len;
                e
            })
            .collect();
        Self { entries }
    }
    fn get(&self, name: &str) -> Result<(usize, usize)> {
        self.entries
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|&(_, o, l)| (o, l))
            .ok_or_else(|| Error::Backend {
                backend: "cuda",
                message: format!("training: no parameter `{name}` in the layout"),
            })
    }
    /// The view of `name` in the flat buffer `b`.
    fn view<'a>(&self, b: &'a Buf<f32>, name: &str) -> Result<View<'a, f32>> {
        let (o, l) = self.get(name)?;
        b.slice(o, l)
    }
    /// Views of `first` .. `last` (adjacent tensors) as one.
    fn span<'a>(&self, b: &'a Buf<f32>, first: &str, last: &str) -> Result<View<'a, f32>> {
        let (o, _) = self.get(first)?;
        let (lo, ll) = self.get(last)?;
        b.slice(o, lo + ll - o)
    }
    fn total(&self) -> usize {
        self.entries.last().map_or(0, |&(_, o, l)| o + l)
    }
}

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
        if w.htt.bf16 {
            return Err(Error::Unsupported {
                op: OP,
                backend: "cuda",
                what: "bf16 GEMM weights (train in f32 masters; bf16 is a forward option)".into(),
            });
        }
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
            self.tws = Some(TrainWs::new(m, ws)?);
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
            max_norm,
            h,
        )?;
        let loss = self.tws.as_ref().expect("queued").loss.to_vec()?[0];
        self.refresh()?;
        Ok(loss)
    }

    /// The global L2 norm of the last gradient (before clipping).
    pub fn grad_norm(&self) -> Result<f32> {
        Ok(self.sumsq.to_vec()?[0].sqrt())
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
        )
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

/// The device views of every parameter in layout order (the pointer table's entries).
fn param_views<'a>(
    m: &'a CudaModel,
    layout: &Layout,
    scal: &'a Buf<f32>,
    phase: &'a Buf<f32>,
) -> Result<Vec<View<'a, f32>>> {
    let d = &m.dims;
    let (dm, r) = (d.d_model, d.ssm_rank);
    let mut out = Vec::with_capacity(layout.entries.len());
    for (name, _, len) in &layout.entries {
        let v = match name.as_str() {
            "htt.core1" => m.core1.view(),
            "htt.core2" => m.core2.view(),
            "htt.phase" => phase.view(),
            "pos" => m.pos.view(),
            "final_norm.weight" => m.final_norm.0.view(),
            "final_norm.bias" => m.final_norm.1.view(),
            other => {
                let rest = other
                    .strip_prefix("blocks.")
                    .ok_or_else(|| unknown(other))?;
                let (i, field) = rest.split_once('.').ok_or_else(|| unknown(other))?;
                let i: usize = i.parse().map_err(|_| unknown(other))?;
                let b = m.blocks.get(i).ok_or_else(|| unknown(other))?;
                let s = |k: usize| scal.slice(7 * i + k, 1);
                match field {
                    "norm.weight" => b.norm.0.view(),
                    "norm.bias" => b.norm.1.view(),
                    "v_proj.weight" => b.v_w.view(),
                    "v_proj.bias" => s(0)?,
                    "epsilon" => s(1)?,
                    "gamma" => s(2)?,
                    "gate_sensitivity" => s(3)?,
                    "attn.wq" => b.wqkv.slice(0, dm * dm)?,
                    "attn.wk" => b.wqkv.slice(dm * dm, dm * dm)?,
                    "attn.wv" => b.wqkv.slice(2 * dm * dm, dm * dm)?,
                    "attn.wo" => b.wo.view(),
                    "attn.log_c" => s(4)?,
                    "attn.beta" => s(5)?,
                    "attn.bias" => s(6)?,
                    "ssm.gate1.weight" => b.g1.w.view(),
                    "ssm.gate1.bias" => opt(&b.g1.b, other)?,
                    "ssm.gate2.weight" => b.g2.w.view(),
                    "ssm.gate2.bias" => opt(&b.g2.b, other)?,
                    "ssm.u.weight" => b.uv.slice(0, r * dm)?,
                    "ssm.v.weight" => b.uv.slice(r * dm, r * dm)?,
                    "ssm.conv" => b.taps.view(),
                    "ssm.out.weight" => b.out.w.view(),
                    "ssm.out.bias" => opt(&b.out.b, other)?,
                    "out_norm.weight" => b.out_norm.0.view(),
                    "out_norm.bias" => b.out_norm.1.view(),
                    _ => return Err(unknown(other)),
                }
            }
        };
        if v.len() != *len {
            return Err(Error::Backend {
                backend: "cuda",
                message: format!(
                    "training: `{name}` has {} values on the device, {len} in the layout",
                    v.len()
                ),
            });
        }
        out.push(v);
    }
    Ok(out)
}

fn opt<'a>(b: &'a Option<Buf<f32>>, name: &str) -> Result<View<'a, f32>> {
    b.as_ref().map(Buf::view).ok_or_else(|| unknown(name))
}

fn unknown(name: &str) -> Error {
    Error::Backend {
        backend: "cuda",
        message: format!("training: parameter `{name}` has no device tensor"),
    }
}

/// The gradient slots of every parameter in the flat buffer `g`.
fn grad_slots<'a>(
    m: &CudaModel,
    l: &Layout,
    g: &'a Buf<f32>,
    sin: &'a Buf<f32>,
) -> Result<Slots<'a>> {
    let blocks = (0..m.blocks.len())
        .map(|i| {
            let v = |f: &str| l.view(g, &format!("blocks.{i}.{f}"));
            let p = |f: &str| format!("blocks.{i}.{f}");
            Ok(BlockSlots {
                norm: (v("norm.weight")?, v("norm.bias")?),
                v_w: v("v_proj.weight")?,
                v_b: v("v_proj.bias")?,
                epsilon: v("epsilon")?,
                gamma: v("gamma")?,
                gs: v("gate_sensitivity")?,
                wqkv: l.span(g, &p("attn.wq"), &p("attn.wv"))?,
                wo: v("attn.wo")?,
                log_c: v("attn.log_c")?,
                beta: v("attn.beta")?,
                g1_w: v("ssm.gate1.weight")?,
                g1_b: v("ssm.gate1.bias")?,
                g2_w: v("ssm.gate2.weight")?,
                g2_b: v("ssm.gate2.bias")?,
                uv: l.span(g, &p("ssm.u.weight"), &p("ssm.v.weight"))?,
                conv: v("ssm.conv")?,
                out_w: v("ssm.out.weight")?,
                out_b: v("ssm.out.bias")?,
                out_norm: (v("out_norm.weight")?, v("out_norm.bias")?),
            })
        })
        .collect::<Result<_>>()?;
    Ok(Slots {
        core1: l.view(g, "htt.core1")?,
        core2: l.view(g, "htt.core2")?,
        phase: l.view(g, "htt.phase")?,
        sin: sin.view(),
        pos: l.view(g, "pos")?,
        blocks,
        final_norm: (
            l.view(g, "final_norm.weight")?,
            l.view(g, "final_norm.bias")?,
        ),
    })
}
