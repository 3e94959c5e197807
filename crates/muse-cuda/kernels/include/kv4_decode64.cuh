// Decode attention for D = 64, one key per lane (included by ../kv4.cu after its loaders and
// decode_split). The warp-per-key path of decode_split spends ~60 warp instructions and two
// dependent loads per key, so both caches ran latency-bound at ~100 us whatever the context (H200,
// B1 H8 N1024-8192). Here each lane holds one key's packed row in registers (fp16: 8 x 16 B,
// int4: 2 x 16 B of codes + its (s, m)), scores it against q from shared memory, and keeps its own
// online softmax (m, l, acc[64]); the lanes merge once per split by log-sum-exp (warp shuffles),
// then the warps as in decode_split. Same arithmetic per key as decode_split (f32, the stable
// 1 - cos = |q^ - k^|^2 / 2, acosh1p_f), a different summation order.

// One cache row of D = 64 as 16-byte words, and its element e (a compile-time index after
// unrolling).
__device__ __forceinline__ unsigned kv4_word(const uint4& w, int c) {
    return c == 0 ? w.x : c == 1 ? w.y : c == 2 ? w.z : w.w;
}

struct Fp16Rows64 {
    static constexpr int W = 8;  // 64 halves
    const unsigned short* __restrict__ k16;
    const unsigned short* __restrict__ v16;
    __device__ __forceinline__ void load(bool key, long long slot, uint4 (&r)[W], float& s, float& m) const {
        const uint4* p = reinterpret_cast<const uint4*>((key ? k16 : v16) + slot * 64);
#pragma unroll
        for (int i = 0; i < W; ++i) r[i] = __ldg(p + i);
        s = 1.0f;
        m = 0.0f;
    }
    __device__ __forceinline__ static float elem(const uint4 (&r)[W], float, float, int e) {
        const unsigned x = kv4_word(r[e >> 3], (e & 7) >> 1);
        return h2f((unsigned short)(x >> (16 * (e & 1))));
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
    __device__ __forceinline__ void load(bool key, long long slot, uint4 (&r)[W], float& s, float& m) const {
        const uint4* p = reinterpret_cast<const uint4*>((key ? k_codes : v_codes) + slot * 32);
        r[0] = __ldg(p);
        r[1] = __ldg(p + 1);
        const unsigned short* mt = (key ? k_meta : v_meta) + slot * 2;
        s = h2f(__ldg(mt));
        m = h2f(__ldg(mt + 1));
    }
    __device__ __forceinline__ static float elem(const uint4 (&r)[W], float s, float m, int e) {
        const int byte = e >> 1;  // byte i = q[2i] | q[2i + 1] << 4
        const unsigned x = kv4_word(r[byte >> 4], (byte & 15) >> 2);
        return m + (float)((x >> (8 * (byte & 3) + 4 * (e & 1))) & 15u) * s;
    }
    __device__ __forceinline__ float radial(long long slot) const { return k_norm ? __ldg(k_norm + slot) : -1.0f; }
};

template <typename Rows>
__device__ void decode_split64(const float* __restrict__ q, const Rows& cache, const int* __restrict__ len, int H,
                               int Nq, int T, int mask, int window, float s, float beta, int chunk,
                               float* __restrict__ part_m, float* __restrict__ part_l,
                               float* __restrict__ part_acc) {
    constexpr int D = 64;
    __shared__ float sh_q[D];
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
    for (int e = threadIdx.x; e < D; e += blockDim.x) sh_q[e] = __ldg(q + row * D + e);
    __syncthreads();
    float qq = 0.0f;
#pragma unroll
    for (int e = 0; e < D; ++e) qq += sh_q[e] * sh_q[e];
    const float rq = sqrtf(qq), iq = rq > 0.0f ? 1.0f / rq : 0.0f;
    const float a = fminf(s * rq, KV4_A_MAX), sinh2a = sinhf(2.0f * a);
    float mx = -INFINITY, l = 0.0f, acc[D];
#pragma unroll
    for (int e = 0; e < D; ++e) acc[e] = 0.0f;
    for (int j = first + warp * 32 + lane; j < last; j += KV4_DEC_WARPS * 32) {
        const long long slot = bh * T + j % T;
        uint4 r[Rows::W];
        float ws, wm;
        cache.load(true, slot, r, ws, wm);
        float kk = 0.0f;
#pragma unroll
        for (int e = 0; e < D; ++e) {
            const float x = Rows::elem(r, ws, wm, e);
            kk += x * x;
        }
        const float rk = sqrtf(kk);
        float omc = 1.0f;
        if (rq > 0.0f && rk > 0.0f) {
            const float ik = 1.0f / rk;
            float dd = 0.0f;
#pragma unroll
            for (int e = 0; e < D; ++e) {
                const float t = sh_q[e] * iq - Rows::elem(r, ws, wm, e) * ik;
                dd += t * t;
            }
            omc = fminf(0.5f * dd, 2.0f);
        }
        const float rho = cache.radial(slot);
        const float bk = fminf(s * (rho >= 0.0f ? rho : rk), KV4_A_MAX);
        const float sh = sinhf(a - bk);
        const float z = 2.0f * sh * sh + sinh2a * sinhf(2.0f * bk) * omc;
        const float score = -beta * acosh1p_f(z) / s;
        const float mnew = fmaxf(mx, score);
        const float corr = __expf(mx - mnew), p = __expf(score - mnew);
        cache.load(false, slot, r, ws, wm);
#pragma unroll
        for (int e = 0; e < D; ++e) acc[e] = acc[e] * corr + p * Rows::elem(r, ws, wm, e);
        l = l * corr + p;
        mx = mnew;
    }
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
    if (warp != 0) return;
    float gm = -INFINITY;
    for (int w = 0; w < KV4_DEC_WARPS; ++w) gm = fmaxf(gm, sh_m[w]);
    float gl = 0.0f, fw[KV4_DEC_WARPS];
    for (int w = 0; w < KV4_DEC_WARPS; ++w) {
        fw[w] = sh_m[w] == -INFINITY ? 0.0f : __expf(sh_m[w] - gm);
        gl += sh_l[w] * fw[w];
    }
    const long long part = row * gridDim.y + blockIdx.y;
    if (lane == 0) {
        part_m[part] = gm;
        part_l[part] = gl;
    }
    for (int e = lane; e < D; e += 32) {
        float x = 0.0f;
        for (int w = 0; w < KV4_DEC_WARPS; ++w) x += sh_acc[w][e] * fw[w];
        part_acc[part * D + e] = x;
    }
}
