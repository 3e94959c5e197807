// Host-emulation driver (see run.sh): the block-centroid selection kernels of sparse attention,
// launched as crates/muse-cuda/src/sparse_attn.rs does (centroids grid (nb, B*H, 2), then select),
// checked (1) bit for bit against the first version of the kernels (kept below as the oracle:
// same centroids, same lists in the same order, same counts) and (2) against a long-double
// reference written here: centroids of bf16 rows, then per query block the diagonal and the
// k_b - 1 earlier blocks of highest -d (law of cosines, 1 - C = |u^ - w^|^2 / 2), the chosen blocks
// all scoring within 1e-4 of the reference's k-th best.
#include "emu.h"
// CUDA's correctly rounded fma (glibc's fmaf is exact too).
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
#include "../../crates/muse-cuda/kernels/sparse_attn.cu"
#include <algorithm>
#include <cstdio>
#include <random>

typedef long double LD;

// ---- the oracle: the old kernels, verbatim but for the renaming and the explicit roundings of
// their SASS (nvcc 13 -O3 -fmad=true: the |.|^2 sums are fma chains, q[e]*iq - k[e]*ik is
// fma(q[e], iq, -(k[e]*ik)), 2*sh*sh + t is fma(2*sh, sh, t)); the host has no contraction.
static void old_centroids(const unsigned short* x, int n, int dim, int nb, float* cent) {
    const int blk = blockIdx.x, bh = blockIdx.y;
    const int r0 = blk * SPARSE_ATTN_BLOCK, r1 = min(n, r0 + SPARSE_ATTN_BLOCK);
    for (int e = threadIdx.x; e < dim; e += blockDim.x) {
        float acc = 0.0f;
        for (int r = r0; r < r1; ++r) acc += sp_bf16(x[((long long)bh * n + r) * dim + e]);
        cent[((long long)bh * nb + blk) * dim + e] = acc / (float)(r1 - r0);
    }
}

// The old select's score of one (query, key block) pair, its loop body moved out so that the
// driver compares every pair's f32 score too (lists alone hardly see a changed rounding).
static float old_score(const float* q, const float* k, int dim, float s, float rq, float iq, float a, float sa) {
    float kk = 0.0f;
    for (int e = 0; e < dim; ++e) kk = __fmaf_rn(k[e], k[e], kk);
    const float rk = sqrtf(kk), b = fminf(s * rk, 15.0f);
    float omc = 1.0f;
    if (rq > 0.0f && rk > 0.0f) {
        const float ik = 1.0f / rk;
        float dd = 0.0f;
        for (int e = 0; e < dim; ++e) {
            const float x = __fmaf_rn(q[e], iq, -(k[e] * ik));
            dd = __fmaf_rn(x, x, dd);
        }
        omc = fminf(0.5f * dd, 2.0f);
    }
    const float sh = sinhf(a - b);
    float z = fmaxf(__fmaf_rn(2.0f * sh, sh, sa * sinhf(2.0f * b) * omc), 0.0f);
    return -log1pf(z + sqrtf(z * (z + 2.0f))) / s;
}

// The old select warp's |q|^2: lane-strided fma chains, then the butterfly of sp_warp_sum.
static float old_qq(const float* q, int dim) {
    float p[32];
    for (int l = 0; l < 32; ++l) { p[l] = 0.0f; for (int e = l; e < dim; e += 32) p[l] = __fmaf_rn(q[e], q[e], p[l]); }
    for (int o = 16; o > 0; o >>= 1) { float n[32]; for (int l = 0; l < 32; ++l) n[l] = p[l] + p[l ^ o]; std::memcpy(p, n, sizeof p); }
    return p[0];
}

static void old_select(const float* cq, const float* ck, int bh_count, int nb, int dim, float s, int kb, int* lists, int* counts) {
    const long long t = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (t >= (long long)bh_count * nb) return;
    const int bh = (int)(t / nb), qb = (int)(t % nb);
    const float* q = cq + ((long long)bh * nb + qb) * dim;
    float qq = 0.0f;
    for (int e = lane; e < dim; e += 32) qq = __fmaf_rn(q[e], q[e], qq);
    const float rq = sqrtf(sp_warp_sum(qq)), a = fminf(s * rq, 15.0f), sa = sinhf(2.0f * a);
    const float iq = rq > 0.0f ? 1.0f / rq : 0.0f;
    float best_s[SPARSE_ATTN_MAX_KB];
    int best_j[SPARSE_ATTN_MAX_KB];
    const int keep = min(kb - 1, qb);
    int have = 0;
    for (int j = lane; j < qb; j += 32) {
        const float score = old_score(q, ck + ((long long)bh * nb + j) * dim, dim, s, rq, iq, a, sa);
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
    for (int p = 0; p < keep; ++p) {
        const int cj = head < have ? best_j[head] : 0x7fffffff;
        float bs = head < have ? best_s[head] : -INFINITY;
        int bj = cj;
        for (int o = 16; o > 0; o >>= 1) {
            const float os = __shfl_xor_sync(0xffffffffu, bs, o);
            const int oj = __shfl_xor_sync(0xffffffffu, bj, o);
            if (os > bs || (os == bs && oj < bj)) { bs = os; bj = oj; }
        }
        if (cj == bj) ++head;
        if (lane == 0) out[1 + p] = bj;
    }
    if (lane == 0) {
        out[0] = qb;
        for (int p = 1 + keep; p < kb; ++p) out[p] = -1;
        counts[(long long)bh * nb + qb] = 1 + keep;
    }
}

static unsigned short to_bf16(float f) { unsigned b; std::memcpy(&b, &f, 4); return (unsigned short)((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16); }

static LD dist(const std::vector<LD>& u, const std::vector<LD>& w, LD s) {
    LD ru = 0, rw = 0; for (size_t k = 0; k < u.size(); ++k) { ru += u[k]*u[k]; rw += w[k]*w[k]; }
    ru = sqrtl(ru); rw = sqrtl(rw);
    const LD a = fminl(s*ru, 15), b = fminl(s*rw, 15);
    LD omc = 1; if (ru > 0 && rw > 0) { omc = 0; for (size_t k = 0; k < u.size(); ++k) { LD e = u[k]/ru - w[k]/rw; omc += e*e; } omc /= 2; }
    const LD sh = sinhl(a - b), z = 2*sh*sh + sinhl(2*a)*sinhl(2*b)*omc;
    return log1pl(z + sqrtl(z*(z+2))) / s;
}

// TIES: key blocks 3i..3i+2 equal; PERIODIC: key block j equals j - 30 (30 scores, each repeated
// across all tiles); ZEROS: every 5th block 0 in q and k.
enum Mode { PLAIN, TIES, PERIODIC, ZEROS };

// ref: also check against the long-double reference (off where f32 overflows to -inf scores).
static bool run(int BH, int N, int kb, float c, unsigned seed, Mode mode = PLAIN, bool ref = true) {
    const int D = 64;
    std::mt19937 rng(seed); std::normal_distribution<float> n01;
    const int nb = (N + 63) / 64;
    std::vector<unsigned short> q((size_t)BH*N*D), k(q.size());
    for (size_t i = 0; i < q.size(); ++i) { q[i] = to_bf16(0.4f * n01(rng) + 0.1f); k[i] = to_bf16(0.4f * n01(rng) - 0.05f); }
    for (int h = 0; h < BH; ++h)
        for (int r = 0; r < N; ++r) {
            const int blk = r / 64;
            unsigned short* kr = &k[((size_t)h*N + r)*D];
            if (mode == TIES && blk % 3 != 0) std::memcpy(kr, kr - 64*D, 2*D);
            if (mode == PERIODIC && blk >= 30) std::memcpy(kr, kr - 30*64*D, 2*D);
            if (mode == ZEROS && blk % 5 == 2) { std::fill(kr, kr + D, 0); std::fill(&q[((size_t)h*N + r)*D], &q[((size_t)h*N + r)*D] + D, 0); }
        }
    // the launches of sparse_attn.rs::select_into
    std::vector<float> cent((size_t)2*BH*nb*D), stat((size_t)2*BH*nb*4);
    std::vector<int> lists((size_t)BH*nb*kb, -7), counts((size_t)BH*nb, -7);
    launch(dim3{(unsigned)nb, (unsigned)BH, 2}, SPARSE_ATTN_CENT_THREADS, [&] { sparse_attn_centroids(q.data(), k.data(), BH, N, D, nb, sqrtf(c), cent.data(), reinterpret_cast<float4*>(stat.data())); });
    launch(dim3{(unsigned)((BH*nb + SPARSE_ATTN_SEL_WARPS - 1) / SPARSE_ATTN_SEL_WARPS), 1, 1}, SPARSE_ATTN_SEL_WARPS * 32, [&] {
        sparse_attn_select(cent.data(), reinterpret_cast<const float4*>(stat.data()), BH, nb, D, sqrtf(c), kb, lists.data(), counts.data()); });
    // the oracle
    std::vector<float> cq((size_t)BH*nb*D), ck(cq.size());
    std::vector<int> olists(lists.size(), -9), ocounts(counts.size(), -9);
    launch(dim3{(unsigned)nb, (unsigned)BH, 1}, 64, [&] { old_centroids(q.data(), N, D, nb, cq.data()); });
    launch(dim3{(unsigned)nb, (unsigned)BH, 1}, 64, [&] { old_centroids(k.data(), N, D, nb, ck.data()); });
    launch(dim3{(unsigned)((BH*nb*32 + 127) / 128), 1, 1}, 128, [&] { old_select(cq.data(), ck.data(), BH, nb, D, sqrtf(c), kb, olists.data(), ocounts.data()); });
    int diff = std::memcmp(cq.data(), cent.data(), cq.size() * 4) != 0;
    for (size_t i = 0; i < lists.size(); ++i) diff += lists[i] != olists[i];
    for (size_t i = 0; i < counts.size(); ++i) diff += counts[i] != ocounts[i];
    const float sf = sqrtf(c);
    const float4* st = reinterpret_cast<const float4*>(stat.data());
    for (int h = 0; h < BH; ++h)  // every pair's score, bit for bit
        for (int qb = 0; qb < nb; ++qb) {
            const float* qv = &cq[((size_t)h*nb + qb)*D];
            const float rq = sqrtf(old_qq(qv, D)), a = fminf(sf * rq, 15.0f), sa = sinhf(2.0f * a), iq = rq > 0.0f ? 1.0f / rq : 0.0f;
            for (int j = 0; j < qb; ++j) {
                const float o = old_score(qv, &ck[((size_t)h*nb + j)*D], D, sf, rq, iq, a, sa);
                const float v = sp_score(qv, st[(size_t)h*nb + qb], &cent[(size_t)BH*nb*D + (size_t)h*D*nb + j], nb, D, st[(size_t)BH*nb + (size_t)h*nb + j], sf);
                diff += std::memcmp(&o, &v, 4) != 0;
            }
        }
    int ninf = 0;  // -inf scores among the chosen (the old order of equal scores is then all that decides)
    const LD s = sqrtl((LD)c);
    std::vector<std::vector<LD>> rq, rk;  // reference centroids
    for (int h = 0; h < BH; ++h)
        for (int blk = 0; blk < nb; ++blk)
            for (auto* pr : {&rq, &rk}) {
                const auto& x = pr == &rq ? q : k;
                std::vector<LD> m(D, 0); const int r0 = blk*64, r1 = std::min(N, r0 + 64);
                for (int r = r0; r < r1; ++r) for (int e = 0; e < D; ++e) m[e] += (LD)__uint_as_float((unsigned)x[((size_t)h*N + r)*D + e] << 16);
                for (auto& v : m) v /= (r1 - r0);
                pr->push_back(m);
            }
    int bad = 0;
    for (int h = 0; h < BH; ++h)
        for (int qb = 0; qb < nb; ++qb) {
            const int* got = &lists[((size_t)h*nb + qb)*kb];
            const int cnt = counts[(size_t)h*nb + qb];
            if (cnt != std::min(kb, qb + 1) || got[0] != qb) { ++bad; continue; }
            for (int p = cnt; p < kb; ++p) if (got[p] != -1) ++bad;
            for (int p = 1; p < cnt; ++p) {
                if (got[p] < 0 || got[p] >= qb) { ++bad; continue; }
                for (int r = 1; r < p; ++r) if (got[r] == got[p]) ++bad;  // each block once
            }
            if (cnt < 2 || !ref) continue;
            std::vector<LD> sc;
            for (int j = 0; j < qb; ++j) sc.push_back(-dist(rq[(size_t)h*nb + qb], rk[(size_t)h*nb + j], s));
            std::vector<LD> sorted = sc; std::sort(sorted.rbegin(), sorted.rend());
            const LD kth = sorted[cnt - 2];
            for (int p = 1; p < cnt; ++p)
                if (got[p] >= 0 && got[p] < qb && sc[got[p]] < kth - 1e-4L * (1 + fabsl(kth))) ++bad;
        }
    if (!ref) for (int h = 0; h < BH; ++h) ninf += counts[(size_t)h*nb + nb - 1] == kb && lists[((size_t)h*nb + nb - 1)*kb + 1] == 0;
    printf("sparse select BH%d N%d nb%d kb%d c %.3f mode %d: %d differ from the old kernels, %d bad%s %s\n", BH, N, nb, kb, c, (int)mode, diff, bad,
           ref ? "" : ninf ? " (-inf ties: lowest blocks)" : " (no -inf ties seen)", diff || bad ? "FAIL" : "ok");
    return diff == 0 && bad == 0;
}

int main() {
    bool ok = true;
    ok &= run(2, 1000, 3, 0.693f, 1);           // partial last block
    ok &= run(1, 4096, 3, 1.0f, 2);
    ok &= run(1, 300, 8, 0.1f, 3);              // k_b above the earlier blocks: every one
    ok &= run(2, 2000, 1, 0.5f, 4);             // k_b = 1: the diagonal alone
    ok &= run(1, 3000, 64, 0.693f, 5);          // k_b = MAX_KB
    ok &= run(1, 2500, 6, 0.693f, 6, TIES);     // equal scores: the lower block first
    ok &= run(1, 2100, 7, 0.693f, 7, ZEROS);    // |q| = 0 or |k| = 0: 1 - cos = 1
    ok &= run(1, 1500, 5, 900.0f, 8, PLAIN, false);  // s|x| capped at 15: -inf scores, all ties
    // nb 520 > 2 SPARSE_ATTN_TILE: three tiles merged; the best 30th of the blocks (~9 in the
    // first tile) tie across the tiles, and later tiles' best beat the first's 2nd-best listed
    ok &= run(1, 520 * 64 - 5, 12, 1.0f, 9, PERIODIC);
    if (!ok) { printf("sparse: FAILED\n"); return 1; }
    return 0;
}
