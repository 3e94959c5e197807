// Tangent-space linear attention, backward (design hyperbolic.md §9): the upstream gradient of the
// masked product's [num, den] from dO (reference/src/lin_attn/cpu.rs),
// G = [dO/m, -<dO, o>/m [den > eps]] with m = max(den, eps), one warp per row. The three gradient
// products then run on lin_attn.cu's kernels. Launchers: ../src/lin_attn_bwd.rs.
//
// Exported (T = float for _f32, double for _f64):
//   lin_attn_bwd_grad_prep_f32(const T* d_o, const T* o, const T* den, T* g, long long rows,
//       int dv, T eps)
// d_o and o hold rows x dv values, den rows, g rows x (dv + 1); grid ceil(rows / 8).

#define LIN_ATTN_BWD_THREADS 256
#define LIN_ATTN_BWD_WARPS 8

template <typename T>
__device__ void grad_prep(const T* __restrict__ d_o, const T* __restrict__ o, const T* __restrict__ den, T* __restrict__ g,
                          long long rows, int dv, T eps) {
    const int lane = threadIdx.x & 31;
    const long long row = (long long)blockIdx.x * LIN_ATTN_BWD_WARPS + (threadIdx.x >> 5);
    if (row >= rows) return;
    const T dn = den[row];
    const T m = fmax(dn, eps);
    T dot = T(0);
    for (int e = lane; e < dv; e += 32) {
        const T u = d_o[row * dv + e];
        dot += u * o[row * dv + e];
        g[row * (dv + 1) + e] = u / m;
    }
#pragma unroll
    for (int s = 16; s > 0; s >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, s);
    if (lane == 0) g[row * (dv + 1) + dv] = dn > eps ? -dot / m : T(0);
}

// Exported wrappers, one per dtype.
extern "C" __global__ void __launch_bounds__(LIN_ATTN_BWD_THREADS) lin_attn_bwd_grad_prep_f32(const float* d_o, const float* o, const float* den, float* g, long long rows, int dv, float eps) {
    grad_prep<float>(d_o, o, den, g, rows, dv, eps);
}
extern "C" __global__ void __launch_bounds__(LIN_ATTN_BWD_THREADS) lin_attn_bwd_grad_prep_f64(const double* d_o, const double* o, const double* den, double* g, long long rows, int dv, double eps) {
    grad_prep<double>(d_o, o, den, g, rows, dv, eps);
}
