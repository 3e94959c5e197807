// Host-emulation driver (see run.sh): the block-centroid selection kernels of sparse attention
// against a long-double reference written here: centroids of bf16 rows, then per query block the
// diagonal and the k_b - 1 earlier blocks of highest -d (law of cosines, 1 - C = |u^ - w^|^2 / 2),
// compared as the kernel's chosen blocks all scoring within 1e-4 of the reference's k-th best.
#include "emu.h"
#include "../../crates/muse-cuda/kernels/sparse_attn.cu"
#include <algorithm>
#include <cstdio>
#include <random>

typedef long double LD;

static unsigned short to_bf16(float f) { unsigned b; std::memcpy(&b, &f, 4); return (unsigned short)((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16); }

static LD dist(const std::vector<LD>& u, const std::vector<LD>& w, LD s) {
    LD ru = 0, rw = 0; for (size_t k = 0; k < u.size(); ++k) { ru += u[k]*u[k]; rw += w[k]*w[k]; }
    ru = sqrtl(ru); rw = sqrtl(rw);
    const LD a = fminl(s*ru, 15), b = fminl(s*rw, 15);
    LD omc = 1; if (ru > 0 && rw > 0) { omc = 0; for (size_t k = 0; k < u.size(); ++k) { LD e = u[k]/ru - w[k]/rw; omc += e*e; } omc /= 2; }
    const LD sh = sinhl(a - b), z = 2*sh*sh + sinhl(2*a)*sinhl(2*b)*omc;
    return log1pl(z + sqrtl(z*(z+2))) / s;
}

static bool run(int BH, int N, int D, int kb, float c, unsigned seed) {
    std::mt19937 rng(seed); std::normal_distribution<float> n01;
    const int nb = (N + 63) / 64;
    std::vector<unsigned short> q((size_t)BH*N*D), k(q.size());
    for (size_t i = 0; i < q.size(); ++i) { q[i] = to_bf16(0.4f * n01(rng) + 0.1f); k[i] = to_bf16(0.4f * n01(rng) - 0.05f); }
    std::vector<float> cq((size_t)BH*nb*D), ck(cq.size());
    std::vector<int> lists((size_t)BH*nb*kb), counts((size_t)BH*nb);
    launch(dim3{(unsigned)nb, (unsigned)BH, 1}, SPARSE_ATTN_THREADS, [&] { sparse_attn_centroids(q.data(), N, D, nb, cq.data()); });
    launch(dim3{(unsigned)nb, (unsigned)BH, 1}, SPARSE_ATTN_THREADS, [&] { sparse_attn_centroids(k.data(), N, D, nb, ck.data()); });
    launch(dim3{(unsigned)((BH*nb*32 + 127) / 128), 1, 1}, 128, [&] { sparse_attn_select(cq.data(), ck.data(), BH, nb, D, sqrtf(c), kb, lists.data(), counts.data()); });
    const LD s = sqrtl((LD)c);
    auto cent = [&](const std::vector<unsigned short>& x, int h, int blk) {
        std::vector<LD> m(D, 0); const int r0 = blk*64, r1 = std::min(N, r0 + 64);
        for (int r = r0; r < r1; ++r) for (int e = 0; e < D; ++e) m[e] += (LD)__uint_as_float((unsigned)x[((size_t)h*N + r)*D + e] << 16);
        for (auto& v : m) v /= (r1 - r0);
        return m;
    };
    int bad = 0;
    for (int h = 0; h < BH; ++h)
        for (int qb = 0; qb < nb; ++qb) {
            const int* got = &lists[((size_t)h*nb + qb)*kb];
            const int cnt = counts[(size_t)h*nb + qb];
            if (cnt != std::min(kb, qb + 1) || got[0] != qb) { ++bad; continue; }
            for (int p = cnt; p < kb; ++p) if (got[p] != -1) ++bad;
            const auto cqv = cent(q, h, qb);
            std::vector<LD> sc;
            for (int j = 0; j < qb; ++j) sc.push_back(-dist(cqv, cent(k, h, j), s));
            std::vector<LD> sorted = sc; std::sort(sorted.rbegin(), sorted.rend());
            if (cnt < 2) continue;
            const LD kth = sorted[cnt - 2];
            for (int p = 1; p < cnt; ++p) {
                if (got[p] < 0 || got[p] >= qb) { ++bad; continue; }
                for (int r = 1; r < p; ++r) if (got[r] == got[p]) ++bad;  // each block once
                if (sc[got[p]] < kth - 1e-4L * (1 + fabsl(kth))) ++bad;
            }
        }
    printf("sparse select BH%d N%d D%d kb%d c %.3f: %d bad %s\n", BH, N, D, kb, c, bad, bad ? "FAIL" : "ok");
    return bad == 0;
}

int main() {
    bool ok = true;
    ok &= run(2, 1000, 64, 3, 0.693f, 1);
    ok &= run(1, 4096, 64, 3, 1.0f, 2);
    ok &= run(1, 300, 64, 8, 0.1f, 3);   // k_b above the earlier blocks: every one
    if (!ok) { printf("sparse: FAILED\n"); return 1; }
    return 0;
}
