//! One block's VJP on the device: recompute from the block's saved input, then the mix + out-norm,
//! the attention, the AR-SSM, the BK gate and the pre-norm, in the order of the CPU reference's
//! `block_vjp` (`reference/src/model/grad/blocks.rs`).

use muse_reference::model::structure::ModelSteps;
use muse_reference::model::Conv;
use muse_reference::Result;

use super::super::forward::{Bk, CudaModel, CudaSteps, Workspace};
use super::super::train::BlockSlots;
use super::{norm_grads, TrainWs};
use crate::gemm::gemm;
use crate::model_bwd::{self as kb, LnGrad, LnInput};
use crate::train as kt;
use crate::{bk_core_bwd, hyp_attn, hyp_attn_bwd};

/// Block l's VJP: recomputes its intermediates from h_l, then ∂h_l = ∂h_{l+1} + LN_lᵀ(∂x) with
/// ∂x from the attention, the AR-SSM and the gate, in `tw.dh` (in place).
pub(super) fn block(
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
        let x = steps.pre_norm(l, &super::super::forward::steps::Slot::H)?;
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
