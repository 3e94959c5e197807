// W4A8 GEMM for small M (decode; design hyperbolic.md §8.3): Y[m, n] = s_x[m] sum_g s_w[n, g]
// (sum_{k in g} q_x q_w - z_w[n, g] sum_{k in g} q_x), per-token int8 activations, 4-bit weights
// per output row and group of G inputs (symmetric -8..7, or 0..15 with zero points), exact int32
// sums per group (dp4a), an f32 epilogue. Launchers: ../src/w4a8.rs; CPU reference:
// reference/src/w4a8.rs.
//
// w4a8_quant_x(x, M, K, xq, sx): one warp per row: s = absmax/127 (1 for a zero row),
//   q = clamp(rint(x / s), -127, 127).
// w4a8_gemm_small(xq, sx, wp, wscale, wzero, y, M, N, K, G, asym): one warp per output column n,
//   W4A8_WARPS columns per CTA, M <= W4A8_MAX_M; lane l takes the groups l, l + 32, ...: per 4
//   packed bytes (8 codes) it unpacks two int8 words in k order (even index in the low nibble),
//   sign-extends symmetric codes, and adds dp4a(x word, w word) per row m; the group's int32 sums
//   and sum q_x give its f32 term; a warp sum over the lanes gives Y[m, n].
// Layouts: x [M, K] f32, xq [M, K] i8, sx [M] f32, wp [N, K/2] u8, wscale [N, K/G] fp16 bits,
// wzero [N, K/G] u8, y [M, N] f32. K % G == 0, G % 8 == 0.
#define W4A8_THREADS 256
#define W4A8_WARPS 8
#define W4A8_MAX_M 16

#ifndef MUSE_CUDA_EMU
__device__ __forceinline__ float w4a8_h2f(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
#else
inline float w4a8_h2f(unsigned short h) { return h2f(h); }
#endif

__device__ __forceinline__ float w4a8_warp_max(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

extern "C" __global__ void __launch_bounds__(W4A8_THREADS) w4a8_quant_x(const float* x, int M, int K, signed char* xq, float* sx) {
    const int row = blockIdx.x * W4A8_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= M) return;
    const float* xr = x + (long long)row * K;
    float amax = 0.0f;
    for (int k = lane; k < K; k += 32) amax = fmaxf(amax, fabsf(xr[k]));
    amax = w4a8_warp_max(amax);
    const float s = amax > 0.0f ? amax / 127.0f : 1.0f;
    for (int k = lane; k < K; k += 32) xq[(long long)row * K + k] = (signed char)fminf(fmaxf(rintf(xr[k] / s), -127.0f), 127.0f);
    if (lane == 0) sx[row] = s;
}

extern "C" __global__ void __launch_bounds__(W4A8_THREADS) w4a8_gemm_small(const signed char* xq, const float* sx, const unsigned char* wp, const unsigned short* wscale, const unsigned char* wzero, float* y, int M, int N, int K, int G, int asym) {
    const int n = blockIdx.x * W4A8_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (n >= N) return;
    const int groups = K / G;
    float part[W4A8_MAX_M];
#pragma unroll
    for (int m = 0; m < W4A8_MAX_M; ++m) part[m] = 0.0f;
    const unsigned int* wrow = reinterpret_cast<const unsigned int*>(wp + (long long)n * (K / 2));
    for (int g = lane; g < groups; g += 32) {
        int acc[W4A8_MAX_M], sumx[W4A8_MAX_M];
#pragma unroll
        for (int m = 0; m < W4A8_MAX_M; ++m) acc[m] = sumx[m] = 0;
        for (int t = 0; t < G / 8; ++t) {
            const int k = g * G + 8 * t;                 // 8 codes = 4 packed bytes = 1 word
            const unsigned int wb = __ldg(wrow + k / 8);
            const unsigned int lo = wb & 0x0F0F0F0Fu, hi = (wb >> 4) & 0x0F0F0F0Fu;
            unsigned int w0 = __byte_perm(lo, hi, 0x5140), w1 = __byte_perm(lo, hi, 0x7362);
            if (!asym) {  // two's-complement nibbles to int8: (v ^ 8) - 8 per byte
                w0 = __vsub4(w0 ^ 0x08080808u, 0x08080808u);
                w1 = __vsub4(w1 ^ 0x08080808u, 0x08080808u);
            }
#pragma unroll
            for (int m = 0; m < W4A8_MAX_M; ++m) {
                if (m < M) {
                    const int* xw = reinterpret_cast<const int*>(xq + (long long)m * K + k);
                    const int x0 = __ldg(xw), x1 = __ldg(xw + 1);
                    acc[m] = __dp4a(x1, (int)w1, __dp4a(x0, (int)w0, acc[m]));
                    if (asym) sumx[m] = __dp4a(x1, 0x01010101, __dp4a(x0, 0x01010101, sumx[m]));
                }
            }
        }
        const float s = w4a8_h2f(__ldg(wscale + (long long)n * groups + g));
        const int z = asym ? (int)__ldg(wzero + (long long)n * groups + g) : 0;
#pragma unroll
        for (int m = 0; m < W4A8_MAX_M; ++m) part[m] += s * (float)(acc[m] - z * sumx[m]);
    }
#pragma unroll
    for (int m = 0; m < W4A8_MAX_M; ++m) {
        float v = part[m];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0 && m < M) y[(long long)m * N + n] = sx[m] * v;
    }
}
