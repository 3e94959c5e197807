#!/usr/bin/env bash
# The inference quantisations' held-out perplexity change with a trained checkpoint (issue 10):
# `small` trained on the King James Bible on the GPU machine (the run of ci/gpu-train-kjv.sh), then
# `muse eval` on that machine's CPU cores (the CPU model, profile `exact`): the KV-cache codecs
# against the fp16 cache and the W4A8 / INT8-logit paths against f32, one process per comparison,
# in parallel, all on the same held-out windows. Carry gpu-bundle/ and .kjv/ (kjv.txt only).
# Writes $OUT/kjv-eval.tgz (each comparison's eval.json/.md and log) and $OUT/kjv-muse.jsonl.
# Usage: STEPS=800 EVAL_TOKENS=16384 QUANT=w4a8,int8-logits bash ci/gpu-eval-kjv.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
S=${STEPS:-800}
E=${EVAL_TOKENS:-16384}
mkdir -p "$OUT" logs
[ -f gpu-bundle/bin.tar.xz ] && { tar xJf gpu-bundle/bin.tar.xz -C gpu-bundle && rm gpu-bundle/bin.tar.xz; }
M=gpu-bundle/bin/muse
t0=$(date +%s)
"$M" train --backend cuda --tf32 --config small --data .kjv/kjv.txt --steps "$S" --batch 8 --seq 256 \
    --lr 1e-3 --warmup 100 --seed 0 --eval-every 100 --eval-tokens 16384 --save-every "$S" \
    --out logs/kjv-muse > logs/kjv-muse.log 2>&1
echo "train rc=$? $(( $(date +%s) - t0 ))s"; tail -n 2 logs/kjv-muse.log | cut -c1-300
cp logs/kjv-muse/log.jsonl "$OUT/kjv-muse.jsonl"
W=logs/kjv-muse/weights.safetensors
common=(eval --weights "$W" --data .kjv/kjv.txt --seq 256 --batch 4 --eval-tokens "$E")
t0=$(date +%s)
pids=()
for kv in f32,fp16 fp16,int4 fp16,int4-radial; do
    name=kv-${kv//,/-}
    timeout "${EVAL_SECONDS:-400}" "$M" "${common[@]}" --kv-cache "$kv" --out "logs/eval-$name" > "logs/kjv-eval-$name.log" 2>&1 &
    pids+=($!)
done
# one process per quantisation (each with its own f32 baseline on the same windows)
for qn in ${QUANT//,/ }; do
    timeout "${EVAL_SECONDS:-400}" "$M" "${common[@]}" --kv-cache f32 --quant "$qn" --out "logs/eval-quant-$qn" > "logs/kjv-eval-quant-$qn.log" 2>&1 &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; echo "eval pid $p rc=$?"; done
echo "eval $(( $(date +%s) - t0 ))s"
for d in logs/eval-*; do
    n=${d#logs/eval-}
    tail -n 12 "logs/kjv-eval-$n.log" | cut -c1-300
    [ -f "$d/eval.md" ] && cat "$d/eval.md"
done
# At most 8 files come back: the eval reports and logs travel as one tarball.
tar czf "$OUT/kjv-eval.tgz" logs/eval-* logs/kjv-*.log
