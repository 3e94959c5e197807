// BK-Core forward on the GPU: G_ii = [(T - zI)^-1]_ii for a batch of tridiagonal rows, in O(N).
// Launchers: ../src/bk_core.rs. Design: bk-core.md §3.2 (ratio form), §7 (projective scan).
//
// One CTA handles one chunk of one row (grid: chunks x rows); each thread owns E consecutive
// elements. Each thread composes its elements' 2x2 transfer matrices, a block-wide scan gives it
// the exact Möbius state at its first element, and it then replays the stable ratio recursions
// r_i = alpha_i - k_{i-1}/r_{i-1} (forward) and s_i = alpha_i - k_i/s_{i+1} (backward) over its
// elements and writes G_i = 1/(alpha_i - k_{i-1}/r_{i-1} - k_i/s_{i+1}). Rows longer than one
// chunk first compute chunk aggregates (bk_core_chunk_agg_*), then per-row chunk seeds
// (bk_core_mobius_seeds_*), then the same forward kernel with seeds.
//
// Exported (T = float for _f32, double for _f64; complex values are interleaved [re, im]):
//   bk_core_forward_f32(const T* a, const T* b, const T* c, long long n, int chunk_len,
//                       T z_re, T z_im, const T* seed_f, const T* seed_b, T* g)
//   bk_core_chunk_agg_f32(const T* a, const T* b, const T* c, long long n, int chunk_len,
//                         T z_re, T z_im, T* agg_f, T* agg_b)
//   bk_core_mobius_seeds_f32(const T* agg_f, const T* agg_b, int chunks, T* seed_f, T* seed_b)
// seed_* may be null (single-chunk rows). agg_*: 8 T per (row, chunk); seed_*: 4 T per (row, chunk).
#include "include/bk_core_common.cuh"

#define BK_CORE_ELEMS_F32 8
#define BK_CORE_ELEMS_F64 4
#define BK_CORE_MAX_THREADS_F32 512
#define BK_CORE_MAX_THREADS_F64 256
#define BK_CORE_SEED_THREADS 256

// The stable ratio recursions over the thread's elements from the exact states at its ends, and
// G. FULL (cnt == E) drops the per-element guards.
template <bool FULL, typename T, int E>
__device__ __forceinline__ void replay(const Slice<T, E>& s, cpx<T> z, long long n, Vec2<T> st_f, Vec2<T> st_b, T* g) {
    // Forward: left[j] = k_{i-1}/r_{i-1}, from r_{i0-1} = theta_{i0}/theta_{i0-1}.
    cpx<T> left[E];
    cpx<T> r = cdiv(st_f.v0, st_f.v1);
#pragma unroll
    for (int j = 0; j < E; ++j) {
        if (FULL || j < s.cnt) {
            left[j] = s.i0 + j == 0 ? mk<T>(0, 0) : cdiv(s.kk[j], r);
            r = mk(s.a[j] - z.re, -z.im) - left[j];
        }
    }
    // Backward from s_{i0+E} = sigma_{i0+E}/sigma_{i0+E+1}, writing G.
    cpx<T> sn = cdiv(st_b.v0, st_b.v1);
    cpx<T>* out = reinterpret_cast<cpx<T>*>(g) + s.row_a + s.i0;
#pragma unroll
    for (int j = E - 1; j >= 0; --j) {
        if (FULL || j < s.cnt) {
            const cpx<T> alpha = mk(s.a[j] - z.re, -z.im);
            const cpx<T> right = s.i0 + j == n - 1 ? mk<T>(0, 0) : cdiv(s.kk[j + 1], sn);
            store(out + j, crcp(alpha - left[j] - right));
            sn = alpha - right;
        }
    }
}

template <typename T, int E>
__device__ void forward(const T* __restrict__ a, const T* __restrict__ b, const T* __restrict__ c, long long n,
                        int chunk_len, T z_re, T z_im, const T* seed_f, const T* seed_b, T* __restrict__ g) {
    __shared__ Mat2<T> smem[2 * (MAX_WARPS + 1)];
    const cpx<T> z = mk(z_re, z_im);
    Slice<T, E> s = load_slice<T, E>(a, b, c, n, chunk_len);
    Vec2<T> st_f, st_b;
    Mat2<T> tot_f, tot_b;
    mobius_states(s, z, reinterpret_cast<const Vec2<T>*>(seed_f), reinterpret_cast<const Vec2<T>*>(seed_b), smem,
                  st_f, st_b, tot_f, tot_b);
    if (s.cnt == E)
        replay<true>(s, z, n, st_f, st_b, g);
    else
        replay<false>(s, z, n, st_f, st_b, g);
}

template <typename T, int E>
__device__ void chunk_agg(const T* __restrict__ a, const T* __restrict__ b, const T* __restrict__ c, long long n,
                          int chunk_len, T z_re, T z_im, T* agg_f, T* agg_b) {
    __shared__ Mat2<T> smem[2 * (MAX_WARPS + 1)];
    Slice<T, E> s = load_slice<T, E>(a, b, c, n, chunk_len);
    Mat2<T> fwd, bwd, ex_f, ex_b, tot_f, tot_b;
    local_aggregates(s, mk(z_re, z_im), fwd, bwd);
    block_scan_pair<MatOp<T>>(fwd, bwd, smem, ex_f, ex_b, tot_f, tot_b);
    if (threadIdx.x == 0) {
        const long long slot = (long long)blockIdx.y * gridDim.x + blockIdx.x;
        reinterpret_cast<Mat2<T>*>(agg_f)[slot] = tot_f;
        reinterpret_cast<Mat2<T>*>(agg_b)[slot] = tot_b;
    }
}

template <typename T>
__device__ void mobius_seeds(const T* agg_f, const T* agg_b, int chunks, T* seed_f, T* seed_b) {
    __shared__ Mat2<T> smem[2 * (MAX_WARPS + 1)];
    const Vec2<T> unit = {mk<T>(1, 0), mk<T>(0, 0)};
    chunk_seeds<MatOp<T>>(reinterpret_cast<const Mat2<T>*>(agg_f), reinterpret_cast<const Mat2<T>*>(agg_b),
                          chunks, unit, reinterpret_cast<Vec2<T>*>(seed_f), reinterpret_cast<Vec2<T>*>(seed_b),
                          smem);
}

// Exported wrappers, one per dtype (templates cannot be extern "C").
extern "C" __global__ void __launch_bounds__(BK_CORE_MAX_THREADS_F32) bk_core_forward_f32(
    const float* a, const float* b, const float* c, long long n, int chunk_len, float z_re, float z_im,
    const float* seed_f, const float* seed_b, float* g) {
    forward<float, BK_CORE_ELEMS_F32>(a, b, c, n, chunk_len, z_re, z_im, seed_f, seed_b, g);
}
extern "C" __global__ void __launch_bounds__(BK_CORE_MAX_THREADS_F64) bk_core_forward_f64(
    const double* a, const double* b, const double* c, long long n, int chunk_len, double z_re, double z_im,
    const double* seed_f, const double* seed_b, double* g) {
    forward<double, BK_CORE_ELEMS_F64>(a, b, c, n, chunk_len, z_re, z_im, seed_f, seed_b, g);
}
extern "C" __global__ void __launch_bounds__(BK_CORE_MAX_THREADS_F32) bk_core_chunk_agg_f32(
    const float* a, const float* b, const float* c, long long n, int chunk_len, float z_re, float z_im,
    float* agg_f, float* agg_b) {
    chunk_agg<float, BK_CORE_ELEMS_F32>(a, b, c, n, chunk_len, z_re, z_im, agg_f, agg_b);
}
extern "C" __global__ void __launch_bounds__(BK_CORE_MAX_THREADS_F64) bk_core_chunk_agg_f64(
    const double* a, const double* b, const double* c, long long n, int chunk_len, double z_re, double z_im,
    double* agg_f, double* agg_b) {
    chunk_agg<double, BK_CORE_ELEMS_F64>(a, b, c, n, chunk_len, z_re, z_im, agg_f, agg_b);
}
extern "C" __global__ void __launch_bounds__(BK_CORE_SEED_THREADS) bk_core_mobius_seeds_f32(
    const float* agg_f, const float* agg_b, int chunks, float* seed_f, float* seed_b) {
    mobius_seeds<float>(agg_f, agg_b, chunks, seed_f, seed_b);
}
extern "C" __global__ void __launch_bounds__(BK_CORE_SEED_THREADS) bk_core_mobius_seeds_f64(
    const double* agg_f, const double* agg_b, int chunks, double* seed_f, double* seed_b) {
    mobius_seeds<double>(agg_f, agg_b, chunks, seed_f, seed_b);
}
