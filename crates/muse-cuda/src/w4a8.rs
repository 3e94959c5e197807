//! W4A8 GEMM for small M on the GPU (kernels: `../kernels/w4a8.cu`; reference:
//! `muse_reference::w4a8`): per-token int8 activations quantised on the device, 4-bit weights
//! packed by the reference's quantiser, exact int32 sums per group (dp4a), an f32 epilogue.
//!
//! ```no_run
//! use muse_cuda::w4a8::{gemm_small, quant_x, Acts, DeviceWeights};
//! use muse_reference::w4a8::{quantize_weights, WeightCodec};
//! let gpu = muse_cuda::Cuda::new()?.gpu()?;
//! let w = ndarray::Array2::from_elem((64, 256), 0.01);
//! let dw = DeviceWeights::upload(gpu, &quantize_weights(w.view(), 128, WeightCodec::Symmetric)?)?;
//! let x = gpu.upload(&vec![0.5f32; 4 * 256])?;
//! let acts = Acts::new(gpu, 4, 256)?;
//! quant_x(gpu, &x, &acts)?;
//! let y = gpu.alloc::<f32>(4 * 64)?;
//! gemm_small(gpu, &acts, &dw, &y)?;
//! # Ok::<(), muse_reference::Error>(())
//! ```

use cust::launch;
use muse_reference::w4a8::{Int4Weights, WeightCodec};
use muse_reference::{Error, Result};

use crate::device::{err, k, Buf, Gpu};
use crate::lazy::LazyModule;

static MODULE: LazyModule = LazyModule::new(k::w4a8::CUBIN, "w4a8");

const OP: &str = "w4a8";

fn unsupported(what: String) -> Error {
    Error::Unsupported {
        op: OP,
        backend: "cuda",
        what,
    }
}

fn int(v: usize, name: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| unsupported(format!("{name} = {v} does not fit a 32-bit int")))
}

/// 4-bit weights [N, K] on the device: packed codes, fp16 scales and zero points per group.
pub struct DeviceWeights {
    /// N.
    pub n: usize,
    /// K.
    pub k: usize,
    /// G.
    pub group: usize,
    asym: bool,
    packed: Buf<u8>,
    scale: Buf<u16>,
    zero: Buf<u8>,
}

impl DeviceWeights {
    /// Uploads the reference quantiser's weights (K % 8 == 0 and G % 8 == 0 for the kernel's
    /// word loads).
    pub fn upload(gpu: &'static Gpu, w: &Int4Weights) -> Result<Self> {
        if w.k % 8 != 0 || w.group % 8 != 0 {
            return Err(unsupported(format!(
                "K = {} and G = {} must be multiples of 8",
                w.k, w.group
            )));
        }
        Ok(Self {
            n: w.rows(),
            k: w.k,
            group: w.group,
            asym: w.codec == WeightCodec::Asymmetric,
            packed: gpu.upload(&w.packed())?,
            scale: gpu.upload(&w.scale.iter().map(|s| s.to_bits()).collect::<Vec<_>>())?,
            zero: gpu.upload(&w.zero)?,
        })
    }
}

/// Per-token int8 activations [M, K] and their scales on the device.
pub struct Acts {
    /// M.
    pub m: usize,
    /// K.
    pub k: usize,
    /// q [M, K].
    pub xq: Buf<i8>,
    /// s_x [M].
    pub sx: Buf<f32>,
}

impl Acts {
    /// Buffers for M ≤ `MAX_M` rows of K.
    pub fn new(gpu: &'static Gpu, m: usize, k: usize) -> Result<Self> {
        let max = k::w4a8::MAX_M as usize;
        if m == 0 || m > max || k == 0 || k % 8 != 0 {
            return Err(Error::Domain {
                op: OP,
                arg: "x",
                rule: format!(
                    "needs 1 ≤ M ≤ {max} and K a positive multiple of 8, got M = {m}, K = {k}"
                ),
            });
        }
        Ok(Self {
            m,
            k,
            xq: gpu.alloc(m * k)?,
            sx: gpu.alloc(m)?,
        })
    }
}

/// Quantises x [M, K] (f32, device) per token into `out`.
pub fn quant_x(gpu: &'static Gpu, x: &Buf<f32>, out: &Acts) -> Result<()> {
    if x.len() != out.m * out.k {
        return Err(Error::Shape {
            op: OP,
            arg: "x",
            expected: format!("[M, K] = [{}, {}]", out.m, out.k),
            got: vec![x.len()],
        });
    }
    let func = gpu.function(MODULE.get(gpu)?, k::w4a8::QUANT_X)?;
    let grid = out.m.div_ceil(k::w4a8::WARPS as usize) as u32;
    let (m, kk) = (int(out.m, "M")?, int(out.k, "K")?);
    let stream = &gpu.stream;
    // SAFETY: (1) five arguments in C order: an f32 pointer, two i32, an i8 and an f32 pointer;
    // (2) x holds M·K floats (checked), xq M·K bytes and sx M floats (Acts::new); one warp per
    // row < M; (3) buffers synchronise `stream` before they are freed.
    unsafe { launch!(func<<<grid, k::w4a8::THREADS, 0, stream>>>(x.ptr(), m, kk, out.xq.ptr(), out.sx.ptr())) }
        .map_err(|e| err("launching w4a8_quant_x", e))
}

/// y [M, N] = W4A8 product of the activations and the weights.
pub fn gemm_small(gpu: &'static Gpu, x: &Acts, w: &DeviceWeights, y: &Buf<f32>) -> Result<()> {
    if x.k != w.k {
        return Err(Error::Shape {
            op: OP,
            arg: "w",
            expected: format!("[N, K] with K = {}", x.k),
            got: vec![w.n, w.k],
        });
    }
    if y.len() != x.m * w.n {
        return Err(Error::Shape {
            op: OP,
            arg: "y",
            expected: format!("[M, N] = [{}, {}]", x.m, w.n),
            got: vec![y.len()],
        });
    }
    let func = gpu.function(MODULE.get(gpu)?, k::w4a8::GEMM_SMALL)?;
    let grid = u32::try_from(w.n.div_ceil(k::w4a8::WARPS as usize))
        .map_err(|_| unsupported(format!("N = {} exceeds the grid", w.n)))?;
    let (m, n, kk, g, asym) = (
        int(x.m, "M")?,
        int(w.n, "N")?,
        int(w.k, "K")?,
        int(w.group, "G")?,
        i32::from(w.asym),
    );
    let stream = &gpu.stream;
    // SAFETY: (1) eleven arguments in C order: i8, f32, u8, u16, u8, f32 pointers, five i32;
    // (2) xq M·K bytes, sx M, packed N·K/2, scale and zero N·K/G, y M·N (checked / by
    // construction); K and G multiples of 8, so the kernel's 4-byte loads stay aligned in
    // cuMemAlloc'd buffers; one warp per column < N; (3) buffers synchronise `stream` first.
    unsafe {
        launch!(func<<<grid, k::w4a8::THREADS, 0, stream>>>(
            x.xq.ptr(), x.sx.ptr(), w.packed.ptr(), w.scale.ptr(), w.zero.ptr(), y.ptr(), m, n, kk, g, asym
        ))
    }
    .map_err(|e| err("launching w4a8_gemm_small", e))
}
