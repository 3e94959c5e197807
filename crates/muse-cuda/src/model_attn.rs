//! Launchers of `../kernels/model_attn.cu`: the language model's windowed hyperbolic attention
//! (the generic kernel and the shared-memory one for W, dh ≤ 64).

use cust::launch;
use muse_reference::Result;

use crate::device::{err, k, Buf, Gpu};
use crate::lazy::LazyModule;

pub(crate) static MODULE: LazyModule = LazyModule::new(k::model_attn::CUBIN, "model_attn");

/// Head widths the generic window-attention kernel holds in its per-thread arrays.
pub const MAX_HEAD_DIM: usize = k::model_attn::MAX_DH as usize;

/// The scalars of one window-attention launch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttnScalars {
    pub c: f32,
    pub beta: f32,
    pub bias: f32,
    pub form: i32,
}

/// o (rows, heads·dh) from qkv (rows, 3·heads·dh), windows of `window` keys.
pub(crate) fn window_attn(
    gpu: &Gpu,
    qkv: &Buf<f32>,
    o: &Buf<f32>,
    (batch, n, heads, dh, window): (usize, usize, usize, usize, usize),
    s: AttnScalars,
) -> Result<()> {
    let m = MODULE.get(gpu)?;
    // W ≤ 64 and dh ≤ 64 (every shipped config but large): the shared-memory kernel.
    let fast = window <= k::model_attn::W64_MAX as usize && dh <= k::model_attn::W64_MAX as usize;
    let name = if fast {
        k::model_attn::WINDOW_W64
    } else {
        k::model_attn::WINDOW
    };
    let f = gpu.function(m, name)?;
    let stream = &gpu.stream;
    let grid = cust::function::GridSize::xyz(n.div_ceil(window) as u32, heads as u32, batch as u32);
    let block = if fast {
        k::model_attn::W64_WARPS * 32
    } else {
        window.next_multiple_of(32) as u32
    };
    let (b, ni, h, d, w) = (
        batch as i32,
        n as i32,
        heads as i32,
        dh as i32,
        window as i32,
    );
    // SAFETY: 11 arguments in the C order of `model_attn_window` and `model_attn_window_w64`
    // (one signature); qkv holds batch·n·3·heads·dh floats and o batch·n·heads·dh; dh ≤
    // MODEL_ATTN_MAX_DH (checked by the caller), window ≤ 1024; the w64 kernel only for W, dh ≤ 64.
    unsafe {
        launch!(f<<<grid, block, 0, stream>>>(qkv.ptr(), o.ptr(), b, ni, h, d, w, s.c, s.beta, s.bias, s.form))
    }
    .map_err(|e| err(&format!("launching {name}"), e))
}
