#!/usr/bin/env bash
# Runs on the GPU machine (carry gpu-bundle/): the CUDA tests, `muse verify --backend cuda`, the
# PyTorch baselines, compute-sanitizer, and `muse bench --backend cuda`. Writes reports and a log
# tarball to $OUT (at most 8 files come back). Never changes clocks or resets the GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT" logs
export MUSE_GIT_COMMIT MUSE_REQUIRE_GPU=1
MUSE_GIT_COMMIT=$(python3 -c 'import json; print(json.load(open("gpu-bundle/manifest.json"))["commit"])')
status() { printf '%s rc=%s %ss\n' "$1" "$2" "$3" | tee -a logs/summary.txt; }
step() { # name, command...
    local name=$1 t0 rc; shift
    t0=$(date +%s)
    "$@" > "logs/$name.log" 2>&1; rc=$?
    status "$name" "$rc" "$(( $(date +%s) - t0 ))"
    tail -n 25 "logs/$name.log"
}
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; uname -a; ldd --version | head -1;
  ldd gpu-bundle/bin/muse | grep libcuda; cat gpu-bundle/manifest.json; } > logs/env.txt 2>&1
cat logs/env.txt
M=gpu-bundle/bin/muse
step tests timeout 300 gpu-bundle/bin/muse-tests --test-threads=1
step verify timeout 300 "$M" verify --backend cuda --out "$OUT"
# `muse bk-core --backend cuda` round trip: same .npy inputs on both backends, outputs compared.
bkcore() {
    python3 - <<'PY' || return 1
import numpy as np, os
r = np.random.default_rng(7); os.makedirs("logs/bk", exist_ok=True)
np.save("logs/bk/a.npy", r.standard_normal((4, 3000)).astype(np.float32))
np.save("logs/bk/b.npy", r.standard_normal((4, 2999)))
np.save("logs/bk/c.npy", r.standard_normal((4, 2999)))
PY
    for be in cpu cuda; do for p in f32 f64; do
        "$M" bk-core --backend $be --precision $p --a logs/bk/a.npy --b logs/bk/b.npy --c logs/bk/c.npy \
            --z-re 0.1 --z-im 0.2 --out logs/bk/$be-$p || return 1
    done; done
    python3 - <<'PY'
import numpy as np
for p, tol in [("f32", 1e-4), ("f64", 1e-12)]:
    g = {be: np.load(f"logs/bk/{be}-{p}/g_re.npy") + 1j * np.load(f"logs/bk/{be}-{p}/g_im.npy") for be in ("cpu", "cuda")}
    err = np.abs(g["cuda"] - g["cpu"]) / np.maximum(1, np.abs(g["cpu"]))
    print(f"bk-core {p}: cuda vs cpu max rel err {err.max():.3e} (limit {tol})"); assert err.max() < tol
PY
}
step bk-core bkcore
step torch timeout 240 python3 ci/baselines/torch_bk_core.py --out "$OUT/torch.json"
SAN=logs/sanitizer
mkdir -p "$SAN"
for tool in memcheck racecheck; do
    step "$tool" timeout 240 compute-sanitizer --tool "$tool" --error-exitcode 3 \
        "$M" verify --backend cuda --out "logs/san-$tool" --filter "${SANITIZER_FILTER:-n2,n4096_random,long/benchmark_b1_n65536}"
    cp "logs/$tool.log" "$SAN/$tool.log"
done
bench_args=(bench --backend cuda --out "$OUT" --sanitizer-dir "$SAN")
[ -s "$OUT/torch.json" ] && bench_args+=(--torch-baseline "$OUT/torch.json")
step bench timeout 300 "$M" "${bench_args[@]}"
tar czf "$OUT/logs.tgz" logs
cat logs/summary.txt
