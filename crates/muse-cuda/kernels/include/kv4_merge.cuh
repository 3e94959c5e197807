// The split merge of the decode kernels (included by ../kv4.cu after warp_max_f / warp_sum_f).
#define KV4_MERGE_GROUPS 4

// Warp 0 folds the CTA's warps' (m, l, acc) (shared memory, acc row stride LD) into the split's
// partial (m, l, acc[0..D)) by log-sum-exp; a warp without keys has m = -inf and weighs 0.
template <int LD>
__device__ __forceinline__ void kv4_write_split(long long row, int D, const float* sh_m, const float* sh_l,
                                                const float (*sh_acc)[LD], float* __restrict__ part_m,
                                                float* __restrict__ part_l, float* __restrict__ part_acc) {
    if (threadIdx.x >= 32) return;
    const int lane = threadIdx.x;
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

// Every CTA of a query row has written its split's (m, l, acc); the last one to count itself in
// merges them into o and lse (FlashDecoding's reduction without a second launch, the
// threadFenceReduction pattern) and sets the row's counter back to 0 for the next launch. A
// separate merge kernel cost ~10 us per decode on the H200, most of a short context's time.
// Called by every thread of the CTA.
__device__ void kv4_merge_if_last(long long row, int D, const float* __restrict__ part_m,
                                  const float* __restrict__ part_l, const float* __restrict__ part_acc,
                                  unsigned* __restrict__ done, float* __restrict__ o, float* __restrict__ lse) {
    __shared__ int sh_last;
    __shared__ float sh_gm, sh_gl;
    const int splits = (int)gridDim.y, lane = threadIdx.x & 31;
    __threadfence();  // this CTA's partials reach L2 before its count does
    __syncthreads();
    if (threadIdx.x == 0) {
        const int last = atomicAdd(done + row, 1u) == (unsigned)splits - 1;
        if (last) done[row] = 0;  // no other CTA of this row is left to count
        sh_last = last;
    }
    __syncthreads();
    if (!sh_last) return;
    __threadfence();
    const long long base = row * splits;
    if (threadIdx.x < 32) {  // m and l over the splits a lane each
        float gm = -INFINITY;
        for (int j = lane; j < splits; j += 32) gm = fmaxf(gm, __ldcg(part_m + base + j));
        gm = warp_max_f(gm);
        float gl = 0.0f;
        for (int j = lane; j < splits; j += 32) {
            const float mj = __ldcg(part_m + base + j);
            gl += mj == -INFINITY ? 0.0f : __ldcg(part_l + base + j) * __expf(mj - gm);
        }
        gl = warp_sum_f(gl);
        if (lane == 0) {
            sh_gm = gm;
            sh_gl = gl;
            lse[row] = gl > 0.0f ? gm + logf(gl) : -INFINITY;
        }
    }
    __syncthreads();
    // o: `groups` threads per element, each summing every groups-th split with its loads unrolled
    // (several L2 reads in flight; one thread per element walking the splits one load at a time
    // cost ~7 us at 64 splits on the H200), then added up in shared memory.
    const float gm = sh_gm, gl = sh_gl;
    const int groups = min(KV4_MERGE_GROUPS, max(1, (int)blockDim.x / D));  // uniform per CTA
    __shared__ float sh_part[KV4_MERGE_GROUPS][32 * KV4_CAP];
    if (groups == 1) {
        for (int e = threadIdx.x; e < D; e += blockDim.x) {
            float x = 0.0f;
#pragma unroll 8
            for (int j = 0; j < splits; ++j) {
                const float mj = __ldcg(part_m + base + j);
                if (mj != -INFINITY) x += __ldcg(part_acc + (base + j) * D + e) * __expf(mj - gm);
            }
            o[row * D + e] = gl > 0.0f ? x / gl : 0.0f;
        }
        return;
    }
    const int e = threadIdx.x % D, grp = threadIdx.x / D;
    if (grp < groups) {
        float x = 0.0f;
#pragma unroll 8
        for (int j = grp; j < splits; j += groups) {
            const float mj = __ldcg(part_m + base + j);
            if (mj != -INFINITY) x += __ldcg(part_acc + (base + j) * D + e) * __expf(mj - gm);
        }
        sh_part[grp][e] = x;
    }
    __syncthreads();
    if (threadIdx.x < D) {
        float x = 0.0f;
        for (int g = 0; g < groups; ++g) x += sh_part[g][threadIdx.x];
        o[row * D + threadIdx.x] = gl > 0.0f ? x / gl : 0.0f;
    }
}
