#!/usr/bin/env python3
"""PyTorch side of muse's GPU training benchmarks (issue 9): whole training steps of the repo's
Phase 8 model (torch_model.py, profile exact), of a GPT-style transformer, and the VRAM study's two
models (design model.md §4, §6.3). muse's own code, written from the design.

Modes (subcommands). Each prints one JSON record per line and writes the list to --out (rewritten
after every record), stops at --max-seconds (the points left get "error": "skipped: ..."), and
turns an exception or OOM into an "error" record. Every record has impl (torch_eager |
torch_compile), model, B, N, dtype (+ dtype_mode), checkpointing, params (trainable scalars), its
metrics, device and torch.

  kpi    one training step of Phase 8 "small" at B 8, N 256: forward, mean cross-entropy of the
         (B, N, V) logits against next-token targets (seeded random ids < V), backward,
         clip_grad_norm_(1.0), AdamW (fused on CUDA). dtype bf16 (autocast, fp32 master weights)
         and f32 (TF32 matmuls); checkpointing off / on (each block, non-reentrant); eager, then
         torch.compile of the loss function (compile_s: the first compiled step, apart).
  sweep  the O(N) claim: the same step at N = 256 ... 8192 (--ns) with B·N = 8192 tokens constant
         (B = 8192 // N: the same work and logits per step at every N, so tokens/s and peak MiB
         show the cost of length alone), bf16, for Phase 8 small (n_seq = N) and a GPT of the same
         D, L, heads (pre-LN, learned positions, causal SDPA, GELU MLP 4D, tied embedding of
         V 50257). Eager at every point first, then compile (by N) while the budget lasts.
  vram   design §6.3 as the original's scripts/verify_95_with_fp16.py does it: build on the CPU,
         .to(cuda), "FP16" = model.half() and the forward under autocast(float16); param_mem =
         memory_allocated; ids = randint(0, 1000, (2, 512)); reset the peak (the weights stay
         resident, so they ARE in the peak); train mode (dropout and checkpointing active);
         loss = logits.sum(); backward (the .grad tensors are in the peak, no optimiser state);
         activation = peak - param_mem. The baseline transformer (torch_vram.Baseline) in f32 and
         f16; the memory-optimised model (a port of reference/src/memopt, torch_train_models.py) in f32, f16,
         bf16 (.to(bfloat16) + autocast: the same protocol) and bf16-amp (fp32 weights +
         autocast), with and without checkpointing. weights_mib, grads_mib: the breakdown.
         A matmul and its backward per dtype run first, so cuBLAS's workspaces (the main thread's
         and the autograd device thread's) exist before any case and every case starts from the
         same base_mib (earlier, the first case allocated them inside its peak and the later ones
         started 65 MiB up); peak_above_base_mib = peak - base_mib.
  train  a fixed-budget run for the loss curve on GPT-2 ids (--tokens DIR: train.npy, heldout.npy
         as muse writes them) with muse's batches (muse-train's splitmix64 offsets: they depend on
         --seed and the step only) and muse's held-out set (non-overlapping windows of the first
         --eval-tokens held-out tokens); bf16 autocast or --dtype f32 (TF32); AdamW (0.9, 0.999, 1e-8, wd 0.01), clip
         1.0, warm-up then cosine to 0.1·lr. --out is a JSONL log (step, loss, lr, grad_norm,
         tokens_per_s; heldout_loss, heldout_ppl every --eval-every steps and at the end) closed
         by a summary record.

torch_compile (kpi, sweep; train --compile): torch.compile (inductor, --compile-mode) of the loss
function (train: of the logits), one graph per point, checkpointed blocks included. Inductor does
not lower complex ops, so the Phase 8 BK-Core (complex128) stays out of it as an opaque custom op:
eager ATen kernels, its backward a torch.func.vjp that recomputes its forward (compile_note in each
Phase 8 record says so); --compile-bk-core lets inductor try it. Eager runs torch_model unchanged.

Timing (kpi, sweep): --warmup-steps steps, then each of --timed (>= 10) steps between two
torch.cuda.synchronize() calls; median; tokens/s = B·N / median; peak_mib = max_memory_allocated
after reset_peak_memory_stats() just before the timed steps (weights, grads, Adam state,
activations). --device cpu runs everything (peaks null); --tiny shrinks configs and shapes.
"""
import argparse
import gc
import json
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

import torch_model as tm
from torch_train_models import GPT, STUDY, TINY_STUDY, MemOpt, gpt, gpt_count, study_counts
from torch_vram import Baseline

H0 = ("h0_diag_base", "h0_super_base", "h0_sub_base")  # BK-Core's H0: buffers, not trained
SMALL = tm.NAMED["small"]
TINY = dict(vocab_size=1000, d_model=64, n_layers=2, num_heads=2, htt_rank=8, n_seq=128)


# ---- the autograd of torch_model's opaque cumsum (torch.compile only; eager uses torch.cumsum)
def _cumsum_bwd(ctx, g):  # d/dx of an inclusive cumsum: a reversed cumsum, opaque as well
    return tm._cumsum_n(g.flip(1)).flip(1)


tm._cumsum_n.register_autograd(_cumsum_bwd)


# ---- BK-Core under torch.compile: kept out of inductor as an opaque op (eager ATen kernels) ---
# Inductor does not lower complex ops well (torch 2.11 on the H200: "'complex' object has no
# attribute 'get_name'"; on the CPU: "does not support code generation for complex operators").
# torch_model.bk_core_im (float64 in and out, complex128 inside) becomes one custom op, so no
# complex tensor reaches inductor; not a torch.compiler.disable graph break, which in the layer
# loop makes dynamo skip the whole logits frame (embedding, final norm, decode) and recompile
# each block per layer. Its backward recomputes BK-Core's forward. Eager is unchanged.
BK_CORE_IM = tm.bk_core_im
COMPILE_BK_CORE = False  # --compile-bk-core: let inductor try BK-Core as well


def compile_note():  # in each Phase 8 torch_compile record
    if COMPILE_BK_CORE:
        return "BK-Core (complex128) compiled by inductor as well (--compile-bk-core)"
    return "BK-Core (complex128) left eager as an opaque custom op (its backward recomputes its forward); the rest compiled by inductor"


@torch.library.custom_op("muse_baseline::bk_core_im", mutates_args=())
def _bk_core_op(a: torch.Tensor, sup: torch.Tensor, sub: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    return BK_CORE_IM(a, sup, sub, im).clone(memory_format=torch.contiguous_format)  # .imag: a strided view


@_bk_core_op.register_fake
def _(a, sup, sub, im):
    return torch.empty_like(a, memory_format=torch.contiguous_format)


@torch.library.custom_op("muse_baseline::bk_core_im_vjp", mutates_args=())
def _bk_core_vjp(a: torch.Tensor, sup: torch.Tensor, sub: torch.Tensor, im: torch.Tensor,
                 g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    _, pull = torch.func.vjp(BK_CORE_IM, a, sup, sub, im)  # torch.func: autograd is off inside an op
    # fresh tensors: inductor asserts 16-byte aligned outputs, and a gradient can be a slice
    return tuple(d.clone(memory_format=torch.contiguous_format) for d in pull(g))


@_bk_core_vjp.register_fake
def _(a, sup, sub, im, g):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (a, sup, sub, im))


def _bk_core_save(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


_bk_core_op.register_autograd(lambda ctx, g: _bk_core_vjp(*ctx.saved_tensors, g), setup_context=_bk_core_save)


def bk_core_im(a, sup, sub, im):
    if torch.compiler.is_compiling() and not COMPILE_BK_CORE:
        return _bk_core_op(a, sup, sub, im)
    return BK_CORE_IM(a, sup, sub, im)


tm.bk_core_im = bk_core_im  # torch_model.block looks it up at call time


# ---- models ----------------------------------------------------------------------------------
def phase8_count(cfg):
    """Design §5's closed form less the 4D per block that never reach the logits (bk_scale, the
    BK layer's output_proj): exactly the trainable tensors of torch_model.init_weights."""
    c = tm.defaults(cfg)
    v, d, r, R = c["vocab_size"], c["d_model"], c["htt_rank"], c["ar_ssm_max_rank"]
    v1, v2, d1, d2 = tm.factors(v, d)
    g = max(d // 4, c["ar_ssm_min_rank"])
    block = 4 * d * d + d * g + g + g * R + R + 3 * d * R + 9 * d + 7
    return r * (v1 * d1 + v2 * d2) + r + c["n_seq"] * d + c["n_layers"] * block + 2 * d


def phase8(cfg, device, seed=0, init=None):
    """(logits(ids, ckpt), trainable params) of torch_model's Phase 8 core, profile exact; `init`:
    a safetensors file (e.g. `muse model init`) whose tensors replace the seeded BENCH inits (every
    core tensor must be there, same shape; others in the file are ignored)."""
    c = tm.defaults(cfg)
    w = tm.init_weights(c, device, seed)
    if init:
        arrs, _ = tm.load_safetensors(init)
        for k in w:  # a longer n_seq's positions and H0 give their first N (as muse's forward uses them)
            x, want = arrs.get(k), tuple(w[k].shape)
            if x is None or x.ndim != len(want) or any(g < e for g, e in zip(x.shape, want)):
                raise ValueError(f"--init-weights {init}: `{k}` missing or smaller than {want}")
            x = x[tuple(slice(0, e) for e in want)]
            w[k] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    params = [t.requires_grad_() for k, t in w.items() if not k.endswith(H0)]
    assert sum(p.numel() for p in params) == phase8_count(c)
    V, D = c["vocab_size"], c["d_model"]

    def logits(ids, ckpt=False):  # torch_model.forward with an optional checkpoint per block
        h = tm.htt_embed(w, ids, V, D) + w[tm.P + "position_embedding.weight"][: ids.shape[1]]
        for i in range(c["n_layers"]):
            f = lambda x, i=i: tm.block(w, i, x, c["num_heads"], c["hyperbolic_window_size"], "exact")
            h = checkpoint(f, h, use_reentrant=False) if ckpt else f(h)
        h = F.layer_norm(h, h.shape[-1:], w[tm.P + "layer_norm_final.weight"], w[tm.P + "layer_norm_final.bias"], 1e-5)
        return tm.htt_decode(w, h, V)

    return logits, params


# ---- harness ---------------------------------------------------------------------------------
class Run:
    """The records of one mode: printed, written to --out after each one, and the time budget."""

    def __init__(self, a):
        self.a, self.records, self.t0 = a, [], time.time()
        self.env = {"device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu", "torch": torch.__version__}

    def left(self):
        return self.a.max_seconds - (time.time() - self.t0)

    def emit(self, rec):
        rec.update(self.env)
        print(json.dumps(rec), flush=True)
        self.records.append(rec)
        if self.a.out:
            json.dump(self.records, open(self.a.out, "w"), indent=1)


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def mib(tensors):
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def amp(device, dtype):  # "f32": none; "f16": float16; "bf16", "bf16-amp": bfloat16
    return torch.autocast(device_type=device, dtype=torch.float16 if dtype == "f16" else torch.bfloat16, enabled=dtype != "f32")


def adamw(params, lr, device):
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, fused=device == "cuda")


def error(e):
    return f"{type(e).__name__}: {str(e)[:300]}"


def step_point(run, rec, build, cfg, imp, warmup, timed):
    """Times whole training steps of build(cfg, device) -> (logits(ids, ckpt), params)."""
    dev, b, n, dt, ckpt = run.a.device, rec["B"], rec["N"], rec["dtype"], rec["checkpointing"]
    try:
        logits, params = build(cfg, dev)
        rec.update(params=sum(p.numel() for p in params), weights_mib=mib(params))
        opt = adamw(params, 3e-4, dev)
        g = torch.Generator(device="cpu").manual_seed(1)
        ids = torch.randint(0, cfg["vocab_size"], (b, n + 1), generator=g).to(dev)
        x, y = ids[:, :-1], ids[:, 1:]

        def loss_fn(x, y):
            with amp(dev, dt):
                out = logits(x, ckpt)
            return F.cross_entropy(out.float().flatten(0, 1), y.flatten())

        f = loss_fn
        if imp == "torch_compile":
            torch._dynamo.reset()  # a fresh static-shape compile per point
            f = torch.compile(loss_fn, mode=run.a.compile_mode)
            rec["compile_mode"] = run.a.compile_mode
            if rec["model"].startswith("phase8"):
                rec["compile_note"] = compile_note()

        def step():
            opt.zero_grad(set_to_none=True)
            loss = f(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            return loss

        t0 = time.time()
        step()
        sync(dev)
        if imp == "torch_compile":
            rec["compile_s"] = time.time() - t0  # the first step: tracing, compiling, running
        for _ in range(warmup):
            step()
        sync(dev)
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        ts = []
        for _ in range(timed):
            sync(dev)
            t0 = time.perf_counter()
            loss = step()
            sync(dev)
            ts.append(time.perf_counter() - t0)
        ts = np.array(ts)
        rec.update(median_ms=float(np.median(ts) * 1e3), mean_ms=float(ts.mean() * 1e3), std_ms=float(ts.std(ddof=1) * 1e3),
                   runs=timed, tokens_per_s=float(b * n / np.median(ts)), loss=loss.item(),
                   peak_mib=torch.cuda.max_memory_allocated() / 2**20 if dev == "cuda" else None)
    except Exception as e:  # an OOM or a compile failure is a result, not a crash
        rec["error"] = error(e)
    run.emit(rec)


def grid(run, points, warmup, timed):
    """points: (impl, kind, cfg, B, N, dtype, ckpt); eager ones need 10 s left, compiles 120 s."""
    builds, counts = {"phase8": phase8, "gpt": gpt}, {"phase8": phase8_count, "gpt": gpt_count}
    for imp, kind, cfg, b, n, dt, ckpt in points:
        # impl carries the dtype and checkpointing (torch_eager_bf16_ckpt) so that muse's bench
        # finds each row by (impl, kernel, shape); kernel names the model.
        rec = dict(impl=f"{imp}_{dt}{'_ckpt' if ckpt else ''}", model=f"{kind}-{cfg['name']}",
                   kernel=f"{'model' if kind == 'phase8' else 'gpt'}_train_step", B=b, N=n, D=cfg["d_model"], dtype=dt,
                   dtype_mode=DTYPE_MODES[dt], checkpointing=ckpt, params=counts[kind](cfg))
        need = 120 if imp.startswith("torch_compile") else 10
        if run.left() < need:
            rec["error"] = f"skipped: {run.left():.0f} s left of the {run.a.max_seconds:.0f} s budget"
            run.emit(rec)
            continue
        step_point(run, rec, builds[kind], cfg, imp, warmup, timed)
        torch._dynamo.reset()  # returned: its weights, graphs and closures can go
        gc.collect()
        if run.a.device == "cuda":
            torch.cuda.empty_cache()


DTYPE_MODES = {"bf16": "fp32 master weights + autocast(bfloat16)", "f32": "fp32, TF32 matmuls"}


def impls(a):
    return [{"eager": "torch_eager", "compile": "torch_compile"}[s] for s in a.impl.split(",")]


def kpi(run):
    a = run.a
    cfg, b, n = (dict(TINY, n_seq=64, name="tiny"), 2, 64) if a.tiny else (dict(SMALL, name="small"), 8, 256)
    cases = [(c.split("+")[0], c.endswith("+ckpt")) for c in a.cases.split(",")]  # in this order
    grid(run, [(imp, "phase8", cfg, b, n, dt, ck) for imp in impls(a) for dt, ck in cases], a.warmup_steps, a.timed)


def sweep(run):
    a = run.a
    base, tokens, ns = (dict(TINY, name="tiny"), 256, [64, 128, 256]) if a.tiny else (dict(SMALL, name="small"), 8192, a.ns)
    pts = [(imp, m, dict(base, n_seq=n), tokens // n, n, "bf16", False) for imp in impls(a) for n in ns for m in ("phase8", "gpt")]
    grid(run, pts, a.warmup_steps, a.timed)


VRAM_MODES = {"f32": "fp32 weights, no autocast",
              "f16": "model.half() + autocast(float16): the original's 'FP16' (no fp32 master copy)",
              "bf16": "model.to(bfloat16) + autocast(bfloat16): the original's FP16 protocol in bf16",
              "bf16-amp": "fp32 weights + autocast(bfloat16): mixed precision with fp32 master weights"}


def vram(run):
    a, dev = run.a, run.a.device
    on = dev == "cuda"
    alloc = lambda: torch.cuda.memory_allocated() / 2**20 if on else None
    peak = lambda: torch.cuda.max_memory_allocated() / 2**20 if on else None

    def reset():  # the original's reset_memory(): gc, empty_cache, reset_peak_memory_stats
        gc.collect()
        if on:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    study_counts()
    if on:  # cuBLAS's workspaces before any case (this thread's, and the autograd engine's device
        # thread's, made by its first backward matmul), so that every case starts from the same base
        for dt in (torch.float32, torch.float16, torch.bfloat16):
            w = torch.ones(64, 64, device=dev, dtype=dt, requires_grad=True)
            (w @ w).float().sum().backward()
            torch.cuda.synchronize()
            del w
    s, (b, n) = (TINY_STUDY, (2, 64)) if a.tiny else (STUDY, (2, 512))
    cases = [("baseline", m, False) for m in ("f32", "f16")]
    cases += [("memopt", m, ck) for m in ("f32", "f16", "bf16", "bf16-amp") for ck in (True, False)]
    for model, mode, ckpt in cases:
        rec = dict(impl="torch_eager", model=model, kernel="vram_fwd_bwd", B=b, N=n, dtype=mode, dtype_mode=VRAM_MODES[mode],
                   checkpointing=ckpt, weights_in_peak=True, conv=a.conv if model == "memopt" else None)
        if run.left() < 5:
            rec["error"] = f"skipped: {run.left():.0f} s left of the {a.max_seconds:.0f} s budget"
            run.emit(rec)
            continue
        m = x = out = None
        try:
            reset()
            rec["base_mib"] = alloc()
            torch.manual_seed(0)
            if model == "baseline":  # built on the CPU, then moved, as the original
                m = Baseline(s["vocab"], s["d"], s["layers"], s["heads"], s["ffn"]).to(dev)
            else:
                m = MemOpt(**s, causal=a.conv == "causal", ckpt=ckpt).to(dev)
            if mode in ("f16", "bf16"):  # after the move, as the original's model.half()
                m = m.to(torch.float16 if mode == "f16" else torch.bfloat16)
            rec.update(params=sum(p.numel() for p in m.parameters()), weights_mib=mib(m.parameters()), param_mem_mib=alloc())
            x = torch.randint(0, 1000, (b, n)).to(dev)
            reset()
            m.train()
            with amp(dev, mode):
                out = m(x)
            rec["forward_peak_mib"] = peak()
            out.sum().backward()
            rec.update(peak_mib=peak(), grads_mib=mib(p.grad for p in m.parameters() if p.grad is not None))
            if on:  # the model's own peak: above what was allocated before it was built
                rec["peak_above_base_mib"] = rec["peak_mib"] - rec["base_mib"]
            rec["activation_mib"] = rec["peak_mib"] - rec["param_mem_mib"] if on else None
        except Exception as e:
            rec["error"] = error(e)
        del m, x, out
        reset()
        run.emit(rec)


# ---- train -----------------------------------------------------------------------------------
M64 = (1 << 64) - 1


def mix(z):  # muse-train's splitmix64 (data.rs)
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def train_batch(tokens, b, n, seed, step):
    """muse-train's train_batch: window i of step s starts at mix(seed ^ mix(s·1000003 + i)) % (len - n)."""
    span = len(tokens) - n
    starts = [mix(seed ^ mix((step * 1_000_003 + i) & M64)) % span for i in range(b)]
    w = np.stack([tokens[s : s + n + 1] for s in starts])
    return w[:, :-1], w[:, 1:]


def lr_factor(step, warmup, total, min_ratio=0.1):  # muse's cosine_lr / torch_train.py's factor
    if step < warmup:
        return (step + 1) / warmup
    t = min((step - warmup) / max(total - warmup, 1), 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def train(run):
    a, dev = run.a, run.a.device
    log = open(a.out, "w") if a.out else None
    emit = lambda r: (print(json.dumps(r), flush=True), log and (log.write(json.dumps(r) + "\n"), log.flush()))
    cfg = dict(dict(TINY, vocab_size=50257) if a.tiny else tm.NAMED[a.config], n_seq=a.seq)
    head = dict(impl="torch_compile" if a.compile else "torch_eager", model=f"{a.model}-{'tiny' if a.tiny else a.config}",
                B=a.batch, N=a.seq, dtype=a.dtype, checkpointing=a.checkpointing, params=None, summary=True)
    if a.compile and a.model == "phase8":
        head["compile_note"] = compile_note()
    torch.backends.cuda.matmul.allow_tf32 = True  # f32: TF32 matmuls (as muse's --tf32)
    t_run, tok_s, last, starts = time.time(), [], {}, []
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def ce(fn, x, y):  # mean next-token cross-entropy of one (B, N) batch (bf16: under autocast)
        with amp(dev, a.dtype):
            out = fn(torch.from_numpy(x).to(dev), a.checkpointing)
        return F.cross_entropy(out.float().flatten(0, 1), torch.from_numpy(y).to(dev).flatten())

    def heldout():  # muse's evaluate: non-overlapping windows of the first --eval-tokens, in order
        tot = 0.0
        with torch.no_grad():
            for i in range(0, len(starts), a.batch):
                w = np.stack([ev[s : s + a.seq + 1] for s in starts[i : i + a.batch]])
                tot += ce(logits, w[:, :-1], w[:, 1:]).item() * w[:, :-1].size
        return tot / (len(starts) * a.seq)

    try:
        tr, ho = (np.load(f"{a.tokens}/{s}.npy").astype(np.int64).ravel() for s in ("train", "heldout"))
        if max(tr.max(), ho.max()) >= cfg["vocab_size"] or min(len(tr), len(ho)) <= a.seq:
            raise ValueError(f"--tokens: ids must be < {cfg['vocab_size']} and each split longer than --seq")
        ev = ho[: max(a.eval_tokens, a.seq + 1)]
        starts = np.arange((len(ev) - 1) // a.seq) * a.seq
        if a.init_weights and a.model != "phase8":
            raise ValueError("--init-weights: only for --model phase8")
        logits, params = phase8(cfg, dev, a.seed, a.init_weights) if a.model == "phase8" else gpt(cfg, dev, a.seed)
        head["init"] = a.init_weights or "seeded BENCH inits (torch_model.init_weights)"
        head["params"] = sum(p.numel() for p in params)
        f = torch.compile(logits) if a.compile else logits
        opt = adamw(params, a.lr, dev)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, a.warmup, a.steps))
        for s in range(a.steps):
            if time.time() - t_run > a.max_seconds:
                head["error"] = f"skipped: steps {s + 1}..{a.steps} ({a.max_seconds:.0f} s budget)"
                break
            sync(dev)
            t0 = time.perf_counter()
            x, y = train_batch(tr, a.batch, a.seq, a.seed, s)
            lr = opt.param_groups[0]["lr"]
            opt.zero_grad(set_to_none=True)
            loss = ce(f, x, y)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            sync(dev)
            last = dict(step=s + 1, loss=loss.item(), lr=lr, grad_norm=norm.item(), tokens_per_s=a.batch * a.seq / (time.perf_counter() - t0))
            if not math.isfinite(last["loss"]):  # diverged: say where, and stop spending the budget
                head["error"] = f"diverged: the loss is {last['loss']} at step {s + 1}"
                emit(last)
                break
            tok_s.append(last["tokens_per_s"])
            if (s + 1) % a.eval_every == 0 or s + 1 == a.steps:
                last["heldout_loss"] = heldout()
                last["heldout_ppl"] = math.exp(last["heldout_loss"])
            emit(last)
        if last and "heldout_loss" not in last:  # stopped early: evaluate where it stopped
            last["heldout_loss"] = heldout()
            last["heldout_ppl"] = math.exp(last["heldout_loss"])
    except Exception as e:
        head["error"] = error(e)
    emit(dict(head, steps=last.get("step", 0), loss=last.get("loss"), heldout_loss=last.get("heldout_loss"),
              heldout_ppl=last.get("heldout_ppl"), eval_windows=len(starts), wall_s=time.time() - t_run,
              median_tokens_per_s=float(np.median(tok_s[1:] or tok_s)) if tok_s else None,  # the first step warms up
              peak_mib=torch.cuda.max_memory_allocated() / 2**20 if dev == "cuda" else None,
              lr=a.lr, warmup=a.warmup, seed=a.seed, **run.env))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    common.add_argument("--out")
    common.add_argument("--max-seconds", type=float, default=540)
    common.add_argument("--tiny", action="store_true", help="tiny configs and shapes (a CPU test in seconds)")
    for m in ("kpi", "sweep"):
        p = sub.add_parser(m, parents=[common])
        p.add_argument("--impl", default="eager,compile", help="eager, compile or eager,compile")
        p.add_argument("--warmup-steps", type=int, default=3)
        p.add_argument("--timed", type=int, default=20 if m == "kpi" else 10)
        p.add_argument("--compile-mode", default=None, help="torch.compile mode (default: inductor's default)")
        p.add_argument("--compile-bk-core", action="store_true", help="let inductor compile BK-Core (complex128) too")
    sub.choices["kpi"].add_argument("--cases", default="bf16,f32,bf16+ckpt,f32+ckpt", help="dtype[+ckpt], comma-separated")
    sub.choices["sweep"].add_argument("--ns", type=lambda v: [int(x) for x in v.split(",")], default=[256, 512, 1024, 2048, 4096, 8192])
    p = sub.add_parser("vram", parents=[common])
    p.add_argument("--conv", choices=("causal", "centered"), default="causal", help="memopt's AR-SSM conv (same memory)")
    p = sub.add_parser("train", parents=[common])
    p.add_argument("--tokens", required=True)
    p.add_argument("--model", choices=("phase8", "gpt"), default="phase8")
    p.add_argument("--init-weights", help="phase8: start from these safetensors (e.g. `muse model init --config small --seed S`)")
    p.add_argument("--config", default="small", choices=("small", "medium"))
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-tokens", type=int, default=16384)
    p.add_argument("--checkpointing", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--compile-bk-core", action="store_true", help="let inductor compile BK-Core (complex128) too")
    p.add_argument("--dtype", choices=("bf16", "f32"), default="bf16", help="bf16 autocast, or f32 with TF32 matmuls")
    a = ap.parse_args()
    global COMPILE_BK_CORE
    COMPILE_BK_CORE = getattr(a, "compile_bk_core", False)
    torch.backends.cuda.matmul.allow_tf32 = True  # the f32 rows run on TF32 tensor cores
    torch.backends.cudnn.allow_tf32 = True
    {"kpi": kpi, "sweep": sweep, "vram": vram, "train": train}[a.mode](Run(a))


if __name__ == "__main__":
    main()
