#!/usr/bin/env bash
# Takes the files a GPU run brought back (ci/gpu-run.sh, fetched to DIR) into the repository:
# the committed GPU reports become the baselines the CI gate compares with (the previous committed
# report; on the first run, the new one), the new reports go to reports/, and the raw files of the
# run to reports/runs/<utc-date>-<commit>/. Then it runs the gates CI runs.
# Usage: bash ci/gpu-accept.sh DIR
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:?usage: bash ci/gpu-accept.sh DIR (the files ci/gpu-run.sh wrote to \$OUT)}
for f in verification-cuda.json verification-cuda.md kpi-cuda.json kpi-cuda.md kpi-cuda.svg; do
    [ -f "$dir/$f" ] || { echo "gpu-accept: $dir/$f is missing" >&2; exit 1; }
done
# gpu-run.sh packs everything but the gated reports and the logs into extra.tgz.
[ -f "$dir/extra.tgz" ] && tar xzf "$dir/extra.tgz" -C "$dir"
mkdir -p reports/baselines
for stem in verification-cuda kpi-cuda; do
    if [ -f "reports/$stem.json" ]; then
        cp "reports/$stem.json" "reports/baselines/$stem.json"
    else
        cp "$dir/$stem.json" "reports/baselines/$stem.json"
    fi
    cp "$dir/$stem.json" "$dir/$stem.md" reports/
done
cp "$dir"/kpi-cuda*.svg reports/
commit=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["commit"])' "$dir/kpi-cuda.json")
run="reports/runs/$(date -u +%Y-%m-%d)-$commit"
mkdir -p "$run"
[ -d "$dir/original" ] && mkdir -p reports/original && cp "$dir"/original/* reports/original/
for f in torch.json torch_hyp.json torch_model.json torch_train.json torch_vram.json logs.tgz; do
    [ -f "$dir/$f" ] && cp "$dir/$f" "$run/"
done
echo "gpu-accept: reports/ updated, raw files in $run"
cargo run --release -q -p muse-cli -- gate --baseline reports/baselines/kpi-cuda.json \
    --current reports/kpi-cuda.json --max-slowdown 0.10 --kernel-sources crates/muse-cuda/kernels \
    --retire time_median_schedule_occupancy4 `# the D = 64 occupancy-4 schedule, dropped in 4d9144f` \
    --retire launch_floor/cuda/w4a8_quant_x_1x128 `# the first launch floor, not a floor (runs/2026-12-02-2efd91e7e4e1)`
cargo run --release -q -p muse-cli -- gate --baseline reports/baselines/verification-cuda.json \
    --current reports/verification-cuda.json --kernel-sources crates/muse-cuda/kernels
