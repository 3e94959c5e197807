//! The memory-optimised model (design model.md §4; CPU reference `muse_reference::memopt`) on the
//! GPU: forward and exact backward of a loss over its logits, with the least memory the maths
//! allows. Only each block's input is kept (per-block checkpointing; f32, or 16-bit with
//! [`Store`]); a block is recomputed and differentiated one sequence at a time, its FFN by chunks
//! of rows; the logits exist [`super::study::HEAD_ROWS`] rows at a time; the HTT embedding's
//! gradient is formed only for the row groups of the tokens present.
//!
//! ```no_run
//! use muse_cuda::{gemm::GemmMath, vram::{memopt::MemOptGpu, Store}, Gpu};
//! use muse_reference::{memopt::MemOptWeights, model::Conv};
//! let w = MemOptWeights::zeros(50, 16, 2, 4, 8, 8, 8);
//! let m = MemOptGpu::new(Gpu::get()?, &w, Conv::Causal, GemmMath::Fp32)?;
//! let loss = m.step(ndarray::Array2::from_elem((1, 6), 3usize).view(), Store::F32)?;
//! let grads = m.grads(&w)?;
//! # Ok::<(), muse_reference::Error>(())
//! ```

use muse_reference::memopt::MemOptWeights;
use muse_reference::model::Conv;
use muse_reference::{Error, Result};
use ndarray::ArrayView2;

use super::params::{write_back, DevParams};
use super::study::{head_sum_loss, upload_ids, Ckpt, Head, Lin, FFN_ROWS};
use super::Store;
use crate::device::{Buf, Gpu, View};
use crate::gemm::{gemm, GemmMath};
use crate::model::{self as km, Act, HttShape};
use crate::model_bwd::{self as kb, LnGrad, LnInput, TokenRows};
use crate::train as kt;

/// The model's widths, read off its weights.
#[derive(Debug, Clone, Copy)]
struct Dims {
    vocab: usize,
    dm: usize,
    layers: usize,
    /// The AR-SSM's gate width G and rank R.
    gh: usize,
    r: usize,
    /// The FFN's widths f and 4D.
    f: usize,
    wide: usize,
    htt: HttShape,
}

/// The memory-optimised model's weights and gradients on the device.
pub struct MemOptGpu {
    gpu: &'static Gpu,
    p: DevParams,
    cos: Buf<f32>,
    sin: Buf<f32>,
    d: Dims,
    conv: Conv,
    math: GemmMath,
}

/// Rows r0 .. r0 + c of a (rows, w) buffer.
fn chunk(b: &Buf<f32>, r0: usize, c: usize, w: usize) -> Result<View<'_, f32>> {
    b.view().slice(r0 * w, c * w)
}

/// One sequence's block buffers (n rows).
struct BlockWs {
    n1: Buf<f32>,
    x1: Buf<f32>,
    n2: Buf<f32>,
    /// The conv's output, LayerNorm's x̂∘dy, the conv taps' per-row gradient (n·3D).
    s1: Buf<f32>,
    gh: Buf<f32>,
    gg: Buf<f32>,
    uv: Buf<f32>,
    ug: Buf<f32>,
    vg: Buf<f32>,
    kv: Buf<f32>,
    /// The FFN's hidden rows of one chunk, and their gradients.
    h: [Buf<f32>; 3],
    dh: [Buf<f32>; 3],
    /// ∂L/∂(a LayerNorm's output).
    dn: Buf<f32>,
    dkv: Buf<f32>,
    dug: Buf<f32>,
    dvg: Buf<f32>,
    dgg: Buf<f32>,
    duv: Buf<f32>,
    dgh: Buf<f32>,
    part: Buf<f32>,
}

impl BlockWs {
    fn new(gpu: &'static Gpu, d: &Dims, n: usize, backward: bool) -> Result<Self> {
        let a = |len: usize| gpu.alloc::<f32>(len);
        let c = FFN_ROWS.min(n);
        let bw = |len: usize| if backward { a(len) } else { a(1) };
        Ok(Self {
            n1: a(n * d.dm)?,
            x1: a(n * d.dm)?,
            n2: a(n * d.dm)?,
            s1: a(3 * n * d.dm)?,
            gh: a(n * d.gh)?,
            gg: a(n * d.r)?,
            uv: a(2 * n * d.r)?,
            ug: a(n * d.r)?,
            vg: a(n * d.r)?,
            kv: a(n * d.r)?,
            h: [a(c * d.f)?, a(c * d.wide)?, a(c * d.f)?],
            dh: [bw(c * d.f)?, bw(c * d.wide)?, bw(c * d.f)?],
            dn: bw(n * d.dm)?,
            dkv: bw(n * d.r)?,
            dug: bw(n * d.r)?,
            dvg: bw(n * d.r)?,
            dgg: bw(n * d.r)?,
            duv: bw(2 * n * d.r)?,
            dgh: bw(n * d.gh)?,
            part: bw(kt::COL_PARTS * (3 * d.dm).max(d.wide))?,
        })
    }
}

impl MemOptGpu {
    /// Uploads `w` (rounded to f32); `conv` is the AR-SSM's conv alignment, `math` the GEMMs'.
    pub fn new(gpu: &'static Gpu, w: &MemOptWeights, conv: Conv, math: GemmMath) -> Result<Self> {
        let (v1, rh, d1) = w.htt.core1.dim();
        let (v2, _, d2) = w.htt.core2.dim();
        let b0 = w.blocks.first().ok_or_else(|| Error::Domain {
            op: "vram",
            arg: "weights",
            rule: "must have at least one block".into(),
        })?;
        let d = Dims {
            vocab: w.up.w.nrows(),
            dm: w.final_norm.weight.len(),
            layers: w.blocks.len(),
            gh: b0.ssm.gate1.w.nrows(),
            r: b0.ssm.gate2.w.nrows(),
            f: b0.ffn[0].w.nrows(),
            wide: b0.ffn[1].w.nrows(),
            htt: HttShape {
                r: rh as i32,
                d1: d1 as i32,
                d2: d2 as i32,
                v1: v1 as i32,
                v2: v2 as i32,
            },
        };
        let mut host = w.clone();
        let p = DevParams::upload(
            gpu,
            &mut |f| host.for_each_param(f),
            &[(".u.weight", ".v.weight", ".uv.weight")],
        )?;
        let phase =
            |f: fn(f64) -> f64| w.htt.phase.iter().map(|&t| f(t) as f32).collect::<Vec<_>>();
        Ok(Self {
            gpu,
            p,
            cos: gpu.upload(&phase(f64::cos))?,
            sin: gpu.upload(&phase(f64::sin))?,
            d,
            conv,
            math,
        })
    }

    /// Bytes of the weights (the gradients take as many).
    pub fn param_bytes(&self) -> usize {
        self.p.bytes()
    }

    /// Trainable scalars.
    pub fn num_params(&self) -> usize {
        self.p.count()
    }

    /// The gradients of the last [`MemOptGpu::step`], as weights of `like`'s shapes.
    pub fn grads(&self, like: &MemOptWeights) -> Result<MemOptWeights> {
        let mut g = like.clone();
        write_back(&self.p.grads()?, &mut |f| g.for_each_param(f))?;
        Ok(g)
    }

    fn lin(&self, name: &str) -> Result<Lin<'_>> {
        Lin::of(&self.p, name)
    }

    /// One forward and backward of L = Σ logits (the VRAM study's loss) for ids (B, N): returns
    /// L and leaves ∂L/∂w in the gradients (zeroed first). `store` is the precision of the kept
    /// block inputs.
    pub fn step(&self, ids: ArrayView2<'_, usize>, store: Store) -> Result<f64> {
        let (g, d) = (self.gpu, self.d);
        let (b, n) = ids.dim();
        let rows = b * n;
        let ids_dev = upload_ids(g, ids, d.vocab)?;
        self.p.zero_grads(g)?;
        let mut ck = Ckpt::new(g, store, d.layers + 1, rows * d.dm)?;
        {
            let x = ck.stage(0)?;
            let htt = (self.p.w("htt.core1")?, self.p.w("htt.core2")?, &self.cos);
            km::embed(g, &ids_dev, htt, None, x, (rows, n, d.dm), d.htt)?;
            ck.commit(g, 0)?;
        }
        let mut ws = BlockWs::new(g, &d, n, false)?;
        for l in 0..d.layers {
            let x0 = ck.load(g, l)?;
            let out = ck.stage(l + 1)?;
            for s in 0..b {
                let (xs, os) = (
                    x0.slice(s * n * d.dm, n * d.dm)?,
                    out.view().slice(s * n * d.dm, n * d.dm)?,
                );
                self.block_fwd(&ws, l, xs, n)?;
                self.ffn(&ws, l, n, Some(os), None)?;
            }
            ck.commit(g, l + 1)?;
        }
        drop(ws);
        ck.forward_done();
        let xl = ck.load(g, d.layers)?;
        let dh = g.alloc::<f32>(rows * d.dm)?;
        let p = &self.p;
        let head = Head {
            norm: Some((
                (p.wv("final_norm.weight")?, p.wv("final_norm.bias")?),
                (p.g("final_norm.weight")?, p.g("final_norm.bias")?),
            )),
            mid: Some(self.lin("down")?),
            up: self.lin("up")?,
        };
        let loss = head_sum_loss(g, &head, xl, dh.view(), (rows, d.dm), self.math)?;
        ck.release(d.layers);
        ws = BlockWs::new(g, &d, n, true)?;
        for l in (0..d.layers).rev() {
            let x0 = ck.load(g, l)?;
            for s in 0..b {
                let (xs, dhs) = (
                    x0.slice(s * n * d.dm, n * d.dm)?,
                    dh.view().slice(s * n * d.dm, n * d.dm)?,
                );
                self.block_fwd(&ws, l, xs, n)?;
                self.ffn(&ws, l, n, None, Some(dhs))?;
                self.block_bwd(&ws, l, xs, dhs, n)?;
            }
            ck.release(l);
        }
        drop(ws);
        self.htt_bwd(ids, dh.view())?;
        g.sync("memory-optimised step")?;
        Ok(loss)
    }

    fn gemm(
        &self,
        t: (bool, bool),
        dims: (usize, usize, usize),
        a: View<'_, f32>,
        b: View<'_, f32>,
        c: View<'_, f32>,
        beta: f32,
    ) -> Result<()> {
        gemm(self.gpu, t, dims, a, b, c, beta, self.math)
    }

    /// n1 = LN₁(x0), x1 = x0 + AR-SSM(n1), n2 = LN₂(x1) for one sequence, keeping the AR-SSM's
    /// intermediates in `ws` for its VJP.
    fn block_fwd(&self, ws: &BlockWs, l: usize, x0: View<'_, f32>, n: usize) -> Result<()> {
        let (g, d, p) = (self.gpu, self.d, &self.p);
        let pre = format!("blocks.{l}");
        let ln = |k: &str| -> Result<(View<'_, f32>, View<'_, f32>)> {
            Ok((
                p.wv(&format!("{pre}.{k}.weight"))?,
                p.wv(&format!("{pre}.{k}.bias"))?,
            ))
        };
        km::layer_norm(g, x0, ln("ln1")?, ws.n1.view(), n, d.dm)?;
        let t = ws.s1.view().slice(0, n * d.dm)?;
        km::ssm_conv(
            g,
            &ws.n1,
            p.w(&format!("{pre}.ssm.conv"))?,
            &ws.s1,
            (1, n, d.dm),
            self.conv == Conv::Causal,
        )?;
        let (g1, g2, out) = (
            self.lin(&format!("{pre}.ssm.gate1"))?,
            self.lin(&format!("{pre}.ssm.gate2"))?,
            self.lin(&format!("{pre}.ssm.out"))?,
        );
        g1.fwd(g, ws.n1.view(), ws.gh.view(), n, Act::Relu, None, self.math)?;
        g2.fwd(
            g,
            ws.gh.view(),
            ws.gg.view(),
            n,
            Act::Sigmoid,
            None,
            self.math,
        )?;
        let uv = p.wv(&format!("{pre}.ssm.uv.weight"))?;
        self.gemm(
            (false, true),
            (n, 2 * d.r, d.dm),
            ws.n1.view(),
            uv,
            ws.uv.view(),
            0.0,
        )?;
        km::ssm_gate_uv(g, &ws.uv, &ws.gg, (&ws.ug, &ws.vg), (n, d.r))?;
        km::ssm_scan(g, (&ws.ug, &ws.vg), &ws.kv, (1, n, d.r), 0)?;
        out.fwd(
            g,
            ws.kv.view(),
            ws.x1.view(),
            n,
            Act::None,
            Some(t),
            self.math,
        )?;
        km::bias_act(g, ws.x1.view(), None, Some(x0), (n, d.dm), Act::None)?;
        km::layer_norm(g, ws.x1.view(), ln("ln2")?, ws.n2.view(), n, d.dm)
    }

    /// The FFN of one sequence by chunks of rows: forward into `out` = x1 + FFN(n2), or (with
    /// `dy` = ∂L/∂out) its VJP, the weights' gradients accumulated and ∂L/∂n2 into `ws.dn`.
    fn ffn(
        &self,
        ws: &BlockWs,
        l: usize,
        n: usize,
        out: Option<View<'_, f32>>,
        dy: Option<View<'_, f32>>,
    ) -> Result<()> {
        let (g, d) = (self.gpu, self.d);
        let lins = (0..4)
            .map(|k| self.lin(&format!("blocks.{l}.ffn.{k}")))
            .collect::<Result<Vec<_>>>()?;
        let widths = [d.dm, d.f, d.wide, d.f, d.dm];
        let step = FFN_ROWS.min(n);
        for r0 in (0..n).step_by(step) {
            let c = step.min(n - r0);
            let hv = |k: usize| ws.h[k].view().slice(0, c * widths[k + 1]);
            let x = chunk(&ws.n2, r0, c, d.dm)?;
            lins[0].fwd(g, x, hv(0)?, c, Act::Relu, None, self.math)?;
            lins[1].fwd(g, hv(0)?, hv(1)?, c, Act::Relu, None, self.math)?;
            lins[2].fwd(g, hv(1)?, hv(2)?, c, Act::Relu, None, self.math)?;
            if let Some(o) = out {
                let oc = o.slice(r0 * d.dm, c * d.dm)?;
                lins[3].fwd(
                    g,
                    hv(2)?,
                    oc,
                    c,
                    Act::None,
                    Some(chunk(&ws.x1, r0, c, d.dm)?),
                    self.math,
                )?;
            }
            let Some(dy) = dy else { continue };
            let mut dcur = dy.slice(r0 * d.dm, c * d.dm)?;
            for k in (0..4).rev() {
                let input = if k == 0 { x } else { hv(k - 1)? };
                let dx = if k == 0 {
                    chunk(&ws.dn, r0, c, d.dm)?
                } else {
                    ws.dh[k - 1].view().slice(0, c * widths[k])?
                };
                lins[k].bwd(g, input, dcur, Some(dx), c, ws.part.view(), self.math)?;
                if k > 0 {
                    kb::act(g, hv(k - 1)?, dx, c * widths[k], 1)?;
                }
                dcur = dx;
            }
        }
        Ok(())
    }

    /// The block's VJP after [`Self::block_fwd`] and the FFN's: `dh` (∂L/∂out of the sequence)
    /// becomes ∂L/∂x0 in place.
    fn block_bwd(
        &self,
        ws: &BlockWs,
        l: usize,
        x0: View<'_, f32>,
        dh: View<'_, f32>,
        n: usize,
    ) -> Result<()> {
        let (g, d, p) = (self.gpu, self.d, &self.p);
        let pre = format!("blocks.{l}");
        let part = ws.part.view();
        let ln_bwd = |k: &str, x: View<'_, f32>| -> Result<()> {
            let xhat = ws.s1.view().slice(0, n * d.dm)?;
            let res = LnGrad::Rows {
                dx: dh,
                res: Some(dh),
            };
            kb::layer_norm(
                g,
                LnInput::Rows(x),
                p.wv(&format!("{pre}.{k}.weight"))?,
                ws.dn.view(),
                res,
                xhat,
                (n, d.dm),
            )?;
            kt::col_sum(
                g,
                xhat,
                (n, d.dm),
                part,
                p.g(&format!("{pre}.{k}.weight"))?,
                true,
            )?;
            kt::col_sum(
                g,
                ws.dn.view(),
                (n, d.dm),
                part,
                p.g(&format!("{pre}.{k}.bias"))?,
                true,
            )
        };
        // x2 = x1 + FFN(LN₂(x1)): ∂x1 = ∂x2 + LN₂ᵀ(∂n2).
        ln_bwd("ln2", ws.x1.view())?;
        // x1 = x0 + out(kv) + b + conv(n1): ∂n1 from the conv, the gates and U, V.
        let (g1, g2, out) = (
            self.lin(&format!("{pre}.ssm.gate1"))?,
            self.lin(&format!("{pre}.ssm.gate2"))?,
            self.lin(&format!("{pre}.ssm.out"))?,
        );
        out.bwd(g, ws.kv.view(), dh, Some(ws.dkv.view()), n, part, self.math)?;
        super::fill(g, ws.dn.view(), 0.0)?;
        let dtaps = ws.s1.view().slice(0, 3 * n * d.dm)?;
        let conv = format!("{pre}.ssm.conv");
        kb::conv(
            g,
            dh,
            ws.n1.view(),
            p.wv(&conv)?,
            (ws.dn.view(), dtaps),
            (1, n, d.dm),
            self.conv == Conv::Causal,
        )?;
        kt::col_sum(g, dtaps, (n, 3 * d.dm), part, p.g(&conv)?, true)?;
        kb::scan(
            g,
            (ws.ug.view(), ws.vg.view()),
            ws.dkv.view(),
            (ws.dug.view(), ws.dvg.view()),
            (1, n, d.r),
        )?;
        kb::gate_uv(
            g,
            ws.uv.view(),
            ws.gg.view(),
            (ws.dug.view(), ws.dvg.view()),
            (ws.duv.view(), ws.dgg.view()),
            (n, d.r),
        )?;
        kb::act(g, ws.gg.view(), ws.dgg.view(), n * d.r, 2)?;
        g2.bwd(
            g,
            ws.gh.view(),
            ws.dgg.view(),
            Some(ws.dgh.view()),
            n,
            part,
            self.math,
        )?;
        kb::act(g, ws.gh.view(), ws.dgh.view(), n * d.gh, 1)?;
        g1.bwd_acc(
            g,
            ws.n1.view(),
            ws.dgh.view(),
            ws.dn.view(),
            n,
            part,
            self.math,
        )?;
        let uv = format!("{pre}.ssm.uv.weight");
        self.gemm(
            (true, false),
            (2 * d.r, d.dm, n),
            ws.duv.view(),
            ws.n1.view(),
            p.g(&uv)?,
            1.0,
        )?;
        self.gemm(
            (false, false),
            (n, d.dm, 2 * d.r),
            ws.duv.view(),
            p.wv(&uv)?,
            ws.dn.view(),
            1.0,
        )?;
        // x1 = x0 + …(LN₁(x0)): ∂x0 = ∂x1 + LN₁ᵀ(∂n1).
        ln_bwd("ln1", x0)
    }

    /// The HTT cores' and phases' gradients from ∂L/∂h (rows, D): the token scatter into
    /// ∂E for the row groups up to the largest id (the rest of ∂E is zero), then the cores.
    fn htt_bwd(&self, ids: ArrayView2<'_, usize>, dh: View<'_, f32>) -> Result<()> {
        let (g, d) = (self.gpu, self.d);
        let (v1, v2) = (d.htt.v1 as usize, d.htt.v2 as usize);
        let top = ids.iter().copied().max().unwrap_or(0);
        let groups = top / v2 + 1;
        let vocab = if groups >= v1 {
            d.vocab
        } else {
            (groups * v2).min(d.vocab)
        };
        let flat: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
        let tr = TokenRows::of(&flat);
        let (rows, start, toks) = (
            g.upload(&tr.rows)?,
            g.upload(&tr.start)?,
            g.upload(&tr.toks)?,
        );
        let de = g.alloc::<f32>(vocab * d.dm)?;
        super::fill(g, de.view(), 0.0)?;
        kb::embed(
            g,
            dh,
            (rows.view(), start.view(), toks.view()),
            tr.toks.len(),
            de.view(),
            (flat.len(), vocab, d.dm),
        )?;
        let scratch = g.alloc::<f32>(v1 * d.htt.r as usize * d.htt.d1 as usize)?;
        let cores = (
            self.p.wv("htt.core1")?,
            self.p.wv("htt.core2")?,
            self.cos.view(),
            self.sin.view(),
        );
        let grads = (
            self.p.g("htt.core1")?,
            self.p.g("htt.core2")?,
            self.p.g("htt.phase")?,
        );
        kb::htt(
            g,
            de.view(),
            cores,
            scratch.view(),
            grads,
            (vocab, d.dm),
            d.htt,
        )
    }
}
