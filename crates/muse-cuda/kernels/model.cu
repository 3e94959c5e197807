// The language model's non-GEMM layers on the device (the windowed attention: model_attn.cu) (design model.md §3), f32, mirrored from the
// CPU reference reference/src/model/ (same formulas, same order of operations where the result
// depends on it). The GEMMs run in cuBLAS; launchers and the forward: ../src/model.rs and
// ../src/model/. Every kernel is one thread per output element or one warp per row.
//
// Exported:
//   model_embed(ids, core1, core2, phase_cos, pos, h, rows, n, dim, r, d1, d2, v1, v2)
//   model_htt_table(core1, core2, phase_cos, table, vocab, vpad, dim, r, d1, d2, v1, v2)
//   model_layer_norm(x, g, b, y, rows, dim)
//   model_bk_prep_f32 / _f64(v, vb, h0d, h0sup, h0sub, a, b, c, batch, n, clamp)
//   model_gate_f32 / _f64(g, gs, gate, rows, round_c64)
//   model_ssm_conv(x, taps, t, batch, n, dim, causal)
//   model_bias_act(y, bias, res, rows, cols, act)
//   model_ssm_gate_uv(uv, g, ug, vg, rows, rank)
//   model_ssm_scan(ug, kv_in_vg, out, batch, n, rank, bs)
//   model_mix_ln_res(local, global, gate, g, b, h, rows, dim)
//   model_to_bf16(x, y, n)                           y = the bf16 bits of x (round to nearest even)
//   model_to_fp16(x, y, n)                           y = the fp16 bits of x (nearest even; inf past 65504)
#include "include/model_common.cuh"

#define MODEL_THREADS 256
#define MODEL_WARPS 8

// ---- embedding and decoder table -------------------------------------------------------------

// E[t, a*d2 + c] = sum_r (core1[i1, r, a] * cos theta_r) * core2[i2, r, c], i1 = min(t / v2, v1 - 1).
__device__ __forceinline__ float htt_entry(const float* core1, const float* core2, const float* phase_cos, int t,
                                           int f, int r, int d1, int d2, int v1, int v2) {
    const int i1 = min(t / v2, v1 - 1), i2 = t % v2;
    const int a = f / d2, c = f % d2;
    float acc = 0.0f;
    for (int rho = 0; rho < r; ++rho) {
        const float c1 = __fmul_rn(core1[((long long)i1 * r + rho) * d1 + a], phase_cos[rho]);
        acc = __fadd_rn(acc, __fmul_rn(c1, core2[((long long)i2 * r + rho) * d2 + c]));
    }
    return acc;
}

extern "C" __global__ void model_embed(const int* ids, const float* core1, const float* core2, const float* phase_cos, const float* pos, float* h, int rows, int n, int dim, int r, int d1, int d2, int v1, int v2) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * dim) return;
    const int row = (int)(i / dim), f = (int)(i % dim);
    const float e = htt_entry(core1, core2, phase_cos, ids[row], f, r, d1, d2, v1, v2);
    h[i] = pos ? __fadd_rn(e, pos[(long long)(row % n) * dim + f]) : e;  // null pos: HTT(ids) alone
}

// table (vpad, dim): rows t < vocab hold E[t, :dim], the padding rows are 0.
extern "C" __global__ void model_htt_table(const float* core1, const float* core2, const float* phase_cos, float* table, int vocab, int vpad, int dim, int r, int d1, int d2, int v1, int v2) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)vpad * dim) return;
    const int t = (int)(i / dim), f = (int)(i % dim);
    table[i] = t < vocab ? htt_entry(core1, core2, phase_cos, t, f, r, d1, d2, v1, v2) : 0.0f;
}

// ---- LayerNorm (one warp per row, eps 1e-5, biased variance, two passes as the reference) --------


extern "C" __global__ void __launch_bounds__(MODEL_THREADS) model_layer_norm(const float* x, const float* g, const float* b, float* y, int rows, int dim) {
    const int row = blockIdx.x * MODEL_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float* xr = x + (long long)row * dim;
    float s = 0.0f;
    for (int e = lane; e < dim; e += 32) s += xr[e];
    const float mean = warp_sum_f(s) / (float)dim;
    float v = 0.0f;
    for (int e = lane; e < dim; e += 32) {
        const float d = xr[e] - mean;
        v += d * d;
    }
    const float inv = 1.0f / sqrtf(warp_sum_f(v) / (float)dim + 1e-5f);
    float* yr = y + (long long)row * dim;
    for (int e = lane; e < dim; e += 32) yr[e] = (xr[e] - mean) * inv * g[e] + b[e];
}

// ---- BK layer: potential -> tridiagonal inputs, and the gate from G ---------------------------

// a = h0d[t] + clamp(v + vb, +-3) (in double, then rounded to T), b/c = the H0 off-diagonals; with
// clamp, the original's sanitation (a to +-100, b and c to +-10).
template <typename T>
__device__ void bk_prep(const float* v, float vb, const double* h0d, const double* h0sup, const double* h0sub, T* a, T* b,
                        T* c, int batch, int n, int clamp) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)batch * n) return;
    const int t = (int)(i % n);
    const float pot = fminf(fmaxf(v[i] + vb, -3.0f), 3.0f);
    double av = h0d[t] + (double)pot;
    if (clamp) av = fmin(fmax(av, -100.0), 100.0);
    a[i] = (T)av;
    if (t < n - 1) {
        const long long o = (i / n) * (n - 1) + t;
        double bs = h0sup[t], cs = h0sub[t];
        if (clamp) {
            bs = fmin(fmax(bs, -10.0), 10.0);
            cs = fmin(fmax(cs, -10.0), 10.0);
        }
        b[o] = (T)bs;
        c[o] = (T)cs;
    }
}

extern "C" __global__ void model_bk_prep_f32(const float* v, float vb, const double* h0d, const double* h0sup, const double* h0sub, float* a, float* b, float* c, int batch, int n, int clamp) {
    bk_prep<float>(v, vb, h0d, h0sup, h0sub, a, b, c, batch, n, clamp);
}
extern "C" __global__ void model_bk_prep_f64(const float* v, float vb, const double* h0d, const double* h0sup, const double* h0sub, double* a, double* b, double* c, int batch, int n, int clamp) {
    bk_prep<double>(v, vb, h0d, h0sup, h0sub, a, b, c, batch, n, clamp);
}

// gate = sigmoid(|Im G| * gs) with G interleaved [re, im]; round_c64 rounds Im G to float first.
template <typename T> __device__ void gate_of(const T* g, float gs, float* gate, int rows) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows) return;
    const float e = fabsf((float)g[2 * (long long)i + 1]) * gs;
    gate[i] = 1.0f / (1.0f + expf(-e));
}
extern "C" __global__ void model_gate_f32(const float* g, float gs, float* gate, int rows) { gate_of<float>(g, gs, gate, rows); }
extern "C" __global__ void model_gate_f64(const double* g, float gs, float* gate, int rows) { gate_of<double>(g, gs, gate, rows); }

// ---- AR-SSM ----------------------------------------------------------------------------------

// Depthwise conv, kernel 3: taps on n-2, n-1, n (causal) or n-1, n, n+1 (the original's).
extern "C" __global__ void model_ssm_conv(const float* x, const float* taps, float* t, int batch, int n, int dim, int causal) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)batch * n * dim) return;
    const int ch = (int)(i % dim);
    const long long row = i / dim;
    const int pos = (int)(row % n);
    const int off0 = causal ? -2 : -1;
    float acc = 0.0f;
    for (int k = 0; k < 3; ++k) {
        const int src = pos + off0 + k;
        if (src < 0 || src >= n) continue;
        acc = __fadd_rn(acc, __fmul_rn(taps[ch * 3 + k], x[(row + (src - pos)) * dim + ch]));
    }
    t[i] = acc;
}

// y = act(y + bias) (+ res): act 0 none, 1 ReLU, 2 sigmoid. bias and res may be null.
extern "C" __global__ void model_bias_act(float* y, const float* bias, const float* res, long long rows, int cols, int act) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * cols) return;
    float v = y[i];
    if (bias) v = __fadd_rn(v, bias[i % cols]);
    if (act == 1) v = fmaxf(v, 0.0f);
    if (act == 2) v = 1.0f / (1.0f + expf(-v));
    if (res) v = __fadd_rn(v, res[i]);
    y[i] = v;
}

// uv (rows, 2R) = [U x | V x], g (rows, R): ug = U x * g, vg = V x * g.
extern "C" __global__ void model_ssm_gate_uv(const float* uv, const float* g, float* ug, float* vg, long long rows, int rank) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * rank) return;
    const long long row = i / rank;
    const int r = (int)(i % rank);
    ug[i] = __fmul_rn(uv[row * 2 * rank + r], g[i]);
    vg[i] = __fmul_rn(uv[row * 2 * rank + rank + r], g[i]);
}

// out = scan(ug) * vg along the sequence: bs = 0 an inclusive cumsum (one thread per (b, r),
// sequential), else the original's pseudo-cumsum x_n + sum_{stride < bs, n - stride >= block start}
// x_{n - stride} (one thread per element).
extern "C" __global__ void model_ssm_scan(const float* ug, const float* vg, float* out, int batch, int n, int rank, int bs) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (bs == 0) {
        // One warp per (b, r): 32 positions at a time, a shuffle scan inside, the carry across.
        const long long wid = i >> 5;
        const int lane = threadIdx.x & 31;
        if (wid >= (long long)batch * rank) return;
        const long long b = wid / rank;
        const int r = (int)(wid % rank);
        float carry = 0.0f;
        for (int t0 = 0; t0 < n; t0 += 32) {
            const int t = t0 + lane;
            const long long at = (b * n + t) * rank + r;
            float v = t < n ? ug[at] : 0.0f;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const float up = __shfl_up_sync(0xffffffffu, v, o);
                if (lane >= o) v += up;
            }
            v += carry;
            if (t < n) out[at] = __fmul_rn(v, vg[at]);
            carry = __shfl_sync(0xffffffffu, v, 31);
        }
        return;
    }
    if (i >= (long long)batch * n * rank) return;
    const int t = (int)((i / rank) % n);
    const int start = t - t % bs;
    float acc = ug[i];
    for (int stride = 1; stride < bs; stride *= 2)
        if (t >= start + stride) acc = __fadd_rn(acc, ug[i - (long long)stride * rank]);
    out[i] = __fmul_rn(acc, vg[i]);
}

// ---- bf16 GEMM inputs -------------------------------------------------------------------------

// The bf16 bits of finite x, rounded to nearest even (as __float2bfloat16_rn and the CPU
// reference's half::bf16::from_f32), written as 16-bit words for a bf16 cuBLAS GEMM.
extern "C" __global__ void model_to_bf16(const float* x, unsigned short* y, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const unsigned int bits = (unsigned int)__float_as_int(x[i]);
    y[i] = (unsigned short)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

// The fp16 bits of x (cvt.rn.f16.f32: nearest even, subnormals kept, +-inf beyond 65504, as
// half::f16::from_f32): the operands of the fp16 GEMMs, where an overflow becomes inf and is
// caught by the dynamic loss scaler.
extern "C" __global__ void model_to_fp16(const float* x, unsigned short* y, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
#ifdef MUSE_CUDA_EMU
    y[i] = f2h(x[i]);  // the host emulator's correctly rounded conversion (ci/cuda-emu/emu.h)
#else
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x[i]));
    y[i] = h;
#endif
}

// ---- mix, LayerNorm and residual: h += LN(gate * local + (1 - gate) * global) --------------------

extern "C" __global__ void __launch_bounds__(MODEL_THREADS) model_mix_ln_res(const float* local, const float* global, const float* gate, const float* g, const float* b, float* h, int rows, int dim) {
    const int row = blockIdx.x * MODEL_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const long long off = (long long)row * dim;
    const float gg = gate[row];
    const float og = 1.0f - gg;
#define MIX(e) (__fadd_rn(__fmul_rn(gg, local[off + (e)]), __fmul_rn(og, global[off + (e)])))
    float s = 0.0f;
    for (int e = lane; e < dim; e += 32) s += MIX(e);
    const float mean = warp_sum_f(s) / (float)dim;
    float v = 0.0f;
    for (int e = lane; e < dim; e += 32) {
        const float d = MIX(e) - mean;
        v += d * d;
    }
    const float inv = 1.0f / sqrtf(warp_sum_f(v) / (float)dim + 1e-5f);
    for (int e = lane; e < dim; e += 32) h[off + e] = __fadd_rn(h[off + e], (MIX(e) - mean) * inv * g[e] + b[e]);
#undef MIX
}
