#!/usr/bin/env bash
# Every kernel name the Rust launchers use (generated kernels.rs) must be an unmangled FUNC symbol
# of its compiled cubin (readelf), so a renamed or C++-mangled kernel fails CI, not the GPU run.
# Run after a `--features cuda` build without ci-check.
set -euo pipefail
cd "$(dirname "$0")/.."
found=0
for gen in target/*/build/muse-cuda-*/out/kernels.rs; do
    [ -f "$gen" ] || continue
    out=$(dirname "$gen")
    for cubin in "$out"/*.cubin; do
        [ -s "$cubin" ] || { echo "check-kernel-symbols: $cubin is empty (ci-check build?)" >&2; exit 1; }
        stem=$(basename "$cubin" .cubin)
        symbols=$(readelf -Ws "$cubin" | awk '$4 == "FUNC" && $5 == "GLOBAL" {print $NF}')
        names=$(awk -v m="pub mod $stem " 'index($0, m) == 1 {p=1; next} p && /^}/ {p=0} p && /pub const [A-Z0-9_]+: &str/ {gsub(/[";]/, "", $NF); print $NF}' "$gen")
        [ -n "$names" ] || { echo "check-kernel-symbols: no kernel names for $stem in $gen" >&2; exit 1; }
        for name in $names; do
            grep -qx "$name" <<<"$symbols" || { echo "check-kernel-symbols: $name missing from $cubin" >&2; exit 1; }
            found=$((found + 1))
        done
    done
done
[ "$found" -gt 0 ] || { echo "check-kernel-symbols: no cuda build found under target/" >&2; exit 1; }
echo "check-kernel-symbols: $found kernels present"
