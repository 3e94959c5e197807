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
//   model_window_attn(qkv, o, batch, n, heads, dh, window, c, beta, bias, form)       any dh <= 256, W <= 1024
//   model_window_attn_w64(qkv, o, batch, n, heads, dh, window, c, beta, bias, form)   W <= 64, dh <= 64
//   model_mix_ln_res(local, global, gate, g, b, h, rows, dim)
//   model_to_bf16(x, y, n)                           y = the bf16 bits of x (round to nearest even)
#include "include/poincare.cuh"

#define MODEL_THREADS 256
#define MODEL_WARPS 8
#define MODEL_MAX_DH 256
#define MODEL_W64_WARPS 8
#define MODEL_W64_MAX 64

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

// Fast path for W <= 64 and dh <= 64 (every shipped config but large): one CTA of 8 warps per
// (window, head, batch). The window's keys and values and their per-row terms are staged in shared
// memory once; each warp takes query rows in turn, each lane two keys (j = lane, lane + 32): the
// scores in registers, max and sum by shuffles, p in shared memory, then each lane two output
// dims. Same formulas and forms as model_window_attn (sums in another order).
__device__ __forceinline__ float warp_max_f(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

extern "C" __global__ void __launch_bounds__(MODEL_W64_WARPS * 32) model_window_attn_w64(const float* qkv, float* o, int batch, int n, int heads, int dh, int window, float c, float beta, float bias, int form) {
    __shared__ float ks[MODEL_W64_MAX][MODEL_W64_MAX + 1];  // exact: unit k; fast: k; ball: exp0 k
    __shared__ float vs[MODEL_W64_MAX][MODEL_W64_MAX];
    __shared__ float kt[MODEL_W64_MAX];   // exact: a; fast and ball: |k|^2
    __shared__ float ks2[MODEL_W64_MAX];  // exact: sinh 2a
    __shared__ float kr[MODEL_W64_MAX];   // exact: |k|
    __shared__ float qs[MODEL_W64_WARPS][MODEL_W64_MAX];
    __shared__ float ps[MODEL_W64_WARPS][MODEL_W64_MAX];
    const int w0 = blockIdx.x * window, h = blockIdx.y, b = blockIdx.z;
    const int nw = min(window, n - w0);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int dim = heads * dh;
    const long long stride = 3LL * dim;
    const float* base = qkv + ((long long)b * n + w0) * stride + h * dh;
    const float s = sqrtf(c);
    for (int idx = threadIdx.x; idx < nw * dh; idx += blockDim.x) {
        const int j = idx / dh, e = idx % dh;
        ks[j][e] = base[(long long)j * stride + dim + e];
        vs[j][e] = base[(long long)j * stride + 2 * dim + e];
    }
    __syncthreads();
    // Per-key terms, one warp per key row.
    for (int j = warp; j < nw; j += MODEL_W64_WARPS) {
        float r2 = 0.0f;
        for (int e = lane; e < dh; e += 32) r2 += ks[j][e] * ks[j][e];
        r2 = warp_sum_f(r2);
        if (form == 0) {
            const float r = sqrtf(r2);
            const TangentTerms<float> t = tangent_terms<float>(s, r);
            for (int e = lane; e < dh; e += 32) ks[j][e] = r > 0.0f ? __fdiv_rn(ks[j][e], r) : 0.0f;
            if (lane == 0) {
                kt[j] = t.a;
                ks2[j] = t.sinh2a;
                kr[j] = r;
            }
        } else if (form == 3) {
            const float r = fmaxf(sqrtf(r2), 1e-5f);
            const float f = 1.0f / s * tanhf(s * r);
            float m2 = 0.0f;
            for (int e = lane; e < dh; e += 32) {
                const float x = f * (ks[j][e] / r);
                ks[j][e] = x;
                m2 += x * x;
            }
            m2 = warp_sum_f(m2);
            if (lane == 0) kt[j] = m2;
        } else if (lane == 0) {
            kt[j] = r2;
        }
    }
    __syncthreads();
    const bool t32 = form == 2;
    for (int il = warp; il < nw; il += MODEL_W64_WARPS) {
        // The query row and its terms.
        const float* q = base + (long long)il * stride;
        float r2 = 0.0f;
        for (int e = lane; e < dh; e += 32) r2 += q[e] * q[e];
        r2 = warp_sum_f(r2);
        float qa = 0.0f, qsh = 0.0f, qr = 0.0f, qn = r2;
        if (form == 0) {
            qr = sqrtf(r2);
            const TangentTerms<float> t = tangent_terms<float>(s, qr);
            qa = t.a;
            qsh = t.sinh2a;
            for (int e = lane; e < dh; e += 32) qs[warp][e] = qr > 0.0f ? __fdiv_rn(q[e], qr) : 0.0f;
        } else if (form == 3) {
            const float r = fmaxf(sqrtf(r2), 1e-5f);
            const float f = 1.0f / s * tanhf(s * r);
            float m2 = 0.0f;
            for (int e = lane; e < dh; e += 32) {
                const float x = f * (q[e] / r);
                qs[warp][e] = x;
                m2 += x * x;
            }
            qn = warp_sum_f(m2);
        } else {
            for (int e = lane; e < dh; e += 32) qs[warp][e] = q[e];
        }
        __syncwarp();
        float sc[2];
#pragma unroll
        for (int h2 = 0; h2 < 2; ++h2) {
            const int j = lane + 32 * h2;
            sc[h2] = -INFINITY;
            if (j >= nw || j > il) continue;
            if (form == 0) {
                float omc = 1.0f;
                if (qr > 0.0f && kr[j] > 0.0f) {
                    float d2 = 0.0f;
                    for (int e = 0; e < dh; ++e) {
                        const float d = qs[warp][e] - ks[j][e];
                        d2 += d * d;
                    }
                    omc = 0.5f * d2;
                }
                const float sh = sinhf(qa - kt[j]);
                const float z = 2.0f * sh * sh + qsh * ks2[j] * omc;
                sc[h2] = -beta * (acosh1p<float>(z) / s);
            } else {
                float dot = 0.0f;
                for (int e = 0; e < dh; ++e) dot += t32 ? tf32_trunc(qs[warp][e]) * tf32_trunc(ks[j][e]) : qs[warp][e] * ks[j][e];
                const float nk = kt[j];
                if (form == 3) {
                    const float diff2 = qn - 2.0f * dot + nk;
                    const float den = fmaxf((1.0f - c * qn) * (1.0f - c * nk), 1e-5f);
                    const float x = fmaxf(1.0f + 2.0f * c * diff2 / den, 1.0f + 1e-5f);
                    sc[h2] = -beta * (1.0f / s * acoshf(x)) - bias;
                } else {
                    const float diff2 = fmaxf(qn - 2.0f * dot + nk, 0.0f);
                    sc[h2] = -beta * (sqrtf(diff2 + 1e-8f) * sqrtf(1.0f + c * (qn + nk)));
                }
            }
        }
        const float m = warp_max_f(fmaxf(sc[0], sc[1]));
        const float p0 = sc[0] == -INFINITY ? 0.0f : expf(sc[0] - m);
        const float p1 = sc[1] == -INFINITY ? 0.0f : expf(sc[1] - m);
        const float l = warp_sum_f(p0 + p1);
        ps[warp][lane] = p0;
        ps[warp][lane + 32] = p1;
        __syncwarp();
        float acc[2] = {0.0f, 0.0f};
#pragma unroll
        for (int h2 = 0; h2 < 2; ++h2) {
            const int e = lane + 32 * h2;
            if (e >= dh) continue;
            for (int j = 0; j <= il; ++j) acc[h2] += t32 ? tf32_trunc(ps[warp][j]) * tf32_trunc(vs[j][e]) : ps[warp][j] * vs[j][e];
            acc[h2] = acc[h2] / l;
        }
        if (form == 3) {  // the original's expmap0 of the weighted sum
            const float r = fmaxf(sqrtf(warp_sum_f(acc[0] * acc[0] + acc[1] * acc[1])), 1e-5f);
            const float f = 1.0f / s * tanhf(s * r);
            acc[0] = f * (acc[0] / r);
            acc[1] = f * (acc[1] / r);
        }
        if (form != 0) {  // the original's logmap0 with its clamps
            const float yn = fmaxf(sqrtf(warp_sum_f(acc[0] * acc[0] + acc[1] * acc[1])), 1e-5f);
            const float f = 1.0f / s * atanhf(s * fminf(yn, 1.0f / s - 1e-5f));
            acc[0] = f * (acc[0] / yn);
            acc[1] = f * (acc[1] / yn);
        }
        float* out = o + ((long long)b * n + w0 + il) * dim + h * dh;
        if (lane < dh) out[lane] = acc[0];
        if (lane + 32 < dh) out[lane + 32] = acc[1];
        __syncwarp();
    }
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
