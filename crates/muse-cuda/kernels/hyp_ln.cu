// Fused LayerNorm + hyperbolic projection, forward (design hyperbolic.md §5): per row of x (R, D),
// y = (x - mu) / sqrt(var + eps) * gamma + beta (biased variance), out = exp0(y) (mode 0, tanh
// factor capped at 1 - 2 eps) or y * min(1, (1/sqrt(c) - 0.01) / sqrt(|y|^2 + 1e-8)) (mode 1,
// compat clip). Launchers: ../src/hyp_ln.rs; CPU reference: reference/src/hyp_ln/.
//
// hyp_ln_forward_c<CAP>_<T>: one warp per row (max(1, 8/CAP) rows per warp, loaded together),
// HYP_LN_WARPS warps per CTA, the row in registers (CAP elements per lane, D <= 32 CAP), loaded
// and stored with 8- or 16-byte vectors when vec != 0 (D a multiple of the vector width): one
// streaming read of x and one write of out (plus y and a when those pointers are non-null). Row statistics in T; |y|^2 and the projection factor in
// double. hyp_ln_forward_rows_<T>: any D, one CTA per row (grid-stride), x re-read from L2.
//
// Exported (T = float for _f32, double for _f64):
//   hyp_ln_forward_c<CAP>_f32(const T* x, const T* gamma, const T* beta, T* y, T* out, T* a,
//                             long long rows, int dim, int vec, T eps, double c, double s, int mode)
//   hyp_ln_forward_rows_f32(same arguments; vec is ignored)
// CAP in {1, 2, 4, 8, 16, 32} for f32 and {1, 2, 4, 8, 16} for f64. y and a may be null.
#define HYP_LN_WARPS 8
#define HYP_LN_THREADS 256
#define HYP_LN_ROW_ELEMS 8
#include "include/hyp_ln_common.cuh"

// Rows a warp handles at once: max(1, HYP_LN_ROW_ELEMS / CAP), all loaded before the first
// reduction, so that a lane has at least HYP_LN_ROW_ELEMS elements of x in flight (short rows
// would otherwise leave too few bytes in flight to saturate HBM).
template <int CAP> struct RowsPerWarp {
    static constexpr int R = CAP >= HYP_LN_ROW_ELEMS ? 1 : HYP_LN_ROW_ELEMS / CAP;
};

template <typename T, int CAP>
__device__ void forward_warp(const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                             T* __restrict__ y, T* __restrict__ out, T* __restrict__ a_out, long long rows, int dim,
                             int vec, T eps, double c, double s, int mode) {
    constexpr int R = RowsPerWarp<CAP>::R;
    const int lane = threadIdx.x & 31;
    const long long row0 = ((long long)blockIdx.x * HYP_LN_WARPS + (threadIdx.x >> 5)) * R;
    if (row0 >= rows) return;
    const bool vz = vec != 0;
    T v[R][CAP];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        if (row0 + r < rows) {
            load_row<T, CAP, true>(x + (row0 + r) * dim, dim, vz, lane, v[r]);
        } else {
#pragma unroll
            for (int m = 0; m < CAP; ++m) v[r][m] = T(0);
        }
    }
    T g[CAP], b[CAP];
    load_row<T, CAP, false>(gamma, dim, vz, lane, g);
    load_row<T, CAP, false>(beta, dim, vz, lane, b);
    const double cap = (double)tanh_cap<T>();
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const long long row = row0 + r;
        if (row >= rows) break;  // the same for every lane of the warp
        const long long off = row * dim;
        T sum = T(0);
#pragma unroll
        for (int m = 0; m < CAP; ++m) sum += v[r][m];
        const T mean = warp_sum(sum) / T(dim);
        T sq = T(0);
#pragma unroll
        for (int m = 0; m < CAP; ++m) {
            const T d = col<T, CAP>(vz, lane, m) < dim ? v[r][m] - mean : T(0);
            sq += d * d;
        }
        const T rstd = T(1) / Num<T>::sqrt_(warp_sum(sq) / T(dim) + eps);
        double r2 = 0.0;
#pragma unroll
        for (int m = 0; m < CAP; ++m) {
            const T xh = col<T, CAP>(vz, lane, m) < dim ? (v[r][m] - mean) * rstd : T(0);
            v[r][m] = xh * g[m] + b[m];
            r2 += (double)v[r][m] * (double)v[r][m];
        }
        const ProjScalars p = warp_proj_scalars(lane, mode, c, s, cap, warp_sum(r2));
        if (y) store_row<T, CAP>(y + off, dim, vz, lane, v[r]);
        const T phi = T(p.phi);
#pragma unroll
        for (int m = 0; m < CAP; ++m) v[r][m] *= phi;
        store_row<T, CAP>(out + off, dim, vz, lane, v[r]);
        if (a_out && lane == 0) a_out[row] = T(p.a);
    }
}

template <typename T>
__device__ void forward_block(const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                              T* __restrict__ y, T* __restrict__ out, T* __restrict__ a_out, long long rows, int dim,
                              T eps, double c, double s, int mode) {
    __shared__ T red[HYP_LN_THREADS / 32];
    __shared__ double red_d[HYP_LN_THREADS / 32];
    __shared__ double phi_s;
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + row * dim;
        T sum = T(0);
        for (int i = threadIdx.x; i < dim; i += HYP_LN_THREADS) sum += xr[i];
        const T mean = block_sum(sum, red) / T(dim);
        T sq = T(0);
        for (int i = threadIdx.x; i < dim; i += HYP_LN_THREADS) {
            const T d = xr[i] - mean;
            sq += d * d;
        }
        const T rstd = T(1) / Num<T>::sqrt_(block_sum(sq, red) / T(dim) + eps);
        double r2 = 0.0;
        for (int i = threadIdx.x; i < dim; i += HYP_LN_THREADS) {
            const T yi = (xr[i] - mean) * rstd * gamma[i] + beta[i];
            r2 += (double)yi * (double)yi;
        }
        r2 = block_sum(r2, red_d);
        if (threadIdx.x == 0) {
            const ProjScalars p = proj_scalars(mode, c, s, (double)tanh_cap<T>(), r2);
            phi_s = p.phi;
            if (a_out) a_out[row] = T(p.a);
        }
        __syncthreads();
        const T phi = T(phi_s);
        for (int i = threadIdx.x; i < dim; i += HYP_LN_THREADS) {
            const T yi = (xr[i] - mean) * rstd * gamma[i] + beta[i];
            if (y) y[row * dim + i] = yi;
            out[row * dim + i] = phi * yi;
        }
        __syncthreads();
    }
}

// Exported wrappers, one per (CAP, dtype).
#define HYP_LN_FWD_ARGS(T)                                                                                            \
    const T *x, const T *gamma, const T *beta, T *y, T *out, T *a, long long rows, int dim, int vec, T eps, double c, \
        double s, int mode
#define HYP_LN_FWD_PASS x, gamma, beta, y, out, a, rows, dim, vec, eps, c, s, mode

extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_forward_c1_f32(HYP_LN_FWD_ARGS(float)) { forward_warp<float, 1>(HYP_LN_FWD_PASS); }
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_forward_c2_f32(HYP_LN_FWD_ARGS(float)) { forward_warp<float, 2>(HYP_LN_FWD_PASS); }
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_forward_c4_f32(HYP_LN_FWD_ARGS(float)) { forward_warp<float, 4>(HYP_LN_FWD_PASS); }
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_forward_c8_f32(HYP_LN_FWD_ARGS(float)) { forward_warp<float, 8>(HYP_LN_FWD_PASS); }
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_forward_c16_f32(HYP_LN_FWD_ARGS(float)) { forward_warp<float, 16>(HYP_LN_FWD_PASS); }
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_forward_c32_f32(HYP_LN_FWD_ARGS(float)) { forward_warp<float, 32>(HYP_LN_FWD_PASS); }
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_forward_c1_f64(HYP_LN_FWD_ARGS(double)) { forward_warp<double, 1>(HYP_LN_FWD_PASS); }
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_forward_c2_f64(HYP_LN_FWD_ARGS(double)) { forward_warp<double, 2>(HYP_LN_FWD_PASS); }
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_forward_c4_f64(HYP_LN_FWD_ARGS(double)) { forward_warp<double, 4>(HYP_LN_FWD_PASS); }
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_forward_c8_f64(HYP_LN_FWD_ARGS(double)) { forward_warp<double, 8>(HYP_LN_FWD_PASS); }
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_forward_c16_f64(HYP_LN_FWD_ARGS(double)) { forward_warp<double, 16>(HYP_LN_FWD_PASS); }
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_forward_rows_f32(HYP_LN_FWD_ARGS(float)) {
    forward_block<float>(x, gamma, beta, y, out, a, rows, dim, eps, c, s, mode);
}
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_forward_rows_f64(HYP_LN_FWD_ARGS(double)) {
    forward_block<double>(x, gamma, beta, y, out, a, rows, dim, eps, c, s, mode);
}
