// The W4A8 GEMM for M > 16 (prefill), included by ../w4a8.cu (whose header states the layouts,
// the exactness argument and this kernel's schedule; entry point w4a8_gemm_large there).
// CTA tile W4A8_LARGE_ROWS x 8 W4A8_LARGE_TILES (128 rows x 64 columns), 8 warps over the rows
// (16 each: one m16 tile by all 8 n-tiles); K in 128-blocks, each block's A rows (permuted codes,
// copied verbatim), the CTA's packed weights and their metadata staged in shared memory by
// cp.async, double-buffered.
#pragma once

// This thread's place in the CTA tile.
struct W4a8L {
    int M, N, K, G, nblk, groups, kp, nt, lane, w;
    long long row0, jt0;  // the CTA's first row and first n-tile
    bool active;          // the warp has a row < M (warp-uniform)
};

__device__ __forceinline__ W4a8L w4a8_large_geo(int M, int N, int K, int G) {
    W4a8L q;
    q.M = M, q.N = N, q.K = K, q.G = G, q.nblk = (K + 127) / 128, q.groups = K / G, q.kp = 128 * q.nblk;
    q.row0 = (long long)blockIdx.y * W4A8_LARGE_ROWS, q.jt0 = (long long)blockIdx.x * W4A8_LARGE_TILES;
    // N32 / 8 tiles exist, a multiple of 4: the last CTA in a row of the grid may have only 4.
    q.nt = (int)min((long long)W4A8_LARGE_TILES, (N + 31) / 32 * 4 - q.jt0);
    q.lane = threadIdx.x & 31, q.w = threadIdx.x >> 5;
    q.active = q.row0 + 16 * q.w < M;
    return q;
}

// Stage sizes: A rows, weights (512 bytes per tile), metadata (4 groups x 8 columns per tile).
#define W4A8_LARGE_A (W4A8_LARGE_ROWS * W4A8_LARGE_LD)
#define W4A8_LARGE_B (W4A8_LARGE_TILES * 512)
#define W4A8_LARGE_S (W4A8_LARGE_TILES * 32)

// The first group of block b (the block's chunks span at most 4 groups, G >= 32).
__device__ __forceinline__ int w4a8_large_g0(const W4a8L& q, int b) { return 128 * b / q.G; }

// Block b into one stage: its A rows (zero past M; 4 copies of 16 bytes per thread, 8
// consecutive threads per row), the CTA's existing tiles' weights (one copy per thread, a warp
// per tile) and their metadata for the block's groups (threads 0..63: tile, local group, half).
__device__ __forceinline__ void w4a8_large_copy(signed char* as, unsigned char* bs, unsigned* ms, const signed char* xq, const unsigned char* wp, const unsigned* meta, const W4a8L& q, int b) {
#pragma unroll
    for (int i = 0; i < W4A8_LARGE_ROWS * 8 / W4A8_THREADS; ++i) {
        const int r = (threadIdx.x >> 3) + W4A8_THREADS / 8 * i, p = threadIdx.x & 7;
        const long long row = q.row0 + r;
        const bool in = row < q.M;
        w4a8_cp16(as + r * W4A8_LARGE_LD + 16 * p, xq + (in ? row : 0) * q.kp + 128 * b + 16 * p, in ? 16 : 0);
    }
    if (q.w < q.nt) w4a8_cp16(bs + 512 * q.w + 16 * q.lane, wp + ((q.jt0 + q.w) * q.nblk + b) * 512 + 16 * q.lane, 16);
    if (threadIdx.x < 8 * W4A8_LARGE_TILES) {
        const int j = threadIdx.x >> 3, l = (threadIdx.x >> 1) & 3, h = threadIdx.x & 1, g0 = w4a8_large_g0(q, b);
        if (j < q.nt && g0 + l <= min((128 * b + 96) / q.G, q.groups - 1))
            w4a8_cp16(ms + (4 * j + l) * 8 + 4 * h, meta + ((q.jt0 + j) * q.groups + g0 + l) * 8 + 4 * h, 16);
    }
}

// One 128-block of the warp's 16 rows x nt tiles from a stage: A fragments, weights and
// metadata (columns 2t, 2t + 1 as one uint2) from shared memory, 4 MMAs per tile (+ 4 for the
// code sums when asym); PC: one partial per chunk, else one per block.
template <bool PC>
__device__ __forceinline__ void w4a8_large_block(const signed char* as, const unsigned char* bs, const unsigned* ms, const W4a8L& q, int b, bool asym, float (&f)[W4A8_LARGE_TILES][4]) {
    const int g = q.lane >> 2, t = q.lane & 3;
    unsigned a[4][4];
    {
        const signed char* p = as + (16 * q.w + g) * W4A8_LARGE_LD + 32 * t;
        W4a8A ac;
        ac.a[0] = *reinterpret_cast<const uint4*>(p), ac.a[1] = *reinterpret_cast<const uint4*>(p + 16);
        ac.a[2] = *reinterpret_cast<const uint4*>(p + 8 * W4A8_LARGE_LD), ac.a[3] = *reinterpret_cast<const uint4*>(p + 8 * W4A8_LARGE_LD + 16);
        w4a8_frags(ac, a);
    }
    const uint4* w = reinterpret_cast<const uint4*>(bs) + q.lane;  // tile j: w[32 j]
    const unsigned* m = ms + 2 * t;                                // tile j, local group l: m[8 (4j + l)]
    const unsigned ones = 0x01010101u;                             // B of all ones: D = the rows' code sums
    if (PC) {
        const int g0 = w4a8_large_g0(q, b);
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            if (128 * b + 32 * c >= q.K) break;
            int cs[4] = {0, 0, 0, 0};
            if (asym) w4a8_mma(cs, a[c], ones, ones);
            const int l = (128 * b + 32 * c) / q.G - g0;
#pragma unroll
            for (int j = 0; j < W4A8_LARGE_TILES; ++j) {
                if (j >= q.nt) break;
                const unsigned wv = w4a8_word(w[32 * j], c);
                int d[4] = {0, 0, 0, 0};
                w4a8_mma(d, a[c], w4a8_b_even(wv), w4a8_b_odd(wv));
                const uint2 mm = *reinterpret_cast<const uint2*>(m + 8 * (4 * j + l));
                w4a8_flush(f[j], d, mm.x, mm.y, cs[0], cs[2]);
            }
        }
        return;
    }
    int bsum[4] = {0, 0, 0, 0};
    if (asym) {
#pragma unroll
        for (int c = 0; c < 4; ++c) w4a8_mma(bsum, a[c], ones, ones);
    }
#pragma unroll
    for (int j = 0; j < W4A8_LARGE_TILES; ++j) {
        if (j >= q.nt) break;
        const uint4 wj = w[32 * j];
        int d[4] = {0, 0, 0, 0};
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const unsigned wv = w4a8_word(wj, c);
            w4a8_mma(d, a[c], w4a8_b_even(wv), w4a8_b_odd(wv));
        }
        const uint2 mm = *reinterpret_cast<const uint2*>(m + 32 * j);
        w4a8_flush(f[j], d, mm.x, mm.y, bsum[0], bsum[2]);
    }
}

// The pipeline over K's blocks: block b + 1's copies are issued before block b's MMAs; a barrier
// after each block frees its stage for the copies of block b + 2.
template <bool PC>
__device__ __forceinline__ void w4a8_large_loop(signed char (*as)[W4A8_LARGE_A], unsigned char (*bs)[W4A8_LARGE_B], unsigned (*ms)[W4A8_LARGE_S], const signed char* xq, const unsigned char* wp, const unsigned* meta, const W4a8L& q, bool asym, float (&f)[W4A8_LARGE_TILES][4]) {
    w4a8_large_copy(as[0], bs[0], ms[0], xq, wp, meta, q, 0);
    w4a8_cp_commit();
    for (int b = 0; b < q.nblk; ++b) {
        if (b + 1 < q.nblk) {
            w4a8_large_copy(as[(b + 1) & 1], bs[(b + 1) & 1], ms[(b + 1) & 1], xq, wp, meta, q, b + 1);
            w4a8_cp_commit();
            w4a8_cp_wait<1>();
        } else {
            w4a8_cp_wait<0>();
        }
        __syncthreads();
        if (q.active) w4a8_large_block<PC>(as[b & 1], bs[b & 1], ms[b & 1], q, b, asym, f);
        __syncthreads();
    }
}

// y = s_x * f for the warp's rows < M and columns < N (lane (g, t): rows g, g + 8, columns 2t,
// 2t + 1 of each tile).
__device__ __forceinline__ void w4a8_large_store(const float (&f)[W4A8_LARGE_TILES][4], const W4a8L& q, const float* sx, float* y) {
    const int g = q.lane >> 2, t = q.lane & 3;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const long long row = q.row0 + 16 * q.w + 8 * h + g;
        if (row >= q.M) continue;
        const float s = sx[row];
#pragma unroll
        for (int j = 0; j < W4A8_LARGE_TILES; ++j) {
            if (j >= q.nt) break;
            const long long col = 8 * (q.jt0 + j) + 2 * t;
            if (col < q.N) y[row * q.N + col] = s * f[j][2 * h];
            if (col + 1 < q.N) y[row * q.N + col + 1] = s * f[j][2 * h + 1];
        }
    }
}
