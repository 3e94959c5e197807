// The language model's backward on the device (design model.md §3, issue 9), f32: the VJPs of the
// non-GEMM layers of model.cu, mirrored from reference/src/model/grad/ (same formulas). Parameter
// gradients that sum over rows are written as per-row products and reduced by train.cu's
// deterministic column sums (no atomics: a step is bit-for-bit reproducible). Launchers:
// ../src/model_bwd.rs; the schedule: ../src/model/backward.rs.
//
// Exported:
//   model_bwd_ln(x, local, global, gate, g, dy, res, dx, dlocal, dglobal, dgate, xhat_dy, rows, dim, mix)
//   model_bwd_gate(G, dgate, gs, up, dgs_row, rows)            G and up interleaved [re, im], f32
//   model_bwd_potential(grad_a, v, vb, dpre, rows)
//   model_bwd_act(y, d, n, act)                                 d *= act'(y): 1 ReLU, 2 sigmoid
//   model_bwd_gate_uv(uv, g, dug, dvg, duv, dg, rows, rank)
//   model_bwd_scan(ug, vg, dkv, dug, dvg, batch, n, rank)       the inclusive cumsum's VJP
//   model_bwd_conv(dt, x, taps, dx, dtaps_row, batch, n, dim, causal)
//   model_head_perm(src, dst, batch, n, heads, dh, row_stride, col_off, to_heads)
//   model_bwd_embed(dh, rows_by_tok, tok_start, toks, ntok, dtable, dim)
//   model_bwd_pos(dh, dpos, batch, n, dim)
//   model_bwd_htt_core1(dE, core1, core2, cos, M, dcore1, vocab, dim, r, d1, d2, v1, v2)
//   model_bwd_htt_core2(dE, core1, cos, dcore2, vocab, dim, r, d1, d2, v1, v2)
//   model_bwd_htt_phase(M, core1, sin, dphase, r, d1, v1)
#include "include/model_common.cuh"

#define MODEL_BWD_THREADS 256
#define MODEL_BWD_WARPS 8

// ---- LayerNorm (and the mix before the block's output norm) ------------------------------------

// One warp per row. The input m is x (mix = 0) or gate*local + (1 - gate)*global (mix = 1), y =
// (m - mean)*inv*g + b. With xh = (m - mean)*inv and dxh = dy*g:
//   dm = inv*(dxh - mean(dxh) - xh*mean(dxh*xh)),  xhat_dy = xh*dy (for dL/dg, summed over rows).
// mix = 0: dx = dm (+ res when non-null). mix = 1: dlocal = gate*dm, dglobal = (1 - gate)*dm,
// dgate[row] = sum(dm*(local - global)).
extern "C" __global__ void __launch_bounds__(MODEL_BWD_THREADS) model_bwd_ln(const float* x, const float* local, const float* global, const float* gate, const float* g, const float* dy, const float* res, float* dx, float* dlocal, float* dglobal, float* dgate, float* xhat_dy, int rows, int dim, int mix) {
    const int row = blockIdx.x * MODEL_BWD_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const long long off = (long long)row * dim;
    const float gg = mix ? gate[row] : 0.0f, og = 1.0f - gg;
#define IN(e) (mix ? __fadd_rn(__fmul_rn(gg, local[off + (e)]), __fmul_rn(og, global[off + (e)])) : x[off + (e)])
    float s = 0.0f;
    for (int e = lane; e < dim; e += 32) s += IN(e);
    const float mean = warp_sum_f(s) / (float)dim;
    float v = 0.0f;
    for (int e = lane; e < dim; e += 32) {
        const float d = IN(e) - mean;
        v += d * d;
    }
    const float inv = 1.0f / sqrtf(warp_sum_f(v) / (float)dim + 1e-5f);
    float s1 = 0.0f, s2 = 0.0f;
    for (int e = lane; e < dim; e += 32) {
        const float xh = (IN(e) - mean) * inv, dxh = dy[off + e] * g[e];
        s1 += dxh;
        s2 += dxh * xh;
        xhat_dy[off + e] = xh * dy[off + e];
    }
    const float m1 = warp_sum_f(s1) / (float)dim, m2 = warp_sum_f(s2) / (float)dim;
    float dgs = 0.0f;
    for (int e = lane; e < dim; e += 32) {
        const float xh = (IN(e) - mean) * inv;
        const float dm = inv * (dy[off + e] * g[e] - m1 - xh * m2);
        if (mix) {
            dlocal[off + e] = gg * dm;
            dglobal[off + e] = og * dm;
            dgs += dm * (local[off + e] - global[off + e]);
        } else {
            dx[off + e] = res ? dm + res[off + e] : dm;
        }
    }
#undef IN
    if (mix) {
        dgs = warp_sum_f(dgs);
        if (lane == 0) dgate[row] = dgs;
    }
}

// ---- the BK-Core gate ---------------------------------------------------------------------------

// gate = sigmoid(e), e = gs*|Im G|: the upstream gradient of G is i*de*gs*sign(Im G) with
// de = dgate*s*(1 - s); dgs_row = de*|Im G| (summed over rows for dL/dgs).
extern "C" __global__ void model_bwd_gate(const float* G, const float* dgate, float gs, float* up, float* dgs_row, int rows) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows) return;
    const float im = G[2 * (long long)i + 1];
    const float sg = 1.0f / (1.0f + expf(-(fabsf(im) * gs)));
    const float de = dgate[i] * sg * (1.0f - sg);
    dgs_row[i] = de * fabsf(im);
    up[2 * (long long)i] = 0.0f;
    up[2 * (long long)i + 1] = de * gs * (im > 0.0f ? 1.0f : (im < 0.0f ? -1.0f : 0.0f));
}

// The potential's clamp to +-3 passes the gradient strictly inside only (as the reference).
extern "C" __global__ void model_bwd_potential(const float* grad_a, const float* v, float vb, float* dpre, int rows) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows) return;
    dpre[i] = fabsf(v[i] + vb) < 3.0f ? grad_a[i] : 0.0f;
}

// ---- AR-SSM ---------------------------------------------------------------------------------------

extern "C" __global__ void model_bwd_act(const float* y, float* d, long long n, int act) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float yv = y[i];
    if (act == 1) d[i] = yv > 0.0f ? d[i] : 0.0f;
    if (act == 2) d[i] = d[i] * (yv * (1.0f - yv));
}

// ug = u*g, vg = v*g with uv = [u | v]: duv = [dug*g | dvg*g], dg = dug*u + dvg*v.
extern "C" __global__ void model_bwd_gate_uv(const float* uv, const float* g, const float* dug, const float* dvg, float* duv, float* dg, long long rows, int rank) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * rank) return;
    const long long row = i / rank;
    const int r = (int)(i % rank);
    const float u = uv[row * 2 * rank + r], v = uv[row * 2 * rank + rank + r], gv = g[i];
    duv[row * 2 * rank + r] = dug[i] * gv;
    duv[row * 2 * rank + rank + r] = dvg[i] * gv;
    dg[i] = dug[i] * u + dvg[i] * v;
}

// kv_t = S_t*vg_t, S_t = sum_{s<=t} ug_s: dvg_t = dkv_t*S_t, dug_s = sum_{t>=s} dkv_t*vg_t. One warp
// per (b, r): a forward shuffle scan for S, then a reverse one for the suffix sums.
extern "C" __global__ void model_bwd_scan(const float* ug, const float* vg, const float* dkv, float* dug, float* dvg, int batch, int n, int rank) {
    const long long wid = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
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
        if (t < n) dvg[at] = dkv[at] * v;
        carry = __shfl_sync(0xffffffffu, v, 31);
    }
    carry = 0.0f;
    const int last = ((n + 31) / 32) * 32;
    for (int t0 = last - 32; t0 >= 0; t0 -= 32) {
        const int t = t0 + lane;
        const long long at = (b * n + t) * rank + r;
        float v = t < n ? dkv[at] * vg[at] : 0.0f;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const float dn = __shfl_down_sync(0xffffffffu, v, o);
            if (lane + o < 32) v += dn;
        }
        v += carry;
        if (t < n) dug[at] = v;
        carry = __shfl_sync(0xffffffffu, v, 0);
    }
}

// t[pos] = sum_k taps[ch, k]*x[pos + off0 + k]: dx[p] += sum_k taps[ch, k]*dt[p - off0 - k] and
// dtaps_row[row, ch*3 + k] = dt[row]*x[row + off0 + k] (0 outside the sequence).
extern "C" __global__ void model_bwd_conv(const float* dt, const float* x, const float* taps, float* dx, float* dtaps_row, int batch, int n, int dim, int causal) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)batch * n * dim) return;
    const int ch = (int)(i % dim);
    const long long row = i / dim;
    const int pos = (int)(row % n);
    const int off0 = causal ? -2 : -1;
    float acc = 0.0f;
    for (int k = 0; k < 3; ++k) {
        const int dst = pos - off0 - k;  // the output position that read x[pos] through tap k
        if (dst >= 0 && dst < n) acc += taps[ch * 3 + k] * dt[(row + (dst - pos)) * dim + ch];
        const int src = pos + off0 + k;
        dtaps_row[row * 3 * dim + ch * 3 + k] = (src >= 0 && src < n) ? dt[i] * x[(row + (src - pos)) * dim + ch] : 0.0f;
    }
    dx[i] += acc;
}

// ---- attention layout ------------------------------------------------------------------------------

// to_heads = 1: dst (B, H, N, dh) <- src rows (B*N, row_stride) at columns col_off + h*dh + e;
// to_heads = 0: the inverse (dst rows written at those columns, src in heads).
extern "C" __global__ void model_head_perm(const float* src, float* dst, int batch, int n, int heads, int dh, int row_stride, int col_off, int to_heads) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)batch * n * heads * dh) return;
    const int e = (int)(i % dh);
    const long long r = i / dh;
    const int t = (int)(r % n);
    const long long bh = r / n;
    const int h = (int)(bh % heads);
    const long long b = bh / heads;
    const long long flat = (b * n + t) * row_stride + col_off + h * dh + e;
    if (to_heads) dst[i] = src[flat];
    else dst[flat] = src[i];
}

// ---- embedding, positions and the HTT cores ----------------------------------------------------------

// dtable[tok] += sum of dh over the rows holding tok, in row order (rows_by_tok lists the rows of
// toks[j] at tok_start[j] .. tok_start[j + 1]). One warp per distinct token.
extern "C" __global__ void __launch_bounds__(MODEL_BWD_THREADS) model_bwd_embed(const float* dh, const int* rows_by_tok, const int* tok_start, const int* toks, int ntok, float* dtable, int dim) {
    const int j = blockIdx.x * MODEL_BWD_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (j >= ntok) return;
    float* dst = dtable + (long long)toks[j] * dim;
    for (int e = lane; e < dim; e += 32) {
        float acc = 0.0f;
        for (int q = tok_start[j]; q < tok_start[j + 1]; ++q) acc += dh[(long long)rows_by_tok[q] * dim + e];
        dst[e] += acc;
    }
}

// dpos[t, e] += sum_b dh[b, t, e].
extern "C" __global__ void model_bwd_pos(const float* dh, float* dpos, int batch, int n, int dim) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * dim) return;
    float acc = 0.0f;
    for (int b = 0; b < batch; ++b) acc += dh[(long long)b * n * dim + i];
    dpos[i] += acc;
}

// E[t, a*d2 + c] = sum_rho cos_rho*core1[i1, rho, a]*core2[i2, rho, c] (f < dim). One CTA per
// row group i1 (its tokens are contiguous), one thread per output (rho, a) in turn: each token's dE
// row and core2 row are staged in shared memory (dynamic: dim + r*d2 floats), then
// M[i1, rho, a] = sum_t sum_c dE[t, a*d2 + c]*core2[i2, rho, c]; dcore1 += cos*M; M kept for the
// phase.
extern "C" __global__ void __launch_bounds__(MODEL_BWD_THREADS) model_bwd_htt_core1(const float* dE, const float* core1, const float* core2, const float* cos_, float* M, float* dcore1, int vocab, int dim, int r, int d1, int d2, int v1, int v2) {
    extern __shared__ float sh[];
    float* de = sh;
    float* c2 = sh + dim;
    const int i1 = blockIdx.x;
    const int t0 = i1 * v2, t1 = i1 == v1 - 1 ? vocab : min(t0 + v2, vocab);
    const int outs = r * d1;
    float acc[2] = {0.0f, 0.0f};
    for (int t = t0; t < t1; ++t) {
        __syncthreads();
        for (int e = threadIdx.x; e < dim; e += blockDim.x) de[e] = dE[(long long)t * dim + e];
        for (int e = threadIdx.x; e < r * d2; e += blockDim.x) c2[e] = core2[(long long)(t % v2) * r * d2 + e];
        __syncthreads();
        for (int q = 0; q < 2; ++q) {
            const int o = threadIdx.x + q * blockDim.x;
            if (o >= outs) continue;
            const int rho = o / d1, a = o % d1;
            float s = 0.0f;
            for (int c = 0; c < d2 && a * d2 + c < dim; ++c) s += de[a * d2 + c] * c2[rho * d2 + c];
            acc[q] += s;
        }
    }
    for (int q = 0; q < 2; ++q) {
        const int o = threadIdx.x + q * blockDim.x;
        if (o >= outs) continue;
        const long long at = (long long)i1 * outs + o;
        M[at] = acc[q];
        dcore1[at] += cos_[o / d1] * acc[q];
    }
}

// One CTA per i2, one thread per output (rho, c): over the tokens t = i2 (mod v2), dE's row and
// core1's row group i1(t) staged in shared memory (dim + r*d1 floats); dcore2 += cos*sum dE*core1.
extern "C" __global__ void __launch_bounds__(MODEL_BWD_THREADS) model_bwd_htt_core2(const float* dE, const float* core1, const float* cos_, float* dcore2, int vocab, int dim, int r, int d1, int d2, int v1, int v2) {
    extern __shared__ float sh[];
    float* de = sh;
    float* c1 = sh + dim;
    const int i2 = blockIdx.x;
    const int outs = r * d2;
    float acc[2] = {0.0f, 0.0f};
    for (int t = i2; t < vocab; t += v2) {
        __syncthreads();
        for (int e = threadIdx.x; e < dim; e += blockDim.x) de[e] = dE[(long long)t * dim + e];
        const long long g1 = (long long)min(t / v2, v1 - 1) * r * d1;
        for (int e = threadIdx.x; e < r * d1; e += blockDim.x) c1[e] = core1[g1 + e];
        __syncthreads();
        for (int q = 0; q < 2; ++q) {
            const int o = threadIdx.x + q * blockDim.x;
            if (o >= outs) continue;
            const int rho = o / d2, c = o % d2;
            float s = 0.0f;
            for (int a = 0; a < d1 && a * d2 + c < dim; ++a) s += de[a * d2 + c] * c1[rho * d1 + a];
            acc[q] += s;
        }
    }
    for (int q = 0; q < 2; ++q) {
        const int o = threadIdx.x + q * blockDim.x;
        if (o < outs) dcore2[(long long)i2 * outs + o] += cos_[o / d2] * acc[q];
    }
}

// dphase_rho += -sin_rho * sum_{i1, a} core1[i1, rho, a]*M[i1, rho, a]. One CTA per rho.
extern "C" __global__ void __launch_bounds__(MODEL_BWD_THREADS) model_bwd_htt_phase(const float* M, const float* core1, const float* sin_, float* dphase, int r, int d1, int v1) {
    __shared__ float part[MODEL_BWD_WARPS];
    const int rho = blockIdx.x;
    float acc = 0.0f;
    for (int q = threadIdx.x; q < v1 * d1; q += blockDim.x) {
        const long long at = ((long long)(q / d1) * r + rho) * d1 + q % d1;
        acc += core1[at] * M[at];
    }
    acc = warp_sum_f(acc);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0.0f;
        for (int w = 0; w < MODEL_BWD_WARPS; ++w) s += part[w];
        dphase[rho] += -sin_[rho] * s;
    }
}
