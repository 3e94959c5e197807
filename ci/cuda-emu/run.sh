#!/usr/bin/env bash
# Host emulation of the hyperbolic kernels (hyp_ln, hyp_dist, lin_attn), the KV cache (kv4.cpp), INT8 distance (int8.cpp), the W4A8 GEMMs, small and large M (w4a8.cpp), the sparse-attention selection (sparse.cpp), the LSH selection and index attention (lsh.cpp) and of the model's window
# attention and AR-SSM scan (model.cpp): the .cu files compiled as
# C++ against emu.h (one std::thread per CUDA thread, __syncthreads = block barrier, warp shuffles
# through a warp barrier, __shared__ = static storage, blocks run one after another), driven with
# the launch sequences of crates/muse-cuda/src/{hyp_ln*,hyp_dist,lin_attn*}.rs and checked against
# plain double (long double) references written in each driver. No GPU, no nvcc: it checks the
# kernels' indexing, tiling, masking and reductions; not alignment faults, races that the
# barriers hide, or the hardware's approximate functions (__logf runs as logf here).
# Usage: bash ci/cuda-emu/run.sh   (needs g++ >= 11 for C++20 <barrier>)
set -euo pipefail
cd "$(dirname "$0")"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for t in ln dist lin model kv4 int8 w4a8 sparse lsh; do
    g++ -std=c++20 -O1 -pthread -w -o "$out/$t" "$t.cpp"
    "$out/$t"
done
