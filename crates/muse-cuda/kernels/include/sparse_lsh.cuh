// Device helpers of the LSH selection and the index attention in ../sparse_attn.cu (design
// hyperbolic.md §6, selection B): the law-of-cosines z of one (query, key) pair, acosh1p, and the
// warp-level top-k of a candidate buffer (radix select on a unique 64-bit key, then an in-place
// compaction) and the bitonic sort of the survivors by key index. Needs SPARSE_ATTN_* and
// sp_bf16 / sp_warp_sum from the including file.
#pragma once

// The row terms of the codes kernel, per q or k row: {|x|, 1/|x| (0 for x = 0), a = min(s|x|, 15),
// sinh 2a}. z = 2 sinh^2(a - b) + sinh 2a sinh 2b (1 - cos), 1 - cos as |q^ - k^|^2 / 2 (1 when
// either row is 0), so cosh(s d) = 1 + z. qh = q^ in f32 (shared memory), kr the key's bf16 row.
__device__ __forceinline__ float sp_lsh_z(const float* qh, float4 tq, const unsigned short* kr, float4 tk, int dim) {
    float omc = 1.0f;
    if (tq.x > 0.0f && tk.x > 0.0f) {
        float dd = 0.0f;
        if ((dim & 7) == 0) {  // rows start at 16-byte multiples (row * dim * 2 bytes)
            for (int e = 0; e < dim; e += 8) {
                const uint4 u = __ldg(reinterpret_cast<const uint4*>(kr + e));
                const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
                for (int h = 0; h < 4; ++h) {
                    const float x0 = __fmaf_rn(-__uint_as_float(w[h] << 16), tk.y, qh[e + 2 * h]);
                    const float x1 = __fmaf_rn(-__uint_as_float(w[h] & 0xffff0000u), tk.y, qh[e + 2 * h + 1]);
                    dd = __fmaf_rn(x1, x1, __fmaf_rn(x0, x0, dd));
                }
            }
        } else {
            for (int e = 0; e < dim; ++e) {
                const float x = __fmaf_rn(-sp_bf16(kr[e]), tk.y, qh[e]);
                dd = __fmaf_rn(x, x, dd);
            }
        }
        omc = fminf(0.5f * dd, 2.0f);
    }
    const float sh = sinhf(tq.z - tk.z);
    return fmaxf(__fmaf_rn(2.0f * sh, sh, __fmul_rn(__fmul_rn(tq.w, tk.w), omc)), 0.0f);
}

// acosh(1 + z) for z >= 0, as reference/src/poincare/scalar.rs: ln 2 + ln1p(z) past 1e18 (where
// z (z + 2) would overflow f32).
__device__ __forceinline__ float sp_acosh1p(float z) {
    return z > 1e18f ? 0.69314718f + log1pf(z) : log1pf(z + sqrtf(z * (z + 2.0f)));
}

// The selection order as one unique unsigned 64-bit key, larger = better: the high word ranks
// by z (smaller z = higher score -d; z >= 0, so its bits order as unsigned), the low word by
// the key index (the lower index wins ties). zk holds ~bits(z).
__device__ __forceinline__ unsigned sp_zkey(float z) { return ~(__float_as_uint(z) & 0x7fffffffu); }
__device__ __forceinline__ unsigned long long sp_key(unsigned zk, int j) {
    return ((unsigned long long)zk << 32) | (unsigned long long)(~(unsigned)j);
}

// Keeps the k best of the cnt > k entries (zk, cj) of one warp's buffer, in place (buffer order
// kept among the survivors); returns k. The threshold is the k-th largest key, found 8 bits at a
// time from the top (a 256-bin shared histogram per pass; it stops early once the threshold's
// bin holds exactly the entries still needed). Keys are unique (each candidate once), so exactly
// k entries are at or above it. Every lane calls it with the same cnt and k.
__device__ int sp_lsh_prune(unsigned* zk, int* cj, unsigned* hist, int cnt, int k, int lane) {
    unsigned long long prefix = 0ull;
    unsigned need = (unsigned)k;
    for (int shift = 56; shift >= 0; shift -= 8) {
        for (int b = lane; b < 256; b += 32) hist[b] = 0u;
        __syncwarp();
        const unsigned long long high = shift == 56 ? 0ull : ~0ull << (shift + 8);
        for (int p = lane; p < cnt; p += 32) {
            const unsigned long long key = sp_key(zk[p], cj[p]);
            if ((key & high) == prefix) atomicAdd(&hist[(unsigned)(key >> shift) & 255u], 1u);
        }
        __syncwarp();
        // lane l owns bins 255 - 8l down to 248 - 8l: counts in descending key order
        unsigned own = 0u;
#pragma unroll
        for (int r = 0; r < 8; ++r) own += hist[255 - 8 * lane - r];
        unsigned incl = own;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const unsigned x = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += x;
        }
        const unsigned excl = incl - own;
        const bool mine = excl < need && need <= incl;
        int digit = 0;
        unsigned left = 0u, inbin = 0u;
        if (mine) {
            unsigned acc = excl;
            for (int r = 0; r < 8; ++r) {
                const int b = 255 - 8 * lane - r;
                if (acc + hist[b] >= need) { digit = b; left = need - acc; inbin = hist[b]; break; }
                acc += hist[b];
            }
        }
        const int src = __ffs(__ballot_sync(0xffffffffu, mine)) - 1;
        digit = __shfl_sync(0xffffffffu, digit, src);
        left = __shfl_sync(0xffffffffu, left, src);
        inbin = __shfl_sync(0xffffffffu, inbin, src);
        prefix |= (unsigned long long)digit << shift;
        need = left;
        __syncwarp();
        if (inbin == need) break;  // the whole bin is taken: every key >= prefix (low bits 0)
    }
    int kept = 0;
    for (int p0 = 0; p0 < cnt; p0 += 32) {
        const int p = p0 + lane;
        unsigned zv = 0u;
        int jv = 0;
        bool keep = false;
        if (p < cnt) {
            zv = zk[p];
            jv = cj[p];
            keep = sp_key(zv, jv) >= prefix;
        }
        const unsigned m = __ballot_sync(0xffffffffu, keep);
        __syncwarp();  // every lane has read its entry: the writes go to [kept, kept + 32) <= p0 + 32
        if (keep) {
            const int at = kept + __popc(m & ((1u << lane) - 1u));
            zk[at] = zv;
            cj[at] = jv;
        }
        kept += __popc(m);
        __syncwarp();
    }
    return kept;
}

// Sorts cj[0, cnt) ascending (cnt <= the buffer; pads to a power of two with INT_MAX).
__device__ void sp_lsh_sort(int* cj, int cnt, int lane) {
    int size = 1;
    while (size < cnt) size <<= 1;
    for (int p = cnt + lane; p < size; p += 32) cj[p] = 0x7fffffff;
    __syncwarp();
    for (int kk = 2; kk <= size; kk <<= 1)
        for (int jj = kk >> 1; jj > 0; jj >>= 1) {
            for (int x = lane; x < size; x += 32) {
                const int y = x ^ jj;
                if (y > x) {
                    const int a = cj[x], b = cj[y];
                    if ((a > b) == ((x & kk) == 0)) { cj[x] = b; cj[y] = a; }
                }
            }
            __syncwarp();
        }
}
