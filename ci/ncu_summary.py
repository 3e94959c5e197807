#!/usr/bin/env python3
"""Per-kernel totals of an `ncu --metrics gpu__time_duration.sum --csv` log: kernel, launches,
total µs, share, sorted by total. Usage: python3 ci/ncu_summary.py LOG [TOP]"""
import csv
import sys
from collections import defaultdict

scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3, "second": 1e6, "s": 1e6}
units = set()
tot, cnt = defaultdict(float), defaultdict(int)
lines = [l for l in open(sys.argv[1], errors="replace") if l.startswith('"')]
for r in csv.DictReader(lines):
    if r.get("Metric Name") != "gpu__time_duration.sum":
        continue
    name = r["Kernel Name"].split("(")[0][:70]
    units.add(r["Metric Unit"])
    tot[name] += float(r["Metric Value"].replace(",", "")) * scale.get(r["Metric Unit"], float("nan"))
    cnt[name] += 1
all_us = sum(tot.values()) or 1.0
print(f"{'kernel':70} {'launches':>8} {'total_us':>10} {'share':>6}")
for k in sorted(tot, key=tot.get, reverse=True)[: int(sys.argv[2]) if len(sys.argv) > 2 else 40]:
    print(f"{k:70} {cnt[k]:8d} {tot[k]:10.1f} {100 * tot[k] / all_us:5.1f}%")
print(f"{'all':70} {sum(cnt.values()):8d} {all_us:10.1f}")
print(f"units seen: {sorted(units)}")
