#!/usr/bin/env python3
"""muse's own PyTorch implementation of the Phase 8 language model core (design model.md §2-3),
written from the design, not from the original's code. It loads the original's `state_dict()` names
(a safetensors file as `muse model init` writes it, or the parity fixture's weights) and runs one of
muse's three profiles:

- `exact`  : law-of-cosines hyperbolic attention in 64-token causal windows on the tangent vectors
             (o = softmax · v, no maps), the exact BK-Core G_ii, an inclusive cumsum in the AR-SSM and
             a causal depthwise conv (taps on n-2, n-1, n).
- `bench`  : the original's CUDA benchmark path at commit 1c8b31b: the 'fast' approximate distance
             sqrt(max(|q|^2 - 2 q.k + |k|^2, 0) + 1e-8) * sqrt(1 + c (|q|^2 + |k|^2)) on raw q, k,
             then logmap0 of the tangent average; the Triton pseudo-cumsum
             x_n + sum_{2^j < BS, n - 2^j >= block start} x_{n - 2^j} (BS = 128); the non-causal
             conv (taps on n-1, n, n+1).
- `bench-cpu`: the original's PyTorch path at the same commit (use_triton_kernel=False): exp0 q, k
             (norm clamped at 1e-5), the ball-form distance with its 1e-5 clamps, -beta d - bias,
             expmap0 of the weighted sum, then logmap0; a true cumsum; the non-causal conv.

Used three ways: (1) `--parity DIR` checks it against the original's own logits
(shared/parity/original-bench-tiny); (2) `--ids/--weights/--out` writes logits for a muse
comparison; (3) `--bench` times the forward with the original's protocol (design §6.1: eval, no
grad, 5 warm-ups + 20 synchronised timed forwards, tokens/s = B*N / mean), eager and torch.compile.
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

DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "C64": np.complex64}


def load_safetensors(path):
    """name -> numpy array (no safetensors package needed)."""
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        s, e = meta["data_offsets"]
        arr = np.frombuffer(raw[8 + n + s : 8 + n + e], dtype=DTYPES[meta["dtype"]])
        out[name] = arr.reshape(meta["shape"]).copy()
    return out, header.get("__metadata__", {})


P = "phase7_model.model."


def htt_factors(vocab, d_model):
    v1 = math.ceil(math.sqrt(vocab))
    d1 = math.ceil(math.sqrt(d_model))
    return v1, math.ceil(vocab / v1), d1, math.ceil(d_model / d1)


def htt_embed(w, ids, vocab, d_model):
    """E[a, c] = sum_r cos(theta_r) core1[i1, r, a] core2[i2, r, c], cropped to D (BENCH form)."""
    v1, v2, _, _ = htt_factors(vocab, d_model)
    c1 = w[P + "token_embedding.core1"][:, 0]  # (v1, r, d1)
    c2 = w[P + "token_embedding.core2"][:, :, 0]  # (v2, r, d2)
    phase = torch.cos(w[P + "token_embedding.phase_shift"])
    i1 = torch.clamp(ids // v2, 0, v1 - 1)
    i2 = torch.clamp(ids % v2, 0, v2 - 1)
    a = c1[i1] * phase.view(1, 1, -1, 1)
    e = torch.einsum("blrd,blrf->bldf", a, c2[i2])
    return e.reshape(*ids.shape, -1)[..., :d_model]


def htt_decode(w, h, vocab):
    c1 = w[P + "lm_head.embedding.core1"][:, 0] * torch.cos(w[P + "lm_head.embedding.phase_shift"]).view(1, -1, 1)
    c2 = w[P + "lm_head.embedding.core2"][:, :, 0]
    d1, d2 = c1.shape[2], c2.shape[2]
    hp = F.pad(h, (0, d1 * d2 - h.shape[-1])).view(*h.shape[:2], d1, d2)
    return torch.einsum("bldf,ird,urf->bliu", hp, c1, c2).reshape(*h.shape[:2], -1)[..., :vocab]


def bk_core_diag(he, sup, sub, z):
    """Exact diag((T - z)^-1) of the tridiagonal T by the theta/phi recurrences in complex128
    (no normalisation needed for the well-conditioned |Im z| ~ 1.3 of the model)."""
    a = he.to(torch.complex128) - z
    kk = (sup * sub).to(torch.complex128)
    bsz, n = a.shape
    theta = [torch.ones(bsz, dtype=torch.complex128), a[:, 0]]
    for i in range(1, n):
        theta.append(a[:, i] * theta[-1] - kk[:, i - 1] * theta[-2])
    phi = [None] * (n + 1)
    phi[n] = torch.ones(bsz, dtype=torch.complex128)
    phi[n - 1] = a[:, n - 1]
    for i in range(n - 2, 0, -1):
        phi[i] = a[:, i] * phi[i + 1] - kk[:, i] * phi[i + 2]
    # theta_i = det of rows < i, phi_i = det of rows >= i: G_ii = theta_i phi_{i+1} / theta_n
    g = [theta[i] * phi[i + 1] / theta[n] for i in range(n)]
    return torch.stack(g, dim=1)


def pseudo_cumsum(x, bs=128):
    """The original's Triton 'scan' along dim 1 (design §3.7): not a cumsum."""
    n = x.shape[1]
    out = x.clone()
    pos = torch.arange(n)
    stride = 1
    while stride < bs:
        src = pos - stride
        ok = (src >= 0) & ((pos // bs) == (src.clamp(min=0) // bs))
        shifted = torch.zeros_like(x)
        shifted[:, pos[ok]] = x[:, src[ok]]
        out = out + shifted
        stride *= 2
    return out


def ar_ssm(w, pre, x, profile):
    wc = w[pre + "T_conv.weight"][:, 0]  # (D, 3)
    xt = x.transpose(1, 2)
    if profile == "exact":
        t = F.conv1d(F.pad(xt, (2, 0)), wc.unsqueeze(1), groups=x.shape[-1]).transpose(1, 2)
    else:
        t = F.conv1d(xt, wc.unsqueeze(1), padding=1, groups=x.shape[-1]).transpose(1, 2)
    g = F.relu(F.linear(x, w[pre + "complexity_gate.0.weight"], w[pre + "complexity_gate.0.bias"]))
    g = torch.sigmoid(F.linear(g, w[pre + "complexity_gate.2.weight"], w[pre + "complexity_gate.2.bias"]))
    ug = F.linear(x, w[pre + "U_proj.weight"]) * g
    vg = F.linear(x, w[pre + "V_proj.weight"]) * g
    k = pseudo_cumsum(ug) if profile == "bench" else torch.cumsum(ug, dim=1)
    return t + F.linear(k * vg, w[pre + "output_proj.weight"], w[pre + "output_proj.bias"])


def exp0_clamped(v, s, eps=1e-5):
    r = v.norm(dim=-1, keepdim=True).clamp_min(eps)
    return torch.tanh(s * r) * v / (s * r)


def log0_clamped(y, s, eps=1e-5):
    r = y.norm(dim=-1, keepdim=True).clamp_min(eps)
    return torch.atanh(s * r.clamp_max(1 / s - eps)) * y / (s * r)


TF32 = lambda t: t


def log0_orig(y, c, eps=1e-5):
    sqrt_c = torch.sqrt(c)
    yn = y.norm(dim=-1, keepdim=True).clamp_min(eps)
    arg = sqrt_c * yn.clamp_max((1.0 / sqrt_c) - eps)
    return (1.0 / sqrt_c) * torch.atanh(arg) * (y / yn)


def window_attention(w, pre, x, heads, profile, window=64):
    bsz, n, d = x.shape
    dh = d // heads
    pad = (window - n % window) % window
    xw = F.pad(x, (0, 0, 0, pad)).reshape(-1, window, d)
    c = F.softplus(w[pre + "log_c"])
    s = torch.sqrt(c)
    beta = F.softplus(w[pre + "attention.beta"])

    def split(t):
        return t.view(t.shape[0], window, heads, dh).transpose(1, 2)

    q = split(F.linear(xw, w[pre + "W_q.weight"]))
    k = split(F.linear(xw, w[pre + "W_k.weight"]))
    v = split(F.linear(xw, w[pre + "W_v.weight"]))
    causal = torch.ones(window, window, dtype=torch.bool).tril()
    nq, nk = (q * q).sum(-1, keepdim=True), (k * k).sum(-1, keepdim=True).transpose(-1, -2)
    if profile == "bench":
        diff2 = (nq - 2 * TF32(q) @ TF32(k).transpose(-1, -2) + nk).clamp_min(0)
        dist = torch.sqrt(diff2 + 1e-8) * torch.sqrt(1 + c * (nq + nk))
        scores = (-beta * dist).masked_fill(~causal, float("-inf"))
        m = scores.amax(-1, keepdim=True)
        p = torch.exp(scores - m)
        o = log0_orig((TF32(p) @ TF32(v)) / p.sum(-1, keepdim=True), c)
    elif profile == "bench-cpu":
        qh, kh = exp0_clamped(q, s), exp0_clamped(k, s)
        nq, nk = (qh * qh).sum(-1, keepdim=True), (kh * kh).sum(-1, keepdim=True).transpose(-1, -2)
        diff2 = nq - 2 * qh @ kh.transpose(-1, -2) + nk
        den = ((1 - c * nq) * (1 - c * nk)).clamp_min(1e-5)
        dist = torch.acosh((1 + 2 * c * diff2 / den).clamp_min(1 + 1e-5)) / s
        scores = -beta * dist - w[pre + "attention.attention_bias"]
        scores = scores.masked_fill(~causal, -torch.finfo(scores.dtype).max)
        o = log0_clamped(exp0_clamped(torch.softmax(scores, -1) @ v, s), s)
    else:
        a = torch.clamp(s * nq.sqrt(), max=15.0)
        b = torch.clamp(s * nk.sqrt(), max=15.0)
        uq = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        uk = k / k.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        one_minus_c = 0.5 * ((uq.unsqueeze(-2) - uk.unsqueeze(-3)) ** 2).sum(-1)
        zero = (nq == 0) | (nk == 0)
        one_minus_c = torch.where(zero, torch.ones_like(one_minus_c), one_minus_c)
        z = 2 * torch.sinh(a - b) ** 2 + torch.sinh(2 * a) * torch.sinh(2 * b) * one_minus_c
        dist = torch.log1p(z + torch.sqrt(z * (z + 2))) / s
        scores = (-beta * dist).masked_fill(~causal, float("-inf"))
        o = torch.softmax(scores, -1) @ v
    o = o.transpose(1, 2).reshape(-1, window, d)
    out = F.linear(o, w[pre + "W_o.weight"])
    return out.reshape(bsz, -1, d)[:, :n]


def block(w, i, h, heads, profile):
    pre = f"{P}blocks.{i}."
    x = F.layer_norm(h, h.shape[-1:], w[pre + "layer_norm.weight"], w[pre + "layer_norm.bias"], 1e-5)
    bk = pre + "bk_layer."
    n = x.shape[1]
    v = torch.clamp(F.linear(x, w[bk + "v_proj.weight"], w[bk + "v_proj.bias"]).squeeze(-1), -3, 3)
    he = torch.clamp(w[bk + "h0_diag_base"][:, :n] + v, -100, 100)
    sup = w[bk + "h0_super_base"][:, : n - 1].expand(x.shape[0], -1)
    sub = w[bk + "h0_sub_base"][:, : n - 1].expand(x.shape[0], -1)
    eps = F.softplus(w[bk + "epsilon_param"].double()) + 1e-6 + w[bk + "gamma"].double()
    z = complex(0.0, float(eps))
    if profile != "exact":
        z = complex(np.complex64(z))  # the original rounds z to complex64
    g_ii = bk_core_diag(he.double(), sup.double(), sub.double(), z)
    if profile != "exact":
        g_ii = g_ii.to(torch.complex64)
    ha = bk + "hybrid_attn."
    gate = torch.sigmoid(g_ii.imag.abs().to(x.dtype) * w[ha + "gate_sensitivity"]).unsqueeze(-1)
    yg = ar_ssm(w, ha + "global_attn.", x, profile)
    yl = window_attention(w, ha + "local_attn.", x, heads, profile)
    y = F.layer_norm(gate * yl + (1 - gate) * yg, x.shape[-1:], w[ha + "layer_norm.weight"], w[ha + "layer_norm.bias"], 1e-5)
    return h + y


def forward(w, ids, cfg, profile):
    vocab, d_model, layers, heads = cfg["vocab_size"], cfg["d_model"], cfg["n_layers"], cfg["num_heads"]
    n = ids.shape[1]
    h = htt_embed(w, ids, vocab, d_model) + w[P + "position_embedding.weight"][:n]
    for i in range(layers):
        h = block(w, i, h, heads, profile)
    h = F.layer_norm(h, h.shape[-1:], w[P + "layer_norm_final.weight"], w[P + "layer_norm_final.bias"], 1e-5)
    return htt_decode(w, h, vocab)


def to_torch(arrs, dtype, device="cpu"):
    return {k: torch.from_numpy(v).to(device=device, dtype=dtype) for k, v in arrs.items() if v.dtype != np.complex64}


def parity(directory):
    w_np, meta = load_safetensors(f"{directory}/weights.safetensors")
    io, _ = load_safetensors(f"{directory}/io.safetensors")
    cfg = json.loads(meta["config"])
    ids = torch.from_numpy(io["ids"])
    report = {}
    for profile, key in [("bench", "logits.cuda"), ("bench-cpu", "logits.cpu")]:
        for dt in (torch.float32, torch.float64):
            with torch.no_grad():
                got = forward(to_torch(w_np, dt), ids, cfg, profile).double().numpy()
            want = io[key].astype(np.float64)
            rel = float(np.abs(got - want).max() / np.abs(want).max())
            report[f"{profile}/{str(dt)[6:]} vs {key}"] = rel
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parity", help="directory of the original's parity fixture")
    args = ap.parse_args()
    if args.parity:
        print(json.dumps(parity(args.parity), indent=1))


if __name__ == "__main__":
    sys.exit(main())
