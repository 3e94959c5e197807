// Per-channel K (design hyperbolic.md §4.2, KIVI-style; reference/src/kv4/cache.rs `PerChannelK`),
// included by ../kv4.cu after its codec helpers. K of a complete group of G tokens is quantised
// channel by channel, one (s, m) per group and channel written once; the incomplete group's keys
// stay fp16 in a tail. V stays per token (kv4_append with null K codes). No ring: groups never move.
// Layout: k_codes as per token ([B H T, D/2], byte i = channels 2i | 2i+1 << 4 of the token);
// k_cmeta [B H, T/G, D, 2] fp16 bits (s, m); k_tail [B H, G, D] fp16 bits, position p in p mod G.
// Codec per channel (f32, as per token): s = max((max - min)/15, 1e-8), q = clamp(rint((x - min)/s),
// 0, 15) over the group's fp16 keys.
//
// kv4_seal_channels (exported by ../kv4.cu)(const float* k /* the append's [B,H,L,D] */, const u16* k_tail, u8* k_codes,
//   u16* k_cmeta, const int* start, int H, int L, int D, int T, int G)
//   grid (B H, groups) x KV4_SEAL_THREADS: CTA (row, y) seals group g = start / G + y if the append
//   completes it ((g + 1) G <= start + L); thread i takes the channel pair (2i, 2i + 1). Keys before
//   `start` come from the tail, the append's own from k rounded to fp16 (as the tail would hold
//   them). Launched before the tail write (kv4_append_fp16 with T = G), which may overwrite them.
__device__ __forceinline__ float kv4_group_key(const float* __restrict__ k, const unsigned short* __restrict__ tail,
                                               long long row, int s0, int L, int D, int G, int pos, int ch) {
    return pos < s0 ? h2f(tail[(row * G + pos % G) * D + ch]) : h2f(f2h(k[(row * L + (pos - s0)) * D + ch]));
}

__device__ void seal_channels(const float* __restrict__ k, const unsigned short* __restrict__ k_tail,
                              unsigned char* __restrict__ k_codes, unsigned short* __restrict__ k_cmeta,
                              const int* __restrict__ start, int H, int L, int D, int T, int G) {
    const long long row = blockIdx.x;
    const int s0 = start[row / H], g = s0 / G + (int)blockIdx.y;
    if ((long long)(g + 1) * G > (long long)s0 + L) return;  // not completed by this append
    for (int i = threadIdx.x; 2 * i < D; i += blockDim.x) {
        float mn[2] = {INFINITY, INFINITY}, mx[2] = {-INFINITY, -INFINITY}, st[2];
        for (int t = 0; t < G; ++t)
            for (int c = 0; c < 2; ++c) {
                const float x = kv4_group_key(k, k_tail, row, s0, L, D, G, g * G + t, 2 * i + c);
                mn[c] = fminf(mn[c], x);
                mx[c] = fmaxf(mx[c], x);
            }
        for (int c = 0; c < 2; ++c) {
            st[c] = fmaxf((mx[c] - mn[c]) / 15.0f, 1e-8f);
            unsigned short* meta = k_cmeta + (((row * (T / G) + g) * D) + 2 * i + c) * 2;
            meta[0] = f2h(st[c]);
            meta[1] = f2h(mn[c]);
        }
        for (int t = 0; t < G; ++t) {
            unsigned byte = 0;
            for (int c = 0; c < 2; ++c) {
                const float x = kv4_group_key(k, k_tail, row, s0, L, D, G, g * G + t, 2 * i + c);
                byte |= (unsigned)fminf(fmaxf(rintf((x - mn[c]) / st[c]), 0.0f), 15.0f) << (4 * c);
            }
            k_codes[(row * T + g * G + t) * (D / 2) + i] = (unsigned char)byte;
        }
    }
}

// The decode loader (decode_split, lane-strided): a sealed key from its codes and its group's
// per-channel (s, m), a key of the row's incomplete group from the fp16 tail; V per token.
struct Int4ChannelCache {
    const unsigned char* __restrict__ k_codes;
    const unsigned char* __restrict__ v_codes;
    const unsigned short* __restrict__ k_cmeta;
    const unsigned short* __restrict__ k_tail;
    const unsigned short* __restrict__ v_meta;
    const float* __restrict__ k_norm;
    int T, G;
    __device__ __forceinline__ void key(long long bh, int j, int n, long long slot, int D, float* out) const {
        const int lane = threadIdx.x & 31;
        const bool sealed = j / G < n / G;
        const unsigned* cm = reinterpret_cast<const unsigned*>(k_cmeta) + (bh * (T / G) + j / G) * D;
#pragma unroll
        for (int i = 0; i < KV4_CAP; ++i) {
            const int e = lane + 32 * i;
            out[i] = 0.0f;
            if (e >= D) continue;
            if (sealed) {
                const unsigned meta = __ldg(cm + e);
                const unsigned byte = __ldg(k_codes + slot * (D / 2) + (e >> 1));
                out[i] = h2f((unsigned short)(meta >> 16)) +
                         (float)((byte >> (4 * (e & 1))) & 15u) * h2f((unsigned short)(meta & 0xffffu));
            } else {
                out[i] = h2f(__ldg(k_tail + (bh * G + j % G) * D + e));
            }
        }
    }
    __device__ __forceinline__ void value(long long slot, int D, float* out) const {
        const Int4Cache per_token{k_codes, v_codes, nullptr, v_meta, nullptr};
        per_token.value(slot, D, out);
    }
    __device__ __forceinline__ float radial(long long slot) const { return k_norm ? __ldg(k_norm + slot) : -1.0f; }
};
