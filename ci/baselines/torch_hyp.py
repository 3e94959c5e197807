#!/usr/bin/env python3
"""PyTorch baselines for muse's hyperbolic (Poincaré-ball) kernels, timed with CUDA events on the same
GPU and in the same run as `muse bench --backend cuda`, whose report puts them side by side with muse's
kernels. This is muse's own code, written from the design (shared/design/hyperbolic.md), not the
original's.

Baselines (impl / kernel names are what the Rust bench matches on):

1. sdpa: Euclidean causal SDPA, bf16, layout (B, H, N, D), B8 H8, D in {64, 128}, N = M in
   {1024, 4096, 16384}, with a forced backend (torch.nn.attention.sdpa_kernel):
   impl `sdpa_flash` (FLASH_ATTENTION) and `sdpa_cudnn` (CUDNN_ATTENTION), kernels `attn_fwd` and
   `attn_fwd_bwd`. The roofline muse's hyperbolic attention is measured against (design §3.3: the
   hyperbolic kernel is MUFU-bound at about 1/3 of SDPA).
2. window: the language model's hot shape (design §3.1): causal attention inside 64-token windows
   with no cross-window context, B8 H8 D64, N in {256, 1024, 4096}, as SDPA flash (bf16, causal) on
   inputs laid out as (B*N/64, H, 64, D): impl `sdpa_flash_window64`, kernels `attn_fwd` and
   `attn_fwd_bwd`, with `tokens_per_s` = B*N / median (acceptance (e) of design §3.7).
3. dense: hyperbolic attention that materialises the N x M scores, as the original's exact path does
   (the reference of acceptance (b), design §3.7): impl `torch_dense_hyp`, f32, causal,
   score = -beta * d_c(exp0 q, exp0 k) with d from the law of cosines of design §2.3
   (a = min(s|q|, 15), b = min(s|k|, 15), C = <q/|q|, k/|k|>,
   z = 2 sinh^2(a - b) + sinh(2a) sinh(2b) (1 - C), d = log1p(z + sqrt(z (z + 2))) / s, s = sqrt(c)),
   c = beta = 0.693 (softplus(0), the layer's init), masked_fill(-inf) + softmax + matmul with v.
   Kernels `attn_fwd` and `attn_fwd_bwd` (autograd) at B8 H8, D in {64, 128}, N in {1024, 4096};
   `attn_fwd` at D64 N16384 is attempted too (each N x M f32 matrix is 68.7 GB there: an OOM is
   expected and recorded as an error). `peak_bytes` shows the O(N^2) memory.
   impl `torch_dense_hyp_compiled`: the same function under torch.compile (default mode), forward at
   N4096 D64 only; it runs last of all (compile time is not timed but recorded as `compile_s`) and
   is skipped when fewer than 45 s are left before --max-seconds.
4. ln: fused LayerNorm + exp0 projection (design §5) in eager PyTorch: impl `torch_ln_exp0`, kernels
   `ln_exp0_fwd` and `ln_exp0_fwd_bwd`, f32, x (R, D), D in {64, 256, 1024}, R = 2^26 / D (256 MiB),
   gamma = 1/sqrt(D) (design §5 pitfall), beta_ln = 0, eps 1e-5. `bytes_moved` = 2*R*D*4 for the
   forward (one read, one write: the fused kernel's minimum) and 5*R*D*4 for forward + backward
   (x, dy read and dx written in the backward), `gb_per_s` = bytes_moved / median.
   impl `torch_copy`, kernel `d2d_copy`: dst.copy_(src) of 1 GiB f32, `gb_per_s` = 2*bytes / median:
   the bandwidth the §5 target (>= 80 % of copy) is relative to.
5. lin: causal tangent-space linear attention (design §9), phi = elu + 1, chunked (C = 64: masked
   (phiQ phiK^T) V inside a chunk, plus the state S = sum phiK^T V and z = sum phiK of the earlier
   chunks from exclusive cumulative sums of per-chunk states), o = phiQ S / max(phiQ . z, 1e-6), f32,
   B1 H8 d64 dv64, N in {1024, 4096, 16384, 65536}: impl `torch_lin_attn_chunked`, kernels
   `lin_attn_fwd` and `lin_attn_fwd_bwd`. Each record carries `max_abs_err_vs_quadratic`: the f32
   chunked output vs the explicit quadratic masked form in f64, checked once at N = 512.
6. dist: pairwise distance matrices, f32, (B, H, N, D) inputs: impl `torch_cdist`, kernel `cdist`
   (torch.cdist, Euclidean, on (B*H, N, D)), and impl `torch_dense_hyp_dist`, kernel `hyp_dist` (the
   §2.3 law-of-cosines matrix, the reference for design §7), at B8 H8 N=M=1024 D64 and B1 H8
   N=M=4096 D64 and D128. hyp_dist records carry `max_rel_err_vs_ball_f64`: this script's f32
   law-of-cosines distance against the f64 ball (acosh) form on exp0 points, a self-check.

Inputs: torch.manual_seed(0) before each case. Hyperbolic q, k (and every other "tangent" input) are
randn / (s * sqrt(D)), so s|q| ~ 1 (a ~ 1, well inside A_MAX = 15, z small, no f32 overflow); v and
the output gradients are randn. SDPA inputs use the same scale (the values do not change its speed).

Timing (design §15 / the workspace's rules): inputs are made before timing; >= 3 warm-ups; a 256 MiB
buffer is written before each repetition to flush L2; a pair of CUDA events brackets each repetition;
the number of repetitions is budget / (one call), at least 20 and at most 200; median, p20 and p80
(linear interpolation), min and max are reported. Between repetitions there is no host sync, and a
GPU spin (torch.cuda._sleep, 1.5x the host's enqueue time of one call + 20 us, at most 5 ms) is
queued after the flush and before the start event, so the events measure GPU time (as a CUDA-graph
replay would) and not Python/autograd launch gaps. `host_ms`, the host time to enqueue one call (best
of the warm-ups after the first and, for calls under 20 ms, of 3 more), is recorded next to it so
that host-bound cases stay visible (eager end-to-end time is about max(median_ms, host_ms));
--no-hide-launch drops the spin. peak_bytes = max_memory_allocated() over one call, after
reset_peak_memory_stats(), minus the bytes allocated before it: what the op needs beyond its inputs
(outputs and gradients included). Forward-only calls run under torch.no_grad(); forward + backward
uses torch.autograd.grad(out, inputs, grad), which is out.backward(grad) without accumulating into
.grad. `pairs` counts the visible (query, key) pairs (causal: N(N+1)/2 per (b, h); window:
N/64 * 64*65/2), and `pairs_per_s` = pairs / median.

Failures (OOM, a missing SDPA backend, a compile error) become a record with "error" and null
timings; the script goes on. The JSON (written again, atomically, after each record, so a timeout
keeps partial results; `run.complete` is true only at the end) is
{"torch": {"version", "cuda", "cudnn", "device", "triton", ...}, "run": {...}, "records": [
  {"impl", "kernel", "B", "H", "N", "M", "D", "Dv", "dtype", "median_ms", "p20_ms", "p80_ms", "runs",
   "peak_bytes", "error"?, ...extra}]}.
Fields that do not apply are null (M, Dv for LN; D, M, Dv for the copy; Dv for distances).
Cases that would start after --max-seconds (default 150) are recorded as skipped errors.

Usage: python3 ci/baselines/torch_hyp.py --out FILE [--smoke] [--sections sdpa,window,dense,ln,lin,dist]
--smoke uses tiny shapes and runs on the CPU when there is no GPU, to exercise the logic anywhere.
"""
import argparse
import gc
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

SECTIONS = ("sdpa", "window", "dense", "ln", "lin", "dist")
CURV = 0.693  # c = softplus(0), the layer's init (design §3.1)
BETA = 0.693
A_MAX = 15.0
WINDOW = 64
LIN_CHUNK = 64


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The maths under test (design §2.3, §3.1, §5, §9)


def row_terms(x, s):
    """Per-row radial term a = min(s|x|, A_MAX) with shape (..., N, 1) and the unit direction."""
    r = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    a = torch.clamp(s * r, max=A_MAX)
    u = x / torch.clamp(r, min=1e-30)
    return a, u


def hyp_dist(q, k, c):
    """d_c(exp0 q_i, exp0 k_j) for tangent q (..., N, D), k (..., M, D), from the law of cosines."""
    s = math.sqrt(c)
    a, uq = row_terms(q, s)
    b, uk = row_terms(k, s)
    b = b.transpose(-1, -2)
    cos = uq @ uk.transpose(-1, -2)
    z = 2 * torch.sinh(a - b).square() + (torch.sinh(2 * a) * torch.sinh(2 * b)) * (1 - cos)
    z = torch.clamp(z, min=0)
    return torch.log1p(z + torch.sqrt(z * (z + 2))) / s


def dense_hyp_attn(q, k, v, mask, c=CURV, beta=BETA):
    """Materialised hyperbolic attention: softmax(-beta d, masked) @ v, V stays tangent."""
    scores = -beta * hyp_dist(q, k, c)
    scores = scores.masked_fill(mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def ball_dist_f64(q, k, c):
    """Reference: the ball (acosh) distance on exp0 points, in float64 (design §2.1)."""
    q, k = q.double(), k.double()
    s = math.sqrt(c)

    def exp0(v):
        r = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
        return torch.tanh(s * r) / (s * r) * v

    x, y = exp0(q), exp0(k)
    nx = (x * x).sum(-1, keepdim=True)
    ny = (y * y).sum(-1, keepdim=True).transpose(-1, -2)
    diff2 = torch.clamp(nx + ny - 2 * (x @ y.transpose(-1, -2)), min=0)
    z = 2 * c * diff2 / ((1 - c * nx) * (1 - c * ny))
    return torch.log1p(z + torch.sqrt(z * (z + 2))) / s


def ln_exp0(x, gamma, beta_ln, c=CURV, eps=1e-5):
    """LayerNorm over the last axis, then exp0 (tanh t / t, t = s|y|, 1 - t^2/3 below 1e-3)."""
    s = math.sqrt(c)
    y = F.layer_norm(x, (x.shape[-1],), gamma, beta_ln, eps)
    t = s * torch.linalg.vector_norm(y, dim=-1, keepdim=True)
    tc = torch.clamp(t, min=1e-3)
    scale = torch.where(t < 1e-3, 1 - t * t / 3, torch.tanh(torch.clamp(tc, max=A_MAX)) / tc)
    return y * scale


def lin_attn_chunked(q, k, v, tril, chunk=LIN_CHUNK):
    """Causal linear attention, phi = elu + 1, in chunks: intra-chunk masked quadratic form plus the
    state of the earlier chunks (exclusive cumulative sums of the per-chunk states)."""
    bsz, heads, n, d = q.shape
    dv = v.shape[-1]
    nc = n // chunk
    fq = (F.elu(q) + 1).reshape(bsz, heads, nc, chunk, d)
    fk = (F.elu(k) + 1).reshape(bsz, heads, nc, chunk, d)
    vc = v.reshape(bsz, heads, nc, chunk, dv)
    att = (fq @ fk.transpose(-1, -2)) * tril  # (B, H, nc, C, C), lower triangle incl. diagonal
    num = att @ vc
    den = att.sum(-1, keepdim=True)
    s_cum = torch.cumsum(fk.transpose(-1, -2) @ vc, dim=2)  # (B, H, nc, d, dv), inclusive
    z_cum = torch.cumsum(fk.sum(-2), dim=2)  # (B, H, nc, d)
    s_prev = torch.cat([torch.zeros_like(s_cum[:, :, :1]), s_cum[:, :, :-1]], dim=2)
    z_prev = torch.cat([torch.zeros_like(z_cum[:, :, :1]), z_cum[:, :, :-1]], dim=2)
    num = num + fq @ s_prev
    den = den + fq @ z_prev.unsqueeze(-1)
    return (num / torch.clamp(den, min=1e-6)).reshape(bsz, heads, n, dv)


def lin_attn_quadratic(q, k, v):
    """The explicit causal form: o_i = sum_{j<=i} (phi q_i . phi k_j) v_j / max(sum_{j<=i} ..., 1e-6)."""
    fq, fk = F.elu(q) + 1, F.elu(k) + 1
    n = q.shape[-2]
    att = fq @ fk.transpose(-1, -2)
    att = att.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), 0)
    return (att @ v) / torch.clamp(att.sum(-1, keepdim=True), min=1e-6)


# ---------------------------------------------------------------------------------------------
# Harness


def quantile(sorted_vals, p):
    if not sorted_vals:
        return None
    x = p * (len(sorted_vals) - 1)
    lo = int(math.floor(x))
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (x - lo)


def clean(obj):
    """Non-finite floats become null so that the file is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


def free_memory(dev):
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


class Ctx:
    def __init__(self, args, dev):
        self.args, self.dev, self.smoke = args, dev, args.smoke
        self.t0 = time.monotonic()
        self.records = []
        self.cuda = dev.type == "cuda"
        # Timing knobs: the GPU protocol, or a quick pass for --smoke.
        if self.smoke:
            self.warmup, self.min_runs, self.max_runs, self.budget_ms = 3, 3, 5, 50.0
        else:
            self.warmup, self.min_runs, self.max_runs, self.budget_ms = 3, 20, 200, args.budget_ms
        flush_bytes = (8 << 20) if self.smoke else (256 << 20)
        self.flush_buf = torch.empty(flush_bytes // 4, dtype=torch.int32, device=dev)
        self.meta = meta(dev)
        self.sleep_cycles_per_ms = self.calibrate_sleep()
        self.run_meta = {
            "argv": sys.argv[1:], "smoke": self.smoke, "sections": args.sections, "seed": 0,
            "c": CURV, "beta": BETA, "a_max": A_MAX, "warmup": self.warmup, "min_runs": self.min_runs,
            "max_runs": self.max_runs, "budget_ms": self.budget_ms, "flush_bytes": flush_bytes,
            "max_seconds": args.max_seconds, "sleep_cycles_per_ms": self.sleep_cycles_per_ms,
            "complete": False, "elapsed_s": 0.0,
        }

    def elapsed(self):
        return time.monotonic() - self.t0

    def write(self, complete=False):
        self.run_meta["complete"] = complete
        self.run_meta["elapsed_s"] = round(self.elapsed(), 2)
        doc = clean({"torch": self.meta, "run": self.run_meta, "records": self.records})
        tmp = self.args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1, allow_nan=False)
        os.replace(tmp, self.args.out)

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def flush(self):
        self.flush_buf.zero_()

    def time_once(self, fn):
        self.flush()
        if self.cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            return a.elapsed_time(b)
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3

    def calibrate_sleep(self):
        """GPU clock cycles per millisecond of torch.cuda._sleep, or None where it is unavailable."""
        if not self.cuda or self.args.no_hide_launch:
            return None
        try:
            for _ in range(2):  # the first one pays the launch
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                torch.cuda._sleep(1_000_000)
                b.record()
                b.synchronize()
            return 1_000_000 / max(a.elapsed_time(b), 1e-3)
        except Exception as e:
            log(f"torch.cuda._sleep unavailable ({e}); host launch time is not hidden")
            return None

    def bench(self, fn):
        host = []
        for _ in range(self.warmup - 1):
            self.sync()
            t = time.perf_counter()
            fn()
            host.append((time.perf_counter() - t) * 1e3)
        est = self.time_once(fn)  # the last warm-up, timed, sets the number of repetitions
        for _ in range(3 if est < 20 else 0):  # more host samples where they are cheap
            self.sync()
            t = time.perf_counter()
            fn()
            host.append((time.perf_counter() - t) * 1e3)
        host_ms = min(host[1:] or host) if host else None
        runs = int(min(self.max_runs, max(self.min_runs, self.budget_ms / max(est, 1e-3))))
        times = []
        sleep = 0
        if self.cuda:
            if self.sleep_cycles_per_ms and host_ms is not None:
                # Keep the GPU busy for longer than the host takes to enqueue fn, so that the events
                # see GPU time and not Python/autograd launch gaps.
                sleep = int(self.sleep_cycles_per_ms * min(1.5 * host_ms + 0.02, 5.0))
            ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(runs)]
            self.sync()
            for a, b in ev:
                self.flush()
                if sleep:
                    torch.cuda._sleep(sleep)
                a.record()
                fn()
                b.record()
            self.sync()
            times = [a.elapsed_time(b) for a, b in ev]
        else:
            for _ in range(runs):
                times.append(self.time_once(fn))
        times.sort()
        return {"median_ms": quantile(times, 0.5), "p20_ms": quantile(times, 0.2),
                "p80_ms": quantile(times, 0.8), "min_ms": times[0], "max_ms": times[-1],
                "runs": runs, "host_ms": host_ms, "launch_hidden": bool(sleep)}

    def peak(self, fn):
        if not self.cuda:
            return None
        free_memory(self.dev)
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)

    def case(self, base, setup, need_s=0.0):
        """base: the record's identity; setup() -> (fn, extra) builds the inputs (untimed). The case
        is skipped when fewer than need_s seconds are left before --max-seconds."""
        rec = {"impl": None, "kernel": None, "B": None, "H": None, "N": None, "M": None, "D": None,
               "Dv": None, "dtype": None}
        rec.update(base)
        rec.update({"median_ms": None, "p20_ms": None, "p80_ms": None, "runs": 0, "peak_bytes": None})
        label = (f"{rec['impl']:26s} {rec['kernel']:16s} B{rec['B']} H{rec['H']} N{rec['N']} "
                 f"D{rec['D']} {rec['dtype']}")
        if self.elapsed() + need_s > self.args.max_seconds:
            rec["error"] = (f"skipped: {self.elapsed():.1f} s elapsed, {need_s:.0f} s needed, "
                            f"--max-seconds {self.args.max_seconds:g}")
            log(f"[{self.elapsed():6.1f}s] {label}: {rec['error']}")
            self.records.append(rec)
            self.write()
            return rec
        fn = None
        try:
            torch.manual_seed(0)
            fn, extra = setup()
            rec.update(extra)
            rec.update(self.bench(fn))
            rec["peak_bytes"] = self.peak(fn)
            med_s = rec["median_ms"] / 1e3
            for key in ("tokens", "pairs"):
                if rec.get(key):
                    rec[f"{key}_per_s"] = rec[key] / med_s
            if rec.get("bytes_moved"):
                rec["gb_per_s"] = rec["bytes_moved"] / med_s / 1e9
            log(f"[{self.elapsed():6.1f}s] {label}: {rec['median_ms']:.4f} ms "
                f"(p20 {rec['p20_ms']:.4f}, p80 {rec['p80_ms']:.4f}, runs {rec['runs']}, "
                f"peak {rec['peak_bytes']})")
        except Exception as e:  # OOM, missing backend, compile failure: record and go on
            msg = f"{type(e).__name__}: {e}".strip()
            rec["error"] = msg[:600]
            for k in ("median_ms", "p20_ms", "p80_ms", "min_ms", "max_ms", "host_ms"):
                rec[k] = None
            rec["runs"] = 0
            log(f"[{self.elapsed():6.1f}s] {label}: ERROR {msg.splitlines()[0][:300] if msg else ''}")
        fn = None
        free_memory(self.dev)
        self.records.append(rec)
        self.write()
        return rec


def meta(dev):
    try:
        import triton

        triton_version = triton.__version__
    except Exception:
        triton_version = None
    m = {"version": torch.__version__, "cuda": torch.version.cuda,
         "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
         "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
         "triton": triton_version, "float32_matmul_precision": torch.get_float32_matmul_precision()}
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        m.update({"capability": f"{p.major}.{p.minor}", "total_memory_bytes": int(p.total_memory),
                  "sm_count": p.multi_processor_count})
    return m


def tangent(shape, d, dev, dtype=torch.float32):
    """Tangent vectors with s|x| ~ 1: randn / (s sqrt(D))."""
    x = torch.randn(*shape, device=dev, dtype=torch.float32) / (math.sqrt(CURV) * math.sqrt(d))
    return x.to(dtype)


def causal_pairs(n):
    return n * (n + 1) // 2


def fwd_or_bwd(forward, inputs, kernel_bwd, grad):
    """The timed callable: forward under no_grad, or forward + autograd.grad w.r.t. inputs."""
    if not kernel_bwd:
        def fn():
            with torch.no_grad():
                forward()
        return fn

    def fn():
        out = forward()
        torch.autograd.grad(out, inputs, grad)
    return fn


# ---------------------------------------------------------------------------------------------
# Sections


def sec_sdpa(ctx):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dev = ctx.dev
    if ctx.smoke:
        bsz, heads, ds, ns = 1, 2, (16, 32), (64, 128)
    else:
        bsz, heads, ds, ns = 8, 8, (64, 128), (1024, 4096, 16384)
    backends = [("sdpa_flash", SDPBackend.FLASH_ATTENTION), ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION)]
    for d in ds:
        for n in ns:
            for impl, backend in backends:
                for kernel in ("attn_fwd", "attn_fwd_bwd"):
                    bwd = kernel == "attn_fwd_bwd"

                    def setup(d=d, n=n, backend=backend, bwd=bwd):
                        q, k = (tangent((bsz, heads, n, d), d, dev, torch.bfloat16) for _ in range(2))
                        v = torch.randn(bsz, heads, n, d, device=dev, dtype=torch.bfloat16)
                        if bwd:
                            for t in (q, k, v):
                                t.requires_grad_(True)
                        grad = torch.randn(bsz, heads, n, d, device=dev, dtype=torch.bfloat16)

                        def forward():
                            with sdpa_kernel([backend]):
                                return F.scaled_dot_product_attention(q, k, v, is_causal=True)

                        return fwd_or_bwd(forward, (q, k, v), bwd, grad), {
                            "causal": True, "layout": "BHND", "tokens": bsz * n,
                            "pairs": bsz * heads * causal_pairs(n)}

                    ctx.case({"impl": impl, "kernel": kernel, "B": bsz, "H": heads, "N": n, "M": n,
                              "D": d, "Dv": d, "dtype": "bf16"}, setup)


def sec_window(ctx):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dev = ctx.dev
    bsz, heads, d, w = (1, 2, 16, WINDOW) if ctx.smoke else (8, 8, 64, WINDOW)
    ns = (128, 256) if ctx.smoke else (256, 1024, 4096)
    for n in ns:
        for kernel in ("attn_fwd", "attn_fwd_bwd"):
            bwd = kernel == "attn_fwd_bwd"

            def setup(n=n, bwd=bwd):
                shape = (bsz * n // w, heads, w, d)  # the (B, H, N, D) tensor cut into its windows
                q, k = (tangent(shape, d, dev, torch.bfloat16) for _ in range(2))
                v = torch.randn(*shape, device=dev, dtype=torch.bfloat16)
                if bwd:
                    for t in (q, k, v):
                        t.requires_grad_(True)
                grad = torch.randn(*shape, device=dev, dtype=torch.bfloat16)

                def forward():
                    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

                return fwd_or_bwd(forward, (q, k, v), bwd, grad), {
                    "causal": True, "window": w, "layout": "(B*N/64, H, 64, D)", "tokens": bsz * n,
                    "pairs": bsz * heads * (n // w) * causal_pairs(w)}

            ctx.case({"impl": "sdpa_flash_window64", "kernel": kernel, "B": bsz, "H": heads, "N": n,
                      "M": n, "D": d, "Dv": d, "dtype": "bf16"}, setup)


def dense_setup(ctx, bsz, heads, n, d, bwd, fn_impl=dense_hyp_attn):
    dev = ctx.dev
    q, k = tangent((bsz, heads, n, d), d, dev), tangent((bsz, heads, n, d), d, dev)
    v = torch.randn(bsz, heads, n, d, device=dev)
    mask = torch.ones(n, n, dtype=torch.bool, device=dev).triu(1)  # j > i is masked (N = M)
    if bwd:
        for t in (q, k, v):
            t.requires_grad_(True)
    grad = torch.randn(bsz, heads, n, d, device=dev) if bwd else None
    extra = {"causal": True, "c": CURV, "beta": BETA, "tokens": bsz * n,
             "pairs": bsz * heads * causal_pairs(n), "score_matrix_bytes": bsz * heads * n * n * 4}
    return fwd_or_bwd(lambda: fn_impl(q, k, v, mask), (q, k, v), bwd, grad), extra


def sec_dense(ctx):
    if ctx.smoke:
        bsz, heads, ds, ns, big = 1, 2, (16, 32), (64, 128), 256
    else:
        bsz, heads, ds, ns, big = 8, 8, (64, 128), (1024, 4096), 16384
    for d in ds:
        for n in ns:
            for kernel in ("attn_fwd", "attn_fwd_bwd"):
                bwd = kernel == "attn_fwd_bwd"
                ctx.case({"impl": "torch_dense_hyp", "kernel": kernel, "B": bsz, "H": heads, "N": n,
                          "M": n, "D": d, "Dv": d, "dtype": "f32"},
                         lambda n=n, d=d, bwd=bwd: dense_setup(ctx, bsz, heads, n, d, bwd))
    # N16384: 68.7 GB per score matrix; an OOM is the expected outcome and is recorded.
    d = ds[0]
    ctx.case({"impl": "torch_dense_hyp", "kernel": "attn_fwd", "B": bsz, "H": heads, "N": big, "M": big,
              "D": d, "Dv": d, "dtype": "f32"},
             lambda: dense_setup(ctx, bsz, heads, big, d, False))


def sec_dense_compiled(ctx):
    bsz, heads, n, d = (1, 2, 128, 16) if ctx.smoke else (8, 8, 4096, 64)

    def setup():
        compiled = torch.compile(dense_hyp_attn)
        fn, extra = dense_setup(ctx, bsz, heads, n, d, False, fn_impl=compiled)
        t = time.monotonic()
        fn()  # compiles (untimed)
        ctx.sync()
        extra["compile_s"] = time.monotonic() - t
        extra["compile_mode"] = "default"
        return fn, extra

    ctx.case({"impl": "torch_dense_hyp_compiled", "kernel": "attn_fwd", "B": bsz, "H": heads, "N": n,
              "M": n, "D": d, "Dv": d, "dtype": "f32"}, setup, need_s=0.0 if ctx.smoke else 45.0)


def sec_ln(ctx):
    dev = ctx.dev
    ds = (16, 64) if ctx.smoke else (64, 256, 1024)
    total = (1 << 18) if ctx.smoke else (1 << 26)  # elements: 256 MiB of f32 on the GPU
    for d in ds:
        r = total // d
        for kernel in ("ln_exp0_fwd", "ln_exp0_fwd_bwd"):
            bwd = kernel == "ln_exp0_fwd_bwd"

            def setup(d=d, r=r, bwd=bwd):
                x = torch.randn(r, d, device=dev)
                gamma = torch.full((d,), 1 / math.sqrt(d), device=dev)
                beta_ln = torch.zeros(d, device=dev)
                if bwd:
                    for t in (x, gamma, beta_ln):
                        t.requires_grad_(True)
                grad = torch.randn(r, d, device=dev) if bwd else None
                fn = fwd_or_bwd(lambda: ln_exp0(x, gamma, beta_ln), (x, gamma, beta_ln), bwd, grad)
                return fn, {"R": r, "c": CURV, "eps": 1e-5, "gamma": "1/sqrt(D)",
                            "bytes_moved": (5 if bwd else 2) * r * d * 4, "tokens": r}

            ctx.case({"impl": "torch_ln_exp0", "kernel": kernel, "B": 1, "H": 1, "N": r, "M": None,
                      "D": d, "Dv": None, "dtype": "f32"}, setup)
    nbytes = (16 << 20) if ctx.smoke else (1 << 30)

    def setup_copy():
        src = torch.empty(nbytes // 4, device=dev).uniform_()
        dst = torch.empty_like(src)
        return (lambda: dst.copy_(src)), {"bytes": nbytes, "bytes_moved": 2 * nbytes}

    ctx.case({"impl": "torch_copy", "kernel": "d2d_copy", "B": 1, "H": 1, "N": nbytes // 4, "M": None,
              "D": None, "Dv": None, "dtype": "f32"}, setup_copy)


def sec_lin(ctx):
    dev = ctx.dev
    bsz, heads, d, dv = (1, 2, 16, 16) if ctx.smoke else (1, 8, 64, 64)
    ns = (128, 256) if ctx.smoke else (1024, 4096, 16384, 65536)
    tril = torch.ones(LIN_CHUNK, LIN_CHUNK, device=dev).tril()
    # One correctness check at small N: chunked f32 vs the explicit quadratic form in f64.
    check = {"check_N": 512}
    try:
        torch.manual_seed(0)
        q, k = tangent((bsz, heads, 512, d), d, dev), tangent((bsz, heads, 512, d), d, dev)
        v = torch.randn(bsz, heads, 512, dv, device=dev)
        with torch.no_grad():
            ref = lin_attn_quadratic(q.double(), k.double(), v.double())
            got = lin_attn_chunked(q, k, v, tril)
            check["max_abs_err_vs_quadratic"] = float((got.double() - ref).abs().max())
            check["max_abs_ref"] = float(ref.abs().max())
        del q, k, v, ref, got
        log(f"lin attn check N512: max abs err vs quadratic f64 {check['max_abs_err_vs_quadratic']:.3e}")
    except Exception as e:
        check["check_error"] = f"{type(e).__name__}: {e}"[:600]
    for n in ns:
        for kernel in ("lin_attn_fwd", "lin_attn_fwd_bwd"):
            bwd = kernel == "lin_attn_fwd_bwd"

            def setup(n=n, bwd=bwd):
                q, k = tangent((bsz, heads, n, d), d, dev), tangent((bsz, heads, n, d), d, dev)
                v = torch.randn(bsz, heads, n, dv, device=dev)
                if bwd:
                    for t in (q, k, v):
                        t.requires_grad_(True)
                grad = torch.randn(bsz, heads, n, dv, device=dev) if bwd else None
                fn = fwd_or_bwd(lambda: lin_attn_chunked(q, k, v, tril), (q, k, v), bwd, grad)
                extra = {"causal": True, "phi": "elu+1", "chunk": LIN_CHUNK, "tokens": bsz * n}
                extra.update(check)
                return fn, extra

            ctx.case({"impl": "torch_lin_attn_chunked", "kernel": kernel, "B": bsz, "H": heads, "N": n,
                      "M": n, "D": d, "Dv": dv, "dtype": "f32"}, setup)


def sec_dist(ctx):
    dev = ctx.dev
    shapes = ([(1, 2, 64, 16), (1, 2, 128, 32)] if ctx.smoke
              else [(8, 8, 1024, 64), (1, 8, 4096, 64), (1, 8, 4096, 128)])
    # Self-check of this script's law-of-cosines distance against the f64 ball form.
    check = {}
    try:
        torch.manual_seed(0)
        q, k = tangent((1, 1, 128, 64), 64, dev), tangent((1, 1, 128, 64), 64, dev)
        ref = ball_dist_f64(q, k, CURV)
        got = hyp_dist(q, k, CURV).double()
        check["max_rel_err_vs_ball_f64"] = float(((got - ref).abs() / ref.abs().clamp(min=1e-12)).max())
        log(f"hyp dist check: max rel err vs ball f64 {check['max_rel_err_vs_ball_f64']:.3e}")
    except Exception as e:
        check["check_error"] = f"{type(e).__name__}: {e}"[:600]
    for bsz, heads, n, d in shapes:
        def setup_cdist(bsz=bsz, heads=heads, n=n, d=d):
            x = torch.randn(bsz * heads, n, d, device=dev)
            y = torch.randn(bsz * heads, n, d, device=dev)
            return (lambda: torch.cdist(x, y)), {"pairs": bsz * heads * n * n,
                                                 "out_bytes": bsz * heads * n * n * 4}

        def setup_hyp(bsz=bsz, heads=heads, n=n, d=d):
            q, k = tangent((bsz, heads, n, d), d, dev), tangent((bsz, heads, n, d), d, dev)
            extra = {"c": CURV, "pairs": bsz * heads * n * n, "out_bytes": bsz * heads * n * n * 4}
            extra.update(check)
            return fwd_or_bwd(lambda: hyp_dist(q, k, CURV), (q, k), False, None), extra

        base = {"B": bsz, "H": heads, "N": n, "M": n, "D": d, "Dv": None, "dtype": "f32"}
        ctx.case(dict(base, impl="torch_cdist", kernel="cdist"), setup_cdist)
        ctx.case(dict(base, impl="torch_dense_hyp_dist", kernel="hyp_dist"), setup_hyp)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes; CPU when there is no GPU")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help="comma-separated subset of " + ",".join(SECTIONS))
    ap.add_argument("--budget-ms", type=float, default=300.0,
                    help="timed milliseconds per case that set the repetitions (20..200)")
    ap.add_argument("--no-hide-launch", action="store_true",
                    help="no GPU spin before each repetition: events then include host launch gaps")
    ap.add_argument("--max-seconds", type=float, default=150.0,
                    help="cases that would start later are recorded as skipped")
    args = ap.parse_args()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        ap.error(f"unknown sections {bad}; choose from {','.join(SECTIONS)}")
    args.sections = sections
    if torch.cuda.is_available():
        dev = torch.device("cuda")
    elif args.smoke:
        dev = torch.device("cpu")
    else:
        json.dump({"torch": {"version": torch.__version__, "cuda": torch.version.cuda, "cudnn": None,
                             "device": None, "triton": None},
                   "run": {"complete": False, "error": "CUDA is not available (use --smoke on a CPU)"},
                   "records": []}, open(args.out, "w"), indent=1)
        log("torch_hyp: CUDA is not available; use --smoke to run on the CPU")
        return 1
    torch.manual_seed(0)
    ctx = Ctx(args, dev)
    log(f"torch_hyp: torch {ctx.meta['version']} on {ctx.meta['device']}, sections {sections}"
        f"{' (smoke)' if args.smoke else ''}")
    ctx.write()
    funcs = {"sdpa": sec_sdpa, "window": sec_window, "dense": sec_dense, "ln": sec_ln, "lin": sec_lin,
             "dist": sec_dist}
    order = [s for s in SECTIONS if s in sections]
    plan = [(s, funcs[s]) for s in order]
    if "dense" in sections:  # torch.compile last: its compile time must not starve the rest
        plan.append(("dense (compiled)", sec_dense_compiled))
    for name, func in plan:
        log(f"[{ctx.elapsed():6.1f}s] section {name}")
        try:
            func(ctx)
        except Exception as e:  # a failure outside a case (should not happen): one record, go on
            ctx.records.append({"impl": f"section:{name}", "kernel": None, "B": None, "H": None, "N": None,
                                "M": None, "D": None, "Dv": None, "dtype": None, "median_ms": None,
                                "p20_ms": None, "p80_ms": None, "runs": 0,
                                "error": f"{type(e).__name__}: {e}"[:600]})
            log(f"section {name} failed: {e}")
        free_memory(dev)
        ctx.write()
    ctx.write(complete=True)
    errors = sum(1 for r in ctx.records if r.get("error"))
    log(f"torch_hyp: {len(ctx.records)} records ({errors} errors) in {ctx.elapsed():.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
