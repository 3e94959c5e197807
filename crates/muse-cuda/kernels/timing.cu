// The timing protocol's floor (launcher: ../src/timing.rs `launch_floor`): one CTA of 32 threads
// in which lane 0 copies 16 bytes. Timed like every kernel (events, L2 flushed before each
// repeat), it is the least a launch that reads and writes memory costs; a ratio whose two sides
// both sit near it cannot exceed baseline / floor.
extern "C" __global__ void timing_touch(const uint4* src, uint4* dst) {
    if (threadIdx.x == 0) dst[0] = src[0];
}

// The read flush (MUSE_TIMING_FLUSH=read, ../src/timing.rs): every thread reads 16-byte words of
// src in a grid-stride loop, so L2 ends up full of clean lines of src (the memset flush leaves it
// full of dirty ones, whose write-back lands on the timed kernel). The xor of the words goes to
// sink only if it equals a value no real data gives, so the loads stay.
extern "C" __global__ void timing_read_flush(const uint4* src, long long n16, unsigned* sink) {
    unsigned acc = 0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n16; i += (long long)gridDim.x * blockDim.x) {
        const uint4 v = src[i];
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x9E3779B9u) sink[0] = acc;
}
