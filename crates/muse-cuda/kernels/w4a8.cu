// W4A8 GEMM (design hyperbolic.md §8.3): Y[m, n] = s_x[m] sum_g s_w[n, g] (sum_{k in g} q_x q_w
// - z_w[n, g] sum_{k in g} q_x), per-token int8 activations, 4-bit weights per output row and
// group of G inputs (symmetric -8..7, or 0..15 with zero points), any M >= 1: small-M kernels
// (decode, M <= 16) and a tiled one for M > 16 (prefill). Launchers: ../src/w4a8.rs (which also
// builds the device layouts below) and ../src/w4a8/large.rs; CPU reference: reference/src/w4a8.rs.
//
// Exactness. Weights enter an int8 tensor-core MMA (m16n8k32, s8 x s8 -> s32) as 16 v, v the
// code as a signed nibble (q for symmetric codes, q - 8 for asymmetric ones), so the MMA's int32
// sums are exact (|sum| <= 127 * 128 * 128 per 128-block). For asymmetric weights one more MMA per
// chunk against all-ones bytes gives the code sums sum q_x (exact, shared by all the warp's
// tiles); with zc = 16 (8 - z_w) (0 when symmetric), T = acc + zc * sum q_x = 16 sum q_x (q_w -
// z_w) is an exact integer per 32-code chunk, summed over the 4 chunks of a 128-block when G %
// 128 == 0 (else one T per chunk), and converts to f32 exactly (|T| <= 16*127*15*128 < 2^24).
// The f32 epilogue f += T * (s_w / 16) (s_w / 16 exact in f32; FMA, one rounding) runs per warp
// over its blocks, then (small kernels) the warps' partials are added in a fixed order, and the
// sum is scaled by s_x. So y equals the reference's `gemm_exact` (the same integer group sums, an
// f64 epilogue) up to the f32 rounding of those operations (K/128 partials in all, K/32 when G %
// 128 != 0, then the WK-way sum (small kernels only) and the s_x product): no integer sum is ever
// rounded. Deterministic (no atomics; each output of the large kernel has one owner thread).
//
// w4a8_quant_x(x, M, K, xq, sx): one warp per row (any M): s = absmax/127 (1 for a zero row),
//   q = clamp(rint(x / s), -127, 127) into the permuted code layout below.
// w4a8_gemm_small(xq, sx, wp, meta, y, M, N, K, G, ct, asym): y from those codes, M <= 16.
// w4a8_gemm_fused(x, wp, meta, y, xq, sx, M, N, K, G, ct, asym): the same in one launch for
//   M * Kp <= W4A8_FUSE_MAX: every CTA quantises x itself into shared memory (CTA 0 also writes
//   xq/sx, so both paths leave the same codes behind).
// w4a8_gemm_large(xq, sx, wp, meta, y, M, N, K, G, asym): y from the codes, any M (used for M >
//   16); grid (ceil(N / 64), ceil(M / 128)).
// Small kernels: CTA = 8 warps over ct n-tiles (8 columns each, ct in {1, 2, 4}): WK warps split
// the 128-blocks of K (warp wk takes blocks wk, wk + WK, ...), 8/WK warps split the tiles (ntw
// tiles per warp, one MMA per tile and chunk; the A fragments are loaded once per block and reused
// across them). Per block a lane loads one uint4 of weights per tile (32 codes; a warp reads 512
// contiguous bytes) and its A fragments (2 x 16 B per row pair, from shared memory in the fused
// kernel); the next block's weights (and global A fragments) load before the current block's
// MMAs, and warp 0 first asks L2 to prefetch the CTA's weight range. <= 128 registers: 2 CTAs/SM.
// Large kernel (include/w4a8_large.cuh): CTA tile W4A8_LARGE_ROWS = 128 rows x 8 n-tiles
// (W4A8_LARGE_TILES; 64 columns), 8 warps over the rows: warp w takes rows 16w..16w+15 (one m16
// tile) by all 8 tiles, and all of K (no split-K: each output has one owner thread). Per
// 128-block the CTA's A rows (128 bytes each, the permuted layout copied verbatim, row stride
// W4A8_LARGE_LD = 144 so that the lanes' uint4 reads are conflict-free; rows >= M zero-filled),
// its tiles' packed weights (8 x 512 contiguous bytes; tiles past N32/8 not read: the last CTA of
// a grid row may have 4) and their metadata for the block's <= 4 groups go to shared memory by
// cp.async (16-byte copies), double-buffered: block b + 1's copies are issued before block b's
// MMAs. Lane (g, t) reads bytes 32t..32t+31 of rows g, g + 8 (its A fragments of all 4 chunks,
// as in the small kernels), uint4 `lane` of each tile and the metadata of columns 2t, 2t + 1;
// per block 32 MMAs (8 tiles x 4 chunks), + 4 code-sum MMAs when asym (shared by the 8 tiles).
// Each thread then stores its outputs (rows < M, columns < N) from registers. <= 128 registers
// and 46 KiB of static shared memory: 2 CTAs/SM. Warps with no row < M only copy.
// Layouts (Kp = K rounded up to 128, nblk = Kp / 128; N padded to N32 = N rounded up to 32 on the
// device):
//   x [M, K] f32; y [M, N] f32; sx [M] f32;
//   xq [M, Kp] i8, per 128-block: byte 32t + 8c + 4h + i holds k = 32c + 8t + 2i + h (0 past K);
//   wp [N32/8 tiles][nblk][8 columns g][4 lanes t] of 16 bytes: word c (bytes 4c..4c+3) holds
//     codes k = 128b + 32c + 8t .. +7, byte i = nib(k + 2i) | nib(k + 2i + 1) << 4, nib = the
//     code (symmetric) or code ^ 8 (asymmetric) as a 4-bit two's-complement value v;
//   meta [N32/8][K/G][8] u32: fp16 bits of s_w | (int16)(16 (8 - z_w)) << 16 (0 when symmetric).
// K % 32 == 0, G % 32 == 0, K % G == 0, M >= 1 (M <= 16 for the small kernels).
#define W4A8_THREADS 256
#define W4A8_WARPS 8
#define W4A8_MAX_M 16
#define W4A8_NT 4
#define W4A8_FUSE_MAX 16384
#define W4A8_RED_LD 40
#define W4A8_QB 4
#define W4A8_PREFETCH_PIECE 16384
#define W4A8_PREFETCH_PIECES 8
#define W4A8_LARGE_ROWS 128
#define W4A8_LARGE_TILES 8
#define W4A8_LARGE_LD 144

#include "include/w4a8_common.cuh"

// This warp's share of the CTA's work.
struct W4a8Geo {
    int M, N, K, G, nblk, groups, WK, ntw, wk, jtl, lane;
    long long jt0;  // first n-tile of the warp
};

__device__ __forceinline__ W4a8Geo w4a8_geo(int M, int N, int K, int G, int ct) {
    W4a8Geo q;
    q.M = M, q.N = N, q.K = K, q.G = G, q.nblk = (K + 127) / 128, q.groups = K / G;
    int wk0 = 1;
    while (wk0 < W4A8_WARPS && 2 * wk0 <= q.nblk) wk0 *= 2;
    const int wn = min(ct, W4A8_WARPS / wk0), w = threadIdx.x >> 5;
    q.WK = W4A8_WARPS / wn, q.ntw = ct / wn, q.wk = w % q.WK, q.jtl = (w / q.WK) * q.ntw;
    q.lane = threadIdx.x & 31, q.jt0 = (long long)blockIdx.x * ct + q.jtl;
    return q;
}

// Warp 0 asks L2 for the CTA's contiguous weight range (its first W4A8_PREFETCH_PIECES pieces, so
// that the resident CTAs' requests stay well inside L2) and its metadata.
__device__ __forceinline__ void w4a8_prefetch_cta(const unsigned char* wp, const unsigned* meta, const W4a8Geo& q, int ct) {
    if (threadIdx.x >= 32) return;
    const long long bytes = (long long)ct * q.nblk * 512, off = (long long)q.lane * W4A8_PREFETCH_PIECE;
    const unsigned char* base = wp + (long long)blockIdx.x * bytes;
    if (q.lane < W4A8_PREFETCH_PIECES && off < bytes) w4a8_prefetch_l2(base + off, (unsigned)min((long long)W4A8_PREFETCH_PIECE, bytes - off));
    if (q.lane == 0) w4a8_prefetch_l2(meta + (long long)blockIdx.x * ct * q.groups * 8, (unsigned)min(ct * q.groups * 32, W4A8_PREFETCH_PIECE));
}

struct W4a8W {  // one block's weights and metadata, per tile of the warp
    uint4 w[W4A8_NT];
    unsigned meta[W4A8_NT];
};

// Lane (g, t) loads column g of each tile and the metadata of column g for chunk t's group.
// w4 and m4 point at the warp's first tile (lane and column offsets included).
__device__ __forceinline__ void w4a8_load_w(const uint4* w4, const unsigned* m4, const W4a8Geo& q, int b, W4a8W& st) {
    const int gi = min((128 * b + 32 * (q.lane & 3)) / q.G, q.groups - 1);
#pragma unroll
    for (int j = 0; j < W4A8_NT; ++j)
        if (j < q.ntw) {
            st.w[j] = __ldg(w4 + (unsigned)((j * q.nblk + b) * 32));
            st.meta[j] = __ldg(m4 + (unsigned)((j * q.groups + gi) * 8));
        }
}

// Rows past M repeat row M - 1 (their outputs are dropped); M <= 8 leaves rows g + 8 at zero.
__device__ __forceinline__ void w4a8_load_a(const signed char* xa, int ld, const W4a8Geo& q, int b, W4a8A& ac) {
    const int g = q.lane >> 2, r0 = min(g, q.M - 1), r1 = min(g + 8, q.M - 1);
    const uint4* p0 = reinterpret_cast<const uint4*>(xa + (long long)r0 * ld + 128 * b + 32 * (q.lane & 3));
    const uint4* p1 = reinterpret_cast<const uint4*>(xa + (long long)r1 * ld + 128 * b + 32 * (q.lane & 3));
    const uint4 z4 = {0u, 0u, 0u, 0u};
    ac.a[0] = p0[0], ac.a[1] = p0[1];
    ac.a[2] = q.M > 8 ? p1[0] : z4, ac.a[3] = q.M > 8 ? p1[1] : z4;
}

// One 128-block for all the warp's tiles: 4 chunks x ntw MMAs (+ 4 for the code sums when asym).
// PC: one partial per chunk (G not a multiple of 128: chunk c's group comes from lane t = c), else
// one per block.
template <bool PC>
__device__ __forceinline__ void w4a8_block(const W4a8W& st, const W4a8A& ac, const W4a8Geo& q, int b, bool asym, float (&f)[W4A8_NT][4]) {
    const int t = q.lane & 3;
    unsigned a[4][4];
    w4a8_frags(ac, a);
    const unsigned ones = 0x01010101u;  // B of all ones: D = the rows' code sums (asym only)
    if (PC) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            if (128 * b + 32 * c >= q.K) break;
            int cs[4] = {0, 0, 0, 0};
            if (asym) w4a8_mma(cs, a[c], ones, ones);
#pragma unroll
            for (int j = 0; j < W4A8_NT; ++j) {
                if (j >= q.ntw) break;
                const unsigned wv = w4a8_word(st.w[j], c);
                int d[4] = {0, 0, 0, 0};
                w4a8_mma(d, a[c], w4a8_b_even(wv), w4a8_b_odd(wv));
                const unsigned m0 = __shfl_sync(0xffffffffu, st.meta[j], 8 * t + c), m1 = __shfl_sync(0xffffffffu, st.meta[j], 8 * t + 4 + c);
                w4a8_flush(f[j], d, m0, m1, cs[0], cs[2]);
            }
        }
        return;
    }
    int bs[4] = {0, 0, 0, 0};
    if (asym) {
#pragma unroll
        for (int c = 0; c < 4; ++c) w4a8_mma(bs, a[c], ones, ones);
    }
#pragma unroll
    for (int j = 0; j < W4A8_NT; ++j) {
        if (j >= q.ntw) break;
        int d[4] = {0, 0, 0, 0};
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const unsigned wv = w4a8_word(st.w[j], c);
            w4a8_mma(d, a[c], w4a8_b_even(wv), w4a8_b_odd(wv));
        }
        const unsigned m0 = __shfl_sync(0xffffffffu, st.meta[j], 8 * t), m1 = __shfl_sync(0xffffffffu, st.meta[j], 8 * t + 4);
        w4a8_flush(f[j], d, m0, m1, bs[0], bs[2]);
    }
}

// The warp's blocks wk, wk + WK, ...; `cur` holds the first block's weights on entry. The next
// block's weights (and, AP, its A fragments: global memory) load before this block's MMAs.
template <bool PC, bool AP>
__device__ __forceinline__ void w4a8_loop(const uint4* w4, const unsigned* m4, const signed char* xa, int ld, const W4a8Geo& q, bool asym, W4a8W& cur, float (&f)[W4A8_NT][4]) {
    W4a8A ac;
    if (AP && q.wk < q.nblk) w4a8_load_a(xa, ld, q, q.wk, ac);
    for (int b = q.wk; b < q.nblk; b += q.WK) {
        W4a8W nw;
        W4a8A na;
        if (!AP) w4a8_load_a(xa, ld, q, b, ac);
        if (b + q.WK < q.nblk) {
            w4a8_load_w(w4, m4, q, b + q.WK, nw);
            if (AP) w4a8_load_a(xa, ld, q, b + q.WK, na);
        }
        w4a8_block<PC>(cur, ac, q, b, asym, f);
        cur = nw;
        if (AP) ac = na;
    }
}

__device__ __forceinline__ const uint4* w4a8_wbase(const unsigned char* wp, const W4a8Geo& q) {
    return reinterpret_cast<const uint4*>(wp) + (q.jt0 * q.nblk * 32 + q.lane);
}
__device__ __forceinline__ const unsigned* w4a8_mbase(const unsigned* meta, const W4a8Geo& q) {
    return meta + (q.jt0 * q.groups * 8 + (q.lane >> 2));
}

// Sums the warps' partials in wk order (through shared memory) and stores y = s_x * sum.
__device__ __forceinline__ void w4a8_store(float* red, const float (&f)[W4A8_NT][4], const W4a8Geo& q, const float* sx, float* y, int ct) {
    const int g = q.lane >> 2, t = q.lane & 3;
    float* rw = red + q.wk * 16 * W4A8_RED_LD;
#pragma unroll
    for (int j = 0; j < W4A8_NT; ++j)
        if (j < q.ntw) {
            const int col = 8 * (q.jtl + j) + 2 * t;
            rw[g * W4A8_RED_LD + col] = f[j][0], rw[g * W4A8_RED_LD + col + 1] = f[j][1];
            rw[(g + 8) * W4A8_RED_LD + col] = f[j][2], rw[(g + 8) * W4A8_RED_LD + col + 1] = f[j][3];
        }
    __syncthreads();
    const int cols = 8 * ct;
    const long long n0 = (long long)blockIdx.x * cols;
    for (int e = threadIdx.x; e < 16 * cols; e += W4A8_THREADS) {
        const int row = e / cols, col = e % cols;
        if (row >= q.M || n0 + col >= q.N) continue;
        float s = 0.0f;
        for (int w = 0; w < q.WK; ++w) s += red[(w * 16 + row) * W4A8_RED_LD + col];
        y[(long long)row * q.N + n0 + col] = sx[row] * s;
    }
}

// Loads batch j0 of a thread's items (W4A8_QB items of 8 floats; 0 past K or for no item).
__device__ __forceinline__ void w4a8_load_x(const float* xr, int K, int ipr, int tpr, int tr, bool live, int j0, int nj, float4 (&v)[2 * W4A8_QB]) {
#pragma unroll
    for (int u = 0; u < W4A8_QB; ++u) {
        const int o = tr + tpr * (j0 + u);
        const bool in = live && j0 + u < nj && o < ipr && 8 * o < K;
        const float4 z = {0.0f, 0.0f, 0.0f, 0.0f};
        v[2 * u] = in ? *reinterpret_cast<const float4*>(xr + 8 * o) : z;
        v[2 * u + 1] = in ? *reinterpret_cast<const float4*>(xr + 8 * o + 4) : z;
    }
}

__device__ __forceinline__ float w4a8_absmax4(const float4& v) { return fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w))); }

// Quantises rows [0, rows) of x (row stride K, rows <= 16) with all the CTA's threads: codes into
// `codes` (row stride ld, permuted as above, 0 past K), scales into `sxo`; gcodes (row stride
// Kp) and gsx, if not null, get copies.
// 256/rows' threads per row (rows rounded up to a power of 2), 8 consecutive k per item; the
// loads go out W4A8_QB items at a time, and x stays in registers when one batch covers them.
__device__ void w4a8_quant_rows(const float* x, int rows, int K, signed char* codes, int ld, float* sxo, float* slots, signed char* gcodes, float* gsx) {
    const int kp = (K + 127) / 128 * 128, ipr = kp / 8;
    int mp = 1;
    while (mp < rows) mp *= 2;
    const int tpr = W4A8_THREADS / mp, r = threadIdx.x / tpr, tr = threadIdx.x % tpr, nj = (ipr + tpr - 1) / tpr;
    const bool live = r < rows;
    const float* xr = x + (long long)min(r, rows - 1) * K;
    float4 v[2 * W4A8_QB];
    float amax = 0.0f;
    for (int j0 = 0; j0 < nj; j0 += W4A8_QB) {
        w4a8_load_x(xr, K, ipr, tpr, tr, live, j0, nj, v);
#pragma unroll
        for (int u = 0; u < 2 * W4A8_QB; ++u) amax = fmaxf(amax, w4a8_absmax4(v[u]));
    }
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    if ((threadIdx.x & 15) == 0) slots[threadIdx.x >> 4] = amax;  // 16 threads never span 2 rows
    __syncthreads();
    float m = 0.0f;
    for (int i = 0; i < tpr / 16; ++i) m = fmaxf(m, slots[r * (tpr / 16) + i]);
    const float s = m > 0.0f ? m / 127.0f : 1.0f;
    if (live && tr == 0) {
        sxo[r] = s;
        if (gsx) gsx[r] = s;
    }
    for (int j0 = 0; j0 < nj; j0 += W4A8_QB) {
        if (nj > W4A8_QB) w4a8_load_x(xr, K, ipr, tpr, tr, live, j0, nj, v);
#pragma unroll
        for (int u = 0; u < W4A8_QB; ++u) {
            if (j0 + u >= nj) break;
            const int o = tr + tpr * (j0 + u);
            // before the arithmetic, so that a warp without items branches past it (predicated, the
            // idle warps ran it all: ~14k warp instructions a row in the CTA-per-row quant_x)
            if (!live || o >= ipr) continue;
            const float e[8] = {v[2 * u].x, v[2 * u].y, v[2 * u].z, v[2 * u].w, v[2 * u + 1].x, v[2 * u + 1].y, v[2 * u + 1].z, v[2 * u + 1].w};
            unsigned ev = 0, od = 0;
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const unsigned qc = (unsigned)(int)fminf(fmaxf(rintf(e[i] / s), -127.0f), 127.0f) & 0xffu;
                if (i & 1) od |= qc << (4 * (i - 1));
                else ev |= qc << (4 * i);
            }
            const int pos = 128 * (o >> 4) + 32 * (o & 3) + 8 * ((o >> 2) & 3);
            uint2 pr;
            pr.x = ev, pr.y = od;
            *reinterpret_cast<uint2*>(codes + (long long)r * ld + pos) = pr;
            if (gcodes) *reinterpret_cast<uint2*>(gcodes + (long long)r * kp + pos) = pr;
        }
    }
}

// One warp per row (W4A8_WARPS rows per CTA): the absmax by warp shuffles, then the codes, each
// lane 8 consecutive k at a time; the same arithmetic as w4a8_quant_rows, so the same codes. (A CTA
// per row ran ~14k warp instructions a row, 22 us at M 1024 K 512 on the H200, compute-bound.)
extern "C" __global__ void __launch_bounds__(W4A8_THREADS) w4a8_quant_x(const float* x, int M, int K, signed char* xq, float* sx) {
    const int lane = threadIdx.x & 31;
    const long long row = (long long)blockIdx.x * W4A8_WARPS + (threadIdx.x >> 5);
    if (row >= M) return;
    const int kp = (K + 127) / 128 * 128, ipr = kp / 8;
    const float* xr = x + row * K;
    float amax = 0.0f;
    for (int o = lane; 8 * o < K; o += 32) {
        const float4 a = *reinterpret_cast<const float4*>(xr + 8 * o), b = *reinterpret_cast<const float4*>(xr + 8 * o + 4);
        amax = fmaxf(amax, fmaxf(w4a8_absmax4(a), w4a8_absmax4(b)));
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const float s = amax > 0.0f ? amax / 127.0f : 1.0f;
    if (lane == 0) sx[row] = s;
    signed char* qr = xq + row * kp;
    for (int o = lane; o < ipr; o += 32) {
        const float4 z = {0.0f, 0.0f, 0.0f, 0.0f};
        const bool in = 8 * o < K;
        const float4 a = in ? *reinterpret_cast<const float4*>(xr + 8 * o) : z;
        const float4 b = in ? *reinterpret_cast<const float4*>(xr + 8 * o + 4) : z;
        const float e[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
        unsigned ev = 0, od = 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const unsigned qc = (unsigned)(int)fminf(fmaxf(rintf(e[i] / s), -127.0f), 127.0f) & 0xffu;
            if (i & 1) od |= qc << (4 * (i - 1));
            else ev |= qc << (4 * i);
        }
        uint2 pr;
        pr.x = ev, pr.y = od;
        *reinterpret_cast<uint2*>(qr + 128 * (o >> 4) + 32 * (o & 3) + 8 * ((o >> 2) & 3)) = pr;
    }
}

extern "C" __global__ void __launch_bounds__(W4A8_THREADS, 2) w4a8_gemm_small(const signed char* xq, const float* sx, const unsigned char* wp, const unsigned* meta, float* y, int M, int N, int K, int G, int ct, int asym) {
    __shared__ float red[W4A8_WARPS * 16 * W4A8_RED_LD];
    const W4a8Geo q = w4a8_geo(M, N, K, G, ct);
    w4a8_prefetch_cta(wp, meta, q, ct);
    const uint4* w4 = w4a8_wbase(wp, q);
    const unsigned* m4 = w4a8_mbase(meta, q);
    W4a8W cur;
    if (q.wk < q.nblk) w4a8_load_w(w4, m4, q, q.wk, cur);
    float f[W4A8_NT][4] = {};
    const int kp = 128 * q.nblk;
    if (G % 128 == 0) w4a8_loop<false, true>(w4, m4, xq, kp, q, asym != 0, cur, f);
    else w4a8_loop<true, true>(w4, m4, xq, kp, q, asym != 0, cur, f);
    w4a8_store(red, f, q, sx, y, ct);
}

extern "C" __global__ void __launch_bounds__(W4A8_THREADS, 2) w4a8_gemm_fused(const float* x, const unsigned char* wp, const unsigned* meta, float* y, signed char* xq, float* sx, int M, int N, int K, int G, int ct, int asym) {
    __shared__ __align__(16) signed char codes[W4A8_FUSE_MAX + 16 * W4A8_MAX_M];
    __shared__ float red[W4A8_WARPS * 16 * W4A8_RED_LD];
    __shared__ float sxs[W4A8_MAX_M], slots[W4A8_THREADS / 16];
    const W4a8Geo q = w4a8_geo(M, N, K, G, ct);
    w4a8_prefetch_cta(wp, meta, q, ct);
    const uint4* w4 = w4a8_wbase(wp, q);
    const unsigned* m4 = w4a8_mbase(meta, q);
    W4a8W cur;  // the first block's weights load while x is quantised
    if (q.wk < q.nblk) w4a8_load_w(w4, m4, q, q.wk, cur);
    const int kp = 128 * q.nblk, ld = kp + 16;  // ld = 16 mod 128: conflict-free A loads
    const bool first = blockIdx.x == 0;
    w4a8_quant_rows(x, M, K, codes, ld, sxs, slots, first ? xq : nullptr, first ? sx : nullptr);
    __syncthreads();
    float f[W4A8_NT][4] = {};
    if (G % 128 == 0) w4a8_loop<false, false>(w4, m4, codes, ld, q, asym != 0, cur, f);
    else w4a8_loop<true, false>(w4, m4, codes, ld, q, asym != 0, cur, f);
    w4a8_store(red, f, q, sxs, y, ct);
}

#include "include/w4a8_large.cuh"

extern "C" __global__ void __launch_bounds__(W4A8_THREADS, 2) w4a8_gemm_large(const signed char* xq, const float* sx, const unsigned char* wp, const unsigned* meta, float* y, int M, int N, int K, int G, int asym) {
    __shared__ __align__(16) signed char as[2][W4A8_LARGE_A];
    __shared__ __align__(16) unsigned char bs[2][W4A8_LARGE_B];
    __shared__ __align__(16) unsigned ms[2][W4A8_LARGE_S];
    const W4a8L q = w4a8_large_geo(M, N, K, G);
    float f[W4A8_LARGE_TILES][4] = {};
    if (G % 128 == 0) w4a8_large_loop<false>(as, bs, ms, xq, wp, meta, q, asym != 0, f);
    else w4a8_large_loop<true>(as, bs, ms, xq, wp, meta, q, asym != 0, f);
    if (q.active) w4a8_large_store(f, q, sx, y);
}
