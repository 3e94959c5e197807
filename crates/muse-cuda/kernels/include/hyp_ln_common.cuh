// Shared device code of the fused LayerNorm + projection kernels (hyp_ln.cu, hyp_ln_bwd.cu),
// mirroring reference/src/hyp_ln/row.rs: register-resident rows (CAP elements per lane, vector
// loads where D allows), deterministic warp and block sums, and the projection scalars, computed
// in double from the rounded y in both precisions (the image stays strictly inside the ball).
#pragma once
#include "poincare.cuh"

// Rows per CTA of the warp-per-row kernels (one warp each), and threads of every hyp_ln CTA
// (hyp_ln.cu repeats both, identically, so that build.rs exports them to the launchers).
#define HYP_LN_WARPS 8
#define HYP_LN_THREADS 256
// Mode values (reference HypLnMode).
#define HYP_LN_EXP0 0
#define HYP_LN_CLIP 1
#define HYP_LN_CLIP_MARGIN 0.01
#define HYP_LN_CLIP_NORM_EPS 1e-8

// Vector width of a lane holding CAP elements: 16-byte vectors when CAP allows.
template <typename T, int CAP> struct RowVec {
    static constexpr int V = CAP * (int)sizeof(T) >= 16 ? 16 / (int)sizeof(T) : CAP;
};

template <typename T, int V> struct VecOf;
template <> struct VecOf<float, 1> { typedef float t; };
template <> struct VecOf<float, 2> { typedef float2 t; };
template <> struct VecOf<float, 4> { typedef float4 t; };
template <> struct VecOf<double, 1> { typedef double t; };
template <> struct VecOf<double, 2> { typedef double2 t; };

__device__ __forceinline__ void unpack(float v, float* o) { o[0] = v; }
__device__ __forceinline__ void unpack(float2 v, float* o) { o[0] = v.x; o[1] = v.y; }
__device__ __forceinline__ void unpack(float4 v, float* o) { o[0] = v.x; o[1] = v.y; o[2] = v.z; o[3] = v.w; }
__device__ __forceinline__ void unpack(double v, double* o) { o[0] = v; }
__device__ __forceinline__ void unpack(double2 v, double* o) { o[0] = v.x; o[1] = v.y; }
__device__ __forceinline__ void pack(const float* i, float& v) { v = i[0]; }
__device__ __forceinline__ void pack(const float* i, float2& v) { v = make_float2(i[0], i[1]); }
__device__ __forceinline__ void pack(const float* i, float4& v) { v = make_float4(i[0], i[1], i[2], i[3]); }
__device__ __forceinline__ void pack(const double* i, double& v) { v = i[0]; }
__device__ __forceinline__ void pack(const double* i, double2& v) { v = make_double2(i[0], i[1]); }

// Element m of a lane's registers sits at column `col<T, CAP>(vec, lane, m)` of the row:
// vectorised, vector q = lane + 32k holds columns qV .. qV+V-1 (m = kV + e); scalar, column
// lane + 32m. Both are coalesced.
template <typename T, int CAP> __device__ __forceinline__ int col(bool vec, int lane, int m) {
    constexpr int V = RowVec<T, CAP>::V;
    return vec ? (lane + 32 * (m / V)) * V + m % V : lane + 32 * m;
}

// Loads group k (elements m = kV .. kV+V-1) of a lane's CAP registers into `dst` (0 past `dim`):
// one V-wide vector vectorised, V scalars otherwise. STREAM: read once, evict first.
template <typename T, int CAP, bool STREAM>
__device__ __forceinline__ void load_group(const T* __restrict__ row, int dim, bool vec, int lane, int k, T* dst) {
    constexpr int V = RowVec<T, CAP>::V;
    typedef typename VecOf<T, V>::t VT;
    if (vec) {
        const int q = lane + 32 * k;
        if (q * V < dim) {
            const VT* p = reinterpret_cast<const VT*>(row) + q;
            unpack(STREAM ? __ldcs(p) : __ldg(p), dst);
        } else {
#pragma unroll
            for (int e = 0; e < V; ++e) dst[e] = T(0);
        }
    } else {
#pragma unroll
        for (int e = 0; e < V; ++e) {
            const int i = lane + 32 * (k * V + e);
            dst[e] = i < dim ? (STREAM ? __ldcs(row + i) : __ldg(row + i)) : T(0);
        }
    }
}

// Loads a row's CAP elements into registers (0 past `dim`).
template <typename T, int CAP, bool STREAM>
__device__ __forceinline__ void load_row(const T* __restrict__ row, int dim, bool vec, int lane, T (&v)[CAP]) {
    constexpr int V = RowVec<T, CAP>::V;
#pragma unroll
    for (int k = 0; k < CAP / V; ++k) load_group<T, CAP, STREAM>(row, dim, vec, lane, k, &v[k * V]);
}

// Stores a row's valid elements from registers, streaming (not kept in L2).
template <typename T, int CAP>
__device__ __forceinline__ void store_row(T* __restrict__ row, int dim, bool vec, int lane, const T (&v)[CAP]) {
    constexpr int V = RowVec<T, CAP>::V;
    typedef typename VecOf<T, V>::t VT;
    if (vec) {
#pragma unroll
        for (int k = 0; k < CAP / V; ++k) {
            const int q = lane + 32 * k;
            if (q * V < dim) {
                VT t;
                pack(&v[k * V], t);
                __stcs(reinterpret_cast<VT*>(row) + q, t);
            }
        }
    } else {
#pragma unroll
        for (int m = 0; m < CAP; ++m) {
            const int i = lane + 32 * m;
            if (i < dim) __stcs(row + i, v[m]);
        }
    }
}

// Butterfly sum: every lane ends with the same, bit-identical total (IEEE addition commutes).
template <typename A> __device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over a CTA of HYP_LN_THREADS threads in a fixed order, returned to every thread. `smem`
// holds HYP_LN_THREADS / 32 values; the trailing barrier lets the caller reuse it.
template <typename A> __device__ __forceinline__ A block_sum(A v, A* smem) {
    v = warp_sum(v);
    const int warp = threadIdx.x >> 5;
    if ((threadIdx.x & 31) == 0) smem[warp] = v;
    __syncthreads();
    A t = A(0);
#pragma unroll
    for (int w = 0; w < HYP_LN_THREADS / 32; ++w) t += smem[w];
    __syncthreads();
    return t;
}

// The projection of a row with |y|^2 = r2 (reference hyp_ln::row::Proj): out = phi y; the VJP is
// phi g + bracket <y, g> y; dL/dc of the row is <y, g> dc_coef; a = min(s|y|, A_MAX).
struct ProjScalars {
    double phi, bracket, dc_coef, a;
};

__device__ __forceinline__ ProjScalars proj_scalars(int mode, double c, double s, double cap, double r2) {
    ProjScalars p;
    const double r = sqrt(r2);
    const double t = s * r;
    p.a = fmin(t, POINCARE_A_MAX);
    if (mode == HYP_LN_EXP0) {
        if (t < POINCARE_SERIES_BELOW) {
            p.phi = tanh_over(t);
            p.bracket = c * (-2.0 / 3.0 + 8.0 / 15.0 * t * t);
        } else {
            const double th = tanh(t);
            if (th > cap) {
                p.phi = cap / t;
                p.bracket = -cap / (s * r * r2);
            } else {
                const double ch = cosh(t);
                p.phi = th / t;
                p.bracket = 1.0 / (ch * ch * r2) - th / (s * r * r2);
            }
        }
        p.dc_coef = p.bracket * r2 / (2.0 * c);
    } else {
        const double radius = 1.0 / s - HYP_LN_CLIP_MARGIN;
        const double n = sqrt(r2 + HYP_LN_CLIP_NORM_EPS);
        if (n > radius) {
            p.phi = radius / n;
            p.bracket = -radius / (n * n * n);
            p.dc_coef = -1.0 / (2.0 * c * s * n);
        } else {
            p.phi = 1.0;
            p.bracket = 0.0;
            p.dc_coef = 0.0;
        }
    }
    return p;
}

// Lane 0 computes the scalars (double-precision special functions once per row, not per lane)
// and broadcasts them.
__device__ __forceinline__ ProjScalars warp_proj_scalars(int lane, int mode, double c, double s, double cap, double r2) {
    ProjScalars p = {0.0, 0.0, 0.0, 0.0};
    if (lane == 0) p = proj_scalars(mode, c, s, cap, r2);
    p.phi = __shfl_sync(0xffffffffu, p.phi, 0);
    p.bracket = __shfl_sync(0xffffffffu, p.bracket, 0);
    p.dc_coef = __shfl_sync(0xffffffffu, p.dc_coef, 0);
    p.a = __shfl_sync(0xffffffffu, p.a, 0);
    return p;
}
