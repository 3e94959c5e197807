// Block-centroid key selection for the block-skip hyperbolic attention (design hyperbolic.md §6,
// selection A): per (b, h) the mean tangent q and k of each block of SPARSE_ATTN_BLOCK rows, then per
// query block the diagonal and the k_b - 1 earlier key blocks of highest -d(centroid_q,
// centroid_k) (law of cosines, §2.3; ties to the lower block). The attention itself is
// hyp_attn_tc_fwd_d64_sparse. Launchers: ../src/sparse_attn.rs; reference:
// reference/src/sparse_attn/.
//
// sparse_attn_centroids(const u16* x /* bf16 bits [B*H*N, D] */, int n, int dim, int nb, float* c)
//   grid (nb, B*H) x SPARSE_ATTN_THREADS: c [B*H, nb, D] = the mean of the block's rows (the last
//   block may be partial).
// sparse_attn_select(const float* cq, const float* ck, int bh_count, int nb, int dim, float s,
//   int kb, int* lists /* [B*H, nb, kb] */, int* counts /* [B*H, nb] */)
//   one warp per (b*h, query block), grid ceil(B*H*nb*32 / threads); kb <= SPARSE_ATTN_MAX_KB.
#define SPARSE_ATTN_BLOCK 64
#define SPARSE_ATTN_THREADS 64
#define SPARSE_ATTN_MAX_KB 64

__device__ __forceinline__ float sp_bf16(unsigned short h) { return __uint_as_float((unsigned int)h << 16); }

extern "C" __global__ void sparse_attn_centroids(const unsigned short* x, int n, int dim, int nb, float* cent) {
    const int blk = blockIdx.x, bh = blockIdx.y;
    const int r0 = blk * SPARSE_ATTN_BLOCK, r1 = min(n, r0 + SPARSE_ATTN_BLOCK);
    for (int e = threadIdx.x; e < dim; e += blockDim.x) {
        float acc = 0.0f;
        for (int r = r0; r < r1; ++r) acc += sp_bf16(x[((long long)bh * n + r) * dim + e]);
        cent[((long long)bh * nb + blk) * dim + e] = acc / (float)(r1 - r0);
    }
}

__device__ __forceinline__ float sp_warp_sum(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// One warp per (b*h, query block): lane l scores the earlier key blocks l, l + 32, ... and keeps
// its own top k_b - 1; `keep` rounds of a warp arg-max then merge them. (A thread per query block
// looped over every key block with dependent loads: ~100s of us at N 4096-16384 on the H200.)
extern "C" __global__ void sparse_attn_select(const float* cq, const float* ck, int bh_count, int nb, int dim, float s, int kb, int* lists, int* counts) {
    const long long t = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (t >= (long long)bh_count * nb) return;  // the whole warp
    const int bh = (int)(t / nb), qb = (int)(t % nb);
    const float* q = cq + ((long long)bh * nb + qb) * dim;
    float qq = 0.0f;
    for (int e = lane; e < dim; e += 32) qq += q[e] * q[e];
    const float rq = sqrtf(sp_warp_sum(qq)), a = fminf(s * rq, 15.0f), sa = sinhf(2.0f * a);
    const float iq = rq > 0.0f ? 1.0f / rq : 0.0f;
    float best_s[SPARSE_ATTN_MAX_KB];
    int best_j[SPARSE_ATTN_MAX_KB];
    const int keep = min(kb - 1, qb);  // earlier blocks beside the diagonal
    int have = 0;
    for (int j = lane; j < qb; j += 32) {
        const float* k = ck + ((long long)bh * nb + j) * dim;
        float kk = 0.0f;
        for (int e = 0; e < dim; ++e) kk += k[e] * k[e];
        const float rk = sqrtf(kk), b = fminf(s * rk, 15.0f);
        float omc = 1.0f;  // 1 - cos as |q^ - k^|^2 / 2 (no cancellation for near-parallel rows)
        if (rq > 0.0f && rk > 0.0f) {
            const float ik = 1.0f / rk;
            float dd = 0.0f;
            for (int e = 0; e < dim; ++e) {
                const float x = q[e] * iq - k[e] * ik;
                dd += x * x;
            }
            omc = fminf(0.5f * dd, 2.0f);
        }
        const float sh = sinhf(a - b);
        float z = fmaxf(2.0f * sh * sh + sa * sinhf(2.0f * b) * omc, 0.0f);
        const float score = -log1pf(z + sqrtf(z * (z + 2.0f))) / s;
        // insertion into the lane's top `keep` (descending score; j ascending, so an equal score
        // keeps the lower block first)
        int pos = have;
        while (pos > 0 && best_s[pos - 1] < score) --pos;
        if (pos < keep) {
            for (int p = min(have, keep - 1); p > pos; --p) { best_s[p] = best_s[p - 1]; best_j[p] = best_j[p - 1]; }
            best_s[pos] = score;
            best_j[pos] = j;
            if (have < keep) ++have;
        }
    }
    int* out = lists + ((long long)bh * nb + qb) * kb;
    int head = 0;
    for (int p = 0; p < keep; ++p) {  // the lanes hold >= keep candidates in all (qb >= keep)
        const int cj = head < have ? best_j[head] : 0x7fffffff;
        float bs = head < have ? best_s[head] : -INFINITY;
        int bj = cj;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float os = __shfl_xor_sync(0xffffffffu, bs, o);
            const int oj = __shfl_xor_sync(0xffffffffu, bj, o);
            if (os > bs || (os == bs && oj < bj)) { bs = os; bj = oj; }
        }
        if (cj == bj) ++head;  // block indices are unique: the winner pops its head
        if (lane == 0) out[1 + p] = bj;
    }
    if (lane == 0) {
        out[0] = qb;
        for (int p = 1 + keep; p < kb; ++p) out[p] = -1;
        counts[(long long)bh * nb + qb] = 1 + keep;
    }
}
