#!/usr/bin/env bash
# Builds everything the GPU machine runs (it has no cargo) into gpu-bundle/ (git-ignored):
# the CUDA test binary, the `muse` binary with the cuda feature, and a manifest with the commit.
# Then: carry gpu-bundle and run `bash ci/gpu-run.sh` there.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/cuda-setup.sh
# shellcheck disable=SC1091
source .cache/cuda/env.sh
rm -rf gpu-bundle
mkdir -p gpu-bundle/bin
# bundle_test PACKAGE TARGET NAME: the integration-test binary TARGET of PACKAGE (built with
# `cuda`) as gpu-bundle/bin/NAME.
bundle_test() {
    local exe
    exe=$(cargo test -p "$1" --release --features cuda --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"] and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$2")
    [ -n "$exe" ] || { echo "gpu-bundle: no test binary $1/$2" >&2; exit 1; }
    cp "$exe" "gpu-bundle/bin/$3"
}
bundle_test muse main muse-tests
# The model's CUDA tests (crates/muse-model/tests/cuda.rs): they read $MUSE_FIXTURES.
bundle_test muse-model cuda muse-model-cuda-tests
# Training on the GPU (crates/muse-model/tests/cuda_train.rs).
bundle_test muse-model cuda_train muse-train-cuda-tests
# The VRAM study's GPU models (crates/muse-model/tests/cuda_vram.rs).
bundle_test muse-model cuda_vram muse-vram-cuda-tests
# The device memory pool under the model (crates/muse-model/tests/cuda_pool.rs).
bundle_test muse-model cuda_pool muse-pool-cuda-tests
# The training loop on the GPU (crates/muse-train/tests/train.rs, its `cuda_` tests).
bundle_test muse-train train muse-train-loop-tests
cargo build --release -p muse-cli --features cuda
cp target/release/muse gpu-bundle/bin/muse
# With MUSE_BUNDLE_CUBINS=1, the cubins too, for SASS inspection there (cuobjdump is on the GPU
# machine, not here; gpu-run's `sass` step).
if [ "${MUSE_BUNDLE_CUBINS:-0}" = 1 ]; then
    cubins=$(ls -td target/release/build/muse-cuda-*/out 2>/dev/null | while read -r d; do [ -f "$d/hyp_attn_tc.cubin" ] && echo "$d" && break; done)
    mkdir -p gpu-bundle/cubins
    [ -n "$cubins" ] && cp "$cubins"/*.cubin gpu-bundle/cubins/
fi
strip --strip-debug gpu-bundle/bin/*
# With MUSE_BUNDLE_SLIM=1, only muse, muse-tests and muse-model-cuda-tests travel (the steps tests,
# model, verify, roundtrip, sanitizer without the model/train/VRAM parts, bench): the tracked tree
# (~57 MB with the committed run logs) and the full bundle (~12 MB) exceed a device call's 64 MiB.
if [ "${MUSE_BUNDLE_SLIM:-0}" = 1 ]; then
    rm gpu-bundle/bin/muse-train-cuda-tests gpu-bundle/bin/muse-vram-cuda-tests \
        gpu-bundle/bin/muse-pool-cuda-tests gpu-bundle/bin/muse-train-loop-tests
fi
sha=$(git rev-parse --short=12 HEAD)
[ -z "$(git status --porcelain --untracked-files=no)" ] || sha="$sha-dirty"
cat > gpu-bundle/manifest.json <<JSON
{"commit": "$sha", "nvcc": "$(grep -o 'release [0-9.]*' <("$NVCC" --version))", "arch": "${MUSE_CUDA_ARCH:-sm_90}",
 "glibc": "$(ldd --version | head -1 | awk '{print $NF}')", "built": "$(date -u +%FT%TZ)"}
JSON
# The binaries travel xz-compressed (the cubins inside them compress about 5×): the tracked tree
# and the bundle share the device call's 64 MiB. gpu-run.sh unpacks them.
tar cf - -C gpu-bundle bin | xz -6 -T0 > gpu-bundle/bin.tar.xz && rm -r gpu-bundle/bin
size=$(du -sm gpu-bundle | cut -f1)
[ "$size" -le 20 ] || { echo "gpu-bundle: ${size} MiB exceeds 20 MiB" >&2; exit 1; }
echo "gpu-bundle: ${size} MiB, commit $sha"
