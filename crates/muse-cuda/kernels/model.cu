// The language model's non-GEMM layers on the device (design model.md §3), f32, mirrored from the
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
//   model_window_attn(qkv, o, batch, n, heads, dh, window, c, beta, bias, form)
//   model_mix_ln_res(local, global, gate, g, b, h, rows, dim)
#include "include/poincare.cuh"

#define MODEL_THREADS 256
#define MODEL_WARPS 8
#define MODEL_MAX_DH 256

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
    h[i] = __fadd_rn(e, pos[(long long)(row % n) * dim + f]);
}

// table (vpad, dim): rows t < vocab hold E[t, :dim], the padding rows are 0.
extern "C" __global__ void model_htt_table(const float* core1, const float* core2, const float* phase_cos, float* table, int vocab, int vpad, int dim, int r, int d1, int d2, int v1, int v2) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)vpad * dim) return;
    const int t = (int)(i / dim), f = (int)(i % dim);
    table[i] = t < vocab ? htt_entry(core1, core2, phase_cos, t, f, r, d1, d2, v1, v2) : 0.0f;
}

// ---- LayerNorm (one warp per row, eps 1e-5, biased variance, two passes as the reference) --------

__device__ __forceinline__ float warp_sum_f(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

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
        if (i >= (long long)batch * rank) return;
        const long long b = i / rank;
        const int r = (int)(i % rank);
        float acc = 0.0f;
        for (int t = 0; t < n; ++t) {
            const long long at = (b * n + t) * rank + r;
            acc = t == 0 ? ug[at] : __fadd_rn(acc, ug[at]);
            out[at] = __fmul_rn(acc, vg[at]);
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

// ---- windowed hyperbolic attention ------------------------------------------------------------

__device__ __forceinline__ float tf32_trunc(float x) { return __int_as_float(__float_as_int(x) & ~0x1FFF); }

// The original's expmap0 (|v| >= 1e-5) of a head row, in place.
__device__ void exp0_orig(float* v, int dh, float c) {
    const float sc = sqrtf(c);
    float r2 = 0.0f;
    for (int e = 0; e < dh; ++e) r2 += v[e] * v[e];
    const float r = fmaxf(sqrtf(r2), 1e-5f);
    const float f = 1.0f / sc * tanhf(sc * r);
    for (int e = 0; e < dh; ++e) v[e] = f * (v[e] / r);
}

// The original's logmap0 with its clamps, in place.
__device__ void log0_orig(float* y, int dh, float c) {
    const float sc = sqrtf(c);
    float r2 = 0.0f;
    for (int e = 0; e < dh; ++e) r2 += y[e] * y[e];
    const float yn = fmaxf(sqrtf(r2), 1e-5f);
    const float arg = sc * fminf(yn, 1.0f / sc - 1e-5f);
    const float f = 1.0f / sc * atanhf(arg);
    for (int e = 0; e < dh; ++e) y[e] = f * (y[e] / yn);
}

// Score of query row q against key row k (head width dh) for the form:
// 0 exact (law of cosines on tangent vectors), 1 'fast', 2 'fast' with TF32 dots, 3 PyTorch ball form.
__device__ float window_score(const float* q, const float* k, int dh, float c, float beta, float bias, int form) {
    const float s = sqrtf(c);
    if (form == 0) {
        float rq2 = 0.0f, rk2 = 0.0f;
        for (int e = 0; e < dh; ++e) {
            rq2 += q[e] * q[e];
            rk2 += k[e] * k[e];
        }
        const float rq = sqrtf(rq2), rk = sqrtf(rk2);
        const TangentTerms<float> tq = tangent_terms<float>(s, rq), tk = tangent_terms<float>(s, rk);
        float omc = 1.0f;
        if (rq > 0.0f && rk > 0.0f) {
            float d2 = 0.0f;
            for (int e = 0; e < dh; ++e) {
                const float d = __fdiv_rn(q[e], rq) - __fdiv_rn(k[e], rk);
                d2 += d * d;
            }
            omc = 0.5f * d2;
        }
        return -beta * (acosh1p<float>(law_of_cosines_z<float>(tq, tk, omc)) / s);
    }
    if (form == 3) {
        float xq[MODEL_MAX_DH], xk[MODEL_MAX_DH];
        for (int e = 0; e < dh; ++e) {
            xq[e] = q[e];
            xk[e] = k[e];
        }
        exp0_orig(xq, dh, c);
        exp0_orig(xk, dh, c);
        float nq = 0.0f, nk = 0.0f, dot = 0.0f;
        for (int e = 0; e < dh; ++e) {
            nq += xq[e] * xq[e];
            nk += xk[e] * xk[e];
            dot += xq[e] * xk[e];
        }
        const float diff2 = nq - 2.0f * dot + nk;
        const float den = fmaxf((1.0f - c * nq) * (1.0f - c * nk), 1e-5f);
        const float x = fmaxf(1.0f + 2.0f * c * diff2 / den, 1.0f + 1e-5f);
        return -beta * (1.0f / s * acoshf(x)) - bias;
    }
    float nq = 0.0f, nk = 0.0f, dot = 0.0f;
    for (int e = 0; e < dh; ++e) {
        nq += q[e] * q[e];
        nk += k[e] * k[e];
        dot += form == 2 ? tf32_trunc(q[e]) * tf32_trunc(k[e]) : q[e] * k[e];
    }
    const float diff2 = fmaxf(nq - 2.0f * dot + nk, 0.0f);
    return -beta * (sqrtf(diff2 + 1e-8f) * sqrtf(1.0f + c * (nq + nk)));
}

// qkv (rows, 3D): [q | k | v] per row, heads of width dh. One CTA per (window, head, batch), one
// thread per query of the window: two passes over the visible keys (max, then p = exp(s - max),
// l and p.v), so p is the same value the reference rounds; the compat forms then apply the
// original's output maps. o (rows, D), heads merged.
extern "C" __global__ void model_window_attn(const float* qkv, float* o, int batch, int n, int heads, int dh, int window, float c, float beta, float bias, int form) {
    const int w0 = blockIdx.x * window, h = blockIdx.y, b = blockIdx.z;
    const int i = w0 + threadIdx.x;
    if (threadIdx.x >= window || i >= n) return;
    const int dim = heads * dh;
    const long long stride = 3LL * dim;
    const float* base = qkv + (long long)b * n * stride;
    const float* q = base + (long long)i * stride + h * dh;
    float m = -INFINITY;
    for (int j = w0; j <= i; ++j) m = fmaxf(m, window_score(q, base + (long long)j * stride + dim + h * dh, dh, c, beta, bias, form));
    float acc[MODEL_MAX_DH];
    for (int e = 0; e < dh; ++e) acc[e] = 0.0f;
    float l = 0.0f;
    for (int j = w0; j <= i; ++j) {
        const float* kj = base + (long long)j * stride + dim + h * dh;
        const float* vj = base + (long long)j * stride + 2 * dim + h * dh;
        const float p = expf(window_score(q, kj, dh, c, beta, bias, form) - m);
        l += p;
        if (form == 2) {
            const float pt = tf32_trunc(p);
            for (int e = 0; e < dh; ++e) acc[e] += pt * tf32_trunc(vj[e]);
        } else {
            for (int e = 0; e < dh; ++e) acc[e] += p * vj[e];
        }
    }
    for (int e = 0; e < dh; ++e) acc[e] = acc[e] / l;
    if (form == 3) exp0_orig(acc, dh, c);
    if (form != 0) log0_orig(acc, dh, c);
    float* out = o + ((long long)b * n + i) * dim + h * dh;
    for (int e = 0; e < dh; ++e) out[e] = acc[e];
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
