// Hyperbolic attention forward on the tensor cores: bf16 q, k, v with D = Dv in {64, 128}, exact
// form, f32 geometry (design hyperbolic.md §2.3, §3.2-3.3). Launchers: ../src/hyp_attn_tc.rs.
//
// FlashAttention-2 schedule: a CTA of 4 warps owns 64 query rows of one (b, h) (16 per warp), Q in
// registers as mma A fragments, K/V tiles of BN keys double-buffered in shared memory by cp.async.
// Per tile: dot = Q.K^T on the tensor cores (mma.sync m16n8k16 bf16, f32 accumulation: exact
// products of the bf16 inputs), then per pair the law of cosines from per-row terms,
//   sh' = qx kx - qy ky = sqrt(2) sinh(a - b),   z = sh'^2 + qS kS - qSr kSr dot,
//   d = ln(1 + z + sqrt(z (z + 2))) / s,
// so the inner loop has 3 special-function ops (sqrt, lg2, ex2) and no sinh/cosh; scores in base
// 2, online softmax, P (bf16) . V on the tensor cores. Fully masked key tiles are skipped, only
// edge tiles are masked per element; causal CTAs start with the longest rows.
//
// Exported:
//   hyp_attn_tc_prep_q(const bf16* x, float4* terms, int rows, int dim, float s)
//   hyp_attn_tc_prep_k(const bf16* x, float4* terms, int rows, int dim, float s)
//     q terms (E/sqrt2, 1/(sqrt2 E), sinh 2a, sinh 2a / r); k terms (1/F, F, sinh 2b, sinh 2b / rho)
//   hyp_attn_tc_fwd_d64(TC_ARGS), hyp_attn_tc_fwd_d128(TC_ARGS)
//   hyp_attn_tc_fwd_d64_sparse(TC_ARGS, const int* lists, const int* counts, int kmax): only the
//     listed 64-key blocks of each 64-query block (lists [B*H, ceil(N/64), kmax], counts
//     [B*H, ceil(N/64)]; src/sparse_attn.rs selects them)
//     TC_ARGS = const bf16* q, const bf16* k, const bf16* v, const float4* tq, const float4* tk,
//       float* o, float* lse, int heads, int n, int m, float neg_beta_over_s_log2,
//       int mask, int window, const int* lengths
// Layouts: q [B*H*N, D], k, v [B*H*M, D], o [B*H*N, D] f32, lse [B*H*N] f32 (natural log).
#include "include/hyp_attn_common.cuh"
#include "include/tc.cuh"

#define HYP_ATTN_TC_BM 64
#define HYP_ATTN_TC_THREADS 128
#define HYP_ATTN_TC_PREP_WARPS 8

// Per-row terms of the tangent rows (warp per row): is_q selects the query or the key layout.
__device__ void tc_prep(const bf16* __restrict__ x, float4* __restrict__ terms, int rows, int dim, float s, bool is_q) {
    const int lane = threadIdx.x & 31;
    const long long row = (long long)blockIdx.x * HYP_ATTN_TC_PREP_WARPS + (threadIdx.x >> 5);
    if (row >= rows) return;
    float n2 = 0.f;
    for (int d = lane; d < dim; d += 32) {
        const float e = bf16_to_f32(x[row * dim + d]);
        n2 = fmaf(e, e, n2);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) n2 += __shfl_xor_sync(0xffffffffu, n2, o);
    if (lane != 0) return;
    const TangentTerms<float> t = tangent_terms(s, sqrtf(n2));
    const float e = expf(t.a);
    const float r2 = 0.70710678118654752f;
    terms[row] = is_q ? make_float4(e * r2, r2 / e, t.sinh2a, t.sinh2a_over_r)
                      : make_float4(1.f / e, e, t.sinh2a, t.sinh2a_over_r);
}

// SPARSE: the key tiles come from lists [B*H, ceil(N/BM), kmax] of BM-key blocks (BN = BM), counts
// [B*H, ceil(N/BM)] (the block-skip variant of design §6); otherwise every visible tile, in order.
template <int D, int BN, bool SPARSE>
__device__ void tc_forward(const bf16* __restrict__ q, const bf16* __restrict__ k,
                           const bf16* __restrict__ v, const float4* __restrict__ tq,
                           const float4* __restrict__ tk, float* __restrict__ o, float* __restrict__ lse, int heads,
                           int n, int m, float scale2, MaskSpec mk, const int* __restrict__ lists,
                           const int* __restrict__ counts, int kmax) {
    constexpr int BM = HYP_ATTN_TC_BM, LD = D + 8, NT = BN / 8, KT = D / 16, OT = D / 8;
    __shared__ __align__(16) bf16 ks[2][BN][LD];
    __shared__ __align__(16) bf16 vs[2][BN][LD];
    __shared__ __align__(16) float4 kts[2][BN];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, cq = lane & 3;
    const int qblk = gridDim.x - 1 - blockIdx.x;  // longest causal rows first
    const int bh = blockIdx.y, b = bh / heads;
    const int i0 = qblk * BM;
    const long long qb = (long long)bh * n, kb = (long long)bh * m;
    const int rA = i0 + warp * 16 + g, rB = rA + 8;  // this thread's two rows
    const int last = (i0 + BM < n ? i0 + BM : n) - 1;
    const int2 first_rng = visible(mk, b, i0), last_rng = visible(mk, b, last);
    const int lo_blk = first_rng.x, hi_blk = last_rng.y;
    // Tiles inside [lo of the last row, hi of the first row) need no per-element mask.
    const int full_lo = last_rng.x, full_hi = first_rng.y;
    const int2 rngA = rA < n ? visible(mk, b, rA) : make_int2(0, 0);
    const int2 rngB = rB < n ? visible(mk, b, rB) : make_int2(0, 0);

    // Q fragments straight from global memory (once per CTA).
    uint32_t qa[KT][4];
    {
        const uint32_t* qA = reinterpret_cast<const uint32_t*>(q + (qb + (rA < n ? rA : 0)) * D);
        const uint32_t* qB = reinterpret_cast<const uint32_t*>(q + (qb + (rB < n ? rB : 0)) * D);
#pragma unroll
        for (int kt = 0; kt < KT; ++kt) {
            const int c = (kt * 16 + 2 * cq) / 2;
            qa[kt][0] = rA < n ? qA[c] : 0u;
            qa[kt][1] = rB < n ? qB[c] : 0u;
            qa[kt][2] = rA < n ? qA[c + 4] : 0u;
            qa[kt][3] = rB < n ? qB[c + 4] : 0u;
        }
    }
    const float4 zero4 = make_float4(0.f, 0.f, 0.f, 0.f);
    const float4 tA = rA < n ? tq[qb + rA] : zero4, tB = rB < n ? tq[qb + rB] : zero4;

    float acc[OT][4];
#pragma unroll
    for (int e = 0; e < OT; ++e) acc[e][0] = acc[e][1] = acc[e][2] = acc[e][3] = 0.f;
    float mA = -INFINITY, mB = -INFINITY, lA = 0.f, lB = 0.f;

    const int t_first = lo_blk / BN, t_end = (hi_blk + BN - 1) / BN;
    const long long list_row = (long long)bh * gridDim.x + qblk;
    const int n_tiles = SPARSE ? counts[list_row] : t_end - t_first;
    auto tile_at = [&](int idx) { return SPARSE ? lists[list_row * kmax + idx] : t_first + idx; };
    auto load = [&](int stage, int t) {
        const int j0 = t * BN;
        constexpr int CH = D / 8;  // 16-byte chunks per row
        for (int idx = threadIdx.x; idx < BN * CH; idx += HYP_ATTN_TC_THREADS) {
            const int r = idx / CH, ch = idx % CH, j = j0 + r;
            const int bytes = j < m ? 16 : 0;
            const long long off = (kb + (j < m ? j : 0)) * D + ch * 8;
            cp16(&ks[stage][r][ch * 8], k + off, bytes);
            cp16(&vs[stage][r][ch * 8], v + off, bytes);
        }
        for (int r = threadIdx.x; r < BN; r += HYP_ATTN_TC_THREADS) {
            const int j = j0 + r;
            cp16(&kts[stage][r], tk + kb + (j < m ? j : 0), j < m ? 16 : 0);
        }
    };
    if (n_tiles > 0) load(0, tile_at(0));
    cp_commit();
    for (int idx = 0; idx < n_tiles; ++idx) {
        const int st = idx & 1;
        if (idx + 1 < n_tiles) load(st ^ 1, tile_at(idx + 1));
        cp_commit();
        cp_wait<1>();
        __syncthreads();
        const int j0 = tile_at(idx) * BN;
        // dot = Q.K^T for this warp's 16 rows and the tile's BN keys.
        float sc[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.f;
#pragma unroll
        for (int kt = 0; kt < KT; ++kt) {
#pragma unroll
            for (int np = 0; np < NT / 2; ++np) {
                uint32_t bfr[4];
                const int row = np * 16 + (lane & 7) + ((lane >> 4) << 3);
                const int col = kt * 16 + (((lane >> 3) & 1) << 3);
                ldsm_x4(bfr, &ks[st][row][col]);
                mma16816(sc[2 * np], qa[kt], bfr[0], bfr[1]);
                mma16816(sc[2 * np + 1], qa[kt], bfr[2], bfr[3]);
            }
        }
        // Scores in base 2: -beta/s * log2(1 + z + sqrt(z (z + 2))).
        const bool full = j0 >= full_lo && j0 + BN <= full_hi;
        float tmA = -INFINITY, tmB = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
            for (int h = 0; h < 4; ++h) {
                const int jj = nt * 8 + 2 * cq + (h & 1);
                const float4 kt4 = kts[st][jj];
                const float4 qt = h < 2 ? tA : tB;
                const float sh = fmaf(qt.x, kt4.x, -qt.y * kt4.y);
                float z = fmaf(-qt.w * kt4.w, sc[nt][h], qt.z * kt4.z);
                z = fmaxf(fmaf(sh, sh, z), 0.f);
                float s2 = scale2 * fast_lg2(one_plus_acosh_arg(z));
                if (!full) {
                    const int j = j0 + jj;
                    const int2 rg = h < 2 ? rngA : rngB;
                    s2 = (j >= rg.x && j < rg.y) ? s2 : -INFINITY;
                }
                sc[nt][h] = s2;
                if (h < 2) tmA = fmaxf(tmA, s2);
                else tmB = fmaxf(tmB, s2);
            }
        }
#pragma unroll
        for (int off = 1; off <= 2; off <<= 1) {
            tmA = fmaxf(tmA, __shfl_xor_sync(0xffffffffu, tmA, off));
            tmB = fmaxf(tmB, __shfl_xor_sync(0xffffffffu, tmB, off));
        }
        const float nA = fmaxf(mA, tmA), nB = fmaxf(mB, tmB);
        const float uA = nA == -INFINITY ? 0.f : nA, uB = nB == -INFINITY ? 0.f : nB;
        // Rescale only rows whose running max moved (after the first tiles it rarely does).
        if (nA != mA) {
            const float aA = fast_ex2(mA - uA);
            lA *= aA;
#pragma unroll
            for (int e = 0; e < OT; ++e) acc[e][0] *= aA, acc[e][1] *= aA;
        }
        if (nB != mB) {
            const float aB = fast_ex2(mB - uB);
            lB *= aB;
#pragma unroll
            for (int e = 0; e < OT; ++e) acc[e][2] *= aB, acc[e][3] *= aB;
        }
        mA = nA;
        mB = nB;
        uint32_t pa[NT / 2][4];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            const float p0 = fast_ex2(sc[nt][0] - uA), p1 = fast_ex2(sc[nt][1] - uA);
            const float p2 = fast_ex2(sc[nt][2] - uB), p3 = fast_ex2(sc[nt][3] - uB);
            lA += p0 + p1;
            lB += p2 + p3;
            pa[nt / 2][(nt & 1) * 2 + 0] = pack_bf16(p0, p1);
            pa[nt / 2][(nt & 1) * 2 + 1] = pack_bf16(p2, p3);
        }
        // O += P.V.
#pragma unroll
        for (int kc = 0; kc < NT / 2; ++kc) {
#pragma unroll
            for (int ep = 0; ep < OT / 2; ++ep) {
                uint32_t bfr[4];
                const int row = kc * 16 + (lane & 7) + (((lane >> 3) & 1) << 3);
                const int col = ep * 16 + ((lane >> 4) << 3);
                ldsm_x4_t(bfr, &vs[st][row][col]);
                mma16816(acc[2 * ep], pa[kc], bfr[0], bfr[1]);
                mma16816(acc[2 * ep + 1], pa[kc], bfr[2], bfr[3]);
            }
        }
        __syncthreads();
    }
    cp_wait<0>();
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
        lA += __shfl_xor_sync(0xffffffffu, lA, off);
        lB += __shfl_xor_sync(0xffffffffu, lB, off);
    }
    const float iA = lA > 0.f ? 1.f / lA : 0.f, iB = lB > 0.f ? 1.f / lB : 0.f;
#pragma unroll
    for (int e = 0; e < OT; ++e) {
        const int col = e * 8 + 2 * cq;
        if (rA < n) *reinterpret_cast<float2*>(o + (qb + rA) * D + col) = make_float2(acc[e][0] * iA, acc[e][1] * iA);
        if (rB < n) *reinterpret_cast<float2*>(o + (qb + rB) * D + col) = make_float2(acc[e][2] * iB, acc[e][3] * iB);
    }
    if (cq == 0) {
        const float ln2 = 0.69314718055994531f;
        if (rA < n) lse[qb + rA] = lA > 0.f ? (mA + log2f(lA)) * ln2 : -INFINITY;
        if (rB < n) lse[qb + rB] = lB > 0.f ? (mB + log2f(lB)) * ln2 : -INFINITY;
    }
}

#define TC_ARGS                                                                                     \
    const bf16 *q, const bf16 *k, const bf16 *v, const float4 *tq,       \
        const float4 *tk, float *o, float *lse, int heads, int n, int m, float scale2, int mask,    \
        int window, const int *lengths
#define TC_CALL(D, BN) \
    { tc_forward<D, BN, false>(q, k, v, tq, tk, o, lse, heads, n, m, scale2, MaskSpec{mask, window, n, m, lengths}, nullptr, nullptr, 0); }

extern "C" __global__ void hyp_attn_tc_prep_q(const bf16* x, float4* terms, int rows, int dim, float s) { tc_prep(x, terms, rows, dim, s, true); }
extern "C" __global__ void hyp_attn_tc_prep_k(const bf16* x, float4* terms, int rows, int dim, float s) { tc_prep(x, terms, rows, dim, s, false); }
extern "C" __global__ void __launch_bounds__(HYP_ATTN_TC_THREADS) hyp_attn_tc_fwd_d64(TC_ARGS) TC_CALL(64, 64)
extern "C" __global__ void __launch_bounds__(HYP_ATTN_TC_THREADS) hyp_attn_tc_fwd_d128(TC_ARGS) TC_CALL(128, 32)
// The block-skip variant (D = 64, BN = BM = 64): lists and counts as in tc_forward.
extern "C" __global__ void __launch_bounds__(HYP_ATTN_TC_THREADS) hyp_attn_tc_fwd_d64_sparse(TC_ARGS, const int* lists, const int* counts, int kmax) {
    tc_forward<64, 64, true>(q, k, v, tq, tk, o, lse, heads, n, m, scale2, MaskSpec{mask, window, n, m, lengths}, lists, counts, kmax);
}
