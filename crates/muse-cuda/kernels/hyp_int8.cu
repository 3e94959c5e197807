// INT8 hyperbolic distance matrix (design hyperbolic.md §8.1): d[b,h,i,j] = d(exp0 x_i, exp0 y_j)
// for tangent x (B,H,N,D), y (B,H,M,D), with the angular term from per-row symmetric INT8 unit
// directions and exact int32 dot products (dp4a), and the radial terms from f32 norms. Launchers:
// ../src/hyp_int8.rs; CPU reference: reference/src/hyp_int8/.
//
// hyp_int8_rows(x, rows, dim, words, s, codes, stats): one warp per row: r = |x|, u = x / r,
//   sigma = max|u_k| / 127 (1 for a zero row), q = clamp(rint(u / sigma), -127, 127) written as
//   int8 into `words` 32-bit words per row (zero padded), stats = (sigma, a = min(s r, 15),
//   sinh 2a, 0).
// hyp_int8_pairs(xq, yq, sx, sy, d, n, m, words, inv_s): one CTA per (64 x 64 tile, b*h), 256
//   threads with 4 x 4 outputs each; acc = sum dp4a over the words (slices of HYP_INT8_BKW words
//   through shared memory), 1 - C = 1 - sigma_i sigma_j acc (in double), z = 2 sinh^2(a - b) +
//   sinh 2a sinh 2b (1 - C), d = acosh1p(z) / s.
#define HYP_INT8_THREADS 256
#define HYP_INT8_ROW_WARPS 8
#define HYP_INT8_BM 64
#define HYP_INT8_BKW 8
#define HYP_INT8_STATS 4

__device__ __forceinline__ float i8_warp_sum(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
__device__ __forceinline__ float i8_warp_max(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

extern "C" __global__ void __launch_bounds__(HYP_INT8_THREADS) hyp_int8_rows(const float* x, long long rows, int dim, int words, float s, signed char* codes, float* stats) {
    const long long row = (long long)blockIdx.x * HYP_INT8_ROW_WARPS + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float* xr = x + row * dim;
    float ss = 0.0f;
    for (int e = lane; e < dim; e += 32) ss += xr[e] * xr[e];
    const float r = sqrtf(i8_warp_sum(ss));
    float amax = 0.0f;
    for (int e = lane; e < dim; e += 32) amax = fmaxf(amax, fabsf(xr[e]));
    amax = i8_warp_max(amax);
    // max|u| = max|x| / r; sigma = max|u| / 127
    const float sigma = (r > 0.0f && amax > 0.0f) ? (amax / r) / 127.0f : 1.0f;
    signed char* out = codes + row * (long long)words * 4;
    for (int e = lane; e < words * 4; e += 32) {
        float q = 0.0f;
        if (e < dim && r > 0.0f) q = fminf(fmaxf(rintf((xr[e] / r) / sigma), -127.0f), 127.0f);
        out[e] = (signed char)q;
    }
    if (lane == 0) {
        const float a = fminf(s * r, 15.0f);
        float* st = stats + row * HYP_INT8_STATS;
        st[0] = sigma;
        st[1] = a;
        st[2] = sinhf(2.0f * a);
        st[3] = 0.0f;
    }
}

__device__ __forceinline__ float i8_acosh1p(float z) {
    z = fmaxf(z, 0.0f);
    return z > 1e18f ? 0.69314718f + log1pf(z) : log1pf(z + sqrtf(z * (z + 2.0f)));
}

extern "C" __global__ void __launch_bounds__(HYP_INT8_THREADS) hyp_int8_pairs(const int* xq, const int* yq, const float* sx, const float* sy, float* d, int n, int m, int words, float inv_s) {
    __shared__ int xs[HYP_INT8_BKW][HYP_INT8_BM];
    __shared__ int ys[HYP_INT8_BKW][HYP_INT8_BM];
    const int bh = blockIdx.z, i0 = blockIdx.y * HYP_INT8_BM, j0 = blockIdx.x * HYP_INT8_BM;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;  // 16 x 16 threads, 4 x 4 outputs each
    const int* xb = xq + (long long)bh * n * words;
    const int* yb = yq + (long long)bh * m * words;
    int acc[4][4];
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int b = 0; b < 4; ++b) acc[a][b] = 0;
    for (int w0 = 0; w0 < words; w0 += HYP_INT8_BKW) {
        // 64 rows x 8 words of each side: 512 words, two per thread and side
        for (int t = threadIdx.x; t < HYP_INT8_BM * HYP_INT8_BKW; t += HYP_INT8_THREADS) {
            const int r = t / HYP_INT8_BKW, w = t % HYP_INT8_BKW;
            const int gi = i0 + r, gj = j0 + r, gw = w0 + w;
            xs[w][r] = (gi < n && gw < words) ? xb[(long long)gi * words + gw] : 0;
            ys[w][r] = (gj < m && gw < words) ? yb[(long long)gj * words + gw] : 0;
        }
        __syncthreads();
#pragma unroll
        for (int w = 0; w < HYP_INT8_BKW; ++w) {
            int xv[4], yv[4];
#pragma unroll
            for (int a = 0; a < 4; ++a) xv[a] = xs[w][ty + 16 * a];
#pragma unroll
            for (int b = 0; b < 4; ++b) yv[b] = ys[w][tx + 16 * b];
#pragma unroll
            for (int a = 0; a < 4; ++a)
#pragma unroll
                for (int b = 0; b < 4; ++b) acc[a][b] = __dp4a(xv[a], yv[b], acc[a][b]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int a = 0; a < 4; ++a) {
        const int i = i0 + ty + 16 * a;
        if (i >= n) continue;
        const float* si = sx + ((long long)bh * n + i) * HYP_INT8_STATS;
#pragma unroll
        for (int b = 0; b < 4; ++b) {
            const int j = j0 + tx + 16 * b;
            if (j >= m) continue;
            const float* sj = sy + ((long long)bh * m + j) * HYP_INT8_STATS;
            // 1 - C in double: acc is exact, and near-parallel directions (C -> 1) would otherwise
            // lose 1 - C to the f32 rounding of sigma_i sigma_j acc (z ~ sinh 2a sinh 2b (1 - C)).
            const float omc = (float)(1.0 - (double)si[0] * (double)sj[0] * (double)acc[a][b]);
            const float sh = sinhf(si[1] - sj[1]);
            const float z = 2.0f * sh * sh + si[2] * sj[2] * omc;
            d[((long long)bh * n + i) * m + j] = i8_acosh1p(z) * inv_s;
        }
    }
}
