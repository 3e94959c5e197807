// Fused LayerNorm + hyperbolic projection, backward (design hyperbolic.md §5): given g = dL/dout,
// recompute the row's LayerNorm and projection, take the projection VJP gy = phi g + bracket <y,g> y
// (reference/src/hyp_ln/row.rs), then the LayerNorm backward
// dx = rstd (gy gamma - mean(gy gamma) - xhat mean(gy gamma xhat)). dgamma = sum gy xhat, dbeta =
// sum gy and dc = sum <y, g> dc_coef are written as per-CTA partials (fixed row-to-CTA
// assignment), then summed over CTAs in a fixed order by hyp_ln_bwd_reduce_<T>: no atomics, the
// result is deterministic. Launchers: ../src/hyp_ln_bwd.rs.
//
// hyp_ln_bwd_backward_c<CAP>_<T>: one warp per row (grid-stride over rows, HYP_LN_WARPS warps per
// CTA), rows in registers as in hyp_ln.cu; the CTA's warps combine their dgamma/dbeta registers in
// shared memory. hyp_ln_bwd_backward_rows_<T>: any D, one CTA per row, each thread owning the
// columns tid + 256k of its CTA's partial rows.
//
// Exported (T = float for _f32, double for _f64):
//   hyp_ln_bwd_backward_c<CAP>_f32(const T* x, const T* gamma, const T* beta, const T* g, T* dx,
//       T* dgamma_part, T* dbeta_part, double* dc_part, long long rows, int dim, int vec, T eps,
//       double c, double s, int mode)
//   hyp_ln_bwd_backward_rows_f32(same arguments; vec is ignored)
//   hyp_ln_bwd_reduce_f32(const T* dgamma_part, const T* dbeta_part, const double* dc_part,
//       int parts, int dim, T* dgamma, T* dbeta, double* dc)
// Partials: `parts` = gridDim.x of the backward launch (<= HYP_LN_BWD_MAX_PARTS) rows of D
// (dgamma, dbeta) and `parts` doubles (dc). CAP in {1, 2, 4, 8, 16, 32} (f32), {1, ..., 16} (f64).
#include "include/hyp_ln_common.cuh"

#define HYP_LN_BWD_MAX_PARTS 1024
#define HYP_LN_BWD_REDUCE_THREADS 256

// Sums the CTA's HYP_LN_WARPS register rows `v` into warp 0's (tree over warps, fixed order).
template <typename T, int CAP> __device__ __forceinline__ void warps_sum(T (&v)[CAP], T* red) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int half = HYP_LN_WARPS / 2; half >= 1; half /= 2) {
        if (warp >= half && warp < 2 * half) {
#pragma unroll
            for (int m = 0; m < CAP; ++m) red[((warp - half) * CAP + m) * 32 + lane] = v[m];
        }
        __syncthreads();
        if (warp < half) {
#pragma unroll
            for (int m = 0; m < CAP; ++m) v[m] += red[(warp * CAP + m) * 32 + lane];
        }
        __syncthreads();
    }
}

template <typename T, int CAP>
__device__ void backward_warp(const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                              const T* __restrict__ g, T* __restrict__ dx, T* __restrict__ dgamma_part,
                              T* __restrict__ dbeta_part, double* __restrict__ dc_part, long long rows, int dim,
                              int vec, T eps, double c, double s, int mode) {
    constexpr int V = RowVec<T, CAP>::V;
    __shared__ T red[(HYP_LN_WARPS / 2) * CAP * 32];
    __shared__ double red_dc[HYP_LN_WARPS];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const bool vz = vec != 0;
    const double cap = (double)tanh_cap<T>();
    // Only the accumulators and two row arrays live across a row: gamma and beta are re-read
    // (L1 hits) group by group, so the widest rows (CAP 32) fit the registers without spilling.
    T acc_g[CAP], acc_b[CAP];
#pragma unroll
    for (int m = 0; m < CAP; ++m) acc_g[m] = acc_b[m] = T(0);
    double acc_c = 0.0;
    for (long long row = (long long)blockIdx.x * HYP_LN_WARPS + warp; row < rows;
         row += (long long)gridDim.x * HYP_LN_WARPS) {
        const long long off = row * dim;
        T xh[CAP], gr[CAP];
        load_row<T, CAP, true>(x + off, dim, vz, lane, xh);
        load_row<T, CAP, true>(g + off, dim, vz, lane, gr);
        T sum = T(0);
#pragma unroll
        for (int m = 0; m < CAP; ++m) sum += xh[m];
        const T mean = warp_sum(sum) / T(dim);
        T sq = T(0);
#pragma unroll
        for (int m = 0; m < CAP; ++m) {
            xh[m] = col<T, CAP>(vz, lane, m) < dim ? xh[m] - mean : T(0);
            sq += xh[m] * xh[m];
        }
        const T rstd = T(1) / Num<T>::sqrt_(warp_sum(sq) / T(dim) + eps);
        double r2 = 0.0;
        T yg = T(0);
#pragma unroll
        for (int k = 0; k < CAP / V; ++k) {
            T gv[V], bv[V];
            load_group<T, CAP, false>(gamma, dim, vz, lane, k, gv);
            load_group<T, CAP, false>(beta, dim, vz, lane, k, bv);
#pragma unroll
            for (int e = 0; e < V; ++e) {
                const int m = k * V + e;
                xh[m] *= rstd;
                const T y = xh[m] * gv[e] + bv[e];
                r2 += (double)y * (double)y;
                yg += y * gr[m];
            }
        }
        yg = warp_sum(yg);
        const ProjScalars p = warp_proj_scalars(lane, mode, c, s, cap, warp_sum(r2));
        if (lane == 0) acc_c += (double)yg * p.dc_coef;
        const T phi = T(p.phi), coef = T(p.bracket * (double)yg);
        T m1 = T(0), m2 = T(0);
#pragma unroll
        for (int k = 0; k < CAP / V; ++k) {
            T gv[V], bv[V];
            load_group<T, CAP, false>(gamma, dim, vz, lane, k, gv);
            load_group<T, CAP, false>(beta, dim, vz, lane, k, bv);
#pragma unroll
            for (int e = 0; e < V; ++e) {
                const int m = k * V + e;
                // Past D: xh, gr, gamma and beta are 0, so gy and everything below is 0 there.
                const T gy = phi * gr[m] + coef * (xh[m] * gv[e] + bv[e]);
                acc_g[m] += gy * xh[m];
                acc_b[m] += gy;
                gr[m] = gy * gv[e];
                m1 += gr[m];
                m2 += gr[m] * xh[m];
            }
        }
        m1 = warp_sum(m1) / T(dim);
        m2 = warp_sum(m2) / T(dim);
#pragma unroll
        for (int m = 0; m < CAP; ++m) gr[m] = rstd * (gr[m] - m1 - xh[m] * m2);
        store_row<T, CAP>(dx + off, dim, vz, lane, gr);
    }
    warps_sum<T, CAP>(acc_g, red);
    if (warp == 0) store_row<T, CAP>(dgamma_part + (long long)blockIdx.x * dim, dim, vz, lane, acc_g);
    warps_sum<T, CAP>(acc_b, red);
    if (warp == 0) store_row<T, CAP>(dbeta_part + (long long)blockIdx.x * dim, dim, vz, lane, acc_b);
    if (lane == 0) red_dc[warp] = acc_c;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
#pragma unroll
        for (int w = 0; w < HYP_LN_WARPS; ++w) t += red_dc[w];
        dc_part[blockIdx.x] = t;
    }
}

template <typename T>
__device__ void backward_block(const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                               const T* __restrict__ g, T* __restrict__ dx, T* __restrict__ dgamma_part,
                               T* __restrict__ dbeta_part, double* __restrict__ dc_part, long long rows, int dim,
                               T eps, double c, double s, int mode) {
    __shared__ T red[HYP_LN_THREADS / 32];
    __shared__ double red_d[HYP_LN_THREADS / 32];
    __shared__ double scal[2];
    T* pg = dgamma_part + (long long)blockIdx.x * dim;
    T* pb = dbeta_part + (long long)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += HYP_LN_THREADS) pg[i] = pb[i] = T(0);
    const double cap = (double)tanh_cap<T>();
    double acc_c = 0.0;
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + row * dim;
        const T* gr = g + row * dim;
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
        T yg = T(0);
        for (int i = threadIdx.x; i < dim; i += HYP_LN_THREADS) {
            const T yi = (xr[i] - mean) * rstd * gamma[i] + beta[i];
            r2 += (double)yi * (double)yi;
            yg += yi * gr[i];
        }
        r2 = block_sum(r2, red_d);
        yg = block_sum(yg, red);
        if (threadIdx.x == 0) {
            const ProjScalars p = proj_scalars(mode, c, s, cap, r2);
            acc_c += (double)yg * p.dc_coef;
            scal[0] = p.phi;
            scal[1] = p.bracket * (double)yg;
        }
        __syncthreads();
        const T phi = T(scal[0]), coef = T(scal[1]);
        T m1 = T(0), m2 = T(0);
        for (int i = threadIdx.x; i < dim; i += HYP_LN_THREADS) {
            const T xh = (xr[i] - mean) * rstd;
            const T gy = phi * gr[i] + coef * (xh * gamma[i] + beta[i]);
            pg[i] += gy * xh;
            pb[i] += gy;
            const T dxh = gy * gamma[i];
            m1 += dxh;
            m2 += dxh * xh;
        }
        m1 = block_sum(m1, red) / T(dim);
        m2 = block_sum(m2, red) / T(dim);
        for (int i = threadIdx.x; i < dim; i += HYP_LN_THREADS) {
            const T xh = (xr[i] - mean) * rstd;
            const T gy = phi * gr[i] + coef * (xh * gamma[i] + beta[i]);
            dx[row * dim + i] = rstd * (gy * gamma[i] - m1 - xh * m2);
        }
    }
    if (threadIdx.x == 0) dc_part[blockIdx.x] = acc_c;
}

template <typename T>
__device__ void reduce(const T* __restrict__ dgamma_part, const T* __restrict__ dbeta_part,
                       const double* __restrict__ dc_part, int parts, int dim, T* __restrict__ dgamma,
                       T* __restrict__ dbeta, double* __restrict__ dc) {
    const int i = blockIdx.x * HYP_LN_BWD_REDUCE_THREADS + threadIdx.x;
    if (i < dim) {
        T sg = T(0), sb = T(0);
        for (int p = 0; p < parts; ++p) {
            sg += dgamma_part[(long long)p * dim + i];
            sb += dbeta_part[(long long)p * dim + i];
        }
        dgamma[i] = sg;
        dbeta[i] = sb;
    }
    if (i == 0) {
        double t = 0.0;
        for (int p = 0; p < parts; ++p) t += dc_part[p];
        *dc = t;
    }
}

// Exported wrappers, one per (CAP, dtype).
#define HYP_LN_BWD_ARGS(T)                                                                                        \
    const T *x, const T *gamma, const T *beta, const T *g, T *dx, T *dgamma_part, T *dbeta_part, double *dc_part, \
        long long rows, int dim, int vec, T eps, double c, double s, int mode
#define HYP_LN_BWD_PASS x, gamma, beta, g, dx, dgamma_part, dbeta_part, dc_part, rows, dim, vec, eps, c, s, mode

extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_bwd_backward_c1_f32(HYP_LN_BWD_ARGS(float)) { backward_warp<float, 1>(HYP_LN_BWD_PASS); }
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_bwd_backward_c2_f32(HYP_LN_BWD_ARGS(float)) { backward_warp<float, 2>(HYP_LN_BWD_PASS); }
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_bwd_backward_c4_f32(HYP_LN_BWD_ARGS(float)) { backward_warp<float, 4>(HYP_LN_BWD_PASS); }
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_bwd_backward_c8_f32(HYP_LN_BWD_ARGS(float)) { backward_warp<float, 8>(HYP_LN_BWD_PASS); }
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_bwd_backward_c16_f32(HYP_LN_BWD_ARGS(float)) { backward_warp<float, 16>(HYP_LN_BWD_PASS); }
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_bwd_backward_c32_f32(HYP_LN_BWD_ARGS(float)) { backward_warp<float, 32>(HYP_LN_BWD_PASS); }
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_bwd_backward_c1_f64(HYP_LN_BWD_ARGS(double)) { backward_warp<double, 1>(HYP_LN_BWD_PASS); }
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_bwd_backward_c2_f64(HYP_LN_BWD_ARGS(double)) { backward_warp<double, 2>(HYP_LN_BWD_PASS); }
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_bwd_backward_c4_f64(HYP_LN_BWD_ARGS(double)) { backward_warp<double, 4>(HYP_LN_BWD_PASS); }
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_bwd_backward_c8_f64(HYP_LN_BWD_ARGS(double)) { backward_warp<double, 8>(HYP_LN_BWD_PASS); }
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_bwd_backward_c16_f64(HYP_LN_BWD_ARGS(double)) { backward_warp<double, 16>(HYP_LN_BWD_PASS); }
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_bwd_backward_rows_f32(HYP_LN_BWD_ARGS(float)) {
    backward_block<float>(x, gamma, beta, g, dx, dgamma_part, dbeta_part, dc_part, rows, dim, eps, c, s, mode);
}
extern "C" __global__ void __launch_bounds__(HYP_LN_THREADS) hyp_ln_bwd_backward_rows_f64(HYP_LN_BWD_ARGS(double)) {
    backward_block<double>(x, gamma, beta, g, dx, dgamma_part, dbeta_part, dc_part, rows, dim, eps, c, s, mode);
}
extern "C" __global__ void __launch_bounds__(HYP_LN_BWD_REDUCE_THREADS) hyp_ln_bwd_reduce_f32(
    const float* dgamma_part, const float* dbeta_part, const double* dc_part, int parts, int dim, float* dgamma,
    float* dbeta, double* dc) {
    reduce<float>(dgamma_part, dbeta_part, dc_part, parts, dim, dgamma, dbeta, dc);
}
extern "C" __global__ void __launch_bounds__(HYP_LN_BWD_REDUCE_THREADS) hyp_ln_bwd_reduce_f64(
    const double* dgamma_part, const double* dbeta_part, const double* dc_part, int parts, int dim, double* dgamma,
    double* dbeta, double* dc) {
    reduce<double>(dgamma_part, dbeta_part, dc_part, parts, dim, dgamma, dbeta, dc);
}
