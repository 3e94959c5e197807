//! The VRAM study's baseline transformer (design model.md §6.3; CPU reference
//! `muse_reference::baseline`) on the GPU, as the original built it: token embedding (no
//! positions), L post-LN `nn.TransformerEncoderLayer`s (ReLU FFN, unmasked softmax attention,
//! dropout the identity), a Linear head. No checkpointing: the forward keeps what autograd would
//! (per layer its input, q, k, v, the merged heads, both LayerNorms' inputs, the FFN's hidden
//! activations), f32 or rounded to 16 bits ([`Store`]); the attention's probabilities are
//! recomputed one head at a time in the backward (as PyTorch's SDPA does), the logits exist
//! [`super::study::HEAD_ROWS`] rows at a time.
//!
//! ```no_run
//! use muse_cuda::{gemm::GemmMath, vram::{baseline::BaselineGpu, Store}, Gpu};
//! use muse_reference::baseline::BaselineWeights;
//! let w = BaselineWeights::zeros(50, 16, 2, 2, 32);
//! let m = BaselineGpu::new(Gpu::get()?, &w, GemmMath::Fp32)?;
//! let loss = m.step(ndarray::Array2::from_elem((1, 5), 7usize).view(), Store::F32)?;
//! # Ok::<(), muse_reference::Error>(())
//! ```

use muse_reference::baseline::BaselineWeights;
use muse_reference::{Error, Result};
use ndarray::ArrayView2;

use super::params::{write_back, DevParams};
use super::study::{head_sum_loss, upload_ids, Head, Lin};
use super::{from_half, Store};
use crate::device::{Buf, Gpu, View};
use crate::gemm::{gemm, GemmMath, HalfFormat};
use crate::model::{self as km, Act};
use crate::model_bwd::{self as kb, LnGrad, LnInput, TokenRows};
use crate::train as kt;

/// Head `bh` (of B·H) of a (B, H, N, dh) tensor: `len` = N·dh elements.
fn head_of(t: View<'_, f32>, bh: usize, len: usize) -> Result<View<'_, f32>> {
    t.slice(bh * len, len)
}

/// The baseline's weights and gradients on the device.
pub struct BaselineGpu {
    gpu: &'static Gpu,
    p: DevParams,
    vocab: usize,
    dm: usize,
    layers: usize,
    heads: usize,
    ffn: usize,
    math: GemmMath,
}

/// A kept activation: f32, or its 16-bit rounding.
enum Kept {
    F32(Buf<f32>),
    Half(Buf<u16>, HalfFormat),
}

impl Kept {
    fn keep(gpu: &'static Gpu, x: Buf<f32>, store: Store) -> Result<Self> {
        let fmt = match store {
            Store::F32 => return Ok(Self::F32(x)),
            Store::Fp16 => HalfFormat::Fp16,
            Store::Bf16 => HalfFormat::Bf16,
        };
        let h = gpu.alloc::<u16>(x.len())?;
        km::to_half(gpu, fmt, x.view(), h.view(), x.len())?;
        Ok(Self::Half(h, fmt))
    }

    /// The f32 values: the buffer itself, or expanded into `tmp`.
    fn get<'a>(
        &'a self,
        gpu: &'static Gpu,
        tmp: &'a mut Option<Buf<f32>>,
    ) -> Result<View<'a, f32>> {
        match self {
            Self::F32(b) => Ok(b.view()),
            Self::Half(h, fmt) => {
                let t = gpu.alloc::<f32>(h.len())?;
                from_half(gpu, h.view(), t.view(), h.len(), *fmt == HalfFormat::Bf16)?;
                Ok(tmp.insert(t).view())
            }
        }
    }
}

/// What one layer keeps for its backward, in this order: its input x, q, k, v (heads layout
/// (B, H, N, dh)), the merged heads, a = x + attn (LN₁'s input), y = LN₁(a), the FFN's hidden
/// ReLU(y·W₁ᵀ + b₁), z = y + FFN(y) (LN₂'s input).
const KEPT: usize = 9;

impl BaselineGpu {
    /// Uploads `w` (rounded to f32); `math` is the GEMMs'.
    pub fn new(gpu: &'static Gpu, w: &BaselineWeights, math: GemmMath) -> Result<Self> {
        let (vocab, dm) = w.embedding.dim();
        let ffn = w.layers.first().map_or(0, |l| l.linear1.w.nrows());
        if w.heads == 0 || dm % w.heads != 0 || w.layers.is_empty() {
            return Err(Error::Domain {
                op: "vram",
                arg: "weights",
                rule: format!(
                    "need at least one layer and heads dividing D (D {dm}, {} heads, {} layers)",
                    w.heads,
                    w.layers.len()
                ),
            });
        }
        let mut host = w.clone();
        let p = DevParams::upload(gpu, &mut |f| host.for_each_param(f), &[])?;
        Ok(Self {
            gpu,
            p,
            vocab,
            dm,
            layers: w.layers.len(),
            heads: w.heads,
            ffn,
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

    /// The gradients of the last [`BaselineGpu::step`], as weights of `like`'s shapes.
    pub fn grads(&self, like: &BaselineWeights) -> Result<BaselineWeights> {
        let mut g = like.clone();
        write_back(&self.p.grads()?, &mut |f| g.for_each_param(f))?;
        Ok(g)
    }

    fn lin(&self, l: usize, name: &str) -> Result<Lin<'_>> {
        Lin::of(&self.p, &format!("layers.{l}.{name}"))
    }

    fn norm(&self, l: usize, k: &str) -> Result<[View<'_, f32>; 4]> {
        let n = |s: &str| format!("layers.{l}.{k}.{s}");
        Ok([
            self.p.wv(&n("weight"))?,
            self.p.wv(&n("bias"))?,
            self.p.g(&n("weight"))?,
            self.p.g(&n("bias"))?,
        ])
    }

    /// One forward and backward of L = Σ logits for ids (B, N): returns L and leaves ∂L/∂w in
    /// the gradients (zeroed first); `store` is the precision of the kept activations.
    pub fn step(&self, ids: ArrayView2<'_, usize>, store: Store) -> Result<f64> {
        let g = self.gpu;
        let (b, n) = ids.dim();
        let (rows, dm) = (b * n, self.dm);
        let ids_dev = upload_ids(g, ids, self.vocab)?;
        self.p.zero_grads(g)?;
        let x = g.alloc::<f32>(rows * dm)?;
        super::embed_rows(
            g,
            ids_dev.view(),
            self.p.wv("embedding")?,
            x.view(),
            (rows, self.vocab, dm),
        )?;
        let mut kept: Vec<Vec<Kept>> = Vec::with_capacity(self.layers);
        let mut x = x;
        for l in 0..self.layers {
            let (acts, out) = self.layer_fwd(l, x, (b, n))?;
            kept.push(
                acts.into_iter()
                    .map(|a| Kept::keep(g, a, store))
                    .collect::<Result<_>>()?,
            );
            x = out;
        }
        let dx = g.alloc::<f32>(rows * dm)?;
        let head = Head {
            norm: None,
            mid: None,
            up: Lin::of(&self.p, "head")?,
        };
        let loss = head_sum_loss(g, &head, x.view(), dx.view(), (rows, dm), self.math)?;
        drop(x);
        let mut dx = dx;
        for l in (0..self.layers).rev() {
            let acts = kept.pop().expect("one per layer");
            dx = self.layer_bwd(l, &acts, dx, (b, n))?;
        }
        let flat: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
        let tr = TokenRows::of(&flat);
        let (r, s, t) = (
            g.upload(&tr.rows)?,
            g.upload(&tr.start)?,
            g.upload(&tr.toks)?,
        );
        kb::embed(
            g,
            dx.view(),
            (r.view(), s.view(), t.view()),
            tr.toks.len(),
            self.p.g("embedding")?,
            (rows, self.vocab, dm),
        )?;
        g.sync("baseline step")?;
        Ok(loss)
    }

    /// Layer l on x (rows, D): its kept activations (x first) and its output LN₂(z).
    fn layer_fwd(
        &self,
        l: usize,
        x: Buf<f32>,
        (b, n): (usize, usize),
    ) -> Result<(Vec<Buf<f32>>, Buf<f32>)> {
        let (g, dm, math) = (self.gpu, self.dm, self.math);
        let (rows, hd) = (b * n, self.dm / self.heads);
        let shape = (b, n, self.heads, hd);
        let a = |len: usize| g.alloc::<f32>(len);
        let [q, k, v] = [a(rows * dm)?, a(rows * dm)?, a(rows * dm)?];
        {
            let qkv = a(rows * 3 * dm)?;
            self.lin(l, "in_proj")?
                .fwd(g, x.view(), qkv.view(), rows, Act::None, None, math)?;
            for (i, dst) in [&q, &k, &v].into_iter().enumerate() {
                kb::head_perm(g, qkv.view(), dst.view(), shape, (3 * dm, i * dm), true)?;
            }
        }
        let merged = a(rows * dm)?;
        {
            let (o, s) = (a(rows * dm)?, a(n * n)?);
            let scale = 1.0 / (hd as f32).sqrt();
            for bh in 0..b * self.heads {
                let len = n * hd;
                gemm(
                    g,
                    (false, true),
                    (n, n, hd),
                    head_of(q.view(), bh, len)?,
                    head_of(k.view(), bh, len)?,
                    s.view(),
                    0.0,
                    math,
                )?;
                super::softmax(g, s.view(), (n, n), scale)?;
                gemm(
                    g,
                    (false, false),
                    (n, hd, n),
                    s.view(),
                    head_of(v.view(), bh, len)?,
                    head_of(o.view(), bh, len)?,
                    0.0,
                    math,
                )?;
            }
            kb::head_perm(g, o.view(), merged.view(), shape, (dm, 0), false)?;
        }
        let att = a(rows * dm)?;
        self.lin(l, "out_proj")?.fwd(
            g,
            merged.view(),
            att.view(),
            rows,
            Act::None,
            Some(x.view()),
            math,
        )?;
        let [n1w, n1b, ..] = self.norm(l, "norm1")?;
        let y = a(rows * dm)?;
        km::layer_norm(g, att.view(), (n1w, n1b), y.view(), rows, dm)?;
        let hid = a(rows * self.ffn)?;
        self.lin(l, "linear1")?
            .fwd(g, y.view(), hid.view(), rows, Act::Relu, None, math)?;
        let z = a(rows * dm)?;
        self.lin(l, "linear2")?.fwd(
            g,
            hid.view(),
            z.view(),
            rows,
            Act::None,
            Some(y.view()),
            math,
        )?;
        let [n2w, n2b, ..] = self.norm(l, "norm2")?;
        let out = a(rows * dm)?;
        km::layer_norm(g, z.view(), (n2w, n2b), out.view(), rows, dm)?;
        Ok((vec![x, q, k, v, merged, att, y, hid, z], out))
    }

    /// Layer l's VJP: ∂L/∂out (rows, D) in, ∂L/∂x out.
    fn layer_bwd(
        &self,
        l: usize,
        kept: &[Kept],
        dout: Buf<f32>,
        (b, n): (usize, usize),
    ) -> Result<Buf<f32>> {
        let (g, dm, math) = (self.gpu, self.dm, self.math);
        let (rows, hd) = (b * n, self.dm / self.heads);
        let shape = (b, n, self.heads, hd);
        if kept.len() != KEPT {
            return Err(Error::Backend {
                backend: "cuda",
                message: format!("baseline: {} kept activations, {KEPT} expected", kept.len()),
            });
        }
        let mut tmp: Vec<Option<Buf<f32>>> = (0..KEPT).map(|_| None).collect();
        let mut vals = Vec::with_capacity(KEPT);
        for (k, t) in kept.iter().zip(tmp.iter_mut()) {
            vals.push(k.get(g, t)?);
        }
        let [x, q, k, v, merged, att, y, hid, z] = <[View<'_, f32>; KEPT]>::try_from(vals)
            .map_err(|_| Error::Backend {
                backend: "cuda",
                message: "baseline: kept activations".into(),
            })?;
        let a = |len: usize| g.alloc::<f32>(len);
        let part = a(kt::COL_PARTS * (3 * dm).max(self.ffn))?;
        let xhat = a(rows * dm)?;
        let ln_bwd = |name: &str,
                      input: View<'_, f32>,
                      dy: View<'_, f32>,
                      dx: View<'_, f32>|
         -> Result<()> {
            let [w, _, gw, gb] = self.norm(l, name)?;
            kb::layer_norm(
                g,
                LnInput::Rows(input),
                w,
                dy,
                LnGrad::Rows { dx, res: None },
                xhat.view(),
                (rows, dm),
            )?;
            kt::col_sum(g, xhat.view(), (rows, dm), part.view(), gw, true)?;
            kt::col_sum(g, dy, (rows, dm), part.view(), gb, true)
        };
        // out = LN₂(z), z = y + W₂·hid + b₂, hid = ReLU(W₁y + b₁), y = LN₁(att).
        let dz = a(rows * dm)?;
        ln_bwd("norm2", z, dout.view(), dz.view())?;
        drop(dout);
        let dhid = a(rows * self.ffn)?;
        self.lin(l, "linear2")?.bwd(
            g,
            hid,
            dz.view(),
            Some(dhid.view()),
            rows,
            part.view(),
            math,
        )?;
        kb::act(g, hid, dhid.view(), rows * self.ffn, 1)?;
        self.lin(l, "linear1")?
            .bwd_acc(g, y, dhid.view(), dz.view(), rows, part.view(), math)?;
        drop(dhid);
        let da = a(rows * dm)?;
        ln_bwd("norm1", att, dz.view(), da.view())?;
        drop(dz);
        // att = x + W_o·merged + b_o; merged = the heads of softmax(q·kᵀ/√dh)·v.
        let dmerged = a(rows * dm)?;
        self.lin(l, "out_proj")?.bwd(
            g,
            merged,
            da.view(),
            Some(dmerged.view()),
            rows,
            part.view(),
            math,
        )?;
        let d_o = a(rows * dm)?;
        kb::head_perm(g, dmerged.view(), d_o.view(), shape, (dm, 0), true)?;
        drop(dmerged);
        let [dq, dk, dv] = [a(rows * dm)?, a(rows * dm)?, a(rows * dm)?];
        {
            let (p, dp) = (a(n * n)?, a(n * n)?);
            let scale = 1.0 / (hd as f32).sqrt();
            for bh in 0..b * self.heads {
                let len = n * hd;
                let (qh, kh, vh, doh) = (
                    head_of(q, bh, len)?,
                    head_of(k, bh, len)?,
                    head_of(v, bh, len)?,
                    head_of(d_o.view(), bh, len)?,
                );
                gemm(g, (false, true), (n, n, hd), qh, kh, p.view(), 0.0, math)?;
                super::softmax(g, p.view(), (n, n), scale)?;
                gemm(
                    g,
                    (true, false),
                    (n, hd, n),
                    p.view(),
                    doh,
                    head_of(dv.view(), bh, len)?,
                    0.0,
                    math,
                )?;
                gemm(g, (false, true), (n, n, hd), doh, vh, dp.view(), 0.0, math)?;
                super::softmax_bwd(g, p.view(), dp.view(), (n, n), scale)?;
                gemm(
                    g,
                    (false, false),
                    (n, hd, n),
                    dp.view(),
                    kh,
                    head_of(dq.view(), bh, len)?,
                    0.0,
                    math,
                )?;
                gemm(
                    g,
                    (true, false),
                    (n, hd, n),
                    dp.view(),
                    qh,
                    head_of(dk.view(), bh, len)?,
                    0.0,
                    math,
                )?;
            }
        }
        drop(d_o);
        let dqkv = a(rows * 3 * dm)?;
        for (i, src) in [&dq, &dk, &dv].into_iter().enumerate() {
            kb::head_perm(g, src.view(), dqkv.view(), shape, (3 * dm, i * dm), false)?;
        }
        drop((dq, dk, dv));
        let dx = a(rows * dm)?;
        self.lin(l, "in_proj")?
            .bwd(g, x, dqkv.view(), Some(dx.view()), rows, part.view(), math)?;
        km::bias_act(g, dx.view(), None, Some(da.view()), (rows, dm), Act::None)?;
        Ok(dx)
    }
}
