//! The VRAM study's two models on the GPU (design model.md §4 and §6.3): the memory-optimised
//! model ([`memopt::MemOptGpu`]) and the baseline transformer ([`baseline::BaselineGpu`]), each a
//! forward and exact backward under the original's protocol (a loss over the logits, backward, no
//! optimiser), with the allocation peak split into weights, gradients and the rest. This file holds
//! the launchers of `../kernels/vram.cu`; the rest of the layers are the language model's kernels
//! (`model.cu`, `model_bwd.cu`, `train.cu`) and cuBLAS GEMMs.

pub mod baseline;
pub mod memopt;
mod params;
pub mod study;

use cust::launch;
use muse_reference::Result;

use crate::device::{err, k, Gpu, View};
use crate::lazy::LazyModule;

pub use params::{DevParams, Walk};

/// The precision of the activations a model keeps for its backward (the memory-optimised model's
/// block inputs, the baseline's saved tensors). Compute stays f32 either way; a 16-bit store
/// rounds what it keeps (the forward continues from the rounded values, so the backward
/// differentiates exactly the forward that ran).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// f32, exact.
    F32,
    /// IEEE fp16 (round to nearest even).
    Fp16,
    /// bf16 (round to nearest even).
    Bf16,
}

impl Store {
    /// Its name in reports: `f32`, `fp16`, `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Fp16 => "fp16",
            Self::Bf16 => "bf16",
        }
    }
}

static MODULE: LazyModule = LazyModule::new(k::vram::CUBIN, "vram");

const THREADS: u32 = k::vram::THREADS;
const WARPS: u32 = k::vram::WARPS;

fn blocks(n: usize) -> u32 {
    n.div_ceil(THREADS as usize).max(1) as u32
}

fn need<T: cust::memory::DeviceCopy>(what: &str, v: &View<'_, T>, n: usize) -> Result<()> {
    crate::device::check_len("vram", what, v.len(), n)
}

/// `h[r, :] = table[ids[r], :]` for `rows` rows of `dim`; every id must be < the table's rows
/// (the caller checks them on the host).
pub fn embed_rows(
    gpu: &Gpu,
    ids: View<'_, i32>,
    table: View<'_, f32>,
    h: View<'_, f32>,
    (rows, vocab, dim): (usize, usize, usize),
) -> Result<()> {
    need("ids", &ids, rows)?;
    need("table", &table, vocab * dim)?;
    need("h", &h, rows * dim)?;
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::vram::EMBED_ROWS)?;
    let stream = &gpu.stream;
    let (r, d) = (rows as i32, dim as i32);
    // SAFETY: 5 arguments in the C order of `vram_embed_rows`; ids holds rows ints < vocab (the
    // caller's check), table vocab·dim floats and h rows·dim (checked above).
    unsafe {
        launch!(f<<<blocks(rows * dim), THREADS, 0, stream>>>(ids.ptr(), table.ptr(), h.ptr(), r, d))
    }
    .map_err(|e| err("launching vram_embed_rows", e))
}

/// Each row of `s` (rows, cols) becomes softmax(scale·row), in place.
pub fn softmax(
    gpu: &Gpu,
    s: View<'_, f32>,
    (rows, cols): (usize, usize),
    scale: f32,
) -> Result<()> {
    need("s", &s, rows * cols)?;
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::vram::SOFTMAX_FWD)?;
    let stream = &gpu.stream;
    let (r, c) = (rows as i32, cols as i32);
    let grid = (rows as u32).div_ceil(WARPS).max(1);
    // SAFETY: 4 arguments in the C order of `vram_softmax_fwd`; s holds rows·cols floats (checked
    // above); one warp per row, WARPS rows per CTA of THREADS (its __launch_bounds__).
    unsafe { launch!(f<<<grid, THREADS, 0, stream>>>(s.ptr(), r, c, scale)) }
        .map_err(|e| err("launching vram_softmax_fwd", e))
}

/// The VJP of p = softmax(scale·s) row by row: `dp` (∂L/∂p) becomes ∂L/∂s in place.
pub fn softmax_bwd(
    gpu: &Gpu,
    p: View<'_, f32>,
    dp: View<'_, f32>,
    (rows, cols): (usize, usize),
    scale: f32,
) -> Result<()> {
    need("p", &p, rows * cols)?;
    need("dp", &dp, rows * cols)?;
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::vram::SOFTMAX_BWD)?;
    let stream = &gpu.stream;
    let (r, c) = (rows as i32, cols as i32);
    let grid = (rows as u32).div_ceil(WARPS).max(1);
    // SAFETY: 5 arguments in the C order of `vram_softmax_bwd`; p and dp hold rows·cols floats
    // (checked above); one warp per row.
    unsafe { launch!(f<<<grid, THREADS, 0, stream>>>(p.ptr(), dp.ptr(), r, c, scale)) }
        .map_err(|e| err("launching vram_softmax_bwd", e))
}

/// `y[r, c] += bias[c]` for y (rows, cols).
pub fn add_bias(
    gpu: &Gpu,
    y: View<'_, f32>,
    bias: View<'_, f32>,
    (rows, cols): (usize, usize),
) -> Result<()> {
    need("y", &y, rows * cols)?;
    need("bias", &bias, cols)?;
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::vram::ADD_BIAS)?;
    let stream = &gpu.stream;
    let (r, c) = (rows as i64, cols as i32);
    // SAFETY: 4 arguments in the C order of `vram_add_bias`; y holds rows·cols floats and bias
    // cols (checked above).
    unsafe { launch!(f<<<blocks(rows * cols), THREADS, 0, stream>>>(y.ptr(), bias.ptr(), r, c)) }
        .map_err(|e| err("launching vram_add_bias", e))
}

/// Every element of `x` set to `value`.
pub fn fill(gpu: &Gpu, x: View<'_, f32>, value: f32) -> Result<()> {
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::vram::FILL)?;
    let stream = &gpu.stream;
    let n = x.len() as i64;
    // SAFETY: 3 arguments in the C order of `vram_fill`; x holds n floats.
    unsafe { launch!(f<<<blocks(x.len()), THREADS, 0, stream>>>(x.ptr(), n, value)) }
        .map_err(|e| err("launching vram_fill", e))
}

/// `y` = the f32 values of the first `n` 16-bit words of `x`: fp16 bits, or bf16 when `bf16`.
pub fn from_half(
    gpu: &Gpu,
    x: View<'_, u16>,
    y: View<'_, f32>,
    n: usize,
    bf16: bool,
) -> Result<()> {
    need("x", &x, n)?;
    need("y", &y, n)?;
    let m = MODULE.get(gpu)?;
    let f = gpu.function(m, k::vram::FROM_HALF)?;
    let stream = &gpu.stream;
    let (len, b) = (n as i64, i32::from(bf16));
    // SAFETY: 4 arguments in the C order of `vram_from_half`; x holds n u16 (the kernel's unsigned
    // short) and y n floats (checked above).
    unsafe { launch!(f<<<blocks(n), THREADS, 0, stream>>>(x.ptr(), y.ptr(), len, b)) }
        .map_err(|e| err("launching vram_from_half", e))
}
