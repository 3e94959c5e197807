// Tangent-space linear attention (design hyperbolic.md §9): the masked product
// out_i = sum_{j in mask(i)} (A_i . B_j) C_j (reference/src/lin_attn/product.rs), chunked with
// C = LIN_ATTN_CHUNK rows, O(N) time and memory, parallel over chunks. The forward pass is one
// product with A = phi(q), B = phi(k), C = [v, 1] and o = num / max(den, eps); the three
// gradients are products of the same kind. Launchers: ../src/lin_attn.rs.
//
// Operands: rows at `stride`, `width` columns read; flags LIN_ATTN_PHI (apply phi = elu + 1 on
// read) and LIN_ATTN_AUG (a trailing column of ones). Direction: 0 causal (j <= i), 1 anti
// (j >= i), 2 full. One grid z index per (b, h); every pointer is offset by its head.
//
// 1. lin_attn_states_<T>: per (chunk, 64 x 64 block of P), P_c = sum_{j in c} B_j^T C_j (a ones
//    column of B or C adds P's last row / column as plain column sums, not as one more tile).
// 2. lin_attn_prefix_<T>: per state element, the exclusive prefix (causal) or suffix (anti) over
//    chunks in place, or (full) the total into chunk 0.
// 3. lin_attn_output_<T>: per (chunk, 64 output columns): S = mask(A_c B_c^T) (64 x 64, in
//    shared memory), out = S C_c + A_c P_c (skipped S for full), 4 x 4 outputs per thread, k-loops
//    in slices of KT rows through shared memory. When C has the ones column, the kernel also
//    forms den = S 1 + A_c z_c (z = that column of the state), writes out / max(den, eps) and den.
//    `mul` (nullable) multiplies the output by phi'(mul) elementwise (the gradients' chain rule).
// The backward's G comes from lin_attn_bwd.cu.
//
// Exported (T = float for _f32 with KT = 16, double for _f64 with KT = 8):
//   lin_attn_states_f32(const T* b, int b_stride, int b_width, int b_flags, const T* c,
//       int c_stride, int c_width, int c_flags, T* state, long long n)
//   lin_attn_prefix_f32(T* state, int chunks, int size, int dir)
//   lin_attn_output_f32(const T* a, int a_stride, int a_width, int a_flags, const T* b,
//       int b_stride, int b_width, int b_flags, const T* c, int c_stride, int c_width, int c_flags,
//       const T* state, T* out, int out_stride, const T* mul, int mul_stride, T* den, T eps,
//       long long n, int dir)
// Grids: states (ceil(b_width/64) * ceil(c_width/64), chunks, heads); prefix (ceil(size/256), heads);
// output (ceil(c_width/64), chunks, heads). da = B's width (+1 with the
// ones column), dc = C's; the state holds heads x chunks x da x dc values, size = da dc.
#include "include/poincare.cuh"

#define LIN_ATTN_CHUNK 64
#define LIN_ATTN_THREADS 256
#define LIN_ATTN_TILE 64
#define LIN_ATTN_KT_F32 16
#define LIN_ATTN_KT_F64 8
#define LIN_ATTN_PHI 1
#define LIN_ATTN_AUG 2

#define CH LIN_ATTN_CHUNK
#define TL LIN_ATTN_TILE
#define PADW (TL + 4)

// One operand of the product, already offset to its head.
template <typename T> struct Op {
    const T* p;
    int stride, width, flags;
    __device__ __forceinline__ int wide() const { return width + ((flags & LIN_ATTN_AUG) ? 1 : 0); }
    // Value (row, col) as the product sees it; 0 outside [0, n) x [0, wide).
    __device__ __forceinline__ T at(long long row, long long n, int col) const {
        if (row >= n) return T(0);
        if (col < width) {
            const T v = __ldg(p + row * stride + col);
            return (flags & LIN_ATTN_PHI) ? (v > T(0) ? v + T(1) : Num<T>::exp_(v)) : v;
        }
        return (col == width && (flags & LIN_ATTN_AUG)) ? T(1) : T(0);
    }
};

template <typename T> __device__ __forceinline__ Op<T> op_at(const T* p, int stride, int width, int flags, long long head, long long n) {
    Op<T> o;
    o.p = p + head * n * stride;
    o.stride = stride;
    o.width = width;
    o.flags = flags;
    return o;
}

__device__ __forceinline__ bool sees(int dir, int i, int j) { return dir == 0 ? j <= i : (dir == 1 ? j >= i : true); }

// acc[4][4] += X^T[k][rows] Y[k][cols] over one KT slice in shared memory (both k-major).
template <typename T, int KT>
__device__ __forceinline__ void mma_slice(const T (*xs)[PADW], const T (*ys)[PADW], int ty, int tx, T (&acc)[4][4]) {
#pragma unroll
    for (int kk = 0; kk < KT; ++kk) {
        T a[4], b[4];
#pragma unroll
        for (int t = 0; t < 4; ++t) {
            a[t] = xs[kk][ty * 4 + t];
            b[t] = ys[kk][tx * 4 + t];
        }
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
}

template <typename T, int KT>
__device__ void states(Op<T> b, Op<T> c, T* __restrict__ state, long long n) {
    __shared__ __align__(16) T bs[KT][PADW];
    __shared__ __align__(16) T cs[KT][PADW];
    const long long head = blockIdx.z;
    b.p += head * n * b.stride;
    c.p += head * n * c.stride;
    const int da = b.wide(), dc = c.wide();
    // Tiles cover the real columns; a ones column of C (resp. B) makes P's last column
    // z = sum_j B_j (resp. last row sum_j C_j), summed by the CTAs of the first column (row) tile.
    const bool aug_b = (b.flags & LIN_ATTN_AUG) != 0, aug_c = (c.flags & LIN_ATTN_AUG) != 0;
    const int tiles_e = (c.width + TL - 1) / TL;
    const int a0 = (blockIdx.x / tiles_e) * TL, e0 = (blockIdx.x % tiles_e) * TL;
    const long long row0 = (long long)blockIdx.y * CH;
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const bool col_sums = aug_c && e0 == 0 && tid < TL;           // z[a0 + tid]
    const bool row_sums = aug_b && a0 == 0 && tid >= TL && tid < 2 * TL;  // sum_j C_j[e0 + tid - TL]
    T acc[4][4] = {};
    T extra = T(0);
    for (int k0 = 0; k0 < CH; k0 += KT) {
        for (int t = tid; t < KT * TL; t += LIN_ATTN_THREADS) {
            const int kk = t / TL, col = t % TL;
            bs[kk][col] = a0 + col < b.width ? b.at(row0 + k0 + kk, n, a0 + col) : T(0);
            cs[kk][col] = e0 + col < c.width ? c.at(row0 + k0 + kk, n, e0 + col) : T(0);
        }
        __syncthreads();
        mma_slice<T, KT>(bs, cs, ty, tx, acc);
        if (col_sums) {
#pragma unroll
            for (int kk = 0; kk < KT; ++kk) extra += bs[kk][tid];
        } else if (row_sums) {
#pragma unroll
            for (int kk = 0; kk < KT; ++kk) extra += cs[kk][tid - TL];
        }
        __syncthreads();
    }
    T* st = state + (head * gridDim.y + blockIdx.y) * (long long)da * dc;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int a = a0 + ty * 4 + i;
        if (a >= b.width) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int e = e0 + tx * 4 + j;
            if (e < c.width) st[(long long)a * dc + e] = acc[i][j];
        }
    }
    if (col_sums && a0 + tid < b.width) st[(long long)(a0 + tid) * dc + c.width] = extra;
    if (row_sums && e0 + tid - TL < c.width) st[(long long)b.width * dc + e0 + tid - TL] = extra;
    if (aug_b && aug_c && blockIdx.x == 0 && tid == 2 * TL) {
        // The corner: the number of rows of the chunk.
        st[(long long)b.width * dc + c.width] = T(min((long long)CH, n - row0));
    }
}

template <typename T> __device__ void prefix(T* __restrict__ state, int chunks, int size, int dir) {
    const int t = blockIdx.x * LIN_ATTN_THREADS + threadIdx.x;
    if (t >= size) return;
    T* st = state + (long long)blockIdx.y * chunks * size + t;
    T run = T(0);
    if (dir == 2) {
        for (int c = 0; c < chunks; ++c) run += st[(long long)c * size];
        st[0] = run;
        return;
    }
    // Loads of 16 chunks are issued before their adds, so the latency of the chain is paid once
    // per 16 chunks.
    for (int c0 = 0; c0 < chunks; c0 += 16) {
        T v[16];
#pragma unroll
        for (int u = 0; u < 16; ++u) {
            const int c = dir == 0 ? c0 + u : chunks - 1 - (c0 + u);
            v[u] = c0 + u < chunks ? st[(long long)c * size] : T(0);
        }
#pragma unroll
        for (int u = 0; u < 16; ++u) {
            if (c0 + u < chunks) {
                const int c = dir == 0 ? c0 + u : chunks - 1 - (c0 + u);
                st[(long long)c * size] = run;
                run += v[u];
            }
        }
    }
}

template <typename T, int KT>
__device__ void output(Op<T> a, Op<T> b, Op<T> c, const T* __restrict__ state, T* __restrict__ out, int out_stride,
                       const T* __restrict__ mul, int mul_stride, T* __restrict__ den_out, T eps, long long n, int dir) {
    __shared__ __align__(16) T xs[KT][PADW];
    __shared__ __align__(16) T ys[KT][PADW];
    __shared__ __align__(16) T ss[CH][PADW];  // masked scores, k-major: ss[j][i] = A_i . B_j
    __shared__ T den_s[CH];
    const long long head = blockIdx.z;
    a.p += head * n * a.stride;
    b.p += head * n * b.stride;
    c.p += head * n * c.stride;
    const int da = a.wide(), dc = c.wide();
    const bool norm = (c.flags & LIN_ATTN_AUG) != 0;
    const int e0 = blockIdx.x * TL;
    const long long row0 = (long long)blockIdx.y * CH;
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const T* st = state + (head * gridDim.y + (dir == 2 ? 0 : blockIdx.y)) * (long long)da * dc;
    if (tid < CH) den_s[tid] = T(0);
    T acc[4][4] = {};
    if (dir != 2) {
        // Scores A_c B_c^T over the contraction in slices of KT.
        T sc[4][4] = {};
        for (int k0 = 0; k0 < da; k0 += KT) {
            for (int t = tid; t < KT * CH; t += LIN_ATTN_THREADS) {
                const int r = t / KT, kk = t % KT;
                const bool in = k0 + kk < da;
                xs[kk][r] = in ? a.at(row0 + r, n, k0 + kk) : T(0);
                ys[kk][r] = in ? b.at(row0 + r, n, k0 + kk) : T(0);
            }
            __syncthreads();
            mma_slice<T, KT>(xs, ys, ty, tx, sc);
            __syncthreads();
        }
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int il = ty * 4 + i, jl = tx * 4 + j;
                ss[jl][il] = sees(dir, il, jl) ? sc[i][j] : T(0);
            }
        __syncthreads();
        if (norm && tid < CH) {
            T s = T(0);
            for (int j = 0; j < CH; ++j) s += ss[j][tid];
            den_s[tid] = s;
        }
        // out += S C_c over the chunk's rows j, in slices of KT.
        for (int j0 = 0; j0 < CH; j0 += KT) {
            for (int t = tid; t < KT * TL; t += LIN_ATTN_THREADS) {
                const int kk = t / TL, col = t % TL;
                ys[kk][col] = e0 + col < c.width ? c.at(row0 + j0 + kk, n, e0 + col) : T(0);
            }
            __syncthreads();
            mma_slice<T, KT>(reinterpret_cast<const T(*)[PADW]>(&ss[j0][0]), ys, ty, tx, acc);
            __syncthreads();
        }
    }
    // out += A_c P_c over the contraction in slices of KT; den += A_c z_c.
    for (int k0 = 0; k0 < da; k0 += KT) {
        for (int t = tid; t < KT * CH; t += LIN_ATTN_THREADS) {
            const int r = t / KT, kk = t % KT;
            xs[kk][r] = k0 + kk < da ? a.at(row0 + r, n, k0 + kk) : T(0);
        }
        for (int t = tid; t < KT * TL; t += LIN_ATTN_THREADS) {
            const int kk = t / TL, col = t % TL;
            ys[kk][col] = (k0 + kk < da && e0 + col < c.width) ? st[(long long)(k0 + kk) * dc + e0 + col] : T(0);
        }
        __syncthreads();
        mma_slice<T, KT>(xs, ys, ty, tx, acc);
        if (norm && tid < CH) {
            T s = den_s[tid];
            for (int kk = 0; kk < KT && k0 + kk < da; ++kk) s += xs[kk][tid] * st[(long long)(k0 + kk) * dc + c.width];
            den_s[tid] = s;
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int il = ty * 4 + i;
        const long long row = row0 + il;
        if (row >= n) continue;
        const T m = norm ? fmax(den_s[il], eps) : T(1);
        if (norm && blockIdx.x == 0 && tx == 0) den_out[head * n + row] = den_s[il];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int e = e0 + tx * 4 + j;
            if (e >= c.width) continue;
            T v = norm ? acc[i][j] / m : acc[i][j];
            if (mul) {
                const T x = __ldg(mul + (head * n + row) * mul_stride + e);
                v *= x > T(0) ? T(1) : Num<T>::exp_(x);
            }
            out[(head * n + row) * out_stride + e] = v;
        }
    }
}

// Exported wrappers, one per dtype.
#define LIN_ATTN_OP_ARGS(T, x) const T *x, int x##_stride, int x##_width, int x##_flags
#define LIN_ATTN_OP(x) op_at(x, x##_stride, x##_width, x##_flags, 0, 0)

extern "C" __global__ void __launch_bounds__(LIN_ATTN_THREADS) lin_attn_states_f32(LIN_ATTN_OP_ARGS(float, b), LIN_ATTN_OP_ARGS(float, c), float* state, long long n) {
    states<float, LIN_ATTN_KT_F32>(LIN_ATTN_OP(b), LIN_ATTN_OP(c), state, n);
}
extern "C" __global__ void __launch_bounds__(LIN_ATTN_THREADS) lin_attn_states_f64(LIN_ATTN_OP_ARGS(double, b), LIN_ATTN_OP_ARGS(double, c), double* state, long long n) {
    states<double, LIN_ATTN_KT_F64>(LIN_ATTN_OP(b), LIN_ATTN_OP(c), state, n);
}
extern "C" __global__ void __launch_bounds__(LIN_ATTN_THREADS) lin_attn_prefix_f32(float* state, int chunks, int size, int dir) {
    prefix<float>(state, chunks, size, dir);
}
extern "C" __global__ void __launch_bounds__(LIN_ATTN_THREADS) lin_attn_prefix_f64(double* state, int chunks, int size, int dir) {
    prefix<double>(state, chunks, size, dir);
}
extern "C" __global__ void __launch_bounds__(LIN_ATTN_THREADS) lin_attn_output_f32(LIN_ATTN_OP_ARGS(float, a), LIN_ATTN_OP_ARGS(float, b), LIN_ATTN_OP_ARGS(float, c), const float* state, float* out, int out_stride, const float* mul, int mul_stride, float* den, float eps, long long n, int dir) {
    output<float, LIN_ATTN_KT_F32>(LIN_ATTN_OP(a), LIN_ATTN_OP(b), LIN_ATTN_OP(c), state, out, out_stride, mul, mul_stride, den, eps, n, dir);
}
extern "C" __global__ void __launch_bounds__(LIN_ATTN_THREADS) lin_attn_output_f64(LIN_ATTN_OP_ARGS(double, a), LIN_ATTN_OP_ARGS(double, b), LIN_ATTN_OP_ARGS(double, c), const double* state, double* out, int out_stride, const double* mul, int mul_stride, double* den, double eps, long long n, int dir) {
    output<double, LIN_ATTN_KT_F64>(LIN_ATTN_OP(a), LIN_ATTN_OP(b), LIN_ATTN_OP(c), state, out, out_stride, mul, mul_stride, den, eps, n, dir);
}
