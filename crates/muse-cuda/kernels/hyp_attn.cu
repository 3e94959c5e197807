// Hyperbolic attention forward on the GPU, SIMT path (any D and Dv, f32 and f64, every distance
// form): scores -beta*d(exp0 q_i, exp0 k_j), online softmax, o = P.V in the tangent space, and
// lse. Launchers: ../src/hyp_attn.rs. Design: hyperbolic.md §3.1-3.2, §3.5.
//
// 1. hyp_attn_prep_<form>_<T>: one warp per row of q or k writes the row's vector (unit vector for
//    the exact form, the raw or flash-mapped row for the compat forms) and TERMS terms.
// 2. hyp_attn_fwd_<form>_<T>: one thread per query, BM queries of one (b, h) per CTA, grid.z over
//    chunks of VC value columns. Key tiles of BN keys outside every row's visible range are
//    skipped; per tile the D-loop runs over DC-wide chunks of q and k staged in shared memory.
//    Nothing of size N x M is allocated.
//
// Exported (T = float for _f32, double for _f64):
//   hyp_attn_prep_<form>_<T>(const T* x, T* vec, T* terms, int rows, int dim, T s)
//   hyp_attn_fwd_<form>_<T>(const T* vq, const T* tq, const T* vk, const T* tk, const T* v,
//       T* o, T* lse, int heads, int n, int m, int dim, int dv, T s, T c, T beta,
//       int mask, int window, const int* lengths)
// Layouts: x, vq, vk [rows, dim]; terms [rows, 6]; v [B*H*M, dv]; o [B*H*N, dv]; lse [B*H*N].
#include "include/hyp_attn_common.cuh"

#define HYP_ATTN_BM 64
#define HYP_ATTN_BN_F32 32
#define HYP_ATTN_BN_F64 16
#define HYP_ATTN_DC 32
#define HYP_ATTN_VC_F32 64
#define HYP_ATTN_VC_F64 32
#define HYP_ATTN_PREP_WARPS 8

template <typename T> struct Tile;
template <> struct Tile<float> { static constexpr int bn = HYP_ATTN_BN_F32, vc = HYP_ATTN_VC_F32; };
template <> struct Tile<double> { static constexpr int bn = HYP_ATTN_BN_F64, vc = HYP_ATTN_VC_F64; };

template <typename T> __device__ __forceinline__ T warp_sum(T x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

template <int FORM, typename T>
__device__ void prep(const T* __restrict__ x, T* __restrict__ vec, T* __restrict__ terms, int rows, int dim, T s) {
    const int lane = threadIdx.x & 31;
    const long long row = (long long)blockIdx.x * HYP_ATTN_PREP_WARPS + (threadIdx.x >> 5);
    if (row >= rows) return;
    const T* xr = x + row * dim;
    T* vr = vec + row * dim;
    T n2 = 0;
    for (int d = lane; d < dim; d += 32) n2 = fma(xr[d], xr[d], n2);
    n2 = warp_sum(n2);
    T* tr = terms + row * TERMS;
    if (FORM == FORM_EXACT) {
        const T r = Num<T>::sqrt_(n2);
        // Division, not a product with 1/r: the unit vector is then exactly +-1 in one dimension.
        for (int d = lane; d < dim; d += 32) vr[d] = r > T(0) ? __fdiv_rn_any(xr[d], r) : T(0);
        if (lane == 0) {
            const TangentTerms<T> t = tangent_terms(s, r);
            tr[0] = t.a;
            tr[1] = t.sinh2a;
            tr[2] = t.cosh2a;
            tr[3] = t.sinh2a_over_r;
            tr[4] = t.r;
            tr[5] = t.capped ? T(1) : T(0);
        }
        return;
    }
    T scale = T(1);
    if (FORM == FORM_FLASH) {
        const T qn = Num<T>::sqrt_(n2 + T(1e-6));
        scale = Num<T>::tanh_(fmin(s * qn, T(15))) / (s * qn + T(1e-6));
    }
    T m2 = 0;
    for (int d = lane; d < dim; d += 32) {
        const T e = xr[d] * scale;
        vr[d] = e;
        m2 = fma(e, e, m2);
    }
    m2 = warp_sum(m2);
    if (lane < TERMS) tr[lane] = lane == 0 ? m2 : T(0);
}

template <int FORM, typename T>
__device__ void forward(const T* __restrict__ vq, const T* __restrict__ tq, const T* __restrict__ vk,
                        const T* __restrict__ tk, const T* __restrict__ v, T* __restrict__ o, T* __restrict__ lse,
                        int heads, int n, int m, int dim, int dv, T s, T c, T beta, MaskSpec mk) {
    constexpr int BM = HYP_ATTN_BM, BN = Tile<T>::bn, DC = HYP_ATTN_DC, VC = Tile<T>::vc;
    __shared__ T qs[BM][DC + 1];
    __shared__ T ks[BN][DC + 1];
    __shared__ T vs[BN][VC];
    __shared__ T tks[BN][TERMS];
    const int bh = blockIdx.y, b = bh / heads;
    const int i0 = blockIdx.x * BM, i = i0 + threadIdx.x;
    const int v0 = blockIdx.z * VC;
    const long long qbase = (long long)bh * n, kbase = (long long)bh * m;
    const int2 range = i < n ? visible(mk, b, i) : make_int2(0, 0);
    const int last = (i0 + BM < n ? i0 + BM : n) - 1;
    const int lo_blk = visible(mk, b, i0).x, hi_blk = visible(mk, b, last).y;
    T tqi[TERMS];
#pragma unroll
    for (int t = 0; t < TERMS; ++t) tqi[t] = i < n ? tq[(qbase + i) * TERMS + t] : T(0);
    T acc[VC];
#pragma unroll
    for (int e = 0; e < VC; ++e) acc[e] = T(0);
    T mrow = -INFINITY, lrow = T(0);
    for (int j0 = (lo_blk / BN) * BN; j0 < hi_blk; j0 += BN) {
        T sc[BN];
#pragma unroll
        for (int jj = 0; jj < BN; ++jj) sc[jj] = T(0);
        for (int d0 = 0; d0 < dim; d0 += DC) {
            __syncthreads();
            load_tile<T, BM, DC, 1>(qs, vq + qbase * dim, i0, n, d0, dim, dim);
            load_tile<T, BN, DC, 1>(ks, vk + kbase * dim, j0, m, d0, dim, dim);
            __syncthreads();
#pragma unroll 4
            for (int dd = 0; dd < DC; ++dd) {
                const T x = qs[threadIdx.x][dd];
#pragma unroll
                for (int jj = 0; jj < BN; ++jj) sc[jj] = pair_acc<FORM>(sc[jj], x, ks[jj][dd]);
            }
        }
        __syncthreads();
        load_tile<T, BN, TERMS, 0>(tks, tk + kbase * TERMS, j0, m, 0, TERMS, TERMS);
        load_tile<T, BN, VC, 0>(vs, v + kbase * dv, j0, m, v0, dv, dv);
        __syncthreads();
        T tmax = -INFINITY;
#pragma unroll
        for (int jj = 0; jj < BN; ++jj) {
            const int j = j0 + jj;
            const bool vis = j >= range.x && j < range.y;
            sc[jj] = vis ? -beta * pair_dist<FORM>(sc[jj], tqi, tks[jj], s, c) : T(-INFINITY);
            tmax = fmax(tmax, sc[jj]);
        }
        const T mnew = fmax(mrow, tmax);
        if (mnew == T(-INFINITY)) continue;  // nothing visible yet in this row
        const T alpha = Num<T>::exp_(mrow - mnew);  // exp(-inf) = 0 on the first visible tile
        lrow *= alpha;
#pragma unroll
        for (int e = 0; e < VC; ++e) acc[e] *= alpha;
#pragma unroll
        for (int jj = 0; jj < BN; ++jj) {
            const T p = Num<T>::exp_(sc[jj] - mnew);
            lrow += p;
#pragma unroll
            for (int e = 0; e < VC; ++e) acc[e] = fma(p, vs[jj][e], acc[e]);
        }
        mrow = mnew;
    }
    if (i >= n) return;
    const T inv = lrow > T(0) ? T(1) / lrow : T(0);
    T* orow = o + (qbase + i) * dv;
#pragma unroll
    for (int e = 0; e < VC; ++e)
        if (v0 + e < dv) orow[v0 + e] = acc[e] * inv;
    if (blockIdx.z == 0) lse[qbase + i] = lrow > T(0) ? mrow + Num<T>::log_(lrow) : T(-INFINITY);
}

#define PREP(FORM, T) { prep<FORM, T>(x, vec, terms, rows, dim, s); }
#define FWD(FORM, T)                                                                              \
    {                                                                                             \
        const MaskSpec mk{mask, window, n, m, lengths};                                           \
        forward<FORM, T>(vq, tq, vk, tk, v, o, lse, heads, n, m, dim, dv, s, c, beta, mk);        \
    }
#define FWD_ARGS(T)                                                                               \
    const T *vq, const T *tq, const T *vk, const T *tk, const T *v, T *o, T *lse, int heads, int n, \
        int m, int dim, int dv, T s, T c, T beta, int mask, int window, const int *lengths

extern "C" __global__ void hyp_attn_prep_exact_f32(const float* x, float* vec, float* terms, int rows, int dim, float s) PREP(FORM_EXACT, float)
extern "C" __global__ void hyp_attn_prep_exact_f64(const double* x, double* vec, double* terms, int rows, int dim, double s) PREP(FORM_EXACT, double)
extern "C" __global__ void hyp_attn_prep_fast_bench_f32(const float* x, float* vec, float* terms, int rows, int dim, float s) PREP(FORM_FAST_BENCH, float)
extern "C" __global__ void hyp_attn_prep_fast_bench_f64(const double* x, double* vec, double* terms, int rows, int dim, double s) PREP(FORM_FAST_BENCH, double)
extern "C" __global__ void hyp_attn_prep_flash_f32(const float* x, float* vec, float* terms, int rows, int dim, float s) PREP(FORM_FLASH, float)
extern "C" __global__ void hyp_attn_prep_flash_f64(const double* x, double* vec, double* terms, int rows, int dim, double s) PREP(FORM_FLASH, double)

extern "C" __global__ void __launch_bounds__(HYP_ATTN_BM) hyp_attn_fwd_exact_f32(FWD_ARGS(float)) FWD(FORM_EXACT, float)
extern "C" __global__ void __launch_bounds__(HYP_ATTN_BM) hyp_attn_fwd_exact_f64(FWD_ARGS(double)) FWD(FORM_EXACT, double)
extern "C" __global__ void __launch_bounds__(HYP_ATTN_BM) hyp_attn_fwd_fast_bench_f32(FWD_ARGS(float)) FWD(FORM_FAST_BENCH, float)
extern "C" __global__ void __launch_bounds__(HYP_ATTN_BM) hyp_attn_fwd_fast_bench_f64(FWD_ARGS(double)) FWD(FORM_FAST_BENCH, double)
extern "C" __global__ void __launch_bounds__(HYP_ATTN_BM) hyp_attn_fwd_flash_f32(FWD_ARGS(float)) FWD(FORM_FLASH, float)
extern "C" __global__ void __launch_bounds__(HYP_ATTN_BM) hyp_attn_fwd_flash_f64(FWD_ARGS(double)) FWD(FORM_FLASH, double)
