// Pairwise Poincaré distance matrix (design hyperbolic.md §7): d[b,h,i,j] = d_c(x_i, y_j) for
// x (B,H,N,D), y (B,H,M,D), from tangent vectors (input 0: d(exp0 x_i, exp0 y_j) by the law of
// cosines, §2.3) or ball points (input 1: acosh1p(2c |x-y|^2 / ((1-c|x|^2)(1-c|y|^2))) / sqrt c).
// Launchers: ../src/hyp_dist.rs; CPU reference: reference/src/hyp_dist/.
//
// hyp_dist_rows_<T>: per row (one warp each), |x|^2 in double and the row terms
// (tangent: a = min(s|x|, A_MAX), e^a, e^-a, sinh 2a, 1/|x|, |x|, capped; ball: |x|^2,
// 1 - c|x|^2).
// hyp_dist_pairs_<T>: one CTA per (BM x BM tile, b*h), BM = 16 TM, 256 threads with TM x TM
// outputs each; the Gram matrix G = X Y^T by an SGEMM-like FFMA loop over D in slices of BK = 8
// (global -> registers -> double-buffered shared memory, k-major), then a per-pair epilogue:
//   tangent: C = G/(|x||y|), z = 2 sinh^2(a-b) + sinh 2a sinh 2b (1-C), sinh(a-b) from e^a, e^-b
//            (an odd polynomial for |a-b| < 1/2, where that difference cancels);
//   ball:    |x-y|^2 = |x|^2 + |y|^2 - 2G, z = 2c |x-y|^2 / (den_x den_y);
//   d = acosh1p(z) / sqrt c (f32: the hardware log where log(1 + y) >= log 1.5).
// Near-coincident pairs (1 - C < 1/4, resp. |x-y|^2 < (|x|^2+|y|^2)/4), where the Gram form
// cancels, recompute from the rows by differences (reference hyp_dist::tangent_z): with t = y - x
// and delta = |y| - |x| = <t, y + x>/(|x| + |y|), 1 - C = |t - x/|x| delta|^2 / (2|y|^2) and
// a - b = -s delta; resp. |x-y|^2 = sum (x - y)^2. So d(x, x) = 0 exactly, near-coincident pairs
// keep their relative accuracy, and the fast path's rounding error is amplified at most 4x.
//
// Exported (T = float for _f32 with TM = 8, double for _f64 with TM = 4):
//   hyp_dist_rows_f32(const T* x, long long rows, int dim, double c, double s, int input, T* stats)
//   hyp_dist_pairs_f32(const T* x, const T* y, const T* sx, const T* sy, T* d, int n, int m,
//                      int dim, int vec, T c, T s, T inv_s, int input)
// stats: HYP_DIST_STATS values per row; vec != 0 only when D is a multiple of 16/sizeof(T).
#include "include/poincare.cuh"

#define HYP_DIST_THREADS 256
#define HYP_DIST_ROW_WARPS 8
#define HYP_DIST_STATS 8
#define HYP_DIST_TM_F32 8
#define HYP_DIST_TM_F64 4
#define HYP_DIST_BK 8
#define HYP_DIST_EXACT_BELOW 0.25

// The largest finite T, as a double.
template <typename T> __device__ __forceinline__ double max_finite();
template <> __device__ __forceinline__ double max_finite<float>() { return 3.4028234663852886e38; }
template <> __device__ __forceinline__ double max_finite<double>() { return 1.7976931348623157e308; }

template <typename T>
__device__ void row_stats(const T* __restrict__ x, long long rows, int dim, double c, double s, int input,
                          T* __restrict__ stats) {
    const int lane = threadIdx.x & 31;
    const long long row = (long long)blockIdx.x * HYP_DIST_ROW_WARPS + (threadIdx.x >> 5);
    if (row >= rows) return;
    const T* xr = x + row * dim;
    double r2 = 0.0;
    for (int k = lane; k < dim; k += 32) {
        const double v = (double)xr[k];
        r2 += v * v;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) r2 += __shfl_xor_sync(0xffffffffu, r2, o);
    if (lane != 0) return;
    T* st = stats + row * HYP_DIST_STATS;
    if (input == 0) {
        const double r = sqrt(r2);
        const double a = fmin(s * r, POINCARE_A_MAX);
        st[0] = T(a);
        st[1] = T(exp(a));
        st[2] = T(exp(-a));
        st[3] = T(sinh(2.0 * a));
        // Rows whose 1/|x| overflows T (subnormal norms) count as zero vectors (C = 0).
        const bool zero = !(r > 0.0) || 1.0 / r > max_finite<T>();
        st[4] = zero ? T(0) : T(1.0 / r);
        st[5] = zero ? T(0) : T(r);
        st[6] = s * r > POINCARE_A_MAX ? T(1) : T(0);
    } else {
        st[0] = T(r2);
        st[1] = T(1.0 - c * r2);
        st[2] = st[3] = st[4] = st[5] = st[6] = T(0);
    }
    st[7] = T(0);
}

// 16-byte vector loads and streaming stores of 4 floats / 2 doubles, element by element so that
// the register arrays never need an address (which would put them in local memory).
__device__ __forceinline__ void load16(const float* p, float* r) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(p));
    r[0] = v.x; r[1] = v.y; r[2] = v.z; r[3] = v.w;
}
__device__ __forceinline__ void load16(const double* p, double* r) {
    const double2 v = __ldg(reinterpret_cast<const double2*>(p));
    r[0] = v.x; r[1] = v.y;
}
__device__ __forceinline__ void store16(float* p, const float* v) {
    __stcs(reinterpret_cast<float4*>(p), make_float4(v[0], v[1], v[2], v[3]));
}
__device__ __forceinline__ void store16(double* p, const double* v) {
    __stcs(reinterpret_cast<double2*>(p), make_double2(v[0], v[1]));
}

// The thread's V consecutive k-values of one tile row, 0 outside [0, rows) x [0, dim).
template <typename T, int V>
__device__ __forceinline__ void load_slice(const T* __restrict__ base, int row, int rows, int k, int dim, bool vec, T* r) {
    if (vec && row < rows && k < dim) {
        load16(base + (long long)row * dim + k, r);
    } else {
#pragma unroll
        for (int e = 0; e < V; ++e) r[e] = (row < rows && k + e < dim) ? __ldg(base + (long long)row * dim + k + e) : T(0);
    }
}

// 1 - C and a - b of a near-coincident tangent pair from the rows (reference hyp_dist::tangent_z):
// t = y - x, delta = <t, y + x>/(|x| + |y|), 1 - C = |t - x delta/|x||^2 / (2|y|^2), a - b = -s delta
// (a_x - a_y when a cap is active). Both rows are non-zero here (a zero row has C = 0).
template <typename T>
__device__ __forceinline__ void exact_tangent(const T* __restrict__ xr, const T* __restrict__ yr, int dim, T irx, T rx,
                                              T ry, T s, bool capped, T ad_capped, T& omc, T& ad) {
    T pp = T(0);
    for (int k = 0; k < dim; ++k) pp += (yr[k] - xr[k]) * (yr[k] + xr[k]);
    const T delta = pp / (rx + ry);
    T ee = T(0);
    for (int k = 0; k < dim; ++k) {
        const T e = (yr[k] - xr[k]) - xr[k] * irx * delta;
        ee += e * e;
    }
    const T rel = Num<T>::sqrt_(ee) / ry;  // |y/|y| - x/|x||, without forming |y|^2 (underflow)
    omc = T(0.5) * rel * rel;
    ad = capped ? ad_capped : -s * delta;
}

// sinh(x): an odd polynomial for |x| < 1/2 (f32: truncation below 1e-8 relative), else from
// e^a and e^-b without cancellation.
__device__ __forceinline__ float sinh_diff(float x, float ea, float iea, float eb, float ieb) {
    if (fabsf(x) < 0.5f) {
        const float x2 = x * x;
        return x * (1.0f + x2 * (1.0f / 6.0f + x2 * (1.0f / 120.0f + x2 * (1.0f / 5040.0f + x2 * (1.0f / 362880.0f)))));
    }
    return 0.5f * (ea * ieb - eb * iea);
}
__device__ __forceinline__ double sinh_diff(double x, double ea, double iea, double eb, double ieb) {
    if (fabs(x) < 0.5) return sinh(x);
    return 0.5 * (ea * ieb - eb * iea);
}

template <typename T>
__device__ __forceinline__ T exact_dist2(const T* __restrict__ xr, const T* __restrict__ yr, int dim) {
    T s = T(0);
    for (int k = 0; k < dim; ++k) {
        const T d = xr[k] - yr[k];
        s += d * d;
    }
    return s;
}

// acosh1p(z) (poincare.cuh) for the per-pair epilogue. f32: the hardware log (__logf, absolute
// error <= 2^-21.4) where log(1 + y) >= log 1.5, i.e. relative error <= 1e-6, and log1pf below,
// where it keeps d(x, x) = 0 and the small distances exact; f64: the shared form.
__device__ __forceinline__ float acosh1p_pair(float z) {
    z = fmaxf(z, 0.0f);
    if (z > 1e18f) return 0.6931472f + __logf(z);
    const float y = z + sqrtf(z * (z + 2.0f));
    return y > 0.5f ? __logf(1.0f + y) : log1pf(y);
}
__device__ __forceinline__ double acosh1p_pair(double z) { return acosh1p(z); }

template <typename T, int TM>
__device__ void pairs(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ sx,
                      const T* __restrict__ sy, T* __restrict__ dout, int n, int m, int dim, int vec, T c, T s,
                      T inv_s, int input) {
    constexpr int BM = 16 * TM, BK = HYP_DIST_BK, H = TM / 2, V = 16 / (int)sizeof(T), PAD = V;
    static_assert(HYP_DIST_THREADS * V == BM * BK, "one 16-byte slice per thread and tile");
    __shared__ __align__(16) T As[2][BK][BM + PAD];
    __shared__ __align__(16) T Bs[2][BK][BM + PAD];
    __shared__ T stx[BM][7], sty[BM][7];
    const long long bh = blockIdx.z;
    const T* xb = x + bh * n * dim;
    const T* yb = y + bh * m * dim;
    const int i0 = blockIdx.y * BM, j0 = blockIdx.x * BM;
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int lrow = tid / (BK / V), lk = (tid % (BK / V)) * V;
    const bool vz = vec != 0;
    // Row terms of the tile's rows and columns.
    for (int t = tid; t < BM * 7; t += HYP_DIST_THREADS) {
        const int r = t / 7, q = t % 7;
        stx[r][q] = i0 + r < n ? sx[(bh * n + i0 + r) * HYP_DIST_STATS + q] : T(0);
        sty[r][q] = j0 + r < m ? sy[(bh * m + j0 + r) * HYP_DIST_STATS + q] : T(0);
    }
    T acc[TM][TM];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TM; ++j) acc[i][j] = T(0);
    T ra[V], rb[V];
    load_slice<T, V>(xb, i0 + lrow, n, lk, dim, vz, ra);
    load_slice<T, V>(yb, j0 + lrow, m, lk, dim, vz, rb);
#pragma unroll
    for (int e = 0; e < V; ++e) {
        As[0][lk + e][lrow] = ra[e];
        Bs[0][lk + e][lrow] = rb[e];
    }
    __syncthreads();
    const int tiles = (dim + BK - 1) / BK;
    for (int t = 0; t < tiles; ++t) {
        const int cur = t & 1;
        if (t + 1 < tiles) {
            load_slice<T, V>(xb, i0 + lrow, n, (t + 1) * BK + lk, dim, vz, ra);
            load_slice<T, V>(yb, j0 + lrow, m, (t + 1) * BK + lk, dim, vz, rb);
        }
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            T a[TM], b[TM];
#pragma unroll
            for (int h = 0; h < H; ++h) {
                a[h] = As[cur][kk][ty * H + h];
                a[H + h] = As[cur][kk][BM / 2 + ty * H + h];
                b[h] = Bs[cur][kk][tx * H + h];
                b[H + h] = Bs[cur][kk][BM / 2 + tx * H + h];
            }
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TM; ++j) acc[i][j] += a[i] * b[j];
        }
        if (t + 1 < tiles) {
#pragma unroll
            for (int e = 0; e < V; ++e) {
                As[cur ^ 1][lk + e][lrow] = ra[e];
                Bs[cur ^ 1][lk + e][lrow] = rb[e];
            }
        }
        __syncthreads();
    }
    // Per-pair epilogue, row by row; H consecutive columns per store.
    const bool vstore = (m % H) == 0;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int il = (i / H) * (BM / 2) + ty * H + i % H;
        const int gi = i0 + il;
        if (gi >= n) continue;
        const T ai = stx[il][0], ei = stx[il][1], iei = stx[il][2], shi = stx[il][3], iri = stx[il][4];
        const T* xr = xb + (long long)gi * dim;
        T out[TM];
#pragma unroll
        for (int j = 0; j < TM; ++j) {
            const int jl = (j / H) * (BM / 2) + tx * H + j % H;
            const int gj = min(j0 + jl, m - 1);
            const T* yr = yb + (long long)gj * dim;
            T z;
            if (input == 0) {
                const T aj = sty[jl][0], ej = sty[jl][1], iej = sty[jl][2], shj = sty[jl][3], irj = sty[jl][4];
                T omc = T(1) - acc[i][j] * iri * irj;
                T ad = ai - aj;
                if (omc < T(HYP_DIST_EXACT_BELOW))
                    exact_tangent(xr, yr, dim, iri, stx[il][5], sty[jl][5], s, stx[il][6] + sty[jl][6] > T(0), ad,
                                  omc, ad);
                const T sh = sinh_diff(ad, ei, iei, ej, iej);
                z = T(2) * sh * sh + shi * shj * omc;
            } else {
                const T ri = stx[il][0], rj = sty[jl][0];
                T diff2 = ri + rj - T(2) * acc[i][j];
                if (diff2 < T(HYP_DIST_EXACT_BELOW) * (ri + rj)) diff2 = exact_dist2(xr, yr, dim);
                z = T(2) * c * diff2 / (stx[il][1] * sty[jl][1]);
            }
            out[j] = acosh1p_pair(z) * inv_s;
        }
        T* orow = dout + (bh * n + gi) * (long long)m;
#pragma unroll
        for (int g = 0; g < 2; ++g) {
            const int jb = j0 + g * (BM / 2) + tx * H;
            static_assert(H * sizeof(T) == 16, "H consecutive outputs make one 16-byte store");
            if (vstore && jb + H <= m) {
                store16(orow + jb, &out[g * H]);
            } else {
#pragma unroll
                for (int h = 0; h < H; ++h)
                    if (jb + h < m) __stcs(orow + jb + h, out[g * H + h]);
            }
        }
    }
}

// Exported wrappers, one per dtype.
extern "C" __global__ void __launch_bounds__(HYP_DIST_THREADS) hyp_dist_rows_f32(const float* x, long long rows, int dim, double c, double s, int input, float* stats) {
    row_stats<float>(x, rows, dim, c, s, input, stats);
}
extern "C" __global__ void __launch_bounds__(HYP_DIST_THREADS) hyp_dist_rows_f64(const double* x, long long rows, int dim, double c, double s, int input, double* stats) {
    row_stats<double>(x, rows, dim, c, s, input, stats);
}
extern "C" __global__ void __launch_bounds__(HYP_DIST_THREADS, 2) hyp_dist_pairs_f32(const float* x, const float* y, const float* sx, const float* sy, float* d, int n, int m, int dim, int vec, float c, float s, float inv_s, int input) {
    pairs<float, HYP_DIST_TM_F32>(x, y, sx, sy, d, n, m, dim, vec, c, s, inv_s, input);
}
extern "C" __global__ void __launch_bounds__(HYP_DIST_THREADS, 2) hyp_dist_pairs_f64(const double* x, const double* y, const double* sx, const double* sy, double* d, int n, int m, int dim, int vec, double c, double s, double inv_s, int input) {
    pairs<double, HYP_DIST_TM_F64>(x, y, sx, sy, d, n, m, dim, vec, c, s, inv_s, input);
}
