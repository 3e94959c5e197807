// Hyperbolic attention backward on the GPU, SIMT path (any D and Dv, f32 and f64, exact form):
// recompute from q, k, v, o and lse only (design hyperbolic.md §3.4), deterministic schedule (a):
// a query-major kernel for dQ (+ per-CTA partials of dL/ds and dL/dbeta) and a key-major kernel
// for dK and dV. No N x M buffer; no atomics. Launchers: ../src/hyp_attn_bwd.rs. Row vectors and
// terms come from hyp_attn_prep_exact_<T> (hyp_attn.cu).
//
// Per pair: P = exp(-beta d - lse_i), dP = dO_i.v_j, dS = P (dP - Delta_i), delta = -beta dS;
// with k = delta acosh1p'(z)/s and the partials of z (reference/src/poincare/grad.rs pair_vjp):
//   dq_i += (ga - ang_u C) u_hat_i + ang_u w_hat_j,   dk_j += (gb - ang_w C) w_hat_j + ang_w u_hat_i,
//   dv_j += P dO_i,   ds += -delta d/s + k (dz/da r + dz/db rho),   dbeta += -dS d.
//
// Exported (T = float for _f32, double for _f64):
//   hyp_attn_bwd_delta_<T>(const T* d_o, const T* o, T* delta, int rows, int dv)
//   hyp_attn_bwd_dq_<T>(BWD_ARGS, T* dq, T* part_ds, T* part_dbeta)
//   hyp_attn_bwd_dkdv_<T>(BWD_ARGS, T* dk, T* dv_out)
// BWD_ARGS = const T* vq, const T* tq, const T* vk, const T* tk, const T* v, const T* d_o,
//   const T* lse, const T* delta, int heads, int n, int m, int dim, int dv, T s, T beta,
//   int mask, int window, const int* lengths
// grid dq: (ceil(N/BM), B*H, ceil(D/VC)); grid dkdv: (ceil(M/BK), B*H, ceil(D/VC) + ceil(Dv/VC)).
#include "include/hyp_attn_common.cuh"

#define HYP_ATTN_BWD_BM 64
#define HYP_ATTN_BWD_BK 64
#define HYP_ATTN_BWD_DC 32
#define HYP_ATTN_BWD_VC 32
#define HYP_ATTN_BWD_BN_F32 32
#define HYP_ATTN_BWD_BN_F64 16

// Key tile (dq kernel) and query tile (dkdv kernel) per type: f64 halves them to stay in registers.
template <typename T> struct BwdTile;
template <> struct BwdTile<float> { static constexpr int bn = HYP_ATTN_BWD_BN_F32; };
template <> struct BwdTile<double> { static constexpr int bn = HYP_ATTN_BWD_BN_F64; };

// Everything a pair's gradient needs, from the accumulated (u-w)^2, dP and the row terms.
template <typename T> struct PairGrad {
    T p, ds, d, k, da, db, cos;
    bool vis;
};

template <typename T>
__device__ __forceinline__ PairGrad<T> pair_grad(bool vis, T acc, T dp, const T* tq, const T* tk, T lse, T delta_i, T s,
                                                  T beta) {
    PairGrad<T> g;
    g.vis = vis;
    if (!vis) {
        g.p = g.ds = g.d = g.k = g.da = g.db = g.cos = T(0);
        return g;
    }
    const T omc = one_minus_cos(acc, tq, tk);
    const T sh = Num<T>::sinh_(tq[0] - tk[0]);
    const T z = T(2) * sh * sh + tq[1] * tk[1] * omc;
    g.d = acosh1p(z) / s;
    g.p = Num<T>::exp_(-beta * g.d - lse);
    g.ds = g.p * (dp - delta_i);
    g.k = -beta * g.ds * acosh1p_prime(z) / s;
    const T sh2 = Num<T>::sinh_(T(2) * (tq[0] - tk[0]));
    g.da = T(2) * sh2 + T(2) * tq[2] * tk[1] * omc;
    g.db = T(-2) * sh2 + T(2) * tq[1] * tk[2] * omc;
    g.cos = T(1) - omc;
    return g;
}

template <typename T> __device__ __forceinline__ T block_sum(T x, T* red) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = x;
    __syncthreads();
    T sum = T(0);
    for (int w = 0; w < (int)(blockDim.x >> 5); ++w) sum += red[w];  // fixed order
    return sum;
}

template <typename T>
__device__ void delta_rows(const T* __restrict__ d_o, const T* __restrict__ o, T* __restrict__ delta, int rows, int dv) {
    const long long row = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    T acc = T(0);
    for (int e = lane; e < dv; e += 32) acc = fma(d_o[row * dv + e], o[row * dv + e], acc);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) delta[row] = acc;
}

#define BWD_PARAMS(T)                                                                              \
    const T *__restrict__ vq, const T *__restrict__ tq, const T *__restrict__ vk, const T *__restrict__ tk, \
        const T *__restrict__ v, const T *__restrict__ d_o, const T *__restrict__ lse,              \
        const T *__restrict__ delta, int heads, int n, int m, int dim, int dv, T s, T beta, int mask, \
        int window, const int *lengths

template <typename T>
__device__ void dq_kernel(BWD_PARAMS(T), T* __restrict__ dq, T* __restrict__ part_ds, T* __restrict__ part_dbeta) {
    constexpr int BM = HYP_ATTN_BWD_BM, BN = BwdTile<T>::bn, DC = HYP_ATTN_BWD_DC, VC = HYP_ATTN_BWD_VC;
    __shared__ T rows_s[BM][DC + 1];  // q chunk, then dO chunk
    __shared__ T tile_s[BN][DC + 1];  // k chunk, then v chunk
    __shared__ T col_s[BN][VC];       // w_hat columns of this CTA's output chunk
    __shared__ T tks[BN][TERMS];
    __shared__ T red[BM / 32];
    const MaskSpec mk{mask, window, n, m, lengths};
    const int bh = blockIdx.y, b = bh / heads;
    const int i0 = blockIdx.x * BM, i = i0 + threadIdx.x, c0 = blockIdx.z * VC;
    const long long qb = (long long)bh * n, kb = (long long)bh * m;
    const int2 range = i < n ? visible(mk, b, i) : make_int2(0, 0);
    const int last = (i0 + BM < n ? i0 + BM : n) - 1;
    const int lo_blk = visible(mk, b, i0).x, hi_blk = visible(mk, b, last).y;
    T tqi[TERMS];
#pragma unroll
    for (int t = 0; t < TERMS; ++t) tqi[t] = i < n ? tq[(qb + i) * TERMS + t] : T(0);
    const T lse_i = i < n ? lse[qb + i] : T(0), delta_i = i < n ? delta[qb + i] : T(0);
    T acc[VC];
#pragma unroll
    for (int e = 0; e < VC; ++e) acc[e] = T(0);
    T scal = T(0), ds_acc = T(0), db_acc = T(0);
    for (int j0 = (lo_blk / BN) * BN; j0 < hi_blk; j0 += BN) {
        T sq[BN], dp[BN];
#pragma unroll
        for (int jj = 0; jj < BN; ++jj) sq[jj] = dp[jj] = T(0);
        for (int d0 = 0; d0 < dim; d0 += DC) {
            __syncthreads();
            load_tile<T, BM, DC, 1>(rows_s, vq + qb * dim, i0, n, d0, dim, dim);
            load_tile<T, BN, DC, 1>(tile_s, vk + kb * dim, j0, m, d0, dim, dim);
            __syncthreads();
            for (int dd = 0; dd < DC; ++dd) {
                const T x = rows_s[threadIdx.x][dd];
#pragma unroll
                for (int jj = 0; jj < BN; ++jj) sq[jj] = pair_acc<FORM_EXACT>(sq[jj], x, tile_s[jj][dd]);
            }
        }
        for (int e0 = 0; e0 < dv; e0 += DC) {
            __syncthreads();
            load_tile<T, BM, DC, 1>(rows_s, d_o + qb * dv, i0, n, e0, dv, dv);
            load_tile<T, BN, DC, 1>(tile_s, v + kb * dv, j0, m, e0, dv, dv);
            __syncthreads();
            for (int ee = 0; ee < DC; ++ee) {
                const T x = rows_s[threadIdx.x][ee];
#pragma unroll
                for (int jj = 0; jj < BN; ++jj) dp[jj] = fma(x, tile_s[jj][ee], dp[jj]);
            }
        }
        __syncthreads();
        load_tile<T, BN, TERMS, 0>(tks, tk + kb * TERMS, j0, m, 0, TERMS, TERMS);
        load_tile<T, BN, VC, 0>(col_s, vk + kb * dim, j0, m, c0, dim, dim);
        __syncthreads();
#pragma unroll
        for (int jj = 0; jj < BN; ++jj) {
            const int j = j0 + jj;
            const PairGrad<T> g = pair_grad(j >= range.x && j < range.y, sq[jj], dp[jj], tqi, tks[jj], lse_i, delta_i, s, beta);
            if (!g.vis) continue;
            const T ga = tqi[5] != T(0) ? T(0) : g.k * g.da * s;
            const T ang = -g.k * tks[jj][1] * tqi[3];
            scal += ga - ang * g.cos;
            ds_acc += beta * g.ds * g.d / s;  // -delta d / s with delta = -beta dS
            ds_acc += g.k * ((tqi[5] != T(0) ? T(0) : g.da * tqi[4]) + (tks[jj][5] != T(0) ? T(0) : g.db * tks[jj][4]));
            db_acc -= g.ds * g.d;
#pragma unroll
            for (int e = 0; e < VC; ++e) acc[e] = fma(ang, col_s[jj][e], acc[e]);
        }
    }
    if (i < n) {
        const T* uq = vq + (qb + i) * dim;
        T* out = dq + (qb + i) * dim;
#pragma unroll
        for (int e = 0; e < VC; ++e)
            if (c0 + e < dim) out[c0 + e] = scal * uq[c0 + e] + acc[e];
    }
    if (blockIdx.z == 0) {
        const T ds_blk = block_sum(i < n ? ds_acc : T(0), red);
        const T db_blk = block_sum(i < n ? db_acc : T(0), red);
        if (threadIdx.x == 0) {
            const long long slot = (long long)blockIdx.y * gridDim.x + blockIdx.x;
            part_ds[slot] = ds_blk;
            part_dbeta[slot] = db_blk;
        }
    }
}

template <typename T>
__device__ void dkdv_kernel(BWD_PARAMS(T), T* __restrict__ dk, T* __restrict__ dv_out) {
    constexpr int BK = HYP_ATTN_BWD_BK, BQ = BwdTile<T>::bn, DC = HYP_ATTN_BWD_DC, VC = HYP_ATTN_BWD_VC;
    __shared__ T rows_s[BQ][DC + 1];  // q chunk, then dO chunk
    __shared__ T own_s[BK][DC + 1];   // k chunk, then v chunk
    __shared__ T col_s[BQ][VC];       // u_hat or dO columns of this CTA's output chunk
    __shared__ T tqs[BQ][TERMS];
    __shared__ T lq[BQ], dq_s[BQ];
    __shared__ int2 rq[BQ];
    const MaskSpec mk{mask, window, n, m, lengths};
    const int bh = blockIdx.y, b = bh / heads;
    const int j0 = blockIdx.x * BK, j = j0 + threadIdx.x;
    const int nd = (dim + VC - 1) / VC;
    const bool is_dk = (int)blockIdx.z < nd;
    const int c0 = (is_dk ? blockIdx.z : blockIdx.z - nd) * VC;
    const long long qb = (long long)bh * n, kb = (long long)bh * m;
    const int len = lengths ? lengths[b] : m;
    const int jl = (j0 + BK < m ? j0 + BK : m) - 1;
    const int lo_blk = seen_by(mk, b, j0).x;
    const int hi_blk = j0 < len ? seen_by(mk, b, jl < len ? jl : len - 1).y : 0;
    T tkj[TERMS];
#pragma unroll
    for (int t = 0; t < TERMS; ++t) tkj[t] = j < m ? tk[(kb + j) * TERMS + t] : T(0);
    T acc[VC];
#pragma unroll
    for (int e = 0; e < VC; ++e) acc[e] = T(0);
    T scal = T(0);
    for (int q0 = (lo_blk / BQ) * BQ; q0 < hi_blk; q0 += BQ) {
        T sq[BQ], dp[BQ];
#pragma unroll
        for (int ii = 0; ii < BQ; ++ii) sq[ii] = dp[ii] = T(0);
        for (int d0 = 0; d0 < dim; d0 += DC) {
            __syncthreads();
            load_tile<T, BQ, DC, 1>(rows_s, vq + qb * dim, q0, n, d0, dim, dim);
            load_tile<T, BK, DC, 1>(own_s, vk + kb * dim, j0, m, d0, dim, dim);
            __syncthreads();
            for (int dd = 0; dd < DC; ++dd) {
                const T y = own_s[threadIdx.x][dd];
#pragma unroll
                for (int ii = 0; ii < BQ; ++ii) sq[ii] = pair_acc<FORM_EXACT>(sq[ii], rows_s[ii][dd], y);
            }
        }
        for (int e0 = 0; e0 < dv; e0 += DC) {
            __syncthreads();
            load_tile<T, BQ, DC, 1>(rows_s, d_o + qb * dv, q0, n, e0, dv, dv);
            load_tile<T, BK, DC, 1>(own_s, v + kb * dv, j0, m, e0, dv, dv);
            __syncthreads();
            for (int ee = 0; ee < DC; ++ee) {
                const T y = own_s[threadIdx.x][ee];
#pragma unroll
                for (int ii = 0; ii < BQ; ++ii) dp[ii] = fma(rows_s[ii][ee], y, dp[ii]);
            }
        }
        __syncthreads();
        load_tile<T, BQ, TERMS, 0>(tqs, tq + qb * TERMS, q0, n, 0, TERMS, TERMS);
        if (is_dk) load_tile<T, BQ, VC, 0>(col_s, vq + qb * dim, q0, n, c0, dim, dim);
        else load_tile<T, BQ, VC, 0>(col_s, d_o + qb * dv, q0, n, c0, dv, dv);
        for (int ii = threadIdx.x; ii < BQ; ii += blockDim.x) {
            const int qi = q0 + ii;
            lq[ii] = qi < n ? lse[qb + qi] : T(0);
            dq_s[ii] = qi < n ? delta[qb + qi] : T(0);
            rq[ii] = qi < n ? visible(mk, b, qi) : make_int2(0, 0);
        }
        __syncthreads();
        if (j >= m) continue;
#pragma unroll
        for (int ii = 0; ii < BQ; ++ii) {
            const bool vis = j >= rq[ii].x && j < rq[ii].y;
            const PairGrad<T> g = pair_grad(vis, sq[ii], dp[ii], tqs[ii], tkj, lq[ii], dq_s[ii], s, beta);
            if (!g.vis) continue;
            T coef;
            if (is_dk) {
                const T gb = tkj[5] != T(0) ? T(0) : g.k * g.db * s;
                coef = -g.k * tqs[ii][1] * tkj[3];
                scal += gb - coef * g.cos;
            } else {
                coef = g.p;
            }
#pragma unroll
            for (int e = 0; e < VC; ++e) acc[e] = fma(coef, col_s[ii][e], acc[e]);
        }
    }
    if (j >= m) return;
    if (is_dk) {
        const T* wk = vk + (kb + j) * dim;
        T* out = dk + (kb + j) * dim;
#pragma unroll
        for (int e = 0; e < VC; ++e)
            if (c0 + e < dim) out[c0 + e] = scal * wk[c0 + e] + acc[e];
    } else {
        T* out = dv_out + (kb + j) * dv;
#pragma unroll
        for (int e = 0; e < VC; ++e)
            if (c0 + e < dv) out[c0 + e] = acc[e];
    }
}

#define BWD_CALL vq, tq, vk, tk, v, d_o, lse, delta, heads, n, m, dim, dv, s, beta, mask, window, lengths

extern "C" __global__ void hyp_attn_bwd_delta_f32(const float* d_o, const float* o, float* delta, int rows, int dv) { delta_rows<float>(d_o, o, delta, rows, dv); }
extern "C" __global__ void hyp_attn_bwd_delta_f64(const double* d_o, const double* o, double* delta, int rows, int dv) { delta_rows<double>(d_o, o, delta, rows, dv); }
extern "C" __global__ void __launch_bounds__(HYP_ATTN_BWD_BM) hyp_attn_bwd_dq_f32(BWD_PARAMS(float), float* dq, float* part_ds, float* part_dbeta) { dq_kernel<float>(BWD_CALL, dq, part_ds, part_dbeta); }
extern "C" __global__ void __launch_bounds__(HYP_ATTN_BWD_BM) hyp_attn_bwd_dq_f64(BWD_PARAMS(double), double* dq, double* part_ds, double* part_dbeta) { dq_kernel<double>(BWD_CALL, dq, part_ds, part_dbeta); }
extern "C" __global__ void __launch_bounds__(HYP_ATTN_BWD_BK) hyp_attn_bwd_dkdv_f32(BWD_PARAMS(float), float* dk, float* dv_out) { dkdv_kernel<float>(BWD_CALL, dk, dv_out); }
extern "C" __global__ void __launch_bounds__(HYP_ATTN_BWD_BK) hyp_attn_bwd_dkdv_f64(BWD_PARAMS(double), double* dk, double* dv_out) { dkdv_kernel<double>(BWD_CALL, dk, dv_out); }
