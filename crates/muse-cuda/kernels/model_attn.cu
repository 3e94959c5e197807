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
// (window, head, batch). The window's keys and values and their per-key terms are staged in shared
// memory once. Each warp takes groups of 4 query rows (groups g and 15 - g, so causal work is
// balanced); each lane two keys (j = lane, lane + 32) against all 4 rows, so one shared load of
// k[j][e] (and one broadcast float4 of the 4 rows' q[e]) feeds 4 products: the loop is no longer
// bound by shared-memory loads. Max and sum by shuffles; p in the same float4 slots, then each lane
// two output dims for the 4 rows. Same formulas, forms and summation order as model_window_attn
// (its sums over e and over j run in the same ascending order).

#define MODEL_ATTN_W64_ROWS 4

__device__ __forceinline__ float& row_of(float4& v, int r) { return (&v.x)[r]; }

extern "C" __global__ void __launch_bounds__(MODEL_ATTN_W64_WARPS * 32) model_attn_window_w64(const float* qkv, float* o, int batch, int n, int heads, int dh, int window, float c, float beta, float bias, int form) {
    constexpr int R = MODEL_ATTN_W64_ROWS;
    __shared__ float ks[MODEL_ATTN_W64_MAX][MODEL_ATTN_W64_MAX + 1];  // exact: unit k; fast: k; ball: exp0 k
    __shared__ float vs[MODEL_ATTN_W64_MAX][MODEL_ATTN_W64_MAX];
    __shared__ float kt[MODEL_ATTN_W64_MAX];   // exact: a; fast and ball: |k|^2
    __shared__ float ks2[MODEL_ATTN_W64_MAX];  // exact: sinh 2a
    __shared__ float kr[MODEL_ATTN_W64_MAX];   // exact: |k|
    // Per warp: the group's 4 (mapped) query rows by dim e, then their p by key j.
    __shared__ float4 qp[MODEL_ATTN_W64_WARPS][MODEL_ATTN_W64_MAX];
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
    const int groups = (nw + R - 1) / R;
    for (int g0 = 0; g0 < groups; g0 += 2 * MODEL_ATTN_W64_WARPS) {
        for (int half = 0; half < 2; ++half) {
            const int g = g0 + (half == 0 ? warp : 2 * MODEL_ATTN_W64_WARPS - 1 - warp);
            if (g >= groups) continue;  // warp-uniform
            const int i0 = g * R, last = min(i0 + R, nw) - 1;
            // The rows' terms and their mapped q in qp (a row past the window: zeros, masked).
            float qa[R], qsh[R], qr[R], qn[R];
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const int il = i0 + r;
                qa[r] = qsh[r] = qr[r] = qn[r] = 0.0f;
                if (il >= nw) {
                    for (int e = lane; e < dh; e += 32) row_of(qp[warp][e], r) = 0.0f;
                    continue;
                }
                const float* q = base + (long long)il * stride;
                float r2 = 0.0f;
                for (int e = lane; e < dh; e += 32) r2 += q[e] * q[e];
                r2 = warp_sum_f(r2);
                qn[r] = r2;
                if (form == 0) {
                    qr[r] = sqrtf(r2);
                    const TangentTerms<float> t = tangent_terms<float>(s, qr[r]);
                    qa[r] = t.a;
                    qsh[r] = t.sinh2a;
                    for (int e = lane; e < dh; e += 32) row_of(qp[warp][e], r) = qr[r] > 0.0f ? __fdiv_rn(q[e], qr[r]) : 0.0f;
                } else if (form == 3) {
                    const float rr = fmaxf(sqrtf(r2), 1e-5f);
                    const float f = 1.0f / s * tanhf(s * rr);
                    float m2 = 0.0f;
                    for (int e = lane; e < dh; e += 32) {
                        const float x = f * (q[e] / rr);
                        row_of(qp[warp][e], r) = x;
                        m2 += x * x;
                    }
                    qn[r] = warp_sum_f(m2);
                } else {
                    for (int e = lane; e < dh; e += 32) row_of(qp[warp][e], r) = q[e];
                }
            }
            __syncwarp();
            float sc[R][2];
#pragma unroll
            for (int h2 = 0; h2 < 2; ++h2) {
                const int j = lane + 32 * h2;
                float acc4[R] = {0.0f, 0.0f, 0.0f, 0.0f};  // exact: |q^ - k^|^2; else q.k
                if (j <= last) {
                    for (int e = 0; e < dh; ++e) {
                        const float4 q4 = qp[warp][e];
                        const float kv = ks[j][e];
                        if (form == 0) {
                            const float d0 = q4.x - kv, d1 = q4.y - kv, d2 = q4.z - kv, d3 = q4.w - kv;
                            acc4[0] += d0 * d0;
                            acc4[1] += d1 * d1;
                            acc4[2] += d2 * d2;
                            acc4[3] += d3 * d3;
                        } else if (t32) {
                            const float kk = tf32_trunc(kv);
                            acc4[0] += tf32_trunc(q4.x) * kk;
                            acc4[1] += tf32_trunc(q4.y) * kk;
                            acc4[2] += tf32_trunc(q4.z) * kk;
                            acc4[3] += tf32_trunc(q4.w) * kk;
                        } else {
                            acc4[0] += q4.x * kv;
                            acc4[1] += q4.y * kv;
                            acc4[2] += q4.z * kv;
                            acc4[3] += q4.w * kv;
                        }
                    }
                }
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    const int il = i0 + r;
                    sc[r][h2] = -INFINITY;
                    if (il >= nw || j > il) continue;
                    if (form == 0) {
                        const float omc = qr[r] > 0.0f && kr[j] > 0.0f ? 0.5f * acc4[r] : 1.0f;
                        const float sh = sinhf(qa[r] - kt[j]);
                        const float z = 2.0f * sh * sh + qsh[r] * ks2[j] * omc;
                        sc[r][h2] = -beta * (acosh1p<float>(z) / s);
                    } else if (form == 3) {
                        const float nk = kt[j];
                        const float diff2 = qn[r] - 2.0f * acc4[r] + nk;
                        const float den = fmaxf((1.0f - c * qn[r]) * (1.0f - c * nk), 1e-5f);
                        const float x = fmaxf(1.0f + 2.0f * c * diff2 / den, 1.0f + 1e-5f);
                        sc[r][h2] = -beta * (1.0f / s * acoshf(x)) - bias;
                    } else {
                        const float nk = kt[j];
                        const float diff2 = fmaxf(qn[r] - 2.0f * acc4[r] + nk, 0.0f);
                        sc[r][h2] = -beta * (sqrtf(diff2 + 1e-8f) * sqrtf(1.0f + c * (qn[r] + nk)));
                    }
                }
            }
            float l[R];
            float4 p0, p1;
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const float m = warp_max_f(fmaxf(sc[r][0], sc[r][1]));
                row_of(p0, r) = sc[r][0] == -INFINITY ? 0.0f : expf(sc[r][0] - m);
                row_of(p1, r) = sc[r][1] == -INFINITY ? 0.0f : expf(sc[r][1] - m);
                l[r] = warp_sum_f(row_of(p0, r) + row_of(p1, r));
            }
            __syncwarp();  // every lane is done with the q rows
            qp[warp][lane] = p0;
            qp[warp][lane + 32] = p1;
            __syncwarp();
            float acc[R][2];
#pragma unroll
            for (int h2 = 0; h2 < 2; ++h2) {
                const int e = lane + 32 * h2;
#pragma unroll
                for (int r = 0; r < R; ++r) acc[r][h2] = 0.0f;
                if (e >= dh) continue;
                for (int j = 0; j <= last; ++j) {
                    const float4 p4 = qp[warp][j];
                    const float v = t32 ? tf32_trunc(vs[j][e]) : vs[j][e];
                    if (t32) {
                        acc[0][h2] += tf32_trunc(p4.x) * v;
                        acc[1][h2] += tf32_trunc(p4.y) * v;
                        acc[2][h2] += tf32_trunc(p4.z) * v;
                        acc[3][h2] += tf32_trunc(p4.w) * v;
                    } else {
                        acc[0][h2] += p4.x * v;
                        acc[1][h2] += p4.y * v;
                        acc[2][h2] += p4.z * v;
                        acc[3][h2] += p4.w * v;
                    }
                }
#pragma unroll
                for (int r = 0; r < R; ++r) acc[r][h2] = acc[r][h2] / l[r];
            }
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const int il = i0 + r;
                if (il >= nw) continue;  // warp-uniform
                float a0 = acc[r][0], a1 = acc[r][1];
                if (form == 3) {  // the original's expmap0 of the weighted sum
                    const float rr = fmaxf(sqrtf(warp_sum_f(a0 * a0 + a1 * a1)), 1e-5f);
                    const float f = 1.0f / s * tanhf(s * rr);
                    a0 = f * (a0 / rr);
                    a1 = f * (a1 / rr);
                }
                if (form != 0) {  // the original's logmap0 with its clamps
                    const float yn = fmaxf(sqrtf(warp_sum_f(a0 * a0 + a1 * a1)), 1e-5f);
                    const float f = 1.0f / s * atanhf(s * fminf(yn, 1.0f / s - 1e-5f));
                    a0 = f * (a0 / yn);
                    a1 = f * (a1 / yn);
                }
                float* out = o + ((long long)b * n + w0 + il) * dim + h * dh;
                if (lane < dh) out[lane] = a0;
                if (lane + 32 < dh) out[lane + 32] = a1;
            }
            __syncwarp();  // qp is rewritten by the next group
        }
    }
}
