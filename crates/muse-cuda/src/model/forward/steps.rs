//! The device's implementation of the model's steps (`muse_reference::model::structure`): every
//! activation is a workspace buffer ([`Slot`]), each step queues kernels and GEMMs on the stream.

use muse_reference::model::structure::ModelSteps;
use muse_reference::model::{Conv, Scan};
use muse_reference::Result;
use num_complex::Complex64;

use super::{Bk, CudaModel, StageTimer, Trace, Workspace};
use crate::bk_core;
use crate::model as kern;

/// A (B, N, D) activation of the device forward: which workspace buffer holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// The residual stream h.
    H,
    /// A LayerNorm output x.
    X,
    /// The local attention's output.
    Local,
    /// The AR-SSM's output.
    Global,
}

/// The device's steps of the model: every activation lives in the workspace, each step queues
/// kernels and GEMMs on the one stream (no host wait unless tracing).
pub(crate) struct CudaSteps<'a> {
    pub(crate) m: &'a CudaModel,
    pub(crate) ws: &'a mut Workspace,
    pub(crate) trace: Option<&'a mut Trace>,
    pub(crate) timer: Option<&'a mut StageTimer>,
}

impl CudaSteps<'_> {
    pub(crate) fn mark(&mut self, name: &'static str) -> Result<()> {
        match self.timer.as_deref_mut() {
            Some(t) => t.mark(self.m.gpu, name),
            None => Ok(()),
        }
    }

    fn keep(&mut self, name: String, buf: Slot) -> Result<()> {
        if let Some(t) = self.trace.as_deref_mut() {
            let b = match buf {
                Slot::H => &self.ws.h,
                Slot::X => &self.ws.x,
                Slot::Local => &self.ws.local,
                Slot::Global => &self.ws.global,
            };
            t.push((name, b.to_vec()?));
        }
        Ok(())
    }

    fn dims(&self) -> (usize, usize, usize, usize) {
        let (b, n) = (self.ws.batch, self.ws.n);
        (b, n, b * n, self.m.dims.d_model)
    }
}

impl ModelSteps for CudaSteps<'_> {
    type Act = Slot;
    type Gate = ();
    type Logits = ();

    fn embed(&mut self) -> Result<Slot> {
        let (m, ws) = (self.m, &*self.ws);
        let (_, n, rows, dm) = self.dims();
        kern::embed(
            m.gpu,
            &ws.ids,
            (&m.core1, &m.core2, &m.cos),
            Some(&m.pos),
            &ws.h,
            (rows, n, dm),
            m.shape,
        )?;
        self.mark("embedding")?;
        self.keep("embedding".into(), Slot::H)?;
        Ok(Slot::H)
    }

    fn pre_norm(&mut self, l: usize, h: &Slot) -> Result<Slot> {
        debug_assert_eq!(*h, Slot::H);
        let (m, ws) = (self.m, &*self.ws);
        let (_, _, rows, dm) = self.dims();
        let blk = &m.blocks[l];
        kern::layer_norm(
            m.gpu,
            ws.h.view(),
            (blk.norm.0.view(), blk.norm.1.view()),
            ws.x.view(),
            rows,
            dm,
        )?;
        Ok(Slot::X)
    }

    fn gate(&mut self, l: usize, x: &Slot) -> Result<()> {
        debug_assert_eq!(*x, Slot::X);
        let (batch, n, rows, dm) = self.dims();
        let m = self.m;
        let (g, blk) = (m.gpu, &m.blocks[l]);
        let ws = &mut *self.ws;
        // v = clamp(v_proj(x), ±3), G = BK-Core(H0 + diag v, z), gate = σ(γ|Im G|)
        m.gemm(
            &ws.a16,
            (rows, 1, dm),
            &ws.x,
            &blk.v_w,
            blk.h16.as_ref().map(|h| &h.v_w),
            &ws.v,
        )?;
        let h0 = [&blk.h0[0], &blk.h0[1], &blk.h0[2]];
        match &mut ws.bk {
            Bk::F64(p, bws) => {
                p.z = Complex64::new(0.0, f64::from(blk.z_im as f32));
                kern::bk_prep(g, &ws.v, blk.v_b, h0, (&p.a, &p.b, &p.c), (batch, n), true)?;
                bk_core::forward(g, p, bws)?;
                kern::gate(g, &bws.g, blk.gs, &ws.gate, rows)?;
            }
            Bk::F32(p, bws) => {
                p.z = Complex64::new(0.0, blk.z_im);
                kern::bk_prep(g, &ws.v, blk.v_b, h0, (&p.a, &p.b, &p.c), (batch, n), false)?;
                bk_core::forward(g, p, bws)?;
                kern::gate(g, &bws.g, blk.gs, &ws.gate, rows)?;
            }
        }
        self.mark("layer_norm + potential + bk_core + gate")
    }

    fn local(&mut self, l: usize, x: &Slot) -> Result<Slot> {
        debug_assert_eq!(*x, Slot::X);
        let (batch, n, rows, dm) = self.dims();
        let (m, ws) = (self.m, &*self.ws);
        let (d, blk) = (&m.dims, &m.blocks[l]);
        m.gemm(
            &ws.a16,
            (rows, 3 * dm, dm),
            &ws.x,
            &blk.wqkv,
            blk.h16.as_ref().map(|h| &h.wqkv),
            &ws.qkv,
        )?;
        crate::model_attn::window_attn(
            m.gpu,
            &ws.qkv,
            &ws.o,
            (batch, n, d.heads, dm / d.heads, d.window),
            blk.attn,
        )?;
        m.gemm(
            &ws.a16,
            (rows, dm, dm),
            &ws.o,
            &blk.wo,
            blk.h16.as_ref().map(|h| &h.wo),
            &ws.local,
        )?;
        self.mark("attention (qkv, windows, W_o)")?;
        Ok(Slot::Local)
    }

    fn global(&mut self, l: usize, x: &Slot) -> Result<Slot> {
        debug_assert_eq!(*x, Slot::X);
        let (batch, n, rows, dm) = self.dims();
        let (m, ws) = (self.m, &*self.ws);
        let (g, d, blk) = (m.gpu, &m.dims, &m.blocks[l]);
        let (r, gh) = (d.ssm_rank, d.ssm_hidden);
        let h16 = blk.h16.as_ref();
        kern::ssm_conv(
            g,
            &ws.x,
            &blk.taps,
            &ws.t,
            (batch, n, dm),
            m.num.conv == Conv::Causal,
        )?;
        m.linear_act(
            &ws.a16,
            (rows, gh, dm),
            &ws.x,
            &blk.g1,
            h16.map(|h| &h.g1),
            &ws.gh,
            kern::Act::Relu,
            None,
        )?;
        m.linear_act(
            &ws.a16,
            (rows, r, gh),
            &ws.gh,
            &blk.g2,
            h16.map(|h| &h.g2),
            &ws.gg,
            kern::Act::Sigmoid,
            None,
        )?;
        m.gemm(
            &ws.a16,
            (rows, 2 * r, dm),
            &ws.x,
            &blk.uv,
            h16.map(|h| &h.uv),
            &ws.uv,
        )?;
        kern::ssm_gate_uv(g, &ws.uv, &ws.gg, (&ws.ug, &ws.vg), (rows, r))?;
        let bs = match m.num.scan {
            Scan::Cumsum => 0,
            Scan::Pseudo { bs } => bs,
        };
        kern::ssm_scan(g, (&ws.ug, &ws.vg), &ws.kv, (batch, n, r), bs)?;
        m.linear_act(
            &ws.a16,
            (rows, dm, r),
            &ws.kv,
            &blk.out,
            h16.map(|h| &h.out),
            &ws.global,
            kern::Act::None,
            Some(&ws.t),
        )?;
        self.mark("ar_ssm")?;
        if l == 0 && self.trace.is_some() {
            self.keep("block0.x".into(), Slot::X)?;
            let gate = self.ws.gate.to_vec()?;
            if let Some(t) = self.trace.as_deref_mut() {
                t.push(("block0.gate".into(), gate));
            }
            self.keep("block0.local".into(), Slot::Local)?;
            self.keep("block0.global".into(), Slot::Global)?;
        }
        Ok(Slot::Global)
    }

    fn mix_norm_residual(
        &mut self,
        l: usize,
        h: Slot,
        local: Slot,
        global: Slot,
        _gate: (),
    ) -> Result<Slot> {
        debug_assert_eq!((h, local, global), (Slot::H, Slot::Local, Slot::Global));
        let (_, _, rows, dm) = self.dims();
        let (m, ws) = (self.m, &*self.ws);
        let blk = &m.blocks[l];
        kern::mix_ln_res(
            m.gpu,
            (&ws.local, &ws.global),
            &ws.gate,
            (&blk.out_norm.0, &blk.out_norm.1),
            &ws.h,
            rows,
            dm,
        )?;
        self.mark("mix + layer_norm + residual")?;
        self.keep(format!("block{l}"), Slot::H)?;
        Ok(Slot::H)
    }

    fn final_norm(&mut self, h: &Slot) -> Result<Slot> {
        debug_assert_eq!(*h, Slot::H);
        let (_, _, rows, dm) = self.dims();
        let (m, ws) = (self.m, &*self.ws);
        kern::layer_norm(
            m.gpu,
            ws.h.view(),
            (m.final_norm.0.view(), m.final_norm.1.view()),
            ws.x.view(),
            rows,
            dm,
        )?;
        self.keep("final_norm".into(), Slot::X)?;
        Ok(Slot::X)
    }

    fn decode(&mut self, x: &Slot) -> Result<()> {
        debug_assert_eq!(*x, Slot::X);
        if self.m.train {
            return Err(muse_reference::Error::Unsupported {
                op: "model",
                backend: "cuda",
                what: "a whole forward of a trainer's model (its logits run by chunks; use CudaTrainer::loss)".into(),
            });
        }
        let (_, _, rows, dm) = self.dims();
        let (m, ws) = (self.m, &*self.ws);
        m.gemm(
            &ws.a16,
            (rows, m.vpad, dm),
            &ws.x,
            &m.table,
            m.table16.as_ref(),
            &ws.logits,
        )?;
        self.mark("final layer_norm + decoder")
    }
}
