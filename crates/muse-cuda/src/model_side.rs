//! The Phase 8 side branch on the GPU (launchers of `../kernels/model_side.cu` and its runner
//! [`SideBranch`]): x = HTT(ids), then x + fusion(x), computed and discarded as the original does,
//! for FLOP and time parity only. Mirrors `muse_reference::model::side_branch`.

use cust::launch;
use muse_reference::model::FusionWeights;
use muse_reference::{Error, Result};

use crate::device::{err, k, Buf, Gpu};
use crate::gemm::{gemm_nt, GemmMath};
use crate::lazy::LazyModule;

pub(crate) static MODULE: LazyModule = LazyModule::new(k::model_side::CUBIN, "model_side");

/// The fusion's weights on the device, A = A_low·A_high precomputed.
pub struct SideBranch {
    gpu: &'static Gpu,
    l1w: Buf<f32>,
    l1b: Buf<f32>,
    l2w: Buf<f32>,
    l2b: f32,
    a: Buf<f32>,
    bw: Buf<f32>,
    bb: Buf<f32>,
    cw: Buf<f32>,
    cb: Buf<f32>,
    d: Buf<f32>,
    s: usize,
}

fn up(gpu: &'static Gpu, a: impl IntoIterator<Item = f32>) -> Result<Buf<f32>> {
    gpu.upload(&a.into_iter().collect::<Vec<_>>())
}

impl SideBranch {
    /// Uploads the fusion's tensors (rank predictor 1 → 32 → 1, S = D/4 state).
    pub fn new(gpu: &'static Gpu, w: &FusionWeights<f32>) -> Result<Self> {
        let s = w.a_low.nrows();
        if w.l1.w.nrows() != k::model_side::HIDDEN as usize || s > k::model_side::MAX_S as usize {
            return Err(Error::Unsupported {
                op: "model",
                backend: "cuda",
                what: format!(
                    "a side branch with {} hidden units (32) or state {s} (at most 1024)",
                    w.l1.w.nrows()
                ),
            });
        }
        let bias = |b: &Option<ndarray::Array1<f32>>, len: usize| {
            b.clone().unwrap_or_else(|| ndarray::Array1::zeros(len))
        };
        Ok(Self {
            gpu,
            l1w: up(gpu, w.l1.w.iter().copied())?,
            l1b: up(gpu, bias(&w.l1.b, 32).iter().copied())?,
            l2w: up(gpu, w.l2.w.iter().copied())?,
            l2b: bias(&w.l2.b, 1)[0],
            a: up(gpu, w.a_low.dot(&w.a_high).iter().copied())?,
            bw: up(gpu, w.b.w.iter().copied())?,
            bb: up(gpu, bias(&w.b.b, s).iter().copied())?,
            cw: up(gpu, w.c.w.iter().copied())?,
            cb: up(gpu, bias(&w.c.b, w.c.w.nrows()).iter().copied())?,
            d: up(gpu, w.d.iter().copied())?,
            s,
        })
    }

    /// Queues x + fusion(x) for x (batch, n, dim) on the device into `out` (batch·n·dim); the
    /// workspace buffers are allocated here (the side branch is off the hot path).
    pub fn run(
        &self,
        x: &Buf<f32>,
        out: &Buf<f32>,
        (batch, n, dim): (usize, usize, usize),
        math: GemmMath,
    ) -> Result<()> {
        let g = self.gpu;
        let rows = batch * n;
        let w = g.alloc::<f32>(rows)?;
        let u = g.alloc::<f32>(rows * self.s)?;
        let h = g.alloc::<f32>(rows * self.s)?;
        self.rank_gating(x, rows, dim, &w)?;
        gemm_nt(g, (rows, self.s, dim), x, &self.bw, &u, 0.0, math)?;
        crate::model::bias_act(
            g,
            u.view(),
            Some(self.bb.view()),
            None,
            (rows, self.s),
            crate::model::Act::None,
        )?;
        self.scan(&u, &w, &h, batch, n)?;
        gemm_nt(g, (rows, dim, self.s), &h, &self.cw, out, 0.0, math)?;
        self.finish(out, x, rows, dim)
    }

    fn rank_gating(&self, x: &Buf<f32>, rows: usize, dim: usize, w: &Buf<f32>) -> Result<()> {
        let g = self.gpu;
        let f = g.function(MODULE.get(g)?, k::model_side::RANK_GATING)?;
        let stream = &g.stream;
        let blocks = rows.div_ceil(k::model_side::WARPS as usize) as u32;
        let (r, d) = (rows as i32, dim as i32);
        // SAFETY: 8 arguments in the C order of `model_side_rank_gating`; x holds rows·dim floats,
        // l1w, l1b and l2w 32, w rows; one warp per row.
        unsafe {
            launch!(f<<<blocks, k::model_side::THREADS, 0, stream>>>(
                x.ptr(), r, d, self.l1w.ptr(), self.l1b.ptr(), self.l2w.ptr(), self.l2b, w.ptr()
            ))
        }
        .map_err(|e| err("launching model_side_rank_gating", e))
    }

    fn scan(&self, u: &Buf<f32>, w: &Buf<f32>, h: &Buf<f32>, batch: usize, n: usize) -> Result<()> {
        let g = self.gpu;
        let f = g.function(MODULE.get(g)?, k::model_side::SCAN)?;
        let stream = &g.stream;
        let threads = self.s.next_multiple_of(32) as u32;
        let (b, ni, s) = (batch as i32, n as i32, self.s as i32);
        // SAFETY: 7 arguments in the C order of `model_side_scan`; u and h hold batch·n·s floats,
        // w batch·n, a s·s; s ≤ MODEL_SIDE_MAX_S (checked in `new`), one CTA per sequence.
        unsafe {
            launch!(f<<<batch as u32, threads, 0, stream>>>(u.ptr(), w.ptr(), self.a.ptr(), h.ptr(), b, ni, s))
        }
        .map_err(|e| err("launching model_side_scan", e))
    }

    fn finish(&self, y: &Buf<f32>, x: &Buf<f32>, rows: usize, dim: usize) -> Result<()> {
        let g = self.gpu;
        let f = g.function(MODULE.get(g)?, k::model_side::FINISH)?;
        let stream = &g.stream;
        let blocks = (rows * dim).div_ceil(k::model_side::THREADS as usize) as u32;
        let (r, d) = (rows as i64, dim as i32);
        // SAFETY: 6 arguments in the C order of `model_side_finish`; y and x hold rows·dim floats,
        // the bias and d dim.
        unsafe {
            launch!(f<<<blocks, k::model_side::THREADS, 0, stream>>>(y.ptr(), x.ptr(), self.cb.ptr(), self.d.ptr(), r, d))
        }
        .map_err(|e| err("launching model_side_finish", e))
    }
}
