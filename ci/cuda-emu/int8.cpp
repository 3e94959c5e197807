// Host-emulation driver (see run.sh): the INT8 distance kernels (rows, dp4a pairs) against a
// long-double reference on the kernels' own codes (design §16 test (a)), and the codes against the
// quantiser recomputed here in f32 (rint(u / sigma) of the same f32 values).
#include "emu.h"
#include "../../crates/muse-cuda/kernels/hyp_int8.cu"
#include <cstdio>
#include <random>

typedef long double LD;

static bool run(int BH, int N, int M, int D, float c, float amax, unsigned seed) {
    std::mt19937 rng(seed); std::normal_distribution<float> n01; std::uniform_real_distribution<float> u01(0, 1);
    const float s = sqrtf(c);
    auto rows = [&](int L) {
        std::vector<float> v((size_t)BH * L * D);
        for (int r = 0; r < BH * L; ++r) {
            float nrm = 0; for (int k = 0; k < D; ++k) { v[(size_t)r*D+k] = n01(rng); nrm += v[(size_t)r*D+k]*v[(size_t)r*D+k]; }
            const float f = (r % 17 == 3) ? 0.0f : amax * u01(rng) / s / sqrtf(nrm);  // some zero rows
            for (int k = 0; k < D; ++k) v[(size_t)r*D+k] *= f;
        }
        return v;
    };
    std::vector<float> x = rows(N), y = rows(M);
    for (int k = 0; k < D; ++k) y[k] = x[(size_t)2*D+k];  // a coincident pair (row 0 of y = row 2 of x)
    const int words = (D + 3) / 4;
    std::vector<int> qx((size_t)BH*N*words), qy((size_t)BH*M*words);
    std::vector<float> sx((size_t)BH*N*HYP_INT8_STATS), sy((size_t)BH*M*HYP_INT8_STATS), d((size_t)BH*N*M);
    launch(dim3{(unsigned)((BH*N + 7) / 8), 1, 1}, HYP_INT8_THREADS, [&] { hyp_int8_rows(x.data(), (long long)BH*N, D, words, s, (signed char*)qx.data(), sx.data()); });
    launch(dim3{(unsigned)((BH*M + 7) / 8), 1, 1}, HYP_INT8_THREADS, [&] { hyp_int8_rows(y.data(), (long long)BH*M, D, words, s, (signed char*)qy.data(), sy.data()); });
    launch(dim3{(unsigned)((M + 63) / 64), (unsigned)((N + 63) / 64), (unsigned)BH}, HYP_INT8_THREADS, [&] { hyp_int8_pairs(qx.data(), qy.data(), sx.data(), sy.data(), d.data(), N, M, words, 1.0f / s); });
    int bad_codes = 0;
    auto check_codes = [&](const std::vector<float>& v, const std::vector<int>& q, const std::vector<float>& st, int L) {
        for (int r = 0; r < BH * L; ++r) {
            float ss = 0, am = 0;
            for (int k = 0; k < D; ++k) { ss += v[(size_t)r*D+k]*v[(size_t)r*D+k]; am = fmaxf(am, fabsf(v[(size_t)r*D+k])); }
            const signed char* b = (const signed char*)&q[(size_t)r*words];
            for (int k = D; k < 4 * words; ++k) if (b[k] != 0) ++bad_codes;  // padding stays 0
            const float sig = st[(size_t)r*HYP_INT8_STATS];
            if (am == 0) { if (sig != 1.0f) ++bad_codes; for (int k = 0; k < D; ++k) if (b[k]) ++bad_codes; continue; }
            // each code within half a step (plus f32 slack) of u/sigma, and the largest at 127
            const double rn = sqrt((double)ss);
            int qmax = 0;
            for (int k = 0; k < D; ++k) {
                qmax = std::max(qmax, abs((int)b[k]));
                if (fabs(b[k] - v[(size_t)r*D+k] / rn / sig) > 0.5 + 1e-3) ++bad_codes;
            }
            if (qmax != 127) ++bad_codes;
        }
    };
    check_codes(x, qx, sx, N); check_codes(y, qy, sy, M);
    // reference on the kernels' own codes: C = sigma_i sigma_j sum q q, radial terms exact
    double worst = 0;
    for (int h = 0; h < BH; ++h)
        for (int i = 0; i < N; ++i)
            for (int j = 0; j < M; ++j) {
                const signed char* a = (const signed char*)&qx[((size_t)h*N+i)*words];
                const signed char* b = (const signed char*)&qy[((size_t)h*M+j)*words];
                long long dot = 0; for (int k = 0; k < D; ++k) dot += (long long)a[k] * b[k];
                LD ra = 0, rb = 0;
                for (int k = 0; k < D; ++k) { ra += (LD)x[((size_t)h*N+i)*D+k]*x[((size_t)h*N+i)*D+k]; rb += (LD)y[((size_t)h*M+j)*D+k]*y[((size_t)h*M+j)*D+k]; }
                const LD A = fminl(s * sqrtl(ra), 15), B = fminl(s * sqrtl(rb), 15);
                const LD C = (LD)sx[((size_t)h*N+i)*HYP_INT8_STATS] * sy[((size_t)h*M+j)*HYP_INT8_STATS] * (LD)dot;
                const LD sh = sinhl(A - B);
                LD z = 2*sh*sh + sinhl(2*A)*sinhl(2*B)*(1 - C); if (z < 0) z = 0;
                const LD want = log1pl(z + sqrtl(z*(z+2))) / s, got = d[((size_t)h*N+i)*M+j];
                const double err = s * want > 1e-3 ? (double)(fabsl(got - want) / want) : (double)(fabsl(got - want) * s);
                worst = std::max(worst, err);
            }
    const bool ok = bad_codes == 0 && worst <= 1e-5;
    printf("int8 BH%d N%d M%d D%d c %.3f amax %.1f: code checks %d bad, distance rel err %.2e (rule 1e-5) %s\n", BH, N, M, D, c, amax, bad_codes, worst, ok ? "ok" : "FAIL");
    return ok;
}

int main() {
    bool ok = true;
    ok &= run(2, 70, 50, 64, 0.693f, 5.0f, 1);
    ok &= run(1, 33, 65, 200, 2.0f, 4.0f, 2);
    ok &= run(1, 9, 7, 3, 0.01f, 3.0f, 3);
    ok &= run(1, 130, 20, 1, 1.0f, 2.0f, 4);
    if (!ok) { printf("int8: FAILED\n"); return 1; }
    return 0;
}
