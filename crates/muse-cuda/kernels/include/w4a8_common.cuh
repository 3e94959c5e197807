// Device helpers shared by the W4A8 GEMM kernels of ../w4a8.cu (small M) and w4a8_large.cuh
// (M > 16): the int8 MMA, fp16 -> f32, L2 prefetch, cp.async, A fragments from the permuted
// code layout and the f32 epilogue of one integer partial. Under MUSE_CUDA_EMU (ci/cuda-emu) the
// MMA is emulated from its fragment layouts and cp.async is a plain (synchronous) copy.
#pragma once

#ifndef MUSE_CUDA_EMU
__device__ __forceinline__ float w4a8_h2f(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ void w4a8_mma(int (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void w4a8_prefetch_l2(const void* p, unsigned bytes) {
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
}
// 16-byte async copy global -> shared; src_bytes = 0 zero-fills the destination (src unread).
__device__ __forceinline__ void w4a8_cp16(void* dst, const void* src, int src_bytes) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void w4a8_cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void w4a8_cp_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }
#else
inline float w4a8_h2f(unsigned short h) { return h2f(h); }
// The MMA from its fragment layouts (PTX ISA, mma.m16n8k32 .s8): lane = 4 g + t holds A rows g
// (regs 0, 2) and g + 8 (regs 1, 3) at k = 4t + i (regs 0, 1) and 16 + 4t + i (regs 2, 3), B
// column g at k = 4t + i (reg 0) and 16 + 4t + i (reg 1), D rows g, g + 8 at columns 2t, 2t + 1.
inline void w4a8_mma(int (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    struct F { unsigned a[4], b[2]; } mine{{a[0], a[1], a[2], a[3]}, {b0, b1}}, all[32];
    emu_warp_allgather(mine, all);
    const int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
    for (int e = 0; e < 4; ++e) {
        const int r = g + 8 * (e >> 1), n = 2 * t + (e & 1);
        for (int k = 0; k < 32; ++k) {
            const unsigned av = all[(r & 7) * 4 + (k & 15) / 4].a[(r >> 3) + 2 * (k >> 4)];
            const unsigned bv = all[n * 4 + (k & 15) / 4].b[k >> 4];
            d[e] += (int)(signed char)(av >> 8 * (k & 3)) * (int)(signed char)(bv >> 8 * (k & 3));
        }
    }
}
inline void w4a8_prefetch_l2(const void*, unsigned) {}
// The copy happens at once; the CTA barriers that follow the waits order it as on the device.
inline void w4a8_cp16(void* dst, const void* src, int src_bytes) {
    if (src_bytes) std::memcpy(dst, src, 16);
    else std::memset(dst, 0, 16);
}
inline void w4a8_cp_commit() {}
template <int N> inline void w4a8_cp_wait() {}
#endif

__device__ __forceinline__ unsigned w4a8_word(const uint4& v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }

struct W4a8A {  // one block's A fragments (rows g: a[0..1], g + 8: a[2..3])
    uint4 a[4];
};

// The MMA A operands of chunks c = 0..3 from one block's fragments: lane (g, t) holds bytes
// 32t..32t+31 of rows g and g + 8, bytes 8c..8c+3 (even k) and 8c+4..8c+7 (odd k) of which are
// chunk c's.
__device__ __forceinline__ void w4a8_frags(const W4a8A& ac, unsigned (&a)[4][4]) {
#pragma unroll
    for (int c = 0; c < 4; ++c) {
        a[c][0] = w4a8_word(ac.a[c >> 1], 2 * (c & 1)), a[c][2] = w4a8_word(ac.a[c >> 1], 2 * (c & 1) + 1);
        a[c][1] = w4a8_word(ac.a[2 + (c >> 1)], 2 * (c & 1)), a[c][3] = w4a8_word(ac.a[2 + (c >> 1)], 2 * (c & 1) + 1);
    }
}

// The weights' MMA B operands from one packed word (8 codes): nibbles to the high half of each
// byte, s8 value 16 v (low nibbles = even k).
__device__ __forceinline__ unsigned w4a8_b_even(unsigned wv) { return (wv << 4) & 0xF0F0F0F0u; }
__device__ __forceinline__ unsigned w4a8_b_odd(unsigned wv) { return wv & 0xF0F0F0F0u; }

// f += T * s_w / 16, T = d + zc * sum q_x, for D rows g, g + 8 (code sums s0, s1) and columns
// 2t, 2t + 1 (metadata m0, m1: s_w in the low half, zc in the high half).
__device__ __forceinline__ void w4a8_flush(float (&f)[4], const int (&d)[4], unsigned m0, unsigned m1, int s0, int s1) {
    const float c0 = w4a8_h2f((unsigned short)(m0 & 0xffffu)) * 0.0625f, c1 = w4a8_h2f((unsigned short)(m1 & 0xffffu)) * 0.0625f;
    const int z0 = (int)m0 >> 16, z1 = (int)m1 >> 16;
    f[0] += (float)(d[0] + z0 * s0) * c0;
    f[1] += (float)(d[1] + z1 * s0) * c1;
    f[2] += (float)(d[2] + z0 * s1) * c0;
    f[3] += (float)(d[3] + z1 * s1) * c1;
}
