//! The exact backward of the model on the device (issue 9), the schedule of the CPU reference's
//! `reference/src/model/grad/` step for step: the forward keeps each block's input (the
//! checkpoints), the fused cross-entropy turns the logits into their gradient in place, and each
//! block is recomputed from its input before its VJP runs. Gradients land in the flat buffer of
//! [`super::train::Grads`] at their parameters' slots; nothing waits for the host.

use muse_reference::hyp_attn::{Form, Mask};
use muse_reference::model::structure::ModelSteps;
use muse_reference::Result;
use ndarray::Array4;

use super::forward::{Bk, CudaModel, CudaSteps, Workspace};
use super::train::Slots;
use crate::device::{Buf, Gpu, View};
use crate::gemm::{gemm, gemm_nt_half_views};
use crate::model_bwd::{self as kb, LnGrad, LnInput};
use crate::train as kt;
use crate::{bk_core_bwd, hyp_attn, hyp_attn_bwd};

mod block;
use block::block;

/// Rows of one chunk of the decoder and the cross-entropy (512 rows of V = 50257 are 103 MB).
pub(crate) const CE_ROWS: usize = 512;

/// The backward's buffers for one (B, N), beside the forward's [`Workspace`].
pub(crate) struct TrainWs {
    /// Each block's input h_l and the last block's output, (rows, D) each.
    hs: Vec<Buf<f32>>,
    dh: Buf<f32>,
    dx: Buf<f32>,
    xhat_dy: Buf<f32>,
    dlocal: Buf<f32>,
    dglobal: Buf<f32>,
    dgate: Buf<f32>,
    d_o: Buf<f32>,
    dqkv: Buf<f32>,
    dkv: Buf<f32>,
    dug: Buf<f32>,
    dvg: Buf<f32>,
    duv: Buf<f32>,
    dgg: Buf<f32>,
    dgh: Buf<f32>,
    dtaps_row: Buf<f32>,
    dpre: Buf<f32>,
    dgs_row: Buf<f32>,
    sum_part: Buf<f32>,
    col_part: Buf<f32>,
    /// One chunk of the logits, (CE_ROWS, vpad): the cross-entropy runs chunk by chunk, so the
    /// (B, N, V) logits never exist whole.
    logits: Buf<f32>,
    dtable: Buf<f32>,
    htt_scratch: Buf<f32>,
    pub(crate) targets: Buf<i32>,
    pub(crate) row_loss: Buf<f32>,
    pub(crate) loss: Buf<f32>,
    tok: (Buf<i32>, Buf<i32>, Buf<i32>),
    attn: hyp_attn::Problem<f32>,
    attn_fwd: hyp_attn::ForwardWs<f32>,
    attn_bwd: hyp_attn_bwd::BackwardWs<f32>,
    bk_bwd: bk_core_bwd::BackwardWs<f32>,
}

impl TrainWs {
    /// Buffers for the workspace `ws` of `m`.
    pub(crate) fn new(m: &CudaModel, ws: &Workspace) -> Result<Self> {
        let g = m.gpu;
        let d = &m.dims;
        let (b, n) = (ws.batch, ws.n);
        let (rows, dm, r, gh) = (b * n, d.d_model, d.ssm_rank, d.ssm_hidden);
        let f = |len: usize| g.alloc::<f32>(len);
        let dh_ = dm / d.heads;
        let dims = hyp_attn::Dims {
            batch: b,
            heads: d.heads,
            n,
            m: n,
            d: dh_,
            dv: dh_,
        };
        let attn = hyp_attn::Problem {
            dims,
            c: 1.0,
            beta: 1.0,
            mask: Mask::Window(d.window),
            form: Form::Exact,
            q: f(rows * dm)?,
            k: f(rows * dm)?,
            v: f(rows * dm)?,
            lengths: None,
        };
        let attn_fwd = hyp_attn::ForwardWs::new(g, &attn)?;
        let zeros = Array4::zeros((b, d.heads, n, dh_));
        let attn_bwd =
            hyp_attn_bwd::BackwardWs::new(g, &attn, zeros.view(), muse_reference::Dtype::F32)?;
        let bk_bwd =
            match &ws.bk {
                Bk::F32(p, _) => bk_core_bwd::BackwardWs::new(g, p, &vec![0.0f32; 2 * rows])?,
                Bk::F64(..) => return Err(muse_reference::Error::Unsupported {
                    op: "model backward",
                    backend: "cuda",
                    what:
                        "complex64 BK-Core (a compat profile; only the exact maths has a backward)"
                            .into(),
                }),
            };
        let (v1, _, d1, _) = muse_reference::model::htt_factors(d.vocab, dm);
        let widest = (3 * dm).max(gh).max(2 * r);
        Ok(Self {
            hs: (0..=d.layers)
                .map(|_| f(rows * dm))
                .collect::<Result<_>>()?,
            dh: f(rows * dm)?,
            dx: f(rows * dm)?,
            xhat_dy: f(rows * dm)?,
            dlocal: f(rows * dm)?,
            dglobal: f(rows * dm)?,
            dgate: f(rows)?,
            d_o: f(rows * dm)?,
            dqkv: f(rows * 3 * dm)?,
            dkv: f(rows * r)?,
            dug: f(rows * r)?,
            dvg: f(rows * r)?,
            duv: f(rows * 2 * r)?,
            dgg: f(rows * r)?,
            dgh: f(rows * gh)?,
            dtaps_row: f(rows * 3 * dm)?,
            dpre: f(rows)?,
            dgs_row: f(rows)?,
            sum_part: f(kt::SUM_PARTS)?,
            logits: f(rows.min(CE_ROWS) * m.vpad)?,
            col_part: f(kt::COL_PARTS * widest)?,
            dtable: f(m.vpad * dm)?,
            htt_scratch: f(v1 * d.htt_rank * d1)?,
            targets: g.alloc(rows)?,
            row_loss: f(rows)?,
            loss: f(1)?,
            tok: (g.alloc(rows)?, g.alloc(rows + 1)?, g.alloc(rows)?),
            attn,
            attn_fwd,
            attn_bwd,
            bk_bwd,
        })
    }

    /// Uploads the targets and the rows grouped by token of the workspace's ids; returns the
    /// number of distinct tokens.
    pub(crate) fn set_batch(&mut self, ids: &[i32], targets: &[i32]) -> Result<usize> {
        self.targets.copy_from_host(targets)?;
        let t = kb::TokenRows::of(ids);
        self.tok.0.copy_from_host(&t.rows)?;
        self.tok.1.copy_from_host(&t.start)?;
        self.tok.2.copy_from_host(&t.toks)?;
        Ok(t.toks.len())
    }
}

/// The forward's steps with every block's input saved in `tw.hs`, up to the final LayerNorm
/// (its output in `ws.x`; the decoder runs by chunks in [`cross_entropy`]).
pub(crate) fn forward_saving(m: &CudaModel, ws: &mut Workspace, tw: &mut TrainWs) -> Result<()> {
    let g = m.gpu;
    let mut steps = CudaSteps {
        m,
        ws,
        trace: None,
        timer: None,
    };
    let mut h = steps.embed()?;
    for l in 0..m.blocks.len() {
        kt::copy(g, steps.ws.h.view(), tw.hs[l].view())?;
        let x = steps.pre_norm(l, &h)?;
        steps.gate(l, &x)?;
        let local = steps.local(l, &x)?;
        let global = steps.global(l, &x)?;
        h = steps.mix_norm_residual(l, h, local, global, ())?;
    }
    kt::copy(g, steps.ws.h.view(), tw.hs[m.blocks.len()].view())?;
    steps.final_norm(&h).map(|_| ())
}

/// The decoder and the mean cross-entropy by chunks of [`CE_ROWS`] rows: logits = x_f·tableᵀ,
/// the fused CE turns them into ∂L/∂logits in place, then (with `grad`) ∂x_f = ∂logits·table into
/// `tw.dx` and ∂table += ∂logitsᵀ·x_f into `tw.dtable`. The loss lands in `tw.loss`.
pub(crate) fn cross_entropy(m: &CudaModel, ws: &Workspace, tw: &TrainWs, grad: bool) -> Result<()> {
    let g = m.gpu;
    let (rows, dm, vpad) = (ws.batch * ws.n, m.dims.d_model, m.vpad);
    let math = m.math;
    let mut r0 = 0;
    while r0 < rows {
        let nr = CE_ROWS.min(rows - r0);
        let (x, lg) = (
            ws.x.slice(r0 * dm, nr * dm)?,
            tw.logits.slice(0, nr * vpad)?,
        );
        match &m.table16 {
            // bf16/fp16 mode: the chunk of x_f rounded to 16 bits times the table's copy, fp32 sums.
            Some(t16) => {
                let x16 = ws.a16.slice(0, nr * dm)?;
                crate::model::to_half(g, m.half, x, x16, nr * dm)?;
                gemm_nt_half_views(g, m.half, (nr, vpad, dm), x16, t16.view(), lg)?;
            }
            None => gemm(
                g,
                (false, true),
                (nr, vpad, dm),
                x,
                m.table.view(),
                lg,
                0.0,
                math,
            )?,
        }
        kt::cross_entropy(
            g,
            lg,
            tw.targets.slice(r0, nr)?,
            tw.row_loss.slice(r0, nr)?,
            (nr, m.dims.vocab, vpad),
            m.loss_scale / rows as f32,
        )?;
        if grad {
            let dx = tw.dx.slice(r0 * dm, nr * dm)?;
            gemm(
                g,
                (false, false),
                (nr, dm, vpad),
                lg,
                m.table.view(),
                dx,
                0.0,
                math,
            )?;
            let beta = if r0 == 0 { 0.0 } else { 1.0 };
            gemm(
                g,
                (true, false),
                (vpad, dm, nr),
                lg,
                x,
                tw.dtable.view(),
                beta,
                math,
            )?;
        }
        r0 += nr;
    }
    kt::sum(
        g,
        tw.row_loss.view(),
        false,
        tw.sum_part.view(),
        (1.0 / rows as f32, tw.loss.view(), false),
    )
}

/// ∂L/∂b += Σ_rows dy and ∂L/∂g += Σ_rows x̂∘dy of a LayerNorm (its backward wrote x̂∘dy).
fn norm_grads(
    g: &Gpu,
    tw: &TrainWs,
    dy: View<'_, f32>,
    (dw, db): (View<'_, f32>, View<'_, f32>),
    (rows, dim): (usize, usize),
) -> Result<()> {
    let part = tw.col_part.view();
    kt::col_sum(g, tw.xhat_dy.view(), (rows, dim), part, dw, true)?;
    kt::col_sum(g, dy, (rows, dim), part, db, true)
}

/// The whole backward after [`forward_saving`] and [`cross_entropy`] (which left ∂L/∂x_f in
/// `tw.dx` and the decoder's ∂table in `tw.dtable`): every parameter's gradient added into
/// `slots`' views (zeroed by the caller).
pub(crate) fn backward(
    m: &CudaModel,
    ws: &mut Workspace,
    tw: &mut TrainWs,
    slots: &Slots<'_>,
    ntok: usize,
) -> Result<()> {
    let g = m.gpu;
    let d = &m.dims;
    let (b, n) = (ws.batch, ws.n);
    let (rows, dm) = (b * n, d.d_model);
    let last = tw.hs[d.layers].view();
    kb::layer_norm(
        g,
        LnInput::Rows(last),
        m.final_norm.0.view(),
        tw.dx.view(),
        LnGrad::Rows {
            dx: tw.dh.view(),
            res: None,
        },
        tw.xhat_dy.view(),
        (rows, dm),
    )?;
    norm_grads(g, tw, tw.dx.view(), slots.final_norm, (rows, dm))?;
    for l in (0..m.blocks.len()).rev() {
        block(m, ws, tw, &slots.blocks[l], l)?;
    }
    kb::pos(g, tw.dh.view(), slots.pos, (b, n, dm))?;
    kb::embed(
        g,
        tw.dh.view(),
        (tw.tok.0.view(), tw.tok.1.view(), tw.tok.2.view()),
        ntok,
        tw.dtable.view(),
        (rows, m.vpad, dm),
    )?;
    kb::htt(
        g,
        tw.dtable.view(),
        (m.core1.view(), m.core2.view(), m.cos.view(), slots.sin),
        tw.htt_scratch.view(),
        (slots.core1, slots.core2, slots.phase),
        (d.vocab, dm),
        m.shape,
    )
}
