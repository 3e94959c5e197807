// Poincaré-ball scalar forms on the device (design hyperbolic.md §2.2), mirrored from the CPU
// reference reference/src/poincare/scalar.rs and maps.rs. T = float or double; every hyperbolic
// kernel (poincare.cu, hyp_attn*.cu, hyp_ln.cu, lin_attn.cu, hyp_dist.cu) evaluates through these.
#pragma once

#define POINCARE_A_MAX 15.0
#define POINCARE_SERIES_BELOW 1e-3

template <typename T> struct Num;
template <> struct Num<float> {
    static __device__ __forceinline__ float eps() { return 1.1920929e-07f; }
    static __device__ __forceinline__ float sqrt_(float x) { return sqrtf(x); }
    static __device__ __forceinline__ float tanh_(float x) { return tanhf(x); }
    static __device__ __forceinline__ float sinh_(float x) { return sinhf(x); }
    static __device__ __forceinline__ float cosh_(float x) { return coshf(x); }
    static __device__ __forceinline__ float log1p_(float x) { return log1pf(x); }
    static __device__ __forceinline__ float exp_(float x) { return expf(x); }
    static __device__ __forceinline__ float log_(float x) { return logf(x); }
};
template <> struct Num<double> {
    static __device__ __forceinline__ double eps() { return 2.220446049250313e-16; }
    static __device__ __forceinline__ double sqrt_(double x) { return sqrt(x); }
    static __device__ __forceinline__ double tanh_(double x) { return tanh(x); }
    static __device__ __forceinline__ double sinh_(double x) { return sinh(x); }
    static __device__ __forceinline__ double cosh_(double x) { return cosh(x); }
    static __device__ __forceinline__ double log1p_(double x) { return log1p(x); }
    static __device__ __forceinline__ double exp_(double x) { return exp(x); }
    static __device__ __forceinline__ double log_(double x) { return log(x); }
};

// Rounded products that nvcc may not fuse into an FMA with a neighbouring add: where a difference
// of two products must vanish exactly for equal inputs (x*a - y*b with x = y, a = b), a contracted
// fma(x, a, -(y*b)) leaves the rounding error of y*b instead of 0.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
// Correctly rounded division (never rewritten as a product with a reciprocal).
__device__ __forceinline__ float __fdiv_rn_any(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double __fdiv_rn_any(double a, double b) { return __ddiv_rn(a, b); }

// tanh(t)/t for t >= 0.
template <typename T> __device__ __forceinline__ T tanh_over(T t) {
    if (t < T(POINCARE_SERIES_BELOW)) {
        const T t2 = t * t;
        return T(1) - t2 / T(3) + T(2.0 / 15.0) * t2 * t2;
    }
    return Num<T>::tanh_(t) / t;
}

// The largest tanh factor an exp map may produce: 1 - 2 eps keeps sqrt(c)|x| < 1 after rounding.
template <typename T> __device__ __forceinline__ T tanh_cap() { return T(1) - T(2) * Num<T>::eps(); }

// tanh(t)/t with tanh capped at tanh_cap.
template <typename T> __device__ __forceinline__ T capped_tanh_over(T t) {
    if (t < T(POINCARE_SERIES_BELOW)) return tanh_over(t);
    return fmin(Num<T>::tanh_(t), tanh_cap<T>()) / t;
}

// artanh(t) = 0.5 log1p(2t/(1-t)).
template <typename T> __device__ __forceinline__ T artanh_(T t) { return T(0.5) * Num<T>::log1p_(T(2) * t / (T(1) - t)); }

// artanh(t)/t for 0 <= t < 1.
template <typename T> __device__ __forceinline__ T artanh_over(T t) {
    if (t < T(POINCARE_SERIES_BELOW)) {
        const T t2 = t * t;
        return T(1) + t2 / T(3) + t2 * t2 / T(5);
    }
    return artanh_(t) / t;
}

// acosh(1+z) = log1p(z + sqrt(z(z+2))), z clamped at 0; ln2 + log1p(z) beyond 1e18.
template <typename T> __device__ __forceinline__ T acosh1p(T z) {
    z = fmax(z, T(0));
    if (z > T(1e18)) return T(0.6931471805599453) + Num<T>::log1p_(z);
    return Num<T>::log1p_(z + Num<T>::sqrt_(z * (z + T(2))));
}

// d acosh1p/dz as every backward uses it: 1/sqrt(max(z(z+2), 1e-12)), 0 at z = 0.
template <typename T> __device__ __forceinline__ T acosh1p_prime(T z) {
    if (z <= T(0)) return T(0);
    return T(1) / Num<T>::sqrt_(fmax(z * (z + T(2)), T(1e-12)));
}

// sinh(x)/x, 1 at 0.
template <typename T> __device__ __forceinline__ T sinhc(T x) {
    if (fabs(x) < T(POINCARE_SERIES_BELOW)) return T(1) + x * x / T(6);
    return Num<T>::sinh_(x) / x;
}

// Radial terms of one tangent vector with norm r for the law of cosines (design §2.3).
template <typename T> struct TangentTerms {
    T r, a, sinh2a, cosh2a, sinh2a_over_r;
    bool capped;
};

template <typename T> __device__ __forceinline__ TangentTerms<T> tangent_terms(T s, T r) {
    TangentTerms<T> t;
    t.r = r;
    const T raw = s * r;
    t.capped = raw > T(POINCARE_A_MAX);
    t.a = t.capped ? T(POINCARE_A_MAX) : raw;
    const T two_a = T(2) * t.a;
    t.sinh2a = Num<T>::sinh_(two_a);
    t.cosh2a = Num<T>::cosh_(two_a);
    t.sinh2a_over_r = t.capped ? t.sinh2a / r : T(2) * s * sinhc(two_a);
    return t;
}

// z = 2 sinh^2(a - b) + sinh 2a sinh 2b (1 - C) from the radial terms and 1 - C.
template <typename T> __device__ __forceinline__ T law_of_cosines_z(const TangentTerms<T>& u, const TangentTerms<T>& w, T one_minus_c) {
    const T sh = Num<T>::sinh_(u.a - w.a);
    return T(2) * sh * sh + u.sinh2a * w.sinh2a * one_minus_c;
}
