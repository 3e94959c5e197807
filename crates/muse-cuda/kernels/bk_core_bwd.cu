// BK-Core exact gradient on the GPU (design bk-core.md §6.1, §7.3). Launchers: ../src/bk_core_bwd.rs.
//
// With x = conj(g) (g the upstream gradient), the sweeps of §6.1 become two affine linear
// recurrences in D_i = A_i + x_i and E_i = C_i + x_i:
//   D_i = w_i D_{i-1} + x_i,  w_i = k_{i-1}/r_{i-1}^2   (forward)
//   E_i = n_i E_{i+1} + x_i,  n_i = k_i/s_{i+1}^2       (backward)
// and Q_i = G_i^2 (D_i + E_i - x_i), P_i = D_i/r_i + E_{i+1}/s_{i+1}:
//   dL/da_i = -Re Q_i,  dL/db_i = c_i Re(G_i G_{i+1} P_i),  dL/dc_i = b_i Re(G_i G_{i+1} P_i),
//   dL/dz = conj(sum Q_i) (per-CTA partial sums; the host adds them).
// Each CTA recomputes r and s for its chunk exactly as the forward kernel does (Möbius scans),
// then scans the affine maps. Rows longer than one chunk use Möbius seeds (bk_core.cu), then
// per-chunk affine aggregates (bk_core_bwd_agg_*), affine seeds (bk_core_affine_seeds_*), then
// bk_core_backward_* with all seeds.
//
// Exported (T = float for _f32, double for _f64; complex values interleaved [re, im]):
//   bk_core_backward_f32(const T* a, const T* b, const T* c, const T* g_up, long long n, int chunk_len,
//                        T z_re, T z_im, const T* seed_f, const T* seed_b, const T* seed_d,
//                        const T* seed_e, T* grad_a, T* grad_b, T* grad_c, T* dz_part)
//   bk_core_bwd_agg_f32(const T* a, const T* b, const T* c, const T* g_up, long long n, int chunk_len,
//                       T z_re, T z_im, const T* seed_f, const T* seed_b, T* agg_d, T* agg_e)
//   bk_core_affine_seeds_f32(const T* agg_d, const T* agg_e, int chunks, T* seed_d, T* seed_e)
// seed_f/seed_b: 4 T per (row, chunk); seed_d/seed_e, dz_part: 2 T; agg_d/agg_e: 4 T. Seeds may
// be null for single-chunk rows.
#include "include/bk_core_common.cuh"

#define BK_CORE_BWD_ELEMS_F32 8
#define BK_CORE_BWD_ELEMS_F64 4
#define BK_CORE_BWD_MAX_THREADS_F32 512
#define BK_CORE_BWD_MAX_THREADS_F64 256
#define BK_CORE_BWD_SEED_THREADS 256

template <typename T>
__device__ __forceinline__ cpx<T> sq(cpx<T> v) { return v * v; }

template <typename T, int E, bool AGG>
__device__ void backward(const T* __restrict__ a, const T* __restrict__ b, const T* __restrict__ c,
                         const T* __restrict__ g_up, long long n, int chunk_len, T z_re, T z_im, const T* seed_f,
                         const T* seed_b, const T* seed_d, const T* seed_e, T* agg_d, T* agg_e, T* grad_a,
                         T* grad_b, T* grad_c, T* dz_part) {
    __shared__ Mat2<T> smem_m[2 * (MAX_WARPS + 1)];
    __shared__ Affine<T> smem_a[2 * (MAX_WARPS + 1)];
    const cpx<T> z = mk(z_re, z_im);
    const cpx<T> zero = mk<T>(0, 0);
    Slice<T, E> s = load_slice<T, E>(a, b, c, n, chunk_len);
    const cpx<T>* up = reinterpret_cast<const cpx<T>*>(g_up) + s.row_a;
    cpx<T> x[E];
#pragma unroll
    for (int j = 0; j < E; ++j) x[j] = conj(load(up + min(s.i0 + j, n - 1)));
#pragma unroll
    for (int j = 0; j < E; ++j) x[j] = j < s.cnt ? x[j] : zero;

    Vec2<T> st_f, st_b;
    Mat2<T> tot_f, tot_b;
    mobius_states(s, z, reinterpret_cast<const Vec2<T>*>(seed_f), reinterpret_cast<const Vec2<T>*>(seed_b), smem_m,
                  st_f, st_b, tot_f, tot_b);
    // Reciprocal ratios, one complex reciprocal per element and direction:
    // ir[j] = 1/r_{i0+j-1} (j = 0..E), is[j] = 1/s_{i0+j} (j = 0..E).
    cpx<T> ir[E + 1], is[E + 1];
    ir[0] = cdiv(st_f.v1, st_f.v0);
#pragma unroll
    for (int j = 0; j < E; ++j) {
        ir[j + 1] = ir[j];
        if (j < s.cnt) ir[j + 1] = crcp(mk(s.a[j] - z.re, -z.im) - (s.i0 + j == 0 ? zero : s.kk[j] * ir[j]));
    }
    const cpx<T> s_top = cdiv(st_b.v0, st_b.v1);  // s_{i0+E}
    is[E] = cdiv(st_b.v1, st_b.v0);
#pragma unroll
    for (int j = E - 1; j >= 0; --j) {
        is[j] = is[j + 1];
        if (j < s.cnt) is[j] = crcp(mk(s.a[j] - z.re, -z.im) - (s.i0 + j == n - 1 ? zero : s.kk[j + 1] * is[j + 1]));
    }
    // The affine maps D_i = w_i D_{i-1} + x_i and E_i = n_i E_{i+1} + x_i, composed in scan order.
    Affine<T> fd = affine_identity<T>(), fe = affine_identity<T>();
#pragma unroll
    for (int j = 0; j < E; ++j) {
        if (j < s.cnt) fd = affine_then(fd, Affine<T>{s.i0 + j == 0 ? zero : s.kk[j] * sq(ir[j]), x[j]});
    }
#pragma unroll
    for (int j = E - 1; j >= 0; --j) {
        if (j < s.cnt) fe = affine_then(fe, Affine<T>{s.i0 + j == n - 1 ? zero : s.kk[j + 1] * sq(is[j + 1]), x[j]});
    }
    Affine<T> ex_d, ex_e, tot_d, tot_e;
    block_scan_pair<AffineOp<T>>(fd, fe, smem_a, ex_d, ex_e, tot_d, tot_e);
    const long long slot = (long long)blockIdx.y * gridDim.x + blockIdx.x;
    if (AGG) {
        if (threadIdx.x == 0) {
            reinterpret_cast<Affine<T>*>(agg_d)[slot] = tot_d;
            reinterpret_cast<Affine<T>*>(agg_e)[slot] = tot_e;
        }
        return;
    }
    const cpx<T> d_seed = seed_d ? reinterpret_cast<const cpx<T>*>(seed_d)[slot] : zero;
    const cpx<T> e_seed = seed_e ? reinterpret_cast<const cpx<T>*>(seed_e)[slot] : zero;
    cpx<T> dv[E];
    cpx<T> d_prev = affine_apply(ex_d, d_seed);  // D_{i0-1}
#pragma unroll
    for (int j = 0; j < E; ++j) {
        if (j < s.cnt) {
            dv[j] = (s.i0 + j == 0 ? zero : s.kk[j] * sq(ir[j])) * d_prev + x[j];
            d_prev = dv[j];
        }
    }
    cpx<T> en = affine_apply(ex_e, e_seed);  // E_{i0+E}
    // G_{i0+E} = 1/(s_{i0+E} - k_{i0+E-1}/r_{i0+E-1}), needed when the row goes on past this thread.
    cpx<T> gn = (s.cnt == E && s.i0 + E < n) ? crcp(s_top - s.kk[E] * ir[E]) : zero;
    cpx<T> zsum = zero;
#pragma unroll
    for (int j = E - 1; j >= 0; --j) {
        if (j < s.cnt) {
            const long long i = s.i0 + j;
            const bool last = i == n - 1;
            const cpx<T> left = i == 0 ? zero : s.kk[j] * ir[j];
            const cpx<T> right = last ? zero : s.kk[j + 1] * is[j + 1];
            const cpx<T> g = crcp(mk(s.a[j] - z.re, -z.im) - left - right);
            const cpx<T> ej = (last ? zero : right * is[j + 1]) * en + x[j];
            const cpx<T> q = sq(g) * (dv[j] + ej - x[j]);
            grad_a[s.row_a + i] = -q.re;
            zsum = zsum + q;
            if (!last) {
                const cpx<T> gg = g * gn * (dv[j] * ir[j + 1] + en * is[j + 1]);
                grad_b[s.row_b + i] = c[s.row_b + i] * gg.re;
                grad_c[s.row_b + i] = b[s.row_b + i] * gg.re;
            }
            en = ej;
            gn = g;
        }
    }
    zsum = block_sum(zsum, reinterpret_cast<cpx<T>*>(smem_a));
    if (threadIdx.x == 0) reinterpret_cast<cpx<T>*>(dz_part)[slot] = zsum;
}

template <typename T>
__device__ void affine_seeds(const T* agg_d, const T* agg_e, int chunks, T* seed_d, T* seed_e) {
    __shared__ Affine<T> smem[2 * (MAX_WARPS + 1)];
    chunk_seeds<AffineOp<T>>(reinterpret_cast<const Affine<T>*>(agg_d), reinterpret_cast<const Affine<T>*>(agg_e),
                             chunks, mk<T>(0, 0), reinterpret_cast<cpx<T>*>(seed_d), reinterpret_cast<cpx<T>*>(seed_e),
                             smem);
}

// Exported wrappers, one per dtype.
extern "C" __global__ void __launch_bounds__(BK_CORE_BWD_MAX_THREADS_F32) bk_core_bwd_backward_f32(
    const float* a, const float* b, const float* c, const float* g_up, long long n, int chunk_len, float z_re,
    float z_im, const float* seed_f, const float* seed_b, const float* seed_d, const float* seed_e, float* grad_a,
    float* grad_b, float* grad_c, float* dz_part) {
    backward<float, BK_CORE_BWD_ELEMS_F32, false>(a, b, c, g_up, n, chunk_len, z_re, z_im, seed_f, seed_b, seed_d,
                                                  seed_e, nullptr, nullptr, grad_a, grad_b, grad_c, dz_part);
}
extern "C" __global__ void __launch_bounds__(BK_CORE_BWD_MAX_THREADS_F64) bk_core_bwd_backward_f64(
    const double* a, const double* b, const double* c, const double* g_up, long long n, int chunk_len, double z_re,
    double z_im, const double* seed_f, const double* seed_b, const double* seed_d, const double* seed_e,
    double* grad_a, double* grad_b, double* grad_c, double* dz_part) {
    backward<double, BK_CORE_BWD_ELEMS_F64, false>(a, b, c, g_up, n, chunk_len, z_re, z_im, seed_f, seed_b, seed_d,
                                                   seed_e, nullptr, nullptr, grad_a, grad_b, grad_c, dz_part);
}
extern "C" __global__ void __launch_bounds__(BK_CORE_BWD_MAX_THREADS_F32) bk_core_bwd_agg_f32(
    const float* a, const float* b, const float* c, const float* g_up, long long n, int chunk_len, float z_re,
    float z_im, const float* seed_f, const float* seed_b, float* agg_d, float* agg_e) {
    backward<float, BK_CORE_BWD_ELEMS_F32, true>(a, b, c, g_up, n, chunk_len, z_re, z_im, seed_f, seed_b, nullptr,
                                                 nullptr, agg_d, agg_e, nullptr, nullptr, nullptr, nullptr);
}
extern "C" __global__ void __launch_bounds__(BK_CORE_BWD_MAX_THREADS_F64) bk_core_bwd_agg_f64(
    const double* a, const double* b, const double* c, const double* g_up, long long n, int chunk_len, double z_re,
    double z_im, const double* seed_f, const double* seed_b, double* agg_d, double* agg_e) {
    backward<double, BK_CORE_BWD_ELEMS_F64, true>(a, b, c, g_up, n, chunk_len, z_re, z_im, seed_f, seed_b, nullptr,
                                                  nullptr, agg_d, agg_e, nullptr, nullptr, nullptr, nullptr);
}
extern "C" __global__ void __launch_bounds__(BK_CORE_BWD_SEED_THREADS) bk_core_bwd_affine_seeds_f32(
    const float* agg_d, const float* agg_e, int chunks, float* seed_d, float* seed_e) {
    affine_seeds<float>(agg_d, agg_e, chunks, seed_d, seed_e);
}
extern "C" __global__ void __launch_bounds__(BK_CORE_BWD_SEED_THREADS) bk_core_bwd_affine_seeds_f64(
    const double* agg_d, const double* agg_e, int chunks, double* seed_d, double* seed_e) {
    affine_seeds<double>(agg_d, agg_e, chunks, seed_d, seed_e);
}
