// Hyperbolic attention backward on the tensor cores: bf16 q, k, v, dO with D = Dv in {64, 128},
// exact form, f32 geometry; recompute from q, k, v, o and lse only (design hyperbolic.md §3.4),
// deterministic schedule (a), no N x M buffer, no atomics. Launchers: ../src/hyp_attn_tc_bwd.rs.
//
// Per pair (i query, j key), from the row terms of hyp_attn_tc_bwd_prep and dot = q_i.k_j:
//   z, d, P = 2^(scale2 lg2(arg) - lse2_i), dP = dO_i.v_j, dS = P (dP - Delta_i), delta = -beta dS,
//   k = delta / (s sqrt(z (z + 2))), C = dot / (r_i rho_j), G = -k Sr_i Sr_j  (Sr = sinh 2a / r),
//   dz/da = 2 sinh 2(a-b) + 2 cosh 2a S_j (1-C),  dz/db = -2 sinh 2(a-b) + 2 S_i cosh 2b (1-C),
// and the gradients (reference/src/poincare/grad.rs pair_vjp, regrouped):
//   dq_i = q_i/r_i * sum_j k (s dz/da [a_i uncapped] + S_j Sr_i C) + sum_j G_ij k_j
//   dk_j = k_j/rho_j * sum_i k (s dz/db [b_j uncapped] + S_i Sr_j C) + sum_i G_ij q_i
//   dv_j = sum_i P_ij dO_i;  ds = sum beta dS d / s + k (dz/da r_i + dz/db rho_j);  dbeta = -sum dS d.
// The query-major kernel (dq, ds, dbeta partials per CTA) and the key-major kernel (dk, dv) each
// recompute S = Q K^T and dP = dO V^T on the tensor cores; G and P go back to the tensor cores as
// bf16 for G K, G^T Q and P^T dO.
//
// Exported:
//   hyp_attn_tc_bwd_prep(const bf16* x, const float* delta_src_o, const bf16* d_o, float4* t0,
//       float4* t1, float* delta, int rows, int dim, float s, int is_q)
//     t0 as the forward's terms; t1 = (cosh 2a, 1/r, r [uncapped], s [uncapped]); delta = dO.o
//     (queries only; o f32, d_o bf16)
//   hyp_attn_tc_bwd_dq_d{64,128}(BWD_TC_ARGS, float* dq, float* part_ds, float* part_dbeta)
//   hyp_attn_tc_bwd_dkdv_d{64,128}(BWD_TC_ARGS, float* dk, float* dv)
//     BWD_TC_ARGS = const bf16* q, const bf16* k, const bf16* v, const bf16* d_o,
//       const float4* tq0, const float4* tq1, const float4* tk0, const float4* tk1,
//       const float* lse, const float* delta, int heads, int n, int m, float s, float beta,
//       int mask, int window, const int* lengths
#include "include/hyp_attn_common.cuh"
#include "include/tc.cuh"

#define HYP_ATTN_TC_BWD_THREADS 128
#define HYP_ATTN_TC_BWD_BLOCK 64
#define HYP_ATTN_TC_BWD_PREP_WARPS 8

__device__ void bwd_prep(const bf16* __restrict__ x, const float* __restrict__ o, const bf16* __restrict__ d_o,
                         float4* __restrict__ t0, float4* __restrict__ t1, float* __restrict__ delta, int rows,
                         int dim, float s, bool is_q) {
    const int lane = threadIdx.x & 31;
    const long long row = (long long)blockIdx.x * HYP_ATTN_TC_BWD_PREP_WARPS + (threadIdx.x >> 5);
    if (row >= rows) return;
    float n2 = 0.f, dl = 0.f;
    for (int d = lane; d < dim; d += 32) {
        const float e = bf16_to_f32(x[row * dim + d]);
        n2 = fmaf(e, e, n2);
        if (is_q) dl = fmaf(bf16_to_f32(d_o[row * dim + d]), o[row * dim + d], dl);
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        n2 += __shfl_xor_sync(0xffffffffu, n2, off);
        dl += __shfl_xor_sync(0xffffffffu, dl, off);
    }
    if (lane != 0) return;
    const float r = sqrtf(n2);
    const TangentTerms<float> t = tangent_terms(s, r);
    const float e = expf(t.a), r2 = 0.70710678118654752f;
    t0[row] = is_q ? make_float4(e * r2, r2 / e, t.sinh2a, t.sinh2a_over_r)
                   : make_float4(1.f / e, e, t.sinh2a, t.sinh2a_over_r);
    t1[row] = make_float4(t.cosh2a, r > 0.f ? 1.f / r : 0.f, t.capped ? 0.f : r, t.capped ? 0.f : s);
    if (is_q) delta[row] = dl;
}

// One pair's backward scalars.
struct PairBwd {
    float p, g, coef_q, coef_k, dsv, ys, d;
};

// qa0/qa1: query terms (t0, t1); kb0/kb1: key terms; lse2 in base 2.
__device__ __forceinline__ PairBwd pair_bwd(float dot, float dp, float4 qa0, float4 qa1, float4 kb0, float4 kb1,
                                            float lse2, float delta_i, float s, float beta, float scale2) {
    PairBwd r;
    const float sh = fmaf(qa0.x, kb0.x, -qa0.y * kb0.y);
    const float ch = fmaf(qa0.x, kb0.x, qa0.y * kb0.y);
    float z = fmaf(-qa0.w * kb0.w, dot, qa0.z * kb0.z);
    z = fmaxf(fmaf(sh, sh, z), 0.f);
    const float zs = z * 5.421010862427522e-20f;  // sqrt(z (z + 2)) at scale 2^-64 (tc.cuh)
    const float sq = fast_sqrt(fmaf(zs, z, zs + zs)) * 4294967296.0f;
    const float lg = fast_lg2(z + 1.f + sq);
    r.p = fast_ex2(fmaf(scale2, lg, -lse2));
    const float dsv = r.p * (dp - delta_i);
    const float d = lg * (0.69314718055994531f / s);
    const float kk = z > 0.f ? -beta * dsv * __frcp_rn(s * fmaxf(sq, 1e-6f)) : 0.f;
    const float cos_ = dot * qa1.y * kb1.y, omc = 1.f - cos_;
    const float sc2 = 2.f * sh * ch;  // sinh 2(a - b)
    const float dzda = fmaf(2.f * qa1.x * kb0.z, omc, sc2);
    const float dzdb = fmaf(2.f * qa0.z * kb1.x, omc, -sc2);
    r.g = -kk * qa0.w * kb0.w;
    r.coef_q = kk * fmaf(qa1.w, dzda, kb0.z * qa0.w * cos_);
    r.coef_k = kk * fmaf(kb1.w, dzdb, qa0.z * kb0.w * cos_);
    // dL/ds per pair is dS * ys (ys = beta d/s - beta/(s sq) (dz/da r + dz/db rho)); kept apart
    // so the dq kernel can re-centre the scalar sums on its own Delta (see bwd_dq).
    const float rs = z > 0.f ? __frcp_rn(s * fmaxf(sq, 1e-6f)) : 0.f;
    r.ys = beta * fmaf(d, 1.f / s, -rs * fmaf(dzda, qa1.z, dzdb * kb1.z));
    r.dsv = dsv;
    r.d = d;
    return r;
}

#define BWD_TC_PARAMS                                                                                  \
    const bf16 *__restrict__ q, const bf16 *__restrict__ k, const bf16 *__restrict__ v,             \
        const bf16 *__restrict__ d_o, const float4 *__restrict__ tq0, const float4 *__restrict__ tq1, \
        const float4 *__restrict__ tk0, const float4 *__restrict__ tk1, const float *__restrict__ lse, \
        const float *__restrict__ delta, int heads, int n, int m, float s, float beta, int mask, int window, \
        const int *lengths

// A fragments of 16 rows (r0 = this thread's first row, r0 + 8 the second) of a [rows, D] bf16 matrix.
template <int KT>
__device__ __forceinline__ void load_a(uint32_t a[KT][4], const bf16* base, int rA, int rB, int rows, int D, int cq) {
    const uint32_t* pA = reinterpret_cast<const uint32_t*>(base + (long long)(rA < rows ? rA : 0) * D);
    const uint32_t* pB = reinterpret_cast<const uint32_t*>(base + (long long)(rB < rows ? rB : 0) * D);
#pragma unroll
    for (int kt = 0; kt < KT; ++kt) {
        const int c = kt * 8 + cq;
        a[kt][0] = rA < rows ? pA[c] : 0u;
        a[kt][1] = rB < rows ? pB[c] : 0u;
        a[kt][2] = rA < rows ? pA[c + 4] : 0u;
        a[kt][3] = rB < rows ? pB[c + 4] : 0u;
    }
}

// acc[2np], acc[2np+1] += A . T^T for a shared-memory tile T [T_ROWS][LD] (rows are the n index).
template <int KT, int NT, int LD>
__device__ __forceinline__ void mma_abt(float acc[NT][4], const uint32_t a[KT][4], const bf16 (*t)[LD], int lane) {
#pragma unroll
    for (int kt = 0; kt < KT; ++kt) {
#pragma unroll
        for (int np = 0; np < NT / 2; ++np) {
            uint32_t b[4];
            ldsm_x4(b, &t[np * 16 + (lane & 7) + ((lane >> 4) << 3)][kt * 16 + (((lane >> 3) & 1) << 3)]);
            mma16816(acc[2 * np], a[kt], b[0], b[1]);
            mma16816(acc[2 * np + 1], a[kt], b[2], b[3]);
        }
    }
}

// mma_abt with the A fragments read from shared memory: a = 16 rows [16][LD] (ldmatrix x4: lanes
// 0-15 address rows 0-15 at column 16 kt, lanes 16-31 the same rows at 16 kt + 8), for kernels
// whose register budget cannot hold a second operand's fragments.
template <int KT, int NT, int LD>
__device__ __forceinline__ void mma_abt_s(float acc[NT][4], const bf16 (*a)[LD], const bf16 (*t)[LD], int lane) {
#pragma unroll
    for (int kt = 0; kt < KT; ++kt) {
        uint32_t af[4];
        ldsm_x4(af, &a[lane & 15][kt * 16 + ((lane >> 4) << 3)]);
#pragma unroll
        for (int np = 0; np < NT / 2; ++np) {
            uint32_t b[4];
            ldsm_x4(b, &t[np * 16 + (lane & 7) + ((lane >> 4) << 3)][kt * 16 + (((lane >> 3) & 1) << 3)]);
            mma16816(acc[2 * np], af, b[0], b[1]);
            mma16816(acc[2 * np + 1], af, b[2], b[3]);
        }
    }
}

// acc[OT] += P . T for P given as C-layout values pv[NT][4] (the k index) and T [NT*8][LD].
template <int NT, int OT, int LD>
__device__ __forceinline__ void mma_pt(float acc[OT][4], const float pv[NT][4], const bf16 (*t)[LD], int lane) {
#pragma unroll
    for (int kc = 0; kc < NT / 2; ++kc) {
        uint32_t a[4] = {pack_bf16(pv[2 * kc][0], pv[2 * kc][1]), pack_bf16(pv[2 * kc][2], pv[2 * kc][3]),
                         pack_bf16(pv[2 * kc + 1][0], pv[2 * kc + 1][1]), pack_bf16(pv[2 * kc + 1][2], pv[2 * kc + 1][3])};
#pragma unroll
        for (int ep = 0; ep < OT / 2; ++ep) {
            uint32_t b[4];
            ldsm_x4_t(b, &t[kc * 16 + (lane & 7) + (((lane >> 3) & 1) << 3)][ep * 16 + ((lane >> 4) << 3)]);
            mma16816(acc[2 * ep], a, b[0], b[1]);
            mma16816(acc[2 * ep + 1], a, b[2], b[3]);
        }
    }
}

__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// Query-major: dq, and per-CTA partials of dL/ds and dL/dbeta. A CTA owns 64 query rows.
template <int D, int BN>
__device__ void bwd_dq(BWD_TC_PARAMS, float* __restrict__ dq, float* __restrict__ part_ds, float* __restrict__ part_db) {
    constexpr int BM = HYP_ATTN_TC_BWD_BLOCK, LD = D + 8, NT = BN / 8, KT = D / 16, OT = D / 8, CH = D / 8;
    __shared__ __align__(16) bf16 ks[2][BN][LD];
    __shared__ __align__(16) bf16 vs[2][BN][LD];
    __shared__ __align__(16) float4 k0s[2][BN], k1s[2][BN];
    __shared__ float red[2][4];
    const MaskSpec mk{mask, window, n, m, lengths};
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, cq = lane & 3;
    const int qblk = gridDim.x - 1 - blockIdx.x, bh = blockIdx.y, b = bh / heads, i0 = qblk * BM;
    const long long qb = (long long)bh * n, kb = (long long)bh * m;
    const int rA = i0 + warp * 16 + g, rB = rA + 8;
    const int last = (i0 + BM < n ? i0 + BM : n) - 1;
    const int2 fr = visible(mk, b, i0), lr = visible(mk, b, last);
    const int2 rgA = rA < n ? visible(mk, b, rA) : make_int2(0, 0), rgB = rB < n ? visible(mk, b, rB) : make_int2(0, 0);
    uint32_t qa[KT][4], da[KT][4];
    load_a<KT>(qa, q + qb * D, rA, rB, n, D, cq);
    load_a<KT>(da, d_o + qb * D, rA, rB, n, D, cq);
    const float4 z4 = make_float4(0.f, 0.f, 0.f, 0.f);
    const float4 qA0 = rA < n ? tq0[qb + rA] : z4, qA1 = rA < n ? tq1[qb + rA] : z4;
    const float4 qB0 = rB < n ? tq0[qb + rB] : z4, qB1 = rB < n ? tq1[qb + rB] : z4;
    const float log2e = 1.4426950408889634f;
    const float lA = rA < n ? lse[qb + rA] * log2e : 0.f, lB = rB < n ? lse[qb + rB] * log2e : 0.f;
    const float dA = rA < n ? delta[qb + rA] : 0.f, dB = rB < n ? delta[qb + rB] : 0.f;
    const float scale2 = -beta / s;
    float acc[OT][4];
#pragma unroll
    for (int e = 0; e < OT; ++e) acc[e][0] = acc[e][1] = acc[e][2] = acc[e][3] = 0.f;
    float sumA = 0.f, sumB = 0.f, ds_acc = 0.f, db_acc = 0.f;
    // Per row: sum_j P dP, sum_j P ys, sum_j P d (rows A, B), for the Delta re-centring.
    float pdp[2] = {0.f, 0.f}, pys[2] = {0.f, 0.f}, pyd[2] = {0.f, 0.f};
    const int t_first = fr.x / BN, t_end = (lr.y + BN - 1) / BN;
    auto load = [&](int st, int t) {
        const int j0 = t * BN;
        for (int idx = threadIdx.x; idx < BN * CH; idx += HYP_ATTN_TC_BWD_THREADS) {
            const int r = idx / CH, c = idx % CH, j = j0 + r;
            const long long off = (kb + (j < m ? j : 0)) * D + c * 8;
            cp16(&ks[st][r][c * 8], k + off, j < m ? 16 : 0);
            cp16(&vs[st][r][c * 8], v + off, j < m ? 16 : 0);
        }
        for (int r = threadIdx.x; r < BN; r += HYP_ATTN_TC_BWD_THREADS) {
            const int j = j0 + r;
            cp16(&k0s[st][r], tk0 + kb + (j < m ? j : 0), j < m ? 16 : 0);
            cp16(&k1s[st][r], tk1 + kb + (j < m ? j : 0), j < m ? 16 : 0);
        }
    };
    if (t_first < t_end) load(0, t_first);
    cp_commit();
    for (int t = t_first; t < t_end; ++t) {
        const int st = (t - t_first) & 1;
        if (t + 1 < t_end) load(st ^ 1, t + 1);
        cp_commit();
        cp_wait<1>();
        __syncthreads();
        const int j0 = t * BN;
        float sc[NT][4], dp[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int h = 0; h < 4; ++h) sc[nt][h] = dp[nt][h] = 0.f;
        mma_abt<KT, NT, LD>(sc, qa, ks[st], lane);
        mma_abt<KT, NT, LD>(dp, da, vs[st], lane);
        const bool full = j0 >= lr.x && j0 + BN <= fr.y;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
            for (int h = 0; h < 4; ++h) {
                const int jj = nt * 8 + 2 * cq + (h & 1), j = j0 + jj;
                const bool rowA = h < 2;
                const int2 rg = rowA ? rgA : rgB;
                const bool vis = full || (j >= rg.x && j < rg.y);
                const PairBwd pb = pair_bwd(sc[nt][h], dp[nt][h], rowA ? qA0 : qB0, rowA ? qA1 : qB1, k0s[st][jj],
                                            k1s[st][jj], rowA ? lA : lB, rowA ? dA : dB, s, beta, scale2);
                sc[nt][h] = vis ? pb.g : 0.f;
                if (vis) {
                    const int w = rowA ? 0 : 1;
                    (rowA ? sumA : sumB) += pb.coef_q;
                    ds_acc += pb.dsv * pb.ys;
                    db_acc -= pb.dsv * pb.d;
                    pdp[w] = fmaf(pb.p, dp[nt][h], pdp[w]);
                    pys[w] = fmaf(pb.p, pb.ys, pys[w]);
                    pyd[w] = fmaf(pb.p, pb.d, pyd[w]);
                }
            }
        }
        mma_pt<NT, OT, LD>(acc, sc, ks[st], lane);  // dQ += G . K
        __syncthreads();
    }
    cp_wait<0>();
    sumA = quad_sum(sumA);
    sumB = quad_sum(sumB);
    // dc and dbeta are sums of dS = P (dP - Delta) times a per-pair factor; they cancel heavily,
    // and Delta = dO.o carries the bf16 rounding of P in the forward's P.V. Re-centre them on
    // Delta' = sum_j P dP, the value consistent with this kernel's own P and dP:
    // sum dS' y = sum dS y + (Delta - Delta') sum_j P y, row by row.
#pragma unroll
    for (int w = 0; w < 2; ++w) {
        pdp[w] = quad_sum(pdp[w]);
        pys[w] = quad_sum(pys[w]);
        pyd[w] = quad_sum(pyd[w]);
    }
    if (cq == 0) {
        if (rA < n) {
            ds_acc += (dA - pdp[0]) * pys[0];
            db_acc -= (dA - pdp[0]) * pyd[0];
        }
        if (rB < n) {
            ds_acc += (dB - pdp[1]) * pys[1];
            db_acc -= (dB - pdp[1]) * pyd[1];
        }
    }
    const bf16* qrA = q + (qb + (rA < n ? rA : 0)) * D;
    const bf16* qrB = q + (qb + (rB < n ? rB : 0)) * D;
    const float cA = sumA * qA1.y, cB = sumB * qB1.y;
#pragma unroll
    for (int e = 0; e < OT; ++e) {
        const int col = e * 8 + 2 * cq;
        if (rA < n)
            *reinterpret_cast<float2*>(dq + (qb + rA) * D + col) =
                make_float2(fmaf(cA, bf16_to_f32(qrA[col]), acc[e][0]), fmaf(cA, bf16_to_f32(qrA[col + 1]), acc[e][1]));
        if (rB < n)
            *reinterpret_cast<float2*>(dq + (qb + rB) * D + col) =
                make_float2(fmaf(cB, bf16_to_f32(qrB[col]), acc[e][2]), fmaf(cB, bf16_to_f32(qrB[col + 1]), acc[e][3]));
    }
    // Fixed-order block reduction of the scalar partials.
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        ds_acc += __shfl_xor_sync(0xffffffffu, ds_acc, off);
        db_acc += __shfl_xor_sync(0xffffffffu, db_acc, off);
    }
    if (lane == 0) {
        red[0][warp] = ds_acc;
        red[1][warp] = db_acc;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        const long long slot = (long long)blockIdx.y * gridDim.x + blockIdx.x;
        part_ds[slot] = red[0][0] + red[0][1] + red[0][2] + red[0][3];
        part_db[slot] = red[1][0] + red[1][1] + red[1][2] + red[1][3];
    }
}

// Key-major: dk and dv. A CTA owns 64 keys; query tiles of BQ rows.
template <int D, int BQ>
__device__ void bwd_dkdv(BWD_TC_PARAMS, float* __restrict__ dk, float* __restrict__ dv) {
    constexpr int BK = HYP_ATTN_TC_BWD_BLOCK, LD = D + 8, NT = BQ / 8, KT = D / 16, OT = D / 8, CH = D / 8;
    __shared__ __align__(16) bf16 qs[2][BQ][LD];
    __shared__ __align__(16) bf16 os[2][BQ][LD];
    __shared__ __align__(16) float4 q0s[2][BQ], q1s[2][BQ];
    __shared__ float2 lds[2][BQ];  // (lse2, delta)
    __shared__ int2 rgs[2][BQ];
    // D = 128: V's fragments stay in shared memory (the CTA's BK rows), not in registers.
    constexpr bool VS = D == 128;
    __shared__ __align__(16) bf16 vsm[VS ? BK : 1][LD];
    const MaskSpec mk{mask, window, n, m, lengths};
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, cq = lane & 3;
    const int bh = blockIdx.y, b = bh / heads, j0 = blockIdx.x * BK;
    const long long qb = (long long)bh * n, kb = (long long)bh * m;
    const int jA = j0 + warp * 16 + g, jB = jA + 8;
    const int len = lengths ? lengths[b] : m;
    const int jl = (j0 + BK < m ? j0 + BK : m) - 1;
    const int q_lo = seen_by(mk, b, j0).x;
    const int q_hi = j0 < len ? seen_by(mk, b, jl < len ? jl : len - 1).y : 0;
    uint32_t ka[KT][4], va[VS ? 1 : KT][4];
    load_a<KT>(ka, k + kb * D, jA, jB, m, D, cq);
    if (VS) {
        for (int idx = threadIdx.x; idx < BK * CH; idx += HYP_ATTN_TC_BWD_THREADS) {
            const int r = idx / CH, c = idx % CH, j = j0 + r;
            cp16(&vsm[r][c * 8], v + (kb + (j < m ? j : 0)) * D + c * 8, j < m ? 16 : 0);
        }
    } else {
        load_a<VS ? 1 : KT>(va, v + kb * D, jA, jB, m, D, cq);
    }
    const float4 z4 = make_float4(0.f, 0.f, 0.f, 0.f);
    const float4 kA0 = jA < m ? tk0[kb + jA] : z4, kA1 = jA < m ? tk1[kb + jA] : z4;
    const float4 kB0 = jB < m ? tk0[kb + jB] : z4, kB1 = jB < m ? tk1[kb + jB] : z4;
    const float scale2 = -beta / s, log2e = 1.4426950408889634f;
    float accK[OT][4], accV[OT][4];
#pragma unroll
    for (int e = 0; e < OT; ++e)
#pragma unroll
        for (int h = 0; h < 4; ++h) accK[e][h] = accV[e][h] = 0.f;
    float sumA = 0.f, sumB = 0.f;
    const int t_first = q_lo / BQ, t_end = (q_hi + BQ - 1) / BQ;
    auto load = [&](int st, int t) {
        const int i0 = t * BQ;
        for (int idx = threadIdx.x; idx < BQ * CH; idx += HYP_ATTN_TC_BWD_THREADS) {
            const int r = idx / CH, c = idx % CH, i = i0 + r;
            const long long off = (qb + (i < n ? i : 0)) * D + c * 8;
            cp16(&qs[st][r][c * 8], q + off, i < n ? 16 : 0);
            cp16(&os[st][r][c * 8], d_o + off, i < n ? 16 : 0);
        }
        for (int r = threadIdx.x; r < BQ; r += HYP_ATTN_TC_BWD_THREADS) {
            const int i = i0 + r;
            cp16(&q0s[st][r], tq0 + qb + (i < n ? i : 0), i < n ? 16 : 0);
            cp16(&q1s[st][r], tq1 + qb + (i < n ? i : 0), i < n ? 16 : 0);
            lds[st][r] = i < n ? make_float2(lse[qb + i] * log2e, delta[qb + i]) : make_float2(0.f, 0.f);
            rgs[st][r] = i < n ? visible(mk, b, i) : make_int2(0, 0);
        }
    };
    if (t_first < t_end) load(0, t_first);
    cp_commit();
    for (int t = t_first; t < t_end; ++t) {
        const int st = (t - t_first) & 1;
        if (t + 1 < t_end) load(st ^ 1, t + 1);
        cp_commit();
        cp_wait<1>();
        __syncthreads();
        const int i0 = t * BQ;
        float sc[NT][4], dp[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int h = 0; h < 4; ++h) sc[nt][h] = dp[nt][h] = 0.f;
        mma_abt<KT, NT, LD>(sc, ka, qs[st], lane);  // S^T = K Q^T
        if (VS) mma_abt_s<KT, NT, LD>(dp, &vsm[warp * 16], os[st], lane);  // dP^T = V dO^T
        else mma_abt<VS ? 1 : KT, NT, LD>(dp, va, os[st], lane);
        // Full when every query of the tile sees every key of the CTA.
        const int i_last = i0 + BQ - 1;
        const bool full = i_last < n && visible(mk, b, i_last).x <= j0 && visible(mk, b, i0).y >= j0 + BK && j0 + BK <= m;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
            for (int h = 0; h < 4; ++h) {
                const int ii = nt * 8 + 2 * cq + (h & 1);
                const bool rowA = h < 2;
                const int j = rowA ? jA : jB;
                const int2 rg = rgs[st][ii];
                const bool vis = full || (j < m && j >= rg.x && j < rg.y);
                const float2 ld = lds[st][ii];
                const PairBwd pb = pair_bwd(sc[nt][h], dp[nt][h], q0s[st][ii], q1s[st][ii], rowA ? kA0 : kB0,
                                            rowA ? kA1 : kB1, ld.x, ld.y, s, beta, scale2);
                sc[nt][h] = vis ? pb.p : 0.f;
                dp[nt][h] = vis ? pb.g : 0.f;
                if (vis) {
                    if (rowA) sumA += pb.coef_k;
                    else sumB += pb.coef_k;
                }
            }
        }
        mma_pt<NT, OT, LD>(accV, sc, os[st], lane);  // dV += P^T dO
        mma_pt<NT, OT, LD>(accK, dp, qs[st], lane);  // dK += G^T Q
        __syncthreads();
    }
    cp_wait<0>();
    sumA = quad_sum(sumA);
    sumB = quad_sum(sumB);
    const bf16* krA = k + (kb + (jA < m ? jA : 0)) * D;
    const bf16* krB = k + (kb + (jB < m ? jB : 0)) * D;
    const float cA = sumA * kA1.y, cB = sumB * kB1.y;
#pragma unroll
    for (int e = 0; e < OT; ++e) {
        const int col = e * 8 + 2 * cq;
        if (jA < m) {
            *reinterpret_cast<float2*>(dk + (kb + jA) * D + col) =
                make_float2(fmaf(cA, bf16_to_f32(krA[col]), accK[e][0]), fmaf(cA, bf16_to_f32(krA[col + 1]), accK[e][1]));
            *reinterpret_cast<float2*>(dv + (kb + jA) * D + col) = make_float2(accV[e][0], accV[e][1]);
        }
        if (jB < m) {
            *reinterpret_cast<float2*>(dk + (kb + jB) * D + col) =
                make_float2(fmaf(cB, bf16_to_f32(krB[col]), accK[e][2]), fmaf(cB, bf16_to_f32(krB[col + 1]), accK[e][3]));
            *reinterpret_cast<float2*>(dv + (kb + jB) * D + col) = make_float2(accV[e][2], accV[e][3]);
        }
    }
}

#define BWD_TC_CALL q, k, v, d_o, tq0, tq1, tk0, tk1, lse, delta, heads, n, m, s, beta, mask, window, lengths

extern "C" __global__ void hyp_attn_tc_bwd_prep(const bf16* x, const float* o, const bf16* d_o, float4* t0, float4* t1, float* delta, int rows, int dim, float s, int is_q) { bwd_prep(x, o, d_o, t0, t1, delta, rows, dim, s, is_q != 0); }
extern "C" __global__ void __launch_bounds__(HYP_ATTN_TC_BWD_THREADS) hyp_attn_tc_bwd_dq_d64(BWD_TC_PARAMS, float* dq, float* part_ds, float* part_db) { bwd_dq<64, 64>(BWD_TC_CALL, dq, part_ds, part_db); }
extern "C" __global__ void __launch_bounds__(HYP_ATTN_TC_BWD_THREADS) hyp_attn_tc_bwd_dq_d128(BWD_TC_PARAMS, float* dq, float* part_ds, float* part_db) { bwd_dq<128, 16>(BWD_TC_CALL, dq, part_ds, part_db); }
extern "C" __global__ void __launch_bounds__(HYP_ATTN_TC_BWD_THREADS) hyp_attn_tc_bwd_dkdv_d64(BWD_TC_PARAMS, float* dk, float* dv) { bwd_dkdv<64, 32>(BWD_TC_CALL, dk, dv); }
extern "C" __global__ void __launch_bounds__(HYP_ATTN_TC_BWD_THREADS) hyp_attn_tc_bwd_dkdv_d128(BWD_TC_PARAMS, float* dk, float* dv) { bwd_dkdv<128, 16>(BWD_TC_CALL, dk, dv); }
