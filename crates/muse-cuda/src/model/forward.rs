//! The device-resident forward of the language model: ids → logits with every activation on the
//! GPU, one stream, no host round trip between layers. The structure is the CPU reference's
//! (`reference/src/model/block.rs`); each step names the reference function it mirrors.

use std::sync::Mutex;

use muse_reference::model::structure::{self, ModelSteps};
use muse_reference::model::{
    htt_factors, softplus, AttnPath, Conv, ModelDims, ModelWeights, Numerics, Scan,
};
use muse_reference::{Error, Result};
use ndarray::{Array3, ArrayView2};
use num_complex::Complex64;

use super::{AttnScalars, HttShape, MAX_HEAD_DIM};
use crate::bk_core::{self, ForwardWs, Problem};
use crate::device::{Buf, Gpu};
use crate::gemm::{gemm_nt, GemmMath};
use crate::model as kern;

const OP: &str = "model";

/// Named intermediates of a traced forward, each flattened row-major.
pub type Trace = Vec<(String, Vec<f32>)>;

/// CUDA events between the stages of one forward, for the per-layer time breakdown.
#[derive(Default)]
pub struct StageTimer {
    marks: Vec<(&'static str, cust::event::Event)>,
}

impl StageTimer {
    fn mark(&mut self, gpu: &Gpu, stage: &'static str) -> Result<()> {
        let e = cust::event::Event::new(cust::event::EventFlags::DEFAULT)
            .map_err(|e| crate::device::err("creating an event", e))?;
        e.record(&gpu.stream)
            .map_err(|e| crate::device::err("recording an event", e))?;
        self.marks.push((stage, e));
        Ok(())
    }

    /// Microseconds per stage name, summed over the blocks, in first-seen order.
    pub fn totals(&self) -> Result<Vec<(&'static str, f64)>> {
        let mut out: Vec<(&'static str, f64)> = Vec::new();
        for w in self.marks.windows(2) {
            let (_, start) = &w[0];
            let (name, stop) = &w[1];
            stop.synchronize()
                .map_err(|e| crate::device::err("waiting for an event", e))?;
            let us = f64::from(
                stop.elapsed_time_f32(start)
                    .map_err(|e| crate::device::err("reading an event", e))?,
            ) * 1e3;
            match out.iter_mut().find(|(n, _)| n == name) {
                Some((_, t)) => *t += us,
                None => out.push((name, us)),
            }
        }
        Ok(out)
    }
}

struct Lin {
    w: Buf<f32>,
    b: Option<Buf<f32>>,
}

/// bf16 copies of one block's GEMM weights (bf16 mode only).
struct BlockBf16 {
    v_w: Buf<u16>,
    wqkv: Buf<u16>,
    wo: Buf<u16>,
    g1: Buf<u16>,
    g2: Buf<u16>,
    uv: Buf<u16>,
    out: Buf<u16>,
}

struct BlockDev {
    h16: Option<BlockBf16>,
    norm: (Buf<f32>, Buf<f32>),
    v_w: Buf<f32>,
    v_b: f32,
    h0: [Buf<f64>; 3],
    z_im: f64,
    gs: f32,
    wqkv: Buf<f32>,
    wo: Buf<f32>,
    attn: AttnScalars,
    g1: Lin,
    g2: Lin,
    uv: Buf<f32>,
    taps: Buf<f32>,
    out: Lin,
    out_norm: (Buf<f32>, Buf<f32>),
}

/// BK-Core on the device in the precision the profile needs.
enum Bk {
    F32(Problem<f32>, ForwardWs<f32>),
    F64(Problem<f64>, ForwardWs<f64>),
}

/// Activations for one (B, N).
/// A captured forward (CUDA graph) of one workspace, replayed by [`CudaModel::enqueue_graph`].
struct Graph {
    graph: cust::sys::CUgraph,
    exec: cust::sys::CUgraphExec,
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: both handles were created by cuStreamEndCapture / cuGraphInstantiate and are
        // destroyed once, here; the workspace that owns the graph synchronises its buffers' stream
        // before they are freed, so no replay is in flight.
        unsafe {
            cust::sys::cuGraphExecDestroy(self.exec);
            cust::sys::cuGraphDestroy(self.graph);
        }
    }
}

fn check(what: &str, r: cust::sys::CUresult) -> Result<()> {
    if r == cust::sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(Error::Backend {
            backend: "cuda",
            message: format!("{what}: {r:?}"),
        })
    }
}

struct Workspace {
    batch: usize,
    n: usize,
    /// bf16 copy of a GEMM input (bf16 mode; one element otherwise).
    a16: Buf<u16>,
    graph: Option<Graph>,
    ids: Buf<i32>,
    h: Buf<f32>,
    x: Buf<f32>,
    qkv: Buf<f32>,
    o: Buf<f32>,
    local: Buf<f32>,
    v: Buf<f32>,
    gate: Buf<f32>,
    t: Buf<f32>,
    gh: Buf<f32>,
    gg: Buf<f32>,
    uv: Buf<f32>,
    ug: Buf<f32>,
    vg: Buf<f32>,
    kv: Buf<f32>,
    global: Buf<f32>,
    logits: Buf<f32>,
    bk: Bk,
}

/// The model's weights on the GPU with the numerics of one profile.
pub struct CudaModel {
    gpu: &'static Gpu,
    dims: ModelDims,
    num: Numerics,
    math: GemmMath,
    shape: HttShape,
    core1: Buf<f32>,
    core2: Buf<f32>,
    cos: Buf<f32>,
    table: Buf<f32>,
    table16: Option<Buf<u16>>,
    vpad: usize,
    pos: Buf<f32>,
    blocks: Vec<BlockDev>,
    final_norm: (Buf<f32>, Buf<f32>),
    ws: Mutex<Option<Workspace>>,
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

fn form_of(path: AttnPath) -> i32 {
    match path {
        AttnPath::Exact => 0,
        AttnPath::FastBench { tf32: false } => 1,
        AttnPath::FastBench { tf32: true } => 2,
        AttnPath::TorchBall => 3,
    }
}

impl CudaModel {
    /// Uploads `w` and builds the decoder table. `math` picks fp32 or TF32 GEMMs.
    pub fn new(
        gpu: &'static Gpu,
        dims: ModelDims,
        w: &ModelWeights<f32>,
        num: Numerics,
        math: GemmMath,
    ) -> Result<Self> {
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
                    form: form_of(num.attention),
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
            kern::to_bf16(gpu, &table, &t, vpad * dims.d_model)?;
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
        })
    }

    /// The dims.
    pub fn dims(&self) -> &ModelDims {
        &self.dims
    }

    fn workspace(&self, batch: usize, n: usize) -> Result<Workspace> {
        let g = self.gpu;
        let (rows, d, r) = (batch * n, self.dims.d_model, self.dims.ssm_rank);
        let f = |len| g.alloc::<f32>(len);
        let off = batch * (n - 1);
        let bk = if self.num.complex64 {
            let p = Problem {
                batch,
                n,
                z: Complex64::new(0.0, 0.0),
                a: g.alloc(rows)?,
                b: g.alloc(off)?,
                c: g.alloc(off)?,
            };
            let ws = ForwardWs::new(g, &p)?;
            Bk::F64(p, ws)
        } else {
            let p = Problem {
                batch,
                n,
                z: Complex64::new(0.0, 0.0),
                a: g.alloc(rows)?,
                b: g.alloc(off)?,
                c: g.alloc(off)?,
            };
            let ws = ForwardWs::new(g, &p)?;
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
            logits: f(rows * self.vpad)?,
            bk,
            graph: None,
        })
    }

    /// Drops the cached activations (their bytes leave the allocation peak).
    pub fn release_workspace(&self) {
        if let Ok(mut ws) = self.ws.lock() {
            *ws = None;
        }
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
    fn gemm(
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
                kern::to_bf16(self.gpu, a, a16, dims.0 * dims.2)?;
                crate::gemm::gemm_nt_bf16(self.gpu, dims, a16, w16, c)
            }
            None => gemm_nt(self.gpu, dims, a, w, c, 0.0, self.math),
        }
    }

    /// [`CudaModel::gemm`] then the bias, the activation and an optional residual:
    /// c = act(a·Wᵀ + b) (+ res).
    #[allow(clippy::too_many_arguments)]
    fn linear_act(
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
        kern::bias_act(self.gpu, c, lin.b.as_ref(), res, (dims.0, dims.1), act)
    }

    /// Uploads ids and queues the forward; the logits stay on the device (for timing).
    pub fn enqueue(&self, ids: ArrayView2<'_, usize>) -> Result<()> {
        self.forward_inner(ids, None, None, false).map(|_| ())
    }

    /// [`CudaModel::enqueue`] through a CUDA graph: the first call for a (B, N) runs the forward
    /// once eagerly (cuBLAS settles its workspace), then captures it; later calls copy the ids
    /// into the workspace and replay the graph (one launch instead of ~15 per block).
    pub fn enqueue_graph(&self, ids: ArrayView2<'_, usize>) -> Result<()> {
        let host_ids = self.check_ids(&ids)?;
        let (batch, n) = ids.dim();
        let mut guard = self.ws.lock().map_err(|_| Error::Backend {
            backend: "cuda",
            message: "model workspace poisoned".into(),
        })?;
        if guard.as_ref().is_none_or(|w| (w.batch, w.n) != (batch, n)) {
            *guard = None;
            *guard = Some(self.workspace(batch, n)?);
        }
        let ws = guard.as_mut().expect("just set");
        ws.ids.copy_from_host(&host_ids)?;
        let stream = self.gpu.stream.as_inner();
        if ws.graph.is_none() {
            self.run(ws, None, None)?;
            self.gpu.sync("the forward before its capture")?;
            // SAFETY: the stream is live; relaxed mode, since other threads may use the driver.
            check("beginning the capture", unsafe {
                cust::sys::cuStreamBeginCapture_v2(
                    stream,
                    cust::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED,
                )
            })?;
            let queued = self.run(ws, None, None);
            let mut graph: cust::sys::CUgraph = std::ptr::null_mut();
            // SAFETY: ends the capture begun above on the same stream, whatever `run` returned.
            let ended = check("ending the capture", unsafe {
                cust::sys::cuStreamEndCapture(stream, &mut graph)
            });
            queued?;
            ended?;
            let mut exec: cust::sys::CUgraphExec = std::ptr::null_mut();
            // SAFETY: `graph` is the captured graph; `exec` receives its executable instance.
            let inst = check("instantiating the graph", unsafe {
                cust::sys::cuGraphInstantiateWithFlags(&mut exec, graph, 0)
            });
            if let Err(e) = inst {
                // SAFETY: `graph` was created above and is not used after this.
                unsafe { cust::sys::cuGraphDestroy(graph) };
                return Err(e);
            }
            ws.graph = Some(Graph { graph, exec });
        }
        let exec = ws.graph.as_ref().expect("captured").exec;
        // SAFETY: `exec` is live while the workspace (and its buffers, which the graph reads and
        // writes) lives; the launch is queued on the stream every buffer synchronises before drop.
        check("launching the graph", unsafe {
            cust::sys::cuGraphLaunch(exec, stream)
        })
    }

    /// [`CudaModel::enqueue_graph`], then the logits (B, N, V).
    pub fn forward_graph(&self, ids: ArrayView2<'_, usize>) -> Result<Array3<f32>> {
        self.enqueue_graph(ids)?;
        let guard = self.ws.lock().map_err(|_| Error::Backend {
            backend: "cuda",
            message: "model workspace poisoned".into(),
        })?;
        let ws = guard.as_ref().expect("enqueue_graph made it");
        let raw = ws.logits.to_vec()?;
        let (b, n) = ids.dim();
        let v = self.dims.vocab;
        let mut out = Array3::zeros((b, n, v));
        for (row, dst) in out
            .as_slice_mut()
            .expect("standard layout")
            .chunks_mut(v)
            .enumerate()
        {
            dst.copy_from_slice(&raw[row * self.vpad..row * self.vpad + v]);
        }
        Ok(out)
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
        let host_ids = self.check_ids(&ids)?;
        let (batch, n) = ids.dim();
        let mut guard = self.ws.lock().map_err(|_| Error::Backend {
            backend: "cuda",
            message: "model workspace poisoned".into(),
        })?;
        if guard.as_ref().is_none_or(|w| (w.batch, w.n) != (batch, n)) {
            *guard = None;
            *guard = Some(self.workspace(batch, n)?);
        }
        let ws = guard.as_mut().expect("just set");
        ws.ids.copy_from_host(&host_ids)?;
        self.run(ws, trace, timer)?;
        if !download {
            return Ok(None);
        }
        let raw = ws.logits.to_vec()?;
        let v = self.dims.vocab;
        let mut out = Array3::zeros((batch, n, v));
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
        Ok(Some(out))
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

/// A (B, N, D) activation of the device forward: which workspace buffer holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
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
struct CudaSteps<'a> {
    m: &'a CudaModel,
    ws: &'a mut Workspace,
    trace: Option<&'a mut Trace>,
    timer: Option<&'a mut StageTimer>,
}

impl CudaSteps<'_> {
    fn mark(&mut self, name: &'static str) -> Result<()> {
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
            &m.pos,
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
        kern::layer_norm(m.gpu, &ws.h, (&blk.norm.0, &blk.norm.1), &ws.x, rows, dm)?;
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
        kern::window_attn(
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
            &ws.h,
            (&m.final_norm.0, &m.final_norm.1),
            &ws.x,
            rows,
            dm,
        )?;
        Ok(Slot::X)
    }

    fn decode(&mut self, x: &Slot) -> Result<()> {
        debug_assert_eq!(*x, Slot::X);
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
