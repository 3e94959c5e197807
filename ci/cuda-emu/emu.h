// Minimal CUDA emulation on host threads: one std::thread per CUDA thread, blocks run one after
// another, __shared__ = function-static storage (shared by the block's threads), __syncthreads =
// block barrier, warp shuffles through per-warp slots and a warp barrier. Exited threads drop
// out of both barriers (CUDA semantics for early return).
#pragma once
#define MUSE_CUDA_EMU 1
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

using std::fmax;
using std::fmin;
using std::min;
using std::max;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

struct float2 { float x, y; };
struct float4 { float x, y, z, w; };
struct uint4 { unsigned x, y, z, w; };
struct double2 { double x, y; };
struct uint2 { unsigned x, y; };
struct int4 { int x, y, z, w; };
inline float2 make_float2(float a, float b) { return {a, b}; }
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline double2 make_double2(double a, double b) { return {a, b}; }

template <typename T> inline T __ldg(const T* p) { return *p; }
template <typename T> inline T __ldcs(const T* p) { return *p; }
template <typename T> inline T __ldcg(const T* p) { return *p; }
inline void __threadfence() {}
// Blocks run one after another and a block's threads share this lock: atomic within the launch.
inline std::mutex g_atomic;
inline unsigned atomicAdd(unsigned* p, unsigned v) { std::lock_guard<std::mutex> g(g_atomic); const unsigned o = *p; *p = o + v; return o; }
template <typename T> inline void __stcs(T* p, T v) { *p = v; }
inline float __logf(float x) { return logf(x); }
inline float __expf(float x) { return expf(x); }
// Byte i of the result = byte (s >> 4i) & 7 of the pair (y:x).
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const uint64_t v = (uint64_t)x | ((uint64_t)y << 32);
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= (unsigned)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
}
// Per-byte a - b modulo 256.
inline unsigned __vsub4(unsigned a, unsigned b) {
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= (((a >> (8 * i)) - (b >> (8 * i))) & 0xff) << (8 * i);
    return r;
}
// Four signed byte products of a and b plus c.
inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; ++i) c += (int)(signed char)(a >> (8 * i)) * (int)(signed char)(b >> (8 * i));
    return c;
}
// fp16 bits <-> f32, correctly rounded (GCC's _Float16, as cvt.rn.f16.f32 on the device).
inline unsigned short f2h(float x) { _Float16 h = (_Float16)x; unsigned short b; std::memcpy(&b, &h, 2); return b; }
inline float h2f(unsigned short b) { _Float16 h; std::memcpy(&h, &b, 2); return (float)h; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }

struct Block {
    std::unique_ptr<std::barrier<>> block;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    std::vector<std::vector<uint64_t>> slots;
    std::vector<std::vector<unsigned char>> gather;  // per warp: 32 lanes x up to 64 bytes
};
inline Block* g_block = nullptr;

inline void __syncthreads() { g_block->block->arrive_and_wait(); }

template <typename V> inline V shfl_impl(V v, int src_of_lane(int, int), int arg) {
    const int t = threadIdx.x, w = t / 32, lane = t % 32;
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(V));
    g_block->slots[w][lane] = bits;
    g_block->warps[w]->arrive_and_wait();
    const uint64_t got = g_block->slots[w][src_of_lane(lane, arg)];
    g_block->warps[w]->arrive_and_wait();
    V out;
    std::memcpy(&out, &got, sizeof(V));
    return out;
}
inline int xor_lane(int lane, int o) { return lane ^ o; }
inline int src_lane(int, int s) { return s; }
inline int up_lane(int lane, int d) { return lane >= d ? lane - d : lane; }
inline int down_lane(int lane, int d) { return lane + d < 32 ? lane + d : lane; }
template <typename V> inline V __shfl_up_sync(unsigned, V v, int d) { return shfl_impl(v, up_lane, d); }
template <typename V> inline V __shfl_down_sync(unsigned, V v, int d) { return shfl_impl(v, down_lane, d); }
inline void __syncwarp() { g_block->warps[threadIdx.x / 32]->arrive_and_wait(); }
template <typename V> inline V __shfl_xor_sync(unsigned, V v, int o) { return shfl_impl(v, xor_lane, o); }
template <typename V> inline V __shfl_sync(unsigned, V v, int s) { return shfl_impl(v, src_lane, s); }
// Warp-collective (every lane of the warp calls it): all[l] = lane l's `mine`, for emulating
// instructions that read other lanes' registers (mma.sync).
template <typename T> inline void emu_warp_allgather(const T& mine, T* all) {
    static_assert(sizeof(T) <= 64, "emu_warp_allgather: at most 64 bytes per lane");
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    std::memcpy(g_block->gather[w].data() + lane * sizeof(T), &mine, sizeof(T));
    g_block->warps[w]->arrive_and_wait();
    std::memcpy(all, g_block->gather[w].data(), 32 * sizeof(T));
    g_block->warps[w]->arrive_and_wait();
}

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }
// Warp vote over the full warp (every lane of the warp calls it).
inline unsigned __ballot_sync(unsigned, bool p) {
    int all[32];
    const int mine = p;
    emu_warp_allgather(mine, all);
    unsigned m = 0;
    for (int l = 0; l < 32; ++l) m |= (unsigned)(all[l] != 0) << l;
    return m;
}

// Runs `kernel` on grid x block (block.y = block.z = 1).
inline void launch(dim3 grid, unsigned threads, const std::function<void()>& kernel) {
    gridDim = grid;
    blockDim = dim3{threads, 1, 1};
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                Block b;
                b.block = std::make_unique<std::barrier<>>(threads);
                const unsigned nw = (threads + 31) / 32;
                for (unsigned w = 0; w < nw; ++w) {
                    b.warps.push_back(std::make_unique<std::barrier<>>(std::min(32u, threads - 32 * w)));
                    b.slots.emplace_back(32, 0);
                    b.gather.emplace_back(32 * 64, 0);
                }
                g_block = &b;
                std::vector<std::thread> ts;
                for (unsigned t = 0; t < threads; ++t) {
                    ts.emplace_back([&, t] {
                        threadIdx = dim3{t, 0, 0};
                        blockIdx = dim3{bx, by, bz};
                        kernel();
                        b.warps[t / 32]->arrive_and_drop();
                        b.block->arrive_and_drop();
                    });
                }
                for (auto& th : ts) th.join();
                g_block = nullptr;
            }
}
