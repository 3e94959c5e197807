// The 4-bit KV cache (design hyperbolic.md §4): append (quantise K and V per token into packed
// codes with fp16 metadata, optional exact ||k||) and fused decode attention that reads codes,
// dequantises in registers and never writes K/V back, split over the keys (FlashDecoding) and
// merged by log-sum-exp. The fp16 cache, the baseline it is measured against, shares the decode
// kernel (another loader). Launchers: ../src/kv4.rs, ../src/kv4/decode.rs; CPU reference:
// reference/src/kv4/.
//
// Layout (one row = one (b, h)): codes [B, H, T, D/2] u8, byte i = q[2i] | q[2i+1] << 4;
// meta [B, H, T, 2] fp16 bits (step s, min m); norm [B, H, T] f32 (radial only); fp16 cache
// k16, v16 [B, H, T, D] fp16 bits. Position p lives in slot p mod T (a ring when the cache wraps).
// Codec per token (f32 arithmetic): s = max((max - min)/15, 1e-8), q = clamp(rint((x - min)/s), 0,
// 15), x^ = m16 + q s16. D even, 2 <= D <= 32 KV4_CAP.
//
// Exported:
//   kv4_append(const float* k, const float* v, u8* k_codes, u8* v_codes, u16* k_meta, u16* v_meta,
//              float* k_norm /* nullable */, const int* start, int B, int H, int L, int D, int T)
//     one warp per (b, h, t) of the L new tokens; grid ceil(B H L / KV4_WARPS) x KV4_WARPS warps.
//     Null k_codes (per-channel K): V and the radial term only.
//   kv4_append_fp16(const float* k, const float* v, u16* k16, u16* v16 /* nullable */,
//              const int* start, int B, int H, int L, int D, int T)
//   kv4_decode_split_int4(q, k_codes, v_codes, k_meta, v_meta, k_norm, ...)
//   kv4_decode_split_fp16(q, k16, v16, ...)
//     (const float* q /* [B,H,Nq,D] */, <cache>, const int* len, int H, int Nq, int D, int T,
//      int mask /* 0 none, 1 causal, 2 window */, int window, float s, float beta, int chunk,
//      float* part_m, float* part_l, float* part_acc, unsigned* done /* [B H Nq], zero */,
//      float* o /* [B,H,Nq,D] */, float* lse /* [B,H,Nq] */)
//     grid (B H Nq, splits) x KV4_DEC_WARPS warps; split j scores the visible keys
//     [lo + j chunk, lo + (j+1) chunk) of its query and writes its (m, l, acc[D]); the last split
//     of a query row to finish merges them, o = sum e^(m_j-m) acc_j / L, and sets done back to 0.
//   kv4_decode_split_int4ch(q, k_codes, v_codes, k_cmeta, k_tail, v_meta, k_norm, len, H, Nq, D, T,
//              int G, mask, ...): the same over per-channel K (loader: include/kv4_channel.cuh).
//   kv4_seal_channels(k, k_tail, k_codes, k_cmeta, start, H, L, D, T, G): per-channel K's groups
//              completed by an append (include/kv4_channel.cuh).
//   kv4_decode64_int4 / kv4_decode64_fp16 (and *_nopf): the same without D (64), one key per lane
//     (include/kv4_decode64.cuh); chunk a multiple of 32 KV4_DEC_WARPS.
#define KV4_WARPS 8
#define KV4_DEC_WARPS 4
#define KV4_CAP 8
#define KV4_A_MAX 15.0f
#define KV4_SEAL_THREADS 128

// fp16 <-> f32 through the conversion instructions (the host emulator, ci/cuda-emu/emu.h, brings
// its own f2h/h2f).
#ifndef MUSE_CUDA_EMU
__device__ __forceinline__ unsigned short f2h(float x) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
    return h;
}
__device__ __forceinline__ float h2f(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
#endif

__device__ __forceinline__ float warp_sum_f(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
__device__ __forceinline__ float warp_max_f(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}
__device__ __forceinline__ float warp_min_f(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fminf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

// One token's D values (lane holds e = lane + 32 m) to packed codes and (s16, m16): element 2i
// sits in an even lane, 2i + 1 in the next lane, so the even lane packs the byte.
__device__ void quantise_row(const float* __restrict__ x, int D, unsigned char* __restrict__ codes,
                             unsigned short* __restrict__ meta, float* __restrict__ norm) {
    const int lane = threadIdx.x & 31;
    float v[KV4_CAP];
    float mn = INFINITY, mx = -INFINITY, ss = 0.0f;
#pragma unroll
    for (int m = 0; m < KV4_CAP; ++m) {
        const int e = lane + 32 * m;
        v[m] = e < D ? x[e] : 0.0f;
        if (e < D) {
            mn = fminf(mn, v[m]);
            mx = fmaxf(mx, v[m]);
            ss += v[m] * v[m];
        }
    }
    mn = warp_min_f(mn);
    mx = warp_max_f(mx);
    const float s = fmaxf((mx - mn) / 15.0f, 1e-8f);
#pragma unroll
    for (int m = 0; m < KV4_CAP; ++m) {
        const int e = lane + 32 * m;
        const unsigned q = (unsigned)fminf(fmaxf(rintf((v[m] - mn) / s), 0.0f), 15.0f);
        const unsigned hi = __shfl_down_sync(0xffffffffu, q, 1);
        if (e < D && (e & 1) == 0) codes[e >> 1] = (unsigned char)(q | (hi << 4));
    }
    if (norm != nullptr) {
        ss = warp_sum_f(ss);
        if (lane == 0) *norm = sqrtf(ss);
    }
    if (lane == 0) {
        meta[0] = f2h(s);
        meta[1] = f2h(mn);
    }
}

extern "C" __global__ void kv4_append(const float* __restrict__ k, const float* __restrict__ v,
                                      unsigned char* __restrict__ k_codes, unsigned char* __restrict__ v_codes,
                                      unsigned short* __restrict__ k_meta, unsigned short* __restrict__ v_meta,
                                      float* __restrict__ k_norm, const int* __restrict__ start, int B, int H,
                                      int L, int D, int T) {
    const long long r = (long long)blockIdx.x * KV4_WARPS + (threadIdx.x >> 5);
    if (r >= (long long)B * H * L) return;
    const int t = (int)(r % L);
    // A ring append of L > T tokens keeps only its last T: earlier ones would share their slot
    // with a later token of the same launch, an unordered write (found on the H200).
    if (t < L - T) return;
    const long long bh = r / L;
    const int b = (int)(bh / H);
    const long long slot = bh * T + (start[b] + t) % T;
    if (k_codes != nullptr) {
        quantise_row(k + r * D, D, k_codes + slot * (D / 2), k_meta + slot * 2, k_norm ? k_norm + slot : nullptr);
    } else if (k_norm != nullptr) {  // per-channel K (kv4_seal_channels): only the radial term here
        const int lane = threadIdx.x & 31;
        float ss = 0.0f;
        for (int e = lane; e < D; e += 32) ss += k[r * D + e] * k[r * D + e];
        ss = warp_sum_f(ss);
        if (lane == 0) k_norm[slot] = sqrtf(ss);
    }
    quantise_row(v + r * D, D, v_codes + slot * (D / 2), v_meta + slot * 2, nullptr);
}

extern "C" __global__ void kv4_append_fp16(const float* __restrict__ k, const float* __restrict__ v,
                                           unsigned short* __restrict__ k16, unsigned short* __restrict__ v16,
                                           const int* __restrict__ start, int B, int H, int L, int D, int T) {
    const long long r = (long long)blockIdx.x * KV4_WARPS + (threadIdx.x >> 5);
    if (r >= (long long)B * H * L) return;
    const int lane = threadIdx.x & 31, t = (int)(r % L);
    if (t < L - T) return; // as kv4_append: only the last T tokens of a ring append are kept
    const long long bh = r / L;
    const long long slot = bh * T + (start[(int)(bh / H)] + t) % T;
    for (int e = lane; e < D; e += 32) {
        k16[slot * D + e] = f2h(k[r * D + e]);
        if (v16 != nullptr) v16[slot * D + e] = f2h(v[r * D + e]);  // null: per-channel K's tail
    }
}

// Loaders: a key's and a value's D values, lane-strided, dequantised in registers.
struct Int4Cache {
    const unsigned char* __restrict__ k_codes;
    const unsigned char* __restrict__ v_codes;
    const unsigned short* __restrict__ k_meta;
    const unsigned short* __restrict__ v_meta;
    const float* __restrict__ k_norm;
    __device__ __forceinline__ void row(const unsigned char* codes, const unsigned short* meta, long long slot, int D,
                                        float* out) const {
        const int lane = threadIdx.x & 31;
        const float s = h2f(__ldg(meta + slot * 2)), m = h2f(__ldg(meta + slot * 2 + 1));
#pragma unroll
        for (int i = 0; i < KV4_CAP; ++i) {
            const int e = lane + 32 * i;
            if (e < D) {
                const unsigned byte = __ldg(codes + slot * (D / 2) + (e >> 1));
                out[i] = m + (float)((byte >> (4 * (e & 1))) & 15u) * s;
            } else {
                out[i] = 0.0f;
            }
        }
    }
    __device__ __forceinline__ void key(long long, int, int, long long slot, int D, float* out) const {
        row(k_codes, k_meta, slot, D, out);
    }
    __device__ __forceinline__ void value(long long slot, int D, float* out) const { row(v_codes, v_meta, slot, D, out); }
    __device__ __forceinline__ float radial(long long slot) const { return k_norm ? __ldg(k_norm + slot) : -1.0f; }
};

struct Fp16Cache {
    const unsigned short* __restrict__ k16;
    const unsigned short* __restrict__ v16;
    __device__ __forceinline__ void row(const unsigned short* p, long long slot, int D, float* out) const {
        const int lane = threadIdx.x & 31;
#pragma unroll
        for (int i = 0; i < KV4_CAP; ++i) {
            const int e = lane + 32 * i;
            out[i] = e < D ? h2f(__ldg(p + slot * D + e)) : 0.0f;
        }
    }
    __device__ __forceinline__ void key(long long, int, int, long long slot, int D, float* out) const {
        row(k16, slot, D, out);
    }
    __device__ __forceinline__ void value(long long slot, int D, float* out) const { row(v16, slot, D, out); }
    __device__ __forceinline__ float radial(long long) const { return -1.0f; }
};

// acosh(1 + z) without cancellation (design §2.2), f32.
__device__ __forceinline__ float acosh1p_f(float z) {
    z = fmaxf(z, 0.0f);
    return z > 1e18f ? 0.69314718f + log1pf(z) : log1pf(z + sqrtf(z * (z + 2.0f)));
}

#include "include/kv4_merge.cuh"

template <typename Cache>
__device__ void decode_split(const float* __restrict__ q, const Cache& cache, const int* __restrict__ len, int H,
                             int Nq, int D, int T, int mask, int window, float s, float beta, int chunk,
                             float* __restrict__ part_m, float* __restrict__ part_l, float* __restrict__ part_acc,
                             unsigned* __restrict__ done, float* __restrict__ o, float* __restrict__ lse) {
    __shared__ float sh_m[KV4_DEC_WARPS], sh_l[KV4_DEC_WARPS], sh_acc[KV4_DEC_WARPS][32 * KV4_CAP];
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
    float qv[KV4_CAP], qq = 0.0f;
#pragma unroll
    for (int m = 0; m < KV4_CAP; ++m) {
        const int e = lane + 32 * m;
        qv[m] = e < D ? __ldg(q + row * D + e) : 0.0f;
        qq += qv[m] * qv[m];
    }
    const float rq = sqrtf(warp_sum_f(qq));
    const float a = fminf(s * rq, KV4_A_MAX), sinh2a = sinhf(2.0f * a);
    float mx = -INFINITY, l = 0.0f, acc[KV4_CAP];
#pragma unroll
    for (int m = 0; m < KV4_CAP; ++m) acc[m] = 0.0f;
    for (int j = first + warp; j < last; j += KV4_DEC_WARPS) {
        const long long slot = bh * T + j % T;
        float kv[KV4_CAP], kk = 0.0f;
        cache.key(bh, j, n, slot, D, kv);
#pragma unroll
        for (int m = 0; m < KV4_CAP; ++m) kk += kv[m] * kv[m];
        const float rk = sqrtf(warp_sum_f(kk));
        const float rho = cache.radial(slot);
        const float bk = fminf(s * (rho >= 0.0f ? rho : rk), KV4_A_MAX);
        // 1 − cos θ as ‖q̂ − k̂‖²/2: 1 − ⟨q,k⟩/(‖q‖‖k‖) cancels for near-parallel rows, which cost
        // the lse 1.6e-5 relative at D = 2 on the H200 (design §2.3's stable form).
        float omc = 1.0f;
        if (rq > 0.0f && rk > 0.0f) {
            const float iq = 1.0f / rq, ik = 1.0f / rk;
            float dd = 0.0f;
#pragma unroll
            for (int m = 0; m < KV4_CAP; ++m) {
                const float t = qv[m] * iq - kv[m] * ik;
                dd += t * t;
            }
            omc = fminf(0.5f * warp_sum_f(dd), 2.0f);
        }
        const float sh = sinhf(a - bk);
        const float z = 2.0f * sh * sh + sinh2a * sinhf(2.0f * bk) * omc;
        const float score = -beta * acosh1p_f(z) / s;
        const float mnew = fmaxf(mx, score);
        const float corr = __expf(mx - mnew), p = __expf(score - mnew);
        float vv[KV4_CAP];
        cache.value(slot, D, vv);
#pragma unroll
        for (int m = 0; m < KV4_CAP; ++m) acc[m] = acc[m] * corr + p * vv[m];
        l = l * corr + p;
        mx = mnew;
    }
    if (lane == 0) {
        sh_m[warp] = mx;
        sh_l[warp] = l;
    }
#pragma unroll
    for (int m = 0; m < KV4_CAP; ++m) sh_acc[warp][lane + 32 * m] = acc[m];
    __syncthreads();
    kv4_write_split<32 * KV4_CAP>(row, D, sh_m, sh_l, sh_acc, part_m, part_l, part_acc);
    kv4_merge_if_last(row, D, part_m, part_l, part_acc, done, o, lse);
}

#include "include/kv4_decode64.cuh"
#include "include/kv4_channel.cuh"

#define KV4_DECODE_OUT float *__restrict__ part_m, float *__restrict__ part_l, float *__restrict__ part_acc, \
    unsigned *__restrict__ done, float *__restrict__ o, float *__restrict__ lse
#define KV4_INT4_ARGS const float *__restrict__ q, const unsigned char *__restrict__ k_codes, \
    const unsigned char *__restrict__ v_codes, const unsigned short *__restrict__ k_meta, \
    const unsigned short *__restrict__ v_meta, const float *__restrict__ k_norm, const int *__restrict__ len
#define KV4_FP16_ARGS const float *__restrict__ q, const unsigned short *__restrict__ k16, \
    const unsigned short *__restrict__ v16, const int *__restrict__ len

extern "C" __global__ void kv4_decode64_int4(KV4_INT4_ARGS, int H, int Nq, int T, int mask, int window, float s,
                                             float beta, int chunk, KV4_DECODE_OUT) {
    const Int4Rows64 cache{k_codes, v_codes, k_meta, v_meta, k_norm};
    decode_split64<Int4Rows64, true>(q, cache, len, H, Nq, T, mask, window, s, beta, chunk, part_m, part_l, part_acc,
                                     done, o, lse);
}

extern "C" __global__ void kv4_decode64_int4_nopf(KV4_INT4_ARGS, int H, int Nq, int T, int mask, int window, float s,
                                                  float beta, int chunk, KV4_DECODE_OUT) {
    const Int4Rows64 cache{k_codes, v_codes, k_meta, v_meta, k_norm};
    decode_split64<Int4Rows64, false>(q, cache, len, H, Nq, T, mask, window, s, beta, chunk, part_m, part_l,
                                      part_acc, done, o, lse);
}

extern "C" __global__ void kv4_decode64_fp16(KV4_FP16_ARGS, int H, int Nq, int T, int mask, int window, float s,
                                             float beta, int chunk, KV4_DECODE_OUT) {
    const Fp16Rows64 cache{k16, v16};
    decode_split64<Fp16Rows64, true>(q, cache, len, H, Nq, T, mask, window, s, beta, chunk, part_m, part_l, part_acc,
                                     done, o, lse);
}

extern "C" __global__ void kv4_decode64_fp16_nopf(KV4_FP16_ARGS, int H, int Nq, int T, int mask, int window, float s,
                                                  float beta, int chunk, KV4_DECODE_OUT) {
    const Fp16Rows64 cache{k16, v16};
    decode_split64<Fp16Rows64, false>(q, cache, len, H, Nq, T, mask, window, s, beta, chunk, part_m, part_l,
                                      part_acc, done, o, lse);
}

extern "C" __global__ void kv4_decode_split_int4(KV4_INT4_ARGS, int H, int Nq, int D, int T, int mask, int window,
                                                 float s, float beta, int chunk, KV4_DECODE_OUT) {
    const Int4Cache cache{k_codes, v_codes, k_meta, v_meta, k_norm};
    decode_split(q, cache, len, H, Nq, D, T, mask, window, s, beta, chunk, part_m, part_l, part_acc, done, o, lse);
}

extern "C" __global__ void kv4_decode_split_fp16(KV4_FP16_ARGS, int H, int Nq, int D, int T, int mask, int window,
                                                 float s, float beta, int chunk, KV4_DECODE_OUT) {
    const Fp16Cache cache{k16, v16};
    decode_split(q, cache, len, H, Nq, D, T, mask, window, s, beta, chunk, part_m, part_l, part_acc, done, o, lse);
}

extern "C" __global__ void kv4_decode_split_int4ch(const float* __restrict__ q,
                                                   const unsigned char* __restrict__ k_codes,
                                                   const unsigned char* __restrict__ v_codes,
                                                   const unsigned short* __restrict__ k_cmeta,
                                                   const unsigned short* __restrict__ k_tail,
                                                   const unsigned short* __restrict__ v_meta,
                                                   const float* __restrict__ k_norm, const int* __restrict__ len,
                                                   int H, int Nq, int D, int T, int G, int mask, int window,
                                                   float s, float beta, int chunk, KV4_DECODE_OUT) {
    const Int4ChannelCache cache{k_codes, v_codes, k_cmeta, k_tail, v_meta, k_norm, T, G};
    decode_split(q, cache, len, H, Nq, D, T, mask, window, s, beta, chunk, part_m, part_l, part_acc, done, o, lse);
}

extern "C" __global__ void kv4_seal_channels(const float* __restrict__ k, const unsigned short* __restrict__ k_tail,
                                             unsigned char* __restrict__ k_codes, unsigned short* __restrict__ k_cmeta,
                                             const int* __restrict__ start, int H, int L, int D, int T, int G) {
    seal_channels(k, k_tail, k_codes, k_cmeta, start, H, L, D, T, G);
}
