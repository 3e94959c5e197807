// The VRAM study's two models on the device (design model.md §4 and §6.3): the few layers that the
// language model's kernel files do not already have. The baseline transformer's token embedding
// and unmasked softmax attention (scores and probabilities one head at a time, in cuBLAS GEMMs
// around these row kernels), a bias add and a fill on sub-ranges (the logits by chunks), and the
// f32 copies of 16-bit saved activations. Mirrored from reference/src/baseline and
// reference/src/memopt; launchers: ../src/vram.rs.
//
// Exported:
//   vram_embed_rows(ids, table, h, rows, dim)          h[r, :] = table[ids[r], :]
//   vram_softmax_fwd(s, rows, cols, scale)             s[r, :] <- softmax(scale * s[r, :]), one warp per row
//   vram_softmax_bwd(p, dp, rows, cols, scale)         dp <- scale * p * (dp - sum(dp * p)), one warp per row
//   vram_add_bias(y, bias, rows, cols)                 y[r, c] += bias[c]
//   vram_fill(x, n, value)                             x[i] = value
//   vram_from_half(x, y, n, bf16)                      y = f32 of the fp16 (bf16 = 0) or bf16 (1) bits x
#include "include/model_common.cuh"

#define VRAM_THREADS 256
#define VRAM_WARPS 8

extern "C" __global__ void vram_embed_rows(const int* ids, const float* table, float* h, int rows, int dim) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * dim) return;
    const long long r = i / dim;
    h[i] = table[(long long)ids[r] * dim + i % dim];
}

// Max, then sum of exp(scale*(s - max)), then the quotient: as the reference's row loop (the
// scale is applied before the max, so the max is of the scaled row).
extern "C" __global__ void __launch_bounds__(VRAM_THREADS) vram_softmax_fwd(float* s, int rows, int cols, float scale) {
    const int row = blockIdx.x * VRAM_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    float* x = s + (long long)row * cols;
    float m = -INFINITY;
    for (int j = lane; j < cols; j += 32) m = fmaxf(m, scale * x[j]);
    m = warp_max_f(m);
    float z = 0.0f;
    for (int j = lane; j < cols; j += 32) {
        const float e = expf(scale * x[j] - m);
        x[j] = e;
        z += e;
    }
    z = warp_sum_f(z);
    const float inv = 1.0f / z;
    for (int j = lane; j < cols; j += 32) x[j] *= inv;
}

extern "C" __global__ void __launch_bounds__(VRAM_THREADS) vram_softmax_bwd(const float* p, float* dp, int rows, int cols, float scale) {
    const int row = blockIdx.x * VRAM_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float* pr = p + (long long)row * cols;
    float* d = dp + (long long)row * cols;
    float delta = 0.0f;
    for (int j = lane; j < cols; j += 32) delta += d[j] * pr[j];
    delta = warp_sum_f(delta);
    for (int j = lane; j < cols; j += 32) d[j] = scale * pr[j] * (d[j] - delta);
}

extern "C" __global__ void vram_add_bias(float* y, const float* bias, long long rows, int cols) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * cols) return;
    y[i] = __fadd_rn(y[i], bias[i % cols]);
}

extern "C" __global__ void vram_fill(float* x, long long n, float value) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = value;
}

// fp16: sign, 5-bit exponent (bias 15), 10-bit mantissa, subnormals exact; bf16: the high half of
// an f32. Exact in both cases (every 16-bit value is an f32).
extern "C" __global__ void vram_from_half(const unsigned short* x, float* y, long long n, int bf16) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const unsigned int h = x[i];
    if (bf16) {
        y[i] = __uint_as_float(h << 16);
        return;
    }
    const unsigned int sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    float v;
    if (e == 0) v = ldexpf((float)m, -24);                                    // zero and subnormals
    else if (e == 31) v = m ? __uint_as_float(0x7fc00000u) : INFINITY;        // NaN, infinity
    else v = __uint_as_float(((e + 112u) << 23) | (m << 13));                 // normal: rebias 15 -> 127
    y[i] = __uint_as_float(__float_as_uint(v) | sign);
}
