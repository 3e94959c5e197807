// Host-emulation driver (see run.sh): the linear-attention kernels against explicit O(N^2) double forms.
#include "emu.h"
#include "../../crates/muse-cuda/kernels/lin_attn.cu"
#include "../../crates/muse-cuda/kernels/lin_attn_bwd.cu"
#include <cstdio>
#include <random>

static double phid(double x) { return x > 0 ? x + 1 : exp(x); }
static double phipd(double x) { return x > 0 ? 1 : exp(x); }

template <typename T> struct Op_ { const T* p; int stride, width, flags; };

template <typename T> struct Kern {
    static void states(Op_<T> b, Op_<T> c, T* st, long long n) {
        if constexpr (sizeof(T) == 4) lin_attn_states_f32(b.p, b.stride, b.width, b.flags, c.p, c.stride, c.width, c.flags, st, n);
        else lin_attn_states_f64(b.p, b.stride, b.width, b.flags, c.p, c.stride, c.width, c.flags, st, n);
    }
    static void prefix(T* st, int chunks, int size, int dir) {
        if constexpr (sizeof(T) == 4) lin_attn_prefix_f32(st, chunks, size, dir); else lin_attn_prefix_f64(st, chunks, size, dir);
    }
    static void output(Op_<T> a, Op_<T> b, Op_<T> c, const T* st, T* out, int os, const T* mul, int ms, T* den, T eps, long long n, int dir) {
        if constexpr (sizeof(T) == 4) lin_attn_output_f32(a.p, a.stride, a.width, a.flags, b.p, b.stride, b.width, b.flags, c.p, c.stride, c.width, c.flags, st, out, os, mul, ms, den, eps, n, dir);
        else lin_attn_output_f64(a.p, a.stride, a.width, a.flags, b.p, b.stride, b.width, b.flags, c.p, c.stride, c.width, c.flags, st, out, os, mul, ms, den, eps, n, dir);
    }
    static void prep(const T* d_o, const T* o, const T* den, T* g, long long rows, int dv, T eps) {
        if constexpr (sizeof(T) == 4) lin_attn_bwd_grad_prep_f32(d_o, o, den, g, rows, dv, eps); else lin_attn_bwd_grad_prep_f64(d_o, o, den, g, rows, dv, eps);
    }
};

template <typename T>
static void product(int heads, int n, std::vector<T>& state, Op_<T> a, Op_<T> b, Op_<T> c, int dir, T* out, int os, const T* mul, int ms, T* den, T eps) {
    const unsigned chunks = (n + 63) / 64;
    const int wb = b.width, wc = c.width;
    const int da = wb + ((b.flags & 2) ? 1 : 0), dc = wc + ((c.flags & 2) ? 1 : 0);
    if ((size_t)heads * chunks * da * dc > state.size()) { printf("state too small\n"); exit(1); }
    launch(dim3{(unsigned)(((wb + 63) / 64) * ((wc + 63) / 64)), chunks, (unsigned)heads}, 256, [&] { Kern<T>::states(b, c, state.data(), n); });
    launch(dim3{(unsigned)((da * dc + 255) / 256), (unsigned)heads, 1}, 256, [&] { Kern<T>::prefix(state.data(), chunks, da * dc, dir); });
    launch(dim3{(unsigned)((wc + 63) / 64), chunks, (unsigned)heads}, 256, [&] { Kern<T>::output(a, b, c, state.data(), out, os, mul, ms, den, eps, n, dir); });
}

static double maxrel(const std::vector<double>& a, const std::vector<double>& b, double floor) {
    double scale = floor, m = 0;
    for (double v : b) scale = std::max(scale, fabs(v));
    for (size_t i = 0; i < a.size(); ++i) { double e = fabs(a[i] - b[i]); if (!(e <= m)) m = std::isnan(e) ? INFINITY : e; }
    return m / scale;
}

template <typename T> static bool run(int heads, int n, int d, int dv, bool causal, unsigned seed) {
    std::mt19937 rng(seed); std::normal_distribution<double> n01;
    const double eps = 1e-6;
    auto gen = [&](size_t len, double sc) { std::vector<double> v(len); for (auto& e : v) e = (T)(sc * n01(rng)); return v; };
    std::vector<double> q = gen(heads*n*d, 0.7), k = gen(heads*n*d, 0.7), v = gen(heads*n*dv, 1.0), up = gen(heads*n*dv, 1.0);
    // explicit reference
    std::vector<double> o(heads*n*dv), dq(heads*n*d, 0), dk(heads*n*d, 0), dvv(heads*n*dv, 0);
    for (int h = 0; h < heads; ++h) {
        auto Q = [&](int i, int t) { return phid(q[(h*n+i)*d+t]); };
        auto Kk = [&](int j, int t) { return phid(k[(h*n+j)*d+t]); };
        std::vector<double> den(n), G((size_t)n*(dv+1));
        auto vis = [&](int i, int j) { return !causal || j <= i; };
        for (int i = 0; i < n; ++i) {
            double dn = 0; std::vector<double> num(dv, 0);
            for (int j = 0; j < n; ++j) if (vis(i, j)) { double w = 0; for (int t = 0; t < d; ++t) w += Q(i,t)*Kk(j,t); dn += w; for (int e = 0; e < dv; ++e) num[e] += w*v[(h*n+j)*dv+e]; }
            den[i] = dn; const double m = std::max(dn, eps);
            double dot = 0;
            for (int e = 0; e < dv; ++e) { o[(h*n+i)*dv+e] = num[e]/m; G[i*(dv+1)+e] = up[(h*n+i)*dv+e]/m; dot += up[(h*n+i)*dv+e]*o[(h*n+i)*dv+e]; }
            G[i*(dv+1)+dv] = dn > eps ? -dot/m : 0;
        }
        for (int i = 0; i < n; ++i) for (int j = 0; j < n; ++j) if (vis(i, j)) {
            double vg = G[i*(dv+1)+dv]; for (int e = 0; e < dv; ++e) vg += v[(h*n+j)*dv+e]*G[i*(dv+1)+e];
            double w = 0; for (int t = 0; t < d; ++t) w += Q(i,t)*Kk(j,t);
            for (int t = 0; t < d; ++t) { dq[(h*n+i)*d+t] += Kk(j,t)*vg; dk[(h*n+j)*d+t] += Q(i,t)*vg; }
            for (int e = 0; e < dv; ++e) dvv[(h*n+j)*dv+e] += w*G[i*(dv+1)+e];
        }
        for (int i = 0; i < n; ++i) for (int t = 0; t < d; ++t) { dq[(h*n+i)*d+t] *= phipd(q[(h*n+i)*d+t]); dk[(h*n+i)*d+t] *= phipd(k[(h*n+i)*d+t]); }
    }
    // emulated GPU, the launch sequence of crates/muse-cuda/src/lin_attn*.rs
    std::vector<T> qt(q.begin(), q.end()), kt(k.begin(), k.end()), vt(v.begin(), v.end()), ut(up.begin(), up.end());
    const int chunks = (n + 63) / 64;
    std::vector<T> state((size_t)heads*chunks*d*(dv+1), NAN), ot(heads*n*dv, NAN), dent(heads*n, NAN);
    std::vector<T> g((size_t)heads*n*(dv+1), NAN), dqt(heads*n*d, NAN), dkt(heads*n*d, NAN), dvt(heads*n*dv, NAN);
    const int dir = causal ? 0 : 2, tdir = causal ? 1 : 2;
    Op_<T> qp{qt.data(), d, d, 1}, kp{kt.data(), d, d, 1}, vp{vt.data(), dv, dv, 2};
    product<T>(heads, n, state, qp, kp, vp, dir, ot.data(), dv, nullptr, 0, dent.data(), (T)eps);
    launch(dim3{(unsigned)((heads*n + 7) / 8), 1, 1}, 256, [&] { Kern<T>::prep(ut.data(), ot.data(), dent.data(), g.data(), heads*n, dv, (T)eps); });
    Op_<T> gall{g.data(), dv+1, dv+1, 0}, gnum{g.data(), dv+1, dv, 0};
    product<T>(heads, n, state, gall, vp, kp, dir, dqt.data(), d, qt.data(), d, nullptr, (T)eps);
    product<T>(heads, n, state, vp, gall, qp, tdir, dkt.data(), d, kt.data(), d, nullptr, (T)eps);
    product<T>(heads, n, state, kp, qp, gnum, tdir, dvt.data(), dv, nullptr, 0, nullptr, (T)eps);
    auto w = [](const std::vector<T>& t) { return std::vector<double>(t.begin(), t.end()); };
    double gs = 0; for (auto* a : {&dq, &dk, &dvv}) for (double x : *a) gs = std::max(gs, fabs(x));
    double e[4] = {maxrel(w(ot), o, 1.0), maxrel(w(dqt), dq, gs), maxrel(w(dkt), dk, gs), maxrel(w(dvt), dvv, gs)};
    const double tol = sizeof(T) == 4 ? 1e-5 : 1e-11;
    bool ok = e[0] <= tol && e[1] <= 10*tol && e[2] <= 10*tol && e[3] <= 10*tol;
    printf("%s heads %d N%d d%d dv%d %s: o %.2e dq %.2e dk %.2e dv %.2e %s\n", sizeof(T)==4?"f32":"f64", heads, n, d, dv, causal?"causal":"full", e[0], e[1], e[2], e[3], ok?"OK":"FAIL");
    return ok;
}

int main() {
    bool ok = true;
    struct S { int h, n, d, dv; bool causal; } shapes[] = {{1,1,1,1,true},{4,37,16,24,true},{2,130,64,64,true},{1,65,3,70,true},{1,200,80,5,true},{1,20,8,8,false},{2,150,16,16,false},{1,128,2,3,true},{1,300,1,2,true}};
    for (auto& s : shapes) { ok &= run<float>(s.h, s.n, s.d, s.dv, s.causal, 11 + s.n); ok &= run<double>(s.h, s.n, s.d, s.dv, s.causal, 13 + s.n); }
    printf(ok ? "ALL OK\n" : "SOME FAILED\n");
    return ok ? 0 : 1;
}
