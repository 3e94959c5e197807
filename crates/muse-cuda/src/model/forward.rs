//! The device-resident forward of the language model: ids → logits with every activation on the
//! GPU, one stream, no host round trip between layers. The structure is the CPU reference's
//! (`reference/src/model/block.rs`); each step names the reference function it mirrors.

use std::sync::Mutex;

use muse_reference::model::structure;
use muse_reference::model::{ModelDims, Numerics};
use muse_reference::{Error, Result};
use ndarray::{Array3, ArrayView2};
use num_complex::Complex64;

use super::HttShape;
use crate::bk_core::{ForwardWs, Problem};
use crate::device::{Buf, Gpu, GpuFloat};
use crate::gemm::{gemm_nt, GemmMath};
use crate::model as kern;

mod graph;
mod pooling;
pub(crate) mod steps;
mod timer;
mod upload;

use graph::Graph;
pub(crate) use steps::CudaSteps;
pub use timer::StageTimer;
pub(crate) use upload::{BlockDev, Lin, RawScalars};

const OP: &str = "model";

/// Named intermediates of a traced forward, each flattened row-major.
pub type Trace = Vec<(String, Vec<f32>)>;

/// BK-Core on the device in the precision the profile needs.
pub(crate) enum Bk {
    F32(Problem<f32>, ForwardWs<f32>),
    F64(Problem<f64>, ForwardWs<f64>),
}

/// Activations for one (B, N).
pub(crate) struct Workspace {
    pub(crate) batch: usize,
    pub(crate) n: usize,
    /// bf16 copy of a GEMM input (bf16 mode; one element otherwise).
    pub(crate) a16: Buf<u16>,
    graph: Option<Graph>,
    pub(crate) ids: Buf<i32>,
    pub(crate) h: Buf<f32>,
    pub(crate) x: Buf<f32>,
    pub(crate) qkv: Buf<f32>,
    pub(crate) o: Buf<f32>,
    pub(crate) local: Buf<f32>,
    pub(crate) v: Buf<f32>,
    pub(crate) gate: Buf<f32>,
    pub(crate) t: Buf<f32>,
    pub(crate) gh: Buf<f32>,
    pub(crate) gg: Buf<f32>,
    pub(crate) uv: Buf<f32>,
    pub(crate) ug: Buf<f32>,
    pub(crate) vg: Buf<f32>,
    pub(crate) kv: Buf<f32>,
    pub(crate) global: Buf<f32>,
    pub(crate) logits: Buf<f32>,
    pub(crate) bk: Bk,
}

/// The model's weights on the GPU with the numerics of one profile.
pub struct CudaModel {
    pub(crate) gpu: &'static Gpu,
    pub(crate) dims: ModelDims,
    pub(crate) num: Numerics,
    pub(crate) math: GemmMath,
    pub(crate) shape: HttShape,
    pub(crate) core1: Buf<f32>,
    pub(crate) core2: Buf<f32>,
    pub(crate) cos: Buf<f32>,
    pub(crate) table: Buf<f32>,
    pub(crate) table16: Option<Buf<u16>>,
    pub(crate) vpad: usize,
    pub(crate) pos: Buf<f32>,
    pub(crate) blocks: Vec<BlockDev>,
    pub(crate) final_norm: (Buf<f32>, Buf<f32>),
    pub(crate) ws: Mutex<Option<Workspace>>,
    /// Owned by a trainer ([`super::train::CudaTrainer`]): workspaces hold no logits (its
    /// decoder runs by chunks) and a whole forward is refused.
    pub(crate) train: bool,
    /// The format of the 16-bit copies (`table16`, `h16`) when present.
    pub(crate) half: crate::gemm::HalfFormat,
    /// S of a loss-scaled fp16 step: the cross-entropy's gradient is multiplied by it (1 otherwise).
    pub(crate) loss_scale: f32,
    /// Whether workspaces are blocks of the GPU's pool (default) or driver allocations
    /// ([`CudaModel::set_pooled`], `model/forward/pooling.rs`).
    pub(crate) pooled: bool,
}

/// A (batch, n) BK-Core problem in `T` (z set per block before each launch) and its workspace.
fn bk_problem<T: GpuFloat>(
    gpu: &'static Gpu,
    batch: usize,
    n: usize,
) -> Result<(Problem<T>, ForwardWs<T>)> {
    let off = batch * (n - 1);
    let p = Problem {
        batch,
        n,
        z: Complex64::new(0.0, 0.0),
        a: gpu.alloc(batch * n)?,
        b: gpu.alloc(off)?,
        c: gpu.alloc(off)?,
    };
    let ws = ForwardWs::new(gpu, &p)?;
    Ok((p, ws))
}

impl CudaModel {
    /// The dims.
    pub fn dims(&self) -> &ModelDims {
        &self.dims
    }

    fn workspace(&self, batch: usize, n: usize) -> Result<Workspace> {
        let g = self.gpu;
        let (rows, d, r) = (batch * n, self.dims.d_model, self.dims.ssm_rank);
        let f = |len| g.alloc::<f32>(len);
        let bk = if self.num.complex64 {
            let (p, ws) = bk_problem(g, batch, n)?;
            Bk::F64(p, ws)
        } else {
            let (p, ws) = bk_problem(g, batch, n)?;
            Bk::F32(p, ws)
        };
        let widest = d.max(self.dims.ssm_hidden).max(r);
        Ok(Workspace {
            batch,
            n,
            a16: g.alloc(if self.table16.is_some() {
                rows * widest
            } else {
                1
            })?,
            ids: g.alloc(rows)?,
            h: f(rows * d)?,
            x: f(rows * d)?,
            qkv: f(rows * 3 * d)?,
            o: f(rows * d)?,
            local: f(rows * d)?,
            v: f(rows)?,
            gate: f(rows)?,
            t: f(rows * d)?,
            gh: f(rows * self.dims.ssm_hidden)?,
            gg: f(rows * r)?,
            uv: f(rows * 2 * r)?,
            ug: f(rows * r)?,
            vg: f(rows * r)?,
            kv: f(rows * r)?,
            global: f(rows * d)?,
            logits: f(if self.train { 1 } else { rows * self.vpad })?,
            bk,
            graph: None,
        })
    }

    /// Drops the cached activations (their bytes leave the allocation peak: pooled, their
    /// wholly free slabs go back to the driver).
    pub fn release_workspace(&self) {
        if let Ok(mut ws) = self.ws.lock() {
            *ws = None;
        }
        self.trim_pool();
    }

    fn check_ids(&self, ids: &ArrayView2<'_, usize>) -> Result<Vec<i32>> {
        let (b, n) = ids.dim();
        if b == 0 || n == 0 || n > self.dims.n_seq {
            return Err(Error::Domain {
                op: OP,
                arg: "ids",
                rule: format!(
                    "must be (B, N) with B >= 1 and 1 <= N <= n_seq = {}, got ({b}, {n})",
                    self.dims.n_seq
                ),
            });
        }
        ids.iter()
            .map(|&t| {
                if t < self.dims.vocab {
                    Ok(t as i32)
                } else {
                    Err(Error::Domain {
                        op: OP,
                        arg: "ids",
                        rule: format!("must be < vocab_size = {}, got {t}", self.dims.vocab),
                    })
                }
            })
            .collect()
    }

    /// Queues the whole forward for the ids already in the workspace (no host wait). With
    /// `trace`, each block's output is copied out (a host wait per block; verification only).
    /// Queues the forward for the ids in the workspace: the model's one structure
    /// (`muse_reference::model::structure::run`) on the device's steps ([`CudaSteps`]).
    fn run(
        &self,
        ws: &mut Workspace,
        trace: Option<&mut Trace>,
        timer: Option<&mut StageTimer>,
    ) -> Result<()> {
        let mut steps = CudaSteps {
            m: self,
            ws,
            trace,
            timer,
        };
        steps.mark("start")?;
        structure::run(&mut steps, self.blocks.len())
    }

    /// One GEMM of the forward: C = A·Wᵀ in fp32/TF32, or, in bf16 mode (`w16` present), A
    /// rounded to bf16 into `a16` and multiplied by the bf16 W with fp32 sums.
    pub(crate) fn gemm(
        &self,
        a16: &Buf<u16>,
        dims: (usize, usize, usize),
        a: &Buf<f32>,
        w: &Buf<f32>,
        w16: Option<&Buf<u16>>,
        c: &Buf<f32>,
    ) -> Result<()> {
        match w16 {
            Some(w16) => {
                kern::to_half(self.gpu, self.half, a.view(), a16.view(), dims.0 * dims.2)?;
                crate::gemm::gemm_nt_half(self.gpu, self.half, dims, a16, w16, c)
            }
            None => gemm_nt(self.gpu, dims, a, w, c, 0.0, self.math),
        }
    }

    /// [`CudaModel::gemm`] then the bias, the activation and an optional residual:
    /// c = act(a·Wᵀ + b) (+ res).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn linear_act(
        &self,
        a16: &Buf<u16>,
        dims: (usize, usize, usize),
        a: &Buf<f32>,
        lin: &Lin,
        w16: Option<&Buf<u16>>,
        c: &Buf<f32>,
        act: kern::Act,
        res: Option<&Buf<f32>>,
    ) -> Result<()> {
        self.gemm(a16, dims, a, &lin.w, w16, c)?;
        kern::bias_act(
            self.gpu,
            c.view(),
            lin.b.as_ref().map(Buf::view),
            res.map(Buf::view),
            (dims.0, dims.1),
            act,
        )
    }

    /// Uploads ids and queues the forward; the logits stay on the device (for timing).
    pub fn enqueue(&self, ids: ArrayView2<'_, usize>) -> Result<()> {
        self.forward_inner(ids, None, None, false).map(|_| ())
    }

    /// One forward with CUDA events between its stages: microseconds per stage (blocks summed).
    pub fn stage_times(&self, ids: ArrayView2<'_, usize>) -> Result<Vec<(&'static str, f64)>> {
        let mut t = StageTimer::default();
        self.forward_inner(ids, None, Some(&mut t), false)?;
        self.gpu.sync("stage timing")?;
        t.totals()
    }

    fn forward_inner(
        &self,
        ids: ArrayView2<'_, usize>,
        trace: Option<&mut Trace>,
        timer: Option<&mut StageTimer>,
        download: bool,
    ) -> Result<Option<Array3<f32>>> {
        let mut guard = self.workspace_for(&ids)?;
        let ws = guard.as_mut().expect("workspace_for made it");
        self.run(ws, trace, timer)?;
        if !download {
            return Ok(None);
        }
        self.logits_of(ws).map(Some)
    }

    /// The workspace for the (B, N) of `ids` (kept, or made anew for another shape), with the
    /// ids copied in.
    pub(crate) fn workspace_for(
        &self,
        ids: &ArrayView2<'_, usize>,
    ) -> Result<std::sync::MutexGuard<'_, Option<Workspace>>> {
        let host_ids = self.check_ids(ids)?;
        let (batch, n) = ids.dim();
        let mut guard = self.ws.lock().map_err(|_| Error::Backend {
            backend: "cuda",
            message: "model workspace poisoned".into(),
        })?;
        if guard.as_ref().is_none_or(|w| (w.batch, w.n) != (batch, n)) {
            *guard = None;
            self.trim_pool(); // the old shape's slabs, as the driver path would free them
            *guard = Some(self.routed(|| self.workspace(batch, n))?);
        }
        guard
            .as_mut()
            .expect("just set")
            .ids
            .copy_from_host(&host_ids)?;
        Ok(guard)
    }

    /// The workspace's logits (B, N, V), the padding columns dropped; a non-finite value is an
    /// error.
    fn logits_of(&self, ws: &Workspace) -> Result<Array3<f32>> {
        let raw = ws.logits.to_vec()?;
        let v = self.dims.vocab;
        let mut out = Array3::zeros((ws.batch, ws.n, v));
        for (row, dst) in out
            .as_slice_mut()
            .expect("standard layout")
            .chunks_mut(v)
            .enumerate()
        {
            dst.copy_from_slice(&raw[row * self.vpad..row * self.vpad + v]);
        }
        if let Some(((b, i, j), x)) = out.indexed_iter().find(|(_, x)| !x.is_finite()) {
            return Err(Error::NonFinite {
                op: OP,
                arg: "logits",
                index: vec![b, i, j],
                value: f64::from(*x),
            });
        }
        Ok(out)
    }

    /// The Phase 8 side branch on the device: HTT(ids) + fusion(HTT(ids)), (B, N, D), as the
    /// original computes and discards it (FLOP and time parity only).
    pub fn side_branch(
        &self,
        side: &crate::model_side::SideBranch,
        ids: ArrayView2<'_, usize>,
    ) -> Result<Array3<f32>> {
        let host_ids = self.check_ids(&ids)?;
        let (batch, n) = ids.dim();
        let (rows, dm) = (batch * n, self.dims.d_model);
        let g = self.gpu;
        let ids_dev = g.upload(&host_ids)?;
        let x = g.alloc::<f32>(rows * dm)?;
        let out = g.alloc::<f32>(rows * dm)?;
        kern::embed(
            g,
            &ids_dev,
            (&self.core1, &self.core2, &self.cos),
            None,
            &x,
            (rows, n, dm),
            self.shape,
        )?;
        side.run(&x, &out, (batch, n, dm), self.math)?;
        Ok(Array3::from_shape_vec((batch, n, dm), out.to_vec()?).expect("rows·D"))
    }

    /// Logits (B, N, V) for ids (B, N).
    pub fn forward(&self, ids: ArrayView2<'_, usize>) -> Result<Array3<f32>> {
        Ok(self
            .forward_inner(ids, None, None, true)?
            .expect("downloaded"))
    }

    /// Logits and every block's output (B, N, D), for per-layer verification.
    /// Logits and named intermediates for per-layer verification: `embedding` (B·N·D), block 0's
    /// `block0.x` (its LayerNorm output), `block0.gate` (B·N), `block0.local` and `block0.global`
    /// (B·N·D), then every block's output `block<i>` (B·N·D), all flattened row-major.
    pub fn forward_trace(&self, ids: ArrayView2<'_, usize>) -> Result<(Array3<f32>, Trace)> {
        let mut t = Vec::new();
        let logits = self
            .forward_inner(ids, Some(&mut t), None, true)?
            .expect("downloaded");
        Ok((logits, t))
    }
}
