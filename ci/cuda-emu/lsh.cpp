// Host-emulation driver (see run.sh): the LSH selection and the index attention of sparse
// attention (kernels/sparse_attn.cu), launched as crates/muse-cuda/src/sparse_attn/lsh.rs does
// (select_lsh_into: codes grid (ceil(rows/4), 2), buckets grid (T, B*H), select; forward_indexed:
// codes with T = 0 for the row terms, then indexed_fwd), checked against long-double references
// written here: (1) every code bit is the sign of the long-double <plane, x> (near-zero dots
// counted apart); (2) the lists hold exactly the candidates' k_cap best by -d (ties: the lower
// index), ascending, -1 padded, up to near-ties of the f32 scores (and never the higher of two
// exactly equal scores); (3) o and lse over the device's lists (and over hand-made lists with
// padding, duplicates-free, non-causal entries) against a long-double softmax.
#include "emu.h"
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
#include "../../crates/muse-cuda/kernels/sparse_attn.cu"
#include <algorithm>
#include <cstdio>
#include <random>
#include <set>

typedef long double LD;

static unsigned short to_bf16(float f) { unsigned b; std::memcpy(&b, &f, 4); return (unsigned short)((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16); }
static LD bf(unsigned short h) { return (LD)__uint_as_float((unsigned)h << 16); }

static LD dist(const unsigned short* u, const unsigned short* w, int D, LD s) {
    LD ru = 0, rw = 0;
    for (int e = 0; e < D; ++e) { ru += bf(u[e]) * bf(u[e]); rw += bf(w[e]) * bf(w[e]); }
    ru = sqrtl(ru); rw = sqrtl(rw);
    const LD a = fminl(s * ru, 15), b = fminl(s * rw, 15);
    LD omc = 1;
    if (ru > 0 && rw > 0) { omc = 0; for (int e = 0; e < D; ++e) { const LD x = bf(u[e]) / ru - bf(w[e]) / rw; omc += x * x; } omc /= 2; }
    const LD sh = sinhl(a - b), z = 2 * sh * sh + sinhl(2 * a) * sinhl(2 * b) * omc;
    return log1pl(z + sqrtl(z * (z + 2))) / s;
}

// DUPS: key rows j >= 5 copy row j - 5 with probability 1/2 (exact score ties); ZEROS: every 7th q
// and k row is 0.
enum Mode { PLAIN, DUPS, ZEROS };

struct Case { int BH, N, D, T, h, k_cap, window; float c, beta; unsigned seed; Mode mode; };

static bool run(const Case& cs) {
    const int BH = cs.BH, N = cs.N, D = cs.D, T = cs.T, H = cs.h, K = cs.k_cap, rows = BH * N;
    std::mt19937 rng(cs.seed); std::normal_distribution<float> n01; std::uniform_int_distribution<int> coin(0, 1);
    std::vector<unsigned short> q((size_t)rows * D), k(q.size()), v(q.size());
    for (size_t x = 0; x < q.size(); ++x) { q[x] = to_bf16(0.4f * n01(rng) + 0.05f); k[x] = to_bf16(0.4f * n01(rng)); v[x] = to_bf16(n01(rng)); }
    for (int r = 0; r < rows; ++r) {
        const int j = r % N;
        if (cs.mode == DUPS && j >= 5 && coin(rng)) std::memcpy(&k[(size_t)r * D], &k[(size_t)(r - 5) * D], 2 * D);
        if (cs.mode == ZEROS && j % 7 == 3) { std::fill(&k[(size_t)r * D], &k[(size_t)r * D] + D, 0); std::fill(&q[(size_t)r * D], &q[(size_t)r * D] + D, 0); }
    }
    std::vector<float> planes((size_t)T * H * D);
    for (auto& p : planes) p = n01(rng);
    const float s = sqrtf(cs.c);
    // select_lsh_into
    std::vector<unsigned> codes((size_t)2 * rows * T, 0xdeadu);
    std::vector<float> terms((size_t)2 * rows * 4);
    std::vector<int> offsets((size_t)BH * T * ((1 << H) + 1), -7), order((size_t)BH * T * N, -7), idx((size_t)rows * K, -7);
    float4* tm = reinterpret_cast<float4*>(terms.data());
    const unsigned g = (unsigned)((rows + SPARSE_ATTN_LSH_WARPS - 1) / SPARSE_ATTN_LSH_WARPS);
    launch(dim3{g, 2, 1}, SPARSE_ATTN_LSH_WARPS * 32, [&] { sparse_attn_lsh_codes(q.data(), k.data(), rows, D, T, H, planes.data(), s, codes.data(), tm); });
    launch(dim3{(unsigned)T, (unsigned)BH, 1}, SPARSE_ATTN_LSH_BUCKET_THREADS, [&] { sparse_attn_lsh_buckets(codes.data() + (size_t)rows * T, N, T, H, offsets.data(), order.data()); });
    launch(dim3{g, 1, 1}, SPARSE_ATTN_LSH_WARPS * 32, [&] { sparse_attn_lsh_select(q.data(), k.data(), tm, codes.data(), offsets.data(), order.data(), BH, N, D, T, H, K, cs.window, idx.data()); });
    // (1) codes
    int bad_codes = 0, code_ties = 0;
    for (int side = 0; side < 2; ++side)
        for (int r = 0; r < rows; ++r) {
            const unsigned short* x = (side ? k : q).data() + (size_t)r * D;
            for (int t = 0; t < T; ++t) {
                const unsigned got = codes[((size_t)side * rows + r) * T + t];
                for (int b = 0; b < H; ++b) {
                    LD dot = 0, mag = 0;
                    for (int e = 0; e < D; ++e) { const LD p = planes[((size_t)t * H + b) * D + e]; dot += p * bf(x[e]); mag += fabsl(p * bf(x[e])); }
                    if (fabsl(dot) <= 1e-5L * mag && dot != 0) { ++code_ties; continue; }
                    bad_codes += (int)((got >> b) & 1u) != (int)(dot >= 0);
                }
                bad_codes += (got >> H) != 0;
            }
        }
    // (2) lists: candidates from the device's codes (checked above), scores in long double
    int bad_lists = 0, near_ties = 0, exact = 0, pruned = 0;
    const LD sl = sqrtl((LD)cs.c);
    for (int r = 0; r < rows; ++r) {
        const int bh = r / N, i = r % N;
        std::vector<std::pair<LD, int>> cand;
        for (int j = 0; j <= i; ++j) {
            bool in = j + cs.window > i;
            for (int t = 0; t < T && !in; ++t) in = codes[(size_t)r * T + t] == codes[((size_t)rows + (size_t)bh * N + j) * T + t];
            if (in) cand.push_back({-dist(&q[(size_t)r * D], &k[((size_t)bh * N + j) * D], D, sl), j});
        }
        std::sort(cand.begin(), cand.end(), [](auto& x, auto& y) { return x.first > y.first || (x.first == y.first && x.second < y.second); });
        const int want = std::min<int>(K, (int)cand.size());
        pruned += (int)cand.size() > SPARSE_ATTN_LSH_BUF;
        std::set<int> ref, got;
        for (int p = 0; p < want; ++p) ref.insert(cand[p].second);
        const int* li = &idx[(size_t)r * K];
        for (int p = 0; p < K; ++p) {
            if (p < want) { if (li[p] < 0 || li[p] > i || (p > 0 && li[p] <= li[p - 1])) ++bad_lists; else got.insert(li[p]); }
            else if (li[p] != -1) ++bad_lists;
        }
        if (got == ref) { ++exact; continue; }
        if (want == 0) continue;
        const LD kth = cand[want - 1].first, tol = 1e-5L * (1 + fabsl(kth));
        std::vector<LD> score(i + 1, NAN);
        std::set<int> cset;
        for (auto& [sc, j] : cand) { score[j] = sc; cset.insert(j); }
        for (int j : got) if (!cset.count(j) || fabsl(score[j] - kth) > tol) ++bad_lists;
        for (int j : ref) if (!got.count(j) && fabsl(score[j] - kth) > tol) ++bad_lists;
        for (int a : got) if (!ref.count(a)) for (int b : ref) if (!got.count(b) && score[a] == score[b] && a > b) ++bad_lists;
        ++near_ties;
    }
    // (3) forward_indexed over the device's lists, then over hand-made lists
    int bad_attn = 0;
    LD worst_o = 0, worst_l = 0, vmax = 0;
    for (auto x : v) vmax = std::max(vmax, fabsl(bf(x)));
    for (int pass = 0; pass < 2; ++pass) {
        int KK = K;
        std::vector<int> li = idx;
        if (pass == 1) {  // width not a multiple of 32; -1 inside; j > i entries (skipped); j < 0
            KK = 45;
            li.assign((size_t)rows * KK, -1);
            std::uniform_int_distribution<int> pick(0, N - 1);
            for (int r = 0; r < rows; ++r) {
                std::set<int> used;
                for (int p = 0; p < KK; ++p) {
                    const int j = pick(rng);
                    if (p % 5 == 2 || used.count(j)) continue;
                    used.insert(j);
                    li[(size_t)r * KK + p] = j;
                }
            }
        }
        std::vector<float> tt((size_t)2 * rows * 4), o((size_t)rows * D, NAN), lse(rows, NAN);
        float4* t4 = reinterpret_cast<float4*>(tt.data());
        launch(dim3{g, 2, 1}, SPARSE_ATTN_LSH_WARPS * 32, [&] { sparse_attn_lsh_codes(q.data(), k.data(), rows, D, 0, 0, nullptr, s, nullptr, t4); });
        launch(dim3{g, 1, 1}, SPARSE_ATTN_LSH_WARPS * 32, [&] { sparse_attn_indexed_fwd(q.data(), k.data(), v.data(), t4, li.data(), BH, N, D, D, KK, s, -cs.beta / s, o.data(), lse.data()); });
        for (int r = 0; r < rows; ++r) {
            const int bh = r / N, i = r % N;
            std::vector<std::pair<LD, int>> sc;
            for (int p = 0; p < KK; ++p) {
                const int j = li[(size_t)r * KK + p];
                if (j >= 0 && j <= i) sc.push_back({-(LD)cs.beta * dist(&q[(size_t)r * D], &k[((size_t)bh * N + j) * D], D, sl), j});
            }
            if (sc.empty()) { bad_attn += !(std::isinf(lse[r]) && lse[r] < 0); for (int e = 0; e < D; ++e) bad_attn += o[(size_t)r * D + e] != 0.0f; continue; }
            LD m = -INFINITY, l = 0;
            for (auto& [x, j] : sc) m = std::max(m, x);
            std::vector<LD> acc(D, 0);
            for (auto& [x, j] : sc) { const LD p = expl(x - m); l += p; for (int e = 0; e < D; ++e) acc[e] += p * bf(v[((size_t)bh * N + j) * D + e]); }
            for (int e = 0; e < D; ++e) worst_o = std::max(worst_o, fabsl(acc[e] / l - o[(size_t)r * D + e]));
            const LD lr = m + logl(l);
            worst_l = std::max(worst_l, fabsl(lr - lse[r]) / (1 + fabsl(lr)));
        }
    }
    bad_attn += !(worst_o <= 2e-5L * vmax) + !(worst_l <= 2e-6L);
    const bool ok = bad_codes == 0 && bad_lists == 0 && bad_attn == 0 && near_ties * 20 <= rows;
    printf("lsh BH%d N%d D%d T%d h%d k_cap%d window%d c %.3f mode %d: codes %d bad (%d near-zero dots), lists %d exact, %d near-ties, %d bad (%d rows past the buffer), attn max|do| %.2Le (vmax %.2Lf) lse rel %.2Le, %d bad %s\n",
           BH, N, D, T, H, K, cs.window, cs.c, (int)cs.mode, bad_codes, code_ties, exact, near_ties, bad_lists, pruned, worst_o, vmax, worst_l, bad_attn, ok ? "ok" : "FAIL");
    return ok;
}

int main() {
    bool ok = true;
    ok &= run({2, 200, 64, 4, 3, 24, 16, 0.693f, 1.0f, 1, PLAIN});     // N % 64 != 0, candidates > k_cap
    ok &= run({1, 100, 64, 2, 8, 200, 8, 1.0f, 1.0f, 2, PLAIN});       // k_cap above every candidate set
    ok &= run({1, 130, 128, 3, 3, 12, 0, 0.1f, 2.0f, 3, DUPS});        // D 128, no window, exact ties at the cap
    ok &= run({1, 150, 64, 5, 7, 33, 200, 0.693f, 0.5f, 4, ZEROS});    // window > N (every j <= i), zero rows
    ok &= run({1, 800, 64, 2, 1, 64, 32, 0.693f, 1.0f, 5, DUPS});      // buckets of ~400 keys: prunes mid-scan
    if (!ok) { printf("lsh: FAILED\n"); return 1; }
    return 0;
}
