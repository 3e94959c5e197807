#!/usr/bin/env python3
"""PyTorch baselines for BK-Core on the GPU, timed with CUDA events in the same run as `muse bench
--backend cuda`. This is muse's own code, written from the design (shared/design/bk-core.md), not
the original's:

- mode_a_loop: the original's "vmap" reference algorithm (design §5.2, HEAD variant: 1e-3 mass,
  tanh soft clamps, phi index quirk, clip at 50), a Python loop over N, batched over B, complex128.
  This is the original's only correct-in-spirit path (2.7 s at B16 N4096 on an H100).
- ratio_loop: the exact sequential ratio recursion (design §3.2) as a Python loop over N, batched
  over B, complex64: the fairest per-step PyTorch implementation of the right maths.
- dense_inverse: torch.linalg.inv of the dense (B, N, N) complex128 matrix, diagonal taken; small N.

Writes {"torch", "device", "records": [{"impl", "B", "N", "dtype", "median_ms", "runs", ...}]}.
"""
import argparse
import json
import math

import torch


def inputs(batch, n, device):
    g = torch.Generator(device="cpu").manual_seed(42)
    a = torch.randn(batch, n, generator=g, dtype=torch.float64)
    b = torch.randn(batch, n - 1, generator=g, dtype=torch.float64)
    c = torch.randn(batch, n - 1, generator=g, dtype=torch.float64)
    return a.to(device), b.to(device), c.to(device), complex(0.1, 0.1)


def mode_a_loop(a, b, c, z):
    a, b, c = a.to(torch.complex128), b.to(torch.complex128), c.to(torch.complex128)
    batch, n = a.shape
    alpha = a - z
    mag = alpha.abs()
    alpha = torch.where(mag < 1e-12, alpha + 1e-3, alpha + 1e-3 * alpha / (mag + 1e-12))
    k = b * c

    def wall(x):
        return 88.0 * torch.tanh(x / 88.0)

    t = [torch.ones(batch, dtype=torch.complex128, device=a.device)]
    l = [torch.zeros(batch, dtype=torch.float64, device=a.device)]
    sigma = alpha[:, 0].abs() + 1e-20
    t.append(alpha[:, 0] / sigma)
    l.append(torch.log(sigma))
    for i in range(1, n):
        w = torch.exp(wall(l[i - 1] - l[i]))
        v = alpha[:, i] * t[i] - k[:, i - 1] * t[i - 1] * w
        sigma = v.abs() + 1e-20
        t.append(v / sigma)
        l.append(l[i] + torch.log(sigma))
    tp = [None] * n
    lp = [None] * n
    tp[n - 1] = torch.ones(batch, dtype=torch.complex128, device=a.device)
    lp[n - 1] = torch.zeros(batch, dtype=torch.float64, device=a.device)
    if n > 1:
        sigma = alpha[:, n - 1].abs() + 1e-20
        tp[n - 2] = alpha[:, n - 1] / sigma
        lp[n - 2] = torch.log(sigma)
    for i in range(n - 3, -1, -1):
        w = torch.exp(wall(lp[i + 2] - lp[i + 1]))
        v = alpha[:, i + 1] * tp[i + 1] - k[:, i] * tp[i + 2] * w
        sigma = v.abs() + 1e-20
        tp[i] = v / sigma
        lp[i] = lp[i + 1] + torch.log(sigma)
    t_all, l_all = torch.stack(t[:n], 1), torch.stack(l[:n], 1)
    tp_all, lp_all = torch.stack(tp, 1), torch.stack(lp, 1)
    lam = wall(l_all + lp_all - l[n][:, None])
    g = t_all * tp_all / (t[n][:, None] + 1e-18) * torch.exp(lam)
    g = torch.where(torch.isfinite(g), g, torch.zeros_like(g))
    m = g.abs()
    g = torch.where(m > 50, g * 50 / (m + 1e-9), g)
    return g.to(torch.complex64)


def ratio_loop(a, b, c, z):
    alpha = a.to(torch.float32) - torch.tensor(z, dtype=torch.complex64)
    alpha = alpha.to(a.device)
    k = (b * c).to(torch.float32)
    batch, n = alpha.shape
    r = [alpha[:, 0]]
    for i in range(1, n):
        r.append(alpha[:, i] - k[:, i - 1] / r[i - 1])
    s = [None] * n
    s[n - 1] = alpha[:, n - 1]
    for i in range(n - 2, -1, -1):
        s[i] = alpha[:, i] - k[:, i] / s[i + 1]
    r_all, s_all = torch.stack(r, 1), torch.stack(s, 1)
    d = alpha.clone()
    d[:, 1:] -= k / r_all[:, :-1]
    d[:, :-1] -= k / s_all[:, 1:]
    return 1 / d


def dense_inverse(a, b, c, z):
    batch, n = a.shape
    m = torch.diag_embed(a.to(torch.complex128) - z)
    m = m + torch.diag_embed(b.to(torch.complex128), offset=1) + torch.diag_embed(c.to(torch.complex128), offset=-1)
    return torch.diagonal(torch.linalg.inv(m), dim1=1, dim2=2)


def time_ms(fn, runs, warmup=1):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2], times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--loop-runs", type=int, default=3)
    ap.add_argument("--dense-runs", type=int, default=10)
    args = ap.parse_args()
    dev = torch.device("cuda")
    shapes = [(16, 4096), (1, 4096), (16, 512), (64, 4096)]
    records = []
    for batch, n in shapes:
        a, b, c, z = inputs(batch, n, dev)
        ref = dense_inverse(a, b, c, z) if batch * n * n <= 16 * 4096 * 4096 else None
        for name, fn, dtype, runs in [
            ("mode_a_loop", mode_a_loop, "complex128", args.loop_runs),
            ("ratio_loop", ratio_loop, "complex64", args.loop_runs),
            ("dense_inverse", dense_inverse, "complex128", args.dense_runs),
        ]:
            if name == "dense_inverse" and ref is None:
                continue
            med, times = time_ms(lambda: fn(a, b, c, z), runs)
            rec = {"impl": name, "B": batch, "N": n, "dtype": dtype, "median_ms": med, "runs": runs,
                   "min_ms": times[0], "max_ms": times[-1]}
            if ref is not None:
                out = fn(a, b, c, z).to(torch.complex128)
                rec["max_abs_err_vs_dense"] = float((out - ref).abs().max())
            records.append(rec)
            print(f"{name:14s} B{batch:<3d} N{n:<5d} {med:10.3f} ms (runs {runs})", flush=True)
    json.dump({"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "records": records},
              open(args.out, "w"), indent=2)


if __name__ == "__main__":
    main()
