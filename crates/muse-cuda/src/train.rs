//! Launchers of `../kernels/train.cu`: the fused softmax cross-entropy, deterministic sums and
//! column sums, AdamW with the global-norm clip fused in, and the parameter gather/scatter
//! through a pointer table ([`ParamTable`]). Every launch is queued on the GPU's stream.

use cust::launch;
use muse_reference::{Error, Result};

use crate::device::{err, k, Buf, Gpu, View};
use crate::lazy::LazyModule;

static MODULE: LazyModule = LazyModule::new(k::train::CUBIN, "train");

const THREADS: u32 = k::train::THREADS;

/// CTAs of a [`sum`]'s first pass (fixed, so the order of the sum is too).
pub const SUM_PARTS: usize = 512;
/// Row chunks of a [`col_sum`]'s first pass, at most.
pub const COL_PARTS: usize = 64;

fn blocks(n: usize) -> u32 {
    n.div_ceil(THREADS as usize).max(1) as u32
}

fn short(what: &str, have: usize, need: usize) -> Result<()> {
    crate::device::check_len("training", what, have, need)
}

/// The mean cross-entropy's per-row terms and gradient, in place: each row of `logits`
/// (rows, vpad) becomes (softmax − onehot(target))·`scale` over the first `vocab` columns (0 in
/// the padding), `row_loss[r]` = lse − logit of the target. Targets must be < vocab (the caller
/// checks them on the host).
pub fn cross_entropy(
    gpu: &Gpu,
    logits: View<'_, f32>,
    targets: View<'_, i32>,
    row_loss: View<'_, f32>,
    (rows, vocab, vpad): (usize, usize, usize),
    scale: f32,
) -> Result<()> {
    short("logits", logits.len(), rows * vpad)?;
    short("targets", targets.len(), rows)?;
    short("row_loss", row_loss.len(), rows)?;
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::train::CE)?;
    let stream = &gpu.stream;
    let (r, v, vp) = (rows as i32, vocab as i32, vpad as i32);
    // SAFETY: 7 arguments in the C order of `train_ce`; logits hold rows·vpad floats, targets and
    // row_loss rows (checked above), every target < vocab ≤ vpad (the caller's check); one CTA of
    // CE_THREADS (its __launch_bounds__ and shared arrays) per row.
    unsafe {
        launch!(f<<<rows as u32, k::train::CE_THREADS, 0, stream>>>(
            logits.ptr(), targets.ptr(), row_loss.ptr(), r, v, vp, scale
        ))
    }
    .map_err(|e| err("launching train_ce", e))
}

/// `out[0] = (out[0] if accumulate) + scale·Σ x` (or Σ x² when `square`), in a fixed order;
/// `part` holds [`SUM_PARTS`] floats.
pub fn sum(
    gpu: &Gpu,
    x: View<'_, f32>,
    square: bool,
    part: View<'_, f32>,
    (scale, out, accumulate): (f32, View<'_, f32>, bool),
) -> Result<()> {
    short("part", part.len(), SUM_PARTS)?;
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::train::SUM_PARTIAL)?;
    let stream = &gpu.stream;
    let (n, sq) = (x.len() as i64, i32::from(square));
    // SAFETY: 4 arguments in the C order of `train_sum_partial`; x holds n floats, part one per
    // CTA of the SUM_PARTS-CTA grid (checked above).
    unsafe { launch!(f<<<SUM_PARTS as u32, THREADS, 0, stream>>>(x.ptr(), n, sq, part.ptr())) }
        .map_err(|e| err("launching train_sum_partial", e))?;
    sum_parts(gpu, part, (SUM_PARTS, 1), (scale, out, accumulate))
}

/// `out[0] = (out[0] if accumulate) + scale·Σ_k part[k·stride]` for k < n (one CTA).
pub fn sum_parts(
    gpu: &Gpu,
    part: View<'_, f32>,
    (n, stride): (usize, usize),
    (scale, out, accumulate): (f32, View<'_, f32>, bool),
) -> Result<()> {
    short("part", part.len(), (n.max(1) - 1) * stride + 1)?;
    short("out", out.len(), 1)?;
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::train::SUM_FINAL)?;
    let stream = &gpu.stream;
    let (ni, si, acc) = (n as i32, stride as i32, i32::from(accumulate));
    // SAFETY: 6 arguments in the C order of `train_sum_final`; part holds (n − 1)·stride + 1
    // floats and out one (checked above); one CTA.
    unsafe { launch!(f<<<1, THREADS, 0, stream>>>(part.ptr(), ni, si, scale, out.ptr(), acc)) }
        .map_err(|e| err("launching train_sum_final", e))
}

/// `out[c] = (out[c] if accumulate) + Σ_r x[r, c]` for x (rows, cols), in a fixed order; `part`
/// holds [`COL_PARTS`]·cols floats.
pub fn col_sum(
    gpu: &Gpu,
    x: View<'_, f32>,
    (rows, cols): (usize, usize),
    part: View<'_, f32>,
    out: View<'_, f32>,
    accumulate: bool,
) -> Result<()> {
    short("x", x.len(), rows * cols)?;
    short("part", part.len(), COL_PARTS * cols)?;
    short("out", out.len(), cols)?;
    let parts = rows.div_ceil(256).clamp(1, COL_PARTS);
    let chunk = rows.div_ceil(parts);
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::train::COL_SUM_PARTIAL)?;
    let stream = &gpu.stream;
    let grid = (cols.div_ceil(32) as u32, parts as u32, 1);
    let (r, c, ch) = (rows as i64, cols as i32, chunk as i64);
    // SAFETY: 5 arguments in the C order of `train_col_sum_partial`; x holds rows·cols floats,
    // part parts·cols ≤ COL_PARTS·cols (checked above); CTA (bx, by) covers 32 columns of rows
    // [by·chunk, (by + 1)·chunk) ∩ [0, rows).
    unsafe { launch!(f<<<grid, THREADS, 0, stream>>>(x.ptr(), r, c, ch, part.ptr())) }
        .map_err(|e| err("launching train_col_sum_partial", e))?;
    let f = gpu.function(m, k::train::COL_SUM_FINAL)?;
    let (p, acc) = (parts as i32, i32::from(accumulate));
    // SAFETY: 5 arguments in the C order of `train_col_sum_final`; part holds parts·cols floats
    // written above, out cols.
    unsafe { launch!(f<<<blocks(cols), THREADS, 0, stream>>>(part.ptr(), p, c, out.ptr(), acc)) }
        .map_err(|e| err("launching train_col_sum_final", e))
}

/// dst = src (the first `src.len()` elements), ordered on the stream.
pub fn copy(gpu: &Gpu, src: View<'_, f32>, dst: View<'_, f32>) -> Result<()> {
    short("dst", dst.len(), src.len())?;
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::train::COPY)?;
    let stream = &gpu.stream;
    let n = src.len() as i64;
    // SAFETY: 3 arguments in the C order of `train_copy`; dst holds at least src.len() floats.
    unsafe { launch!(f<<<blocks(src.len()), THREADS, 0, stream>>>(src.ptr(), dst.ptr(), n)) }
        .map_err(|e| err("launching train_copy", e))
}

/// The parameters as one flat index space over many device tensors: tensor j holds flat indices
/// `offs[j] .. offs[j + 1]` at device address `ptrs[j]`. Built from views, so every address is
/// inside a live buffer; the table must not outlive them (its owner keeps both).
pub struct ParamTable {
    ptrs: Buf<u64>,
    offs: Buf<i64>,
    count: usize,
    total: usize,
}

impl ParamTable {
    /// The table of `tensors` in order (each a view of a live buffer).
    pub fn new(gpu: &'static Gpu, tensors: &[View<'_, f32>]) -> Result<Self> {
        if tensors.is_empty() {
            return Err(Error::Backend {
                backend: "cuda",
                message: "training: an empty parameter table".into(),
            });
        }
        let ptrs: Vec<u64> = tensors.iter().map(|v| v.ptr().as_raw()).collect();
        let mut offs = Vec::with_capacity(tensors.len() + 1);
        let mut total = 0usize;
        for v in tensors {
            offs.push(total as i64);
            total += v.len();
        }
        offs.push(total as i64);
        Ok(Self {
            ptrs: gpu.upload(&ptrs)?,
            offs: gpu.upload(&offs)?,
            count: tensors.len(),
            total,
        })
    }

    /// Total parameters.
    pub fn total(&self) -> usize {
        self.total
    }

    /// flat ← the tensors (`to_flat`) or the tensors ← flat.
    pub fn gather(&self, gpu: &Gpu, flat: View<'_, f32>, to_flat: bool) -> Result<()> {
        short("flat", flat.len(), self.total)?;
        let m = MODULE.get(gpu)?;
        let f = gpu.function(m, k::train::GATHER)?;
        let stream = &gpu.stream;
        let (nt, total, tf) = (self.count as i32, self.total as i64, i32::from(to_flat));
        // SAFETY: 6 arguments in the C order of `train_gather`; ptrs and offs hold count and
        // count + 1 entries describing ranges of live buffers (ParamTable::new from views), flat
        // holds total floats (checked above).
        unsafe {
            launch!(f<<<blocks(self.total), THREADS, 0, stream>>>(
                self.ptrs.ptr(), self.offs.ptr(), nt, flat.ptr(), total, tf
            ))
        }
        .map_err(|e| err("launching train_gather", e))
    }

    /// One AdamW step of every parameter with the flat gradient `g`, multiplied by `gscale` (1/S
    /// for a loss-scaled step, else 1), clipped to `max_norm` by its global norm
    /// `gscale·√sumsq[0]` (no clipping when `max_norm` ≤ 0); `m`, `v` the flat moments.
    #[allow(clippy::too_many_arguments)]
    pub fn adamw(
        &self,
        gpu: &Gpu,
        (g, m, v): (View<'_, f32>, View<'_, f32>, View<'_, f32>),
        sumsq: View<'_, f32>,
        (max_norm, gscale): (f32, f32),
        h: AdamStep,
    ) -> Result<()> {
        for (name, b) in [("g", &g), ("m", &m), ("v", &v)] {
            short(name, b.len(), self.total)?;
        }
        short("sumsq", sumsq.len(), 1)?;
        let module = MODULE.get(gpu)?;
        let f = gpu.function(module, k::train::ADAMW)?;
        let stream = &gpu.stream;
        let (nt, total) = (self.count as i32, self.total as i64);
        // SAFETY: 17 arguments in the C order of `train_adamw`; the table as in `gather`, g, m
        // and v hold total floats, sumsq one (checked above).
        unsafe {
            launch!(f<<<blocks(self.total), THREADS, 0, stream>>>(
                self.ptrs.ptr(), self.offs.ptr(), nt, g.ptr(), m.ptr(), v.ptr(), total,
                sumsq.ptr(), max_norm, gscale, h.lr, h.weight_decay, h.b1, h.b2, h.eps, h.c1, h.c2
            ))
        }
        .map_err(|e| err("launching train_adamw", e))
    }
}

/// The scalars of one AdamW step (the host computes the schedule and the bias corrections).
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    /// Learning rate of this step.
    pub lr: f32,
    /// Decoupled weight decay λ.
    pub weight_decay: f32,
    /// β₁.
    pub b1: f32,
    /// β₂.
    pub b2: f32,
    /// ε.
    pub eps: f32,
    /// 1 − β₁ᵗ.
    pub c1: f32,
    /// 1 − β₂ᵗ.
    pub c2: f32,
}
