// The language model's local path (design model.md §3.5–3.6): heads of width dh attend causally
// inside windows of W positions, in the exact law-of-cosines form or the original's compat forms
// (0 exact, 1 'fast', 2 'fast' with TF32-truncated dots, 3 the PyTorch ball form), mirrored from
// reference/src/model/attention.rs. Launcher: ../src/model_attn.rs.
//
// Exported:
//   model_attn_window(qkv, o, batch, n, heads, dh, window, c, beta, bias, form)      dh <= 256, W <= 1024
//   model_attn_window_w64(qkv, o, batch, n, heads, dh, window, c, beta, bias, form)  W <= 64, dh <= 64
#include "include/model_common.cuh"

#define MODEL_ATTN_MAX_DH 256
#define MODEL_ATTN_W64_WARPS 8
#define MODEL_ATTN_W64_MAX 64

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
        float xq[MODEL_ATTN_MAX_DH], xk[MODEL_ATTN_MAX_DH];
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
extern "C" __global__ void model_attn_window(const float* qkv, float* o, int batch, int n, int heads, int dh, int window, float c, float beta, float bias, int form) {
    const int w0 = blockIdx.x * window, h = blockIdx.y, b = blockIdx.z;
    const int i = w0 + threadIdx.x;
    if (threadIdx.x >= window || i >= n) return;
    const int dim = heads * dh;
    const long long stride = 3LL * dim;
    const float* base = qkv + (long long)b * n * stride;
    const float* q = base + (long long)i * stride + h * dh;
    float m = -INFINITY;
    for (int j = w0; j <= i; ++j) m = fmaxf(m, window_score(q, base + (long long)j * stride + dim + h * dh, dh, c, beta, bias, form));
    float acc[MODEL_ATTN_MAX_DH];
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

extern "C" __global__ void __launch_bounds__(MODEL_ATTN_W64_WARPS * 32) model_attn_window_w64(const float* qkv, float* o, int batch, int n, int heads, int dh, int window, float c, float beta, float bias, int form) {
    __shared__ float ks[MODEL_ATTN_W64_MAX][MODEL_ATTN_W64_MAX + 1];  // exact: unit k; fast: k; ball: exp0 k
    __shared__ float vs[MODEL_ATTN_W64_MAX][MODEL_ATTN_W64_MAX];
    __shared__ float kt[MODEL_ATTN_W64_MAX];   // exact: a; fast and ball: |k|^2
    __shared__ float ks2[MODEL_ATTN_W64_MAX];  // exact: sinh 2a
    __shared__ float kr[MODEL_ATTN_W64_MAX];   // exact: |k|
    __shared__ float qs[MODEL_ATTN_W64_WARPS][MODEL_ATTN_W64_MAX];
    __shared__ float ps[MODEL_ATTN_W64_WARPS][MODEL_ATTN_W64_MAX];
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
    for (int j = warp; j < nw; j += MODEL_ATTN_W64_WARPS) {
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
    for (int il = warp; il < nw; il += MODEL_ATTN_W64_WARPS) {
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
