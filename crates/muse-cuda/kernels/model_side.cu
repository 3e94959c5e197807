// The Phase 8 side branch on the device (design model.md §3.9): the AR-SSM fusion that the original
// computes and discards, run only for FLOP and time parity. Mirrored from reference/src/model/side.rs;
// the GEMMs (B, C) run in cuBLAS. Launchers: ../src/model_side.rs.
//
// Exported:
//   model_side_rank_gating(x, rows, dim, l1w, l1b, l2w, l2b, w)   one warp per row: the rank weight
//   model_side_scan(u, w, a, h, batch, n, s)                     one CTA per sequence: the recurrence
//   model_side_finish(y, x, bias, d, rows, dim)                  y <- x + ((y + bias) + d * x)
#include "include/model_common.cuh"

#define MODEL_SIDE_THREADS 256
#define MODEL_SIDE_WARPS 8
#define MODEL_SIDE_HIDDEN 32
#define MODEL_SIDE_MAX_S 1024

// w = sigmoid(L2(ReLU(L1(d / (0.7 + 1e-6))))), d = 2 atanh(min(min(|x|, 1 - 1e-6), 1 - 1e-6)) (c = 1).
extern "C" __global__ void __launch_bounds__(MODEL_SIDE_THREADS) model_side_rank_gating(const float* x, int rows, int dim, const float* l1w, const float* l1b, const float* l2w, float l2b, float* w) {
    const int row = blockIdx.x * MODEL_SIDE_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float* xr = x + (long long)row * dim;
    float s = 0.0f;
    for (int e = lane; e < dim; e += 32) s += xr[e] * xr[e];
    const float eps = 1e-6f;
    const float rho = fminf(sqrtf(warp_sum_f(s)), 1.0f - eps);
    const float dn = 2.0f * atanhf(fminf(rho, 1.0f - eps)) / (0.7f + eps);
    // lane j holds hidden unit j (MODEL_SIDE_HIDDEN = 32).
    const float hid = fmaxf(dn * l1w[lane] + l1b[lane], 0.0f);
    const float z = warp_sum_f(hid * l2w[lane]) + l2b;
    if (lane == 0) w[row] = 1.0f / (1.0f + expf(-z));
}

// h_t = A h_{t-1} + w_t u_t (h_{-1} = 0), A (s, s) row-major, u and h (batch, n, s), w (batch, n).
// One CTA per sequence, thread i owns h_i; the state lives in shared memory between steps.
extern "C" __global__ void model_side_scan(const float* u, const float* w, const float* a, float* h, int batch, int n, int s) {
    __shared__ float st[MODEL_SIDE_MAX_S];
    const int b = blockIdx.x, i = threadIdx.x;
    if (b >= batch) return;
    if (i < s) st[i] = 0.0f;
    __syncthreads();
    for (int t = 0; t < n; ++t) {
        float acc = 0.0f;
        if (i < s) {
            const float* ar = a + (long long)i * s;
            for (int j = 0; j < s; ++j) acc += st[j] * ar[j];
        }
        __syncthreads();
        if (i < s) {
            const long long at = ((long long)b * n + t) * s + i;
            const float v = acc + u[at] * w[(long long)b * n + t];
            st[i] = v;
            h[at] = v;
        }
        __syncthreads();
    }
}

// y (rows, dim) holds C h: y <- x + ((y + b_C) + d * x), the side branch's output x + fusion(x).
extern "C" __global__ void model_side_finish(float* y, const float* x, const float* bias, const float* d, long long rows, int dim) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * dim) return;
    const float xv = x[i];
    const int e = (int)(i % dim);
    y[i] = xv + ((y[i] + bias[e]) + d[e] * xv);
}
