// Host-emulation driver (see run.sh): the W4A8 kernels against integer arithmetic on the same
// codes (design §16 test (a)), with the launch sequences of crates/muse-cuda/src/w4a8.rs and
// w4a8/large.rs: quant_x + gemm_small (two launches) and gemm_fused (one launch, M * Kp <=
// W4A8_FUSE_MAX), over ct = 1, 2, 4 tiles per CTA; and quant_x + gemm_large (M > 16) on grid
// (ceil(N / 64), ceil(M / 128)): M not a multiple of 128 (idle warps, zero-filled rows), N not a
// multiple of 64 (CTAs with 4 of 8 tiles, dropped columns), the per-block and per-chunk paths.
// `w4a8 large` runs the gemm_large cases only. Weights are coded here (every code value at even
// and odd positions, zero points 0..15) and laid out as DeviceWeights::upload does; activations
// are coded by the kernels (within half a step of x/s_x, 0 in the padding, identical in both
// small-M paths). y must equal the integer reference to f32 rounding: |y - want| <= (P + 10)
// 2^-24 s_x sum_g |s_w,g T_g|, P the number of f32 partials (K/128, or K/32 when G % 128 != 0), a
// worst-case bound on the kernel's additions (a wrong or missing chunk or group shows as ~ sum/P).
#include "emu.h"
#include "../../crates/muse-cuda/kernels/w4a8.cu"
#include <cstdio>
#include <random>
#include <string>

static int kpad(int K) { return (K + 127) / 128 * 128; }
// Position of k in a row of the permuted code layout (kernel header).
static int pos(int k) { const int b = k / 128, c = k % 128 / 32, t = k % 32 / 8, i = k % 8 / 2, h = k % 2; return 128 * b + 32 * t + 8 * c + 4 * h + i; }

struct Codes { std::vector<signed char> xq; std::vector<float> sx; };

// Codes off by more than half a step, or nonzero padding.
static int check_codes(const Codes& a, const std::vector<float>& x, int M, int K) {
    const int kp = kpad(K);
    int bad = 0;
    for (int m = 0; m < M; ++m) {
        for (int k = 0; k < kp; ++k) {
            const int q = a.xq[(size_t)m * kp + pos(k)];
            if (k >= K ? q != 0 : fabs(q - x[(size_t)m * K + k] / a.sx[m]) > 0.5 + 1e-4) ++bad;
        }
    }
    return bad;
}

// Weights coded here (every code value at even and odd positions, zero points 0..15) and laid out
// as DeviceWeights::upload does, and activations x [M, K] (the last row all zero when M > 1).
struct Problem {
    int M, N, K, G, groups, kp;
    bool asym;
    std::vector<float> x;
    std::vector<int> q;
    std::vector<unsigned char> wz, wp;
    std::vector<unsigned short> ws;
    std::vector<unsigned> meta;
};

static Problem make(int M, int N, int K, int G, bool asym, unsigned seed) {
    std::mt19937 rng(seed); std::normal_distribution<float> n01; std::uniform_int_distribution<int> code(asym ? 0 : -8, asym ? 15 : 7), zp(0, 15);
    Problem p{M, N, K, G, K / G, kpad(K), asym};
    const int groups = p.groups, nblk = p.kp / 128, n32 = (N + 31) / 32 * 32;
    p.x.resize((size_t)M * K);
    for (auto& v : p.x) v = 2.0f * n01(rng);
    if (M > 1) for (int k = 0; k < K; ++k) p.x[(size_t)(M - 1) * K + k] = 0.0f;  // an all-zero row
    p.q.resize((size_t)N * K);
    for (auto& c : p.q) c = code(rng);
    p.wz.resize((size_t)N * groups), p.ws.resize((size_t)N * groups);
    for (int n = 0; n < N; ++n)
        for (int g = 0; g < groups; ++g) {
            p.ws[(size_t)n * groups + g] = f2h(0.01f * (1 + (n * 7 + g) % 13));
            p.wz[(size_t)n * groups + g] = asym ? (unsigned char)zp(rng) : 0;
        }
    // DeviceWeights::upload's layout.
    p.wp.assign((size_t)n32 / 8 * nblk * 512, 0);
    p.meta.assign((size_t)n32 / 8 * groups * 8, 0);
    for (int n = 0; n < N; ++n) {
        const int jt = n / 8, g = n % 8;
        for (int k = 0; k < K; ++k) {
            const int c = p.q[(size_t)n * K + k], nib = (asym ? c ^ 8 : c) & 15, kk = k % 128;
            const size_t off = ((((size_t)jt * nblk + k / 128) * 8 + g) * 4 + kk % 32 / 8) * 16 + 4 * (kk / 32) + kk % 8 / 2;
            p.wp[off] |= (unsigned char)(nib << (4 * (k % 2)));
        }
        for (int gi = 0; gi < groups; ++gi) {
            const int zc = asym ? 16 * (8 - p.wz[(size_t)n * groups + gi]) : 0;
            p.meta[((size_t)jt * groups + gi) * 8 + g] = p.ws[(size_t)n * groups + gi] | ((unsigned)(unsigned short)(short)zc << 16);
        }
    }
    return p;
}

// max |y - want| / (s_x sum_g |s_w,g T_g|) over y against the integer reference on the codes `c`;
// unwritten (NaN) outputs count into `bad`.
static double y_err(const Problem& p, const Codes& c, const std::vector<float>& y, int& bad) {
    double worst = 0;
    for (int m = 0; m < p.M; ++m)
        for (int n = 0; n < p.N; ++n) {
            long double want = 0, mag = 0;
            for (int g = 0; g < p.groups; ++g) {
                long long acc = 0, sum = 0;
                for (int k = g * p.G; k < (g + 1) * p.G; ++k) { const int xc = c.xq[(size_t)m * p.kp + pos(k)]; acc += (long long)xc * p.q[(size_t)n * p.K + k]; sum += xc; }
                const long double term = (long double)h2f(p.ws[(size_t)n * p.groups + g]) * (long double)(acc - (long long)p.wz[(size_t)n * p.groups + g] * sum);
                want += term, mag += fabsl(term);
            }
            want *= c.sx[m], mag *= c.sx[m];
            const long double got = y[(size_t)m * p.N + n];
            if (std::isnan((double)got)) { ++bad; continue; }
            worst = std::max(worst, (double)(fabsl(got - want) / fmaxl(mag, 1e-30L)));
        }
    return worst;
}

static double bound(int K, int G) { return ((G % 128 == 0 ? K / 128 : K / 32) + 10) * ldexp(1.0, -24); }

static Codes quant(const Problem& p) {
    Codes c{std::vector<signed char>((size_t)p.M * p.kp, 99), std::vector<float>(p.M)};
    launch(dim3{(unsigned)((p.M + W4A8_WARPS - 1) / W4A8_WARPS), 1, 1}, W4A8_THREADS, [&] { w4a8_quant_x(p.x.data(), p.M, p.K, c.xq.data(), c.sx.data()); });
    return c;
}

static bool run(int M, int N, int K, int G, bool asym, unsigned seed, std::initializer_list<int> cts) {
    const Problem p = make(M, N, K, G, asym, seed);
    const bool fusable = M * p.kp <= W4A8_FUSE_MAX;
    const Codes two = quant(p);
    const int bad_two = check_codes(two, p.x, M, K);
    bool ok = true;
    for (int fused = 0; fused <= (fusable ? 1 : 0); ++fused)
        for (int ct : cts) {
            std::vector<float> y((size_t)M * N, NAN);
            int bad;
            Codes own{std::vector<signed char>((size_t)M * p.kp, 99), std::vector<float>(M)};
            const dim3 grid{(unsigned)((N + 8 * ct - 1) / (8 * ct)), 1, 1};
            if (fused) {
                launch(grid, W4A8_THREADS, [&] { w4a8_gemm_fused(p.x.data(), p.wp.data(), p.meta.data(), y.data(), own.xq.data(), own.sx.data(), M, N, K, G, ct, asym ? 1 : 0); });
                bad = check_codes(own, p.x, M, K) + (own.xq != two.xq || own.sx != two.sx ? 1 : 0);  // both paths code alike
            } else {
                launch(grid, W4A8_THREADS, [&] { w4a8_gemm_small(two.xq.data(), two.sx.data(), p.wp.data(), p.meta.data(), y.data(), M, N, K, G, ct, asym ? 1 : 0); });
                bad = bad_two;
            }
            const double worst = y_err(p, two, y, bad), lim = bound(K, G);
            const bool pass = bad == 0 && worst <= lim;
            ok &= pass;
            printf("w4a8 %s M%d N%d K%d G%d %s ct%d: activation codes / unwritten off %d, y err / (s_x sum|terms|) %.2e (bound %.1e) %s\n", fused ? "fused" : "2-launch", M, N, K, G, asym ? "asym" : "sym", ct, bad, worst, lim, pass ? "ok" : "FAIL");
        }
    return ok;
}

// quant_x + gemm_large with the launcher's grid (ceil(N / 64), ceil(M / 128)).
static bool run_large(int M, int N, int K, int G, bool asym, unsigned seed) {
    const Problem p = make(M, N, K, G, asym, seed);
    const Codes c = quant(p);
    int bad = check_codes(c, p.x, M, K);
    std::vector<float> y((size_t)M * N, NAN);
    const dim3 grid{(unsigned)((N + 8 * W4A8_LARGE_TILES - 1) / (8 * W4A8_LARGE_TILES)), (unsigned)((M + W4A8_LARGE_ROWS - 1) / W4A8_LARGE_ROWS), 1};
    launch(grid, W4A8_THREADS, [&] { w4a8_gemm_large(c.xq.data(), c.sx.data(), p.wp.data(), p.meta.data(), y.data(), M, N, K, G, asym ? 1 : 0); });
    const double worst = y_err(p, c, y, bad), lim = bound(K, G);
    const bool pass = bad == 0 && worst <= lim;
    printf("w4a8 large M%d N%d K%d G%d %s grid %ux%u: activation codes / unwritten off %d, y err / (s_x sum|terms|) %.2e (bound %.1e) %s\n", M, N, K, G, asym ? "asym" : "sym", grid.x, grid.y, bad, worst, lim, pass ? "ok" : "FAIL");
    return pass;
}

int main(int argc, char** argv) {
    bool ok = true;
    const bool large_only = argc > 1 && std::string(argv[1]) == "large";  // `w4a8 large`: only gemm_large
    for (bool asym : {false, true}) {
        if (large_only) break;
        ok &= run(1, 40, 256, 128, asym, 1, {1, 4});   // per-block path, K % 128 == 0
        ok &= run(4, 17, 512, 64, asym, 2, {1, 2});    // per-chunk path, odd N
        ok &= run(16, 9, 96, 32, asym, 3, {1});        // K padded to 128, idle warps
        ok &= run(5, 33, 1152, 128, asym, 4, {4});     // 9 blocks: a warp takes two
        ok &= run(16, 24, 1536, 96, asym, 5, {2});     // groups straddle blocks; too big to fuse
        ok &= run(9, 64, 512, 256, asym, 6, {4});      // G spans blocks (2 warps per group)
        ok &= run(16, 96, 1024, 128, asym, 7, {4});    // largest fused M * Kp, 4 tiles per warp
        ok &= run(1, 33, 4096, 128, asym, 8, {1});     // 32 blocks: 4 per warp
    }
    for (bool asym : {false, true}) {
        ok &= run_large(150, 136, 384, 128, asym, 11);  // 2 row-CTAs (22 rows, 6 warps idle, in the second); 20 tiles: 8 + 8 + 4
        ok &= run_large(17, 40, 96, 32, asym, 12);      // per-chunk path, K padded to 128, one row in warp 1; columns 40..63 dropped
        ok &= run_large(40, 72, 384, 64, asym, 13);     // 2 groups a block; 4 of 8 tiles in the second CTA
        ok &= run_large(20, 200, 384, 96, asym, 14);    // groups straddle blocks; 4 column-CTAs
    }
    if (!ok) { printf("w4a8: FAILED\n"); return 1; }
    return 0;
}
