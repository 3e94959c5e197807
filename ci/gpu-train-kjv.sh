#!/usr/bin/env bash
# The issue's real-corpus run on the GPU machine (carry gpu-bundle/ and .kjv/): `small` trained on
# the King James Bible for a fixed token budget by muse (CUDA), by the repo's PyTorch model and by a
# same-width GPT-style transformer (ci/baselines/torch_train_bench.py train), on the same GPT-2 BPE
# tokens (`muse train --export-tokens`), batches and held-out windows; then a sample from muse's
# weights. .kjv/kjv.txt comes from Debian's bible-kjv (`bible "Genesis 1:1-Revelation 22:21"`),
# .kjv/tokens/ from `muse train --config small --data .kjv/kjv.txt --steps 0 --export-tokens`.
# Writes $OUT/kjv-*.jsonl, $OUT/kjv-muse-loss.svg and logs/kjv-*.log.
# Usage: STEPS=1000 bash ci/gpu-train-kjv.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
S=${STEPS:-1000}
common=(--steps "$S" --batch 8 --seq 256 --lr 1e-3 --warmup 100 --seed 0 --eval-every 100 --eval-tokens 16384)
mkdir -p "$OUT" logs
[ -f gpu-bundle/bin.tar.xz ] && { tar xJf gpu-bundle/bin.tar.xz -C gpu-bundle && rm gpu-bundle/bin.tar.xz; }
M=gpu-bundle/bin/muse
t0=$(date +%s)
"$M" train --backend cuda --tf32 --config small --data .kjv/kjv.txt "${common[@]}" --save-every "$S" \
    --out logs/kjv-muse > logs/kjv-muse.log 2>&1
echo "muse rc=$? $(( $(date +%s) - t0 ))s"; tail -n 3 logs/kjv-muse.log
cp logs/kjv-muse/log.jsonl "$OUT/kjv-muse.jsonl"; cp logs/kjv-muse/loss.svg "$OUT/kjv-muse-loss.svg"
"$M" generate --weights logs/kjv-muse/weights.safetensors --prompt "And God said" --max-new-tokens 40 \
    --temperature 0.8 --top-k 40 --seed 1 > logs/kjv-sample.log 2>&1
"$M" generate --weights logs/kjv-muse/weights.safetensors --prompt "And God said" --max-new-tokens 40 \
    --temperature 0 >> logs/kjv-sample.log 2>&1
cat logs/kjv-sample.log
for model in phase8 gpt; do
    t0=$(date +%s)
    timeout "${TORCH_SECONDS:-300}" python3 ci/baselines/torch_train_bench.py train --tokens .kjv/tokens --model "$model" \
        "${common[@]}" --max-seconds "${TORCH_SECONDS:-300}" --out "$OUT/kjv-torch-$model.jsonl" > "logs/kjv-torch-$model.log" 2>&1
    echo "torch $model rc=$? $(( $(date +%s) - t0 ))s"; tail -n 1 "logs/kjv-torch-$model.log" | cut -c1-400
done
