//! The trainer's parameter layout: every tensor's slot in the flat `for_each_param` order, the
//! device tensors those slots map to (the pointer table's entries) and the gradient views the
//! backward writes into.

use muse_reference::model::{grad, ModelDims, ModelWeights};
use muse_reference::{Error, Result};

use super::super::forward::CudaModel;
use crate::device::{Buf, View};

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
pub(super) struct Layout {
    pub(super) entries: Vec<(String, usize, usize)>,
}

impl Layout {
    pub(super) fn new(d: &ModelDims) -> Self {
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
    pub(super) fn total(&self) -> usize {
        self.entries.last().map_or(0, |&(_, o, l)| o + l)
    }
}

/// The device views of every parameter in layout order (the pointer table's entries).
pub(super) fn param_views<'a>(
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
pub(super) fn grad_slots<'a>(
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
