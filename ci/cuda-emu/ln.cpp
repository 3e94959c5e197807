// Host-emulation driver (see run.sh): the fused LN + projection kernels against a double reference.
#include "emu.h"
#include "../../crates/muse-cuda/kernels/hyp_ln.cu"
#include "../../crates/muse-cuda/kernels/hyp_ln_bwd.cu"
#include <cstdio>
#include <random>

// Double reference of one row (reference/src/hyp_ln/row.rs).
struct RefOut { std::vector<double> y, out, dx, dg, db; double dc; };

static RefOut reference(const std::vector<double>& x, const std::vector<double>& g, const std::vector<double>& gm,
                        const std::vector<double>& bt, int R, int D, double eps, double c, int mode) {
    RefOut r; r.y.resize(R*D); r.out.resize(R*D); r.dx.resize(R*D); r.dg.assign(D,0); r.db.assign(D,0); r.dc = 0;
    const double s = sqrt(c);
    for (int i = 0; i < R; ++i) {
        double mu = 0; for (int d = 0; d < D; ++d) mu += x[i*D+d]; mu /= D;
        double var = 0; for (int d = 0; d < D; ++d) var += (x[i*D+d]-mu)*(x[i*D+d]-mu); var /= D;
        const double rstd = 1/sqrt(var+eps);
        std::vector<double> xh(D), y(D);
        double r2 = 0, yg = 0;
        for (int d = 0; d < D; ++d) { xh[d] = (x[i*D+d]-mu)*rstd; y[d] = xh[d]*gm[d]+bt[d]; r2 += y[d]*y[d]; yg += y[d]*g[i*D+d]; }
        ProjScalars p = proj_scalars(mode, c, s, 1.0, r2);  // no cap in the double truth
        double m1 = 0, m2 = 0; std::vector<double> dxh(D);
        for (int d = 0; d < D; ++d) {
            r.y[i*D+d] = y[d]; r.out[i*D+d] = p.phi*y[d];
            const double gy = p.phi*g[i*D+d] + p.bracket*yg*y[d];
            r.dg[d] += gy*xh[d]; r.db[d] += gy; dxh[d] = gy*gm[d]; m1 += dxh[d]; m2 += dxh[d]*xh[d];
        }
        r.dc += yg*p.dc_coef; m1 /= D; m2 /= D;
        for (int d = 0; d < D; ++d) r.dx[i*D+d] = rstd*(dxh[d]-m1-xh[d]*m2);
    }
    return r;
}

template <typename T> struct K;
#define FW(T, cap) hyp_ln_forward_c##cap##_##T
#define BW(T, cap) hyp_ln_bwd_backward_c##cap##_##T

typedef void (*FwdFn)(const float*, const float*, const float*, float*, float*, float*, long long, int, int, float, double, double, int);
typedef void (*FwdFnD)(const double*, const double*, const double*, double*, double*, double*, long long, int, int, double, double, double, int);
typedef void (*BwdFn)(const float*, const float*, const float*, const float*, float*, float*, float*, double*, long long, int, int, float, double, double, int);
typedef void (*BwdFnD)(const double*, const double*, const double*, const double*, double*, double*, double*, double*, long long, int, int, double, double, double, int);

template <> struct K<float> {
    typedef FwdFn F; typedef BwdFn B;
    static F fwd(int cap) { switch (cap) { case 1: return FW(f32,1); case 2: return FW(f32,2); case 4: return FW(f32,4); case 8: return FW(f32,8); case 16: return FW(f32,16); case 32: return FW(f32,32); default: return hyp_ln_forward_rows_f32; } }
    static B bwd(int cap) { switch (cap) { case 1: return BW(f32,1); case 2: return BW(f32,2); case 4: return BW(f32,4); case 8: return BW(f32,8); case 16: return BW(f32,16); case 32: return BW(f32,32); default: return hyp_ln_bwd_backward_rows_f32; } }
    static constexpr int max_cap = 32;
    static void red(const float* a, const float* b, const double* c, int p, int d, float* g, float* bb, double* dc) { hyp_ln_bwd_reduce_f32(a,b,c,p,d,g,bb,dc); }
};
template <> struct K<double> {
    typedef FwdFnD F; typedef BwdFnD B;
    static F fwd(int cap) { switch (cap) { case 1: return FW(f64,1); case 2: return FW(f64,2); case 4: return FW(f64,4); case 8: return FW(f64,8); case 16: return FW(f64,16); default: return hyp_ln_forward_rows_f64; } }
    static B bwd(int cap) { switch (cap) { case 1: return BW(f64,1); case 2: return BW(f64,2); case 4: return BW(f64,4); case 8: return BW(f64,8); case 16: return BW(f64,16); default: return hyp_ln_bwd_backward_rows_f64; } }
    static constexpr int max_cap = 16;
    static void red(const double* a, const double* b, const double* c, int p, int d, double* g, double* bb, double* dc) { hyp_ln_bwd_reduce_f64(a,b,c,p,d,g,bb,dc); }
};

static double maxrel(const std::vector<double>& a, const std::vector<double>& b) {
    double scale = 1e-300, m = 0;
    for (double v : b) scale = std::max(scale, fabs(v));
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, fabs(a[i]-b[i]));
    return m / scale;
}

template <typename T> static bool run(int R, int D, int mode, unsigned seed) {
    std::mt19937 rng(seed); std::normal_distribution<double> n01;
    std::vector<double> x(R*D), g(R*D), gm(D), bt(D);
    for (auto& v : x) v = (T)(1.5*n01(rng) + 0.3);
    for (auto& v : g) v = (T)n01(rng);
    for (int d = 0; d < D; ++d) { gm[d] = (T)((1 + 0.1*n01(rng))/sqrt((double)D)); bt[d] = (T)(0.1*n01(rng)); }
    const double c = 0.693, eps = 1e-5;
    RefOut ref = reference(x, g, gm, bt, R, D, eps, c, mode);
    std::vector<T> xt(x.begin(), x.end()), gt(g.begin(), g.end()), gmt(gm.begin(), gm.end()), btt(bt.begin(), bt.end());
    std::vector<T> y(R*D, NAN), out(R*D, NAN), a(R, NAN), dx(R*D, NAN);
    int cap = 0; for (int p = 0; p <= 5; ++p) if (32*(1<<p) >= D) { cap = 1<<p; break; }
    if (cap > K<T>::max_cap) cap = 0;
    const int per = 16 / (int)sizeof(T);
    const int width = cap == 0 ? 1 : (cap >= per ? per : cap);
    const int vec = cap != 0 && D % width == 0;
    const int rpw = cap == 0 ? 1 : std::max(1, 8 / std::min(cap, 8));
    unsigned grid = cap ? (R + 8*rpw - 1) / (8*rpw) : std::min(R, 65535);
    auto f = K<T>::fwd(cap);
    launch(dim3{grid,1,1}, 256, [&] { f(xt.data(), gmt.data(), btt.data(), y.data(), out.data(), a.data(), R, D, vec, (T)eps, c, sqrt(c), mode); });
    unsigned parts = cap ? std::min((R + 7)/8, 1024) : std::min(R, 1024);
    std::vector<T> pg(parts*D, NAN), pb(parts*D, NAN), dg(D, NAN), db(D, NAN);
    std::vector<double> pc(parts, NAN), dc(1, NAN);
    auto b = K<T>::bwd(cap);
    launch(dim3{parts,1,1}, 256, [&] { b(xt.data(), gmt.data(), btt.data(), gt.data(), dx.data(), pg.data(), pb.data(), pc.data(), R, D, vec, (T)eps, c, sqrt(c), mode); });
    launch(dim3{(unsigned)((D+255)/256),1,1}, 256, [&] { K<T>::red(pg.data(), pb.data(), pc.data(), parts, D, dg.data(), db.data(), dc.data()); });
    auto v = [](const std::vector<T>& t) { return std::vector<double>(t.begin(), t.end()); };
    double e[6] = {maxrel(v(y), ref.y), maxrel(v(out), ref.out), maxrel(v(dx), ref.dx), maxrel(v(dg), ref.dg), maxrel(v(db), ref.db), fabs(dc[0]-ref.dc)/std::max(1.0, fabs(ref.dc))};
    const double tol = sizeof(T) == 4 ? 2e-5 : 1e-11;
    bool ok = true; for (double q : e) ok = ok && q <= tol;  // NaN fails too
    printf("%s %s R%d D%d mode %d cap %d vec %d: y %.2e out %.2e dx %.2e dg %.2e db %.2e dc %.2e %s\n", sizeof(T)==4?"f32":"f64", cap?"warp":"rows", R, D, mode, cap, vec, e[0], e[1], e[2], e[3], e[4], e[5], ok ? "OK" : "FAIL");
    return ok;
}

int main() {
    bool ok = true;
    // D = 1 .. 1025: every CAP, vectorised and scalar rows, the CTA-per-row path (f64 beyond 512).
    int shapes[][2] = {{1,1},{5,1},{7,3},{33,32},{70,64},{9,77},{11,33},{5,65},{9,100},{3,130},{17,256},{3,1000},{2,1024},{3,1025},{2,600},{40,64}};
    for (auto& s : shapes) for (int mode = 0; mode < 2; ++mode) {
        ok &= run<float>(s[0], s[1], mode, 1 + s[1]);
        ok &= run<double>(s[0], s[1], mode, 2 + s[1]);
    }
    printf(ok ? "ALL OK\n" : "SOME FAILED\n");
    return ok ? 0 : 1;
}
