//! The embedding's VJPs: the token scatter into the decoder table's gradient (rows grouped by
//! token on the host, so the sums are deterministic), the positions, and the HTT cores and phases
//! from the whole table's gradient.

use cust::launch;
use muse_reference::{Error, Result};

use super::{blocks, need, MODULE, THREADS, WARPS};
use crate::device::{err, k, Gpu, View};
use crate::model::HttShape;

/// Token rows grouped by token, for [`embed`]: `toks` the distinct tokens (ascending),
/// `start` their offsets into `rows` (`toks.len() + 1`), `rows` every row index.
pub struct TokenRows {
    /// Distinct tokens.
    pub toks: Vec<i32>,
    /// Offsets into `rows`.
    pub start: Vec<i32>,
    /// Row indices, grouped by token, ascending within a token.
    pub rows: Vec<i32>,
}

impl TokenRows {
    /// Groups the rows of `ids` (row-major) by token.
    pub fn of(ids: &[i32]) -> Self {
        let mut order: Vec<i32> = (0..ids.len() as i32).collect();
        order.sort_by_key(|&r| (ids[r as usize], r));
        let (mut toks, mut start) = (Vec::new(), Vec::new());
        for (q, &r) in order.iter().enumerate() {
            let t = ids[r as usize];
            if toks.last() != Some(&t) {
                toks.push(t);
                start.push(q as i32);
            }
        }
        start.push(order.len() as i32);
        Self {
            toks,
            start,
            rows: order,
        }
    }
}

/// `dtable[tok] += Σ dh[row]` (rows, dim) over the rows holding tok (device copies of a
/// [`TokenRows`]: rows, start, toks; `ntok` distinct tokens, each < the table's rows).
#[allow(clippy::too_many_arguments)]
pub fn embed(
    gpu: &Gpu,
    dh: View<'_, f32>,
    (rows, start, toks): (View<'_, i32>, View<'_, i32>, View<'_, i32>),
    ntok: usize,
    dtable: View<'_, f32>,
    (nrows, vocab, dim): (usize, usize, usize),
) -> Result<()> {
    need("dh", &dh, nrows * dim)?;
    need("dtable", &dtable, vocab * dim)?;
    if rows.len() < nrows || start.len() < ntok + 1 || toks.len() < ntok {
        return Err(Error::Backend {
            backend: "cuda",
            message: "model backward: token grouping shorter than its counts".into(),
        });
    }
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::model_bwd::EMBED)?;
    let stream = &gpu.stream;
    let (nt, d) = (ntok as i32, dim as i32);
    let grid = (ntok as u32).div_ceil(WARPS).max(1);
    // SAFETY: 7 arguments in the C order of `model_bwd_embed`; the grouping's lengths are checked
    // above and its entries come from `TokenRows::of` on the checked ids (rows < nrows, tokens
    // < vocab), so every read of dh and write of dtable is in range.
    unsafe {
        launch!(f<<<grid, THREADS, 0, stream>>>(
            dh.ptr(), rows.ptr(), start.ptr(), toks.ptr(), nt, dtable.ptr(), d
        ))
    }
    .map_err(|e| err("launching model_bwd_embed", e))
}

/// `dpos[t] += Σ_b dh[b, t]` for t < n.
pub fn pos(
    gpu: &Gpu,
    dh: View<'_, f32>,
    dpos: View<'_, f32>,
    (batch, n, dim): (usize, usize, usize),
) -> Result<()> {
    need("dh", &dh, batch * n * dim)?;
    need("dpos", &dpos, n * dim)?;
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::model_bwd::POS)?;
    let stream = &gpu.stream;
    let (b, ni, d) = (batch as i32, n as i32, dim as i32);
    // SAFETY: 5 arguments in the C order of `model_bwd_pos`; lengths checked above.
    unsafe { launch!(f<<<blocks(n * dim), THREADS, 0, stream>>>(dh.ptr(), dpos.ptr(), b, ni, d)) }
        .map_err(|e| err("launching model_bwd_pos", e))
}

/// The HTT cores' and phases' gradients from ∂L/∂E (vocab, dim) (every token's embedding row):
/// dcore1, dcore2, dphase accumulate; `scratch` holds v1·r·d1 floats.
#[allow(clippy::too_many_arguments)]
pub fn htt(
    gpu: &Gpu,
    de: View<'_, f32>,
    (core1, core2, cos, sin): (View<'_, f32>, View<'_, f32>, View<'_, f32>, View<'_, f32>),
    scratch: View<'_, f32>,
    (dcore1, dcore2, dphase): (View<'_, f32>, View<'_, f32>, View<'_, f32>),
    (vocab, dim): (usize, usize),
    s: HttShape,
) -> Result<()> {
    let (r, d1, d2, v1, v2) = (
        s.r as usize,
        s.d1 as usize,
        s.d2 as usize,
        s.v1 as usize,
        s.v2 as usize,
    );
    let (n1, n2) = (v1 * r * d1, v2 * r * d2);
    for (name, v, l) in [
        ("dE", &de, vocab * dim),
        ("core1", &core1, n1),
        ("core2", &core2, n2),
        ("cos", &cos, r),
        ("sin", &sin, r),
        ("scratch", &scratch, n1),
        ("dcore1", &dcore1, n1),
        ("dcore2", &dcore2, n2),
        ("dphase", &dphase, r),
    ] {
        need(name, v, l)?;
    }
    // One CTA per row group, two outputs per thread at most, a dE row and a core row in shared
    // memory (at most 48 KiB).
    let (outs, shm1, shm2) = (r * d1.max(d2), (dim + r * d2) * 4, (dim + r * d1) * 4);
    if outs > 2 * THREADS as usize || shm1.max(shm2) > 48 << 10 {
        return Err(Error::Unsupported {
            op: "model backward",
            backend: "cuda",
            what: format!("HTT gradients of rank {r} × ({d1}, {d2}) at D = {dim}"),
        });
    }
    let m = MODULE.get(gpu)?;
    let stream = &gpu.stream;
    let (vi, di) = (vocab as i32, dim as i32);
    let f = gpu.function(m, k::model_bwd::HTT_CORE1)?;
    // SAFETY: 13 arguments in the C order of `model_bwd_htt_core1`; lengths checked above for the
    // HTT shape (v1·v2 ≥ vocab, d1·d2 ≥ dim, htt_factors); one CTA per i1 with shm1 bytes of
    // shared memory for a dE row and a core2 row (≤ 48 KiB, r·d1 ≤ 2·THREADS outputs, checked).
    unsafe {
        launch!(f<<<s.v1 as u32, THREADS, shm1 as u32, stream>>>(
            de.ptr(), core1.ptr(), core2.ptr(), cos.ptr(), scratch.ptr(), dcore1.ptr(), vi, di,
            s.r, s.d1, s.d2, s.v1, s.v2
        ))
    }
    .map_err(|e| err("launching model_bwd_htt_core1", e))?;
    let f = gpu.function(m, k::model_bwd::HTT_CORE2)?;
    // SAFETY: 11 arguments in the C order of `model_bwd_htt_core2`; lengths as above; one CTA
    // per i2 with shm2 bytes of shared memory (≤ 48 KiB, r·d2 ≤ 2·THREADS outputs, checked).
    unsafe {
        launch!(f<<<s.v2 as u32, THREADS, shm2 as u32, stream>>>(
            de.ptr(), core1.ptr(), cos.ptr(), dcore2.ptr(), vi, di, s.r, s.d1, s.d2, s.v1, s.v2
        ))
    }
    .map_err(|e| err("launching model_bwd_htt_core2", e))?;
    let f = gpu.function(m, k::model_bwd::HTT_PHASE)?;
    // SAFETY: 7 arguments in the C order of `model_bwd_htt_phase`; scratch and core1 hold
    // v1·r·d1 floats, sin and dphase r; one CTA per ρ.
    unsafe {
        launch!(f<<<s.r as u32, THREADS, 0, stream>>>(
            scratch.ptr(), core1.ptr(), sin.ptr(), dphase.ptr(), s.r, s.d1, s.v1
        ))
    }
    .map_err(|e| err("launching model_bwd_htt_phase", e))
}
