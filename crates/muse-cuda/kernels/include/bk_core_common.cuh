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
// Reciprocal. f32: the hardware approximation (MUFU.RCP, at most 1 ulp off, subnormals flushed)
// with no slow path, so no branch in the recurrences' dependency chains; f64: correctly rounded.
__device__ __forceinline__ float rcp(float x) {
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}
__device__ __forceinline__ double rcp(double x) { return __drcp_rn(x); }

// x / y as x * conj(y) * (1/|y|^2): the formula of the CPU reference (num-complex), so both
// overflow and underflow alike, with one reciprocal instead of two divisions.
template <typename T>
__device__ __forceinline__ cpx<T> cdiv(cpx<T> x, cpx<T> y) {
    T inv = rcp(y.re * y.re + y.im * y.im);
    return {(x.re * y.re + x.im * y.im) * inv, (x.im * y.re - x.re * y.im) * inv};
}
template <typename T>
__device__ __forceinline__ cpx<T> cdiv(T x, cpx<T> y) {
    T inv = x * rcp(y.re * y.re + y.im * y.im);
    return {y.re * inv, -y.im * inv};
}
template <typename T>
__device__ __forceinline__ cpx<T> crcp(cpx<T> y) { return cdiv(T(1), y); }

// One 8-byte (16-byte) access per complex value instead of two: interleaved [re, im] arrays from
// cudaMalloc are always aligned to it.
__device__ __forceinline__ void store(cpx<float>* p, cpx<float> v) { *reinterpret_cast<float2*>(p) = make_float2(v.re, v.im); }
__device__ __forceinline__ void store(cpx<double>* p, cpx<double> v) { *reinterpret_cast<double2*>(p) = make_double2(v.re, v.im); }
__device__ __forceinline__ cpx<float> load(const cpx<float>* p) {
    const float2 v = __ldg(reinterpret_cast<const float2*>(p));
    return {v.x, v.y};
}
__device__ __forceinline__ cpx<double> load(const cpx<double>* p) {
    const double2 v = __ldg(reinterpret_cast<const double2*>(p));
    return {v.x, v.y};
}

// |x| as ordered integer bits: for non-negative floats, integer order is numeric order, so the
// largest magnitude is an integer max and its exponent a shift, with no float compare.
__device__ __forceinline__ int abits(float x) { return __float_as_int(x) & 0x7fffffff; }
__device__ __forceinline__ long long abits(double x) { return __double_as_longlong(x) & 0x7fffffffffffffffLL; }

// 2^-e for the magnitude whose bits are `m` (m = 1.x * 2^e): scaling by it is exact and brings m
// into [1, 2). Zero and subnormal m get 2^127 (2^1023), inf/NaN a tiny scale; both harmless.
__device__ __forceinline__ float pow2_scale(int m) {
    int e = min(m >> 23, 253);
    return __int_as_float((254 - e) << 23);
}
__device__ __forceinline__ double pow2_scale(long long m) {
    long long e = min(m >> 52, 2045LL);
    return __longlong_as_double((2046LL - e) << 52);
}

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
__device__ __forceinline__ auto amax(cpx<T> x) { return max(abits(x.re), abits(x.im)); }

template <typename T>
__device__ __forceinline__ Mat2<T> normalise(Mat2<T> m) {
    T s = pow2_scale(max(max(amax(m.m00), amax(m.m01)), max(amax(m.m10), amax(m.m11))));
    return {s * m.m00, s * m.m01, s * m.m10, s * m.m11};
}

// y * x, normalised.
template <typename T>
__device__ __forceinline__ Mat2<T> mat_mul(Mat2<T> y, Mat2<T> x) {
    Mat2<T> r = {y.m00 * x.m00 + y.m01 * x.m10, y.m00 * x.m01 + y.m01 * x.m11,
                 y.m10 * x.m00 + y.m11 * x.m10, y.m10 * x.m01 + y.m11 * x.m11};
    return normalise(r);
}

// [[alpha, -k], [1, 0]] * x: the transfer step of both directions, not normalised (callers
// normalise every second step; two steps grow entries by at most (|alpha| + |k|)^2, far inside
// the range wherever the f32 ratio recursion itself stays finite).
template <typename T>
__device__ __forceinline__ Mat2<T> transfer(cpx<T> alpha, T k, Mat2<T> x) {
    return {alpha * x.m00 - k * x.m10, alpha * x.m01 - k * x.m11, x.m00, x.m01};
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

// Two block-wide exclusive scans at once under Op (op(acc, x): acc first, then x): `xf` in thread
// order and `xb` from the last thread to the first. Interleaving the two independent chains
// halves the latency of running them one after the other. blockDim.x must be a multiple of 32;
// `smem` holds 2 * (MAX_WARPS + 1) values. Sets the exclusive prefixes (in each scan's order) and
// both block totals. Every thread must call it.
template <typename Op>
__device__ void block_scan_pair(typename Op::V xf, typename Op::V xb, typename Op::V* smem, typename Op::V& exf,
                                typename Op::V& exb, typename Op::V& totf, typename Op::V& totb) {
    using V = typename Op::V;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    V* sf = smem;
    V* sb = smem + MAX_WARPS + 1;
    V incf = xf, incb = xb;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
        const V yf = shfl(incf, d, true);   // d lanes earlier in thread order
        const V yb = shfl(incb, d, false);  // d lanes later, i.e. earlier in reverse order
        if (lane >= d) incf = Op::op(yf, incf);
        if (31 - lane >= d) incb = Op::op(yb, incb);
    }
    if (lane == 31) sf[warp] = incf;
    if (lane == 0) sb[nwarps - 1 - warp] = incb;  // indexed in reverse (scan) order
    __syncthreads();
    if (warp == 0) {
        V wf = lane < nwarps ? sf[lane] : Op::identity();
        V wb = lane < nwarps ? sb[lane] : Op::identity();
        for (int d = 1; d < nwarps; d <<= 1) {
            const V yf = shfl(wf, d, true);
            const V yb = shfl(wb, d, true);
            if (lane >= d) {
                wf = Op::op(yf, wf);
                wb = Op::op(yb, wb);
            }
        }
        const V pf = shfl(wf, 1, true), pb = shfl(wb, 1, true);
        __syncwarp();
        if (lane < nwarps) {
            sf[lane] = lane == 0 ? Op::identity() : pf;
            sb[lane] = lane == 0 ? Op::identity() : pb;
        }
        if (lane == nwarps - 1) {
            sf[MAX_WARPS] = wf;
            sb[MAX_WARPS] = wb;
        }
    }
    __syncthreads();
    const V wpf = sf[warp], wpb = sb[nwarps - 1 - warp];
    totf = sf[MAX_WARPS];
    totb = sb[MAX_WARPS];
    const V pf = shfl(incf, 1, true), pb = shfl(incb, 1, false);
    exf = Op::op(wpf, lane == 0 ? Op::identity() : pf);
    exb = Op::op(wpb, lane == 31 ? Op::identity() : pb);
    __syncthreads();  // the caller may reuse smem for its next scan
}

// Seed states carried between chunks of a long row: a projective vector for the Möbius scans,
// a value for the affine scans.
template <typename T>
struct Vec2 {
    cpx<T> v0, v1;
};

template <typename T>
__device__ __forceinline__ Vec2<T> vec_normalise(Vec2<T> v) {
    T s = pow2_scale(max(amax(v.v0), amax(v.v1)));
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

// Loads use clamped, always-valid indices and no branches, so all of them issue back to back
// before the first use (bounds-checked loads were issued one latency at a time); elements outside
// the row are zeroed afterwards.
template <typename T, int E>
__device__ __forceinline__ Slice<T, E> load_slice(const T* __restrict__ a, const T* __restrict__ b,
                                                  const T* __restrict__ c, long long n, int chunk_len) {
    Slice<T, E> s;
    const long long row = blockIdx.y;
    s.row_a = row * n;
    s.row_b = row * (n - 1);
    s.i0 = (long long)blockIdx.x * chunk_len + (long long)threadIdx.x * E;
    const long long left = n - s.i0;
    s.cnt = left <= 0 ? 0 : (left >= E ? E : (int)left);
    const long long last_b = n >= 2 ? n - 2 : 0;  // b, c hold at least one (dummy) element
    T bv[E + 1], cv[E + 1];
#pragma unroll
    for (int j = 0; j < E; ++j) s.a[j] = a[s.row_a + min(s.i0 + j, n - 1)];
#pragma unroll
    for (int j = 0; j <= E; ++j) {
        const long long idx = min(max(s.i0 - 1 + j, 0LL), last_b);
        bv[j] = b[s.row_b + idx];
        cv[j] = c[s.row_b + idx];
    }
#pragma unroll
    for (int j = 0; j < E; ++j) s.a[j] = j < s.cnt ? s.a[j] : T(0);
#pragma unroll
    for (int j = 0; j <= E; ++j) {
        const long long idx = s.i0 - 1 + j;
        s.kk[j] = (idx >= 0 && idx <= n - 2) ? bv[j] * cv[j] : T(0);
    }
    return s;
}

// The thread's forward aggregate T_{i0+cnt-1} ... T_{i0} and backward aggregate S_{i0} ... S_{i0+cnt-1}.
// FULL (cnt == E, every thread but the row's last) drops the per-element guards.
template <bool FULL, typename T, int E>
__device__ __forceinline__ void local_aggregates(const Slice<T, E>& s, cpx<T> z, Mat2<T>& fwd, Mat2<T>& bwd) {
    fwd = mat_identity<T>();
    bwd = mat_identity<T>();
#pragma unroll
    for (int j = 0; j < E; ++j) {
        if (FULL || j < s.cnt) fwd = transfer(mk(s.a[j] - z.re, -z.im), s.kk[j], fwd);
        if (j & 1) fwd = normalise(fwd);
    }
#pragma unroll
    for (int j = E - 1; j >= 0; --j) {
        if (FULL || j < s.cnt) bwd = transfer(mk(s.a[j] - z.re, -z.im), s.kk[j + 1], bwd);
        if ((E - 1 - j) & 1) bwd = normalise(bwd);
    }
    fwd = normalise(fwd);
    bwd = normalise(bwd);
}

template <typename T, int E>
__device__ __forceinline__ void local_aggregates(const Slice<T, E>& s, cpx<T> z, Mat2<T>& fwd, Mat2<T>& bwd) {
    if (s.cnt == E)
        local_aggregates<true>(s, z, fwd, bwd);
    else
        local_aggregates<false>(s, z, fwd, bwd);
}

// Exclusive Möbius prefixes of the thread applied to the chunk seeds: the forward state at i0 and
// the backward state at i0 + E (see the conventions at the top). Also returns block totals.
template <typename T, int E>
__device__ __forceinline__ void mobius_states(const Slice<T, E>& s, cpx<T> z, const Vec2<T>* seed_f,
                                              const Vec2<T>* seed_b, Mat2<T>* smem, Vec2<T>& st_f,
                                              Vec2<T>& st_b, Mat2<T>& tot_f, Mat2<T>& tot_b) {
    Mat2<T> fwd, bwd, ex_f, ex_b;
    local_aggregates(s, z, fwd, bwd);
    block_scan_pair<MatOp<T>>(fwd, bwd, smem, ex_f, ex_b, tot_f, tot_b);
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
    V f = Op::identity(), bk = Op::identity(), ex_f, ex_b, tot_f, tot_b;
    for (int ch = c0; ch < c1; ++ch) f = Op::op(f, agg_f[ch]);
    for (int ch = c1 - 1; ch >= c0; --ch) bk = Op::op(bk, agg_b[ch]);
    block_scan_pair<Op>(f, bk, smem, ex_f, ex_b, tot_f, tot_b);
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
