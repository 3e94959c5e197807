#!/usr/bin/env bash
# Per-kernel GPU time of one model forward (GPU machine, carry gpu-bundle/): seeded weights, ids
# (B, N), `muse model run --backend cuda` under nsys (or ncu when nsys is missing); the kernel
# summary goes to logs/profile-<config>-B<b>N<n>.txt (gpu-run.sh tars logs/).
# Usage: bash ci/gpu-profile.sh CONFIG B N [extra `muse model run` flags, e.g. --tf32]
set -uo pipefail
cd "$(dirname "$0")/.."
cfg=$1 b=$2 n=$3; shift 3
M=gpu-bundle/bin/muse tmp=$(mktemp -d) out="logs/profile-$cfg-B${b}N$n.txt"
mkdir -p logs
"$M" model init --config "$cfg" --seed 1 --out "$tmp/w.safetensors" > /dev/null
python3 -c "import numpy as np; np.save('$tmp/ids.npy', (np.arange($b*$n).reshape($b,$n)*7919 % 50257).astype(np.int64))"
run=("$M" model run --config "$cfg" --weights "$tmp/w.safetensors" --ids "$tmp/ids.npy" --out "$tmp/o" --backend cuda "$@")
if command -v nsys > /dev/null; then
    nsys profile -o "$tmp/p" --force-overwrite true "${run[@]}" > "$tmp/run.log" 2>&1
    nsys stats --report cuda_gpu_kern_sum --format csv "$tmp/p.nsys-rep" > "$out" 2>&1
elif command -v ncu > /dev/null; then
    ncu --metrics gpu__time_duration.sum --csv "${run[@]}" > "$out" 2>&1
else
    echo "neither nsys nor ncu on this machine" > "$out"
fi
tail -n 3 "$tmp/run.log" 2>/dev/null >> "$out"
echo "profile: $out ($(wc -l < "$out") lines)"
