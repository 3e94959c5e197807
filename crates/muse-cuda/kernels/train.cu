// Training on the device (issue 9): the fused softmax cross-entropy (its gradient written over the
// logits, so one (B, N, V) array exists), deterministic reductions (fixed grids, fixed orders, no
// atomics), the global-norm clip fused into AdamW (decoupled weight decay, the CPU optimiser's
// formula, crates/muse-train/src/optim.rs) and the gather/scatter of parameters through a pointer
// table. Launchers: ../src/train.rs.
//
// Exported:
//   train_ce(logits, targets, row_loss, rows, vocab, vpad, scale)       one CTA per row
//   train_sum_partial(x, n, square, part)                                grid-stride, one slot per CTA
//   train_sum_final(part, n, stride, scale, out, accumulate)             out[0] (+)= scale*sum
//   train_col_sum_partial(x, rows, cols, chunk, part)                    grid (ceil(cols/32), parts)
//   train_col_sum_final(part, parts, cols, out, accumulate)
//   train_adamw(ptrs, offs, nt, g, m, v, total, sumsq, max_norm, lr, wd, b1, b2, eps, c1, c2)
//   train_gather(ptrs, offs, nt, flat, total, to_flat)
//   train_copy(src, dst, n)
#define TRAIN_THREADS 256
#define TRAIN_CE_THREADS 1024

__device__ __forceinline__ float warp_sum_t(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum of one value per thread of a TRAIN_THREADS block, in a fixed order; valid in thread 0.
__device__ float block_sum(float v) {
    __shared__ float part[TRAIN_THREADS / 32];
    v = warp_sum_t(v);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
    __syncthreads();
    float s = 0.0f;
    if (threadIdx.x == 0)
        for (int w = 0; w < TRAIN_THREADS / 32; ++w) s += part[w];
    __syncthreads();
    return s;
}

// Row r: lse = log sum_j exp(x_j) (max subtracted), row_loss = lse - x_t; then
// x_j <- (exp(x_j - lse) - [j = t])*scale for j < vocab and 0 in the padding columns. One CTA of
// TRAIN_CE_THREADS per row (a row of V = 50257 is ~50 values per thread).
extern "C" __global__ void __launch_bounds__(TRAIN_CE_THREADS) train_ce(float* logits, const int* targets, float* row_loss, int rows, int vocab, int vpad, float scale) {
    __shared__ float ms[TRAIN_CE_THREADS], ss[TRAIN_CE_THREADS];
    const int r = blockIdx.x;
    if (r >= rows) return;
    float* x = logits + (long long)r * vpad;
    float m = -INFINITY, s = 0.0f;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
        const float v = x[j];
        if (v > m) {
            s = s * expf(m - v) + 1.0f;
            m = v;
        } else {
            s += expf(v - m);
        }
    }
    ms[threadIdx.x] = m;
    ss[threadIdx.x] = s;
    __syncthreads();
    for (int w = TRAIN_CE_THREADS / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) {
            const float m1 = ms[threadIdx.x], m2 = ms[threadIdx.x + w];
            const float mm = fmaxf(m1, m2);
            const float a = m1 == -INFINITY ? 0.0f : ss[threadIdx.x] * expf(m1 - mm);
            const float b = m2 == -INFINITY ? 0.0f : ss[threadIdx.x + w] * expf(m2 - mm);
            ms[threadIdx.x] = mm;
            ss[threadIdx.x] = a + b;
        }
        __syncthreads();
    }
    const float lse = ms[0] + logf(ss[0]);
    const int t = targets[r];
    if (threadIdx.x == 0) row_loss[r] = lse - x[t];
    __syncthreads();  // x[t] read before it is overwritten
    for (int j = threadIdx.x; j < vpad; j += blockDim.x)
        x[j] = j < vocab ? (expf(x[j] - lse) - (j == t ? 1.0f : 0.0f)) * scale : 0.0f;
}

// part[blockIdx] = the block's sum of x (or x^2) over a grid-stride loop.
extern "C" __global__ void __launch_bounds__(TRAIN_THREADS) train_sum_partial(const float* x, long long n, int square, float* part) {
    float acc = 0.0f;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const float v = x[i];
        acc += square ? v * v : v;
    }
    const float s = block_sum(acc);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

// out[0] = (accumulate ? out[0] : 0) + scale * sum_k part[k*stride]. One CTA.
extern "C" __global__ void __launch_bounds__(TRAIN_THREADS) train_sum_final(const float* part, int n, int stride, float scale, float* out, int accumulate) {
    float acc = 0.0f;
    for (int k = threadIdx.x; k < n; k += blockDim.x) acc += part[(long long)k * stride];
    const float s = block_sum(acc);
    if (threadIdx.x == 0) out[0] = (accumulate ? out[0] : 0.0f) + scale * s;
}

// Column sums of x (rows, cols): CTA (bx, by) sums rows [by*chunk, (by + 1)*chunk) of 32 columns,
// 8 row lanes each, into part[by*cols + col].
extern "C" __global__ void __launch_bounds__(TRAIN_THREADS) train_col_sum_partial(const float* x, long long rows, int cols, long long chunk, float* part) {
    __shared__ float sh[8][33];
    const int cl = threadIdx.x & 31, rl = threadIdx.x >> 5;
    const int col = blockIdx.x * 32 + cl;
    const long long r0 = (long long)blockIdx.y * chunk;
    const long long r1 = min(r0 + chunk, rows);
    float acc = 0.0f;
    if (col < cols)
        for (long long r = r0 + rl; r < r1; r += 8) acc += x[r * cols + col];
    sh[rl][cl] = acc;
    __syncthreads();
    if (rl == 0 && col < cols) {
        float s = 0.0f;
        for (int q = 0; q < 8; ++q) s += sh[q][cl];
        part[(long long)blockIdx.y * cols + col] = s;
    }
}

extern "C" __global__ void train_col_sum_final(const float* part, int parts, int cols, float* out, int accumulate) {
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= cols) return;
    float s = 0.0f;
    for (int p = 0; p < parts; ++p) s += part[(long long)p * cols + col];
    out[col] = (accumulate ? out[col] : 0.0f) + s;
}

// The tensor j holding flat index i: offs[j] <= i < offs[j + 1] (offs has nt + 1 entries).
__device__ __forceinline__ int tensor_of(const long long* offs, int nt, long long i) {
    int lo = 0, hi = nt - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (offs[mid] <= i) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

// One AdamW step on every parameter (through the pointer table), the gradient first unscaled by
// gscale (1/S of a loss-scaled fp16 step, else 1), then clipped by min(1, max_norm/(gscale
// sqrt(sumsq) + 1e-6)) (max_norm <= 0: no clipping):
//   m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,  p -= lr wd p,  p -= lr (m/c1)/(sqrt(v/c2) + eps).
extern "C" __global__ void train_adamw(const unsigned long long* ptrs, const long long* offs, int nt, const float* g, float* m, float* v, long long total, const float* sumsq, float max_norm, float gscale, float lr, float wd, float b1, float b2, float eps, float c1, float c2) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    float clip = 1.0f;
    if (max_norm > 0.0f) clip = fminf(1.0f, max_norm / (gscale * sqrtf(sumsq[0]) + 1e-6f));
    const float gi = g[i] * gscale * clip;
    const float mi = b1 * m[i] + (1.0f - b1) * gi;
    const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const int j = tensor_of(offs, nt, i);
    float* p = (float*)ptrs[j] + (i - offs[j]);
    float pv = *p;
    pv -= lr * wd * pv;
    pv -= lr * (mi / c1) / (sqrtf(vi / c2) + eps);
    *p = pv;
}

// to_flat = 1: flat[i] <- tensor element i; 0: the inverse.
extern "C" __global__ void train_gather(const unsigned long long* ptrs, const long long* offs, int nt, float* flat, long long total, int to_flat) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const int j = tensor_of(offs, nt, i);
    float* p = (float*)ptrs[j] + (i - offs[j]);
    if (to_flat) flat[i] = *p;
    else *p = flat[i];
}

// dst[i] = src[i] (an ordered device copy on the stream, e.g. saving a block's input).
extern "C" __global__ void train_copy(const float* src, float* dst, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = src[i];
}
