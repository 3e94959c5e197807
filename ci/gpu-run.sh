#!/usr/bin/env bash
# Runs on the GPU machine (carry gpu-bundle/): the CUDA tests, `muse verify --backend cuda`, the
# `muse bk-core` and `muse attention` round trips, the PyTorch baselines, compute-sanitizer, and
# `muse bench --backend cuda`. Writes reports and a log tarball to $OUT (at most 8 files come
# back). Never changes clocks or resets the GPU.
#
# STEPS (comma-separated, default all): tests, model (the model's CUDA tests), train_tests (training
# on the GPU: gradients vs PyTorch autograd and the CPU reference, AdamW steps), vram_tests (the
# VRAM study's two GPU models against the CPU reference's gradients), pool_tests (the model's
# forward and training step through the device pool, crates/muse-model/tests/cuda_pool.rs), verify, roundtrip,
# torch (BK-Core baselines), torch_hyp (hyperbolic baselines), torch_model (the model in PyTorch:
# agreement with muse and the throughput protocol), torch_train (ci/baselines/torch_train_bench.py),
# torch_vram (its `vram` mode: the VRAM study in PyTorch, $OUT/torch_vram.json),
# sanitizer, sass (cuobjdump of the cubins into
# logs/), profile (per-kernel times of one small and one medium forward, ci/gpu-profile.sh), bench.
# TORCH_JSON / TORCH_HYP_JSON / TORCH_MODEL_JSON / TORCH_TRAIN_JSON name the baselines of an earlier call to use instead
# of running the script. The tests step runs the `::cuda` halves (CI
# runs the CPU ones).
# BENCH_FAMILIES (comma-separated stems) restricts `muse bench`; SANITIZER_FILTER the cases run
# under compute-sanitizer.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
STEPS=${STEPS:-tests,model,train_tests,vram_tests,pool_tests,verify,roundtrip,torch,torch_hyp,torch_model,torch_train,torch_vram,sanitizer,sass,profile,bench}
mkdir -p "$OUT" logs
# gpu-bundle.sh ships the binaries as bin.tar.xz.
[ -f gpu-bundle/bin.tar.xz ] && { tar xJf gpu-bundle/bin.tar.xz -C gpu-bundle && rm gpu-bundle/bin.tar.xz; }
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
want() { [[ ",$STEPS," == *",$1,"* ]]; }
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader; uname -a; ldd --version | head -1;
  ldd gpu-bundle/bin/muse | grep libcuda; cat gpu-bundle/manifest.json; } > logs/env.txt 2>&1
cat logs/env.txt
M=gpu-bundle/bin/muse
want tests && step tests timeout 420 gpu-bundle/bin/muse-tests --test-threads=1 ::cuda
want model && MUSE_FIXTURES=$PWD/fixtures step model timeout 300 gpu-bundle/bin/muse-model-cuda-tests --test-threads=1 --nocapture
if want train_tests; then
    MUSE_FIXTURES=$PWD/fixtures step train-tests timeout 300 gpu-bundle/bin/muse-train-cuda-tests --test-threads=1 --nocapture
    MUSE_FIXTURES=$PWD/fixtures step train-loop timeout 300 gpu-bundle/bin/muse-train-loop-tests --test-threads=1 --nocapture cuda_
fi
want vram_tests && step vram-tests timeout 300 gpu-bundle/bin/muse-vram-cuda-tests --test-threads=1 --nocapture
want pool_tests && MUSE_FIXTURES=$PWD/fixtures step pool-tests timeout 300 gpu-bundle/bin/muse-pool-cuda-tests --test-threads=1 --nocapture
want verify && step verify timeout 300 "$M" verify --backend cuda --out "$OUT"
if want roundtrip; then
    step bk-core bash ci/gpu-roundtrip.sh bk-core "$M"
    step attention bash ci/gpu-roundtrip.sh attention "$M"
fi
want torch && step torch timeout 240 python3 ci/baselines/torch_bk_core.py --out "$OUT/torch.json"
want torch_hyp && step torch-hyp timeout 240 python3 ci/baselines/torch_hyp.py --out "$OUT/torch_hyp.json"
if want torch_model; then
    # muse's CUDA logits of the numpy-oracle inputs, for the PyTorch implementation to compare with.
    for p in exact bench bench-cpu; do
        "$M" model run --backend cuda --profile "$p" --config fixtures/model/oracle/config.json \
            --weights fixtures/model/oracle/weights.safetensors --ids fixtures/model/oracle/ids.npy \
            --out "logs/muse-oracle/$p" > "logs/muse-oracle-$p.log" 2>&1
    done
    step torch-model timeout "${TORCH_MODEL_TIMEOUT:-300}" python3 ci/baselines/torch_model.py \
        --check fixtures/model --muse logs/muse-oracle --bench --max-seconds "${TORCH_MODEL_SECONDS:-240}" \
        --out "$OUT/torch_model.json"
fi
if want torch_train; then
    # The PyTorch training baselines (ci/baselines/torch_train_bench.py), merged into one file.
    # TORCH_TRAIN_MODES: space-separated "mode:impl[:extra args]" runs (default: the KPI point
    # eager and compiled, the O(N) sweep eager).
    modes=${TORCH_TRAIN_MODES:-"kpi:eager kpi:compile:--cases=bf16,bf16+ckpt sweep:eager"}
    i=0
    for m in $modes; do
        IFS=: read -r mode impl extra <<< "$m"
        i=$((i + 1))
        step "torch-train-$i-$mode-$impl" timeout "${TORCH_TRAIN_TIMEOUT:-300}" python3 ci/baselines/torch_train_bench.py \
            "$mode" --impl "$impl" ${extra:+"$extra"} --max-seconds "${TORCH_TRAIN_SECONDS:-240}" --out "logs/torch-train-$i.json"
    done
    python3 -c 'import glob, json, sys, torch
recs = [r for f in sorted(glob.glob("logs/torch-train-*.json")) for r in json.load(open(f))]
json.dump({"torch": torch.__version__, "records": recs}, open(sys.argv[1], "w"), indent=1)' "$OUT/torch_train.json"
fi
want torch_vram && step torch-vram timeout 300 python3 ci/baselines/torch_train_bench.py vram --out "$OUT/torch_vram.json"
[ -n "${TORCH_TRAIN_JSON:-}" ] && cp "$TORCH_TRAIN_JSON" logs/torch_train_earlier.json
[ -n "${TORCH_JSON:-}" ] && cp "$TORCH_JSON" logs/torch_earlier.json
[ -n "${TORCH_HYP_JSON:-}" ] && cp "$TORCH_HYP_JSON" logs/torch_hyp_earlier.json
[ -n "${TORCH_MODEL_JSON:-}" ] && cp "$TORCH_MODEL_JSON" logs/torch_model_earlier.json
if want sass && [ -d gpu-bundle/cubins ]; then
    mkdir -p logs/sass
    for c in gpu-bundle/cubins/*.cubin; do
        cuobjdump --dump-sass "$c" > "logs/sass/$(basename "$c" .cubin).sass" 2>&1
    done
    status sass 0 0
fi
# SANITIZER_LOGS: a folder with memcheck.log / racecheck.log of an earlier call (for a bench-only call).
SAN=${SANITIZER_LOGS:-logs/sanitizer}
mkdir -p "$SAN"
if want sanitizer; then
    filter=${SANITIZER_FILTER:-n2,n4096_random,long/benchmark_b1_n65536,poincare/ball_c0.693_d64,small_causal,d96_causal,window16_dv48,masked_rows,decode_n1_m513,lm_window64,gen/none_b1h2_n200_m333_d128_dv128,hyp_ln/exp0_r7_d256,hyp_ln/clip_r16_d256,lin_attn/causal_b2h2_n37_d16_dv24,lin_attn/causal_b1h2_n130_d64,hyp_dist/tangent_c2_d96,hyp_dist/ball_c0.693_d200,model/oracle/forward,model/parity/logits_cuda,kv4/int4_B2H3D64_n30_q4_causal,kv4/fp16_B1H8D64_ring64_n138_window64,kv4/int4_radial_B2H2D64_n299_q2_causal}
    for tool in memcheck racecheck; do
        step "$tool" timeout 240 compute-sanitizer --tool "$tool" --error-exitcode 3 \
            "$M" verify --backend cuda --out "logs/san-$tool" --filter "$filter"
        # The model's CUDA tests (graph replay, bf16 GEMMs, side branch) under the same tool; small
        # B1 N256 is left out for time (the verify cases above run the same kernels on tiny).
        # SANITIZER_SKIP_MODEL=1 leaves them out (kernels unchanged since SANITIZER_APPEND's logs).
        [ "${SANITIZER_SKIP_MODEL:-0}" = 1 ] || MUSE_FIXTURES=$PWD/fixtures step "$tool-model" timeout 200 compute-sanitizer --tool "$tool" \
            --error-exitcode 3 gpu-bundle/bin/muse-model-cuda-tests --test-threads=1 --skip small_at_batch_1
        touch "logs/$tool-model.log"
        # The training kernels (backward, cross-entropy, AdamW) through their GPU tests
        # (SANITIZER_SKIP_TRAIN=1 leaves them out, as SANITIZER_SKIP_MODEL).
        touch "logs/$tool-train.log"
        [ "${SANITIZER_SKIP_TRAIN:-0}" = 1 ] || MUSE_FIXTURES=$PWD/fixtures step "$tool-train" timeout 200 compute-sanitizer --tool "$tool" \
            --error-exitcode 3 gpu-bundle/bin/muse-train-cuda-tests --test-threads=1
        # The inference kernels (KV cache, INT8 distance, W4A8, sparse attention) through their GPU tests.
        MUSE_FIXTURES=$PWD/fixtures step "$tool-infer" timeout 240 compute-sanitizer --tool "$tool" \
            --error-exitcode 3 gpu-bundle/bin/muse-tests --test-threads=1 kv4::gpu hyp_int8::gpu w4a8::gpu sparse_attn::gpu
        # The VRAM study's models (kernels/vram.cu and the model kernels they reuse) through their GPU tests.
        touch "logs/$tool-vram.log"
        [ "${SANITIZER_SKIP_VRAM:-0}" = 1 ] || step "$tool-vram" timeout 200 compute-sanitizer --tool "$tool" \
            --error-exitcode 3 gpu-bundle/bin/muse-vram-cuda-tests --test-threads=1
        # SANITIZER_APPEND: a folder with an earlier call's logs of kernels unchanged since then.
        cat "logs/$tool.log" "logs/$tool-model.log" "logs/$tool-train.log" "logs/$tool-infer.log" "logs/$tool-vram.log" ${SANITIZER_APPEND:+"$SANITIZER_APPEND/$tool.log"} > "$SAN/$tool.log"
    done
fi
if want profile; then
    step profile-small bash ci/gpu-profile.sh small 8 256 --tf32
    step profile-medium bash ci/gpu-profile.sh medium 4 512 --tf32
fi
if want bench; then
    bench_args=(bench --backend cuda --out "$OUT" --sanitizer-dir "$SAN")
    for f in "$OUT/torch.json" logs/torch_earlier.json "$OUT/torch_hyp.json" logs/torch_hyp_earlier.json "$OUT/torch_model.json" \
        logs/torch_model_earlier.json "$OUT/torch_train.json" logs/torch_train_earlier.json; do
        [ -s "$f" ] && bench_args+=(--torch-baseline "$f")
    done
    [ -n "${BENCH_FAMILIES:-}" ] && bench_args+=(--family "$BENCH_FAMILIES")
    step bench timeout 400 "$M" "${bench_args[@]}"
fi
tar czf "$OUT/logs.tgz" logs
# At most 8 files come back from the GPU machine: everything but the reports the gate reads and the
# logs goes into extra.tgz (per-family plots, original/ sections, PyTorch JSON); gpu-accept.sh unpacks it.
(cd "$OUT" && extra=$(ls | grep -v -E '^(verification-cuda\.(json|md)|kpi-cuda\.(json|md|svg)|logs\.tgz|extra\.tgz)$') &&
    [ -n "$extra" ] && tar czf extra.tgz $extra && rm -rf $extra)
cat logs/summary.txt
