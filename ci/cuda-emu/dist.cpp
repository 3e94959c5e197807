// Host-emulation driver (see run.sh): the distance-matrix kernels against a long-double reference.
#include "emu.h"
#include "../../crates/muse-cuda/kernels/hyp_dist.cu"
#include <cstdio>
#include <random>

static double ref_dist(const double* u, const double* w, int D, double c, int input) {
    typedef long double L;
    const L s = sqrtl((L)c);
    if (input == 1) {
        L x2 = 0, y2 = 0, d2 = 0;
        for (int k = 0; k < D; ++k) { x2 += (L)u[k]*u[k]; y2 += (L)w[k]*w[k]; d2 += ((L)u[k]-w[k])*((L)u[k]-w[k]); }
        const L z = 2*(L)c*d2/((1-(L)c*x2)*(1-(L)c*y2));
        return (double)(log1pl(z + sqrtl(z*(z+2)))/s);
    }
    L ru = 0, rw = 0; for (int k = 0; k < D; ++k) { ru += (L)u[k]*u[k]; rw += (L)w[k]*w[k]; }
    ru = sqrtl(ru); rw = sqrtl(rw);
    const L a = fminl(s*ru, 15), b = fminl(s*rw, 15);
    L omc = 1;
    if (ru > 0 && rw > 0) { omc = 0; for (int k = 0; k < D; ++k) { L e = u[k]/ru - w[k]/rw; omc += e*e; } omc /= 2; }
    const L sh = sinhl(a - b);
    const L z = 2*sh*sh + sinhl(2*a)*sinhl(2*b)*omc;
    return (double)(log1pl(z + sqrtl(z*(z+2)))/s);
}

template <typename T> static bool run(int BH, int N, int M, int D, int input, double c, double amax, unsigned seed) {
    std::mt19937 rng(seed); std::normal_distribution<double> n01; std::uniform_real_distribution<double> u01(0, 1);
    const double s = sqrt(c);
    auto rows = [&](int L) {
        std::vector<double> v(BH*L*D);
        for (int r = 0; r < BH*L; ++r) {
            double nrm = 0; for (int k = 0; k < D; ++k) { v[r*D+k] = n01(rng); nrm += v[r*D+k]*v[r*D+k]; }
            nrm = sqrt(nrm); double a = amax*u01(rng);
            double f = input == 0 ? a/s/nrm : tanh(a)/s/nrm;
            for (int k = 0; k < D; ++k) v[r*D+k] = (T)(v[r*D+k]*f);
        }
        return v;
    };
    std::vector<double> x = rows(N), y = rows(M);
    // coincident and near-coincident pairs
    for (int h = 0; h < BH; ++h) for (int k = 0; k < D; ++k) {
        y[(h*M+0)*D+k] = x[(h*N+0)*D+k];
        if (M > 1 && N > 1) y[(h*M+1)*D+k] = (T)(x[(h*N+1)*D+k]*(1 + 1e-6*n01(rng)));
    }
    if (N > 2) for (int k = 0; k < D; ++k) x[2*D+k] = 0;  // a zero row
    std::vector<T> xt(x.begin(), x.end()), yt(y.begin(), y.end());
    std::vector<T> sx(BH*N*8, NAN), sy(BH*M*8, NAN), d((size_t)BH*N*M, NAN);
    launch(dim3{(unsigned)((BH*N+7)/8),1,1}, 256, [&] {
        if constexpr (sizeof(T) == 4) hyp_dist_rows_f32(xt.data(), BH*N, D, c, s, input, sx.data());
        else hyp_dist_rows_f64(xt.data(), BH*N, D, c, s, input, sx.data());
    });
    launch(dim3{(unsigned)((BH*M+7)/8),1,1}, 256, [&] {
        if constexpr (sizeof(T) == 4) hyp_dist_rows_f32(yt.data(), BH*M, D, c, s, input, sy.data());
        else hyp_dist_rows_f64(yt.data(), BH*M, D, c, s, input, sy.data());
    });
    const int bm = sizeof(T) == 4 ? 128 : 64;
    const int vec = D % (16 / (int)sizeof(T)) == 0;
    launch(dim3{(unsigned)((M+bm-1)/bm), (unsigned)((N+bm-1)/bm), (unsigned)BH}, 256, [&] {
        if constexpr (sizeof(T) == 4) hyp_dist_pairs_f32(xt.data(), yt.data(), sx.data(), sy.data(), d.data(), N, M, D, vec, (float)c, (float)c == 0 ? 0 : sqrtf((float)c), (float)(1/s), input);
        else hyp_dist_pairs_f64(xt.data(), yt.data(), sx.data(), sy.data(), d.data(), N, M, D, vec, c, sqrt(c), 1/s, input);
    });
    double worst = 0; long bad = 0; int zeros_bad = 0;
    for (int h = 0; h < BH; ++h) for (int i = 0; i < N; ++i) for (int j = 0; j < M; ++j) {
        const double want = ref_dist(&x[(h*N+i)*D], &y[(h*M+j)*D], D, c, input);
        const double got = d[((size_t)h*N+i)*M+j];
        const double allowed = sizeof(T) == 4 ? (s*want > 1e-3 ? 1e-5*want : 1e-5/s) : 1e-10*std::max(1.0, want);
        const double r = fabs(got-want)/allowed;
        if (!(r <= 1)) ++bad;
        if (!(r <= worst)) worst = std::isnan(r) ? INFINITY : std::max(worst, r);
        if (j == 0 && i == 0 && got != 0.0) ++zeros_bad;
    }
    bool ok = bad == 0 && zeros_bad == 0;
    printf("%s input %d BH%d N%d M%d D%d c%.3g amax %.1f vec %d: worst %.3fx allowed, %ld bad, d(x,x)!=0: %d %s\n", sizeof(T)==4?"f32":"f64", input, BH, N, M, D, c, amax, vec, worst, bad, zeros_bad, ok?"OK":"FAIL");
    return ok;
}

int main() {
    bool ok = true;
    struct S { int bh, n, m, d; } shapes[] = {{2,130,70,65},{1,40,33,64},{1,20,20,1},{2,9,140,3},{1,70,130,96},{1,5,7,256}};
    for (auto& sh : shapes) for (int input = 0; input < 2; ++input) {
        double amax = input == 0 ? 5.0 : 1.4;
        ok &= run<float>(sh.bh, sh.n, sh.m, sh.d, input, 0.693, amax, 7 + sh.d);
        ok &= run<double>(sh.bh, sh.n, sh.m, sh.d, input, 2.0, input == 0 ? 11.0 : 4.0, 9 + sh.d);
    }
    ok &= run<float>(1, 64, 64, 128, 0, 0.01, 6.0, 3);
    printf(ok ? "ALL OK\n" : "SOME FAILED\n");
    return ok ? 0 : 1;
}
