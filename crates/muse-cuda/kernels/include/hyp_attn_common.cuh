// Shared pieces of the hyperbolic attention kernels (hyp_attn.cu, hyp_attn_bwd.cu): masks, the
// per-row terms layout of the pre-pass, and the pair distance of each form (design hyperbolic.md
// §3.1, §3.5). Mirrors reference/src/hyp_attn/.
#pragma once
#include "poincare.cuh"

// Distance forms (reference: hyp_attn::Form).
#define FORM_EXACT 0
#define FORM_FAST_BENCH 1
#define FORM_FLASH 2

// Masks (reference: hyp_attn::Mask).
#define MASK_NONE 0
#define MASK_CAUSAL 1
#define MASK_WINDOW 2

// Per-row terms written by the pre-pass: exact form [a, sinh 2a, cosh 2a, sinh 2a / r, r,
// capped]; compat forms [|x|^2, 0, ...] of the (mapped) row.
#define TERMS 6

struct MaskSpec {
    int kind, window, n, m;
    const int* lengths;  // [B] or null
};

// Keys [lo, hi) visible from query i of batch b.
__device__ __forceinline__ int2 visible(const MaskSpec& mk, int b, int i) {
    const int len = mk.lengths ? mk.lengths[b] : mk.m;
    if (mk.kind == MASK_CAUSAL) {
        int hi = i + 1 + len - mk.n;
        hi = hi < 0 ? 0 : (hi > len ? len : hi);
        return make_int2(0, hi);
    }
    if (mk.kind == MASK_WINDOW) {
        const int lo = (i / mk.window) * mk.window;
        const int hi = i + 1 < len ? i + 1 : len;
        return make_int2(lo, hi);
    }
    return make_int2(0, len);
}

// Queries [lo, hi) that can see key j of batch b (the transpose of `visible`).
__device__ __forceinline__ int2 seen_by(const MaskSpec& mk, int b, int j) {
    const int len = mk.lengths ? mk.lengths[b] : mk.m;
    if (j >= len) return make_int2(0, 0);
    if (mk.kind == MASK_CAUSAL) {
        int lo = j - len + mk.n;
        lo = lo < 0 ? 0 : lo;
        return make_int2(lo, mk.n);
    }
    if (mk.kind == MASK_WINDOW) {
        const int lo = j;
        int hi = (j / mk.window + 1) * mk.window;
        hi = hi > mk.n ? mk.n : hi;
        return make_int2(lo, hi);
    }
    return make_int2(0, mk.n);
}

// What the D-loop accumulates per pair: sum (u_hat - w_hat)^2 (exact) or the dot product (compat).
template <int FORM, typename T> __device__ __forceinline__ T pair_acc(T acc, T x, T y) {
    if (FORM == FORM_EXACT) {
        const T d = x - y;
        return fma(d, d, acc);
    }
    return fma(x, y, acc);
}

// 1 - C from the accumulated squared difference of the unit vectors (1 when either is zero).
template <typename T> __device__ __forceinline__ T one_minus_cos(T acc, const T* tq, const T* tk) {
    return (tq[4] == T(0) || tk[4] == T(0)) ? T(1) : T(0.5) * acc;
}

// The flash form's square root: sqrt.approx in f32 (within 2 ulp, no slow-path subroutine; the
// correctly rounded sqrtf's call made ptxas spill the SIMT flash kernel), exact in f64.
__device__ __forceinline__ float flash_sqrt(float x) {
    float y;
    asm("sqrt.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ double flash_sqrt(double x) { return sqrt(x); }

// The pair distance of the form from the accumulated value and the two rows' terms.
template <int FORM, typename T>
__device__ __forceinline__ T pair_dist(T acc, const T* tq, const T* tk, T s, T c) {
    if (FORM == FORM_EXACT) {
        const T sh = Num<T>::sinh_(tq[0] - tk[0]);
        const T z = T(2) * sh * sh + tq[1] * tk[1] * one_minus_cos(acc, tq, tk);
        return acosh1p(z) / s;
    }
    const T nq = tq[0], nk = tk[0];
    const T diff2 = fmax(nq - T(2) * acc + nk, T(0));
    if (FORM == FORM_FAST_BENCH) return Num<T>::sqrt_(diff2 + T(1e-8)) * Num<T>::sqrt_(T(1) + c * (nq + nk));
    const T den = fmax((T(1) - c * nq) * (T(1) - c * nk), T(1e-6));
    const T x = fmax(T(1) + T(2) * c * diff2 / den, T(1) + T(1e-6));
    return Num<T>::log_(x + flash_sqrt(x * x - T(1) + T(1e-6))) / s;
}

// Cooperative load of a rows x cols tile (row stride ld) into shared memory, zero outside
// [0, nrows) x [0, ncols).
template <typename T, int ROWS, int COLS, int PAD>
__device__ __forceinline__ void load_tile(T (*dst)[COLS + PAD], const T* src, int r0, int nrows, int c0, int ncols, int ld) {
    for (int idx = threadIdx.x; idx < ROWS * COLS; idx += blockDim.x) {
        const int r = idx / COLS, cc = idx % COLS;
        const int gr = r0 + r, gc = c0 + cc;
        dst[r][cc] = (gr < nrows && gc < ncols) ? src[(long long)gr * ld + gc] : T(0);
    }
}
