// Shared device code of the BK-Core kernels (bk_core.cu, bk_core_bwd.cu): complex arithmetic,
// projective 2x2 transfer matrices, affine maps, and block-wide scans over them.
//
// Conventions (design bk-core.md §3.2, §7.1):
//   alpha_i = a_i - z, k_i = b_i * c_i (k_{-1} = k_{N-1} = 0).
//   Forward state st_i = [theta_i, theta_{i-1}], st_{i+1} = T_i st_i, T_i = [[alpha_i, -k_{i-1}], [1, 0]],
//   st_0 = [1, 0]; r_i = theta_{i+1} / theta_i.
//   Backward state su_i = [sigma_i, sigma_{i+1}], su_i = S_i su_{i+1}, S_i = [[alpha_i, -k_i], [1, 0]],
//   su_N = [1, 0]; s_i = sigma_i / sigma_{i+1}.
//   Both directions scan with op(acc, x) = x * acc: the newer factor multiplies on the left.
#pragma once

template <typename T>
struct cpx {
    T re, im;
};

template <typename T>
__device__ __forceinline__ cpx<T> mk(T re, T im) { return cpx<T>{re, im}; }
template <typename T>
__device__ __forceinline__ cpx<T> operator+(cpx<T> x, cpx<T> y) { return {x.re + y.re, x.im + y.im}; }
template <typename T>
__device__ __forceinline__ cpx<T> operator-(cpx<T> x, cpx<T> y) { return {x.re - y.re, x.im - y.im}; }
template <typename T>
__device__ __forceinline__ cpx<T> operator*(cpx<T> x, cpx<T> y) {
    return {x.re * y.re - x.im * y.im, x.re * y.im + x.im * y.re};
}
template <typename T>
__device__ __forceinline__ cpx<T> operator*(T s, cpx<T> x) { return {s * x.re, s * x.im}; }
template <typename T>
__device__ __forceinline__ cpx<T> conj(cpx<T> x) { return {x.re, -x.im}; }
// x / y as x * conj(y) / |y|^2, the same formula as the CPU reference (num-complex), so both
// overflow and underflow alike.
template <typename T>
__device__ __forceinline__ cpx<T> cdiv(cpx<T> x, cpx<T> y) {
    T d = y.re * y.re + y.im * y.im;
    return {(x.re * y.re + x.im * y.im) / d, (x.im * y.re - x.re * y.im) / d};
}
template <typename T>
__device__ __forceinline__ cpx<T> cdiv(T x, cpx<T> y) {
    T d = y.re * y.re + y.im * y.im;
    return {x * y.re / d, -x * y.im / d};
}

__device__ __forceinline__ float scale_by_pow2(float m) { return (m > 0.0f && isfinite(m)) ? scalbnf(1.0f, -ilogbf(m)) : 1.0f; }
__device__ __forceinline__ double scale_by_pow2(double m) { return (m > 0.0 && isfinite(m)) ? scalbn(1.0, -ilogb(m)) : 1.0; }

// A 2x2 complex matrix [[m00, m01], [m10, m11]]; only ratios matter (projective), so products are
// rescaled by a power of two (exact) to keep the largest component in [1, 2).
template <typename T>
struct Mat2 {
    cpx<T> m00, m01, m10, m11;
};

template <typename T>
__device__ __forceinline__ Mat2<T> mat_identity() {
    return {mk<T>(1, 0), mk<T>(0, 0), mk<T>(0, 0), mk<T>(1, 0)};
}

template <typename T>
__device__ __forceinline__ T amax(cpx<T> x) { return fmax(fabs(x.re), fabs(x.im)); }

template <typename T>
__device__ __forceinline__ Mat2<T> normalise(Mat2<T> m) {
    T s = scale_by_pow2(fmax(fmax(amax(m.m00), amax(m.m01)), fmax(amax(m.m10), amax(m.m11))));
    return {s * m.m00, s * m.m01, s * m.m10, s * m.m11};
}

// y * x, normalised.
template <typename T>
__device__ __forceinline__ Mat2<T> mat_mul(Mat2<T> y, Mat2<T> x) {
    Mat2<T> r = {y.m00 * x.m00 + y.m01 * x.m10, y.m00 * x.m01 + y.m01 * x.m11,
                 y.m10 * x.m00 + y.m11 * x.m10, y.m10 * x.m01 + y.m11 * x.m11};
    return normalise(r);
}

// [[alpha, -k], [1, 0]] * x, normalised: the transfer step of both directions.
template <typename T>
__device__ __forceinline__ Mat2<T> transfer(cpx<T> alpha, T k, Mat2<T> x) {
    Mat2<T> r = {alpha * x.m00 - k * x.m10, alpha * x.m01 - k * x.m11, x.m00, x.m01};
    return normalise(r);
}

// The first column of m applied to v = [v0, v1]: m * v.
template <typename T>
__device__ __forceinline__ void mat_apply(Mat2<T> m, cpx<T> v0, cpx<T> v1, cpx<T>& o0, cpx<T>& o1) {
    o0 = m.m00 * v0 + m.m01 * v1;
    o1 = m.m10 * v0 + m.m11 * v1;
}

// The affine map y -> m*y + c of the gradient sweeps (design §6.1, §7.3).
template <typename T>
struct Affine {
    cpx<T> m, c;
};

template <typename T>
__device__ __forceinline__ Affine<T> affine_identity() { return {mk<T>(1, 0), mk<T>(0, 0)}; }

// Apply `acc` first, then `x`: y -> x.m (acc.m y + acc.c) + x.c.
template <typename T>
__device__ __forceinline__ Affine<T> affine_then(Affine<T> acc, Affine<T> x) {
    return {x.m * acc.m, x.m * acc.c + x.c};
}

template <typename T>
struct MatOp {
    using V = Mat2<T>;
    __device__ __forceinline__ static V identity() { return mat_identity<T>(); }
    __device__ __forceinline__ static V op(V acc, V x) { return mat_mul(x, acc); }
};
template <typename T>
struct AffineOp {
    using V = Affine<T>;
    __device__ __forceinline__ static V identity() { return affine_identity<T>(); }
    __device__ __forceinline__ static V op(V acc, V x) { return affine_then(acc, x); }
};

template <typename T>
__device__ __forceinline__ cpx<T> shfl(cpx<T> v, int d, bool up) {
    if (up) return {__shfl_up_sync(0xffffffffu, v.re, d), __shfl_up_sync(0xffffffffu, v.im, d)};
    return {__shfl_down_sync(0xffffffffu, v.re, d), __shfl_down_sync(0xffffffffu, v.im, d)};
}
template <typename T>
__device__ __forceinline__ Mat2<T> shfl(Mat2<T> v, int d, bool up) {
    return {shfl(v.m00, d, up), shfl(v.m01, d, up), shfl(v.m10, d, up), shfl(v.m11, d, up)};
}
template <typename T>
__device__ __forceinline__ Affine<T> shfl(Affine<T> v, int d, bool up) {
    return {shfl(v.m, d, up), shfl(v.c, d, up)};
}

constexpr int MAX_WARPS = 32;

// Inclusive scan within a warp; `spos` is the lane's position in scan order and `up` says that
// earlier positions sit at lower lanes.
template <typename Op>
__device__ __forceinline__ typename Op::V warp_inclusive(typename Op::V inc, int spos, bool up) {
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
        typename Op::V y = shfl(inc, d, up);
        if (spos >= d) inc = Op::op(y, inc);
    }
    return inc;
}

// Block-wide exclusive scan of one value per thread under Op (op(acc, x): acc first, then x), in
// thread order or, with `reverse`, from the last thread to the first. blockDim.x must be a
// multiple of 32; `smem` holds MAX_WARPS + 1 values. Returns the exclusive prefix in scan order
// and sets `total` to the whole block's composition. Every thread must call it.
template <typename Op>
__device__ typename Op::V block_scan_exclusive(typename Op::V x, bool reverse, typename Op::V* smem,
                                               typename Op::V& total) {
    using V = typename Op::V;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    const int spos = reverse ? 31 - lane : lane;
    const int swarp = reverse ? nwarps - 1 - warp : warp;
    V inc = warp_inclusive<Op>(x, spos, !reverse);
    if (spos == 31) smem[swarp] = inc;
    __syncthreads();
    if (warp == 0) {
        V w = lane < nwarps ? smem[lane] : Op::identity();
        V winc = warp_inclusive<Op>(w, lane, true);
        V wprev = shfl(winc, 1, true);
        __syncwarp();
        if (lane < nwarps) smem[lane] = lane == 0 ? Op::identity() : wprev;
        if (lane == nwarps - 1) smem[MAX_WARPS] = winc;
    }
    __syncthreads();
    V wprefix = smem[swarp];
    total = smem[MAX_WARPS];
    V prev = shfl(inc, 1, !reverse);
    V excl = spos == 0 ? Op::identity() : prev;
    __syncthreads();  // the caller may reuse smem for its next scan
    return Op::op(wprefix, excl);
}

// Seed states carried between chunks of a long row: a projective vector for the Möbius scans,
// a value for the affine scans.
template <typename T>
struct Vec2 {
    cpx<T> v0, v1;
};

template <typename T>
__device__ __forceinline__ Vec2<T> vec_normalise(Vec2<T> v) {
    T s = scale_by_pow2(fmax(amax(v.v0), amax(v.v1)));
    return {s * v.v0, s * v.v1};
}

template <typename T>
__device__ __forceinline__ Vec2<T> mat_apply(Mat2<T> m, Vec2<T> v) {
    return vec_normalise(Vec2<T>{m.m00 * v.v0 + m.m01 * v.v1, m.m10 * v.v0 + m.m11 * v.v1});
}

template <typename T>
__device__ __forceinline__ cpx<T> affine_apply(Affine<T> f, cpx<T> y) { return f.m * y + f.c; }

// Per-thread slice of one chunk of one row: E consecutive elements from index i0.
template <typename T, int E>
struct Slice {
    long long row_a;  // offset of the row in a (and g, grad_a): row * n
    long long row_b;  // offset of the row in b, c: row * (n - 1)
    long long i0;     // first index of this thread within the row
    int cnt;          // valid elements, 0..E
    T a[E];
    T kk[E + 1];      // kk[j] = k_{i0 - 1 + j}; 0 outside 0..n-2
};

template <typename T, int E>
__device__ __forceinline__ Slice<T, E> load_slice(const T* __restrict__ a, const T* __restrict__ b,
                                                  const T* __restrict__ c, long long n, int chunk_len) {
    Slice<T, E> s;
    const long long row = blockIdx.y;
    s.row_a = row * n;
    s.row_b = row * (n - 1);
    s.i0 = (long long)blockIdx.x * chunk_len + (long long)threadIdx.x * E;
    long long left = n - s.i0;
    s.cnt = left <= 0 ? 0 : (left >= E ? E : (int)left);
#pragma unroll
    for (int j = 0; j < E; ++j) s.a[j] = j < s.cnt ? a[s.row_a + s.i0 + j] : T(0);
#pragma unroll
    for (int j = 0; j <= E; ++j) {
        long long idx = s.i0 - 1 + j;
        s.kk[j] = (idx >= 0 && idx <= n - 2) ? b[s.row_b + idx] * c[s.row_b + idx] : T(0);
    }
    return s;
}

// The thread's forward aggregate T_{i0+cnt-1} ... T_{i0} and backward aggregate S_{i0} ... S_{i0+cnt-1}.
template <typename T, int E>
__device__ __forceinline__ void local_aggregates(const Slice<T, E>& s, cpx<T> z, Mat2<T>& fwd, Mat2<T>& bwd) {
    fwd = mat_identity<T>();
    bwd = mat_identity<T>();
#pragma unroll
    for (int j = 0; j < E; ++j)
        if (j < s.cnt) fwd = transfer(mk(s.a[j] - z.re, -z.im), s.kk[j], fwd);
#pragma unroll
    for (int j = E - 1; j >= 0; --j)
        if (j < s.cnt) bwd = transfer(mk(s.a[j] - z.re, -z.im), s.kk[j + 1], bwd);
}

// Exclusive Möbius prefixes of the thread applied to the chunk seeds: the forward state at i0 and
// the backward state at i0 + E (see the conventions at the top). Also returns block totals.
template <typename T, int E>
__device__ __forceinline__ void mobius_states(const Slice<T, E>& s, cpx<T> z, const Vec2<T>* seed_f,
                                              const Vec2<T>* seed_b, Mat2<T>* smem, Vec2<T>& st_f,
                                              Vec2<T>& st_b, Mat2<T>& tot_f, Mat2<T>& tot_b) {
    Mat2<T> fwd, bwd;
    local_aggregates(s, z, fwd, bwd);
    Mat2<T> ex_f = block_scan_exclusive<MatOp<T>>(fwd, false, smem, tot_f);
    Mat2<T> ex_b = block_scan_exclusive<MatOp<T>>(bwd, true, smem, tot_b);
    const long long slot = (long long)blockIdx.y * gridDim.x + blockIdx.x;
    const Vec2<T> unit = {mk<T>(1, 0), mk<T>(0, 0)};
    st_f = mat_apply(ex_f, seed_f ? seed_f[slot] : unit);
    st_b = mat_apply(ex_b, seed_b ? seed_b[slot] : unit);
}

template <typename T>
__device__ __forceinline__ Vec2<T> seed_apply(Mat2<T> m, Vec2<T> v) { return mat_apply(m, v); }
template <typename T>
__device__ __forceinline__ cpx<T> seed_apply(Affine<T> f, cpx<T> y) { return affine_apply(f, y); }

// One CTA per row (blockIdx.x): each chunk's entry state from the per-chunk aggregates. Forward:
// the exclusive prefix of agg_f applied to `init`; backward: the exclusive suffix of agg_b applied
// to `init`, i.e. the state just past the chunk's last element. Threads own consecutive runs of
// chunks, so any number of chunks works.
template <typename Op, typename State>
__device__ void chunk_seeds(const typename Op::V* agg_f, const typename Op::V* agg_b, int chunks, State init,
                            State* seed_f, State* seed_b, typename Op::V* smem) {
    using V = typename Op::V;
    const long long base = (long long)blockIdx.x * chunks;
    agg_f += base;
    agg_b += base;
    seed_f += base;
    seed_b += base;
    const int per = (chunks + blockDim.x - 1) / blockDim.x;
    const int c0 = min(chunks, (int)threadIdx.x * per), c1 = min(chunks, c0 + per);
    V f = Op::identity(), bk = Op::identity(), tot;
    for (int ch = c0; ch < c1; ++ch) f = Op::op(f, agg_f[ch]);
    for (int ch = c1 - 1; ch >= c0; --ch) bk = Op::op(bk, agg_b[ch]);
    V ex_f = block_scan_exclusive<Op>(f, false, smem, tot);
    V ex_b = block_scan_exclusive<Op>(bk, true, smem, tot);
    State v = seed_apply(ex_f, init);
    for (int ch = c0; ch < c1; ++ch) {
        seed_f[ch] = v;
        v = seed_apply(agg_f[ch], v);
    }
    v = seed_apply(ex_b, init);
    for (int ch = c1 - 1; ch >= c0; --ch) {
        seed_b[ch] = v;
        v = seed_apply(agg_b[ch], v);
    }
}

// Sum of one complex value per thread over the block; the result is valid in thread 0.
template <typename T>
__device__ cpx<T> block_sum(cpx<T> v, cpx<T>* smem) {
#pragma unroll
    for (int d = 16; d > 0; d >>= 1) v = v + shfl(v, d, false);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    if (lane == 0) smem[warp] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < nwarps; ++w) v = v + smem[w];
    }
    __syncthreads();
    return v;
}
