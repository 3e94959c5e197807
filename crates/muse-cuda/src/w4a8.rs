//! W4A8 GEMM on the GPU for any M (kernels: `../kernels/w4a8.cu`, whose header states the
//! layouts and what is exact; reference: `muse_reference::w4a8`): per-token int8 activations
//! quantised on the device, 4-bit weights from the reference's quantiser (repacked here for 16-byte
//! loads), exact int32 sums per 32-code chunk (int8 tensor-core MMAs), an f32 epilogue.
//! [`linear`] is the production path: for M ≤ `MAX_M` (16, decode) one fused launch while M·K is
//! small ([`fuses`]), else [`quant_x`] then [`gemm_small`]; for larger M (prefill) [`quant_x`]
//! then the tiled [`gemm_large`].
//!
//! ```no_run
//! use muse_cuda::w4a8::{linear, Acts, DeviceWeights};
//! use muse_reference::w4a8::{quantize_weights, WeightCodec};
//! let gpu = muse_cuda::Cuda::new()?.gpu()?;
//! let w = ndarray::Array2::from_elem((64, 256), 0.01);
//! let dw = DeviceWeights::upload(gpu, &quantize_weights(w.view(), 128, WeightCodec::Symmetric)?)?;
//! let x = gpu.upload(&vec![0.5f32; 4 * 256])?;
//! let acts = Acts::new(gpu, 4, 256)?;
//! let y = gpu.alloc::<f32>(4 * 64)?;
//! linear(gpu, &x, &acts, &dw, &y)?;
//! # Ok::<(), muse_reference::Error>(())
//! ```

use cust::launch;
use muse_reference::w4a8::{Int4Weights, WeightCodec};
use muse_reference::{Error, Result};

use crate::device::{err, k, Buf, Gpu};
use crate::lazy::LazyModule;

mod large;
pub use large::gemm_large;

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

/// K rounded up to the kernels' 128-blocks (the padding holds zero codes).
fn kpad(k: usize) -> usize {
    k.div_ceil(128) * 128
}

/// Where k sits in a row of the permuted activation codes (kernel header): byte 32t + 8c + 4h + i
/// of its 128-block for k = 32c + 8t + 2i + h.
fn code_pos(k: usize) -> usize {
    let r = k % 128;
    k - r + 32 * (r % 32 / 8) + 8 * (r / 32) + 4 * (r % 2) + r % 8 / 2
}

/// The kernels' weight layout (header of `w4a8.cu`): packed codes [N/8][K/128][8][4] of 16 bytes,
/// signed nibbles (asymmetric codes ^ 8), N padded to 32 and K to 128 with zeros; metadata
/// [N/8][K/G][8] = fp16 scale bits | 16·(8 − z) << 16 (0 for symmetric weights).
fn device_layout(w: &Int4Weights) -> (Vec<u8>, Vec<u32>) {
    let (n, kk, groups) = (w.rows(), w.k, w.k / w.group);
    let (n32, nblk) = (n.div_ceil(32) * 32, kpad(kk) / 128);
    let asym = w.codec == WeightCodec::Asymmetric;
    let mut packed = vec![0u8; n32 / 8 * nblk * 512];
    let mut meta = vec![0u32; n32 / 8 * groups * 8];
    for row in 0..n {
        let (jt, col) = (row / 8, row % 8);
        for (i, &q) in w.codes[row * kk..(row + 1) * kk].iter().enumerate() {
            let nib = (if asym { q ^ 8 } else { q }) as u8 & 0x0f;
            let r = i % 128;
            let word = ((jt * nblk + i / 128) * 8 + col) * 4 + r % 32 / 8;
            packed[word * 16 + 4 * (r / 32) + r % 8 / 2] |= nib << (4 * (i % 2));
        }
        for g in 0..groups {
            let zc = if asym {
                16 * (8 - i16::from(w.zero[row * groups + g]))
            } else {
                0
            };
            meta[(jt * groups + g) * 8 + col] =
                u32::from(w.scale[row * groups + g].to_bits()) | (u32::from(zc as u16) << 16);
        }
    }
    (packed, meta)
}

/// 4-bit weights [N, K] on the device, in the kernels' layout.
pub struct DeviceWeights {
    /// N.
    pub n: usize,
    /// K.
    pub k: usize,
    /// G.
    pub group: usize,
    asym: bool,
    packed: Buf<u8>,
    meta: Buf<u32>,
}

impl DeviceWeights {
    /// Repacks and uploads the reference quantiser's weights (G a multiple of 32, so K is too:
    /// the kernels take 32-code chunks within one group).
    pub fn upload(gpu: &'static Gpu, w: &Int4Weights) -> Result<Self> {
        if w.group % 32 != 0 {
            return Err(unsupported(format!(
                "G = {} (K = {}): the kernels need G a multiple of 32",
                w.group, w.k
            )));
        }
        let (packed, meta) = device_layout(w);
        Ok(Self {
            n: w.rows(),
            k: w.k,
            group: w.group,
            asym: w.codec == WeightCodec::Asymmetric,
            packed: gpu.upload(&packed)?,
            meta: gpu.upload(&meta)?,
        })
    }
}

/// Per-token int8 activations [M, K] on the device, in the kernels' permuted layout, and their
/// scales.
pub struct Acts {
    /// M.
    pub m: usize,
    /// K.
    pub k: usize,
    xq: Buf<i8>,
    sx: Buf<f32>,
}

impl Acts {
    /// Buffers for M ≥ 1 rows of K (a positive multiple of 32).
    pub fn new(gpu: &'static Gpu, m: usize, k: usize) -> Result<Self> {
        if m == 0 {
            return Err(Error::Domain {
                op: OP,
                arg: "x",
                rule: "needs at least one row, got M = 0".into(),
            });
        }
        if k == 0 || k % 32 != 0 {
            return Err(unsupported(format!(
                "K = {k}: the kernels need K a positive multiple of 32"
            )));
        }
        Ok(Self {
            m,
            k,
            xq: gpu.alloc(m * kpad(k))?,
            sx: gpu.alloc(m)?,
        })
    }

    /// The codes [M, K] in k order (downloads; waits for queued work).
    pub fn codes(&self) -> Result<Vec<i8>> {
        let (all, kp) = (self.xq.to_vec()?, kpad(self.k));
        Ok((0..self.m * self.k)
            .map(|i| all[i / self.k * kp + code_pos(i % self.k)])
            .collect())
    }

    /// The scales s_x \[M\] (downloads; waits for queued work).
    pub fn scales(&self) -> Result<Vec<f32>> {
        self.sx.to_vec()
    }
}

/// Whether [`linear`] takes the single fused launch for M rows of K: M ≤ `MAX_M` (the small-M
/// path) and the codes of every row fit the kernel's shared memory (M·K rounded up to 128 ≤
/// `FUSE_MAX`).
pub fn fuses(m: usize, k: usize) -> bool {
    m <= k::w4a8::MAX_M as usize && m * kpad(k) <= k::w4a8::FUSE_MAX as usize
}

/// n-tiles (8 columns) per CTA: the most (≤ 4, so that more tiles share each activation load)
/// that still give about one CTA per SM (7/8 of them; two CTAs fit an SM).
fn tiles_per_cta(gpu: &Gpu, n: usize) -> usize {
    let enough = (gpu.info().sms as usize * 7 / 8).max(1);
    [4, 2]
        .into_iter()
        .find(|ct| n.div_ceil(8 * ct) >= enough)
        .unwrap_or(1)
}

fn check_x(x: &Buf<f32>, acts: &Acts) -> Result<()> {
    if x.len() != acts.m * acts.k {
        return Err(Error::Shape {
            op: OP,
            arg: "x",
            expected: format!("[M, K] = [{}, {}]", acts.m, acts.k),
            got: vec![x.len()],
        });
    }
    Ok(())
}

/// Checks a GEMM's operands: K of `acts` and `w` match, y holds [M, N].
fn check_gemm(acts: &Acts, w: &DeviceWeights, y: &Buf<f32>) -> Result<()> {
    if acts.k != w.k {
        return Err(Error::Shape {
            op: OP,
            arg: "w",
            expected: format!("[N, K] with K = {}", acts.k),
            got: vec![w.n, w.k],
        });
    }
    if y.len() != acts.m * w.n {
        return Err(Error::Shape {
            op: OP,
            arg: "y",
            expected: format!("[M, N] = [{}, {}]", acts.m, w.n),
            got: vec![y.len()],
        });
    }
    Ok(())
}

/// Checks the operands of a small-M GEMM (M ≤ `MAX_M`: the kernels hold 16 rows); returns
/// (grid, ct, M, N, K, G, asym) for its launch.
fn gemm_args(
    gpu: &Gpu,
    acts: &Acts,
    w: &DeviceWeights,
    y: &Buf<f32>,
) -> Result<(u32, i32, i32, i32, i32, i32, i32)> {
    let max = k::w4a8::MAX_M as usize;
    if acts.m > max {
        return Err(Error::Domain {
            op: OP,
            arg: "x",
            rule: format!(
                "needs M ≤ {max} rows for the small-M kernels, got M = {} (use gemm_large)",
                acts.m
            ),
        });
    }
    check_gemm(acts, w, y)?;
    let ct = tiles_per_cta(gpu, w.n);
    let grid = u32::try_from(w.n.div_ceil(8 * ct))
        .map_err(|_| unsupported(format!("N = {} exceeds the grid", w.n)))?;
    Ok((
        grid,
        int(ct, "ct")?,
        int(acts.m, "M")?,
        int(w.n, "N")?,
        int(w.k, "K")?,
        int(w.group, "G")?,
        i32::from(w.asym),
    ))
}

/// Quantises x [M, K] (f32, device) per token into `out` (one CTA per row).
pub fn quant_x(gpu: &'static Gpu, x: &Buf<f32>, out: &Acts) -> Result<()> {
    check_x(x, out)?;
    let func = gpu.function(MODULE.get(gpu)?, k::w4a8::QUANT_X)?;
    let (m, kk) = (int(out.m, "M")?, int(out.k, "K")?);
    let stream = &gpu.stream;
    let grid = (m as u32).div_ceil(k::w4a8::WARPS);
    // SAFETY: (1) five arguments in C order: an f32 pointer, two i32, an i8 and an f32 pointer;
    // (2) x holds M·K floats (checked), xq M·Kp bytes and sx M floats (Acts::new, Kp = K rounded
    // up to 128); one warp per row < M (WARPS rows a CTA, the grid rounds up); K % 32 == 0 keeps
    // the float4 loads aligned in cuMemAlloc'd buffers; (3) buffers synchronise `stream` before
    // being freed.
    unsafe {
        launch!(func<<<grid, k::w4a8::THREADS, 0, stream>>>(
            x.ptr(), m, kk, out.xq.ptr(), out.sx.ptr()
        ))
    }
    .map_err(|e| err("launching w4a8_quant_x", e))
}

/// y [M, N] = W4A8 product of the quantised activations ([`quant_x`]) and the weights (int8
/// tensor-core MMAs; the kernel header states what is exact), for M ≤ `MAX_M` (else an
/// [`Error::Domain`] naming `x`; [`gemm_large`] takes any M).
pub fn gemm_small(gpu: &'static Gpu, x: &Acts, w: &DeviceWeights, y: &Buf<f32>) -> Result<()> {
    let (grid, ct, m, n, kk, g, asym) = gemm_args(gpu, x, w, y)?;
    let func = gpu.function(MODULE.get(gpu)?, k::w4a8::GEMM_SMALL)?;
    let stream = &gpu.stream;
    // SAFETY: (1) eleven arguments in C order: i8, f32, u8, u32 and f32 pointers, six i32;
    // (2) xq M·Kp bytes and sx M floats (Acts::new), packed N32/8·Kp/128·512 bytes and meta
    // N32/8·(K/G)·8 words (device_layout, N32 = N rounded up to 32 ≥ the grid's 8·ct·grid
    // columns), y M·N (checked); K and N match (checked), G % 32 == 0 (upload); 16-byte loads
    // stay aligned in cuMemAlloc'd buffers; (3) buffers synchronise `stream` before being freed.
    unsafe {
        launch!(func<<<grid, k::w4a8::THREADS, 0, stream>>>(
            x.xq.ptr(), x.sx.ptr(), w.packed.ptr(), w.meta.ptr(), y.ptr(), m, n, kk, g, ct, asym
        ))
    }
    .map_err(|e| err("launching w4a8_gemm_small", e))
}

/// y [M, N] = W4A8(x [M, K] f32): one launch of the fused kernel when [`fuses`]`(M, K)`, else
/// [`quant_x`] then [`gemm_small`] (M ≤ `MAX_M`) or [`gemm_large`] (M > `MAX_M`). Either way
/// `acts` holds x's codes afterwards.
pub fn linear(
    gpu: &'static Gpu,
    x: &Buf<f32>,
    acts: &Acts,
    w: &DeviceWeights,
    y: &Buf<f32>,
) -> Result<()> {
    check_x(x, acts)?;
    check_gemm(acts, w, y)?;
    if acts.m > k::w4a8::MAX_M as usize {
        quant_x(gpu, x, acts)?;
        return gemm_large(gpu, acts, w, y);
    }
    if !fuses(acts.m, acts.k) {
        quant_x(gpu, x, acts)?;
        return gemm_small(gpu, acts, w, y);
    }
    let (grid, ct, m, n, kk, g, asym) = gemm_args(gpu, acts, w, y)?;
    let func = gpu.function(MODULE.get(gpu)?, k::w4a8::GEMM_FUSED)?;
    let stream = &gpu.stream;
    // SAFETY: (1) twelve arguments in C order: f32, u8, u32, f32, i8 and f32 pointers, six i32;
    // (2) x M·K floats (checked), packed, meta and y as in gemm_small, xq and sx as in quant_x
    // (written by CTA 0 only); M·Kp ≤ FUSE_MAX (fuses) bounds the static shared arrays; (3)
    // buffers synchronise `stream` before being freed.
    unsafe {
        launch!(func<<<grid, k::w4a8::THREADS, 0, stream>>>(
            x.ptr(), w.packed.ptr(), w.meta.ptr(), y.ptr(), acts.xq.ptr(), acts.sx.ptr(),
            m, n, kk, g, ct, asym
        ))
    }
    .map_err(|e| err("launching w4a8_gemm_fused", e))
}

#[cfg(test)]
mod tests {
    use super::{code_pos, device_layout};
    use muse_reference::w4a8::{quantize_weights, WeightCodec};

    #[test]
    fn code_positions_permute_each_block() {
        let mut seen: Vec<usize> = (0..384).map(code_pos).collect();
        assert_eq!(
            (code_pos(0), code_pos(1), code_pos(2), code_pos(8)),
            (0, 4, 1, 32)
        );
        assert_eq!((code_pos(32), code_pos(130)), (8, 129));
        seen.sort_unstable();
        assert_eq!(seen, (0..384).collect::<Vec<_>>());
    }

    #[test]
    fn the_layout_holds_every_code_once() {
        let w =
            ndarray::Array2::from_shape_fn((9, 160), |(i, j)| ((i * 31 + j * 7) % 17) as f64 - 8.0);
        for codec in [WeightCodec::Symmetric, WeightCodec::Asymmetric] {
            let qw = quantize_weights(w.view(), 32, codec).expect("weights");
            let (packed, meta) = device_layout(&qw);
            assert_eq!(
                (packed.len(), meta.len()),
                (32 / 8 * 2 * 512, 32 / 8 * 5 * 8)
            );
            // Read as the kernel does: lane 4g + t of tile jt, block b loads 16-byte word
            // (jt·nblk + b)·32 + lane; its u32 c, byte i, nibble h is k = 128b + 32c + 8t + 2i + h
            // of column 8jt + g. Every slot is visited once; those past N or K must be 0.
            let mut seen = vec![0u32; 9 * 160];
            for (byte, &v8) in packed.iter().enumerate() {
                let (word, c, i) = (byte / 16, byte % 16 / 4, byte % 4);
                let (jt, b, lane) = (word / 64, word / 32 % 2, word % 32);
                for h in 0..2 {
                    let (n, k) = (
                        8 * jt + lane / 4,
                        128 * b + 32 * c + 8 * (lane % 4) + 2 * i + h,
                    );
                    let v = i32::from((((v8 >> (4 * h)) << 4) as i8) >> 4); // sign-extend
                    if n >= 9 || k >= 160 {
                        assert_eq!(v, 0, "padding at n {n} k {k}");
                        continue;
                    }
                    seen[n * 160 + k] += 1;
                    let q = i32::from(qw.codes[n * 160 + k]);
                    let want = if codec == WeightCodec::Asymmetric {
                        q - 8
                    } else {
                        q
                    };
                    assert_eq!(v, want, "{codec:?} n {n} k {k}");
                }
            }
            assert!(seen.iter().all(|&c| c == 1));
            for n in 0..9 {
                for g in 0..5 {
                    let m = meta[(n / 8 * 5 + g) * 8 + n % 8];
                    assert_eq!(m & 0xffff, u32::from(qw.scale[n * 5 + g].to_bits()));
                    let z = i32::from(qw.zero[n * 5 + g]);
                    let zc = if codec == WeightCodec::Asymmetric {
                        16 * (8 - z)
                    } else {
                        0
                    };
                    assert_eq!(i32::from((m >> 16) as u16 as i16), zc);
                }
            }
        }
    }
}
