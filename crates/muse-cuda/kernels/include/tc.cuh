// Tensor-core and async-copy helpers shared by the hyperbolic attention kernels (hyp_attn_tc.cu,
// hyp_attn_tc_bwd.cu): mma.sync m16n8k16 bf16 -> f32, ldmatrix, cp.async, bf16 packing and the
// approximate special functions (one MUFU op each).
#pragma once
#include <stdint.h>

// bf16 values travel as their 16-bit patterns (no cuda_bf16.h: the pinned toolchain has no CCCL).
typedef unsigned short bf16;
__device__ __forceinline__ float bf16_to_f32(bf16 x) { return __uint_as_float((uint32_t)x << 16); }

__device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const void* p) {
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

__device__ __forceinline__ void ldsm_x4_t(uint32_t r[4], const void* p) {
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

// 16-byte async copy; src_bytes = 0 zero-fills the destination.
__device__ __forceinline__ void cp16(void* dst, const void* src, int src_bytes) {
    const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Two floats rounded to nearest-even bf16, `lo` in the low half (the lower column of a fragment).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    uint32_t r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ float fast_sqrt(float x) {
    float y;
    asm("sqrt.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ float fast_lg2(float x) {
    float y;
    asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ float fast_ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}


// 1 + z + sqrt(z (z + 2)) = cosh(s d) + sinh(s d) for z >= 0, with z (z + 2) formed at scale 2^-64 so
// that it never overflows f32 (z reaches 5.6e25 at A_MAX = 15; unscaled, z^2 overflows past 1.8e19).
// Exact up to the approximate sqrt; only z < 1e-18 (d < 1.5e-9/sqrt(c)) loses the root to
// flush-to-zero, which changes d by less than 1.5e-9/sqrt(c).
__device__ __forceinline__ float one_plus_acosh_arg(float z) {
    const float zs = z * 5.421010862427522e-20f;  // 2^-64
    return fmaf(fast_sqrt(fmaf(zs, z, zs + zs)), 4294967296.0f, z + 1.f);  // 2^32
}
