// Decode attention for D = 64, one key per lane (included by ../kv4.cu after its loaders, decode_split
// and kv4_merge_if_last). The warp-per-key path of decode_split spends ~60 warp instructions and two
// dependent loads per key, so both caches ran latency-bound at ~100 us whatever the context (H200,
// B1 H8 N1024-8192). Here each lane holds one key's packed row in registers (fp16: 8 x 16 B, int4:
// 2 x 16 B of codes + its (s, m)), scores it against q^ = q / |q| from shared memory and keeps its
// own online softmax (m, l, acc[64]); the lanes merge once per split by log-sum-exp (warp shuffles),
// then the warps, then the last CTA of the query row merges the splits (kv4_merge_if_last).
// A lane issues its key's K and V loads together and, with PF, the next key's before scoring this
// one: one 32 + 32 B request per lane at a time left the int4 cache at 0.6 TB/s (H200, B4 N16384).
// The int4 rows never dequantise to memory or to a register array: |k|^2 comes exactly from the
// codes' integer sums (kv4_sumsq), the other terms from one code at a time (a byte permute puts
// each code in the mantissa of 2^23, one subtraction makes it a float: 2.25 instructions a code
// against 3 for shift-mask-or). The score runs in base 2 (the distance's log and the softmax's
// exp are one MUFU each) and the softmax rescales lazily (FlashAttention-4's rule: a lane keeps
// its running maximum until a score exceeds it by 8, so p <= 2^8 and the 64 rescaling FMAs per
// key are skipped but for a few keys); the int4 V sum keeps its zero-point term sum p m apart.

__device__ __forceinline__ unsigned kv4_word(const uint4& w, int c) {
    return c == 0 ? w.x : c == 1 ? w.y : c == 2 ? w.z : w.w;
}

#ifndef MUSE_CUDA_EMU
__device__ __forceinline__ float kv4_lg2(float x) {
    float y;
    asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ float kv4_ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ float kv4_sqrt_approx(float x) {
    float y;
    asm("sqrt.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
#else
inline float kv4_lg2(float x) { return log2f(x); }
inline float kv4_ex2(float x) { return exp2f(x); }
inline float kv4_sqrt_approx(float x) { return sqrtf(x); }
#endif

// lg2(1 + z + sqrt(z (z + 2))) = lg2(cosh(s d) + sinh(s d)) = s d / ln 2 for z >= 0, the product
// formed at scale 2^-64 so that it never overflows (z reaches 5.6e25 at KV4_A_MAX; hyp_attn_tc's
// form).
__device__ __forceinline__ float kv4_acosh1p_lg2(float z) {
    const float zs = z * 5.421010862427522e-20f;  // 2^-64
    return kv4_lg2(fmaf(kv4_sqrt_approx(fmaf(zs, z, zs + zs)), 4294967296.0f, z + 1.0f));  // 2^32
}

// The 8 codes of word x (codes 8w .. 8w + 7 of its row: byte i holds 8w + 2i low, 8w + 2i + 1
// high) as exact floats: byte i of a nibble plane into the low byte of 2^23's bits, minus 2^23.
__device__ __forceinline__ void kv4_codes8(unsigned x, float (&c)[8]) {
    const unsigned lo = x & 0x0F0F0F0Fu, hi = (x >> 4) & 0x0F0F0F0Fu;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        c[2 * i] = __uint_as_float(__byte_perm(lo, 0x4B000000u, 0x7540u + i)) - 8388608.0f;
        c[2 * i + 1] = __uint_as_float(__byte_perm(hi, 0x4B000000u, 0x7540u + i)) - 8388608.0f;
    }
}

// A cache row of D = 64 as W 16-byte words and its codec (s, m) (fp16: 1, 0).
template <int W>
struct Row64 {
    uint4 w[W];
    float s, m;
};

struct Fp16Rows64 {
    static constexpr int W = 8;  // 64 halves
    const unsigned short* __restrict__ k16;
    const unsigned short* __restrict__ v16;
    __device__ __forceinline__ void load(bool key, long long slot, Row64<W>& r) const {
        const uint4* p = reinterpret_cast<const uint4*>((key ? k16 : v16) + slot * 64);
#pragma unroll
        for (int i = 0; i < W; ++i) r.w[i] = __ldg(p + i);
        r.s = 1.0f;
        r.m = 0.0f;
    }
    __device__ __forceinline__ static float elem(const Row64<W>& r, int e) {
        const unsigned x = kv4_word(r.w[e >> 3], (e & 7) >> 1);
        return h2f((unsigned short)(x >> (16 * (e & 1))));
    }
    __device__ __forceinline__ static float sumsq(const Row64<W>& r) {
        float kk = 0.0f;
#pragma unroll
        for (int e = 0; e < 64; ++e) {
            const float x = elem(r, e);
            kk += x * x;
        }
        return kk;
    }
    // sum_e (q^_e - k_e / |k|)^2 with ik = 1 / |k|
    __device__ __forceinline__ static float dist2(const Row64<W>& r, float ik, const float* qh) {
        float dd = 0.0f;
#pragma unroll
        for (int e = 0; e < 64; ++e) {
            const float t = fmaf(-elem(r, e), ik, qh[e]);
            dd = fmaf(t, t, dd);
        }
        return dd;
    }
    // acc += p v (no zero-point term: pm stays 0)
    __device__ __forceinline__ static void accumulate(const Row64<W>& r, float p, float (&acc)[64], float&) {
#pragma unroll
        for (int e = 0; e < 64; ++e) acc[e] = fmaf(p, elem(r, e), acc[e]);
    }
    __device__ __forceinline__ float radial(long long) const { return -1.0f; }
};

struct Int4Rows64 {
    static constexpr int W = 2;  // 32 bytes of codes
    const unsigned char* __restrict__ k_codes;
    const unsigned char* __restrict__ v_codes;
    const unsigned short* __restrict__ k_meta;
    const unsigned short* __restrict__ v_meta;
    const float* __restrict__ k_norm;
    __device__ __forceinline__ void load(bool key, long long slot, Row64<W>& r) const {
        const uint4* p = reinterpret_cast<const uint4*>((key ? k_codes : v_codes) + slot * 32);
        r.w[0] = __ldg(p);
        r.w[1] = __ldg(p + 1);
        const unsigned mt = __ldg(reinterpret_cast<const unsigned*>(key ? k_meta : v_meta) + slot);
        r.s = h2f((unsigned short)(mt & 0xffffu));
        r.m = h2f((unsigned short)(mt >> 16));
    }
    // Code e (0..15) as an exact float: 2^23 + c has c in its low mantissa bits.
    __device__ __forceinline__ static float code(const Row64<W>& r, int e) {
        const int byte = e >> 1;  // byte i = q[2i] | q[2i + 1] << 4
        const unsigned x = kv4_word(r.w[byte >> 4], (byte & 15) >> 2);
        return __uint_as_float(0x4B000000u | ((x >> (8 * (byte & 3) + 4 * (e & 1))) & 15u)) - 8388608.0f;
    }
    __device__ __forceinline__ static float elem(const Row64<W>& r, int e) { return fmaf(code(r, e), r.s, r.m); }
    // sum_e (m + s c_e)^2 = 64 mu^2 + s^2 V / 64 with mu = m + s sum(c) / 64 and the exact integer
    // V = 64 sum(c^2) - sum(c)^2 >= 0: two non-negative terms, no cancellation (byte sums by dp4a).
    __device__ __forceinline__ static float sumsq(const Row64<W>& r) {
        int c1 = 0, c2 = 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const unsigned x = kv4_word(r.w[i >> 2], i & 3);
            const int lo = (int)(x & 0x0F0F0F0Fu), hi = (int)((x >> 4) & 0x0F0F0F0Fu);
            c1 = __dp4a(lo, 0x01010101, __dp4a(hi, 0x01010101, c1));
            c2 = __dp4a(lo, lo, __dp4a(hi, hi, c2));
        }
        const float mu = fmaf(r.s, (float)c1 * 0.015625f, r.m);
        const float var = (float)(64 * c2 - c1 * c1);  // <= 64 * 14400: exact
        return fmaf(64.0f * mu, mu, r.s * r.s * var * 0.015625f);
    }
    // sum_e (q^_e - (m + s c_e) / |k|)^2 with ik = 1 / |k|: the codec folded into (m', s')
    __device__ __forceinline__ static float dist2(const Row64<W>& r, float ik, const float* qh) {
        const float sk = r.s * ik, mk = r.m * ik;
        float dd = 0.0f;
#pragma unroll
        for (int w = 0; w < 8; ++w) {
            float c[8];
            kv4_codes8(kv4_word(r.w[w >> 2], w & 3), c);
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const float t = qh[8 * w + i] - fmaf(c[i], sk, mk);
                dd = fmaf(t, t, dd);
            }
        }
        return dd;
    }
    // p v = p m + (p s) c: acc += (p s) c, and the zero-point term into pm (added once at the end)
    __device__ __forceinline__ static void accumulate(const Row64<W>& r, float p, float (&acc)[64], float& pm) {
        const float ps = p * r.s;
        pm = fmaf(p, r.m, pm);
#pragma unroll
        for (int w = 0; w < 8; ++w) {
            float c[8];
            kv4_codes8(kv4_word(r.w[w >> 2], w & 3), c);
#pragma unroll
            for (int i = 0; i < 8; ++i) acc[8 * w + i] = fmaf(ps, c[i], acc[8 * w + i]);
        }
    }
    __device__ __forceinline__ float radial(long long slot) const { return k_norm ? __ldg(k_norm + slot) : -1.0f; }
};

template <typename Rows, bool PF>
__device__ void decode_split64(const float* __restrict__ q, const Rows& cache, const int* __restrict__ len, int H,
                               int Nq, int T, int mask, int window, float s, float beta, int chunk,
                               float* __restrict__ part_m, float* __restrict__ part_l,
                               float* __restrict__ part_acc, unsigned* __restrict__ done, float* __restrict__ o,
                               float* __restrict__ lse) {
    constexpr int D = 64, STRIDE = 32 * KV4_DEC_WARPS;
    __shared__ float sh_q[D], sh_qq;
    __shared__ float sh_m[KV4_DEC_WARPS], sh_l[KV4_DEC_WARPS], sh_acc[KV4_DEC_WARPS][D];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const long long row = blockIdx.x;  // (b, h, i)
    const int i = (int)(row % Nq);
    const long long bh = row / Nq;
    const int b = (int)(bh / H);
    const int n = len[b], pos = n - Nq + i;
    const int stored = n > T ? n - T : 0;
    int lo = stored, hi = n;
    if (mask == 1) hi = pos + 1;
    if (mask == 2) { hi = pos + 1; lo = max(lo, pos / window * window); }
    const int first = lo + (int)blockIdx.y * chunk, last = min(hi, first + chunk);
    if (warp == 0) {
        float x[2], qq = 0.0f;
        for (int h = 0; h < 2; ++h) {
            x[h] = __ldg(q + row * D + lane + 32 * h);
            qq += x[h] * x[h];
        }
        qq = warp_sum_f(qq);
        const float iq = qq > 0.0f ? 1.0f / sqrtf(qq) : 0.0f;
        for (int h = 0; h < 2; ++h) sh_q[lane + 32 * h] = x[h] * iq;  // q^
        if (lane == 0) sh_qq = qq;
    }
    __syncthreads();
    const float rq = sqrtf(sh_qq);
    const float a = fminf(s * rq, KV4_A_MAX), sinh2a = sinhf(2.0f * a);
    const float scale2 = -beta / s;  // score / ln 2 = scale2 lg2(1 + z + sqrt(z (z + 2)))
    float mx = -INFINITY, l = 0.0f, pm = 0.0f, acc[D];  // mx in base 2
#pragma unroll
    for (int e = 0; e < D; ++e) acc[e] = 0.0f;
    int j = first + warp * 32 + lane;
    Row64<Rows::W> kn, vn;  // the next key's rows (PF) or this one's
    if (PF && j < last) {
        cache.load(true, bh * T + j % T, kn);
        cache.load(false, bh * T + j % T, vn);
    }
    for (; j < last; j += STRIDE) {
        const long long slot = bh * T + j % T;
        Row64<Rows::W> kr, vr;
        if (PF) {
            kr = kn;
            vr = vn;
            if (j + STRIDE < last) {
                const long long next = bh * T + (j + STRIDE) % T;
                cache.load(true, next, kn);
                cache.load(false, next, vn);
            }
        } else {
            cache.load(true, slot, kr);
            cache.load(false, slot, vr);
        }
        const float rk = sqrtf(Rows::sumsq(kr));
        // 1 - cos as |q^ - k^|^2 / 2 (design §2.3's stable form)
        float omc = 1.0f;
        if (rq > 0.0f && rk > 0.0f) omc = fminf(0.5f * Rows::dist2(kr, 1.0f / rk, sh_q), 2.0f);
        const float rho = cache.radial(slot);
        const float bk = fminf(s * (rho >= 0.0f ? rho : rk), KV4_A_MAX);
        const float sh = sinhf(a - bk);
        const float z = fmaxf(2.0f * sh * sh + sinh2a * sinhf(2.0f * bk) * omc, 0.0f);
        const float score = scale2 * kv4_acosh1p_lg2(z);
        if (score > mx + 8.0f) {  // a new maximum beyond the slack (the first key always)
            const float corr = kv4_ex2(mx - score);  // 0 on the first key
#pragma unroll
            for (int e = 0; e < D; ++e) acc[e] *= corr;
            l *= corr;
            pm *= corr;
            mx = score;
        }
        const float p = kv4_ex2(score - mx);
        Rows::accumulate(vr, p, acc, pm);
        l += p;
    }
#pragma unroll
    for (int e = 0; e < D; ++e) acc[e] += pm;
    mx = mx == -INFINITY ? mx : mx * 0.69314718055994531f;  // to the merge's natural units
    // the warp's lanes by log-sum-exp (a lane without keys has m = -inf and weighs 0)
    const float wmax = warp_max_f(mx);
    const float f = mx == -INFINITY ? 0.0f : __expf(mx - wmax);
    const float wl = warp_sum_f(l * f);
#pragma unroll
    for (int e = 0; e < D; ++e) {
        const float x = warp_sum_f(acc[e] * f);
        if ((e & 31) == lane) sh_acc[warp][e] = x;
    }
    if (lane == 0) {
        sh_m[warp] = wmax;
        sh_l[warp] = wl;
    }
    __syncthreads();
    kv4_write_split<D>(row, D, sh_m, sh_l, sh_acc, part_m, part_l, part_acc);
    kv4_merge_if_last(row, D, part_m, part_l, part_acc, done, o, lse);
}
