// Block-centroid key selection for the block-skip hyperbolic attention (design hyperbolic.md §6,
// selection A): per (b, h) the mean tangent q and k of each block of SPARSE_ATTN_BLOCK rows, then per
// query block the diagonal and the k_b - 1 earlier key blocks of highest -d(centroid_q,
// centroid_k) (law of cosines, §2.3; ties to the lower block). The attention itself is
// hyp_attn_tc_fwd_d64_sparse. Launchers: ../src/sparse_attn.rs; reference:
// reference/src/sparse_attn/.
//
// sparse_attn_centroids(const u16* xq, const u16* xk /* bf16 bits [B*H*N, D] */, int bh_count,
//   int n, int dim, int nb, float s, float* cent, float4* stat)
//   grid (nb, B*H, 2) x SPARSE_ATTN_CENT_THREADS, z = 0: q, 1: k; dim <= SPARSE_ATTN_MAX_D.
//   cent = [cq [B*H, nb, D] | kn [B*H, D, nb]]: cq the q centroids, kn the k centroids times
//   1/|k| (transposed: a warp reads 32 key blocks coalesced). stat = [B*H*nb q | B*H*nb k]
//   float4: q {|q|, 1/|q| (0 if |q| = 0), a = min(s|q|, 15), sinh 2a}, k {|k|, b, sinh 2b, 0}.
// sparse_attn_select(const float* cent, const float4* stat, int bh_count, int nb, int dim,
//   float s, int kb, int* lists /* [B*H, nb, kb] */, int* counts /* [B*H, nb] */)
//   one warp per (b*h, query block), SPARSE_ATTN_SEL_WARPS warps per CTA, grid
//   ceil(B*H*nb / SPARSE_ATTN_SEL_WARPS); kb <= SPARSE_ATTN_MAX_KB, dim <= SPARSE_ATTN_MAX_D.
//
// The score of each (query block, key block) is bit-identical to the first version of this file
// (one warp per query block, every lane re-reading and re-normalising its key centroids), whose
// SASS (nvcc 13, -O3, default -fmad=true) was: |.|^2 as an fma chain, x = fma(q, 1/|q|,
// -(k * 1/|k|)), dd = fma(x, x, dd), z = fma(2 sh, sh, (sinh 2a * sinh 2b) * omc). The intrinsics
// below pin those roundings, so the hoisted per-block terms and the new loop order change no bit
// and the same blocks are selected in the same order (ci/cuda-emu/sparse.cpp checks it against a
// copy of the old kernel).
#define SPARSE_ATTN_BLOCK 64
#define SPARSE_ATTN_MAX_KB 64
#define SPARSE_ATTN_MAX_D 128
#define SPARSE_ATTN_CENT_THREADS 128
#define SPARSE_ATTN_SEL_WARPS 4
// Key blocks scored per pass into shared memory (<= 32 per lane: a 32-bit mask marks the taken
// ones); a query block past it merges each pass's winners with the sorted top list so far.
#define SPARSE_ATTN_TILE 256

__device__ __forceinline__ float sp_bf16(unsigned short h) { return __uint_as_float((unsigned int)h << 16); }

__device__ __forceinline__ float sp_warp_sum(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// The order of the selection: higher score first, then the lower block (block indices are unique,
// scores are never NaN for s > 0: a total order, so every reduction tree gives the same winner).
__device__ __forceinline__ bool sp_better(float s, int j, float bs, int bj) { return s > bs || (s == bs && j < bj); }

// One CTA per (block, b*h, side): the block's rows are staged in shared memory with 16-byte loads
// (all in flight at once; the old one-thread-per-column loop was latency bound), then each column
// is summed over the rows in row order, as before.
extern "C" __global__ void __launch_bounds__(SPARSE_ATTN_CENT_THREADS) sparse_attn_centroids(const unsigned short* xq, const unsigned short* xk, int bh_count, int n, int dim, int nb, float s, float* cent, float4* stat) {
    __shared__ __align__(16) unsigned short tile[SPARSE_ATTN_BLOCK * SPARSE_ATTN_MAX_D];
    __shared__ float c[SPARSE_ATTN_MAX_D];
    __shared__ float ik;
    const int blk = blockIdx.x, bh = blockIdx.y, side = blockIdx.z, tid = threadIdx.x;
    const int r0 = blk * SPARSE_ATTN_BLOCK, rows = min(n, r0 + SPARSE_ATTN_BLOCK) - r0, total = rows * dim;
    const unsigned short* x = (side ? xk : xq) + ((long long)bh * n + r0) * dim;
    if ((dim & 7) == 0 && ((unsigned long long)x & 15) == 0) {
        for (int i = tid; i < total / 8; i += blockDim.x) reinterpret_cast<uint4*>(tile)[i] = __ldg(reinterpret_cast<const uint4*>(x) + i);
    } else {
        for (int i = tid; i < total; i += blockDim.x) tile[i] = x[i];
    }
    __syncthreads();
    for (int e = tid; e < dim; e += blockDim.x) {
        float acc = 0.0f;
        for (int r = 0; r < rows; ++r) acc += sp_bf16(tile[r * dim + e]);
        c[e] = acc / (float)rows;
    }
    __syncthreads();
    const long long row = (long long)bh * nb + blk;
    if (side == 0) {
        for (int e = tid; e < dim; e += blockDim.x) cent[row * dim + e] = c[e];
        if (tid < 32) {  // |q| as the old select warp summed it: lane-strided, then a butterfly
            float qq = 0.0f;
            for (int e = tid; e < dim; e += 32) qq = __fmaf_rn(c[e], c[e], qq);
            const float rq = sqrtf(sp_warp_sum(qq)), a = fminf(__fmul_rn(s, rq), 15.0f);
            if (tid == 0) stat[row] = make_float4(rq, rq > 0.0f ? 1.0f / rq : 0.0f, a, sinhf(2.0f * a));
        }
    } else {
        if (tid == 0) {  // |k| sequentially over the columns, as the old select lane did
            float kk = 0.0f;
            for (int e = 0; e < dim; ++e) kk = __fmaf_rn(c[e], c[e], kk);
            const float rk = sqrtf(kk), b = fminf(__fmul_rn(s, rk), 15.0f);
            ik = rk > 0.0f ? 1.0f / rk : 0.0f;  // unused when |k| = 0 (or NaN): select tests |k| > 0
            stat[(long long)bh_count * nb + row] = make_float4(rk, b, sinhf(2.0f * b), 0.0f);
        }
        __syncthreads();
        float* kn = cent + (long long)bh_count * nb * dim + (long long)bh * dim * nb + blk;
        for (int e = tid; e < dim; e += blockDim.x) kn[(long long)e * nb] = __fmul_rn(c[e], ik);
    }
}

// -d(q, k) / s of one (query, key block) pair; q in shared memory, kn = the key's column of kn.
__device__ __forceinline__ float sp_score(const float* q, float4 qs, const float* kn, int nb, int dim, float4 ks, float s) {
    float omc = 1.0f;  // 1 - cos as |q^ - k^|^2 / 2 (no cancellation for near-parallel rows)
    if (qs.x > 0.0f && ks.x > 0.0f) {
        float dd = 0.0f;
        int e = 0;
        for (; e + 4 <= dim; e += 4) {
            const float4 q4 = *reinterpret_cast<const float4*>(q + e);
            const float x0 = __fmaf_rn(q4.x, qs.y, -__ldg(kn + (long long)e * nb));
            const float x1 = __fmaf_rn(q4.y, qs.y, -__ldg(kn + (long long)(e + 1) * nb));
            const float x2 = __fmaf_rn(q4.z, qs.y, -__ldg(kn + (long long)(e + 2) * nb));
            const float x3 = __fmaf_rn(q4.w, qs.y, -__ldg(kn + (long long)(e + 3) * nb));
            dd = __fmaf_rn(x3, x3, __fmaf_rn(x2, x2, __fmaf_rn(x1, x1, __fmaf_rn(x0, x0, dd))));
        }
        for (; e < dim; ++e) {
            const float x = __fmaf_rn(q[e], qs.y, -__ldg(kn + (long long)e * nb));
            dd = __fmaf_rn(x, x, dd);
        }
        omc = fminf(0.5f * dd, 2.0f);
    }
    const float sh = sinhf(qs.z - ks.y);
    const float z = fmaxf(__fmaf_rn(2.0f * sh, sh, __fmul_rn(__fmul_rn(qs.w, ks.z), omc)), 0.0f);
    return -log1pf(__fadd_rn(z, sqrtf(__fmul_rn(z, __fadd_rn(z, 2.0f))))) / s;
}

// One warp per (b*h, query block): lanes = key blocks, their scores for a tile of key blocks in
// shared memory, each lane keeping the best of its own; then rounds of a warp arg-max (the winning
// lane rescans its column) merged with the sorted winners of the earlier tiles, whose blocks are
// all lower and so win ties. The result is the top k_b - 1 in the selection order, as before.
extern "C" __global__ void __launch_bounds__(SPARSE_ATTN_SEL_WARPS * 32) sparse_attn_select(const float* cent, const float4* stat, int bh_count, int nb, int dim, float s, int kb, int* lists, int* counts) {
    __shared__ float sc[SPARSE_ATTN_SEL_WARPS][SPARSE_ATTN_TILE];
    __shared__ float top_s[SPARSE_ATTN_SEL_WARPS][2][SPARSE_ATTN_MAX_KB];
    __shared__ int top_j[SPARSE_ATTN_SEL_WARPS][2][SPARSE_ATTN_MAX_KB];
    __shared__ __align__(16) float qrow[SPARSE_ATTN_SEL_WARPS][SPARSE_ATTN_MAX_D];
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long long t = (long long)blockIdx.x * SPARSE_ATTN_SEL_WARPS + w;
    if (t >= (long long)bh_count * nb) return;  // the whole warp
    const int bh = (int)(t / nb), qb = (int)(t % nb);
    const float* q = cent + t * dim;
    for (int e = lane; e < dim; e += 32) qrow[w][e] = q[e];
    const float4 qs = stat[t];
    const float* kn = cent + (long long)bh_count * nb * dim + (long long)bh * dim * nb;
    const float4* ks = stat + (long long)bh_count * nb + (long long)bh * nb;
    const int keep = min(kb - 1, qb);  // earlier blocks beside the diagonal
    __syncwarp();
    int have = 0, cur = 0;  // top_*[w][cur][0, have): the sorted winners of the tiles so far
    for (int t0 = 0; t0 < qb && keep > 0; t0 += SPARSE_ATTN_TILE) {
        const int t1 = min(qb, t0 + SPARSE_ATTN_TILE);
        float bs = -INFINITY;
        int bj = 0x7fffffff;  // below any real candidate, -inf scores included
        for (int j = t0 + lane; j < t1; j += 32) {
            const float v = sp_score(qrow[w], qs, kn + j, nb, dim, ks[j], s);
            sc[w][j - t0] = v;
            if (sp_better(v, j, bs, bj)) { bs = v; bj = j; }
        }
        unsigned taken = 0;  // bit i: block t0 + lane + 32 i is in the list
        const int rounds = min(keep, t1), nxt = cur ^ 1;
        int head = 0;
        for (int p = 0; p < rounds; ++p) {
            float ws = bs;
            int wj = bj;
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) {
                const float os = __shfl_xor_sync(0xffffffffu, ws, o);
                const int oj = __shfl_xor_sync(0xffffffffu, wj, o);
                if (sp_better(os, oj, ws, wj)) { ws = os; wj = oj; }
            }
            if (head < have && !sp_better(ws, wj, top_s[w][cur][head], top_j[w][cur][head])) {
                ws = top_s[w][cur][head];
                wj = top_j[w][cur][head];
                ++head;
            } else if (wj == bj) {  // this lane's candidate won: take it, find its next best
                taken |= 1u << ((wj - t0) >> 5);
                bs = -INFINITY;
                bj = 0x7fffffff;
                for (int i = 0, j = t0 + lane; j < t1; ++i, j += 32)
                    if (!(taken >> i & 1u) && sp_better(sc[w][j - t0], j, bs, bj)) { bs = sc[w][j - t0]; bj = j; }
            }
            if (lane == 0) { top_s[w][nxt][p] = ws; top_j[w][nxt][p] = wj; }
        }
        __syncwarp();
        have = rounds;
        cur = nxt;
    }
    int* out = lists + t * kb;
    for (int p = lane; p < kb; p += 32) out[p] = p == 0 ? qb : p <= keep ? top_j[w][cur][p - 1] : -1;
    if (lane == 0) counts[t] = 1 + keep;
}
