//! The pieces both VRAM-study models share (a Linear with its gradients, the kept activations,
//! the head with the sum-of-logits loss by chunks of rows) and the measurement of one step's
//! allocation peak under the original's protocol (design model.md §6.3).

use muse_reference::{Error, Result};
use ndarray::ArrayView2;

use super::{from_half, DevParams, Store};
use crate::device::{Buf, Gpu, View};
use crate::gemm::{gemm, GemmMath, HalfFormat};
use crate::model::{self as km, Act};
use crate::model_bwd::{self as kb, LnGrad, LnInput};
use crate::train as kt;

/// Rows of logits that exist at once in the head (the (B, N, V) logits never exist whole).
pub const HEAD_ROWS: usize = 32;

/// Rows of a memory-optimised FFN's hidden activations that exist at once.
pub const FFN_ROWS: usize = 64;

/// Ids (B, N) on the device as i32, each checked < `vocab`.
pub(crate) fn upload_ids(
    gpu: &'static Gpu,
    ids: ArrayView2<'_, usize>,
    vocab: usize,
) -> Result<Buf<i32>> {
    let (b, n) = ids.dim();
    for (dim, v) in [("B", b), ("N", n)] {
        if v == 0 {
            return Err(Error::Empty {
                op: "vram",
                arg: "ids",
                dim,
                shape: vec![b, n],
            });
        }
    }
    if let Some(((i, j), &t)) = ids.indexed_iter().find(|(_, &t)| t >= vocab) {
        return Err(Error::Domain {
            op: "vram",
            arg: "ids",
            rule: format!("must be < the vocabulary {vocab}; ids[{i}, {j}] = {t}"),
        });
    }
    gpu.upload(&ids.iter().map(|&t| t as i32).collect::<Vec<_>>())
}

/// A Linear y = x·Wᵀ + b (W stored (out, in), as `nn.Linear`) with its gradients' views.
pub(crate) struct Lin<'a> {
    pub(crate) w: View<'a, f32>,
    pub(crate) b: View<'a, f32>,
    pub(crate) gw: View<'a, f32>,
    pub(crate) gb: View<'a, f32>,
    pub(crate) out: usize,
    pub(crate) inp: usize,
}

impl<'a> Lin<'a> {
    /// `name.weight` and `name.bias` of `p` (every Linear these models run this way has a bias).
    pub(crate) fn of(p: &'a DevParams, name: &str) -> Result<Self> {
        let (w, b) = (
            p.wv(&format!("{name}.weight"))?,
            p.wv(&format!("{name}.bias"))?,
        );
        Ok(Self {
            w,
            b,
            gw: p.g(&format!("{name}.weight"))?,
            gb: p.g(&format!("{name}.bias"))?,
            out: b.len(),
            inp: w.len() / b.len().max(1),
        })
    }

    /// y = act(x·Wᵀ + b) (+ res) for `rows` rows.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fwd(
        &self,
        g: &'static Gpu,
        x: View<'_, f32>,
        y: View<'_, f32>,
        rows: usize,
        act: Act,
        res: Option<View<'_, f32>>,
        math: GemmMath,
    ) -> Result<()> {
        gemm(
            g,
            (false, true),
            (rows, self.out, self.inp),
            x,
            self.w,
            y,
            0.0,
            math,
        )?;
        km::bias_act(g, y, Some(self.b), res, (rows, self.out), act)
    }

    fn grads(
        &self,
        g: &'static Gpu,
        x: View<'_, f32>,
        dy: View<'_, f32>,
        rows: usize,
        part: View<'_, f32>,
        math: GemmMath,
    ) -> Result<()> {
        kt::col_sum(g, dy, (rows, self.out), part, self.gb, true)?;
        gemm(
            g,
            (true, false),
            (self.out, self.inp, rows),
            dy,
            x,
            self.gw,
            1.0,
            math,
        )
    }

    /// ∂W += dyᵀ·x, ∂b += Σ dy, and dx = dy·W (when given); `part` holds COL_PARTS·out floats.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn bwd(
        &self,
        g: &'static Gpu,
        x: View<'_, f32>,
        dy: View<'_, f32>,
        dx: Option<View<'_, f32>>,
        rows: usize,
        part: View<'_, f32>,
        math: GemmMath,
    ) -> Result<()> {
        self.grads(g, x, dy, rows, part, math)?;
        match dx {
            Some(dx) => gemm(
                g,
                (false, false),
                (rows, self.inp, self.out),
                dy,
                self.w,
                dx,
                0.0,
                math,
            ),
            None => Ok(()),
        }
    }

    /// [`Lin::bwd`] with dx += dy·W.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn bwd_acc(
        &self,
        g: &'static Gpu,
        x: View<'_, f32>,
        dy: View<'_, f32>,
        dx: View<'_, f32>,
        rows: usize,
        part: View<'_, f32>,
        math: GemmMath,
    ) -> Result<()> {
        self.grads(g, x, dy, rows, part, math)?;
        gemm(
            g,
            (false, false),
            (rows, self.inp, self.out),
            dy,
            self.w,
            dx,
            1.0,
            math,
        )
    }
}

/// Kept activations of `len` floats each, f32 or rounded to 16 bits. All are allocated at once
/// (a forward keeps every one of them by its end) and released one by one by the backward.
pub(crate) enum Ckpt {
    F32(Vec<Option<Buf<f32>>>),
    Half {
        fmt: HalfFormat,
        saved: Vec<Option<Buf<u16>>>,
        /// Where a forward writes the next one (f32), and where a load expands one.
        stage: Option<Buf<f32>>,
        load: Buf<f32>,
    },
}

impl Ckpt {
    pub(crate) fn new(gpu: &'static Gpu, store: Store, count: usize, len: usize) -> Result<Self> {
        let fmt = match store {
            Store::F32 => {
                return Ok(Self::F32(
                    (0..count)
                        .map(|_| gpu.alloc(len).map(Some))
                        .collect::<Result<_>>()?,
                ))
            }
            Store::Fp16 => HalfFormat::Fp16,
            Store::Bf16 => HalfFormat::Bf16,
        };
        Ok(Self::Half {
            fmt,
            saved: (0..count)
                .map(|_| gpu.alloc(len).map(Some))
                .collect::<Result<_>>()?,
            stage: Some(gpu.alloc(len)?),
            load: gpu.alloc(len)?,
        })
    }

    fn gone(i: usize) -> Error {
        Error::Backend {
            backend: "cuda",
            message: format!("vram: kept activation {i} was released"),
        }
    }

    /// The f32 buffer that activation `i` is written into (then [`Ckpt::commit`]).
    pub(crate) fn stage(&self, i: usize) -> Result<&Buf<f32>> {
        match self {
            Self::F32(v) => v
                .get(i)
                .and_then(Option::as_ref)
                .ok_or_else(|| Self::gone(i)),
            Self::Half { stage, .. } => stage.as_ref().ok_or_else(|| Self::gone(i)),
        }
    }

    /// Keeps what [`Ckpt::stage`] holds as activation `i` (rounds it when 16-bit).
    pub(crate) fn commit(&self, gpu: &Gpu, i: usize) -> Result<()> {
        if let Self::Half {
            fmt,
            saved,
            stage: Some(st),
            ..
        } = self
        {
            let dst = saved
                .get(i)
                .and_then(Option::as_ref)
                .ok_or_else(|| Self::gone(i))?;
            km::to_half(gpu, *fmt, st.view(), dst.view(), st.len())?;
        }
        Ok(())
    }

    /// Activation `i` as f32 (expanded into a shared buffer when 16-bit: valid until the next load).
    pub(crate) fn load(&self, gpu: &Gpu, i: usize) -> Result<View<'_, f32>> {
        match self {
            Self::F32(v) => v
                .get(i)
                .and_then(Option::as_ref)
                .map(Buf::view)
                .ok_or_else(|| Self::gone(i)),
            Self::Half {
                fmt, saved, load, ..
            } => {
                let src = saved
                    .get(i)
                    .and_then(Option::as_ref)
                    .ok_or_else(|| Self::gone(i))?;
                from_half(
                    gpu,
                    src.view(),
                    load.view(),
                    load.len(),
                    *fmt == HalfFormat::Bf16,
                )?;
                Ok(load.view())
            }
        }
    }

    /// Frees the forward's staging buffer (16-bit: every activation is kept by now).
    pub(crate) fn forward_done(&mut self) {
        if let Self::Half { stage, .. } = self {
            *stage = None;
        }
    }

    /// Frees activation `i`.
    pub(crate) fn release(&mut self, i: usize) {
        match self {
            Self::F32(v) => drop(v.get_mut(i).and_then(Option::take)),
            Self::Half { saved, .. } => drop(saved.get_mut(i).and_then(Option::take)),
        }
    }
}

/// A LayerNorm's (weight, bias) and their gradients' views.
pub(crate) type NormViews<'a> = (
    (View<'a, f32>, View<'a, f32>),
    (View<'a, f32>, View<'a, f32>),
);

/// The head both models end in: an optional LayerNorm, then Linears (`mid` before `up`, or
/// `up` alone), then the logits.
pub(crate) struct Head<'a> {
    /// The final LayerNorm (weight, bias) and their gradients, or none (the baseline has none).
    pub(crate) norm: Option<NormViews<'a>>,
    /// The memory-optimised model's output_down.
    pub(crate) mid: Option<Lin<'a>>,
    /// The Linear to the vocabulary.
    pub(crate) up: Lin<'a>,
}

/// L = Σ logits of the head on x (rows, dm), the logits formed [`HEAD_ROWS`] rows at a time;
/// the head's gradients accumulate and ∂L/∂x is written into `dx`. Returns L (summed in f32).
pub(crate) fn head_sum_loss(
    g: &'static Gpu,
    head: &Head<'_>,
    x: View<'_, f32>,
    dx: View<'_, f32>,
    (rows, dm): (usize, usize),
    math: GemmMath,
) -> Result<f64> {
    let up = &head.up;
    let vocab = up.out;
    let xf = match head.norm {
        Some(((w, b), _)) => {
            let y = g.alloc::<f32>(rows * dm)?;
            km::layer_norm(g, x, (w, b), y.view(), rows, dm)?;
            Some(y)
        }
        None => None,
    };
    let xn = xf.as_ref().map_or(x, Buf::view);
    let hd = match &head.mid {
        Some(mid) => {
            let y = g.alloc::<f32>(rows * mid.out)?;
            mid.fwd(g, xn, y.view(), rows, Act::None, None, math)?;
            Some(y)
        }
        None => None,
    };
    let hv = hd.as_ref().map_or(xn, Buf::view);
    let o = up.inp;
    let dhd = g.alloc::<f32>(rows * o)?;
    let loss = g.alloc::<f32>(1)?;
    super::fill(g, loss.view(), 0.0)?;
    {
        let c = HEAD_ROWS.min(rows);
        let lg = g.alloc::<f32>(c * vocab)?;
        let ones = g.alloc::<f32>(c)?;
        super::fill(g, ones.view(), 1.0)?;
        let part = g.alloc::<f32>(kt::SUM_PARTS)?;
        for r0 in (0..rows).step_by(c) {
            let cc = c.min(rows - r0);
            let (lv, hc) = (lg.view().slice(0, cc * vocab)?, hv.slice(r0 * o, cc * o)?);
            gemm(g, (false, true), (cc, vocab, o), hc, up.w, lv, 0.0, math)?;
            super::add_bias(g, lv, up.b, (cc, vocab))?;
            kt::sum(g, lv, false, part.view(), (1.0, loss.view(), true))?;
            // ∂(Σ logits)/∂logits = 1: the chunk becomes its own gradient.
            super::fill(g, lv, 1.0)?;
            gemm(
                g,
                (false, false),
                (cc, o, vocab),
                lv,
                up.w,
                dhd.view().slice(r0 * o, cc * o)?,
                0.0,
                math,
            )?;
            gemm(g, (true, false), (vocab, o, cc), lv, hc, up.gw, 1.0, math)?;
            gemm(
                g,
                (true, false),
                (1, vocab, cc),
                ones.view().slice(0, cc)?,
                lv,
                up.gb,
                1.0,
                math,
            )?;
        }
    }
    let part = g.alloc::<f32>(kt::COL_PARTS * dm.max(o))?;
    let dxn = match &head.mid {
        Some(mid) => {
            let d = g.alloc::<f32>(rows * dm)?;
            mid.bwd(g, xn, dhd.view(), Some(d.view()), rows, part.view(), math)?;
            Some(d)
        }
        None => None,
    };
    drop(hd);
    let dyn_ = dxn.as_ref().map_or(dhd.view(), Buf::view);
    match head.norm {
        Some(((w, _), (gw, gb))) => {
            let xhat = g.alloc::<f32>(rows * dm)?;
            kb::layer_norm(
                g,
                LnInput::Rows(x),
                w,
                dyn_,
                LnGrad::Rows { dx, res: None },
                xhat.view(),
                (rows, dm),
            )?;
            kt::col_sum(g, xhat.view(), (rows, dm), part.view(), gw, true)?;
            kt::col_sum(g, dyn_, (rows, dm), part.view(), gb, true)?;
        }
        None => kt::copy(g, dyn_, dx)?,
    }
    Ok(f64::from(loss.to_vec()?[0]))
}

/// One step's memory under the protocol: the allocation high-water mark of `step` above what
/// was live before the model was uploaded (`before`), with the weights and gradients resident.
#[derive(Debug, Clone, Copy)]
pub struct StepPeak {
    /// The loss of the measured step.
    pub loss: f64,
    /// Peak bytes above `before` (weights, gradients, kept activations, workspace).
    pub peak_bytes: usize,
    /// Bytes of the weights (the gradients take as many).
    pub param_bytes: usize,
    /// Wall time of the measured step (synchronised), seconds.
    pub seconds: f64,
}

/// Runs `step` once to warm up (module loads, cuBLAS's handle and workspace), then once more
/// after a peak reset: the second run's peak above `before`.
///
/// The study's models allocate with `Gpu::alloc` outside any `Gpu::pooled` scope: the driver
/// path, one `cuMemAlloc` per buffer, on purpose, so that these peaks stay comparable with the
/// VRAM reports made before the device pool (whose size classes would round buffers up).
pub fn measure(
    gpu: &'static Gpu,
    before: usize,
    param_bytes: usize,
    mut step: impl FnMut() -> Result<f64>,
) -> Result<StepPeak> {
    step()?;
    gpu.sync("VRAM warm-up step")?;
    gpu.reset_peak();
    let t0 = std::time::Instant::now();
    let loss = step()?;
    gpu.sync("VRAM step")?;
    let seconds = t0.elapsed().as_secs_f64();
    Ok(StepPeak {
        loss,
        peak_bytes: gpu.peak_bytes().saturating_sub(before),
        param_bytes,
        seconds,
    })
}
