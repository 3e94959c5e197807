//! The exact backward of the model on the device (issue 9), the schedule of the CPU reference's
//! `reference/src/model/grad/` step for step: the forward keeps each block's input (the
//! checkpoints), the fused cross-entropy turns the logits into their gradient in place, and each
//! block is recomputed from its input before its VJP runs. Gradients land in the flat buffer of
//! [`super::train::Grads`] at their parameters' slots; nothing waits for the host.

use muse_reference::hyp_attn::{Form, Mask};
use muse_reference::model::structure::ModelSteps;
use muse_reference::model::Conv;
use muse_reference::Result;
use ndarray::Array4;

use super::forward::{Bk, CudaModel, CudaSteps, Workspace};
use super::train::{BlockSlots, Slots};
use crate::device::{Buf, Gpu, View};
use crate::gemm::gemm;
use crate::model_bwd::{self as kb, LnGrad, LnInput};
use crate::train as kt;
use crate::{bk_core_bwd, hyp_attn, hyp_attn_bwd};

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
        gemm(
            g,
            (false, true),
            (nr, vpad, dm),
            x,
            m.table.view(),
            lg,
            0.0,
            math,
        )?;
        kt::cross_entropy(
            g,
            lg,
            tw.targets.slice(r0, nr)?,
            tw.row_loss.slice(r0, nr)?,
            (nr, m.dims.vocab, vpad),
            1.0 / rows as f32,
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

/// Block l's VJP: recomputes its intermediates from h_l, then ∂h_l = ∂h_{l+1} + LN_lᵀ(∂x) with
/// ∂x from the attention, the AR-SSM and the gate, in `tw.dh` (in place).
fn block(
    m: &CudaModel,
    ws: &mut Workspace,
    tw: &mut TrainWs,
    s: &BlockSlots<'_>,
    l: usize,
) -> Result<()> {
    let g = m.gpu;
    let d = &m.dims;
    let (b, n) = (ws.batch, ws.n);
    let (rows, dm, r, gh) = (b * n, d.d_model, d.ssm_rank, d.ssm_hidden);
    let (heads, dh) = (d.heads, d.d_model / d.heads);
    let math = m.math;
    let blk = &m.blocks[l];
    kt::copy(g, tw.hs[l].view(), ws.h.view())?;
    {
        let mut steps = CudaSteps {
            m,
            ws: &mut *ws,
            trace: None,
            timer: None,
        };
        let x = steps.pre_norm(l, &super::forward::steps::Slot::H)?;
        steps.gate(l, &x)?;
        steps.local(l, &x)?;
        steps.global(l, &x)?;
    }
    // h_{l+1} = h_l + LN_out(mix): the mix's VJP.
    kb::layer_norm(
        g,
        LnInput::Mix(ws.local.view(), ws.global.view(), ws.gate.view()),
        blk.out_norm.0.view(),
        tw.dh.view(),
        LnGrad::Mix(tw.dlocal.view(), tw.dglobal.view(), tw.dgate.view()),
        tw.xhat_dy.view(),
        (rows, dm),
    )?;
    norm_grads(g, tw, tw.dh.view(), s.out_norm, (rows, dm))?;
    // The attention: local = o·W_oᵀ, o = attn(q, k, v), [q | k | v] = x·W_qkvᵀ.
    gemm(
        g,
        (false, false),
        (rows, dm, dm),
        tw.dlocal.view(),
        blk.wo.view(),
        tw.d_o.view(),
        0.0,
        math,
    )?;
    gemm(
        g,
        (true, false),
        (dm, dm, rows),
        tw.dlocal.view(),
        ws.o.view(),
        s.wo,
        1.0,
        math,
    )?;
    let shape = (b, n, heads, dh);
    for (i, dst) in [&tw.attn.q, &tw.attn.k, &tw.attn.v].into_iter().enumerate() {
        kb::head_perm(g, ws.qkv.view(), dst.view(), shape, (3 * dm, i * dm), true)?;
    }
    tw.attn.c = f64::from(blk.attn.c);
    tw.attn.beta = f64::from(blk.attn.beta);
    hyp_attn::forward(g, &tw.attn, &tw.attn_fwd)?;
    kb::head_perm(
        g,
        tw.d_o.view(),
        tw.attn_bwd.d_o.view(),
        shape,
        (dm, 0),
        true,
    )?;
    hyp_attn_bwd::backward(g, &tw.attn, &tw.attn_fwd, &tw.attn_bwd)?;
    // dc = Σ ds/(2√c), then through c = softplus(log c) and β = softplus(β_raw).
    let sc = f64::from(blk.attn.c).sqrt();
    let parts = tw.attn_bwd.part_ds.len();
    let dlogc = (softplus_grad(blk.raw.log_c) / (2.0 * sc)) as f32;
    kt::sum_parts(
        g,
        tw.attn_bwd.part_ds.view(),
        (parts, 1),
        (dlogc, s.log_c, true),
    )?;
    let dbeta = softplus_grad(blk.raw.beta) as f32;
    kt::sum_parts(
        g,
        tw.attn_bwd.part_dbeta.view(),
        (parts, 1),
        (dbeta, s.beta, true),
    )?;
    for (i, src) in [&tw.attn_bwd.dq, &tw.attn_bwd.dk, &tw.attn_bwd.dv]
        .into_iter()
        .enumerate()
    {
        kb::head_perm(
            g,
            src.view(),
            tw.dqkv.view(),
            shape,
            (3 * dm, i * dm),
            false,
        )?;
    }
    gemm(
        g,
        (false, false),
        (rows, dm, 3 * dm),
        tw.dqkv.view(),
        blk.wqkv.view(),
        tw.dx.view(),
        0.0,
        math,
    )?;
    gemm(
        g,
        (true, false),
        (3 * dm, dm, rows),
        tw.dqkv.view(),
        ws.x.view(),
        s.wqkv,
        1.0,
        math,
    )?;
    // The AR-SSM: global = out(kv) + b + conv(x), kv = cumsum(ug)∘vg, [ug | vg] = [u | v]∘gg,
    // gg = σ(g2(gh)), gh = ReLU(g1(x)).
    let part = tw.col_part.view();
    kt::col_sum(g, tw.dglobal.view(), (rows, dm), part, s.out_b, true)?;
    gemm(
        g,
        (true, false),
        (dm, r, rows),
        tw.dglobal.view(),
        ws.kv.view(),
        s.out_w,
        1.0,
        math,
    )?;
    gemm(
        g,
        (false, false),
        (rows, r, dm),
        tw.dglobal.view(),
        blk.out.w.view(),
        tw.dkv.view(),
        0.0,
        math,
    )?;
    kb::conv(
        g,
        tw.dglobal.view(),
        ws.x.view(),
        blk.taps.view(),
        (tw.dx.view(), tw.dtaps_row.view()),
        (b, n, dm),
        m.num.conv == Conv::Causal,
    )?;
    kt::col_sum(g, tw.dtaps_row.view(), (rows, 3 * dm), part, s.conv, true)?;
    kb::scan(
        g,
        (ws.ug.view(), ws.vg.view()),
        tw.dkv.view(),
        (tw.dug.view(), tw.dvg.view()),
        (b, n, r),
    )?;
    kb::gate_uv(
        g,
        ws.uv.view(),
        ws.gg.view(),
        (tw.dug.view(), tw.dvg.view()),
        (tw.duv.view(), tw.dgg.view()),
        (rows, r),
    )?;
    kb::act(g, ws.gg.view(), tw.dgg.view(), rows * r, 2)?;
    kt::col_sum(g, tw.dgg.view(), (rows, r), part, s.g2_b, true)?;
    gemm(
        g,
        (true, false),
        (r, gh, rows),
        tw.dgg.view(),
        ws.gh.view(),
        s.g2_w,
        1.0,
        math,
    )?;
    gemm(
        g,
        (false, false),
        (rows, gh, r),
        tw.dgg.view(),
        blk.g2.w.view(),
        tw.dgh.view(),
        0.0,
        math,
    )?;
    kb::act(g, ws.gh.view(), tw.dgh.view(), rows * gh, 1)?;
    kt::col_sum(g, tw.dgh.view(), (rows, gh), part, s.g1_b, true)?;
    gemm(
        g,
        (true, false),
        (gh, dm, rows),
        tw.dgh.view(),
        ws.x.view(),
        s.g1_w,
        1.0,
        math,
    )?;
    gemm(
        g,
        (false, false),
        (rows, dm, gh),
        tw.dgh.view(),
        blk.g1.w.view(),
        tw.dx.view(),
        1.0,
        math,
    )?;
    gemm(
        g,
        (true, false),
        (2 * r, dm, rows),
        tw.duv.view(),
        ws.x.view(),
        s.uv,
        1.0,
        math,
    )?;
    gemm(
        g,
        (false, false),
        (rows, dm, 2 * r),
        tw.duv.view(),
        blk.uv.view(),
        tw.dx.view(),
        1.0,
        math,
    )?;
    // The gate: g = σ(gs·|Im G|), G = BK-Core(H0 + diag(clamp(v_proj(x), ±3)), z).
    let (p, fws) = match &ws.bk {
        Bk::F32(p, fws) => (p, fws),
        Bk::F64(..) => unreachable!("TrainWs::new refuses complex64 BK-Core"),
    };
    kb::gate(
        g,
        fws.g.view(),
        tw.dgate.view(),
        blk.gs,
        (tw.bk_bwd.up.view(), tw.dgs_row.view()),
        rows,
    )?;
    kt::sum(
        g,
        tw.dgs_row.view(),
        false,
        tw.sum_part.view(),
        (1.0, s.gs, true),
    )?;
    bk_core_bwd::backward(g, p, &mut tw.bk_bwd)?;
    // ∂L/∂z = conj(Σ parts): ∂L/∂Im z = −Σ Im parts; Im z = softplus(ε) + 1e-6 + γ.
    let slots = tw.bk_bwd.plan.slots();
    let im_parts = tw.bk_bwd.dz_part.slice(1, 2 * slots - 1)?;
    let deps = -(softplus_grad(blk.raw.epsilon) as f32);
    kt::sum_parts(g, im_parts, (slots, 2), (deps, s.epsilon, true))?;
    kt::sum_parts(g, im_parts, (slots, 2), (-1.0, s.gamma, true))?;
    kb::potential(
        g,
        tw.bk_bwd.grad_a.view(),
        ws.v.view(),
        blk.v_b,
        tw.dpre.view(),
        rows,
    )?;
    kt::sum(
        g,
        tw.dpre.view(),
        false,
        tw.sum_part.view(),
        (1.0, s.v_b, true),
    )?;
    gemm(
        g,
        (true, false),
        (1, dm, rows),
        tw.dpre.view(),
        ws.x.view(),
        s.v_w,
        1.0,
        math,
    )?;
    gemm(
        g,
        (false, false),
        (rows, dm, 1),
        tw.dpre.view(),
        blk.v_w.view(),
        tw.dx.view(),
        1.0,
        math,
    )?;
    // x = LN_l(h_l): ∂h_l = ∂h_{l+1} + LN_lᵀ(∂x), in place in dh.
    kb::layer_norm(
        g,
        LnInput::Rows(tw.hs[l].view()),
        blk.norm.0.view(),
        tw.dx.view(),
        LnGrad::Rows {
            dx: tw.dh.view(),
            res: Some(tw.dh.view()),
        },
        tw.xhat_dy.view(),
        (rows, dm),
    )?;
    norm_grads(g, tw, tw.dx.view(), s.norm, (rows, dm))
}

/// d softplus(x)/dx = σ(x) (1 where softplus returns x itself, x > 20), as the reference's.
fn softplus_grad(x: f32) -> f64 {
    let x = f64::from(x);
    if x > 20.0 {
        1.0
    } else {
        1.0 / (1.0 + (-x).exp())
    }
}
