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
// LSH selection (selection B) and attention over index lists; rows = B*H*N, one warp per row:
// sparse_attn_lsh_codes(const u16* xq, const u16* xk /* bf16 [rows, D] */, int rows, int dim,
//   int tables, int bits, const float* planes /* [T, h, D] */, float s, unsigned* codes
//   /* [2, rows, T]: q then k */, float4* terms /* [2, rows] */)
//   grid (ceil(rows / SPARSE_ATTN_LSH_WARPS), 2) x SPARSE_ATTN_LSH_WARPS warps, y = 0: q, 1: k.
//   Bit b of table t: <planes[t, b], x> >= 0 over the bf16 row itself (as muse_reference's
//   Lsh::code; the sign is that of the unit direction). tables = 0: the terms only (planes and
//   codes unread). terms {|x|, 1/|x| (0 if x = 0), a = min(s|x|, 15), sinh 2a}.
// sparse_attn_lsh_buckets(const unsigned* kcodes /* [B*H*N, T] */, int n, int tables, int bits,
//   int* offsets /* [B*H, T, 2^h + 1] */, int* order /* [B*H, T, N] */)
//   grid (T, B*H) x SPARSE_ATTN_LSH_BUCKET_THREADS: a counting sort of the keys by code; bucket c
//   of (bh, t) is order[offsets[c], offsets[c + 1]) (positions, in no particular order).
// sparse_attn_lsh_select(const u16* xq, const u16* xk, const float4* terms, const unsigned* codes,
//   const int* offsets, const int* order, int bh_count, int n, int dim, int tables, int bits,
//   int k_cap, int window, int* idx /* [rows, k_cap] */)
//   grid ceil(rows / SPARSE_ATTN_LSH_WARPS) x SPARSE_ATTN_LSH_WARPS warps. Query i's candidates:
//   the window i - window < j <= i, then per table the keys j <= i of its bucket that no earlier
//   source holds (each key once); the k_cap best by -d (ties: the lower j), ascending, -1 padded.
//   k_cap <= SPARSE_ATTN_LSH_MAX_KCAP, T <= SPARSE_ATTN_LSH_MAX_TABLES, h <= SPARSE_ATTN_LSH_MAX_BITS.
// sparse_attn_indexed_fwd(const u16* xq, const u16* xk, const u16* xv, const float4* terms,
//   const int* idx /* [rows, kk] */, int bh_count, int n, int dim, int dv, int kk, float s,
//   float scale /* -beta / s */, float* o /* [rows, dv] */, float* lse /* [rows] */)
//   grid ceil(rows / SPARSE_ATTN_LSH_WARPS) x SPARSE_ATTN_LSH_WARPS warps; entries outside [0, i]
//   are skipped (padding, causality); dim, dv <= SPARSE_ATTN_MAX_D.
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
#define SPARSE_ATTN_LSH_WARPS 4
#define SPARSE_ATTN_LSH_MAX_TABLES 16
#define SPARSE_ATTN_LSH_MAX_BITS 12
// tables * bits (the codes kernel's ballots, 32 planes each)
#define SPARSE_ATTN_LSH_MAX_PLANES 128
#define SPARSE_ATTN_LSH_MAX_KCAP 256
// Candidates per warp in shared memory before a prune to the k_cap best (>= MAX_KCAP + 32).
#define SPARSE_ATTN_LSH_BUF 512
#define SPARSE_ATTN_LSH_BUCKET_THREADS 256

__device__ __forceinline__ float sp_bf16(unsigned short h) { return __uint_as_float((unsigned int)h << 16); }

__device__ __forceinline__ float sp_warp_sum(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

#include "include/sparse_lsh.cuh"

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

// ---- LSH selection and index attention (see the header) ----

extern "C" __global__ void __launch_bounds__(SPARSE_ATTN_LSH_WARPS * 32) sparse_attn_lsh_codes(const unsigned short* xq, const unsigned short* xk, int rows, int dim, int tables, int bits, const float* planes, float s, unsigned* codes, float4* terms) {
    __shared__ float xr[SPARSE_ATTN_LSH_WARPS][SPARSE_ATTN_MAX_D];
    __shared__ unsigned words[SPARSE_ATTN_LSH_WARPS][SPARSE_ATTN_LSH_MAX_PLANES / 32];
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, side = blockIdx.y;
    const long long r = (long long)blockIdx.x * SPARSE_ATTN_LSH_WARPS + w;
    if (r >= rows) return;  // the whole warp
    const unsigned short* x = (side ? xk : xq) + r * dim;
    float xx = 0.0f;
    for (int e = lane; e < dim; e += 32) {
        const float v = sp_bf16(x[e]);
        xr[w][e] = v;
        xx = __fmaf_rn(v, v, xx);
    }
    const float rx = sqrtf(sp_warp_sum(xx)), a = fminf(__fmul_rn(s, rx), 15.0f);
    const long long at = (long long)side * rows + r;
    if (lane == 0) terms[at] = make_float4(rx, rx > 0.0f ? 1.0f / rx : 0.0f, a, sinhf(2.0f * a));
    const int np = tables * bits;
    if (np == 0) return;
    __syncwarp();
    for (int p0 = 0; p0 < np; p0 += 32) {  // lane = plane: one sequential f32 dot per plane
        const int p = p0 + lane;
        bool bit = false;
        if (p < np) {
            const float* pl = planes + (long long)p * dim;
            float acc = 0.0f;
            for (int e = 0; e < dim; ++e) acc = __fmaf_rn(__ldg(pl + e), xr[w][e], acc);
            bit = acc >= 0.0f;
        }
        const unsigned m = __ballot_sync(0xffffffffu, bit);
        if (lane == 0) words[w][p0 >> 5] = m;
    }
    __syncwarp();
    for (int t = lane; t < tables; t += 32) {  // table t = planes [t h, t h + h) of the bit vector
        const int st = t * bits, lo = st >> 5;
        unsigned long long v = words[w][lo];
        if ((lo + 1) * 32 < np) v |= (unsigned long long)words[w][lo + 1] << 32;
        codes[at * tables + t] = (unsigned)(v >> (st & 31)) & ((1u << bits) - 1u);
    }
}

extern "C" __global__ void __launch_bounds__(SPARSE_ATTN_LSH_BUCKET_THREADS) sparse_attn_lsh_buckets(const unsigned* kcodes, int n, int tables, int bits, int* offsets, int* order) {
    __shared__ unsigned cnt[1 << SPARSE_ATTN_LSH_MAX_BITS];
    __shared__ unsigned part[SPARSE_ATTN_LSH_BUCKET_THREADS];
    const int t = blockIdx.x, bh = blockIdx.y, tid = threadIdx.x, nt = SPARSE_ATTN_LSH_BUCKET_THREADS;
    const int nbins = 1 << bits;
    for (int b = tid; b < nbins; b += nt) cnt[b] = 0u;
    __syncthreads();
    const unsigned* kc = kcodes + (long long)bh * n * tables + t;
    for (int j = tid; j < n; j += nt) atomicAdd(&cnt[kc[(long long)j * tables]], 1u);
    __syncthreads();
    const int per = (nbins + nt - 1) / nt, b0 = min(nbins, tid * per), b1 = min(nbins, b0 + per);
    unsigned sum = 0u;
    for (int b = b0; b < b1; ++b) sum += cnt[b];
    part[tid] = sum;
    __syncthreads();
    for (int o = 1; o < nt; o <<= 1) {  // inclusive scan of the per-thread sums
        const unsigned v = tid >= o ? part[tid - o] : 0u;
        __syncthreads();
        part[tid] += v;
        __syncthreads();
    }
    int* off = offsets + ((long long)bh * tables + t) * (nbins + 1);
    unsigned run = part[tid] - sum;
    for (int b = b0; b < b1; ++b) {
        const unsigned c = cnt[b];
        off[b] = (int)run;
        cnt[b] = run;  // the bucket's cursor
        run += c;
    }
    if (tid == 0) off[nbins] = n;
    __syncthreads();
    int* ord = order + ((long long)bh * tables + t) * n;
    for (int j = tid; j < n; j += nt) ord[atomicAdd(&cnt[kc[(long long)j * tables]], 1u)] = j;
}

extern "C" __global__ void __launch_bounds__(SPARSE_ATTN_LSH_WARPS * 32) sparse_attn_lsh_select(const unsigned short* xq, const unsigned short* xk, const float4* terms, const unsigned* codes, const int* offsets, const int* order, int bh_count, int n, int dim, int tables, int bits, int k_cap, int window, int* idx) {
    __shared__ unsigned zk[SPARSE_ATTN_LSH_WARPS][SPARSE_ATTN_LSH_BUF];
    __shared__ int cj[SPARSE_ATTN_LSH_WARPS][SPARSE_ATTN_LSH_BUF];
    __shared__ unsigned hist[SPARSE_ATTN_LSH_WARPS][256];
    __shared__ float qh[SPARSE_ATTN_LSH_WARPS][SPARSE_ATTN_MAX_D];
    __shared__ unsigned qc[SPARSE_ATTN_LSH_WARPS][SPARSE_ATTN_LSH_MAX_TABLES];
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long long rows = (long long)bh_count * n, row = (long long)blockIdx.x * SPARSE_ATTN_LSH_WARPS + w;
    if (row >= rows) return;  // the whole warp
    const int bh = (int)(row / n), i = (int)(row % n);
    const float4 tq = terms[row];
    for (int e = lane; e < dim; e += 32) qh[w][e] = sp_bf16(xq[row * dim + e]) * tq.y;  // q^ (0 if q = 0)
    for (int t = lane; t < tables; t += 32) qc[w][t] = codes[row * tables + t];
    __syncwarp();
    const unsigned short* kx = xk + (long long)bh * n * dim;
    const float4* tk = terms + rows + (long long)bh * n;
    const unsigned* kc = codes + (rows + (long long)bh * n) * tables;
    const int w0 = window > i ? 0 : i - window + 1;  // the window is [w0, i]
    int cnt = 0;
    // sources: the window, then tables 0..T-1 (a key only from the first source that holds it)
    for (int src = -1; src < tables; ++src) {
        int p0 = w0, p1 = i + 1;
        const int* ord = nullptr;
        if (src >= 0) {
            const int* off = offsets + ((long long)bh * tables + src) * ((1 << bits) + 1);
            p0 = off[qc[w][src]];
            p1 = off[qc[w][src] + 1];
            ord = order + ((long long)bh * tables + src) * n;
        }
        for (; p0 < p1; p0 += 32) {
            const int p = p0 + lane;
            int j = p;
            bool ok = p < p1;
            if (ok && src >= 0) {
                j = ord[p];
                ok = j < w0;  // j <= i and outside the window
                for (int t = 0; t < src && ok; ++t) ok = kc[(long long)j * tables + t] != qc[w][t];
            }
            const unsigned m = __ballot_sync(0xffffffffu, ok);
            if (m == 0u) continue;
            if (cnt + 32 > SPARSE_ATTN_LSH_BUF) cnt = sp_lsh_prune(zk[w], cj[w], hist[w], cnt, k_cap, lane);
            if (ok) {
                const int at = cnt + __popc(m & ((1u << lane) - 1u));
                zk[w][at] = sp_zkey(sp_lsh_z(qh[w], tq, kx + (long long)j * dim, tk[j], dim));
                cj[w][at] = j;
            }
            cnt += __popc(m);
            __syncwarp();
        }
    }
    if (cnt > k_cap) cnt = sp_lsh_prune(zk[w], cj[w], hist[w], cnt, k_cap, lane);
    sp_lsh_sort(cj[w], cnt, lane);
    int* out = idx + row * k_cap;
    for (int p = lane; p < k_cap; p += 32) out[p] = p < cnt ? cj[w][p] : -1;
}

extern "C" __global__ void __launch_bounds__(SPARSE_ATTN_LSH_WARPS * 32) sparse_attn_indexed_fwd(const unsigned short* xq, const unsigned short* xk, const unsigned short* xv, const float4* terms, const int* idx, int bh_count, int n, int dim, int dv, int kk, float s, float scale, float* o, float* lse) {
    __shared__ float qh[SPARSE_ATTN_LSH_WARPS][SPARSE_ATTN_MAX_D];
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long long rows = (long long)bh_count * n, row = (long long)blockIdx.x * SPARSE_ATTN_LSH_WARPS + w;
    if (row >= rows) return;  // the whole warp
    const int bh = (int)(row / n), i = (int)(row % n);
    const float4 tq = terms[row];
    for (int e = lane; e < dim; e += 32) qh[w][e] = sp_bf16(xq[row * dim + e]) * tq.y;
    __syncwarp();
    const unsigned short* kx = xk + (long long)bh * n * dim;
    const unsigned short* vx = xv + (long long)bh * n * dv;
    const float4* tk = terms + rows + (long long)bh * n;
    const int* li = idx + row * kk;
    float m = -INFINITY, l = 0.0f, acc[SPARSE_ATTN_MAX_D / 32];
#pragma unroll
    for (int r = 0; r < SPARSE_ATTN_MAX_D / 32; ++r) acc[r] = 0.0f;
    for (int c0 = 0; c0 < kk; c0 += 32) {  // lane = list entry: its score, then p v over the warp
        const int c = c0 + lane, j = c < kk ? li[c] : -1;
        const bool ok = j >= 0 && j <= i;
        float sc = -INFINITY;
        if (ok) sc = scale * sp_acosh1p(sp_lsh_z(qh[w], tq, kx + (long long)j * dim, tk[j], dim));
        const unsigned mask = __ballot_sync(0xffffffffu, ok);
        if (mask == 0u) continue;
        float cm = sc;
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) cm = fmaxf(cm, __shfl_xor_sync(0xffffffffu, cm, off));
        const float mn = fmaxf(m, cm), corr = expf(m - mn), p = ok ? expf(sc - mn) : 0.0f;
        l = __fmaf_rn(l, corr, sp_warp_sum(p));
#pragma unroll
        for (int r = 0; r < SPARSE_ATTN_MAX_D / 32; ++r) acc[r] *= corr;
        for (unsigned mm = mask; mm; mm &= mm - 1u) {
            const int from = __ffs(mm) - 1;
            const float pj = __shfl_sync(0xffffffffu, p, from);
            const int jj = __shfl_sync(0xffffffffu, j, from);
            const unsigned short* vr = vx + (long long)jj * dv;
#pragma unroll
            for (int r = 0; r < SPARSE_ATTN_MAX_D / 32; ++r)
                if (lane + 32 * r < dv) acc[r] = __fmaf_rn(pj, sp_bf16(vr[lane + 32 * r]), acc[r]);
        }
        m = mn;
    }
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
    for (int r = 0; r < SPARSE_ATTN_MAX_D / 32; ++r)
        if (lane + 32 * r < dv) o[row * dv + lane + 32 * r] = acc[r] * inv;
    if (lane == 0) lse[row] = l > 0.0f ? m + logf(l) : -INFINITY;
}
