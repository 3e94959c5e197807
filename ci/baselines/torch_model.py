#!/usr/bin/env python3
"""muse's own PyTorch implementation of the Phase 8 language model core (design model.md §2-3),
written from the design, not from the original's code. It reads the original's `state_dict()`
names (a safetensors file as `muse model init` writes it) and runs one of muse's profiles:

- `exact`    : law-of-cosines hyperbolic attention in causal windows of 64 on the tangent vectors
               (o = softmax . v, no maps), the exact BK-Core G_ii, an inclusive cumsum and a causal
               depthwise conv (taps on n-2, n-1, n) in the AR-SSM.
- `bench`    : the original's CUDA benchmark path at 1c8b31b: its 'fast' approximate distance
               sqrt(max(|q|^2 - 2 q.k + |k|^2, 0) + 1e-8) * sqrt(1 + c (|q|^2 + |k|^2)) on raw q, k
               with the two dots on TF32 (operands truncated to 10 mantissa bits), then its logmap0
               of the tangent average; its Triton pseudo-cumsum (block 128); its non-causal conv.
- `bench-cpu`: the original's PyTorch path at the same commit: exp0 q, k (|.| >= 1e-5), the ball
               form with its 1e-5 clamps, -beta d - bias, logmap0(expmap0(softmax . v)).

BK-Core runs as a log-depth associative scan of normalised 2x2 Moebius matrices (complex128), so
the baseline is vectorised and torch.compile-able rather than a Python loop over N.

Modes (any combination):
  --check DIR   the logits of every profile on DIR/oracle (fixtures/model/oracle: the numpy f64
                oracle that muse matches to 1e-14 in CI) and DIR/parity (the original's own
                logits), in float64 and float32 on the best device; with --muse DIR2, also
                against muse's logits DIR2/<profile>/logits.npy of the oracle inputs.
  --bench       the original's throughput protocol (design §6.1: eval, no grad, 5 warm-up and 20
                synchronised timed forwards, tokens/s = B*N / mean, peak = max_memory_allocated
                after a reset with the weights resident) over its grid, eager and torch.compile,
                profile exact, f32 with TF32 matmuls allowed.
Writes one JSON: {"torch": ..., "device": ..., "checks": [...], "records": [...]} in the layout
muse bench reads (impl, kernel "model_forward", B, N, D, dtype, median_ms, mean_ms, std_ms,
tokens_per_s, peak_mib, compile_s).
"""
import argparse
import json
import math
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

P = "phase7_model.model."
DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "C64": np.complex64}
NAMED = {
    "tiny": dict(vocab_size=1000, d_model=64, n_layers=2, num_heads=2, htt_rank=8, n_seq=128),
    "small": dict(vocab_size=50257, d_model=512, n_layers=8, num_heads=8, htt_rank=16, n_seq=256),
    "medium": dict(vocab_size=50257, d_model=1024, n_layers=16, num_heads=16, htt_rank=32, n_seq=512),
}
GRID = [("small", 256, [1, 2, 4, 8]), ("small", 512, [1, 2, 4]), ("small", 1024, [1, 2]),
        ("medium", 512, [1, 2, 4]), ("small", 4096, [1])]
# The two points with targets first; the rest of the grid follows while the budget lasts.
COMPILE_FIRST = [("small", 256, 8), ("medium", 512, 4)]


def defaults(cfg):
    c = dict(hyperbolic_window_size=64, ar_ssm_max_rank=32, ar_ssm_min_rank=4, num_heads=8, htt_rank=16)
    c.update(cfg)
    return c


def load_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        s, e = meta["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + s : 8 + n + e], dtype=DTYPES[meta["dtype"]]).reshape(meta["shape"]).copy()
    return out, header.get("__metadata__", {})


def to_torch(arrs, dtype, device):
    return {k: torch.from_numpy(v).to(device=device, dtype=dtype) for k, v in arrs.items() if v.dtype != np.complex64}


def factors(v, d):
    v1, d1 = math.ceil(math.sqrt(v)), math.ceil(math.sqrt(d))
    return v1, math.ceil(v / v1), d1, math.ceil(d / d1)


def init_weights(cfg, device, seed=0):
    """The core tensors of `cfg` (the ones the logits depend on), with the original's BENCH inits."""
    cfg = defaults(cfg)
    g = torch.Generator(device="cpu").manual_seed(seed)
    V, D, L, r, n = cfg["vocab_size"], cfg["d_model"], cfg["n_layers"], cfg["htt_rank"], cfg["n_seq"]
    R, G = cfg["ar_ssm_max_rank"], max(D // 4, cfg["ar_ssm_min_rank"])
    v1, v2, d1, d2 = factors(V, D)
    rn = lambda *s, std=1.0: torch.randn(*s, generator=g) * std
    lin = lambda o, i: rn(o, i, std=1 / math.sqrt(i))
    w = {P + "token_embedding.core1": rn(v1, 1, r, d1, std=0.02), P + "token_embedding.core2": rn(v2, r, 1, d2, std=0.02),
         P + "token_embedding.phase_shift": rn(r, std=0.1), P + "position_embedding.weight": rn(n, D, std=0.02),
         P + "layer_norm_final.weight": torch.ones(D), P + "layer_norm_final.bias": torch.zeros(D)}
    for i in range(L):
        b = f"{P}blocks.{i}."
        bk, ha = b + "bk_layer.", b + "bk_layer.hybrid_attn."
        la, ga = ha + "local_attn.", ha + "global_attn."
        w.update({b + "layer_norm.weight": torch.ones(D), b + "layer_norm.bias": torch.zeros(D),
                  bk + "gamma": torch.tensor(0.0), bk + "epsilon_param": torch.tensor(1.0),
                  bk + "h0_diag_base": torch.full((1, n), -2.0), bk + "h0_sub_base": torch.ones(1, n - 1),
                  bk + "h0_super_base": torch.ones(1, n - 1), ha + "gate_sensitivity": torch.tensor(1.0),
                  la + "log_c": torch.tensor(0.0), la + "attention.beta": torch.tensor(0.0),
                  la + "attention.attention_bias": torch.tensor(0.0),
                  ga + "complexity_gate.0.weight": lin(G, D), ga + "complexity_gate.0.bias": torch.zeros(G),
                  ga + "complexity_gate.2.weight": lin(R, G), ga + "complexity_gate.2.bias": torch.zeros(R),
                  ga + "U_proj.weight": lin(R, D), ga + "V_proj.weight": lin(R, D), ga + "T_conv.weight": rn(D, 1, 3, std=0.3),
                  ga + "output_proj.weight": lin(D, R), ga + "output_proj.bias": torch.zeros(D),
                  ha + "layer_norm.weight": torch.ones(D), ha + "layer_norm.bias": torch.zeros(D),
                  bk + "v_proj.weight": lin(1, D), bk + "v_proj.bias": torch.zeros(1)})
        for m in ("W_q", "W_k", "W_v", "W_o"):
            w[la + m + ".weight"] = lin(D, D)
    return {k: v.to(device) for k, v in w.items()}


# ---- layers ----------------------------------------------------------------------------------
def htt_tables(w):
    c1 = w[P + "token_embedding.core1"][:, 0] * torch.cos(w[P + "token_embedding.phase_shift"]).view(1, -1, 1)
    return c1, w[P + "token_embedding.core2"][:, :, 0]


def htt_embed(w, ids, vocab, d_model):
    v1, v2, _, _ = factors(vocab, d_model)
    c1, c2 = htt_tables(w)
    i1, i2 = torch.clamp(ids // v2, 0, v1 - 1), torch.clamp(ids % v2, 0, v2 - 1)
    return torch.einsum("blrd,blrf->bldf", c1[i1], c2[i2]).reshape(*ids.shape, -1)[..., :d_model]


def htt_decode(w, h, vocab):
    c1, c2 = htt_tables(w)
    d1, d2 = c1.shape[2], c2.shape[2]
    hp = F.pad(h, (0, d1 * d2 - h.shape[-1])).view(*h.shape[:2], d1, d2)
    return torch.einsum("bldf,ird,urf->bliu", hp, c1, c2).reshape(*h.shape[:2], -1)[..., :vocab]


def mobius_prefix(m):
    """Inclusive prefix products m_t ... m_0 of 2x2 matrices (B, N, 2, 2) by doubling, each product
    scaled by its largest entry (a Moebius map does not change under scaling)."""
    out, n, s = m, m.shape[1], 1
    while s < n:
        later = out[:, s:]
        prod = later @ out[:, :-s]
        prod = prod / prod.abs().amax(dim=(-2, -1), keepdim=True)
        out = torch.cat([out[:, :s], prod], dim=1)
        s *= 2
    return out


def bk_core_diag(a, sup, sub, z):
    """diag((T - z)^-1) of tridiagonal T (complex128): forward ratios r_i = theta_{i+1}/theta_i =
    (a_i - z) - k_{i-1}/r_{i-1} and backward ratios from the mirrored recurrence, each as a Moebius
    prefix product; G_ii = 1 / ((a_i - z) - k_{i-1}/r_{i-1} - k_i/s_{i+1})."""
    a = a.to(torch.complex128) - z
    k = (sup * sub).to(torch.complex128)
    bsz, n = a.shape
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    kf = torch.cat([torch.zeros_like(a[:, :1]), k], dim=1)  # k_{i-1}, 0 for i = 0
    # r_i = (a_i r_{i-1} - k_{i-1}) / r_{i-1}: matrix [[a_i, -k_{i-1}], [1, 0]] on (r, 1).
    mf = torch.stack([torch.stack([a, -kf], -1), torch.stack([one, zero], -1)], -2)
    pf = mobius_prefix(mf)
    rf = pf[..., 0, 0] / pf[..., 1, 0]  # applied to (1, 0): r_{-1} = inf
    kb = torch.cat([k, torch.zeros_like(a[:, :1])], dim=1).flip(1)
    mb = torch.stack([torch.stack([a.flip(1), -kb], -1), torch.stack([one, zero], -1)], -2)
    pb = mobius_prefix(mb)
    sb = (pb[..., 0, 0] / pb[..., 1, 0]).flip(1)
    left = torch.cat([torch.zeros_like(a[:, :1]), k / rf[:, :-1]], dim=1)
    right = torch.cat([k / sb[:, 1:], torch.zeros_like(a[:, :1])], dim=1)
    return 1.0 / (a - left - right)


def bk_core_im(a, sup, sub, im):
    """Im G_ii at z = i·im (float64 in, float64 out): the complex128 BK-Core behind a real
    boundary, which torch_train_bench.py keeps out of inductor as one opaque op under compile."""
    # z = i·im as a complex tensor (not a Python complex constant, which GPU inductor cannot
    # lower: "'complex' object has no attribute 'get_name'"); the same value.
    return bk_core_diag(a, sup, sub, torch.complex(torch.zeros_like(im), im)).imag


def pseudo_cumsum(x, bs=128):
    out, n, pos, stride = x.clone(), x.shape[1], torch.arange(x.shape[1], device=x.device), 1
    while stride < bs:
        src = pos - stride
        ok = (src >= 0) & ((pos // bs) == (src.clamp(min=0) // bs))
        shifted = torch.zeros_like(x)
        shifted[:, pos[ok]] = x[:, src[ok]]
        out, stride = out + shifted, stride * 2
    return out


@torch.library.custom_op("muse_baseline::cumsum_n", mutates_args=())
def _cumsum_n(x: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(x, dim=1)


@_cumsum_n.register_fake
def _(x):
    return torch.empty_like(x)


def cumsum_n(x):
    """Inclusive cumsum over N. Under torch.compile it stays ATen's kernel (an opaque op): the
    inductor of torch 2.11 fails to generate its split scan for (B, N, 32) on the H200 ("list
    indices must be integers or slices, not NoneType"); everything around it is compiled."""
    return _cumsum_n(x) if torch.compiler.is_compiling() else torch.cumsum(x, dim=1)


def ar_ssm(w, pre, x, profile):
    wc = w[pre + "T_conv.weight"]
    xt = x.transpose(1, 2)
    if profile == "exact":
        t = F.conv1d(F.pad(xt, (2, 0)), wc, groups=x.shape[-1]).transpose(1, 2)
    else:
        t = F.conv1d(xt, wc, padding=1, groups=x.shape[-1]).transpose(1, 2)
    g = F.relu(F.linear(x, w[pre + "complexity_gate.0.weight"], w[pre + "complexity_gate.0.bias"]))
    g = torch.sigmoid(F.linear(g, w[pre + "complexity_gate.2.weight"], w[pre + "complexity_gate.2.bias"]))
    ug, vg = F.linear(x, w[pre + "U_proj.weight"]) * g, F.linear(x, w[pre + "V_proj.weight"]) * g
    k = pseudo_cumsum(ug) if profile == "bench" else cumsum_n(ug)
    return t + F.linear(k * vg, w[pre + "output_proj.weight"], w[pre + "output_proj.bias"])


def tf32(t):
    if t.dtype != torch.float32:
        return t.float().contiguous().view(torch.int32).bitwise_and(~0x1FFF).view(torch.float32).to(t.dtype)
    return t.contiguous().view(torch.int32).bitwise_and(~0x1FFF).view(torch.float32)


def exp0c(v, c, eps=1e-5):
    sc = torch.sqrt(c)
    r = v.norm(dim=-1, keepdim=True).clamp_min(eps)
    return (1.0 / sc) * torch.tanh(sc * r) * (v / r)


def log0c(y, c, eps=1e-5):
    sc = torch.sqrt(c)
    r = y.norm(dim=-1, keepdim=True).clamp_min(eps)
    return (1.0 / sc) * torch.atanh(sc * r.clamp_max(1.0 / sc - eps)) * (y / r)


def window_attention(w, pre, x, heads, profile, window=64):
    bsz, n, d = x.shape
    dh = d // heads
    pad = (window - n % window) % window
    xw = F.pad(x, (0, 0, 0, pad)).reshape(-1, window, d)
    c, beta = F.softplus(w[pre + "log_c"]), F.softplus(w[pre + "attention.beta"])
    s = torch.sqrt(c)
    split = lambda t: t.view(t.shape[0], window, heads, dh).transpose(1, 2)
    q, k, v = (split(F.linear(xw, w[pre + m + ".weight"])) for m in ("W_q", "W_k", "W_v"))
    causal = torch.ones(window, window, dtype=torch.bool, device=x.device).tril()
    nq, nk = (q * q).sum(-1, keepdim=True), (k * k).sum(-1, keepdim=True).transpose(-1, -2)
    if profile == "bench":
        dist = torch.sqrt((nq - 2 * tf32(q) @ tf32(k).transpose(-1, -2) + nk).clamp_min(0) + 1e-8) * torch.sqrt(1 + c * (nq + nk))
        scores = (-beta * dist).masked_fill(~causal, float("-inf"))
        p = torch.exp(scores - scores.amax(-1, keepdim=True))
        o = log0c((tf32(p) @ tf32(v)) / p.sum(-1, keepdim=True), c)
    elif profile == "bench-cpu":
        qh, kh = exp0c(q, c), exp0c(k, c)
        nq, nk = (qh * qh).sum(-1, keepdim=True), (kh * kh).sum(-1, keepdim=True).transpose(-1, -2)
        den = ((1 - c * nq) * (1 - c * nk)).clamp_min(1e-5)
        dist = torch.acosh((1 + 2 * c * (nq - 2 * qh @ kh.transpose(-1, -2) + nk) / den).clamp_min(1 + 1e-5)) / s
        scores = (-beta * dist - w[pre + "attention.attention_bias"]).masked_fill(~causal, -torch.finfo(x.dtype).max)
        o = log0c(exp0c(torch.softmax(scores, -1) @ v, c), c)
    else:
        # |q| with a finite gradient at 0 (the zero rows padding the last window): double where.
        safe_sqrt = lambda t: torch.where(t > 0, torch.sqrt(torch.where(t > 0, t, torch.ones_like(t))), torch.zeros_like(t))
        rq, rk = safe_sqrt(nq), safe_sqrt(nk)
        a, b = torch.clamp(s * rq, max=15.0), torch.clamp(s * rk, max=15.0)
        uq, uk = q / rq.clamp_min(1e-30), k / rk.transpose(-1, -2).clamp_min(1e-30)
        # 1 - C = |uq - uk|^2 / 2 without cancellation: |uq|^2 + |uk|^2 - 2 uq.uk on unit vectors.
        omc = (0.5 * ((uq * uq).sum(-1, keepdim=True) + (uk * uk).sum(-1, keepdim=True).transpose(-1, -2)) - uq @ uk.transpose(-1, -2)).clamp_min(0)
        omc = torch.where((rq == 0) | (rk == 0), torch.ones_like(omc), omc)
        z = 2 * torch.sinh(a - b) ** 2 + torch.sinh(2 * a) * torch.sinh(2 * b) * omc
        # acosh(1 + z) = log1p(z + sqrt(z(z + 2))), with sqrt's gradient kept finite at z = 0
        # (masked and coincident pairs): autograd's inf·0 there is NaN (the 'double where'; the
        # forward is unchanged). Found training on real text (issue 9).
        # Above z = 1e18, acosh(1 + z) = ln 2 + log1p(z) (as muse's acosh1p): z(z + 2) overflows
        # f32 from z ~ 1.8e19 (radii at the a = 15 clamp), and an infinite distance makes the
        # gradient NaN (∂(β·d)/∂β = d times a zero upstream). Double where again: forward unchanged
        # below the switch.
        big = z > 1e18
        zs = torch.where(big, torch.zeros_like(z), z)
        dist = torch.where(big, math.log(2.0) + torch.log1p(z), torch.log1p(zs + safe_sqrt(zs * (zs + 2)))) / s
        o = torch.softmax((-beta * dist).masked_fill(~causal, float("-inf")), -1) @ v
    o = o.transpose(1, 2).reshape(-1, window, d)
    return F.linear(o, w[pre + "W_o.weight"]).reshape(bsz, -1, d)[:, :n]


def block(w, i, h, heads, window, profile):
    pre = f"{P}blocks.{i}."
    x = F.layer_norm(h, h.shape[-1:], w[pre + "layer_norm.weight"], w[pre + "layer_norm.bias"], 1e-5)
    bk, ha, n = pre + "bk_layer.", pre + "bk_layer.hybrid_attn.", x.shape[1]
    v = torch.clamp(F.linear(x, w[bk + "v_proj.weight"], w[bk + "v_proj.bias"]).squeeze(-1), -3, 3)
    he = w[bk + "h0_diag_base"][:, :n].double() + v.double()
    sup = w[bk + "h0_super_base"][:, : n - 1].double().expand(x.shape[0], -1)
    sub = w[bk + "h0_sub_base"][:, : n - 1].double().expand(x.shape[0], -1)
    if profile != "exact":
        he, sup, sub = he.clamp(-100, 100), sup.clamp(-10, 10), sub.clamp(-10, 10)
    # Im z in f32 as the original computes it in the compat profiles; in the weights' dtype in exact.
    cast = (lambda t: t.float()) if profile != "exact" else (lambda t: t)
    im = F.softplus(cast(w[bk + "epsilon_param"])) + 1e-6 + cast(w[bk + "gamma"])
    g_im = bk_core_im(he, sup, sub, im.double())
    im_g = g_im.float() if profile != "exact" else g_im
    gate = torch.sigmoid(im_g.abs().to(x.dtype) * w[ha + "gate_sensitivity"]).unsqueeze(-1)
    yg = ar_ssm(w, ha + "global_attn.", x, profile)
    yl = window_attention(w, ha + "local_attn.", x, heads, profile, window)
    return h + F.layer_norm(gate * yl + (1 - gate) * yg, x.shape[-1:], w[ha + "layer_norm.weight"], w[ha + "layer_norm.bias"], 1e-5)


def forward(w, ids, cfg, profile):
    cfg = defaults(cfg)
    h = htt_embed(w, ids, cfg["vocab_size"], cfg["d_model"]) + w[P + "position_embedding.weight"][: ids.shape[1]]
    for i in range(cfg["n_layers"]):
        h = block(w, i, h, cfg["num_heads"], cfg["hyperbolic_window_size"], profile)
    h = F.layer_norm(h, h.shape[-1:], w[P + "layer_norm_final.weight"], w[P + "layer_norm_final.bias"], 1e-5)
    return htt_decode(w, h, cfg["vocab_size"])


# ---- modes -----------------------------------------------------------------------------------
def save_safetensors(path, tensors, metadata):
    """A minimal safetensors writer (F64 tensors, sorted names), as the format specifies."""
    header, blobs, off = {"__metadata__": metadata}, [], 0
    for name in sorted(tensors):
        b = np.ascontiguousarray(tensors[name], dtype="<f8").tobytes()
        header[name] = {"dtype": "F64", "shape": list(tensors[name].shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def grad_fixture(d, out):
    """PyTorch autograd (float64, CPU) of the exact profile's mean cross-entropy on the oracle
    weights, ids[:, :8] (a multiple of the window: no padded rows) and targets (7 ids + 3) mod V:
    the independent check of muse's backward (crates/muse-model/tests/grad.rs)."""
    import os
    w_np, _ = load_safetensors(f"{d}/oracle/weights.safetensors")
    cfg = json.load(open(f"{d}/oracle/config.json"))
    ids = np.load(f"{d}/oracle/ids.npy")[:, :8].astype(np.int64)
    targets = (ids * 7 + 3) % cfg["vocab_size"]
    w = to_torch(w_np, torch.float64, "cpu")
    for k, v in w.items():
        v.requires_grad_(not k.endswith(("h0_diag_base", "h0_super_base", "h0_sub_base")))
    logits = forward(w, torch.from_numpy(ids), cfg, "exact")
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(targets).reshape(-1))
    loss.backward()
    grads = {k: v.grad.numpy() for k, v in w.items() if v.grad is not None}
    bad = [k for k, g in grads.items() if not np.isfinite(g).all()]
    if bad:
        sys.exit(f"non-finite autograd gradients: {bad}")
    os.makedirs(out, exist_ok=True)
    np.save(f"{out}/ids.npy", ids)
    np.save(f"{out}/targets.npy", targets)
    save_safetensors(f"{out}/grads.safetensors", grads,
                     {"loss": repr(loss.item()), "torch": torch.__version__, "generator": "ci/baselines/torch_model.py --grad-fixture"})
    print(f"loss {loss.item():.17g}, {len(grads)} gradients -> {out}")


def rel(got, want):
    return float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max() / np.abs(want).max())


def check(directory, muse_dir, device):
    torch.backends.cuda.matmul.allow_tf32 = False
    out = []
    for sub, pairs in [("oracle", [("exact", "logits_exact.npy"), ("bench", "logits_bench.npy"), ("bench-cpu", "logits_bench_cpu.npy")]),
                       ("parity", [("bench", "logits_cuda.npy"), ("bench-cpu", "logits_cpu.npy")])]:
        d = f"{directory}/{sub}"
        w_np, meta = load_safetensors(f"{d}/weights.safetensors")
        cfg = json.load(open(f"{d}/config.json")) if sub == "oracle" else NAMED["tiny"]
        ids_np = np.load(f"{d}/ids.npy")
        for profile, file in pairs:
            want = np.load(f"{d}/{file}")
            for dt in (torch.float64, torch.float32):
                with torch.no_grad():
                    got = forward(to_torch(w_np, dt, device), torch.from_numpy(ids_np).to(device), cfg, profile).double().cpu().numpy()
                rec = {"fixture": sub, "profile": profile, "dtype": str(dt)[6:], "device": device, "vs": file, "max_rel_err": rel(got, want)}
                if muse_dir and sub == "oracle" and dt == torch.float32:
                    try:
                        m = np.load(f"{muse_dir}/{profile}/logits.npy")
                        rec["max_rel_err_vs_muse_cuda"] = rel(got, m)
                        rec["muse_cuda_vs_oracle"] = rel(m, want)
                    except OSError as e:
                        rec["muse_error"] = str(e)
                out.append(rec)
                print(json.dumps(rec), flush=True)
    return out


def measure(fwd, cfg, b, n, imp, device):
    """One grid point under the original's protocol; compile time (first call) recorded apart."""
    rec = {"impl": imp, "kernel": "model_forward", "B": b, "N": n, "D": cfg["d_model"], "dtype": "f32+tf32", "config": cfg["name"]}
    try:
        ids = torch.randint(0, cfg["vocab_size"], (b, n), device=device)
        f = fwd
        if imp == "torch_compile":
            torch._dynamo.reset()  # a fresh static-shape compile per point (no recompile limit, no automatic dynamic)
            t0 = time.time()
            f = torch.compile(fwd)
            with torch.no_grad():
                f(ids)
            torch.cuda.synchronize()
            rec["compile_s"] = time.time() - t0
        with torch.no_grad():
            for _ in range(5):
                f(ids)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            ts = []
            for _ in range(20):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                f(ids)
                torch.cuda.synchronize()
                ts.append(time.perf_counter() - t0)
        ts = np.array(ts)
        rec.update(median_ms=float(np.median(ts) * 1e3), mean_ms=float(ts.mean() * 1e3), std_ms=float(ts.std(ddof=1) * 1e3),
                   runs=20, tokens_per_s=float(b * n / ts.mean()), peak_mib=torch.cuda.max_memory_allocated() / 2**20)
    except Exception as e:  # an OOM or a compile failure is a result, not a crash
        rec["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    print(json.dumps(rec), flush=True)
    torch.cuda.empty_cache()
    return rec


def bench(device, max_seconds):
    """Eager at every grid point first, then torch.compile in COMPILE_FIRST order and the rest of
    the grid while the budget lasts (a compile takes tens of seconds; a skipped point says so)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    t_start, records = time.time(), []
    points = [(name, n, b) for name, n, batches in GRID for b in batches]
    order = [("torch_eager", p) for p in points]
    order += [("torch_compile", p) for p in COMPILE_FIRST] + [("torch_compile", p) for p in points if p not in COMPILE_FIRST]
    w_key, w = None, None
    for imp, (name, n, b) in order:
        cfg = dict(NAMED[name], n_seq=n, name=name)
        left = max_seconds - (time.time() - t_start)
        if left < (60 if imp == "torch_compile" else 5):
            records.append({"impl": imp, "kernel": "model_forward", "B": b, "N": n, "D": cfg["d_model"], "dtype": "f32+tf32",
                            "config": name, "error": f"skipped: {left:.0f} s left of the {max_seconds} s budget"})
            continue
        if w_key != (name, n):
            w, w_key = None, (name, n)
            torch.cuda.empty_cache()
            w = init_weights(cfg, device)
        records.append(measure(lambda x, w=w, cfg=cfg: forward(w, x, cfg, "exact"), cfg, b, n, imp, device))
    return records


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", help="fixtures/model (oracle/ and parity/)")
    ap.add_argument("--muse", help="muse's logits of the oracle inputs: <dir>/<profile>/logits.npy")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--grad-fixture", metavar="OUT", help="write PyTorch autograd gradients of the oracle (f64, CPU) to OUT and exit")
    ap.add_argument("--max-seconds", type=float, default=240)
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.grad_fixture:
        return grad_fixture(a.check or "fixtures/model", a.grad_fixture)
    if not a.out:
        ap.error("--out is required")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = {"torch": {"version": torch.__version__, "cuda": torch.version.cuda},
              "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "checks": [], "records": []}
    if a.check:
        result["checks"] = check(a.check, a.muse, device)
    if a.bench:
        if device != "cuda":
            sys.exit("--bench needs a GPU")
        result["records"] = bench(device, a.max_seconds)
    json.dump(result, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
