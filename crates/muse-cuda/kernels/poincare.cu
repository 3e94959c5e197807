// Poincaré-ball row ops on the GPU (design hyperbolic.md §2): one thread per row of (R, D) inputs
// applies one op of reference/src/poincare (BallOp) through the device functions of
// include/poincare.cuh, so those functions are verified on their own before the attention kernels
// use them. Launcher: ../src/poincare.rs.
//
// Exported (T = float for _f32, double for _f64):
//   poincare_apply_<T>(int op, const T* x, const T* y, const T* g, T* out, T* out2, T* dc_rows,
//                      int rows, int dim, T c, T eps)
// op codes follow BallOp: 0 projx, 1 exp0, 2 log0, 3 expx, 4 logx, 5 mobius_add, 6 lambda,
// 7 dist, 8 dist0, 9 dist_tangent, 10 exp0_vjp, 11 log0_vjp, 12 dist_tangent_vjp.
// out is [rows, dim] (or [rows] for ops 6-9); out2 and dc_rows ([rows]) only for op 12.
#include "include/poincare.cuh"

#define POINCARE_THREADS 128

template <typename T> struct Row {
    const T* p;
    __device__ T dot(const Row& o, int dim) const {
        T s = 0;
        for (int k = 0; k < dim; ++k) s = fma(p[k], o.p[k], s);
        return s;
    }
    __device__ T n2(int dim) const { return dot(*this, dim); }
};

// across * (g - <u,g>u) + along * <u,g> u with u = v/|v| (all of g is across at v = 0).
template <typename T>
__device__ __forceinline__ void radial_split(T across, T along, T r, const Row<T>& v, const Row<T>& g, T* o, int dim) {
    if (dim == 1 && r > T(0)) {  // every vector is radial in one dimension (grad.rs)
        o[0] = along * g.p[0];
        return;
    }
    const T par = r > T(0) ? v.dot(g, dim) / r : T(0);
    const T ir = r > T(0) ? T(1) / r : T(0);
    for (int k = 0; k < dim; ++k) {
        const T u = v.p[k] * ir;
        o[k] = across * (g.p[k] - par * u) + along * par * u;
    }
}

// Pulls a point rounding left on or outside the boundary back to radius tanh_cap/s.
template <typename T> __device__ __forceinline__ void keep_inside(T s, T* o, int dim) {
    T n2 = 0;
    for (int k = 0; k < dim; ++k) n2 = fma(o[k], o[k], n2);
    const T t = s * Num<T>::sqrt_(n2);
    if (t > tanh_cap<T>()) {
        const T scale = tanh_cap<T>() / t;
        for (int k = 0; k < dim; ++k) o[k] *= scale;
    }
}

template <typename T>
__device__ void apply(int op, const T* __restrict__ xs, const T* __restrict__ ys, const T* __restrict__ gs,
                      T* __restrict__ out, T* __restrict__ out2, T* __restrict__ dc_rows, int rows, int dim, T c, T eps) {
    const long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const Row<T> x{xs + r * dim}, y{ys ? ys + r * dim : xs};
    T* o = out + r * dim;
    const T s = Num<T>::sqrt_(c);
    const T x2 = x.n2(dim);
    switch (op) {
    case 0: {  // projx
        const T t = s * Num<T>::sqrt_(x2), lim = T(1) - eps;
        const T scale = t > lim ? lim / t : T(1);
        for (int k = 0; k < dim; ++k) o[k] = scale * x.p[k];
        return;
    }
    case 1: {  // exp0
        const T scale = capped_tanh_over(s * Num<T>::sqrt_(x2));
        for (int k = 0; k < dim; ++k) o[k] = scale * x.p[k];
        return;
    }
    case 2: {  // log0
        const T scale = artanh_over(fmin(s * Num<T>::sqrt_(x2), tanh_cap<T>()));
        for (int k = 0; k < dim; ++k) o[k] = scale * x.p[k];
        return;
    }
    case 3: {  // expx: x (+) [tanh(s lam |v| / 2) v / (s |v|)]
        const T half = T(1) / (T(1) - c * x2);  // lambda / 2
        const T y2 = y.n2(dim);
        const T scale = half * capped_tanh_over(s * half * Num<T>::sqrt_(y2));
        const T xy = scale * x.dot(y, dim), st2 = scale * scale * y2;
        const T a = T(1) + T(2) * c * xy + c * st2, bb = T(1) - c * x2;
        const T den = fmax(T(1) + T(2) * c * xy + c * c * x2 * st2, T(1e-15));
        for (int k = 0; k < dim; ++k) o[k] = (a * x.p[k] + bb * scale * y.p[k]) / den;
        keep_inside(s, o, dim);
        return;
    }
    case 4: {  // logx: numerator (1 - c|x|^2)(y - x) - c|x - y|^2 x, exactly 0 at y = x (maps.rs)
        const T xy = x.dot(y, dim), y2 = y.n2(dim);
        const T bb = T(1) - c * x2;
        T d2 = 0;
        for (int k = 0; k < dim; ++k) {
            const T d = y.p[k] - x.p[k];
            d2 = fma(d, d, d2);
        }
        const T den = fmax(T(1) - T(2) * c * xy + c * c * x2 * y2, T(1e-15));
        T w2 = 0;
        for (int k = 0; k < dim; ++k) {
            const T w = (bb * (y.p[k] - x.p[k]) - c * d2 * x.p[k]) / den;
            w2 = fma(w, w, w2);
        }
        const T scale = (T(1) - c * x2) * artanh_over(fmin(s * Num<T>::sqrt_(w2), tanh_cap<T>()));
        for (int k = 0; k < dim; ++k) o[k] = scale * (bb * (y.p[k] - x.p[k]) - c * d2 * x.p[k]) / den;
        return;
    }
    case 5: {  // mobius_add
        const T xy = x.dot(y, dim), y2 = y.n2(dim);
        const T a = T(1) + T(2) * c * xy + c * y2, bb = T(1) - c * x2;
        const T den = fmax(T(1) + T(2) * c * xy + c * c * x2 * y2, T(1e-15));
        for (int k = 0; k < dim; ++k) o[k] = (a * x.p[k] + bb * y.p[k]) / den;
        keep_inside(s, o, dim);
        return;
    }
    case 6: out[r] = T(2) / (T(1) - c * x2); return;  // lambda
    case 7: {  // dist, ball form
        T d2 = 0;
        for (int k = 0; k < dim; ++k) {
            const T d = x.p[k] - y.p[k];
            d2 = fma(d, d, d2);
        }
        const T den = (T(1) - c * x2) * (T(1) - c * y.n2(dim));
        out[r] = acosh1p(T(2) * c * d2 / den) / s;
        return;
    }
    case 8: out[r] = T(2) * artanh_(s * Num<T>::sqrt_(x2)) / s; return;  // dist0
    case 9:
    case 12: {  // dist_tangent (+ vjp)
        const T rx = Num<T>::sqrt_(x2), ry = Num<T>::sqrt_(y.n2(dim));
        // Unit vectors by division, as the reference: x/|x| is exactly +-1 in one dimension, x*(1/|x|)
        // need not be, and S_a S_b (up to 1e19) amplifies that rounding in 1 - C.
        auto unit = [](T e, T r) { return r > T(0) ? __fdiv_rn_any(e, r) : T(0); };
        T acc = 0;
        for (int k = 0; k < dim; ++k) {
            // Two rounded products, never one fused: d = 0 exactly when x = y (see poincare.cuh).
            const T d = unit(x.p[k], rx) - unit(y.p[k], ry);
            acc = fma(d, d, acc);
        }
        const T omc = (rx == T(0) || ry == T(0)) ? T(1) : T(0.5) * acc;
        const TangentTerms<T> tu = tangent_terms(s, rx), tw = tangent_terms(s, ry);
        const T z = law_of_cosines_z(tu, tw, omc);
        const T d = acosh1p(z) / s;
        if (op == 9) {
            out[r] = d;
            return;
        }
        const T delta = gs[r];
        const T kk = delta * acosh1p_prime(z) / s;
        const T sh2 = Num<T>::sinh_(T(2) * (tu.a - tw.a));
        const T da = T(2) * sh2 + T(2) * tu.cosh2a * tw.sinh2a * omc;
        const T db = T(-2) * sh2 + T(2) * tu.sinh2a * tw.cosh2a * omc;
        const T cs = T(1) - omc;
        const T ga = tu.capped ? T(0) : kk * da * s, gb = tw.capped ? T(0) : kk * db * s;
        const T ang_u = -kk * tw.sinh2a * tu.sinh2a_over_r, ang_w = -kk * tu.sinh2a * tw.sinh2a_over_r;
        T* o2 = out2 + r * dim;
        for (int k = 0; k < dim; ++k) {
            const T ui = unit(x.p[k], rx), wi = unit(y.p[k], ry);
            o[k] = ga * ui + ang_u * (wi - cs * ui);
            o2[k] = gb * wi + ang_w * (ui - cs * wi);
        }
        const T ra = tu.capped ? T(0) : rx, rb = tw.capped ? T(0) : ry;
        dc_rows[r] = (-delta * d / s + kk * (da * ra + db * rb)) / (T(2) * s);
        return;
    }
    case 10: {  // exp0_vjp: phi (g - <u,g>u) + sech^2(t) <u,g> u, no cancellation (grad.rs)
        const T rr = Num<T>::sqrt_(x2), t = s * rr;
        const T ch = Num<T>::cosh_(t);
        radial_split(capped_tanh_over(t), T(1) / (ch * ch), rr, x, y, o, dim);
        return;
    }
    case 11: {  // log0_vjp: psi (g - <x,g>x) + <x,g>x / (1 - t^2)
        const T rr = Num<T>::sqrt_(x2), t = fmin(s * rr, tanh_cap<T>());
        radial_split(artanh_over(t), T(1) / (T(1) - t * t), rr, x, y, o, dim);
        return;
    }
    default: return;
    }
}

extern "C" __global__ void __launch_bounds__(POINCARE_THREADS) poincare_apply_f32(int op, const float* x, const float* y, const float* g, float* out, float* out2, float* dc_rows, int rows, int dim, float c, float eps) { apply<float>(op, x, y, g, out, out2, dc_rows, rows, dim, c, eps); }
extern "C" __global__ void __launch_bounds__(POINCARE_THREADS) poincare_apply_f64(int op, const double* x, const double* y, const double* g, double* out, double* out2, double* dc_rows, int rows, int dim, double c, double eps) { apply<double>(op, x, y, g, out, out2, dc_rows, rows, dim, c, eps); }
