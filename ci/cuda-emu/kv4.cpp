// Host-emulation driver (see run.sh): the 4-bit KV cache kernels (append, split-K decode with its
// in-kernel LSE merge) and the fp16 baseline against a long-double reference written here: the codec in f32
// arithmetic as the design states it (codes and fp16 metadata must match bit for bit), decode
// attention by the law of cosines (design §2.3, 1 - C as |u^ - w^|^2 / 2) on the dequantised K, V.
#include "emu.h"
#include "../../crates/muse-cuda/kernels/kv4.cu"
#include <cstdio>
#include <random>

typedef long double LD;

struct Cfg { int B, H, D, T; bool radial; };

static LD acosh1p_l(LD z) { z = z < 0 ? 0 : z; return log1pl(z + sqrtl(z * (z + 2))); }

// d(exp0 u, exp0 w) by the law of cosines, s|.| capped at 15.
static LD dist(const LD* u, const LD* w, int D, LD s, LD rho_w) {
    LD ru = 0, rw = 0;
    for (int k = 0; k < D; ++k) { ru += u[k] * u[k]; rw += w[k] * w[k]; }
    ru = sqrtl(ru); rw = sqrtl(rw);
    const LD a = fminl(s * ru, 15), b = fminl(s * (rho_w >= 0 ? rho_w : rw), 15);
    LD omc = 1;
    if (ru > 0 && rw > 0) { omc = 0; for (int k = 0; k < D; ++k) { LD e = u[k] / ru - w[k] / rw; omc += e * e; } omc /= 2; }
    const LD sh = sinhl(a - b);
    return acosh1p_l(2 * sh * sh + sinhl(2 * a) * sinhl(2 * b) * omc) / s;
}

static bool run(Cfg c, const std::vector<int>& appends, int nq, int mask, int window, int chunk, unsigned seed, double beta_in = 1.3) {
    std::mt19937 rng(seed); std::normal_distribution<float> n01; std::uniform_real_distribution<float> off(-2, 2);
    const int B = c.B, H = c.H, D = c.D, T = c.T, rows = B * H;
    std::vector<unsigned char> kc((size_t)rows * T * D / 2), vc(kc.size());
    std::vector<unsigned short> km((size_t)rows * T * 2), vm(km.size()), k16((size_t)rows * T * D), v16(k16.size());
    std::vector<float> kn(c.radial ? (size_t)rows * T : 0);
    std::vector<LD> kref((size_t)rows * T * D), vref(kref.size()), kref16(kref.size()), vref16(kref.size()), nref((size_t)rows * T, -1);
    int len = 0, bad = 0;
    for (int L : appends) {
        std::vector<float> k((size_t)rows * L * D), v(k.size());
        for (int r = 0; r < rows * L; ++r) { float o1 = off(rng), o2 = off(rng); for (int e = 0; e < D; ++e) { k[(size_t)r * D + e] = o1 + n01(rng); v[(size_t)r * D + e] = 0.5f * n01(rng) + o2; } }
        std::vector<int> start(B, len);
        const unsigned grid = (unsigned)((rows * L + KV4_WARPS - 1) / KV4_WARPS);
        launch(dim3{grid, 1, 1}, 32 * KV4_WARPS, [&] { kv4_append(k.data(), v.data(), kc.data(), vc.data(), km.data(), vm.data(), c.radial ? kn.data() : nullptr, start.data(), B, H, L, D, T); });
        launch(dim3{grid, 1, 1}, 32 * KV4_WARPS, [&] { kv4_append_fp16(k.data(), v.data(), k16.data(), v16.data(), start.data(), B, H, L, D, T); });
        // reference codec, f32 arithmetic
        for (int r = 0; r < rows * L; ++r) {
            const int bh = r / L, t = r % L;
            const size_t slot = (size_t)bh * T + (len + t) % T;
            for (int which = 0; which < 2; ++which) {
                const float* x = (which ? v.data() : k.data()) + (size_t)r * D;
                float mn = INFINITY, mx = -INFINITY; double ss = 0;
                for (int e = 0; e < D; ++e) { mn = fminf(mn, x[e]); mx = fmaxf(mx, x[e]); ss += (double)x[e] * x[e]; }
                const float s = fmaxf((mx - mn) / 15.0f, 1e-8f);
                const unsigned short sb = f2h(s), mb = f2h(mn);
                const unsigned short* meta = (which ? vm.data() : km.data()) + slot * 2;
                if (meta[0] != sb || meta[1] != mb) ++bad;
                const unsigned char* codes = (which ? vc.data() : kc.data()) + slot * D / 2;
                for (int e = 0; e < D; ++e) {
                    const unsigned q = (unsigned)fminf(fmaxf(rintf((x[e] - mn) / s), 0.0f), 15.0f);
                    const unsigned got = (codes[e / 2] >> (4 * (e & 1))) & 15u;
                    if (got != q) ++bad;
                    (which ? vref : kref)[slot * D + e] = (LD)h2f(mb) + (LD)q * (LD)h2f(sb);
                    (which ? vref16 : kref16)[slot * D + e] = (LD)h2f(f2h(x[e]));
                    if (((which ? v16 : k16)[slot * D + e]) != f2h(x[e])) ++bad;
                }
                if (!which && c.radial) { nref[slot] = (LD)(float)sqrt(ss); if (fabsf(kn[slot] - (float)sqrt(ss)) > 1e-5f * (float)sqrt(ss)) ++bad; }
            }
        }
        len += L;
    }
    // decode
    const LD cc = 0.693L, s = sqrtl(cc), beta = (LD)beta_in;
    std::vector<float> q((size_t)rows * nq * D);
    for (auto& e : q) e = 0.6f * n01(rng);
    std::vector<int> lens(B, len);
    const int stored = len > T ? len - T : 0;
    int maxvis = len - stored;
    double worst[2] = {0, 0}, wlse = 0, vmax = 0;
    // path 0: decode_split (any D); paths 1, 2 (D = 64): one key per lane, chunk 128, with and
    // without the next key's prefetch. Each launch merges its splits in its last CTA per row.
    for (int path = 0; path < (D == 64 ? 3 : 1); ++path)
    for (int store = 0; store < 2; ++store) {
        const int ch = path ? 128 : chunk, splits = (maxvis + ch - 1) / ch;
        std::vector<float> pm((size_t)rows * nq * splits), pl(pm.size()), pa(pm.size() * D), o((size_t)rows * nq * D), lse((size_t)rows * nq);
        std::vector<unsigned> done((size_t)rows * nq, 0);
        const dim3 grid{(unsigned)(rows * nq), (unsigned)splits, 1};
        const unsigned th = 32 * KV4_DEC_WARPS;
        float* const out[3] = {pm.data(), pl.data(), pa.data()};
        const float* kn_p = c.radial ? kn.data() : nullptr;
        if (path == 1 && store == 0)
            launch(grid, th, [&] { kv4_decode64_int4(q.data(), kc.data(), vc.data(), km.data(), vm.data(), kn_p, lens.data(), H, nq, T, mask, window, (float)s, (float)beta, ch, out[0], out[1], out[2], done.data(), o.data(), lse.data()); });
        else if (path == 2 && store == 0)
            launch(grid, th, [&] { kv4_decode64_int4_nopf(q.data(), kc.data(), vc.data(), km.data(), vm.data(), kn_p, lens.data(), H, nq, T, mask, window, (float)s, (float)beta, ch, out[0], out[1], out[2], done.data(), o.data(), lse.data()); });
        else if (path == 1)
            launch(grid, th, [&] { kv4_decode64_fp16(q.data(), k16.data(), v16.data(), lens.data(), H, nq, T, mask, window, (float)s, (float)beta, ch, out[0], out[1], out[2], done.data(), o.data(), lse.data()); });
        else if (path == 2)
            launch(grid, th, [&] { kv4_decode64_fp16_nopf(q.data(), k16.data(), v16.data(), lens.data(), H, nq, T, mask, window, (float)s, (float)beta, ch, out[0], out[1], out[2], done.data(), o.data(), lse.data()); });
        else if (store == 0)
            launch(grid, th, [&] { kv4_decode_split_int4(q.data(), kc.data(), vc.data(), km.data(), vm.data(), kn_p, lens.data(), H, nq, D, T, mask, window, (float)s, (float)beta, chunk, out[0], out[1], out[2], done.data(), o.data(), lse.data()); });
        else
            launch(grid, th, [&] { kv4_decode_split_fp16(q.data(), k16.data(), v16.data(), lens.data(), H, nq, D, T, mask, window, (float)s, (float)beta, chunk, out[0], out[1], out[2], done.data(), o.data(), lse.data()); });
        for (unsigned d : done) if (d != 0) ++bad;  // the last CTA re-arms its row's counter
        const std::vector<LD>& K = store ? kref16 : kref;
        const std::vector<LD>& V = store ? vref16 : vref;
        for (int r = 0; r < rows; ++r)
            for (int i = 0; i < nq; ++i) {
                const int pos = len - nq + i;
                int lo = stored, hi = len;
                if (mask == 1) hi = pos + 1;
                if (mask == 2) { hi = pos + 1; lo = std::max(lo, pos / window * window); }
                std::vector<LD> qi(D), sc;
                for (int e = 0; e < D; ++e) qi[e] = q[((size_t)r * nq + i) * D + e];
                LD m = -INFINITY;
                for (int j = lo; j < hi; ++j) {
                    const size_t slot = (size_t)r * T + j % T;
                    sc.push_back(-beta * dist(qi.data(), &K[slot * D], D, s, store == 0 && c.radial ? nref[slot] : -1));
                    m = std::max(m, sc.back());
                }
                LD l = 0; std::vector<LD> acc(D, 0);
                for (int j = lo; j < hi; ++j) {
                    const size_t slot = (size_t)r * T + j % T;
                    const LD p = expl(sc[j - lo] - m); l += p;
                    for (int e = 0; e < D; ++e) { acc[e] += p * V[slot * D + e]; vmax = std::max(vmax, (double)fabsl(V[slot * D + e])); }
                }
                for (int e = 0; e < D; ++e) worst[store] = std::max(worst[store], (double)fabsl(acc[e] / l - o[((size_t)r * nq + i) * D + e]));
                wlse = std::max(wlse, (double)(fabsl(m + logl(l) - lse[(size_t)r * nq + i]) / (1 + fabsl(m + logl(l)))));
            }
    }
    const bool ok = bad == 0 && worst[0] <= 1e-4 * vmax && worst[1] <= 1e-4 * vmax && wlse <= 1e-5;
    printf("kv4 B%d H%d D%d T%d radial %d len %d nq %d mask %d W %d chunk %d: codec mismatches %d, decode max|do| int4 %.2e fp16 %.2e (max|v| %.2f), lse rel %.1e %s\n",
           B, H, D, T, (int)c.radial, len, nq, mask, window, chunk, bad, worst[0], worst[1], vmax, wlse, ok ? "ok" : "FAIL");
    return ok;
}

// Per-channel K: appends that start, cross and end groups of G; sealed codes and (s, m) bit for bit
// against the per-channel f32 codec over the fp16-rounded keys, the tail fp16, V per token, then
// decode (decode_split over Int4ChannelCache) against long double attention on the held keys.
static bool run_channel(int B, int H, int D, int T, int G, bool radial, const std::vector<int>& appends, int nq, int mask, int window, int chunk, unsigned seed) {
    std::mt19937 rng(seed); std::normal_distribution<float> n01;
    const int rows = B * H;
    std::vector<unsigned char> kc((size_t)rows * T * D / 2), vc(kc.size());
    std::vector<unsigned short> cm((size_t)rows * (T / G) * D * 2), tail((size_t)rows * G * D), vm((size_t)rows * T * 2);
    std::vector<float> kn(radial ? (size_t)rows * T : 0), kall((size_t)rows * T * D), vall(kall.size());
    int len = 0, bad = 0;
    for (int L : appends) {
        std::vector<float> k((size_t)rows * L * D), v(k.size());
        for (int r = 0; r < rows * L; ++r) for (int e = 0; e < D; ++e) {
            k[(size_t)r * D + e] = 0.3f * e / D + n01(rng); v[(size_t)r * D + e] = 0.5f * n01(rng);
            kall[((size_t)(r / L) * T + len + r % L) * D + e] = k[(size_t)r * D + e];
            vall[((size_t)(r / L) * T + len + r % L) * D + e] = v[(size_t)r * D + e];
        }
        std::vector<int> start(B, len);
        const unsigned grid = (unsigned)((rows * L + KV4_WARPS - 1) / KV4_WARPS);
        launch(dim3{grid, 1, 1}, 32 * KV4_WARPS, [&] { kv4_append(k.data(), v.data(), nullptr, vc.data(), nullptr, vm.data(), radial ? kn.data() : nullptr, start.data(), B, H, L, D, T); });
        const unsigned groups = (unsigned)((len + L) / G - len / G);
        if (groups > 0) launch(dim3{(unsigned)rows, groups, 1}, KV4_SEAL_THREADS, [&] { kv4_seal_channels(k.data(), tail.data(), kc.data(), cm.data(), start.data(), H, L, D, T, G); });
        launch(dim3{grid, 1, 1}, 32 * KV4_WARPS, [&] { kv4_append_fp16(k.data(), nullptr, tail.data(), nullptr, start.data(), B, H, L, D, G); });
        len += L;
    }
    // the held keys: sealed groups by the f32 per-channel codec, the open group fp16
    std::vector<LD> kref((size_t)rows * T * D), vref(kref.size());
    for (int r = 0; r < rows; ++r) {
        for (int g = 0; g < len / G; ++g)
            for (int ch = 0; ch < D; ++ch) {
                float mn = INFINITY, mx = -INFINITY;
                for (int t = 0; t < G; ++t) { const float x = h2f(f2h(kall[((size_t)r * T + g * G + t) * D + ch])); mn = fminf(mn, x); mx = fmaxf(mx, x); }
                const float st = fmaxf((mx - mn) / 15.0f, 1e-8f);
                const unsigned short* meta = &cm[(((size_t)r * (T / G) + g) * D + ch) * 2];
                if (meta[0] != f2h(st) || meta[1] != f2h(mn)) ++bad;
                for (int t = 0; t < G; ++t) {
                    const size_t slot = (size_t)r * T + g * G + t;
                    const float x = h2f(f2h(kall[slot * D + ch]));
                    const unsigned q = (unsigned)fminf(fmaxf(rintf((x - mn) / st), 0.0f), 15.0f);
                    if (((kc[slot * D / 2 + ch / 2] >> (4 * (ch & 1))) & 15u) != q) ++bad;
                    kref[slot * D + ch] = (LD)h2f(meta[1]) + (LD)q * (LD)h2f(meta[0]);
                }
            }
        for (int p = len / G * G; p < len; ++p)
            for (int ch = 0; ch < D; ++ch) {
                const unsigned short hb = tail[((size_t)r * G + p % G) * D + ch];
                if (hb != f2h(kall[((size_t)r * T + p) * D + ch])) ++bad;
                kref[((size_t)r * T + p) * D + ch] = (LD)h2f(hb);
            }
        for (int p = 0; p < len; ++p) {
            const size_t slot = (size_t)r * T + p;
            for (int e = 0; e < D; ++e) vref[slot * D + e] = (LD)h2f(vm[slot * 2 + 1]) + (LD)((vc[slot * D / 2 + e / 2] >> (4 * (e & 1))) & 15u) * (LD)h2f(vm[slot * 2]);
            if (radial) { double ss = 0; for (int e = 0; e < D; ++e) ss += (double)kall[slot * D + e] * kall[slot * D + e]; if (fabs(kn[slot] - sqrt(ss)) > 1e-5 * sqrt(ss)) ++bad; }
        }
    }
    const LD cc = 0.693L, s = sqrtl(cc), beta = 1.3L;
    std::vector<float> q((size_t)rows * nq * D);
    for (auto& e : q) e = 0.6f * n01(rng);
    std::vector<int> lens(B, len);
    const int splits = (len + chunk - 1) / chunk;
    std::vector<float> pm((size_t)rows * nq * splits), pl(pm.size()), pa(pm.size() * D), o((size_t)rows * nq * D), lse((size_t)rows * nq);
    std::vector<unsigned> done((size_t)rows * nq, 0);
    launch(dim3{(unsigned)(rows * nq), (unsigned)splits, 1}, 32 * KV4_DEC_WARPS, [&] { kv4_decode_split_int4ch(q.data(), kc.data(), vc.data(), cm.data(), tail.data(), vm.data(), radial ? kn.data() : nullptr, lens.data(), H, nq, D, T, G, mask, window, (float)s, (float)beta, chunk, pm.data(), pl.data(), pa.data(), done.data(), o.data(), lse.data()); });
    double worst = 0, wlse = 0, vmax = 0;
    for (int r = 0; r < rows; ++r)
        for (int i = 0; i < nq; ++i) {
            const int pos = len - nq + i;
            int lo = 0, hi = len;
            if (mask == 1) hi = pos + 1;
            if (mask == 2) { hi = pos + 1; lo = pos / window * window; }
            std::vector<LD> qi(D), sc;
            for (int e = 0; e < D; ++e) qi[e] = q[((size_t)r * nq + i) * D + e];
            LD m = -INFINITY;
            for (int j = lo; j < hi; ++j) {
                const size_t slot = (size_t)r * T + j;
                sc.push_back(-beta * dist(qi.data(), &kref[slot * D], D, s, radial ? (LD)kn[slot] : -1));
                m = std::max(m, sc.back());
            }
            LD l = 0; std::vector<LD> acc(D, 0);
            for (int j = lo; j < hi; ++j) {
                const LD p = expl(sc[j - lo] - m); l += p;
                for (int e = 0; e < D; ++e) { acc[e] += p * vref[((size_t)r * T + j) * D + e]; vmax = std::max(vmax, (double)fabsl(vref[((size_t)r * T + j) * D + e])); }
            }
            for (int e = 0; e < D; ++e) worst = std::max(worst, (double)fabsl(acc[e] / l - o[((size_t)r * nq + i) * D + e]));
            wlse = std::max(wlse, (double)(fabsl(m + logl(l) - lse[(size_t)r * nq + i]) / (1 + fabsl(m + logl(l)))));
        }
    const bool ok = bad == 0 && worst <= 1e-4 * vmax && wlse <= 1e-5;
    printf("kv4 per-channel K B%d H%d D%d T%d G%d radial %d len %d nq %d mask %d: codec mismatches %d, decode max|do| %.2e (max|v| %.2f), lse rel %.1e %s\n",
           B, H, D, T, G, (int)radial, len, nq, mask, bad, worst, vmax, wlse, ok ? "ok" : "FAIL");
    return ok;
}

int main() {
    bool ok = true;
    ok &= run({2, 3, 64, 40, false}, {7, 1, 12}, 1, 0, 0, 5, 1);
    ok &= run({2, 3, 64, 40, true}, {20}, 3, 1, 0, 7, 2);
    ok &= run({1, 2, 2, 16, false}, {9, 4}, 2, 1, 0, 3, 3);
    ok &= run({2, 1, 130, 24, true}, {10, 10}, 1, 0, 0, 8, 4);
    ok &= run({1, 2, 64, 8, false}, {5, 6, 1}, 1, 2, 8, 3, 5);   // ring (12 > T = 8), window 8
    ok &= run({1, 2, 256, 16, false}, {16, 3}, 2, 2, 16, 4, 6);   // D at the cap, ring
    ok &= run({2, 2, 64, 512, true}, {300, 33}, 2, 1, 0, 64, 7);  // lane-per-key: 3 splits of 128
    ok &= run({1, 3, 64, 256, false}, {200, 100}, 1, 2, 64, 32, 8);  // ring, window 64
    // beta 40: scores spread over hundreds of units, so the D = 64 kernels' lazy rescale (a new
    // maximum beyond the slack of 8 in base 2) fires on many keys, not only the first
    ok &= run({2, 2, 64, 512, true}, {300, 33}, 2, 1, 0, 64, 9, 40.0);
    ok &= run_channel(2, 2, 64, 256, 64, false, {50, 30, 100, 3}, 2, 1, 0, 64, 9);   // groups across appends, tail 55
    ok &= run_channel(1, 3, 6, 48, 16, true, {16, 16, 5}, 1, 2, 8, 7, 10);          // sealed exactly, radial, window
    ok &= run_channel(1, 1, 130, 96, 32, false, {10, 60}, 3, 0, 0, 20, 11);          // D past a lane's share; a group begun earlier
    if (!ok) { printf("kv4: FAILED\n"); return 1; }
    return 0;
}
