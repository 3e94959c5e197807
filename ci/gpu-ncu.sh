#!/usr/bin/env bash
# Hardware counters of the Phase 8 inference kernels (GPU machine, carry gpu-bundle/): Nsight
# Compute on a few launches of each kernel inside `muse bench --family F` (the bench's own shapes,
# first ones first), with the clocks left alone. Metrics: time, L2 hit rate of all sector reads
# (lts__t_sector_hit_rate.pct: design §7's K/V reuse measure), DRAM and SM throughput, registers.
# Writes logs/ncu-<family>.csv (gpu-run.sh's tarball carries logs/).
# Usage: bash ci/gpu-ncu.sh [FAMILY:KERNEL_REGEX:LAUNCHES ...]
set -uo pipefail
cd "$(dirname "$0")/.."
[ -f gpu-bundle/bin.tar.xz ] && { tar xJf gpu-bundle/bin.tar.xz -C gpu-bundle && rm gpu-bundle/bin.tar.xz; }
M=gpu-bundle/bin/muse
mkdir -p logs
metrics=gpu__time_duration.sum,lts__t_sector_hit_rate.pct,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,launch__registers_per_thread,launch__grid_size
specs=${*:-"sparse_attn:hyp_attn_tc_fwd_d64:2 sparse_attn:sparse:6 kv4:kv4_decode:8 w4a8:w4a8:6"}
for spec in $specs; do
    IFS=: read -r fam re count <<< "$spec"
    t0=$(date +%s)
    timeout 150 ncu --clock-control none --metrics "$metrics" --csv -k "regex:$re" --launch-count "$count" \
        "$M" bench --backend cuda --family "$fam" --runs 100 --out "logs/ncu-bench-$fam" \
        > "logs/ncu-$fam-$re.csv" 2> "logs/ncu-$fam-$re.err"
    echo "ncu $fam/$re rc=$? $(( $(date +%s) - t0 ))s"
    grep -E '"(gpu__time_duration.sum|lts__t_sector_hit_rate.pct|dram__throughput.avg.pct_of_peak_sustained_elapsed)"' \
        "logs/ncu-$fam-$re.csv" | awk -F'","' '{print $5, $(NF-2), $NF}' | cut -c1-160 | head -n 30
done
