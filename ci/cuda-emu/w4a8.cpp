// Host-emulation driver (see run.sh): the W4A8 small-M kernels against integer arithmetic on the
// same codes (design §16 test (a)). Weights are coded here (every code value at even and odd
// positions, zero points 0..15), activations by the kernel (checked within half a step).
#include "emu.h"
#include "../../crates/muse-cuda/kernels/w4a8.cu"
#include <cstdio>
#include <random>

static bool run(int M, int N, int K, int G, bool asym, unsigned seed) {
    std::mt19937 rng(seed); std::normal_distribution<float> n01; std::uniform_int_distribution<int> code(asym ? 0 : -8, asym ? 15 : 7), zp(0, 15);
    const int groups = K / G;
    std::vector<float> x((size_t)M * K);
    for (auto& v : x) v = 2.0f * n01(rng);
    if (M > 1) for (int k = 0; k < K; ++k) x[(size_t)(M - 1) * K + k] = 0.0f;  // an all-zero row
    std::vector<int> q((size_t)N * K);
    for (auto& c : q) c = code(rng);
    std::vector<unsigned char> wp((size_t)N * K / 2), wz((size_t)N * groups);
    std::vector<unsigned short> ws((size_t)N * groups);
    for (int n = 0; n < N; ++n)
        for (int g = 0; g < groups; ++g) {
            ws[(size_t)n * groups + g] = f2h(0.01f * (1 + (n * 7 + g) % 13));
            wz[(size_t)n * groups + g] = asym ? (unsigned char)zp(rng) : 0;
        }
    for (size_t i = 0; i < wp.size(); ++i) wp[i] = (unsigned char)((q[2 * i] & 15) | ((q[2 * i + 1] & 15) << 4));
    std::vector<signed char> xq((size_t)M * K);
    std::vector<float> sx(M), y((size_t)M * N);
    launch(dim3{(unsigned)((M + 7) / 8), 1, 1}, W4A8_THREADS, [&] { w4a8_quant_x(x.data(), M, K, xq.data(), sx.data()); });
    launch(dim3{(unsigned)((N + 7) / 8), 1, 1}, W4A8_THREADS, [&] { w4a8_gemm_small(xq.data(), sx.data(), wp.data(), ws.data(), wz.data(), y.data(), M, N, K, G, asym ? 1 : 0); });
    int bad = 0;
    for (int m = 0; m < M; ++m)
        for (int k = 0; k < K; ++k)
            if (fabs(xq[(size_t)m * K + k] - x[(size_t)m * K + k] / sx[m]) > 0.5 + 1e-4) ++bad;
    double worst = 0;
    for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
            long double want = 0;
            for (int g = 0; g < groups; ++g) {
                long long acc = 0, sum = 0;
                for (int k = g * G; k < (g + 1) * G; ++k) { acc += (long long)xq[(size_t)m * K + k] * q[(size_t)n * K + k]; sum += xq[(size_t)m * K + k]; }
                want += (long double)h2f(ws[(size_t)n * groups + g]) * (long double)(acc - (long long)wz[(size_t)n * groups + g] * sum);
            }
            want *= sx[m];
            const long double got = y[(size_t)m * N + n];
            worst = std::max(worst, (double)(fabsl(got - want) / fmaxl(fabsl(want), 1e-3L)));
        }
    const bool ok = bad == 0 && worst <= 1e-5;
    printf("w4a8 M%d N%d K%d G%d %s: activation codes off %d, y rel err %.2e %s\n", M, N, K, G, asym ? "asym" : "sym", bad, worst, ok ? "ok" : "FAIL");
    return ok;
}

int main() {
    bool ok = true;
    for (bool asym : {false, true}) {
        ok &= run(1, 40, 256, 128, asym, 1);
        ok &= run(5, 17, 512, 64, asym, 2);
        ok &= run(16, 9, 96, 32, asym, 3);
    }
    if (!ok) { printf("w4a8: FAILED\n"); return 1; }
    return 0;
}
