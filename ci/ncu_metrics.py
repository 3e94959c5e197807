#!/usr/bin/env python3
"""One Markdown row per profiled launch of `ncu --metrics ... --csv` logs (ci/gpu-ncu.sh): kernel,
block, grid, and each metric's value with its unit. Usage: python3 ci/ncu_metrics.py LOG... > OUT.md"""
import csv
import sys
from collections import OrderedDict

print("| log | launch | kernel | block | grid | metric | value | unit |")
print("|---|---|---|---|---|---|---|---|")
for path in sys.argv[1:]:
    lines = [l for l in open(path, errors="replace") if l.startswith('"')]
    rows = OrderedDict()
    for r in csv.DictReader(lines):
        key = r["ID"]
        rows.setdefault(key, []).append(r)
    for key, rs in rows.items():
        for r in rs:
            print(f"| {path.split('/')[-1]} | {key} | {r['Kernel Name'].split('(')[0]} | {r['Block Size']} | {r['Grid Size']} "
                  f"| {r['Metric Name']} | {r['Metric Value']} | {r['Metric Unit']} |")
