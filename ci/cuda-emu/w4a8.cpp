// Host-emulation driver (see run.sh): the W4A8 small-M kernels against integer arithmetic on the
// same codes (design §16 test (a)), with the launch sequences of crates/muse-cuda/src/w4a8.rs:
// quant_x + gemm_small (two launches) and gemm_fused (one launch, M * Kp <= W4A8_FUSE_MAX), over
// ct = 1, 2, 4 tiles per CTA. Weights are coded here (every code value at even and odd positions,
// zero points 0..15) and laid out as DeviceWeights::upload does; activations are coded by the
// kernels (within half a step of x/s_x, 0 in the padding, identical in both paths). y must equal
// the integer reference to f32 rounding: |y - want| <= (P + 10) 2^-24 s_x sum_g |s_w,g T_g|, P
// the number of f32 partials (K/128, or K/32 when G % 128 != 0), a worst-case bound on the
// kernel's additions (a wrong or missing chunk or group shows as ~ sum/P).
#include "emu.h"
#include "../../crates/muse-cuda/kernels/w4a8.cu"
#include <cstdio>
#include <random>

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

static bool run(int M, int N, int K, int G, bool asym, unsigned seed, std::initializer_list<int> cts) {
    std::mt19937 rng(seed); std::normal_distribution<float> n01; std::uniform_int_distribution<int> code(asym ? 0 : -8, asym ? 15 : 7), zp(0, 15);
    const int groups = K / G, kp = kpad(K), nblk = kp / 128, n32 = (N + 31) / 32 * 32;
    std::vector<float> x((size_t)M * K);
    for (auto& v : x) v = 2.0f * n01(rng);
    if (M > 1) for (int k = 0; k < K; ++k) x[(size_t)(M - 1) * K + k] = 0.0f;  // an all-zero row
    std::vector<int> q((size_t)N * K);
    for (auto& c : q) c = code(rng);
    std::vector<unsigned char> wz((size_t)N * groups);
    std::vector<unsigned short> ws((size_t)N * groups);
    for (int n = 0; n < N; ++n)
        for (int g = 0; g < groups; ++g) {
            ws[(size_t)n * groups + g] = f2h(0.01f * (1 + (n * 7 + g) % 13));
            wz[(size_t)n * groups + g] = asym ? (unsigned char)zp(rng) : 0;
        }
    // DeviceWeights::upload's layout.
    std::vector<unsigned char> wp((size_t)n32 / 8 * nblk * 512, 0);
    std::vector<unsigned> meta((size_t)n32 / 8 * groups * 8, 0);
    for (int n = 0; n < N; ++n) {
        const int jt = n / 8, g = n % 8;
        for (int k = 0; k < K; ++k) {
            const int c = q[(size_t)n * K + k], nib = (asym ? c ^ 8 : c) & 15, kk = k % 128;
            const size_t off = ((((size_t)jt * nblk + k / 128) * 8 + g) * 4 + kk % 32 / 8) * 16 + 4 * (kk / 32) + kk % 8 / 2;
            wp[off] |= (unsigned char)(nib << (4 * (k % 2)));
        }
        for (int gi = 0; gi < groups; ++gi) {
            const int zc = asym ? 16 * (8 - wz[(size_t)n * groups + gi]) : 0;
            meta[((size_t)jt * groups + gi) * 8 + g] = ws[(size_t)n * groups + gi] | ((unsigned)(unsigned short)(short)zc << 16);
        }
    }
    const bool fusable = M * kp <= W4A8_FUSE_MAX;
    Codes two{std::vector<signed char>((size_t)M * kp, 99), std::vector<float>(M)};
    launch(dim3{(unsigned)M, 1, 1}, W4A8_THREADS, [&] { w4a8_quant_x(x.data(), M, K, two.xq.data(), two.sx.data()); });
    const int bad_two = check_codes(two, x, M, K);
    bool ok = true;
    for (int fused = 0; fused <= (fusable ? 1 : 0); ++fused)
        for (int ct : cts) {
            std::vector<float> y((size_t)M * N, NAN);
            int bad;
            Codes own{std::vector<signed char>((size_t)M * kp, 99), std::vector<float>(M)};
            const dim3 grid{(unsigned)((N + 8 * ct - 1) / (8 * ct)), 1, 1};
            if (fused) {
                launch(grid, W4A8_THREADS, [&] { w4a8_gemm_fused(x.data(), wp.data(), meta.data(), y.data(), own.xq.data(), own.sx.data(), M, N, K, G, ct, asym ? 1 : 0); });
                bad = check_codes(own, x, M, K) + (own.xq != two.xq || own.sx != two.sx ? 1 : 0);  // both paths code alike
            } else {
                launch(grid, W4A8_THREADS, [&] { w4a8_gemm_small(two.xq.data(), two.sx.data(), wp.data(), meta.data(), y.data(), M, N, K, G, ct, asym ? 1 : 0); });
                bad = bad_two;
            }
            double worst = 0;
            for (int m = 0; m < M; ++m)
                for (int n = 0; n < N; ++n) {
                    long double want = 0, mag = 0;
                    for (int g = 0; g < groups; ++g) {
                        long long acc = 0, sum = 0;
                        for (int k = g * G; k < (g + 1) * G; ++k) { const int xc = two.xq[(size_t)m * kp + pos(k)]; acc += (long long)xc * q[(size_t)n * K + k]; sum += xc; }
                        const long double term = (long double)h2f(ws[(size_t)n * groups + g]) * (long double)(acc - (long long)wz[(size_t)n * groups + g] * sum);
                        want += term, mag += fabsl(term);
                    }
                    want *= two.sx[m], mag *= two.sx[m];
                    const long double got = y[(size_t)m * N + n];
                    if (std::isnan((double)got)) { ++bad; continue; }
                    worst = std::max(worst, (double)(fabsl(got - want) / fmaxl(mag, 1e-30L)));
                }
            const double bound = ((G % 128 == 0 ? K / 128 : K / 32) + 10) * ldexp(1.0, -24);
            const bool pass = bad == 0 && worst <= bound;
            ok &= pass;
            printf("w4a8 %s M%d N%d K%d G%d %s ct%d: activation codes / unwritten off %d, y err / (s_x sum|terms|) %.2e (bound %.1e) %s\n", fused ? "fused" : "2-launch", M, N, K, G, asym ? "asym" : "sym", ct, bad, worst, bound, pass ? "ok" : "FAIL");
        }
    return ok;
}

int main() {
    bool ok = true;
    for (bool asym : {false, true}) {
        ok &= run(1, 40, 256, 128, asym, 1, {1, 4});   // per-block path, K % 128 == 0
        ok &= run(4, 17, 512, 64, asym, 2, {1, 2});    // per-chunk path, odd N
        ok &= run(16, 9, 96, 32, asym, 3, {1});        // K padded to 128, idle warps
        ok &= run(5, 33, 1152, 128, asym, 4, {4});     // 9 blocks: a warp takes two
        ok &= run(16, 24, 1536, 96, asym, 5, {2});     // groups straddle blocks; too big to fuse
        ok &= run(9, 64, 512, 256, asym, 6, {4});      // G spans blocks (2 warps per group)
        ok &= run(16, 96, 1024, 128, asym, 7, {4});    // largest fused M * Kp, 4 tiles per warp
        ok &= run(1, 33, 4096, 128, asym, 8, {1});     // 32 blocks: 4 per warp
    }
    if (!ok) { printf("w4a8: FAILED\n"); return 1; }
    return 0;
}
