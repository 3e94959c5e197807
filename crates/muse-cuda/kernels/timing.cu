// The timing protocol's floor (launcher: ../src/timing.rs `launch_floor`): one CTA of 32 threads
// in which lane 0 copies 16 bytes. Timed like every kernel (events, L2 flushed before each
// repeat), it is the least a launch that reads and writes memory costs; a ratio whose two sides
// both sit near it cannot exceed baseline / floor.
extern "C" __global__ void timing_touch(const uint4* src, uint4* dst) {
    if (threadIdx.x == 0) dst[0] = src[0];
}
