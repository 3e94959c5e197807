//! The tiled W4A8 GEMM for M > `MAX_M` (prefill): kernel `w4a8_gemm_large` of
//! `../../kernels/w4a8.cu` (its header states the layouts, what is exact and the schedule; the
//! body is `kernels/include/w4a8_large.cuh`).

use cust::launch;
use muse_reference::Result;

use super::{check_gemm, int, unsupported, Acts, DeviceWeights, MODULE};
use crate::device::{err, k, Buf, Gpu};

/// The most CTAs in a grid's y dimension (CUDA's limit).
const GRID_Y_MAX: usize = 65_535;

/// The launch grid for M rows and N columns: (⌈N / 64⌉, ⌈M / 128⌉) CTAs, x over the column
/// tiles, y over the row tiles.
fn grid(m: usize, n: usize) -> Result<(u32, u32, u32)> {
    let cols = n.div_ceil(8 * k::w4a8::LARGE_TILES as usize);
    let rows = m.div_ceil(k::w4a8::LARGE_ROWS as usize);
    let gx = u32::try_from(cols).map_err(|_| unsupported(format!("N = {n} exceeds the grid")))?;
    let gy = u32::try_from(rows)
        .ok()
        .filter(|_| rows <= GRID_Y_MAX)
        .ok_or_else(|| {
            unsupported(format!(
                "M = {m} needs {rows} row tiles of {}, more than the grid's {GRID_Y_MAX}",
                k::w4a8::LARGE_ROWS
            ))
        })?;
    Ok((gx, gy, 1))
}

/// y [M, N] = W4A8 product of the quantised activations ([`quant_x`](super::quant_x)) and the
/// weights, for any M ≥ 1 (built for M > `MAX_M`, where [`linear`](super::linear) takes it):
/// CTA tiles of 128 rows × 64 columns, operands staged in shared memory by cp.async, int8
/// tensor-core MMAs, the same exact integer sums and f32 epilogue as
/// [`gemm_small`](super::gemm_small); deterministic.
///
/// ```no_run
/// use muse_cuda::w4a8::{gemm_large, quant_x, Acts, DeviceWeights};
/// use muse_reference::w4a8::{quantize_weights, WeightCodec};
/// let gpu = muse_cuda::Cuda::new()?.gpu()?;
/// let w = ndarray::Array2::from_elem((1536, 512), 0.01);
/// let dw = DeviceWeights::upload(gpu, &quantize_weights(w.view(), 128, WeightCodec::Symmetric)?)?;
/// let x = gpu.upload(&vec![0.5f32; 1024 * 512])?;
/// let acts = Acts::new(gpu, 1024, 512)?;
/// let y = gpu.alloc::<f32>(1024 * 1536)?;
/// quant_x(gpu, &x, &acts)?;
/// gemm_large(gpu, &acts, &dw, &y)?;
/// # Ok::<(), muse_reference::Error>(())
/// ```
pub fn gemm_large(gpu: &'static Gpu, x: &Acts, w: &DeviceWeights, y: &Buf<f32>) -> Result<()> {
    check_gemm(x, w, y)?;
    let grid = grid(x.m, w.n)?;
    let (m, n, kk, g) = (
        int(x.m, "M")?,
        int(w.n, "N")?,
        int(w.k, "K")?,
        int(w.group, "G")?,
    );
    let asym = i32::from(w.asym);
    let func = gpu.function(MODULE.get(gpu)?, k::w4a8::GEMM_LARGE)?;
    let stream = &gpu.stream;
    // SAFETY: (1) ten arguments in C order: i8, f32, u8, u32 and f32 pointers, five i32 (M, N,
    // K, G, asym); (2) xq M·Kp bytes and sx M floats (Acts::new, Kp = K rounded up to 128; rows
    // ≥ M are neither read nor stored), packed N32/8·Kp/128·512 bytes and meta N32/8·(K/G)·8
    // words (device_layout, N32 = N rounded up to 32; the kernel reads no tile ≥ N32/8, though
    // the grid's 64-column tiles may end past N32), y M·N floats (checked; rows ≥ M and columns
    // ≥ N are not stored); K and N match (checked), G % 32 == 0 (upload), K % 32 == 0 (Acts::new);
    // the 16-byte cp.async sources stay aligned in cuMemAlloc'd buffers (Kp and the 512-byte
    // tiles are multiples of 16); 46 KiB of static shared memory (< 48 KiB); (3) buffers
    // synchronise `stream` before being freed.
    unsafe {
        launch!(func<<<grid, k::w4a8::THREADS, 0, stream>>>(
            x.xq.ptr(), x.sx.ptr(), w.packed.ptr(), w.meta.ptr(), y.ptr(), m, n, kk, g, asym
        ))
    }
    .map_err(|e| err("launching w4a8_gemm_large", e))
}

#[cfg(test)]
mod tests {
    use super::grid;

    #[test]
    fn the_grid_covers_every_tile() {
        assert_eq!(grid(17, 40).expect("grid"), (1, 1, 1));
        assert_eq!(grid(150, 136).expect("grid"), (3, 2, 1));
        assert_eq!(grid(1024, 1536).expect("grid"), (24, 8, 1));
        assert!(grid(128 * 65_535 + 1, 64).is_err());
    }
}
